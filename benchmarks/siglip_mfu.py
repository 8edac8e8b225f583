"""SigLIP training-step throughput and model FLOPs utilisation (MFU) on one accelerator.

Builds a two-tower SigLIP (image tower `--variant`, text tower of the same width name, 64 text tokens,
32k vocabulary), runs the project's own train step (vlm.trainer.build_step_functions: sigmoid loss, AdamW)
on random data and reports steps/s, images/s and MFU = model FLOPs per step / step time / device peak.
Model FLOPs are counted analytically, as MFU is usually defined: 3 x (2 x the forward pass's multiply-adds
of every matmul, attention included), so rematerialised work does not count. XLA's cost analysis is no
help here: it counts a scanned layer once and, on GPU, misses the cuBLAS GEMMs.

  python benchmarks/siglip_mfu.py --variant L/16 --batch 256 --dtype bfloat16 [--remat none|dots|full]
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from encoders import siglip
from encoders import text as text_lib
from encoders import vit as vit_lib
from vlm import mfu, optim, partitioning, trainer

def encoder_macs(length: int, width: int, mlp_dim: int, depth: int) -> float:
  """Multiply-adds of a pre-LN transformer encoder's forward pass on one sequence."""
  per_layer = 4 * length * width ** 2 + 2 * length ** 2 * width + 2 * length * width * mlp_dim
  return depth * per_layer


def siglip_train_flops(image: vit_lib.ViTConfig, text: text_lib.TextConfig, batch: int) -> float:
  """Model FLOPs of one SigLIP train step: patch embedding, both encoders, MAP head and text head."""
  tokens = (image.image_size // image.patch_size) ** 2
  macs = tokens * image.patch_size ** 2 * 3 * image.width  # patch embedding
  macs += encoder_macs(tokens, image.width, image.mlp_dim, image.depth)
  macs += 2 * tokens * image.width ** 2 + 2 * image.width ** 2 + 2 * image.width * image.mlp_dim  # MAP head
  macs += encoder_macs(text.max_len, text.width, text.mlp_dim, text.depth) + text.width * (text.head_dim or text.width)
  return 3 * 2 * macs * batch


def build(args, remat: str, scan: bool):
  dtype = args.dtype
  image = vit_lib.config(args.variant, image_size=args.image_size, dtype=dtype, scan=scan, remat=remat)
  text = text_lib.config(args.variant.split("/")[0], vocab_size=32_000, max_len=64, dtype=dtype, scan=scan,
                         remat=remat)
  model = siglip.SigLIPModel(image=image, text=text)
  rng = np.random.default_rng(0)
  batch = {"image": rng.uniform(-1, 1, (args.batch, args.image_size, args.image_size, 3)).astype(np.float32),
           "text": rng.integers(0, 32_000, (args.batch, 64)).astype(np.int32)}
  partitioner = partitioning.Partitioner()
  fns = trainer.build_step_functions(model, optim.adamw(learning_rate=1e-4), partitioner, batch)
  return fns, partitioner, batch, siglip_train_flops(image, text, args.batch)


def main():
  p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
  p.add_argument("--variant", default="L/16")
  p.add_argument("--image_size", type=int, default=224)
  p.add_argument("--batch", type=int, default=256)
  p.add_argument("--dtype", default="bfloat16")
  p.add_argument("--remat", default="none")
  p.add_argument("--scan", type=int, default=1, help="scan over layers (1) or unroll them (0)")
  p.add_argument("--steps", type=int, default=10)
  args = p.parse_args()
  device = jax.devices()[0]
  peak = mfu.device_peak_flops(device.device_kind)

  fns, partitioner, batch, flops = build(args, args.remat, scan=bool(args.scan))
  with partitioner.context():
    gbatch = partitioning.global_batch(partitioner, batch)
    state = fns.init(jax.random.key(0))
    state, metrics = fns.train_step(state, gbatch)  # compile + warm up
    jax.block_until_ready(metrics)
    tic = time.perf_counter()
    for _ in range(args.steps):
      state, metrics = fns.train_step(state, gbatch)
    jax.block_until_ready(metrics)
    step_time = (time.perf_counter() - tic) / args.steps
  n_params = partitioning.count_params(fns.abstract_state.params)
  print(f"{device.device_kind}: SigLIP {args.variant} @{args.image_size} ({n_params / 1e6:.0f}M params), batch "
        f"{args.batch}, {args.dtype} compute / fp32 params, scan={bool(args.scan)}, remat={args.remat}, loss {float(metrics['loss']):.3f}")
  print(f"  step {step_time * 1e3:.1f} ms, {args.batch / step_time:.0f} img/s, model {flops / 1e12:.2f} TFLOP/step, "
        f"{flops / step_time / 1e12:.0f} TFLOP/s" + (f", MFU {100 * flops / step_time / peak:.1f}% of "
                                                     f"{peak / 1e12:.0f} TFLOP/s" if peak else ""))


if __name__ == "__main__":
  main()
