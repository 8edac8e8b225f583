"""LocCa (SigLIP 2): a transformer decoder, used only in pretraining, that reads the ViT's un-pooled tokens and
learns captioning, referring expressions and grounded captioning from the same images as the sigmoid loss.

  tasks     "caption en"                -> the caption
            "refexp <phrase>"           -> the phrase's box as four location tokens (<locNNNN>, PaLI's)
            "grounded <four loc tokens>" -> the phrase of the object in that box
  decoder   the image tokens, linearly projected, then the task prompt, form what it cross-attends to (a UL2
            with no encoder layers: vlm.ul2, its decoder stack and token embedder); targets teacher-forced
  parallel  on a fraction of the batch (SigLIP 2: half) the decoder's input is all mask tokens and its
            attention not causal: every target token is predicted at once (CapPa's parallel prediction),
            which makes the decoder lean on the image rather than on the words before

The decoder's parameters live under 'locca'; exports (HF, big_vision) and PaLI warm starts take the image
tower only, so it leaves no trace in an exported encoder.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

from encoders.objectives import distillation
from vlm import layers
from vlm import ul2 as ul2_lib

MASK_ID = 2  # the decoder input of parallel prediction: the vocabulary's <unk>, which targets never hold


@gin.configurable(module="encoders.objectives")
@dataclasses.dataclass(frozen=True)
class LocCa:
  """weight and start as every objective; parallel_fraction of each batch predicted in parallel; the
  decoder's size ('pico', 'tiny', ... of vlm.ul2.SIZES; its encoder layers are dropped)."""
  weight: float = 1.0
  start: float = 0.0
  parallel_fraction: float = 0.5
  decoder_size: str = "tiny"
  num_decoder_layers: int | None = None

  name = "locca"

  def __post_init__(self):
    distillation._check_common(self)  # pylint: disable=protected-access
    if not 0.0 <= self.parallel_fraction <= 1.0:
      raise ValueError(f"LocCa parallel_fraction={self.parallel_fraction} is not in [0, 1]")
    if self.decoder_size not in ul2_lib.SIZES:
      raise ValueError(f"LocCa decoder_size={self.decoder_size!r} is not one of {', '.join(ul2_lib.SIZES)}")

  def decoder_config(self, vocab_size: int, dtype: str = "float32") -> ul2_lib.UL2Config:
    overrides = dict(vocab_size=vocab_size, num_encoder_layers=0, dtype=dtype)
    if self.num_decoder_layers:
      overrides["num_decoder_layers"] = self.num_decoder_layers
    return ul2_lib.config(self.decoder_size, **overrides)


class LocCaDecoder(nn.Module):
  """Parameters: 'img_projection' (ViT width -> d_model) and 'ul2' (token embedder and decoder stack)."""
  config: ul2_lib.UL2Config

  def setup(self):
    self.img_projection = layers.dense(self.config.d_model, (None, "embed"), dtype=self.config.dtype)
    self.ul2 = ul2_lib.UL2(self.config)

  def encode(self, image_tokens: jax.Array, prompt: jax.Array,
             image_mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """image_tokens [B, T, W] (the ViT's, un-pooled), prompt [B, Lp] (0 = padding) -> (what the decoder
    cross-attends to [B, T + Lp, d_model], its mask)."""
    visual = self.img_projection(image_tokens)
    text = self.ul2.embed_tokens(prompt)
    mask = jnp.ones(image_tokens.shape[:2], bool) if image_mask is None else image_mask.astype(bool)
    x = jnp.concatenate([visual.astype(text.dtype), text], axis=1)
    mask = jnp.concatenate([mask, prompt != ul2_lib.PAD_ID], axis=1)
    return self.ul2.encode_embeddings(x, mask), mask

  def __call__(self, image_tokens: jax.Array, prompt: jax.Array, decoder_inputs: jax.Array,
               causal: bool = True) -> jax.Array:
    """Teacher-forced logits [B, L, vocab] float32."""
    encoded, mask = self.encode(image_tokens, prompt)
    return self.ul2.decode(decoder_inputs, encoded, mask, causal=causal)


def locca_loss(logits_fn, image_tokens: jax.Array, prompt: jax.Array, targets: jax.Array,
               parallel_fraction: float) -> tuple[jax.Array, dict]:
  """Token cross-entropy of the decoder on targets [B, L] (0 = padding): the first round(fraction * B) rows
  predicted in parallel from mask tokens, the rest teacher-forced causally. Returns (loss, metrics).

  logits_fn(image_tokens, prompt, decoder_inputs, causal) -> logits: the decoder (LocCaDecoder.__call__ bound
  to its parameters).
  """
  b = targets.shape[0]
  parallel = int(round(parallel_fraction * b))
  weights = targets != ul2_lib.PAD_ID
  logits = []
  if parallel:
    masks = jnp.where(weights[:parallel], MASK_ID, ul2_lib.PAD_ID).astype(targets.dtype)
    logits.append(logits_fn(image_tokens[:parallel], prompt[:parallel], masks, False))
  if parallel < b:
    logits.append(logits_fn(image_tokens[parallel:], prompt[parallel:], ul2_lib.shift_right(targets[parallel:]),
                            True))
  loss, metrics = ul2_lib.cross_entropy(jnp.concatenate(logits), targets, weights)
  return loss, {"locca_token_accuracy": metrics["accuracy"]}


__all__ = ["MASK_ID", "LocCa", "LocCaDecoder", "locca_loss"]
