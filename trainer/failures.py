"""What kind of failure a trial's exception is, decided where the exception is raised (torch-free).

The kind travels as data: in the local worker's outcome file, or as the exception object a Ray task re-raises.
`FailureKind` carries the rules: "disk_full" is the machine's fault and "oom" (a GPU shared with other trials ran
out of memory) is the packing's: neither uses up an attempt. Out of GPU memory shows up under several names,
whichever library noticed first: torch's caching allocator (`torch.OutOfMemoryError`), cuBLAS creating a handle or
workspace, cuDNN asking for workspace; the last two are plain `RuntimeError`s whose message is the only mark.
"""

from __future__ import annotations

import enum
import errno
from typing import TypeGuard

ALLOCATION_FAILED = (
    "CUDA out of memory",
    "CUDA error: out of memory",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_NOT_ENOUGH_WORKSPACE",
)


class FailureKind(enum.StrEnum):
    """Why a try ended without a result, with what the driver does about it. The rule lives here, once."""

    ERROR = "error"  # the trial's own failure
    DISK_FULL = "disk_full"  # the machine's: no space or quota left
    OOM = "oom"  # out of GPU memory while sharing a GPU: the packing's (`on_gpus` keeps it only there)
    ORPHANED = "orphaned"  # the driver died while it ran
    INTERRUPTED = "interrupted"  # the driver was stopped while it ran

    @property
    def uses_attempt(self) -> bool:
        """Whether the try counts against `max_attempts`: only the trial's own failures do."""
        return self is FailureKind.ERROR

    @property
    def whole_gpu_retry(self) -> bool:
        """Whether the next try gets a whole GPU (and this one does not count as a try of this run)."""
        return self is FailureKind.OOM

    @property
    def stopped(self) -> bool:
        """A try the driver stopped, not a failure: shown as INTERRUPTED."""
        return self in (FailureKind.ORPHANED, FailureKind.INTERRUPTED)

    def on_gpus(self, gpus: float) -> FailureKind:
        """This kind for a job that had `gpus`: out of memory on a whole GPU (or none) is the trial's own error."""
        return FailureKind.ERROR if self is FailureKind.OOM and not 0 < gpus < 1 else self

    @classmethod
    def read(cls, value: object) -> FailureKind:
        """The kind a study recorded (`fail_kind`), ERROR for anything else."""
        try:
            return cls(str(value))
        except ValueError:
            return cls.ERROR


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` says the GPU ran out of memory."""
    if type(exc).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError, without importing torch
        return True
    return isinstance(exc, RuntimeError) and any(marker in str(exc) for marker in ALLOCATION_FAILED)


def is_disk_full(exc: BaseException) -> TypeGuard[OSError]:
    """Whether `exc` says no space or quota is left where a file was being written."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def failure_kind(exc: BaseException) -> FailureKind:
    """DISK_FULL (no space or quota left), OOM (out of GPU memory), else ERROR."""
    if is_disk_full(exc):
        return FailureKind.DISK_FULL
    if is_out_of_memory(exc):
        return FailureKind.OOM
    return FailureKind.ERROR
