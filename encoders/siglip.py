"""SigLIP: a ViT image tower and a text tower trained with the pairwise sigmoid loss.

  L = -1/|B| sum_i sum_j log sigmoid(z_ij (exp(t') x_i.y_j + b)),  z_ij = +1 if i == j else -1

Contents: the two-tower linen module, the losses (plain, chunked across the data axis, softmax for CLIP),
`SigLIPModel` (the trainer's model interface), and `load(path)` -> `Encoder` with encode_image/encode_text.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Any

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from encoders import text as text_lib
from encoders import vit as vit_lib

@dataclasses.dataclass(frozen=True)
class SigLIPConfig:
  image: vit_lib.ViTConfig
  text: text_lib.TextConfig | None = None  # None: an image-only encoder (e.g. a vision-only HF checkpoint)
  t_init: float = math.log(10.0)  # t' (the temperature is exp(t'))
  b_init: float = -10.0

  def to_json(self) -> dict:
    return {"model": "siglip", **dataclasses.asdict(self)}

  @classmethod
  def from_json(cls, d: dict) -> "SigLIPConfig":
    d = {k: v for k, v in d.items() if k != "model"}
    text = d.pop("text", None)
    text = text_lib.TextConfig(**text) if text else None
    return cls(image=vit_lib.ViTConfig(**d.pop("image")), text=text, **d)


class TwoTower(nn.Module):
  """Image tower 'img', text tower 'txt', scalars 't' (t') and 'b'. Parameter names follow big_vision."""
  config: SigLIPConfig

  def setup(self):
    cfg = self.config
    self.img = vit_lib.ViT(cfg.image)
    self.txt = text_lib.TextTransformer(cfg.text) if cfg.text is not None else None
    self.t = self.param("t", nn.initializers.constant(cfg.t_init), (), jnp.float32)
    self.b = self.param("b", nn.initializers.constant(cfg.b_init), (), jnp.float32)

  def encode_image(self, images: jax.Array) -> dict[str, jax.Array]:
    return self.img(images)

  def encode_text(self, token_ids: jax.Array) -> dict[str, jax.Array]:
    return self.txt(token_ids)

  def __call__(self, images: jax.Array, token_ids: jax.Array):
    """Returns (zimg [N, D], ztxt [N, D], t', b); the embeddings are the pooled outputs, not normalised."""
    return self.img(images)["pooled"], self.txt(token_ids)["pooled"], self.t, self.b


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  x = x.astype(jnp.float32)
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps))


def sigmoid_loss(zimg: jax.Array, ztxt: jax.Array, t_prime: jax.Array, bias: jax.Array) -> jax.Array:
  """The SigLIP loss over one batch: every (image, text) pair is its own binary problem.

  Args:
    zimg, ztxt: [B, D] embeddings of matching pairs (row i of each belong together); normalised here.
    t_prime, bias: scalars; the logit is exp(t_prime) * cos + bias.
  Returns:
    -1/B sum_ij log sigmoid(z_ij * logit_ij), a float32 scalar.
  """
  zimg, ztxt = l2_normalize(zimg), l2_normalize(ztxt)
  logits = zimg @ ztxt.T * jnp.exp(t_prime) + bias  # [B, B]
  labels = 2.0 * jnp.eye(logits.shape[0]) - 1.0
  return -jnp.sum(jax.nn.log_sigmoid(labels * logits)) / logits.shape[0]


def chunked_sigmoid_loss(zimg: jax.Array, ztxt: jax.Array, t_prime: jax.Array, bias: jax.Array, *,
                         mesh: jax.sharding.Mesh | jax.sharding.AbstractMesh | None = None,
                         axis: str = "data") -> jax.Array:
  """The sigmoid loss with the batch sharded over `axis`: no device ever holds more than B_local^2 logits.

  Each device scores its own images against its own texts (the positives and local negatives), then passes
  its texts to the next device around the ring (ppermute) and scores the visitors, n-1 times. Equal in
  value and gradient to `sigmoid_loss` on the gathered batch. Without a mesh that has `axis` (or with one
  device on it) it is `sigmoid_loss`.
  """
  mesh = mesh if mesh is not None else jax.sharding.get_abstract_mesh()
  n = dict(zip(mesh.axis_names, mesh.axis_sizes)).get(axis, 1) if mesh is not None and mesh.axis_names else 1
  if n == 1:
    return sigmoid_loss(zimg, ztxt, t_prime, bias)
  global_batch = zimg.shape[0]

  def local(zi, zt, t, b):
    zi, zt = l2_normalize(zi), l2_normalize(zt)
    scale = jnp.exp(t)

    def nll(texts, positives_on_diagonal):  # summed -log sigmoid over a [B_local, B_local] block
      logits = zi @ texts.T * scale + b
      labels = (2.0 * jnp.eye(logits.shape[0]) - 1.0) if positives_on_diagonal else -1.0
      return -jnp.sum(jax.nn.log_sigmoid(labels * logits))

    ring = [(i, (i + 1) % n) for i in range(n)]

    def visit(_, carry):
      texts, total = carry
      texts = jax.lax.ppermute(texts, axis, ring)
      return texts, total + nll(texts, False)

    _, total = jax.lax.fori_loop(0, n - 1, visit, (zt, nll(zt, True)))
    return jax.lax.psum(total, axis) / global_batch

  return jax.shard_map(local, mesh=mesh, in_specs=(P(axis), P(axis), P(), P()), out_specs=P(),
                       check_vma=False)(zimg, ztxt, t_prime, bias)


def softmax_loss(zimg: jax.Array, ztxt: jax.Array, t_prime: jax.Array) -> jax.Array:
  """CLIP's loss: cross-entropy over texts for each image and over images for each text, averaged."""
  zimg, ztxt = l2_normalize(zimg), l2_normalize(ztxt)
  logits = zimg @ ztxt.T * jnp.exp(t_prime)
  diag = jnp.diagonal(logits)
  i2t = jnp.mean(jax.nn.logsumexp(logits, axis=1) - diag)
  t2i = jnp.mean(jax.nn.logsumexp(logits, axis=0) - diag)
  return (i2t + t2i) / 2


LOSSES = ("sigmoid", "softmax")


@gin.configurable(module="encoders.siglip")
class SigLIPModel:
  """The trainer's view of a SigLIP model (see vlm.trainer.Model).

  Batches are {'image': float32 [B, H, W, 3] in [-1, 1], 'text': int32 [B, L]}.
  """

  def __init__(self, image: vit_lib.ViTConfig = gin.REQUIRED, text: text_lib.TextConfig = gin.REQUIRED,
               loss: str = "sigmoid", chunked: bool = True, t_init: float = math.log(10.0),
               b_init: float = -10.0):
    if loss not in LOSSES:
      raise ValueError(f"SigLIPModel loss={loss!r} is not one of {LOSSES}")
    self.config = SigLIPConfig(image=image, text=text, t_init=t_init, b_init=b_init)
    self.module = TwoTower(self.config)
    self.loss = loss
    self.chunked = chunked

  def init_variables(self, rng: jax.Array, batch: dict[str, Any]) -> dict:
    """Boxed (logically partitioned) variables; `batch` may hold ShapeDtypeStructs."""
    images = jnp.zeros((1,) + tuple(batch["image"].shape[1:]), jnp.float32)
    tokens = jnp.zeros((1,) + tuple(batch["text"].shape[1:]), jnp.int32)
    return self.module.init(rng, images, tokens)

  def loss_fn(self, params, batch: dict[str, jax.Array], rng: jax.Array | None = None):
    """Returns (loss, metrics); metrics are scalars averaged over the batch."""
    del rng  # deterministic model: no dropout
    zimg, ztxt, t_prime, bias = self.module.apply({"params": params}, batch["image"], batch["text"])
    if self.loss == "softmax":
      loss = softmax_loss(zimg, ztxt, t_prime)
    elif self.chunked:
      loss = chunked_sigmoid_loss(zimg, ztxt, t_prime, bias)
    else:
      loss = sigmoid_loss(zimg, ztxt, t_prime, bias)
    return loss, {"temperature": jnp.exp(t_prime), "bias": bias}

  def predict_batch(self, params, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """L2-normalised embeddings of whichever of 'image' / 'text' the batch holds."""
    out = {}
    if "image" in batch:
      out["image"] = l2_normalize(self.module.apply({"params": params}, batch["image"],
                                                    method=TwoTower.encode_image)["pooled"])
    if "text" in batch:
      out["text"] = l2_normalize(self.module.apply({"params": params}, batch["text"],
                                                   method=TwoTower.encode_text)["pooled"])
    return out

  def config_json(self) -> dict:
    return self.config.to_json()


class Encoder:
  """A loaded SigLIP: `encode_image(pixels)` and `encode_text(token_ids)` -> dicts of numpy arrays.

  Each returns 'pooled' [N, D] (before L2 normalisation) and 'tokens' [N, T, D] (the last LN's output);
  an image tower without a pooling head gives 'tokens' only.
  """

  def __init__(self, config: SigLIPConfig, params):
    self.config = config
    self.params = jax.device_put(params)  # once, not copied in on every call
    module = TwoTower(config)
    self._image_fn = jax.jit(functools.partial(module.apply, method=TwoTower.encode_image))
    self._text_fn = jax.jit(functools.partial(module.apply, method=TwoTower.encode_text))

  def encode_image(self, pixels) -> dict[str, np.ndarray]:
    """pixels: float [N, H, W, 3] normalised to [-1, 1]; H, W multiples of the patch size.

    A tower without a pooling head (pool_type 'none', HF's vision_use_head=False) gives 'tokens' only.
    """
    pixels = _check_pixels(pixels, self.config.image.patch_size)
    return self._run(self._image_fn, pixels)

  def encode_text(self, token_ids) -> dict[str, np.ndarray]:
    """token_ids: int [N, L], 0 <= id < vocab_size, 1 <= L <= max_len (pad to the trained length)."""
    if self.config.text is None:
      raise ValueError("this checkpoint holds an image tower only (vision-only); encode_text needs a "
                       "two-tower SigLIP checkpoint")
    token_ids = _check_token_ids(token_ids, self.config.text)
    return self._run(self._text_fn, token_ids)

  def _run(self, fn, inputs: np.ndarray) -> dict[str, np.ndarray]:
    if not len(inputs):  # an empty batch: empty outputs of the right shapes, without running the tower
      shapes = jax.eval_shape(fn, {"params": self.params}, np.zeros((1,) + inputs.shape[1:], inputs.dtype))
      return {k: np.zeros((0,) + v.shape[1:], np.float32) for k, v in shapes.items()}
    return {k: np.asarray(v, np.float32) for k, v in fn({"params": self.params}, inputs).items()}


def _check_pixels(pixels, patch_size: int) -> np.ndarray:
  pixels = np.asarray(pixels)
  if pixels.ndim != 4 or pixels.shape[-1] != 3:
    raise ValueError(f"pixels must be [N, H, W, 3] (channels last, RGB); got shape {pixels.shape}")
  if not np.issubdtype(pixels.dtype, np.floating):
    raise ValueError(f"pixels must be float32 normalised to [-1, 1]; got dtype {pixels.dtype} "
                     "(for uint8 images use pixels / 127.5 - 1)")
  if not np.all(np.isfinite(pixels)):
    raise ValueError("pixels contain NaN or inf")
  lo, hi = float(pixels.min(initial=0.0)), float(pixels.max(initial=0.0))
  if lo < -1.001 or hi > 1.001:
    raise ValueError(f"pixels must be normalised to [-1, 1]; got values in [{lo:.3g}, {hi:.3g}] "
                     "(for 0..255 images use pixels / 127.5 - 1)")
  h, w = pixels.shape[1:3]
  if not h or not w:
    raise ValueError(f"image size {h}x{w} is empty; images need at least one {patch_size}x{patch_size} patch")
  if h % patch_size or w % patch_size:
    raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {patch_size}; resize first")
  return pixels.astype(np.float32)


def _check_token_ids(token_ids, cfg: text_lib.TextConfig) -> np.ndarray:
  token_ids = np.asarray(token_ids)
  if token_ids.ndim != 2:
    raise ValueError(f"token_ids must be [N, L]; got shape {token_ids.shape}")
  if not np.issubdtype(token_ids.dtype, np.integer):
    raise ValueError(f"token_ids must be integers; got dtype {token_ids.dtype}")
  if not token_ids.shape[1]:
    raise ValueError("token_ids have length 0; the text tower pools the last token, so texts need at least one")
  if token_ids.shape[1] > cfg.max_len:
    raise ValueError(f"token_ids have length {token_ids.shape[1]} but the text tower takes at most "
                     f"{cfg.max_len} tokens")
  if token_ids.size and (token_ids.min() < 0 or token_ids.max() >= cfg.vocab_size):
    bad = int(token_ids.max() if token_ids.max() >= cfg.vocab_size else token_ids.min())
    raise ValueError(f"token id {bad} is outside the vocabulary [0, {cfg.vocab_size})")
  return token_ids.astype(np.int32)


def load(path: str | os.PathLike) -> Encoder:
  """Loads a SigLIP from a HF directory, a big_vision .npz, or a project checkpoint directory (MODEL_DIR)."""
  from encoders import siglip_checkpoints  # pylint: disable=import-outside-toplevel
  config, params = siglip_checkpoints.read(os.fspath(path))
  return Encoder(config, params)
