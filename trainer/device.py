"""Where a trial runs: its device, its precision, its batch size (`batch_size: auto`, thesis Algorithm 3), and the
peak host memory it used."""

from __future__ import annotations

import logging
import os
import resource
import sys
from collections.abc import Callable

import torch
from torch import nn

from trainer.config import TrialConfig
from trainer.failures import is_out_of_memory

log = logging.getLogger("trainer")
CPU_DEFAULT_BATCH_SIZE = 32


def hide_gpus() -> None:
    """Make this process see no GPU (a trial given none): Ray 2.60 no longer clears CUDA_VISIBLE_DEVICES for tasks
    that ask for no GPU (ray-project/ray#62492), so a CPU trial would otherwise train on GPU 0 beside the GPU
    trials and run them out of memory. CUDA reads the variable when it initialises, which torch does lazily."""
    if torch.cuda.is_initialized():
        log.warning("CUDA was initialised in this process before its trial: it may still see a GPU")
    os.environ["CUDA_VISIBLE_DEVICES"] = ""


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


def gpu_peaks(device: torch.device) -> tuple[float, float]:
    """This process's peak GPU memory (MB) on `device` since the last reset: what tensors held (allocated) and what
    the caching allocator took from the GPU (reserved: what other trials on a shared GPU could not have; the CUDA
    context and library workspaces come on top). (0, 0) off CUDA."""
    if device.type != "cuda":
        return 0.0, 0.0
    return torch.cuda.max_memory_allocated(device) / 2**20, torch.cuda.max_memory_reserved(device) / 2**20


def precision(config: TrialConfig, device: torch.device) -> tuple[bool, torch.amp.GradScaler]:
    """Mixed precision (fp16 autocast with a GradScaler) where asked and on CUDA; plain fp32 elsewhere."""
    amp = config.mixed_precision and device.type == "cuda"
    if config.mixed_precision and not amp:
        log.info("mixed_precision: %s has no fp16 autocast here; training in fp32", device)
    return amp, torch.amp.GradScaler("cuda", enabled=amp)


def batch_size_for(
    config: TrialConfig, model: nn.Module, num_classes: int, device: torch.device, train_size: int, amp: bool
) -> int:
    if config.batch_size != "auto":
        return config.batch_size
    if device.type != "cuda":
        log.warning(
            "batch_size: auto measures GPU memory and needs CUDA; using %d on %s", CPU_DEFAULT_BATCH_SIZE, device
        )
        return CPU_DEFAULT_BATCH_SIZE
    size = auto_batch_size(config, model, num_classes, device, train_size, amp, limit_bytes=gpu_memory_limit(device))
    log.info("batch size finder: %d", size)
    return size


def find_batch_size(fits: Callable[[int], bool], limit: int) -> int:
    """Thesis Algorithm 3: double the batch size while `fits(size)` (a forward+backward pass that does not run
    out of memory), and keep the last size that fit, at most `limit`."""
    best, size = 1, 2
    while size <= limit and fits(size):
        best, size = size, size * 2
    return best


HEADROOM = 0.85  # of the trial's GPU memory: the probe's peak must leave room for what varies between batches
_MEMORY_FRACTION: list[float] = [1.0]


def cap_gpu_memory(fraction: float) -> None:
    """A trial given a fraction of a GPU (`gpus_per_trial: 0.5`) may allocate only that share: Ray shares a GPU
    without isolating memory, so the first trial's `batch_size: auto` would otherwise size itself for the whole
    GPU and run the others out of memory. A no-op without CUDA."""
    _MEMORY_FRACTION[0] = fraction
    if torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(fraction)


def gpu_memory_limit(device: torch.device) -> int | None:
    """The bytes this trial may use on `device` (its share of the GPU), or None off CUDA."""
    if device.type != "cuda":
        return None
    return int(torch.cuda.get_device_properties(device).total_memory * _MEMORY_FRACTION[0])


def auto_batch_size(
    config: TrialConfig,
    model: nn.Module,
    num_classes: int,
    device: torch.device,
    dataset_size: int,
    amp: bool,
    max_batch_size: int = 1024,
    limit_bytes: int | None = None,
) -> int:
    """`find_batch_size` probing the trial's real step (`trainer.epoch.train_step`: its augmentation, mixed
    precision, optimiser state and losses, the saliency loss's double backward included) on random images. A size
    fits when it raises no out-of-memory error (torch's, cuBLAS's or cuDNN's) and its peak reserved memory stays
    under HEADROOM of `limit_bytes`. Unlike the thesis code, the weights and batch-norm statistics are put back."""
    from trainer.epoch import make_optimizer, train_step  # the step itself, not a copy of it

    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    generator = torch.Generator().manual_seed(0)

    def fits(size: int) -> bool:
        optimizer = make_optimizer(config, model)  # its state is allocated by the step, as in training
        scaler = torch.amp.GradScaler(device.type, enabled=amp)
        try:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            x = torch.rand(size, 3, config.image_size, config.image_size, generator=generator).to(device)
            y = torch.randint(num_classes, (size,), generator=generator).to(device)
            train_step(config, model, optimizer, scaler, x, y, num_classes, generator, amp)
            peak = torch.cuda.max_memory_reserved(device) if device.type == "cuda" else 0
            return limit_bytes is None or peak <= HEADROOM * limit_bytes
        except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:  # cuBLAS and cuDNN say it their own way
            if is_out_of_memory(exc):
                return False
            raise
        finally:
            model.zero_grad(set_to_none=True)
            del optimizer
            if device.type == "cuda":
                torch.cuda.empty_cache()

    try:
        return find_batch_size(fits, min(max_batch_size, dataset_size))
    finally:
        model.load_state_dict(saved)
