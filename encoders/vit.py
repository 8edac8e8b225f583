"""SigLIP's Vision Transformer: patch embedding, learned (resizable) position embedding, pre-LN blocks,
final LayerNorm and a pooling head (MAP attention pooling, global average, or none).

Sizes are named as in the papers: "B/16", "So400m/14", "G/14" (width/depth/MLP/heads from `VARIANTS`, patch
after the slash). `config("B/16", image_size=224)` gives a `ViTConfig`; `ViT(config)` is the linen module.
Parameter names follow big_vision, so its checkpoints map one to one.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

from vlm import layers

# name -> (width, depth, mlp_dim, num_heads). The first four are test / tiny-run sizes.
VARIANTS: dict[str, tuple[int, int, int, int]] = {
    "pico": (32, 2, 64, 2),
    "mu": (64, 3, 128, 4),
    "Ti": (192, 12, 768, 3),
    "S": (384, 12, 1536, 6),
    "M": (512, 12, 2048, 8),
    "B": (768, 12, 3072, 12),
    "L": (1024, 24, 4096, 16),
    "So400m": (1152, 27, 4304, 16),
    "H": (1280, 32, 5120, 16),
    "g": (1408, 40, 6144, 16),
    "g-opt": (1536, 40, 6144, 16),
    "G": (1664, 48, 8192, 16),
}

POOL_TYPES = ("map", "gap", "none")

# A NaFlex batch's image features, in place of a dense batch's 'image' (tasks.naflex makes them):
#   patches [B, P, p*p*3] float32 in [-1, 1], patch_mask [B, P] int32 (1: real), spatial_shapes [B, 2] int32.
PATCH_FEATURES = ("patches", "patch_mask", "spatial_shapes")

# The MLP nonlinearity by name. SigLIP uses GELU's tanh approximation; the others are what other SigLIP-family
# checkpoints ship (HF's hidden_act 'gelu' is the exact erf form, 'quick_gelu' is CLIP's).
ACTIVATIONS = {
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
}


def sincos2d_posemb(grid: int, width: int, temperature: float = 10_000.0) -> jax.Array:
  """[1, grid*grid, width] 2-D sine-cosine position embedding (MoCo v3 / MAE): a quarter of the channels each
  for sin and cos of the column and of the row, at width / 4 geometric frequencies; rows of the grid row-major,
  as `patchify` orders the patches."""
  quarter = width // 4
  omega = 1.0 / temperature ** (jnp.arange(quarter, dtype=jnp.float32) / quarter)
  rows, cols = jnp.meshgrid(jnp.arange(grid, dtype=jnp.float32), jnp.arange(grid, dtype=jnp.float32),
                            indexing="ij")
  y = rows.reshape(-1, 1) * omega
  x = cols.reshape(-1, 1) * omega
  return jnp.concatenate([jnp.sin(x), jnp.cos(x), jnp.sin(y), jnp.cos(y)], axis=1)[None]


def _sincos2d_init(key: jax.Array, shape: tuple[int, int, int], dtype=jnp.float32) -> jax.Array:
  del key  # deterministic
  grid = math.isqrt(shape[1])
  return sincos2d_posemb(grid, shape[2]).astype(dtype)


# How the learned position embedding starts (it is trained either way, and checkpoints look the same):
# 'normal' as big_vision's 'learn' posemb (stddev width^-0.5: norm 1 a token, against patch embeddings of norm ~6
# at width 64); 'sincos2d' from the 2-D sine-cosine table (norm sqrt(width / 2)), with which a from-scratch tiny
# PaLI reads boxes off the image where the default start does not (README "Why the tiny PaLI does not localise").
POSEMB_INITS = {
    "normal": lambda key, shape, dtype=jnp.float32: nn.initializers.normal(stddev=shape[-1] ** -0.5)(key, shape, dtype),
    "sincos2d": _sincos2d_init,
}


@dataclasses.dataclass(frozen=True)
class ViTConfig:
  """Geometry and numerics of one ViT tower."""
  width: int
  depth: int
  mlp_dim: int
  num_heads: int
  patch_size: int
  image_size: int = 224  # the position-embedding grid is image_size // patch_size on each side
  pool_type: str = "map"  # map: attention pooling with one learned probe; gap: mean; none: no pooled output
  head_dim: int | None = None  # optional linear head after pooling (big_vision `head`); None: no head
  layer_norm_eps: float = 1e-6
  activation: str = "gelu_tanh"  # the MLPs' nonlinearity, a key of ACTIVATIONS
  dtype: str = "float32"  # compute dtype; parameters stay float32
  scan: bool = False
  remat: str = "none"
  mask_token: bool = False  # a learned token that replaces masked patches (masked prediction: TIPS / iBOT)
  posemb_init: str = "normal"  # the learned position embedding's start: a key of POSEMB_INITS

  def __post_init__(self):
    if self.pool_type not in POOL_TYPES:
      raise ValueError(f"ViT pool_type={self.pool_type!r} is not one of {POOL_TYPES}")
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"ViT activation={self.activation!r} is not one of {sorted(ACTIVATIONS)}")
    if self.posemb_init not in POSEMB_INITS:
      raise ValueError(f"ViT posemb_init={self.posemb_init!r} is not one of {sorted(POSEMB_INITS)}")
    if self.posemb_init == "sincos2d" and self.width % 4:
      raise ValueError(f"ViT posemb_init='sincos2d' needs a width divisible by 4, got {self.width}")
    if self.width % self.num_heads:
      raise ValueError(f"ViT width {self.width} is not divisible by num_heads {self.num_heads}")
    if self.image_size < self.patch_size:  # no patch, so no token: the model would be built and then fail
      raise ValueError(f"ViT image_size {self.image_size} is below one patch of {self.patch_size} pixels; "
                       "set IMAGE_SIZE (encoders.vit.config.image_size) to a multiple of the patch size")
    if self.image_size % self.patch_size:
      raise ValueError(f"ViT image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")

  @property
  def grid(self) -> int:
    return self.image_size // self.patch_size


def parse_variant(variant: str) -> dict:
  """'So400m/14' -> dict(width=1152, depth=27, mlp_dim=4304, num_heads=16, patch_size=14)."""
  name, _, patch = variant.partition("/")
  if name not in VARIANTS or not patch.isdigit():
    raise ValueError(f"unknown ViT size {variant!r}: use NAME/PATCH with NAME one of {', '.join(VARIANTS)} "
                     "(e.g. 'B/16', 'So400m/14')")
  width, depth, mlp_dim, num_heads = VARIANTS[name]
  return dict(width=width, depth=depth, mlp_dim=mlp_dim, num_heads=num_heads, patch_size=int(patch))


@gin.configurable(module="encoders.vit")
def config(variant: str = "B/16", **overrides) -> ViTConfig:
  """A ViTConfig for a named size; keyword overrides replace any field (image_size, pool_type, dtype ...)."""
  return ViTConfig(**{**parse_variant(variant), **overrides})


def resize_posemb(posemb: jax.Array, old_grid: tuple[int, int], new_grid: tuple[int, int]) -> jax.Array:
  """Bilinearly resizes a [1, gh*gw, D] position embedding to another grid (antialiased when shrinking)."""
  if tuple(old_grid) == tuple(new_grid):
    return posemb
  d = posemb.shape[-1]
  grid = posemb.reshape(old_grid[0], old_grid[1], d)
  grid = jax.image.resize(grid, (new_grid[0], new_grid[1], d), method="bilinear", antialias=True)
  return grid.reshape(1, new_grid[0] * new_grid[1], d)


def _linear_weights(index: jax.Array, out_size: jax.Array, in_size: int) -> jax.Array:
  """Weights [..., in_size] of output sample `index` when resizing in_size samples to `out_size` (traced).

  Bilinear with half-pixel centres, and antialiased when shrinking (the triangle widens to the sampling
  step), normalised over the input: the kernel of jax.image.resize and of torch's
  interpolate(mode='bilinear', antialias=True), written for a size only known at run time.
  """
  scale = in_size / out_size.astype(jnp.float32)[..., None]
  centre = (index.astype(jnp.float32)[..., None] + 0.5) * scale  # in input units, pixel centres at j + 0.5
  support = jnp.maximum(scale, 1.0)
  taps = jnp.maximum(0.0, 1.0 - jnp.abs(jnp.arange(in_size, dtype=jnp.float32) + 0.5 - centre) / support)
  return taps / jnp.sum(taps, axis=-1, keepdims=True)


def posemb_for_patches(posemb: jax.Array, grid: tuple[int, int], spatial_shapes: jax.Array,
                       length: int) -> jax.Array:
  """The [1, gh*gw, D] position embedding resized per example to its patch grid, one row per patch.

  Args:
    posemb: the learned grid, flattened row-major.
    grid: its (rows, cols).
    spatial_shapes: int [N, 2], each example's (rows, cols) of patches; patch k sits at (k // cols, k % cols).
    length: P, the padded sequence length.

  Returns:
    [N, P, D] float32: row k < rows * cols holds the embedding resized to the example's grid at patch k
    (exactly `resize_posemb` to that grid); padding rows repeat patch 0's, as HF's Siglip2 does.
  """
  rows, cols = jnp.maximum(spatial_shapes[:, 0:1], 1), jnp.maximum(spatial_shapes[:, 1:2], 1)  # [N, 1]
  k = jnp.arange(length)[None, :]
  k = jnp.where(k < rows * cols, k, 0)  # [N, P]
  row_w = _linear_weights(k // cols, rows, grid[0])  # [N, P, gh]
  col_w = _linear_weights(k % cols, cols, grid[1])  # [N, P, gw]
  # The separable resize as one product per patch: weights over the whole grid [N, P, gh*gw] times the grid.
  weights = (row_w[..., :, None] * col_w[..., None, :]).reshape(row_w.shape[:2] + (-1,))
  return jnp.einsum("npg,gd->npd", weights, posemb[0].astype(jnp.float32))


def patchify(images: jax.Array, patch_size: int) -> jax.Array:
  """[N, H, W, C] -> [N, (H/p)*(W/p), p*p*C]: patches row-major, each flattened as (row, col, channel)."""
  n, h, w, c = images.shape
  p = patch_size
  x = images.reshape(n, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, (h // p) * (w // p), p * p * c)


class PatchEmbedding(nn.Module):
  """One linear map of flattened patches to the width. The kernel is stored as the convolution it equals,
  [p, p, 3, width] (big_vision's and HF SigLIP's layout); flattened, it is HF Siglip2's Linear."""
  width: int
  patch_size: int
  dtype: str = "float32"

  @nn.compact
  def __call__(self, patches: jax.Array) -> jax.Array:
    """patches: [N, P, p*p*3] -> [N, P, width]."""
    p = self.patch_size
    kernel = self.param("kernel", layers.with_axes(nn.initializers.lecun_normal(in_axis=(0, 1, 2), out_axis=3),
                                                   (None, None, None, "embed")), (p, p, 3, self.width), jnp.float32)
    bias = self.param("bias", layers.with_axes(nn.initializers.zeros, ("embed",)), (self.width,), jnp.float32)
    x = layers.matmul(patches.astype(self.dtype), kernel.reshape(p * p * 3, self.width).astype(self.dtype))
    return x + bias.astype(self.dtype)


def image_inputs(batch: dict) -> dict:
  """The ViT's keyword inputs from a batch: {'images': batch['image']}, or its NaFlex patch features."""
  if "patches" in batch:
    return dict(patches=batch["patches"], mask=batch["patch_mask"], spatial_shapes=batch["spatial_shapes"])
  return dict(images=batch["image"])


def example_inputs(batch: dict) -> dict:
  """`image_inputs` of one example shaped like the batch's (arrays or ShapeDtypeStructs): to initialise."""
  if "patches" in batch:
    length, width = batch["patches"].shape[1:]
    return dict(patches=jnp.zeros((1, length, width), jnp.float32), mask=jnp.ones((1, length), jnp.int32),
                spatial_shapes=jnp.ones((1, 2), jnp.int32))
  if "global_views" in batch:  # multi-crop views [B, G, S, S, 3] (encoders/objectives/compose.py): one view
    return dict(images=jnp.zeros((1,) + tuple(batch["global_views"].shape[2:]), jnp.float32))
  return dict(images=jnp.zeros((1,) + tuple(batch["image"].shape[1:]), jnp.float32))


class MAPHead(nn.Module):
  """Multihead attention pooling: one learned probe attends over the tokens, then an MLP residual."""
  mlp_dim: int
  num_heads: int
  eps: float = 1e-6
  activation: str = "gelu_tanh"
  dtype: str = "float32"

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None, per_token: bool = False) -> jax.Array:
    """x: [batch, length, embed], mask: optional bool [batch, length] (False: padding) -> [batch, embed].

    per_token: MaskCLIP's reading instead, [batch, length, embed]: each token's output had the probe attended
    to it alone (the attention then passes that token's value through), so every patch lands where the
    pooled output lives, in the text tower's space.
    """
    batch, _, embed = x.shape
    probe = self.param("probe", layers.with_axes(nn.initializers.xavier_uniform(), (None, None, "embed")),
                       (1, 1, embed), jnp.float32)
    probe = jnp.broadcast_to(probe.astype(self.dtype), (batch, 1, embed))
    attention = layers.MultiHeadAttention(self.num_heads, embed, dtype=self.dtype,
                                          name="MultiHeadDotProductAttention_0")
    if per_token:
      x = attention.out(attention.project_kv(x)[1])  # softmax over one key is 1: the value, projected out
    else:
      x = attention(probe, x, mask=None if mask is None else mask[:, None, None, :])
    y = layers.layer_norm(self.eps, dtype=self.dtype, name="LayerNorm_0")(x)
    x = x + layers.MlpBlock(self.mlp_dim, ACTIVATIONS[self.activation], dtype=self.dtype, name="MlpBlock_0")(y)
    return x if per_token else x[:, 0]


class ViT(nn.Module):
  """The image tower. Returns {'tokens': [N, T, D] after the final LN, 'pooled': [N, D'] or absent}.

  Two inputs, one set of weights: dense images (`images`), or NaFlex patch sequences (`patches`, `mask`,
  `spatial_shapes`: each image at its own aspect ratio and patch grid, padded to a common length). A dense
  image is the full-grid case of the second: the two give the same outputs on square, unpadded images.
  """
  config: ViTConfig

  @nn.compact
  def __call__(self, images: jax.Array | None = None, *, patches: jax.Array | None = None,
               mask: jax.Array | None = None, spatial_shapes: jax.Array | None = None,
               masked: jax.Array | None = None, per_token_pooled: bool = False) -> dict[str, jax.Array]:
    """Either images [N, H, W, 3] in [-1, 1] (H and W multiples of the patch size; any grid, the position
    embedding is resized), or patches [N, P, p*p*3] in [-1, 1] with mask [N, P] (1: a real patch, which
    come first) and spatial_shapes int [N, 2] (each example's patch rows and cols, rows * cols <= P).

    With patches, padding takes no part in any attention or in the pooling, and its tokens are zero.
    `masked` [N, T] (a tower built with mask_token): patches whose embedding the learned mask token replaces,
    before the position embedding is added (iBOT's masking). `per_token_pooled` adds 'per_token_pooled'
    [N, T, D'], each token through the MAP head alone (MaskCLIP; MAPHead's per_token) and the head.
    """
    cfg = self.config
    p = cfg.patch_size
    embed = PatchEmbedding(cfg.width, p, dtype=cfg.dtype, name="embedding")
    posemb = self.param("pos_embedding", layers.with_axes(POSEMB_INITS[cfg.posemb_init], (None, "length", "embed")),
                        (1, cfg.grid * cfg.grid, cfg.width), jnp.float32)
    if (images is None) == (patches is None):
      raise ValueError("ViT takes either images or patches (with mask and spatial_shapes), not both or neither")
    if masked is not None and not cfg.mask_token:
      raise ValueError("masked patches need a tower with a mask token: encoders.vit.config(..., mask_token=True)")
    token = (self.param("mask_token", layers.with_axes(nn.initializers.normal(0.02), ("embed",)), (cfg.width,),
                        jnp.float32) if cfg.mask_token else None)
    x = embed(patchify(images.astype(cfg.dtype), p) if images is not None else patches)  # [batch, length, embed]
    if masked is not None:
      x = jnp.where(masked[..., None].astype(bool), token.astype(x.dtype), x)
    if images is not None:
      gh, gw = images.shape[1] // p, images.shape[2] // p
      x = x + resize_posemb(posemb, (cfg.grid, cfg.grid), (gh, gw)).astype(cfg.dtype)
      keep = None
    else:
      x = x + posemb_for_patches(posemb, (cfg.grid, cfg.grid), spatial_shapes, patches.shape[1]).astype(cfg.dtype)
      keep = mask.astype(bool)  # [batch, length]
    x = layers.Encoder(cfg.depth, cfg.mlp_dim, cfg.num_heads, eps=cfg.layer_norm_eps,
                       activation=ACTIVATIONS[cfg.activation], scan=cfg.scan, remat=cfg.remat, dtype=cfg.dtype,
                       name="Transformer")(x, None if keep is None else keep[:, None, None, :])
    if keep is not None:
      x = jnp.where(keep[..., None], x, 0).astype(x.dtype)
    out = {"tokens": x}
    if cfg.pool_type == "map":
      map_head = MAPHead(cfg.mlp_dim, cfg.num_heads, eps=cfg.layer_norm_eps, activation=cfg.activation,
                         dtype=cfg.dtype, name="MAPHead_0")
      pooled = map_head(x, keep)
      per_token = map_head(x, per_token=True) if per_token_pooled else None
    elif cfg.pool_type == "gap":
      pooled = (jnp.mean(x, axis=1) if keep is None else
                jnp.sum(x, axis=1) / jnp.maximum(jnp.sum(keep, axis=1, keepdims=True), 1).astype(x.dtype))
      per_token = x if per_token_pooled else None  # the mean of one token is the token
    else:
      return out
    head = layers.dense(cfg.head_dim, ("embed", "mlp"), dtype=cfg.dtype, name="head") if cfg.head_dim else None
    out["pooled"] = head(pooled) if head else pooled
    if per_token is not None:
      out["per_token_pooled"] = head(per_token) if head else per_token
    return out
