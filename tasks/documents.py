"""Rendered documents for DocVQA-style questions and document OCR: a stand-in for PaLI-3's document data.

Three kinds, each a grid of text cells on paper-coloured ground in one DejaVu family (bold for titles,
headers and totals), fitted to the image:

  form     a title and "Label: value" fields (name, date, phone, invoice number, ...)
  table    a title, a header row and rows of numbers under named columns, with cell borders
  receipt  a shop name, a date, items with prices and a TOTAL that equals the sum of the prices

Prompts and targets (answers are exactly the rendered cell text):

  "answer en what is the phone number?"     -> "(415) 555-0142"
  "answer en what is the Q3 of Blender?"    -> "412"
  "answer en what is the total?"            -> "23.45"
  "answer en what is the price of Coffee?"  -> "3.50"
  "ocr"  -> every rendered text in reading order (title, then row by row, cells left to right), joined by
            single spaces: "Green Grocer Date 2021-03-04 Coffee 3.50 Bread 2.25 TOTAL 5.75"

Questions are unambiguous: field labels, row names and column names are unique within a document, and every
document has one total. Splits: names, cities, companies, shops, products and grocery items come from
disjoint halves of their lists (render.partition) and every document shows at least one of them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

from tasks import render

STREAM = 102  # this module's id in render.example_rng
KINDS: tuple[str, ...] = ("form", "table", "receipt")
# Height / width of each kind as printed (example(native_aspect=True)): portrait forms (A4 is 1.41), landscape
# tables, receipts as long strips.
NATIVE_ASPECTS: dict[str, tuple[float, float]] = {"form": (1.25, 1.5), "table": (0.5, 0.8), "receipt": (1.8, 3.2)}
_OCR_PROB = 0.2  # share of "ocr" prompts when the mode is drawn

# ----------------------------------------------------------------------------------------------------------------
# Content lists (render.partition holds out every fourth item of each for "validation")
# ----------------------------------------------------------------------------------------------------------------

FIRST_NAMES = tuple("""Maria James Aiko Omar Sofia Liam Priya Noah Elena Lucas Amara Mateo Hana Ivan Chloe Diego
    Fatima Oscar Mei Arjun Laura Tomas Nadia Felix Zara Hugo Leila Pablo Ingrid Kofi Alice Ravi Julia Emil
    Yusuf Clara Kenji Olga Samuel Rosa""".split())
LAST_NAMES = tuple("""Lopez Smith Tanaka Haddad Rossi Brown Sharma Miller Petrov Silva Okafor Garcia Kim Novak
    Dubois Reyes Khan Jensen Chen Patel Weber Costa Ali Becker Nowak Moreau Hansen Ortiz Fischer Mensah Clarke
    Iyer Walsh Lund Sato Romero Duarte Berg Young Kowalski""".split())
CITIES = ("Lisbon", "Osaka", "Denver", "Nairobi", "Oslo", "Lima", "Austin", "Porto", "Kyoto", "Dublin",
          "Quito", "Perth", "Boston", "Seville", "Hanoi", "Zurich", "Accra", "Leeds", "Tucson", "Malmo",
          "Dakar", "Bergen", "Cusco", "Turin", "Mumbai", "Halifax", "Krakow", "Leipzig", "Fresno", "Tampere",
          "Cairo", "Madison", "Geneva", "Salem", "Cork", "Rabat", "Nantes", "Ottawa", "Graz", "Toledo")
COMPANIES = ("Acme Corp", "Bluebird Inc", "Northwind Ltd", "Solara GmbH", "Pinecrest LLC", "Vertex Co",
             "Harbor & Sons", "Quartz Labs", "Meridian SA", "Redwood Group", "Atlas Trading", "Brightline Inc",
             "Cobalt Systems", "Delta Foods", "Evergreen Ltd", "Falcon Works", "Granite Bank", "Helix Media",
             "Ironbridge Co", "Juniper Farms", "Kestrel Air", "Lumen Energy", "Maple Textiles", "Nimbus Cloud")
SHOPS = ("Green Grocer", "Corner Market", "Daily Bread", "Fresh Mart", "Sunny Deli", "City Pharmacy",
         "Book Nook", "Blue Cafe", "Hill Bakery", "Metro Foods", "Oak Hardware", "Pet Palace", "Harbor Fish",
         "Lucky Store", "Golden Spoon", "Quick Stop", "Village Shop", "Star Diner", "River Books", "Candle Co")
GROCERIES = ("Coffee", "Bread", "Milk", "Eggs", "Butter", "Apples", "Rice", "Cheese", "Tea", "Pasta",
             "Bananas", "Yogurt", "Honey", "Tomatoes", "Onions", "Chicken", "Salmon", "Lettuce", "Oranges",
             "Cereal", "Juice", "Flour", "Sugar", "Beans", "Carrots", "Grapes", "Soap", "Tissues", "Olive Oil",
             "Peppers", "Lemons", "Cookies", "Water", "Jam", "Noodles", "Spinach", "Garlic", "Potatoes",
             "Muffins", "Salt")
PRODUCTS = ("Blender", "Toaster", "Kettle", "Lamp", "Heater", "Fan", "Mixer", "Router", "Monitor", "Printer",
            "Speaker", "Camera", "Drill", "Scanner", "Charger", "Headset", "Tablet", "Keyboard", "Mouse",
            "Webcam", "Projector", "Microwave", "Vacuum", "Radio", "Clock", "Iron", "Juicer", "Grill")

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclasses.dataclass(frozen=True)
class Document:
  """A document's content as a grid of text cells, and the questions it answers.

  Attributes:
    kind: one of KINDS.
    title: the line above the grid.
    rows: the grid, top to bottom; every row has one cell per entry of `align` ("" for an empty cell).
    align: per column, "left" or "right".
    header: the first row is a header (bold, ruled below).
    total: the last row is a total (bold, ruled above).
    borders: cell borders are drawn (tables).
    qa: (question, answer) pairs, each answer exactly the text of one cell.
  """
  kind: str
  title: str
  rows: tuple[tuple[str, ...], ...]
  align: tuple[str, ...]
  header: bool
  total: bool
  borders: bool
  qa: tuple[tuple[str, str], ...]

  def text(self) -> str:
    """Everything rendered, in reading order, separated by single spaces (the "ocr" target)."""
    return " ".join([self.title] + [cell for row in self.rows for cell in row if cell])


# ----------------------------------------------------------------------------------------------------------------
# Values
# ----------------------------------------------------------------------------------------------------------------


def _pick(rng: np.random.Generator, items: tuple[str, ...]) -> str:
  return items[rng.integers(len(items))]


def _name(rng: np.random.Generator, split: str) -> str:
  return f"{_pick(rng, render.partition(FIRST_NAMES, split))} {_pick(rng, render.partition(LAST_NAMES, split))}"


def _date(rng: np.random.Generator, _: str) -> str:
  """A date in one of three common formats: "2021-03-04", "04/03/2021", "Mar 4, 2021"."""
  year, month, day = int(rng.integers(2000, 2030)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
  style = rng.integers(3)
  if style == 0:
    return f"{year}-{month:02d}-{day:02d}"
  if style == 1:
    return f"{day:02d}/{month:02d}/{year}"
  return f"{_MONTHS[month - 1]} {day}, {year}"


def _digits(n: int) -> Callable[[np.random.Generator, str], str]:
  return lambda rng, _: "".join(str(d) for d in rng.integers(10, size=n))


def _amount(rng: np.random.Generator, _: str) -> str:
  return f"{int(10 ** rng.uniform(1, 4)):,}.{int(rng.integers(100)):02d}"


def _phone(rng: np.random.Generator, _: str) -> str:
  return f"({rng.integers(200, 1000)}) {rng.integers(200, 1000)}-{rng.integers(10000):04d}"


def _email(rng: np.random.Generator, split: str) -> str:
  return _name(rng, split).lower().replace(" ", ".") + "@example.com"


# Form fields: (label as rendered, how a question names it, value generator taking (rng, split)).
_FIELDS: tuple[tuple[str, str, Callable[[np.random.Generator, str], str]], ...] = (
    ("Name:", "name", _name),
    ("Company:", "company", lambda rng, split: _pick(rng, render.partition(COMPANIES, split))),
    ("City:", "city", lambda rng, split: _pick(rng, render.partition(CITIES, split))),
    ("Date:", "date", _date),
    ("Due Date:", "due date", _date),
    ("Phone:", "phone number", _phone),
    ("Email:", "email address", _email),
    ("Invoice No:", "invoice number", lambda rng, split: "INV-" + _digits(5)(rng, split)),
    ("Account No:", "account number", _digits(8)),
    ("Order ID:", "order id", lambda rng, _: "".join(chr(65 + c) for c in rng.integers(26, size=2))
     + _digits(6)(rng, _)),
    ("Zip Code:", "zip code", _digits(5)),
    ("Amount:", "amount", _amount),
    ("Reference:", "reference number", lambda rng, split: "REF-" + _digits(4)(rng, split)),
)
_FORM_TITLES = ("Invoice", "Registration Form", "Order Form", "Application", "Customer Details",
                "Shipping Label", "Booking Confirmation", "Membership Card")

# Table themes: (title, header of the name column, row names, value columns, value range, decimals).
_TABLE_THEMES = (
    ("Quarterly Sales", "Product", PRODUCTS, ("Q1", "Q2", "Q3", "Q4"), (10, 1000), 0),
    ("Exam Results", "Student", FIRST_NAMES, ("Math", "Science", "History", "English", "Art"), (40, 101), 0),
    ("Average Temperature", "City", CITIES, _MONTHS[:6], (-10, 36), 1),
    ("Population (thousands)", "City", CITIES, ("2019", "2020", "2021", "2022", "2023"), (100, 10000), 0),
)


def _fmt_cents(cents: int) -> str:
  return f"{cents // 100}.{cents % 100:02d}"


# ----------------------------------------------------------------------------------------------------------------
# Documents
# ----------------------------------------------------------------------------------------------------------------


def sample_form(rng: np.random.Generator, split: str, max_rows: int) -> Document:
  """A form of 2..max_rows fields (at least 2), always with a name or a company (split-specific values)."""
  n = int(rng.integers(2, max(2, max_rows) + 1))
  anchor = int(rng.integers(2))  # "Name:" or "Company:", the split-specific anchor
  others = list(range(2, len(_FIELDS)))
  chosen = [anchor] + [others[i] for i in rng.permutation(len(others))[:n - 1]]
  chosen = [chosen[i] for i in rng.permutation(len(chosen))]
  rows, qa = [], []
  for i in chosen:
    label, noun, value = _FIELDS[i]
    text = value(rng, split)
    rows.append((label, text))
    qa.append((f"what is the {noun}?", text))
  return Document("form", _pick(rng, _FORM_TITLES), tuple(rows), ("left", "left"), header=False, total=False,
                  borders=False, qa=tuple(qa))


def sample_table(rng: np.random.Generator, split: str, max_rows: int, max_cols: int) -> Document:
  """A table of 1..max_rows named rows and 1..max_cols value columns under a header (the column count is
  also capped by the theme)."""
  title, name_header, names, columns, (low, high), decimals = _TABLE_THEMES[rng.integers(len(_TABLE_THEMES))]
  names = render.partition(names, split)
  n_rows = int(rng.integers(1, min(max(1, max_rows), len(names)) + 1))
  n_cols = int(rng.integers(1, min(max(1, max_cols), len(columns)) + 1))
  start = int(rng.integers(len(columns) - n_cols + 1))  # consecutive columns: Q2..Q3, Feb..May
  cols = columns[start:start + n_cols]
  scale = 10 ** decimals
  rows, qa = [(name_header,) + cols], []
  for i in rng.permutation(len(names))[:n_rows]:
    values = rng.integers(low * scale, high * scale, size=n_cols)
    cells = tuple(f"{v / scale:.{decimals}f}" for v in values)
    rows.append((names[i],) + cells)
    qa += [(f"what is the {col} of {names[i]}?", cell) for col, cell in zip(cols, cells)]
  return Document("table", title, tuple(rows), ("left",) + ("right",) * n_cols, header=True, total=False,
                  borders=True, qa=tuple(qa))


def sample_receipt(rng: np.random.Generator, split: str, max_rows: int) -> Document:
  """A receipt: shop, date, 1..max_rows-2 distinct items with prices, and their exact total."""
  items = render.partition(GROCERIES, split)
  n = int(rng.integers(1, min(max(1, max_rows - 2), len(items)) + 1))
  cents = [int(10 ** rng.uniform(math.log10(50), math.log10(3000))) for _ in range(n)]  # 0.50 .. 30.00
  names = [items[i] for i in rng.permutation(len(items))[:n]]
  date = _date(rng, split)
  total = _fmt_cents(sum(cents))
  rows = [("Date", date)] + [(name, _fmt_cents(c)) for name, c in zip(names, cents)] + [("TOTAL", total)]
  qa = [("what is the total?", total), ("what is the date?", date)]
  qa += [(f"what is the price of {name}?", _fmt_cents(c)) for name, c in zip(names, cents)]
  return Document("receipt", _pick(rng, render.partition(SHOPS, split)), tuple(rows), ("left", "right"),
                  header=False, total=True, borders=False, qa=tuple(qa))


# ----------------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------------

_FAMILIES = (("sans", "sans-bold"), ("serif", "serif-bold"), ("mono", "mono-bold"))
_MIN_FONT_PX = 9  # the smallest planned text
_MAX_FONT_FRACTION = 0.06  # the largest body text as a fraction of the shorter side (at least _MIN_FONT_PX)
_LINE = 1.6  # row pitch in em
_TITLE_SCALE = 1.3  # title size relative to the body
_GAP = 1.2  # space between columns in em (without borders)
_PAD = 0.4  # space between text and a cell border in em
_MARGIN = 0.05  # paper border as a fraction of the image side


def _is_bold(doc: Document, row: int) -> bool:
  """Whether a row is set in bold: a header or a total."""
  return (doc.header and row == 0) or (doc.total and row == len(doc.rows) - 1)


def _column_widths(doc: Document, regular, bold) -> list[float]:
  """Per column, the widest cell's advance in pixels at the fonts' size."""
  return [max((bold if _is_bold(doc, r) else regular).getlength(row[c]) for r, row in enumerate(doc.rows))
          for c in range(len(doc.align))]


def _extent(doc: Document, family: tuple[str, str], size_px: int) -> tuple[list[float], float, float, float]:
  """(column widths, column gap, width, height) of the rendered document in pixels at a body font size."""
  regular, bold = render.font(family[0], size_px), render.font(family[1], size_px)
  title = render.font(family[1], round(_TITLE_SCALE * size_px))
  widths = _column_widths(doc, regular, bold)
  gap = 2 * _PAD * size_px if doc.borders else _GAP * size_px
  grid_w = sum(widths) + gap * (len(widths) - (0 if doc.borders else 1))
  width = max(grid_w, title.getlength(doc.title))
  height = (_TITLE_SCALE + 0.6) * size_px + _LINE * size_px * len(doc.rows)
  return widths, gap, width, height


def render_document(doc: Document, image_size: int | tuple[int, int], rng: np.random.Generator) -> np.ndarray:
  """Renders a document on paper-coloured ground, as large as fits (up to a cap), at a random offset.

  Args:
    doc: the content.
    image_size: the side, or (height, width), in pixels.
    rng: the random stream for paper, ink, font and position; it is advanced.

  Returns:
    float32 [H, W, 3] in [-1, 1].
  """
  h, w = render.image_hw(image_size)
  paper = 0.86 + 0.14 * rng.random(3)
  ink = tuple(int(v) for v in rng.integers(0, 70, size=3))
  family = _FAMILIES[rng.integers(len(_FAMILIES))]
  margin = max(1, round(_MARGIN * min(h, w)))
  box_w, box_h = w - 2 * margin, h - 2 * margin

  ref = 100
  _, _, ref_w, ref_h = _extent(doc, family, ref)
  fit = max(1, int(ref * min(box_w / ref_w, box_h / ref_h)))
  cap = max(_MIN_FONT_PX, int(_MAX_FONT_FRACTION * min(h, w)))
  # Up to 20% smaller than the largest that fits, but not below _MIN_FONT_PX unless even that does not fit.
  size_px = max(min(fit, _MIN_FONT_PX), int(min(fit, cap) * rng.uniform(0.8, 1.0)))
  widths, gap, width, height = _extent(doc, family, size_px)
  while (width > box_w or height > box_h) and size_px > 1:  # the 100 px measurement was a bit off
    size_px = max(1, int(size_px * 0.9))
    widths, gap, width, height = _extent(doc, family, size_px)
  x0 = margin + int(rng.integers(max(int(box_w - width), 0) + 1))
  y0 = margin + int(rng.integers(max(int(box_h - height), 0) + 1))

  # Paper with faint grain, drawn in float32 as it is the bulk of the work at 812 px.
  grain = rng.random((h, w, 1), dtype=np.float32) * np.float32(0.04) - np.float32(0.02)
  paper_px = np.clip(paper.astype(np.float32) + grain, 0, 1) * np.float32(255)
  canvas = Image.fromarray(np.round(paper_px).astype(np.uint8))
  draw = ImageDraw.Draw(canvas)
  regular, bold = render.font(family[0], size_px), render.font(family[1], size_px)
  title_font = render.font(family[1], round(_TITLE_SCALE * size_px))
  line_w = max(1, size_px // 12)

  title_x = x0 + (width - title_font.getlength(doc.title)) / 2 if doc.kind == "receipt" else x0
  draw.text((title_x, y0), doc.title, fill=ink, font=title_font)
  top = y0 + (_TITLE_SCALE + 0.6) * size_px  # the grid's top edge
  pitch = _LINE * size_px
  lead = (pitch - sum(regular.getmetrics())) / 2  # centres the text vertically in its row
  edges = [x0] + list(np.cumsum([wd + gap for wd in widths]) + x0)  # column boundaries (with borders)
  grid_right = edges[-1] if doc.borders else x0 + sum(widths) + gap * (len(widths) - 1)
  for r, row in enumerate(doc.rows):
    f = bold if _is_bold(doc, r) else regular
    y = top + r * pitch
    for c, cell in enumerate(row):
      left = edges[c] + (gap / 2 if doc.borders else 0)
      x = left if doc.align[c] == "left" else left + widths[c] - f.getlength(cell)
      draw.text((x, y + lead), cell, fill=ink, font=f)
    if doc.total and r == len(doc.rows) - 1:  # a rule above the total
      draw.line([(x0, y), (grid_right, y)], fill=ink, width=line_w)
  if doc.borders:
    bottom = top + pitch * len(doc.rows)
    for r in range(len(doc.rows) + 1):
      y = top + r * pitch
      draw.line([(x0, y), (grid_right, y)], fill=ink, width=2 * line_w if doc.header and r == 1 else line_w)
    for x in edges:
      draw.line([(x, top), (x, bottom)], fill=ink, width=line_w)
  return render.to_float(canvas)


# ----------------------------------------------------------------------------------------------------------------
# Examples
# ----------------------------------------------------------------------------------------------------------------


def sample_document(rng: np.random.Generator, split: str, image_size: int | tuple[int, int],
                    kind: str | None = None) -> Document:
  """A document whose amount of text suits the image: as many rows and columns as fit at _MIN_FONT_PX.

  Args:
    rng: the random stream; it is advanced.
    split: "train" or "validation".
    image_size: the side, or (height, width), in pixels.
    kind: one of KINDS, or None for a uniform choice.

  Returns:
    The document.
  """
  h, w = render.image_hw(image_size)
  kind = KINDS[rng.integers(len(KINDS))] if kind is None else kind
  usable_h, usable_w = h * (1 - 2 * _MARGIN), w * (1 - 2 * _MARGIN)
  max_rows = min(12, int(usable_h / (_LINE * _MIN_FONT_PX)) - 2)  # the title takes about two rows
  max_chars = int(usable_w / (0.6 * _MIN_FONT_PX))
  if kind == "form":
    return sample_form(rng, split, max_rows)
  if kind == "table":
    return sample_table(rng, split, max_rows - 1, (max_chars - 12) // 7)  # a name column, then ~6-char cells
  if kind == "receipt":
    return sample_receipt(rng, split, max_rows)
  raise ValueError(f"unknown document kind {kind!r}: use one of {', '.join(KINDS)}")


def example(seed: int, index: int, split: str = "train", image_size: int | tuple[int, int] = 224,
            kind: str | None = None, mode: str | None = None, with_document: bool = False,
            native_aspect: bool = False, plan_size: int | tuple[int, int] | None = None) -> dict:
  """Example `index` of the document stream: a pure function of its arguments.

  The document and its rendering come from one random stream and the prompt from another, so the same
  (seed, split, index, image_size, kind) shows the same document whatever the mode.

  Args:
    seed: the run's data seed.
    index: the example number (any non-negative int).
    split: "train" or "validation" (disjoint names and items, disjoint random streams).
    image_size: the side, or (height, width), in pixels.
    kind: one of KINDS, or None to draw one.
    mode: "qa" (a question about one value), "ocr" (all the text), or None to draw ("ocr" with _OCR_PROB).
    with_document: also return the Document under "document" (for tests and inspection).
    native_aspect: shape the image as its kind is printed (NATIVE_ASPECTS), with the pixel area of an
      image_size x image_size square (image_size an int); the same document stream otherwise.
    plan_size: the image size the amount of text is planned for (default: the image's own). With it fixed, one
      (seed, index, split, kind) shows the same document at every image_size, drawn as large as fits: a
      comparison of resolutions then reads the same documents.

  Returns:
    {"image": float32 [H, W, 3] in [-1, 1], "inputs": the prompt, "targets": the answer or the text}.
  """
  if mode not in (None, "qa", "ocr"):
    raise ValueError(f"unknown mode {mode!r}: use 'qa', 'ocr' or None")
  content_rng, prompt_rng, aspect_rng = render.example_rng(seed, split, index, STREAM).spawn(3)
  if native_aspect:
    kind = KINDS[content_rng.integers(len(KINDS))] if kind is None else kind  # the draw sample_document makes
    image_size = render.native_hw(image_size, NATIVE_ASPECTS[kind], aspect_rng)
  doc = sample_document(content_rng, split, image_size if plan_size is None else plan_size, kind)
  image = render_document(doc, image_size, content_rng)
  mode = mode or ("ocr" if prompt_rng.random() < _OCR_PROB else "qa")
  if mode == "ocr":
    inputs, targets = "ocr", doc.text()
  else:
    question, targets = doc.qa[prompt_rng.integers(len(doc.qa))]
    inputs = f"answer en {question}"
  out = {"image": image, "inputs": inputs, "targets": targets}
  if with_document:
    out["document"] = doc
  return out


def batch(seed: int, index: int, batch_size: int, image_size: int | tuple[int, int] = 224,
          split: str = "train") -> dict:
  """Batch `index`: examples index * batch_size .. (index + 1) * batch_size - 1, kinds and modes drawn.

  Returns:
    {"image": float32 [B, H, W, 3], "inputs": B prompts, "targets": B answers}.
  """
  return render.batch_of(example, seed, index, batch_size, split=split, image_size=image_size)


__all__ = ["STREAM", "KINDS", "Document", "sample_form", "sample_table", "sample_receipt", "sample_document",
           "render_document", "example", "batch"]
