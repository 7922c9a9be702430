"""Our training epoch against a bare PyTorch loop on the same model and data.

    python bench/trainer.py           # resnet18 at 64 px on 1,797 digits (a few minutes)
    python bench/trainer.py --quick   # CI-sized

Ours: `run_trial` with everything on (metrics.jsonl, checkpoint, TensorBoard, progress log, seeded shuffling, the LR
set per batch), no augmentation and no proxies; its per-epoch cost is (t(3 epochs) − t(1 epoch)) / 2 minus the
validation pass it also makes. Bare: a minimal loop over the same uint8 tensors (to device, normalise, forward,
loss, backward, step). Goal: ours ÷ bare images per second ≥ 0.90.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from common import emit

from trainer import TrialConfig, run_trial
from trainer.data.batching import Part, batches, model_input
from trainer.data.load import load_images
from trainer.data.split import make_split
from trainer.epoch import evaluate
from trainer.models import create_model


def timed_trial(config: dict, epochs: int, workdir: Path) -> float:
    start = time.perf_counter()
    run_trial(TrialConfig.from_dict({**config, "proxy_steps": str(epochs)}), workdir)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    arch, limit = ("test_resnet", 20) if args.quick else ("resnet18", None)
    config = {
        "dataset": {"kind": "digits", "limit_per_class": limit},
        "image_size": 64,
        "batch_size": 64,
        "architecture": arch,
        "augmentation": "none",
        "optimizer": {"name": "adamw", "lr": 1e-3},
        "seed": 0,
    }
    resolved = TrialConfig.from_dict(config)
    images = load_images(resolved.dataset, resolved.image_size)
    split = make_split(images, resolved.split, resolved.seed)
    train, val = Part(images, np.asarray(split["train"])), Part(images, np.asarray(split["val"]))
    with tempfile.TemporaryDirectory() as tmp:
        one = timed_trial(config, 1, Path(tmp) / "one")
        three = timed_trial(config, 3, Path(tmp) / "three")
    torch.manual_seed(0)
    model = create_model(arch, len(images.classes), 64)
    device = torch.device("cpu")
    start = time.perf_counter()
    evaluate(model, val, 64, device)
    val_seconds = time.perf_counter() - start
    ours_epoch = (three - one) / 2 - val_seconds

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    start = time.perf_counter()
    for epoch in range(2):
        for x, y in batches(train, 64, torch.Generator().manual_seed(epoch)):
            loss = F.cross_entropy(model(model_input(x, device)), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    bare_epoch = (time.perf_counter() - start) / 2
    emit(
        {
            "benchmark": "trainer",
            "model": arch,
            "train_images": len(train),
            "ours_epoch_s": ours_epoch,
            "bare_epoch_s": bare_epoch,
            "ours_images_per_s": len(train) / ours_epoch,
            "bare_images_per_s": len(train) / bare_epoch,
            "ratio": bare_epoch / ours_epoch,
            "goal_ratio": 0.9,
            "validation_pass_s": val_seconds,
        }
    )


if __name__ == "__main__":
    main()
