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
import gin
import jax
import jax.numpy as jnp
import numpy as np

Dtype = jnp.dtype | str
Initializer = Callable[..., jax.Array]

default_kernel_init = nn.initializers.xavier_uniform()


def with_axes(init: Initializer, axes: Sequence[str | None]) -> Initializer:
  """Attaches logical axis names to an initializer (flax boxes the parameter with them)."""
  return nn.with_logical_partitioning(init, tuple(axes))


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
  """Activation sharding hint by logical names; a no-op outside a mesh / rules context."""
  return nn.with_logical_constraint(x, tuple(axes))


def _unfused_on_cpu(fn: Callable[[jax.Array], jax.Array], x: jax.Array) -> jax.Array:
  """fn(x). On CPU it runs inside a conditional, a boundary XLA keeps: fn's result is written out in full,
  not fused into its consumers, and fn (a transpose, say) is not folded into a neighbouring dot. Elsewhere
  plain fn(x)."""
  def through_conditional(x):
    # The predicate must not be a compile-time constant, or XLA folds the conditional away. Both branches
    # compute fn(x); one is written `fn(t) * 1` because JAX drops a conditional whose branches all return
    # their operand untouched (fn = identity).
    return jax.lax.cond(jnp.isnan(x[(0,) * x.ndim]), lambda t: fn(t) * 1, fn, x)
  if x.size == 0:
    return fn(x)
  return jax.lax.platform_dependent(x, cpu=through_conditional, default=fn)


@jax.custom_vjp
def matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """x [..., in] @ kernel [in, out], with the kernel's gradient laid out for XLA:CPU's fast products.

  Autodiff asks for the kernel's gradient as dot(x contracted over its rows, dy); XLA:CPU runs that on Eigen
  after a transposed copy of dy. YNNPACK, its faster library, only takes row-major [in, rows] x [rows, out]
  products, so the backward pass transposes x itself where XLA cannot fold the transpose back into the dot.
  Same products and values as autodiff; on other platforms the transpose is left to the compiler.
  """
  return x @ kernel


def _matmul_fwd(x, kernel):
  return x @ kernel, (x, kernel)


def _matmul_bwd(residuals, dy):
  x, kernel = residuals
  rows_x, rows_dy = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1])
  return dy @ kernel.T, _unfused_on_cpu(jnp.transpose, rows_x) @ rows_dy


matmul.defvjp(_matmul_fwd, _matmul_bwd)


def _dense_dot_general(x, kernel, dimension_numbers, precision=None):
  """nn.Dense's product through `matmul` (Dense always contracts x's last axis with the kernel's first)."""
  if dimension_numbers != (((x.ndim - 1,), (0,)), ((), ())) or precision is not None:
    raise ValueError(f"dense layers take x[..., in] @ kernel[in, out] at default precision; got "
                     f"dimension_numbers={dimension_numbers}, precision={precision}")
  return matmul(x, kernel)


def dense(features: int, axes: tuple[str | None, str | None], *, use_bias: bool = True,
          dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
          kernel_init: Initializer = default_kernel_init, name: str | None = None) -> nn.Dense:
  """A Dense layer whose kernel has logical axes `axes` (input, output) and whose bias takes the output's."""
  return nn.Dense(features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype,
                  kernel_init=with_axes(kernel_init, axes), bias_init=with_axes(nn.initializers.zeros, axes[1:]),
                  dot_general=_dense_dot_general, name=name)


def _normalization_statistics(x: jax.Array, subtract_mean: bool, eps: float
                              ) -> tuple[jax.Array | None, jax.Array]:
  """Float32 (mean or None, 1 / sqrt(variance + eps)) over the last axis; two-pass variance, as torch's."""
  x = x.astype(jnp.float32)
  mean = jnp.mean(x, axis=-1, keepdims=True) if subtract_mean else None
  centred = x - mean if subtract_mean else x
  return mean, jax.lax.rsqrt(jnp.mean(centred * centred, axis=-1, keepdims=True) + eps)


def _normalized(x, mean, rstd):
  x = x.astype(jnp.float32)
  return (x if mean is None else x - mean) * rstd


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def normalize(x: jax.Array, scale: jax.Array, bias: jax.Array | None, eps: float, subtract_mean: bool,
              dtype) -> jax.Array:
  """LayerNorm (subtract_mean) or RMSNorm of x over its last axis, computed in float32, returned in `dtype`.

  Its backward keeps only x (in x's dtype) and the two float32 statistics per token; the normalised values are
  rebuilt from them. Autodiff of the same formula keeps three float32 copies of x's size (x - mean, and two
  products) from the forward to the backward pass: 12 bytes an element next to a bfloat16 x's 2, in every
  norm of every layer (measured with jax.ad_checkpoint's saved residuals), unless remat recomputes them.
  """
  return _normalize_fwd(x, scale, bias, eps, subtract_mean, dtype)[0]


def _normalize_fwd(x, scale, bias, eps, subtract_mean, dtype):
  mean, rstd = _normalization_statistics(x, subtract_mean, eps)
  y = _normalized(x, mean, rstd) * scale.astype(jnp.float32)
  y = (y if bias is None else y + bias.astype(jnp.float32)).astype(dtype)
  return y, (x, mean, rstd, scale, bias)


def _normalize_bwd(eps, subtract_mean, dtype, residuals, grad):
  x, mean, rstd, scale, bias = residuals
  del eps, dtype
  grad = grad.astype(jnp.float32)
  normalized = _normalized(x, mean, rstd)
  leading = tuple(range(x.ndim - 1))
  d_scale = jnp.sum(grad * normalized, axis=leading).astype(scale.dtype)
  d_bias = None if bias is None else jnp.sum(grad, axis=leading).astype(bias.dtype)
  d_normalized = grad * scale.astype(jnp.float32)
  # d x = rstd * (d_n - mean(d_n) - n * mean(d_n * n)), without the mean(d_n) term for RMSNorm.
  d_x = d_normalized - normalized * jnp.mean(d_normalized * normalized, axis=-1, keepdims=True)
  if subtract_mean:
    d_x = d_x - jnp.mean(d_normalized, axis=-1, keepdims=True)
  return (d_x * rstd).astype(x.dtype), d_scale, d_bias


normalize.defvjp(_normalize_fwd, _normalize_bwd)


class LayerNorm(nn.Module):
  """LayerNorm over the last (embed) axis: (x - mean) / sqrt(var + eps) * scale + bias, statistics in float32
  whatever the compute dtype (`normalize`). Parameters `scale` and `bias`, as flax's and big_vision's."""
  eps: float = 1e-6
  use_bias: bool = True
  subtract_mean: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = self.param("scale", with_axes(nn.initializers.ones, ("embed",)), (x.shape[-1],), self.param_dtype)
    bias = (self.param("bias", with_axes(nn.initializers.zeros, ("embed",)), (x.shape[-1],), self.param_dtype)
            if self.use_bias else None)
    return normalize(x, scale, bias, self.eps, self.subtract_mean, jnp.dtype(self.dtype))


class RMSNorm(LayerNorm):
  """T5's LayerNorm: x / rms(x) * scale, no mean subtraction, no bias; statistics in float32."""
  use_bias: bool = False
  subtract_mean: bool = False


def layer_norm(eps: float = 1e-6, *, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
               name: str | None = None) -> LayerNorm:
  return LayerNorm(eps=eps, dtype=dtype, param_dtype=param_dtype, name=name)


# Which kernel computes attention (gin: vlm.layers.attention_implementation.name):
#   'reference'  the two einsums below with a float32 softmax; materialises the [q_len, kv_len] logits.
#   'xla'        jax.nn.dot_product_attention's XLA implementation.
#   'cudnn'      jax.nn.dot_product_attention's cuDNN flash attention (NVIDIA GPUs, bfloat16 / float16): logits
#                and probabilities never leave the chip's SRAM, the softmax statistics stay float32 inside it.
#   'auto'       'cudnn' on a GPU for half-precision inputs, else 'reference': on CPU jax.nn's [batch, len,
#                heads, head_dim] layout costs a transpose of q, k, v and the output around our heads-major one.
# On TPU, jax.experimental.pallas.ops.tpu's flash / splash attention kernels are the counterpart; they are not
# wired here (no TPU to test them on).
ATTENTION_IMPLEMENTATIONS = ("auto", "reference", "xla", "cudnn")


@gin.configurable(module="vlm.layers")
def attention_implementation(name: str = "auto") -> str:
  if name not in ATTENTION_IMPLEMENTATIONS:
    raise ValueError(f"vlm.layers.attention_implementation.name={name!r} is not one of "
                     f"{', '.join(ATTENTION_IMPLEMENTATIONS)}")
  return name


def attention_kernel(dtype, platform: str | None = None) -> str:
  """The kernel attention runs for inputs of `dtype` on `platform` ('cpu' | 'gpu' | 'tpu'; default: JAX's
  default backend) under `attention_implementation`: 'auto' resolved."""
  name = attention_implementation()
  if name == "auto":
    half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
    return "cudnn" if half and (platform or jax.default_backend()) == "gpu" else "reference"
  return name


def dot_product_attention(query: jax.Array, key: jax.Array, value: jax.Array, *,
                          bias: jax.Array | None = None, mask: jax.Array | None = None,
                          scale: float = 1.0) -> jax.Array:
  """softmax(scale * q.k + bias, masked) v, heads-major, by the kernel `attention_implementation` names.

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
  implementation = attention_kernel(query.dtype)
  if implementation != "reference":
    q, k, v = (jnp.swapaxes(x, 1, 2) for x in (query, key, value))  # jax.nn's [batch, len, heads, head_dim]
    out = jax.nn.dot_product_attention(q, k, v, bias=None if bias is None else bias.astype(query.dtype),
                                       mask=mask, scale=scale, implementation=implementation)
    return jnp.swapaxes(out, 1, 2).astype(query.dtype)
  if scale != 1.0:
    query = query * jnp.asarray(scale, query.dtype)
  logits = jnp.einsum("bhqd,bhkd->bhqk", query, key).astype(jnp.float32)
  if bias is not None:
    logits = logits + bias.astype(jnp.float32)
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  return jnp.einsum("bhqk,bhkd->bhqd", softmax(logits, value.dtype), value)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def softmax(logits: jax.Array, dtype) -> jax.Array:
  """Softmax over the last axis, computed in float32 and returned in `dtype` (the values' dtype).

  Its backward keeps only those `dtype` probabilities, which the probabilities-times-values product keeps
  anyway, and computes d logits = p * (g - sum(g * p)) in float32 from them. Autodiff of jax.nn.softmax on
  float32 logits keeps its float32 exponentials besides: [batch, heads, q_len, kv_len] at 4 bytes an element
  in every layer, 3x the bfloat16 probabilities. In float32 the two are the same computation.
  """
  return jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(dtype)


def _softmax_fwd(logits, dtype):
  probabilities = softmax(logits, dtype)
  return probabilities, probabilities


def _softmax_bwd(dtype, probabilities, grad):
  del dtype
  p, g = probabilities.astype(jnp.float32), grad.astype(jnp.float32)
  return (p * (g - jnp.sum(g * p, axis=-1, keepdims=True)),)


softmax.defvjp(_softmax_fwd, _softmax_bwd)


class HeadsProjection(nn.Module):
  """[batch, len, embed] -> [batch, heads, len, head_dim], kernel [embed, heads, head_dim] (+ bias [heads, head_dim])."""
  num_heads: int
  head_dim: int
  use_bias: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Initializer | None = None  # default: xavier with fan-in embed, fan-out (heads, head_dim)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    shape = (x.shape[-1], self.num_heads, self.head_dim)
    init = self.kernel_init or nn.initializers.variance_scaling(1.0, "fan_avg", "uniform", in_axis=0,
                                                                out_axis=(1, 2))
    kernel = self.param("kernel", with_axes(init, ("embed", "heads", "kv")), shape, self.param_dtype)
    # A plain [.., embed] x [embed, heads * head_dim] product, then the heads axis moved forward. Asked for
    # the heads-major output in one einsum, XLA:CPU re-lays every kernel out as [heads * head_dim, embed]
    # before the dot, on every call and inside decoding loops (a copy of each q/k/v kernel at every decoded
    # token; measured: T5-small decoding 15 -> 10 ms a step at batch 1, its forward 112 -> 75 ms).
    y = matmul(x.astype(self.dtype), kernel.astype(self.dtype).reshape(shape[0], -1))
    y = y.reshape(x.shape[:2] + shape[1:]).transpose(0, 2, 1, 3)
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
  kernel_init: Initializer | None = None  # default: xavier with fan-in (heads, head_dim), fan-out embed

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    shape = (x.shape[1], x.shape[3], self.features)
    init = self.kernel_init or nn.initializers.variance_scaling(1.0, "fan_avg", "uniform", in_axis=(0, 1),
                                                                out_axis=2)
    kernel = self.param("kernel", with_axes(init, ("heads", "kv", "embed")), shape, self.param_dtype)
    # Heads back behind the length, then one flat product (see HeadsProjection).
    merged = x.transpose(0, 2, 1, 3).reshape(x.shape[0], x.shape[2], -1)
    y = matmul(merged, kernel.astype(self.dtype).reshape(-1, self.features))
    if self.use_bias:
      y = y + self.param("bias", with_axes(nn.initializers.zeros, ("embed",)), (self.features,),
                         self.param_dtype).astype(self.dtype)
    return y


class MultiHeadAttention(nn.Module):
  """Multi-head attention with separate query/key/value/out projections: the one attention of the project.

  Kernels are [embed, heads, kv] and [heads, kv, embed] (big_vision / flaxformer layout), so checkpoints
  from those systems load by reshaping nothing. Besides the plain call, decoding uses `project_kv` (keys and
  values of a sequence, computed once: cross-attention over the encoder) and `decode_step` (one new query
  position appended to a KV cache).
  """
  num_heads: int
  features: int  # the model width: the output projection maps back to it
  head_dim: int | None = None  # default: features // num_heads
  use_bias: bool = True
  scale_logits: bool = True  # 1/sqrt(head_dim); T5 folds it into the query's initialisation instead
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    head_dim = self.head_dim or self.features // self.num_heads
    kw = dict(use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype)
    inits = {}  # None: each projection's default (xavier over its fan-in/fan-out axes)
    if not self.scale_logits:
      # T5 / UL2: fan-in normal, and the logits' 1/sqrt(head_dim) is folded into the query's init.
      fan_in = functools.partial(nn.initializers.variance_scaling, 1.0, "fan_in", "normal")
      inits = dict(query=_scaled(fan_in(in_axis=0, out_axis=(1, 2)), head_dim ** -0.5),
                   key=fan_in(in_axis=0, out_axis=(1, 2)), value=fan_in(in_axis=0, out_axis=(1, 2)),
                   out=fan_in(in_axis=(0, 1), out_axis=2))
    self.query = HeadsProjection(self.num_heads, head_dim, kernel_init=inits.get("query"), **kw)
    self.key = HeadsProjection(self.num_heads, head_dim, kernel_init=inits.get("key"), **kw)
    self.value = HeadsProjection(self.num_heads, head_dim, kernel_init=inits.get("value"), **kw)
    self.out = HeadsOutput(self.features, kernel_init=inits.get("out"), **kw)
    self.scale = head_dim ** -0.5 if self.scale_logits else 1.0

  def __call__(self, inputs_q: jax.Array, inputs_kv: jax.Array, *, mask: jax.Array | None = None,
               bias: jax.Array | None = None) -> jax.Array:
    """inputs_q: [batch, q_len, embed]; inputs_kv: [batch, kv_len, embed] -> [batch, q_len, features]."""
    key, value = self.project_kv(inputs_kv)
    return self.attend(inputs_q, key, value, mask=mask, bias=bias)

  def project_kv(self, inputs_kv: jax.Array) -> tuple[jax.Array, jax.Array]:
    """[batch, kv_len, embed] -> key, value, each [batch, heads, kv_len, head_dim]."""
    return self.key(inputs_kv), self.value(inputs_kv)

  def attend(self, inputs_q: jax.Array, key: jax.Array, value: jax.Array, *, mask: jax.Array | None = None,
             bias: jax.Array | None = None) -> jax.Array:
    """Attention of inputs_q [batch, q_len, embed] over projected keys/values -> [batch, q_len, features]."""
    out = dot_product_attention(self.query(inputs_q), key, value, bias=bias, mask=mask, scale=self.scale)
    return self.out(out)

  def decode_step(self, inputs_q: jax.Array, cache: tuple[jax.Array, jax.Array], index: jax.Array, *,
                  mask: jax.Array | None = None, bias: jax.Array | None = None
                  ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """Self-attention for one new position while decoding.

    Args:
      inputs_q: [batch, 1, embed], the new position (it is also the key/value written to the cache).
      cache: (key, value), each [batch, heads, max_len, head_dim]; positions after `index` are garbage and
        must be masked out by `mask`.
      index: int32 scalar, the position of inputs_q.
      mask, bias: broadcastable to [batch, heads, 1, max_len].

    Returns:
      ([batch, 1, features], the updated cache).
    """
    key, value = self.project_kv(inputs_q)
    cache = tuple(jax.lax.dynamic_update_slice_in_dim(c, new.astype(c.dtype), index, axis=2)
                  for c, new in zip(cache, (key, value)))
    return self.attend(inputs_q, *cache, mask=mask, bias=bias), cache


def _scaled(init: Initializer, factor: float) -> Initializer:
  return lambda *args, **kwargs: init(*args, **kwargs) * factor


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
    # The activation is recomputed in the backward pass from its input, which the first product's backward
    # keeps anyway: autodiff of tanh-GELU keeps five [batch, len, mlp] intermediates (its output among them).
    h = constrain(jax.checkpoint(self.activation)(h), ("batch", "length", "mlp"))
    return dense(embed, ("mlp", "embed"), name="Dense_1", **kw)(h)


class GatedMlp(nn.Module):
  """act(x W_0) * (x W_1) -> W_o, no biases: the T5 v1.1 / UL2 MLP (SiLU for UL2, tanh-GELU for T5 v1.1)."""
  mlp_dim: int
  activation: Callable[[jax.Array], jax.Array] = jax.nn.silu
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [batch, length, embed] -> same shape."""
    kw = dict(use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
              kernel_init=nn.initializers.variance_scaling(1.0, "fan_in", "normal"))
    gated = jax.checkpoint(lambda a, b: self.activation(a) * b)  # see MlpBlock
    h = gated(dense(self.mlp_dim, ("embed", "mlp"), name="wi_0", **kw)(x),
              dense(self.mlp_dim, ("embed", "mlp"), name="wi_1", **kw)(x))
    h = constrain(h, ("batch", "length", "mlp"))
    return dense(x.shape[-1], ("mlp", "embed"), name="wo", **kw)(h)


def rms_norm(eps: float = 1e-6, *, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
             name: str | None = None) -> RMSNorm:
  return RMSNorm(eps=eps, dtype=dtype, param_dtype=param_dtype, name=name)


def embed(num_embeddings: int, features: int, *, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
          name: str | None = None) -> nn.Embed:
  """Token embedding table [vocab, embed] (its `attend` gives tied output logits)."""
  return nn.Embed(num_embeddings, features, dtype=dtype, param_dtype=param_dtype,
                  embedding_init=with_axes(nn.initializers.normal(1.0), ("vocab", "embed")), name=name)


def relative_position_buckets(relative_position: np.ndarray, *, bidirectional: bool, num_buckets: int,
                              max_distance: int) -> np.ndarray:
  """T5's bucketing of key_position - query_position: exact for small distances, log-spaced up to max_distance.

  Computed in numpy float32 with the same operations as the reference implementations, so that distances on
  a bucket boundary (where log2 ratios are whole numbers) land in the same bucket as in HF / T5X.
  """
  relative_position = np.asarray(relative_position, np.int64)
  buckets = np.zeros_like(relative_position)
  if bidirectional:
    num_buckets //= 2
    buckets += (relative_position > 0) * num_buckets  # keys after the query get the upper half
    distance = np.abs(relative_position)
  else:
    distance = np.maximum(-relative_position, 0)  # a causal decoder never looks ahead
  max_exact = num_buckets // 2
  with np.errstate(divide="ignore"):  # log(0) on the exact (small) branch, never used
    scaled = np.log(distance.astype(np.float32) / np.float32(max_exact)) / np.float32(
        np.log(max_distance / max_exact)) * np.float32(num_buckets - max_exact)
  large = np.minimum(max_exact + np.nan_to_num(scaled, neginf=0).astype(np.int64), num_buckets - 1)
  return buckets + np.where(distance < max_exact, distance, large)


class RelativePositionBias(nn.Module):
  """Per-head learned bias by relative-position bucket, one table per stack (T5): [heads, buckets]."""
  num_heads: int
  num_buckets: int = 32
  max_distance: int = 128
  bidirectional: bool = True
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, q_len: int, k_len: int, q_offset: jax.Array | int = 0) -> jax.Array:
    """Bias [1, heads, q_len, k_len] for queries at positions q_offset + 0..q_len-1 and keys at 0..k_len-1.

    `q_offset` may be traced (a decoding step): the buckets of every relative position a query can see are
    tabulated statically and the traced offset only indexes the table.
    """
    table = self.param("rel_embedding", with_axes(nn.initializers.normal(1.0), ("heads", "relpos_buckets")),
                       (self.num_heads, self.num_buckets), self.param_dtype)
    max_offset = k_len - 1  # a query position never exceeds the last key position
    relative = np.arange(-(max_offset + q_len - 1), k_len)  # every key - query the call can produce
    buckets = relative_position_buckets(relative, bidirectional=self.bidirectional,
                                        num_buckets=self.num_buckets, max_distance=self.max_distance)
    # index of (key k - query q) in `relative` is k - q + max_offset + q_len - 1
    index = (jnp.arange(k_len)[None, :] - jnp.arange(q_len)[:, None] - q_offset + max_offset + q_len - 1)
    bucket = jnp.asarray(buckets, jnp.int32)[index]  # [q_len, k_len]
    return jnp.take(table, bucket, axis=1)[None]  # [1, heads, q_len, k_len]


class EncoderBlock(nn.Module):
  """Pre-LN transformer block: x + Attn(LN(x)), then x + MLP(LN(x)). Shared by the ViT and the text tower."""
  mlp_dim: int
  num_heads: int
  eps: float = 1e-6
  activation: Callable[[jax.Array], jax.Array] = functools.partial(jax.nn.gelu, approximate=True)  # the MLP's
  scanned: bool = False  # under nn.scan the block returns (x, None)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None):
    """x: [batch, length, embed]; mask: optional boolean [batch, 1, 1, length] over keys."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = constrain(x, ("batch", "length", "embed"))
    y = layer_norm(self.eps, name="LayerNorm_0", **kw)(x)
    y = MultiHeadAttention(self.num_heads, x.shape[-1], name="MultiHeadDotProductAttention_0", **kw)(
        y, y, mask=mask)
    x = x + y
    y = layer_norm(self.eps, name="LayerNorm_1", **kw)(x)
    y = MlpBlock(self.mlp_dim, self.activation, name="MlpBlock_0", **kw)(y)
    x = x + y
    return (x, None) if self.scanned else x


class Encoder(nn.Module):
  """A stack of EncoderBlocks followed by a final LayerNorm.

  With `scan`, the blocks are one `nn.scan` over a stacked parameter tree (leading axis 'layers'): compile
  time stays flat in depth, which a 48-layer ViT-G needs. `remat` recomputes each block's activations in the
  backward pass, keeping what its policy names (REMAT_POLICIES: 'none', 'full', 'dots', ...).
  """
  depth: int
  mlp_dim: int
  num_heads: int
  eps: float = 1e-6
  activation: Callable[[jax.Array], jax.Array] = functools.partial(jax.nn.gelu, approximate=True)  # the MLPs'
  scan: bool = False
  remat: str = "none"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    block_kw = dict(mlp_dim=self.mlp_dim, num_heads=self.num_heads, eps=self.eps, activation=self.activation,
                    dtype=self.dtype, param_dtype=self.param_dtype)
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


# What a rematerialised block keeps for its backward; the rest is recomputed ('none': keep everything).
_REMAT_POLICIES = {
    "full": None,  # keep nothing but the block's input
    "dots": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,  # projections and MLP products
    # ... and the attention's batched products too (q.k logits, probabilities.v): the [heads, len, len] logits
    # are kept, so this trades the most memory for the least recomputation.
    "dots_with_batch": jax.checkpoint_policies.checkpoint_dots,
    # 'dots', but kept in host memory (pinned), copied back for the backward: device memory as 'full'.
    "offload_dots": jax.checkpoint_policies.offload_dot_with_no_batch_dims("device", "pinned_host"),
}
REMAT_POLICIES = ("none", *_REMAT_POLICIES)


def remat_block(block_cls: type[nn.Module], remat: str, under_scan: bool = False) -> type[nn.Module]:
  """Wraps a block class in nn.remat with a named policy; 'none' returns it unchanged."""
  if remat == "none":
    return block_cls
  if remat not in _REMAT_POLICIES:
    raise ValueError(f"remat={remat!r} is not one of {', '.join(map(repr, REMAT_POLICIES))}")
  # Under scan the loop already stops XLA from CSE-ing the recomputation away; the barrier only costs.
  return nn.remat(block_cls, policy=_REMAT_POLICIES[remat], prevent_cse=not under_scan)
