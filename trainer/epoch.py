"""One epoch of training on originals and proxies, and an evaluation pass: the two loops a trial repeats."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainer.augmentations import augment_batch
from trainer.config import TrialConfig
from trainer.data.batching import Concat, Part, batches, loader_options, model_input, normalize, to_unit
from trainer.errors import TrialError
from trainer.learning_rate import learning_rate
from trainer.saliency_loss import saliency_terms

CAM_AUGMENTATIONS = ("snapmix", "attentive_cutmix")  # they read the live model's CAMs


def train_epoch(
    config: TrialConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    data: Concat,
    num_classes: int,
    batch_size: int,
    epoch: int,
    device: torch.device,
    amp: bool,
) -> tuple[float, float, float]:
    """Train one epoch; return mean loss, accuracy (against the hard labels) and the last learning rate.
    Raises TrialError on a NaN/inf loss."""
    seed = config.seed * 100_003 + epoch
    torch.manual_seed(seed)
    shuffle, augment = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    model.train()
    total_loss, correct, seen, lr = 0.0, 0, 0, config.optimizer.lr
    n_batches = max(1, -(-len(data) // batch_size))
    loader = batches(data, batch_size, shuffle, config.num_workers, **loader_options(device))
    for i, (x, y) in enumerate(loader):
        lr = learning_rate(config, (epoch + i / n_batches) / config.epochs, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        y = y.to(device, non_blocking=True)
        loss, logits = train_step(config, model, optimizer, scaler, to_unit(x, device), y, num_classes, augment, amp)
        if not torch.isfinite(loss):
            raise TrialError(
                f"loss became {loss.item()} at epoch {epoch + 1}, batch {i + 1} (lr {lr:.3g}): training diverged"
            )
        total_loss += loss.item() * len(y)
        correct += int((logits.argmax(1) == y).sum().item())
        seen += len(y)
    return total_loss / max(seen, 1), correct / max(seen, 1), lr


def train_step(
    config: TrialConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    originals: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    generator: torch.Generator,
    amp: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step on a batch of images in [0, 1] (augmentation, the losses in use, the scaled backward
    and the step); returns the loss and the logits. `batch_size: auto` probes memory with this very step. A
    non-finite loss is returned, not stepped on."""
    saliency_loss = config.saliency_loss_weight > 0 or config.invariance_loss_weight > 0
    batch = augment_batch(
        originals,
        y,
        num_classes,
        config.augmentation,
        generator,
        config.augment,
        model if config.augmentation in CAM_AUGMENTATIONS else None,
    )
    with torch.autocast(device_type=originals.device.type, dtype=torch.float16, enabled=amp):
        l_sal: torch.Tensor | float
        l_inv: torch.Tensor | float
        if saliency_loss:
            logits, l_sal, l_inv = saliency_terms(model, originals, batch, y)
        else:
            logits, l_sal, l_inv = model(normalize(batch.images)), 0.0, 0.0
        l_class = F.cross_entropy(logits.float(), batch.targets, label_smoothing=config.label_smoothing)
        loss = (
            config.class_loss_weight * l_class
            + config.saliency_loss_weight * l_sal
            + config.invariance_loss_weight * l_inv
        )
    if not torch.isfinite(loss):
        return loss, logits
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss, logits


@torch.no_grad()
def evaluate(
    model: nn.Module, data: Part, batch_size: int, device: torch.device, amp: bool = False, num_workers: int = 0
) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Mean cross-entropy, accuracy, predictions and labels of `model` on `data` (eval mode, no augmentation)."""
    was_training = model.training
    model.eval()
    losses, predicted, labels = [], [], []
    for x, y in batches(data, batch_size, None, num_workers, **loader_options(device)):
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            logits = model(model_input(x, device)).float()
        losses.append(F.cross_entropy(logits, y.to(device), reduction="sum").item())
        predicted.append(logits.argmax(1).cpu())
        labels.append(y)
    model.train(was_training)
    predicted_, labels_ = torch.cat(predicted).numpy(), torch.cat(labels).numpy()
    return sum(losses) / len(labels_), float((predicted_ == labels_).mean()), predicted_, labels_


def make_optimizer(config: TrialConfig, model: nn.Module) -> torch.optim.Optimizer:
    opt = config.optimizer
    if opt.name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay)
    cls = torch.optim.AdamW if opt.name == "adamw" else torch.optim.Adam
    return cls(model.parameters(), lr=opt.lr, weight_decay=opt.weight_decay)
