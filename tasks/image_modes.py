"""Decoded images as uint8 RGB, one conversion for training (tasks.sources) and inference (vlm.infer).

Pure numpy and PIL, no TensorFlow, so inference hosts without TF read images exactly as training did.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# Grayscale modes wider than 8 bits: a 16-bit PNG opens as "I;16" or, in older PIL, "I" (its range is 16 bits).
_WIDE_GRAY_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")
_WIDE_GRAY_MAX = 65535


def to_rgb(image: Image.Image) -> np.ndarray:
  """uint8 [h, w, 3] of an image of any mode, each channel scaled from its real range to 0..255.

  PIL itself reads 16-bit colour PNGs as 8-bit RGB(A) and converts palette, LA and CMYK correctly; only wide
  grayscale needs scaling (PIL's convert("RGB") clips it at 255: nearly white).
  """
  if image.mode not in _WIDE_GRAY_MODES:
    return np.asarray(image.convert("RGB"))
  gray = np.clip(np.asarray(image, dtype=np.float64), 0, _WIDE_GRAY_MAX)
  return np.repeat(np.rint(gray * (255 / _WIDE_GRAY_MAX)).astype(np.uint8)[..., None], 3, axis=-1)


__all__ = ["to_rgb"]
