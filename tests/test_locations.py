"""PaLI location tokens (tasks.locations): the bin mapping, box round trips and forgiving parsing."""

import math
import random

import numpy as np
import pytest

from tasks import locations
from tasks.locations import LOC_TOKENS, NUM_BINS, box_to_tokens, tokens_to_boxes


def test_token_list():
  assert NUM_BINS == len(LOC_TOKENS) == len(set(LOC_TOKENS)) == 1024
  assert LOC_TOKENS[0] == "<loc0000>" and LOC_TOKENS[123] == "<loc0123>" and LOC_TOKENS[-1] == "<loc1023>"


def test_bin_mapping_edges():
  assert locations.coord_to_bin(0, 224) == 0
  assert locations.coord_to_bin(224, 224) == 1023  # the far edge lands in the last bin
  assert locations.coord_to_bin(-3.0, 224) == 0 and locations.coord_to_bin(500.0, 224) == 1023  # clipped
  assert locations.coord_to_bin(7 * 224 / 1024, 224) == 7  # a bin's lower edge belongs to it
  assert locations.coord_to_bin(7 * 224 / 1024 - 1e-9, 224) == 6
  assert locations.bin_to_coord(0, 1024) == 0.5 and locations.bin_to_coord(1023, 2048) == 2047.0  # centres
  with pytest.raises(ValueError):
    locations.coord_to_bin(float("nan"), 224)
  with pytest.raises(ValueError):
    locations.coord_to_bin(1.0, 0)


def test_exact_format():
  assert box_to_tokens((10.0, 20.0, 110.0, 200.0), 224, 224) == "<loc0045><loc0091><loc0502><loc0914>"
  # y scales by the height, x by the width.
  assert box_to_tokens((50, 50, 100, 100), 100, 200) == "<loc0512><loc0256><loc1023><loc0512>"
  with pytest.raises(ValueError):
    box_to_tokens((1, 2, 3), 224, 224)


@pytest.mark.parametrize("height, width", [(224, 224), (812, 812), (1064, 1064), (17, 333), (101, 7), (1, 1)])
def test_round_trip_within_half_a_bin(height, width):
  rng = np.random.default_rng(height * 10000 + width)
  for _ in range(300):
    y0, y1 = np.sort(rng.uniform(0, height, 2))
    x0, x1 = np.sort(rng.uniform(0, width, 2))
    text = box_to_tokens((y0, x0, y1, x1), height, width)
    assert len(text) == 4 * len("<loc0000>") and " " not in text
    (decoded,) = tokens_to_boxes(text, height, width)
    error = np.abs(np.array(decoded) - [y0, x0, y1, x1])
    assert (error <= np.array([height, width, height, width]) / (2 * NUM_BINS) + 1e-9).all(), (decoded, text)


def test_round_trip_of_integer_pixel_boxes_including_the_image_edges():
  for size in (224, 812, 1064, 999):
    box = (0, 3, size, size - 1)
    decoded = np.array(tokens_to_boxes(box_to_tokens(box, size, size), size, size)[0])
    assert np.abs(decoded - box).max() <= size / 2048 + 1e-9


def test_parses_every_box_and_ignores_other_text():
  a, b = box_to_tokens((1, 2, 30, 40), 64, 64), box_to_tokens((10, 0, 64, 64), 64, 64)
  text = f"{a} red circle ; {b} red circle"
  boxes = tokens_to_boxes(text, 64, 64)
  assert len(boxes) == 2 and boxes[0][2] < boxes[1][2]
  assert tokens_to_boxes("none", 64, 64) == [] and tokens_to_boxes("", 64, 64) == []
  # Whitespace between the tokens of a box (as some detokenizers write them) reads the same.
  spaced = lambda box: " ".join(box[i:i + 9] for i in range(0, 36, 9))  # noqa: E731
  assert tokens_to_boxes(f"{spaced(a)} red circle ; {spaced(b)}\tred circle", 64, 64) == boxes


def test_malformed_text_yields_only_whole_boxes():
  t = LOC_TOKENS
  assert tokens_to_boxes(t[1] + t[2] + t[3], 64, 64) == []  # truncated
  assert len(tokens_to_boxes(t[1] * 6, 64, 64)) == 1  # leftover tokens of a run are dropped
  assert len(tokens_to_boxes(t[1] * 8, 64, 64)) == 2
  # Other text ends a run: 2 + 2 tokens split by a word make no box; the next four make one.
  assert len(tokens_to_boxes(t[1] * 2 + " circle " + t[1] * 2 + " ; " + t[5] * 4, 64, 64)) == 1
  # Out-of-range and short numbers are not tokens and break runs.
  assert tokens_to_boxes(t[1] * 2 + "<loc1024>" + t[1] * 2, 64, 64) == []
  assert tokens_to_boxes(t[1] * 2 + "<loc12>" + t[1] * 2, 64, 64) == []
  assert tokens_to_boxes("<loc9999>" * 4, 64, 64) == []


def test_fuzzed_text_never_raises():
  rng = random.Random(0)
  pieces = LOC_TOKENS[:3] + ["<loc", "1023>", "<loc1024>", " ", ";", "circle", "<loc00>", ">", "<"]
  for _ in range(500):
    text = "".join(rng.choice(pieces) for _ in range(rng.randrange(20)))
    boxes = tokens_to_boxes(text, 32, 48)
    assert len(boxes) <= text.count("<loc") // 4
    assert all(len(box) == 4 and all(math.isfinite(c) for c in box) for box in boxes)
