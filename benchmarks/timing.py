"""What every benchmark here shares: the best of several timed repeats (the machine may be shared)."""

import time
from typing import Callable, Sequence


def best_times(fns: Sequence[Callable[[], object]], repeats: int) -> list[float]:
  """Seconds of the fastest of `repeats` calls of each function: the least disturbed measurement.

  The calls interleave (a, b, a, b, ...), so that the machine getting slower or faster during the run (it
  is shared) moves every function's time alike and their ratio stays fair.
  """
  best = [float("inf")] * len(fns)
  for _ in range(repeats):
    for i, fn in enumerate(fns):
      tic = time.perf_counter()
      fn()
      best[i] = min(best[i], time.perf_counter() - tic)
  return best
