"""The SigLIP losses against their published formulas, and the chunked loss against the plain one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax.sharding import NamedSharding, PartitionSpec as P

from encoders import siglip
from vlm import partitioning


def embeddings(batch, dim=16, seed=0):
  rng = np.random.default_rng(seed)
  zimg = rng.normal(size=(batch, dim)).astype(np.float32)
  ztxt = (zimg + 0.7 * rng.normal(size=(batch, dim))).astype(np.float32)  # correlated, like trained towers
  return zimg, ztxt


def reference_sigmoid_loss(zimg, ztxt, t_prime, bias):
  """Written from the paper with torch: -1/|B| sum_ij log sigmoid(z_ij (t x_i.y_j + b))."""
  x = torch.nn.functional.normalize(torch.from_numpy(zimg).double(), dim=-1)
  y = torch.nn.functional.normalize(torch.from_numpy(ztxt).double(), dim=-1)
  logits = np.exp(t_prime) * x @ y.T + bias
  z = 2 * torch.eye(len(x), dtype=torch.float64) - 1
  return float(-torch.nn.functional.logsigmoid(z * logits).sum() / len(x))


def test_sigmoid_loss_matches_formula():
  zimg, ztxt = embeddings(12)
  for t_prime, bias in [(np.log(10.0), -10.0), (1.3, 0.5)]:
    ours = float(siglip.sigmoid_loss(zimg, ztxt, t_prime, bias))
    assert ours == pytest.approx(reference_sigmoid_loss(zimg, ztxt, t_prime, bias), rel=1e-5)


def test_softmax_loss_matches_clip_formula():
  zimg, ztxt = embeddings(10)
  x = torch.nn.functional.normalize(torch.from_numpy(zimg).double(), dim=-1)
  y = torch.nn.functional.normalize(torch.from_numpy(ztxt).double(), dim=-1)
  logits = 2.0 * x @ y.T
  labels = torch.arange(10)
  ref = (torch.nn.functional.cross_entropy(logits, labels) + torch.nn.functional.cross_entropy(logits.T, labels)) / 2
  assert float(siglip.softmax_loss(zimg, ztxt, np.log(2.0))) == pytest.approx(float(ref), rel=1e-5)


@pytest.mark.parametrize("num_partitions", [1, 2])
def test_chunked_loss_equals_plain_loss_on_8_devices(num_partitions):
  assert jax.device_count() == 8
  mesh = partitioning.make_mesh(num_partitions)
  zimg, ztxt = embeddings(32, seed=3)
  args = (jnp.asarray(zimg), jnp.asarray(ztxt), jnp.float32(1.7), jnp.float32(-3.0))

  plain = jax.value_and_grad(siglip.sigmoid_loss, argnums=(0, 1, 2, 3))
  chunked = jax.jit(jax.value_and_grad(
      lambda *a: siglip.chunked_sigmoid_loss(*a, mesh=mesh), argnums=(0, 1, 2, 3)))
  rows = NamedSharding(mesh, P("data"))
  sharded = (jax.device_put(args[0], rows), jax.device_put(args[1], rows), args[2], args[3])

  (v1, g1), (v2, g2) = plain(*args), chunked(*sharded)
  np.testing.assert_allclose(v2, v1, rtol=1e-6)
  for a, b in zip(g2, g1):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


def test_chunked_loss_never_materialises_the_global_logits():
  mesh = partitioning.make_mesh(1)
  zimg, ztxt = embeddings(64)
  rows = NamedSharding(mesh, P("data"))
  fn = jax.jit(lambda a, b: siglip.chunked_sigmoid_loss(a, b, 2.0, -1.0, mesh=mesh))
  hlo = fn.lower(jax.device_put(zimg, rows), jax.device_put(ztxt, rows)).compile().as_text()
  assert "f32[64,64]" not in hlo and "f32[8,8]" in hlo  # 64 global rows, 8 per device
