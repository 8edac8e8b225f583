"""One accelerator's performance table: SigLIP train steps, tower forwards against HF, PaLI steps, decoding.

Sections (each prints its rows as it finishes; `--sections` picks some):
  numerics the attention kernel this device runs for bf16 (`vlm.layers.attention_kernel`: cuDNN flash on a
           GPU) against the float32 reference, outputs and gradients, with T5's bias and padding / causal masks,
           beside the bf16 reference path's own error: the kernel passes when it is within 2x of it
  siglip   the project's SigLIP train step (vlm.trainer.build_step_functions: both towers, 64 text tokens, 32k
           vocabulary, sigmoid loss, AdamW; bf16 compute, fp32 parameters, layers scanned) for ViT-B/16, L/16
           and So400m/14 at 224 px and So400m/14 at 378 px (the "384" checkpoint's 27 x 27 patches), and L/16
           under every remat policy: step time, images/s, MFU, and vlm.plan's memory estimate against the
           compiled step's memory_analysis
  forward  the same image towers' forward, ours (jitted, bf16) against HF transformers' SiglipVisionModel on
           torch (bf16 weights, SDPA attention), images/s each and the ratio
  pali     a PaLI train step: So400m/14 + a UL2 of 1.1B (d_model 1536, 16 + 16 layers, 32k vocabulary) at
           448 px, and at 812 px with remat: tokens/s, MFU, plan against compiled memory
  decode   greedy decoding, new tokens/s, ours (jitted KV-cached loop) against HF T5 `generate` (KV cache,
           one beam) on the same random weights (T5-base geometry with gated SiLU), batch 1 and 32

MFU = the plan's analytic model FLOPs per step (3 x the forward's matmuls and attention; recomputation not
counted: `python -m vlm.plan`) / step time / the device's peak (vlm.mfu.DEVICES). The analytic count is used
because the traced one (vlm.mfu.model_flops_per_step) sees no FLOPs inside a fused attention kernel.
Attention runs through `vlm.layers.attention_implementation` (default 'auto': cuDNN flash attention on a
GPU for bf16); `--attention reference` measures the unfused path.

  python benchmarks/gpu_suite.py [--sections numerics,siglip,forward,pali,decode] [--steps 5]
  python benchmarks/gpu_suite.py --smoke   # every section at toy sizes, one step: checks the script on a CPU

A configuration that does not fit in the device's memory prints 'out of memory' and the suite goes on; one
that fails otherwise prints the error's first line, the suite goes on, and it exits 1 at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from typing import Callable

# JAX takes GPU memory as it needs it, up to 95 %, instead of 75 % up front: torch shares the device in the
# forward and decoding sections, and the largest train steps need more than 75 % of an 80 GB card.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")

import jax  # pylint: disable=wrong-import-position
import jax.numpy as jnp
import numpy as np

from encoders import siglip
from encoders import text as text_lib
from encoders import vit as vit_lib
from timing import best_times, machine, parse_args  # benchmarks/timing.py (scripts run from this folder)
from vlm import layers, mfu, optim, partitioning, plan, trainer, ul2
from vlm import model as pali

GIB = 2 ** 30
TEXT_TOKENS, VOCAB = 64, 32_000
SECTIONS = ("numerics", "siglip", "forward", "pali", "decode")


@dataclasses.dataclass(frozen=True)
class Sizes:
  """What each section runs: full size on an accelerator, toy sizes with --smoke."""
  attention: tuple[int, int, int, int]  # [batch, heads, length, head_dim] of the numerics check
  siglip: tuple[tuple[str, int, int, str], ...]  # (variant, image size, batch, remat)
  forward: tuple[tuple[str, int, int], ...]  # (variant, image size, batch)
  pali: tuple[tuple[str, int, int, str], ...]  # (ViT variant, image size, batch, remat)
  ul2: dict
  pali_lengths: dict
  t5: dict  # HF T5Config fields for the decoding section
  decode_batches: tuple[int, ...]
  decode_lengths: tuple[int, int]  # input tokens, new tokens


FULL = Sizes(
    attention=(4, 16, 256, 64),
    siglip=(("B/16", 224, 512, "dots"), ("L/16", 224, 256, "none"), ("L/16", 224, 256, "dots"),
            ("L/16", 224, 256, "dots_with_batch"), ("L/16", 224, 256, "full"), ("L/16", 224, 256, "offload_dots"),
            ("So400m/14", 224, 256, "dots"), ("So400m/14", 378, 64, "dots")),
    forward=(("B/16", 224, 256), ("L/16", 224, 256), ("So400m/14", 224, 256)),
    pali=(("So400m/14", 448, 32, "dots"), ("So400m/14", 812, 8, "full")),
    ul2=dict(d_model=1536, num_heads=24, head_dim=64, d_ff=4096, num_encoder_layers=16, num_decoder_layers=16),
    pali_lengths={"inputs": 32, "targets": 64},
    t5=dict(d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_decoder_layers=12, num_heads=12),
    decode_batches=(1, 32), decode_lengths=(64, 64))

SMOKE = Sizes(
    attention=(2, 2, 16, 8),
    siglip=(("pico/8", 32, 4, "dots"),),
    forward=(("pico/8", 32, 4),),
    pali=(("pico/8", 32, 2, "full"),),
    ul2=dict(ul2.SIZES["pico"]),
    pali_lengths={"inputs": 8, "targets": 8},
    t5=dict(d_model=32, d_kv=16, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=2),
    decode_batches=(2,), decode_lengths=(8, 4))


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  p.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated, of the five above")
  p.add_argument("--steps", type=int, default=5, help="timed steps (or calls) per configuration, after one warm-up")
  p.add_argument("--dtype", default="bfloat16", help="compute dtype of every model")
  p.add_argument("--smoke", action="store_true", help="toy sizes and one step: checks the script, not the device")
  args = parse_args(p, argv)
  sections = args.sections.split(",")
  unknown = set(sections) - set(SECTIONS)
  if unknown:
    p.error(f"--sections: unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
  sizes, steps = (SMOKE, 1) if args.smoke else (FULL, args.steps)
  device = jax.devices()[0]
  peak = mfu.device_peak_flops(device.device_kind)
  print(f"{device.device_kind} ({device.platform}), jax {jax.__version__}, host {machine()}, "
        f"{time.strftime('%Y-%m-%d')}; compute {args.dtype}, attention {args.attention}"
        + (f", peak {peak / 1e12:.0f} TFLOP/s" if peak else ", no peak FLOP/s known: no MFU"), flush=True)
  start = time.perf_counter()
  if "numerics" in sections:
    kernel = layers.attention_kernel(jnp.bfloat16)
    if kernel == "reference" and args.smoke:
      kernel = "xla"  # a CPU has no fused kernel; check the comparison itself on jax.nn's XLA one
    _section(f"attention numerics, bf16 '{kernel}' and bf16 'reference' against fp32 'reference' (max |error| / "
             "max |value|)", ("out", "grads", "ref out", "ref grads", "verdict"))
    for causal in (False, True):
      _row(f"[{sizes.attention[0]}, {sizes.attention[1]} heads, {sizes.attention[2]}, {sizes.attention[3]}], "
           f"T5 bias, {'causal + padding' if causal else 'padding'} mask",
           lambda: _numerics_row(kernel, causal, sizes.attention, args.attention))
  if "siglip" in sections:
    _section("SigLIP train step", ("step ms", "img/s", "TFLOP/s", "MFU", "plan GiB", "XLA GiB", "plan/XLA"))
    for variant, size, batch, remat in sizes.siglip:
      _row(f"{variant} @{size}, batch {batch}, remat {remat}",
           lambda: _train_row(_siglip_model(variant, size, remat, args.dtype), batch, {"text": TEXT_TOKENS}, steps,
                              peak, per_step=batch, dtype=args.dtype))
  if "forward" in sections:
    _section("image tower forward (pooled + tokens)", ("ours img/s", "HF img/s", "ours / HF"))
    for variant, size, batch in sizes.forward:
      _row(f"{variant} @{size}, batch {batch}", lambda: _forward_row(variant, size, batch, args.dtype, steps))
  if "pali" in sections:
    _section("PaLI train step (tokens = visual + prompt + targets)",
             ("step ms", "tokens/s", "TFLOP/s", "MFU", "plan GiB", "XLA GiB", "plan/XLA"))
    for variant, size, batch, remat in sizes.pali:
      model = _pali_model(variant, size, remat, args.dtype, sizes.ul2)
      tokens = batch * (model.config.vit.grid ** 2 + sum(sizes.pali_lengths.values()))
      _row(f"{variant} + UL2 {_ul2_params(sizes.ul2) / 1e9:.1f}B @{size}, batch {batch}, remat {remat}",
           lambda: _train_row(model, batch, sizes.pali_lengths, steps, peak, per_step=tokens, dtype=args.dtype))
  if "decode" in sections:
    _section("greedy decoding, new tokens/s", ("ours", "HF", "ours / HF"))
    for batch in sizes.decode_batches:
      _row(f"T5 {sizes.t5['d_model']} x {sizes.t5['num_layers']}+{sizes.t5['num_decoder_layers']}, batch {batch}, "
           f"{sizes.decode_lengths[0]} in / {sizes.decode_lengths[1]} new",
           lambda: _decode_row(sizes.t5, batch, *sizes.decode_lengths, args.dtype, steps))
  print(f"\nsuite: {time.perf_counter() - start:.0f} s" + (f", {len(FAILED)} configuration(s) failed" if FAILED
                                                               else ""), flush=True)
  if FAILED:
    sys.exit(1)


# ------------------------------------------------------------------------------------------------ output

def _section(title: str, columns: tuple[str, ...]):
  print(f"\n{title}\n{'configuration':<52}" + "".join(f"{c:>11}" for c in columns), flush=True)


FAILED: list[str] = []


def _row(label: str, measure: Callable[[], tuple[str, ...]]):
  """Prints label and measure()'s cells. A configuration out of device memory prints so; one that fails
  otherwise prints its error's first line and is counted (the exit status); the suite goes on either way."""
  try:
    cells = measure()
  except Exception as e:  # pylint: disable=broad-except  (XlaRuntimeError, torch.OutOfMemoryError, ...)
    message = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    if "RESOURCE_EXHAUSTED" in message or "out of memory" in message.lower():
      cells = ("out of memory",)
    else:
      FAILED.append(label)
      cells = ("  failed: " + message[:200],)
  print(f"{label:<52}" + "".join(f"{c:>11}" for c in cells), flush=True)


# ------------------------------------------------------------------------------------------------ numerics

def _numerics_row(kernel: str, causal: bool, shape: tuple[int, int, int, int], default: str) -> tuple[str, ...]:
  """Relative errors of `kernel` and of the reference path, both in bf16, against the fp32 reference."""
  import gin  # pylint: disable=import-outside-toplevel
  b, h, t, d = shape
  rng = np.random.default_rng(0)
  q, k, v, probe = (jnp.asarray(rng.normal(size=(b, h, t, d)), jnp.float32) for _ in range(4))
  bias = jnp.asarray(rng.normal(size=(1, h, t, t)), jnp.float32)  # T5's relative-position bias: per head
  mask = jnp.asarray(rng.random((b, 1, 1, t)) > 0.2).at[:, :, :, 0].set(True)  # padding, never a whole row
  if causal:
    mask = mask & jnp.tril(jnp.ones((t, t), bool))

  def run(name: str, dtype) -> list[jax.Array]:
    gin.bind_parameter("vlm.layers.attention_implementation.name", name)
    try:
      def loss(q, k, v):
        out = layers.dot_product_attention(q.astype(dtype), k.astype(dtype), v.astype(dtype), bias=bias,
                                           mask=mask, scale=d ** -0.5)
        return jnp.sum(out.astype(jnp.float32) * probe), out
      (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)
      return [out.astype(jnp.float32), *grads]
    finally:
      gin.bind_parameter("vlm.layers.attention_implementation.name", default)

  def errors(xs, refs):
    rel = [float(jnp.max(jnp.abs(x - r)) / jnp.max(jnp.abs(r))) for x, r in zip(xs, refs)]
    return rel[0], max(rel[1:])

  truth = run("reference", jnp.float32)
  out, grads = errors(run(kernel, jnp.bfloat16), truth)
  ref_out, ref_grads = errors(run("reference", jnp.bfloat16), truth)
  ok = out <= 2 * ref_out + 1e-3 and grads <= 2 * ref_grads + 1e-3
  if not ok:
    FAILED.append(f"{kernel} numerics")
  return f"{out:.1e}", f"{grads:.1e}", f"{ref_out:.1e}", f"{ref_grads:.1e}", "ok" if ok else "TOO FAR"


# ------------------------------------------------------------------------------------------------ train steps

def _siglip_model(variant: str, size: int, remat: str, dtype: str) -> siglip.SigLIPModel:
  image = vit_lib.config(variant, image_size=size, dtype=dtype, scan=True, remat=remat)
  text = text_lib.config(variant.split("/")[0], vocab_size=VOCAB, max_len=TEXT_TOKENS, dtype=dtype, scan=True,
                         remat=remat)
  return siglip.SigLIPModel(image=image, text=text)


def _pali_model(variant: str, size: int, remat: str, dtype: str, ul2_sizes: dict) -> pali.PaLIModel:
  vit = vit_lib.config(variant, image_size=size, pool_type="none", dtype=dtype, scan=True, remat=remat)
  return pali.PaLIModel(vit=vit, ul2=ul2.UL2Config(**ul2_sizes, vocab_size=VOCAB, dtype=dtype, scan=True,
                                                   remat=remat))


def _ul2_params(s: dict) -> float:
  attention, mlp = 4 * s["d_model"] * s["num_heads"] * s["head_dim"], 3 * s["d_model"] * s["d_ff"]
  return s["num_encoder_layers"] * (attention + mlp) + s["num_decoder_layers"] * (2 * attention + mlp) \
      + 2 * VOCAB * s["d_model"]


def _random_batch(specs: dict, vocab: int) -> dict[str, np.ndarray]:
  """Data of the batch's shapes: images in [-1, 1], token ids inside the vocabulary (never 0: no padding)."""
  rng = np.random.default_rng(0)
  return {k: (rng.uniform(-1, 1, s.shape).astype(s.dtype) if jnp.issubdtype(s.dtype, jnp.floating)
              else rng.integers(1, vocab, s.shape).astype(s.dtype)) for k, s in specs.items()}


def _train_row(model, batch_size: int, lengths: dict, steps: int, peak: float | None, per_step: int, dtype: str
               ) -> tuple[str, ...]:
  """Times the trainer's step; its FLOPs and memory estimate come from vlm.plan on a one-device mesh."""
  estimate = plan.plan(model, batch_size=batch_size, feature_lengths=lengths,
                       partitioner=partitioning.Partitioner(num_partitions=1, abstract_mesh={"data": 1, "model": 1}),
                       optimizer=optim.adamw(1e-4), fused_attention=layers.attention_kernel(dtype) == "cudnn")
  specs = plan.geometry(model, lengths, batch_size).batch
  batch = _random_batch(specs, VOCAB)
  partitioner = partitioning.Partitioner(devices=jax.devices()[:1])
  fns = trainer.build_step_functions(model, optim.adamw(1e-4), partitioner, batch)
  with partitioner.context():
    gbatch = partitioning.global_batch(partitioner, batch)
    compiled = fns.train_step.lower(fns.abstract_state, gbatch).compile()
    memory = compiled.memory_analysis()
    state = fns.init(jax.random.key(0))
    state, metrics = compiled(state, gbatch)  # warm-up
    jax.block_until_ready(metrics)
    tic = time.perf_counter()
    for _ in range(steps):
      state, metrics = compiled(state, gbatch)
    jax.block_until_ready(metrics)
    step = (time.perf_counter() - tic) / steps
  if not np.isfinite(float(metrics["loss"])):
    raise RuntimeError(f"the train step's loss is {float(metrics['loss'])}")
  compiled_bytes = (memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes
                    + memory.temp_size_in_bytes)
  flops = estimate.train_flops
  return (f"{step * 1e3:.1f}", f"{per_step / step:,.0f}", f"{flops / step / 1e12:.1f}",
          f"{100 * flops / step / peak:.1f}%" if peak else "-", f"{estimate.total_bytes / GIB:.2f}",
          f"{compiled_bytes / GIB:.2f}", f"{estimate.total_bytes / compiled_bytes:.2f}")


# ------------------------------------------------------------------------------------------------ forwards

def _torch_target(dtype: str):
  """(device, dtype) torch runs on: the GPU when there is one, in the suite's compute dtype."""
  import torch  # pylint: disable=import-outside-toplevel
  return ("cuda" if torch.cuda.is_available() else "cpu"), getattr(torch, dtype)


def _forward_row(variant: str, size: int, batch: int, dtype: str, steps: int) -> tuple[str, ...]:
  import torch  # pylint: disable=import-outside-toplevel
  from encoder_throughput import hf_vision_model  # pylint: disable=import-outside-toplevel  (benchmarks/)
  torch_device, torch_dtype = _torch_target(dtype)
  hf = hf_vision_model(variant, size).to(torch_device, torch_dtype)
  ours = vit_lib.ViT(vit_lib.config(variant, image_size=size, dtype=dtype))
  images = np.random.default_rng(0).uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
  params = jax.jit(ours.init)(jax.random.key(0), images[:1])["params"]
  params = jax.tree.map(lambda x: x.astype(dtype), params)  # inference: the weights in the compute dtype, as HF's
  forward = jax.jit(lambda p, x: ours.apply({"params": p}, images=x))
  x_jax = jax.device_put(images)
  x_torch = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(torch_device, torch_dtype)

  def run_ours():
    jax.block_until_ready(forward(params, x_jax))

  def run_hf():
    with torch.inference_mode():
      hf(pixel_values=x_torch)
    if torch_device == "cuda":
      torch.cuda.synchronize()

  run_ours(), run_hf()  # compile / allocate
  ours_s, hf_s = best_times([run_ours, run_hf], steps)
  del hf
  return f"{batch / ours_s:,.0f}", f"{batch / hf_s:,.0f}", f"{hf_s / ours_s:.2f}x"


def _decode_row(t5: dict, batch: int, input_len: int, new_tokens: int, dtype: str, steps: int) -> tuple[str, ...]:
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  from decode import greedy_runs  # pylint: disable=import-outside-toplevel  (benchmarks/decode.py)
  torch_device, torch_dtype = _torch_target(dtype)
  config = transformers.T5Config(vocab_size=VOCAB + 128, feed_forward_proj="gated-silu", tie_word_embeddings=False,
                                 dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, **t5)
  torch.manual_seed(0)
  hf = transformers.T5ForConditionalGeneration(config).eval()
  with tempfile.TemporaryDirectory() as directory:
    hf.save_pretrained(directory)
    ours = ul2.load(directory)
  # Weights in the compute dtype, as HF's: decoding reads every weight at every step.
  ours = ul2.LoadedUL2(dataclasses.replace(ours.config, dtype=dtype), jax.tree.map(lambda x: x.astype(dtype),
                                                                                   ours.params))
  hf = hf.to(torch_device, torch_dtype)
  ids = np.random.default_rng(0).integers(2, VOCAB, (batch, input_len)).astype(np.int32)
  run_hf, run_ours = greedy_runs(hf, ours, ids, new_tokens, torch_device)
  run_ours(), run_hf()
  ours_s, hf_s = best_times([run_ours, run_hf], steps)
  return f"{batch * new_tokens / ours_s:,.0f}", f"{batch * new_tokens / hf_s:,.0f}", f"{hf_s / ours_s:.2f}x"


if __name__ == "__main__":
  main(sys.argv[1:])
