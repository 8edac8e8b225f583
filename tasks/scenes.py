"""Scenes of shapes: procedurally generated image-text pairs for tiny contrastive (SigLIP) runs on a CPU.

Each image shows 1..max_objects coloured shapes (8 colours x 6 shapes x 2 sizes, at random positions) on a
dark grey background with a slight per-image tint and per-pixel noise. Each caption names the colour and shape
of every object, in random order, from one of several templates, sometimes with sizes, positions and counts:

  "a large red circle"
  "a photo of a small blue square on the left"
  "there are two objects a red circle and a green ring"
  "a yellow triangle at the top right"
  "a scene with two red objects and one cyan object namely a red ring a cyan cross and a small red diamond"

Captions use a closed, lowercase vocabulary (`vocabulary_words()`), words separated by single spaces and no
punctuation.

The data is unbounded and deterministic: batch `index` of a run with `seed` is a pure function of its
arguments, drawn from `np.random.SeedSequence([seed, split_id, index])`. A few (colour, shape) combinations,
`HELD_OUT_COMBOS`, never occur in the "train" split; the "eval" split draws from all 48 combinations on a
disjoint random stream, and `zero_shot_batch` renders single objects of chosen combinations for zero-shot
classification with `class_prompt` texts.

Everything is numpy; rendering is vectorised over all objects of a batch, so a batch of 256 images of 32x32
with captions takes roughly 15-20 ms on one CPU core.
"""

from __future__ import annotations

import dataclasses
import math
import string
from collections.abc import Sequence

import numpy as np

# ----------------------------------------------------------------------------------------------------------------
# Content
# ----------------------------------------------------------------------------------------------------------------

# Ordered; RGB in 0..255. Pairwise far apart and all far brighter or more saturated than the background.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (40, 200, 60),
    "blue": (40, 90, 250),
    "yellow": (245, 230, 40),
    "purple": (170, 60, 230),
    "orange": (255, 140, 0),
    "white": (245, 245, 245),
    "cyan": (30, 225, 235),
}

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross", "ring")

# Shapes whose pixel at the object's centre is filled (a ring is hollow).
SOLID_SHAPES: frozenset[str] = frozenset({"circle", "square", "triangle", "diamond", "cross"})

# Object extent (the circle's diameter; other shapes fit in a box of this side) as a fraction of the image
# side: at 32 px, small objects are about 8 px across and large ones about 13.
SIZES: dict[str, float] = {"small": 0.28, "large": 0.42}

# 8 of the 48 combinations (1/6), never generated in the "train" split. Every colour is held out with exactly
# one shape and every shape with at most two colours, so each colour and each shape is still seen in training
# with 5 (resp. at least 6) other partners.
HELD_OUT_COMBOS: frozenset[tuple[str, str]] = frozenset({
    ("red", "square"),
    ("green", "triangle"),
    ("blue", "circle"),
    ("yellow", "diamond"),
    ("purple", "cross"),
    ("orange", "ring"),
    ("white", "triangle"),
    ("cyan", "square"),
})

SPLITS: dict[str, int] = {"train": 0, "eval": 1}  # split name -> split_id in the seed derivation
_ZERO_SHOT_STREAM = 2  # the seed derivation's second word for zero_shot_batch, distinct from every split_id

# Background: dark grey, with a per-image tint of up to +-_TINT per channel and per-pixel grey noise of up to
# +-_NOISE (uniform: bounded, and cheaper to draw than normal noise).
_BACKGROUND = 40.0
_TINT = 8.0
_NOISE = 5.0

# Placement: two objects' centres should be at least _MIN_GAP * (sum of their half-extents) apart; after
# _PLACEMENT_TRIES candidate positions the one farthest from its neighbours is accepted anyway.
_MIN_GAP = 0.9
_PLACEMENT_TRIES = 24

_NUMBER_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
MAX_OBJECTS = len(_NUMBER_WORDS)  # counts in captions are spelled out, up to nine

# Caption templates. Fields: {objects} the object list ("a red circle a small blue ring and a green square"),
# {n} the number of objects as a word, {be} "is"/"are", {object_noun} "object"/"objects", {shape_noun}
# "shape"/"shapes", {colour_summary} counts per colour ("two red objects and one blue object").
_TEMPLATES: tuple[str, ...] = (
    "{objects}",
    "a photo of {objects}",
    "a picture of {objects}",
    "an image of {objects}",
    "a drawing of {objects}",
    "{objects} on a dark background",
    "there {be} {n} {object_noun} {objects}",
    "{n} {shape_noun} {objects}",
    "an image with {n} {shape_noun} {objects}",
    "a scene with {colour_summary} namely {objects}",
)
_POSITION_PROB = 0.4  # chance that a caption gives every object's position
_SIZE_PROB = 0.5  # chance, per object, that a caption gives its size

# Position words: an object's centre in the left/right third of the image is "left"/"right", in the top/bottom
# third "top"/"bottom"; the phrase is "at the top left", "on the left", "at the bottom" or "in the centre".
_POSITION_WORDS = ("at", "on", "in", "the", "top", "bottom", "left", "right", "centre")

_CLASS_PROMPT = "a photo of {object}"


@dataclasses.dataclass(frozen=True)
class SceneObject:
  """One shape in a scene.

  Attributes:
    shape: one of SHAPES.
    colour: one of COLOURS.
    size: one of SIZES ("small", "large").
    cx: horizontal centre as a fraction of the image width, 0 = left edge, 1 = right edge.
    cy: vertical centre as a fraction of the image height, 0 = top edge, 1 = bottom edge.
  """
  shape: str
  colour: str
  size: str
  cx: float
  cy: float

  @property
  def half_extent(self) -> float:
    """Half the object's extent, as a fraction of the image side."""
    return SIZES[self.size] / 2


# ----------------------------------------------------------------------------------------------------------------
# Vocabulary and prompts
# ----------------------------------------------------------------------------------------------------------------


def all_combos() -> list[tuple[str, str]]:
  """All 48 (colour, shape) pairs, colour-major in the order of COLOURS and SHAPES."""
  return [(colour, shape) for colour in COLOURS for shape in SHAPES]


def _article(next_word: str) -> str:
  return "an" if next_word[0] in "aeiou" else "a"


def class_prompt(colour: str, shape: str) -> str:
  """The zero-shot class text for a combination, e.g. 'a photo of a red circle', 'a photo of an orange ring'."""
  if colour not in COLOURS or shape not in SHAPES:
    raise ValueError(f"unknown colour or shape: {colour!r}, {shape!r}")
  return _CLASS_PROMPT.format(object=f"{_article(colour)} {colour} {shape}")


def _template_words(template: str) -> set[str]:
  """The literal words of a format string (its fields left out)."""
  return {word for literal, _, _, _ in string.Formatter().parse(template) for word in literal.split()}


def vocabulary_words() -> list[str]:
  """Every word that any caption or class prompt can use, sorted and without duplicates."""
  words = set(COLOURS) | set(SHAPES) | set(SIZES) | set(_NUMBER_WORDS) | set(_POSITION_WORDS)
  words |= {"a", "an", "and", "is", "are", "object", "objects", "shape", "shapes"}  # articles, list, fields
  for template in _TEMPLATES + (_CLASS_PROMPT,):
    words |= _template_words(template)
  return sorted(words)


# ----------------------------------------------------------------------------------------------------------------
# Scene sampling
# ----------------------------------------------------------------------------------------------------------------

_TRAIN_COMBOS: tuple[tuple[str, str], ...] = tuple(c for c in all_combos() if c not in HELD_OUT_COMBOS)
_ALL_COMBOS: tuple[tuple[str, str], ...] = tuple(all_combos())
_SIZE_NAMES: tuple[str, ...] = tuple(SIZES)


def _split_id(split: str) -> int:
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
  return SPLITS[split]


def _place(candidates: Sequence[float], half: float, placed: Sequence[SceneObject]) -> tuple[float, float]:
  """A centre for an object of half-extent `half` that keeps it inside the image and off the `placed` ones.

  Tries _PLACEMENT_TRIES candidate positions in turn and returns the first far enough from every placed object
  (centre distance >= _MIN_GAP * sum of half-extents), or else the one whose worst overlap is smallest. Plain
  Python: with a handful of objects this beats numpy's per-call overhead.

  Args:
    candidates: 2 * _PLACEMENT_TRIES uniform [0, 1) numbers, read as (x, y) pairs.
    half: the new object's half-extent, as a fraction of the image side.
    placed: the objects already in the scene.

  Returns:
    (cx, cy), each in [half, 1 - half] so the object lies inside the image.
  """
  span = 1 - 2 * half
  best, best_slack = None, -1.0
  for t in range(_PLACEMENT_TRIES):
    cx, cy = half + span * candidates[2 * t], half + span * candidates[2 * t + 1]
    # slack >= 1: no excessive overlap with any placed object.
    slack = min((math.hypot(cx - o.cx, cy - o.cy) / (_MIN_GAP * (half + o.half_extent)) for o in placed),
                default=math.inf)
    if slack >= 1:
      return cx, cy
    if slack > best_slack:
      best, best_slack = (cx, cy), slack
  return best


def sample_scene(rng: np.random.Generator, split: str = "train", max_objects: int = 3) -> list[SceneObject]:
  """Draws one scene: 1..max_objects objects (uniform count), painted in list order (later on top).

  Each object's (colour, shape) is uniform over the combinations allowed in `split` (all but HELD_OUT_COMBOS
  for "train", all 48 for "eval"), its size uniform over SIZES, its position uniform inside the image, with
  rejection of positions that overlap earlier objects too much (a few tries, then the least bad is kept).

  Args:
    rng: the random stream; it is advanced by one draw of a fixed number of uniforms.
    split: "train" or "eval".
    max_objects: the largest number of objects, 1..MAX_OBJECTS.

  Returns:
    The scene's objects.
  """
  combos = _TRAIN_COMBOS if _split_id(split) == SPLITS["train"] else _ALL_COMBOS
  if not 1 <= max_objects <= MAX_OBJECTS:
    raise ValueError(f"max_objects must be in 1..{MAX_OBJECTS}, got {max_objects}")
  # A single draw covers everything (numpy's per-call overhead dominates at this size): the count, then per
  # object slot its combination, its size and the candidate positions.
  per_object = 2 + 2 * _PLACEMENT_TRIES
  u = rng.random(1 + per_object * max_objects).tolist()
  count = 1 + int(u[0] * max_objects)
  objects: list[SceneObject] = []
  for k in range(count):
    draws = u[1 + per_object * k: 1 + per_object * (k + 1)]
    colour, shape = combos[int(draws[0] * len(combos))]
    size = _SIZE_NAMES[int(draws[1] * len(_SIZE_NAMES))]
    cx, cy = _place(draws[2:], SIZES[size] / 2, objects)
    objects.append(SceneObject(shape=shape, colour=colour, size=size, cx=cx, cy=cy))
  return objects


# ----------------------------------------------------------------------------------------------------------------
# Captions
# ----------------------------------------------------------------------------------------------------------------


def position_phrase(obj: SceneObject) -> str:
  """Where the object's centre is, by thirds of the image: 'at the top left', 'on the right', 'in the centre'."""
  horizontal = "left" if obj.cx < 1 / 3 else "right" if obj.cx > 2 / 3 else None
  vertical = "top" if obj.cy < 1 / 3 else "bottom" if obj.cy > 2 / 3 else None
  if horizontal and vertical:
    return f"at the {vertical} {horizontal}"
  if horizontal:
    return f"on the {horizontal}"
  if vertical:
    return f"at the {vertical}"
  return "in the centre"


def _object_phrase(obj: SceneObject, with_size: bool, with_position: bool) -> str:
  """'a red circle', 'a large red circle', 'an orange ring at the top', ..."""
  words = [obj.size, obj.colour, obj.shape] if with_size else [obj.colour, obj.shape]
  phrase = f"{_article(words[0])} {' '.join(words)}"
  return f"{phrase} {position_phrase(obj)}" if with_position else phrase


def _join(phrases: Sequence[str]) -> str:
  """'x', 'x and y', 'x y and z' (no commas: the vocabulary has no punctuation)."""
  return phrases[0] if len(phrases) == 1 else f"{' '.join(phrases[:-1])} and {phrases[-1]}"


def _colour_summary(objects: Sequence[SceneObject]) -> str:
  """Counts per colour in order of first mention: 'two red objects and one blue object'."""
  counts: dict[str, int] = {}
  for obj in objects:
    counts[obj.colour] = counts.get(obj.colour, 0) + 1
  return _join([f"{_NUMBER_WORDS[n - 1]} {colour} {'object' if n == 1 else 'objects'}"
                for colour, n in counts.items()])


def caption(objects: Sequence[SceneObject], rng: np.random.Generator) -> str:
  """A random caption naming every object's colour and shape, objects in random order.

  Args:
    objects: the scene (at least one object).
    rng: the random stream; it is advanced.

  Returns:
    Lowercase words from vocabulary_words(), separated by single spaces.
  """
  n = len(objects)
  u = rng.random(2 + 2 * n).tolist()  # template, position mode, per object: size mention, order key
  template = _TEMPLATES[int(u[0] * len(_TEMPLATES))]
  with_position = u[1] < _POSITION_PROB
  order = sorted(range(n), key=lambda i: u[2 + n + i])  # a uniform random permutation
  ordered = [objects[i] for i in order]
  phrases = [_object_phrase(objects[i], u[2 + i] < _SIZE_PROB, with_position) for i in order]
  return template.format(
      objects=_join(phrases),
      n=_NUMBER_WORDS[n - 1],
      be="is" if n == 1 else "are",
      object_noun="object" if n == 1 else "objects",
      shape_noun="shape" if n == 1 else "shapes",
      colour_summary=_colour_summary(ordered),
  )


# Caption granularities (TIPSv2: alt-text, short synthetic captions and long detailed ones, alternated so that
# the text tower cannot shortcut on coarse keywords):
#   alt     `caption`: a template, objects in random order, sizes and positions sometimes
#   short   the main object: the largest, the first drawn among equals ("a red circle")
#   medium  every object with its size and colour ("a large red circle and a small blue ring")
#   long    counts per colour, then every object with size and position ("a scene with two red objects and
#           one blue object namely a large red circle at the top left ...")
GRANULARITIES = ("alt", "short", "medium", "long")


def caption_at(objects: Sequence[SceneObject], granularity: str, rng: np.random.Generator) -> str:
  """A caption of the scene at one of GRANULARITIES, in vocabulary_words()."""
  if granularity == "alt":
    return caption(objects, rng)
  if granularity == "short":
    main = max(objects, key=lambda o: SIZES[o.size])  # max keeps the first of equals
    return _object_phrase(main, with_size=False, with_position=False)
  order = [objects[i] for i in rng.permutation(len(objects))]
  if granularity == "medium":
    return _join([_object_phrase(o, with_size=True, with_position=False) for o in order])
  if granularity == "long":
    return (f"a scene with {_colour_summary(order)} namely "
            f"{_join([_object_phrase(o, with_size=True, with_position=True) for o in order])}")
  raise ValueError(f"unknown caption granularity {granularity!r}: use one of {GRANULARITIES}")


# ----------------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------------

_SHAPE_IDS = {shape: i for i, shape in enumerate(SHAPES)}
# [C, 3] colours mapped from 0..255 to [-1, 1], as the images are.
_COLOUR_TABLE = np.array(list(COLOURS.values()), dtype=np.float32) * np.float32(1 / 127.5) - np.float32(1)
_COLOUR_IDS = {colour: i for i, colour in enumerate(COLOURS)}


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Which pixels a shape covers, in coordinates normalised by the object's half-extent.

  Args:
    shape: one of SHAPES.
    u: horizontal offsets of pixel centres from the object centres, in half-extents (e.g. [N, 1, W]).
    v: vertical offsets (downwards), likewise (e.g. [N, H, 1]); u and v broadcast together.

  Returns:
    bool, their broadcast shape (e.g. [N, H, W]); every shape lies within |u|, |v| <= 1.
  """
  au, av = np.abs(u), np.abs(v)
  if shape == "circle":
    return u * u + v * v <= 1
  if shape == "ring":
    r2 = u * u + v * v
    return (r2 <= 1) & (r2 >= 0.5 ** 2)
  if shape == "square":
    return (au <= 0.85) & (av <= 0.85)  # a bit inside the box, for an area like the circle's
  if shape == "diamond":
    return au + av <= 1
  if shape == "cross":  # a plus sign with arms 2/3 of a half-extent wide
    return ((au <= 1 / 3) & (av <= 1)) | ((av <= 1 / 3) & (au <= 1))
  if shape == "triangle":  # apex at the top (v = -1), base at v = 0.8 spanning u in [-1, 1]
    return (v <= 0.8) & (1.8 * au - 1 <= v)
  raise ValueError(f"unknown shape {shape!r}")


def _top_colours(scenes: Sequence[Sequence[SceneObject]], h: int, w: int) -> np.ndarray:
  """The colour id on top of each pixel of each scene (-1: background), objects painted in list order."""
  return _top_ids(scenes, h, w, lambda o: _COLOUR_IDS[o.colour])


def class_map(scenes: Sequence[Sequence[SceneObject]], image_size: int | tuple[int, int]) -> np.ndarray:
  """Per-pixel ground truth: the (colour, shape) class on top of each pixel, an index into all_combos()
  (colour-major), or -1 for the background: int16 [B, H, W], the pixels render_scenes paints."""
  h, w = (image_size, image_size) if isinstance(image_size, (int, np.integer)) else (int(v) for v in image_size)
  return _top_ids(scenes, h, w, lambda o: _COLOUR_IDS[o.colour] * len(SHAPES) + _SHAPE_IDS[o.shape],
                  dtype=np.int16)


def _top_ids(scenes: Sequence[Sequence[SceneObject]], h: int, w: int, id_of, dtype=np.int8) -> np.ndarray:
  """The id (id_of(object)) of the object on top of each pixel of each scene (-1: background), objects
  painted in list order.

  Vectorised over all objects of the batch: one mask computation per shape kind, one paint per object slot.
  On a rectangle, centres are fractions of each side and sizes of the shorter one, so shapes keep their form.

  Args:
    scenes: B scenes.
    h, w: the image size in pixels.

  Returns:
    [B, H, W] ids, or -1.
  """
  top = np.full((len(scenes), h, w), -1, dtype=dtype)  # [B, H, W]
  # Flatten the objects of all scenes: which image, which slot (paint order), where, how big, what.
  flat = [(i, k, o) for i, scene in enumerate(scenes) for k, o in enumerate(scene)]
  if not flat:
    return top
  image_idx = np.array([i for i, _, _ in flat])  # [N]
  slot = np.array([k for _, k, _ in flat])  # [N]
  cx = np.array([o.cx for _, _, o in flat], dtype=np.float32) * w  # [N] in pixels
  cy = np.array([o.cy for _, _, o in flat], dtype=np.float32) * h
  half = np.array([o.half_extent for _, _, o in flat], dtype=np.float32) * min(h, w)
  shape_id = np.array([_SHAPE_IDS[o.shape] for _, _, o in flat])
  object_id = np.array([id_of(o) for _, _, o in flat], dtype=dtype)  # [N]

  x_centres = np.arange(w, dtype=np.float32) + 0.5  # pixel centres
  y_centres = np.arange(h, dtype=np.float32) + 0.5
  masks = np.empty((len(flat), h, w), dtype=bool)  # [N, H, W]
  for shape, sid in _SHAPE_IDS.items():
    sel = np.flatnonzero(shape_id == sid)
    if sel.size:
      u = (x_centres[None, None, :] - cx[sel, None, None]) / half[sel, None, None]  # [n, 1, W]
      v = (y_centres[None, :, None] - cy[sel, None, None]) / half[sel, None, None]  # [n, H, 1]
      masks[sel] = shape_mask(shape, u, v)
  # Paint slot by slot so that later objects of a scene cover earlier ones; each image has at most one object
  # per slot, so the fancy indices of a slot are unique.
  for k in range(int(slot.max()) + 1):
    sel = np.flatnonzero(slot == k)
    rows = image_idx[sel]
    top[rows] = np.where(masks[sel], object_id[sel, None, None], top[rows])
  return top


def render_scenes(scenes: Sequence[Sequence[SceneObject]], image_size: int | tuple[int, int],
                  rng: np.random.Generator) -> np.ndarray:
  """Paints scenes onto noisy dark backgrounds.

  Objects are drawn in list order (later on top) with hard edges and their exact colour; only the background
  is tinted and noisy.

  Args:
    scenes: B scenes.
    image_size: the side S of square images, or (height, width), in pixels.
    rng: the random stream for the background; it is advanced.

  Returns:
    float32 [B, H, W, 3] in [-1, 1] (0..255 mapped linearly).
  """
  b = len(scenes)
  h, w = (image_size, image_size) if isinstance(image_size, (int, np.integer)) else (int(v) for v in image_size)
  top = _top_colours(scenes, h, w)  # [B, H, W]

  # Background: grey + per-image tint [B, 3] + per-pixel grey noise [B, S, S], all in [-1, 1] units. Composed
  # one channel plane at a time: numpy broadcasts slowly into a last axis of 3.
  tint = rng.uniform(-_TINT, _TINT, size=(b, 3)).astype(np.float32) * np.float32(1 / 127.5)
  noise = rng.random((b, h, w), dtype=np.float32)  # uniform [0, 1)
  grey = noise * np.float32(2 * _NOISE / 127.5) + np.float32((_BACKGROUND - _NOISE) / 127.5 - 1)  # [B, H, W]
  painted = top >= 0  # [B, H, W]
  images = np.empty((b, h, w, 3), dtype=np.float32)
  for c in range(3):
    plane = images[..., c]  # [B, H, W] view
    np.add(grey, tint[:, None, None, c], out=plane)
    np.copyto(plane, _COLOUR_TABLE[:, c][top], where=painted)  # top = -1 picks the last colour, then unused
  return images


# ----------------------------------------------------------------------------------------------------------------
# Batches
# ----------------------------------------------------------------------------------------------------------------


def batch_rng(seed: int, index: int, split: str = "train") -> np.random.Generator:
  """The random stream of batch `index` of `split`: default_rng(SeedSequence([seed, split_id, index]))."""
  return np.random.default_rng(np.random.SeedSequence([seed, _split_id(split), index]))


def sample_batch(seed: int, index: int, batch_size: int, image_size: int = 32, split: str = "train",
                 max_objects: int = 3, with_scenes: bool = False) -> dict:
  """Batch `index` of an unbounded stream of (image, caption) pairs.

  A pure function of its arguments: the same arguments give identical arrays and texts; different indices,
  seeds or splits give independent batches ("eval" uses a disjoint seed derivation from "train").

  Args:
    seed: the run's data seed.
    index: the batch number (any non-negative int).
    batch_size: B.
    image_size: the side S of the square images, in pixels.
    split: "train" (no object of HELD_OUT_COMBOS) or "eval" (all combinations).
    max_objects: each scene has 1..max_objects objects.
    with_scenes: also return the scenes behind the images (for tests and visualisation).

  Returns:
    {"image": float32 [B, S, S, 3] in [-1, 1], "text": B captions}, plus "scenes": B lists of SceneObject
    (in paint order) if `with_scenes`.
  """
  rng = batch_rng(seed, index, split)
  scenes = [sample_scene(rng, split, max_objects) for _ in range(batch_size)]
  texts = [caption(scene, rng) for scene in scenes]
  batch = {"image": render_scenes(scenes, image_size, rng), "text": texts}
  if with_scenes:
    batch["scenes"] = scenes
  return batch


def zero_shot_batch(seed: int, combos: Sequence[tuple[str, str]], n_per_combo: int,
                    image_size: int = 32) -> dict:
  """Single-object images of given (colour, shape) combinations, for zero-shot classification.

  Each image holds one object of random size and position; images come grouped by combination, in the order
  of `combos`, n_per_combo each. The stream, SeedSequence([seed, 2]), is disjoint from every sample_batch
  stream.

  Args:
    seed: the data seed.
    combos: the K classes, as (colour, shape) pairs (e.g. all_combos() or sorted(HELD_OUT_COMBOS)).
    n_per_combo: images per class.
    image_size: the side S of the square images, in pixels.

  Returns:
    {"image": float32 [K * n_per_combo, S, S, 3] in [-1, 1], "label": int32 [K * n_per_combo] indices into
    `combos`}.
  """
  for colour, shape in combos:
    if colour not in COLOURS or shape not in SHAPES:
      raise ValueError(f"unknown combination ({colour!r}, {shape!r})")
  rng = np.random.default_rng(np.random.SeedSequence([seed, _ZERO_SHOT_STREAM]))
  n = len(combos) * n_per_combo
  labels = np.repeat(np.arange(len(combos), dtype=np.int32), n_per_combo)  # [N]
  sizes = rng.integers(len(_SIZE_NAMES), size=n).tolist()  # [N]
  unit = rng.random((n, 2)).tolist()  # [N, 2], mapped below to centres that keep each object inside the image
  scenes = []
  for label, size_id, (ux, uy) in zip(labels.tolist(), sizes, unit):
    colour, shape = combos[label]
    size = _SIZE_NAMES[size_id]
    half = SIZES[size] / 2
    scenes.append([SceneObject(shape=shape, colour=colour, size=size,
                               cx=half + (1 - 2 * half) * ux, cy=half + (1 - 2 * half) * uy)])
  return {"image": render_scenes(scenes, image_size, rng), "label": labels}


__all__ = [
    "COLOURS", "SHAPES", "SIZES", "SOLID_SHAPES", "HELD_OUT_COMBOS", "SPLITS", "MAX_OBJECTS", "SceneObject",
    "all_combos", "class_prompt", "vocabulary_words", "sample_scene", "position_phrase", "caption", "GRANULARITIES",
    "caption_at", "class_map", "render_scenes", "batch_rng", "sample_batch", "zero_shot_batch",
]
