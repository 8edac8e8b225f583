"""Bar, line and pie charts with ChartQA-style questions: a stand-in for PaLI-3's chart data.

Charts are drawn with matplotlib (Agg canvas, no pyplot, no GUI) at the requested size, every value printed
on the chart (above bars, beside horizontal bars, above line points, inside pie wedges), so every answer can
be read off the image. Values are distinct, so "highest" and "lowest" are unambiguous.

Prompts and targets (numbers formatted as printed: "42", "7.5"; pie values are percentages, printed "23%"
and answered "23"; differences are absolute):

  "answer en what is the value of Brazil?"                -> "64"
  "answer en what is the value in 2012?"                  -> "7.5"    (line charts: the x labels are years)
  "answer en what is the difference between Tea and Coffee?" -> "12"
  "answer en what is the highest value?"                  -> "88"   (also "lowest")
  "answer en which country has the highest value?"        -> "Chile" (also "lowest"; the noun names the labels)

Splits: bar and pie labels, and the subject in a line chart's title, come from disjoint halves of their lists.

Speed: one figure per (size, pie or not) is kept per thread and only its data artists are replaced, which is
about 1.6x as fast as building a figure per chart (text drawing is most of the rest). Per thread, not one
per process behind a lock: tf.data renders on its own threads, and a lock deadlocked there (the thread
holding it ran Python's garbage collector, which destroyed an old tf.data iterator, whose destructor waited
for that iterator's workers, which were waiting for the lock).
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tasks import render

STREAM = 103  # this module's id in render.example_rng
KINDS: tuple[str, ...] = ("bar", "line", "pie")
# Height / width of each kind as usually laid out (example(native_aspect=True)): wide bar and line charts,
# pies with their legend nearly square.
NATIVE_ASPECTS: dict[str, tuple[float, float]] = {"bar": (0.5, 0.8), "line": (0.45, 0.7), "pie": (0.7, 1.0)}

# ----------------------------------------------------------------------------------------------------------------
# Content (render.partition holds out every fourth item of each list for "validation")
# ----------------------------------------------------------------------------------------------------------------

COUNTRIES = ("Brazil", "Chile", "Japan", "Kenya", "France", "Peru", "India", "Norway", "Spain", "Egypt", "Canada",
             "Vietnam", "Mexico", "Ghana", "Italy", "Poland", "Turkey", "Sweden", "Nigeria", "Greece", "Germany",
             "Morocco", "Ireland", "Nepal", "Austria", "Cuba", "Finland", "Jordan", "Portugal", "Uganda",
             "Denmark", "Bolivia", "Iceland", "Oman", "Belgium", "Kuwait", "Croatia", "Laos", "Hungary", "Malta")
FRUITS = ("Apples", "Bananas", "Cherries", "Dates", "Figs", "Grapes", "Kiwis", "Lemons", "Limes", "Mangoes",
          "Melons", "Olives", "Oranges", "Papayas", "Peaches", "Pears", "Plums", "Berries", "Guavas", "Lychees",
          "Apricots", "Coconuts", "Quinces", "Avocados")
SPORTS = ("Tennis", "Soccer", "Rugby", "Golf", "Hockey", "Cricket", "Cycling", "Rowing", "Boxing", "Judo",
          "Skiing", "Karate", "Fencing", "Archery", "Sailing", "Surfing", "Squash", "Netball", "Handball",
          "Diving", "Climbing", "Running", "Baseball", "Polo")
BRANDS = ("Alpha", "Bolt", "Crest", "Dyna", "Echo", "Flux", "Gala", "Halo", "Ion", "Jolt", "Kite", "Lux", "Mako",
          "Nova", "Orbit", "Pulse", "Quest", "Rift", "Sky", "Terra", "Umbra", "Vivo", "Wave", "Zen")

# Themes. Value ranges are [low, high) in units of 10**-decimals (low 5, high 100, decimals 1: 0.5 .. 9.9).
# bar: (title, noun of the labels, labels, (low, high), decimals)
_BAR_THEMES = (
    ("Fruit Harvest (tonnes)", "fruit", FRUITS, (5, 100), 0),
    ("Internet Users (%)", "country", COUNTRIES, (10, 100), 0),
    ("GDP Growth (%)", "country", COUNTRIES, (1, 100), 1),
    ("Club Members", "sport", SPORTS, (20, 500), 0),
    ("Revenue (million USD)", "company", BRANDS, (10, 1000), 1),
)
# line: (title with the {subject} country, (low, high), decimals); the labels are consecutive years.
_LINE_THEMES = (
    ("Unemployment in {subject} (%)", (20, 150), 1),
    ("Tourists in {subject} (millions)", (5, 400), 1),
    ("Rainfall in {subject} (mm)", (20, 300), 0),
    ("Car Sales in {subject} (thousands)", (50, 900), 0),
)
# pie: (title, noun of the labels, labels); values are whole percentages summing to 100.
_PIE_THEMES = (
    ("Market Share", "company", BRANDS),
    ("Favourite Fruit", "fruit", FRUITS),
    ("Favourite Sport", "sport", SPORTS),
)
_FIRST_YEAR = (1990, 2016)  # a line chart starts in one of these years (upper bound excluded)
_MIN_SHARE = 4  # the smallest pie percentage, so every wedge can hold its label


@dataclasses.dataclass(frozen=True)
class Chart:
  """A chart's data.

  Attributes:
    kind: one of KINDS.
    title: the title above the plot.
    noun: what a label is ("country", "year", ...), for "which ... has the highest value?".
    labels: the category (or year) names, in plotting order.
    values: the values in units of 10**-decimals, all distinct (pie: percentages summing to 100).
    decimals: digits after the point, 0 or 1.
    horizontal: bars run left to right (bar charts only).
  """
  kind: str
  title: str
  noun: str
  labels: tuple[str, ...]
  values: tuple[int, ...]
  decimals: int
  horizontal: bool = False

  def format(self, value: int) -> str:
    """A value (in units of 10**-decimals) as printed and answered: "42", "7.5"."""
    return f"{value / 10 ** self.decimals:.{self.decimals}f}"

  def printed(self, i: int) -> str:
    """The text printed for value i: the number, with "%" on pie charts."""
    return self.format(self.values[i]) + ("%" if self.kind == "pie" else "")

  def qa(self) -> dict[str, list[tuple[str, str]]]:
    """Every (question, answer) pair the chart answers, by question type (value, difference, extreme, which)."""
    of = "in" if self.kind == "line" else "of"
    hi, lo = int(np.argmax(self.values)), int(np.argmin(self.values))
    return {
        "value": [(f"what is the value {of} {label}?", self.format(v))
                  for label, v in zip(self.labels, self.values)],
        "difference": [(f"what is the difference between {a} and {b}?", self.format(abs(va - vb)))
                       for a, va in zip(self.labels, self.values) for b, vb in zip(self.labels, self.values)
                       if a != b],
        "extreme": [("what is the highest value?", self.format(self.values[hi])),
                    ("what is the lowest value?", self.format(self.values[lo]))],
        "which": [(f"which {self.noun} has the highest value?", self.labels[hi]),
                  (f"which {self.noun} has the lowest value?", self.labels[lo])],
    }


# ----------------------------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------------------------

_DPI = 100
_CHAR_EM = 0.62  # average advance of DejaVu Sans characters in em, for planning label room


def _font_px(h: int, w: int) -> float:
  """The body text size: 4.5% of the shorter side, at least 7 px."""
  return max(7.0, 0.045 * min(h, w))


def _distinct(rng: np.random.Generator, low: int, high: int, n: int) -> tuple[int, ...]:
  return tuple(int(v) for v in rng.choice(high - low, size=n, replace=False) + low)


def _pie_values(rng: np.random.Generator, n: int) -> tuple[int, ...]:
  """n distinct whole percentages, each >= _MIN_SHARE, summing to 100 (redrawn until they are)."""
  while True:
    cuts = np.sort(rng.choice(np.arange(1, 100), size=n - 1, replace=False))
    shares = np.diff(np.concatenate([[0], cuts, [100]]))
    if shares.min() >= _MIN_SHARE and len(set(shares.tolist())) == n:
      return tuple(int(s) for s in shares)


def sample_chart(rng: np.random.Generator, split: str, image_size: int | tuple[int, int],
                 kind: str | None = None) -> Chart:
  """Draws a chart whose number of labels suits the image size.

  Args:
    rng: the random stream; it is advanced.
    split: "train" or "validation" (which labels and subjects are used).
    image_size: the side, or (height, width), in pixels.
    kind: one of KINDS, or None for a uniform choice.

  Returns:
    The chart.
  """
  h, w = render.image_hw(image_size)
  fs = _font_px(h, w)
  kind = KINDS[rng.integers(len(KINDS))] if kind is None else kind
  if kind == "bar":
    title, noun, labels, (low, high), decimals = _BAR_THEMES[rng.integers(len(_BAR_THEMES))]
    labels = render.partition(labels, split)
    n = int(rng.integers(3, min(8, len(labels)) + 1))
    names = tuple(labels[i] for i in rng.choice(len(labels), size=n, replace=False))
    chart = Chart("bar", title, noun, names, _distinct(rng, low, high, n), decimals,
                  horizontal=bool(rng.random() < 0.3))
    # Vertical bars need room for the longest label under each bar; otherwise lay the bars down, and if even
    # their rows do not fit, keep fewer bars.
    slot = max(len(s) for s in names + tuple(chart.printed(i) for i in range(n))) * _CHAR_EM * fs + 0.5 * fs
    if not chart.horizontal and slot * n > 0.9 * w:
      chart = dataclasses.replace(chart, horizontal=True)
    keep = max(2, min(n, int(0.75 * h / (1.5 * fs)))) if chart.horizontal else n
    return dataclasses.replace(chart, labels=chart.labels[:keep], values=chart.values[:keep])
  if kind == "line":
    title, (low, high), decimals = _LINE_THEMES[rng.integers(len(_LINE_THEMES))]
    subjects = render.partition(COUNTRIES, split)
    subject = subjects[rng.integers(len(subjects))]
    room = max(2, int(0.85 * w / (5 * _CHAR_EM * fs + 0.5 * fs)))  # a year or a value is up to 5 characters
    n = int(rng.integers(min(4, room), min(10, room) + 1))
    start = int(rng.integers(*_FIRST_YEAR))
    years = tuple(str(start + i) for i in range(n))
    return Chart("line", title.format(subject=subject), "year", years, _distinct(rng, low, high, n), decimals)
  if kind == "pie":
    title, noun, labels = _PIE_THEMES[rng.integers(len(_PIE_THEMES))]
    labels = render.partition(labels, split)
    room = max(2, int(0.8 * h / (1.5 * fs)))  # legend rows
    n = int(rng.integers(min(3, room), min(6, room) + 1))
    names = tuple(labels[i] for i in rng.choice(len(labels), size=n, replace=False))
    return Chart("pie", title, noun, names, _pie_values(rng, n), 0)
  raise ValueError(f"unknown chart kind {kind!r}: use one of {', '.join(KINDS)}")


# ----------------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------------

_FIGURES = threading.local()  # .cache: {(h, w, kind): (figure, canvas, axes)} of the thread, oldest use first
_FIGURES_PER_THREAD = 16
_BAR_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
                "#4c72b0", "#55a868")
_PIE_COLOURS = ("#8dd3c7", "#ffffb3", "#bebada", "#fb8072", "#80b1d3", "#fdb462", "#b3de69", "#fccde5",
                "#d9d9d9", "#ccebc5")
_FAMILIES = ("DejaVu Sans", "DejaVu Serif")


def _figure(h: int, w: int, kind: str):
  """This thread's figure of h x w pixels with one axes, made once and reused: (figure, canvas, axes).

  Each thread keeps its _FIGURES_PER_THREAD most recently used figures.
  """
  cache = _FIGURES.__dict__.setdefault("cache", {})
  key = (h, w, kind)
  if key in cache:
    cache[key] = cache.pop(key)  # now the most recently used
    return cache[key]
  if len(cache) >= _FIGURES_PER_THREAD:
    del cache[next(iter(cache))]  # the least recently used
  fig = Figure(figsize=(w / _DPI, h / _DPI), dpi=_DPI)
  canvas = FigureCanvasAgg(fig)
  ax = fig.add_axes((0, 0, 1, 1))
  if kind == "pie":
    ax.set_axis_off()
  cache[key] = fig, canvas, ax
  return cache[key]


def _clear(ax) -> None:
  """Removes the previous chart's data artists; everything else is set afresh by every render."""
  for container in list(ax.containers):  # bars are held by a container too, which would otherwise pile up
    container.remove()
  for artist in list(ax.patches) + list(ax.lines) + list(ax.texts) + list(ax.collections):
    artist.remove()
  if ax.get_legend() is not None:
    ax.get_legend().remove()


def _plot_rows(h: int, fs: float, x_labels: bool) -> tuple[float, float]:
  """(bottom, height) of the plot area as fractions of the figure: the title takes the top, x labels (if
  any) the bottom, both in proportion to the font size so small figures keep room for their text."""
  top = 1 - 2.4 * fs / h
  bottom = (2.2 if x_labels else 0.5) * fs / h
  return bottom, top - bottom


def _draw_bars(ax, chart: Chart, fs_pt: float, family: str, colour: str, h: int, w: int, fs: float) -> None:
  """Bars (vertical, or horizontal with the first at the top), each with its value printed at its end."""
  n = len(chart.labels)
  values = np.array(chart.values) / 10 ** chart.decimals
  top = float(values.max())
  pos = np.arange(n)
  text = dict(fontsize=fs_pt, fontfamily=family)
  if chart.horizontal:
    label_w = max(len(s) for s in chart.labels) * _CHAR_EM * fs + 0.6 * fs
    left = min(0.5, label_w / w + 0.02)  # room for the labels, up to half the width
    bottom, height = _plot_rows(h, fs, False)
    ax.set_position((left, bottom, 0.96 - left, height))
    ax.barh(pos, values, color=colour, height=0.65)
    for i, v in enumerate(values):
      ax.text(v + 0.02 * top, i, chart.printed(i), va="center", ha="left", **text)
    ax.set_yticks(pos, chart.labels, **text)
    ax.set_xticks([])
    ax.set_xlim(0, top * 1.3)
    ax.set_ylim(n - 0.5, -0.5)  # first label at the top
  else:
    bottom, height = _plot_rows(h, fs, True)
    ax.set_position((0.03, bottom, 0.94, height))
    ax.bar(pos, values, color=colour, width=0.65)
    for i, v in enumerate(values):
      ax.text(i, v + 0.02 * top, chart.printed(i), va="bottom", ha="center", **text)
    ax.set_xticks(pos, chart.labels, **text)
    ax.set_yticks([])
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylim(0, top * 1.2)
  for side, visible in (("left", chart.horizontal), ("bottom", not chart.horizontal), ("top", False),
                        ("right", False)):
    ax.spines[side].set_visible(visible)


def _draw_line(ax, chart: Chart, fs_pt: float, family: str, colour: str, h: int, fs: float) -> None:
  """A line with a marker per year, each with its value printed above it."""
  n = len(chart.labels)
  values = np.array(chart.values) / 10 ** chart.decimals
  low, high = float(values.min()), float(values.max())
  span = high - low
  text = dict(fontsize=fs_pt, fontfamily=family)
  bottom, height = _plot_rows(h, fs, True)
  ax.set_position((0.04, bottom, 0.92, height))
  ax.plot(np.arange(n), values, color=colour, marker="o", markersize=fs_pt / 2.5, linewidth=fs_pt / 7)
  for i, v in enumerate(values):
    ax.text(i, v + 0.06 * span, chart.printed(i), va="bottom", ha="center", **text)
  ax.set_xticks(np.arange(n), chart.labels, **text)
  ax.set_yticks([])
  ax.set_xlim(-0.5, n - 0.5)
  ax.set_ylim(low - 0.1 * span, high + 0.3 * span)
  for side, visible in (("left", False), ("bottom", True), ("top", False), ("right", False)):
    ax.spines[side].set_visible(visible)


def _draw_pie(ax, chart: Chart, fs_pt: float, family: str, rotation: float, colours: list[str], h: int,
              fs: float) -> None:
  """Wedges clockwise from `rotation` degrees with their percentages inside, and a legend of the labels."""
  bottom, height = _plot_rows(h, fs, False)
  ax.set_position((0.02, bottom, 0.5, height))
  wedges, _ = ax.pie(chart.values, colors=colours, startangle=rotation, counterclock=False,
                     wedgeprops=dict(edgecolor="white", linewidth=1))
  for i, wedge in enumerate(wedges):
    middle = np.deg2rad((wedge.theta1 + wedge.theta2) / 2)
    ax.text(0.65 * np.cos(middle), 0.65 * np.sin(middle), chart.printed(i), ha="center", va="center",
            fontsize=fs_pt, fontfamily=family)
  ax.set_xlim(-1.05, 1.05)
  ax.set_ylim(-1.05, 1.05)
  ax.legend(wedges, chart.labels, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False,
            prop=dict(size=fs_pt, family=family), handlelength=1.0, handletextpad=0.4)


def render_chart(chart: Chart, image_size: int | tuple[int, int], rng: np.random.Generator) -> np.ndarray:
  """Draws a chart with matplotlib.

  Args:
    chart: the data.
    image_size: the side, or (height, width), in pixels.
    rng: the random stream for colours, font family and pie rotation; it is advanced.

  Returns:
    float32 [H, W, 3] in [-1, 1].
  """
  h, w = render.image_hw(image_size)
  fs = _font_px(h, w)
  fs_pt = fs * 72 / _DPI
  family = _FAMILIES[rng.integers(len(_FAMILIES))]
  colour = _BAR_COLOURS[rng.integers(len(_BAR_COLOURS))]
  background = tuple(0.93 + 0.07 * rng.random(3))
  rotation = float(rng.uniform(0, 360))
  offset = int(rng.integers(len(_PIE_COLOURS)))
  pie_colours = [_PIE_COLOURS[(offset + i) % len(_PIE_COLOURS)] for i in range(len(chart.labels))]
  # The title shrinks to fit the width (it sits above the plot, centred).
  title_pt = min(1.2 * fs_pt, 0.95 * w / (len(chart.title) * _CHAR_EM) * 72 / _DPI)

  fig, canvas, ax = _figure(h, w, "pie" if chart.kind == "pie" else "xy")
  _clear(ax)
  fig.patch.set_facecolor(background)
  ax.set_facecolor(background)
  if chart.kind == "bar":
    _draw_bars(ax, chart, fs_pt, family, colour, h, w, fs)
  elif chart.kind == "line":
    _draw_line(ax, chart, fs_pt, family, colour, h, fs)
  else:
    _draw_pie(ax, chart, fs_pt, family, rotation, pie_colours, h, fs)
  for old in list(fig.texts):
    old.remove()
  fig.text(0.5, 0.97, chart.title, ha="center", va="top", fontsize=title_pt, fontfamily=family,
           fontweight="bold")
  canvas.draw()
  pixels = np.asarray(canvas.buffer_rgba())[..., :3]
  return render.to_float(pixels)


# ----------------------------------------------------------------------------------------------------------------
# Examples
# ----------------------------------------------------------------------------------------------------------------


def example(seed: int, index: int, split: str = "train", image_size: int | tuple[int, int] = 224,
            kind: str | None = None, with_chart: bool = False, native_aspect: bool = False) -> dict:
  """Example `index` of the chart stream: a pure function of its arguments.

  Args:
    seed: the run's data seed.
    index: the example number (any non-negative int).
    split: "train" or "validation" (disjoint labels and subjects, disjoint random streams).
    image_size: the side, or (height, width), in pixels.
    kind: one of KINDS, or None to draw one.
    with_chart: also return the Chart under "chart" (for tests and inspection).
    native_aspect: shape the image as its kind is usually laid out (NATIVE_ASPECTS), with the pixel area of
      an image_size x image_size square (image_size an int); the same chart stream otherwise.

  Returns:
    {"image": float32 [H, W, 3] in [-1, 1], "inputs": "answer en <question>", "targets": the answer}.
  """
  content_rng, prompt_rng, aspect_rng = render.example_rng(seed, split, index, STREAM).spawn(3)
  if native_aspect:
    kind = KINDS[content_rng.integers(len(KINDS))] if kind is None else kind  # the draw sample_chart makes
    image_size = render.native_hw(image_size, NATIVE_ASPECTS[kind], aspect_rng)
  chart = sample_chart(content_rng, split, image_size, kind)
  image = render_chart(chart, image_size, content_rng)
  groups = list(chart.qa().values())  # a uniform question type, then a uniform question of that type
  pairs = groups[prompt_rng.integers(len(groups))]
  question, answer = pairs[prompt_rng.integers(len(pairs))]
  out = {"image": image, "inputs": f"answer en {question}", "targets": answer}
  if with_chart:
    out["chart"] = chart
  return out


def batch(seed: int, index: int, batch_size: int, image_size: int | tuple[int, int] = 224,
          split: str = "train") -> dict:
  """Batch `index`: examples index * batch_size .. (index + 1) * batch_size - 1, kinds drawn.

  Returns:
    {"image": float32 [B, H, W, 3], "inputs": B prompts, "targets": B answers}.
  """
  return render.batch_of(example, seed, index, batch_size, split=split, image_size=image_size)


__all__ = ["STREAM", "KINDS", "Chart", "sample_chart", "render_chart", "example", "batch"]
