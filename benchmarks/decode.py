"""UL2 / T5 decoding and forward speed: this project (JAX, jitted cached loop) against HF T5 on torch, one run.

Both run the same random weights: a HF T5ForConditionalGeneration of T5-small geometry with gated SiLU
(d_model 512, 8+8 layers, 6 heads x 64, d_ff 1024, vocab 32128), loaded into ours through vlm.ul2.load.
transformers 5 ties the output projection to the token embedding table whatever the config asks, so both
compute the logits from that table (unscaled).
  greedy:   new tokens/s of greedy decoding, 64-token inputs, exactly 32 new tokens (EOS never ends a row in either),
            batch 1 and 8; HF `generate` (KV cache, num_beams=1) against ours
  forward:  encoder-decoder forward (64 encoder, 32 decoder tokens), sequences/s
  --steps:  where a decode step's time goes: each framework's time per extra token (generating 32 tokens
            against 2), and the floor under it, the step's matmuls alone (every decoder matrix a cached step
            reads, self-attention q/k/v/o, cross-attention q/o, the gated MLP, the output projection, 154 MB
            in fp32) as a dependent chain, eager torch and jitted XLA (compiled as our decoding is)
Timings interleave the two frameworks and keep the best of several repeats (the machine may be shared).

  python benchmarks/decode.py [--batches 1,8] [--repeats 5] [--steps]
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers

from timing import best_times, parse_args  # benchmarks/timing.py (scripts run from this folder)
from vlm import decoding
from vlm import ul2

INPUT_LEN, NEW_TOKENS = 64, 32


def hf_t5_small() -> transformers.T5ForConditionalGeneration:
  config = transformers.T5Config(vocab_size=32128, d_model=512, d_kv=64, d_ff=1024, num_layers=8,
                                 num_decoder_layers=8, num_heads=6, feed_forward_proj="gated-silu",
                                 tie_word_embeddings=False, dropout_rate=0.0, decoder_start_token_id=0,
                                 pad_token_id=0, eos_token_id=1)
  torch.manual_seed(0)
  return transformers.T5ForConditionalGeneration(config).eval()


def greedy_runs(hf, ours: ul2.LoadedUL2, encoder_ids: np.ndarray, new_tokens: int, device: str = "cpu"):
  """(HF generate, ours) as calls that each decode exactly `new_tokens` greedy tokens for every row.

  Ours ends on the table's last padding row (no real piece; an out-of-table id is refused): no row of random
  weights plausibly emits it in every row, so decoding runs all the steps, as min_new_tokens makes HF's.
  """
  torch_ids = torch.tensor(encoder_ids, dtype=torch.long, device=device)

  def run_hf():
    with torch.inference_mode():
      out = hf.generate(input_ids=torch_ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                        do_sample=False, num_beams=1)
    assert out.shape[1] == new_tokens + 1
    if device == "cuda":  # the last steps' kernels may still be running: time them too
      torch.cuda.synchronize()

  def run_ours():
    assert ours.generate(encoder_ids, new_tokens, eos_id=ours.config.vocab_size - 1).shape[1] == new_tokens

  return run_hf, run_ours


def main():
  p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
  p.add_argument("--batches", default="1,8")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--steps", action="store_true", help="also time one decode step and its matmuls alone")
  args = parse_args(p)
  torch.set_num_threads(os.cpu_count())
  hf = hf_t5_small()
  with tempfile.TemporaryDirectory() as directory:
    hf.save_pretrained(directory)
    ours = ul2.load(directory)
  print(f"T5-small geometry, gated SiLU: {sum(x.numel() for x in hf.parameters()):,} parameters; "
        f"jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__}, "
        f"{os.cpu_count()} CPU threads")
  rng = np.random.default_rng(0)
  rows = []
  for batch in (int(b) for b in args.batches.split(",")):
    encoder_ids = rng.integers(2, 32000, (batch, INPUT_LEN)).astype(np.int32)
    torch_ids = torch.tensor(encoder_ids, dtype=torch.long)
    hf_generate, ours_generate = greedy_runs(hf, ours, encoder_ids, NEW_TOKENS)

    decoder_ids = np.concatenate([np.zeros((batch, 1), np.int32),
                                  rng.integers(2, 32000, (batch, NEW_TOKENS - 1)).astype(np.int32)], 1)

    def hf_forward():
      with torch.no_grad():
        hf(input_ids=torch_ids, decoder_input_ids=torch.tensor(decoder_ids, dtype=torch.long))

    def ours_forward():
      ours.logits(encoder_ids, decoder_ids)

    for fn in (hf_generate, ours_generate, hf_forward, ours_forward):
      fn()  # warm up: compile (ours) and allocate (both)
    hf_gen, our_gen, hf_fwd, our_fwd = best_times([hf_generate, ours_generate, hf_forward, ours_forward],
                                                  args.repeats)
    rows.append((f"greedy decode, batch {batch}", "new tokens/s", batch * NEW_TOKENS / hf_gen,
                 batch * NEW_TOKENS / our_gen))
    rows.append((f"forward, batch {batch}", "sequences/s", batch / hf_fwd, batch / our_fwd))
    if args.steps:
      rows += step_rows(hf, ours, encoder_ids, args.repeats)
  print(f"\n{'work':<26}{'unit':<14}{'HF torch':>12}{'ours (JAX)':>12}{'ours / HF':>11}")
  for work, unit, theirs, mine in rows:
    faster = theirs / mine if unit.startswith("ms") else mine / theirs  # a time: lower is better
    print(f"{work:<26}{unit:<14}{theirs:>12.1f}{mine:>12.1f}{faster:>10.2f}x")


def step_rows(hf, ours, encoder_ids: np.ndarray, repeats: int) -> list[tuple]:
  """ms per decode step (generate 32 tokens minus 2, over 30) and of its matmuls alone, both frameworks."""
  batch = encoder_ids.shape[0]
  torch_ids = torch.tensor(encoder_ids, dtype=torch.long)

  def hf_tokens(n):
    with torch.no_grad():
      hf.generate(input_ids=torch_ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, num_beams=1)

  def our_tokens(n):
    ours.generate(encoder_ids, n, eos_id=ours.config.vocab_size - 1)

  matrices = [w.detach() for name, w in hf.named_parameters() if name.startswith("decoder.block") and w.ndim == 2
              and "relative_attention_bias" not in name  # a lookup table, not a matmul
              and "EncDecAttention.k" not in name and "EncDecAttention.v" not in name]  # cross k/v: once
  matrices.append(hf.lm_head.weight.detach())  # torch layout [out, in]

  def torch_chain():
    with torch.no_grad():
      y = torch.ones(batch, 1024)
      for w in matrices:
        y = torch.cat([y, y], 1)[:, :w.shape[1]] @ w.T

  jax_matrices = [jax.device_put(w.numpy().T) for w in matrices]  # ours: [in, out]
  jax_chain = decoding.jit(
      lambda ws, y: functools.reduce(lambda y, w: jnp.concatenate([y, y], 1)[:, :w.shape[0]] @ w, ws, y))
  x = jnp.ones((batch, 1024))
  run_jax = lambda: jax_chain(jax_matrices, x).block_until_ready()  # noqa: E731
  runs = [functools.partial(tokens, n) for tokens in (hf_tokens, our_tokens) for n in (NEW_TOKENS, 2)]
  runs += [torch_chain, run_jax]
  for run in runs:
    run()  # warm up
  hf_long, hf_short, our_long, our_short, torch_chain_s, jax_chain_s = best_times(runs, repeats)
  per_step = 1e3 / (NEW_TOKENS - 2)  # ms per extra token
  return [(f"decode step, batch {batch}", "ms / step", (hf_long - hf_short) * per_step,
           (our_long - our_short) * per_step),
          ("  its matmuls alone", "ms / step", torch_chain_s * 1e3, jax_chain_s * 1e3)]


if __name__ == "__main__":
  main()
