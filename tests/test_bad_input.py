"""Bad input ends in one clear error naming the thing at fault."""

import json

import jax
import numpy as np
import pytest

from encoders import siglip, siglip_checkpoints
from encoders import text as text_lib
from encoders import vit as vit_lib
from tests import hf_fixtures
from vlm import checkpoints


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("hf"))
  hf_fixtures.save_siglip(directory)
  return siglip.load(directory)


@pytest.mark.parametrize("pixels, message", [
    (np.zeros((32, 32, 3), np.float32), r"must be \[N, H, W, 3\]"),
    (np.zeros((1, 3, 32, 32), np.float32), r"must be \[N, H, W, 3\]"),
    (np.zeros((1, 32, 32, 3), np.uint8), "got dtype uint8"),
    (np.full((1, 32, 32, 3), 200.0, np.float32), r"normalised to \[-1, 1\]"),
    (np.full((1, 32, 32, 3), np.nan, np.float32), "NaN"),
    (np.zeros((1, 30, 32, 3), np.float32), "not a multiple of the patch size 8"),
    (np.zeros((1, 0, 32, 3), np.float32), "image size 0x32 is empty"),
])
def test_bad_pixels(encoder, pixels, message):
  with pytest.raises(ValueError, match=message):
    encoder.encode_image(pixels)


@pytest.mark.parametrize("ids, message", [
    (np.zeros((12,), np.int32), r"must be \[N, L\]"),
    (np.zeros((1, 12), np.float32), "must be integers"),
    (np.full((1, 12), 97), r"token id 97 is outside the vocabulary \[0, 97\)"),
    (np.full((1, 12), -1), "token id -1 is outside"),
    (np.zeros((1, 13), np.int32), "at most 12 tokens"),
    (np.zeros((2, 0), np.int32), "length 0"),
])
def test_bad_token_ids(encoder, ids, message):
  with pytest.raises(ValueError, match=message):
    encoder.encode_text(ids)


def test_checkpoint_that_does_not_fit_its_config_names_parameter_and_shapes(tmp_path):
  hf_fixtures.save_siglip(str(tmp_path))
  config_path = tmp_path / "config.json"
  config = json.loads(config_path.read_text())
  config["vision_config"]["intermediate_size"] = 64
  config_path.write_text(json.dumps(config))
  with pytest.raises(checkpoints.CheckpointError,
                     match=r"img/MAPHead_0/MlpBlock_0/Dense_0/bias has shape \(96,\) but the model config "
                           r"expects \(64,\)|Dense_0/kernel has shape \(48, 96\) but the model config expects \(48, 64\)"):
    siglip.load(str(tmp_path))


def test_missing_and_corrupt_checkpoints(tmp_path):
  with pytest.raises(checkpoints.CheckpointError, match="no SigLIP checkpoint at"):
    siglip.load(str(tmp_path))
  hf_fixtures.save_siglip(str(tmp_path))
  (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
  with pytest.raises(checkpoints.CheckpointError, match="not a readable safetensors file"):
    siglip.load(str(tmp_path))
  (tmp_path / "model.safetensors").unlink()
  with pytest.raises(checkpoints.CheckpointError, match="neither model.safetensors nor its sharded"):
    siglip.load(str(tmp_path))
  (tmp_path / "config.json").write_text('{"model_type": "siglip",')
  with pytest.raises(checkpoints.CheckpointError, match=r"config.json: not valid JSON"):
    siglip.load(str(tmp_path))
  bad_npz = tmp_path / "bad.npz"
  bad_npz.write_bytes(b"garbage")
  with pytest.raises(checkpoints.CheckpointError, match="not a readable .npz"):
    siglip.load(str(bad_npz))


def test_npz_with_pickled_objects_is_refused(tmp_path):
  path = str(tmp_path / "evil.npz")
  np.savez(path, **{"params/img/embedding/kernel": np.array([{"a": 1}], dtype=object)})
  with pytest.raises(checkpoints.CheckpointError, match="not a readable .npz"):
    siglip.load(path)


@pytest.mark.parametrize("make", [lambda: vit_lib.config("Q/16"), lambda: vit_lib.config("B"),
                                  lambda: text_lib.config("Q")])
def test_unknown_size_names(make):
  with pytest.raises(ValueError, match="unknown .*size"):
    make()


@pytest.mark.parametrize("text_encoder", ["Encoder_0", "Transformer"])  # big_vision's name, and ours
def test_big_vision_npz_loads_with_geometry_from_shapes(tmp_path, text_encoder):
  directory = str(tmp_path / "hf")
  model = hf_fixtures.save_siglip(directory)
  config, params = siglip_checkpoints.read(directory)
  flat = checkpoints.flatten(jax.tree.map(np.asarray, params))
  npz = str(tmp_path / "siglip.npz")
  np.savez(npz, **{"params/" + k.replace("txt/Transformer/", f"txt/{text_encoder}/"): v for k, v in flat.items()})
  loaded = siglip.load(npz)
  assert loaded.config == config
  pixels, ids = hf_fixtures.images(2, 32), np.random.default_rng(1).integers(0, 97, (2, 12))
  np.testing.assert_array_equal(loaded.encode_image(pixels)["pooled"],
                                siglip.load(directory).encode_image(pixels)["pooled"])
  reference = hf_fixtures.hf_image(model, pixels)[0]
  np.testing.assert_allclose(loaded.encode_image(pixels)["pooled"], reference, atol=1e-4 * np.abs(reference).max())
  reference = hf_fixtures.hf_text(model, ids)[0]
  np.testing.assert_allclose(loaded.encode_text(ids)["pooled"], reference, atol=1e-4 * np.abs(reference).max())


def test_a_vocabulary_larger_than_the_embedding_table_is_refused():
  from tasks import vocab  # pylint: disable=import-outside-toplevel
  from vlm import model as model_lib, ul2  # pylint: disable=import-outside-toplevel
  vocabulary = vocab.vocabulary()
  vit = vit_lib.config("pico/4", image_size=16, pool_type="none")
  with pytest.raises(ValueError, match=rf"vocabulary has {vocabulary.vocab_size:,} ids but .* 512 rows; set "
                                       r"vlm\.ul2\.config\.vocab_size"):
    model_lib.PaLIModel(vit=vit, ul2=ul2.config("pico", vocab_size=512), vocabulary=vocabulary)
  model_lib.PaLIModel(vit=vit, ul2=ul2.config("pico", vocab_size=vocab.vocab_size()), vocabulary=vocabulary)
