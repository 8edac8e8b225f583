"""tasks.preprocessors: image decoding / normalising / resizing / random crops, and the PaLI prompt builders."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tasks import locations
from tasks import preprocessors as pp


def one(ds):
  return next(iter(ds.as_numpy_iterator()))


def png(pixels):
  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, "PNG")
  return buf.getvalue()


@pytest.fixture(scope="module")
def pixels():
  return np.random.default_rng(0).integers(0, 256, (20, 40, 3)).astype(np.uint8)


def test_decode_and_normalize(pixels):
  ds = tf.data.Dataset.from_tensors({"image/encoded": png(pixels), "caption": "x"})
  decoded = one(pp.decode_image(ds))
  assert "image/encoded" not in decoded
  np.testing.assert_array_equal(decoded["image"], pixels)
  image = one(pp.normalize_image(pp.decode_image(ds)))["image"]
  assert image.dtype == np.float32 and image.min() >= -1 and image.max() <= 1
  np.testing.assert_allclose((image + 1) * 127.5, pixels, atol=1e-3)
  again = one(pp.normalize_image(pp.normalize_image(pp.decode_image(ds))))["image"]  # float passes through
  np.testing.assert_array_equal(again, image)


@pytest.mark.parametrize("size", [16, (24, 12), 64])
def test_resize_squash_and_pad(pixels, size):
  ds = pp.normalize_image(tf.data.Dataset.from_tensors({"image": pixels}))
  hw = (size, size) if isinstance(size, int) else size
  for method in ("squash", "pad"):
    assert one(pp.resize_image(ds, image_size=size, method=method))["image"].shape == hw + (3,)


def test_pad_moves_boxes_with_the_image(pixels):
  ds = pp.normalize_image(tf.data.Dataset.from_tensors(
      {"image": pixels, "bbox": np.array([0.0, 0.0, 1.0, 1.0], np.float32)}))
  ex = one(pp.resize_image(ds, image_size=32, method="pad"))  # 20x40 -> 16x32, 8 rows of padding above
  np.testing.assert_allclose(ex["bbox"], [0.25, 0.0, 0.75, 1.0])
  assert np.all(ex["image"][:8] == 0) and np.all(ex["image"][24:] == 0)


def test_random_crop_is_keyed_on_the_example_not_its_position():
  image = np.random.default_rng(1).uniform(-1, 1, (40, 60, 3)).astype(np.float32)
  examples = [{"image": image, "example_seed": np.array([7, k], np.int64)} for k in (3, 4, 3)]
  ds = tf.data.Dataset.from_tensor_slices({k: np.stack([e[k] for e in examples]) for k in examples[0]})
  crops = [ex["image"] for ex in pp.random_crop_flip(ds, image_size=24).as_numpy_iterator()]
  assert crops[0].shape == (24, 24, 3)
  np.testing.assert_array_equal(crops[0], crops[2])  # same example seed, different position
  assert not np.array_equal(crops[0], crops[1])
  with pytest.raises(ValueError, match="boxes"):
    pp.random_crop_flip(tf.data.Dataset.from_tensors({"image": image, "bbox": np.zeros(4, np.float32)}),
                        image_size=24)


def test_caption_vqa_ocr_prompts():
  ds = tf.data.Dataset.from_tensors({"caption": "a cat", "lang": "de", "question": "what?", "answer": "42",
                                     "text": "OPEN 24h"})
  ex = one(pp.caption_prompt(ds))
  assert (ex["inputs"], ex["targets"]) == (b"caption de", b"a cat")
  ex = one(pp.vqa_prompt(ds))
  assert (ex["inputs"], ex["targets"]) == (b"answer de what?", b"42")
  ex = one(pp.ocr_prompt(ds))
  assert (ex["inputs"], ex["targets"]) == (b"ocr", b"OPEN 24h")
  ex = one(pp.caption_prompt(tf.data.Dataset.from_tensors({"caption": "a dog"})))
  assert ex["inputs"] == b"caption en"


def test_box_tokens_match_tasks_locations():
  boxes = np.random.default_rng(2).uniform(-0.1, 1.1, (200, 4)).astype(np.float32)
  boxes[:4] = [[0, 0, 1, 1], [0.5, 0.25, 0.75, 0.999], [1 / 3, 2 / 3, 1 / 1024, 1023 / 1024], [0, 0, 0, 0]]
  ours = pp.box_tokens(tf.constant(boxes)).numpy()
  assert [t.decode() for t in ours] == [locations.box_to_tokens(b.astype(np.float64), 1, 1) for b in boxes]


def test_detect_and_refexp_prompts():
  boxes = np.array([[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0], [0.5, 0.5, 0.75, 0.75]], np.float32)
  raw = {"objects/bbox": boxes, "objects/label": ["cat", "dog", "cat"]}
  ex = one(pp.detect_prompt(tf.data.Dataset.from_tensors(raw)))
  assert ex["inputs"] == b"detect cat"
  tokens = [locations.box_to_tokens(b.astype(np.float64), 1, 1) for b in boxes]
  assert ex["targets"].decode() == f"{tokens[0]} cat ; {tokens[2]} cat"
  assert locations.tokens_to_boxes(ex["targets"].decode(), 1024, 1024)[1] == (512.5, 512.5, 768.5, 768.5)
  ex = one(pp.detect_prompt(tf.data.Dataset.from_tensors(raw | {"query": "bird"})))
  assert (ex["inputs"], ex["targets"]) == (b"detect bird", b"none")
  ex = one(pp.refexp_prompt(tf.data.Dataset.from_tensors({"phrase": "the dog", "bbox": boxes[1]})))
  assert (ex["inputs"], ex["targets"].decode()) == (b"refexp the dog", tokens[1])
