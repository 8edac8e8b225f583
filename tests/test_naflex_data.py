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


# ----------------------------------------------------------------------------------------------------------------
# Through seqio: native-aspect tasks, the image_inputs switch, converters, budgets drawn per step.
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture
def small_images():
  from tasks import registry  # also registers the tasks and their gin configurables
  with registry.image_size_bound(32), registry.patch_size_bound(4):
    yield


def test_native_aspect_generators_keep_their_shapes():
  from tasks import charts, documents, registry
  for index in range(12):
    doc = documents.example(0, index, image_size=96, native_aspect=True, with_document=True)
    low, high = documents.NATIVE_ASPECTS[doc["document"].kind]
    h, w = doc["image"].shape[:2]
    assert low - 0.05 <= h / w <= high + 0.05 and abs(h * w - 96 * 96) < 0.03 * 96 * 96
    chart = charts.example(0, index, image_size=96, native_aspect=True, with_chart=True)
    low, high = charts.NATIVE_ASPECTS[chart["chart"].kind]
    assert low - 0.05 <= chart["image"].shape[0] / chart["image"].shape[1] <= high + 0.05
    pair = registry._native_pair(0, "train", index, 48)  # pylint: disable=protected-access
    assert 1 / 3 - 0.05 <= pair["image"].shape[0] / pair["image"].shape[1] <= 3.05
  # The square stream is the one it was: the native flag only reshapes.
  square = documents.example(0, 3, image_size=64, with_document=True)
  native = documents.example(0, 3, image_size=64, native_aspect=True, with_document=True)
  assert square["document"].kind == native["document"].kind and square["image"].shape == (64, 64, 3)


def test_one_task_serves_dense_and_naflex_models(small_images):
  """The run's TASK_FEATURE_LENGTHS picks: a 'patches' budget gives patches at the native aspect, none gives
  the squashed square; same prompts and targets."""
  from tasks import pipeline
  lengths = {"inputs": 24, "targets": 32}
  dense = pipeline.SeqioBatches("documents_native_synthetic", lengths).batch(0, 4)
  patches = pipeline.SeqioBatches("documents_native_synthetic", {**lengths, "patches": 64}).batch(0, 4)
  assert dense["image"].shape == (4, 32, 32, 3) and "patches" not in dense
  assert patches["patches"].shape == (4, 64, 48) and "image" not in patches
  np.testing.assert_array_equal(dense["decoder_target_tokens"], patches["decoder_target_tokens"])
  rows, cols = patches["spatial_shapes"].T
  assert np.all(rows * cols <= 64) and np.any(rows != cols)  # native aspect ratios, within the budget
  np.testing.assert_array_equal(patches["patch_mask"], np.arange(64)[None] < (rows * cols)[:, None])
  assert np.all(patches["patches"][patches["patch_mask"] == 0] == 0)


def test_budgets_drawn_per_step_are_pure_in_seed_and_step(small_images):
  """Each step's budget is a draw from (seed, step); any step, asked in any order, by any process split, gives
  the uninterrupted run's batch, and the budgets alternate without rebuilding a pipeline per step."""
  from tasks import pipeline
  lengths = {"text": 16, "patches": (16, 32, 64)}
  run = pipeline.SeqioBatches("scene_pairs_native_synthetic", lengths, seed=3)
  batches = [run.batch(step, 4) for step in range(8)]
  budgets = [b["patches"].shape[1] for b in batches]
  assert budgets == [run.lengths_at(step)["patches"] for step in range(8)] and len(set(budgets)) > 1
  assert len(run._streams) == len(set(budgets))  # pylint: disable=protected-access  (one pipeline per budget)
  resumed = pipeline.SeqioBatches("scene_pairs_native_synthetic", lengths, seed=3)
  for step in (6, 2, 7):
    got = resumed.batch(step, 4)
    for key in got:
      np.testing.assert_array_equal(got[key], batches[step][key], err_msg=f"{key} at step {step}")
  halves = [resumed.process_batch(5, 4, i, 2) for i in range(2)]
  for key in halves[0]:
    np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), batches[5][key])
  other_seed = pipeline.SeqioBatches("scene_pairs_native_synthetic", lengths, seed=4)
  assert [other_seed.lengths_at(s)["patches"] for s in range(8)] != budgets


@pytest.mark.parametrize("lengths, match", [
    ({"text": 16, "patches": (16, 0)}, r"TASK_FEATURE_LENGTHS\['patches'\] must be an integer >= 1 or a tuple"),
    ({"text": 16, "patches": ()}, r"TASK_FEATURE_LENGTHS\['patches'\] must be an integer >= 1 or a tuple"),
])
def test_bad_length_choices_are_one_clear_error(small_images, lengths, match):
  from tasks import pipeline
  with pytest.raises(ValueError, match=match):
    pipeline.SeqioBatches("scene_pairs_native_synthetic", lengths)


def test_a_patch_budget_for_a_task_without_patches_is_refused(small_images):
  from tasks import pipeline
  with pytest.raises(ValueError, match="the dataset has no 'patches' feature"):
    pipeline.SeqioBatches("webli_pairs_synthetic", {"text": 16, "patches": 32}).batch(0, 2)
