"""Patch-level distillation from a frozen encoder (TIPSv2): every patch token of the student, through a linear
head to the teacher's width, is pulled towards the teacher's token at the same place of the same view.

  loss = mean over views and patches of  1 - cos(W s_patch, t_patch)

The teacher is any SigLIP `encoders.siglip.load` reads (a HF or big_vision checkpoint, a MODEL_DIR), usually a
larger one; it runs on the student's global views, frozen, with its position embedding resized to their
grid. Where its patch size differs from the student's, its token grid is resized (bilinear) to the student's.
TIPSv2 reports that a student distilled on every patch aligns its patches with text better than the teacher
it learnt from.
"""

from __future__ import annotations

import dataclasses

import gin
import jax
import jax.numpy as jnp

from encoders.objectives import distillation


@gin.configurable(module="encoders.objectives")
@dataclasses.dataclass(frozen=True)
class PatchDistillation:
  """weight and start as every objective; checkpoint: the frozen teacher (encoders.siglip.load's path)."""
  checkpoint: str = gin.REQUIRED
  weight: float = 1.0
  start: float = 0.0

  name = "patch_distillation"
  head = "distill_head"

  def __post_init__(self):
    distillation._check_common(self)  # pylint: disable=protected-access
    if not isinstance(self.checkpoint, str) or not self.checkpoint:
      raise ValueError("PatchDistillation needs checkpoint: the path of the frozen teacher (a SigLIP checkpoint)")

  def load_teacher(self):
    """(the teacher's ViTConfig, its image tower's parameters), read once."""
    from encoders import siglip_checkpoints  # pylint: disable=import-outside-toplevel
    config, params = siglip_checkpoints.read(self.checkpoint)
    return config.image, jax.device_put(params["img"])

  def head_spec(self, teacher_width: int) -> tuple:
    """A linear head from the student's tokens to the teacher's width."""
    return (self.head, "tokens", (teacher_width,))


def teacher_tokens(vit_module, params, views: jax.Array, patch_size: int, student_grid: tuple[int, int]) -> jax.Array:
  """The frozen teacher's patch tokens [N, gh * gw, D_t] of views [N, S, S, 3], on the student's grid.

  Raises:
    ValueError: the teacher's patch size does not divide the views (its tokens would not cover them).
  """
  size = views.shape[1:3]
  if size[0] % patch_size or size[1] % patch_size:
    raise ValueError(f"the patch-distillation teacher's patches of {patch_size} px do not tile the {size[0]}x{size[1]} "
                     "views the student sees; use a teacher whose patch size divides the view size")
  tokens = jax.lax.stop_gradient(vit_module.apply({"params": params}, views)["tokens"])
  rows, cols = size[0] // patch_size, size[1] // patch_size
  if (rows, cols) != tuple(student_grid):
    grid = tokens.reshape(tokens.shape[0], rows, cols, tokens.shape[-1])
    grid = jax.image.resize(grid, (grid.shape[0],) + tuple(student_grid) + (grid.shape[-1],), "bilinear",
                            antialias=True)
    tokens = grid.reshape(grid.shape[0], -1, grid.shape[-1])
  return tokens


def patch_distillation_loss(student: jax.Array, teacher: jax.Array) -> jax.Array:
  """Mean over [N, T] patches of 1 - cos(student, teacher); student already through the linear head."""
  s = student.astype(jnp.float32)
  t = jax.lax.stop_gradient(teacher).astype(jnp.float32)
  cos = jnp.sum(s * t, -1) * jax.lax.rsqrt(jnp.maximum(jnp.sum(s * s, -1) * jnp.sum(t * t, -1), 1e-24))
  return jnp.mean(1.0 - cos)


__all__ = ["PatchDistillation", "teacher_tokens", "patch_distillation_loss"]
