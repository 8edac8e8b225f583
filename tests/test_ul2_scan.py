"""A scanned UL2 (UL2Config.scan: each stack one nn.scan over stacked layers) against the unscanned one:
the same numbers, and every checkpoint path, warm start and the planner convert or read either layout."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from encoders import vit as vit_lib
from tests import scene_data
from vlm import checkpoints, model as model_lib, optim, partitioning, plan, ul2, ul2_checkpoints

CONFIG = ul2.config("pico", vocab_size=97, num_encoder_layers=3, num_decoder_layers=2)


def _ids():
  rng = np.random.default_rng(0)
  encoder = rng.integers(2, 97, (3, 9))
  encoder[1, 5:] = 0  # a padded row
  decoder = rng.integers(2, 97, (3, 6))
  decoder[:, 0] = 0  # the start token
  return encoder, decoder


def _params(config):
  encoder, decoder = _ids()
  boxed = jax.jit(ul2.UL2(config).init)(jax.random.key(0), encoder, decoder)["params"]
  return jax.tree.map(np.asarray, nn.meta.unbox(boxed))


def _scanned(config=CONFIG, **kw):
  return dataclasses.replace(config, scan=True, **kw)


def _assert_trees_equal(got, want, **tolerance):
  flat_got, flat_want = checkpoints.flatten(got), checkpoints.flatten(want)
  assert sorted(flat_got) == sorted(flat_want)
  for path, value in flat_want.items():
    np.testing.assert_allclose(flat_got[path], value, err_msg=path, **tolerance)


@pytest.fixture(scope="module")
def unscanned():
  return _params(CONFIG)


def test_scanned_parameters_are_the_unscanned_ones_stacked(unscanned):
  abstract = ul2.abstract_params(_scanned())
  assert set(abstract["encoder"]) == {"layers", "relpos_bias", "encoder_norm"}
  assert abstract["decoder"]["layers"]["mlp"]["wo"]["kernel"].shape == (2, 64, 32)
  stacked = checkpoints.stack_layers(unscanned, "layers")
  assert jax.tree.structure(stacked) == jax.tree.structure(abstract)
  assert jax.tree.map(np.shape, stacked) == jax.tree.map(lambda x: x.shape, abstract)
  _assert_trees_equal(checkpoints.unstack_layers(stacked, "layers"), unscanned, rtol=0, atol=0)


@pytest.mark.parametrize("remat", ["none", "full", "dots", "dots_with_batch", "offload_dots"])
def test_scanned_ul2_computes_the_same_logits_and_gradients(unscanned, remat):
  encoder, decoder = _ids()

  @functools.partial(jax.jit, static_argnums=1)
  def loss_and_grads(params, scan):
    module = ul2.UL2(dataclasses.replace(CONFIG, remat=remat, scan=scan))

    def loss(params):
      logits = module.apply({"params": params}, encoder, decoder)
      return ul2.cross_entropy(logits, decoder, decoder != 0)[0], logits
    return jax.value_and_grad(loss, has_aux=True)(params)

  (loss_plain, logits_plain), grads_plain = loss_and_grads(unscanned, False)
  (loss_scan, logits_scan), grads_scan = loss_and_grads(checkpoints.stack_layers(unscanned, "layers"), True)
  np.testing.assert_allclose(logits_scan, logits_plain, rtol=0, atol=1e-5)
  np.testing.assert_allclose(loss_scan, loss_plain, rtol=1e-6)
  _assert_trees_equal(checkpoints.unstack_layers(grads_scan, "layers"), grads_plain, rtol=1e-5, atol=1e-6)


def test_scanned_ul2_decodes_the_same_greedy_and_beam_sequences(unscanned):
  encoder, _ = _ids()
  plain = ul2.LoadedUL2(CONFIG, unscanned)
  scanned = ul2.LoadedUL2(_scanned(), checkpoints.stack_layers(unscanned, "layers"))
  for method, options in [("greedy", {}), ("beam", {"beam_size": 3})]:
    want = plain.generate(encoder, 7, method=method, **options)
    assert want.shape == (3, 7) and len(np.unique(want)) > 3  # no row ends early: every step is compared
    np.testing.assert_array_equal(scanned.generate(encoder, 7, method=method, **options), want, err_msg=method)


def test_the_scanned_decoding_state_leads_with_the_batch(unscanned):
  """vlm.decoding reorders and repeats every state leaf along axis 0 (beams): the layers stack behind it."""
  encoded = jnp.zeros((3, 9, CONFIG.d_model))
  state = ul2.UL2(_scanned()).apply({"params": checkpoints.stack_layers(unscanned, "layers")}, encoded,
                                    jnp.ones((3, 9), bool), 7, method=ul2.UL2.init_cache)
  assert [x.shape for x in state["self"]] == [(3, 2, 2, 7, 16)] * 2  # [batch, layers, heads, len, head_dim]
  assert [x.shape for x in state["cross"]] == [(3, 2, 2, 9, 16)] * 2


def test_hf_export_and_project_checkpoints_of_a_scanned_ul2(tmp_path, unscanned):
  stacked = checkpoints.stack_layers(unscanned, "layers")
  ul2_checkpoints.write_hf(_scanned(), stacked, str(tmp_path / "hf"))
  config, params = ul2_checkpoints.read_hf(str(tmp_path / "hf"))
  assert not config.scan  # HF's layout is one tensor per layer
  _assert_trees_equal(params, unscanned, rtol=0, atol=0)
  checkpoints.write_model_dir(str(tmp_path / "run"), _scanned().to_json(), stacked)
  loaded = ul2.load(tmp_path / "run")
  assert loaded.config.scan
  encoder, decoder = _ids()
  want = ul2.LoadedUL2(CONFIG, unscanned).logits(encoder, decoder)
  np.testing.assert_allclose(loaded.logits(encoder, decoder), want, rtol=0, atol=1e-5)


def _pali(ul2_scan: bool, **kw):
  return model_lib.PaLIModel(vit=vit_lib.config("pico/4", image_size=16, pool_type="none"),
                             ul2=ul2.config("pico", vocab_size=scene_data.vocab_size(), scan=ul2_scan), **kw)


def _pali_params(model, abstract=False):
  """Parameters of a pico PaLI (abstract: their shapes only)."""
  batch = {"image": jnp.zeros((1, 16, 16, 3)), "encoder_input_tokens": jnp.ones((1, 4), jnp.int32),
           "decoder_target_tokens": jnp.ones((1, 3), jnp.int32)}
  init = functools.partial(jax.eval_shape, model.init_variables) if abstract else jax.jit(model.init_variables)
  return nn.meta.unbox(init(jax.random.key(1), batch)["params"])


@pytest.mark.parametrize("source_scan", [False, True], ids=["from-unscanned", "from-scanned"])
def test_pali_warm_starts_convert_the_ul2_layout(tmp_path, source_scan):
  """From a UL2 MODEL_DIR, a HF T5 export and an earlier PaLI, each of the other layout."""
  previous = _pali(source_scan)
  previous_params = jax.tree.map(np.asarray, _pali_params(previous))
  source_ul2 = previous_params["ul2"]
  checkpoints.write_model_dir(str(tmp_path / "pali"), previous.config_json(), previous_params)
  checkpoints.write_model_dir(str(tmp_path / "ul2"), previous.config.ul2.to_json(), source_ul2)
  ul2_checkpoints.write_hf(previous.config.ul2, source_ul2, str(tmp_path / "hf"))  # always unscanned
  params = _pali_params(_pali(not source_scan), abstract=True)
  for option, directory in [("pali_checkpoint", "pali"), ("ul2_checkpoint", "ul2"), ("ul2_checkpoint", "hf")]:
    warm = _pali(not source_scan, **{option: str(tmp_path / directory)}).warm_start(params)
    assert jax.tree.structure(warm) == jax.tree.structure(params), directory  # the PaLI's own layout
    _assert_trees_equal(checkpoints.unstack_layers(warm["ul2"], "layers"),
                        checkpoints.unstack_layers(source_ul2, "layers"), rtol=0, atol=0)


def test_the_layers_axis_is_replicated_by_every_rule_set():
  boxed = jax.eval_shape(ul2.UL2(_scanned()).init, jax.random.key(0), jnp.ones((1, 2), jnp.int32),
                         jnp.ones((1, 2), jnp.int32))["params"]
  leaves = jax.tree.leaves(boxed["encoder"]["layers"], is_leaf=lambda x: isinstance(x, nn.Partitioned))
  leaves += jax.tree.leaves(boxed["decoder"]["layers"], is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert leaves and all(leaf.names[0] == "layers" for leaf in leaves)
  for dims in (1, 2):
    rules = partitioning.standard_logical_axis_rules(parameter_partitioning_dims=dims)
    for leaf in leaves:
      assert nn.logical_to_mesh_axes(leaf.names, rules)[0] is None, leaf.names


def test_vlm_plan_counts_a_scanned_ul2_as_the_unscanned_one():
  """The remat recomputation and the per-layer weights are found by parameter path in either layout."""
  lengths = {"inputs": 8, "targets": 6}

  def plan_of(scan):
    model = _pali(scan)
    model = model_lib.PaLIModel(vit=model.config.vit, ul2=dataclasses.replace(model.config.ul2, remat="full"))
    # AdamW: Adafactor keeps a placeholder statistic per parameter array, fewer of them once stacked.
    partitioner = partitioning.Partitioner(num_partitions=2, parameter_partitioning_dims=2,
                                           abstract_mesh={"data": 2, "model": 2})
    return plan.plan(model, batch_size=4, feature_lengths=lengths, partitioner=partitioner,
                     optimizer=optim.adamw(1e-3))

  plain, scanned = plan_of(False), plan_of(True)
  assert scanned.train_flops == pytest.approx(plain.train_flops, rel=1e-12)
  assert scanned.forward_flops == pytest.approx(plain.forward_flops, rel=1e-12)
  assert scanned.activations == plain.activations
  assert scanned.total_bytes == plain.total_bytes


def test_ul2_3b_gradient_compiles_ahead_of_time_as_scanned_stacks():
  """MaxText's smoke test on PaLI-3's UL2: the scanned 24+24 layers' gradient compiles, nothing allocated."""
  cfg = ul2.config("3B", dtype="bfloat16", remat="full", scan=True)
  params = ul2.abstract_params(cfg)
  assert params["encoder"]["layers"]["mlp"]["wi_0"]["kernel"].shape == (24, 2048, 5120)
  assert params["decoder"]["layers"]["self_attention"]["query"]["kernel"].shape == (24, 2048, 32, 64)
  assert 2.8e9 < partitioning.count_params(params) < 3.0e9
  module = ul2.UL2(cfg)
  tokens = jax.ShapeDtypeStruct((1, 8), jnp.int32)
  grad = jax.jit(jax.grad(lambda p, e, d: jnp.sum(module.apply({"params": p}, e, d)[..., :4])))
  assert grad.lower(params, tokens, tokens).compile().cost_analysis()["flops"] > 0


def test_a_scanned_ul2_without_encoder_layers_has_no_empty_stacked_parameters():
  """LocCa's decoder-only UL2: zero-length stacked arrays would not convert from an unscanned checkpoint."""
  params = ul2.abstract_params(ul2.config("pico", vocab_size=50, num_encoder_layers=0, scan=True))
  assert set(params["encoder"]) == {"relpos_bias", "encoder_norm"}
  assert params["decoder"]["layers"]["mlp"]["wo"]["kernel"].shape == (2, 64, 32)
