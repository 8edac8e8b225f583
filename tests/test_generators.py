"""The rendered-text generators (tasks.ocr, tasks.documents, tasks.charts, tasks.multilingual) and their shared
plumbing (tasks.render): determinism, split disjointness, image format, answers that match the rendered
content, captions in each language's own script."""

import concurrent.futures
import dataclasses
import re
import time
import unicodedata

import numpy as np
import pytest

from tasks import charts, documents, multilingual, ocr, render, scenes
from tasks.scenes import SceneObject

GENERATORS = {"ocr": ocr, "documents": documents, "charts": charts, "multilingual": multilingual}
each_generator = pytest.mark.parametrize("module", list(GENERATORS.values()), ids=list(GENERATORS))
NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def held_out_and_train(lists):
  """(validation-only items, train-only items) over several content lists."""
  return ({x for items in lists for x in render.partition(items, "validation")},
          {x for items in lists for x in render.partition(items, "train")})


def mentions(text, items):
  """The items that occur in text as whole words."""
  return {x for x in items if re.search(rf"\b{re.escape(x)}\b", text)}


# ----------------------------------------------------------------------------------------------------------------
# The common contract
# ----------------------------------------------------------------------------------------------------------------


@each_generator
@pytest.mark.parametrize("image_size", [64, 224, (96, 160)], ids=["64", "224", "96x160"])
def test_example_format(module, image_size):
  ex = module.example(0, 5, "train", image_size)
  h, w = render.image_hw(image_size)
  assert ex["image"].shape == (h, w, 3) and ex["image"].dtype == np.float32
  assert -1 <= ex["image"].min() and ex["image"].max() <= 1
  assert ex["image"].std() > 0.02  # something is drawn
  assert isinstance(ex["inputs"], str) and ex["inputs"]
  assert isinstance(ex["targets"], str) and ex["targets"].strip()


@each_generator
@pytest.mark.parametrize("split", ["train", "validation"])
def test_examples_are_deterministic(module, split):
  first = module.example(7, 11, split, 96)
  module.example(7, 12, split, 96)  # rendering others in between must not matter (charts reuse figures)
  module.example(8, 11, split, (80, 120))
  again = module.example(7, 11, split, 96)
  np.testing.assert_array_equal(first["image"], again["image"])
  assert (first["inputs"], first["targets"]) == (again["inputs"], again["targets"])


@each_generator
def test_index_seed_and_split_each_change_the_example(module):
  base = module.example(0, 0, "train", 64)["image"]
  for other in (module.example(0, 1, "train", 64), module.example(1, 0, "train", 64),
                module.example(0, 0, "validation", 64)):
    assert not np.array_equal(base, other["image"])


@each_generator
def test_batch_stacks_consecutive_examples(module):
  batch = module.batch(3, 2, 3, 64, "validation")
  assert batch["image"].shape == (3, 64, 64, 3) and batch["image"].dtype == np.float32
  for i in range(3):
    ex = module.example(3, 6 + i, "validation", 64)
    np.testing.assert_array_equal(batch["image"][i], ex["image"])
    assert (batch["inputs"][i], batch["targets"][i]) == (ex["inputs"], ex["targets"])


@each_generator
def test_unknown_split_is_rejected(module):
  with pytest.raises(ValueError, match="split"):
    module.example(0, 0, "test", 64)


@pytest.mark.parametrize("module, limit", [(ocr, 2.0), (documents, 2.0), (multilingual, 2.0), (charts, 6.0)],
                         ids=["ocr", "documents", "multilingual", "charts"])
def test_batch_of_32_at_224_is_fast(module, limit):
  # Measured on one idle core: ~0.15 s (ocr, documents), ~0.05 s (multilingual), ~0.6 s (charts, matplotlib).
  # The limits are loose for shared CI machines but catch a per-pixel Python loop or a figure per chart.
  module.batch(0, 0, 2, 224)  # font and figure caches
  start = time.perf_counter()
  module.batch(0, 1, 32, 224)
  assert time.perf_counter() - start < limit


# ----------------------------------------------------------------------------------------------------------------
# tasks.render
# ----------------------------------------------------------------------------------------------------------------


def test_example_rng_streams_are_distinct():
  draws = {(split, index, stream): render.example_rng(0, split, index, stream).random()
           for split in render.SPLITS for index in (0, 1) for stream in (101, 102)}
  assert len(set(draws.values())) == len(draws)
  # A stream id is not an index: entropy [0, 0, 0] padded with zeros must not collide with tasks.scenes.
  assert render.example_rng(0, "train", 0, 0).random() != scenes.batch_rng(0, 0, "train").random()
  assert render.example_rng(5, "train", 9, 101).random() == render.example_rng(5, "train", 9, 101).random()
  with pytest.raises(ValueError, match="non-negative"):
    render.example_rng(0, "train", -1, 101)


def test_image_hw_and_partition():
  assert render.image_hw(64) == (64, 64) and render.image_hw((48, 96)) == (48, 96)
  with pytest.raises(ValueError, match="16x16"):
    render.image_hw(8)
  items = tuple("abcdefghij")
  train, validation = render.partition(items, "train"), render.partition(items, "validation")
  assert validation == ("d", "h") and not set(train) & set(validation) and set(train) | set(validation) == set(items)


def test_every_font_loads_and_draws():
  for name in render.FONT_FILES:
    assert render.font(name, 20).getlength("Hello") > 20


# ----------------------------------------------------------------------------------------------------------------
# tasks.ocr
# ----------------------------------------------------------------------------------------------------------------


def test_ocr_word_lists_split_cleanly():
  assert len(ocr.WORDS) == len(set(ocr.WORDS)) > 400
  train, validation = set(ocr.words("train")), set(ocr.words("validation"))
  assert not train & validation and train | validation == set(ocr.WORDS)


@pytest.mark.parametrize("split", ["train", "validation"])
def test_ocr_targets_are_the_rendered_words(split):
  own, other = set(ocr.words(split)), set(ocr.words("train" if split == "validation" else "validation"))
  for index in range(40):
    ex = ocr.example(0, index, split, 96)
    assert ex["inputs"] == "ocr"
    tokens = ex["targets"].split(" ")
    assert tokens[0].lower() in own  # every text starts with a word, so the splits share no target
    for token in tokens:
      assert NUMBER.match(token) or (token.lower() in own and token.lower() not in other), token
      assert token in (token.lower(), token.title(), token.upper())


def test_ocr_plan_size_draws_the_same_text_at_any_resolution():
  for index in range(8):
    small = ocr.example(3, index, "validation", 32)
    large = ocr.example(3, index, "validation", 96, plan_size=32)
    assert large["targets"] == small["targets"] and large["image"].shape == (96, 96, 3)
  assert ([ocr.example(3, i, "validation", 96)["targets"] for i in range(8)]
          != [ocr.example(3, i, "validation", 32)["targets"] for i in range(8)])  # by default more text at 96 px


def test_ocr_line_separator_only_changes_the_target():
  spaced, broken = ocr.example(2, 3, "train", 224), ocr.example(2, 3, "train", 224, line_separator="\n")
  np.testing.assert_array_equal(spaced["image"], broken["image"])
  assert broken["targets"].replace("\n", " ") == spaced["targets"]


@pytest.mark.parametrize("image_size", [64, 224, (100, 400)], ids=["64", "224", "100x400"])
def test_ocr_text_lies_inside_the_image_at_a_legible_size(image_size):
  h, w = render.image_hw(image_size)
  margin = max(1, round(ocr._MARGIN * min(h, w)))
  small = 0
  for index in range(25):
    lines = ocr.example(1, index, "train", image_size, line_separator="\n")["targets"].split("\n")
    layout = ocr.layout_text(lines, image_size, np.random.default_rng(index))
    assert layout.x >= margin and layout.y >= margin
    assert layout.x + layout.mask.width <= w - margin and layout.y + layout.mask.height <= h - margin
    small += layout.size_px < ocr._MIN_FONT_PX
  assert small <= 2  # the amount of text is planned to fit at the smallest legible size


def test_ocr_text_contrasts_with_its_background():
  # Light grounds have every channel >= 0.72 and dark ink <= 0.3 (or the reverse), and background noise stays
  # within 0.12, so the brightest and darkest pixels are far apart even after antialiasing.
  for index in range(10):
    grey = ocr.render_text(["Hello"], 128, np.random.default_rng(index)).mean(axis=-1)
    assert np.ptp(grey) > 0.6


# ----------------------------------------------------------------------------------------------------------------
# tasks.documents
# ----------------------------------------------------------------------------------------------------------------


def cents(text):
  return int(text.replace(".", ""))


def sample_documents(kind, split, n, image_size=812):
  rng = np.random.default_rng(0 if split == "train" else 1)
  return [documents.sample_document(rng, split, image_size, kind) for _ in range(n)]


def test_receipt_total_is_the_sum_of_the_prices():
  for doc in sample_documents("receipt", "train", 30):
    assert doc.rows[0][0] == "Date" and doc.rows[-1][0] == "TOTAL"
    prices = [price for _, price in doc.rows[1:-1]]
    assert prices and all(re.fullmatch(r"\d+\.\d\d", p) for p in prices)
    assert cents(doc.rows[-1][1]) == sum(cents(p) for p in prices)
    assert ("what is the total?", doc.rows[-1][1]) in doc.qa
    assert len({item for item, _ in doc.rows[1:-1]}) == len(prices)  # "the price of X" has one answer


@pytest.mark.parametrize("kind", documents.KINDS)
def test_document_answers_are_the_rendered_cells(kind):
  for doc in sample_documents(kind, "validation", 20) + sample_documents(kind, "train", 5, 224):
    questions = [q for q, _ in doc.qa]
    assert len(questions) == len(set(questions))  # unambiguous
    cells = {(row[0], col): row[c] for row in doc.rows for c, col in enumerate(doc.rows[0])}
    for question, answer in doc.qa:
      assert answer and answer in doc.text()
      if kind == "table":  # "what is the <column> of <row>?" is the cell at that row and column
        column, row = re.fullmatch(r"what is the (.+) of (.+)\?", question).groups()
        assert cells[(row, column)] == answer
      elif kind == "form":  # "what is the <field>?" is the value beside that field's label
        assert any(value == answer for _, value in doc.rows)
      elif question.startswith("what is the price of "):
        assert (question[len("what is the price of "):-1], answer) in doc.rows


def test_document_example_prompts_and_targets():
  for index, kind in enumerate(documents.KINDS):
    qa = documents.example(4, index, "train", 224, kind=kind, mode="qa", with_document=True)
    ocr_ex = documents.example(4, index, "train", 224, kind=kind, mode="ocr", with_document=True)
    np.testing.assert_array_equal(qa["image"], ocr_ex["image"])  # the mode does not change the document
    doc = qa["document"]
    assert doc.kind == kind
    assert qa["inputs"].startswith("answer en what is the ") and qa["inputs"].endswith("?")
    assert (qa["inputs"][len("answer en "):], qa["targets"]) in doc.qa
    assert ocr_ex["inputs"] == "ocr" and ocr_ex["targets"] == doc.text()
    assert ocr_ex["targets"].startswith(doc.title)
  with pytest.raises(ValueError, match="mode"):
    documents.example(0, 0, mode="summary")
  with pytest.raises(ValueError, match="kind"):
    documents.example(0, 0, kind="letter")


def test_document_splits_use_disjoint_names_and_items():
  held_out, train_only = held_out_and_train([documents.FIRST_NAMES, documents.LAST_NAMES, documents.CITIES,
                                             documents.COMPANIES, documents.SHOPS, documents.GROCERIES,
                                             documents.PRODUCTS])
  for kind in documents.KINDS:
    for doc in sample_documents(kind, "train", 15, 224):
      assert not mentions(doc.text(), held_out)
    for doc in sample_documents(kind, "validation", 15, 224):
      assert mentions(doc.text(), held_out) and not mentions(doc.text(), train_only)


# ----------------------------------------------------------------------------------------------------------------
# tasks.charts
# ----------------------------------------------------------------------------------------------------------------


def sample_charts(kind, split, n, image_size=224):
  rng = np.random.default_rng(2 if split == "train" else 3)
  return [charts.sample_chart(rng, split, image_size, kind) for _ in range(n)]


@pytest.mark.parametrize("kind", charts.KINDS)
def test_chart_answers_match_the_plotted_data(kind):
  for chart in sample_charts(kind, "train", 30) + sample_charts(kind, "validation", 10, (160, 480)):
    values, scale = np.array(chart.values), 10 ** chart.decimals
    assert len(set(chart.values)) == len(values) >= 2 and len(set(chart.labels)) == len(chart.labels)
    if kind == "pie":
      assert values.sum() == 100 and values.min() >= charts._MIN_SHARE
    if kind == "line":
      assert [int(y) for y in chart.labels] == list(range(int(chart.labels[0]), int(chart.labels[0]) + len(values)))
    value_of = dict(zip(chart.labels, values / scale))
    qa = chart.qa()
    for question, answer in qa["value"]:
      label = re.fullmatch(r"what is the value (?:of|in) (.+)\?", question).group(1)
      assert float(answer) == pytest.approx(value_of[label])
    for question, answer in qa["difference"]:
      a, b = re.fullmatch(r"what is the difference between (.+) and (.+)\?", question).groups()
      assert float(answer) == pytest.approx(abs(value_of[a] - value_of[b]))
    assert dict(qa["extreme"]) == {"what is the highest value?": chart.format(values.max()),
                                   "what is the lowest value?": chart.format(values.min())}
    assert [a for _, a in qa["which"]] == [chart.labels[values.argmax()], chart.labels[values.argmin()]]
    assert all(f"which {chart.noun} has" in q for q, _ in qa["which"])
    # Numbers are formatted one way: as many decimals as the chart prints.
    for _, answer in qa["value"] + qa["difference"] + qa["extreme"]:
      assert re.fullmatch(r"\d+" + (r"\.\d" if chart.decimals else ""), answer)
    assert [chart.printed(i) for i in range(len(values))] == [
        chart.format(v) + ("%" if kind == "pie" else "") for v in values]


def test_chart_examples_ask_about_their_own_chart():
  for index, kind in enumerate(charts.KINDS * 2):
    ex = charts.example(5, index, "validation", 224, kind=kind, with_chart=True)
    pairs = [pair for group in ex["chart"].qa().values() for pair in group]
    assert ex["chart"].kind == kind
    assert ex["inputs"].startswith("answer en ") and (ex["inputs"][len("answer en "):], ex["targets"]) in pairs
  with pytest.raises(ValueError, match="kind"):
    charts.example(0, 0, kind="scatter")


def test_chart_splits_use_disjoint_labels():
  held_out, train_only = held_out_and_train([charts.COUNTRIES, charts.FRUITS, charts.SPORTS, charts.BRANDS])
  for kind in charts.KINDS:
    for chart in sample_charts(kind, "train", 15):
      assert not mentions(" ".join((chart.title,) + chart.labels), held_out)
    for chart in sample_charts(kind, "validation", 15):
      text = " ".join((chart.title,) + chart.labels)
      assert mentions(text, held_out) and not mentions(text, train_only)


def test_chart_pixels_do_not_depend_on_earlier_charts():
  # Figures are reused across charts, so any state one chart leaves behind would show in the next.
  rng = np.random.default_rng(0)
  bar = charts.sample_chart(rng, "train", 128, "bar")
  group = [dataclasses.replace(bar, horizontal=False), dataclasses.replace(bar, horizontal=True),
           charts.sample_chart(rng, "train", 128, "line"), charts.sample_chart(rng, "train", 128, "pie")]
  forward = [charts.render_chart(chart, 128, np.random.default_rng(1)) for chart in group]
  backward = [charts.render_chart(chart, 128, np.random.default_rng(1)) for chart in group[::-1]][::-1]
  for a, b in zip(forward, backward):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(forward[0], forward[1])


def test_charts_render_the_same_on_concurrent_threads():
  # tf.data renders on its own threads, each with its own figures and no lock: the pixels must not notice.
  examples = [charts.example(0, i, image_size=96) for i in range(12)]
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    for _ in range(2):  # the second round reuses every thread's figures
      together = list(pool.map(lambda i: charts.example(0, i, image_size=96), range(12)))
      for alone, concurrent_one in zip(examples, together):
        np.testing.assert_array_equal(alone["image"], concurrent_one["image"])


def test_small_charts_have_fewer_points():
  assert max(len(c.labels) for c in sample_charts("line", "train", 30, 64)) < max(
      len(c.labels) for c in sample_charts("line", "train", 30, 448))


# ----------------------------------------------------------------------------------------------------------------
# tasks.multilingual
# ----------------------------------------------------------------------------------------------------------------

# Unicode blocks of the non-Latin scripts: CJK Unified Ideographs, Arabic, Devanagari, Cyrillic.
SCRIPTS = {"zh": (0x4E00, 0x9FFF), "ar": (0x0600, 0x06FF), "hi": (0x0900, 0x097F), "ru": (0x0400, 0x04FF)}


def assert_in_own_script(lang, text):
  assert text.strip(), lang
  letters = [ch for ch in text if unicodedata.category(ch)[0] in "LM"]  # letters and combining vowel signs
  assert letters, (lang, text)
  if lang in SCRIPTS:
    low, high = SCRIPTS[lang]
    assert all(low <= ord(ch) <= high for ch in letters), (lang, text)
  else:  # Latin script, accents allowed
    assert all("LATIN" in unicodedata.name(ch) for ch in letters), (lang, text)


def plan(n, template=0, sizes=False, positions=False):
  return multilingual.CaptionPlan(template, tuple(range(n)), (sizes,) * n, positions)


def test_at_least_eight_languages():
  assert {"en", "de", "fr", "es", "zh", "ar", "hi", "ru"} <= set(multilingual.LANGUAGES)


def test_every_language_captions_every_object_in_its_own_script():
  objects = [SceneObject(shape, colour, size, cx, cy) for colour, shape in scenes.all_combos()
             for size, cx, cy in (("small", 0.1, 0.1), ("large", 0.5, 0.9))]
  for lang in multilingual.LANGUAGES:
    for template in range(3):
      for sizes in (False, True):
        for positions in (False, True):
          captions = [multilingual.caption([obj], lang, plan(1, template, sizes, positions)) for obj in objects]
          for text in captions:
            assert_in_own_script(lang, text)
          # The word tables are complete and tell every colour, shape, size and position apart: the two
          # objects of a combination differ in size and position, so they share a caption only if neither
          # is given.
          assert len(set(captions)) == 48 * (2 if sizes or positions else 1)


@pytest.mark.parametrize("lang, expected", [
    ("en", "a red circle"), ("de", "ein roter Kreis"), ("fr", "un cercle rouge"), ("es", "un círculo rojo"),
    ("ru", "красный круг"), ("zh", "一个红色的圆形"), ("ar", "دائرة حمراء"), ("hi", "एक लाल वृत्त"),
])
def test_simple_phrases(lang, expected):
  assert multilingual.caption([SceneObject("circle", "red", "small", 0.5, 0.5)], lang, plan(1)) == expected


@pytest.mark.parametrize("lang, expected", [
    ("en", "two shapes: a large blue diamond at the top left and a large orange ring at the top left"),
    ("de", "zwei Formen: eine große blaue Raute oben links und ein großer orangefarbener Ring oben links"),
    ("fr", "deux formes : un grand losange bleu en haut à gauche et un grand anneau orange en haut à gauche"),
    ("es", "dos formas: un rombo azul grande arriba a la izquierda y un anillo naranja grande arriba a la "
           "izquierda"),
    ("ru", "две фигуры: большой синий ромб вверху слева и большое оранжевое кольцо вверху слева"),
    ("ar", "شكلان: معين أزرق كبير في أعلى اليسار وحلقة برتقالية كبيرة في أعلى اليسار"),
    ("hi", "दो आकृतियाँ: ऊपर बाईं ओर एक बड़ा नीला समचतुर्भुज और ऊपर बाईं ओर एक बड़ा नारंगी वलय"),
    ("zh", "两个图形：左上角有一个蓝色的大菱形，左上角有一个橙色的大圆环"),
])
def test_agreement_counts_and_positions(lang, expected):
  objects = [SceneObject("diamond", "blue", "large", 0.2, 0.2), SceneObject("ring", "orange", "large", 0.2, 0.2)]
  assert multilingual.caption(objects, lang, plan(2, template=1, sizes=True, positions=True)) == expected


def test_feminine_and_neuter_agreement():
  cross = [SceneObject("cross", "white", "small", 0.5, 0.5)]
  ring = [SceneObject("ring", "green", "small", 0.5, 0.5)]
  square = [SceneObject("square", "purple", "small", 0.5, 0.5)]
  sized = plan(1, sizes=True)
  assert multilingual.caption(cross, "fr", sized) == "une petite croix blanche"
  assert multilingual.caption(cross, "es", sized) == "una cruz blanca pequeña"
  assert multilingual.caption(ring, "ru", sized) == "маленькое зелёное кольцо"
  assert multilingual.caption(ring, "ar", sized) == "حلقة خضراء صغيرة"
  assert multilingual.caption(square, "de", sized) == "ein kleines violettes Quadrat"
  hindi = multilingual.caption(square + cross, "hi", plan(2, template=2))
  assert hindi == "चित्र में एक बैंगनी वर्ग और एक सफ़ेद क्रॉस हैं"  # plural verb for two objects


def test_multilingual_examples():
  for index, lang in enumerate(multilingual.LANGUAGES):
    ex = multilingual.example(0, index, "validation", (64, 96), lang=lang)
    assert ex["inputs"] == f"caption {lang}"
    assert_in_own_script(lang, ex["targets"])
  drawn = {multilingual.example(0, index, "train", 32)["inputs"] for index in range(64)}
  assert drawn == {f"caption {lang}" for lang in multilingual.LANGUAGES}
  with pytest.raises(ValueError, match="language"):
    multilingual.example(0, 0, lang="xx")


def test_multilingual_train_split_never_shows_held_out_combinations():
  held_out = [f"{colour} {shape}" for colour, shape in scenes.HELD_OUT_COMBOS]
  train = [multilingual.example(1, i, "train", 32, lang="en")["targets"] for i in range(150)]
  validation = [multilingual.example(1, i, "validation", 32, lang="en")["targets"] for i in range(150)]
  assert not any(combo in text for text in train for combo in held_out)
  assert any(combo in text for text in validation for combo in held_out)


def test_non_square_scenes_keep_colours_and_positions():
  objects = [SceneObject("square", "red", "large", 0.2, 0.8)]  # bottom left
  image = multilingual.render_scene(objects, (60, 180), np.random.default_rng(0))
  red = np.abs(image - (np.array(scenes.COLOURS["red"]) / 127.5 - 1)).max(axis=-1) < 1e-6  # [H, W]
  ys, xs = np.nonzero(red)
  assert red.any() and ys.mean() > 40 and xs.mean() < 60  # bottom third, left third


def test_parallel_corpus():
  langs = list(multilingual.LANGUAGES)
  texts = list(multilingual.corpus(3, 3 * len(langs) + 2))
  assert len(texts) == 3 * len(langs) + 2 and texts == list(multilingual.corpus(3, 3 * len(langs) + 2))
  for k, text in enumerate(texts):
    assert_in_own_script(langs[k % len(langs)], text)
  assert len(set(texts[:len(langs)])) == len(langs)  # one scene in every language
