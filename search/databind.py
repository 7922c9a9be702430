"""A study is bound to its data: every file of every dataset it trains on, by content.

The first `search run` of a study records, per dataset, a digest of (relative path, content hash) of each file, and
the full list in the artifact store (`datasets/<name>-<digest>.json`). Every later run computes it again before
anything is dispatched: a changed dataset (a file added, removed or modified, a folder swapped for another with the
same names) is refused with what changed, unless the user accepts it (`--accept-data-change`), which is recorded on
the study with the old and new digests. Content, not file times: a dataset copied to another machine or restored
from a backup is the same dataset. Hashing reads every file once per run (about a second per GB).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from search.store import ArtifactStore
from trainer.config import FASHION_MNIST_ROOT
from trainer.errors import FolderError, ProxySearchError
from trainer.imagefolder import folder_listing


class DataChanged(ProxySearchError, RuntimeError):
    """A study's data differs from what it was run on; the message says what changed and the ways out."""


def dataset_files(dataset: dict) -> dict[str, Path] | str:
    """The files a dataset is made of, by path relative to its root; for the bundled digits, their source."""
    kind, root = dataset["kind"], dataset.get("root")
    if kind == "digits":
        import sklearn

        return f"scikit-learn {sklearn.__version__} load_digits"
    base = Path(root or FASHION_MNIST_ROOT)
    if kind == "imagefolder":
        try:
            listed = folder_listing(base)
        except FolderError:
            return {}
        resolved = base.resolve()
        return {str(Path(path).relative_to(resolved)): Path(path) for _, path in listed}
    if not base.is_dir():
        return {}
    return {str(p.relative_to(base)): p for p in sorted(base.rglob("*")) if p.is_file()}


def manifest(dataset: dict) -> dict[str, Any]:
    """{"digest", "files", "bytes", "hashes": {relative path: content hash}} of a dataset."""
    files = dataset_files(dataset)
    if isinstance(files, str):
        return {"digest": hashlib.sha256(files.encode()).hexdigest()[:16], "files": 0, "bytes": 0, "hashes": {}}
    hashes, total = {}, 0
    for rel, path in files.items():
        with open(path, "rb") as f:
            hashes[rel] = hashlib.file_digest(f, lambda: hashlib.sha1(usedforsecurity=False)).hexdigest()[:16]
        total += path.stat().st_size
    digest = hashlib.sha256(json.dumps(sorted(hashes.items())).encode()).hexdigest()[:16]
    return {"digest": digest, "files": len(hashes), "bytes": total, "hashes": hashes}


def check_data(study: Any, datasets: dict[str, dict], store: ArtifactStore, accept: bool) -> list[str]:
    """Compare each dataset with what the study was run on, record it on a first run, and raise `DataChanged`
    on a difference unless `accept` (then the change is recorded and returned, one line per dataset)."""
    recorded: dict[str, dict] = dict(study.user_attrs.get("data") or {})
    changes, accepted = [], []
    current = {}
    for name, dataset in sorted(datasets.items()):
        now = manifest(dataset)
        if now["files"] == 0 and dataset["kind"] != "digits":
            continue  # not there yet (download: true fetches it in the first trial): bound on the next run
        current[name] = now
        before = recorded.get(name)
        if before is not None and before["digest"] != now["digest"]:
            changes.append((name, before, now))
    if changes and not accept:
        lines = [_describe(name, before, now, store) for name, before, now in changes]
        raise DataChanged(
            f"study {study.study_name!r} was run on other data: {'; '.join(lines)}. Its trials would mix two "
            "datasets: run it as a new study (--study NEW_NAME), or pass --accept-data-change to go on (recorded "
            "in the study)"
        )
    for name, before, now in changes:
        accepted.append(_describe(name, before, now, store))
        history = list(study.user_attrs.get("data_changes") or [])
        history.append({"dataset": name, "from": before["digest"], "to": now["digest"], "at": time.time()})
        study.set_user_attr("data_changes", history)
    for name, now in current.items():
        if recorded.get(name, {}).get("digest") != now["digest"]:
            store.write_bytes(f"datasets/{name}-{now['digest']}.json", json.dumps(now["hashes"]).encode())
            recorded[name] = {k: now[k] for k in ("digest", "files", "bytes")}
    study.set_user_attr("data", recorded)
    return accepted


def _describe(name: str, before: dict, now: dict, store: ArtifactStore) -> str:
    """`digits: 3 files removed (e.g. 0/1.png), 1 added, 2 modified` (counts only when the old list is gone)."""
    old = store.folder("datasets").read_json(f"{name}-{before['digest']}.json")
    if not isinstance(old, dict):
        return f"{name}: {before['files']} files then, {now['files']} now, contents differ"
    new = now["hashes"]
    parts = []
    for label, keys in (
        ("removed", sorted(set(old) - set(new))),
        ("added", sorted(set(new) - set(old))),
        ("modified", sorted(k for k in set(old) & set(new) if old[k] != new[k])),
    ):
        if keys:
            parts.append(f"{len(keys)} files {label} (e.g. {keys[0]})")
    return f"{name}: " + (", ".join(parts) or "contents differ")
