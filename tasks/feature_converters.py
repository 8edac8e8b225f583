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

Packing concatenates several examples' token sequences into one row, and an image cannot be split or shared
between the examples of a row, so an image dataset with pack=True is refused with a ValueError; text-only
datasets (UL2 denoising) pack as seqio's EncDecFeatureConverter packs them.

The image keeps seqio's checks without needing a TASK_FEATURE_LENGTHS entry (its size is not a sequence
length): it is declared as a model feature whose "length" is its channel axis, checked to be 3.
"""

from __future__ import annotations

from collections.abc import Mapping

import gin
import seqio
import tensorflow as tf

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


@gin.configurable(module="tasks.feature_converters")
class MultimodalEncDecFeatureConverter(seqio.EncDecFeatureConverter):
  """seqio's EncDecFeatureConverter plus 'image' passed through; packing for text-only datasets only.

  Args:
    pack: pack text-only examples (ValueError on a dataset with an image).
    **kwargs: as seqio.EncDecFeatureConverter (use_custom_packing_ops, apply_length_check, bos_id).
  """

  def __init__(self, pack: bool = False, **kwargs):
    self._image = None  # the image's FeatureSpec while a dataset with an image is converted
    super().__init__(pack=pack, **kwargs)

  @property
  def MODEL_FEATURES(self) -> dict[str, FeatureSpec]:  # pylint: disable=invalid-name  (seqio's name)
    features = dict(seqio.EncDecFeatureConverter.MODEL_FEATURES)
    if self._image is not None:
      features["image"] = self._image
    return features

  def __call__(self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
    """Converts `ds`; seqio's validations all run (the base __call__ does the work)."""
    image = _image_spec(ds)
    if image is not None and self.pack:
      raise ValueError("cannot pack examples with an 'image': packing puts several examples in one row and an "
                       "image belongs to exactly one; use pack=False for image tasks (only text-only tasks, "
                       "such as ul2_denoise_synthetic, pack)")
    # The image's spec is known only from the dataset; it is set for this call and cleared after, the
    # converted dataset having been built (traced) by then.
    self._image = image
    try:
      return super().__call__(ds, task_feature_lengths)
    finally:
      self._image = None

  def _convert_example(self, features: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    converted = dict(super()._convert_example(features))
    if self._image is not None:
      converted["image"] = features["image"]
    return converted

  def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> dict[str, int]:
    """seqio's encoder-decoder lengths; while an image dataset is converted, also 'image': 3 (channels)."""
    lengths = dict(super().get_model_feature_lengths(task_feature_lengths))
    if self._image is not None:
      lengths["image"] = _CHANNELS
    return lengths


@gin.configurable(module="tasks.feature_converters")
class TwoTowerFeatureConverter(seqio.FeatureConverter):
  """For two-tower (SigLIP) models: 'image' passed through, 'text' trimmed/padded to its length.

  Args:
    pack: must be False (an image pairs with exactly one text).
    **kwargs: as seqio.FeatureConverter (apply_length_check).
  """

  TASK_FEATURES = {"text": FeatureSpec(dtype=tf.int32)}
  PACKING_FEATURE_DTYPES = None

  def __init__(self, pack: bool = False, **kwargs):
    if pack:
      raise ValueError("cannot pack image-text pairs: each image belongs to exactly one text; use pack=False")
    self._image = FeatureSpec(dtype=tf.float32, rank=3, sequence_dim=2)  # until a dataset says otherwise
    super().__init__(pack=False, **kwargs)

  @property
  def MODEL_FEATURES(self) -> dict[str, FeatureSpec]:  # pylint: disable=invalid-name  (seqio's name)
    return {"text": FeatureSpec(dtype=tf.int32), "image": self._image}

  def __call__(self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
    image = _image_spec(ds)
    if image is None:
      raise ValueError("a two-tower dataset needs an 'image' feature")
    self._image = image  # frames ([N, H, W, 3]) are allowed too
    return super().__call__(ds, task_feature_lengths)

  def _convert_features(self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
    ds = self._pack_or_pad(ds, {"text": task_feature_lengths["text"]})
    return ds.map(lambda ex: {"image": ex["image"], "text": ex["text"]},
                  num_parallel_calls=tf.data.AUTOTUNE)

  def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> dict[str, int]:
    return {"text": task_feature_lengths["text"], "image": _CHANNELS}


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
