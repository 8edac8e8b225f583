"""ViT image-tower throughput: this project (JAX) against HF transformers' SiglipVisionModel (torch), one run.

Both run the same random weights (HF's, loaded through encoders.siglip.load), fp32, on all CPU cores.
  forward:     images/s of the tower (pooled + tokens)
  train step:  forward + backward of sum(pooled**2) w.r.t. every weight (no optimizer), images/s
Timings interleave the two frameworks and keep the best of several repeats (the machine is shared).
The process runs with `vlm.host_memory.reuse_freed_memory()`, as `vlm.train` does (VLM_SYSTEM_MALLOC=1 turns it
off); the setting is process-wide, so torch runs under it too.

  python benchmarks/encoder_throughput.py [--variant B/16] [--batch 8] [--repeats 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers

from encoders import siglip
from encoders import vit as vit_lib
from timing import best_times, machine, parse_args  # benchmarks/timing.py (scripts run from this folder)
from vlm import checkpoints
from vlm import host_memory


def hf_vision_model(variant: str, image_size: int) -> transformers.SiglipVisionModel:
  g = vit_lib.parse_variant(variant)
  cfg = transformers.SiglipVisionConfig(hidden_size=g["width"], num_hidden_layers=g["depth"],
                                        intermediate_size=g["mlp_dim"], num_attention_heads=g["num_heads"],
                                        patch_size=g["patch_size"], image_size=image_size,
                                        attn_implementation="sdpa")
  torch.manual_seed(0)
  return transformers.SiglipVisionModel(cfg).eval()


def matmul_ratio(m: int, k: int, n: int, repeats: int) -> str:
  """One fp32 product [m, k] x [k, n] alone, in XLA and torch: how far apart the two frameworks' matrix
  libraries are on this CPU, the gap a tower that is mostly products has to make up elsewhere."""
  rng = np.random.default_rng(0)
  a, b = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
  product = jax.jit(jnp.matmul)
  a_jax, b_jax, a_torch, b_torch = jnp.asarray(a), jnp.asarray(b), torch.from_numpy(a), torch.from_numpy(b)
  run_jax, run_torch = (lambda: product(a_jax, b_jax).block_until_ready()), (lambda: a_torch @ b_torch)
  run_jax(), run_torch()
  t_jax, t_torch = best_times([run_jax, run_torch], 3 * repeats)
  gflop = 2 * m * k * n / 1e9
  return (f"fp32 matmul [{m},{k}]x[{k},{n}] alone: XLA {gflop / t_jax:.0f} GFLOP/s, "
          f"torch {gflop / t_torch:.0f} GFLOP/s, ratio {t_torch / t_jax:.2f}x")


def main():
  p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
  p.add_argument("--variant", default="B/16")
  p.add_argument("--image_size", type=int, default=224)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--skip_train", action="store_true")
  p.add_argument("--train_scan", type=int, default=0, help="scan over layers in the train step (1/0)")
  p.add_argument("--train_remat", default="none", help="remat policy of the train step: one of vlm.layers.REMAT_POLICIES")
  args = parse_args(p)
  reused = host_memory.reuse_freed_memory()
  torch.set_num_threads(os.cpu_count())

  model = hf_vision_model(args.variant, args.image_size)
  with tempfile.TemporaryDirectory() as d:
    model.save_pretrained(d)
    ours = siglip.load(d)
  pixels = np.random.default_rng(0).uniform(-1, 1, (args.batch, args.image_size, args.image_size, 3))
  pixels = pixels.astype(np.float32)
  x_torch = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()
  x_jax = jnp.asarray(pixels)
  params = ours.params

  forward_jax = jax.jit(lambda p, x: ours._image_fn({"params": p}, x))  # pylint: disable=protected-access

  def run_jax_forward():
    jax.block_until_ready(forward_jax(params, x_jax))

  def run_torch_forward():
    with torch.inference_mode():
      model(pixel_values=x_torch)

  # Training runs the stack unrolled, nothing rematerialised: the fastest on CPU at this size since the
  # residual gradient's fusion chain is cut at every block (benchmarks/README.md).
  train_cfg = dataclasses.replace(ours.config.image, scan=args.train_scan, remat=args.train_remat)
  train_tower = vit_lib.ViT(train_cfg)
  train_params = checkpoints.stack_layers(params["img"]) if args.train_scan else params["img"]

  def jax_loss(p, x):
    return jnp.sum(train_tower.apply({"params": p}, x)["pooled"] ** 2)
  grad_jax = jax.jit(jax.grad(jax_loss))

  def run_jax_train():
    jax.block_until_ready(grad_jax(train_params, x_jax))

  def run_torch_train():
    model.zero_grad(set_to_none=True)
    (model(pixel_values=x_torch).pooler_output ** 2).sum().backward()

  # Check both compute the same thing before timing them.
  with torch.inference_mode():
    ref = model(pixel_values=x_torch).pooler_output.numpy()
  got = np.asarray(forward_jax(params, x_jax)["pooled"])
  err = np.max(np.abs(got - ref)) / np.max(np.abs(ref))
  print(f"{args.variant} @{args.image_size}, batch {args.batch}, fp32, {machine()}; "
        f"jax {jax.__version__}, torch {torch.__version__}, transformers {transformers.__version__}; "
        f"max rel. diff of pooled outputs {err:.1e}; train step: scan={bool(args.train_scan)}, "
        f"remat={args.train_remat}; malloc {'reuses freed memory' if reused else 'glibc defaults'}")
  geometry = vit_lib.parse_variant(args.variant)
  tokens = args.batch * (args.image_size // geometry["patch_size"]) ** 2
  # The MLP's first product: the tower's largest.
  print(matmul_ratio(tokens, geometry["width"], geometry["mlp_dim"], args.repeats))

  rows = [("forward", run_jax_forward, run_torch_forward)]
  if not args.skip_train:
    rows.append(("train step (fwd+bwd)", run_jax_train, run_torch_train))
  for name, run_jax, run_torch in rows:
    run_jax(), run_torch()  # compile / warm up
    t_jax, t_torch = best_times([run_jax, run_torch], args.repeats)
    print(f"{name:<22s} ours {args.batch / t_jax:7.2f} img/s   HF/torch {args.batch / t_torch:7.2f} img/s   "
          f"ratio {t_torch / t_jax:5.2f}x")


if __name__ == "__main__":
  main()
