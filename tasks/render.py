"""Shared plumbing of the rendered-text generators (tasks.ocr, tasks.documents, tasks.charts, tasks.multilingual).

Every generator is a pure function of (seed, split, index): `example_rng` derives the example's random stream,
`partition` splits a word list into disjoint train / validation halves so that the two splits never show the
same content, `font` loads the DejaVu fonts that matplotlib ships (no system fonts needed), and `to_float` /
`stack` turn rendered pictures into the float32 [-1, 1] arrays and batches the models read.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence

import matplotlib
import numpy as np
from PIL import Image, ImageFont

SPLITS: dict[str, int] = {"train": 0, "validation": 1}  # split name -> its word in the seed derivation

# One item in every _HOLD_OUT_EVERY of each content list (names, words, items...) appears only in validation.
_HOLD_OUT_EVERY = 4

# Font name -> file in matplotlib's data directory: DejaVu Sans, Serif and Sans Mono, each in four styles.
FONT_FILES: dict[str, str] = {
    "sans": "DejaVuSans.ttf",
    "sans-bold": "DejaVuSans-Bold.ttf",
    "sans-oblique": "DejaVuSans-Oblique.ttf",
    "sans-bold-oblique": "DejaVuSans-BoldOblique.ttf",
    "serif": "DejaVuSerif.ttf",
    "serif-bold": "DejaVuSerif-Bold.ttf",
    "serif-italic": "DejaVuSerif-Italic.ttf",
    "serif-bold-italic": "DejaVuSerif-BoldItalic.ttf",
    "mono": "DejaVuSansMono.ttf",
    "mono-bold": "DejaVuSansMono-Bold.ttf",
    "mono-oblique": "DejaVuSansMono-Oblique.ttf",
    "mono-bold-oblique": "DejaVuSansMono-BoldOblique.ttf",
}


def split_id(split: str) -> int:
  """The split's word in the seed derivation; raises ValueError for an unknown split."""
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
  return SPLITS[split]


def example_rng(seed: int, split: str, index: int, stream: int) -> np.random.Generator:
  """The random stream of example `index` of a generator.

  The stream id goes into the spawn key rather than the entropy list: SeedSequence pads short entropy lists
  with zeros, so [seed, split, index] and [seed, split, index, 0] would collide, while a spawn key keeps every
  generator's streams apart from each other and from tasks.scenes' [seed, split, index].

  Args:
    seed: the run's data seed.
    split: "train" or "validation".
    index: the example number (any non-negative int).
    stream: the generator's own id, distinct per module.

  Returns:
    A fresh numpy Generator.
  """
  if index < 0:
    raise ValueError(f"index must be non-negative, got {index}")
  return np.random.default_rng(np.random.SeedSequence([seed, split_id(split), index], spawn_key=(stream,)))


def image_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
  """(height, width) from an int side or a (height, width) pair."""
  if isinstance(image_size, (int, np.integer)):
    h = w = int(image_size)
  else:
    h, w = (int(x) for x in image_size)
  if h < 16 or w < 16:
    raise ValueError(f"images must be at least 16x16 pixels, got {h}x{w}")
  return h, w


def native_hw(side: int, aspect_range: tuple[float, float], rng: np.random.Generator) -> tuple[int, int]:
  """(height, width) of the area of a side x side square at an aspect (height / width) drawn log-uniformly
  from aspect_range: how a document, receipt or chart of that kind is shaped when nobody squashes it."""
  low, high = np.log(aspect_range[0]), np.log(aspect_range[1])
  root = float(np.exp(rng.uniform(low, high) / 2))  # sqrt(aspect)
  return max(16, round(side * root)), max(16, round(side / root))


def partition(items: Sequence[str], split: str) -> tuple[str, ...]:
  """The items a split may use: every _HOLD_OUT_EVERY-th for "validation", all the others for "train"."""
  held_out = split_id(split) == SPLITS["validation"]
  return tuple(x for i, x in enumerate(items) if (i % _HOLD_OUT_EVERY == _HOLD_OUT_EVERY - 1) == held_out)


@functools.lru_cache(maxsize=512)
def font(name: str, size_px: int) -> ImageFont.FreeTypeFont:
  """A DejaVu font (see FONT_FILES) at a size in pixels, cached.

  The basic layout engine is enough for the Latin text rendered here and gives the same glyph positions with
  or without libraqm installed.
  """
  path = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", FONT_FILES[name])
  return ImageFont.truetype(path, max(1, int(size_px)), layout_engine=ImageFont.Layout.BASIC)


def to_float(image: Image.Image | np.ndarray) -> np.ndarray:
  """An RGB picture (PIL image or uint8 [H, W, 3]) as float32 [H, W, 3] in [-1, 1], 0..255 mapped linearly."""
  pixels = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.float32)
  return pixels * np.float32(1 / 127.5) - np.float32(1)


def stack(examples: Sequence[dict]) -> dict:
  """Examples -> a batch: "image" stacked to [B, H, W, 3], every other key a list of B values."""
  batch = {key: [ex[key] for ex in examples] for key in examples[0]}
  batch["image"] = np.stack(batch["image"])
  return batch


def batch_of(example: Callable[..., dict], seed: int, index: int, batch_size: int, **kwargs) -> dict:
  """Batch `index` of a generator: examples index * batch_size ... (index + 1) * batch_size - 1, stacked."""
  return stack([example(seed, index * batch_size + i, **kwargs) for i in range(batch_size)])
