"""What a checkpoint's manifest (vlm.manifests: each file's size and CRC-32) costs, at two state sizes.

  PYTHONPATH=. python benchmarks/checkpoint_manifest.py [--sizes_mb 4,1024] [--repeats 3]

For each size: the time `Checkpointer.save` holds the train loop (the manifest is not in it: orbax's background
thread writes it), the time until the save is committed (`wait`, which includes the manifest), and, measured
alone on the committed step, the manifest's write (`manifests.write`) and its check before a restore
(`manifests.check`), both reading every byte of the step.
"""

import argparse
import os
import shutil
import tempfile
import time

import numpy as np

from benchmarks import timing
from vlm import checkpoints, manifests


def state_of(megabytes: int) -> dict:
  """Float32 arrays of 16 MB each (a parameter tree's leaves), `megabytes` in all."""
  leaves = max(1, megabytes // 16)
  rows = megabytes * (1 << 20) // 4 // leaves // 1024
  rng = np.random.default_rng(0)
  return {f"layer_{i}": rng.standard_normal((rows, 1024), np.float32) for i in range(leaves)}


def measure(megabytes: int, repeats: int) -> dict[str, float]:
  state = state_of(megabytes)
  best = {"save (train loop held)": np.inf, "save to commit": np.inf}
  directory = tempfile.mkdtemp(prefix="manifest-bench-")
  try:
    ckpt = checkpoints.Checkpointer(directory, period=1, keep=1)
    for step in range(1, repeats + 1):
      tic = time.perf_counter()
      ckpt.save(step, state)
      held = time.perf_counter() - tic
      ckpt.wait()
      best["save (train loop held)"] = min(best["save (train loop held)"], held)
      best["save to commit"] = min(best["save to commit"], time.perf_counter() - tic)
    ckpt.close()
    step_dir = os.path.join(directory, checkpoints.CHECKPOINTS_DIR, str(repeats))
    write, check = timing.best_times([lambda: manifests.write(step_dir), lambda: manifests.check(step_dir)],
                                     repeats)
    best.update({"manifest write": write, "manifest check": check})
  finally:
    shutil.rmtree(directory)
  return best


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--sizes_mb", default="4,1024")
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  print(timing.machine())
  for megabytes in (int(s) for s in args.sizes_mb.split(",")):
    times = measure(megabytes, args.repeats)
    print(f"{megabytes} MB: " + ", ".join(f"{name} {seconds:.3f} s" for name, seconds in times.items()))


if __name__ == "__main__":
  main()
