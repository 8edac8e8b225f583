"""PaLI-3: a SigLIP ViT's patch tokens, linearly projected, as the prefix of a UL2 encoder's input.

  image(s) [B, (N,) H, W, 3] -> ViT (no pooling) -> [B, N*T, vit_width] -> img_projection -> [B, N*T, d_model]
  prompt tokens [B, L] -> UL2 token embedding -> [B, L, d_model]
  concat -> UL2 encoder (full attention, text padding masked) -> decoder -> answer tokens

Several images per example (video frames) concatenate their tokens in order. With a NaFlex encoder (SigLIP 2)
the image comes as patches at its native aspect ratio ('patches', 'patch_mask', 'spatial_shapes' in place of
'image', encoders.vit.PATCH_FEATURES) and the padding patches are masked in the UL2 encoder too, as prompt
padding is. The ViT can be frozen per stage
(`vlm.optim.freeze`, by parameter path), warm-started from a SigLIP checkpoint and the UL2 from a T5/UL2 one.
`PaLIModel` is the trainer's interface: loss_fn, predict_batch (decoding), score_batch (log-likelihood).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np

from encoders import vit as vit_lib
from vlm import base_model
from vlm import checkpoints
from vlm import decoding
from vlm import layers
from vlm import ul2 as ul2_lib


@dataclasses.dataclass(frozen=True)
class PaLIConfig:
  vit: vit_lib.ViTConfig
  ul2: ul2_lib.UL2Config

  def __post_init__(self):
    if self.vit.pool_type != "none" or self.vit.head_dim is not None:
      raise ValueError("PaLI feeds the ViT's patch tokens to the UL2: build the ViT with pool_type='none' and "
                       "no head (encoders.vit.config(..., pool_type='none'))")

  def to_json(self) -> dict:
    return {"model": "pali", "vit": dataclasses.asdict(self.vit), "ul2": dataclasses.asdict(self.ul2)}

  @classmethod
  def from_json(cls, obj: dict) -> "PaLIConfig":
    return cls(vit=vit_lib.ViTConfig(**obj["vit"]), ul2=ul2_lib.UL2Config(**obj["ul2"]))


class PaLI(nn.Module):
  """Parameters: 'img' (the ViT, SigLIP's names), 'img_projection', 'ul2' (the encoder-decoder)."""
  config: PaLIConfig

  def setup(self):
    cfg = self.config
    self.img = vit_lib.ViT(cfg.vit)
    # (None, 'embed'): the ViT width and d_model are both 'embed' to the rules; naming both would map two
    # dimensions of one kernel to the same mesh axis under FSDP. The projection is small; replicate its input.
    self.img_projection = layers.dense(cfg.ul2.d_model, (None, "embed"), dtype=cfg.ul2.dtype)
    self.ul2 = ul2_lib.UL2(cfg.ul2)

  def __call__(self, images: jax.Array | None, encoder_input_tokens: jax.Array, decoder_input_tokens: jax.Array,
               **patch_inputs) -> jax.Array:
    """Teacher-forced logits [batch, dec_len, vocab] float32."""
    encoded, mask = self.encode(images, encoder_input_tokens, **patch_inputs)
    return self.ul2.decode(decoder_input_tokens, encoded, mask)

  def encode(self, images: jax.Array | None, encoder_input_tokens: jax.Array,
             **patch_inputs) -> tuple[jax.Array, jax.Array]:
    """images [B, H, W, 3] or [B, N, H, W, 3] in [-1, 1], or None and NaFlex patches, mask and spatial_shapes
    (encoders.vit.ViT's keywords); prompt [B, L] (0 = padding).

    Returns (encoded [B, V + L, d_model], mask [B, V + L]) with V the visual tokens (N*T, or the patch budget P).
    NaFlex padding moves to the end, behind the prompt, and is masked: each example reads as its own patches
    then its prompt, so T5's relative positions between them, and every output, do not depend on the padding.
    """
    if images is None:
      visual = self.img(**patch_inputs)["tokens"]  # [B, P, vit_width]
      visual_mask = patch_inputs["mask"].astype(bool)
    else:
      size = self.config.vit.image_size
      if images.shape[-3:-1] != (size, size):
        raise ValueError(f"images are {images.shape[-3]}x{images.shape[-2]} but this PaLI's ViT takes {size}x{size} "
                         "(its position-embedding grid); resize them first (vlm.infer --resize squash|pad does)")
      batch = images.shape[0]
      frames = images.reshape((-1,) + images.shape[-3:])  # [B*N, H, W, 3]
      visual = self.img(frames)["tokens"]  # [B*N, T, vit_width]
      visual = visual.reshape(batch, -1, visual.shape[-1])
      visual_mask = jnp.ones(visual.shape[:2], bool)
    visual = self.img_projection(visual)  # [B, V, d_model]
    text = self.ul2.embed_tokens(encoder_input_tokens)  # [B, L, d_model]
    x = jnp.concatenate([visual.astype(text.dtype), text], axis=1)
    mask = jnp.concatenate([visual_mask, encoder_input_tokens != ul2_lib.PAD_ID], axis=1)
    if images is None:
      x, mask = _padding_last(x, mask, jnp.sum(visual_mask, axis=1), visual.shape[1])
    return self.ul2.encode_embeddings(x, mask), mask


@gin.configurable(module="vlm.model")
class PaLIModel(base_model.BaseModel):
  """The trainer's interface over PaLI (vlm.base_model.BaseModel).

  Batches hold 'image' and T5X's encoder-decoder features: encoder_input_tokens (the prompt),
  decoder_target_tokens, optionally decoder_input_tokens and decoder_loss_weights (see ul2.decoder_features).

  Args:
    vit: the image tower (pool_type 'none').
    ul2: the encoder-decoder.
    label_smoothing, z_loss: of the token cross-entropy.
    siglip_checkpoint: warm-start the ViT from this SigLIP checkpoint (HF, big_vision .npz or a MODEL_DIR;
      the position embedding is resized to this ViT's grid).
    ul2_checkpoint: warm-start the UL2 from this T5 / UL2 checkpoint (HF directory or a MODEL_DIR).
    pali_checkpoint: warm-start everything from an earlier stage's PaLI MODEL_DIR (the resolution-raising
      stages: the position embedding is resized to this ViT's grid).
    max_decode_len, decode_method, decode_options: what predict_batch uses unless told otherwise.
    vocabulary: the run's vocabulary (with to_json()); recorded in model_config.json so `vlm.infer` can
      tokenise prompts and print answers from the checkpoint alone.
    prompt_length: the prompt tokens the model was trained with (TASK_FEATURE_LENGTHS['inputs']); recorded
      for inference, which pads prompts to it and refuses (or truncates) longer ones.
    patch_budget: for a NaFlex model, the patches an image gets (TASK_FEATURE_LENGTHS['patches'], the largest
      if it varies); recorded so that inference cuts images the same way. None: images are squashed squares.
  """

  FEATURE_CONVERTER_CLS = base_model.LazyClass("tasks.feature_converters", "MultimodalEncDecFeatureConverter")

  def __init__(self, vit: vit_lib.ViTConfig = gin.REQUIRED, ul2: ul2_lib.UL2Config = gin.REQUIRED,
               label_smoothing: float = 0.0, z_loss: float = 1e-4, siglip_checkpoint: str | None = None,
               ul2_checkpoint: str | None = None, pali_checkpoint: str | None = None, max_decode_len: int = 32, decode_method: str = "greedy",
               decode_options: dict | None = None, vocabulary: Any = None, prompt_length: int | None = None,
               patch_budget: int | None = None):
    self.config = PaLIConfig(vit=vit, ul2=ul2)
    self.module = PaLI(self.config)
    self.label_smoothing, self.z_loss = label_smoothing, z_loss
    self.siglip_checkpoint, self.ul2_checkpoint = siglip_checkpoint, ul2_checkpoint
    self.pali_checkpoint = pali_checkpoint
    self.max_decode_len, self.decode_method = max_decode_len, decode_method
    self.decode_options = dict(decode_options or {})
    ids = getattr(vocabulary, "vocab_size", None)
    if ids is not None and ids > ul2.vocab_size:  # ids past the table would gather clipped rows, silently
      raise ValueError(f"the vocabulary has {ids:,} ids but the UL2's embedding table {ul2.vocab_size:,} rows; "
                       "set vlm.ul2.config.vocab_size = @tasks.vocab.vocab_size() (or a larger table)")
    self.vocabulary, self.prompt_length = vocabulary, prompt_length
    self.patch_budget = max(patch_budget) if isinstance(patch_budget, (tuple, list)) else patch_budget

  def init_variables(self, rng: jax.Array, batch: dict) -> dict:
    prompt = jnp.ones((1,) + tuple(batch["encoder_input_tokens"].shape[1:]), jnp.int32)
    targets = jnp.ones((1,) + tuple(batch["decoder_target_tokens"].shape[1:]), jnp.int32)
    return self.module.init(rng, encoder_input_tokens=prompt, decoder_input_tokens=targets,
                            **_with_images(vit_lib.example_inputs(batch)))

  def _logits(self, params, batch):
    targets, decoder_inputs, weights = ul2_lib.decoder_features(batch)
    logits = self.module.apply({"params": params}, encoder_input_tokens=batch["encoder_input_tokens"],
                               decoder_input_tokens=decoder_inputs, **_with_images(vit_lib.image_inputs(batch)))
    return logits, targets, weights

  def loss_fn(self, params, batch: dict, rng: jax.Array | None = None):
    del rng  # no dropout
    logits, targets, weights = self._logits(params, batch)
    return ul2_lib.cross_entropy(logits, targets, weights, label_smoothing=self.label_smoothing,
                                 z_loss=self.z_loss)

  def score_batch(self, params, batch: dict) -> jax.Array:
    """Log-likelihood [batch] of the given targets (classification by scoring candidate answers)."""
    logits, targets, weights = self._logits(params, batch)
    return ul2_lib.sequence_log_likelihood(logits, targets, weights)

  def predict_batch(self, params, batch: dict, *, max_decode_len: int | None = None, method: str | None = None,
                    **options) -> decoding.DecodeResult:
    """Decodes answers for batch['image'] and batch['encoder_input_tokens']; the encoder runs once."""
    variables = {"params": params}
    encoded, mask = self.module.apply(variables, encoder_input_tokens=batch["encoder_input_tokens"],
                                      **_with_images(vit_lib.image_inputs(batch)), method=PaLI.encode)
    # From here it is the UL2's decoding, on the UL2's own parameters.
    return ul2_lib.generate_from_encoded(ul2_lib.UL2(self.config.ul2), params["ul2"], encoded, mask,
                                         max_decode_len=self.max_decode_len if max_decode_len is None else max_decode_len,
                                         method=method or self.decode_method, **{**self.decode_options, **options})

  def warm_start(self, params: Any) -> Any:
    """Replaces the ViT and/or UL2 parameters with the configured checkpoints' (host arrays, same tree).

    A checkpoint is refused, in one line naming the field, if its config computes another function with the
    same shapes (see `_VIT_FUNCTION_FIELDS`, `_UL2_FUNCTION_FIELDS`); its ViT blocks and UL2 layers are stacked
    or unstacked to this PaLI's `scan` layouts and its position embedding resized to this ViT's grid.
    """
    params = dict(params)
    if self.pali_checkpoint:
      params = pali_params_from_pali(self.pali_checkpoint, self.config, params)
    if self.siglip_checkpoint:
      params["img"] = vit_params_from_siglip(self.siglip_checkpoint, self.config.vit, params["img"])
    if self.ul2_checkpoint:
      params["ul2"] = ul2_params_from_checkpoint(self.ul2_checkpoint, self.config.ul2, params["ul2"])
    return params

  def warm_start_sources(self) -> dict[str, str]:
    """{part: checkpoint} of what warm_start loads: 'PaLI', 'ViT' and/or 'UL2' (the trainer names them)."""
    sources = {"PaLI": self.pali_checkpoint, "ViT": self.siglip_checkpoint, "UL2": self.ul2_checkpoint}
    return {part: str(path) for part, path in sources.items() if path}

  def detokenize(self, ids) -> str:
    """Text of decoded ids (0 padding dropped, stops at EOS); ids of the padded embedding table beyond the
    vocabulary read as unknown."""
    vocab = self.vocabulary
    return vocab.decode([i if i < vocab.vocab_size else vocab.unk_id for i in map(int, ids) if i != 0])

  def config_json(self) -> dict:
    out = self.config.to_json()
    if self.vocabulary is not None:
      out["vocabulary"] = self.vocabulary.to_json()
    if self.prompt_length is not None:
      out["prompt_length"] = self.prompt_length
    if self.patch_budget is not None:
      out["patch_budget"] = self.patch_budget
    out["max_decode_len"] = self.max_decode_len
    return out


def _padding_last(x: jax.Array, mask: jax.Array, real: jax.Array, visual: int) -> tuple[jax.Array, jax.Array]:
  """[patches (real first, then padding) ; prompt] -> [real patches ; prompt ; padding patches], per example.

  x [B, V + L, d], mask [B, V + L], real [B] patches of each example, visual = V.
  """
  total = x.shape[1]
  j = jnp.arange(total)[None, :]  # output position
  n = real[:, None]
  prompt = total - visual
  source = jnp.where(j < n, j, jnp.where(j < n + prompt, visual + j - n, j - prompt))  # [B, V + L]
  return jnp.take_along_axis(x, source[..., None], axis=1), jnp.take_along_axis(mask, source, axis=1)


def _with_images(inputs: dict) -> dict:
  """The ViT's inputs as PaLI's keywords: images=None beside NaFlex patches."""
  return inputs if "images" in inputs else {"images": None, **inputs}


def vocabulary_from_json(obj: dict):
  """The vocabulary a checkpoint recorded (sentencepiece, tasks.vocab).

  Raises:
    ValueError: it is the word-level vocabulary of the project's early tiny runs, retired with their data path.
  """
  if obj.get("type") == "words":
    raise ValueError("this checkpoint records the retired word-level scene vocabulary (tiny runs up to commit "
                     "76bff43); retrain it with the current gin files (sentencepiece, tasks.vocab)")
  from tasks import vocab  # pylint: disable=import-outside-toplevel  (imports TensorFlow via seqio)
  return vocab.PaliVocabulary.from_json(obj)


# Config fields that change what the same parameters compute, which the shapes check cannot see. Not here:
# dtype and remat (numerics, memory), scan (a layout, converted), image_size (the grid, resized), the UL2's
# eos_id / start_id (decoding settings; training feeds its own start token).
_VIT_FUNCTION_FIELDS = ("activation", "layer_norm_eps")
_UL2_FUNCTION_FIELDS = ("activation", "num_buckets", "max_distance", "tie_embeddings", "scale_decoder_outputs",
                        "eps")


def _check_same_function(theirs: Any, ours: Any, fields: tuple[str, ...], binding: str, source: str) -> None:
  """Refuses a checkpoint whose config differs from this PaLI's in a field of `fields`; `binding` is the gin
  configurable that sets them (encoders.vit.config, vlm.ul2.config)."""
  for field in fields:
    their, our = getattr(theirs, field), getattr(ours, field)
    if their != our:
      raise checkpoints.CheckpointError(
          f"{source} has {field}={their!r} where this PaLI has {our!r} (same shapes, another function); set "
          f"{binding}.{field} = {their!r} in the run's gin file, or warm-start from a matching checkpoint")


def _layout(tree: dict, scanned: bool, scan: bool, name: str) -> dict:
  """A tower whose layers `name`_i are stacked (scanned) or not, in the layout of a tower built with `scan`."""
  if scanned == scan:
    return tree
  return checkpoints.stack_layers(tree, name) if scan else checkpoints.unstack_layers(tree, name)


def pali_params_from_pali(path: str, config: PaLIConfig, current: Any) -> Any:
  """An earlier stage's PaLI parameters for this one: ViT and UL2 layouts converted, posemb resized to this
  grid."""
  previous, loaded = load(path)
  _check_same_function(previous.config.vit, config.vit, _VIT_FUNCTION_FIELDS, "encoders.vit.config", path)
  _check_same_function(previous.config.ul2, config.ul2, _UL2_FUNCTION_FIELDS, "vlm.ul2.config", path)
  loaded = dict(loaded)
  img = _layout(dict(loaded["img"]), previous.config.vit.scan, config.vit.scan, "encoderblock")
  loaded["img"] = _resize_posemb(img, previous.config.vit.grid, config.vit.grid)
  loaded["ul2"] = _layout(loaded["ul2"], previous.config.ul2.scan, config.ul2.scan, "layers")
  _check_same_tree(loaded, current, path)
  return loaded


def vit_params_from_siglip(path: str, vit: vit_lib.ViTConfig, current: Any) -> Any:
  """The image tower of a SigLIP checkpoint as PaLI's 'img': pooling head dropped, layout converted, posemb
  resized."""
  from encoders import siglip_checkpoints  # pylint: disable=import-outside-toplevel
  siglip_config, siglip_params = siglip_checkpoints.read(path)
  _check_same_function(siglip_config.image, vit, _VIT_FUNCTION_FIELDS, "encoders.vit.config", path)
  # The pooling head, and the mask token of masked prediction (a pretraining device), stay behind.
  img = {k: v for k, v in siglip_params["img"].items() if k not in ("MAPHead_0", "head", "mask_token")}
  img = _layout(img, siglip_config.image.scan, vit.scan, "encoderblock")
  img = _resize_posemb(img, siglip_config.image.grid, vit.grid)
  _check_same_tree(img, current, path)
  return img


def ul2_params_from_checkpoint(path: str, ul2: ul2_lib.UL2Config, current: Any) -> Any:
  """The parameters of a T5 / UL2 checkpoint (HF directory or MODEL_DIR) as PaLI's 'ul2', in its `scan`
  layout."""
  from vlm import ul2_checkpoints  # pylint: disable=import-outside-toplevel
  config, params = ul2_checkpoints.read(path)
  _check_same_function(config, ul2, _UL2_FUNCTION_FIELDS, "vlm.ul2.config", path)
  params = _layout(params, config.scan, ul2.scan, "layers")
  _check_same_tree(params, current, path)
  return params


def _resize_posemb(img: dict, old_grid: int, new_grid: int) -> dict:
  if old_grid != new_grid:
    img["pos_embedding"] = np.asarray(vit_lib.resize_posemb(img["pos_embedding"], (old_grid, old_grid),
                                                            (new_grid, new_grid)))
  return img


def _check_same_tree(loaded: Any, expected: Any, source: str) -> None:
  flat_loaded, flat_expected = checkpoints.flatten(loaded), checkpoints.flatten(expected)
  missing = sorted(set(flat_expected) - set(flat_loaded))
  if missing:
    raise checkpoints.CheckpointError(f"{source} lacks {missing[0]} (and {len(missing) - 1} more), which this "
                                      "PaLI configuration needs; check the tower sizes in the gin file")
  checkpoints.check_shapes(flat_expected, flat_loaded, source)


def read_model_config(path: str) -> dict:
  """model_config.json of a PaLI MODEL_DIR, or one CheckpointError saying why `path` is not one (cheap)."""
  return checkpoints.read_model_config(path, "pali")


def _model_from_json(meta: dict) -> PaLIModel:
  config = PaLIConfig.from_json(meta)
  vocabulary = vocabulary_from_json(meta["vocabulary"]) if "vocabulary" in meta else None
  return PaLIModel(vit=config.vit, ul2=config.ul2, vocabulary=vocabulary, prompt_length=meta.get("prompt_length"),
                   max_decode_len=meta.get("max_decode_len", 32), patch_budget=meta.get("patch_budget"))


def _abstract_params(model: PaLIModel) -> Any:
  size = model.config.vit.image_size
  return nn.meta.unbox(jax.eval_shape(
      model.init_variables, jax.random.key(0),
      {"image": jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32),
       "encoder_input_tokens": jax.ShapeDtypeStruct((1, 2), jnp.int32),
       "decoder_target_tokens": jax.ShapeDtypeStruct((1, 2), jnp.int32)})["params"])


def load(path: str | os.PathLike, step: int | None = None) -> tuple[PaLIModel, Any]:
  """(model, params) of the latest checkpoint of a PaLI training MODEL_DIR, or of its checkpoint at `step`."""
  meta, params = checkpoints.read_project(os.fspath(path), "pali",
                                          lambda meta: _abstract_params(_model_from_json(meta)), step=step)
  return _model_from_json(meta), params
