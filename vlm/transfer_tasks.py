"""The transfer benchmarks: each one's files (read by tasks.benchmark_files), prompts and scorer.

A PaLI evaluator (`Evaluator`) reads one benchmark's file, writes each example's PaLI prompt, and scores the
decoded answers:
  coco_captions, coco_karpathy  'caption en'                 CIDEr (vlm.metrics.cider), BLEU-4, ROUGE-L
  vqav2, textvqa                'answer en <question>'       VQA accuracy (official script)
  docvqa                        'answer en <question>'       ANLS
  chartqa                       'answer en <query>'          relaxed accuracy
  refcoco                       'refexp <phrase>'            accuracy at IoU >= 0.5 of the answer's location box,
                                                             and refexp_centre_baseline
A SigLIP evaluator (`EmbeddingEvaluator`) scores image and text embeddings (encoders.siglip.load):
  zero_shot       an ImageNet-style folder, classes by a prompt-template ensemble (TEMPLATES)   accuracy
  coco_retrieval  Karpathy's split, several captions an image                         R@1/5/10 both ways
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


@gin.configurable(module="vlm.transfer_tasks")
def vqav2(data_dir: str, questions: str | None = None, annotations: str | None = None, images: str | None = None,
          image_pattern: str = "COCO_{data_subtype}_{image_id:012d}.jpg") -> Evaluator:
  examples = benchmark_files.vqav2(_path(data_dir, questions, "vqav2", "questions"),
                                   _path(data_dir, annotations, "vqav2", "annotations"),
                                   _path(data_dir, images, "vqav2", "images"), image_pattern)
  return Evaluator("vqav2", examples, _answer_prompt, _scored_by("vqa_accuracy", metrics.vqa_accuracy))


@gin.configurable(module="vlm.transfer_tasks")
def textvqa(data_dir: str, annotations: str | None = None, images: str | None = None,
            image_pattern: str | None = None) -> Evaluator:
  examples = benchmark_files.vqa_json(_path(data_dir, annotations, "textvqa", "annotations"),
                                      _path(data_dir, images, "textvqa", "images"), image_pattern)
  return Evaluator("textvqa", examples, _answer_prompt, _scored_by("vqa_accuracy", metrics.vqa_accuracy))


@gin.configurable(module="vlm.transfer_tasks")
def docvqa(data_dir: str, annotations: str | None = None, images: str | None = None) -> Evaluator:
  examples = benchmark_files.vqa_json(_path(data_dir, annotations, "docvqa", "annotations"),
                                      _path(data_dir, images, "docvqa", "images"))
  return Evaluator("docvqa", examples, _answer_prompt, _scored_by("anls", metrics.anls))


@gin.configurable(module="vlm.transfer_tasks")
def chartqa(data_dir: str, annotations: str | None = None, images: str | None = None) -> Evaluator:
  examples = benchmark_files.chartqa(_path(data_dir, annotations, "chartqa", "annotations"),
                                     _path(data_dir, images, "chartqa", "images"))
  score = lambda predictions, examples: {  # noqa: E731  (one reference each: the label)
      "relaxed_accuracy": metrics.relaxed_accuracy(predictions, [ex["references"][0] for ex in examples])}
  return Evaluator("chartqa", examples, _answer_prompt, score)


@gin.configurable(module="vlm.transfer_tasks")
def refcoco(data_dir: str, annotations: str | None = None, images: str | None = None) -> Evaluator:
  examples = benchmark_files.refcoco(_path(data_dir, annotations, "refcoco", "annotations"),
                                     _path(data_dir, images, "refcoco", "images"))
  return Evaluator("refcoco", examples, lambda ex: f"refexp {ex['question']}", score_refexp)


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


TASKS: dict[str, Callable[[str], Evaluator | EmbeddingEvaluator]] = {f.__name__: f for f in (
    coco_captions, coco_karpathy, vqav2, textvqa, docvqa, chartqa, refcoco, zero_shot, coco_retrieval)}
SIGLIP_TASKS = frozenset({"zero_shot", "coco_retrieval"})  # the rest are PaLI tasks


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


def centre_boxes(examples: list[dict]) -> list[tuple[float, float, float, float]]:
  """refexp_centre_baseline's guesses: a box at each image's centre, of the targets' mean size.

  The mean is of sizes relative to their images (COCO images differ in size), scaled to each image.
  """
  relative = np.mean([[ex["bbox"][3] / ex["height"], ex["bbox"][2] / ex["width"]] for ex in examples], axis=0)
  out = []
  for ex in examples:
    h, w = relative[0] * ex["height"], relative[1] * ex["width"]
    out.append(((ex["height"] - h) / 2, (ex["width"] - w) / 2, (ex["height"] + h) / 2, (ex["width"] + w) / 2))
  return out


def score_refexp(predictions: list[str], examples: list[dict]) -> dict[str, float]:
  targets = [target_box(ex) for ex in examples]
  return {"refexp_accuracy": metrics.refexp_accuracy([answer_box(p, ex) for p, ex in zip(predictions, examples)],
                                                     targets),
          "refexp_centre_baseline": metrics.refexp_accuracy(centre_boxes(examples), targets)}


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
