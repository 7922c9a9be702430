"""Datasets (DESIGN §7) and the one stratified, seeded train/val/test split of a trial.

Every dataset becomes an `ImageSet`: labels, class names, and a way to fetch image `i` as a uint8 tensor
(3, S, S). Small datasets live in memory; image folders are decoded lazily. Nothing is ever written into a dataset's
folder. Grayscale becomes three channels; ImageNet normalisation happens later, on the device (`trainer.loop`).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset

from trainer.config import DatasetConfig, SplitConfig

log = logging.getLogger("trainer")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
TORCHVISION_KINDS = {
    "cifar10": "CIFAR10", "cifar100": "CIFAR100", "food101": "Food101", "imagenette": "Imagenette",
    "flowers102": "Flowers102", "oxford_pets": "OxfordIIITPet",
}


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_unit(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 images (B, 3, S, S) -> float32 in [0, 1] on `device` (augmentations work in this space)."""
    return images.to(device, non_blocking=True).float().div_(255)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] images -> ImageNet-normalised, on their device."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean) / std


def model_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 images (B, 3, S, S) -> ImageNet-normalised float32 on `device` (done on the device: it is cheap there)."""
    return normalize(to_unit(images, device))


class DataError(RuntimeError):
    """A dataset cannot be read or split; the message says which and why."""


@dataclass
class ImageSet:
    """All images of a dataset at one size. Exactly one of `pixels` (in memory) or `files` (lazy) is set."""

    classes: list[str]
    labels: np.ndarray
    image_size: int
    pixels: np.ndarray | None = None
    files: list[str] | None = None
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> torch.Tensor:
        """Image `i` as uint8 (3, S, S)."""
        if self.pixels is not None:
            return torch.from_numpy(self.pixels[i])
        path = self.files[i]
        try:
            with Image.open(path) as img:
                rgb = img.convert("RGB").resize((self.image_size, self.image_size), Image.BILINEAR)
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"cannot read image {path}: {exc}") from None
        return torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1)

    def identity(self) -> list[str] | None:
        """What the split's hash covers beyond the labels: the file names of a folder dataset."""
        return self.files


class IndexedImages(Dataset):
    """The images of an `ImageSet` at the given indices: items are (uint8 image, label)."""

    def __init__(self, images: ImageSet, indices: np.ndarray) -> None:
        self.images, self.indices = images, np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, int]:
        i = int(self.indices[k])
        return self.images.image(i), int(self.images.labels[i])


class TensorImages(Dataset):
    """Images held as one uint8 tensor (N, 3, S, S), e.g. the proxies of a proxy step."""

    def __init__(self, pixels: torch.Tensor, labels: torch.Tensor) -> None:
        self.pixels, self.labels = pixels, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, int]:
        return self.pixels[k], int(self.labels[k])


def load_images(config: DatasetConfig, image_size: int) -> ImageSet:
    """Load the dataset `config` describes, at `image_size`, honouring `limit_per_class` (first images per class)."""
    if config.kind == "digits":
        images = _digits(image_size)
    elif config.kind == "fashion_mnist":
        images = _fashion_mnist(Path(config.root or FASHION_MNIST_ROOT), image_size)
    elif config.kind == "imagefolder":
        images = _image_folder(Path(config.root), image_size)
    else:
        images = _torchvision(config, image_size)
    if config.limit_per_class:
        keep = np.concatenate([np.flatnonzero(images.labels == c)[: config.limit_per_class]
                               for c in range(len(images.classes))])
        keep.sort()
        images.labels = images.labels[keep]
        if images.pixels is not None:
            images.pixels = images.pixels[keep]
        else:
            images.files = [images.files[i] for i in keep]
    return images


def _resize_gray(gray: np.ndarray, image_size: int) -> np.ndarray:
    """(N, h, w) uint8 grayscale -> (N, 3, S, S) uint8, resized bilinearly."""
    t = torch.from_numpy(gray).float().unsqueeze(1)
    t = F.interpolate(t, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return t.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous().numpy()


def _digits(image_size: int) -> ImageSet:
    from sklearn.datasets import load_digits

    digits = load_digits()
    gray = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    return ImageSet([str(c) for c in range(10)], digits.target.astype(np.int64), image_size,
                    pixels=_resize_gray(gray, image_size))


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzip or plain), as MNIST-style datasets ship them."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    dtype_code, ndim = data[2], data[3]
    if dtype_code != 0x08:
        raise DataError(f"{path}: only unsigned-byte IDX files are supported")
    shape = struct.unpack(f">{ndim}I", data[4: 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _fashion_mnist(root: Path, image_size: int) -> ImageSet:
    """Fashion-MNIST from its IDX files (Debian: `apt-get install dataset-fashion-mnist`); train and t10k pooled."""
    classes = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
    images, labels = [], []
    for part in ("train", "t10k"):
        found = sorted(root.glob(f"{part}-images-idx3-ubyte*")), sorted(root.glob(f"{part}-labels-idx1-ubyte*"))
        if not found[0] or not found[1]:
            raise DataError(f"fashion_mnist: no {part}-images/labels IDX files in {root} "
                            f"(on Debian: apt-get install dataset-fashion-mnist)")
        images.append(read_idx(found[0][0]))
        labels.append(read_idx(found[1][0]).astype(np.int64))
    return ImageSet(classes, np.concatenate(labels), image_size,
                    pixels=_resize_gray(np.concatenate(images), image_size))


def _class_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        raise DataError(f"imagefolder: {root} is not a folder")
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def check_image_folder(root: Path, split: SplitConfig) -> None:
    """Fail fast, before any trial, on a folder that cannot make one: not a folder, fewer than 2 class folders
    with images, or a class with fewer than 3 images (it could not appear in train, val and test). Counts files by
    name only; unreadable ones are found (and skipped) when a trial loads the folder."""
    counts = {d.name: sum(1 for p in d.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
              for d in _class_dirs(root)}
    with_images = {name: n for name, n in counts.items() if n}
    if len(with_images) < 2:
        empty = sorted(set(counts) - set(with_images))
        raise DataError(f"imagefolder: {root} needs at least 2 class folders with images, found "
                        f"{len(with_images)}" + (f" (empty: {', '.join(empty[:5])})" if empty else ""))
    small = sorted(name for name, n in with_images.items() if n < 3)
    if small:
        raise DataError(f"imagefolder: class {small[0]!r} in {root} has {with_images[small[0]]} image(s); every class "
                        f"needs at least 3 to appear in train, val (split {split.val}) and test (split {split.test})")


def _image_folder(root: Path, image_size: int) -> ImageSet:
    """`root/<class>/<image>`; files that are not readable images are skipped and counted."""
    files, labels, classes, skipped = [], [], [], 0
    for class_dir in _class_dirs(root):
        readable = []
        for path in sorted(p for p in class_dir.rglob("*") if p.is_file()):
            if path.suffix.lower() not in IMAGE_SUFFIXES or not _is_readable_image(path):
                skipped += 1
                log.warning("skipped unreadable file %s", path)
                continue
            readable.append(str(path.resolve()))
        if readable:
            labels += [len(classes)] * len(readable)
            classes.append(class_dir.name)
            files += readable
    if len(classes) < 2:
        raise DataError(f"imagefolder: {root} needs at least 2 class folders with readable images, "
                        f"found {len(classes)}")
    if skipped:
        log.warning("imagefolder %s: %d unreadable files skipped", root, skipped)
    return ImageSet(classes, np.asarray(labels, dtype=np.int64), image_size, files=files, skipped=skipped)


def _is_readable_image(path: Path) -> bool:
    # verify() checks structure and checksums without decoding every pixel: cheap enough to run on every file.
    try:
        with Image.open(path) as img:
            img.verify()
        return True
    except Exception:  # PIL raises many types for broken files; any of them means "skip it"
        return False


def _torchvision(config: DatasetConfig, image_size: int) -> ImageSet:
    """A torchvision dataset (train and test parts pooled), downloaded into `root` when `download: true`."""
    import torchvision

    cls = getattr(torchvision.datasets, TORCHVISION_KINDS[config.kind])
    parts = []
    for split_kwargs in _torchvision_parts(config.kind):
        try:
            parts.append(cls(root=config.root, download=config.download, **split_kwargs))
        except RuntimeError as exc:
            hint = "" if config.download else " (set download: true to fetch it)"
            raise DataError(f"{config.kind}: not found in {config.root}{hint}: {exc}") from None
        except OSError as exc:  # URLError is an OSError: no network
            raise DataError(f"{config.kind}: download failed, are you offline? ({exc})") from None
    classes = list(getattr(parts[0], "classes", [])) or sorted({str(y) for p in parts for _, y in p})
    pixels, labels = [], []
    for part in parts:
        for img, label in part:
            rgb = img.convert("RGB").resize((image_size, image_size), Image.BILINEAR)
            pixels.append(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))
            labels.append(int(label))
    return ImageSet([str(c) for c in classes], np.asarray(labels, dtype=np.int64), image_size,
                    pixels=np.stack(pixels))


def _torchvision_parts(kind: str) -> list[dict]:
    if kind in ("cifar10", "cifar100"):
        return [{"train": True}, {"train": False}]
    if kind in ("food101", "imagenette"):
        return [{"split": "train"}, {"split": "val" if kind == "imagenette" else "test"}]
    if kind == "flowers102":
        return [{"split": "train"}, {"split": "val"}, {"split": "test"}]
    return [{"split": "trainval"}, {"split": "test"}]


def make_split(images: ImageSet, split: SplitConfig, seed: int) -> dict:
    """One stratified, seeded split: {"train","val","test": sorted index lists, "hash": ...}.

    The hash covers the indices, the labels and (for folders) the file names, so a changed dataset is detected."""
    labels = images.labels
    index = np.arange(len(labels))
    try:
        rest, test = train_test_split(index, test_size=split.test, stratify=labels, random_state=seed)
        val_fraction = split.val / (1 - split.test)
        train, val = train_test_split(rest, test_size=val_fraction, stratify=labels[rest], random_state=seed)
    except ValueError as exc:
        counts = np.bincount(labels)
        raise DataError(f"cannot split {len(labels)} images stratified into train/val/test "
                        f"(smallest class has {counts.min()} images): {exc}") from None
    parts = {name: sorted(int(i) for i in idx) for name, idx in (("train", train), ("val", val), ("test", test))}
    digest = hashlib.sha256(json.dumps([parts, labels.tolist(), images.identity()]).encode()).hexdigest()[:16]
    result = {**parts, "hash": digest, "classes": images.classes, "skipped_files": images.skipped}
    if images.files is not None:
        result["files"] = images.files
    return result
