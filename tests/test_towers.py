"""Tower options that must not change the numbers (scan, remat), logical axis names, and size presets."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from encoders import siglip, siglip_checkpoints
from encoders import text as text_lib
from encoders import vit as vit_lib
from tests import hf_fixtures
from vlm import checkpoints, partitioning


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("hf"))
  hf_fixtures.save_siglip(directory)
  return siglip_checkpoints.read(directory)


def _naflex_inputs() -> dict:
  """Two images of other aspect ratios padded to 20 patches of 8 px (the fixture's ViT)."""
  patches, mask, shapes = hf_fixtures.naflex_inputs([(2, 7), (4, 4)], 20, patch_size=8)
  return dict(patches=jnp.asarray(patches), mask=jnp.asarray(mask), spatial_shapes=jnp.asarray(shapes))


@pytest.mark.parametrize("scan, remat, naflex", [(True, "none", False), (True, "dots", False), (False, "full", False),
                                                 (True, "dots", True), (False, "full", True),
                                                 (True, "dots_with_batch", False), (True, "offload_dots", False)])
def test_scan_and_remat_give_the_same_outputs_and_gradients(loaded, scan, remat, naflex):
  config, params = loaded
  inputs = _naflex_inputs() if naflex else dict(images=jnp.asarray(hf_fixtures.images(2, 32)))
  variant = vit_lib.ViT(dataclasses.replace(config.image, scan=scan, remat=remat))
  variant_params = checkpoints.stack_layers(params["img"]) if scan else params["img"]

  def loss(module, p):
    return jnp.sum(module.apply({"params": p}, **inputs)["pooled"] ** 2)

  base = vit_lib.ViT(config.image)
  np.testing.assert_allclose(loss(variant, variant_params), loss(base, params["img"]), rtol=1e-5)
  g_variant = jax.jit(jax.grad(lambda p: loss(variant, p)))(variant_params)
  g_base = jax.jit(jax.grad(lambda p: loss(base, p)))(params["img"])
  if scan:
    g_variant = checkpoints.unstack_layers(g_variant)
  # Scale by the largest gradient: some are exactly zero in theory (a key bias shifts every logit of a row
  # equally) and hold only roundoff.
  scale = max(float(np.abs(v).max()) for v in jax.tree.leaves(g_base))
  for path, value in checkpoints.flatten(g_base).items():
    np.testing.assert_allclose(checkpoints.flatten(g_variant)[path], value, rtol=1e-4, atol=1e-6 * scale,
                               err_msg=path)


def test_bfloat16_naflex_tower_stays_close_to_float32(loaded):
  config, params = loaded
  inputs = _naflex_inputs()
  f32 = vit_lib.ViT(config.image).apply({"params": params["img"]}, **inputs)
  bf16 = vit_lib.ViT(dataclasses.replace(config.image, dtype="bfloat16")).apply({"params": params["img"]}, **inputs)
  assert bf16["tokens"].dtype == jnp.bfloat16
  real = np.asarray(inputs["mask"], bool)
  scale = float(np.abs(f32["pooled"]).max())
  np.testing.assert_allclose(np.asarray(bf16["pooled"], np.float32), f32["pooled"], atol=0.05 * scale)
  assert np.all(np.asarray(bf16["tokens"], np.float32)[~real] == 0)


def test_naflex_tower_runs_sharded_with_fsdp_rules(loaded):
  """On a ('data', 'model') mesh with FSDP rules the NaFlex tower runs with its patch features split over
  'data' like a dense batch and parameters sharded by their logical names, and gives the unsharded numbers."""
  config, params = loaded
  model = vit_lib.ViT(config.image)
  partitioner = partitioning.Partitioner(num_partitions=2, parameter_partitioning_dims=2)
  inputs = {k: jnp.concatenate([v] * 4) for k, v in _naflex_inputs().items()}  # 8 rows for 4 'data' devices
  expected = model.apply({"params": params["img"]}, **inputs)["pooled"]
  with partitioner.context():
    boxed = jax.eval_shape(model.init, jax.random.key(0), **inputs)["params"]
    shardings = partitioner.shardings(nn.get_partition_spec(boxed))
    sharded = jax.device_put(params["img"], shardings)
    batch = {k: jax.device_put(v, partitioner.batch_sharding(v.ndim)) for k, v in inputs.items()}
    pooled = jax.jit(lambda p, kw: model.apply({"params": p}, **kw)["pooled"])(sharded, batch)
  np.testing.assert_allclose(pooled, expected, rtol=0, atol=1e-5 * float(np.abs(expected).max()))


def test_every_parameter_has_logical_axis_names():
  model = siglip.SigLIPModel(image=vit_lib.config("pico/8", image_size=32, scan=True),
                             text=text_lib.config("pico", vocab_size=50, max_len=8))
  batch = {"image": jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32), "text": jax.ShapeDtypeStruct((2, 8), jnp.int32)}
  boxed = jax.eval_shape(model.init_variables, jax.random.key(0), batch)["params"]
  leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  named = [leaf for leaf in leaves if isinstance(leaf, nn.Partitioned)]
  unnamed = [leaf for leaf in leaves if not isinstance(leaf, nn.Partitioned)]
  assert all(len(leaf.names) == leaf.value.ndim for leaf in named)
  assert all(leaf.shape == () for leaf in unnamed)  # only the scalars t' and b
  assert len(unnamed) == 2
  scanned = [leaf for leaf in named if "layers" in leaf.names]
  assert scanned and all(leaf.names[0] == "layers" for leaf in scanned)


def test_fsdp_rules_shard_embed_over_data_and_tensor_parallel_over_model():
  rules = partitioning.standard_logical_axis_rules(parameter_partitioning_dims=2)
  assert nn.logical_to_mesh_axes(("embed", "mlp"), rules) == jax.sharding.PartitionSpec("data", "model")
  # An activation's batch already takes 'data', so its embed stays unsharded.
  assert nn.logical_to_mesh_axes(("batch", "length", "embed"), rules) == jax.sharding.PartitionSpec("data", None, None)
  rules = partitioning.standard_logical_axis_rules()
  assert nn.logical_to_mesh_axes(("embed", "heads", "kv"), rules) == jax.sharding.PartitionSpec(None, "model", None)


@pytest.mark.parametrize("variant, width, depth, mlp, heads, patch", [
    ("B/16", 768, 12, 3072, 12, 16), ("L/16", 1024, 24, 4096, 16, 16), ("So400m/14", 1152, 27, 4304, 16, 14),
    ("g-opt/16", 1536, 40, 6144, 16, 16), ("G/14", 1664, 48, 8192, 16, 14)])
def test_size_presets(variant, width, depth, mlp, heads, patch):
  cfg = vit_lib.config(variant)
  assert (cfg.width, cfg.depth, cfg.mlp_dim, cfg.num_heads, cfg.patch_size) == (width, depth, mlp, heads, patch)


def test_vit_g14_plans_without_allocating():
  cfg = vit_lib.config("G/14", image_size=224, scan=True, remat="dots")
  params = jax.eval_shape(vit_lib.ViT(cfg).init, jax.random.key(0), jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))
  assert 1.85e9 < partitioning.count_params(nn.meta.unbox(params)) < 1.9e9


def test_vit_g14_train_step_compiles_ahead_of_time_with_scan():
  """MaxText's smoke test: the 48-layer tower's gradient compiles (nothing is allocated or run)."""
  cfg = vit_lib.config("G/14", image_size=224, scan=True, remat="dots", dtype="bfloat16")
  tower = vit_lib.ViT(cfg)
  images = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
  params = nn.meta.unbox(jax.eval_shape(tower.init, jax.random.key(0), images))
  grad = jax.jit(jax.grad(lambda p, x: jnp.sum(tower.apply(p, x)["pooled"].astype(jnp.float32))))
  compiled = grad.lower(params, images).compile()
  assert compiled.cost_analysis()["flops"] > 0


@pytest.mark.parametrize("image_size, message", [(0, "below one patch of 4 pixels"), (2, "below one patch of 4 pixels"),
                                                 (6, "not a multiple of patch_size 4")])
def test_an_image_size_without_whole_patches_is_refused(image_size, message):
  with pytest.raises(ValueError, match=message):
    vit_lib.config("pico/4", image_size=image_size)


def test_standard_rules_take_t5x_arguments_in_t5x_order_and_append_additional_rules():
  rules = partitioning.standard_logical_axis_rules(2, 1, additional_rules=[("frames", "data")])
  assert ("embed", "model") in rules and ("embed", "data") not in rules  # the first argument is the activations'
  assert rules[-1] == ("frames", "data")
  assert nn.logical_to_mesh_axes(("frames", "mlp"), rules) == jax.sharding.PartitionSpec("data", "model")


def test_sincos2d_posemb_start_is_the_2d_sine_cosine_table():
  """posemb_init='sincos2d' starts the learned table at MoCo v3's 2-D sine-cosine values (computed here from the
  formula, channel by channel); 'normal' stays big_vision's N(0, 1/width) draw; both train the same parameter."""
  grid, width = 4, 16
  cfg = vit_lib.config("pico/4", image_size=grid * 4, pool_type="none", posemb_init="sincos2d")
  cfg = dataclasses.replace(cfg, width=width, mlp_dim=32, num_heads=2)
  table = np.asarray(nn.unbox(vit_lib.ViT(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3))))
                     ["params"]["pos_embedding"])[0]
  quarter = width // 4
  for token in range(grid * grid):
    row, col = divmod(token, grid)  # patches are row-major
    for k in range(quarter):
      omega = 10_000.0 ** (-k / quarter)
      expected = [np.sin(col * omega), np.cos(col * omega), np.sin(row * omega), np.cos(row * omega)]
      np.testing.assert_allclose(table[token, k::quarter], expected, atol=1e-6)
  normal = dataclasses.replace(cfg, posemb_init="normal")
  draws = np.asarray(nn.unbox(vit_lib.ViT(normal).init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3))))
                     ["params"]["pos_embedding"])
  assert draws.shape == (1, grid * grid, width) and 0.5 < draws.std() * width ** 0.5 < 1.5
  with pytest.raises(ValueError, match="posemb_init='learned' is not one of"):
    dataclasses.replace(cfg, posemb_init="learned")
  with pytest.raises(ValueError, match="needs a width divisible by 4"):
    dataclasses.replace(cfg, width=18, num_heads=2)
