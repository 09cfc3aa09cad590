"""The glibc malloc settings of a worker: one for loading and training, glibc's own steady state for the inference
window (docs/design/allocator.md says why). Set in the worker process only."""
from __future__ import annotations

import ctypes

# glibc malloc for every worker: no mmap'd chunks, and free memory at the heap's top kept up to 2 GiB. By default
# each large tensor (a vision batch's activations) is a fresh mmap, zero-filled page by page on first touch and
# unmapped when freed: a vision run spent a fifth of its CPU time in the kernel (docs/design/allocator.md).
MALLOPT = {-4: 0, -1: 2**31 - 1}  # M_MMAP_MAX, M_TRIM_THRESHOLD
# The inference window gets glibc's own steady state back (the worker switches before the window opens): a process
# that has freed a block of 32 MB or more, as every torch run has, serves smaller blocks from the heap, maps larger
# ones and trims the heap's top beyond 64 MB. Kept as in training, the heap held what evaluation freed, and the
# inference peaks read high (docs/design/allocator.md has the figures). Text evaluation runs as fast; vision's
# tensors over 32 MB are faulted in again, as in a default process.
INFERENCE_MALLOPT = {-4: 65536, -3: 32 * 2**20, -1: 64 * 2**20}  # M_MMAP_MAX, M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
ALLOCATOR = ("glibc malloc: mmap off, trim threshold 2 GiB; inference window: glibc's steady state "
             "(mmap from 32 MB, trim threshold 64 MB)")


def tune_allocator(settings: dict[int, int] = MALLOPT) -> str | None:
    """Apply `settings` (MALLOPT: in a worker, before it allocates tensors; INFERENCE_MALLOPT: before its inference
    window) in this process; the description, or None if not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = all(libc.mallopt(option, value) == 1 for option, value in settings.items())
    except (OSError, AttributeError):
        return None
    return ALLOCATOR if ok else None
