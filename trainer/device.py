"""Where a trial runs: its device, its precision, its batch size (`batch_size: auto`, thesis Algorithm 3), and the
peak host memory it used."""

from __future__ import annotations

import logging
import os
import resource
import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from trainer.config import TrialConfig

log = logging.getLogger("trainer")
CPU_DEFAULT_BATCH_SIZE = 32


def select_device(requested: str | None = None) -> torch.device:
    """`requested` if given, else the first CUDA device when there is one (Ray sets CUDA_VISIBLE_DEVICES to the
    trial's GPUs, so that is its own), else the CPU, saying so when GPUs were assigned but CUDA is absent."""
    if requested and requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda:0")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if visible:
        log.warning(
            "GPU(s) %s assigned (CUDA_VISIBLE_DEVICES) but CUDA is not available to torch: running on the CPU", visible
        )
    return torch.device("cpu")


def set_threads(threads: int) -> int:
    """Give torch `threads` CPU threads (at least 1) and return the number it uses. Every entry point (`search
    trial`, the local and Ray workers, stems) goes through here: CPU kernels sum in a different order with another
    thread count, so the same config gives the same metrics only with the same threads."""
    torch.set_num_threads(max(1, int(threads)))
    return torch.get_num_threads()


def reset_peak_rss() -> bool:
    """Start counting this process's peak resident memory afresh (Linux: `5` into /proc/self/clear_refs resets the
    high-water mark to the current size). Without it a trial would report the peak of whatever its process did
    before: the earlier trials of a reused Ray worker, or the parent it was started from, whose high-water mark
    Linux carries across exec (`ru_maxrss`). Returns whether it could."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident memory (MB) since `reset_peak_rss` (Linux's VmHWM), else over the process's life."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KB on Linux


def precision(config: TrialConfig, device: torch.device) -> tuple[bool, torch.amp.GradScaler]:
    """Mixed precision (fp16 autocast with a GradScaler) where asked and on CUDA; plain fp32 elsewhere."""
    amp = config.mixed_precision and device.type == "cuda"
    if config.mixed_precision and not amp:
        log.info("mixed_precision: %s has no fp16 autocast here; training in fp32", device)
    return amp, torch.amp.GradScaler("cuda", enabled=amp)


def batch_size_for(
    config: TrialConfig, model: nn.Module, num_classes: int, device: torch.device, train_size: int
) -> int:
    if config.batch_size != "auto":
        return config.batch_size
    if device.type != "cuda":
        log.warning(
            "batch_size: auto measures GPU memory and needs CUDA; using %d on %s", CPU_DEFAULT_BATCH_SIZE, device
        )
        return CPU_DEFAULT_BATCH_SIZE
    size = auto_batch_size(model, config.image_size, num_classes, device, train_size)
    log.info("batch size finder: %d", size)
    return size


def find_batch_size(fits: Callable[[int], bool], limit: int) -> int:
    """Thesis Algorithm 3: double the batch size while `fits(size)` (a forward+backward pass that does not run
    out of memory), and keep the last size that fit, at most `limit`."""
    best, size = 1, 2
    while size <= limit and fits(size):
        best, size = size, size * 2
    return best


def auto_batch_size(
    model: nn.Module,
    image_size: int,
    num_classes: int,
    device: torch.device,
    dataset_size: int,
    max_batch_size: int = 1024,
) -> int:
    """`find_batch_size` with a real memory probe on `device`. Unlike the thesis code it never steps the
    optimiser, and it puts back the batch-norm statistics that the probe's forward passes update."""
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def fits(size: int) -> bool:
        try:
            x = torch.randn(size, 3, image_size, image_size, device=device)
            F.cross_entropy(model(x), torch.randint(num_classes, (size,), device=device)).backward()
            return True
        except torch.cuda.OutOfMemoryError:
            return False
        finally:
            model.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()

    try:
        return find_batch_size(fits, min(max_batch_size, dataset_size))
    finally:
        model.load_state_dict(saved)
