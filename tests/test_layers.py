"""The two backward-pass layouts `vlm.layers` chooses for XLA:CPU: same values as autodiff, different HLO."""

import re

import jax
import jax.numpy as jnp
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


def test_materialize_gradient_is_the_identity():
  x = jax.random.normal(jax.random.key(1), (2, 5, 3))
  assert np.array_equal(np.asarray(layers.materialize_gradient(x)), np.asarray(x))
  grad = jax.jit(jax.grad(lambda x: jnp.sum(layers.materialize_gradient(x) * x)))(x)
  np.testing.assert_allclose(np.asarray(grad), 2 * np.asarray(x), rtol=1e-6)


def _largest_fusion_in_backward(depth: int) -> int:
  """Operand count of the biggest fusion in an unrolled encoder stack's compiled backward pass."""
  encoder = layers.Encoder(depth, mlp_dim=64, num_heads=4)
  x = jnp.ones((2, 8, 32))
  params = encoder.init(jax.random.key(0), x)
  hlo = _compiled_hlo(jax.grad(lambda p: jnp.sum(encoder.apply(p, x) ** 2)), params)
  return max(len(m.group(1).split(", %")) for m in re.finditer(r"= \S+ fusion\((.*?)\), kind", hlo))


def test_unrolled_stack_backward_fusions_do_not_grow_with_depth(monkeypatch):
  assert _largest_fusion_in_backward(2) == _largest_fusion_in_backward(6)
  # Without the cut, XLA:CPU fuses every later layer's residual gradient into each layer's fusions.
  monkeypatch.setattr(layers, "materialize_gradient", lambda x: x)
  assert _largest_fusion_in_backward(6) > 2 * _largest_fusion_in_backward(2)


# ------------------------------------------------------------------------------------------------------------------
# The attention kernel switch (vlm.layers.attention_implementation)
# ------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def implementation():
  """Sets vlm.layers.attention_implementation.name for a test, and restores the default after it."""
  import gin  # pylint: disable=import-outside-toplevel

  def use(name):
    with gin.unlock_config():
      gin.bind_parameter("vlm.layers.attention_implementation.name", name)
  yield use
  use("auto")


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
def test_xla_kernel_equals_the_reference_values_and_gradients(implementation, causal):
  query, key, value, bias, mask = _attention_inputs(causal)

  def run(name):
    implementation(name)
    fn = lambda q, k, v, b: layers.dot_product_attention(q, k, v, bias=b, mask=mask, scale=0.35)  # noqa: E731
    loss = lambda *args: jnp.sum(jnp.sin(fn(*args)))  # noqa: E731
    return jax.jit(fn)(query, key, value, bias), jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(query, key, value, bias)

  (ref, ref_grads), (xla, xla_grads) = run("reference"), run("xla")
  np.testing.assert_allclose(np.asarray(xla), np.asarray(ref), atol=1e-5)
  for got, want in zip(xla_grads, ref_grads, strict=True):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


def test_a_whole_model_decodes_the_same_with_either_kernel(implementation):
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
    implementation(name)
    logits = module.apply({"params": params}, prompt, targets)
    return logits, ul2.generate(module, params, prompt, max_decode_len=6).tokens

  (ref_logits, ref_tokens), (xla_logits, xla_tokens) = run("reference"), run("xla")
  np.testing.assert_allclose(np.asarray(xla_logits), np.asarray(ref_logits), atol=1e-4)
  np.testing.assert_array_equal(np.asarray(xla_tokens), np.asarray(ref_tokens))


def test_the_kernel_choice(implementation):
  assert layers._resolved_implementation(jnp.bfloat16) == "reference"  # pylint: disable=protected-access  (CPU)
  implementation("flash")
  with pytest.raises(ValueError, match="attention_implementation.name='flash' is not one of auto, reference, xla"):
    layers.dot_product_attention(*_attention_inputs(False)[:3])
