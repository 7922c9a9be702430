"""The batches an epoch trains on: parts of an image set (a split part, a step's proxies) read as one, shuffled per
epoch, and turned into model input on the device (normalisation happens there)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from trainer.data.imageset import ImageSet, InMemory, Rows

IMAGENET_MEAN = (0.485, 0.456, 0.406)


IMAGENET_STD = (0.229, 0.224, 0.225)


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
