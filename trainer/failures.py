"""What kind of failure a trial's error is, from its text (torch-free: the driver reads it too).

Out of GPU memory shows up under several names, whichever library noticed first: torch's caching allocator, cuBLAS
creating a handle or workspace, cuDNN asking for workspace. All of them mean the same to a scheduler: this trial did
not fit beside the others.
"""

from __future__ import annotations

OUT_OF_MEMORY = (
    "CUDA out of memory",
    "OutOfMemoryError",
    "CUDA error: out of memory",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_NOT_ENOUGH_WORKSPACE",
)
DISK_FULL = ("disk full", "[Errno 28]", "No space left")


def is_out_of_memory(text: str) -> bool:
    """Whether an error's text says the GPU ran out of memory."""
    return any(marker in text for marker in OUT_OF_MEMORY)


def is_disk_full(text: str) -> bool:
    """Whether an error's text says a disk filled up."""
    return any(marker in text for marker in DISK_FULL)
