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
from encoders.objectives import heads as heads_lib
from vlm import base_model
from vlm import ema as vlm_ema
from vlm import layers

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
    # A training run also records its objectives and teacher (SigLIPModel.config_json); the towers need neither.
    d = {k: v for k, v in d.items() if k not in ("model", "objectives", "teacher")}
    text = d.pop("text", None)
    text = text_lib.TextConfig(**text) if text else None
    return cls(image=vit_lib.ViTConfig(**d.pop("image")), text=text, **d)


class TwoTower(nn.Module):
  """Image tower 'img', text tower 'txt', scalars 't' (t') and 'b'. Parameter names follow big_vision.

  `heads`: the heads of training objectives (encoders/objectives), each (name, what it reads: 'pooled' or
  'tokens', dims): a projection head for dims (hidden, bottleneck, prototypes), a linear map for (width,);
  parameters under their name, used in training only (exports leave them out).
  """
  config: SigLIPConfig
  heads: tuple[tuple[str, str, tuple[int, ...]], ...] = ()
  locca: Any = None  # the LocCa decoder's vlm.ul2.UL2Config (encoders/objectives/locca.py), or None

  def setup(self):
    cfg = self.config
    self.img = vit_lib.ViT(cfg.image)
    self.txt = text_lib.TextTransformer(cfg.text) if cfg.text is not None else None
    self.t = self.param("t", nn.initializers.constant(cfg.t_init), (), jnp.float32)
    self.b = self.param("b", nn.initializers.constant(cfg.b_init), (), jnp.float32)
    for name, _, dims in self.heads:  # each under its own name ('dino_head', ...)
      setattr(self, name, heads_lib.ProjectionHead(*dims, dtype=cfg.image.dtype) if len(dims) == 3 else
              layers.dense(dims[0], ("embed", None), dtype=cfg.image.dtype))
    if self.locca is not None:
      from encoders.objectives import locca as locca_lib  # pylint: disable=import-outside-toplevel
      self.locca_decoder = locca_lib.LocCaDecoder(self.locca, name="locca")

  def locca_logits(self, image_tokens: jax.Array, prompt: jax.Array, decoder_inputs: jax.Array,
                   causal: bool = True) -> jax.Array:
    """The LocCa decoder's logits [B, L, vocab] over the image tower's tokens and the task prompt."""
    return self.locca_decoder(image_tokens, prompt, decoder_inputs, causal)

  def locca_encode(self, images: jax.Array, prompt: jax.Array) -> tuple[jax.Array, jax.Array]:
    """What the LocCa decoder cross-attends to, for decoding (vlm.ul2.generate_from_encoded on its 'ul2')."""
    return self.locca_decoder.encode(self.img(images)["tokens"], prompt)

  def view_features(self, images: jax.Array, masked: jax.Array | None = None,
                    heads: tuple[str, ...] = ()) -> dict[str, jax.Array]:
    """The image tower on views [N, H, W, 3] (patches `masked` [N, T] replaced by the mask token): 'pooled'
    [N, D], and each named head's output on what it reads ('dino_head' the pooled features: [N, K];
    'ibot_head' the patch tokens: [N, T, K])."""
    out = self.img(images, masked=masked)
    features = {"pooled": out["pooled"], "tokens": out["tokens"]}
    reads = {name: what for name, what, _ in self.heads}
    for name in heads:
      features[name] = getattr(self, name)(out[reads[name]])
    return features

  def encode_image(self, images: jax.Array | None = None, **patch_inputs) -> dict[str, jax.Array]:
    return self.img(images, **patch_inputs)

  def encode_patches(self, patches: jax.Array, mask: jax.Array, spatial_shapes: jax.Array) -> dict[str, jax.Array]:
    return self.img(patches=patches, mask=mask, spatial_shapes=spatial_shapes)

  def encode_text(self, token_ids: jax.Array) -> dict[str, jax.Array]:
    return self.txt(token_ids)

  def __call__(self, images: jax.Array | None = None, token_ids: jax.Array | None = None, **patch_inputs):
    """Returns (zimg [N, D], ztxt [N, D], t', b); the embeddings are the pooled outputs, not normalised.

    Images are dense (`images`) or NaFlex patches (images None; patches, mask, spatial_shapes as keywords).
    """
    out = self.img(images, **patch_inputs)
    for name, what, _ in self.heads:  # (built here, at init; their losses call them)
      getattr(self, name)(out[what])
    if self.locca is not None:
      dummy = jnp.ones((out["tokens"].shape[0], 2), jnp.int32)
      self.locca_decoder(out["tokens"], dummy, dummy)
    return out["pooled"], self.txt(token_ids)["pooled"], self.t, self.b


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  x = x.astype(jnp.float32)
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps))


def sigmoid_logits(zimg: jax.Array, ztxt: jax.Array, t_prime: jax.Array, bias: jax.Array) -> jax.Array:
  """[B, B] logits exp(t') cos(x_i, y_j) + b of every image against every text (embeddings normalised here)."""
  return l2_normalize(zimg) @ l2_normalize(ztxt).T * jnp.exp(t_prime) + bias


def sigmoid_loss(zimg: jax.Array, ztxt: jax.Array, t_prime: jax.Array, bias: jax.Array) -> jax.Array:
  """The SigLIP loss over one batch: every (image, text) pair is its own binary problem.

  Args:
    zimg, ztxt: [B, D] embeddings of matching pairs (row i of each belong together); normalised here.
    t_prime, bias: scalars; the logit is exp(t_prime) * cos + bias.
  Returns:
    -1/B sum_ij log sigmoid(z_ij * logit_ij), a float32 scalar.
  """
  logits = sigmoid_logits(zimg, ztxt, t_prime, bias)
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
class SigLIPModel(base_model.BaseModel):
  """The trainer's view of a SigLIP model (vlm.base_model.BaseModel).

  Batches are {'image': float32 [B, H, W, 3] in [-1, 1], 'text': int32 [B, L]}, or NaFlex batches with
  'patches', 'patch_mask' and 'spatial_shapes' (encoders.vit.PATCH_FEATURES) in place of 'image'; runs with
  dense objectives read multi-crop views ('global_views', 'local_views', 'global_masks': see
  encoders/objectives/compose.py).

  Args:
    image, text: the towers.
    loss: 'sigmoid' (SigLIP) or 'softmax' (CLIP); chunked: the sigmoid loss in a ring over the 'data' devices.
    objectives: encoder objectives (encoders.objectives.SelfDistillation, MaskedPrediction, PatchDistillation,
      LocCa, ActiveCuration), each with its weight and the fraction of training at which it starts.
    teacher: the EMA teacher they learn from: 'full' (image tower and heads) or 'heads' (TIPSv2's head-only
      EMA: the teacher's backbone is the student's own, under stop-gradient).
    teacher_momentum: the EMA momentum schedule (vlm.ema.momentum_schedule).
    train_steps: the run's TRAIN_STEPS, which the objectives' start fractions are of.
  """

  FEATURE_CONVERTER_CLS = base_model.LazyClass("tasks.feature_converters", "TwoTowerFeatureConverter")

  def __init__(self, image: vit_lib.ViTConfig = gin.REQUIRED, text: text_lib.TextConfig = gin.REQUIRED,
               loss: str = "sigmoid", chunked: bool = True, t_init: float = math.log(10.0),
               b_init: float = -10.0, objectives: tuple = (), teacher: str = "full",
               teacher_momentum=None, train_steps: int | None = None):
    if loss not in LOSSES:
      raise ValueError(f"SigLIPModel loss={loss!r} is not one of {LOSSES}")
    from encoders.objectives import compose  # pylint: disable=import-outside-toplevel
    self.objectives = compose.check_objectives(objectives, teacher, train_steps)
    if self.objectives and image.pool_type == "none":
      raise ValueError("the dense objectives read pooled image features: build the ViT with a pooling head")
    if any(o.name == "masked_prediction" for o in self.objectives) and not image.mask_token:
      image = dataclasses.replace(image, mask_token=True)
    self.config = SigLIPConfig(image=image, text=text, t_init=t_init, b_init=b_init)
    # Frozen teachers (patch distillation): name -> (their patch-token tower, its parameters, patch size).
    self.frozen_teachers = {}
    head_specs = []
    for o in self.objectives:
      if o.name == "locca":
        continue  # its decoder is TwoTower's 'locca', below
      if o.name == "active_curation":  # a frozen two-tower teacher that scores every super-batch
        from encoders import siglip_checkpoints  # pylint: disable=import-outside-toplevel
        teacher_config, teacher_params = siglip_checkpoints.read(o.checkpoint)
        if teacher_config.text is None or text is None or teacher_config.text.vocab_size != text.vocab_size:
          raise ValueError(f"the curation teacher {o.checkpoint} reads another text vocabulary (its text tower: "
                           f"{getattr(teacher_config.text, 'vocab_size', 'none')} ids, the student's: "
                           f"{getattr(text, 'vocab_size', 'none')}): it cannot score the same texts")
        self.frozen_teachers[o.name] = (TwoTower(teacher_config), jax.device_put(teacher_params))
        continue
      if o.name == "patch_distillation":
        teacher_image, teacher_params = o.load_teacher()
        tower = vit_lib.ViT(dataclasses.replace(teacher_image, pool_type="none", head_dim=None))
        teacher_params = {k: v for k, v in teacher_params.items() if k not in ("MAPHead_0", "head")}
        self.frozen_teachers[o.name] = (tower, teacher_params, teacher_image.patch_size)
        head_specs.append(o.head_spec(teacher_image.width))
      else:
        head_specs.append(o.head_spec)
    locca = next((o for o in self.objectives if o.name == "locca"), None)
    if locca is not None and text is None:
      raise ValueError("LocCa's decoder shares the text tower's vocabulary: it needs a two-tower model")
    self.module = TwoTower(self.config, heads=tuple(head_specs),
                           locca=locca.decoder_config(text.vocab_size, image.dtype) if locca else None)
    self.loss = loss
    self.chunked = chunked
    self.teacher = teacher
    self.train_steps = train_steps
    self._momentum = teacher_momentum or vlm_ema.momentum_schedule()

  # The trainer's teacher interface (vlm.trainer), present when there are objectives.
  @property
  def learns_from_teacher(self) -> bool:
    return bool(self.objectives)

  @property
  def teacher_params(self) -> str | None:
    from encoders.objectives import compose  # pylint: disable=import-outside-toplevel
    return compose.teacher_pattern(self.teacher, self.objectives) if self.objectives else None

  def teacher_momentum(self, step):
    return self._momentum(step)

  def init_aux(self) -> dict:
    """The centre of each objective with prototypes (DINO's, iBOT's), zero at the start."""
    return {f"{o.name}_centre": jnp.zeros((o.prototypes,), jnp.float32) for o in self.objectives
            if hasattr(o, "prototypes")}

  def phase(self, step: int) -> tuple[str, ...]:
    """The objectives active at `step`: those whose start fraction of train_steps has been reached."""
    return tuple(o.name for o in self.objectives if step >= o.start * self.train_steps)

  def loss_fn_with_teacher(self, params, batch, rng, *, teacher, aux, phase):
    """(loss, metrics, new aux): the sigmoid loss on every global view plus the active objectives."""
    from encoders.objectives import compose  # pylint: disable=import-outside-toplevel
    return compose.loss(self, params, batch, rng, teacher=teacher, aux=aux, phase=phase)

  def contrastive_loss(self, zimg: jax.Array, ztxt: jax.Array, t_prime: jax.Array, bias: jax.Array) -> jax.Array:
    """The configured image-text loss of one batch of pairs."""
    if self.loss == "softmax":
      return softmax_loss(zimg, ztxt, t_prime)
    if self.chunked:
      return chunked_sigmoid_loss(zimg, ztxt, t_prime, bias)
    return sigmoid_loss(zimg, ztxt, t_prime, bias)

  def init_variables(self, rng: jax.Array, batch: dict[str, Any]) -> dict:
    """Boxed (logically partitioned) variables; `batch` may hold ShapeDtypeStructs."""
    tokens = jnp.zeros((1,) + tuple(batch["text"].shape[1:]), jnp.int32)
    return self.module.init(rng, token_ids=tokens, **vit_lib.example_inputs(batch))

  def loss_fn(self, params, batch: dict[str, jax.Array], rng: jax.Array | None = None):
    """Returns (loss, metrics); metrics are scalars averaged over the batch."""
    if "global_views" in batch:  # multi-crop views: the image-text loss on each global view
      from encoders.objectives import compose  # pylint: disable=import-outside-toplevel
      loss, metrics, _ = compose.loss(self, params, batch, rng, teacher=None, aux={}, phase=())
      return loss, metrics
    del rng  # deterministic model: no dropout
    zimg, ztxt, t_prime, bias = self.module.apply({"params": params}, token_ids=batch["text"],
                                                  **vit_lib.image_inputs(batch))
    return self.contrastive_loss(zimg, ztxt, t_prime, bias), {"temperature": jnp.exp(t_prime), "bias": bias}

  def predict_batch(self, params, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """L2-normalised embeddings of whichever of the image ('image' or NaFlex patches) / 'text' the batch holds."""
    out = {}
    if "image" in batch or "patches" in batch:
      out["image"] = l2_normalize(self.module.apply({"params": params}, **vit_lib.image_inputs(batch),
                                                    method=TwoTower.encode_image)["pooled"])
    if "text" in batch:
      out["text"] = l2_normalize(self.module.apply({"params": params}, batch["text"],
                                                   method=TwoTower.encode_text)["pooled"])
    return out

  def config_json(self) -> dict:
    out = self.config.to_json()
    if self.objectives:
      out["objectives"] = [{"name": o.name, **dataclasses.asdict(o)} for o in self.objectives]
      out["teacher"] = self.teacher
    return out


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
    self._patches_fn = jax.jit(functools.partial(module.apply, method=TwoTower.encode_patches))

  def encode_image(self, pixels) -> dict[str, np.ndarray]:
    """pixels: float [N, H, W, 3] normalised to [-1, 1]; H, W multiples of the patch size.

    A tower without a pooling head (pool_type 'none', HF's vision_use_head=False) gives 'tokens' only.
    """
    pixels = _check_pixels(pixels, self.config.image.patch_size)
    return self._run(self._image_fn, pixels)

  def encode_patches(self, patches, mask, spatial_shapes) -> dict[str, np.ndarray]:
    """NaFlex inputs, as HF's Siglip2 image processor gives them (and tasks.naflex.patchify):

    Args:
      patches: float [N, P, p*p*3] in [-1, 1], each patch flattened as (patch row, patch col, channel).
      mask: [N, P], 1 for the image's rows * cols patches (first), 0 for padding.
      spatial_shapes: int [N, 2], each image's patch rows and cols.

    Returns:
      'pooled' [N, D] (towers with a pooling head) and 'tokens' [N, P, D]; padding's tokens are zero.
    """
    inputs = _check_patches(patches, mask, spatial_shapes, self.config.image.patch_size)
    return self._run(self._patches_fn, *inputs)

  def encode_text(self, token_ids) -> dict[str, np.ndarray]:
    """token_ids: int [N, L], 0 <= id < vocab_size, 1 <= L <= max_len (pad to the trained length)."""
    if self.config.text is None:
      raise ValueError("this checkpoint holds an image tower only (vision-only); encode_text needs a "
                       "two-tower SigLIP checkpoint")
    token_ids = _check_token_ids(token_ids, self.config.text)
    return self._run(self._text_fn, token_ids)

  def _run(self, fn, *inputs: np.ndarray) -> dict[str, np.ndarray]:
    if not len(inputs[0]):  # an empty batch: empty outputs of the right shapes, without running the tower
      example = [jax.ShapeDtypeStruct((1,) + x.shape[1:], x.dtype) for x in inputs]
      shapes = jax.eval_shape(fn, {"params": self.params}, *example)
      return {k: np.zeros((0,) + v.shape[1:], np.float32) for k, v in shapes.items()}
    return {k: np.asarray(v, np.float32) for k, v in fn({"params": self.params}, *inputs).items()}


def _check_normalised(values: np.ndarray, name: str) -> None:
  if not np.issubdtype(values.dtype, np.floating):
    raise ValueError(f"{name} must be float32 normalised to [-1, 1]; got dtype {values.dtype} "
                     "(for uint8 images use pixels / 127.5 - 1)")
  if not np.all(np.isfinite(values)):
    raise ValueError(f"{name} contain NaN or inf")
  lo, hi = float(values.min(initial=0.0)), float(values.max(initial=0.0))
  if lo < -1.001 or hi > 1.001:
    raise ValueError(f"{name} must be normalised to [-1, 1]; got values in [{lo:.3g}, {hi:.3g}] "
                     "(for 0..255 images use pixels / 127.5 - 1)")


def _check_pixels(pixels, patch_size: int) -> np.ndarray:
  pixels = np.asarray(pixels)
  if pixels.ndim != 4 or pixels.shape[-1] != 3:
    raise ValueError(f"pixels must be [N, H, W, 3] (channels last, RGB); got shape {pixels.shape}")
  _check_normalised(pixels, "pixels")
  h, w = pixels.shape[1:3]
  if not h or not w:
    raise ValueError(f"image size {h}x{w} is empty; images need at least one {patch_size}x{patch_size} patch")
  if h % patch_size or w % patch_size:
    raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {patch_size}; resize first")
  return pixels.astype(np.float32)


def _check_patches(patches, mask, spatial_shapes, patch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """NaFlex inputs as the tower takes them (float32, bool, int32), or one ValueError naming what is wrong."""
  patches, mask, shapes = np.asarray(patches), np.asarray(mask), np.asarray(spatial_shapes)
  width = patch_size * patch_size * 3
  if patches.ndim != 3 or patches.shape[-1] != width:
    raise ValueError(f"patches must be [N, P, {width}] (patch size {patch_size}: {patch_size}*{patch_size}*3 "
                     f"values a patch); got shape {patches.shape}")
  n, length = patches.shape[:2]
  if mask.shape != (n, length):
    raise ValueError(f"mask must be [N, P] = {[n, length]}, one entry a patch; got shape {mask.shape}")
  if shapes.shape != (n, 2) or not (np.issubdtype(shapes.dtype, np.integer) or shapes.size == 0):
    raise ValueError(f"spatial_shapes must be integers [N, 2] = {[n, 2]} (patch rows, cols); got "
                     f"{shapes.dtype} {shapes.shape}")
  _check_normalised(patches, "patches")
  if not np.isin(mask, (0, 1)).all():
    raise ValueError("mask must hold 0 (padding) and 1 (a real patch) only")
  if shapes.size and shapes.min() < 1:
    raise ValueError(f"spatial_shapes must be >= 1 patch on each side; got {shapes[np.any(shapes < 1, axis=1)][0]}")
  count = shapes.prod(axis=1) if n else np.zeros(0, np.int64)
  if np.any(count > length):
    i = int(np.argmax(count > length))
    raise ValueError(f"spatial_shapes[{i}] = {shapes[i].tolist()} is {count[i]} patches, more than the "
                     f"P = {length} the inputs hold")
  expected = np.arange(length)[None, :] < count[:, None]
  if not np.array_equal(mask.astype(bool), expected):
    i = int(np.argmax(np.any(mask.astype(bool) != expected, axis=1)))
    raise ValueError(f"mask[{i}] disagrees with spatial_shapes[{i}] = {shapes[i].tolist()}: it must be 1 on the "
                     f"first {count[i]} patches (rows * cols) and 0 after; it has {int(mask[i].sum())} ones")
  return patches.astype(np.float32), mask.astype(bool), shapes.astype(np.int32)


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


def load(path: str | os.PathLike, step: int | None = None) -> Encoder:
  """Loads a SigLIP from a HF directory, a big_vision .npz, or a project checkpoint directory (MODEL_DIR: its
  latest checkpoint, or the one at `step`)."""
  from encoders import siglip_checkpoints  # pylint: disable=import-outside-toplevel
  config, params = siglip_checkpoints.read(os.fspath(path), step)
  return Encoder(config, params)
