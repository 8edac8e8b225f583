"""What every benchmark here shares: the best of several timed repeats (the machine may be shared)."""

import time
from typing import Callable


def best_time(fn: Callable[[], object], repeats: int) -> float:
  """Seconds of the fastest of `repeats` calls: the least disturbed measurement."""
  times = []
  for _ in range(repeats):
    tic = time.perf_counter()
    fn()
    times.append(time.perf_counter() - tic)
  return min(times)
