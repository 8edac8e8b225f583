"""The transfer benchmarks: each one's files (read by tasks.benchmark_files), prompts and scorer.

A PaLI evaluator (`Evaluator`) reads one benchmark's file, writes each example's PaLI prompt, and scores the
decoded answers:
  coco_captions, coco_karpathy  'caption en'                 CIDEr (vlm.metrics.cider), BLEU-4, ROUGE-L
  xm3600                        'caption <lang>'             CIDEr per language (xm3600_cider) and their mean
  vqav2, textvqa, okvqa         'answer en <question>'       VQA accuracy (official script)
  docvqa, infovqa, stvqa        'answer en <question>'       ANLS
  chartqa                       'answer en <query>'          relaxed accuracy
  refcoco, refcoco_plus,        'refexp <phrase>'            accuracy at IoU >= 0.5 of the answer's location box,
  refcocog                                                   and refexp_centre_baseline
A SigLIP evaluator (`EmbeddingEvaluator`) scores image and text embeddings (encoders.siglip.load):
  zero_shot         an ImageNet-style folder, classes by a prompt-template ensemble (TEMPLATES)   accuracy
  coco_retrieval    Karpathy's split, several captions an image                       R@1/5/10 both ways
  xm3600_retrieval  XM3600, each language's captions                   R@1/5/10 both ways a language, and means
  fewshot           ImageNet-style train and test folders, no texts    ridge-regression probe on k shots a class
Each evaluator's files are gin parameters of its function below (e.g. `vqav2.questions`), relative to DATA_DIR.
vlm.transfer_eval runs them.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import gin
import numpy as np

from tasks import benchmark_files
from vlm import metrics

PLOTTED_EXAMPLES = 8  # shown in each task's grid


@dataclasses.dataclass(frozen=True)
class Evaluator:
  """One benchmark: its examples (read from its files), each example's prompt, and the scorer of answers.

  score(predictions, examples) -> {metric: value}; examples carry "height" and "width" of their image by then.
  """
  name: str
  examples: list[dict]
  prompt: Callable[[dict], str]
  score: Callable[[list[str], list[dict]], dict[str, float]]


def _references(examples: list[dict]) -> list[list[str]]:
  return [ex["references"] for ex in examples]


def _caption_prompt(_: dict) -> str:
  return "caption en"


def _answer_prompt(ex: dict) -> str:
  return f"answer en {ex['question']}"


def _scored_by(name: str, metric: Callable) -> Callable[[list[str], list[dict]], dict[str, float]]:
  return lambda predictions, examples: {name: metric(predictions, _references(examples))}


def _vqa_scorer(normalize_references: bool) -> Callable[[list[str], list[dict]], dict[str, float]]:
  """VQA accuracy as the official script computes it; normalize_references (gin, e.g.
  `vqav2.normalize_references`) also normalises raw human answers (vlm.metrics.vqa_accuracy)."""
  return _scored_by("vqa_accuracy", lambda p, r: metrics.vqa_accuracy(p, r, normalize_references))


def _score_captions(predictions: list[str], examples: list[dict]) -> dict[str, float]:
  """CIDEr, the COCO captioning figure, with the BLEU-4 and ROUGE-L that coco-caption prints beside it."""
  references = _references(examples)
  return {"cider": metrics.cider(predictions, references), "bleu4": metrics.bleu4(predictions, references),
          "rouge_l": metrics.rouge_l(predictions, references)}


def _path(data_dir: str, value: str | None, task: str, parameter: str) -> str:
  """A task's file or folder, relative to DATA_DIR; an unset one is an error saying which binding to give."""
  if value is None:
    raise ValueError(f"eval task {task} needs {task}.{parameter}: add --gin.{task}.{parameter}=\"'PATH'\" "
                     "(relative to DATA_DIR)")
  return os.path.join(data_dir, value)


@gin.configurable(module="vlm.transfer_tasks")
def coco_captions(data_dir: str, annotations: str | None = None, images: str | None = None) -> Evaluator:
  examples = benchmark_files.coco_captions(_path(data_dir, annotations, "coco_captions", "annotations"),
                                           _path(data_dir, images, "coco_captions", "images"))
  return Evaluator("coco_captions", examples, _caption_prompt, _score_captions)


@gin.configurable(module="vlm.transfer_tasks")
def coco_karpathy(data_dir: str, annotations: str | None = None, images: str | None = None,
                  split: str = "test") -> Evaluator:
  examples = benchmark_files.coco_karpathy(_path(data_dir, annotations, "coco_karpathy", "annotations"),
                                           _path(data_dir, images, "coco_karpathy", "images"), split)
  return Evaluator("coco_karpathy", examples, _caption_prompt, _score_captions)


def _vqav2_layout(name: str, data_dir: str, questions: str | None, annotations: str | None, images: str | None,
                  image_pattern: str, normalize_references: bool) -> Evaluator:
  """A task in VQAv2's file layout (questions json + annotations json), scored by the VQA script."""
  examples = benchmark_files.vqav2(_path(data_dir, questions, name, "questions"),
                                   _path(data_dir, annotations, name, "annotations"),
                                   _path(data_dir, images, name, "images"), image_pattern)
  return Evaluator(name, examples, _answer_prompt, _vqa_scorer(normalize_references))


@gin.configurable(module="vlm.transfer_tasks")
def vqav2(data_dir: str, questions: str | None = None, annotations: str | None = None, images: str | None = None,
          image_pattern: str = "COCO_{data_subtype}_{image_id:012d}.jpg",
          normalize_references: bool = False) -> Evaluator:
  return _vqav2_layout("vqav2", data_dir, questions, annotations, images, image_pattern, normalize_references)


@gin.configurable(module="vlm.transfer_tasks")
def okvqa(data_dir: str, questions: str | None = None, annotations: str | None = None, images: str | None = None,
          image_pattern: str = "COCO_{data_subtype}_{image_id:012d}.jpg",
          normalize_references: bool = False) -> Evaluator:
  """OK-VQA (Marino et al., 2019): VQAv2's file layout and COCO val2014 images, scored by the VQA script too."""
  return _vqav2_layout("okvqa", data_dir, questions, annotations, images, image_pattern, normalize_references)


@gin.configurable(module="vlm.transfer_tasks")
def textvqa(data_dir: str, annotations: str | None = None, images: str | None = None,
            image_pattern: str | None = None, normalize_references: bool = False) -> Evaluator:
  examples = benchmark_files.vqa_json(_path(data_dir, annotations, "textvqa", "annotations"),
                                      _path(data_dir, images, "textvqa", "images"), image_pattern)
  return Evaluator("textvqa", examples, _answer_prompt, _vqa_scorer(normalize_references))


@gin.configurable(module="vlm.transfer_tasks")
def docvqa(data_dir: str, annotations: str | None = None, images: str | None = None) -> Evaluator:
  examples = benchmark_files.vqa_json(_path(data_dir, annotations, "docvqa", "annotations"),
                                      _path(data_dir, images, "docvqa", "images"))
  return Evaluator("docvqa", examples, _answer_prompt, _scored_by("anls", metrics.anls))


@gin.configurable(module="vlm.transfer_tasks")
def infovqa(data_dir: str, annotations: str | None = None, images: str | None = None) -> Evaluator:
  """InfographicVQA (Mathew et al., 2022): DocVQA's json with the image in "image_local_name"; ANLS, as its
  RRC evaluation scores it."""
  examples = benchmark_files.named_vqa_json(_path(data_dir, annotations, "infovqa", "annotations"),
                                            _path(data_dir, images, "infovqa", "images"), "image_local_name")
  return Evaluator("infovqa", examples, _answer_prompt, _scored_by("anls", metrics.anls))


@gin.configurable(module="vlm.transfer_tasks")
def stvqa(data_dir: str, annotations: str | None = None, images: str | None = None) -> Evaluator:
  """ST-VQA task 3 (open vocabulary; Biten et al., 2019): its json, the image in "file_path" (relative to the
  images folder); ANLS (threshold 0.5, case-insensitive), the challenge's metric."""
  examples = benchmark_files.named_vqa_json(_path(data_dir, annotations, "stvqa", "annotations"),
                                            _path(data_dir, images, "stvqa", "images"), "file_path")
  return Evaluator("stvqa", examples, _answer_prompt, _scored_by("anls", metrics.anls))


@gin.configurable(module="vlm.transfer_tasks")
def chartqa(data_dir: str, annotations: str | None = None, images: str | None = None) -> Evaluator:
  examples = benchmark_files.chartqa(_path(data_dir, annotations, "chartqa", "annotations"),
                                     _path(data_dir, images, "chartqa", "images"))
  score = lambda predictions, examples: {  # noqa: E731  (one reference each: the label)
      "relaxed_accuracy": metrics.relaxed_accuracy(predictions, [ex["references"][0] for ex in examples])}
  return Evaluator("chartqa", examples, _answer_prompt, score)


def _refexp(name: str, data_dir: str, annotations: str | None, images: str | None) -> Evaluator:
  examples = benchmark_files.refcoco(_path(data_dir, annotations, name, "annotations"),
                                     _path(data_dir, images, name, "images"))
  return Evaluator(name, examples, lambda ex: f"refexp {ex['question']}", score_refexp)


@gin.configurable(module="vlm.transfer_tasks")
def refcoco(data_dir: str, annotations: str | None = None, images: str | None = None) -> Evaluator:
  return _refexp("refcoco", data_dir, annotations, images)


@gin.configurable(module="vlm.transfer_tasks")
def refcoco_plus(data_dir: str, annotations: str | None = None, images: str | None = None) -> Evaluator:
  """RefCOCO+ (no location words in its phrases), in refcoco's json layout."""
  return _refexp("refcoco_plus", data_dir, annotations, images)


@gin.configurable(module="vlm.transfer_tasks")
def refcocog(data_dir: str, annotations: str | None = None, images: str | None = None) -> Evaluator:
  """RefCOCOg (longer phrases), in refcoco's json layout."""
  return _refexp("refcocog", data_dir, annotations, images)


# XM3600 (Thapliyal et al., 2022): captions in 36 languages of the same 3,600 images.

# Its languages written without spaces between words. The file's "caption/tokenized" splits them into words, by a
# segmenter the release does not document (google/crossmodal-3600 issue #4), so predictions could not be split
# alike: CIDEr counts their characters instead.
UNSPACED_LANGUAGES = frozenset({"ja", "th", "zh"})


def xm3600_cider(predictions: list[str], references: list[list[str]], language: str) -> float:
  """CIDEr of one language's captions, as big_vision scores XM3600 (PaliGemma's xm3600 evaluation: the raw
  "caption"s, PTB-tokenised and lowercased by vlm.metrics.cider; idf from that language's references), except that
  zh, ja and th text, predictions and references alike, is first split into characters
  (vlm.metrics.segment_characters; Latin words and numbers in it stay whole), where PTB tokenisation would leave a
  whole unspaced clause as one token.
  """
  if language in UNSPACED_LANGUAGES:
    predictions = [metrics.segment_characters(p) for p in predictions]
    references = [[metrics.segment_characters(r) for r in refs] for refs in references]
  return metrics.cider(predictions, references)


def _by_language(examples: list[dict], values: list) -> dict[str, list]:
  """values (one an example) grouped by their example's language, languages in order of appearance."""
  groups: dict[str, list] = {}
  for ex, value in zip(examples, values):
    groups.setdefault(ex["language"], []).append(value)
  return groups


def _score_xm3600(predictions: list[str], examples: list[dict]) -> dict[str, float]:
  predictions, references = _by_language(examples, predictions), _by_language(examples, _references(examples))
  scores = {f"cider_{lang}": xm3600_cider(predictions[lang], references[lang], lang) for lang in predictions}
  return {**scores, "cider_mean": float(np.mean(list(scores.values())))}


def _languages(value) -> list[str] | None:
  """xm3600's `languages` binding: None (every language of the file), one code, or a list of codes."""
  if value is None:
    return None
  value = [value] if isinstance(value, str) else value
  if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
    raise ValueError(f"xm3600 languages must be a list of language codes such as ['en', 'zh']; got {value!r}")
  return list(value)


@gin.configurable(module="vlm.transfer_tasks")
def xm3600(data_dir: str, captions: str | None = None, images: str | None = None, languages=None) -> Evaluator:
  """Multilingual captioning: one example an (image, language) of `languages` (default: all of the file's)."""
  examples = benchmark_files.xm3600(_path(data_dir, captions, "xm3600", "captions"),
                                    _path(data_dir, images, "xm3600", "images"), _languages(languages))
  return Evaluator("xm3600", examples, lambda ex: f"caption {ex['language']}", _score_xm3600)


# SigLIP tasks: embeddings of images and texts, scored without decoding.

# CLIP-style prompt ensemble for zero-shot classification; `{}` is the class name. Swap by gin:
# --gin.zero_shot.templates="['a photo of a {}.']".
TEMPLATES = ("a photo of a {}.", "a photo of the {}.", "a picture of a {}.", "a close-up photo of a {}.",
             "a cropped photo of the {}.", "a bright photo of a {}.", "a dark photo of a {}.",
             "a rendering of a {}.")


@dataclasses.dataclass(frozen=True)
class EmbeddingEvaluator:
  """A SigLIP benchmark: images and texts to embed, and the scorer of their L2-normalised embeddings.

  score(image_embeddings [n, D] of the images that exist, text_embeddings [M, D], their indices in images).
  `texts` may be empty (fewshot): text_embeddings are then [0, D].
  """
  name: str
  images: list[str]
  texts: list[str]
  score: Callable[[np.ndarray, np.ndarray, np.ndarray], dict[str, float]]


def _normalise(x: np.ndarray) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@gin.configurable(module="vlm.transfer_tasks")
def zero_shot(data_dir: str, images: str | None = None, templates=TEMPLATES) -> EmbeddingEvaluator:
  """Classification of an ImageNet-style folder by each class's mean template embedding."""
  if isinstance(templates, str) or not templates or not all(isinstance(t, str) and "{}" in t for t in templates):
    raise ValueError(f"zero_shot.templates must be a list of strings with {{}} where the class name goes; "
                     f"got {templates!r}")
  paths, labels, classes = benchmark_files.image_folder(_path(data_dir, images, "zero_shot", "images"))
  texts = [t.format(c) for c in classes for t in templates]

  def score(image_embeddings, text_embeddings, present):
    ensemble = _normalise(text_embeddings.reshape(len(classes), len(templates), -1).mean(axis=1))
    return {"zero_shot_accuracy": metrics.zero_shot_accuracy(image_embeddings, ensemble,
                                                             np.asarray(labels)[present])}
  return EmbeddingEvaluator("zero_shot", paths, texts, score)


@gin.configurable(module="vlm.transfer_tasks")
def coco_retrieval(data_dir: str, annotations: str | None = None, images: str | None = None,
                   split: str = "test") -> EmbeddingEvaluator:
  """Image-text retrieval on Karpathy's split (dataset_coco.json; several captions an image), R@1/5/10."""
  examples = benchmark_files.coco_karpathy(_path(data_dir, annotations, "coco_retrieval", "annotations"),
                                           _path(data_dir, images, "coco_retrieval", "images"), split)
  text_image = np.array([i for i, ex in enumerate(examples) for _ in ex["references"]])

  def score(image_embeddings, text_embeddings, present):
    kept = np.isin(text_image, present)  # the captions of images that exist
    return metrics.retrieval_multi_caption(image_embeddings, text_embeddings[kept],
                                           np.searchsorted(present, text_image[kept]))
  return EmbeddingEvaluator("coco_retrieval", [ex["image"] for ex in examples],
                            [r for ex in examples for r in ex["references"]], score)


@gin.configurable(module="vlm.transfer_tasks")
def xm3600_retrieval(data_dir: str, captions: str | None = None, images: str | None = None,
                     languages=None) -> EmbeddingEvaluator:
  """Image-text retrieval on XM3600 in each language of `languages` (default: all of the file's): the 3,600
  images against that language's captions (several an image), R@1/5/10 both ways, as coco_retrieval scores them;
  keys "<metric>_<lang>" and "<metric>_mean", the mean over languages."""
  examples = benchmark_files.xm3600(_path(data_dir, captions, "xm3600_retrieval", "captions"),
                                    _path(data_dir, images, "xm3600_retrieval", "images"), _languages(languages))
  paths = list(dict.fromkeys(ex["image"] for ex in examples))  # each image once, in file order
  row = {path: i for i, path in enumerate(paths)}
  text_image = np.array([row[ex["image"]] for ex in examples for _ in ex["references"]])
  text_language = np.array([ex["language"] for ex in examples for _ in ex["references"]])
  languages = list(dict.fromkeys(ex["language"] for ex in examples))

  def score(image_embeddings, text_embeddings, present):
    kept = np.isin(text_image, present)  # the captions of images that exist (each has some in every language)
    scores = {}
    for lang in languages:
      mine = kept & (text_language == lang)
      recalls = metrics.retrieval_multi_caption(image_embeddings, text_embeddings[mine],
                                                np.searchsorted(present, text_image[mine]))
      scores.update({f"{name}_{lang}": value for name, value in recalls.items()})
    means = {f"{name}_mean": float(np.mean([scores[f"{name}_{lang}"] for lang in languages])) for name in recalls}
    return {**scores, **means}
  return EmbeddingEvaluator("xm3600_retrieval", paths, [r for ex in examples for r in ex["references"]], score)


def _draws(labels: np.ndarray, num_classes: int, shots: int, draws: int) -> list[list[np.ndarray]]:
  """Per draw (seed 0, 1, ...), per class, a random order of that class's first `shots` train images, as
  big_vision's few-shot evaluator draws them (one permutation a class; k shots are its first k)."""
  out = []
  for seed in range(draws):
    rng = np.random.default_rng(seed)
    out.append([rng.permutation(np.flatnonzero(labels == c))[:shots] for c in range(num_classes)])
  return out


def probe_accuracy(train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray,
                   test_labels: np.ndarray, l2: float) -> float:
  """big_vision's few-shot ridge regression: features standardised by the shots' mean and std (+1e-5), then
  vlm.metrics.linear_probe (its bias unpenalised, where big_vision's constant feature of 100 nearly is)."""
  mean, std = train_features.mean(axis=0), train_features.std(axis=0) + 1e-5
  return metrics.linear_probe((train_features - mean) / std, train_labels, (test_features - mean) / std,
                              test_labels, l2)


def _check_shots(shots, draws) -> list[int]:
  shots = [shots] if isinstance(shots, int) else shots
  if (isinstance(shots, str) or not shots or not all(isinstance(k, int) and not isinstance(k, bool) and k > 0
                                                     for k in shots)):
    raise ValueError(f"fewshot.shots must be a list of positive integers such as [1, 5, 10, 25]; got {shots!r}")
  if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
    raise ValueError(f"fewshot.draws must be an integer >= 1; got {draws!r}")
  return list(shots)


@gin.configurable(module="vlm.transfer_tasks")
def fewshot(data_dir: str, train_images: str | None = None, test_images: str | None = None,
            shots=(1, 5, 10, 25), draws: int = 3, l2: float = 2.0**10) -> EmbeddingEvaluator:
  """Few-shot linear probes on image embeddings, as big_vision's fewshot_lsr evaluator (and its default config:
  shots 1/5/10/25, 3 draws, ridge strength 2^10, fixed rather than tuned on the test set).

  For each k of `shots` and each of `draws` random draws of k train images a class (seeds 0, 1, ...), a ridge
  regression (probe_accuracy) on their embeddings (the L2-normalised pooled ones every SigLIP task uses)
  classifies every test image; `fewshot_<k>shot` is the mean accuracy over the draws. Train and test folders are
  ImageNet-style; test classes are matched to train classes by folder name. Only the drawn train images are
  embedded. A class with fewer train images than the largest k is an error (big_vision would quietly train on
  fewer).
  """
  shots = _check_shots(shots, draws)
  train_root = _path(data_dir, train_images, "fewshot", "train_images")
  test_root = _path(data_dir, test_images, "fewshot", "test_images")
  train_paths, train_labels, classes = benchmark_files.image_folder(train_root)
  test_paths, test_labels, test_classes = benchmark_files.image_folder(test_root)
  missing = [c for c in test_classes if c not in classes]
  if missing:
    raise ValueError(f"fewshot: test class {missing[0]!r} of {test_root} has no folder in {train_root}; test classes "
                     "are matched to train classes by folder name")
  counts = np.bincount(train_labels, minlength=len(classes))
  if counts.min() < max(shots):
    raise ValueError(f"fewshot: class {classes[counts.argmin()]!r} of {train_root} has {counts.min()} image(s), fewer "
                     f"than the {max(shots)} shots asked; lower fewshot.shots or add images")
  drawn = _draws(np.asarray(train_labels), len(classes), max(shots), draws)
  embedded = sorted({int(i) for per_class in drawn for indices in per_class for i in indices})
  position = {train_index: p for p, train_index in enumerate(embedded)}  # the evaluator's images: these, then tests
  drawn = [[[position[int(i)] for i in indices] for indices in per_class] for per_class in drawn]
  labels = np.array([train_labels[i] for i in embedded] + [classes.index(test_classes[y]) for y in test_labels])
  tests = np.arange(len(embedded), len(labels))

  def score(image_embeddings, _, present):
    row = {int(image): r for r, image in enumerate(present)}  # an image that exists -> its embedding's row
    def rows(images):
      return [row[i] for i in images if i in row]
    test_rows = rows(tests)
    scores = {}
    for k in shots:
      accuracies = []
      for per_class in drawn:
        train_rows = rows([p for indices in per_class for p in indices[:k]])
        accuracies.append(probe_accuracy(image_embeddings[train_rows], labels[present[train_rows]],
                                         image_embeddings[test_rows], labels[present[test_rows]], l2))
      scores[f"fewshot_{k}shot"] = float(np.mean(accuracies))
    return scores
  return EmbeddingEvaluator("fewshot", [train_paths[i] for i in embedded] + test_paths, [], score)


TASKS: dict[str, Callable[[str], Evaluator | EmbeddingEvaluator]] = {f.__name__: f for f in (
    coco_captions, coco_karpathy, xm3600, vqav2, textvqa, okvqa, docvqa, infovqa, stvqa, chartqa, refcoco,
    refcoco_plus, refcocog, zero_shot, coco_retrieval, xm3600_retrieval, fewshot)}
SIGLIP_TASKS = frozenset({"zero_shot", "coco_retrieval", "xm3600_retrieval", "fewshot"})  # the rest are PaLI tasks


def target_box(ex: dict) -> tuple[float, float, float, float]:
  """A RefCOCO example's [x, y, w, h] as (y0, x0, y1, x1), the order of location tokens."""
  x, y, w, h = ex["bbox"]
  return (y, x, y + h, x + w)


def answer_box(answer: str, ex: dict) -> tuple[float, ...] | None:
  """The first box an answer's location tokens name, in the pixels of the example's image; None if none.

  vlm.pali squashes every image to the model's square, so the tokens are fractions of the image itself.
  """
  from tasks import locations  # pylint: disable=import-outside-toplevel
  boxes = locations.tokens_to_boxes(answer, ex["height"], ex["width"])
  return boxes[0] if boxes else None


def score_refexp(predictions: list[str], examples: list[dict]) -> dict[str, float]:
  targets = [target_box(ex) for ex in examples]
  return {"refexp_accuracy": metrics.refexp_accuracy([answer_box(p, ex) for p, ex in zip(predictions, examples)],
                                                     targets),
          "refexp_centre_baseline": metrics.refexp_centre_baseline(targets, [(ex["height"], ex["width"])
                                                                            for ex in examples])}


def build(names, data_dir: str) -> list[Evaluator | EmbeddingEvaluator]:
  """The evaluators of `names`, their files read and checked (before any model is loaded)."""
  if isinstance(names, str):
    names = [names]
  unknown = [n for n in names if n not in TASKS]
  if unknown:
    raise ValueError(f"unknown eval task {unknown[0]!r}; EVAL_TASKS may name {', '.join(TASKS)}")
  if not names:
    raise ValueError(f"EVAL_TASKS is empty; name at least one of {', '.join(TASKS)}")
  siglip = [n for n in names if n in SIGLIP_TASKS]
  if siglip and len(siglip) < len(names):
    raise ValueError(f"EVAL_TASKS mixes SigLIP tasks ({', '.join(siglip)}) with PaLI tasks "
                     f"({', '.join(n for n in names if n not in siglip)}); a checkpoint is one or the other: run "
                     "them separately")
  return [TASKS[name](data_dir) for name in names]
