"""Optimizers and learning-rate schedules, as gin-configurable optax factories.

A run file picks one by reference, not by call: `vlm.trainer.train.optimizer = @vlm.optim.adamw`; the trainer
calls it with `learning_rate` (its `learning_rate` binding, e.g. `@vlm.optim.schedule()`).
"""

from __future__ import annotations

import re

import gin
import jax
import jax.numpy as jnp
import optax

SCHEDULES = ("cosine", "rsqrt", "constant", "linear")


@gin.configurable(module="vlm.optim")
def schedule(peak: float = 1e-3, warmup_steps: int = 0, decay: str = "cosine", total_steps: int = gin.REQUIRED,
             end_fraction: float = 0.0) -> optax.Schedule:
  """Linear warmup to `peak`, then a decay.

  cosine / linear: to end_fraction * peak at total_steps. rsqrt: T5X's `constant * rsqrt_decay`,
  peak * sqrt(warmup / step) after warmup (flat at peak with no warmup steps until step 1).
  constant: stays at peak.
  """
  if decay not in SCHEDULES:
    raise ValueError(f"schedule decay={decay!r} is not one of {SCHEDULES}")
  for name, value, minimum in (("total_steps", total_steps, 1), ("warmup_steps", warmup_steps, 0)):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
      raise ValueError(f"schedule {name} must be an integer >= {minimum}; got {value!r} (the run files bind "
                       "total_steps to TRAIN_STEPS)")
  if isinstance(peak, bool) or not isinstance(peak, (int, float)) or not 0 < peak < float("inf"):
    raise ValueError(f"schedule peak (the learning rate) must be a number > 0; got {peak!r} (a negative one "
                     "climbs the loss; the run files bind it to PEAK_LEARNING_RATE)")
  if not 0 <= end_fraction <= 1:
    raise ValueError(f"schedule end_fraction must be in [0, 1] (of the peak); got {end_fraction!r}")
  warmup = optax.linear_schedule(0.0, peak, max(warmup_steps, 1))
  rest = max(total_steps - warmup_steps, 1)
  if decay == "cosine":
    after = optax.cosine_decay_schedule(peak, rest, alpha=end_fraction)
  elif decay == "linear":
    after = optax.linear_schedule(peak, peak * end_fraction, rest)
  elif decay == "rsqrt":
    w = max(warmup_steps, 1)
    after = lambda step: peak * jnp.sqrt(w / jnp.maximum(step + w, w))
  else:
    after = optax.constant_schedule(peak)
  if warmup_steps == 0:
    return after
  return optax.join_schedules([warmup, after], [warmup_steps])


@gin.configurable(module="vlm.optim")
def adamw(learning_rate: float | optax.Schedule = 1e-3, b1: float = 0.9, b2: float = 0.95,
          weight_decay: float = 1e-4, grad_clip_norm: float | None = 1.0) -> optax.GradientTransformation:
  """AdamW as SigLIP trains: beta2 0.95 for stability at large batch; decoupled weight decay on matrices only."""
  chain = [optax.clip_by_global_norm(grad_clip_norm)] if grad_clip_norm else []
  chain.append(optax.adamw(learning_rate, b1=b1, b2=b2, weight_decay=weight_decay, mask=_matrices))
  return optax.chain(*chain)


@gin.configurable(module="vlm.optim")
def adafactor(learning_rate: float | optax.Schedule = 1e-2, decay_rate: float = 0.8,
              clipping_threshold: float | None = 1.0, factored: bool = True,
              weight_decay: float | None = None, grad_clip_norm: float | None = None) -> optax.GradientTransformation:
  """T5X's default: factored second moments (row / column statistics for matrices), no first moment."""
  chain = [optax.clip_by_global_norm(grad_clip_norm)] if grad_clip_norm else []
  chain.append(optax.adafactor(learning_rate, decay_rate=decay_rate, clipping_threshold=clipping_threshold,
                               factored=factored, multiply_by_parameter_scale=False,
                               weight_decay_rate=weight_decay))
  return optax.chain(*chain)


def _matrices(params):
  """Weight decay mask: kernels and embeddings, not biases, norms, or the SigLIP scalars."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def freeze(tx: optax.GradientTransformation, frozen_params: str | None) -> optax.GradientTransformation:
  """Wraps `tx` so that parameters whose path fully matches the regex `frozen_params` stay fixed.

  Paths are '/'-joined names ('img/Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel'); `img/.*`
  freezes PaLI's ViT. Frozen parameters get neither updates nor optimizer state (optax.multi_transform
  masks them out of `tx`), so a frozen 2B ViT costs no Adam moments.
  """
  if not frozen_params:
    return tx

  def labels(params):
    return jax.tree.map(lambda frozen: "frozen" if frozen else "trained", frozen_mask(params, frozen_params))

  return optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, labels)


def frozen_mask(params, frozen_params: str | None):
  """A tree like `params` of bools: True where the path fully matches the regex `frozen_params`."""
  pattern = re.compile(frozen_params) if frozen_params else None
  mask = jax.tree_util.tree_map_with_path(
      lambda path, _: bool(pattern and pattern.fullmatch(path_name(path))), params)
  leaves = jax.tree.leaves(mask)
  if pattern and leaves and not any(leaves):  # (optax also calls freeze's labels on empty placeholder trees)
    raise ValueError(f"frozen_params={frozen_params!r} matches no parameter path (paths look like "
                     f"{path_name(jax.tree_util.tree_flatten_with_path(params)[0][0][0])!r})")
  return mask


def path_name(path) -> str:
  """A tree path as the '/'-joined parameter name."""
  return "/".join(str(getattr(key, "key", getattr(key, "name", key))) for key in path)
