"""Multilingual captions of the tasks.scenes shapes: a stand-in for PaLI-3's CC3M-35L / multilingual WebLI data.

A scene (tasks.scenes.sample_scene, rendered by tasks.scenes.render_scenes) is captioned in one of LANGUAGES
from per-language word tables and templates, with gender and number agreement where the language has it:

  en  a large red circle and an orange ring
  de  ein großer roter Kreis und ein orangefarbener Ring
  fr  un grand cercle rouge et un anneau orange
  es  un círculo rojo grande y un anillo naranja
  ru  большой красный круг и оранжевое кольцо
  zh  一个红色的大圆形和一个橙色的圆环
  ar  دائرة حمراء كبيرة وحلقة برتقالية
  hi  एक बड़ा लाल वृत्त और एक नारंगी वलय

Each caption names every object's colour and shape, sometimes its size ("large") and, for the whole caption
or not at all, every object's position by thirds of the image ("at the top left"), in one of three templates:
the bare list, "<count>: <list>" ("two shapes: ...") and "an image of <list>" (in the other languages their
way of saying "in the image there is", which keeps the list in the nominative). The random choices (template,
order, sizes, positions) form a CaptionPlan shared by all languages, so captions of one scene in different
languages are translations of each other.

  inputs:  "caption <lang>"      targets: the caption (no final full stop, lower case except German nouns)

Splits: "train" scenes never contain tasks.scenes.HELD_OUT_COMBOS; "validation" scenes are the scenes
module's "eval" split (all combinations), drawn from a disjoint random stream.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from tasks import render
from tasks import scenes
from tasks.scenes import SceneObject

STREAM = 104  # this module's id in render.example_rng
_CORPUS_STREAM = 105  # the parallel corpus's stream

# Our split -> the tasks.scenes split whose combinations it draws from.
_SCENE_SPLITS = {"train": "train", "validation": "eval"}

_SIZE_PROB = 0.5  # chance, per object, that its size is given
_POSITION_PROB = 0.4  # chance that every object's position is given

# ----------------------------------------------------------------------------------------------------------------
# Positions: an object's centre by thirds of the image, as an index into the 9-entry position tables below,
# ordered top left, top, top right, left, centre, right, bottom left, bottom, bottom right.
# ----------------------------------------------------------------------------------------------------------------


def region(obj: SceneObject) -> int:
  """Row-major index 0..8 of the third of the image (by rows and columns) that holds the object's centre."""
  def third(t: float) -> int:
    return 0 if t < 1 / 3 else 2 if t > 2 / 3 else 1
  return 3 * third(obj.cy) + third(obj.cx)


# ----------------------------------------------------------------------------------------------------------------
# Noun phrases, one builder per language: (object, with_size) -> "a large red circle"
# ----------------------------------------------------------------------------------------------------------------


def _en(obj: SceneObject, with_size: bool) -> str:
  words = ([obj.size] if with_size else []) + [obj.colour, obj.shape]
  return f"{'an' if words[0][0] in 'aeiou' else 'a'} {' '.join(words)}"


# German: nominative after the indefinite article, adjectives with the mixed-declension ending of the noun's
# gender ("ein roter Kreis", "ein rotes Quadrat", "eine rote Raute"). "lila", "orange" and "türkis" do not
# decline, so the declinable "violett", "orangefarben" and "türkisfarben" are used.
_DE_SHAPES = {"circle": ("Kreis", "m"), "square": ("Quadrat", "n"), "triangle": ("Dreieck", "n"),
              "diamond": ("Raute", "f"), "cross": ("Kreuz", "n"), "ring": ("Ring", "m")}
_DE_COLOURS = {"red": "rot", "green": "grün", "blue": "blau", "yellow": "gelb", "purple": "violett",
               "orange": "orangefarben", "white": "weiß", "cyan": "türkisfarben"}
_DE_SIZES = {"small": "klein", "large": "groß"}
_DE_ARTICLES = {"m": "ein", "n": "ein", "f": "eine"}
_DE_ENDINGS = {"m": "er", "n": "es", "f": "e"}


def _de(obj: SceneObject, with_size: bool) -> str:
  noun, gender = _DE_SHAPES[obj.shape]
  stems = ([_DE_SIZES[obj.size]] if with_size else []) + [_DE_COLOURS[obj.colour]]
  return " ".join([_DE_ARTICLES[gender]] + [stem + _DE_ENDINGS[gender] for stem in stems] + [noun])


# French: size before the noun, colour after, both agreeing in gender ("une petite croix verte").
_FR_SHAPES = {"circle": ("cercle", 0), "square": ("carré", 0), "triangle": ("triangle", 0),
              "diamond": ("losange", 0), "cross": ("croix", 1), "ring": ("anneau", 0)}  # 0 masculine, 1 feminine
_FR_COLOURS = {"red": ("rouge", "rouge"), "green": ("vert", "verte"), "blue": ("bleu", "bleue"),
               "yellow": ("jaune", "jaune"), "purple": ("violet", "violette"), "orange": ("orange", "orange"),
               "white": ("blanc", "blanche"), "cyan": ("cyan", "cyan")}
_FR_SIZES = {"small": ("petit", "petite"), "large": ("grand", "grande")}


def _fr(obj: SceneObject, with_size: bool) -> str:
  noun, g = _FR_SHAPES[obj.shape]
  size = [_FR_SIZES[obj.size][g]] if with_size else []
  return " ".join([("un", "une")[g]] + size + [noun, _FR_COLOURS[obj.colour][g]])


# Spanish: colour then size after the noun, agreeing in gender ("una cruz blanca pequeña").
_ES_SHAPES = {"circle": ("círculo", 0), "square": ("cuadrado", 0), "triangle": ("triángulo", 0),
              "diamond": ("rombo", 0), "cross": ("cruz", 1), "ring": ("anillo", 0)}  # 0 masculine, 1 feminine
_ES_COLOURS = {"red": ("rojo", "roja"), "green": ("verde", "verde"), "blue": ("azul", "azul"),
               "yellow": ("amarillo", "amarilla"), "purple": ("morado", "morada"), "orange": ("naranja", "naranja"),
               "white": ("blanco", "blanca"), "cyan": ("cian", "cian")}
_ES_SIZES = {"small": ("pequeño", "pequeña"), "large": ("grande", "grande")}


def _es(obj: SceneObject, with_size: bool) -> str:
  noun, g = _ES_SHAPES[obj.shape]
  size = [_ES_SIZES[obj.size][g]] if with_size else []
  return " ".join([("un", "una")[g], noun, _ES_COLOURS[obj.colour][g]] + size)


# Russian: no article; adjectives in the nominative of the noun's gender ("красный круг", "красное кольцо").
# Blue is "синий", cyan the lighter "голубой".
_RU_SHAPES = {"circle": ("круг", 0), "square": ("квадрат", 0), "triangle": ("треугольник", 0),
              "diamond": ("ромб", 0), "cross": ("крест", 0), "ring": ("кольцо", 1)}  # 0 masculine, 1 neuter
_RU_COLOURS = {"red": ("красный", "красное"), "green": ("зелёный", "зелёное"), "blue": ("синий", "синее"),
               "yellow": ("жёлтый", "жёлтое"), "purple": ("фиолетовый", "фиолетовое"),
               "orange": ("оранжевый", "оранжевое"), "white": ("белый", "белое"), "cyan": ("голубой", "голубое")}
_RU_SIZES = {"small": ("маленький", "маленькое"), "large": ("большой", "большое")}


def _ru(obj: SceneObject, with_size: bool) -> str:
  noun, g = _RU_SHAPES[obj.shape]
  size = [_RU_SIZES[obj.size][g]] if with_size else []
  return " ".join(size + [_RU_COLOURS[obj.colour][g], noun])


# Hindi: "एक" + adjectives + noun. Every shape noun here is masculine, so the adjectives that inflect
# (हरा, नीला, पीला, छोटा, बड़ा) take their masculine direct singular form; the others do not inflect.
_HI_SHAPES = {"circle": "वृत्त", "square": "वर्ग", "triangle": "त्रिभुज", "diamond": "समचतुर्भुज",
              "cross": "क्रॉस", "ring": "वलय"}
_HI_COLOURS = {"red": "लाल", "green": "हरा", "blue": "नीला", "yellow": "पीला", "purple": "बैंगनी",
               "orange": "नारंगी", "white": "सफ़ेद", "cyan": "आसमानी"}
_HI_SIZES = {"small": "छोटा", "large": "बड़ा"}


def _hi(obj: SceneObject, with_size: bool) -> str:
  size = [_HI_SIZES[obj.size]] if with_size else []
  return " ".join(["एक"] + size + [_HI_COLOURS[obj.colour], _HI_SHAPES[obj.shape]])


# Arabic: indefinite noun, then colour and size agreeing in gender ("دائرة حمراء كبيرة", "مربع أحمر").
_AR_SHAPES = {"circle": ("دائرة", 1), "square": ("مربع", 0), "triangle": ("مثلث", 0), "diamond": ("معين", 0),
              "cross": ("صليب", 0), "ring": ("حلقة", 1)}  # 0 masculine, 1 feminine
_AR_COLOURS = {"red": ("أحمر", "حمراء"), "green": ("أخضر", "خضراء"), "blue": ("أزرق", "زرقاء"),
               "yellow": ("أصفر", "صفراء"), "purple": ("بنفسجي", "بنفسجية"), "orange": ("برتقالي", "برتقالية"),
               "white": ("أبيض", "بيضاء"), "cyan": ("سماوي", "سماوية")}
_AR_SIZES = {"small": ("صغير", "صغيرة"), "large": ("كبير", "كبيرة")}


def _ar(obj: SceneObject, with_size: bool) -> str:
  noun, g = _AR_SHAPES[obj.shape]
  size = [_AR_SIZES[obj.size][g]] if with_size else []
  return " ".join([noun, _AR_COLOURS[obj.colour][g]] + size)


# Chinese: "一个" + colour + "的" + size + shape ("一个红色的大圆形"); 个 is the measure word for all of them.
_ZH_SHAPES = {"circle": "圆形", "square": "正方形", "triangle": "三角形", "diamond": "菱形", "cross": "十字形",
              "ring": "圆环"}
_ZH_COLOURS = {"red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色", "purple": "紫色", "orange": "橙色",
               "white": "白色", "cyan": "青色"}
_ZH_SIZES = {"small": "小", "large": "大"}


def _zh(obj: SceneObject, with_size: bool) -> str:
  return f"一个{_ZH_COLOURS[obj.colour]}的{_ZH_SIZES[obj.size] if with_size else ''}{_ZH_SHAPES[obj.shape]}"


# ----------------------------------------------------------------------------------------------------------------
# Languages
# ----------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Language:
  """How one language builds a caption.

  Attributes:
    noun_phrase: (object, with_size) -> the object's indefinite noun phrase in the nominative.
    positions: the 9 position phrases, in region() order.
    placed: how a position joins a noun phrase, with fields {np} and {pos}.
    separators: (between items, before the last item) of a list.
    counts: "one shape" .. "nine shapes", with the right number agreement.
    templates: the three caption templates, with fields {list}, {count} and {be}.
    be: the verb of the third template, (singular, plural), where it has one.
    placed_separators, placed_templates: replacements used when positions are given (Chinese turns each
      object into a clause "左上角有...", listed with commas).
  """
  noun_phrase: Callable[[SceneObject, bool], str]
  positions: tuple[str, ...]
  placed: str
  separators: tuple[str, str]
  counts: tuple[str, ...]
  templates: tuple[str, str, str]
  be: tuple[str, str] = ("", "")
  placed_separators: tuple[str, str] | None = None
  placed_templates: tuple[str, str, str] | None = None


LANGUAGES: dict[str, Language] = {
    "en": Language(
        _en,
        ("at the top left", "at the top", "at the top right", "on the left", "in the centre", "on the right",
         "at the bottom left", "at the bottom", "at the bottom right"),
        "{np} {pos}", (", ", " and "),
        ("one shape", "two shapes", "three shapes", "four shapes", "five shapes", "six shapes", "seven shapes",
         "eight shapes", "nine shapes"),
        ("{list}", "{count}: {list}", "an image of {list}")),
    "de": Language(
        _de,
        ("oben links", "oben", "oben rechts", "links", "in der Mitte", "rechts", "unten links", "unten",
         "unten rechts"),
        "{np} {pos}", (", ", " und "),
        ("eine Form", "zwei Formen", "drei Formen", "vier Formen", "fünf Formen", "sechs Formen", "sieben Formen",
         "acht Formen", "neun Formen"),
        ("{list}", "{count}: {list}", "auf dem Bild {be} {list}"), be=("ist", "sind")),
    "fr": Language(
        _fr,
        ("en haut à gauche", "en haut", "en haut à droite", "à gauche", "au centre", "à droite",
         "en bas à gauche", "en bas", "en bas à droite"),
        "{np} {pos}", (", ", " et "),
        ("une forme", "deux formes", "trois formes", "quatre formes", "cinq formes", "six formes", "sept formes",
         "huit formes", "neuf formes"),
        ("{list}", "{count} : {list}", "sur l'image, il y a {list}")),
    "es": Language(
        _es,
        ("arriba a la izquierda", "arriba", "arriba a la derecha", "a la izquierda", "en el centro",
         "a la derecha", "abajo a la izquierda", "abajo", "abajo a la derecha"),
        "{np} {pos}", (", ", " y "),  # "y" never becomes "e": the next word is always "un" or "una"
        ("una forma", "dos formas", "tres formas", "cuatro formas", "cinco formas", "seis formas", "siete formas",
         "ocho formas", "nueve formas"),
        ("{list}", "{count}: {list}", "en la imagen hay {list}")),
    "ru": Language(
        _ru,
        ("вверху слева", "вверху", "вверху справа", "слева", "в центре", "справа", "внизу слева", "внизу",
         "внизу справа"),
        "{np} {pos}", (", ", " и "),
        ("одна фигура", "две фигуры", "три фигуры", "четыре фигуры", "пять фигур", "шесть фигур", "семь фигур",
         "восемь фигур", "девять фигур"),
        ("{list}", "{count}: {list}", "на изображении {list}")),
    "hi": Language(
        _hi,
        ("ऊपर बाईं ओर", "ऊपर", "ऊपर दाईं ओर", "बाईं ओर", "बीच में", "दाईं ओर", "नीचे बाईं ओर", "नीचे",
         "नीचे दाईं ओर"),
        "{pos} {np}", (", ", " और "),
        ("एक आकृति", "दो आकृतियाँ", "तीन आकृतियाँ", "चार आकृतियाँ", "पाँच आकृतियाँ", "छह आकृतियाँ", "सात आकृतियाँ",
         "आठ आकृतियाँ", "नौ आकृतियाँ"),
        ("{list}", "{count}: {list}", "चित्र में {list} {be}"), be=("है", "हैं")),
    "ar": Language(
        _ar,
        ("في أعلى اليسار", "في الأعلى", "في أعلى اليمين", "على اليسار", "في الوسط", "على اليمين",
         "في أسفل اليسار", "في الأسفل", "في أسفل اليمين"),
        "{np} {pos}", (" و", " و"),  # the conjunction is written joined to the next word: "دائرة ومربع"
        ("شكل واحد", "شكلان", "ثلاثة أشكال", "أربعة أشكال", "خمسة أشكال", "ستة أشكال", "سبعة أشكال",
         "ثمانية أشكال", "تسعة أشكال"),
        ("{list}", "{count}: {list}", "في الصورة {list}")),
    "zh": Language(
        _zh,
        ("左上角", "顶部", "右上角", "左侧", "中间", "右侧", "左下角", "底部", "右下角"),
        "{pos}有{np}", ("、", "和"),
        ("一个图形", "两个图形", "三个图形", "四个图形", "五个图形", "六个图形", "七个图形", "八个图形", "九个图形"),
        ("{list}", "{count}：{list}", "图片中有{list}"),
        placed_separators=("，", "，"), placed_templates=("{list}", "{count}：{list}", "图片中，{list}")),
}


# ----------------------------------------------------------------------------------------------------------------
# Captions
# ----------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CaptionPlan:
  """The random choices behind a caption, shared by every language.

  Attributes:
    template: index into Language.templates.
    order: the objects' indices in the order they are mentioned.
    sizes: per object (scene order), whether its size is given.
    positions: whether every object's position is given.
  """
  template: int
  order: tuple[int, ...]
  sizes: tuple[bool, ...]
  positions: bool


def sample_plan(objects: Sequence[SceneObject], rng: np.random.Generator) -> CaptionPlan:
  """Draws a template, a mention order, size mentions and whether positions are given."""
  n = len(objects)
  return CaptionPlan(template=int(rng.integers(3)), order=tuple(int(i) for i in rng.permutation(n)),
                     sizes=tuple(bool(b) for b in rng.random(n) < _SIZE_PROB),
                     positions=bool(rng.random() < _POSITION_PROB))


def caption(objects: Sequence[SceneObject], lang: str, plan: CaptionPlan) -> str:
  """The caption of a scene in one language.

  Args:
    objects: the scene (1..9 objects).
    lang: a key of LANGUAGES.
    plan: the choices, from sample_plan.

  Returns:
    The caption.
  """
  if lang not in LANGUAGES:
    raise ValueError(f"unknown language {lang!r}: use one of {', '.join(LANGUAGES)}")
  spec = LANGUAGES[lang]
  phrases = []
  for i in plan.order:
    phrase = spec.noun_phrase(objects[i], plan.sizes[i])
    if plan.positions:
      phrase = spec.placed.format(np=phrase, pos=spec.positions[region(objects[i])])
    phrases.append(phrase)
  between, last = (spec.placed_separators or spec.separators) if plan.positions else spec.separators
  listed = phrases[0] if len(phrases) == 1 else between.join(phrases[:-1]) + last + phrases[-1]
  template = ((spec.placed_templates or spec.templates) if plan.positions else spec.templates)[plan.template]
  n = len(objects)
  return template.format(list=listed, count=spec.counts[n - 1], be=spec.be[int(n > 1)])


# ----------------------------------------------------------------------------------------------------------------
# Examples and the parallel corpus
# ----------------------------------------------------------------------------------------------------------------


def render_scene(objects: Sequence[SceneObject], image_size: int | tuple[int, int],
                 rng: np.random.Generator) -> np.ndarray:
  """Renders one scene with tasks.scenes at any size.

  tasks.scenes draws square images; other sizes are resampled from a square of the longer side by nearest
  neighbour, which keeps the exact colours and every object's position by thirds (only shapes stretch).

  Args:
    objects: the scene.
    image_size: the side, or (height, width), in pixels.
    rng: the random stream for the background; it is advanced.

  Returns:
    float32 [H, W, 3] in [-1, 1].
  """
  h, w = render.image_hw(image_size)
  s = max(h, w)
  square = scenes.render_scenes([list(objects)], s, rng)[0]  # [S, S, 3]
  if h == w:
    return square
  rows = ((np.arange(h) + 0.5) * s / h).astype(int)  # the square's pixel under each output pixel centre
  cols = ((np.arange(w) + 0.5) * s / w).astype(int)
  return square[rows[:, None], cols[None, :]]


def example(seed: int, index: int, split: str = "train", image_size: int | tuple[int, int] = 224,
            lang: str | None = None, max_objects: int = 3) -> dict:
  """Example `index` of the multilingual captioning stream: a pure function of its arguments.

  Args:
    seed: the run's data seed.
    index: the example number (any non-negative int).
    split: "train" (no held-out colour-shape combination) or "validation" (all; a disjoint random stream).
    image_size: the side, or (height, width), in pixels.
    lang: a key of LANGUAGES, or None for a uniform choice.
    max_objects: each scene has 1..max_objects objects (at most tasks.scenes.MAX_OBJECTS).

  Returns:
    {"image": float32 [H, W, 3] in [-1, 1], "inputs": "caption <lang>", "targets": the caption}.
  """
  rng = render.example_rng(seed, split, index, STREAM)
  objects = scenes.sample_scene(rng, _SCENE_SPLITS[split], max_objects)
  codes = tuple(LANGUAGES)
  lang = codes[rng.integers(len(codes))] if lang is None else lang
  text = caption(objects, lang, sample_plan(objects, rng))
  return {"image": render_scene(objects, image_size, rng), "inputs": f"caption {lang}", "targets": text}


def batch(seed: int, index: int, batch_size: int, image_size: int | tuple[int, int] = 224,
          split: str = "train") -> dict:
  """Batch `index`: examples index * batch_size .. (index + 1) * batch_size - 1, languages drawn uniformly.

  Returns:
    {"image": float32 [B, H, W, 3], "inputs": B prompts, "targets": B captions}.
  """
  return render.batch_of(example, seed, index, batch_size, split=split, image_size=image_size)


def corpus(seed: int, n: int, max_objects: int = 3) -> Iterator[str]:
  """A parallel text corpus (e.g. for training a sentencepiece vocabulary): n captions of "train" scenes.

  Caption k is of scene k // len(LANGUAGES) in language k % len(LANGUAGES), in LANGUAGES order, so every run of
  len(LANGUAGES) consecutive captions is one scene in every language, with one plan. The stream is disjoint
  from every example's.

  Args:
    seed: the data seed.
    n: the number of captions.
    max_objects: each scene has 1..max_objects objects.

  Yields:
    Captions.
  """
  rng = np.random.default_rng(np.random.SeedSequence([seed], spawn_key=(_CORPUS_STREAM,)))
  codes = tuple(LANGUAGES)
  for k in range(n):
    if k % len(codes) == 0:
      objects = scenes.sample_scene(rng, "train", max_objects)
      plan = sample_plan(objects, rng)
    yield caption(objects, codes[k % len(codes)], plan)


__all__ = ["STREAM", "LANGUAGES", "Language", "CaptionPlan", "region", "sample_plan", "caption", "render_scene",
           "example", "batch", "corpus"]
