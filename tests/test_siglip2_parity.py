"""SigLIP 2 / NaFlex: encoders.siglip.load reads HF Siglip2 and big_vision NaFlex checkpoints and its
encode_patches matches HF transformers' Siglip2 (torch, CPU) on random tiny models, for every aspect ratio."""

import numpy as np
import pytest

from encoders import siglip, siglip_checkpoints
from tests import hf_fixtures

RTOL = 1e-4
# Patch grids (rows, cols) of every shape: 1 x K and K x 1 (shorter and longer than the 8 x 8 position
# embedding), square, wide, tall; padded to LENGTH patches.
GRIDS = [(1, 5), (1, 40), (5, 1), (40, 1), (3, 7), (7, 3), (8, 8), (12, 10), (2, 13), (16, 4), (1, 1), (9, 9)]
LENGTH = 130


def assert_close(ours, ref):
  np.testing.assert_allclose(ours, ref, rtol=0, atol=RTOL * np.max(np.abs(ref)))


def assert_matches_hf(encoder, model, grids, length=LENGTH, seed=0):
  patches, mask, shapes = hf_fixtures.naflex_inputs(grids, length, seed=seed)
  ours = encoder.encode_patches(patches, mask, shapes)
  pooled, tokens = hf_fixtures.hf_patches(model, patches, mask, shapes)
  assert ours["tokens"].shape == tokens.shape
  real = mask.astype(bool)
  assert_close(ours["tokens"][real], tokens[real])  # every real patch's token
  assert np.all(ours["tokens"][~real] == 0)  # padding gives zeros, whatever it held
  if pooled is None:
    assert "pooled" not in ours
  else:
    for i in range(len(grids)):  # each example on its own scale
      assert_close(ours["pooled"][i], pooled[i])


@pytest.fixture(scope="module")
def hf2_dir(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("hf_siglip2"))
  return directory, hf_fixtures.save_siglip2(directory)


def test_full_model_matches_hf_on_every_aspect_ratio(hf2_dir):
  directory, model = hf2_dir
  assert_matches_hf(siglip.load(directory), model, GRIDS)


def test_text_tower_matches_hf(hf2_dir):
  directory, model = hf2_dir
  ids = np.random.default_rng(1).integers(0, hf_fixtures.TEXT["vocab_size"], (3, 12))
  ours = siglip.load(directory).encode_text(ids)
  pooled, tokens = hf_fixtures.hf_text(model, ids)
  assert_close(ours["pooled"], pooled)
  assert_close(ours["tokens"], tokens)


def test_vision_only_checkpoint(tmp_path):
  model = hf_fixtures.save_siglip2_vision(str(tmp_path), seed=3)
  encoder = siglip.load(str(tmp_path))
  assert_matches_hf(encoder, model, GRIDS, seed=4)
  with pytest.raises(ValueError, match="image tower only"):
    encoder.encode_text(np.zeros((1, 4), np.int32))


def test_headless_vision_only_checkpoint(tmp_path):
  model = hf_fixtures.save_siglip2_vision(str(tmp_path), seed=5, vision_use_head=False)
  assert_matches_hf(siglip.load(str(tmp_path)), model, GRIDS[:4], seed=6)


def test_sharded_checkpoint(tmp_path):
  model = hf_fixtures.save_siglip2(str(tmp_path), seed=7, max_shard_size="50KB")
  assert (tmp_path / "model.safetensors.index.json").exists()
  assert_matches_hf(siglip.load(str(tmp_path)), model, GRIDS[4:8], seed=8)


def test_padding_changes_nothing_real(hf2_dir):
  """The same images padded to other lengths, with other garbage in the padding: the same real tokens and
  pooled outputs."""
  encoder = siglip.load(hf2_dir[0])
  grids = [(3, 7), (1, 30), (6, 5)]
  patches, mask, shapes = hf_fixtures.naflex_inputs(grids, 30, seed=9)
  base = encoder.encode_patches(patches, mask, shapes)
  for extra, seed in ((1, 10), (50, 11)):
    garbage = np.random.default_rng(seed).uniform(-1, 1, (3, extra, patches.shape[-1])).astype(np.float32)
    out = encoder.encode_patches(np.concatenate([patches, garbage], 1),
                                 np.concatenate([mask, np.zeros((3, extra), mask.dtype)], 1), shapes)
    np.testing.assert_allclose(out["pooled"], base["pooled"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(out["tokens"][:, :30], base["tokens"], rtol=0, atol=1e-5)


def test_dense_images_are_the_full_grid_case(hf2_dir):
  """encode_image on a square image equals encode_patches on its patches: one patch embedding, one tower."""
  import jax.numpy as jnp
  from encoders import vit
  encoder = siglip.load(hf2_dir[0])
  for side in (32, 48, 20):  # the embedding's own grid (8 x 8 patches of 4 px), larger, smaller
    pixels = hf_fixtures.images(2, side, seed=side)
    grid = side // 4
    patches = np.asarray(vit.patchify(jnp.asarray(pixels), 4))
    via_patches = encoder.encode_patches(patches, np.ones(patches.shape[:2], np.int32), np.full((2, 2), grid))
    dense = encoder.encode_image(pixels)
    np.testing.assert_allclose(dense["tokens"], via_patches["tokens"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(dense["pooled"], via_patches["pooled"], rtol=0, atol=1e-5)


def test_export_round_trips_through_hf_siglip2(hf2_dir, tmp_path):
  import transformers
  directory, model = hf2_dir
  config, params = siglip_checkpoints.read(directory)
  siglip_checkpoints.write_hf(config, params, str(tmp_path), model_type="siglip2")
  reloaded = transformers.Siglip2Model.from_pretrained(str(tmp_path)).eval()
  for name, tensor in model.state_dict().items():
    np.testing.assert_array_equal(reloaded.state_dict()[name].numpy(), tensor.numpy(), err_msg=name)


def test_vision_only_export_round_trips(tmp_path):
  import transformers
  model = hf_fixtures.save_siglip2_vision(str(tmp_path / "in"), seed=12)
  config, params = siglip_checkpoints.read(str(tmp_path / "in"))
  siglip_checkpoints.write_hf(config, params, str(tmp_path / "out"), model_type="siglip2")
  reloaded = transformers.Siglip2VisionModel.from_pretrained(str(tmp_path / "out")).eval()
  assert_matches_hf(siglip.load(str(tmp_path / "out")), reloaded, GRIDS[:6], seed=13)
  assert_matches_hf(siglip.load(str(tmp_path / "out")), model, GRIDS[:6], seed=13)


def test_big_vision_naflex_npz_round_trip(hf2_dir, tmp_path):
  """Exported in big_vision's NaFlex layout (Dense patch embedding, [rows, cols, width] position grid), the
  .npz reads back to the same model."""
  directory, model = hf2_dir
  config, params = siglip_checkpoints.read(directory)
  path = str(tmp_path / "naflex.npz")
  siglip_checkpoints.write_big_vision(config, params, path, naflex=True)
  with np.load(path) as npz:
    assert npz["params/img/embedding/kernel"].shape == (4 * 4 * 3, hf_fixtures.VISION2["hidden_size"])
    assert npz["params/img/pos_embedding"].shape == (8, 8, hf_fixtures.VISION2["hidden_size"])
    assert "params/txt/Encoder_0/encoder_norm/scale" in npz.files
  assert_matches_hf(siglip.load(path), model, GRIDS[:6], seed=14)
  ids = np.random.default_rng(15).integers(0, hf_fixtures.TEXT["vocab_size"], (2, 12))
  assert_close(siglip.load(path).encode_text(ids)["pooled"], hf_fixtures.hf_text(model, ids)[0])


def test_torch_cpu_antialias_bug_is_why_the_reference_is_corrected():
  """The reference's correction (hf_fixtures.correct_torch_antialias) is needed and right: uncorrected, torch
  disagrees with PIL on a K x 1 resize; corrected, it agrees. If torch fixes its kernel, this test says so."""
  import torch
  from PIL import Image
  grid = np.random.default_rng(16).standard_normal((8, 8)).astype(np.float32)
  pil = np.asarray(Image.fromarray(grid, mode="F").resize((1, 20), Image.BILINEAR))[:, 0]

  def torch_resize():
    return torch.nn.functional.interpolate(torch.from_numpy(grid)[None, None], size=(20, 1), mode="bilinear",
                                           align_corners=False, antialias=True)[0, 0, :, 0].numpy()
  assert np.abs(torch_resize() - pil).max() > 0.1
  with hf_fixtures.correct_torch_antialias():
    np.testing.assert_allclose(torch_resize(), pil, rtol=0, atol=1e-5)


@pytest.mark.parametrize("args, match", [
    (dict(width=47), r"patches must be \[N, P, 48\]"),
    (dict(mask_shape=(2, 5)), r"mask must be \[N, P\]"),
    (dict(shapes=[[3, 7], [9, 9]]), r"spatial_shapes\[1\] = \[9, 9\] is 81 patches, more than the P = 30"),
    (dict(shapes=[[3, 7], [0, 4]]), r"spatial_shapes must be >= 1 patch"),
    (dict(mask_ones=[21, 19]), r"mask\[1\] disagrees with spatial_shapes\[1\] = \[4, 5\]"),
    (dict(scale=3.0), r"patches must be normalised to \[-1, 1\]"),
    (dict(shapes_dtype=np.float32), r"spatial_shapes must be integers"),
])
def test_bad_patch_inputs_are_one_clear_error(hf2_dir, args, match):
  encoder = siglip.load(hf2_dir[0])
  width = args.get("width", 48)
  patches = np.zeros((2, 30, width), np.float32) + args.get("scale", 0.0)
  shapes = np.array(args.get("shapes", [[3, 7], [4, 5]]), args.get("shapes_dtype", np.int64))
  ones = args.get("mask_ones", [21, 20])
  mask = np.array([[k < n for k in range(30)] for n in ones], np.int32)
  if "mask_shape" in args:
    mask = np.ones(args["mask_shape"], np.int32)
  with pytest.raises(ValueError, match=match):
    encoder.encode_patches(patches, mask, shapes)


def test_empty_batch_gives_empty_outputs(hf2_dir):
  out = siglip.load(hf2_dir[0]).encode_patches(np.zeros((0, 10, 48), np.float32), np.zeros((0, 10), np.int32),
                                               np.zeros((0, 2), np.int64))
  assert out["pooled"].shape == (0, hf_fixtures.VISION2["hidden_size"])
  assert out["tokens"].shape == (0, 10, hf_fixtures.VISION2["hidden_size"])


def test_unknown_model_type_is_one_clear_error(tmp_path):
  import json
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "clip"}))
  with pytest.raises(siglip_checkpoints.CheckpointError, match="model_type='clip'; a SigLIP checkpoint is one of"):
    siglip.load(str(tmp_path))
