"""The trainer-facing pipeline (tasks.pipeline.SeqioBatches): determinism, resume, process shards, mixing."""

import collections

import numpy as np
import pytest
import seqio

from tasks import feature_converters
from tasks import pipeline
from tasks import registry

LENGTHS = {"inputs": 48, "targets": 32}
MIXTURE = "pali_stage1_synthetic"
SMALL_MIXTURE = "test_pipeline_small_mixture"  # three tasks: quicker to build, for the many-pipeline tests
if SMALL_MIXTURE not in seqio.MixtureRegistry.names():
  seqio.MixtureRegistry.add(SMALL_MIXTURE, [("vqa_synthetic", 2.0), ("detection_synthetic", 1.0),
                                            ("webli_ocr_synthetic", 1.0)])


@pytest.fixture(autouse=True)
def small_images():
  with registry.image_size_bound(32):
    yield


def assert_same(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.fixture(scope="module")
def run():
  """Batches 0..3 (batch 8) of an uninterrupted run of the stage-1 mixture, seed 1."""
  with registry.image_size_bound(32):
    batches = pipeline.SeqioBatches(MIXTURE, LENGTHS, seed=1)
    result = [batches.batch(step, 8) for step in range(4)]
  batches.close()
  return result


def test_batches_are_model_ready(run):
  batch = run[0]
  assert batch["image"].shape == (8, 32, 32, 3) and batch["image"].dtype == np.float32
  for key in ("encoder_input_tokens", "decoder_target_tokens", "decoder_input_tokens", "decoder_loss_weights"):
    assert batch[key].dtype == np.int32 and batch[key].shape[0] == 8
  np.testing.assert_array_equal(batch["decoder_input_tokens"][:, 1:], batch["decoder_target_tokens"][:, :-1])


def test_other_seed_other_batches():
  one, other = (pipeline.SeqioBatches("vqa_synthetic", LENGTHS, seed=seed).batch(1, 4) for seed in (1, 2))
  assert not np.array_equal(one["image"], other["image"])


def test_same_seed_resumed_at_step_n_gives_the_uninterrupted_batch(run):
  restarted = pipeline.SeqioBatches(MIXTURE, LENGTHS, seed=1)  # a new process after a restart
  assert_same(restarted.batch(2, 8), run[2])
  assert_same(restarted.batch(2, 8), run[2])  # the trainer asks for its first batch twice
  assert_same(restarted.batch(3, 8), run[3])


def test_any_step_order_gives_the_same_batches():
  batches = pipeline.SeqioBatches("vqa_synthetic", LENGTHS, seed=1)
  forward = [batches.batch(step, 4) for step in range(3)]
  assert_same(batches.batch(1, 4), forward[1])  # going back rebuilds the pipeline at that step
  assert_same(batches.batch(2, 4), forward[2])


@pytest.mark.parametrize("name,process_count", [(SMALL_MIXTURE, 2), ("vqa_synthetic", 4)])
def test_process_shards_concatenate_to_the_global_batch(name, process_count):
  batches = pipeline.SeqioBatches(name, LENGTHS, seed=1)
  whole = batches.batch(1, 8)
  parts = [batches.process_batch(1, 8, p, process_count) for p in range(process_count)]
  assert_same({k: np.concatenate([part[k] for part in parts]) for k in parts[0]}, whole)
  # The trainer's multi-host hook: a process's contiguous rows, or any rows.
  rows = np.arange(8).reshape(process_count, -1)[-1]
  assert_same(batches.batch_rows(1, 8, rows), {k: v[rows] for k, v in whole.items()})
  assert_same(batches.batch_rows(1, 8, np.array([0, 5])), {k: v[[0, 5]] for k, v in whole.items()})


def test_mixture_rates_are_respected():
  batches = pipeline.SeqioBatches(MIXTURE, LENGTHS, seed=0)
  counts = collections.Counter(batches.tasks_of_rows(np.arange(4000)))
  total = sum(registry.STAGE1_RATES.values())
  for name, rate in registry.STAGE1_RATES.items():
    assert abs(counts[name] / 4000 - rate / total) < 0.025, (name, counts[name])


def test_text_only_tasks_pack_and_resume():
  def packed():
    return pipeline.SeqioBatches("ul2_denoise_synthetic", {"inputs": 128, "targets": 128}, seed=0,
                                 feature_converter=feature_converters.MultimodalEncDecFeatureConverter(pack=True))

  first = packed()
  run = [first.batch(step, 4) for step in range(2)]
  assert run[0]["encoder_segment_ids"].max() >= 2  # some row holds several examples
  assert_same(packed().batch(1, 4), run[1])
  assert_same(packed().process_batch(1, 4, 1, 2), {k: v[2:] for k, v in run[1].items()})


def test_two_tower_batches():
  batch = pipeline.SeqioBatches("webli_pairs_synthetic", {"text": 40}).batch(0, 4)
  assert batch.keys() == {"image", "text"} and batch["text"].shape == (4, 40)


def test_bad_requests_are_one_clear_error():
  with pytest.raises(ValueError, match="cannot pack examples with an 'image'"):
    pipeline.SeqioBatches("vqa_synthetic", LENGTHS,
                          feature_converter=feature_converters.MultimodalEncDecFeatureConverter(pack=True)
                          ).batch(0, 2)
  with pytest.raises(ValueError, match="'nope' is neither a registered seqio task nor a mixture"):
    pipeline.SeqioBatches("nope", LENGTHS)
  with pytest.raises(ValueError, match="does not split over 3 processes"):
    pipeline.SeqioBatches("vqa_synthetic", LENGTHS).process_batch(0, 8, 0, 3)


def test_ul2_targets_cut_by_a_short_targets_length_are_counted_and_equal_lengths_cut_none():
  from tasks import data_health  # pylint: disable=import-outside-toplevel
  data_health.reset()
  pipeline.SeqioBatches("ul2_denoise_synthetic", {"inputs": 64, "targets": 64}, seed=0).batch(0, 64)
  assert "ul2_denoise/trimmed_targets" not in data_health.counts()  # every denoiser's targets fit
  pipeline.SeqioBatches("ul2_denoise_synthetic", {"inputs": 64, "targets": 8}, seed=0).batch(0, 64)
  assert data_health.counts()["ul2_denoise/trimmed_targets"] > 0
  data_health.reset()
