"""The cost of one training step with each augmentation, and with the saliency-consistency loss, ÷ a plain step.

    python bench/augmentations.py           # resnet18, 64 px, batch 32, median of 5 steps
    python bench/augmentations.py --quick   # test_resnet, median of 2

A step: augment on the device, forward, loss, backward, optimiser step (the loop's own code path). Goal for the
saliency loss: ≤ 3× a plain step (Al-afandi et al. 2022, Table 4, report 7–9×).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from common import emit, median_seconds

from trainer.augmentations import REGISTRY, augment_batch
from trainer.config import AugmentConfig, DatasetConfig
from trainer.data.batching import normalize, to_unit
from trainer.data.load import load_images
from trainer.epoch import CAM_AUGMENTATIONS
from trainer.models import create_model
from trainer.saliency_loss import saliency_terms


def step(model, optimizer, x01, y, name, generator, saliency: bool) -> None:
    batch = augment_batch(x01, y, 10, name, generator, AugmentConfig(), model if name in CAM_AUGMENTATIONS else None)
    if saliency:
        logits, l_sal, l_inv = saliency_terms(model, x01, batch, y)
        loss = F.cross_entropy(logits, batch.targets) + l_sal + 0.1 * l_inv
    else:
        loss = F.cross_entropy(model(normalize(batch.images)), batch.targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    arch, repeats = ("test_resnet", 2) if args.quick else ("resnet18", 5)
    data = load_images(DatasetConfig(kind="digits", limit_per_class=4), 64)  # 40 images: the batch is 32
    x01 = to_unit(data.take(range(32)), torch.device("cpu"))
    y = torch.from_numpy(data.labels[:32])
    torch.manual_seed(0)
    model = create_model(arch, 10, 64).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    plain = median_seconds(lambda: step(model, optimizer, x01, y, "none", generator, False), repeats)

    def ratio(name: str, saliency: bool) -> float:
        return median_seconds(lambda: step(model, optimizer, x01, y, name, generator, saliency), repeats) / plain

    rows = {name: ratio(name, False) for name in REGISTRY}
    saliency = {name: ratio(name, True) for name in ("flip", "cutmix")}
    emit(
        {
            "benchmark": "augmentations",
            "model": arch,
            "batch": 32,
            "plain_step_s": plain,
            "step_ratio": rows,
            "saliency_loss_step_ratio": saliency,
            "goal_saliency_ratio": 3.0,
        }
    )


if __name__ == "__main__":
    main()
