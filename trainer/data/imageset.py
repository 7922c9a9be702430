"""`ImageSet`: a dataset's labels, class names and a `take(rows)` that returns uint8 images (B, 3, S, S), whatever
holds the pixels (memory, image files decoded on demand, the decoded-image cache: the same rows give the same pixels
either way)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from trainer.config import DatasetConfig
from trainer.data.decode import decode_dataset, decode_image, folder_root, list_image_folder

if TYPE_CHECKING:
    import torch


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
        import torch  # here: a driver that only checks its caches never loads torch (~1.2 CPU-s)

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


def load_uncached(config: DatasetConfig, image_size: int) -> ImageSet:
    """The dataset without a cache: small and torchvision kinds decoded into memory, image folders lazily."""
    if config.kind == "imagefolder":
        files, labels, classes, skipped = list_image_folder(folder_root(config), verify=True)
        return ImageSet(classes, labels, image_size, ImageFiles(files, image_size), files=files, skipped=skipped)
    decoded = decode_dataset(config, image_size)
    return ImageSet(decoded.classes, decoded.labels, image_size, InMemory(decoded.pixels), decoded.official_test)
