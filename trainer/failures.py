"""What kind of failure a trial's exception is, decided where the exception is raised (torch-free).

The kind travels as data: in the local worker's outcome file, or as the exception object a Ray task re-raises.
"disk_full" is the machine's fault and "oom" (a GPU shared with other trials ran out of memory) is the packing's:
neither uses up an attempt. Out of GPU memory shows up under several names, whichever library noticed first:
torch's caching allocator (`torch.OutOfMemoryError`), cuBLAS creating a handle or workspace, cuDNN asking for
workspace; the last two are plain `RuntimeError`s whose message is the only mark.
"""

from __future__ import annotations

import errno

ALLOCATION_FAILED = (
    "CUDA out of memory",
    "CUDA error: out of memory",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_NOT_ENOUGH_WORKSPACE",
)
FAILURE_KINDS = ("error", "disk_full", "oom")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` says the GPU ran out of memory."""
    if type(exc).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError, without importing torch
        return True
    return isinstance(exc, RuntimeError) and any(marker in str(exc) for marker in ALLOCATION_FAILED)


def failure_kind(exc: BaseException) -> str:
    """ "disk_full" (no space or quota left), "oom" (out of GPU memory), else "error"."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk_full"
    if is_out_of_memory(exc):
        return "oom"
    return "error"
