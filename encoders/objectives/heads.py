"""The projection head DINO and iBOT read their features through (also TIPSv2's, and the one head-only EMA copies).

  x [..., D] -> Dense(hidden) -> GELU -> Dense(hidden) -> GELU -> Dense(bottleneck) -> L2 normalise
             -> prototypes: a weight-normalised linear map without bias, each prototype a unit vector
             -> logits [..., K], cosines in [-1, 1] that the losses divide by their temperatures

DINO's head (hidden 2048, bottleneck 256, prototypes 65536 at scale; smaller here by gin).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from vlm import layers


class ProjectionHead(nn.Module):
  hidden: int = 2048
  bottleneck: int = 256
  prototypes: int = 4096
  dtype: str = "float32"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [..., D] -> logits [..., prototypes] float32."""
    kw = dict(dtype=self.dtype)
    h = jax.nn.gelu(layers.dense(self.hidden, ("embed", "mlp"), name="Dense_0", **kw)(x), approximate=False)
    h = jax.nn.gelu(layers.dense(self.hidden, ("mlp", None), name="Dense_1", **kw)(h), approximate=False)
    z = layers.dense(self.bottleneck, (None, None), name="Dense_2", **kw)(h).astype(jnp.float32)
    z = z * jax.lax.rsqrt(jnp.maximum(jnp.sum(z * z, axis=-1, keepdims=True), 1e-12))
    v = self.param("prototypes", layers.with_axes(nn.initializers.lecun_normal(), (None, None)),
                   (self.bottleneck, self.prototypes), jnp.float32)
    v = v * jax.lax.rsqrt(jnp.maximum(jnp.sum(v * v, axis=0, keepdims=True), 1e-12))
    return z @ v
