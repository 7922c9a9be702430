"""What a finished trial reports: its metrics (the objective among them) and `result.json`, from its per-epoch
history, its proxy steps and its one evaluation on the test set, which nothing before has touched."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from trainer.config import TrialConfig
from trainer.device import peak_rss_mb

VERSIONED = ("torch", "torchvision", "timm", "grad-cam", "numpy", "scikit-learn")


@dataclass
class TestScores:
    """The one evaluation on the test set: loss, accuracy, and each image's prediction and label."""

    loss: float
    accuracy: float
    predicted: np.ndarray
    labels: np.ndarray


@dataclass
class TrialFacts:
    """What the trial did besides its history and steps: its data, its device, its compute."""

    classes: list[str]
    train_images: int
    skipped_files: int
    device: torch.device
    batch_size: int
    amp: bool
    split: dict[str, Any]
    seconds: float  # this run's wall time: data, model, training
    shared_epochs: int  # leading epochs a shared stem computed
    shared_seconds: float  # and the proxy-step time it spent on this path
    peak_gpu: tuple[float, float]  # allocated and reserved MB, over every segment of the trial


def trial_metrics(
    config: TrialConfig, history: list[dict], steps: list[dict], test: TestScores, run: TrialFacts
) -> dict[str, Any]:
    """Every metric of a finished trial: the last epoch's validation (the objective), the best epoch's, the test
    scores, what its proxy steps did, and its cost."""
    precision_, recall, f1, _ = precision_recall_fscore_support(
        test.labels, test.predicted, average="macro", zero_division=0
    )
    best = max(history, key=lambda r: r["val_accuracy"])
    target = config.target_val_accuracy
    chosen = sum(s["chosen"] for s in steps)
    on_gpu = run.device.type == "cuda"
    return {
        "val_accuracy": history[-1]["val_accuracy"],
        "val_loss": history[-1]["val_loss"],
        "val_accuracy_best": best["val_accuracy"],
        "best_epoch": best["epoch"],
        "test_accuracy": test.accuracy,
        "test_loss": test.loss,
        "test_precision_macro": float(precision_),
        "test_recall_macro": float(recall),
        "test_f1_macro": float(f1),
        "train_seconds": sum(r["seconds"] for r in history),
        "proxy_seconds": sum(s["seconds"] for s in steps),
        "own_train_seconds": sum(r["seconds"] for r in history[run.shared_epochs :]),  # its own epochs' training
        "own_compute_seconds": sum(r["seconds"] for r in history[run.shared_epochs :])
        + sum(s["seconds"] for s in steps)
        - run.shared_seconds,
        "proxy_steps_done": len(steps),  # not `proxy_steps`: that name is the schedule, a param
        "proxy_images": sum(s["proxy_images"] for s in steps),
        "proxy_unchanged": sum(s["unchanged"] for s in steps),
        "proxy_unchanged_fraction": sum(s["unchanged"] for s in steps) / chosen if chosen else None,
        "proxy_zero_maps": sum(s["zero_maps"] for s in steps)
        if steps and all(s["zero_maps"] is not None for s in steps)
        else None,  # None: no step, or no maps (duplicate)
        **{f"proxy_{name}": _mean_over_steps(steps, name) for name in ("hot_fraction", "changed_fraction")},
        "epochs": len(history),
        "num_classes": len(run.classes),
        "images_seen": sum(r["train_images"] for r in history),
        "train_split_images": run.train_images,
        "epochs_to_target": next((r["epoch"] for r in history if r["val_accuracy"] >= target), None)
        if target is not None
        else None,
        "skipped_files": run.skipped_files,
        "peak_rss_mb": peak_rss_mb(),
        "peak_gpu_mem_mb": run.peak_gpu[0] if on_gpu else None,
        "peak_gpu_reserved_mb": run.peak_gpu[1] if on_gpu else None,
        "batch_size": run.batch_size,
        "mixed_precision_used": run.amp,
        "seed": config.seed,
        "test_part": run.split["test_part"],  # "random" (per seed), "held_out" (test_seed) or "official"
        "trial_seconds": run.seconds,
    }


def result_record(
    config: TrialConfig,
    metrics: dict[str, Any],
    steps: list[dict],
    test: TestScores,
    run: TrialFacts,
    threads: int,
    tag: dict[str, Any] | None,
) -> dict[str, Any]:
    """`result.json`: the metrics and everything needed to trust them (config digest, split hash, versions, device,
    and whose result it is: `tag`)."""
    device = run.device
    return {
        "metrics": metrics,
        "config_digest": config.digest(),
        "confusion_matrix": confusion_matrix(test.labels, test.predicted, labels=range(len(run.classes))).tolist(),
        "classes": run.classes,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "versions": {"python": platform.python_version(), **{n: importlib.metadata.version(n) for n in VERSIONED}},
        "split_hash": run.split["hash"],
        "test_part": run.split["test_part"],
        "proxy_steps": steps,
        "threads": threads,
        "tag": tag,
    }


def _mean_over_steps(steps: list[dict], name: str) -> float | None:
    """The mean of a proxy step statistic over the steps that have it (None: no step had any proxy)."""
    values = [s[name] for s in steps if s.get(name) is not None]
    return float(np.mean(values)) if values else None
