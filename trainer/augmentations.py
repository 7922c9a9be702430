"""Every augmentation by name (the `augmentation` axis), and `augment_batch`, which the training loop calls."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from trainer import augment, mixing
from trainer.augment import Augmented
from trainer.config import AUGMENTATIONS, AugmentConfig

REGISTRY: dict[str, Callable[..., Augmented]] = {
    "none": augment.no_augmentation,
    "flip": augment.flip,
    "cutout": augment.cutout,
    "random_erasing": augment.random_erasing,
    "hide_and_seek": augment.hide_and_seek,
    "gridmask": augment.gridmask,
    "augmix": augment.augmix,
    "mixup": mixing.mixup,
    "cutmix": mixing.cutmix,
    "resizemix": mixing.resizemix,
    "smoothmix": mixing.smoothmix,
    "ricap": mixing.ricap,
    "samplepairing": mixing.samplepairing,
    "saliencymix": mixing.saliencymix,
    "snapmix": mixing.snapmix,
    "attentive_cutmix": mixing.attentive_cutmix,
}
if tuple(REGISTRY) != AUGMENTATIONS:
    raise AssertionError(
        "trainer.augmentations.REGISTRY and trainer.config.AUGMENTATIONS must name the same "
        "augmentations in the same order"
    )


def augment_batch(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    name: str,
    generator: torch.Generator,
    params: AugmentConfig,
    model: torch.nn.Module | None = None,
) -> Augmented:
    """Apply augmentation `name` to `images` in [0, 1] with hard `labels`; `model` is the live model (SnapMix and
    Attentive CutMix read its CAMs)."""
    targets = F.one_hot(labels, num_classes).to(images.dtype)
    return REGISTRY[name](images, targets, generator, params, model)
