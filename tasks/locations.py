"""PaLI location tokens: boxes written as text, for detection and referring-expression targets.

Each box coordinate becomes one of NUM_BINS = 1024 tokens `<loc0000>` .. `<loc1023>`, and a box (y0, x0, y1, x1)
becomes four of them in that order, written without spaces as PaLI writes them:

  box_to_tokens((10.0, 20.0, 110.0, 200.0), 224, 224) == "<loc0045><loc0091><loc0502><loc0914>"

Binning: a coordinate c on an axis of `size` pixels (0 = top or left edge, size = bottom or right edge) falls
in bin floor(c / size * 1024), clipped to 0..1023, so every bin covers size / 1024 pixels and c = size (a box
touching the right or bottom edge) still lands in the last bin. Decoding returns the bin's centre,
(bin + 0.5) * size / 1024: the round trip box -> tokens -> box is then off by at most half a bin (size / 2048
pixels) for coordinates inside the image. (Readers of PaliGemma output often decode to the bin's lower edge,
bin / 1024 * size, which is off by up to a whole bin.)
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

NUM_BINS = 1024
LOC_TOKENS: list[str] = [f"<loc{b:04d}>" for b in range(NUM_BINS)]

Box = tuple[float, float, float, float]  # (y0, x0, y1, x1) in pixels

# One token; four-digit numbers of 1024 and above are not location tokens and are rejected when parsing.
_LOC_RE = re.compile(r"<loc(\d{4})>")
_GAP_RE = re.compile(r"\s*")  # what may separate the tokens of one box: nothing, or whitespace


def coord_to_bin(coord: float, size: int) -> int:
  """The bin of a pixel coordinate on an axis of `size` pixels: floor(coord / size * 1024), clipped to 0..1023.

  Raises:
    ValueError: `size` is not positive or `coord` is not finite.
  """
  if size <= 0:
    raise ValueError(f"image side must be positive, got {size}")
  if not math.isfinite(coord):
    raise ValueError(f"box coordinate must be finite, got {coord}")
  return min(max(math.floor(coord / size * NUM_BINS), 0), NUM_BINS - 1)


def bin_to_coord(bin_index: int, size: int) -> float:
  """The pixel coordinate a bin decodes to: its centre, (bin + 0.5) * size / 1024."""
  return (bin_index + 0.5) * size / NUM_BINS


def box_to_tokens(box: Sequence[float], image_height: int, image_width: int) -> str:
  """Writes a box as four location tokens, y0 x0 y1 x1, without spaces.

  Args:
    box: (y0, x0, y1, x1) in pixels, edges included (a box covering the whole image is (0, 0, H, W)).
      Coordinates outside the image are clipped into the first or last bin.
    image_height: H in pixels, the scale of y0 and y1.
    image_width: W in pixels, the scale of x0 and x1.

  Returns:
    e.g. '<loc0045><loc0091><loc0502><loc0914>'.
  """
  if len(box) != 4:
    raise ValueError(f"a box has 4 coordinates (y0, x0, y1, x1), got {len(box)}")
  y0, x0, y1, x1 = box
  sizes = (image_height, image_width, image_height, image_width)
  return "".join(LOC_TOKENS[coord_to_bin(c, s)] for c, s in zip((y0, x0, y1, x1), sizes, strict=True))


def tokens_to_boxes(text: str, image_height: int, image_width: int) -> list[Box]:
  """Reads every box in a text: each run of four location tokens, in the order they appear.

  Tokens of one box may be separated by whitespace (as some detokenizers write them) but by nothing else;
  any other text ends a run. A run of n tokens gives n // 4 boxes and its n % 4 last tokens are dropped, so
  malformed or truncated output never raises and never yields a partial box. Decoded boxes are not reordered:
  a model may write y0 > y1.

  Args:
    text: model output or a target, e.g. '<loc0045><loc0091><loc0502><loc0914> circle ; <loc0...'.
    image_height: H in pixels.
    image_width: W in pixels.

  Returns:
    The boxes (y0, x0, y1, x1) in pixels, each coordinate decoded to its bin's centre.
  """
  sizes = (image_height, image_width, image_height, image_width)
  boxes: list[Box] = []
  run: list[int] = []  # the bins of the current run's unfinished box
  end = 0  # where the previous token (or the text) ended
  for match in _LOC_RE.finditer(text):
    if _GAP_RE.fullmatch(text, end, match.start()) is None:  # other text since the previous token
      run = []
    end = match.end()
    bin_index = int(match.group(1))
    if bin_index >= NUM_BINS:  # e.g. <loc1024>: not a token, so it breaks the run
      run = []
      continue
    run.append(bin_index)
    if len(run) == 4:
      boxes.append(tuple(bin_to_coord(b, s) for b, s in zip(run, sizes, strict=True)))
      run = []
  return boxes


__all__ = ["NUM_BINS", "LOC_TOKENS", "Box", "coord_to_bin", "bin_to_coord", "box_to_tokens", "tokens_to_boxes"]
