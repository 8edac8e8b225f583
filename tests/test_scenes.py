"""The scenes-of-shapes task (tasks.scenes): determinism, splits, captions, rendering, and the captions'
tokenisation by the runs' sentencepiece vocabulary (tasks.vocab)."""

import collections
import math
import time

import numpy as np
import pytest

from tasks import scenes
from tasks import vocab as vocab_lib


def to_unit(rgb):
  """An RGB triple in 0..255 as the renderer's [-1, 1] float32 values."""
  return np.asarray(rgb, dtype=np.float32) * np.float32(1 / 127.5) - np.float32(1)


def many_scenes(split, n=2000, max_objects=3, seed=0):
  rng = np.random.default_rng(seed)
  return [scenes.sample_scene(rng, split, max_objects) for _ in range(n)]


# ----------------------------------------------------------------------------------------------------------------
# Constants
# ----------------------------------------------------------------------------------------------------------------


def test_content_constants():
  assert len(scenes.COLOURS) == 8 and len(scenes.SHAPES) == 6
  rgb = np.array(list(scenes.COLOURS.values()), dtype=float)
  distances = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1)[np.triu_indices(len(rgb), 1)]
  assert distances.min() > 60  # colours are pairwise distinguishable
  assert np.linalg.norm(rgb - 40, axis=-1).min() > 150  # and far from the dark grey background
  combos = scenes.all_combos()
  assert len(combos) == 48 == len(set(combos))
  assert combos[:2] == [("red", "circle"), ("red", "square")]  # colour-major, fixed order


def test_held_out_combos_leave_every_colour_and_shape_in_training():
  held = scenes.HELD_OUT_COMBOS
  assert isinstance(held, frozenset) and held <= set(scenes.all_combos())
  assert len(held) == 8  # 1/6 of 48
  train = [c for c in scenes.all_combos() if c not in held]
  assert {colour for colour, _ in train} == set(scenes.COLOURS)
  assert {shape for _, shape in train} == set(scenes.SHAPES)
  # Each held-out part is seen in training with several partners, not just one.
  assert min(collections.Counter(colour for colour, _ in train).values()) >= 4
  assert min(collections.Counter(shape for _, shape in train).values()) >= 4


def test_class_prompt():
  assert scenes.class_prompt("red", "circle") == "a photo of a red circle"
  assert scenes.class_prompt("orange", "ring") == "a photo of an orange ring"
  with pytest.raises(ValueError):
    scenes.class_prompt("pink", "circle")


# ----------------------------------------------------------------------------------------------------------------
# Batches: determinism and streams
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["train", "eval"])
def test_sample_batch_is_deterministic(split):
  a = scenes.sample_batch(7, 3, 16, 32, split=split)
  b = scenes.sample_batch(7, 3, 16, 32, split=split)
  np.testing.assert_array_equal(a["image"], b["image"])
  assert a["text"] == b["text"]


def test_different_index_or_seed_gives_different_batches():
  base = scenes.sample_batch(0, 0, 16)
  for other in (scenes.sample_batch(0, 1, 16), scenes.sample_batch(1, 0, 16)):
    assert not np.array_equal(base["image"], other["image"])
    assert base["text"] != other["text"]
    # Not just the background: the scenes differ image by image.
    assert sum(np.abs(x - y).max() > 0.5 for x, y in zip(base["image"], other["image"])) > 12


def test_eval_stream_is_disjoint_from_train():
  train = [scenes.sample_batch(0, i, 32, split="train", with_scenes=True) for i in range(4)]
  eval_ = [scenes.sample_batch(0, i, 32, split="eval", with_scenes=True) for i in range(4)]
  key = lambda obj: (obj.shape, obj.colour, obj.size, round(obj.cx, 9), round(obj.cy, 9))
  train_objects = {key(o) for batch in train for scene in batch["scenes"] for o in scene}
  eval_objects = {key(o) for batch in eval_ for scene in batch["scenes"] for o in scene}
  assert not train_objects & eval_objects
  for t, e in zip(train, eval_):
    assert not np.array_equal(t["image"], e["image"])


def test_unknown_split_is_rejected():
  with pytest.raises(ValueError):
    scenes.sample_batch(0, 0, 2, split="test")


# ----------------------------------------------------------------------------------------------------------------
# Scenes
# ----------------------------------------------------------------------------------------------------------------


def test_train_never_contains_held_out_combos():
  objects = [o for scene in many_scenes("train", n=3000) for o in scene]
  assert not {(o.colour, o.shape) for o in objects} & scenes.HELD_OUT_COMBOS
  # ...and sample_batch's own scenes agree.
  batch = scenes.sample_batch(3, 0, 256, split="train", with_scenes=True)
  assert not {(o.colour, o.shape) for scene in batch["scenes"] for o in scene} & scenes.HELD_OUT_COMBOS


def test_eval_draws_from_all_combos():
  seen = {(o.colour, o.shape) for scene in many_scenes("eval", n=3000) for o in scene}
  assert seen == set(scenes.all_combos())


def test_scene_counts_sizes_and_positions():
  drawn = many_scenes("train", n=2000, max_objects=3)
  assert {len(s) for s in drawn} == {1, 2, 3}
  objects = [o for s in drawn for o in s]
  assert {o.size for o in objects} == set(scenes.SIZES)
  for o in objects:
    assert o.half_extent - 1e-9 <= o.cx <= 1 - o.half_extent + 1e-9  # fully inside the image
    assert o.half_extent - 1e-9 <= o.cy <= 1 - o.half_extent + 1e-9
  # Rejection sampling keeps heavy overlaps rare.
  ratios = [math.hypot(a.cx - b.cx, a.cy - b.cy) / (a.half_extent + b.half_extent)
            for s in drawn for i, a in enumerate(s) for b in s[:i]]
  assert np.mean(np.array(ratios) < 0.6) < 0.01
  assert all(len(s) == 1 for s in many_scenes("train", n=50, max_objects=1))
  with pytest.raises(ValueError):
    scenes.sample_scene(np.random.default_rng(0), "train", max_objects=0)


def test_position_phrase():
  obj = lambda cx, cy: scenes.SceneObject("circle", "red", "small", cx, cy)
  assert scenes.position_phrase(obj(0.2, 0.2)) == "at the top left"
  assert scenes.position_phrase(obj(0.8, 0.9)) == "at the bottom right"
  assert scenes.position_phrase(obj(0.2, 0.5)) == "on the left"
  assert scenes.position_phrase(obj(0.5, 0.2)) == "at the top"
  assert scenes.position_phrase(obj(0.5, 0.5)) == "in the centre"


# ----------------------------------------------------------------------------------------------------------------
# Captions
# ----------------------------------------------------------------------------------------------------------------


def test_captions_use_only_vocabulary_words():
  vocab = scenes.vocabulary_words()
  assert vocab == sorted(set(vocab))
  words = set(vocab)
  rng = np.random.default_rng(0)
  texts = scenes.sample_batch(0, 0, 256, split="eval")["text"]
  texts += [scenes.caption(s, rng) for s in many_scenes("eval", n=300, max_objects=scenes.MAX_OBJECTS)]
  texts += [scenes.class_prompt(c, s) for c, s in scenes.all_combos()]
  for text in texts:
    assert text == " ".join(text.split()) and text == text.lower()  # single spaces, lowercase
    assert set(text.split()) <= words, text
  # The vocabulary is not padded with words no caption uses.
  assert {w for t in texts for w in t.split()} == words


def test_every_caption_names_each_objects_colour_and_shape():
  batch = scenes.sample_batch(1, 0, 256, split="eval", with_scenes=True)
  for text, scene in zip(batch["text"], batch["scenes"]):
    padded = f" {text} "
    for (colour, shape), n in collections.Counter((o.colour, o.shape) for o in scene).items():
      assert padded.count(f" {colour} {shape} ") == n, (text, scene)


def test_captions_are_varied_and_objects_shuffled():
  batch = scenes.sample_batch(2, 0, 512, with_scenes=True)
  texts = batch["text"]
  prefixes = ["a photo of", "a picture of", "an image of", "a drawing of", "there is one object",
              "there are", "an image with", "a scene with", "two shapes", "three shapes"]
  for prefix in prefixes:
    assert any(t.startswith(prefix + " ") for t in texts), prefix
  assert any(t.endswith(" on a dark background") for t in texts)
  assert any(" large " in f" {t} " for t in texts) and any(" small " in f" {t} " for t in texts)
  assert any(" at the " in t or " on the " in t or " in the centre" in t for t in texts)
  # The first object named is not always the first one painted.
  multi = [(t, s) for t, s in zip(texts, batch["scenes"]) if len({(o.colour, o.shape) for o in s}) == len(s) > 1]
  first_named_is_first = [
      min(range(len(s)), key=lambda i: f" {t} ".find(f" {s[i].colour} {s[i].shape} ")) == 0 for t, s in multi]
  assert 0.2 < np.mean(first_named_is_first) < 0.8


# ----------------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("image_size", [32, 48])
def test_image_format(image_size):
  batch = scenes.sample_batch(0, 0, 8, image_size)
  image = batch["image"]
  assert image.dtype == np.float32 and image.shape == (8, image_size, image_size, 3)
  assert image.min() >= -1 and image.max() <= 1
  assert len(batch["text"]) == 8 and all(isinstance(t, str) for t in batch["text"])


def test_object_centre_has_the_objects_colour():
  size = 32
  batch = scenes.sample_batch(4, 0, 128, size, split="eval", with_scenes=True)
  checked = 0
  for image, scene in zip(batch["image"], batch["scenes"]):
    top = scene[-1]  # painted last, so nothing covers it
    if top.shape in scenes.SOLID_SHAPES:
      pixel = image[int(top.cy * size), int(top.cx * size)]
      np.testing.assert_array_equal(pixel, to_unit(scenes.COLOURS[top.colour]))
      checked += 1
  assert checked > 80


def test_background_is_dark_grey_with_slight_noise():
  image = scenes.render_scenes([[]] * 4, 32, np.random.default_rng(0))  # no objects
  pixels = (image + 1) * 127.5
  assert 20 < pixels.min() and pixels.max() < 60
  assert pixels.std() > 1  # tinted and noisy, not constant


def test_shapes_render_distinctly():
  size = 32
  def render(shape, size_name="large", colour="white"):
    scene = [scenes.SceneObject(shape, colour, size_name, 0.5, 0.5)]
    return scenes.render_scenes([scene], size, np.random.default_rng(0))[0]
  white = to_unit(scenes.COLOURS["white"])
  masks = {s: (render(s) == white).all(-1) for s in scenes.SHAPES}
  for shape, mask in masks.items():
    small = (render(shape, "small") == white).all(-1)
    assert mask.sum() > 1.7 * small.sum() > 0, shape  # large is clearly bigger
    rows, cols = np.nonzero(mask)
    assert 12 <= max(np.ptp(rows), np.ptp(cols)) + 1 <= 16, shape  # about 13-14 px across at 32 px
    rows, cols = np.nonzero(small)
    assert 7 <= max(np.ptp(rows), np.ptp(cols)) + 1 <= 9, shape  # about 8 px across
  for a in scenes.SHAPES:
    for b in scenes.SHAPES:
      if a < b:
        assert (masks[a] != masks[b]).sum() >= 15, (a, b)
  assert not masks["ring"][size // 2, size // 2]  # hollow
  assert all(masks[s][size // 2, size // 2] for s in scenes.SOLID_SHAPES)


def test_later_objects_are_painted_on_top():
  scene = [scenes.SceneObject("square", "red", "large", 0.5, 0.5),
           scenes.SceneObject("circle", "blue", "small", 0.5, 0.5)]
  image = scenes.render_scenes([scene, scene[::-1]], 32, np.random.default_rng(0))
  np.testing.assert_array_equal(image[0, 16, 16], to_unit(scenes.COLOURS["blue"]))
  np.testing.assert_array_equal(image[1, 16, 16], to_unit(scenes.COLOURS["red"]))


def test_zero_shot_batch():
  combos = sorted(scenes.HELD_OUT_COMBOS)
  batch = scenes.zero_shot_batch(0, combos, 5)
  assert batch["image"].shape == (40, 32, 32, 3) and batch["image"].dtype == np.float32
  assert batch["label"].dtype == np.int32
  np.testing.assert_array_equal(batch["label"], np.repeat(np.arange(8), 5))
  for image, label in zip(batch["image"], batch["label"]):
    colour = to_unit(scenes.COLOURS[combos[label][0]])
    assert (image == colour).all(-1).sum() >= 15  # the object, in its class colour
  again = scenes.zero_shot_batch(0, combos, 5)
  np.testing.assert_array_equal(batch["image"], again["image"])
  assert not np.array_equal(batch["image"], scenes.zero_shot_batch(1, combos, 5)["image"])


def test_sample_batch_is_fast():
  scenes.sample_batch(0, 0, 256, 32)  # warm up
  start = time.perf_counter()
  scenes.sample_batch(0, 1, 256, 32)
  assert time.perf_counter() - start < 0.5  # ~15-20 ms; a loose bound that still catches per-pixel Python loops


# ----------------------------------------------------------------------------------------------------------------
# Tokenisation (the shipped sentencepiece vocabulary)
# ----------------------------------------------------------------------------------------------------------------


def test_sentencepiece_vocabulary_round_trips_captions():
  vocab = vocab_lib.vocabulary()
  texts = scenes.sample_batch(0, 0, 64, split="eval")["text"]
  texts += [scenes.class_prompt(c, s) for c, s in scenes.all_combos()]
  texts.append(" ".join(scenes.vocabulary_words()))  # every caption word, rare ones included
  for text in texts:
    ids = vocab.encode(text)
    assert ids and vocab.unk_id not in ids, text
    assert max(ids) < vocab.vocab_size and vocab.decode(ids) == text
