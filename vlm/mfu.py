"""Accelerators and model FLOPs: the one table of devices, and how MFU (model FLOPs utilisation) is counted.

DEVICES serves `vlm.plan --device` (memory per device, peak FLOP/s) and the trainer, which looks up the peak
of the devices it runs on by their JAX `device_kind` to report MFU. `matmul_flops` counts a program's matrix
products from its jaxpr; `model_flops_per_step` is a train step's, as MFU counts them; `Throughput` turns a
logging window of steps into rates and MFU.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.extend
import numpy as np


@dataclasses.dataclass(frozen=True)
class Device:
  """One device as JAX sees it: a TPU v2 / v3 device is one core (half a chip); from v4 on, a chip."""
  kind: str  # the start of its jax `device_kind`
  memory_gib: float
  peak_tflops: float  # dense (not sparse) bfloat16, from the vendor's data sheet


# --device names of vlm.plan -> Device. GPUs: XLA preallocates 75% of the memory unless
# XLA_PYTHON_CLIENT_MEM_FRACTION says otherwise.
DEVICES = {
    "tpu-v2": Device("TPU v2", 8, 22.5),
    "tpu-v3": Device("TPU v3", 16, 61.5),
    "tpu-v4": Device("TPU v4", 32, 275),
    "tpu-v5e": Device("TPU v5 lite", 16, 197),
    "tpu-v5p": Device("TPU v5", 95, 459),
    "tpu-v6e": Device("TPU v6 lite", 32, 918),
    "a100-40g": Device("NVIDIA A100", 40, 312),
    "a100-80g": Device("NVIDIA A100", 80, 312),
    "h100": Device("NVIDIA H100", 80, 989),  # SXM
    "h100-pcie": Device("NVIDIA H100 PCIe", 80, 756),
    "h200": Device("NVIDIA H200", 141, 989),
}


def device_peak_flops(device_kind: str) -> float | None:
  """Peak bf16 FLOP/s of one JAX device of this `device_kind` (DEVICES, the longest kind prefix that matches);
  None for CPUs and unknown kinds."""
  matches = [d for d in DEVICES.values() if device_kind.startswith(d.kind)]
  return max(matches, key=lambda d: len(d.kind)).peak_tflops * 1e12 if matches else None


def matmul_flops(jaxpr: jax.extend.core.Jaxpr) -> float:
  """FLOPs of the matrix products and convolutions of a jaxpr: all but a few percent of a transformer's.

  Counted from the program itself, so a loop counts as often as it runs: a scan `length` times (XLA's cost
  analysis counts a loop's body once, which makes a model with scanned layers look depth times cheaper), a
  shard_map body once per shard, one branch of a cond; a while loop, whose trip count is not known before it
  runs, once.
  """
  total = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      (contracting, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      total += 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in contracting)
    elif name == "conv_general_dilated":  # each output element: one product per kernel weight of its feature
      kernel = eqn.invars[1].aval.shape
      features = kernel[eqn.params["dimension_numbers"].rhs_spec[0]]
      total += 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(kernel) / features
    inner = [matmul_flops(sub) for sub in jax.extend.core.jaxprs_in_params(eqn.params)]
    if name == "cond":
      total += max(inner)
    elif name == "scan":
      total += eqn.params["length"] * sum(inner)
    elif name == "shard_map":
      total += math.prod(eqn.params["mesh"].shape[a] for a in eqn.params["newly_manual_axes"]) * sum(inner)
    else:
      total += sum(inner)
  return total


def model_flops_per_step(model: Any, abstract_params: Any, example: dict, microbatches: int = 1) -> float:
  """Model FLOPs of one train step, as MFU counts them: 3 x the forward pass's (a backward pass costs two), so
  rematerialised recomputation is not counted. Traced on ShapeDtypeStructs: nothing is allocated or compiled.
  A frozen tower counts as if trained, though the step skips its backward (`frozen_params`): MFU reads high by
  that share (`python -m vlm.plan` prints it), or pass the run's own `flops_per_example`.

  Args:
    example: the global batch's ShapeDtypeStructs; the step runs the forward pass on `microbatches` slices.
  """
  micro = {k: jax.ShapeDtypeStruct((v.shape[0] // microbatches,) + v.shape[1:], v.dtype) for k, v in example.items()}
  forward = jax.make_jaxpr(model.loss_fn)(abstract_params, micro, jax.random.key(0)).jaxpr
  return 3 * microbatches * matmul_flops(forward)


@dataclasses.dataclass
class Throughput:
  """Turns a logging window of step metrics into a run's numbers: means, rates and, given FLOPs and a peak, MFU.

  tokens_per_sec: from the steps' `num_tokens`, for batches with token features. mfu: model FLOPs utilisation,
  the FLOP/s the steps achieved over the devices' peak.
  """
  batch_size: int
  flops_per_step: float | None = None  # every device's together
  peak_flops: float | None = None  # every device's together

  def summarise(self, window: list[dict], elapsed: float) -> dict[str, float]:
    steps = len(window)
    out = {k: float(np.mean([m[k] for m in window])) for k in window[0] if k != "num_tokens"}
    out.update(steps_per_sec=steps / elapsed, examples_per_sec=steps * self.batch_size / elapsed)
    if "num_tokens" in window[0]:
      out["tokens_per_sec"] = float(sum(m["num_tokens"] for m in window)) / elapsed
    if self.flops_per_step and self.peak_flops:
      out["mfu"] = steps * self.flops_per_step / elapsed / self.peak_flops
    return out

