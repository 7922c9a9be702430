"""Which files make up a dataset: the one answer for the study's data binding (`search.planning.databind`), the
decoded-image
cache's identity (`trainer.data.cache`) and a trial's check that it reads what the study bound. Torch-free."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.config import FASHION_MNIST_ROOT, DatasetConfig
from trainer.data.imagefolder import folder_listing
from trainer.errors import DataError


@dataclass(frozen=True)
class Binding:
    """What a study bound a dataset to (`search.planning.databind`): its number of files and the digest of their
    contents.
    A trial checks that it reads the same (`check_binding`)."""

    files: int
    digest: str


def digits_source() -> str:
    """What the bundled digits are: scikit-learn's copy, named with its version (they ship inside the package)."""
    from importlib.metadata import version  # the installed version, without importing scikit-learn (1.3 s)

    return f"scikit-learn {version('scikit-learn')} load_digits"


def fashion_mnist_files(root: Path) -> list[Path]:
    """The four IDX files of Fashion-MNIST (train and t10k images and labels)."""
    found = []
    for part in ("train", "t10k"):
        for what in ("images-idx3", "labels-idx1"):
            matches = sorted(root.glob(f"{part}-{what}-ubyte*"))
            if not matches:
                raise DataError(
                    f"fashion_mnist: no {part}-{what} IDX file in {root} "
                    f"(on Debian: apt-get install dataset-fashion-mnist)"
                )
            found.append(matches[0])
    return found


def dataset_root(dataset: DatasetConfig) -> Path:
    """The folder a dataset entry reads (Fashion-MNIST's default is Debian's)."""
    return Path(dataset.root or (FASHION_MNIST_ROOT if dataset.kind == "fashion_mnist" else "."))


def dataset_files(dataset: DatasetConfig) -> dict[str, Path] | str:
    """The files a dataset is made of, by their name inside its root (the real path of the root: a link inside it is
    a file under its own name); for the bundled digits, their source. {} while the root does not exist yet (a
    download fetches it). Raises `FolderError` for an image folder that cannot be read as it is (an unreadable
    folder or file, a link leading outside it), `DataError` for Fashion-MNIST without its four files."""
    kind = dataset.kind
    if kind == "digits":
        return digits_source()
    root = dataset_root(dataset)
    if not root.is_dir():
        return {}
    base = Path(os.path.realpath(root))
    if kind == "imagefolder":
        paths = [Path(path) for _, path in folder_listing(root)]
    elif kind == "fashion_mnist":
        paths = fashion_mnist_files(base)
    else:  # torchvision's: every file its loader may read under the root
        paths = sorted(p for p in base.rglob("*") if p.is_file())
    return {str(p.relative_to(base)): p for p in paths}


def manifest(dataset: DatasetConfig) -> dict[str, Any]:
    """{"digest", "files", "bytes", "hashes": {name: content hash}} of a dataset: every file read once. A file
    that cannot be read is a `DataError` naming it."""
    files = dataset_files(dataset)
    if isinstance(files, str):
        return {"digest": hashlib.sha256(files.encode()).hexdigest()[:16], "files": 0, "bytes": 0, "hashes": {}}
    hashes, total = {}, 0
    for name, path in files.items():
        try:
            with open(path, "rb") as f:
                hashes[name] = hashlib.file_digest(f, lambda: hashlib.sha1(usedforsecurity=False)).hexdigest()[:16]
            total += path.stat().st_size
        except OSError as exc:
            raise DataError(f"cannot read {path} ({exc.strerror or exc}): make it readable or remove it") from None
    digest = hashlib.sha256(json.dumps(sorted(hashes.items())).encode()).hexdigest()[:16]
    return {"digest": digest, "files": len(hashes), "bytes": total, "hashes": hashes}


def check_binding(
    dataset: DatasetConfig, binding: Binding, digest: str | None = None, count: int | None = None
) -> None:
    """Refuse to train on other data than the study bound: another number of files (a file removed or added since
    the binding was taken), or, given the `digest` of what was read (the image cache hashes every file it decodes),
    other contents. `count`: the files just listed (the image cache lists them to find its entry), else they are
    listed here. Raises `DataError`."""
    if count is None:
        files = dataset_files(dataset)
        count = len(files) if isinstance(files, dict) else None
    found = None
    if count is not None and count != binding.files and binding.files:
        found = f"{count} files now, {binding.files} when the study bound it"
    elif digest is not None and digest != binding.digest:
        found = f"contents {digest}, {binding.digest} when the study bound it"
    if found is not None:
        raise DataError(
            f"dataset {dataset.root or dataset.kind} changed after this run checked it ({found}): run "
            "the same command again, which says what changed"
        )
