"""The matrix products of a ViT train step, alone: XLA (jax.jit) against torch on the same products, one run.

A diagnostic for the ViT train step (`encoder_throughput.py`): it runs every GEMM of a B/16 forward +
backward at batch 8 (per layer: q/k/v/out and the two MLP products, each forward, dX and dW; the attention's
QK^T and PV forward and their four backward products) with nothing else. Indicative only: the operands
(1.5 GB) come from memory, where the step's come from cache. Every product of every layer has its own
operands (XLA merges repeated products: operands shared across layers made it compute the dW and attention
products once) and each result is reduced with `max` (a `sum` could be folded into the product).

  python benchmarks/vit_train_gemms.py [--layers 12] [--repeats 4]
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np
import torch

from timing import best_times, machine  # benchmarks/timing.py (scripts run from this folder)

TOKENS, WIDTH, MLP, HEADS, LENGTH, BATCH = 8 * 196, 768, 3072, 12, 196, 8  # B/16 at 224 px, batch 8


def layer_products(operands, layer, t, bt):
  """The products of one layer's forward and backward; `t` transposes a matrix, `bt` a batch of them."""
  x, h, w_attn, w_in, w_out, qkv, probs = (a[layer] for a in operands)
  out = []
  for j in range(4):  # query, key, value, out projections: forward, dX = dY W^T, dW = X^T dY
    out += [x[j] @ w_attn[j], x[4 + j] @ t(w_attn[j]), t(x[j]) @ x[4 + j]]
  out += [x[0] @ w_in, h[0] @ t(w_in), t(x[1]) @ h[0]]  # MLP in
  out += [h[1] @ w_out, x[2] @ t(w_out), t(h[1]) @ x[3]]  # MLP out
  out += [qkv[0] @ bt(qkv[1]), probs[0] @ qkv[2]]  # QK^T, PV
  out += [qkv[3] @ bt(qkv[2]), bt(probs[0]) @ qkv[3], probs[1] @ qkv[1], bt(probs[1]) @ qkv[0]]  # dP dV dQ dK
  return out


def main():
  p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
  p.add_argument("--layers", type=int, default=12)
  p.add_argument("--repeats", type=int, default=4)
  args = p.parse_args()
  torch.set_num_threads(os.cpu_count())
  rng = np.random.default_rng(0)

  def operand(*shape):
    return rng.standard_normal(shape, np.float32) * 0.02

  n = args.layers
  operands = (operand(n, 8, TOKENS, WIDTH), operand(n, 2, TOKENS, MLP), operand(n, 4, WIDTH, WIDTH),
              operand(n, WIDTH, MLP), operand(n, MLP, WIDTH), operand(n, 4, BATCH * HEADS, LENGTH, 64),
              operand(n, 2, BATCH * HEADS, LENGTH, LENGTH))

  @jax.jit
  def jax_products(operands):
    total = jnp.float32(0)
    for layer in range(args.layers):
      for y in layer_products(operands, layer, lambda a: a.T, lambda a: a.transpose(0, 2, 1)):
        total = total + jnp.max(y)
    return total

  def torch_products(operands):
    with torch.no_grad():
      for layer in range(args.layers):
        for y in layer_products(operands, layer, lambda a: a.T, lambda a: a.transpose(1, 2)):
          y.max()

  jax_args = [jnp.asarray(a) for a in operands]
  torch_args = [torch.from_numpy(a) for a in operands]
  run_jax = lambda: jax_products(jax_args).block_until_ready()  # noqa: E731
  run_torch = lambda: torch_products(torch_args)  # noqa: E731
  run_jax(), run_torch()  # compile / warm up
  t_jax, t_torch = best_times([run_jax, run_torch], args.repeats)
  flops = args.layers * (4 * 3 * 2 * TOKENS * WIDTH * WIDTH + 6 * 2 * TOKENS * WIDTH * MLP
                         + 6 * 2 * BATCH * HEADS * LENGTH * LENGTH * 64)
  print(f"GEMMs of a B/16 train step ({args.layers} layers, batch 8, {flops / 1e9:.0f} GFLOP), fp32, "
        f"{machine()}; jax {jax.__version__}, torch {torch.__version__}")
  print(f"ours (XLA) {t_jax:.2f} s ({flops / t_jax / 1e9:.0f} GFLOP/s)   torch {t_torch:.2f} s "
        f"({flops / t_torch / 1e9:.0f} GFLOP/s)   ratio {t_torch / t_jax:.2f}x")


if __name__ == "__main__":
  main()
