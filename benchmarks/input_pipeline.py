"""Input pipeline throughput: examples/s of a seqio mixture through tasks.pipeline.SeqioBatches.

  python benchmarks/input_pipeline.py [--mixture pali_stage1_synthetic] [--sizes 32 224 812] [--batch 32]
                                      [--batches 4] [--per_task]

For each image size: the time to build the pipeline and produce batch 0 (what a restart costs), then the
steady rate over the next `--batches` batches (examples generated, preprocessed, tokenised, converted and
batched, on every core tf.data gets). `--per_task` also times each task of the mixture alone at each size.
Next to it, what the tiny training runs consume: the median examples/s their metrics.jsonl logged (runs/*,
when they exist), since the pipeline only has to keep ahead of that.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import time

import gin
from tasks import quiet_tensorflow  # noqa: F401  first: TensorFlow without its start-up lines (seqio imports it)
import seqio

from tasks import pipeline

LENGTHS = {"inputs": 64, "targets": 64}
TWO_TOWER_LENGTHS = {"text": 40}  # tasks with a 'text' feature (webli_pairs_synthetic), as the tiny SigLIP


def throughput(name: str, size: int, batch: int, batches: int) -> tuple[float, float]:
  """(seconds to build + first batch, steady examples/s) of one task or mixture at one image size."""
  with gin.unlock_config():
    gin.bind_parameter("tasks.registry.image_size.size", size)
  two_tower = "text" in seqio.get_mixture_or_task(name).output_features
  data = pipeline.SeqioBatches(name, TWO_TOWER_LENGTHS if two_tower else LENGTHS, seed=0)
  start = time.perf_counter()
  data.batch(0, batch)
  first = time.perf_counter() - start
  start = time.perf_counter()
  for step in range(1, batches + 1):
    data.batch(step, batch)
  rate = batches * batch / (time.perf_counter() - start)
  data.close()
  return first, rate


def consumption(pattern: str = "runs/**/metrics.jsonl") -> dict[str, float]:
  """Median examples_per_sec of the train lines of every run's metrics.jsonl under runs/."""
  result = {}
  for path in sorted(glob.glob(pattern, recursive=True)):
    with open(path) as f:
      rates = [line["examples_per_sec"] for line in map(json.loads, f)
               if "split" not in line and "examples_per_sec" in line]
    if rates:
      result[os.path.dirname(path)] = statistics.median(rates)
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--mixture", default="pali_stage1_synthetic")
  parser.add_argument("--sizes", type=int, nargs="+", default=[32, 224, 812])
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--batches", type=int, default=4, help="timed batches after the first")
  parser.add_argument("--per_task", action="store_true")
  args = parser.parse_args()
  print(f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}; {args.mixture}, batch {args.batch}, "
        f"{args.batches} timed batches, feature lengths {LENGTHS} (two towers: {TWO_TOWER_LENGTHS})")
  names = [args.mixture]
  if args.per_task:
    names += [t.name for t in seqio.get_mixture_or_task(args.mixture).tasks]
  for size in args.sizes:
    for name in names:
      first, rate = throughput(name, size, args.batch, args.batches)
      print(f"{size:5d} px  {name:34s} {rate:8.1f} examples/s   (build + first batch {first:5.1f} s)")
  for run, rate in consumption().items():
    print(f"tiny run {run}: consumes {rate:.0f} examples/s (median of its metrics.jsonl)")


if __name__ == "__main__":
  main()
