"""What each dense encoder objective costs per train step, against the sigmoid loss alone, and what head-only EMA
saves against a full EMA teacher (time and the teacher copy's bytes), in one run.

The arms are the TIPSv2 ablation's (gin_configs/runs/tipsv2_ablation/): the same model and multi-crop batch
(random views and block masks, so the input pipeline is not timed), the trainer's own jitted step
(vlm.trainer.build_step_functions), fp32 on all CPU cores. Steps interleave across arms and the best of
several repeats counts (the machine is shared).

  python benchmarks/objectives_cost.py [--variant mu/4] [--image_size 32] [--batch 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import math

import jax
import numpy as np

from encoders import siglip
from encoders import text as text_lib
from encoders import vit as vit_lib
from encoders.objectives import distillation, masked
from timing import machine  # benchmarks/timing.py (scripts run from this folder)
from train_step_arm import TrainStepArm, best_step_times
from vlm import host_memory, partitioning


def arms(head: dict) -> dict:
  """name -> (objectives, teacher), as the ablation's gin files set them."""
  sd = distillation.SelfDistillation(start=0.0, **head)
  ibot = masked.MaskedPrediction(start=0.0, visible_weight=0.0, **head)
  ibot_pp = masked.MaskedPrediction(start=0.0, visible_weight=1.0, **head)
  return {"sigmoid": ((), "full"), "+ self-distillation": ((sd,), "full"), "+ iBOT": ((sd, ibot), "full"),
          "+ iBOT++ (full EMA)": ((sd, ibot_pp), "full"), "+ iBOT++ (head-only EMA)": ((sd, ibot_pp), "heads")}


def views_batch(batch: int, size: int, local_size: int, patch: int, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  grid = (size // patch) ** 2
  return {"global_views": rng.uniform(-1, 1, (batch, 2, size, size, 3)).astype(np.float32),
          "local_views": rng.uniform(-1, 1, (batch, 4, local_size, local_size, 3)).astype(np.float32),
          "global_masks": (rng.random((batch, 2, grid)) < 0.3).astype(np.int32),
          "text": rng.integers(1, 1000, (batch, 64)).astype(np.int32)}


def main():
  p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
  p.add_argument("--variant", default="mu/4", help="the ViT (the text tower takes its width's name)")
  p.add_argument("--image_size", type=int, default=32, help="global views' side; local views are half")
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--prototypes", type=int, default=256)
  p.add_argument("--repeats", type=int, default=5)
  args = p.parse_args()
  host_memory.reuse_freed_memory()
  head = dict(prototypes=args.prototypes, hidden=256, bottleneck=64)
  image = vit_lib.config(args.variant, image_size=args.image_size)
  text = text_lib.config(args.variant.split("/")[0], vocab_size=7168, max_len=64)
  batch = views_batch(args.batch, args.image_size, args.image_size // 2, image.patch_size)
  partitioner = partitioning.Partitioner()
  runs = {}
  for name, (objectives, teacher) in arms(head).items():
    model = siglip.SigLIPModel(image=image, text=text, objectives=objectives, teacher=teacher, train_steps=1)
    runs[name] = TrainStepArm(model, batch, partitioner)
  times = best_step_times(list(runs.values()), args.repeats)
  print(f"{args.variant} @{args.image_size} (2 global views, 4 local at {args.image_size // 2} px, iBOT masks), "
        f"batch {args.batch}, heads of {args.prototypes} prototypes, fp32, {machine()}; jax {jax.__version__}")
  base = times[0]
  print(f"{'arm':<28}{'step':>10}{'vs sigmoid':>12}{'params':>12}{'teacher copy':>15}")
  for (name, run), t in zip(runs.items(), times):
    copy = run.teacher_bytes
    print(f"{name:<28}{t * 1000:8.1f} ms{t / base:11.2f}x{run.params:>12,}"
          f"{(f'{copy / 2 ** 20:.2f} MiB' if copy else '-'):>15}")
  full, heads = times[-2], times[-1]
  print(f"head-only EMA against full EMA: step {heads / full:.2f}x the time, teacher copy "
        f"{runs['+ iBOT++ (head-only EMA)'].teacher_bytes / max(runs['+ iBOT++ (full EMA)'].teacher_bytes, 1):.2f}x "
        "the bytes")
  assert math.isfinite(base)


if __name__ == "__main__":
  main()
