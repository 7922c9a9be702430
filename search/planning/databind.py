"""A study is bound to its data: every file of every dataset it trains on, by content.

The first `search run` of a study records, per dataset, a digest of (relative path, content hash) of each file, and
the full list in the artifact store (`datasets/<name>-<digest>.json`). Every later run computes it again before
anything is dispatched: a changed dataset (a file added, removed or modified, a folder swapped for another with the
same names) is refused with what changed, unless the user accepts it (`--accept-data-change`), which is recorded on
the study with the old and new digests. Content, not file times: a dataset copied to another machine or restored
from a backup is the same dataset. Hashing reads every file once per run (about a second per GB).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from search.records import record
from search.records.paths import dataset_manifest
from search.records.store import ArtifactStore
from trainer.config import DatasetConfig
from trainer.data.identity import Binding, manifest
from trainer.errors import ProxySearchError


class DataChanged(ProxySearchError, RuntimeError):
    """A study's data differs from what it was run on; the message says what changed and the ways out."""


def current_manifests(
    datasets: dict[str, DatasetConfig], between: Callable[[], None] = lambda: None
) -> dict[str, dict]:
    """Each dataset's manifest (every file read once), before anything is created: a dataset that cannot be read is
    refused here. Datasets not there yet (`download: true` fetches them in the first trial) are left out: they are
    bound on the next run. `between` is called before each dataset (the driver stops there when asked)."""
    current = {}
    for name, dataset in sorted(datasets.items()):
        between()
        now = manifest(dataset)
        if now["files"] or dataset.kind == "digits":
            current[name] = now
    return current


@dataclass
class Origin:
    """The study whose binding a new study takes over: a confirmation's exploration, whose data must be the data its
    configurations were selected on. `data` is its recorded binding, `store` holds its file lists, `record` adds
    accepted changes to its `data_changes`."""

    name: str
    data: dict[str, dict]
    store: ArtifactStore
    record: Callable[[list[dict]], None]


def check_data(
    study: Any, current: dict[str, dict], store: ArtifactStore, accept: bool, origin: Origin | None = None
) -> list[str]:
    """Compare each dataset's `current` manifest with what the study was run on (a new study with an `origin`:
    what the origin was run on), record it on a first run, and raise `DataChanged` on a difference unless `accept`
    (then the change is recorded, in the origin too, and returned, one line per dataset)."""
    own = record.bound_data(study)
    inherited = origin if origin is not None and not own else None  # a new study takes over its origin's binding
    recorded: dict[str, dict] = dict((inherited.data if inherited else own) or {})
    changes = changed(recorded, current)
    if changes and not accept:
        raise _refusal(study.study_name, changes, inherited.store if inherited else store, inherited)
    accepted = [_describe(name, old, now, inherited.store if inherited else store) for name, old, now in changes]
    if changes:
        made = [
            {"dataset": name, "from": old["digest"], "to": now["digest"], "at": time.time(), "by": study.study_name}
            for name, old, now in changes
        ]
        record.add_data_changes(study, made)
        if inherited:
            inherited.record(made)
    for name, now in current.items():
        if recorded.get(name, {}).get("digest") != now["digest"] or inherited is not None:
            store.write_bytes(dataset_manifest(name, now["digest"]), json.dumps(now["hashes"]).encode())
            recorded[name] = {k: now[k] for k in ("digest", "files", "bytes")}
    record.record_data(study, recorded)
    return accepted


def check_origin(study: str, origin: Origin, current: dict[str, dict]) -> None:
    """Before a new study that takes over `origin`'s binding is created: refuse data that changed since the origin
    ran (what `check_data` would refuse once the study exists)."""
    changes = changed(origin.data, current)
    if changes:
        raise _refusal(study, changes, origin.store, origin)


def changed(recorded: dict[str, dict], current: dict[str, dict]) -> list[tuple[str, dict, dict]]:
    """(name, recorded, current) of each dataset whose digest differs from the recorded one."""
    return [
        (name, recorded[name], now)
        for name, now in current.items()
        if name in recorded and recorded[name]["digest"] != now["digest"]
    ]


def _refusal(study: str, changes: list, store: ArtifactStore, origin: Origin | None) -> DataChanged:
    lines = [_describe(name, old, now, store) for name, old, now in changes]
    if origin is not None:
        return DataChanged(
            f"study {origin.name!r}, which {study!r} confirms, was run on other data: {'; '.join(lines)}. Its "
            "configurations were chosen on the data as it was: restore it, or pass --accept-data-change to confirm "
            "on the new data (recorded in both studies)"
        )
    return DataChanged(
        f"study {study!r} was run on other data: {'; '.join(lines)}. Its trials would mix two datasets: run it as a "
        "new study (--study NEW_NAME), or pass --accept-data-change to go on (recorded in the study)"
    )


def bindings(recorded: dict[str, dict]) -> dict[str, Binding]:
    """What each dataset's trials must read: the study's recorded binding per dataset name."""
    return {name: Binding(entry["files"], entry["digest"]) for name, entry in recorded.items()}


def _describe(name: str, before: dict, now: dict, store: ArtifactStore) -> str:
    """`digits: 3 files removed (e.g. 0/1.png), 1 added, 2 modified` (counts only when the old list is gone)."""
    old = store.folder("").read_json(dataset_manifest(name, before["digest"]))
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
