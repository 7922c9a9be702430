"""What every `TrialConfig` field means: the README's table of fields is `fields_table()` (a test keeps them equal,
and fails when a field has no meaning written here)."""

from __future__ import annotations

import dataclasses
import typing

from trainer.config import TrialConfig

MEANINGS = {
    "dataset.kind": "digits, fashion_mnist, imagefolder, cifar10, cifar100, food101, imagenette, flowers102, "
    "oxford_pets",
    "dataset.root": "the dataset's folder (an imagefolder's holds one folder per class)",
    "dataset.download": "let torchvision download the dataset into root (needs the network)",
    "dataset.limit_per_class": "use only the first N images of each class",
    "image_size": "side of the square images the model sees, in pixels",
    "split.val": "fraction of each class held out for validation (selection, halving, best epoch)",
    "split.test": "fraction of each class held out for the final test, or `official` for the publisher's test part",
    "split.test_seed": "draw the test part once with this seed, the same for every trial and confirmation (the "
    "trial's seed then draws only val): no trial selects on another's test images",
    "batch_size": "images per step, or `auto`: the largest power of two that fits the GPU (thesis Algorithm 3)",
    "architecture": "any `timm.list_models()` name",
    "pretrained": "start from timm's pretrained weights (downloads them)",
    "pretrained_path": "start from a local state dict instead (tensors only; a mismatched head is ignored)",
    "cam_method": "the CAM of the proxy step (16 pytorch-grad-cam methods), or the controls `randomcam` (random "
    "maps) and `duplicate` (the wrong images copied unmasked)",
    "cam_target": "the class a CAM explains: the `true` label or the `predicted` one",
    "cam_batch_size": "images per CAM batch",
    "threshold": "pixels whose CAM value is at least this (maps are min-max normalised) are replaced",
    "multiply_weight": "w of the blended rule: a replaced pixel becomes (1 − w) · M · I",
    "proxy_steps": 'the schedule: numbers are epochs of training, `p` a proxy step ("20,p,19"); its epochs are the '
    "trial's",
    "wrong_subset": "fraction of the wrong training images drawn (seeded) at each proxy step",
    "clear_every_step": "drop earlier proxies at each new proxy step instead of keeping them",
    "pixel_replacement": "blended, black, mean, max, min (equals black: maps are normalised) or halfmax",
    "unchanged_proxies": "`drop` proxies the map left identical to their source (plain copies), or `keep` them "
    "(what the thesis code did)",
    "control": "`none`, or a control matched to this very configuration: `random_location` (each proxy replaces as "
    "many pixels with the same values as its CAM did, where a smooth random map ranks highest) or "
    "`matched_duplicate` (the very images it trained as proxies, unmasked)",
    "augmentation": "one of the 16 augmentations (see Augmentations)",
    "augment.max_degrees": "flip: rotation range, ± degrees",
    "augment.cutout_size": "cutout: side of the erased square, as a fraction of the image side",
    "augment.erasing_probability": "random_erasing: chance an image is erased",
    "augment.hide_grid": "hide_and_seek: patches per side",
    "augment.hide_probability": "hide_and_seek: chance each patch is hidden",
    "augment.gridmask_ratio": "gridmask: kept fraction of each grid period",
    "augment.augmix_severity": "augmix: severity 1–10",
    "augment.mix_alpha": "mixup, cutmix, saliencymix, snapmix: λ ~ Beta(α, α)",
    "augment.resize_min": "resizemix: smallest scale of the pasted image",
    "augment.resize_max": "resizemix: largest scale of the pasted image",
    "augment.ricap_beta": "ricap: boundary ~ Beta(β, β)",
    "augment.attentive_grid": "attentive_cutmix: grid cells per side",
    "augment.attentive_cells": "attentive_cutmix: cells pasted",
    "class_loss_weight": "α: weight of the classification loss",
    "saliency_loss_weight": "β: weight of the saliency-consistency loss (0: off)",
    "invariance_loss_weight": "γ: weight of the logit-invariance loss (0: off)",
    "optimizer.name": "adamw, adam or sgd",
    "optimizer.lr": "learning rate (the base of every schedule)",
    "optimizer.weight_decay": "weight decay",
    "optimizer.momentum": "sgd's momentum",
    "scheduler.name": "none, onecycle, cosine or step, set on every batch",
    "scheduler.max_lr": "onecycle's peak (default: optimizer.lr)",
    "scheduler.pct_start": "onecycle: fraction of the trial spent warming up",
    "scheduler.step_size": "step: epochs between decays",
    "scheduler.gamma": "step: factor of each decay",
    "label_smoothing": "label smoothing of the cross-entropy",
    "mixed_precision": "fp16 autocast and a GradScaler on CUDA (fp32 elsewhere)",
    "target_val_accuracy": "report the first epoch reaching this validation accuracy (epochs_to_target)",
    "num_workers": "loader processes that read batches (the image cache needs few)",
    "seed": "the seed: the split, the initial weights and every epoch's randomness derive from it",
}


def leaf_fields(cls: type = TrialConfig, prefix: str = "") -> list[tuple[str, object]]:
    """(dotted name, default) of every field, nested configs flattened."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out += leaf_fields(hints[f.name], f"{prefix}{f.name}.")
        else:
            default = f.default if f.default is not dataclasses.MISSING else "(required)"
            out.append((f"{prefix}{f.name}", default))
    return out


def fields_table() -> str:
    """The README's table: every field, its default and what it means."""
    rows = ["| field | default | meaning |", "|---|---|---|"]
    for name, default in leaf_fields():
        shown = "(required)" if default == "(required)" else f"`{default!r}`" if default is not None else "`None`"
        rows.append(f"| `{name}` | {shown} | {MEANINGS[name]} |")
    return "\n".join(rows) + "\n"
