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
