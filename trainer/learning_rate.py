"""The learning-rate schedule of a trial: a pure function of progress, set on every batch (and logged per epoch),
so it cannot be forgotten and needs no state in the checkpoint."""

from __future__ import annotations

import math

from trainer.config import TrialConfig


def learning_rate(config: TrialConfig, progress: float, epoch: int) -> float:
    """The learning rate at `progress` in [0, 1] of the trial (epoch `epoch`), per `config.scheduler`.

    `onecycle` warms up from max_lr/25 to max_lr over `pct_start`, then anneals (cosine) to max_lr/25e4."""
    base, sched = config.optimizer.lr, config.scheduler
    if sched.name == "none":
        return base
    if sched.name == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * progress))
    if sched.name == "step":
        return base * sched.gamma ** (epoch // sched.step_size)
    peak = sched.max_lr or base
    start, end = peak / 25, peak / 25e4
    if progress < sched.pct_start:
        return start + (peak - start) * 0.5 * (1 - math.cos(math.pi * progress / sched.pct_start))
    rest = (progress - sched.pct_start) / (1 - sched.pct_start)
    return end + (peak - end) * 0.5 * (1 + math.cos(math.pi * rest))
