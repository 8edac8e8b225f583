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


def test_sharded_checkpoint_loads(hf_dir, tmp_path):
  _, model = hf_dir
  model.save_pretrained(str(tmp_path), max_shard_size="50KB")
  assert (tmp_path / "model.safetensors.index.json").exists() and not (tmp_path / "model.safetensors").exists()
  pixels = hf_fixtures.images(2, 32, seed=5)
  pooled, tokens = hf_fixtures.hf_image(model, pixels)
  ours = siglip.load(str(tmp_path)).encode_image(pixels)
  assert_close(ours["pooled"], pooled)
  assert_close(ours["tokens"], tokens)


@pytest.mark.parametrize("hidden_act", ["gelu", "quick_gelu", "gelu_new"])
def test_other_mlp_activations_match_hf_and_export(hidden_act, tmp_path):
  import transformers
  model = hf_fixtures.save_siglip(str(tmp_path / "hf"), seed=6, hidden_act=hidden_act)
  encoder = siglip.load(str(tmp_path / "hf"))
  pixels, ids = hf_fixtures.images(2, 32, seed=7), np.random.default_rng(8).integers(0, 97, (2, 12))
  assert_close(encoder.encode_image(pixels)["tokens"], hf_fixtures.hf_image(model, pixels)[1])
  assert_close(encoder.encode_text(ids)["pooled"], hf_fixtures.hf_text(model, ids)[0])
  siglip_checkpoints.write_hf(encoder.config, encoder.params, str(tmp_path / "out"))
  reloaded = transformers.SiglipModel.from_pretrained(str(tmp_path / "out")).eval()
  assert_close(hf_fixtures.hf_image(reloaded, pixels)[0], hf_fixtures.hf_image(model, pixels)[0])


def test_unknown_hf_activation_is_refused(tmp_path):
  hf_fixtures.save_siglip_vision(str(tmp_path), hidden_act="relu")
  with pytest.raises(siglip_checkpoints.CheckpointError, match="hidden_act='relu'"):
    siglip.load(str(tmp_path))


def test_headless_vision_tower_gives_tokens(tmp_path):
  model = hf_fixtures.save_siglip_vision(str(tmp_path), seed=9, vision_use_head=False)
  pixels = hf_fixtures.images(2, 32, seed=10)
  ours = siglip.load(str(tmp_path)).encode_image(pixels)
  assert set(ours) == {"tokens"}  # HF's pooler_output is None without the head
  pooled, tokens = hf_fixtures.hf_image(model, pixels)
  assert pooled is None
  assert_close(ours["tokens"], tokens)


def test_empty_batches_give_empty_outputs(hf_dir):
  encoder = siglip.load(hf_dir[0])
  image = encoder.encode_image(np.zeros((0, 32, 32, 3), np.float32))
  text = encoder.encode_text(np.zeros((0, 12), np.int32))
  assert image["pooled"].shape == (0, hf_fixtures.VISION["hidden_size"])
  assert image["tokens"].shape == (0, 16, hf_fixtures.VISION["hidden_size"])
  assert text["pooled"].shape == (0, hf_fixtures.TEXT["projection_size"])
  assert text["tokens"].shape == (0, 12, hf_fixtures.TEXT["hidden_size"])
  assert all(v.dtype == np.float32 for v in (*image.values(), *text.values()))


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
