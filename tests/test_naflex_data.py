"""tasks.naflex (SigLIP 2's aspect-preserving resize to a patch budget, and patchify) against HF's Siglip2 image
processor, and the NaFlex features through seqio: preprocessor, feature converters, budgets sampled per step."""

import numpy as np
import pytest

from tasks import naflex

# Image sizes of every shape (tiny, square, wide, tall, extreme strips) and budgets.
SIZES = [(1, 1), (3, 5), (7, 300), (300, 7), (37, 91), (224, 224), (480, 640), (640, 480), (1000, 1500), (33, 2000),
         (2000, 33), (17, 17), (256, 257), (1333, 800)]


def hf_processor(patch_size, budget):
  from transformers.models.siglip2.image_processing_pil_siglip2 import Siglip2ImageProcessorPil
  return Siglip2ImageProcessorPil(patch_size=patch_size, max_num_patches=budget)


@pytest.mark.parametrize("patch_size", [14, 16])
@pytest.mark.parametrize("budget", [1, 4, 128, 256, 576, 784, 1024])
def test_grid_is_hf_s_choice(patch_size, budget):
  from transformers.models.siglip2.image_processing_pil_siglip2 import get_image_size_for_max_num_patches
  rng = np.random.default_rng(budget + patch_size)
  sizes = SIZES + [tuple(int(v) for v in rng.integers(1, 4000, 2)) for _ in range(150)]
  for h, w in sizes:
    ref_h, ref_w = get_image_size_for_max_num_patches(h, w, patch_size, budget)
    rows, cols = naflex.grid_for_budget(h, w, patch_size, budget)
    assert (rows * patch_size, cols * patch_size) == (ref_h, ref_w), (h, w)
    assert 1 <= rows * cols <= budget


@pytest.mark.parametrize("patch_size, budget", [(16, 256), (14, 128), (16, 1024), (4, 64)])
def test_patchify_equals_hf_s_processor_output(patch_size, budget):
  """Patches, mask and spatial shapes of real uint8 images, HF's Siglip2 processor (PIL backend) as reference."""
  rng = np.random.default_rng(patch_size * budget)
  images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SIZES]
  ref = hf_processor(patch_size, budget)(images=images, return_tensors="np", input_data_format="channels_last")
  ours = naflex.patchify_batch(images, patch_size, budget)
  np.testing.assert_array_equal(ours["spatial_shapes"], ref["spatial_shapes"])
  np.testing.assert_array_equal(ours["patch_mask"], ref["pixel_attention_mask"])
  # Same uint8 pixels; normalised as x / 127.5 - 1 here and (x / 255 - 0.5) / 0.5 there: float rounding apart.
  np.testing.assert_allclose(ours["patches"], ref["pixel_values"], rtol=0, atol=1e-6)
  assert ours["patches"].dtype == np.float32 and ours["patch_mask"].dtype == np.int32


def test_patches_are_the_tower_s_layout():
  """Patch k of an image that needs no resize is pixels [r p:(r+1) p, c p:(c+1) p] flattened (row, col, channel),
  exactly what encoders.vit.patchify gives for the dense path."""
  import jax.numpy as jnp
  from encoders import vit
  image = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
  out = naflex.patchify(image, 8, 30)
  assert out["spatial_shapes"].tolist() == [4, 6] and out["patch_mask"].sum() == 24
  dense = np.asarray(vit.patchify(jnp.asarray(image[None].astype(np.float32) / 127.5 - 1), 8))[0]
  np.testing.assert_allclose(out["patches"][:24], dense, rtol=0, atol=1e-6)
  assert np.all(out["patches"][24:] == 0)
  np.testing.assert_allclose(naflex.grid_image(out["patches"], out["spatial_shapes"], 8),
                             image.astype(np.float32) / 127.5 - 1, rtol=0, atol=1e-6)


def test_grayscale_images_become_rgb():
  gray = np.random.default_rng(1).integers(0, 256, (20, 30), dtype=np.uint8)
  np.testing.assert_array_equal(naflex.patchify(gray, 4, 64)["patches"],
                                naflex.patchify(np.repeat(gray[..., None], 3, -1), 4, 64)["patches"])


@pytest.mark.parametrize("call, match", [
    (lambda: naflex.patchify(np.zeros((8, 8, 3), np.uint8), 4, 0), "max_num_patches must be an integer >= 1"),
    (lambda: naflex.patchify(np.zeros((8, 8, 3), np.uint8), 4, 2.5), "max_num_patches must be an integer >= 1"),
    (lambda: naflex.patchify(np.zeros((8, 8, 3), np.float32), 4, 16), "takes uint8 images"),
    (lambda: naflex.patchify(np.zeros((8, 8, 4), np.uint8), 4, 16), r"must be \[H, W, 3\]"),
    (lambda: naflex.patchify(np.zeros((0, 8, 3), np.uint8), 4, 16), r"must be \[H, W, 3\]"),
])
def test_bad_input_is_one_clear_error(call, match):
  with pytest.raises(ValueError, match=match):
    call()
