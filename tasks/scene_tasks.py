"""PaLI-style multimodal examples from the scenes of shapes (`tasks.scenes`): image + prompt -> target text.

Tasks and their exact text formats (`inputs` -> `targets`):

  caption   "caption en"                          -> a scenes.caption(), e.g. "a photo of a red circle and a ring"
  vqa       "answer en <question>"                -> one short answer:
    count       "how many objects are there?" / "how many red objects are there?" / "how many circles are
                there?"                                                        -> "1" .. "9"
    colour      "what colour is the small circle?" / "... the object at the top?"  -> "red", "blue", ...
    position    "where is the blue square?"       -> the scenes.position_phrase() of the object less its
                                                     preposition and article: "top left", "left", "centre", ...
    existence   "is there a green triangle?"      -> "yes" / "no", each with probability 1/2
    comparison  "is the red circle bigger than the square?" / "is ... smaller than ...?" / "are there more
                circles than squares?" / "are there more red objects than blue objects?"  -> "yes" / "no",
                "yes" with probability about 1/2
  refexp    "refexp <phrase>"                     -> the object's box as 4 location tokens, e.g.
            "refexp the small red circle"            "<loc0100><loc0200><loc0400><loc0500>"
  detect    "detect <name>"                       -> every matching object's box followed by the name, boxes
            ("detect circle", "detect red circle")   separated by " ; " and ordered top to bottom, then left to
                                                     right: "<loc0100><loc0200><loc0400><loc0500> circle ;
                                                     <loc0600>...<loc0900> circle", or "none" if nothing matches.
  splitcap  "caption en <the caption's first words>" -> its remaining words (PaLI's split-captioning: the caption
            "caption en a photo of a"              cut after a uniformly drawn word, 1 .. n-1)
                                                  -> "red circle and a ring"
  vqg       "question en <answer>"                -> the question of a vqa example (its type drawn uniformly)
            "question en top left"                   that the answer answers: "where is the blue square?"

Referring phrases are "the" + some of size, colour, shape (or "object") and position phrase ("the circle",
"the small red circle", "the object on the left", "the square at the top right"); every phrase in a question or
refexp prompt names exactly one object of its scene. Boxes are the tight pixel boxes (y0, x0, y1, x1) of the
pixels each object covers when drawn alone (an object partly hidden by a later one keeps its whole box),
written with `tasks.locations`.

Splits: "train" draws scenes without scenes.HELD_OUT_COMBOS, and its texts never name a held-out
(colour, shape) pair either (absent objects asked about are drawn from the train combinations, so the model is
never taught that a held-out pair is "none"); "validation" uses scenes' "eval" split: all 48 combinations, on
a disjoint random stream.

Every example is a pure function of (seed, split, index, task, image_size, max_objects): the scene and its
image come from one random stream and the task's texts from another, so one index shows the same image under
every task (unless the task redraws a scene it cannot use, which is rare: a scene whose objects cannot be told
apart by any phrase). Texts are lowercase words separated by single spaces; a question's final word
carries its '?'.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence

import numpy as np

from tasks import locations
from tasks import scenes

TASKS: tuple[str, ...] = ("caption", "vqa", "refexp", "detect", "splitcap", "vqg")
QUESTION_TYPES: tuple[str, ...] = ("count", "colour", "position", "existence", "comparison")
# What an example's "task" says: "vqa" resolves to one question type.
# New kinds go last: an example's text stream is seeded by its kind's index here.
KINDS: tuple[str, ...] = (("caption",) + tuple(f"vqa_{q}" for q in QUESTION_TYPES) + ("refexp", "detect")
                          + ("splitcap", "vqg"))

SPLITS: dict[str, str] = {"train": "train", "validation": "eval"}  # task split -> scenes split

# Rates of the 'all tasks' mixture; any mapping from task names (TASKS or KINDS) to rates can replace it.
ALL_TASKS: dict[str, float] = {"caption": 1.0, "vqa": 1.0, "refexp": 1.0, "detect": 1.0, "splitcap": 1.0, "vqg": 1.0}

# Below this side a small ring can miss every pixel centre, leaving an object with no box.
MIN_IMAGE_SIZE = 16

# Streams derived from SeedSequence([seed, scenes split id, index, stream, ...]): the scene and its image, the
# texts (one stream per kind), and the task a mixture picks, kept apart so that one never shifts another.
_SCENE_STREAM = 1
_TEXT_STREAM = 2
_MIXTURE_STREAM = 3

_PLURALS: dict[str, str] = {"circle": "circles", "square": "squares", "triangle": "triangles",
                            "diamond": "diamonds", "cross": "crosses", "ring": "rings"}

# Question templates. Fields: {ref}/{ref2} referring phrases, {colour}/{colour2} colours, {shape} a shape,
# {shapes}/{shapes2} plural shapes, {a} the article of the next word.
_QUESTIONS: dict[str, str] = {
    "count_all": "how many objects are there?",
    "count_colour": "how many {colour} objects are there?",
    "count_shape": "how many {shapes} are there?",
    "colour": "what colour is {ref}?",
    "position": "where is {ref}?",
    "existence": "is there {a} {colour} {shape}?",
    "bigger": "is {ref} bigger than {ref2}?",
    "smaller": "is {ref} smaller than {ref2}?",
    "more_shapes": "are there more {shapes} than {shapes2}?",
    "more_colours": "are there more {colour} objects than {colour2} objects?",
}
_DETECT_ABSENT_PROB = 0.25  # chance that a detection query names something the scene does not hold


def _position_answers() -> dict[str, str]:
  """scenes.position_phrase() -> VQA answer ('at the top left' -> 'top left'), over the nine regions."""
  answers = {}
  for cy in (1 / 6, 1 / 2, 5 / 6):
    for cx in (1 / 6, 1 / 2, 5 / 6):
      phrase = scenes.position_phrase(scenes.SceneObject("circle", "red", "small", cx, cy))
      answers[phrase] = " ".join(phrase.split()[2:])
  return answers


_POSITION_ANSWERS = _position_answers()

# Attributes a referring phrase may use, in the order it writes them.
_REFERENT_FORMS: tuple[tuple[str, ...], ...] = (
    ("shape",), ("colour", "shape"), ("size", "colour", "shape"), ("colour",), ("size", "shape"), ("size",),
    ("position",), ("shape", "position"), ("colour", "position"))


# ----------------------------------------------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------------------------------------------


def object_box(obj: scenes.SceneObject, image_size: int) -> tuple[int, int, int, int]:
  """The tight box of the pixels an object covers when drawn alone on an image of side `image_size`.

  Args:
    obj: the object.
    image_size: the image side S in pixels.

  Returns:
    (y0, x0, y1, x1) pixel edges: rows y0..y1-1 and columns x0..x1-1 hold all the object's pixels, and the
    first and last of each hold some.

  Raises:
    ValueError: the object covers no pixel centre (image_size far below MIN_IMAGE_SIZE).
  """
  s = np.float32(image_size)
  # float32, as the renderer computes centres and half-extents: the same roundings give the same pixels.
  cx, cy = np.float32(obj.cx) * s, np.float32(obj.cy) * s
  half = np.float32(obj.half_extent) * s
  # Only pixels within half an extent of the centre can be covered; one more on each side for rounding.
  cols = np.arange(max(int(cx - half) - 1, 0), min(int(cx + half) + 2, image_size))
  rows = np.arange(max(int(cy - half) - 1, 0), min(int(cy + half) + 2, image_size))
  u = (cols.astype(np.float32) + np.float32(0.5) - cx) / half  # [W']
  v = (rows.astype(np.float32) + np.float32(0.5) - cy) / half  # [H']
  mask = scenes.shape_mask(obj.shape, u[None, :], v[:, None])  # [H', W']
  hit_rows, hit_cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
  if not hit_rows.size:
    raise ValueError(f"{obj} covers no pixel at image size {image_size}")
  return (int(rows[hit_rows[0]]), int(cols[hit_cols[0]]), int(rows[hit_rows[-1]]) + 1,
          int(cols[hit_cols[-1]]) + 1)


# ----------------------------------------------------------------------------------------------------------------
# Referring phrases
# ----------------------------------------------------------------------------------------------------------------


def _attributes(obj: scenes.SceneObject) -> dict[str, str]:
  return {"size": obj.size, "colour": obj.colour, "shape": obj.shape, "position": scenes.position_phrase(obj)}


def _phrase(attributes: Mapping[str, str], form: Sequence[str]) -> str:
  """'the small red circle', 'the object on the left', 'the square at the top' for the attributes of `form`."""
  words = ["the"] + [attributes[name] for name in ("size", "colour") if name in form]
  words.append(attributes["shape"] if "shape" in form else "object")
  if "position" in form:
    words.append(attributes["position"])
  return " ".join(words)


def _unique_forms(scene: Sequence[scenes.SceneObject],
                  forms: Sequence[tuple[str, ...]]) -> list[list[tuple[str, ...]]]:
  """For each object, the forms whose phrase fits it and no other object of the scene."""
  attributes = [_attributes(obj) for obj in scene]
  return [[form for form in forms
           if not any(j != i and all(other[a] == mine[a] for a in form) for j, other in enumerate(attributes))]
          for i, mine in enumerate(attributes)]


def _choice(rng: np.random.Generator, items: Sequence):
  return items[int(rng.integers(len(items)))]


def _pick_referent(scene: Sequence[scenes.SceneObject], rng: np.random.Generator,
                   forms: Sequence[tuple[str, ...]]) -> tuple[int, str] | None:
  """A uniformly chosen object that some form names uniquely, and one such phrase; None if there is none."""
  unique = _unique_forms(scene, forms)
  nameable = [i for i, fits in enumerate(unique) if fits]
  if not nameable:
    return None
  i = _choice(rng, nameable)
  return i, _phrase(_attributes(scene[i]), _choice(rng, unique[i]))


# ----------------------------------------------------------------------------------------------------------------
# Questions: each returns (question, answer), or None when the scene cannot support it
# ----------------------------------------------------------------------------------------------------------------


def _count_question(scene, rng, split):
  del split  # counts name single attributes, never a (colour, shape) pair
  form = _choice(rng, ("count_all", "count_colour", "count_shape"))
  obj = _choice(rng, scene)  # whose colour or shape to count: the answer is at least one
  count = {"count_all": len(scene), "count_colour": sum(o.colour == obj.colour for o in scene),
           "count_shape": sum(o.shape == obj.shape for o in scene)}[form]
  return _QUESTIONS[form].format(colour=obj.colour, shapes=_PLURALS[obj.shape]), str(count)


def _colour_question(scene, rng, split):
  del split
  picked = _pick_referent(scene, rng, [f for f in _REFERENT_FORMS if "colour" not in f])
  if picked is None:
    return None
  i, ref = picked
  return _QUESTIONS["colour"].format(ref=ref), scene[i].colour


def _position_question(scene, rng, split):
  del split
  picked = _pick_referent(scene, rng, [f for f in _REFERENT_FORMS if "position" not in f])
  if picked is None:
    return None
  i, ref = picked
  return _QUESTIONS["position"].format(ref=ref), _POSITION_ANSWERS[scenes.position_phrase(scene[i])]


def _split_combos(split: str) -> list[tuple[str, str]]:
  """The (colour, shape) pairs a split's texts may name."""
  return [c for c in scenes.all_combos() if split != "train" or c not in scenes.HELD_OUT_COMBOS]


def _existence_question(scene, rng, split):
  present = sorted({(o.colour, o.shape) for o in scene})  # sorted: set order varies between processes
  if rng.random() < 0.5:
    (colour, shape), answer = _choice(rng, present), "yes"
  else:
    (colour, shape), answer = _choice(rng, [c for c in _split_combos(split) if c not in present]), "no"
  return _QUESTIONS["existence"].format(a="an" if colour[0] in "aeiou" else "a", colour=colour,
                                        shape=shape), answer


def _size_comparison(scene, rng, want_yes):
  """'is the circle bigger than the red square?' with the wanted answer, or None if no pair gives it."""
  unique = _unique_forms(scene, [f for f in _REFERENT_FORMS if "size" not in f])
  nameable = [i for i, fits in enumerate(unique) if fits]

  def bigger(i, j):
    return scene[i].size == "large" and scene[j].size == "small"

  pairs = [(i, j, relation) for i in nameable for j in nameable if i != j for relation in ("bigger", "smaller")
           if (bigger(i, j) if relation == "bigger" else bigger(j, i)) == want_yes]
  if not pairs:
    return None
  i, j, relation = _choice(rng, pairs)
  ref, ref2 = (_phrase(_attributes(scene[k]), _choice(rng, unique[k])) for k in (i, j))
  return _QUESTIONS[relation].format(ref=ref, ref2=ref2), "yes" if want_yes else "no"


def _count_comparison(scene, rng, want_yes):
  """'are there more circles than squares?' with the wanted answer if any pair gives it, else the other."""
  by_shape = rng.random() < 0.5
  values = scenes.SHAPES if by_shape else tuple(scenes.COLOURS)
  counts = collections.Counter(o.shape if by_shape else o.colour for o in scene)
  pairs = [(a, b) for a in values for b in values if a != b and counts[a] + counts[b] > 0]
  wanted = [(a, b) for a, b in pairs if (counts[a] > counts[b]) == want_yes]
  a, b = _choice(rng, wanted or pairs)
  question = (_QUESTIONS["more_shapes"].format(shapes=_PLURALS[a], shapes2=_PLURALS[b]) if by_shape
              else _QUESTIONS["more_colours"].format(colour=a, colour2=b))
  return question, "yes" if counts[a] > counts[b] else "no"


def _comparison_question(scene, rng, split):
  del split
  want_yes = rng.random() < 0.5
  if rng.random() < 0.5:
    question = _size_comparison(scene, rng, want_yes)
    if question is not None:
      return question
  return _count_comparison(scene, rng, want_yes)


_QUESTION_MAKERS = {"count": _count_question, "colour": _colour_question, "position": _position_question,
                    "existence": _existence_question, "comparison": _comparison_question}


# ----------------------------------------------------------------------------------------------------------------
# Tasks: each returns (inputs, targets), or None when the scene cannot support it
# ----------------------------------------------------------------------------------------------------------------


def _refexp(scene, rng, image_size):
  picked = _pick_referent(scene, rng, _REFERENT_FORMS)
  if picked is None:
    return None
  i, phrase = picked
  return f"refexp {phrase}", locations.box_to_tokens(object_box(scene[i], image_size), image_size, image_size)


def _detect(scene, rng, split, image_size):
  with_colour = rng.random() < 0.5

  def name(colour, shape):
    return f"{colour} {shape}" if with_colour else shape

  present = [name(o.colour, o.shape) for o in scene]
  allowed = (sorted({name(c, s) for c, s in _split_combos(split)}) if with_colour else list(scenes.SHAPES))
  absent = [n for n in allowed if n not in present]
  query = _choice(rng, absent) if absent and rng.random() < _DETECT_ABSENT_PROB else _choice(rng, present)
  boxes = sorted(object_box(o, image_size) for o, n in zip(scene, present, strict=True) if n == query)
  targets = " ; ".join(f"{locations.box_to_tokens(box, image_size, image_size)} {query}" for box in boxes)
  return f"detect {query}", targets or "none"


def _splitcap(scene, rng):
  words = scenes.caption(scene, rng).split()  # every template writes at least three words
  cut = int(rng.integers(1, len(words)))
  return f"caption en {' '.join(words[:cut])}", " ".join(words[cut:])


def _vqg(scene, rng, split):
  qa = _QUESTION_MAKERS[_choice(rng, QUESTION_TYPES)](scene, rng, split)
  return None if qa is None else (f"question en {qa[1]}", qa[0])


def _make_texts(kind, scene, rng, split, image_size):
  """(inputs, targets) of an example of `kind` (one of KINDS), or None if the scene cannot support it."""
  if kind == "caption":
    return "caption en", scenes.caption(scene, rng)
  if kind == "splitcap":
    return _splitcap(scene, rng)
  if kind == "vqg":
    return _vqg(scene, rng, split)
  if kind == "refexp":
    return _refexp(scene, rng, image_size)
  if kind == "detect":
    return _detect(scene, rng, split, image_size)
  qa = _QUESTION_MAKERS[kind.removeprefix("vqa_")](scene, rng, split)
  return None if qa is None else (f"answer en {qa[0]}", qa[1])


# ----------------------------------------------------------------------------------------------------------------
# Examples
# ----------------------------------------------------------------------------------------------------------------


def _rng(seed: int, index: int, split: str, *stream: int) -> np.random.Generator:
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
  split_id = scenes.SPLITS[SPLITS[split]]
  return np.random.default_rng(np.random.SeedSequence([seed, split_id, index, *stream]))


def example_kind(seed: int, index: int, split: str = "train", task: str | Mapping[str, float] = "caption") -> str:
  """The kind (one of KINDS) of example(seed, index, split, task): a mixture's pick, and 'vqa' made one question
  type. Drawn from its own stream, before and apart from the scene: nothing is rendered."""
  names = set(KINDS) | {"vqa"}
  rates = {task: 1.0} if isinstance(task, str) else dict(task)
  unknown = sorted(set(rates) - names)
  if unknown or not rates:
    raise ValueError(f"unknown task {unknown or task!r}: use one of {', '.join(sorted(names))} "
                     "or a mapping from them to rates")
  keys = sorted(rates)  # the same mixture picks the same tasks whatever order its mapping lists them in
  weights = np.array([rates[k] for k in keys], dtype=np.float64)
  if (weights < 0).any() or weights.sum() <= 0:
    raise ValueError(f"task rates must be non-negative with a positive sum, got {rates}")
  rng = _rng(seed, index, split, _MIXTURE_STREAM)
  kind = keys[int(rng.choice(len(keys), p=weights / weights.sum()))]
  return f"vqa_{_choice(rng, QUESTION_TYPES)}" if kind == "vqa" else kind


def _scene_and_texts(seed, index, split, kind, image_size, max_objects):
  """The scene, its texts, and the scene stream positioned to render the background."""
  scene_rng = _rng(seed, index, split, _SCENE_STREAM)
  # One text stream per kind: otherwise, say, existence and comparison questions of one index would share
  # their yes/no draw.
  text_rng = _rng(seed, index, split, _TEXT_STREAM, KINDS.index(kind))
  while True:  # a task that cannot use a scene (its objects cannot be told apart) gets the next one
    scene = scenes.sample_scene(scene_rng, SPLITS[split], max_objects)
    texts = _make_texts(kind, scene, text_rng, split, image_size)
    if texts is not None:
      return scene, texts, scene_rng


def example(seed: int, index: int, split: str = "train", task: str | Mapping[str, float] = "caption",
            image_size: int = 224, max_objects: int = 3, with_scene: bool = False) -> dict:
  """Example `index` of a task's unbounded, deterministic stream.

  Args:
    seed: the data seed.
    index: the example number (any non-negative int).
    split: "train" or "validation" (see the module docstring).
    task: one of TASKS; a KINDS name for a single question type ("vqa_count"); or a mapping from those names
      to rates for a mixture such as ALL_TASKS ("vqa" in a mixture still spreads evenly over question types).
    image_size: the image side S in pixels, at least MIN_IMAGE_SIZE.
    max_objects: each scene holds 1..max_objects objects (at most scenes.MAX_OBJECTS).
    with_scene: also return the scene (for tests and visualisation).

  Returns:
    {"image": float32 [S, S, 3] in [-1, 1], "inputs": the prompt, "targets": the target text, "task": the
    example's kind (one of KINDS)}, plus "scene": its SceneObjects in paint order if `with_scene`.
  """
  if image_size < MIN_IMAGE_SIZE:
    raise ValueError(f"image_size must be at least {MIN_IMAGE_SIZE}, got {image_size}")
  kind = example_kind(seed, index, split, task)
  scene, (inputs, targets), scene_rng = _scene_and_texts(seed, index, split, kind, image_size, max_objects)
  result = {"image": scenes.render_scenes([scene], image_size, scene_rng)[0], "inputs": inputs,
            "targets": targets, "task": kind}
  if with_scene:
    result["scene"] = scene
  return result


# ----------------------------------------------------------------------------------------------------------------
# Baselines
# ----------------------------------------------------------------------------------------------------------------


def vqa_majority_baseline(seed: int = 0, num_examples: int = 1000, split: str = "validation",
                          max_objects: int = 3) -> dict[str, dict]:
  """What answering every question of a type with its most common training answer scores.

  A model that reads the question but not the image can reach this; a trained model must beat it. Only texts
  are drawn (no images), so a few thousand examples take about a second.

  Args:
    seed: the data seed.
    num_examples: examples per question type, for both the majority (from "train") and the score (`split`).
    split: where the score is measured.
    max_objects: as for `example`.

  Returns:
    {question type: {"answer": the majority answer, "accuracy": percent exact matches on `split`}} for each of
    QUESTION_TYPES, plus "all": {"accuracy": their mean, the expectation on the 'vqa' task}.
  """
  def answers(kind, split_name):  # answers do not depend on the image size, so any valid one serves
    return [_scene_and_texts(seed, i, split_name, kind, MIN_IMAGE_SIZE, max_objects)[1][1]
            for i in range(num_examples)]

  result = {}
  for question_type in QUESTION_TYPES:
    kind = f"vqa_{question_type}"
    majority = collections.Counter(answers(kind, "train")).most_common(1)[0][0]
    scored = answers(kind, split)
    result[question_type] = {"answer": majority,
                             "accuracy": 100.0 * sum(a == majority for a in scored) / len(scored)}
  result["all"] = {"accuracy": float(np.mean([result[q]["accuracy"] for q in QUESTION_TYPES]))}
  return result


__all__ = ["TASKS", "QUESTION_TYPES", "KINDS", "SPLITS", "ALL_TASKS", "MIN_IMAGE_SIZE", "object_box",
           "example_kind", "example", "vqa_majority_baseline"]
