"""The layout of an image-folder dataset (`root/<class>/<image>`), read without decoding and without torch: what
space validation and `--dry-run` need before any trial runs."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from trainer.errors import FolderError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


@dataclass
class FolderSummary:
    """Images per class folder (by file name) and the files that are not images."""

    root: Path
    images: dict[str, int]
    other_files: int

    def describe(self) -> str:
        counts = sorted(self.images.values())
        spread = (
            f"{counts[0]}–{counts[-1]} images per class"
            if counts and counts[0] != counts[-1]
            else f"{counts[0] if counts else 0} images per class"
        )
        names = ", ".join(list(self.images)[:6]) + (", …" if len(self.images) > 6 else "")
        return (
            f"{len(self.images)} classes ({names}), {sum(counts)} images, {spread}, "
            f"{self.other_files} files skipped as not images"
        )


def class_dirs(root: Path) -> list[Path]:
    """The class folders of an image folder, sorted."""
    if not root.is_dir():
        raise FolderError(f"imagefolder: {root} is not a folder")
    try:
        return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as exc:
        raise _unreadable(root, exc) from None


def folder_listing(root: Path) -> list[tuple[str, str]]:
    """(class name, file path) of every file under the class folders of `root`, sorted.

    Files are named as they are inside the root (its real path): a link inside the folder is a file of its own,
    under its own name, as the binding, the cache and the trials all count it. A link that leads outside the root,
    and a folder or file this user cannot read, are errors naming the path, never files silently left out."""
    base = Path(os.path.realpath(root))
    listing = []
    for folder in class_dirs(base):
        listing += [(folder.name, str(path)) for path in sorted(_files(folder, base))]
    return listing


def _files(folder: Path, base: Path) -> Iterator[Path]:
    """Every file under `folder` (links followed while they stay inside `base`, each real folder walked once)."""
    seen: set[str] = set()
    stack = [folder]
    while stack:
        current = stack.pop()
        real = os.path.realpath(current)
        if not _inside(real, base):
            raise FolderError(
                f"imagefolder: {current} is a link to {real}, outside the dataset's folder {base}: copy what it "
                "points to into the folder, or remove the link"
            )
        if real in seen:
            continue
        seen.add(real)
        try:
            entries = sorted(os.scandir(current), key=lambda e: e.name)
        except OSError as exc:
            raise _unreadable(current, exc) from None
        for entry in entries:
            path = Path(entry.path)
            if entry.is_dir():  # follows a link, like a class folder's
                stack.append(path)
                continue
            target = os.path.realpath(path)
            if not _inside(target, base):
                raise FolderError(
                    f"imagefolder: {path} is a link to {target}, outside the dataset's folder {base}: copy the "
                    "file into the folder, or remove the link"
                )
            if not os.path.isfile(target):
                continue  # a dangling link, a socket, a FIFO: no image
            if not os.access(target, os.R_OK):
                raise _unreadable(path, PermissionError(errno.EACCES, os.strerror(errno.EACCES)))
            yield path


def _inside(path: str, base: Path) -> bool:
    return path == str(base) or path.startswith(str(base).rstrip(os.sep) + os.sep)


def _unreadable(path: Path, exc: OSError) -> FolderError:
    return FolderError(
        f"imagefolder: cannot read {path} ({exc.strerror or exc}): make it readable by this user or move it out "
        "of the dataset"
    )


def summarize_folder(root: Path) -> FolderSummary:
    """Count images (by suffix) per class folder, and the other files."""
    images, other = {d.name: 0 for d in class_dirs(root)}, 0
    for name, path in folder_listing(root):
        if Path(path).suffix.lower() in IMAGE_SUFFIXES:
            images[name] += 1
        else:
            other += 1
    return FolderSummary(root, images, other)


def require_classes(root: Path | str, found: int, what: str = "readable images", detail: str = "") -> None:
    """The one rule of a classification dataset: at least 2 classes (class folders with `what`)."""
    if found < 2:
        raise FolderError(f"imagefolder: {root} needs at least 2 class folders with {what}, found {found}{detail}")


def check_image_folder(root: Path, val: float, test: float | str) -> FolderSummary:
    """Fail fast, before any trial, on a folder that cannot make one: not a folder, fewer than 2 class folders
    with images, or a class with fewer than 3 images (it could not appear in train, val and test). Counts files by
    name only; unreadable ones are found (and skipped) when a trial loads the folder."""
    summary = summarize_folder(root)
    with_images = {name: n for name, n in summary.images.items() if n}
    empty = sorted(set(summary.images) - set(with_images))
    require_classes(root, len(with_images), "images", f" (empty: {', '.join(empty[:5])})" if empty else "")
    small = sorted(name for name, n in with_images.items() if n < 3)
    if small:
        raise FolderError(
            f"imagefolder: class {small[0]!r} in {root} has {with_images[small[0]]} image(s); every "
            f"class needs at least 3 to appear in train, val (split {val}) and test (split {test})"
        )
    return summary
