"""The saliency-consistency loss of Al-afandi, Magyar & Horváth, "Saliency Map Based Data Augmentation" (2022):
L = α·L_class + β·L_sal + γ·L_inv (their eq. 8).

Original and augmented images go through the model in one batch, in float32 even under mixed precision (see
`saliency_terms`). Each image's vanilla-gradient saliency (Simonyan
et al.: |∂ score of its label / ∂ input|, max over channels) is computed with `create_graph=True`, so L_sal trains the
network. The original maps are put through the augmentation's own spatial transform (`Augmented.same_on_maps`: the
same flip/rotation, erased region, pasted box or blend) to give the expected map of each augmented image; every map
is min-max normalised, and L_sal is their mean squared difference. L_inv (eq. 6) is the MSE between the logits of the
original and of the augmented image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainer.augment import Augmented
from trainer.data.batching import normalize


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each (1, H, W) map of a (B, 1, H, W) batch to [0, 1]."""
    flat = maps.flatten(1)
    low, high = flat.min(1).values.view(-1, 1, 1, 1), flat.max(1).values.view(-1, 1, 1, 1)
    return (maps - low) / (high - low).clamp_min(1e-8)


def vanilla_saliency(logits: torch.Tensor, inputs: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """|∂ logit[class] / ∂ input|, max over channels: (B, 1, H, W), differentiable (create_graph)."""
    score = logits.gather(1, classes.view(-1, 1)).sum()
    (grad,) = torch.autograd.grad(score, inputs, create_graph=True)
    return grad.abs().amax(1, keepdim=True)


def saliency_terms(
    model: nn.Module, originals: torch.Tensor, augmented: Augmented, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits of the augmented images, L_sal and L_inv, for `originals` in [0, 1] and their augmentation."""
    n = originals.shape[0]
    both = normalize(torch.cat([originals, augmented.images])).float().detach().requires_grad_(True)
    # In float32 whatever autocast says: an fp16 input gradient taken without loss scaling underflows to zero (the
    # term silently vanishes) or overflows to inf, and a GradScaler cannot scale a gradient taken inside the loss.
    with torch.autocast(device_type=both.device.type, enabled=False):
        logits = model(both)
    classes = torch.cat([labels, augmented.targets.argmax(1)])
    maps = vanilla_saliency(logits.float(), both, classes)
    expected = normalize_maps(augmented.same_on_maps(normalize_maps(maps[:n])))
    saliency = F.mse_loss(normalize_maps(maps[n:]), expected)
    invariance = F.mse_loss(logits[n:].float(), logits[:n].float())
    return logits[n:], saliency, invariance
