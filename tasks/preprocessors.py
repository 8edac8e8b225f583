"""seqio preprocessors for PaLI tasks: images (decode, normalise, resize, random crop + flip) and prompts.

Every data source, synthetic or real, follows one convention, so any source can feed any task:

  raw example     'image/encoded' (JPEG/PNG bytes) or 'image' (uint8 [H, W, 3], or [N, H, W, 3] frames),
                  plus the text fields its prompt builder reads (below), plus optionally 'example_seed'
  after the task  'image' float32 [-1, 1] at the configured size, 'inputs' and 'targets' strings, which
                  seqio tokenises through the task's output features; or, for NaFlex models, 'patches' and
                  'spatial_shapes' in place of 'image' (`image_inputs` chooses by TASK_FEATURE_LENGTHS)

Text fields read by the prompt builders (boxes are normalised to [0, 1] and ordered y0, x0, y1, x1 as in
TFDS; 'lang' defaults to "en"):

  caption_prompt  'caption' [, 'lang']              -> "caption <lang>"          / the caption
  vqa_prompt      'question', 'answer' [, 'lang']   -> "answer <lang> <question>" / the answer
  ocr_prompt      'text'                            -> "ocr"                      / the text
  detect_prompt   'objects/bbox' [N, 4], 'objects/label' [N] [, 'query']
                                                    -> "detect <query>" / every box of that label as four
                                                       location tokens and the label, joined by " ; " (the
                                                       format of tasks.scene_tasks), or "none"; the query
                                                       defaults to the first object's label
  refexp_prompt   'phrase', 'bbox' [4]              -> "refexp <phrase>"          / the box's four tokens

Location tokens are tasks.locations': coordinate c in [0, 1] falls in bin floor(c * 1024), clipped to
0..1023 (`locations.box_to_tokens(box, 1, 1)` gives the same text). `resize_image(method="pad")` moves the
boxes with the image, so build prompts after resizing.

Randomness (random_crop_flip, ul2_denoise) is keyed on the example, not on its position in the stream: an
example carrying 'example_seed' (int64 [2], set by tasks.registry's sources from the data seed and the
example's index) gets the same crop wherever and whenever it is produced, which is what lets
tasks.pipeline resume at any step and shard over processes. Examples without it fall back on seqio's map
seeds (deterministic under seqio.map_seed_manager, but positional).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from tasks.quiet_tensorflow import tf  # first: TensorFlow without its start-up lines (seqio imports it)
import seqio

from tasks import data_health
from tasks import locations
from tasks import masks as masks_lib
from tasks import naflex
from tasks import ul2_objectives

_LOC_TOKENS = tf.constant(locations.LOC_TOKENS)
_BOX_KEYS = ("objects/bbox", "bbox")  # box features moved by resize_image(method="pad")

# Salts folded into an example's seed, one per random preprocessor, so their draws are independent.
_CROP_SALT = 1
_UL2_SALT = 2
_VIEWS_SALT = 3


def _example_seed(ex: dict, seqio_seed: tf.Tensor, salt: int) -> tf.Tensor:
  """int64 [2] stateless seed: from the example's own 'example_seed' if it has one, else seqio's map seed."""
  base = ex["example_seed"] if "example_seed" in ex else seqio_seed
  return tf.random.experimental.stateless_fold_in(tf.cast(base, tf.int64), salt)


def _hw(image_size: int | Sequence[int]) -> tuple[int, int]:
  return (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)


# ----------------------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------------------


@seqio.map_over_dataset
def decode_image(ex: dict) -> dict:
  """'image/encoded' (JPEG, PNG, BMP or GIF bytes) -> 'image' uint8 [H, W, 3]; examples with 'image' pass."""
  if "image/encoded" not in ex:
    return ex
  ex = dict(ex)
  encoded = ex.pop("image/encoded")
  ex["image"] = tf.ensure_shape(tf.io.decode_image(encoded, channels=3, expand_animations=False),
                                [None, None, 3])
  return ex


@seqio.map_over_dataset
def normalize_image(ex: dict) -> dict:
  """uint8 'image' -> float32 in [-1, 1] (0 -> -1, 255 -> 1); a float32 image is taken as already normalised."""
  image = ex["image"]
  if image.dtype == tf.float32:
    return ex
  if image.dtype != tf.uint8:
    raise ValueError(f"'image' must be uint8 or float32 in [-1, 1], got {image.dtype.name}")
  return {**ex, "image": tf.cast(image, tf.float32) * (1 / 127.5) - 1}


@seqio.map_over_dataset
def resize_image(ex: dict, image_size: int | Sequence[int], method: str = "squash") -> dict:
  """Resizes the float32 'image' ([H, W, 3] or frames [N, H, W, 3]) to `image_size`.

  Args:
    ex: the example (after normalize_image).
    image_size: the side, or (height, width), in pixels.
    method: "squash" stretches to the size (PaLI's choice: no pixels wasted on padding, boxes stay valid);
      "pad" keeps the aspect ratio, centres the image and pads with 0 (mid-grey in [-1, 1]), moving the
      normalised boxes in 'objects/bbox' and 'bbox' with it.

  Returns:
    The example with 'image' float32 [h, w, 3] (or [N, h, w, 3]). Antialiased when shrinking.
  """
  if method not in ("squash", "pad"):
    raise ValueError(f"resize method must be 'squash' or 'pad', got {method!r}")
  image = ex["image"]
  if image.dtype != tf.float32:
    raise ValueError("resize_image takes float32 images: apply normalize_image first")
  h, w = _hw(image_size)
  if image.shape[-3:-1] == (h, w):  # generated images are rendered at the size: nothing to do
    return ex
  ex = dict(ex)
  if method == "squash":
    ex["image"] = tf.image.resize(image, (h, w), antialias=True)
    return ex
  in_h, in_w = (tf.cast(d, tf.float32) for d in tf.unstack(tf.shape(image)[-3:-1]))
  scale = tf.minimum(h / in_h, w / in_w)
  new_h = tf.clip_by_value(tf.cast(tf.round(in_h * scale), tf.int32), 1, h)
  new_w = tf.clip_by_value(tf.cast(tf.round(in_w * scale), tf.int32), 1, w)
  top, left = (h - new_h) // 2, (w - new_w) // 2
  resized = tf.image.resize(image, tf.stack([new_h, new_w]), antialias=True)
  ex["image"] = tf.image.pad_to_bounding_box(resized, top, left, h, w)
  # A normalised coordinate c lands at (c * new + offset) / side.
  shift = tf.cast(tf.stack([top / h, left / w, top / h, left / w]), tf.float32)
  factor = tf.cast(tf.stack([new_h / h, new_w / w, new_h / h, new_w / w]), tf.float32)
  for key in _BOX_KEYS:
    if key in ex:
      ex[key] = tf.cast(ex[key], tf.float32) * factor + shift
  return ex


def naflex_patches(ds: tf.data.Dataset, max_num_patches: int, patch_size: int) -> tf.data.Dataset:
  """uint8 'image' [H, W, 3] -> NaFlex 'patches' float32 [n, p*p*3] in [-1, 1] and 'spatial_shapes' int32 [2]
  (rows, cols; n = rows * cols <= max_num_patches): the aspect-preserving resize of tasks.naflex, which equals
  HF's Siglip2 image processor. The feature converter pads to the budget. Normalised boxes stay valid: the
  whole image is kept, at nearly its own aspect ratio.
  """
  if ds.element_spec["image"].dtype != tf.uint8 or ds.element_spec["image"].shape.rank != 3:
    raise ValueError(f"NaFlex patches are cut from uint8 images [H, W, 3] (decoded, not normalised); got "
                     f"{ds.element_spec['image']}")

  def cut(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return naflex.patch_sequence(image, patch_size, max_num_patches)

  @seqio.map_over_dataset
  def fn(ex):
    ex = dict(ex)
    patches, shapes = tf.numpy_function(cut, [ex.pop("image")], [tf.float32, tf.int32], stateful=False)
    ex["patches"] = tf.ensure_shape(patches, [None, patch_size * patch_size * 3])
    ex["spatial_shapes"] = tf.ensure_shape(shapes, [2])
    return ex

  return fn(ds)


def image_inputs(ds: tf.data.Dataset, sequence_length: dict | None, image_size: int | Sequence[int],
                 patch_size: int, method: str = "squash") -> tf.data.Dataset:
  """The image as the model takes it: NaFlex patches when the feature lengths give a patch budget
  (TASK_FEATURE_LENGTHS['patches']), else normalised and resized to `image_size` (resize_image's `method`).

  One task then serves both kinds of model: the run's TASK_FEATURE_LENGTHS picks.
  """
  if sequence_length and sequence_length.get("patches"):
    return naflex_patches(ds, sequence_length["patches"], patch_size)
  return resize_image(normalize_image(ds), image_size=image_size, method=method)


@seqio.map_over_dataset(num_seeds=1)
def random_crop_flip(ex: dict, seed: tf.Tensor, image_size: int | Sequence[int],
                     area_range: tuple[float, float] = (0.5, 1.0),
                     aspect_range: tuple[float, float] = (3 / 4, 4 / 3), flip: bool = True) -> dict:
  """Inception-style random crop resized to `image_size`, then a random horizontal flip (encoder pretraining).

  The crop covers a random fraction of the area in `area_range` with aspect ratio in `aspect_range`; frames
  ([N, H, W, 3]) share one crop and one flip. Boxes would not follow the crop, so examples with box features
  are refused. Texts that name positions ("on the left") are wrong after a flip: pass flip=False for them.

  Args:
    ex: the example, with a float32 'image'.
    seed: seqio's map seed, used only when the example has no 'example_seed'.
    image_size: the output side, or (height, width).
    area_range: (min, max) fraction of the image area kept.
    aspect_range: (min, max) width / height of the crop.
    flip: flip left-right with probability 1/2.

  Returns:
    The example with 'image' float32 at `image_size`.
  """
  if any(key in ex for key in _BOX_KEYS):
    raise ValueError("random_crop_flip would leave boxes pointing at the wrong pixels: not for box tasks")
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(
      _example_seed(ex, seed, _CROP_SALT), num=2))
  image = ex["image"]
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.shape(image)[-3:], bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=crop_seed,
      area_range=area_range, aspect_ratio_range=aspect_range, min_object_covered=0.0,
      use_image_if_no_bounding_boxes=True)
  image = image[..., begin[0]:begin[0] + size[0], begin[1]:begin[1] + size[1], :]
  image = tf.image.resize(image, _hw(image_size), antialias=True)
  if flip:
    do_flip = tf.random.stateless_uniform([], seed=flip_seed) < 0.5
    image = tf.cond(do_flip, lambda: tf.reverse(image, axis=[-2]), lambda: image)
  return {**ex, "image": image}


def multi_crop(ds: tf.data.Dataset, global_views: int = 2, global_size: int = 224,
               global_area: tuple[float, float] = (0.4, 1.0), local_views: int = 8, local_size: int = 96,
               local_area: tuple[float, float] = (0.05, 0.4), aspect_range: tuple[float, float] = (3 / 4, 4 / 3),
               mask_ratio: tuple[float, float] | None = None, patch_size: int = 16,
               keep_image: bool = False) -> tf.data.Dataset:
  """SILC's multi-crop views of the float32 'image', in place of it (or beside it, with keep_image: LocCa reads
  the whole image); encoders/objectives/compose.py reads them.

  Each view is an Inception-style crop covering a fraction of the image's area in its range, resized:
    'global_views'  float32 [global_views, global_size, global_size, 3]
    'local_views'   float32 [local_views, local_size, local_size, 3]   (absent with local_views=0)
    'global_masks'  int32 [global_views, T], T = (global_size / patch_size)^2: iBOT block masks, each view's
                    masked share drawn from `mask_ratio` (absent without it)
  Every draw comes from the example's seed (as random_crop_flip's), so the views of a row are a pure function
  of (seed, row). No flips: the scene captions name positions.
  """
  if global_views < 1 or local_views < 0:
    raise ValueError(f"multi_crop needs at least one global view and no negative count; got {global_views} "
                     f"global, {local_views} local")
  for name, (low, high) in (("global_area", global_area), ("local_area", local_area)):
    if not 0.0 < low <= high <= 1.0:
      raise ValueError(f"multi_crop {name}={(low, high)}: fractions of the image's area, 0 < low <= high <= 1")
  if global_size % patch_size:
    raise ValueError(f"multi_crop global_size {global_size} is not a multiple of patch_size {patch_size}")
  grid = global_size // patch_size

  def crops(image, seeds, count, size, area):
    views = []
    for i in range(count):
      begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
          tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seeds[i],
          area_range=area, aspect_ratio_range=aspect_range, min_object_covered=0.0,
          use_image_if_no_bounding_boxes=True)
      crop = image[begin[0]:begin[0] + extent[0], begin[1]:begin[1] + extent[1], :]
      views.append(tf.image.resize(crop, (size, size), antialias=True))
    return tf.stack(views)

  def masks(seed: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng([int(s) % 2 ** 63 for s in seed])
    return np.stack([masks_lib.block_mask(rng, grid, grid, rng.uniform(*mask_ratio)).reshape(-1)
                     for _ in range(global_views)]).astype(np.int32)

  @seqio.map_over_dataset(num_seeds=1)
  def fn(ex, seed):
    if ex["image"].dtype != tf.float32 or ex["image"].shape.rank != 3:
      raise ValueError("multi_crop takes one float32 image [H, W, 3]: apply normalize_image first")
    if any(key in ex for key in _BOX_KEYS):
      raise ValueError("multi_crop would leave boxes pointing at the wrong pixels: not for box tasks")
    base = _example_seed(ex, seed, _VIEWS_SALT)
    seeds = tf.random.experimental.stateless_split(base, num=global_views + local_views + 1)
    ex = dict(ex)
    image = ex["image"] if keep_image else ex.pop("image")
    ex["global_views"] = tf.ensure_shape(crops(image, seeds[:global_views], global_views, global_size, global_area),
                                         [global_views, global_size, global_size, 3])
    if local_views:
      ex["local_views"] = tf.ensure_shape(
          crops(image, seeds[global_views:global_views + local_views], local_views, local_size, local_area),
          [local_views, local_size, local_size, 3])
    if mask_ratio is not None:
      drawn = tf.numpy_function(masks, [seeds[-1]], tf.int32, stateful=False)
      ex["global_masks"] = tf.ensure_shape(drawn, [global_views, grid * grid])
    return ex

  return fn(ds)


# ----------------------------------------------------------------------------------------------------------------
# Prompts
# ----------------------------------------------------------------------------------------------------------------


def _lang(ex: dict) -> tf.Tensor:
  return ex["lang"] if "lang" in ex else tf.constant("en")


def box_tokens(boxes: tf.Tensor) -> tf.Tensor:
  """Normalised boxes [..., 4] (y0, x0, y1, x1 in [0, 1]) -> strings [...] of four location tokens each.

  Binning in float64, as tasks.locations computes it in Python, so both write the same tokens.
  """
  scaled = tf.floor(tf.cast(boxes, tf.float64) * locations.NUM_BINS)
  bins = tf.cast(tf.clip_by_value(scaled, 0, locations.NUM_BINS - 1), tf.int32)
  return tf.strings.reduce_join(tf.gather(_LOC_TOKENS, bins), axis=-1)


@seqio.map_over_dataset
def caption_prompt(ex: dict) -> dict:
  """'caption' [, 'lang'] -> inputs "caption <lang>", targets the caption."""
  return {**ex, "inputs": tf.strings.join(["caption ", _lang(ex)]), "targets": ex["caption"]}


@seqio.map_over_dataset
def vqa_prompt(ex: dict) -> dict:
  """'question', 'answer' [, 'lang'] -> inputs "answer <lang> <question>", targets the answer."""
  return {**ex, "inputs": tf.strings.join(["answer ", _lang(ex), " ", ex["question"]]), "targets": ex["answer"]}


@seqio.map_over_dataset
def ocr_prompt(ex: dict) -> dict:
  """'text' -> inputs "ocr", targets the text."""
  return {**ex, "inputs": tf.constant("ocr"), "targets": ex["text"]}


@seqio.map_over_dataset
def detect_prompt(ex: dict) -> dict:
  """'objects/bbox', 'objects/label' [, 'query'] -> "detect <query>" / its boxes (see the module docstring)."""
  labels = ex["objects/label"]
  query = ex["query"] if "query" in ex else labels[0]
  mine = tf.equal(labels, query)
  boxes = box_tokens(tf.boolean_mask(ex["objects/bbox"], mine))  # [K]
  found = tf.strings.reduce_join(tf.strings.join([boxes, " ", query]), separator=" ; ")
  targets = tf.where(tf.size(boxes) > 0, found, "none")
  return {**ex, "inputs": tf.strings.join(["detect ", query]), "targets": targets}


@seqio.map_over_dataset
def refexp_prompt(ex: dict) -> dict:
  """'phrase', 'bbox' -> inputs "refexp <phrase>", targets the box as four location tokens."""
  return {**ex, "inputs": tf.strings.join(["refexp ", ex["phrase"]]), "targets": box_tokens(ex["bbox"])}


# ----------------------------------------------------------------------------------------------------------------
# Text
# ----------------------------------------------------------------------------------------------------------------


def tokenize(ds: tf.data.Dataset, output_features, copy_pretokenized: bool = True) -> tf.data.Dataset:
  """seqio.preprocessors.tokenize (the output features' strings -> ids, "<key>_pretokenized" kept), with
  tf.data's autotuned parallelism.

  seqio's own runs 256 calls in parallel, so it pulls 256 examples from upstream before the first is done:
  for generated or decoded images that is 256 images rendered ahead (2.5 GB at 812 px) and all of that work
  thrown away whenever tasks.pipeline rebuilds at another step.
  """
  fn = functools.partial(seqio.preprocessors.tokenize_impl, output_features=output_features,
                         copy_pretokenized=copy_pretokenized)
  return seqio.map_over_dataset(fn=fn, num_parallel_calls=tf.data.AUTOTUNE)(ds)



def ul2_denoise(ds: tf.data.Dataset, output_features, sequence_length,
                denoisers: Sequence[ul2_objectives.Denoiser] = ul2_objectives.UL2_DENOISERS,
                rates: Sequence[float] | None = None) -> tf.data.Dataset:
  """UL2's mixture of denoisers on tokenised 'targets' (the text) -> 'inputs' and 'targets' token ids.

  Runs tasks.ul2_objectives.ul2_denoise per example (through numpy), drawing from the example's seed. The
  text is first cut to sequence_length['inputs'] - 2 tokens: corrupted inputs are never longer than their
  text, so with the mode token and EOS (appended afterwards by seqio.preprocessors.append_eos_after_trim)
  they fit. Targets longer than sequence_length['targets'] (with EOS) are trimmed by the EOS step, and each one
  is counted in tasks.data_health ('ul2_denoise/trimmed_targets', with one warning): targets as long as the
  inputs always fit (a denoiser's targets are at most its text, sentinels included). Mode tokens and sentinels
  come from the 'inputs' vocabulary (a tasks.vocab.PaliVocabulary).

  Args:
    ds: tokenised examples with 'targets' int32 [L].
    output_features: the task's features (seqio passes them).
    sequence_length: the task feature lengths (seqio passes them); None keeps whole texts.
    denoisers: the mixture (default: UL2's seven).
    rates: relative rate of each denoiser (None: uniform).

  Returns:
    Examples with 'inputs' and 'targets' int32, without EOS.
  """
  vocab = output_features["inputs"].vocabulary
  mode_ids, sentinels = vocab.mode_token_ids, vocab.sentinel_ids
  max_tokens = None if not sequence_length else sequence_length["inputs"] - 2
  max_targets = None if not sequence_length else sequence_length["targets"] - 1  # room for EOS

  def denoise(tokens: np.ndarray, seed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([int(s) % 2 ** 63 for s in seed])
    inputs, targets, _ = ul2_objectives.ul2_denoise(tokens, rng, mode_token_ids=mode_ids, sentinel_ids=sentinels,
                                                     denoisers=denoisers, rates=rates)
    if max_targets is not None and len(targets) > max_targets:  # the EOS step will cut it: counted, never silent
      data_health.record("ul2_denoise", "trimmed_targets",
                         f"{len(targets)} target tokens for a targets length of {max_targets + 1} with EOS; raise "
                         "TASK_FEATURE_LENGTHS['targets'] (to the inputs length, every denoiser's targets fit)")
    return inputs, targets

  @seqio.map_over_dataset(num_seeds=1)
  def fn(ex, seed):
    tokens = ex["targets"] if max_tokens is None else ex["targets"][:max_tokens]
    inputs, targets = tf.numpy_function(denoise, [tokens, _example_seed(ex, seed, _UL2_SALT)],
                                        [tf.int32, tf.int32], stateful=False)
    return {**ex, "inputs": tf.ensure_shape(inputs, [None]), "targets": tf.ensure_shape(targets, [None])}

  return fn(ds)


__all__ = ["decode_image", "normalize_image", "resize_image", "naflex_patches", "image_inputs", "multi_crop", "random_crop_flip", "box_tokens", "caption_prompt",
           "vqa_prompt", "ocr_prompt", "detect_prompt", "refexp_prompt", "tokenize", "ul2_denoise"]
