"""UL2 / T5 v1.1 encoder-decoder: the language half of PaLI-3.

Pre-norm blocks with RMSNorm and no biases anywhere, gated MLPs (SiLU for UL2, tanh-GELU for T5 v1.1),
unscaled attention logits (the 1/sqrt(d) is folded into the query's initialisation) and T5's relative
position buckets: one bias table per stack, bidirectional in the encoder and causal in the decoder. The
token embedding is shared by the encoder and the decoder; the output projection is its own `logits_dense`
or, when tied, the embedding table itself (the original T5 also scales the decoder output by d_model^-0.5
first, since the table's entries are O(1); `scale_decoder_outputs`).

Parameter names follow T5X / flaxformer (token_embedder, encoder/layers_0/attention/query/kernel, ...);
vlm.ul2_checkpoints maps HF's names onto them. With `scan` each stack's layers are one subtree `layers` whose
parameters lead with a layer axis (vlm.checkpoints.stack_layers(tree, "layers") converts). `load(path)` gives
the DESIGN contract's `logits` and `generate`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np

from vlm import base_model
from vlm import decoding
from vlm import layers

PAD_ID = 0  # also the decoder's start token, as in T5
EOS_ID = 1

ACTIVATIONS = {"silu": jax.nn.silu, "gelu": functools.partial(jax.nn.gelu, approximate=True), "relu": jax.nn.relu}


@dataclasses.dataclass(frozen=True)
class UL2Config:
  """Geometry of the encoder-decoder. Defaults are T5 v1.1 / UL2 conventions."""
  vocab_size: int = 32128
  d_model: int = 512
  num_heads: int = 6
  head_dim: int = 64
  d_ff: int = 1024
  num_encoder_layers: int = 8
  num_decoder_layers: int = 8
  activation: str = "silu"  # gated: 'silu' (UL2), 'gelu' (T5 v1.1, tanh approximation) or 'relu'
  num_buckets: int = 32  # relative position buckets per stack
  max_distance: int = 128
  tie_embeddings: bool = False  # the output projection is the token embedding table
  scale_decoder_outputs: bool = False  # x d_model^-0.5 before the logits (original T5, with tied embeddings)
  eps: float = 1e-6
  dtype: str = "float32"  # compute dtype; parameters stay float32
  remat: str = "none"  # per layer: one of layers.REMAT_POLICIES
  scan: bool = False  # each stack one nn.scan over its layers (parameters stacked along 'layers'): compile
                      # time flat in depth
  eos_id: int = EOS_ID  # where decoding stops (HF's eos_token_id)
  start_id: int = PAD_ID  # the token decoding starts from (HF's decoder_start_token_id)

  def __post_init__(self):
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"UL2 activation={self.activation!r} is not one of {sorted(ACTIVATIONS)}")
    check_token_id(self.start_id, self.vocab_size, "decoder start token",
                   "the UL2 config's start_id (gin: vlm.ul2.config.start_id)")
    check_token_id(self.eos_id, self.vocab_size, "end-of-sequence token",
                   "the UL2 config's eos_id (gin: vlm.ul2.config.eos_id)")

  def to_json(self) -> dict:
    return {"model": "ul2", **dataclasses.asdict(self)}

  @classmethod
  def from_json(cls, obj: dict) -> "UL2Config":
    return cls(**{k: v for k, v in obj.items() if k != "model"})


def check_token_id(token: int, vocab_size: int, what: str, where: str) -> None:
  """A start token outside the embedding table would be embedded as garbage (JAX clamps or fills the lookup);
  an end token outside it could never be generated, so decoding would never stop."""
  if isinstance(token, bool) or not isinstance(token, (int, np.integer)) or not 0 <= token < vocab_size:
    raise ValueError(f"{what} {token!r} is outside the vocabulary [0, {vocab_size}); set {where} "
                     f"to a token id below {vocab_size} (T5's {'start is 0' if 'start' in what else 'EOS is 1'})")


# Reference sizes (T5 v1.1 small / base; the UL2 3B of PaLI-3 in DESIGN.md) and tiny ones for tests.
SIZES = {
    "pico": dict(d_model=32, num_heads=2, head_dim=16, d_ff=64, num_encoder_layers=2, num_decoder_layers=2),
    "tiny": dict(d_model=128, num_heads=4, head_dim=32, d_ff=256, num_encoder_layers=2, num_decoder_layers=2),
    "small": dict(d_model=512, num_heads=6, head_dim=64, d_ff=1024, num_encoder_layers=8, num_decoder_layers=8),
    "base": dict(d_model=768, num_heads=12, head_dim=64, d_ff=2048, num_encoder_layers=12,
                 num_decoder_layers=12),
    "3B": dict(d_model=2048, num_heads=32, head_dim=64, d_ff=5120, num_encoder_layers=24,
               num_decoder_layers=24),
}


@gin.configurable(module="vlm.ul2")
def config(size: str = "small", **overrides) -> UL2Config:
  """A UL2Config by size name ('pico', 'tiny', 'small', 'base', '3B'), with any field overridden."""
  if size not in SIZES:
    raise ValueError(f"unknown UL2 size {size!r}; choose one of {', '.join(SIZES)}")
  return UL2Config(**{**SIZES[size], **overrides})


# Sub-module factories; `name` stays None inside setup(), where flax names a module by its attribute.
def _attention(cfg: UL2Config, name: str | None = None) -> layers.MultiHeadAttention:
  return layers.MultiHeadAttention(cfg.num_heads, cfg.d_model, head_dim=cfg.head_dim, use_bias=False,
                                   scale_logits=False, dtype=cfg.dtype, name=name)


def _norm(cfg: UL2Config, name: str | None = None) -> layers.RMSNorm:
  return layers.rms_norm(cfg.eps, dtype=cfg.dtype, name=name)


def _mlp(cfg: UL2Config, name: str | None = None) -> layers.GatedMlp:
  return layers.GatedMlp(cfg.d_ff, ACTIVATIONS[cfg.activation], dtype=cfg.dtype, name=name)


def _scanned(layer_cls: type[nn.Module], depth: int, **scan_kw) -> type[nn.Module]:
  """layer_cls as one nn.scan over `depth` layers whose parameters stack along a leading 'layers' axis."""
  return nn.scan(layer_cls, variable_axes={"params": 0}, split_rngs={"params": True}, length=depth,
                 metadata_params={nn.PARTITION_NAME: "layers"}, **scan_kw)


class EncoderLayer(nn.Module):
  config: UL2Config
  scanned: bool = False  # under nn.scan the layer returns (x, None)

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, bias: jax.Array) -> jax.Array:
    """x: [batch, len, d_model]; mask: [batch, 1, 1, len] over keys; bias: [1, heads, len, len]."""
    cfg = self.config
    x = layers.constrain(x, ("batch", "length", "embed"))
    y = _norm(cfg, "pre_attention_layer_norm")(x)
    x = x + _attention(cfg, "attention")(y, y, mask=mask, bias=bias)
    x = x + _mlp(cfg, "mlp")(_norm(cfg, "pre_mlp_layer_norm")(x))
    return (x, None) if self.scanned else x


class DecoderLayer(nn.Module):
  """Causal self-attention, cross-attention over the encoder, gated MLP; full-sequence or one cached step."""
  config: UL2Config

  def setup(self):
    cfg = self.config
    self.pre_self_attention_layer_norm = _norm(cfg)
    self.self_attention = _attention(cfg)
    self.pre_cross_attention_layer_norm = _norm(cfg)
    self.encoder_decoder_attention = _attention(cfg)
    self.pre_mlp_layer_norm = _norm(cfg)
    self.mlp = _mlp(cfg)

  def __call__(self, x, encoded, self_mask, cross_mask, bias):
    """x: [batch, len, d]; encoded: [batch, enc_len, d]; masks and bias broadcastable to the logits."""
    x = layers.constrain(x, ("batch", "length", "embed"))
    y = self.pre_self_attention_layer_norm(x)
    x = x + self.self_attention(y, y, mask=self_mask, bias=bias)
    x = x + self.encoder_decoder_attention(self.pre_cross_attention_layer_norm(x), encoded, mask=cross_mask)
    return x + self.mlp(self.pre_mlp_layer_norm(x))

  def cross_kv(self, encoded: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Keys and values over the encoder output, computed once per decoded batch."""
    return self.encoder_decoder_attention.project_kv(encoded)

  def decode_step(self, x, index, self_cache, cross_kv, self_mask, cross_mask, bias):
    """x: [batch, 1, d] at position `index`; returns (x, updated self-attention cache)."""
    y = self.pre_self_attention_layer_norm(x)
    y, self_cache = self.self_attention.decode_step(y, self_cache, index, mask=self_mask, bias=bias)
    x = x + y
    x = x + self.encoder_decoder_attention.attend(self.pre_cross_attention_layer_norm(x), *cross_kv,
                                                  mask=cross_mask)
    return x + self.mlp(self.pre_mlp_layer_norm(x)), self_cache


class ScannedDecoderLayer(DecoderLayer):
  """A DecoderLayer in nn.scan's form: every method maps (carry, per-layer inputs, shared inputs) to (carry,
  per-layer outputs), so one scan (per-layer arguments along axis 1, behind the batch) serves all three."""

  def __call__(self, x, per_layer, shared):
    del per_layer  # teacher forcing reads only the shared (encoded, self_mask, cross_mask, bias)
    return super().__call__(x, *shared), None

  def scan_cross_kv(self, carry, per_layer, encoded):
    del per_layer
    return carry, self.cross_kv(encoded)

  def scan_decode_step(self, x, per_layer, shared):
    self_cache, cross_kv = per_layer
    index, self_mask, cross_mask, bias = shared
    return self.decode_step(x, index, self_cache, cross_kv, self_mask, cross_mask, bias)


class Encoder(nn.Module):
  """Relative-position-biased bidirectional stack over input embeddings (tokens or PaLI's image+text)."""
  config: UL2Config

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    """x: [batch, len, d_model] embeddings; mask: bool [batch, len], True on real positions."""
    cfg = self.config
    length = x.shape[1]
    bias = layers.RelativePositionBias(cfg.num_heads, cfg.num_buckets, cfg.max_distance, bidirectional=True,
                                       name="relpos_bias")(length, length)
    key_mask = mask[:, None, None, :]
    layer_cls = layers.remat_block(EncoderLayer, cfg.remat, cfg.scan)
    if cfg.scan and cfg.num_encoder_layers:  # LocCa's has none: no empty stacked arrays in its checkpoints
      stack = _scanned(layer_cls, cfg.num_encoder_layers, in_axes=nn.broadcast)
      x, _ = stack(cfg, scanned=True, name="layers")(x, key_mask, bias)
    else:
      for i in range(cfg.num_encoder_layers):
        x = layer_cls(cfg, name=f"layers_{i}")(x, key_mask, bias)
    return _norm(cfg, "encoder_norm")(x)


class Decoder(nn.Module):
  """The causal stack and the output logits; `__call__` for teacher forcing, `decode_step` for one token.

  Scanned, the decoding state stacks the layers' caches along axis 1 (decoding wants the batch first).
  """
  config: UL2Config

  def setup(self):
    cfg = self.config
    self.relpos_bias = layers.RelativePositionBias(cfg.num_heads, cfg.num_buckets, cfg.max_distance,
                                                   bidirectional=False)
    if cfg.scan:
      layer_cls = layers.remat_block(ScannedDecoderLayer, cfg.remat, under_scan=True)
      self.layers = _scanned(layer_cls, cfg.num_decoder_layers, in_axes=(1, nn.broadcast), out_axes=1,
                             methods=["__call__", "scan_cross_kv", "scan_decode_step"])(cfg)
    else:
      layer_cls = layers.remat_block(DecoderLayer, cfg.remat)
      self.layers = [layer_cls(cfg) for _ in range(cfg.num_decoder_layers)]  # named layers_0, layers_1, ...
    self.decoder_norm = _norm(cfg)
    if not cfg.tie_embeddings:
      self.logits_dense = layers.dense(cfg.vocab_size, ("embed", "vocab"), use_bias=False, dtype=cfg.dtype,
                                       kernel_init=nn.initializers.variance_scaling(1.0, "fan_in", "normal"))

  def __call__(self, y: jax.Array, encoded: jax.Array, encoder_mask: jax.Array,
               embedder: nn.Embed, causal: bool = True) -> jax.Array:
    """y: [batch, len, d] embedded decoder inputs -> logits [batch, len, vocab] (float32).

    causal=False lets every position see every other (parallel prediction: CapPa, LocCa)."""
    length = y.shape[1]
    bias = self.relpos_bias(length, length)
    self_mask = jnp.tril(jnp.ones((length, length), bool))[None, None] if causal else None
    cross_mask = encoder_mask[:, None, None, :]
    if self.config.scan:
      y, _ = self.layers(y, None, (encoded, self_mask, cross_mask, bias))
    else:
      for layer in self.layers:
        y = layer(y, encoded, self_mask, cross_mask, bias)
    return self._logits(self.decoder_norm(y), embedder)

  def _logits(self, y: jax.Array, embedder: nn.Embed, tied_head: jax.Array | None = None) -> jax.Array:
    if self.config.scale_decoder_outputs:
      y = y * jnp.asarray(self.config.d_model ** -0.5, y.dtype)
    if tied_head is not None:
      logits = y @ tied_head.astype(y.dtype)
    elif self.config.tie_embeddings:
      logits = embedder.attend(y)
    else:
      logits = self.logits_dense(y)
    return layers.constrain(logits.astype(jnp.float32), ("batch", "length", "vocab"))

  def init_cache(self, encoded: jax.Array, encoder_mask: jax.Array, max_decode_len: int) -> dict:
    """Decoding state: per layer the cross-attention keys/values and an empty self-attention cache."""
    cfg = self.config
    batch = encoded.shape[0]
    if cfg.scan:  # (keys, values), each [batch, layers, heads, len, head_dim]
      empty = jnp.zeros((batch, cfg.num_decoder_layers, cfg.num_heads, max_decode_len, cfg.head_dim), cfg.dtype)
      return {"encoder_mask": encoder_mask, "cross": self.layers.scan_cross_kv(None, None, encoded)[1],
              "self": (empty, empty)}
    empty = jnp.zeros((batch, cfg.num_heads, max_decode_len, cfg.head_dim), cfg.dtype)
    return {"encoder_mask": encoder_mask,
            "cross": [layer.cross_kv(encoded) for layer in self.layers],
            "self": [(empty, empty) for _ in self.layers]}

  def decode_step(self, y: jax.Array, index: jax.Array, state: dict, embedder: nn.Embed,
                  tied_head: jax.Array | None = None):
    """y: [batch, 1, d], the embedded token at position `index` -> (logits [batch, vocab], new state).

    tied_head: UL2.tied_head(), or None to use the embedding table as it is stored.
    """
    max_len = jax.tree.leaves(state["self"])[0].shape[-2]
    bias = self.relpos_bias(1, max_len, q_offset=index)
    self_mask = (jnp.arange(max_len) <= index)[None, None, None, :]
    cross_mask = state["encoder_mask"][:, None, None, :]
    if self.config.scan:
      y, new_self = self.layers.scan_decode_step(y, (state["self"], state["cross"]),
                                                 (index, self_mask, cross_mask, bias))
    else:
      new_self = []
      for layer, cache, cross in zip(self.layers, state["self"], state["cross"]):
        y, cache = layer.decode_step(y, index, cache, cross, self_mask, cross_mask, bias)
        new_self.append(cache)
    logits = self._logits(self.decoder_norm(y), embedder, tied_head)[:, 0]
    return logits, {**state, "self": new_self}


class UL2(nn.Module):
  """Token embedder + encoder + decoder. Methods are the pieces PaLI and decoding call separately."""
  config: UL2Config

  def setup(self):
    cfg = self.config
    self.token_embedder = layers.embed(cfg.vocab_size, cfg.d_model, dtype=cfg.dtype)
    self.encoder = Encoder(cfg)
    self.decoder = Decoder(cfg)

  def __call__(self, encoder_input_tokens: jax.Array, decoder_input_tokens: jax.Array) -> jax.Array:
    """[batch, enc_len], [batch, dec_len] int32 (0 = padding) -> logits [batch, dec_len, vocab] float32."""
    encoded, mask = self.encode(encoder_input_tokens)
    return self.decode(decoder_input_tokens, encoded, mask)

  def embed_tokens(self, tokens: jax.Array) -> jax.Array:
    return self.token_embedder(tokens)

  def encode(self, encoder_input_tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Token ids -> (encoded [batch, len, d], mask [batch, len]); padding (id 0) is masked out."""
    mask = encoder_input_tokens != PAD_ID
    return self.encode_embeddings(self.embed_tokens(encoder_input_tokens), mask), mask

  def encode_embeddings(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    """Already embedded inputs (PaLI's visual tokens + prompt) [batch, len, d] -> encoded."""
    return self.encoder(x, mask)

  def decode(self, decoder_input_tokens, encoded, encoder_mask, causal: bool = True) -> jax.Array:
    """Teacher-forced decoder: logits [batch, dec_len, vocab] float32 (causal=False: parallel prediction)."""
    return self.decoder(self.embed_tokens(decoder_input_tokens), encoded, encoder_mask, self.token_embedder,
                        causal)

  def init_cache(self, encoded, encoder_mask, max_decode_len: int) -> dict:
    return self.decoder.init_cache(encoded, encoder_mask, max_decode_len)

  def tied_head(self) -> jax.Array | None:
    """The tied output projection as [d_model, vocab] (the embedding table transposed); None when untied.

    Decoding computes it once per batch and hands it to every step: a step's logits are then a plain
    [batch, d_model] x [d_model, vocab] product, which XLA:CPU's matmul (decoding.jit) runs ~3x faster at
    batch 8 than the product against the [vocab, d_model] table as stored (measured).
    """
    return self.token_embedder.embedding.T if self.config.tie_embeddings else None

  def decode_step(self, token_ids: jax.Array, index: jax.Array, state: dict, tied_head: jax.Array | None = None):
    """token_ids: [batch] at position `index` -> (logits [batch, vocab], state); see vlm.decoding."""
    return self.decoder.decode_step(self.embed_tokens(token_ids[:, None]), index, state, self.token_embedder,
                                    tied_head)


# ------------------------------------------------------------------------------------------------ loss

def shift_right(targets: jax.Array | np.ndarray) -> jax.Array:
  """Decoder inputs from targets: the start token (0) then the targets without their last position."""
  targets = jnp.asarray(targets)
  return jnp.pad(targets, ((0, 0), (1, 0)))[:, :-1]


def cross_entropy(logits: jax.Array, targets: jax.Array, weights: jax.Array, *, label_smoothing: float = 0.0,
                  z_loss: float = 0.0) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Token-averaged cross-entropy with label smoothing and z-loss (T5X's formulation).

  Label smoothing spreads `label_smoothing` over the other vocab-1 tokens; the loss subtracts the entropy of
  that smoothed target, so a perfect prediction scores 0 whatever the smoothing. z-loss adds
  z_loss * log(Z)^2, which keeps the softmax normaliser near 1 (stabilises bf16 training).

  Args:
    logits: [batch, len, vocab] float32.
    targets: [batch, len] int32.
    weights: [batch, len], 0 on padding.

  Returns:
    (mean loss over weighted tokens, {'z_loss', 'accuracy', 'tokens'} metrics).
  """
  vocab = logits.shape[-1]
  confidence = 1.0 - label_smoothing
  low = label_smoothing / (vocab - 1)
  log_z = jax.nn.logsumexp(logits, axis=-1)
  log_probs = logits - log_z[..., None]
  target_log_prob = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  if label_smoothing:
    normaliser = -(confidence * np.log(confidence) + (vocab - 1) * low * np.log(low + 1e-20))
    token_loss = -(confidence - low) * target_log_prob - low * log_probs.sum(-1) - normaliser
  else:
    token_loss = -target_log_prob
  z_term = z_loss * jnp.square(log_z)
  weights = weights.astype(jnp.float32)
  total = jnp.maximum(weights.sum(), 1.0)
  loss = ((token_loss + z_term) * weights).sum() / total
  correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
  return loss, {"z_loss": (z_term * weights).sum() / total, "accuracy": (correct * weights).sum() / total,
                "tokens": weights.sum()}


def sequence_log_likelihood(logits: jax.Array, targets: jax.Array, weights: jax.Array) -> jax.Array:
  """Sum of log p(target) over weighted positions: [batch] (T5X's score_batch)."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  token = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  return (token * weights).sum(-1)


# --------------------------------------------------------------------------------- the trainer's model

@gin.configurable(module="vlm.ul2")
class UL2Model(base_model.BaseModel):
  """The trainer interface over a text-only UL2 (the UL2 stage-0 denoising run, T5 fine-tuning).

  Batches hold T5X's encoder-decoder features: encoder_input_tokens, decoder_target_tokens and optionally
  decoder_input_tokens (else the targets shifted right) and decoder_loss_weights (else targets != 0).
  """

  FEATURE_CONVERTER_CLS = base_model.LazyClass("seqio", "EncDecFeatureConverter")  # (packing allowed)

  def __init__(self, ul2: UL2Config = gin.REQUIRED, label_smoothing: float = 0.0, z_loss: float = 1e-4):
    self.config = ul2
    self.module = UL2(ul2)
    self.label_smoothing = label_smoothing
    self.z_loss = z_loss

  def init_variables(self, rng: jax.Array, batch: dict) -> dict:
    enc = jnp.ones((1,) + tuple(batch["encoder_input_tokens"].shape[1:]), jnp.int32)
    dec = jnp.ones((1,) + tuple(batch["decoder_target_tokens"].shape[1:]), jnp.int32)
    return self.module.init(rng, enc, dec)

  def loss_fn(self, params, batch: dict, rng: jax.Array | None = None):
    del rng  # no dropout
    targets, decoder_inputs, weights = decoder_features(batch)
    logits = self.module.apply({"params": params}, batch["encoder_input_tokens"], decoder_inputs)
    return cross_entropy(logits, targets, weights, label_smoothing=self.label_smoothing, z_loss=self.z_loss)

  def score_batch(self, params, batch: dict) -> jax.Array:
    targets, decoder_inputs, weights = decoder_features(batch)
    logits = self.module.apply({"params": params}, batch["encoder_input_tokens"], decoder_inputs)
    return sequence_log_likelihood(logits, targets, weights)

  def predict_batch(self, params, batch: dict, *, max_decode_len: int, method: str = "greedy",
                    **options) -> decoding.DecodeResult:
    return generate(self.module, params, batch["encoder_input_tokens"], max_decode_len=max_decode_len,
                    method=method, **options)

  def config_json(self) -> dict:
    return self.config.to_json()


def decoder_features(batch: dict) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(targets, decoder inputs, loss weights) of a batch, filling T5X's defaults for the optional ones."""
  targets = batch["decoder_target_tokens"]
  decoder_inputs = batch.get("decoder_input_tokens")
  if decoder_inputs is None:
    decoder_inputs = shift_right(targets)
  weights = batch.get("decoder_loss_weights")
  if weights is None:
    weights = targets != PAD_ID
  return targets, decoder_inputs, weights


def generate_from_encoded(module: UL2, params, encoded: jax.Array, encoder_mask: jax.Array, *,
                          max_decode_len: int, method: str = "greedy", **options) -> decoding.DecodeResult:
  """Decodes from an encoder output (the encoder runs once per batch; PaLI passes its own)."""
  variables = {"params": params}
  state = module.apply(variables, encoded, encoder_mask, max_decode_len, method=UL2.init_cache)
  tied_head = module.apply(variables, method=UL2.tied_head)

  def tokens_to_logits(token_ids, index, state):
    return module.apply(variables, token_ids, index, state, tied_head, method=UL2.decode_step)

  options = {"eos_id": module.config.eos_id, "start_id": module.config.start_id, **options}
  check_token_id(options["start_id"], module.config.vocab_size, "decoder start token", "the start_id option")
  check_token_id(options["eos_id"], module.config.vocab_size, "end-of-sequence token", "the eos_id option")
  return decoding.decode(tokens_to_logits, state, method=method, max_decode_len=max_decode_len, **options)


def generate(module: UL2, params, encoder_input_tokens: jax.Array, *, max_decode_len: int,
             method: str = "greedy", **options) -> decoding.DecodeResult:
  encoded, mask = module.apply({"params": params}, encoder_input_tokens, method=UL2.encode)
  return generate_from_encoded(module, params, encoded, mask, max_decode_len=max_decode_len, method=method,
                               **options)


# ------------------------------------------------------------------------------------------- load()

class LoadedUL2:
  """A loaded UL2 / T5: `logits(encoder_ids, decoder_input_ids)` and `generate(encoder_ids, ...)`."""

  def __init__(self, config: UL2Config, params):
    self.config = config
    # On the device once: numpy parameters would be copied in on every call (240 MB for T5-small).
    self.params = jax.device_put(params)
    self.module = UL2(config)
    self._logits = jax.jit(lambda p, e, d: self.module.apply({"params": p}, e, d))
    self._generate = decoding.jit(
        lambda p, e, opts, rng: generate(self.module, p, e, **dict(opts), **({} if rng is None else {"rng": rng})),
        static_argnums=(2,))

  def logits(self, encoder_ids, decoder_input_ids) -> np.ndarray:
    """[N, L_enc], [N, L_dec] int (0 = padding in the encoder; the decoder starts with 0) -> [N, L_dec, V]."""
    enc = _check_ids(encoder_ids, "encoder_ids", self.config.vocab_size)
    dec = _check_ids(decoder_input_ids, "decoder_input_ids", self.config.vocab_size, allow_empty=True)
    if enc.shape[0] != dec.shape[0]:
      raise ValueError(f"encoder_ids has {enc.shape[0]} rows but decoder_input_ids has {dec.shape[0]}")
    if dec.size == 0:  # no rows or no decoder positions: nothing to run
      return np.zeros(dec.shape + (self.config.vocab_size,), np.float32)
    return np.asarray(self._logits(self.params, enc, dec), np.float32)

  def generate(self, encoder_ids, max_new_tokens: int, method: str = "greedy", seed: int = 0,
               **opts) -> np.ndarray:
    """Decodes up to max_new_tokens per row -> [N, L] int32, without the start token, 0 after EOS.

    As HF's generate, L is the longest row's length (through its EOS), so max_new_tokens only when a row
    runs that long. method: 'greedy', 'beam' (beam_size, alpha) or 'sample' (temperature, top_k, top_p;
    `seed`, an int).
    """
    enc = _check_ids(encoder_ids, "encoder_ids", self.config.vocab_size)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
      raise ValueError(f"max_new_tokens must be an integer >= 1; got {max_new_tokens!r}")
    if "rng" in opts:
      raise ValueError("generate takes seed=<int> for sampling, not rng")
    for name, value in opts.items():
      if not isinstance(value, (int, float, str, np.integer, np.floating)):
        raise ValueError(f"generate option {name}={value!r} must be a number")
    if enc.shape[0] == 0:  # no rows, so no longest row either
      return np.zeros((0, 0), np.int32)
    options = tuple(sorted({"max_decode_len": int(max_new_tokens), "method": method, **opts}.items()))
    rng = jax.random.key(seed) if method == "sample" else None
    tokens = np.asarray(self._generate(self.params, enc, options, rng).tokens, np.int32)
    is_eos = tokens == opts.get("eos_id", self.config.eos_id)
    lengths = np.where(is_eos.any(axis=1), is_eos.argmax(axis=1) + 1, tokens.shape[1])
    return tokens[:, :lengths.max()]


def _check_ids(ids, name: str, vocab_size: int, allow_empty: bool = False) -> np.ndarray:
  ids = np.asarray(ids)
  if ids.ndim != 2 or not (np.issubdtype(ids.dtype, np.integer) or (ids.size == 0 and ids.dtype == np.float64)):
    raise ValueError(f"{name} must be an integer array [N, L]; got {ids.dtype} of shape {ids.shape}")
  if ids.shape[0] and not ids.shape[1] and not allow_empty:
    raise ValueError(f"{name} has no tokens (shape {ids.shape}); give each row at least one")
  if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
    raise ValueError(f"{name} holds token ids outside the vocabulary [0, {vocab_size})")
  return ids.astype(np.int32)


def abstract_params(config: UL2Config) -> Any:
  """Parameter shapes of a UL2 without allocating it."""
  boxed = jax.eval_shape(UL2(config).init, jax.random.key(0), jnp.ones((1, 2), jnp.int32),
                         jnp.ones((1, 2), jnp.int32))["params"]
  return nn.meta.unbox(boxed)


def load(path: str | os.PathLike) -> LoadedUL2:
  """Loads a HF T5ForConditionalGeneration directory or a project MODEL_DIR (model 'ul2')."""
  from vlm import ul2_checkpoints  # pylint: disable=import-outside-toplevel
  config, params = ul2_checkpoints.read(os.fspath(path))
  return LoadedUL2(config, params)
