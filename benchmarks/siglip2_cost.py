"""What SigLIP 2's pretraining additions cost per train step against the sigmoid loss alone, in one run: the
LocCa decoder (half the batch predicted in parallel), and ACID's curation (a frozen teacher of the student's
size and the student score a super-batch twice the batch, the better half trains, with logit distillation).

The arms are gin_configs/runs/siglip2_tiny_synthetic.gin's and siglip2_tiny_acid.gin's objectives on random
inputs (so the input pipeline is not timed), each the trainer's own jitted step (vlm.trainer.build_step_functions),
fp32 on all CPU cores. Every arm trains on the same number of examples per step; ACID's step also reads the
other half of its super-batch. Steps interleave across arms and the best of several repeats counts.

  python benchmarks/siglip2_cost.py [--variant mu/4] [--image_size 32] [--batch 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import math
import tempfile

import flax.linen as nn
import jax
import numpy as np

from encoders import siglip, siglip_checkpoints
from encoders import text as text_lib
from encoders import vit as vit_lib
from encoders.objectives import acid, locca
from timing import machine  # benchmarks/timing.py (scripts run from this folder)
from train_step_arm import TrainStepArm, best_step_times
from vlm import host_memory, partitioning

VOCAB, TEXT, PROMPT, TARGET = 7168, 64, 16, 24  # the tiny SigLIP 2 run's vocabulary and feature lengths


def image_batch(batch: int, size: int, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  return {"image": rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32),
          "text": rng.integers(3, VOCAB, (batch, TEXT)).astype(np.int32),
          "locca_inputs": rng.integers(3, VOCAB, (batch, PROMPT)).astype(np.int32),
          "locca_targets": rng.integers(3, VOCAB, (batch, TARGET)).astype(np.int32)}


def main():
  p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
  p.add_argument("--variant", default="mu/4", help="the ViT (the text tower takes its width's name)")
  p.add_argument("--image_size", type=int, default=32)
  p.add_argument("--batch", type=int, default=64, help="examples each step trains on (ACID's super-batch: 2x)")
  p.add_argument("--decoder", default="tiny", help="the LocCa decoder's vlm.ul2 size")
  p.add_argument("--repeats", type=int, default=5)
  args = p.parse_args()
  host_memory.reuse_freed_memory()
  image = vit_lib.config(args.variant, image_size=args.image_size)
  text = text_lib.config(args.variant.split("/")[0], vocab_size=VOCAB, max_len=TEXT)
  partitioner = partitioning.Partitioner()
  with tempfile.TemporaryDirectory() as teacher_dir:
    # ACID's teacher: a SigLIP of the student's geometry (its weights do not change the step's cost).
    config = siglip.SigLIPConfig(image=image, text=text)
    teacher = siglip.SigLIPModel(image=image, text=text).init_variables(jax.random.key(1),
                                                                         image_batch(2, args.image_size))
    siglip_checkpoints.write_hf(config, jax.device_get(nn.unbox(teacher["params"])), teacher_dir)
    arms = {
        "sigmoid": ((), args.batch),
        "+ LocCa": ((locca.LocCa(decoder_size=args.decoder),), args.batch),
        "ACID (2x super-batch)": ((acid.ActiveCuration(checkpoint=teacher_dir, fraction=0.5,
                                                        distillation_weight=1.0),), 2 * args.batch),
    }
    runs = {}
    for name, (objectives, rows) in arms.items():
      model = siglip.SigLIPModel(image=image, text=text, objectives=objectives, train_steps=1)
      runs[name] = TrainStepArm(model, image_batch(rows, args.image_size), partitioner)
  times = best_step_times(list(runs.values()), args.repeats)
  print(f"{args.variant} @{args.image_size}, {args.batch} examples trained per step, LocCa decoder "
        f"'{args.decoder}' (prompt {PROMPT}, target {TARGET}), fp32, {machine()}; jax {jax.__version__}")
  base = times[0]
  print(f"{'arm':<24}{'step':>10}{'vs sigmoid':>12}{'trained params':>16}")
  for (name, run), t in zip(runs.items(), times):
    print(f"{name:<24}{t * 1000:8.1f} ms{t / base:11.2f}x{run.params:>16,}")
  assert math.isfinite(base)


if __name__ == "__main__":
  main()
