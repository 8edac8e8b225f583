"""ACID-style active data curation (SigLIP 2, for its small models): a frozen teacher and the student score a
super-batch, and the student trains on the examples it can learn most from.

  per example i   l_i = -sum_j log sigmoid(z_ij * (exp(t') x_i . y_j + b))      (row i of the sigmoid loss, i's
                  image against every text of the super-batch; logits by encoders.siglip.sigmoid_logits), for
                  the student and for the teacher
  learnability    l_i(student) - l_i(teacher): high where the student is wrong and the teacher right
  selection       the top `fraction` of the super-batch by learnability (ties to the lower row), the training
                  batch of the step; the scoring pass is not differentiated
  distillation    optionally, on the selected batch, the cross-entropy between the teacher's and the student's
                  pairwise sigmoid probabilities (ACED), with its own weight

The trainer's BATCH_SIZE is the super-batch; the step trains on fraction * BATCH_SIZE examples. Selection is a
pure function of the two models and the super-batch, so resume stays exact.
"""

from __future__ import annotations

import dataclasses

import gin
import jax
import jax.numpy as jnp

from encoders.objectives import distillation


@gin.configurable(module="encoders.objectives")
@dataclasses.dataclass(frozen=True)
class ActiveCuration:
  """The frozen teacher (encoders.siglip.load's path), the fraction of each super-batch kept, and the weight of
  the optional distillation on the teacher's logits (0: none). start as every objective."""
  checkpoint: str = gin.REQUIRED
  fraction: float = 0.5
  distillation_weight: float = 0.0
  weight: float = 1.0
  start: float = 0.0

  name = "active_curation"

  def __post_init__(self):
    distillation._check_common(self)  # pylint: disable=protected-access
    if not 0.0 < self.fraction <= 1.0:
      raise ValueError(f"ActiveCuration fraction={self.fraction}: the share of each super-batch kept must be in (0, 1]")
    if self.distillation_weight < 0:
      raise ValueError(f"ActiveCuration distillation_weight={self.distillation_weight} is negative")
    if not isinstance(self.checkpoint, str) or not self.checkpoint:
      raise ValueError("ActiveCuration needs checkpoint: the path of the frozen teacher (a SigLIP checkpoint)")


def per_example_sigmoid_loss(logits: jax.Array) -> jax.Array:
  """[B] row sums of the sigmoid loss's terms: each image against every text (its own is the positive)."""
  labels = 2.0 * jnp.eye(logits.shape[0]) - 1.0
  return -jnp.sum(jax.nn.log_sigmoid(labels * logits), axis=1)


def learnability(student_logits: jax.Array, teacher_logits: jax.Array) -> jax.Array:
  """[B] each example's student loss minus its teacher loss (the module docstring's)."""
  return per_example_sigmoid_loss(student_logits) - per_example_sigmoid_loss(teacher_logits)


def select(student_logits: jax.Array, teacher_logits: jax.Array, keep: int) -> jax.Array:
  """The indices [keep] of the super-batch's most learnable examples, in decreasing learnability; exact and
  deterministic (ties go to the lower index)."""
  _, indices = jax.lax.top_k(jax.lax.stop_gradient(learnability(student_logits, teacher_logits)), keep)
  return indices


def logit_distillation(student_logits: jax.Array, teacher_logits: jax.Array) -> jax.Array:
  """Mean over pairs of the cross-entropy between the teacher's and the student's sigmoid probabilities."""
  p = jax.nn.sigmoid(jax.lax.stop_gradient(teacher_logits))
  return -jnp.mean(p * jax.nn.log_sigmoid(student_logits) + (1 - p) * jax.nn.log_sigmoid(-student_logits))


__all__ = ["ActiveCuration", "per_example_sigmoid_loss", "learnability", "select", "logit_distillation"]
