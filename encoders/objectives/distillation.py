"""SILC-style self-distillation: DINO's loss between an EMA teacher's global views and every view of the student.

  teacher   p_t = softmax((t - c) / tau_t)          on each of the G global views (centred, sharpened)
  student   log p_s = log_softmax(s / tau_s)         on every view, G global + L local
  loss      mean over pairs (g, v), v != g, of  mean over the batch of  -sum_k p_t[g] log p_s[v]
  centre    c <- m c + (1 - m) mean over views and batch of t      (after the step; the teacher's logits)

t and s are a projection head's logits (heads.ProjectionHead) of the pooled image features. The centre stops
the teacher from collapsing onto one prototype, the low teacher temperature sharpens it (DINO, Caron et al.
2021; SILC, Naeem et al. 2023: local crops of the student against the teacher's global view, alongside the
image-text loss). DINOv2's dino_clstoken_loss has the same shape.
"""

from __future__ import annotations

import dataclasses

import gin
import jax
import jax.numpy as jnp


@gin.configurable(module="encoders.objectives")
@dataclasses.dataclass(frozen=True)
class SelfDistillation:
  """weight and start (the fraction of training at which the term joins the loss), then DINO's settings."""
  weight: float = 1.0
  start: float = 0.8
  prototypes: int = 1024
  hidden: int = 512
  bottleneck: int = 128
  student_temperature: float = 0.1
  teacher_temperature: float = 0.04
  centre_momentum: float = 0.9

  name = "self_distillation"
  head = "dino_head"

  @property
  def head_spec(self) -> tuple:
    """The projection head it reads (encoders.siglip.TwoTower's heads): on the pooled features."""
    return (self.head, "pooled", (self.hidden, self.bottleneck, self.prototypes))

  def __post_init__(self):
    _check_common(self)


def dino_loss(student: jax.Array, teacher: jax.Array, centre: jax.Array, student_temperature: float,
              teacher_temperature: float) -> jax.Array:
  """The loss of the module docstring.

  Args:
    student: [V, B, K] logits of every view (the G global views first, then the local ones).
    teacher: [G, B, K] logits of the global views (not differentiated).
    centre: [K].
  Returns:
    a float32 scalar.
  """
  g, v = teacher.shape[0], student.shape[0]
  targets = jax.nn.softmax((jax.lax.stop_gradient(teacher).astype(jnp.float32) - centre) / teacher_temperature, -1)
  log_probs = jax.nn.log_softmax(student.astype(jnp.float32) / student_temperature, -1)
  ce = -jnp.einsum("gbk,vbk->gv", targets, log_probs) / student.shape[1]  # [G, V] means over the batch
  pairs = 1.0 - jnp.eye(g, v)  # a view is never its own target
  return jnp.sum(ce * pairs) / jnp.sum(pairs)


def centre_update(centre: jax.Array, teacher: jax.Array, momentum: float) -> jax.Array:
  """m c + (1 - m) mean of the teacher's logits over every axis but the last."""
  mean = jnp.mean(jax.lax.stop_gradient(teacher).astype(jnp.float32).reshape(-1, teacher.shape[-1]), axis=0)
  return momentum * centre + (1 - momentum) * mean


def _check_common(objective) -> None:
  """The checks every objective's settings share; one line naming the objective and the value."""
  name = type(objective).__name__
  if not 0.0 <= objective.start <= 1.0:
    raise ValueError(f"{name} start={objective.start}: the fraction of training at which it starts must be in [0, 1]")
  if objective.weight < 0:
    raise ValueError(f"{name} weight={objective.weight} is negative")
  for field in ("student_temperature", "teacher_temperature"):
    if getattr(objective, field, 1.0) <= 0:
      raise ValueError(f"{name} {field}={getattr(objective, field)} must be positive")
  if not 0.0 <= getattr(objective, "centre_momentum", 0.0) <= 1.0:
    raise ValueError(f"{name} centre_momentum={objective.centre_momentum} is not in [0, 1]")


__all__ = ["SelfDistillation", "dino_loss", "centre_update"]
