"""How encoders.siglip.SigLIPModel composes its dense objectives into one training loss.

Batches of a run with objectives hold multi-crop views (tasks.preprocessors.multi_crop):
  global_views  float32 [B, G, S, S, 3]   G global crops of each image (SILC: 2, from 0.4-1.0 of the area)
  local_views   float32 [B, L, s, s, 3]   L local crops (SILC: 8, from 0.05-0.4), optional
  global_masks  int32 [B, G, T]           iBOT block masks of each global view's T patches (1: masked)
  text          int32 [B, Lt]
and, for LocCa, the whole image with its decoder task:
  image         float32 [B, S, S, 3]      (the image-text loss then runs on it rather than on the views)
  locca_inputs  int32 [B, Lp]             the task prompt ("refexp <phrase>", ...)
  locca_targets int32 [B, Lo]             its answer (+ EOS)
A batch with a plain 'image' and no views is one global view and no local ones.

One step:
  student   every global view through the image tower (masked patches replaced by the mask token while
            masked prediction runs), the local views too while self-distillation runs; the text tower once
  loss      the image-text loss on each global view, averaged (SILC: the objectives stay aligned with it)
            + weight * self-distillation (DINO between the teacher's global views and every student view)
            + weight * masked prediction (the teacher's patch distributions on the student's masked patches;
              iBOT++ adds the visible ones)
            + weight * patch distillation (every student patch, through a linear head, towards a frozen
              encoder's token at the same place of the same global view)
  teacher   the EMA parameters (vlm.ema) merged over the student's under stop-gradient, on the unmasked
            global views: with teacher='full' the copy holds the image tower and the heads; with 'heads'
            (TIPSv2's head-only EMA) only the heads, and the backbone is the student's own
  centres   each objective's, moved towards the teacher's mean logits (the new aux state)

Which objectives run is the step's phase (SigLIPModel.phase: those whose start fraction of training has been
reached); each phase compiles once, and the inactive terms are logged as 0 with weight 0.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from encoders.objectives import acid
from encoders.objectives import distillation
from encoders.objectives import locca as locca_lib
from encoders.objectives import masked as masked_lib
from encoders.objectives import patch_distillation
from vlm import ema

OBJECTIVES = ("self_distillation", "masked_prediction", "patch_distillation", "locca", "active_curation")
EMA_OBJECTIVES = ("self_distillation", "masked_prediction")  # those that learn from the EMA teacher
TEACHERS = ("full", "heads")


def check_objectives(objectives: Sequence, teacher: str, train_steps: int | None) -> tuple:
  """The objectives as a tuple, or one ValueError naming what is wrong."""
  objectives = tuple(objectives or ())
  names = []
  for objective in objectives:
    name = getattr(objective, "name", None)
    if name not in OBJECTIVES:
      raise ValueError(f"unknown objective {objective!r}: use one of encoders.objectives' SelfDistillation(), "
                       "MaskedPrediction(), PatchDistillation(), LocCa() or ActiveCuration()")
    names.append(name)
  if len(set(names)) != len(names):
    raise ValueError(f"objectives {names} name one objective twice")
  if objectives:
    if teacher not in TEACHERS:
      raise ValueError(f"SigLIPModel teacher={teacher!r} is not one of {TEACHERS}")
    if isinstance(train_steps, bool) or not isinstance(train_steps, int) or train_steps < 1:
      raise ValueError("SigLIPModel with objectives needs train_steps (bind it to %TRAIN_STEPS): their start "
                       f"fractions are of it; got {train_steps!r}")
  return objectives


def teacher_pattern(teacher: str, objectives: Sequence) -> str | None:
  """The regex of the parameters with an EMA copy: the EMA objectives' heads, and the image tower unless
  head-only; None when no objective learns from the EMA teacher."""
  heads = "|".join(f"{o.head}/.*" for o in objectives if o.name in EMA_OBJECTIVES)
  if not heads:
    return None
  return f"img/.*|{heads}" if teacher == "full" else heads


def _views(batch: dict) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
  """(global views [B, G, S, S, 3], local views [B, L, s, s, 3] or None, masks [B, G, T] or None)."""
  if "global_views" in batch:
    return batch["global_views"], batch.get("local_views"), batch.get("global_masks")
  if "image" not in batch:
    raise ValueError("the dense objectives read images (multi-crop 'global_views' or 'image'), not NaFlex patches")
  return batch["image"][:, None], None, None


def _flat(x: jax.Array) -> jax.Array:
  """[B, V, ...] -> [B * V, ...], example-major."""
  return x.reshape((-1,) + x.shape[2:])


def _view_major(x: jax.Array, b: int) -> jax.Array:
  """[B * V, ...] (example-major) -> [V, B, ...]."""
  return jnp.swapaxes(x.reshape((b, -1) + x.shape[1:]), 0, 1)


def loss(model, params, batch: dict, rng, *, teacher, aux: dict, phase: tuple[str, ...]):
  """(loss, metrics, new aux) of one step; see the module docstring."""
  del rng  # deterministic: the views and masks come from the input pipeline
  from encoders import siglip  # pylint: disable=import-outside-toplevel  (siglip imports this module's package)
  module, active = model.module, set(phase or ())
  objectives = {o.name: o for o in model.objectives}
  curated = {}
  if "active_curation" in active:
    batch, curated = _curate(model, params, batch, objectives["active_curation"])
  global_views, local_views, masks = _views(batch)
  b = global_views.shape[0]
  run = lambda p, images, **kw: module.apply({"params": p}, images, method=siglip.TwoTower.view_features, **kw)

  # The student.
  sd, mp = objectives.get("self_distillation"), objectives.get("masked_prediction")
  sd_on, mp_on = sd is not None and sd.name in active, mp is not None and mp.name in active
  pd_on = "patch_distillation" in objectives and "patch_distillation" in active
  if mp_on and masks is None:
    raise ValueError("masked prediction needs 'global_masks' in the batch (tasks.preprocessors.multi_crop with "
                     "mask_ratio)")
  teacher_heads = (("dino_head",) if sd_on else ()) + (("ibot_head",) if mp_on else ())
  whole = "image" in batch and "global_views" in batch  # a whole image beside the views (LocCa's batches)
  student = image = None
  if not whole or sd_on or mp_on or pd_on:
    student = run(params, _flat(global_views), masked=_flat(masks) if mp_on else None,
                  heads=teacher_heads + (("distill_head",) if pd_on else ()))
  if whole:
    image = run(params, batch["image"])
  elif "global_views" not in batch:  # the batch's 'image' was the one global view
    image = student
  ztxt = module.apply({"params": params}, batch["text"], method=siglip.TwoTower.encode_text)["pooled"]
  t_prime, bias = params["t"], params["b"]
  zimg = image["pooled"][None] if whole else _view_major(student["pooled"], b)  # [G, B, D]
  contrastive = jnp.mean(jnp.stack([model.contrastive_loss(z, ztxt, t_prime, bias) for z in zimg]))
  total = contrastive
  metrics = {"temperature": jnp.exp(t_prime), "bias": bias, "loss/contrastive": contrastive}
  if "active_curation" in objectives:
    curation = objectives["active_curation"]
    term = jnp.float32(0)
    if curated:
      term = acid.logit_distillation(siglip.sigmoid_logits(zimg[0], ztxt, t_prime, bias),
                                   curated["teacher_logits"])
      total = total + curation.distillation_weight * term
    metrics["loss/acid_distillation"] = term
    metrics["acid/learnability_kept"] = curated.get("learnability_kept", jnp.float32(0))
    metrics["acid/learnability_all"] = curated.get("learnability_all", jnp.float32(0))
  new_aux = dict(aux)

  # The teacher, on the unmasked global views.
  if sd_on or mp_on:
    teacher_params = ema.merge(jax.lax.stop_gradient(params), teacher)
    taught = jax.tree.map(jax.lax.stop_gradient,
                          run(teacher_params, _flat(global_views), heads=teacher_heads))

  for name in OBJECTIVES:
    objective = objectives.get(name)
    if objective is None or name == "active_curation":  # (curation chose the batch; its term is above)
      continue
    term = jnp.float32(0)
    if name == "self_distillation" and sd_on:
      views = [_view_major(student["dino_head"], b)]  # [G, B, K]
      if local_views is not None and local_views.shape[1]:
        views.append(_view_major(run(params, _flat(local_views), heads=("dino_head",))["dino_head"], b))
      teacher_logits = _view_major(taught["dino_head"], b)
      if sum(v.shape[0] for v in views) < 2:
        raise ValueError("self-distillation compares views: it needs two global views, or local ones")
      term = distillation.dino_loss(jnp.concatenate(views), teacher_logits, aux[f"{name}_centre"],
                                    objective.student_temperature, objective.teacher_temperature)
      new_aux[f"{name}_centre"] = distillation.centre_update(aux[f"{name}_centre"], teacher_logits,
                                                             objective.centre_momentum)
    if name == "masked_prediction" and mp_on:
      term, masked_term, visible_term = masked_lib.masked_patch_loss(
          student["ibot_head"], taught["ibot_head"], _flat(masks), aux[f"{name}_centre"],
          objective.student_temperature, objective.teacher_temperature, objective.visible_weight)
      new_aux[f"{name}_centre"] = distillation.centre_update(aux[f"{name}_centre"], taught["ibot_head"],
                                                             objective.centre_momentum)
      metrics["loss/masked_prediction_masked"] = masked_term
      metrics["loss/masked_prediction_visible"] = visible_term
    elif name == "masked_prediction":
      metrics["loss/masked_prediction_masked"] = metrics["loss/masked_prediction_visible"] = jnp.float32(0)
    if name == "locca" and name in active:
      if "locca_targets" not in batch or "image" not in batch:
        raise ValueError("LocCa needs the whole 'image' and its decoder task ('locca_inputs', 'locca_targets'): "
                         "use scene_pairs_locca_synthetic or a task with tasks.preprocessors' locca features")
      logits_fn = lambda tokens, prompt, inputs, causal: module.apply(
          {"params": params}, tokens, prompt, inputs, causal, method=siglip.TwoTower.locca_logits)
      term, locca_metrics = locca_lib.locca_loss(logits_fn, image["tokens"], batch["locca_inputs"],
                                                 batch["locca_targets"], objective.parallel_fraction)
      metrics.update(locca_metrics)
    elif name == "locca":
      metrics["locca_token_accuracy"] = jnp.float32(0)
    if name == "patch_distillation" and pd_on:
      tower, frozen, patch = model.frozen_teachers[name]
      size = global_views.shape[2:4]
      grid = (size[0] // model.config.image.patch_size, size[1] // model.config.image.patch_size)
      target = patch_distillation.teacher_tokens(tower, frozen, _flat(global_views), patch, grid)
      term = patch_distillation.patch_distillation_loss(student["distill_head"], target)
    weight = objective.weight if name in active else 0.0
    metrics[f"loss/{name}"] = term
    metrics[f"weight/{name}"] = jnp.float32(weight)
    total = total + weight * term
  return total, metrics, new_aux


def _curate(model, params, batch: dict, curation) -> tuple[dict, dict]:
  """The super-batch's most learnable fraction (acid.py) as the step's batch, and what the selection saw."""
  from encoders import siglip  # pylint: disable=import-outside-toplevel
  module, (teacher_module, teacher_params) = model.module, model.frozen_teachers["active_curation"]
  images = batch["image"] if "image" in batch else batch["global_views"][:, 0]
  frozen = jax.lax.stop_gradient(params)

  def logits(m, p):
    zimg, ztxt, t_prime, bias = m.apply({"params": p}, images, batch["text"])
    return siglip.sigmoid_logits(zimg, ztxt, t_prime, bias)

  student, teacher = logits(module, frozen), jax.lax.stop_gradient(logits(teacher_module, teacher_params))
  keep = max(1, int(round(curation.fraction * images.shape[0])))
  chosen = acid.select(student, teacher, keep)
  learnability = acid.learnability(student, teacher)
  selected = {k: jnp.take(v, chosen, axis=0) for k, v in batch.items()}
  return selected, {"teacher_logits": teacher[chosen][:, chosen], "learnability_kept": jnp.mean(learnability[chosen]),
                    "learnability_all": jnp.mean(learnability)}


__all__ = ["OBJECTIVES", "EMA_OBJECTIVES", "TEACHERS", "check_objectives", "teacher_pattern", "loss"]
