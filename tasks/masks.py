"""iBOT's block masks for masked prediction (encoders/objectives/masked.py), drawn in the input pipeline.

Rectangles of at least 4 patches, with an aspect ratio between 0.3 and 1/0.3, placed at random until the
image's share of masked patches is covered. Numpy only: tasks.preprocessors.multi_crop draws them from each
example's seed.
"""

from __future__ import annotations

import math

import numpy as np


def block_mask(rng: np.random.Generator, rows: int, cols: int, ratio: float, min_patches: int = 4,
               max_aspect: float = 1 / 0.3, max_tries: int = 20) -> np.ndarray:
  """bool [rows, cols]: rectangles placed at random until round(ratio * rows * cols) patches are covered
  (or no rectangle that fits adds any after max_tries in a row); see the module docstring."""
  mask = np.zeros((rows, cols), bool)
  target = int(round(ratio * rows * cols))
  tries = 0
  while mask.sum() < target and tries < max_tries:
    remaining = target - int(mask.sum())
    area = rng.uniform(min(min_patches, remaining), max(min(min_patches, remaining), remaining))
    aspect = math.exp(rng.uniform(-math.log(max_aspect), math.log(max_aspect)))
    h = int(round(math.sqrt(area * aspect)))
    w = int(round(math.sqrt(area / aspect)))
    if not 1 <= h <= rows or not 1 <= w <= cols:
      tries += 1
      continue
    top, left = int(rng.integers(0, rows - h + 1)), int(rng.integers(0, cols - w + 1))
    before = int(mask.sum())
    block = mask[top:top + h, left:left + w]
    free = np.argwhere(~block)
    if len(free) > remaining:  # do not overshoot the ratio: cover the block's first free patches only
      keep = free[:remaining]
      block[keep[:, 0], keep[:, 1]] = True
    else:
      block[:] = True
    tries = 0 if mask.sum() > before else tries + 1
  return mask


__all__ = ["block_mask"]
