"""The trainer on a tiny SigLIP: it learns, is deterministic, resumes exactly, and stops cleanly on bad input."""

import json
import os

import jax
import numpy as np
import pytest

from encoders import siglip
from encoders import text as text_lib
from encoders import vit as vit_lib
from tasks import scene_pairs
from vlm import checkpoints, optim, partitioning, summaries, trainer

IMAGE_SIZE, TEXT_LENGTH = 16, 40
LENGTHS = {"text": TEXT_LENGTH}


def tiny_model():
  return siglip.SigLIPModel(image=vit_lib.config("pico/4", image_size=IMAGE_SIZE),
                            text=text_lib.config("pico", vocab_size=scene_pairs.vocab_size(), max_len=TEXT_LENGTH))


def run(model_dir, steps, *, data=None, checkpoint_period=4, lr=3e-3, num_devices=1, num_partitions=1,
        parameter_partitioning_dims=1, optimizer=optim.adamw, **kw):
  partitioner = partitioning.Partitioner(num_partitions, parameter_partitioning_dims,
                                         devices=jax.devices()[:num_devices])
  return trainer.train(
      tiny_model(), data or scene_pairs.SceneCaptionPairs(IMAGE_SIZE, LENGTHS), model_dir=str(model_dir),
      train_steps=steps, batch_size=16, optimizer=optimizer, learning_rate=lr, partitioner=partitioner,
      checkpoint_period=checkpoint_period, log_period=1, progress=False, **kw)


def losses(model_dir):
  return {r["step"]: r["loss"] for r in summaries.read_metrics(str(model_dir)) if "split" not in r}


def test_tiny_siglip_learns_and_writes_its_outputs(tmp_path):
  run(tmp_path, 40, checkpoint_period=20)
  curve = losses(tmp_path)
  assert sorted(curve) == list(range(1, 41))
  first = summaries.read_metrics(str(tmp_path))[0]
  for key in ("loss", "learning_rate", "grad_norm", "param_norm", "steps_per_sec", "examples_per_sec"):
    assert np.isfinite(first[key]), key
  assert np.mean([curve[s] for s in range(36, 41)]) < 0.7 * np.mean([curve[s] for s in range(1, 6)])
  assert checkpoints.Checkpointer(str(tmp_path), 1).latest_step() == 40
  assert os.listdir(tmp_path / "train") and json.load(open(tmp_path / "model_config.json"))["model"] == "siglip"
  # The trained directory is a checkpoint `encoders.siglip.load` reads.
  encoder = siglip.load(str(tmp_path))
  out = encoder.encode_image(np.zeros((2, IMAGE_SIZE, IMAGE_SIZE, 3), np.float32))
  assert out["pooled"].shape == (2, 32) and out["tokens"].shape == (2, 16, 32)


def test_same_seed_same_loss_curve(tmp_path):
  run(tmp_path / "a", 6)
  run(tmp_path / "b", 6)
  assert losses(tmp_path / "a") == losses(tmp_path / "b")


def test_resumed_run_continues_the_uninterrupted_one(tmp_path):
  run(tmp_path / "full", 8)
  run(tmp_path / "resumed", 4)  # stops after its step-4 checkpoint, as if killed there
  run(tmp_path / "resumed", 8)  # the same command again, with the full step count
  full, resumed = losses(tmp_path / "full"), losses(tmp_path / "resumed")
  assert sorted(resumed) == list(range(1, 9))
  np.testing.assert_allclose([resumed[s] for s in range(5, 9)], [full[s] for s in range(5, 9)], rtol=1e-6)


@pytest.mark.parametrize("num_partitions, parameter_partitioning_dims", [(1, 1), (2, 2)],
                         ids=["data_parallel", "fsdp_and_tensor_parallel"])
@pytest.mark.parametrize("optimizer", [optim.adamw, optim.adafactor], ids=["adamw", "adafactor"])
def test_8_devices_match_one_device(tmp_path, num_partitions, parameter_partitioning_dims, optimizer):
  run(tmp_path / "one", 4, optimizer=optimizer)
  run(tmp_path / "eight", 4, num_devices=8, num_partitions=num_partitions,
      parameter_partitioning_dims=parameter_partitioning_dims, optimizer=optimizer)
  one, eight = losses(tmp_path / "one"), losses(tmp_path / "eight")
  np.testing.assert_allclose([eight[s] for s in range(1, 5)], [one[s] for s in range(1, 5)], rtol=1e-4)


class PoisonedData:
  """Clean batches, then a NaN image from step `bad_step` on."""

  def __init__(self, bad_step):
    self.clean, self.bad_step = scene_pairs.SceneCaptionPairs(IMAGE_SIZE, LENGTHS), bad_step

  def batch(self, step, batch_size):
    batch = self.clean.batch(step, batch_size)
    if step >= self.bad_step:
      batch["image"][0, 0, 0, 0] = np.nan
    return batch


def test_non_finite_loss_halts_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
  with pytest.raises(trainer.TrainingHalted, match=r"non-finite loss .* at step 7; the last good checkpoint "
                                                   r"\(step 4\) is kept"):
    run(tmp_path, 10, data=PoisonedData(bad_step=6))
  assert checkpoints.Checkpointer(str(tmp_path), 1).latest_step() == 4


def test_unwritable_model_dir_fails_before_training(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("")
  with pytest.raises(OSError, match="MODEL_DIR .* is not writable"):
    run(blocker / "sub", 2)


def test_batch_size_must_divide_the_data_axis(tmp_path):
  with pytest.raises(ValueError, match="BATCH_SIZE=16 is not divisible by the 3 devices"):
    trainer.train(tiny_model(), scene_pairs.SceneCaptionPairs(IMAGE_SIZE, LENGTHS), model_dir=str(tmp_path),
                  train_steps=1, batch_size=16, optimizer=optim.adamw, learning_rate=1e-3,
                  partitioner=partitioning.Partitioner(devices=jax.devices()[:3]), progress=False)


def test_a_parameter_the_mesh_cannot_split_is_named_before_compiling(tmp_path):
  model = siglip.SigLIPModel(image=vit_lib.config("pico/4", image_size=IMAGE_SIZE),
                             text=text_lib.config("pico", vocab_size=57, max_len=TEXT_LENGTH))
  with pytest.raises(ValueError, match=r"parameter txt/Embed_0/embedding of shape \(57, 32\) cannot be split 2 "
                                       r"ways on axis 0"):
    trainer.train(model, scene_pairs.SceneCaptionPairs(IMAGE_SIZE, LENGTHS), model_dir=str(tmp_path),
                  train_steps=1, batch_size=16, optimizer=optim.adamw, learning_rate=1e-3,
                  partitioner=partitioning.Partitioner(num_partitions=2), progress=False)
