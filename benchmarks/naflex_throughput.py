"""NaFlex image tower (SigLIP 2): this project (JAX) against HF transformers' Siglip2VisionModel (torch), and
against our own dense tower at the same token count, in one run.

Both frameworks run the same random weights (HF's, loaded through encoders.siglip.load), fp32, on all cores,
on the same patch sequences: images of mixed aspect ratios cut by tasks.naflex to a budget of P patches and
padded to P, as HF's Siglip2 processor gives them.
  naflex vs HF:      forward (pooled + tokens), images/s
  naflex vs dense:   our tower on P patches (mixed grids, padded) against our dense tower on square images of
                     P patches: what the per-example position-embedding resize and the masks cost
Timings interleave and keep the best of several repeats (the machine is shared).

  python benchmarks/naflex_throughput.py [--variant B/16] [--budget 256] [--batch 8] [--repeats 5]
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers

from encoders import siglip
from encoders import vit as vit_lib
from tasks import naflex
from timing import best_times, machine  # benchmarks/timing.py (scripts run from this folder)
from vlm import host_memory


def hf_siglip2(variant: str, budget: int) -> transformers.Siglip2VisionModel:
  g = vit_lib.parse_variant(variant)
  cfg = transformers.Siglip2VisionConfig(hidden_size=g["width"], num_hidden_layers=g["depth"],
                                         intermediate_size=g["mlp_dim"], num_attention_heads=g["num_heads"],
                                         patch_size=g["patch_size"], num_patches=budget,
                                         attn_implementation="sdpa")
  torch.manual_seed(0)
  return transformers.Siglip2VisionModel(cfg).eval()


def mixed_images(batch: int, side: int, seed: int = 0) -> list[np.ndarray]:
  """uint8 images of aspect ratios from 1:3 to 3:1, each of about side x side pixels."""
  rng = np.random.default_rng(seed)
  images = []
  for aspect in np.exp(np.linspace(np.log(1 / 3), np.log(3), batch)):
    h, w = max(16, round(side * math.sqrt(aspect))), max(16, round(side / math.sqrt(aspect)))
    images.append(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
  return images


def main():
  p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
  p.add_argument("--variant", default="B/16")
  p.add_argument("--budget", type=int, default=256, help="patches per image (P)")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--repeats", type=int, default=5)
  args = p.parse_args()
  reused = host_memory.reuse_freed_memory()
  torch.set_num_threads(os.cpu_count())

  model = hf_siglip2(args.variant, args.budget)
  with tempfile.TemporaryDirectory() as d:
    model.save_pretrained(d)
    ours = siglip.load(d)
  patch = ours.config.image.patch_size
  side = math.isqrt(args.budget)
  inputs = naflex.patchify_batch(mixed_images(args.batch, side * patch), patch, args.budget)
  grids = [f"{r}x{c}" for r, c in inputs["spatial_shapes"]]
  real = int(inputs["patch_mask"].sum())

  patches_jax = tuple(jnp.asarray(inputs[k]) for k in ("patches", "patch_mask", "spatial_shapes"))
  patches_torch = {"pixel_values": torch.from_numpy(inputs["patches"]),
                   "pixel_attention_mask": torch.from_numpy(inputs["patch_mask"]),
                   "spatial_shapes": torch.from_numpy(inputs["spatial_shapes"].astype(np.int64))}
  pixels = np.random.default_rng(1).uniform(-1, 1, (args.batch, side * patch, side * patch, 3)).astype(np.float32)
  pixels_jax = jnp.asarray(pixels)
  naflex_fn = jax.jit(lambda prm, x, m, s: ours._patches_fn(prm, x, m, s))  # pylint: disable=protected-access
  dense_fn = jax.jit(lambda prm, x: ours._image_fn(prm, x))  # pylint: disable=protected-access
  variables = {"params": ours.params}

  def run_naflex():
    jax.block_until_ready(naflex_fn(variables, *patches_jax))

  def run_dense():
    jax.block_until_ready(dense_fn(variables, pixels_jax))

  def run_hf():
    with torch.inference_mode():
      model(**patches_torch)

  # Both compute the same thing before they are timed (HF on CPU is off only for K x 1 grids, none here).
  with torch.inference_mode():
    ref = model(**patches_torch).pooler_output.numpy()
  got = np.asarray(naflex_fn(variables, *patches_jax)["pooled"])
  err = np.max(np.abs(got - ref)) / np.max(np.abs(ref))
  print(f"{args.variant} NaFlex, budget {args.budget} patches, batch {args.batch} (grids {' '.join(grids)}; "
        f"{real} real patches of {args.batch * args.budget}), fp32, {machine()}; jax {jax.__version__}, "
        f"torch {torch.__version__}, transformers {transformers.__version__}; max rel. diff of pooled outputs "
        f"{err:.1e}; malloc {'reuses freed memory' if reused else 'glibc defaults'}")
  for fn in (run_naflex, run_dense, run_hf):
    fn()  # compile / warm up
  t_naflex, t_dense, t_hf = best_times([run_naflex, run_dense, run_hf], args.repeats)
  print(f"{'naflex forward':<22s} ours {args.batch / t_naflex:7.2f} img/s   HF/torch {args.batch / t_hf:7.2f} img/s"
        f"   ratio {t_hf / t_naflex:5.2f}x")
  print(f"{'naflex vs dense':<22s} naflex {args.batch / t_naflex:7.2f} img/s   dense {side * patch}x{side * patch} "
        f"{args.batch / t_dense:7.2f} img/s   naflex/dense time {t_naflex / t_dense:5.2f}x")


if __name__ == "__main__":
  main()
