"""Rendered text for OCR: a stand-in for PaLI-3's OCR-on-WebLI data.

Each image shows 1..8 lines of words (from WORDS, in lower, Title or UPPER case) and numbers ("42", "3.75"),
in one of the twelve DejaVu fonts, one colour, slightly rotated, on a flat, gradient or noisy background whose
brightness is far from the text's. The font is scaled to the image: the text block always lies inside it and
the planned amount of text shrinks with the image, so small images show a word or two, large ones paragraphs
(`plan_size` plans it for another size instead: the same text at every resolution).

  inputs:  "ocr"
  targets: the lines top to bottom, words separated by one space, lines by `line_separator` (default " "):
           "Market 42 river\nOPEN daily 3.75" with line_separator="\n", "Market 42 river OPEN daily 3.75" by default

Splits: a quarter of WORDS (`words("validation")`) never appears in "train" and the rest never in
"validation"; every text starts with a word, so no target of one split is a target of the other. `words_split`
draws a split's texts from another split's words instead: a validation text of training words is a new text in
a new image that a reader can get right, where held-out words may be out of reach (in the shipped sentencepiece
vocabulary every word of WORDS is one piece, so a held-out word is a piece the model never wrote from an image).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image, ImageDraw

from tasks import render

STREAM = 101  # this module's id in render.example_rng

# Common English words, 2..11 letters. The order matters: render.partition holds out every fourth.
WORDS: tuple[str, ...] = tuple("""
    the of and to in is it you that he was for on are with as his they be at one have this from or had by
    word but what some we can out other were all there when up use your how said an each she which do their
    time if will way about many then them write would like so these her long make thing see him two has look
    more day could go come did number sound no most people my over know water than call first who may down
    side been now find any new work part take get place made live where after back little only round man year
    came show every good me give our under name very through just form sentence great think say help low line
    differ turn cause much mean before move right boy old too same tell does set three want air well also play
    small end put home read hand port large spell add even land here must big high such follow act why ask men
    change went light kind off need house picture try us again animal point mother world near build self earth
    father head stand own page should country found answer school grow study still learn plant cover food sun
    four between state keep eye never last let thought city tree cross farm hard start might story saw far sea
    draw left late run while press close night real life few north open seem together next white children begin
    got walk example ease paper group always music those both mark often letter until mile river car feet care
    second book carry took science eat room friend began idea fish mountain stop once base hear horse cut sure
    watch colour face wood main enough plain girl usual young ready above ever red list though feel talk bird
    soon body dog family direct pose leave song measure door product black short numeral class wind question
    happen complete ship area half rock order fire south problem piece told knew pass since top whole king
    space heard best hour better true during hundred five remember step early hold west ground interest reach
    fast verb sing listen six table travel less morning ten simple several vowel toward war lay against pattern
    slow centre love person money serve appear road map rain rule govern pull cold notice voice unit power town
    fine certain fly fall lead cry dark machine note wait plan figure star box noun field rest correct able
    pound done beauty drive stood contain front teach week final gave green quick develop ocean warm free
    minute strong special mind behind clear tail produce fact street inch multiply nothing course stay wheel
    full force blue object decide surface deep moon island foot system busy test record boat common gold
    possible plane dry wonder laugh thousand ago ran check game shape equate hot miss brought heat snow tire
    bring yes distant fill east paint language among market garden coffee window bridge station winter summer
    """.split())

# Every text starts with a word and then mixes words and numbers.
_NUMBER_PROB = 0.25
_CASES = (str.lower, str.title, str.upper)
_CASE_PROBS = (0.5, 0.3, 0.2)

_MAX_LINES = 8
_MAX_WORDS_PER_LINE = 6
_MIN_FONT_PX = 10  # the smallest planned text: cap height ~7 px, still legible to the eye at 224 px
_MAX_FONT_FRACTION = 0.3  # and the largest: a short word at most this fraction of the image height
_CHAR_EM = 0.7  # a generous average advance (in em) for planning how many characters fit on a line
_LINE_SPACING = 1.25  # baseline-to-baseline distance in em
_MARGIN = 0.05  # blank border kept around the text, as a fraction of the image side
_MAX_ANGLE = 6.0  # rotation in degrees, either way
_FONTS = tuple(render.FONT_FILES)
_BACKGROUNDS = ("flat", "gradient", "noise")


def words(split: str) -> tuple[str, ...]:
  """The words a split's texts are made of (disjoint between "train" and "validation")."""
  return render.partition(WORDS, split)


# ----------------------------------------------------------------------------------------------------------------
# Text
# ----------------------------------------------------------------------------------------------------------------


def _number(rng: np.random.Generator) -> str:
  """An integer of 1..4 digits or a price-like decimal ("3.75")."""
  if rng.random() < 0.6:
    return str(int(10 ** rng.uniform(0, 4)))
  return f"{rng.uniform(0, 100):.2f}"


def _word(rng: np.random.Generator, vocab: tuple[str, ...], max_len: int) -> str:
  """A word of at most max_len letters (the shortest words if none is that short), in a random case."""
  fitting = [w for w in vocab if len(w) <= max_len]
  if not fitting:
    shortest = min(len(w) for w in vocab)
    fitting = [w for w in vocab if len(w) == shortest]
  case = _CASES[rng.choice(len(_CASES), p=_CASE_PROBS)]
  return case(fitting[rng.integers(len(fitting))])


def sample_lines(rng: np.random.Generator, split: str, max_lines: int, max_chars: int) -> list[str]:
  """Draws the text: 1..max_lines lines of 1.._MAX_WORDS_PER_LINE tokens, each line at most max_chars long.

  Args:
    rng: the random stream; it is advanced.
    split: "train" or "validation" (which words are used).
    max_lines: the most lines (>= 1).
    max_chars: the planned line length in characters (a single word may exceed it if none is short enough).

  Returns:
    The lines; the first token of the first line is a word.
  """
  vocab = words(split)
  lines = []
  for i in range(int(rng.integers(1, max_lines + 1))):
    tokens: list[str] = []
    used = -1  # characters so far, counting one space before each token
    for j in range(int(rng.integers(1, _MAX_WORDS_PER_LINE + 1))):
      room = max_chars - used - 1
      first = i == 0 and j == 0
      token = _number(rng) if not first and rng.random() < _NUMBER_PROB else _word(rng, vocab, room)
      if tokens and len(token) > room:
        break
      tokens.append(token)
      used += len(token) + 1
    lines.append(" ".join(tokens))
  return lines


# ----------------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------------


def _tone_colour(rng: np.random.Generator, light: bool) -> np.ndarray:
  """An RGB colour in [0, 1]: every channel >= 0.72 if light, <= 0.3 if dark, so text and ground contrast."""
  u = rng.random(3)
  return 0.72 + 0.28 * u if light else 0.3 * u


def _background(rng: np.random.Generator, h: int, w: int, light: bool) -> np.ndarray:
  """A flat, gradient or noisy background of one tone, float32 [H, W, 3] in [0, 1].

  Noise stays within +-0.12 of the base colour, which keeps every pixel at least ~0.3 away from the text.
  """
  kind = _BACKGROUNDS[rng.integers(len(_BACKGROUNDS))]
  base = _tone_colour(rng, light).astype(np.float32)
  if kind == "flat":
    return np.broadcast_to(base, (h, w, 3)).copy()
  if kind == "gradient":
    other = _tone_colour(rng, light).astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (np.arange(w, dtype=np.float32)[None, :] / w * math.cos(angle)
            + np.arange(h, dtype=np.float32)[:, None] / h * math.sin(angle))  # [H, W]
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    return base + ramp[..., None] * (other - base)
  # Smooth blotches (a coarse random grid upsampled) plus fine grain, one grey field for all channels.
  grid = rng.uniform(-0.09, 0.09, size=(int(rng.integers(3, 9)), int(rng.integers(3, 9)))).astype(np.float32)
  blotches = np.asarray(Image.fromarray(grid).resize((w, h), Image.Resampling.BILINEAR))
  grain = rng.random((h, w), dtype=np.float32) * np.float32(0.06) - np.float32(0.03)
  return np.clip(base + (blotches + grain)[..., None], 0, 1)


def _text_mask(lines: list[str], font_name: str, size_px: int, align: str, angle: float) -> Image.Image:
  """The text's ink as an "L" mask cropped to its extent, after rotating it by `angle` degrees."""
  f = render.font(font_name, size_px)
  ascent, descent = f.getmetrics()
  step = round(_LINE_SPACING * size_px)
  widths = [f.getlength(line) for line in lines]
  pad = size_px  # room for italic overhang and accents
  block_w = math.ceil(max(widths)) + 2 * pad
  mask = Image.new("L", (block_w, step * (len(lines) - 1) + ascent + descent + 2 * pad), 0)
  draw = ImageDraw.Draw(mask)
  for i, (line, width) in enumerate(zip(lines, widths)):
    slack = max(widths) - width
    x = pad + {"left": 0, "centre": slack / 2, "right": slack}[align]
    draw.text((x, pad + i * step), line, fill=255, font=f)
  if angle:
    mask = mask.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
  return mask.crop(mask.getbbox())


def _fit_font_px(lines: list[str], font_name: str, angle: float, box_w: float, box_h: float) -> int:
  """The largest font size (px) at which the rotated text block fits a box, from a measurement at 100 px."""
  ref = 100
  f = render.font(font_name, ref)
  ascent, descent = f.getmetrics()
  w = max(f.getlength(line) for line in lines)
  h = _LINE_SPACING * ref * (len(lines) - 1) + ascent + descent
  c, s = abs(math.cos(math.radians(angle))), abs(math.sin(math.radians(angle)))
  return max(1, int(ref * min(box_w / (w * c + h * s), box_h / (w * s + h * c))))


@dataclasses.dataclass(frozen=True)
class TextLayout:
  """Where and how the text is drawn.

  Attributes:
    font: a key of render.FONT_FILES.
    size_px: the font size in pixels.
    angle: the rotation in degrees, counter-clockwise.
    mask: the rotated text's ink, an "L" image cropped to the ink.
    x, y: the mask's top-left corner in the image; the mask lies inside the image, off a _MARGIN border.
  """
  font: str
  size_px: int
  angle: float
  mask: Image.Image
  x: int
  y: int


def layout_text(lines: list[str], image_size: int | tuple[int, int], rng: np.random.Generator) -> TextLayout:
  """Chooses font, size (log-uniform between _MIN_FONT_PX and the largest that fits), alignment, rotation and
  position, so that the text lies inside the image.

  Args:
    lines: the text, top to bottom.
    image_size: the side, or (height, width), in pixels.
    rng: the random stream; it is advanced.

  Returns:
    The layout.
  """
  h, w = render.image_hw(image_size)
  font_name = _FONTS[rng.integers(len(_FONTS))]
  align = ("left", "centre", "right")[rng.integers(3)]
  angle = float(rng.uniform(-_MAX_ANGLE, _MAX_ANGLE)) if rng.random() < 0.7 else 0.0
  margin = max(1, round(_MARGIN * min(h, w)))
  box_w, box_h = w - 2 * margin, h - 2 * margin
  fit = min(_fit_font_px(lines, font_name, angle, box_w, box_h), max(1, int(_MAX_FONT_FRACTION * h)))
  low = min(_MIN_FONT_PX, fit)
  size_px = int(round(math.exp(rng.uniform(math.log(low), math.log(fit)))))  # log-uniform: small text is common
  mask = _text_mask(lines, font_name, size_px, align, angle)
  while (mask.width > box_w or mask.height > box_h) and size_px > 1:  # the 100 px measurement was a bit off
    size_px = max(1, int(size_px * 0.9))
    mask = _text_mask(lines, font_name, size_px, align, angle)
  x = margin + int(rng.integers(max(box_w - mask.width, 0) + 1))
  y = margin + int(rng.integers(max(box_h - mask.height, 0) + 1))
  return TextLayout(font_name, size_px, angle, mask, x, y)


def render_text(lines: list[str], image_size: int | tuple[int, int], rng: np.random.Generator) -> np.ndarray:
  """Renders lines of text onto a random background, fitted inside the image.

  Args:
    lines: the text, top to bottom.
    image_size: the side, or (height, width), in pixels.
    rng: the random stream for background, colour and layout; it is advanced.

  Returns:
    float32 [H, W, 3] in [-1, 1].
  """
  h, w = render.image_hw(image_size)
  light = bool(rng.random() < 0.65)
  background = _background(rng, h, w, light)
  colour = tuple(int(round(255 * c)) for c in _tone_colour(rng, not light))
  layout = layout_text(lines, (h, w), rng)
  canvas = Image.fromarray(np.round(background * 255).astype(np.uint8))
  box = (layout.x, layout.y, layout.x + layout.mask.width, layout.y + layout.mask.height)
  canvas.paste(colour, box, layout.mask)
  return render.to_float(canvas)


# ----------------------------------------------------------------------------------------------------------------
# Examples
# ----------------------------------------------------------------------------------------------------------------


def example(seed: int, index: int, split: str = "train", image_size: int | tuple[int, int] = 224,
            line_separator: str = " ", plan_size: int | tuple[int, int] | None = None,
            words_split: str | None = None) -> dict:
  """Example `index` of the OCR stream: a pure function of its arguments.

  Args:
    seed: the run's data seed.
    index: the example number (any non-negative int).
    split: "train" or "validation" (disjoint words, disjoint random streams).
    image_size: the side, or (height, width), in pixels.
    line_separator: what joins the lines in the target.
    plan_size: the image size the amount of text is planned for (default: image_size). With it fixed, one
      (seed, index, split) shows the same text at every image_size, scaled to fit: a comparison of
      resolutions then reads the same texts.
    words_split: the split whose words the text is made of (default: `split`); the random stream stays
      `split`'s.

  Returns:
    {"image": float32 [H, W, 3] in [-1, 1], "inputs": "ocr", "targets": the text as rendered}.
  """
  h, w = render.image_hw(image_size)
  rng = render.example_rng(seed, split, index, STREAM)
  # Plan the amount of text so that it fits at _MIN_FONT_PX at least (in an image of plan_size).
  plan_h, plan_w = render.image_hw(image_size if plan_size is None else plan_size)
  usable_h, usable_w = plan_h * (1 - 2 * _MARGIN), plan_w * (1 - 2 * _MARGIN)
  max_lines = max(1, min(_MAX_LINES, int(usable_h / (_LINE_SPACING * _MIN_FONT_PX))))
  max_chars = max(3, int(usable_w / (_CHAR_EM * _MIN_FONT_PX)))
  lines = sample_lines(rng, words_split or split, max_lines, max_chars)
  return {"image": render_text(lines, (h, w), rng), "inputs": "ocr", "targets": line_separator.join(lines)}


def batch(seed: int, index: int, batch_size: int, image_size: int | tuple[int, int] = 224,
          split: str = "train") -> dict:
  """Batch `index`: examples index * batch_size .. (index + 1) * batch_size - 1.

  Returns:
    {"image": float32 [B, H, W, 3], "inputs": B prompts, "targets": B texts}.
  """
  return render.batch_of(example, seed, index, batch_size, split=split, image_size=image_size)


__all__ = ["STREAM", "WORDS", "TextLayout", "words", "sample_lines", "layout_text", "render_text", "example",
           "batch"]
