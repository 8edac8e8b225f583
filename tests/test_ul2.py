"""UL2 / T5: parity with HF transformers, cached decoding, checkpoints and the loss."""

import numpy as np
import pytest
import jax
import jax.numpy as jnp

from tests import hf_fixtures
from vlm import ul2
from vlm import ul2_checkpoints
from vlm.checkpoints import CheckpointError


def _ids(seed: int = 0):
  rng = np.random.default_rng(seed)
  encoder = rng.integers(2, 97, (3, 30))
  encoder[1, 20:] = 0  # padded rows
  encoder[2, 5:] = 0
  decoder = rng.integers(2, 97, (3, 12))
  decoder[:, 0] = 0  # the start token
  return encoder, decoder


@pytest.fixture(scope="module", params=[("gated-silu", False), ("gated-gelu", True)],
                ids=["gated-silu-untied", "gated-gelu-tied"])
def hf_t5(request, tmp_path_factory):
  proj, tie = request.param
  directory = str(tmp_path_factory.mktemp(proj))
  return hf_fixtures.save_t5(directory, proj, tie), ul2.load(directory)


def test_logits_match_hf(hf_t5):
  hf, ours = hf_t5
  encoder, decoder = _ids()
  ref = hf_fixtures.t5_logits(hf, encoder, decoder)
  got = ours.logits(encoder, decoder)
  assert got.shape == ref.shape and got.dtype == np.float32
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_greedy_matches_hf(hf_t5):
  hf, ours = hf_t5
  encoder, _ = _ids(1)
  ref = hf_fixtures.t5_greedy(hf, encoder, 10)
  got = ours.generate(encoder, max_new_tokens=10)
  assert got.dtype == np.int32
  np.testing.assert_array_equal(got, ref)


def test_special_token_ids_come_from_the_config_and_rows_end_as_in_hf(tmp_path):
  encoder = _ids(1)[0][1:]
  first = hf_fixtures.t5_greedy(hf_fixtures.save_t5(str(tmp_path / "a"), "gated-silu", False,
                                                    decoder_start_token_id=2), encoder, 10)
  # Make EOS a token both rows emit early on (this seed's model: [32 78 78 ...], [57 16 78 ...]).
  eos = int(first[1, 2])
  ends = [list(row).index(eos) + 1 for row in first]
  expected = np.zeros((2, max(ends)), np.int32)
  for row, end in enumerate(ends):
    expected[row, :end] = first[row, :end]
  assert expected.shape[1] < 10  # so the output is cut to the longest row
  hf = hf_fixtures.save_t5(str(tmp_path / "b"), "gated-silu", False, decoder_start_token_id=2, eos_token_id=eos)
  ours = ul2.load(tmp_path / "b")
  assert (ours.config.eos_id, ours.config.start_id) == (eos, 2)
  np.testing.assert_array_equal(hf_fixtures.t5_greedy(hf, encoder, 10), expected)
  np.testing.assert_array_equal(ours.generate(encoder, max_new_tokens=10), expected)


def test_start_token_outside_the_vocabulary_is_refused(tmp_path, hf_t5):
  """Such a start token was embedded as garbage: generate returned all zeros."""
  hf_fixtures.save_t5(str(tmp_path), "gated-silu", False, decoder_start_token_id=200)
  with pytest.raises(CheckpointError, match=r"config.json: decoder_start_token_id=200 is outside the vocabulary "
                                            r"\[0, 97\)"):
    ul2.load(tmp_path)
  with pytest.raises(ValueError, match=r"decoder start token 97 is outside the vocabulary \[0, 97\); set the UL2 "
                                       r"config's start_id \(gin: vlm.ul2.config.start_id\)"):
    ul2.config("pico", vocab_size=97, start_id=97)
  with pytest.raises(ValueError, match=r"end-of-sequence token 97 is outside the vocabulary \[0, 97\); set the UL2 "
                                       r"config's eos_id"):  # decoding would never stop
    ul2.config("pico", vocab_size=97, eos_id=97)
  _, ours = hf_t5
  with pytest.raises(ValueError, match=r"decoder start token 97 is outside .*; set the start_id option"):
    ours.generate(_ids()[0], 4, start_id=97)
  with pytest.raises(ValueError, match=r"end-of-sequence token -1 is outside .*; set the eos_id option"):
    ours.generate(_ids()[0], 4, eos_id=-1)


def test_sharded_checkpoints_load(tmp_path):
  hf = hf_fixtures.save_t5(str(tmp_path), "gated-gelu", False, max_shard_size="20KB")
  assert (tmp_path / "model.safetensors.index.json").exists() and not (tmp_path / "model.safetensors").exists()
  encoder, decoder = _ids()
  ref = hf_fixtures.t5_logits(hf, encoder, decoder)
  np.testing.assert_allclose(ul2.load(tmp_path).logits(encoder, decoder), ref, rtol=1e-4,
                             atol=1e-4 * np.abs(ref).max())


def test_gated_relu_matches_hf(tmp_path):
  hf = hf_fixtures.save_t5(str(tmp_path), "gated-relu", True)
  encoder, decoder = _ids()
  ref = hf_fixtures.t5_logits(hf, encoder, decoder)
  np.testing.assert_allclose(ul2.load(tmp_path).logits(encoder, decoder), ref, rtol=1e-4,
                             atol=1e-4 * np.abs(ref).max())


def test_empty_batches(hf_t5):
  _, ours = hf_t5
  vocab = ours.config.vocab_size
  assert ours.logits(np.zeros((0, 5), int), np.zeros((0, 3), int)).shape == (0, 3, vocab)
  assert ours.logits(np.ones((2, 5), int), np.zeros((2, 0), int)).shape == (2, 0, vocab)
  for method in ("greedy", "beam", "sample"):
    got = ours.generate(np.zeros((0, 5), int), 4, method=method)
    assert got.shape == (0, 0) and got.dtype == np.int32
  with pytest.raises(ValueError, match=r"encoder_ids has no tokens \(shape \(2, 0\)\)"):
    ours.generate(np.zeros((2, 0), int), 4)


def test_cached_greedy_equals_uncached_argmax_loop(hf_t5):
  _, ours = hf_t5
  encoder, _ = _ids(2)
  steps = 8
  got = ours.generate(encoder, max_new_tokens=steps)
  decoder = np.zeros((3, 1), np.int32)
  finished = np.zeros(3, bool)
  expected = np.zeros((3, steps), np.int32)
  for t in range(steps):  # recompute the whole prefix every step, no cache
    token = ours.logits(encoder, decoder)[:, -1].argmax(-1)
    expected[:, t] = np.where(finished, 0, token)
    finished |= token == ul2.EOS_ID
    decoder = np.concatenate([decoder, token[:, None]], axis=1)
  np.testing.assert_array_equal(got, expected)


def test_decoding_methods_agree_with_greedy(hf_t5):
  _, ours = hf_t5
  encoder, _ = _ids(3)
  greedy = ours.generate(encoder, 8)
  # On this model; in general beam_size=1 may also stop at an EOS ranked second (tests/test_decoding.py).
  np.testing.assert_array_equal(ours.generate(encoder, 8, method="beam", beam_size=1, alpha=0.0), greedy)
  np.testing.assert_array_equal(ours.generate(encoder, 8, method="sample", temperature=0.0), greedy)
  beams = ours.generate(encoder, 8, method="beam", beam_size=4)  # beam >= greedy: tests/test_decoding.py
  assert beams.shape == greedy.shape and beams.dtype == np.int32


def test_bad_input_is_one_clear_error(hf_t5):
  _, ours = hf_t5
  encoder, decoder = _ids()
  with pytest.raises(ValueError, match="outside the vocabulary"):
    ours.logits(encoder + 200, decoder)
  with pytest.raises(ValueError, match="decoding method 'nucleus'"):
    ours.generate(encoder, 4, method="nucleus")
  for bad in (0, True, "4", None, 2.0):
    with pytest.raises(ValueError, match="max_new_tokens must be an integer >= 1"):
      ours.generate(encoder, bad)
  with pytest.raises(ValueError, match="seed=<int> for sampling, not rng"):
    ours.generate(encoder, 4, method="sample", rng=jax.random.key(0))
  with pytest.raises(ValueError, match=r"option top_k=\[1\] must be a number"):
    ours.generate(encoder, 4, method="sample", top_k=[1])


def test_bad_checkpoints_are_one_clear_error(tmp_path):
  import json

  hf_fixtures.save_t5(str(tmp_path), "gated-silu", False)
  config_path = tmp_path / "config.json"
  config = json.loads(config_path.read_text())
  config_path.write_text(json.dumps({**config, "num_heads": 2}))  # 2 x d_kv 8 = 16, the tensors have 32
  with pytest.raises(CheckpointError, match=r"relative_attention_bias.weight has shape \(8, 4\) but config.json "
                                            r"\(.*num_heads.*\) implies \(8, 2\)"):
    ul2.load(tmp_path)
  config_path.write_text("{not json")
  with pytest.raises(CheckpointError, match=r"config.json: not valid JSON"):
    ul2.load(tmp_path)
  (tmp_path / "model.safetensors").unlink()
  config_path.write_text(json.dumps(config))
  with pytest.raises(CheckpointError, match="neither model.safetensors nor its sharded"):
    ul2.load(tmp_path)


def test_hf_export_round_trips(tmp_path):
  config = ul2.config("pico", vocab_size=64)
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32), ul2.abstract_params(config))
  ul2_checkpoints.write_hf(config, params, str(tmp_path))
  got_config, got = ul2_checkpoints.read_hf(str(tmp_path))
  assert got_config == config
  jax.tree.map(np.testing.assert_array_equal, got, params)


def test_relu_t5_is_refused_clearly(tmp_path):
  hf_fixtures.save_t5(str(tmp_path), "relu", True)
  with pytest.raises(CheckpointError, match="feed_forward_proj='relu'"):
    ul2.load(tmp_path)


def test_reference_sizes():
  counts = {size: sum(x.size for x in jax.tree.leaves(ul2.abstract_params(ul2.config(size))))
            for size in ("small", "3B")}
  assert 70e6 < counts["small"] < 80e6  # T5 v1.1 small: 77M with its 32128-token vocabulary
  assert 2.8e9 < counts["3B"] < 3.0e9


def test_label_smoothing_and_z_loss():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(2, 5, 11)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, 11, (2, 5)))
  weights = jnp.ones((2, 5)).at[1, 3:].set(0)
  plain, _ = ul2.cross_entropy(logits, targets, weights)
  log_probs = jax.nn.log_softmax(logits)
  nll = -np.take_along_axis(np.asarray(log_probs), np.asarray(targets)[..., None], -1)[..., 0]
  np.testing.assert_allclose(plain, (nll * weights).sum() / weights.sum(), rtol=1e-6)
  # Smoothed: cross-entropy against the smoothed distribution minus its entropy (0 for a perfect fit).
  eps = 0.1
  soft = np.full((2, 5, 11), eps / 10)
  np.put_along_axis(soft, np.asarray(targets)[..., None], 1 - eps, -1)
  entropy = -(soft * np.log(soft)).sum(-1)
  smoothed = (-(soft * np.asarray(log_probs)).sum(-1) - entropy)
  got, _ = ul2.cross_entropy(logits, targets, weights, label_smoothing=eps)
  np.testing.assert_allclose(got, (smoothed * weights).sum() / weights.sum(), rtol=1e-5)
  log_z = jax.nn.logsumexp(logits, -1)
  got, metrics = ul2.cross_entropy(logits, targets, weights, z_loss=1e-2)
  np.testing.assert_allclose(metrics["z_loss"], (1e-2 * log_z ** 2 * weights).sum() / weights.sum(), rtol=1e-6)
  np.testing.assert_allclose(got, plain + metrics["z_loss"], rtol=1e-6)
