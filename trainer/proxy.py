"""The proxy step (DESIGN §6): wrong training images -> CAMs -> proxy images that join the training set only.

With `I` the un-normalised image in [0, 1], `M` its CAM in [0, 1] and `t` the threshold:
`blended` (thesis Algorithm 1): where(M >= t, (1 - w) * M * I, I); `black`: where(M >= t, 0, I);
`mean|max|min|halfmax`: where(M >= t, c, I) with c the per-image mean / max / min / max/2 of M.
A step's proxies are stored as one `proxies/step-K.npz` (uint8 images, labels, source indices).
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from trainer.cams import compute_cams
from trainer.config import TrialConfig
from trainer.data import IndexedImages, TensorImages, model_input
from trainer.files import atomic_write_bytes


@dataclass
class ProxyStep:
    """The outcome of one proxy step."""

    pixels: torch.Tensor          # (K, 3, S, S) uint8 proxy images
    labels: torch.Tensor          # (K,) int64, the true labels of their sources
    source_indices: np.ndarray    # (K,) indices into the dataset's ImageSet
    cams: torch.Tensor            # (K, S, S) float32, the maps that made them
    wrong: int                    # how many training images were misclassified
    seconds: float

    def as_dataset(self) -> TensorImages:
        """The proxies as training data."""
        return TensorImages(self.pixels, self.labels)


def replace_pixels(images: torch.Tensor, cams: torch.Tensor, threshold: float, weight: float,
                   rule: str) -> torch.Tensor:
    """Apply replacement `rule` to `images` (B, C, H, W) in [0, 1] where `cams` (B, H, W) >= `threshold`."""
    m = cams.unsqueeze(1).to(images.dtype)
    hot = m >= threshold
    if rule == "blended":
        fill = (1 - weight) * m * images
    elif rule == "black":
        fill = torch.zeros_like(images)
    else:
        flat = m.flatten(1)
        per_image = {"mean": flat.mean(1), "max": flat.amax(1), "min": flat.amin(1),
                     "halfmax": flat.amax(1) / 2}[rule]
        fill = per_image.view(-1, 1, 1, 1).expand_as(images)
    return torch.where(hot, fill, images)


@torch.no_grad()
def find_wrong(model: nn.Module, train: IndexedImages, batch_size: int, device: torch.device,
               num_workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Positions in `train` the model misclassifies (eval mode, no augmentation) and its predictions there."""
    was_training = model.training
    model.eval()
    predictions = []
    loader = DataLoader(train, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    for images, _ in loader:
        predictions.append(model(model_input(images, device)).argmax(1).cpu())
    model.train(was_training)
    predicted = torch.cat(predictions).numpy()
    labels = train.images.labels[train.indices]
    wrong = np.flatnonzero(predicted != labels)
    return wrong, predicted[wrong]


def make_proxy_images(model: nn.Module, train: IndexedImages, config: TrialConfig, step: int,
                      device: torch.device, batch_size: int) -> ProxyStep:
    """Run proxy step number `step` (0-based) of a trial on the original training images `train`."""
    start = time.perf_counter()
    wrong, predicted = find_wrong(model, train, batch_size, device, config.num_workers)
    rng = np.random.default_rng([config.seed, step])
    count = math.ceil(config.wrong_subset * len(wrong))
    chosen = np.sort(rng.choice(len(wrong), size=count, replace=False)) if count else np.zeros(0, dtype=int)
    positions = wrong[chosen]
    source_indices = train.indices[positions].astype(np.int64)
    labels = torch.from_numpy(train.images.labels[source_indices].astype(np.int64))
    targets = labels if config.cam_target == "true" else torch.from_numpy(predicted[chosen].astype(np.int64))

    pixels, cams = [], []
    for lo in range(0, count, config.cam_batch_size):
        batch = torch.stack([train[int(p)][0] for p in positions[lo:lo + config.cam_batch_size]])
        maps = compute_cams(model, model_input(batch, device), targets[lo:lo + config.cam_batch_size],
                            config.cam_method, config.cam_batch_size)
        proxy = replace_pixels(batch.float() / 255, maps, config.threshold, config.multiply_weight,
                               config.pixel_replacement)
        pixels.append((proxy * 255).round().clamp(0, 255).to(torch.uint8))
        cams.append(maps)
    size = config.image_size
    return ProxyStep(
        pixels=torch.cat(pixels) if pixels else torch.zeros(0, 3, size, size, dtype=torch.uint8),
        labels=labels,
        source_indices=source_indices,
        cams=torch.cat(cams) if cams else torch.zeros(0, size, size),
        wrong=len(wrong),
        seconds=time.perf_counter() - start,
    )


def save_proxies(step: ProxyStep, path: Path) -> None:
    """Write a step's proxies as one compressed .npz, atomically."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, images=step.pixels.numpy(), labels=step.labels.numpy(),
                        source_indices=step.source_indices)
    atomic_write_bytes(path, buffer.getvalue())


def load_proxies(path: Path) -> TensorImages:
    """Read a `proxies/step-K.npz` back as training data."""
    with np.load(path, allow_pickle=False) as data:
        return TensorImages(torch.from_numpy(data["images"]), torch.from_numpy(data["labels"]))


def gallery(originals: torch.Tensor, cams: torch.Tensor, proxies: torch.Tensor, rows: int = 8) -> np.ndarray:
    """An (H, W, 3) uint8 picture: one row per example of image | CAM (jet colours) | proxy image."""
    tile = max(originals.shape[-1], 96)

    def up(img: np.ndarray) -> np.ndarray:
        return cv2.resize(img, (tile, tile), interpolation=cv2.INTER_NEAREST)

    lines = []
    for k in range(min(rows, len(originals))):
        heat = cv2.applyColorMap((cams[k].numpy() * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
        parts = [up(originals[k].permute(1, 2, 0).numpy()), up(np.ascontiguousarray(heat)),
                 up(proxies[k].permute(1, 2, 0).numpy())]
        lines.append(np.concatenate(parts, axis=1))
    if not lines:
        return np.zeros((tile, 3 * tile, 3), dtype=np.uint8)
    return np.concatenate(lines, axis=0)


def save_gallery(picture: np.ndarray, path: Path) -> None:
    """Write a gallery picture as PNG, atomically."""
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
