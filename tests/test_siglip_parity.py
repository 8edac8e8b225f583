"""encoders.siglip.load matches HF transformers' SigLIP (torch, CPU) on random tiny models."""

import numpy as np
import pytest

from encoders import siglip, siglip_checkpoints
from tests import hf_fixtures

RTOL = 1e-4


def assert_close(ours, ref):
  scale = np.max(np.abs(ref))
  np.testing.assert_allclose(ours, ref, rtol=0, atol=RTOL * scale)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("hf_siglip"))
  return directory, hf_fixtures.save_siglip(directory)


def test_image_tower_matches_hf(hf_dir):
  directory, model = hf_dir
  pixels = hf_fixtures.images(3, 32)
  ours = siglip.load(directory).encode_image(pixels)
  pooled, tokens = hf_fixtures.hf_image(model, pixels)
  assert ours["pooled"].shape == pooled.shape and ours["tokens"].shape == tokens.shape
  assert_close(ours["pooled"], pooled)
  assert_close(ours["tokens"], tokens)


def test_text_tower_matches_hf(hf_dir):
  directory, model = hf_dir
  ids = np.random.default_rng(1).integers(0, hf_fixtures.TEXT["vocab_size"], (4, 12))
  ours = siglip.load(directory).encode_text(ids)
  pooled, tokens = hf_fixtures.hf_text(model, ids)
  assert ours["pooled"].shape == (4, hf_fixtures.TEXT["projection_size"])
  assert_close(ours["pooled"], pooled)
  assert_close(ours["tokens"], tokens)


def test_vision_only_checkpoint(tmp_path):
  model = hf_fixtures.save_siglip_vision(str(tmp_path), seed=3)
  encoder = siglip.load(str(tmp_path))
  pixels = hf_fixtures.images(2, 32, seed=4)
  pooled, tokens = hf_fixtures.hf_image(model, pixels)
  ours = encoder.encode_image(pixels)
  assert_close(ours["pooled"], pooled)
  assert_close(ours["tokens"], tokens)
  with pytest.raises(ValueError, match="image tower only"):
    encoder.encode_text(np.zeros((1, 4), np.int32))


def test_export_round_trips_through_hf(hf_dir, tmp_path):
  import transformers
  directory, model = hf_dir
  config, params = siglip_checkpoints.read(directory)
  siglip_checkpoints.write_hf(config, params, str(tmp_path))
  reloaded = transformers.SiglipModel.from_pretrained(str(tmp_path)).eval()
  for name, tensor in model.state_dict().items():
    np.testing.assert_array_equal(reloaded.state_dict()[name].numpy(), tensor.numpy(), err_msg=name)
  pixels = hf_fixtures.images(2, 32, seed=5)
  assert_close(siglip.load(str(tmp_path)).encode_image(pixels)["pooled"], hf_fixtures.hf_image(model, pixels)[0])


def test_upsampled_resolution_resizes_position_embedding(hf_dir):
  directory, _ = hf_dir
  out = siglip.load(directory).encode_image(hf_fixtures.images(1, 48))
  assert out["tokens"].shape == (1, 36, hf_fixtures.VISION["hidden_size"])
