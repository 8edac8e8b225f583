"""vlm.host_memory: the pages a step frees serve the next step's buffers instead of being faulted in again.

Each case runs in a fresh interpreter: the malloc settings are process-wide and would leak into other tests.
"""

import os
import resource
import subprocess
import sys
import textwrap

import pytest

from vlm import host_memory

# Two "steps" that each allocate, write and free a 256 MiB buffer (as XLA:CPU does with a step's temporaries);
# prints whether the setting took effect and the page faults of the second step.
# Plain malloc/memset/free through ctypes: numpy would madvise huge pages for a buffer this size.
PROBE = textwrap.dedent("""
    import ctypes
    import resource
    from vlm import host_memory

    active = host_memory.reuse_freed_memory()
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    assert libc.prctl(41, 1, 0, 0, 0) == 0  # PR_SET_THP_DISABLE: base-page faults whatever the THP mode

    def step_faults():
      before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
      buffer = libc.malloc(256 << 20)
      ctypes.memset(buffer, 1, 256 << 20)
      libc.free(buffer)
      return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    step_faults()  # the first step grows the heap
    print(active, step_faults())
""")
PAGES = (256 << 20) // resource.getpagesize()


def second_step(system_malloc: bool) -> tuple[bool, int]:
  env = {**os.environ, host_memory.OPT_OUT: "1" if system_malloc else "0"}
  out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True).stdout
  active, faults = out.split()
  return active == "True", int(faults)


@pytest.fixture(scope="module")
def glibc():
  active, _ = second_step(system_malloc=False)
  if not active:
    pytest.skip("not glibc on Linux: reuse_freed_memory is a no-op here")


def test_freed_memory_is_reused(glibc):
  active, faults = second_step(system_malloc=False)
  assert active
  assert faults < PAGES // 20, f"{faults} page faults for a buffer of {PAGES} pages the first step freed"


def test_opt_out_keeps_glibc_defaults(glibc):
  """Without the setting glibc maps the buffer afresh: the probe does see the faults it counts."""
  active, faults = second_step(system_malloc=True)
  assert not active
  assert faults > PAGES // 2
