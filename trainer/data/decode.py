"""Decoding datasets into uint8 pixels (3, S, S): image files, Fashion-MNIST's IDX files, scikit-learn's digits
and torchvision's datasets. Grayscale becomes three channels; deeper than 8 bits is scaled, never clipped. Nothing
is ever written into a dataset's folder."""

from __future__ import annotations

import gzip
import logging
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from trainer.config import FASHION_MNIST_ROOT, DatasetConfig
from trainer.data.identity import fashion_mnist_files
from trainer.data.imagefolder import IMAGE_SUFFIXES, folder_listing, require_classes
from trainer.errors import DataError, FolderError

log = logging.getLogger("trainer")


TORCHVISION_KINDS = {
    "cifar10": "CIFAR10",
    "cifar100": "CIFAR100",
    "food101": "Food101",
    "imagenette": "Imagenette",
    "flowers102": "Flowers102",
    "oxford_pets": "OxfordIIITPet",
}


def list_folder(root: Path) -> list[tuple[str, str]]:
    """`trainer.data.imagefolder.folder_listing`, raising `DataError`."""
    try:
        return folder_listing(root)
    except FolderError as exc:
        raise DataError(str(exc)) from None


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
class Decoded:
    """A dataset decoded at one size, as the cache stores it (`pixels` may be a memmap being filled)."""

    classes: list[str]
    labels: np.ndarray
    pixels: np.ndarray
    official_test: np.ndarray | None = None
    files: list[str] | None = None
    skipped: int = 0


def folder_root(config: DatasetConfig) -> Path:
    """An image folder's root (validation makes sure there is one)."""
    if config.root is None:
        raise DataError("imagefolder: dataset.root is not set")
    return Path(config.root)


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
    import torch  # here: a driver whose caches are built already never loads torch (~1.2 CPU-s)
    import torch.nn.functional as F

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


def _fashion_mnist(root: Path, image_size: int) -> Decoded:
    """Fashion-MNIST from its IDX files; train and t10k pooled (t10k is the official test part)."""
    classes = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
    train_x, train_y, test_x, test_y = (read_idx(p) for p in fashion_mnist_files(root))
    labels = np.concatenate([train_y, test_y]).astype(np.int64)
    official = np.concatenate([np.zeros(len(train_y), bool), np.ones(len(test_y), bool)])
    return Decoded(classes, labels, _resize_gray(np.concatenate([train_x, test_x]), image_size), official)


# Why a file of an image folder is not trained on: each skipped file is logged with one, and counted once
# (`skipped_files`, the trial's "files skipped").
NOT_AN_IMAGE = "not an image (by its suffix)"
UNREADABLE = "an image that cannot be read"


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
        if Path(path).suffix.lower() not in IMAGE_SUFFIXES:
            skipped += 1
            log.warning("skipped %s: %s", path, NOT_AN_IMAGE)
            continue
        if verify and not _is_readable_image(path):
            skipped += 1
            log.warning("skipped %s: %s", path, UNREADABLE)
            continue
        by_class[name].append(path)
    for name, readable in by_class.items():
        if readable:
            labels += [len(classes)] * len(readable)
            classes.append(name)
            files += readable
    require_classes(root, len(classes))
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
