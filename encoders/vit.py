"""SigLIP's Vision Transformer: patch embedding, learned (resizable) position embedding, pre-LN blocks,
final LayerNorm and a pooling head (MAP attention pooling, global average, or none).

Sizes are named as in the papers: "B/16", "So400m/14", "G/14" (width/depth/MLP/heads from `VARIANTS`, patch
after the slash). `config("B/16", image_size=224)` gives a `ViTConfig`; `ViT(config)` is the linen module.
Parameter names follow big_vision, so its checkpoints map one to one.
"""

from __future__ import annotations

import dataclasses
import functools

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

# The MLP nonlinearity by name. SigLIP uses GELU's tanh approximation; the others are what other SigLIP-family
# checkpoints ship (HF's hidden_act 'gelu' is the exact erf form, 'quick_gelu' is CLIP's).
ACTIVATIONS = {
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
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

  def __post_init__(self):
    if self.pool_type not in POOL_TYPES:
      raise ValueError(f"ViT pool_type={self.pool_type!r} is not one of {POOL_TYPES}")
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"ViT activation={self.activation!r} is not one of {sorted(ACTIVATIONS)}")
    if self.width % self.num_heads:
      raise ValueError(f"ViT width {self.width} is not divisible by num_heads {self.num_heads}")
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


class MAPHead(nn.Module):
  """Multihead attention pooling: one learned probe attends over the tokens, then an MLP residual."""
  mlp_dim: int
  num_heads: int
  eps: float = 1e-6
  activation: str = "gelu_tanh"
  dtype: str = "float32"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [batch, length, embed] -> [batch, embed]."""
    batch, _, embed = x.shape
    probe = self.param("probe", layers.with_axes(nn.initializers.xavier_uniform(), (None, None, "embed")),
                       (1, 1, embed), jnp.float32)
    probe = jnp.broadcast_to(probe.astype(self.dtype), (batch, 1, embed))
    x = layers.MultiHeadAttention(self.num_heads, embed, dtype=self.dtype,
                                  name="MultiHeadDotProductAttention_0")(probe, x)
    y = layers.layer_norm(self.eps, dtype=self.dtype, name="LayerNorm_0")(x)
    x = x + layers.MlpBlock(self.mlp_dim, ACTIVATIONS[self.activation], dtype=self.dtype, name="MlpBlock_0")(y)
    return x[:, 0]


class ViT(nn.Module):
  """The image tower. Returns {'tokens': [N, T, D] after the final LN, 'pooled': [N, D'] or absent}."""
  config: ViTConfig

  @nn.compact
  def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
    """images: [N, H, W, 3] in [-1, 1]; H and W multiples of the patch size (any grid: posemb is resized)."""
    cfg = self.config
    p = cfg.patch_size
    x = nn.Conv(cfg.width, (p, p), strides=(p, p), padding="VALID", dtype=cfg.dtype,
                kernel_init=layers.with_axes(nn.initializers.lecun_normal(), (None, None, None, "embed")),
                bias_init=layers.with_axes(nn.initializers.zeros, ("embed",)),
                name="embedding")(images.astype(cfg.dtype))
    n, gh, gw, d = x.shape
    x = x.reshape(n, gh * gw, d)  # [batch, length, embed]
    posemb = self.param("pos_embedding",
                        layers.with_axes(nn.initializers.normal(stddev=d ** -0.5), (None, "length", "embed")),
                        (1, cfg.grid * cfg.grid, d), jnp.float32)
    x = x + resize_posemb(posemb, (cfg.grid, cfg.grid), (gh, gw)).astype(cfg.dtype)
    x = layers.Encoder(cfg.depth, cfg.mlp_dim, cfg.num_heads, eps=cfg.layer_norm_eps,
                       activation=ACTIVATIONS[cfg.activation], scan=cfg.scan, remat=cfg.remat, dtype=cfg.dtype,
                       name="Transformer")(x)
    out = {"tokens": x}
    if cfg.pool_type == "map":
      pooled = MAPHead(cfg.mlp_dim, cfg.num_heads, eps=cfg.layer_norm_eps, activation=cfg.activation,
                       dtype=cfg.dtype, name="MAPHead_0")(x)
    elif cfg.pool_type == "gap":
      pooled = jnp.mean(x, axis=1)
    else:
      return out
    if cfg.head_dim is not None:
      pooled = layers.dense(cfg.head_dim, ("embed", "mlp"), dtype=cfg.dtype, name="head")(pooled)
    out["pooled"] = pooled
    return out
