"""Masked prediction (TIPS, after iBOT): the student sees block-masked patches (each replaced by a learned mask
token), the EMA teacher the whole image; the student predicts the teacher's patch distributions.

  per patch   ce = -sum_k softmax((t - c) / tau_t) log_softmax(s / tau_s)       (t, s: a head's patch logits)
  masked      per image, the mean of ce over its masked patches; then the mean over images with a masked patch
  visible     the same over its visible (unmasked, real) patches
  loss        masked + visible_weight * visible

iBOT counts the masked patches only (visible_weight 0); TIPSv2's iBOT++ counts the visible ones too, which it
reports raises zero-shot segmentation by 14 mIoU on ADE-150. The centre c is the patch head's own, updated
like self-distillation's from the teacher's patch logits. DINOv2's ibot_patch_loss has this shape.

The block masks (iBOT's) are drawn in the input pipeline from the example's seed (tasks.masks, through
tasks.preprocessors.multi_crop), so a step's masks are a pure function of seed and step.
"""

from __future__ import annotations

import dataclasses

import gin
import jax
import jax.numpy as jnp

from encoders.objectives import distillation


@gin.configurable(module="encoders.objectives")
@dataclasses.dataclass(frozen=True)
class MaskedPrediction:
  """weight and start as every objective; mask_ratio the (low, high) range of each image's masked share;
  visible_weight 0 for iBOT, > 0 for iBOT++."""
  weight: float = 0.25
  start: float = 0.8
  mask_ratio: tuple[float, float] = (0.1, 0.5)
  visible_weight: float = 0.0
  prototypes: int = 1024
  hidden: int = 512
  bottleneck: int = 128
  student_temperature: float = 0.1
  teacher_temperature: float = 0.04
  centre_momentum: float = 0.9

  name = "masked_prediction"
  head = "ibot_head"

  @property
  def head_spec(self) -> tuple:
    """The projection head it reads (encoders.siglip.TwoTower's heads): on the patch tokens."""
    return (self.head, "tokens", (self.hidden, self.bottleneck, self.prototypes))

  def __post_init__(self):
    distillation._check_common(self)  # pylint: disable=protected-access
    low, high = self.mask_ratio
    if not 0.0 < low <= high < 1.0:
      raise ValueError(f"MaskedPrediction mask_ratio={tuple(self.mask_ratio)}: each ratio must be in (0, 1), low <= high")
    if self.visible_weight < 0:
      raise ValueError(f"MaskedPrediction visible_weight={self.visible_weight} is negative")


def masked_patch_loss(student: jax.Array, teacher: jax.Array, mask: jax.Array, centre: jax.Array,
                      student_temperature: float, teacher_temperature: float, visible_weight: float = 0.0,
                      valid: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(loss, masked term, visible term) of the module docstring.

  Args:
    student: [B, T, K] patch logits of the masked view.
    teacher: [B, T, K] patch logits of the whole view (not differentiated).
    mask: [B, T], 1 where the student's patch was masked.
    centre: [K].
    valid: [B, T], 1 on real patches (NaFlex padding 0); None: all real.
  """
  targets = jax.nn.softmax((jax.lax.stop_gradient(teacher).astype(jnp.float32) - centre) / teacher_temperature, -1)
  ce = -jnp.sum(targets * jax.nn.log_softmax(student.astype(jnp.float32) / student_temperature, -1), -1)  # [B, T]
  valid = jnp.ones(ce.shape, jnp.float32) if valid is None else valid.astype(jnp.float32)
  masked = mask.astype(jnp.float32) * valid
  visible = (1.0 - mask.astype(jnp.float32)) * valid

  def per_image_mean(weights):
    counts = jnp.sum(weights, axis=1)
    per_image = jnp.sum(ce * weights, axis=1) / jnp.maximum(counts, 1.0)
    images = jnp.sum(counts > 0)
    return jnp.sum(per_image) / jnp.maximum(images, 1)

  masked_term, visible_term = per_image_mean(masked), per_image_mean(visible)
  return masked_term + visible_weight * visible_term, masked_term, visible_term


__all__ = ["MaskedPrediction", "masked_patch_loss"]
