"""Datasets, the one stratified seeded split of a trial, and the batches an epoch trains on.

Every dataset becomes an `ImageSet`: labels, class names and a `take(rows)` that returns uint8 images
(B, 3, S, S). The images come from the per-machine decoded-image cache (`trainer.cache`: decoded once, read by row,
shared by every trial of the machine through the page cache) or, where no cache can be written, from memory (small
datasets) or the image files (decoded lazily, per epoch). The same rows give the same pixels either way. Nothing is
ever written into a dataset's folder. Grayscale becomes three channels; normalisation happens on the device.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Dataset

from trainer.config import FASHION_MNIST_ROOT, OFFICIAL_TEST_KINDS, DatasetConfig, SplitConfig
from trainer.imagefolder import IMAGE_SUFFIXES, FolderError, folder_listing

log = logging.getLogger("trainer")

TORCHVISION_KINDS = {
    "cifar10": "CIFAR10",
    "cifar100": "CIFAR100",
    "food101": "Food101",
    "imagenette": "Imagenette",
    "flowers102": "Flowers102",
    "oxford_pets": "OxfordIIITPet",
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DataError(RuntimeError):
    """A dataset cannot be read or split; the message says which and why."""


def list_folder(root: Path) -> list[tuple[str, str]]:
    """`trainer.imagefolder.folder_listing`, raising `DataError`."""
    try:
        return folder_listing(root)
    except FolderError as exc:
        raise DataError(str(exc)) from None


def to_unit(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 images (B, 3, S, S) -> float32 in [0, 1] on `device` (augmentations work in this space)."""
    return images.to(device, non_blocking=True).float().div_(255)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] images -> ImageNet-normalised, on their device (a new tensor)."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean).div_(std)


def model_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 images (B, 3, S, S) -> ImageNet-normalised float32 on `device`, done there in one pass over one new
    tensor (x · 1/(255σ) − μ/σ): on a CPU this conversion, not reading the rows, bounds what a loader can deliver."""
    x = images.to(device, non_blocking=True).float()
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    return x.mul_(1 / (255 * std)).sub_(mean / std)


class Rows(Protocol):
    """Where an `ImageSet`'s pixels live: anything that returns uint8 rows (B, 3, S, S) by index."""

    def take(self, rows: np.ndarray) -> np.ndarray: ...


@dataclass
class InMemory:
    """Pixels held as one array (small datasets, proxies, a dataset whose cache could not be written)."""

    pixels: np.ndarray

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self.pixels[rows]


@dataclass
class ImageFiles:
    """Pixels decoded from image files on demand (no cache): PIL, RGB, bilinear resize, per image."""

    files: list[str]
    image_size: int

    def take(self, rows: np.ndarray) -> np.ndarray:
        return np.stack([decode_image(self.files[int(r)], self.image_size) for r in rows])


def decode_image(path: str, image_size: int) -> np.ndarray:
    """One image file as uint8 (3, S, S): RGB, resized bilinearly. The cache stores exactly this. Deeper than 8 bits
    per channel (16-bit PNG, 32-bit TIFF) is scaled by its bit depth, not clipped; an image over Pillow's
    decompression-bomb limit is unreadable, like any broken file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                rgb = _eight_bit(img).convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR)
    except (
        OSError,
        UnidentifiedImageError,
        ValueError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def _eight_bit(img: Image.Image) -> Image.Image:
    """A single-channel image of more than 8 bits as 8-bit gray, scaled by its depth (Pillow's own `convert`
    clips at 255, which turns a 16-bit image black and white)."""
    if img.mode not in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return img
    values = np.asarray(img, dtype=np.float64)
    top = 65535.0 if img.mode.startswith("I;16") or values.max(initial=0) <= 65535 else 2.0**32 - 1
    if img.mode == "F":
        top = max(1.0, float(values.max(initial=0)))
    return Image.fromarray(np.clip(np.round(values * 255.0 / top), 0, 255).astype(np.uint8), mode="L")


@dataclass
class ImageSet:
    """All images of a dataset at one size: labels, class names, `official_test` (rows of the publisher's test
    part, when it has one), and the pixels behind `source`, reached through `rows` (None: row i is image i)."""

    classes: list[str]
    labels: np.ndarray
    image_size: int
    source: Rows
    official_test: np.ndarray | None = None
    files: list[str] | None = None
    skipped: int = 0
    rows: np.ndarray | None = None
    cached: bool = field(default=False)

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices: np.ndarray | list[int]) -> torch.Tensor:
        """Images `indices` as uint8 (B, 3, S, S), in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        rows = indices if self.rows is None else self.rows[indices]
        return torch.from_numpy(np.ascontiguousarray(self.source.take(rows)))

    def image(self, i: int) -> torch.Tensor:
        """Image `i` as uint8 (3, S, S)."""
        return self.take([i])[0]

    def identity(self) -> list[str] | None:
        """What the split's hash covers beyond the labels: the file names of a folder dataset."""
        return self.files

    def subset(self, keep: np.ndarray) -> ImageSet:
        """The images at rows `keep` (sorted), sharing this set's pixels."""
        rows = keep if self.rows is None else self.rows[keep]
        return ImageSet(
            self.classes,
            self.labels[keep],
            self.image_size,
            self.source,
            None if self.official_test is None else self.official_test[keep],
            None if self.files is None else [self.files[i] for i in keep],
            self.skipped,
            rows,
            self.cached,
        )


@dataclass
class Decoded:
    """A dataset decoded at one size, as the cache stores it (`pixels` may be a memmap being filled)."""

    classes: list[str]
    labels: np.ndarray
    pixels: np.ndarray
    official_test: np.ndarray | None = None
    files: list[str] | None = None
    skipped: int = 0


def load_images(config: DatasetConfig, image_size: int, cache_dir: str | Path | None = None) -> ImageSet:
    """The dataset `config` describes at `image_size`, honouring `limit_per_class` (first images per class).

    With `cache_dir`, pixels come from the decoded-image cache there (built on first use); a cache that cannot be
    written falls back to decoding, with one warning."""
    if cache_dir is not None:
        from trainer.cache import open_cached

        images = open_cached(config, image_size, Path(cache_dir))
    else:
        images = load_uncached(config, image_size)
    if config.limit_per_class:
        keep = np.concatenate(
            [np.flatnonzero(images.labels == c)[: config.limit_per_class] for c in range(len(images.classes))]
        )
        images = images.subset(np.sort(keep))
    return images


def folder_root(config: DatasetConfig) -> Path:
    """An image folder's root (validation makes sure there is one)."""
    if config.root is None:
        raise DataError("imagefolder: dataset.root is not set")
    return Path(config.root)


def load_uncached(config: DatasetConfig, image_size: int) -> ImageSet:
    """The dataset without a cache: small and torchvision kinds decoded into memory, image folders lazily."""
    if config.kind == "imagefolder":
        files, labels, classes, skipped = list_image_folder(folder_root(config), verify=True)
        return ImageSet(classes, labels, image_size, ImageFiles(files, image_size), files=files, skipped=skipped)
    decoded = decode_dataset(config, image_size)
    return ImageSet(decoded.classes, decoded.labels, image_size, InMemory(decoded.pixels), decoded.official_test)


def decode_dataset(config: DatasetConfig, image_size: int) -> Decoded:
    """Decode a whole non-folder dataset into memory (what the cache stores for it)."""
    if config.kind == "digits":
        return _digits(image_size)
    if config.kind == "fashion_mnist":
        return _fashion_mnist(Path(config.root or FASHION_MNIST_ROOT), image_size)
    return _torchvision(config, image_size)


def _resize_gray(gray: np.ndarray, image_size: int, chunk: int = 256) -> np.ndarray:
    """(N, h, w) uint8 grayscale -> (N, 3, S, S) uint8, resized bilinearly, a chunk at a time: the float copy of a
    whole dataset at 224 px would be four times its uint8 size (13 GB for Fashion-MNIST)."""
    out = np.empty((len(gray), 3, image_size, image_size), dtype=np.uint8)
    for lo in range(0, len(gray), chunk):
        t = torch.from_numpy(gray[lo : lo + chunk]).float().unsqueeze(1)
        t = F.interpolate(t, size=(image_size, image_size), mode="bilinear", align_corners=False)
        out[lo : lo + chunk] = t.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).numpy()
    return out


def _digits(image_size: int) -> Decoded:
    from sklearn.datasets import load_digits

    digits = load_digits()
    gray = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    return Decoded([str(c) for c in range(10)], digits.target.astype(np.int64), _resize_gray(gray, image_size))


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzip or plain), as MNIST-style datasets ship them."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    dtype_code, ndim = data[2], data[3]
    if dtype_code != 0x08:
        raise DataError(f"{path}: only unsigned-byte IDX files are supported")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


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


def _fashion_mnist(root: Path, image_size: int) -> Decoded:
    """Fashion-MNIST from its IDX files; train and t10k pooled (t10k is the official test part)."""
    classes = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
    train_x, train_y, test_x, test_y = (read_idx(p) for p in fashion_mnist_files(root))
    labels = np.concatenate([train_y, test_y]).astype(np.int64)
    official = np.concatenate([np.zeros(len(train_y), bool), np.ones(len(test_y), bool)])
    return Decoded(classes, labels, _resize_gray(np.concatenate([train_x, test_x]), image_size), official)


def list_image_folder(root: Path, verify: bool) -> tuple[list[str], np.ndarray, list[str], int]:
    """Files, labels, classes and skipped count of `root/<class>/<image>`. Files without an image suffix are
    skipped; with `verify`, so are files PIL cannot parse (the cache instead skips what it cannot decode)."""
    files: list[str] = []
    labels: list[int] = []
    classes: list[str] = []
    skipped = 0
    by_class: dict[str, list[str]] = {}
    for name, path in list_folder(root):
        by_class.setdefault(name, [])
        if Path(path).suffix.lower() not in IMAGE_SUFFIXES or (verify and not _is_readable_image(path)):
            skipped += 1
            log.warning("skipped unreadable file %s", path)
            continue
        by_class[name].append(path)
    for name, readable in by_class.items():
        if readable:
            labels += [len(classes)] * len(readable)
            classes.append(name)
            files += readable
    if len(classes) < 2:
        raise DataError(
            f"imagefolder: {root} needs at least 2 class folders with readable images, found {len(classes)}"
        )
    if skipped:
        log.warning("imagefolder %s: %d unreadable files skipped", root, skipped)
    return files, np.asarray(labels, dtype=np.int64), classes, skipped


def _is_readable_image(path: str) -> bool:
    # verify() checks structure and checksums without decoding every pixel; a decompression bomb is refused by its
    # size, as decode_image refuses it.
    try:
        with Image.open(path) as img:
            img.verify()
            return img.size[0] * img.size[1] <= (Image.MAX_IMAGE_PIXELS or 2**62)
    except Exception:  # PIL raises many types for broken files; any of them means "skip it"
        return False


def torchvision_parts(config: DatasetConfig) -> list:
    """The parts of a torchvision dataset (train first, the official test part last), downloading when asked."""
    import torchvision

    cls = getattr(torchvision.datasets, TORCHVISION_KINDS[config.kind])
    parts = []
    for split_kwargs in _torchvision_part_args(config.kind):
        try:
            parts.append(cls(root=config.root, download=config.download, **split_kwargs))
        except RuntimeError as exc:
            hint = "" if config.download else " (set download: true to fetch it)"
            raise DataError(f"{config.kind}: not found in {config.root}{hint}: {exc}") from None
        except OSError as exc:  # URLError is an OSError: no network
            raise DataError(f"{config.kind}: download failed, are you offline? ({exc})") from None
    return parts


def _torchvision(config: DatasetConfig, image_size: int) -> Decoded:
    """A torchvision dataset, its parts pooled (the last one is the official test part)."""
    parts = torchvision_parts(config)
    classes = list(getattr(parts[0], "classes", [])) or sorted({str(y) for p in parts for _, y in p})
    # One array filled in place: a list of images then np.stack would hold the dataset twice (18 GB for
    # CIFAR-100 at 224 px).
    pixels = np.empty((sum(len(p) for p in parts), 3, image_size, image_size), dtype=np.uint8)
    labels: list[int] = []
    official: list[bool] = []
    for k, part in enumerate(parts):
        for img, label in part:
            rgb = img.convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR)
            pixels[len(labels)] = np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)
            labels.append(int(label))
            official.append(k == len(parts) - 1)
    return Decoded(
        [str(c) for c in classes],
        np.asarray(labels, dtype=np.int64),
        pixels,
        np.asarray(official, dtype=bool),
    )


def _torchvision_part_args(kind: str) -> list[dict]:
    if kind in ("cifar10", "cifar100"):
        return [{"train": True}, {"train": False}]
    if kind in ("food101", "imagenette"):
        return [{"split": "train"}, {"split": "val" if kind == "imagenette" else "test"}]
    if kind == "flowers102":
        return [{"split": "train"}, {"split": "val"}, {"split": "test"}]
    return [{"split": "trainval"}, {"split": "test"}]


def make_split(images: ImageSet, split: SplitConfig, seed: int) -> dict:
    """One stratified, seeded split: {"train","val","test": sorted index lists, "hash": ...}. With
    `test: official` the test set is the publisher's test part and val is drawn from the rest.

    The hash covers the indices, the labels and (for folders) the file names, so a changed dataset is detected."""
    labels = images.labels
    index = np.arange(len(labels))
    try:
        if split.test == "official":
            if images.official_test is None or not images.official_test.any():
                raise DataError(
                    "split: test: official needs a dataset with an official test part "
                    f"({', '.join(OFFICIAL_TEST_KINDS)})"
                )
            rest, test = index[~images.official_test], index[images.official_test]
            train, val = train_test_split(rest, test_size=split.val, stratify=labels[rest], random_state=seed)
        else:
            rest, test = train_test_split(index, test_size=split.test, stratify=labels, random_state=seed)
            val_fraction = split.val / (1 - split.test)
            train, val = train_test_split(rest, test_size=val_fraction, stratify=labels[rest], random_state=seed)
    except ValueError as exc:
        counts = np.bincount(labels)
        raise DataError(
            f"cannot split {len(labels)} images stratified into train/val/test "
            f"(smallest class has {counts.min()} images): {exc}"
        ) from None
    parts = {name: sorted(int(i) for i in idx) for name, idx in (("train", train), ("val", val), ("test", test))}
    digest = hashlib.sha256(json.dumps([parts, labels.tolist(), images.identity()]).encode()).hexdigest()[:16]
    result = {
        **parts,
        "hash": digest,
        "classes": images.classes,
        "skipped_files": images.skipped,
        "test_part": "official" if split.test == "official" else "random",
    }
    if images.files is not None:
        result["files"] = images.files
    return result


class Part:
    """Images of one source at the given positions: a split part of an `ImageSet`, or a step's proxies."""

    def __init__(self, images: ImageSet, indices: np.ndarray) -> None:
        self.images, self.indices = images, np.asarray(indices, dtype=np.int64)
        self.labels = images.labels[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def take(self, positions: np.ndarray) -> torch.Tensor:
        return self.images.take(self.indices[positions])


def proxy_part(pixels: np.ndarray | Rows, labels: np.ndarray, image_size: int) -> Part:
    """A step's proxies (an array, or rows read from their file) as a `Part`."""
    source = InMemory(pixels) if isinstance(pixels, np.ndarray) else pixels
    images = ImageSet([], np.asarray(labels, dtype=np.int64), image_size, source)
    return Part(images, np.arange(len(labels)))


class Concat:
    """Several parts read as one: the originals of the training split followed by the active proxies."""

    def __init__(self, parts: list[Part]) -> None:
        self.parts = [p for p in parts if len(p)]
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])
        self.labels = np.concatenate([p.labels for p in self.parts]) if self.parts else np.zeros(0, np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def take(self, positions: np.ndarray) -> torch.Tensor:
        """The images at `positions`, in that order, one read per part."""
        which = np.searchsorted(self.offsets, positions, side="right") - 1
        pieces = {int(k): self.parts[k].take(positions[which == k] - self.offsets[k]) for k in np.unique(which)}
        if len(pieces) == 1:
            return next(iter(pieces.values()))
        out = torch.empty((len(positions), *next(iter(pieces.values())).shape[1:]), dtype=torch.uint8)
        for k, pixels in pieces.items():
            out[torch.from_numpy(np.flatnonzero(which == k))] = pixels
        return out


class _Batches(Dataset):
    """Batch `i` of an epoch, whole: a DataLoader over it (batch_size=None) reads batches in worker processes."""

    def __init__(self, data: Part | Concat, batches: list[np.ndarray]) -> None:
        self.data, self.batches = data, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        positions = self.batches[i]
        return self.data.take(positions), torch.from_numpy(self.data.labels[positions])


def batches(
    data: Part | Concat,
    batch_size: int,
    generator: torch.Generator | None,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(uint8 images, labels) batches of `data`: shuffled by `generator` (None: in order). A last training batch
    of one image is dropped (batch norm cannot train on it)."""
    n = len(data)
    order = (torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)).numpy()
    cuts = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if generator is not None and cuts and len(cuts[-1]) == 1 and len(cuts) > 1:
        cuts.pop()
    loader = DataLoader(
        _Batches(data, cuts),
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,
    )
    yield from loader


def loader_options(device: torch.device) -> dict[str, bool]:
    """Page-locked host batches and asynchronous copies, which only CUDA has."""
    return {"pin_memory": device.type == "cuda"}
