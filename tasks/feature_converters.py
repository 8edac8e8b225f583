"""seqio FeatureConverters for multimodal examples: token features as T5X expects them, the image passed through.

Task features (after a Task's preprocessors and tokenisation): 'image' float32 [-1, 1] in [H, W, 3] (any H, W)
or [N, H, W, 3] (N frames), plus token features. Model features:

  MultimodalEncDecFeatureConverter (PaLI: vlm.model)
    image                  float32 [H, W, 3] or [N, H, W, 3], untouched
    encoder_input_tokens   int32 [inputs length]    the prompt, padded with 0
    decoder_target_tokens  int32 [targets length]   the answer (+ EOS), padded with 0
    decoder_input_tokens   int32 [targets length]   targets shifted right, 0 first (the decoder's start)
    decoder_loss_weights   int32 [targets length]   1 on targets, 0 on padding
    + encoder/decoder_segment_ids and _positions    when packed (text-only tasks)

  TwoTowerFeatureConverter (SigLIP: encoders.siglip)
    image                  as above
    text                   int32 [text length]      the caption (+ EOS), padded with 0

NaFlex (SigLIP 2's native aspect ratio; tasks.naflex, tasks.preprocessors.image_inputs). A task may give
'patches' float32 [n, p*p*3] (the image's n = rows * cols patches) and 'spatial_shapes' int32 [2] instead of
'image'; TASK_FEATURE_LENGTHS then has 'patches': P, the patch budget, and both converters output, in place of
'image' (the names of encoders.vit.PATCH_FEATURES):
    patches                float32 [P, p*p*3]       padded with 0
    patch_mask             int32 [P]                1 on the image's patches, 0 on padding
    spatial_shapes         int32 [2]                (rows, cols)

Multi-crop views (tasks.preprocessors.multi_crop, for the dense objectives): the two-tower converter passes
'global_views', 'local_views' and 'global_masks' through in place of 'image', their view counts checked.

Packing concatenates several examples' token sequences into one row, and an image cannot be split or shared
between the examples of a row, so an image dataset with pack=True is refused with a ValueError; text-only
datasets (UL2 denoising) pack as seqio's EncDecFeatureConverter packs them.

The image keeps seqio's checks without needing a TASK_FEATURE_LENGTHS entry (its size is not a sequence
length): it is declared as a model feature whose "length" is its channel axis, checked to be 3.
"""

from __future__ import annotations

from collections.abc import Mapping

import gin
from tasks.quiet_tensorflow import tf  # first: TensorFlow without its start-up lines (seqio imports it)
import seqio

FeatureSpec = seqio.FeatureConverter.FeatureSpec
_CHANNELS = 3


def _image_spec(ds: tf.data.Dataset) -> FeatureSpec | None:
  """The model FeatureSpec of the dataset's 'image' (None if it has none); ValueError if it is not an RGB float."""
  spec = ds.element_spec.get("image")
  if spec is None:
    return None
  if spec.dtype != tf.float32:
    raise ValueError(f"feature 'image' is {spec.dtype.name}; models read float32 in [-1, 1]: add "
                     "tasks.preprocessors.normalize_image to the task")
  rank = spec.shape.rank
  if rank not in (3, 4):
    raise ValueError(f"feature 'image' has rank {rank}; expected [H, W, 3] or [N, H, W, 3]")
  # The channel axis stands in for the sequence axis, so seqio's length checks verify it is 3.
  return FeatureSpec(dtype=tf.float32, rank=rank, sequence_dim=rank - 1)


VIEW_FEATURES = ("global_views", "local_views", "global_masks")  # tasks.preprocessors.multi_crop
LOCCA_FEATURES = ("locca_inputs", "locca_targets")  # the LocCa decoder's task (encoders/objectives/locca.py)
_PATCH_MODEL_FEATURES = {"patches": FeatureSpec(dtype=tf.float32, rank=2),
                         "patch_mask": FeatureSpec(dtype=tf.int32),
                         "spatial_shapes": FeatureSpec(dtype=tf.int32)}


def _has_patches(ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]) -> bool:
  """Whether the dataset holds NaFlex patches; ValueError where its features and the lengths disagree."""
  spec = ds.element_spec
  if "patches" not in spec:
    if "patches" in task_feature_lengths:
      raise ValueError("TASK_FEATURE_LENGTHS has 'patches' (a NaFlex patch budget) but the dataset has no "
                       "'patches' feature; drop it, or give the task tasks.preprocessors.image_inputs")
    return False
  if "image" in spec:
    raise ValueError("the dataset has both 'image' and NaFlex 'patches'; a task gives one of them")
  if spec["patches"].dtype != tf.float32 or spec["patches"].shape.rank != 2 or "spatial_shapes" not in spec:
    raise ValueError(f"NaFlex 'patches' must be float32 [n, p*p*3] with 'spatial_shapes' int32 [2]; got "
                     f"{spec['patches']} and {spec.get('spatial_shapes')}")
  if "patches" not in task_feature_lengths:
    raise ValueError("the dataset holds NaFlex 'patches': TASK_FEATURE_LENGTHS needs 'patches', the patch budget "
                     "(e.g. {'patches': 256, ...})")
  return True


def _patch_features(features: Mapping[str, tf.Tensor], length: int) -> dict[str, tf.Tensor]:
  """The model's NaFlex features from an example whose 'patches' are already padded to `length`."""
  shapes = tf.cast(features["spatial_shapes"], tf.int32)
  mask = tf.cast(tf.range(length) < shapes[0] * shapes[1], tf.int32)
  return {"patches": features["patches"], "patch_mask": mask, "spatial_shapes": shapes}


def _patch_lengths(task_feature_lengths: Mapping[str, int]) -> dict[str, int]:
  length = task_feature_lengths["patches"]
  return {"patches": length, "patch_mask": length, "spatial_shapes": 2}


@gin.configurable(module="tasks.feature_converters")
class MultimodalEncDecFeatureConverter(seqio.EncDecFeatureConverter):
  """seqio's EncDecFeatureConverter plus 'image' passed through; packing for text-only datasets only.

  Args:
    pack: pack text-only examples (ValueError on a dataset with an image).
    **kwargs: as seqio.EncDecFeatureConverter (use_custom_packing_ops, apply_length_check, bos_id).
  """

  def __init__(self, pack: bool = False, **kwargs):
    self._image = None  # the image's FeatureSpec while a dataset with an image is converted
    self._patch_length = None  # the patch budget while a NaFlex dataset is converted
    super().__init__(pack=pack, **kwargs)

  @property
  def TASK_FEATURES(self) -> dict[str, FeatureSpec]:  # pylint: disable=invalid-name  (seqio's name)
    features = dict(seqio.EncDecFeatureConverter.TASK_FEATURES)
    if self._patch_length is not None:
      features["patches"] = FeatureSpec(dtype=tf.float32, rank=2)
    return features

  @property
  def MODEL_FEATURES(self) -> dict[str, FeatureSpec]:  # pylint: disable=invalid-name  (seqio's name)
    features = dict(seqio.EncDecFeatureConverter.MODEL_FEATURES)
    if self._image is not None:
      features["image"] = self._image
    if self._patch_length is not None:
      features.update(_PATCH_MODEL_FEATURES)
    return features

  def __call__(self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
    """Converts `ds`; seqio's validations all run (the base __call__ does the work)."""
    image = _image_spec(ds)
    patches = _has_patches(ds, task_feature_lengths)
    if (image is not None or patches) and self.pack:
      raise ValueError("cannot pack examples with an 'image': packing puts several examples in one row and an "
                       "image belongs to exactly one; use pack=False for image tasks (only text-only tasks, "
                       "such as ul2_denoise_synthetic, pack)")
    # The image's spec is known only from the dataset; it is set for this call and cleared after, the
    # converted dataset having been built (traced) by then.
    self._image = image
    self._patch_length = task_feature_lengths["patches"] if patches else None
    try:
      return super().__call__(ds, task_feature_lengths)
    finally:
      self._image = self._patch_length = None

  def _convert_example(self, features: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    converted = dict(super()._convert_example(features))
    if self._image is not None:
      converted["image"] = features["image"]
    if self._patch_length is not None:
      converted.update(_patch_features(features, self._patch_length))
    return converted

  def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> dict[str, int]:
    """seqio's encoder-decoder lengths; while an image dataset is converted, also 'image': 3 (channels), and
    while a NaFlex one is, the patch features' lengths."""
    lengths = dict(super().get_model_feature_lengths(task_feature_lengths))
    if self._image is not None:
      lengths["image"] = _CHANNELS
    if self._patch_length is not None:
      lengths.update(_patch_lengths(task_feature_lengths))
    return lengths


@gin.configurable(module="tasks.feature_converters")
class TwoTowerFeatureConverter(seqio.FeatureConverter):
  """For two-tower (SigLIP) models: the image features passed through, the token features trimmed / padded.

  Token features: 'text', and LocCa's decoder task ('locca_inputs', 'locca_targets') where the dataset has it,
  each at its TASK_FEATURE_LENGTHS length. Image features: 'image', NaFlex patches, or multi-crop views (with
  the whole 'image' beside them where the dataset keeps it).

  Args:
    pack: must be False (an image pairs with exactly one text).
    **kwargs: as seqio.FeatureConverter (apply_length_check).
  """

  PACKING_FEATURE_DTYPES = None

  def __init__(self, pack: bool = False, **kwargs):
    if pack:
      raise ValueError("cannot pack image-text pairs: each image belongs to exactly one text; use pack=False")
    self._tokens = ("text",)  # the token features of the dataset being converted
    self._image = FeatureSpec(dtype=tf.float32, rank=3, sequence_dim=2)  # its 'image', or None
    self._patch_length = None  # the patch budget of a NaFlex dataset (then there is no image)
    self._views = {}  # multi-crop view feature -> (its spec, its view count)
    super().__init__(pack=False, **kwargs)

  @property
  def TASK_FEATURES(self) -> dict[str, FeatureSpec]:  # pylint: disable=invalid-name  (seqio's name)
    features = {k: FeatureSpec(dtype=tf.int32) for k in self._tokens}
    if self._patch_length is not None:
      features["patches"] = FeatureSpec(dtype=tf.float32, rank=2)
    return features

  @property
  def MODEL_FEATURES(self) -> dict[str, FeatureSpec]:  # pylint: disable=invalid-name  (seqio's name)
    features = {k: FeatureSpec(dtype=tf.int32) for k in self._tokens}
    if self._patch_length is not None:
      return {**features, **_PATCH_MODEL_FEATURES}
    features.update({k: spec for k, (spec, _) in self._views.items()})
    if self._image is not None:
      features["image"] = self._image
    return features

  def __call__(self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
    spec = ds.element_spec
    self._tokens = ("text",) + tuple(k for k in LOCCA_FEATURES if k in spec)
    self._views, self._patch_length = {}, None
    if _has_patches(ds, task_feature_lengths):
      self._patch_length, self._image = task_feature_lengths["patches"], None
    else:
      # Multi-crop views: each feature's leading axis (its view count) stands in for a sequence length.
      self._views = {k: (FeatureSpec(dtype=v.dtype, rank=v.shape.rank), v.shape[0])
                     for k, v in spec.items() if k in VIEW_FEATURES}
      self._image = _image_spec(ds)  # frames ([N, H, W, 3]) are allowed too
      if self._image is None and not self._views:
        raise ValueError("a two-tower dataset needs an 'image' feature (or NaFlex 'patches', or multi-crop views)")
    return super().__call__(ds, task_feature_lengths)

  def _convert_features(self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
    ds = self._pack_or_pad(ds, {k: task_feature_lengths[k] for k in self.TASK_FEATURES})
    length, tokens = self._patch_length, self._tokens
    images = tuple(self._views) + (("image",) if self._image is not None else ())

    def convert(ex):
      out = {k: ex[k] for k in tokens}
      out.update(_patch_features(ex, length) if length is not None else {k: ex[k] for k in images})
      return out
    return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)

  def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> dict[str, int]:
    lengths = {k: task_feature_lengths[k] for k in self._tokens}
    if self._patch_length is not None:
      return {**lengths, **_patch_lengths(task_feature_lengths)}
    lengths.update({k: count for k, (_, count) in self._views.items()})
    if self._image is not None:
      lengths["image"] = _CHANNELS
    return lengths


__all__ = ["MultimodalEncDecFeatureConverter", "TwoTowerFeatureConverter"]


def check_task_feature_lengths(lengths: Mapping[str, int] | None, defaults: Mapping[str, int],
                               source: str) -> dict[str, int]:
  """The TASK_FEATURE_LENGTHS a source of generated batches reads: exactly the keys of `defaults`.

  None takes the defaults. A key the source has no feature for, a missing one, or a length that is not an
  integer >= 1 is a ValueError naming it (a length silently ignored would train on other shapes than asked).
  """
  if lengths is None:
    return dict(defaults)
  lengths = dict(lengths)
  if set(lengths) != set(defaults):
    raise ValueError(f"{source} takes TASK_FEATURE_LENGTHS with the keys {sorted(defaults)}; got {sorted(lengths)}")
  for key, value in lengths.items():
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"TASK_FEATURE_LENGTHS[{key!r}] must be an integer >= 1; got {value!r}")
  return lengths
