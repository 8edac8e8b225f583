"""The two backward-pass layouts `vlm.layers` chooses for XLA:CPU: same values as autodiff, different HLO."""

import re

import jax
import jax.numpy as jnp
import flax.linen as nn
import numpy as np
import pytest

from vlm import layers


def _compiled_hlo(fn, *args) -> str:
  return jax.jit(fn).lower(*args).compile().as_text()


@pytest.mark.parametrize("x_shape", [(6, 5), (2, 3, 5)])
def test_matmul_gradients_equal_autodiff(x_shape):
  kx, kw, kc = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, x_shape)
  w = jax.random.normal(kw, (5, 4))
  cotangent = jax.random.normal(kc, x_shape[:-1] + (4,))
  ours = jax.jit(jax.grad(lambda x, w: jnp.sum(layers.matmul(x, w) * cotangent), argnums=(0, 1)))(x, w)
  plain = jax.jit(jax.grad(lambda x, w: jnp.sum((x @ w) * cotangent), argnums=(0, 1)))(x, w)
  np.testing.assert_allclose(np.asarray(layers.matmul(x, w)), np.asarray(x @ w), rtol=1e-6)
  for got, want in zip(ours, plain):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)


def test_matmul_weight_gradient_contracts_row_major_operands_on_cpu():
  """XLA:CPU's fast products (YNNPACK) take only [m, k] x [k, n]; autodiff's dW contracts x's first axis."""
  x = jnp.ones((64, 32))
  w = jnp.ones((32, 48))

  def lhs_contracting_dims(fn):
    hlo = _compiled_hlo(jax.grad(lambda w: jnp.sum(fn(x, w) ** 2)), w)
    return set(re.findall(r" dot\(.*lhs_contracting_dims=\{(\d+)\}", hlo))

  assert "0" in lhs_contracting_dims(lambda x, w: x @ w)  # the layout `matmul` exists to avoid
  assert lhs_contracting_dims(layers.matmul) == {"1"}


def test_dense_layers_go_through_matmul():
  dense = layers.dense(4, ("embed", "mlp"))
  x = jnp.ones((2, 3, 5))
  params = dense.init(jax.random.key(0), x)
  hlo = _compiled_hlo(jax.grad(lambda p: jnp.sum(dense.apply(p, x) ** 2)), params)
  assert set(re.findall(r" dot\(.*lhs_contracting_dims=\{(\d+)\}", hlo)) == {"1"}


def _largest_fusion_in_backward(depth: int) -> int:
  """Operand count of the biggest fusion in an unrolled encoder stack's compiled backward pass."""
  encoder = layers.Encoder(depth, mlp_dim=64, num_heads=4)
  x = jnp.ones((2, 8, 32))
  params = encoder.init(jax.random.key(0), x)
  hlo = _compiled_hlo(jax.grad(lambda p: jnp.sum(encoder.apply(p, x) ** 2)), params)
  return max(len(m.group(1).split(", %")) for m in re.finditer(r"= \S+ fusion\((.*?)\), kind", hlo))


def test_unrolled_stack_backward_fusions_do_not_grow_with_depth():
  # XLA:CPU once fused every later layer's residual gradient into each layer's fusions (the backward grew with
  # depth squared); the LayerNorm's own backward (`normalize`) now ends the chain at every block.
  assert _largest_fusion_in_backward(2) == _largest_fusion_in_backward(6)


# ------------------------------------------------------------------------------------------------------------------
# What the backward pass keeps: norms and softmax with their own VJPs, activations recomputed
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ours, flax_norm", [(layers.LayerNorm(eps=1e-6), nn.LayerNorm(1e-6, use_fast_variance=False)),
                                             (layers.RMSNorm(eps=1e-6), nn.RMSNorm(1e-6))])
def test_norms_equal_flax_in_values_and_gradients(ours, flax_norm):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(3.0, 5.0, (2, 5, 16)), jnp.float32)  # an offset mean, as residual streams have
  params = {"params": {k: jnp.asarray(rng.normal(size=v.shape), jnp.float32)
                       for k, v in flax_norm.init(jax.random.key(0), x)["params"].items()}}
  assert jax.tree.map(jnp.shape, nn.unbox(ours.init(jax.random.key(0), x))) == jax.tree.map(jnp.shape, params)
  probe = jnp.asarray(rng.normal(size=x.shape), jnp.float32)

  def loss(module, p, x):
    return jnp.sum(module.apply(p, x) * probe)

  np.testing.assert_allclose(ours.apply(params, x), flax_norm.apply(params, x), rtol=1e-5, atol=1e-5)
  ours_grads = jax.grad(lambda p, x: loss(ours, p, x), argnums=(0, 1))(params, x)
  flax_grads = jax.grad(lambda p, x: loss(flax_norm, p, x), argnums=(0, 1))(params, x)
  for a, b in zip(jax.tree.leaves(ours_grads), jax.tree.leaves(flax_grads)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  # bfloat16 compute: the statistics stay float32, the output is bfloat16 and within its rounding.
  half = ours.clone(dtype=jnp.bfloat16).apply(params, x.astype(jnp.bfloat16))
  assert half.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(half, np.float32), flax_norm.apply(params, x), rtol=2e-2, atol=2e-2)


def test_softmax_equals_jax_in_values_and_gradients():
  rng = np.random.default_rng(1)
  logits = jnp.asarray(rng.normal(size=(2, 3, 4, 7)) * 4, jnp.float32).at[..., 2].set(jnp.finfo(jnp.float32).min)
  probe = jnp.asarray(rng.normal(size=logits.shape), jnp.float32)
  np.testing.assert_allclose(layers.softmax(logits, jnp.float32), jax.nn.softmax(logits), rtol=1e-6)
  ours, ref = (jax.grad(lambda z, f=f: jnp.sum(f(z) * probe))(logits)
               for f in (lambda z: layers.softmax(z, jnp.float32), jax.nn.softmax))
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-7)
  half = jax.grad(lambda z: jnp.sum(layers.softmax(z, jnp.bfloat16).astype(jnp.float32) * probe))(logits)
  np.testing.assert_allclose(half, ref, rtol=0.05, atol=0.02)


def _backward_residuals(module, x):
  """The arrays jax.vjp keeps from module's forward pass for its backward (the VJP closure's leaves)."""
  params = module.init(jax.random.key(0), x)
  _, vjp = jax.vjp(lambda p, x: module.apply(p, x), params, x)
  return jax.tree.leaves(vjp)


def test_a_bfloat16_block_keeps_its_activations_for_the_backward_in_bfloat16_only():
  b, t, d = 2, 6, 32
  x = jnp.ones((b, t, d), jnp.bfloat16)
  kept = _backward_residuals(layers.EncoderBlock(mlp_dim=64, num_heads=4, dtype="bfloat16"), x)
  float32 = [r.shape for r in kept if r.dtype == jnp.float32]
  # The four norm parameters and each norm's two per-token statistics: no float32 copy of x, of the attention
  # logits or exponentials (which autodiff of jax.nn.softmax and flax's LayerNorm keep).
  assert sorted(float32) == sorted([(d,)] * 4 + [(b, t, 1)] * 4), float32
  # The tanh-GELU's intermediates are recomputed: of the [b, t, mlp] tensors only its input and output stay.
  assert sum(r.shape == (b, t, 64) for r in kept) == 2
  # The attention keeps q, k, v and one bfloat16 probability tensor.
  assert sum(r.shape == (b, 4, t, t) for r in kept) == 1


def test_a_gated_mlp_recomputes_its_gate():
  x = jnp.ones((2, 6, 32), jnp.bfloat16)
  kept = _backward_residuals(layers.GatedMlp(64, dtype="bfloat16"), x)
  # wi_0 x and wi_1 x (for the gate's backward) and the gated product (wo's weight gradient); autodiff of
  # silu(a) * b keeps its sigmoid and silu besides.
  assert sum(r.shape == (2, 6, 64) for r in kept) == 3


# ------------------------------------------------------------------------------------------------------------------
# The attention kernel switch (vlm.layers.attention_implementation)
# ------------------------------------------------------------------------------------------------------------------


def implementation(name: str):
  """vlm.layers.attention_implementation.name bound to `name` inside a `with` block, then restored."""
  from tasks.registry import gin_bound  # pylint: disable=import-outside-toplevel
  return gin_bound("vlm.layers.attention_implementation.name", name)


def _attention_inputs(causal: bool):
  rng = np.random.default_rng(0)
  b, h, q, k, d = 2, 3, 6, 6, 8
  query, key, value = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((b, h, q, d), (b, h, k, d), (b, h, k, d)))
  bias = jnp.asarray(rng.normal(size=(1, h, q, k)), jnp.float32)  # T5's relative-position bias: per head
  mask = jnp.asarray(rng.random((b, 1, 1, k)) > 0.3).at[0, 0, 0, :].set(False)  # padding; one row all padding
  if causal:
    mask = mask & jnp.tril(jnp.ones((q, k), bool))
  return query, key, value, bias, mask


@pytest.mark.parametrize("causal", [False, True])
def test_xla_kernel_equals_the_reference_values_and_gradients(causal):
  query, key, value, bias, mask = _attention_inputs(causal)

  def run(name):
    fn = lambda q, k, v, b: layers.dot_product_attention(q, k, v, bias=b, mask=mask, scale=0.35)  # noqa: E731
    loss = lambda *args: jnp.sum(jnp.sin(fn(*args)))  # noqa: E731
    with implementation(name):
      return jax.jit(fn)(query, key, value, bias), jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(query, key, value, bias)

  (ref, ref_grads), (xla, xla_grads) = run("reference"), run("xla")
  np.testing.assert_allclose(np.asarray(xla), np.asarray(ref), atol=1e-5)
  for got, want in zip(xla_grads, ref_grads, strict=True):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


def test_a_whole_model_decodes_the_same_with_either_kernel():
  """A UL2 (relative-position bias, padding and causal masks, the KV-cache decode step): the same logits and
  the same greedy tokens through jax.nn's XLA kernel as through the reference einsums."""
  from vlm import ul2  # pylint: disable=import-outside-toplevel
  config = ul2.config("pico", vocab_size=64)
  module = ul2.UL2(config)
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32) * 0.3, ul2.abstract_params(config))
  prompt = jnp.asarray([[5, 9, 12, 1, 0, 0], [7, 3, 2, 8, 4, 1]], jnp.int32)
  targets = jnp.asarray([[0, 6, 11, 1], [0, 2, 2, 1]], jnp.int32)

  def run(name):
    with implementation(name):
      logits = module.apply({"params": params}, prompt, targets)
      return logits, ul2.generate(module, params, prompt, max_decode_len=6).tokens

  (ref_logits, ref_tokens), (xla_logits, xla_tokens) = run("reference"), run("xla")
  np.testing.assert_allclose(np.asarray(xla_logits), np.asarray(ref_logits), atol=1e-4)
  np.testing.assert_array_equal(np.asarray(xla_tokens), np.asarray(ref_tokens))


def test_the_kernel_choice():
  assert layers.attention_kernel(jnp.bfloat16) == "reference"  # on this CPU
  assert layers.attention_kernel(jnp.bfloat16, "gpu") == "cudnn"
  assert layers.attention_kernel(jnp.float32, "gpu") == layers.attention_kernel(jnp.bfloat16, "tpu") == "reference"
  with implementation("xla"):
    assert layers.attention_kernel(jnp.bfloat16, "gpu") == "xla"
  with implementation("flash"), pytest.raises(
      ValueError, match="attention_implementation.name='flash' is not one of auto, reference, xla"):
    layers.dot_product_attention(*_attention_inputs(False)[:3])
