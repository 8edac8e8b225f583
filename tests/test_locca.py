"""SigLIP 2's LocCa decoder (encoders/objectives/locca.py): its loss (parallel rows from mask tokens without a
causal mask, the rest teacher-forced), its data, its evaluation keys, and that an exported or PaLI-warm-started
encoder carries none of it."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from encoders import siglip, siglip_checkpoints
from encoders import text as text_lib
from encoders import vit as vit_lib
from encoders.objectives import locca
from vlm import ul2


def model(parallel_fraction=0.5, **kw):
  return siglip.SigLIPModel(image=vit_lib.config("pico/4", image_size=16), text=text_lib.config("pico", vocab_size=64,
                                                                                                 max_len=8),
                            objectives=(locca.LocCa(decoder_size="pico", parallel_fraction=parallel_fraction),),
                            train_steps=10, **kw)


def batch(b=4, seed=0):
  rng = np.random.default_rng(seed)
  targets = np.concatenate([rng.integers(3, 64, (b, 4)), np.ones((b, 1)), np.zeros((b, 2))], 1).astype(np.int32)
  return {"image": rng.uniform(-1, 1, (b, 16, 16, 3)).astype(np.float32),
          "text": rng.integers(1, 64, (b, 8)).astype(np.int32),
          "locca_inputs": rng.integers(3, 64, (b, 5)).astype(np.int32), "locca_targets": targets}


def test_parallel_rows_see_mask_tokens_without_a_causal_mask():
  m = model(parallel_fraction=0.5)
  b = jax.tree.map(jnp.asarray, batch())
  params = nn.meta.unbox(m.init_variables(jax.random.key(0), b))["params"]
  calls = []

  def logits_fn(tokens, prompt, inputs, causal):
    calls.append((np.asarray(inputs), causal))
    return m.module.apply({"params": params}, tokens, prompt, inputs, causal, method=siglip.TwoTower.locca_logits)

  tokens = m.module.apply({"params": params}, b["image"], method=siglip.TwoTower.encode_image)["tokens"]
  loss, _ = locca.locca_loss(logits_fn, tokens, b["locca_inputs"], b["locca_targets"], 0.5)
  (parallel_inputs, parallel_causal), (causal_inputs, causal_causal) = calls
  assert not parallel_causal and causal_causal
  np.testing.assert_array_equal(parallel_inputs, np.where(np.asarray(b["locca_targets"][:2]) > 0, locca.MASK_ID, 0))
  np.testing.assert_array_equal(causal_inputs, np.asarray(ul2.shift_right(b["locca_targets"][2:])))
  # By hand: the token cross-entropy of the two halves' logits together.
  logits = np.concatenate([np.asarray(logits_fn(tokens[:2], b["locca_inputs"][:2], parallel_inputs, False)),
                           np.asarray(logits_fn(tokens[2:], b["locca_inputs"][2:], causal_inputs, True))])
  targets = np.asarray(b["locca_targets"])
  log_probs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(
      -1, keepdims=True)
  nll = -np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
  np.testing.assert_allclose(loss, nll[targets > 0].mean(), rtol=1e-4)


def test_a_parallel_decoder_is_not_causal():
  """Without the causal mask, the first position's logits depend on a later input token."""
  m = model()
  b = jax.tree.map(jnp.asarray, batch())
  params = nn.meta.unbox(m.init_variables(jax.random.key(0), b))["params"]
  tokens = m.module.apply({"params": params}, b["image"], method=siglip.TwoTower.encode_image)["tokens"]
  run = lambda inputs, causal: m.module.apply({"params": params}, tokens, b["locca_inputs"], inputs, causal,
                                              method=siglip.TwoTower.locca_logits)
  inputs = b["locca_targets"]
  changed = inputs.at[:, -1].set(7)
  assert np.allclose(run(inputs, True)[:, 0], run(changed, True)[:, 0])
  assert not np.allclose(run(inputs, False)[:, 0], run(changed, False)[:, 0])


def test_the_decoder_leaves_no_trace_in_exports_or_pali(tmp_path):
  from vlm import model as pali
  m = model()
  b = jax.tree.map(jnp.asarray, batch())
  params = jax.tree.map(np.asarray, nn.meta.unbox(m.init_variables(jax.random.key(0), b))["params"])
  assert "locca" in params
  siglip_checkpoints.write_hf(m.config, params, str(tmp_path / "hf"))
  config, loaded = siglip_checkpoints.read(str(tmp_path / "hf"))
  assert set(loaded) == {"img", "txt", "t", "b"}
  vit = vit_lib.config("pico/4", image_size=16, pool_type="none")
  current = nn.meta.unbox(pali.PaLIModel(vit=vit, ul2=ul2.config("pico", vocab_size=64)).init_variables(
      jax.random.key(0), {"image": jnp.zeros((1, 16, 16, 3)), "encoder_input_tokens": jnp.ones((1, 2), jnp.int32),
                          "decoder_target_tokens": jnp.ones((1, 2), jnp.int32)}))["params"]["img"]
  warm = pali.vit_params_from_siglip(str(tmp_path / "hf"), vit, current)
  assert set(warm) == set(current)


def test_locca_tasks_give_boxes_and_phrases():
  from tasks import pipeline, registry, vocab  # noqa: F401
  with registry.gin_bound("tasks.registry.locca_tasks.rates", {"refexp": 1.0}), registry.image_size_bound(32):
    rows = pipeline.SeqioBatches("scene_pairs_locca_synthetic", {"text": 64, "locca_inputs": 16,
                                                                 "locca_targets": 16}, seed=2).batch(0, 4)
  v = vocab.vocabulary()
  for i in range(4):
    assert v.decode(rows["locca_inputs"][i]).startswith("refexp ")
    assert v.decode(rows["locca_targets"][i]).count("<loc") == 4


def test_reading_examples_pair_a_line_of_text_with_itself():
  """locca_tasks' 'ocr': tasks.ocr's image and text, read by the decoder and matched by the sigmoid loss."""
  from tasks import ocr, registry
  with registry.gin_bound("tasks.registry.locca_tasks.rates", {"ocr": 1.0}):
    for index in range(3):
      ex = registry._locca_pair(0, "train", index, 32)  # pylint: disable=protected-access
      want = ocr.example(0, index, "train", 32)
      assert ex["text"] == ex["locca_targets"] == want["targets"] and ex["locca_inputs"] == "ocr"
      np.testing.assert_array_equal(ex["image"], want["image"])


def test_localisation_examples_take_their_own_object_count():
  """tasks.registry.locca_max_objects: a refexp example is the scene generator's with that many objects at most."""
  from tasks import registry, scene_tasks
  with registry.gin_bound("tasks.registry.locca_tasks.rates", {"refexp": 1.0}):
    for objects in (1, 3):
      with registry.gin_bound("tasks.registry.locca_max_objects.localisation", objects):
        for index in range(6):
          ex = registry._locca_pair(0, "train", index, 32)  # pylint: disable=protected-access
          want = scene_tasks.example(0, index, "train", "refexp", 32, max_objects=objects)
          assert (ex["locca_inputs"], ex["locca_targets"]) == (want["inputs"], want["targets"])
    with registry.gin_bound("tasks.registry.locca_max_objects.localisation", 0):
      with pytest.raises(ValueError, match="locca_max_objects.localisation=0: give an integer from 1 to 9"):
        registry._locca_pair(0, "train", 0, 32)  # pylint: disable=protected-access


@pytest.mark.parametrize("make, match", [
    (lambda: locca.LocCa(parallel_fraction=1.5), r"parallel_fraction=1.5 is not in \[0, 1\]"),
    (lambda: locca.LocCa(decoder_size="huge"), "decoder_size='huge' is not one of"),
])
def test_bad_locca_settings(make, match):
  with pytest.raises(ValueError, match=match):
    make()
