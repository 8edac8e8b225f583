"""Building blocks shared by the image tower, the text tower and the UL2.

Every parameter carries T5X logical axis names (batch, length, embed, mlp, heads, kv, vocab, ...); one rules
table in `vlm.partitioning` maps them onto the device mesh, so no layer knows about devices.

Dtype policy: parameters are stored in `param_dtype` (float32, the master copy) and computation runs in
`dtype` (float32 or bfloat16). Softmax and normalisation statistics always run in float32.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = jnp.dtype | str
Initializer = Callable[..., jax.Array]

default_kernel_init = nn.initializers.xavier_uniform()


def with_axes(init: Initializer, axes: Sequence[str | None]) -> Initializer:
  """Attaches logical axis names to an initializer (flax boxes the parameter with them)."""
  return nn.with_logical_partitioning(init, tuple(axes))


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
  """Activation sharding hint by logical names; a no-op outside a mesh / rules context."""
  return nn.with_logical_constraint(x, tuple(axes))


def dense(features: int, axes: tuple[str | None, str | None], *, use_bias: bool = True,
          dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
          kernel_init: Initializer = default_kernel_init, name: str | None = None) -> nn.Dense:
  """A Dense layer whose kernel has logical axes `axes` (input, output) and whose bias takes the output's."""
  return nn.Dense(features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype,
                  kernel_init=with_axes(kernel_init, axes), bias_init=with_axes(nn.initializers.zeros, axes[1:]),
                  name=name)


def layer_norm(eps: float = 1e-6, *, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
               name: str | None = None) -> nn.LayerNorm:
  """LayerNorm over the last (embed) axis; statistics in float32 whatever the compute dtype."""
  return nn.LayerNorm(
      epsilon=eps,
      dtype=dtype,
      param_dtype=param_dtype,
      use_fast_variance=False,  # two-pass variance: matches torch to 1e-6 on large activations
      scale_init=with_axes(nn.initializers.ones, ("embed",)),
      bias_init=with_axes(nn.initializers.zeros, ("embed",)),
      name=name,
  )


def dot_product_attention(query: jax.Array, key: jax.Array, value: jax.Array, *,
                          bias: jax.Array | None = None, mask: jax.Array | None = None,
                          scale: float = 1.0) -> jax.Array:
  """softmax(scale * q.k + bias, masked) v, heads-major.

  Heads-major ([batch, heads, len, head_dim]) keeps both matmuls plain batched GEMMs: with a [b, len, heads,
  head_dim] layout XLA:CPU fused transposes into the dots and ran ViT-B attention 2x slower (measured).

  Args:
    query: [batch, heads, q_len, head_dim]
    key, value: [batch, heads, kv_len, head_dim]
    bias: broadcastable to [batch, heads, q_len, kv_len], added to the logits (relative positions).
    mask: boolean, broadcastable to [batch, heads, q_len, kv_len]; False positions get no weight.
    scale: multiplies the logits (1/sqrt(head_dim) for ViTs; 1 for T5, which folds it into the init).

  Returns:
    [batch, heads, q_len, head_dim] in the query's dtype.
  """
  if scale != 1.0:
    query = query * jnp.asarray(scale, query.dtype)
  logits = jnp.einsum("bhqd,bhkd->bhqk", query, key).astype(jnp.float32)
  if bias is not None:
    logits = logits + bias.astype(jnp.float32)
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  weights = jax.nn.softmax(logits, axis=-1).astype(value.dtype)
  return jnp.einsum("bhqk,bhkd->bhqd", weights, value)


class HeadsProjection(nn.Module):
  """[batch, len, embed] -> [batch, heads, len, head_dim], kernel [embed, heads, head_dim] (+ bias [heads, head_dim])."""
  num_heads: int
  head_dim: int
  use_bias: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Initializer = default_kernel_init

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    shape = (x.shape[-1], self.num_heads, self.head_dim)
    # Fan-in is the embed axis alone (a DenseGeneral over embed -> (heads, head_dim)).
    init = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform", in_axis=0, out_axis=(1, 2)) \
        if self.kernel_init is default_kernel_init else self.kernel_init
    kernel = self.param("kernel", with_axes(init, ("embed", "heads", "kv")), shape, self.param_dtype)
    y = jnp.einsum("bte,ehd->bhtd", x.astype(self.dtype), kernel.astype(self.dtype))
    if self.use_bias:
      bias = self.param("bias", with_axes(nn.initializers.zeros, ("heads", "kv")), shape[1:], self.param_dtype)
      y = y + bias.astype(self.dtype)[None, :, None, :]
    return constrain(y, ("batch", "heads", "length", "kv"))


class HeadsOutput(nn.Module):
  """[batch, heads, len, head_dim] -> [batch, len, embed], kernel [heads, head_dim, embed] (+ bias [embed])."""
  features: int
  use_bias: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Initializer = default_kernel_init

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    shape = (x.shape[1], x.shape[3], self.features)
    init = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform", in_axis=(0, 1), out_axis=2) \
        if self.kernel_init is default_kernel_init else self.kernel_init
    kernel = self.param("kernel", with_axes(init, ("heads", "kv", "embed")), shape, self.param_dtype)
    y = jnp.einsum("bhtd,hde->bte", x, kernel.astype(self.dtype))
    if self.use_bias:
      y = y + self.param("bias", with_axes(nn.initializers.zeros, ("embed",)), (self.features,),
                         self.param_dtype).astype(self.dtype)
    return y


class MultiHeadAttention(nn.Module):
  """Multi-head attention with separate query/key/value/out projections.

  Kernels are [embed, heads, kv] and [heads, kv, embed] (big_vision / flaxformer layout), so checkpoints
  from those systems load by reshaping nothing.
  """
  num_heads: int
  head_dim: int | None = None  # default: embed // num_heads
  use_bias: bool = True
  scale_logits: bool = True  # 1/sqrt(head_dim); T5 folds it into the initialisation instead
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Initializer = default_kernel_init

  @nn.compact
  def __call__(self, inputs_q: jax.Array, inputs_kv: jax.Array, *, mask: jax.Array | None = None,
               bias: jax.Array | None = None) -> jax.Array:
    """inputs_q: [batch, q_len, embed]; inputs_kv: [batch, kv_len, embed] -> [batch, q_len, embed]."""
    embed = inputs_q.shape[-1]
    head_dim = self.head_dim or embed // self.num_heads
    kw = dict(use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype,
              kernel_init=self.kernel_init)
    query = HeadsProjection(self.num_heads, head_dim, name="query", **kw)(inputs_q)
    key = HeadsProjection(self.num_heads, head_dim, name="key", **kw)(inputs_kv)
    value = HeadsProjection(self.num_heads, head_dim, name="value", **kw)(inputs_kv)
    scale = head_dim ** -0.5 if self.scale_logits else 1.0
    out = dot_product_attention(query, key, value, bias=bias, mask=mask, scale=scale)
    return HeadsOutput(embed, name="out", **kw)(out)


class MlpBlock(nn.Module):
  """Dense -> activation -> Dense, as in ViT and the SigLIP text tower (GELU with tanh approximation)."""
  mlp_dim: int
  activation: Callable[[jax.Array], jax.Array] = functools.partial(jax.nn.gelu, approximate=True)
  use_bias: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [batch, length, embed] -> same shape."""
    embed = x.shape[-1]
    kw = dict(use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype)
    h = dense(self.mlp_dim, ("embed", "mlp"), name="Dense_0", **kw)(x)
    h = constrain(self.activation(h), ("batch", "length", "mlp"))
    return dense(embed, ("mlp", "embed"), name="Dense_1", **kw)(h)


class EncoderBlock(nn.Module):
  """Pre-LN transformer block: x + Attn(LN(x)), then x + MLP(LN(x)). Shared by the ViT and the text tower."""
  mlp_dim: int
  num_heads: int
  eps: float = 1e-6
  scanned: bool = False  # under nn.scan the block returns (x, None)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None):
    """x: [batch, length, embed]; mask: optional boolean [batch, 1, 1, length] over keys."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = constrain(x, ("batch", "length", "embed"))
    y = layer_norm(self.eps, name="LayerNorm_0", **kw)(x)
    y = MultiHeadAttention(self.num_heads, name="MultiHeadDotProductAttention_0", **kw)(y, y, mask=mask)
    x = x + y
    y = layer_norm(self.eps, name="LayerNorm_1", **kw)(x)
    y = MlpBlock(self.mlp_dim, name="MlpBlock_0", **kw)(y)
    x = x + y
    return (x, None) if self.scanned else x


class Encoder(nn.Module):
  """A stack of EncoderBlocks followed by a final LayerNorm.

  With `scan`, the blocks are one `nn.scan` over a stacked parameter tree (leading axis 'layers'): compile
  time stays flat in depth, which a 48-layer ViT-G needs. `remat` recomputes each block's activations in the
  backward pass ('none' | 'full' | 'dots' saves matmul outputs only).
  """
  depth: int
  mlp_dim: int
  num_heads: int
  eps: float = 1e-6
  scan: bool = False
  remat: str = "none"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    block_kw = dict(mlp_dim=self.mlp_dim, num_heads=self.num_heads, eps=self.eps, dtype=self.dtype,
                    param_dtype=self.param_dtype)
    block_cls = remat_block(EncoderBlock, self.remat, self.scan)
    if self.scan:
      scanned = nn.scan(
          block_cls,
          variable_axes={"params": 0},
          split_rngs={"params": True, "dropout": True},
          in_axes=nn.broadcast,
          length=self.depth,
          metadata_params={nn.PARTITION_NAME: "layers"},
      )
      x, _ = scanned(name="encoderblock", scanned=True, **block_kw)(x, mask)
    else:
      for i in range(self.depth):
        x = block_cls(name=f"encoderblock_{i}", **block_kw)(x, mask)
    return layer_norm(self.eps, name="encoder_norm", dtype=self.dtype, param_dtype=self.param_dtype)(x)


_REMAT_POLICIES = {
    "full": None,  # save nothing
    "dots": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def remat_block(block_cls: type[nn.Module], remat: str, under_scan: bool = False) -> type[nn.Module]:
  """Wraps a block class in nn.remat with a named policy; 'none' returns it unchanged."""
  if remat == "none":
    return block_cls
  if remat not in _REMAT_POLICIES:
    raise ValueError(f"remat={remat!r} is not one of 'none', {', '.join(map(repr, _REMAT_POLICIES))}")
  # Under scan the loop already stops XLA from CSE-ing the recomputation away; the barrier only costs.
  return nn.remat(block_cls, policy=_REMAT_POLICIES[remat], prevent_cse=not under_scan)
