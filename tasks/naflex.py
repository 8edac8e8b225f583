"""NaFlex inputs (SigLIP 2): an image resized, keeping its aspect ratio, to the largest patch grid within a
budget of patches, then cut into patches padded to the budget.

  grid_for_budget(height, width, patch_size, max_num_patches) -> (rows, cols)
  patchify(image, patch_size, max_num_patches) -> {'patches': float32 [P, p*p*3] in [-1, 1],
                                                    'patch_mask': int32 [P], 'spatial_shapes': int32 [2]}

with P = max_num_patches. Each patch is flattened as (patch row, patch col, channel), patches row-major; the
image's rows * cols patches come first and the padding (zeros, mask 0) after. This is what HF's Siglip2 image
processor gives (pixel_values, pixel_attention_mask, spatial_shapes) and what big_vision's resize_to_sequence
+ patchify ops compute, and what `encoders.vit.ViT` takes.

The grid. SigLIP 2 scales the image by the largest factor s for which ceil(h s / p) * ceil(w s / p) patches
fit the budget (each side at least one patch, s at most 100), and finds s by bisection to a tolerance of
1e-5, as big_vision's and HF's preprocessing both do. The tolerance is part of the definition: where two
sides' steps fall within 1e-5 of each other an exact search would allow one more row or column (1 image size
in about 6,000), and the checkpoints were trained, and HF's processor evaluates, with the bisection's grid.

Pure numpy and PIL (the resize is PIL's bilinear filter on uint8, as HF's processor does it), no TensorFlow:
tasks.preprocessors wraps it for seqio, and inference calls it directly.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

MAX_SCALE = 100.0  # the references' upper bound on the resize factor (a tiny image grows at most 100x)
TOLERANCE = 1e-5  # of the bisection on the scale

# SigLIP 2's NaFlex sequence lengths (patches per image); a run picks its own.
BUDGETS = (128, 256, 576, 784, 1024)


def grid_for_budget(height: int, width: int, patch_size: int, max_num_patches: int) -> tuple[int, int]:
  """(rows, cols) of patches for an image of height x width pixels: see the module docstring.

  Raises:
    ValueError: a size or the patch size is below 1, or the budget is below one patch.
  """
  if isinstance(max_num_patches, bool) or not isinstance(max_num_patches, (int, np.integer)) or max_num_patches < 1:
    raise ValueError(f"max_num_patches must be an integer >= 1 (patches an image may use); got {max_num_patches!r}")
  if height < 1 or width < 1 or patch_size < 1:
    raise ValueError(f"an image of {height}x{width} pixels cannot be cut into {patch_size}-pixel patches")

  def grid_at(scale: float) -> tuple[int, int]:
    return max(1, math.ceil(height * scale / patch_size)), max(1, math.ceil(width * scale / patch_size))

  fits, too_big = TOLERANCE / 10, MAX_SCALE  # the scale that fits only ever grows, the one too big shrinks
  while too_big - fits >= TOLERANCE:
    middle = (fits + too_big) / 2
    rows, cols = grid_at(middle)
    if rows * cols <= max_num_patches:
      fits = middle
    else:
      too_big = middle
  return grid_at(fits)


def resize_to_grid(image: np.ndarray, grid: tuple[int, int], patch_size: int) -> np.ndarray:
  """uint8 [H, W, 3] -> uint8 [rows * p, cols * p, 3], PIL's bilinear filter (antialiased when shrinking)."""
  rows, cols = grid
  target = (cols * patch_size, rows * patch_size)  # PIL sizes are (width, height)
  if image.shape[1::-1] == target:
    return image
  return np.asarray(Image.fromarray(image).resize(target, Image.BILINEAR))


def to_patches(image: np.ndarray, patch_size: int) -> np.ndarray:
  """[rows * p, cols * p, C] -> [rows * cols, p * p * C], each patch flattened as (row, col, channel)."""
  h, w, c = image.shape
  p = patch_size
  x = image.reshape(h // p, p, w // p, p, c).transpose(0, 2, 1, 3, 4)
  return x.reshape((h // p) * (w // p), p * p * c)


def check_image(image) -> np.ndarray:
  """A uint8 RGB image [H, W, 3] (grayscale [H, W] or [H, W, 1] is repeated to RGB), or a ValueError."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise ValueError(f"NaFlex preprocessing takes uint8 images (0..255, as decoded); got {image.dtype}")
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3) or not image.shape[0] or not image.shape[1]:
    raise ValueError(f"an image must be [H, W, 3] (or grayscale [H, W]) with H, W >= 1; got shape {image.shape}")
  return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image


def patch_sequence(image, patch_size: int, max_num_patches: int) -> tuple[np.ndarray, np.ndarray]:
  """One image's patches, unpadded: (float32 [rows * cols, p*p*3] in [-1, 1], int32 [2] (rows, cols))."""
  image = check_image(image)
  grid = grid_for_budget(image.shape[0], image.shape[1], patch_size, max_num_patches)
  resized = resize_to_grid(image, grid, patch_size)
  pixels = resized.astype(np.float32) * np.float32(1 / 127.5) - np.float32(1)  # as preprocessors.normalize_image
  return to_patches(pixels, patch_size), np.array(grid, np.int32)


def patchify(image, patch_size: int, max_num_patches: int) -> dict[str, np.ndarray]:
  """One image as NaFlex inputs padded to max_num_patches (see the module docstring)."""
  sequence, grid = patch_sequence(image, patch_size, max_num_patches)
  patches = np.zeros((max_num_patches, sequence.shape[1]), np.float32)
  patches[:len(sequence)] = sequence
  mask = (np.arange(max_num_patches) < len(sequence)).astype(np.int32)
  return {"patches": patches, "patch_mask": mask, "spatial_shapes": grid}


def patchify_batch(images, patch_size: int, max_num_patches: int) -> dict[str, np.ndarray]:
  """patchify over a list of images of any sizes, stacked: [N, P, p*p*3], [N, P], [N, 2]."""
  examples = [patchify(image, patch_size, max_num_patches) for image in images]
  if not examples:
    return {"patches": np.zeros((0, max_num_patches, patch_size * patch_size * 3), np.float32),
            "patch_mask": np.zeros((0, max_num_patches), np.int32), "spatial_shapes": np.zeros((0, 2), np.int32)}
  return {k: np.stack([ex[k] for ex in examples]) for k in examples[0]}


def grid_image(patches: np.ndarray, spatial_shapes, patch_size: int) -> np.ndarray:
  """The image a patch sequence holds: [rows * p, cols * p, 3] in [-1, 1] (to look at; tasks.show)."""
  rows, cols = (int(v) for v in spatial_shapes)
  p = patch_size
  x = np.asarray(patches)[:rows * cols].reshape(rows, cols, p, p, 3).transpose(0, 2, 1, 3, 4)
  return x.reshape(rows * p, cols * p, 3)


__all__ = ["BUDGETS", "grid_for_budget", "resize_to_grid", "to_patches", "check_image", "patch_sequence", "patchify",
           "patchify_batch", "grid_image"]
