"""PaLI-style tasks on the scenes of shapes (tasks.scene_tasks): determinism, splits, and every target checked
against the scene itself (answers recomputed here, boxes checked against the rendered pixels)."""

import collections
import re

import numpy as np
import pytest

from tasks import locations
from tasks import scene_tasks
from tasks import scenes
from tasks import vocab as vocab_lib

PLURALS = {shape + ("es" if shape.endswith("s") else "s"): shape for shape in scenes.SHAPES}


def to_unit(rgb):
  """An RGB triple in 0..255 as the renderer's [-1, 1] float32 values."""
  return np.asarray(rgb, dtype=np.float32) * np.float32(1 / 127.5) - np.float32(1)


def examples(kind, n, split="train", image_size=32, start=0, max_objects=3):
  return [scene_tasks.example(5, i, split, kind, image_size, max_objects, with_scene=True)
          for i in range(start, start + n)]


# ----------------------------------------------------------------------------------------------------------------
# An independent reading of the texts: regions by thirds, phrases resolved against the scene
# ----------------------------------------------------------------------------------------------------------------


def region(obj):
  """'top left', 'left', 'bottom', 'centre' from the object's centre, by thirds of the image."""
  vertical = "top" if obj.cy < 1 / 3 else "bottom" if obj.cy > 2 / 3 else ""
  horizontal = "left" if obj.cx < 1 / 3 else "right" if obj.cx > 2 / 3 else ""
  return f"{vertical} {horizontal}".strip() or "centre"


def resolve(phrase, scene):
  """The objects a referring phrase ('the small red circle at the top') fits."""
  words = phrase.split()
  assert words[0] == "the", phrase
  words = words[1:]
  size = words.pop(0) if words[0] in scenes.SIZES else None
  colour = words.pop(0) if words[0] in scenes.COLOURS else None
  noun = words.pop(0)
  assert noun in scenes.SHAPES or noun == "object", phrase
  position = None
  if words:  # 'at the top left', 'on the right', 'in the centre'
    assert words[0] in ("at", "on", "in") and words[1] == "the", phrase
    position = " ".join(words[2:])
  return [o for o in scene if (size is None or o.size == size) and (colour is None or o.colour == colour)
          and (noun == "object" or o.shape == noun) and (position is None or region(o) == position)]


def the_one(phrase, scene):
  matches = resolve(phrase, scene)
  assert len(matches) == 1, (phrase, scene)
  return matches[0]


def expected_answer(question, scene):
  """The answer to a question, recomputed from the scene."""
  def count(pred):
    return str(sum(pred(o) for o in scene))

  def yes(flag):
    return "yes" if flag else "no"

  if question == "how many objects are there?":
    return str(len(scene))
  if m := re.fullmatch(r"how many (\w+) objects are there\?", question):
    return count(lambda o: o.colour == m[1])
  if m := re.fullmatch(r"how many (\w+) are there\?", question):
    return count(lambda o: o.shape == PLURALS[m[1]])
  if m := re.fullmatch(r"what colour is (the .+)\?", question):
    return the_one(m[1], scene).colour
  if m := re.fullmatch(r"where is (the .+)\?", question):
    return region(the_one(m[1], scene))
  if m := re.fullmatch(r"is there (a|an) (\w+) (\w+)\?", question):
    assert m[1] == ("an" if m[2][0] in "aeiou" else "a")
    return yes(any(o.colour == m[2] and o.shape == m[3] for o in scene))
  if m := re.fullmatch(r"is (the .+) (bigger|smaller) than (the .+)\?", question):
    a, b = the_one(m[1], scene), the_one(m[3], scene)
    assert a is not b and "small" not in m[1] + m[3] and "large" not in m[1] + m[3]  # no giveaway
    big, small = (a, b) if m[2] == "bigger" else (b, a)
    return yes(big.size == "large" and small.size == "small")
  if m := re.fullmatch(r"are there more (\w+) objects than (\w+) objects\?", question):
    return yes(sum(o.colour == m[1] for o in scene) > sum(o.colour == m[2] for o in scene))
  if m := re.fullmatch(r"are there more (\w+) than (\w+)\?", question):
    return yes(sum(o.shape == PLURALS[m[1]] for o in scene) > sum(o.shape == PLURALS[m[2]] for o in scene))
  raise AssertionError(f"unexpected question {question!r}")


def drawn_pixels(obj, image_size):
  """bool [S, S]: the pixels the renderer paints for the object drawn alone."""
  image = scenes.render_scenes([[obj]], image_size, np.random.default_rng(0))[0]
  return (image == to_unit(scenes.COLOURS[obj.colour])).all(axis=-1)


def tight_box(mask):
  rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
  return rows[0], cols[0], rows[-1] + 1, cols[-1] + 1


# ----------------------------------------------------------------------------------------------------------------
# Determinism, splits, images
# ----------------------------------------------------------------------------------------------------------------


def test_examples_are_deterministic_and_independent_of_call_order():
  for task in ("caption", "vqa", "refexp", "detect", scene_tasks.ALL_TASKS):
    a, b = (scene_tasks.example(3, 17, "train", task, 32) for _ in range(2))
    assert np.array_equal(a["image"], b["image"]) and a["inputs"] == b["inputs"] and a["targets"] == b["targets"]
  # A pure function of its index: drawn in any order (as seqio's shuffled, sharded reads draw them), the same.
  forward = [scene_tasks.example(3, i, "validation", scene_tasks.ALL_TASKS, 32) for i in range(8, 12)]
  backward = [scene_tasks.example(3, i, "validation", scene_tasks.ALL_TASKS, 32) for i in reversed(range(8, 12))]
  for one, again in zip(forward, reversed(backward)):
    assert np.array_equal(one["image"], again["image"])
    assert (one["inputs"], one["targets"], one["task"]) == (again["inputs"], again["targets"], again["task"])
  assert len({e["image"].tobytes() for e in forward}) == 4
  other = scene_tasks.example(4, 17, "train", "caption", 32)
  assert not np.array_equal(other["image"], scene_tasks.example(3, 17, "train", "caption", 32)["image"])


def test_one_index_shows_one_image_under_every_task():
  for i in range(10):
    images = [scene_tasks.example(0, i, "train", kind, 32)["image"] for kind in ("caption", "vqa_count")]
    assert np.array_equal(*images)


def test_mixture_rates():
  tasks = [scene_tasks.example(1, i, "train", scene_tasks.ALL_TASKS, 16)["task"] for i in range(400)]
  families = collections.Counter("vqa" if t.startswith("vqa") else t for t in tasks)
  assert set(families) == set(scene_tasks.TASKS) and min(families.values()) > 40  # about 67 each
  assert {t for t in tasks if t.startswith("vqa")} == {f"vqa_{q}" for q in scene_tasks.QUESTION_TYPES}
  only = {scene_tasks.example(1, i, "train", {"detect": 0, "caption": 2.5}, 16)["task"] for i in range(30)}
  assert only == {"caption"}
  # The mixture does not depend on the order its mapping lists the tasks in.
  reordered = dict(reversed(list(scene_tasks.ALL_TASKS.items())))
  assert [scene_tasks.example(1, i, "train", reordered, 16)["task"] for i in range(400)] == tasks
  # example_kind says each example's kind without drawing it (the VQA evaluation's question types).
  assert [scene_tasks.example_kind(1, i, "train", scene_tasks.ALL_TASKS) for i in range(400)] == tasks
  assert [scene_tasks.example_kind(7, i, "validation", "vqa") for i in range(50)] == [
      scene_tasks.example(7, i, "validation", "vqa", 16)["task"] for i in range(50)]


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match="split"):
    scene_tasks.example(0, 0, "eval")
  with pytest.raises(ValueError, match="task"):
    scene_tasks.example(0, 0, "train", "ocr")
  with pytest.raises(ValueError, match="rates"):
    scene_tasks.example(0, 0, "train", {"caption": 0})
  with pytest.raises(ValueError, match="image_size"):
    scene_tasks.example(0, 0, "train", "caption", 8)


@pytest.mark.parametrize("image_size", [32, 64, 224])
def test_images(image_size):
  drawn = [scene_tasks.example(0, i, "train", scene_tasks.ALL_TASKS, image_size) for i in range(6)]
  images = np.stack([e["image"] for e in drawn])
  assert images.shape == (6, image_size, image_size, 3) and images.dtype == np.float32
  assert images.min() >= -1 and images.max() <= 1 and np.isfinite(images).all()
  assert all(isinstance(e[k], str) and e[k] for e in drawn for k in ("inputs", "targets"))


def test_splits_share_no_examples_and_respect_held_out_combos():
  keys = {}
  for split in scene_tasks.SPLITS:
    keys[split] = {(e["image"].tobytes(), e["inputs"]) for e in examples(scene_tasks.ALL_TASKS, 300, split)}
  assert not keys["train"] & keys["validation"]

  held = scenes.HELD_OUT_COMBOS
  named_held = collections.Counter()
  for split in scene_tasks.SPLITS:
    for e in examples(scene_tasks.ALL_TASKS, 400, split, start=300, max_objects=4):
      combos = {(o.colour, o.shape) for o in e["scene"]}
      text = f"{e['inputs']} {e['targets']}"
      named = {c for c in held if re.search(rf"\b{c[0]} {c[1]}\b", text)}
      if split == "train":
        assert not combos & held, e["scene"]
        assert not named, text  # not even as an absent object
      named_held[split] += len(named)
  assert named_held["validation"] > 0


# ----------------------------------------------------------------------------------------------------------------
# Targets
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("question_type", scene_tasks.QUESTION_TYPES)
def test_vqa_answers_are_correct(question_type):
  for split in scene_tasks.SPLITS:
    for e in examples(f"vqa_{question_type}", 150, split, image_size=16, max_objects=5):
      assert e["task"] == f"vqa_{question_type}"
      assert e["inputs"].startswith("answer en ")
      question = e["inputs"].removeprefix("answer en ")
      assert e["targets"] == expected_answer(question, e["scene"]), (question, e["scene"])


def test_split_captions_are_a_caption_cut_in_two():
  for split in scene_tasks.SPLITS:
    cuts = collections.Counter()
    for e in examples("splitcap", 150, split, image_size=16, max_objects=5):
      assert e["inputs"].startswith("caption en ")
      prefix, rest = e["inputs"].removeprefix("caption en ").split(), e["targets"].split()
      assert prefix and rest  # cut inside the caption, never before or after it
      cuts[len(prefix) / (len(prefix) + len(rest)) < 0.5] += 1
      # the whole is a caption of the scene: it names every object
      whole = " ".join(prefix + rest)
      for obj in e["scene"]:
        assert obj.shape in whole and obj.colour in whole, (whole, e["scene"])
    assert min(cuts.values()) > 30  # cut points spread over the caption


def test_question_generation_inverts_vqa():
  kinds = collections.Counter()
  for split in scene_tasks.SPLITS:
    for e in examples("vqg", 300, split, image_size=16, max_objects=5):
      assert e["inputs"].startswith("question en ")
      answer, question = e["inputs"].removeprefix("question en "), e["targets"]
      assert question.endswith("?") and answer == expected_answer(question, e["scene"]), (question, e["scene"])
      kinds[question.split()[0]] += 1
  assert {"how", "what", "where", "is"} <= set(kinds)  # question types drawn across the templates


def test_yes_no_answers_are_balanced():
  for question_type in ("existence", "comparison"):
    answers = collections.Counter(e["targets"] for e in examples(f"vqa_{question_type}", 600, image_size=16))
    assert set(answers) == {"yes", "no"} and abs(answers["yes"] / 600 - 0.5) < 0.06, (question_type, answers)


def test_majority_baseline():
  baseline = scene_tasks.vqa_majority_baseline(seed=0, num_examples=300)
  assert set(baseline) == set(scene_tasks.QUESTION_TYPES) | {"all"}
  assert baseline["existence"]["answer"] in ("yes", "no") and 40 < baseline["existence"]["accuracy"] < 60
  assert baseline["colour"]["accuracy"] < 25  # eight colours
  assert baseline["count"]["answer"] == "1"
  for question_type in scene_tasks.QUESTION_TYPES:
    assert 0 < baseline[question_type]["accuracy"] < 100
  assert baseline["all"]["accuracy"] == pytest.approx(
      np.mean([baseline[q]["accuracy"] for q in scene_tasks.QUESTION_TYPES]))


def test_object_boxes_match_the_rendered_pixels():
  rng = np.random.default_rng(0)
  for image_size in (16, 32, 33, 64, 224):
    for _ in range(40):
      obj = scenes.sample_scene(rng, "eval", 1)[0]
      assert scene_tasks.object_box(obj, image_size) == tight_box(drawn_pixels(obj, image_size)), (obj, image_size)


@pytest.mark.parametrize("image_size", [32, 64, 224])
def test_refexp_box_holds_the_named_object(image_size):
  for e in examples("refexp", 60, "validation", image_size, max_objects=4):
    phrase = e["inputs"].removeprefix("refexp ")
    obj = the_one(phrase, e["scene"])
    (box,) = locations.tokens_to_boxes(e["targets"], image_size, image_size)
    assert e["targets"] == locations.box_to_tokens(scene_tasks.object_box(obj, image_size), image_size, image_size)
    # The object's visible pixels, where the full image still shows its colour, all lie in the decoded box
    # (give or take the half bin the tokens round to).
    visible = drawn_pixels(obj, image_size) & (e["image"] == to_unit(scenes.COLOURS[obj.colour])).all(axis=-1)
    rows, cols = np.nonzero(visible)
    assert rows.size > 0
    slack = image_size / 2048 + 1e-6
    assert box[0] - slack <= rows.min() and rows.max() + 1 <= box[2] + slack
    assert box[1] - slack <= cols.min() and cols.max() + 1 <= box[3] + slack


def test_detection_targets():
  none = 0
  for e in examples("detect", 200, "validation", 64, max_objects=5):
    name = e["inputs"].removeprefix("detect ")
    words = name.split()
    matches = [o for o in e["scene"]
               if o.shape == words[-1] and (len(words) == 1 or o.colour == words[0])]
    if not matches:
      assert e["targets"] == "none"
      none += 1
      continue
    parts = e["targets"].split(" ; ")
    assert all(part.endswith(f"> {name}") for part in parts), e["targets"]
    expected = sorted(scene_tasks.object_box(o, 64) for o in matches)  # top to bottom, then left to right
    assert parts == [f"{locations.box_to_tokens(b, 64, 64)} {name}" for b in expected]
    assert len(locations.tokens_to_boxes(e["targets"], 64, 64)) == len(matches)
  assert 20 < none < 90  # about a quarter name something absent


def test_sentencepiece_vocabulary_round_trips_every_text_and_keeps_boxes():
  vocab = vocab_lib.vocabulary()
  loc_id = dict(zip(locations.LOC_TOKENS, vocab.loc_ids))
  caption_words = set(scenes.vocabulary_words())
  for e in examples(scene_tasks.ALL_TASKS, 400, "validation", 16, max_objects=9):
    for text in (e["inputs"], e["targets"]):
      ids = vocab.encode(text)
      assert vocab.unk_id not in ids and vocab.decode(ids) == text, text
      # each location token is one id, in the text's order
      assert [i for i in ids if i in vocab.loc_ids] == [loc_id[t] for t in re.findall(r"<loc\d{4}>", text)]
      decoded = vocab.decode(ids)
      assert locations.tokens_to_boxes(decoded, 16, 16) == locations.tokens_to_boxes(text, 16, 16)
    if e["task"] in ("caption", "splitcap"):  # captions keep to the scenes' closed word list
      assert set(e["targets"].split()) <= caption_words, e["targets"]
