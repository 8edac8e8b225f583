"""EMA teachers (the trainer's, for any model): a non-trained copy of some parameter subtrees, updated after
each step as

  teacher <- m * teacher + (1 - m) * student

A model names the subtrees by a regex over parameter paths ('img/.*|dino_head/.*' for the image tower and
heads; 'dino_head/.*' alone for TIPSv2's head-only EMA, whose teacher backbone is the student's own under
stop-gradient). The copy lives in the train state (vlm.trainer.TrainState.teacher): checkpointed and resumed
with it, sharded like the parameters it copies, never differentiated and without optimizer state.
"""

from __future__ import annotations

import re
from typing import Any

import gin
import jax
import jax.numpy as jnp
import numpy as np


def _path(path) -> str:
  return "/".join(str(getattr(key, "key", key)) for key in path)


def select(params: dict, pattern: str) -> dict:
  """The nested dict of the leaves of `params` whose '/'-joined path fully matches `pattern` (the rest pruned).

  Raises:
    ValueError: nothing matches (a teacher of nothing is a configuration mistake).
  """
  regex = re.compile(pattern)
  out: dict = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    keys = [str(getattr(key, "key", key)) for key in path]
    if regex.fullmatch("/".join(keys)):
      node = out
      for key in keys[:-1]:
        node = node.setdefault(key, {})
      node[keys[-1]] = leaf
  if not out:
    raise ValueError(f"the teacher's parameters {pattern!r} match no parameter path (paths look like "
                     f"{_path(jax.tree_util.tree_flatten_with_path(params)[0][0][0])!r})")
  return out


def merge(params: dict, subtree: dict) -> dict:
  """`params` with the leaves of `subtree` (same paths) put in place of its own."""
  out = dict(params)
  for key, value in subtree.items():
    out[key] = merge(params[key], value) if isinstance(value, dict) else value
  return out


def update(teacher: Any, student: Any, momentum: jax.Array | float) -> Any:
  """m * teacher + (1 - m) * student, leaf by leaf (student: `select`ed like the teacher)."""
  m = jnp.asarray(momentum, jnp.float32)
  return jax.tree.map(lambda t, s: (m * t + (1 - m) * s.astype(t.dtype)).astype(t.dtype), teacher, student)


@gin.configurable(module="vlm.ema")
def momentum_schedule(base: float = 0.996, final: float | None = None, total_steps: int | None = None):
  """The EMA momentum at each step: `base` throughout (SILC: a fixed momentum keeps the teacher following
  the image-text loss), or DINO's cosine from `base` to `final` over `total_steps`.

  Raises:
    ValueError: a momentum outside [0, 1], or a final momentum without total_steps.
  """
  for name, value in (("base", base), ("final", final)):
    if value is not None and not 0.0 <= value <= 1.0:
      raise ValueError(f"EMA momentum {name}={value} is not in [0, 1]")
  if final is None:
    return lambda step: jnp.float32(base)
  if not total_steps:
    raise ValueError("momentum_schedule(final=...) needs total_steps (bind it to %TRAIN_STEPS)")

  def schedule(step):
    progress = jnp.clip(jnp.asarray(step, jnp.float32) / total_steps, 0.0, 1.0)
    return jnp.float32(final) - (final - base) * (jnp.cos(np.pi * progress) + 1) / 2
  return schedule


__all__ = ["select", "merge", "update", "momentum_schedule"]
