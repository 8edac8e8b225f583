"""Multimodal feature converters (tasks.feature_converters): images pass through, tokens as T5X, packing rules."""

import numpy as np
import pytest
import seqio
import tensorflow as tf

from tasks import feature_converters as fc

INPUTS = [[5, 6, 1], [7, 1]]
TARGETS = [[9, 1], [4, 4, 4, 1]]


def dataset(images=None, **token_features):
  """Examples with ragged token features (as a Task gives them) and optionally images."""
  n = len(next(iter(token_features.values())))

  def gen():
    for i in range(n):
      ex = {k: np.asarray(v[i], np.int32) for k, v in token_features.items()}
      if images is not None:
        ex["image"] = images[i]
      yield ex

  signature = {k: tf.TensorSpec([None], tf.int32) for k in token_features}
  if images is not None:
    signature["image"] = tf.TensorSpec([None] * (images[0].ndim - 1) + [3], tf.as_dtype(images[0].dtype))
  return tf.data.Dataset.from_generator(gen, output_signature=signature)


def convert(converter, ds, lengths):
  return list(converter(ds, lengths).as_numpy_iterator())


@pytest.mark.parametrize("shape", [(12, 20, 3), (2, 8, 8, 3)])  # any resolution; video frames
def test_encdec_passes_the_image_and_shifts_targets(shape):
  images = [np.random.default_rng(i).uniform(-1, 1, shape).astype(np.float32) for i in range(2)]
  out = convert(fc.MultimodalEncDecFeatureConverter(), dataset(images, inputs=INPUTS, targets=TARGETS),
                {"inputs": 4, "targets": 5})
  assert set(out[0]) == {"image", "encoder_input_tokens", "decoder_target_tokens", "decoder_input_tokens",
                         "decoder_loss_weights"}
  np.testing.assert_array_equal(out[0]["image"], images[0])
  np.testing.assert_array_equal(out[1]["image"], images[1])
  np.testing.assert_array_equal(out[0]["encoder_input_tokens"], [5, 6, 1, 0])
  np.testing.assert_array_equal(out[1]["decoder_target_tokens"], [4, 4, 4, 1, 0])
  np.testing.assert_array_equal(out[1]["decoder_input_tokens"], [0, 4, 4, 4, 1])  # 0 is the start token
  np.testing.assert_array_equal(out[1]["decoder_loss_weights"], [1, 1, 1, 1, 0])


def test_image_datasets_refuse_packing():
  images = [np.zeros((8, 8, 3), np.float32)] * 2
  with pytest.raises(ValueError, match="cannot pack examples with an 'image'"):
    fc.MultimodalEncDecFeatureConverter(pack=True)(dataset(images, inputs=INPUTS, targets=TARGETS),
                                                   {"inputs": 8, "targets": 8})


def test_text_only_packs_as_seqio():
  ours = convert(fc.MultimodalEncDecFeatureConverter(pack=True), dataset(inputs=INPUTS, targets=TARGETS),
                 {"inputs": 8, "targets": 8})
  theirs = convert(seqio.EncDecFeatureConverter(pack=True), dataset(inputs=INPUTS, targets=TARGETS),
                   {"inputs": 8, "targets": 8})
  assert len(ours) == 1  # both examples in one row
  for key in theirs[0]:
    np.testing.assert_array_equal(ours[0][key], theirs[0][key])
  np.testing.assert_array_equal(ours[0]["encoder_segment_ids"], [1, 1, 1, 2, 2, 0, 0, 0])
  np.testing.assert_array_equal(ours[0]["decoder_input_tokens"], [0, 9, 0, 4, 4, 4, 0, 0])


def test_uint8_images_are_refused():
  images = [np.zeros((8, 8, 3), np.uint8)] * 2
  with pytest.raises(ValueError, match="normalize_image"):
    fc.MultimodalEncDecFeatureConverter()(dataset(images, inputs=INPUTS, targets=TARGETS),
                                          {"inputs": 8, "targets": 8})


def test_model_feature_lengths_without_a_dataset_are_seqios():
  lengths = {"inputs": 7, "targets": 5}
  assert (fc.MultimodalEncDecFeatureConverter().get_model_feature_lengths(lengths)
          == seqio.EncDecFeatureConverter(pack=False).get_model_feature_lengths(lengths))


def test_two_tower():
  images = [np.full((6, 6, 3), i, np.float32) for i in range(2)]
  out = convert(fc.TwoTowerFeatureConverter(), dataset(images, text=TARGETS), {"text": 5})
  assert set(out[0]) == {"image", "text"}
  np.testing.assert_array_equal(out[0]["text"], [9, 1, 0, 0, 0])
  np.testing.assert_array_equal(out[1]["image"], images[1])
  with pytest.raises(ValueError, match="cannot pack"):
    fc.TwoTowerFeatureConverter(pack=True)
  with pytest.raises(ValueError, match="needs an 'image'"):
    fc.TwoTowerFeatureConverter()(dataset(text=TARGETS), {"text": 5})
