"""What every benchmark here shares: the best of several timed repeats (the machine may be shared), a line
naming the machine they ran on (ratios between frameworks move with the CPU's vector units), and the
--attention switch."""

import argparse
import os
import platform
import time
from typing import Callable, Sequence


def machine() -> str:
  """CPU model, core count and widest SIMD extension, e.g. 'Intel(R) Xeon(R) Processor, 2 cores, avx512f'.

  Recorded with every figure: the same code measured 1.01x torch on one 2-core x86_64 box and 0.82x on
  another with AVX-512, where MKL's fp32 products pull ahead of XLA's (benchmarks/README.md).
  """
  model, flags = platform.processor() or platform.machine(), set()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
          model = value.strip()
        elif key.strip() == "flags":
          flags = set(value.split())
  except OSError:  # not Linux: the model from platform is all there is
    pass
  simd = next((x for x in ("avx512f", "avx2", "avx", "sse4_2") if x in flags), "")
  return ", ".join(x for x in (model, f"{os.cpu_count()} cores", simd) if x)


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


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
  """The parser's arguments and --attention, which it binds: the kernel every tower's attention runs on."""
  import gin  # pylint: disable=import-outside-toplevel
  from vlm import layers  # pylint: disable=import-outside-toplevel
  parser.add_argument("--attention", default="auto", choices=layers.ATTENTION_IMPLEMENTATIONS,
                      help="vlm.layers.attention_implementation ('auto': cuDNN flash attention on a GPU for "
                           "bf16 / fp16, the reference einsums elsewhere)")
  args = parser.parse_args(argv)
  gin.bind_parameter("vlm.layers.attention_implementation.name", args.attention)
  return args
