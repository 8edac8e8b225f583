"""SigLIP's text tower: token + learned position embedding, pre-LN transformer (no causal mask), final LN,
pooling at the last position, then a linear head. This is what HF's SiglipTextModel computes.

The last position is pooled whatever it holds: SigLIP pads every text to a fixed length and the pad token
there has attended to the whole sentence. Sizes reuse the ViT names ("B", "So400m", ...).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

from encoders import vit
from vlm import layers


@dataclasses.dataclass(frozen=True)
class TextConfig:
  """Geometry and numerics of the text tower."""
  vocab_size: int
  width: int
  depth: int
  mlp_dim: int
  num_heads: int
  max_len: int = 64
  head_dim: int | None = None  # output width of the head; None: same as width
  layer_norm_eps: float = 1e-6
  activation: str = "gelu_tanh"  # the MLPs' nonlinearity, a key of encoders.vit.ACTIVATIONS
  dtype: str = "float32"
  scan: bool = False
  remat: str = "none"

  def __post_init__(self):
    if self.width % self.num_heads:
      raise ValueError(f"text width {self.width} is not divisible by num_heads {self.num_heads}")
    if self.activation not in vit.ACTIVATIONS:
      raise ValueError(f"text activation={self.activation!r} is not one of {sorted(vit.ACTIVATIONS)}")


@gin.configurable(module="encoders.text")
def config(variant: str = "B", vocab_size: int = 32_000, **overrides) -> TextConfig:
  """A TextConfig for a named size ('B', 'So400m', ... as the ViT's names, without a patch)."""
  if variant not in vit.VARIANTS:
    raise ValueError(f"unknown text tower size {variant!r}: use one of {', '.join(vit.VARIANTS)}")
  width, depth, mlp_dim, num_heads = vit.VARIANTS[variant]
  return TextConfig(**{**dict(vocab_size=vocab_size, width=width, depth=depth, mlp_dim=mlp_dim,
                              num_heads=num_heads), **overrides})


class TextTransformer(nn.Module):
  """Returns {'tokens': [N, L, D] after the final LN, 'pooled': [N, head_dim]}."""
  config: TextConfig

  @nn.compact
  def __call__(self, token_ids: jax.Array) -> dict[str, jax.Array]:
    """token_ids: int [N, L] with L <= max_len."""
    cfg = self.config
    if token_ids.shape[1] > cfg.max_len:
      raise ValueError(f"texts of {token_ids.shape[1]} tokens are longer than the text tower's max_len "
                       f"{cfg.max_len}; shorten TASK_FEATURE_LENGTHS['text'] or raise max_len")
    x = nn.Embed(cfg.vocab_size, cfg.width, dtype=cfg.dtype,
                 embedding_init=layers.with_axes(nn.initializers.normal(stddev=cfg.width ** -0.5),
                                                 ("vocab", "embed")),
                 name="Embed_0")(token_ids)  # [batch, length, embed]
    posemb = self.param("pos_embedding",
                        layers.with_axes(nn.initializers.normal(stddev=cfg.width ** -0.5),
                                         (None, "length", "embed")),
                        (1, cfg.max_len, cfg.width), jnp.float32)
    x = x + posemb[:, :token_ids.shape[1]].astype(cfg.dtype)
    x = layers.Encoder(cfg.depth, cfg.mlp_dim, cfg.num_heads, eps=cfg.layer_norm_eps,
                       activation=vit.ACTIVATIONS[cfg.activation], scan=cfg.scan, remat=cfg.remat, dtype=cfg.dtype,
                       name="Transformer")(x)
    pooled = layers.dense(cfg.head_dim or cfg.width, ("embed", "mlp"), dtype=cfg.dtype, name="head")(x[:, -1])
    return {"tokens": x, "pooled": pooled}
