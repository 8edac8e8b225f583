"""Host memory for XLA:CPU: reuse the memory a step frees instead of mapping it afresh at the next step.

XLA:CPU allocates the buffers of a compiled program (its temporaries, its outputs) with malloc every time the
program runs, and frees them when it ends. glibc serves blocks over 32 MiB with fresh mmaps, returns them to the
kernel on free, and trims its thread arenas likewise, so every step page-faults its whole working set in again:
a ViT-B/16 train step at batch 8 took 260-320k minor page faults and 1.6-3.1 core-seconds of kernel time per
7-11 s step on the 2-core box (torch's step of the same tower: a few hundred to 190k faults, 0.1-0.6 s).

`reuse_freed_memory()` tells glibc to serve every block from its heap (no mmap), to keep freed memory there
(no trim) and to use one arena for all threads (a thread arena cannot hold a block over 64 MiB). Measured on the
same step: 0 page faults after the first step, kernel time ~0.05 s. The cost: the process keeps its peak heap
(RSS does not shrink when large buffers are freed) and all threads share one malloc lock. The entry points that
run models (`vlm.train`, `vlm.infer`) call it first; set VLM_SYSTEM_MALLOC=1 to keep glibc's defaults.
"""

from __future__ import annotations

import ctypes
import os
import sys

OPT_OUT = "VLM_SYSTEM_MALLOC"

# mallopt parameters, from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_SETTINGS = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2 ** 31 - 1))


def reuse_freed_memory() -> bool:
  """Makes glibc's malloc keep and reuse freed memory (see the module docstring); True if it took effect.

  A no-op returning False off Linux, on a C library other than glibc, or with VLM_SYSTEM_MALLOC=1. Call it
  before the first large allocations: threads that have already allocated keep the arena they have.
  """
  if os.environ.get(OPT_OUT) == "1" or not sys.platform.startswith("linux"):
    return False
  libc = ctypes.CDLL(None)  # the C library the interpreter runs on
  if not hasattr(libc, "gnu_get_libc_version"):  # musl and others: different malloc, no such knobs
    return False
  return all([libc.mallopt(param, value) == 1 for param, value in _SETTINGS])
