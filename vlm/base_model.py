"""What every model gives the trainer, the evaluators and the planner: T5X's BaseModel, in this project's terms.

A model is a Python object around a flax module (`self.module`) that the trainer drives without knowing which
model it is; SigLIP (encoders.siglip.SigLIPModel), PaLI (vlm.model.PaLIModel) and the text-only UL2
(vlm.ul2.UL2Model) subclass BaseModel. A subclass must define

  init_variables(rng, batch) -> {'params': ...}        boxed with logical axis names (vlm.partitioning)
  loss_fn(params, batch, rng) -> (loss, {name: scalar})
  config_json() -> dict                                 written to MODEL_DIR/model_config.json; the load
                                                        functions rebuild the model from it

and inherits, or overrides where it has them:

  predict_batch(params, batch, **options)   the model's predictions: decoded tokens (vlm.decoding.DecodeResult)
                                            for PaLI and the UL2, L2-normalised embeddings for SigLIP
  score_batch(params, batch) -> [B]         log-likelihood of each row's targets (generative models)
  warm_start(params) -> params              pretrained parts loaded into a fresh state (default: none), named
                                            by warm_start_sources() -> {part: checkpoint}, which the trainer prints
  num_tokens(batch) -> scalar               tokens a batch holds, for tokens_per_sec: by default the non-padding
                                            ids of its TOKEN_FEATURES (None: the batch has none)
  learns_from_teacher                       False; a model that learns from an EMA teacher (SigLIP with the
                                            dense objectives) sets it and adds the extras vlm.trainer lists
  FEATURE_CONVERTER_CLS                     the seqio feature converter that makes this model's batches from
                                            task features (as T5X's models name theirs); the trainer refuses
                                            seqio batches made by another one
"""

from __future__ import annotations

import importlib
from typing import Any

import jax
import jax.numpy as jnp

# Features holding the token ids a model reads; padding is id 0 (seqio's convention). Decoder inputs are the
# targets shifted by one, so counting them too would count each target twice.
TOKEN_FEATURES = ("text", "encoder_input_tokens", "decoder_target_tokens")


class LazyClass:
  """A class attribute that names a class in another module and imports it when read.

  FEATURE_CONVERTER_CLS names a seqio feature converter; importing it loads TensorFlow, which a model used
  for inference alone (vlm.pali) never needs.
  """

  def __init__(self, module: str, name: str):
    self.module, self.name = module, name

  def __get__(self, obj, owner=None) -> type:
    return getattr(importlib.import_module(self.module), self.name)


class BaseModel:
  """The interface of the module docstring, with its default behaviour."""

  FEATURE_CONVERTER_CLS: Any = None  # a feature converter class, or LazyClass naming one
  learns_from_teacher = False

  def init_variables(self, rng: jax.Array, batch: dict) -> dict:
    raise NotImplementedError

  def loss_fn(self, params: Any, batch: dict, rng: jax.Array) -> tuple[jax.Array, dict]:
    raise NotImplementedError

  def config_json(self) -> dict:
    raise NotImplementedError

  def predict_batch(self, params: Any, batch: dict, **options) -> Any:
    raise NotImplementedError(f"{type(self).__name__} makes no predictions")

  def score_batch(self, params: Any, batch: dict) -> jax.Array:
    raise NotImplementedError(f"{type(self).__name__} scores no targets")

  def warm_start(self, params: Any) -> Any:
    return params

  def warm_start_sources(self) -> dict[str, str]:
    return {}

  def num_tokens(self, batch: dict) -> jax.Array | None:
    present = [batch[name] for name in TOKEN_FEATURES if name in batch]
    return sum(jnp.sum(ids != 0) for ids in present) if present else None
