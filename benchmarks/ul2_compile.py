"""Compile time of a UL2 train step, its layers unrolled (scan=False) against one nn.scan per stack (scan=True).

The project's own train step (vlm.trainer.build_step_functions: the UL2Model loss, Adafactor, one device) is
lowered on ShapeDtypeStructs and compiled ahead of time, so nothing the size of the model is allocated: the
UL2 3B of PaLI-3 (bfloat16 compute, each layer rematerialised, as gin_configs/models/pali3.gin) compiles on a
laptop. Each configuration runs in a fresh process, so no compilation cache is shared between them.

  python benchmarks/ul2_compile.py [--size 3B] [--scan both|on|off] [--batch 8] [--inputs 384] [--targets 128]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import jax
import jax.numpy as jnp

from timing import machine  # benchmarks/timing.py (scripts run from this folder)
from vlm import optim, partitioning, trainer, ul2


def compile_times(size: str, scan: bool, batch: int, inputs: int, targets: int) -> dict:
  """Seconds to trace + lower the train step, and to compile it, in this process."""
  model = ul2.UL2Model(ul2.config(size, dtype="bfloat16", remat="full", scan=scan))
  example = {"encoder_input_tokens": jax.ShapeDtypeStruct((batch, inputs), jnp.int32),
             "decoder_target_tokens": jax.ShapeDtypeStruct((batch, targets), jnp.int32)}
  partitioner = partitioning.Partitioner(devices=jax.devices()[:1])
  tic = time.perf_counter()
  fns = trainer.build_step_functions(model, optim.adafactor(1e-3), partitioner, example)
  with partitioner.context():
    lowered = fns.train_step.lower(fns.abstract_state, example)
  lower_s = time.perf_counter() - tic
  tic = time.perf_counter()
  lowered.compile()
  return {"scan": scan, "lower_s": lower_s, "compile_s": time.perf_counter() - tic}


def main():
  p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
  p.add_argument("--size", default="3B", choices=sorted(ul2.SIZES))
  p.add_argument("--scan", default="both", choices=["both", "on", "off"])
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--inputs", type=int, default=384, help="encoder tokens (PaLI-3 at 224 px: 256 visual + 128)")
  p.add_argument("--targets", type=int, default=128)
  args = p.parse_args()
  if args.scan != "both":
    print(json.dumps(compile_times(args.size, args.scan == "on", args.batch, args.inputs, args.targets)))
    return
  print(f"UL2 {args.size} train step, batch {args.batch}, {args.inputs}+{args.targets} tokens; jax "
        f"{jax.__version__}; {machine()}")
  for scan in ("off", "on"):
    out = subprocess.run([sys.executable, __file__, "--size", args.size, "--scan", scan, "--batch", str(args.batch),
                          "--inputs", str(args.inputs), "--targets", str(args.targets)],
                         check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    print(f"scan={result['scan']!s:5}  trace+lower {result['lower_s']:6.1f} s  compile {result['compile_s']:6.1f} s")


if __name__ == "__main__":
  main()
