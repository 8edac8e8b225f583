"""seqio Tasks and Mixtures over the project's generators, registered on `import tasks.registry`.

Each task stands in for a dataset of PaLI-3's training mixture and is named for it:

  webli_captions_synthetic         scene captions                      tasks.scene_tasks "caption"
  webli_splitcap_synthetic         split captions: the caption's first  tasks.scene_tasks "splitcap"
                                   words in the prompt, the rest as target (PaLI's split-cap)
  cc3m35l_multilingual_synthetic   scene captions in eight languages   tasks.multilingual
  webli_ocr_synthetic              rendered text, "ocr"                tasks.ocr
  vqa_synthetic                    questions about scenes              tasks.scene_tasks "vqa"
  vqg_synthetic                    question generation: answer -> question  tasks.scene_tasks "vqg"
  detection_synthetic              "detect <object>" -> boxes          tasks.scene_tasks "detect"
  refexp_synthetic                 "refexp <phrase>" -> a box          tasks.scene_tasks "refexp"
  documents_synthetic              DocVQA-style questions, doc OCR     tasks.documents
  charts_synthetic                 ChartQA-style questions             tasks.charts
  ul2_denoise_synthetic            text only: UL2's mixture of denoisers over passages of all the texts above
  webli_pairs_synthetic            image + caption ('text') for two-tower (SigLIP) pretraining, random crops

Native aspect ratio (SigLIP 2's NaFlex): the same generators shaped as their content is, with the pixel area of
an S x S square: portrait forms, landscape tables, long receipts, wide charts, scenes from 1:3 to 3:1.

  documents_native_synthetic       tasks.documents, native_aspect=True
  charts_native_synthetic          tasks.charts, native_aspect=True
  scene_pairs_native_synthetic     scene + caption ('text'), for two towers

For the dense encoder objectives (encoders/objectives): multi-crop views and TIPSv2's caption granularities.

  scene_pairs_views_synthetic      scene + caption at a granularity drawn by `caption_granularity` (gin),
                                   as SILC's multi-crop views with iBOT block masks (`views`, gin)
  scene_pairs_locca_synthetic      scene + caption (in English with the share `caption_languages` sets,
                                   else in another of tasks.multilingual's languages), and a LocCa decoder
                                   task drawn by `locca_tasks` (gin):
                                   captioning, a referring expression (phrase -> box) or grounded
                                   captioning (box -> phrase), as 'locca_inputs' / 'locca_targets'
  scene_pairs_siglip2_synthetic    the same, with the multi-crop views beside the whole image (SigLIP 2)
  scene_pairs_multilingual_synthetic  scene + caption, in English or another language as above

  pali_stage1_synthetic            Mixture of the ten image tasks, rates from `stage1_rates` (gin)
  pali_stage2_synthetic            the same tasks with OCR and documents upweighted (PaLI-3's resolution stage),
                                   rates from `stage2_rates` (gin)
  documents_charts_native_synthetic  Mixture of the two native-aspect image tasks, evenly

Image tasks give 'image' float32 [S, S, 3] in [-1, 1] with S = `image_size()` (gin: tasks.registry.image_size.size,
224 by default; tiny runs use 32-64; native-aspect images are squashed to it), 'inputs' and 'targets' token
ids (+ EOS) in the vocabulary of tasks.vocab (gin-configurable). When TASK_FEATURE_LENGTHS has 'patches' (a
patch budget), every image task gives NaFlex 'patches' and 'spatial_shapes' instead, in patches of
`patch_size()` pixels (tasks.preprocessors.image_inputs). These are read when a dataset is built, not at
import, so gin bindings parsed after this module registers its tasks still apply.

Sources. `GeneratorSource` is a seqio DataSource over a deterministic generator: example k of a split is a pure
function of (data seed, split, k), produced through tf.numpy_function from tf.data.Dataset.range, with
'example_seed' = [seed, k] for the random preprocessors (tasks.preprocessors). "train" is unbounded;
"validation" holds `validation_examples` examples. Sharding is by index (shard i of n takes k = i, i + n,
...), and `examples_at(split, indices, seed)` gives the examples of any index stream: tasks.pipeline uses it
to produce exactly the rows of one training step on one process, without reading the ones before. Generated
examples are already independent draws, so the tasks declare no shuffle buffer (seqio's shuffle would only
hold a thousand images in memory).

Images leave the generators as uint8, following the convention of every source (tasks.preprocessors), and
go through the same normalise / resize steps as decoded JPEGs would.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Mapping, Sequence

import gin
import numpy as np
from tasks.quiet_tensorflow import tf  # first: TensorFlow without its start-up lines (seqio imports it)
import seqio

from tasks import charts
from tasks import documents
from tasks import multilingual
from tasks import ocr
from tasks import preprocessors
from tasks import render
from tasks import scene_tasks
from tasks import scenes
from tasks import vocab

SPLITS = ("train", "validation")
_UNBOUNDED = 2 ** 62  # the end of an unbounded index range
_PASSAGE_STREAM = 106  # render.example_rng stream of the UL2 passages, apart from every generator's own
_NATIVE_SCENE_STREAM = 107  # and of the native-aspect scene pairs
_GRANULARITY_STREAM = 108  # and of the caption granularity draws
_LOCCA_STREAM = 109  # and of the LocCa task draws
_CAPTION_STREAM = 110  # and of the multilingual pairs' caption draws


@gin.configurable(module="tasks.registry")
def image_size(size: int = 224) -> int:
  """The side of every synthetic task's images, in pixels (at least 16)."""
  return size


def image_size_bound(size: int):
  """image_size bound to `size` inside a `with` block (pipelines built there draw their images at it), and on
  leaving to what it was bound to before, or to its default."""
  return gin_bound("tasks.registry.image_size.size", size)


@contextlib.contextmanager
def gin_bound(key: str, value):
  """The gin parameter `key` ('module.configurable.parameter') bound to `value` inside a `with` block, then back
  to its previous binding or, if it had none, to its default."""
  configurable, parameter = key.rsplit(".", 1)
  try:
    previous = gin.query_parameter(key)
  except ValueError:  # not bound
    previous = inspect.signature(gin.get_configurable(configurable)).parameters[parameter].default
  with gin.unlock_config():
    gin.bind_parameter(key, value)
  try:
    yield
  finally:
    with gin.unlock_config():
      gin.bind_parameter(key, previous)


def check_image_size(size: int, patch: int = 1, what: str = "IMAGE_SIZE") -> int:
  """`size`, or one ValueError if it is below what the synthetic tasks draw (16) or below one patch.

  Called before any data worker starts: inside one, the error would surface only as a tf.data failure.

  Args:
    size: the image side in pixels.
    patch: the ViT's patch side (an image smaller than one patch gives no token).
    what: the name the user set it by, for the message.
  """
  least = max(scene_tasks.MIN_IMAGE_SIZE, patch)
  if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < least:
    why = f"one patch of {patch}" if patch > scene_tasks.MIN_IMAGE_SIZE else "the synthetic scenes' least"
    raise ValueError(f"{what}={size!r}: images must be at least {least} pixels a side ({why})")
  return int(size)


@gin.configurable(module="tasks.registry")
def text_validation_plan_size(size: int | None = None) -> int | None:
  """The image side the validation texts of webli_ocr_synthetic and documents_synthetic are planned for (their
  generators' plan_size), or None to plan them for the image itself (by default a larger image shows more text).
  Fixed, every resolution evaluates the same texts, drawn larger: the tiny curriculum binds its stage 1's 32 px,
  so stages 1 and 2 read the same lines and documents at 32 and 48 px."""
  if size is not None and (isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1):
    raise ValueError(f"tasks.registry.text_validation_plan_size.size={size!r}: give a positive image side in "
                     "pixels, or None to plan the text for each image's own size")
  return None if size is None else int(size)


@gin.configurable(module="tasks.registry")
def ocr_validation_words(split: str = "train") -> str:
  """The words webli_ocr_synthetic's validation texts are made of: 'train' (new texts and images of the words
  training writes: what a reader can get right) or 'validation' (tasks.ocr's held-out quarter). Each word is one
  piece of the shipped sentencepiece vocabulary, so exact match on held-out words asks for pieces the model never
  wrote from an image: 0 however well it reads (its numbers are new either way)."""
  if split not in SPLITS:
    raise ValueError(f"tasks.registry.ocr_validation_words.split={split!r}: use 'train' (read words seen in "
                     "training) or 'validation' (tasks.ocr's held-out words)")
  return split


@gin.configurable(module="tasks.registry")
def patch_size(size: int = 16) -> int:
  """The NaFlex patch side in pixels (the ViT's), when TASK_FEATURE_LENGTHS asks for patches."""
  return size


def patch_size_bound(size: int):
  """patch_size bound to `size` inside a `with` block, as image_size_bound binds the image size."""
  return gin_bound("tasks.registry.patch_size.size", size)


@gin.configurable(module="tasks.registry")
def views(global_views: int = 2, global_size: int = 32, global_area: tuple[float, float] = (0.4, 1.0),
          local_views: int = 4, local_size: int = 16, local_area: tuple[float, float] = (0.05, 0.4),
          mask_ratio: tuple[float, float] | None = (0.1, 0.5)) -> dict:
  """The multi-crop settings of scene_pairs_views_synthetic (tasks.preprocessors.multi_crop's arguments); the
  masks are cut in patches of `patch_size()` pixels. SILC: 2 global views from 0.4-1.0 of the area, 8 local
  from 0.05-0.4."""
  return dict(global_views=global_views, global_size=global_size, global_area=tuple(global_area),
              local_views=local_views, local_size=local_size, local_area=tuple(local_area),
              mask_ratio=None if mask_ratio is None else tuple(mask_ratio))


@gin.configurable(module="tasks.registry")
def caption_granularity(rates: Mapping[str, float] = {"alt": 1.0}) -> dict[str, float]:  # noqa: B006  (gin default)
  """Rates of the caption granularities (tasks.scenes.GRANULARITIES) in scene_pairs_views_synthetic; TIPSv2
  alternates alt-text, short and long captions."""
  return _checked_rates("caption_granularity", rates, scenes.GRANULARITIES)


def _checked_rates(what: str, rates: Mapping[str, float], names: Sequence[str]) -> dict[str, float]:
  """`rates` as a dict, or one ValueError: each a name among `names`, none negative, their sum positive."""
  rates = dict(rates)
  if set(rates) - set(names) or any(v < 0 for v in rates.values()) or sum(rates.values()) <= 0:
    raise ValueError(f"{what} rates={rates}: non-negative rates of {tuple(names)} with a positive sum")
  return rates


@gin.configurable(module="tasks.registry")
def caption_languages(english: float = 1.0) -> float:
  """The share of English captions in the SigLIP 2 pair tasks (SigLIP 2: 0.9); the rest are drawn evenly from
  tasks.multilingual's other languages."""
  if not 0.0 <= english <= 1.0:
    raise ValueError(f"caption_languages english={english} is not a share in [0, 1]")
  return english


LOCCA_TASKS = ("caption", "refexp", "grounded", "ocr")


@gin.configurable(module="tasks.registry")
def locca_tasks(rates: Mapping[str, float] = {"caption": 1.0, "refexp": 1.0, "grounded": 1.0}  # noqa: B006
                ) -> dict[str, float]:
  """Rates of the LocCa decoder's tasks in scene_pairs_locca_synthetic: captioning ("caption en" -> the
  caption), referring expressions ("refexp <phrase>" -> four location tokens), grounded captioning
  ("grounded <four location tokens>" -> the phrase), and reading (an image of rendered text, tasks.ocr,
  "ocr" -> its text, which is also the image's text for the sigmoid loss: WebLI's text-rich pairs in
  miniature). Off by default: SigLIP 2's decoder tasks are the first three."""
  return _checked_rates("locca_tasks", rates, LOCCA_TASKS)


@gin.configurable(module="tasks.registry")
def locca_max_objects(localisation: int = 3) -> int:
  """The most objects in a scene of the LocCa decoder's referring-expression and grounded-captioning examples
  (captioning keeps scene_tasks' default). With one, the phrase's object is the only one: its box is read off
  the image without telling objects apart."""
  return _checked_max_objects("locca_max_objects.localisation", localisation)


@gin.configurable(module="tasks.registry")
def scene_max_objects(objects: int = 3) -> int:
  """The most objects in a scene of the PaLI scene tasks (captions, split captions, VQA, VQG, detection,
  referring expressions), training and validation alike. With one, a referring expression's object is the only
  one: its box is read off the image without telling objects apart."""
  return _checked_max_objects("scene_max_objects.objects", objects)


def _checked_max_objects(binding: str, objects: int) -> int:
  if isinstance(objects, bool) or not isinstance(objects, int) or not 1 <= objects <= scenes.MAX_OBJECTS:
    raise ValueError(f"tasks.registry.{binding}={objects!r}: give an integer from 1 to {scenes.MAX_OBJECTS}")
  return objects


STAGE1_RATES: dict[str, float] = {
    "webli_captions_synthetic": 1.0,
    "webli_splitcap_synthetic": 0.5,
    "cc3m35l_multilingual_synthetic": 1.0,
    "webli_ocr_synthetic": 1.0,
    "vqa_synthetic": 1.0,
    "vqg_synthetic": 0.5,
    "detection_synthetic": 0.5,
    "refexp_synthetic": 0.5,
    "documents_synthetic": 0.5,
    # Charts take ~60 ms each to draw (matplotlib, one at a time), ten times a scene: kept light in stage 1.
    "charts_synthetic": 0.25,
}


@gin.configurable(module="tasks.registry")
def stage1_rates(rates: Mapping[str, float] = STAGE1_RATES) -> dict[str, float]:
  """Mixing rates of pali_stage1_synthetic, by task name (a task left out gets rate 0)."""
  return dict(rates)


# Stage 2 (the resolution increase) upweights what more pixels help: OCR and documents (PaLI-3, section 3.2).
STAGE2_RATES: dict[str, float] = {**STAGE1_RATES, "webli_ocr_synthetic": 3.0, "documents_synthetic": 2.0,
                                  "charts_synthetic": 0.5}


@gin.configurable(module="tasks.registry")
def stage2_rates(rates: Mapping[str, float] = STAGE2_RATES) -> dict[str, float]:
  """Mixing rates of pali_stage2_synthetic, by task name (a task left out gets rate 0)."""
  return dict(rates)


# ----------------------------------------------------------------------------------------------------------------
# The source
# ----------------------------------------------------------------------------------------------------------------

ExampleFn = Callable[[int, str, int, int], dict]  # (seed, split, index, image_size) -> example


def _to_uint8(image: np.ndarray) -> np.ndarray:
  """float32 [-1, 1] -> uint8 0..255, rounded half up (what a PNG of the rendering would hold).

  In float32 and in place: at 812 px this runs once per example on the pipeline's critical path.
  """
  pixels = image * np.float32(127.5)
  pixels += np.float32(128.0)  # + 127.5 to shift, + 0.5 so that truncation rounds
  np.clip(pixels, 0, 255, out=pixels)
  return pixels.astype(np.uint8)


class GeneratorSource(seqio.DataSource):
  """A seqio DataSource over a deterministic generator (see the module docstring).

  Args:
    example_fn: (seed, split, index, image_size) -> dict with at least `keys`; 'image' float32 [-1, 1] or
      uint8 [S, S, 3], every other key a string.
    keys: the features the source emits.
    validation_examples: the size of the "validation" split.
    square: the images are image_size() square; False: each has its own shape.
  """

  def __init__(self, example_fn: ExampleFn, keys: Sequence[str], validation_examples: int = 1024,
               square: bool = True):
    super().__init__(splits=SPLITS, performs_internal_shuffling=True)
    self._example_fn = example_fn
    self._keys = tuple(keys)
    self._validation_examples = validation_examples
    self._square = square

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return True

  def list_shards(self, split: str) -> Sequence[str]:
    return [split]

  def num_examples(self, split: str) -> int | None:
    """The split's size; None for the unbounded "train". (Not seqio's num_input_examples, which would make
    seqio cache the whole split in memory: 1024 images of 812 px are 2 GB.)"""
    if split not in SPLITS:
      raise ValueError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    return None if split == "train" else self._validation_examples

  def get_dataset(self, split: str = "train", shuffle: bool = True, seed: int | None = None,
                  shard_info: seqio.ShardInfo | None = None, *, sequence_length=None, use_cached=False,
                  num_epochs=1) -> tf.data.Dataset:
    """Examples 0, 1, 2, ... of the split (those of one shard: k = index, index + num_shards, ...)."""
    del shuffle, sequence_length, use_cached, num_epochs  # generated examples are already in random order
    index, num_shards = (shard_info.index, shard_info.num_shards) if shard_info else (0, 1)
    end = self.num_examples(split) or _UNBOUNDED
    return self.examples_at(split, tf.data.Dataset.range(index, end, num_shards), seed)

  def examples_at(self, split: str, indices: tf.data.Dataset, seed: int | None) -> tf.data.Dataset:
    """The examples at a stream of int64 indices, in order (generated in parallel)."""
    self.num_examples(split)  # checks the split
    seed = 0 if seed is None else int(seed)
    size = image_size()
    image_shape = [size, size, 3] if self._square else [None, None, 3]
    specs = {k: tf.TensorSpec(image_shape, tf.uint8) if k == "image" else tf.TensorSpec([], tf.string)
             for k in self._keys}

    def generate(index: np.int64) -> list:
      ex = self._example_fn(seed, split, int(index), size)
      values = [ex[k] for k in self._keys]
      return [_to_uint8(v) if k == "image" and v.dtype != np.uint8 else v for k, v in zip(self._keys, values, strict=True)]

    def fetch(index: tf.Tensor) -> dict:
      values = tf.numpy_function(generate, [index], [s.dtype for s in specs.values()], stateful=False)
      ex = {k: tf.ensure_shape(v, s.shape) for (k, s), v in zip(specs.items(), values, strict=True)}
      ex["example_seed"] = tf.stack([tf.constant(seed, tf.int64), index])
      return ex

    return indices.map(fetch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


# ----------------------------------------------------------------------------------------------------------------
# Generators as (seed, split, index, image_size) -> example
# ----------------------------------------------------------------------------------------------------------------


def _scene_task(kind: str) -> ExampleFn:
  def example(seed, split, index, size):
    return scene_tasks.example(seed, index, split, kind, size, max_objects=scene_max_objects())
  return example


def _rendered(module) -> ExampleFn:
  def example(seed, split, index, size):
    return module.example(seed, index, split, size)
  return example


def _ocr(seed, split, index, size):
  if split != "validation":
    return ocr.example(seed, index, split, size)
  return ocr.example(seed, index, split, size, plan_size=text_validation_plan_size(),
                     words_split=ocr_validation_words())


def _documents(seed, split, index, size):
  plan = text_validation_plan_size() if split == "validation" else None
  return documents.example(seed, index, split, size, plan_size=plan)


def _pair(seed, split, index, size):
  ex = scene_tasks.example(seed, index, split, "caption", size)
  return {"image": ex["image"], "text": ex["targets"]}


def _granular_pair(seed, split, index, size):
  """A scene and its caption at a granularity drawn by caption_granularity()'s rates."""
  ex = scene_tasks.example(seed, index, split, "caption", size, with_scene=True)
  rng = render.example_rng(seed, split, index, _GRANULARITY_STREAM)
  return {"image": ex["image"], "text": scenes.caption_at(ex["scene"], _draw(caption_granularity(), rng), rng)}


def _draw(rates: Mapping[str, float], rng: np.random.Generator) -> str:
  names = tuple(rates)
  weights = np.array([rates[n] for n in names], np.float64)
  return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def _locca_pair(seed, split, index, size):
  """A scene, its caption for the image-text loss, and a LocCa task about it; or a line of text and the text
  (see locca_tasks)."""
  rng = render.example_rng(seed, split, index, _LOCCA_STREAM)
  kind = _draw(locca_tasks(), rng)
  if kind == "ocr":
    ex = ocr.example(seed, index, split, size)
    return {"image": ex["image"], "text": ex["targets"], "locca_inputs": "ocr", "locca_targets": ex["targets"]}
  if kind == "caption":
    ex = scene_tasks.example(seed, index, split, "caption", size, with_scene=True)
    inputs, targets = "caption en", ex["targets"]
  else:
    ex = scene_tasks.example(seed, index, split, "refexp", size, with_scene=True, max_objects=locca_max_objects())
    inputs, targets = ex["inputs"], ex["targets"]
    if kind == "grounded":  # grounded captioning: the box in, its phrase out
      inputs, targets = f"grounded {targets}", inputs.removeprefix("refexp ")
  return {"image": ex["image"], "text": _pair_caption(ex["scene"], rng), "locca_inputs": inputs,
          "locca_targets": targets}


def _pair_caption(scene, rng: np.random.Generator) -> str:
  """A caption for the image-text loss: English at caption_languages()'s share (at a granularity drawn by
  caption_granularity()), else in another of tasks.multilingual's languages, drawn evenly."""
  if rng.random() < caption_languages():
    return scenes.caption_at(scene, _draw(caption_granularity(), rng), rng)
  others = tuple(lang for lang in multilingual.LANGUAGES if lang != "en")
  lang = others[int(rng.integers(len(others)))]
  return multilingual.caption(scene, lang, multilingual.sample_plan(scene, rng))


def _multilingual_pair(seed, split, index, size):
  """A scene and its caption, in English or another language (_pair_caption)."""
  ex = scene_tasks.example(seed, index, split, "caption", size, with_scene=True)
  rng = render.example_rng(seed, split, index, _CAPTION_STREAM)
  return {"image": ex["image"], "text": _pair_caption(ex["scene"], rng)}


def _native(module) -> ExampleFn:
  def example(seed, split, index, size):
    return module.example(seed, index, split, size, native_aspect=True)
  return example


SCENE_ASPECTS = (1 / 3, 3.0)  # height / width of the native-aspect scenes, drawn log-uniformly


def _native_pair(seed, split, index, size):
  """A scene at an aspect ratio from 1:3 to 3:1 (the area of a size x size square) and its caption."""
  rng = render.example_rng(seed, split, index, _NATIVE_SCENE_STREAM)
  scene = scenes.sample_scene(rng, scene_tasks.SPLITS[split])
  text = scenes.caption(scene, rng)
  image = scenes.render_scenes([scene], render.native_hw(size, SCENE_ASPECTS, rng), rng)[0]
  return {"image": image, "text": text}


def _passage(seed, split, index, size):
  """A passage of 2-8 texts of the generators (captions in any language, OCR lines, documents, chart QA)."""
  del size  # text only
  rng = render.example_rng(seed, split, index, _PASSAGE_STREAM)
  texts = []
  for _ in range(int(rng.integers(2, 9))):
    kind = int(rng.integers(5))
    if kind in (0, 1):
      objects = scenes.sample_scene(rng, scene_tasks.SPLITS[split])
      if kind == 0:
        texts.append(scenes.caption(objects, rng))
      else:
        lang = tuple(multilingual.LANGUAGES)[int(rng.integers(len(multilingual.LANGUAGES)))]
        texts.append(multilingual.caption(objects, lang, multilingual.sample_plan(objects, rng)))
    elif kind == 2:
      texts.append(" ".join(ocr.sample_lines(rng, split, max_lines=4, max_chars=40)))
    elif kind == 3:
      texts.append(documents.sample_document(rng, split, 224).text())
    else:
      pairs = [p for group in charts.sample_chart(rng, split, 224).qa().values() for p in group]
      question, answer = pairs[int(rng.integers(len(pairs)))]
      texts.append(f"{question} {answer}")
  return {"targets": " ".join(texts)}


# ----------------------------------------------------------------------------------------------------------------
# Tasks
# ----------------------------------------------------------------------------------------------------------------

VOCABULARY = vocab.PaliVocabulary()  # follows the gin-configured tasks.vocab.vocabulary at each use
# An image task gives 'image', or NaFlex 'patches' and 'spatial_shapes' (tasks.preprocessors.image_inputs).
IMAGE_FEATURES = {"image": seqio.ContinuousFeature(dtype=tf.float32, rank=3, required=False),
                  "patches": seqio.ContinuousFeature(dtype=tf.float32, rank=2, required=False),
                  "spatial_shapes": seqio.ContinuousFeature(dtype=tf.int32, rank=1, required=False)}
IMAGE_TEXT_FEATURES = {**IMAGE_FEATURES, "inputs": seqio.Feature(VOCABULARY), "targets": seqio.Feature(VOCABULARY)}
PAIR_FEATURES = {**IMAGE_FEATURES, "text": seqio.Feature(VOCABULARY)}
# Multi-crop views (tasks.preprocessors.multi_crop), in place of 'image'.
VIEW_FEATURES = {"global_views": seqio.ContinuousFeature(dtype=tf.float32, rank=4, required=False),
                 "local_views": seqio.ContinuousFeature(dtype=tf.float32, rank=4, required=False),
                 "global_masks": seqio.ContinuousFeature(dtype=tf.int32, rank=2, required=False)}
TEXT_FEATURES = {"inputs": seqio.Feature(VOCABULARY), "targets": seqio.Feature(VOCABULARY)}


def _image_inputs(ds: tf.data.Dataset, sequence_length) -> tf.data.Dataset:
  return preprocessors.image_inputs(ds, sequence_length, image_size=image_size(), patch_size=patch_size())


def _crop(ds: tf.data.Dataset) -> tf.data.Dataset:
  # No flip: captions name positions ("on the left"). Crops keep most of the image for the same reason.
  return preprocessors.random_crop_flip(ds, image_size=image_size(), area_range=(0.8, 1.0), flip=False)


_TOKENIZE = [preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim]
IMAGE_PREPROCESSORS = [_image_inputs] + _TOKENIZE

IMAGE_TASKS: dict[str, ExampleFn] = {
    "webli_captions_synthetic": _scene_task("caption"),
    "webli_splitcap_synthetic": _scene_task("splitcap"),
    "cc3m35l_multilingual_synthetic": _rendered(multilingual),
    "webli_ocr_synthetic": _ocr,
    "vqa_synthetic": _scene_task("vqa"),
    "vqg_synthetic": _scene_task("vqg"),
    "detection_synthetic": _scene_task("detect"),
    "refexp_synthetic": _scene_task("refexp"),
    "documents_synthetic": _documents,
    "charts_synthetic": _rendered(charts),
}

for _name, _fn in IMAGE_TASKS.items():
  seqio.TaskRegistry.add(_name, source=GeneratorSource(_fn, ("image", "inputs", "targets")),
                         preprocessors=IMAGE_PREPROCESSORS, output_features=IMAGE_TEXT_FEATURES,
                         shuffle_buffer_size=None)

NATIVE_ASPECT_TASKS: dict[str, ExampleFn] = {
    "documents_native_synthetic": _native(documents),
    "charts_native_synthetic": _native(charts),
}

for _name, _fn in NATIVE_ASPECT_TASKS.items():
  seqio.TaskRegistry.add(_name, source=GeneratorSource(_fn, ("image", "inputs", "targets"), square=False),
                         preprocessors=IMAGE_PREPROCESSORS, output_features=IMAGE_TEXT_FEATURES,
                         shuffle_buffer_size=None)

seqio.TaskRegistry.add(
    "scene_pairs_native_synthetic", source=GeneratorSource(_native_pair, ("image", "text"), square=False),
    preprocessors=IMAGE_PREPROCESSORS, output_features=PAIR_FEATURES, shuffle_buffer_size=None)

def _multi_crop(ds: tf.data.Dataset, keep_image: bool = False) -> tf.data.Dataset:
  return preprocessors.multi_crop(ds, **views(), patch_size=patch_size(), keep_image=keep_image)


seqio.TaskRegistry.add(
    "scene_pairs_views_synthetic", source=GeneratorSource(_granular_pair, ("image", "text")),
    preprocessors=[preprocessors.normalize_image, _multi_crop] + _TOKENIZE,
    output_features={**PAIR_FEATURES, **VIEW_FEATURES}, shuffle_buffer_size=None)

_LOCCA_KEYS = ("image", "text", "locca_inputs", "locca_targets")
LOCCA_FEATURES = {"locca_inputs": seqio.Feature(VOCABULARY), "locca_targets": seqio.Feature(VOCABULARY)}
seqio.TaskRegistry.add(
    "scene_pairs_multilingual_synthetic", source=GeneratorSource(_multilingual_pair, ("image", "text")),
    preprocessors=[preprocessors.normalize_image] + _TOKENIZE, output_features=PAIR_FEATURES,
    shuffle_buffer_size=None)
seqio.TaskRegistry.add(
    "scene_pairs_locca_synthetic", source=GeneratorSource(_locca_pair, _LOCCA_KEYS),
    preprocessors=[preprocessors.normalize_image] + _TOKENIZE,
    output_features={**PAIR_FEATURES, **LOCCA_FEATURES}, shuffle_buffer_size=None)
seqio.TaskRegistry.add(
    "scene_pairs_siglip2_synthetic", source=GeneratorSource(_locca_pair, _LOCCA_KEYS),
    preprocessors=[preprocessors.normalize_image, functools.partial(_multi_crop, keep_image=True)] + _TOKENIZE,
    output_features={**PAIR_FEATURES, **VIEW_FEATURES, **LOCCA_FEATURES}, shuffle_buffer_size=None)

seqio.TaskRegistry.add(
    "webli_pairs_synthetic", source=GeneratorSource(_pair, ("image", "text")),
    preprocessors=[preprocessors.normalize_image, _crop] + _TOKENIZE, output_features=PAIR_FEATURES,
    shuffle_buffer_size=None)

seqio.TaskRegistry.add(
    "ul2_denoise_synthetic", source=GeneratorSource(_passage, ("targets",)),
    preprocessors=[preprocessors.tokenize, preprocessors.ul2_denoise,
                   seqio.preprocessors.append_eos_after_trim],
    output_features=TEXT_FEATURES, shuffle_buffer_size=None)


def _rate(rates: Callable[[], Mapping[str, float]], task: seqio.Task) -> float:
  """A task's rate, read from the gin-configurable `rates` when the mixture is built (not at import)."""
  return float(rates().get(task.name, 0.0))


for _name, _rates in (("pali_stage1_synthetic", stage1_rates), ("pali_stage2_synthetic", stage2_rates)):
  seqio.MixtureRegistry.add(_name, [(task, functools.partial(_rate, _rates)) for task in IMAGE_TASKS])
# Documents (forms, tables, receipts) and charts at their native aspect ratio, evenly.
seqio.MixtureRegistry.add("documents_charts_native_synthetic", [(name, 1.0) for name in NATIVE_ASPECT_TASKS])


__all__ = ["SPLITS", "gin_bound", "image_size", "image_size_bound", "text_validation_plan_size", "ocr_validation_words",
           "scene_max_objects", "patch_size", "patch_size_bound", "views", "caption_granularity",
           "caption_languages", "VIEW_FEATURES", "LOCCA_TASKS", "locca_tasks", "LOCCA_FEATURES", "SCENE_ASPECTS",
           "NATIVE_ASPECT_TASKS", "STAGE1_RATES", "stage1_rates", "STAGE2_RATES", "stage2_rates", "GeneratorSource",
           "VOCABULARY", "IMAGE_TEXT_FEATURES", "PAIR_FEATURES", "TEXT_FEATURES", "IMAGE_PREPROCESSORS",
           "IMAGE_TASKS"]
