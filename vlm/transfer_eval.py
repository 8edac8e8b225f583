"""Transfer evaluations of a checkpoint on the benchmarks' own files, scored as their own scripts score them.

A PaLI evaluator reads one benchmark's file (tasks.benchmark_files), writes each example's PaLI prompt, and
scores the decoded answers:
  coco_captions, coco_karpathy  'caption en'                 CIDEr (vlm.metrics.cider), BLEU-4, ROUGE-L
  vqav2, textvqa                'answer en <question>'       VQA accuracy (official script)
  docvqa                        'answer en <question>'       ANLS
  chartqa                       'answer en <query>'          relaxed accuracy
  refcoco                       'refexp <phrase>'            accuracy at IoU >= 0.5 of the answer's location box,
                                                             and refexp_centre_baseline
A SigLIP evaluator scores image and text embeddings (encoders.siglip.load):
  zero_shot       an ImageNet-style folder, classes by a prompt-template ensemble (TEMPLATES)   accuracy
  coco_retrieval  Karpathy's split, several captions an image                         R@1/5/10 both ways
Each evaluator's files are gin parameters of its function below (e.g. `vqav2.questions`), relative to DATA_DIR.
`evaluate` runs every task with one loop per model kind (vlm.pali's generate, or the SigLIP towers, in
batches) and writes, under the output directory: <task>.json (metrics; for PaLI tasks every example's
prediction and references), <task>.png for PaLI tasks (a grid of examples), results.md (a table of all tasks,
also printed) and TensorBoard scalars at the checkpoint's step.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
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


@gin.configurable(module="vlm.transfer_eval")
def coco_captions(data_dir: str, annotations: str | None = None, images: str | None = None) -> Evaluator:
  examples = benchmark_files.coco_captions(_path(data_dir, annotations, "coco_captions", "annotations"),
                                           _path(data_dir, images, "coco_captions", "images"))
  return Evaluator("coco_captions", examples, _caption_prompt, _score_captions)


@gin.configurable(module="vlm.transfer_eval")
def coco_karpathy(data_dir: str, annotations: str | None = None, images: str | None = None,
                  split: str = "test") -> Evaluator:
  examples = benchmark_files.coco_karpathy(_path(data_dir, annotations, "coco_karpathy", "annotations"),
                                           _path(data_dir, images, "coco_karpathy", "images"), split)
  return Evaluator("coco_karpathy", examples, _caption_prompt, _score_captions)


@gin.configurable(module="vlm.transfer_eval")
def vqav2(data_dir: str, questions: str | None = None, annotations: str | None = None, images: str | None = None,
          image_pattern: str = "COCO_{data_subtype}_{image_id:012d}.jpg") -> Evaluator:
  examples = benchmark_files.vqav2(_path(data_dir, questions, "vqav2", "questions"),
                                   _path(data_dir, annotations, "vqav2", "annotations"),
                                   _path(data_dir, images, "vqav2", "images"), image_pattern)
  return Evaluator("vqav2", examples, _answer_prompt, _scored_by("vqa_accuracy", metrics.vqa_accuracy))


@gin.configurable(module="vlm.transfer_eval")
def textvqa(data_dir: str, annotations: str | None = None, images: str | None = None,
            image_pattern: str | None = None) -> Evaluator:
  examples = benchmark_files.vqa_json(_path(data_dir, annotations, "textvqa", "annotations"),
                                      _path(data_dir, images, "textvqa", "images"), image_pattern)
  return Evaluator("textvqa", examples, _answer_prompt, _scored_by("vqa_accuracy", metrics.vqa_accuracy))


@gin.configurable(module="vlm.transfer_eval")
def docvqa(data_dir: str, annotations: str | None = None, images: str | None = None) -> Evaluator:
  examples = benchmark_files.vqa_json(_path(data_dir, annotations, "docvqa", "annotations"),
                                      _path(data_dir, images, "docvqa", "images"))
  return Evaluator("docvqa", examples, _answer_prompt, _scored_by("anls", metrics.anls))


@gin.configurable(module="vlm.transfer_eval")
def chartqa(data_dir: str, annotations: str | None = None, images: str | None = None) -> Evaluator:
  examples = benchmark_files.chartqa(_path(data_dir, annotations, "chartqa", "annotations"),
                                     _path(data_dir, images, "chartqa", "images"))
  score = lambda predictions, examples: {  # noqa: E731  (one reference each: the label)
      "relaxed_accuracy": metrics.relaxed_accuracy(predictions, [ex["references"][0] for ex in examples])}
  return Evaluator("chartqa", examples, _answer_prompt, score)


@gin.configurable(module="vlm.transfer_eval")
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


@gin.configurable(module="vlm.transfer_eval")
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


@gin.configurable(module="vlm.transfer_eval")
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


# ------------------------------------------------------------------------------------------------- decoding


def _check_found(task: str, found: int, listed: int) -> None:
  if not found:
    raise ValueError(f"eval task {task}: none of its {listed} image files exist; check its images folder")


def decode(pali, evaluator: Evaluator, batch_size: int, max_new_tokens: int | None, truncate_prompts: bool = True,
           progress: bool = True) -> tuple[list[dict], list[str], list[np.ndarray], dict[str, int]]:
  """Greedy answers to every example whose image exists.

  Prompts longer than the model's trained prompt length are cut, keeping EOS, as training's tokenizer cuts
  them (truncate_prompts=False refuses them instead).

  Returns:
    (the examples answered, each with its image's height and width; their answers; the first
    PLOTTED_EXAMPLES images; counts {"missing_images": skipped for a missing image file,
    "truncated_prompts": prompts cut}).
  """
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  from vlm import infer, pali as pali_lib  # pylint: disable=import-outside-toplevel
  present = [ex for ex in evaluator.examples if os.path.isfile(ex["image"])]
  _check_found(evaluator.name, len(present), len(evaluator.examples))
  answered, answers, shown, truncated = [], [], [], 0
  with tqdm(total=len(present), desc=evaluator.name, unit="ex", disable=not progress, dynamic_ncols=True) as bar:
    for start in range(0, len(present), batch_size):
      chunk = present[start:start + batch_size]
      images = [infer.read_image(ex["image"]) for ex in chunk]
      with warnings.catch_warnings(record=True) as caught:  # vlm.pali warns once per prompt it cuts
        warnings.simplefilter("always")
        answers += pali.generate(images, [evaluator.prompt(ex) for ex in chunk], max_new_tokens,
                                 batch_size=batch_size, truncate_prompt=truncate_prompts)
      for warning in caught:  # the cuts are counted; any other warning is shown as it would have been
        if issubclass(warning.category, pali_lib.PromptCutWarning):
          truncated += 1
        else:
          warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
      answered += [{**ex, "height": image.shape[0], "width": image.shape[1]} for ex, image in zip(chunk, images)]
      shown += images[:PLOTTED_EXAMPLES - len(shown)]
      bar.update(len(chunk))
  counts = {"missing_images": len(evaluator.examples) - len(present), "truncated_prompts": truncated}
  return answered, answers, shown, counts


def text_tokenizer(name: str | None, max_len: int) -> Callable[[list[str]], np.ndarray]:
  """texts -> int [N, max_len] as the SigLIP was trained: 'scene_words' (the project's scene runs' word
  vocabulary), or a HF tokenizer directory (padded to max_len, as HF SigLIP checkpoints expect)."""
  if name == "scene_words":
    from tasks import scene_pairs  # pylint: disable=import-outside-toplevel
    return lambda texts: scene_pairs.vocabulary().encode_batch(texts, max_len)
  if isinstance(name, str) and os.path.isdir(name):
    import transformers  # pylint: disable=import-outside-toplevel
    tokenizer = transformers.AutoTokenizer.from_pretrained(name)
    return lambda texts: np.asarray(tokenizer(texts, padding="max_length", max_length=max_len,
                                              truncation=True)["input_ids"], np.int32)
  raise ValueError(f"SigLIP tasks need the texts' tokenizer: set TOKENIZER (transfer_eval.evaluate.tokenizer) to "
                   "'scene_words' "
                   f"(the project's scene runs) or a HF tokenizer directory; got {name!r}")


def embed(encoder, tokenize, evaluator: EmbeddingEvaluator, batch_size: int,
          progress: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(L2-normalised pooled embeddings of the images that exist, of every text; those images' indices)."""
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  from vlm import infer, pali as pali_lib  # pylint: disable=import-outside-toplevel
  present = np.array([i for i, path in enumerate(evaluator.images) if os.path.isfile(path)], np.int64)
  _check_found(evaluator.name, len(present), len(evaluator.images))
  size = encoder.config.image.image_size
  images, texts = [], []
  with tqdm(total=len(present), desc=evaluator.name, unit="ex", disable=not progress, dynamic_ncols=True) as bar:
    for start in range(0, len(present), batch_size):
      pixels = [pali_lib.fit_square(infer.read_image(evaluator.images[i]), size, "squash")
                for i in present[start:start + batch_size]]
      images.append(encoder.encode_image(np.stack(pixels))["pooled"])
      bar.update(len(pixels))
  for start in range(0, len(evaluator.texts), batch_size):
    texts.append(encoder.encode_text(tokenize(evaluator.texts[start:start + batch_size]))["pooled"])
  return _normalise(np.concatenate(images)), _normalise(np.concatenate(texts)), present


# ------------------------------------------------------------------------------------------------- outputs


def _write_atomically(path: str, write: Callable[[str], None]) -> None:
  """write(tmp) then a rename: an interrupted run leaves the old file or none, never half of one."""
  tmp = f"{path}.tmp{os.path.splitext(path)[1]}"
  write(tmp)
  os.replace(tmp, path)


def _write_text(path: str, text: str) -> None:
  def write(tmp: str) -> None:
    with open(tmp, "w") as f:
      f.write(text)
  _write_atomically(path, write)


def write_task(output_dir: str, evaluator: Evaluator, result: dict, examples: list[dict], answers: list[str],
               images: list[np.ndarray]) -> None:
  """<task>.json (metrics and every example) and <task>.png (the first examples, boxes drawn)."""
  from vlm import summaries  # pylint: disable=import-outside-toplevel
  rows = [{"id": ex["id"], "image": ex["image"], "prompt": evaluator.prompt(ex), "prediction": answer,
           "references": ex["references"]} for ex, answer in zip(examples, answers)]
  _write_text(os.path.join(output_dir, f"{evaluator.name}.json"),
              json.dumps({**result, "examples": rows}, indent=1, ensure_ascii=False))
  if not images:
    return
  shown = examples[:len(images)]
  targets = [_plotted_target(ex) for ex in shown]
  _write_atomically(os.path.join(output_dir, f"{evaluator.name}.png"), lambda tmp: summaries.plot_predictions(
      [image.astype(np.float32) / 127.5 - 1 for image in images], [evaluator.prompt(ex) for ex in shown],
      answers[:len(images)], targets, tmp))


def _plotted_target(ex: dict) -> str:
  """The first reference; a RefCOCO box as location tokens, so the plot draws it."""
  if "bbox" not in ex:
    return ex["references"][0]
  from tasks import locations  # pylint: disable=import-outside-toplevel
  return locations.box_to_tokens(target_box(ex), ex["height"], ex["width"])


def table(results: list[dict]) -> str:
  """A markdown table: one row a (task, metric)."""
  lines = ["| task | metric | value | examples | skipped (missing image) | prompts cut |",
           "|---|---|---:|---:|---:|---:|"]
  for r in results:
    lines += [f"| {r['task']} | {name} | {value:.2f} | {r['num_examples']} | {r['missing_images']} | "
              f"{r.get('truncated_prompts', '-')} |"
              for name, value in r["metrics"].items()]
  return "\n".join(lines) + "\n"


def write_tensorboard(output_dir: str, results: list[dict], step: int) -> None:
  from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
  writer = SummaryWriter(output_dir)
  for r in results:
    for name, value in r["metrics"].items():
      writer.add_scalar(f"{r['task']}/{name}", value, step)
  writer.close()


# ------------------------------------------------------------------------------------------------- the run


def _checked_output_dir(output_dir: str) -> str:
  os.makedirs(output_dir, exist_ok=True)
  if not os.access(output_dir, os.W_OK | os.X_OK):
    raise ValueError(f"output directory {output_dir} is not writable; set OUTPUT_DIR to one that is")
  return output_dir


def _load_siglip(path: str):
  from encoders import siglip  # pylint: disable=import-outside-toplevel
  encoder = siglip.load(path)
  if encoder.config.text is None:
    raise ValueError(f"{path} holds an image tower only; zero-shot and retrieval need a two-tower SigLIP")
  return encoder


@gin.configurable(module="vlm.transfer_eval")
def evaluate(checkpoint_path: str = gin.REQUIRED, tasks=gin.REQUIRED, data_dir: str = "",
             output_dir: str | None = None, batch_size: int = 32, max_new_tokens: int | None = None,
             truncate_prompts: bool = True, tokenizer: str | None = None,
             progress: bool = True) -> tuple[list[dict], str]:
  """Evaluates a checkpoint on `tasks` and writes the outputs.

  Args:
    checkpoint_path: PaLI tasks: a PaLI MODEL_DIR (its latest checkpoint); SigLIP tasks: any SigLIP checkpoint
      encoders.siglip.load reads.
    tasks: names of TASKS.
    data_dir: what the tasks' relative file paths are relative to.
    output_dir: where the outputs go; default checkpoint_path/eval_transfer.
    batch_size: examples decoded at once.
    max_new_tokens: answer tokens at most; default the model's max_decode_len.
    truncate_prompts: cut prompts longer than the trained prompt length, as training does (they are counted);
      False refuses them.
    tokenizer: SigLIP tasks: how texts are tokenised (text_tokenizer).

  Returns:
    (one dict a task: task, checkpoint, step, metrics, num_examples, missing_images, truncated_prompts; the
    output directory).
  """
  from vlm import checkpoints, pali as pali_lib  # pylint: disable=import-outside-toplevel
  if not isinstance(checkpoint_path, str) or not checkpoint_path:  # a macro left %gin.REQUIRED arrives as an object
    raise ValueError("CHECKPOINT_PATH is not set; add --gin.CHECKPOINT_PATH=\"'MODEL_DIR'\" (a PaLI or SigLIP "
                     "checkpoint)")
  if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f"BATCH_SIZE must be an integer >= 1; got {batch_size!r}")
  from vlm import model as model_lib  # pylint: disable=import-outside-toplevel
  names = [tasks] if isinstance(tasks, str) else list(tasks)
  siglip = any(name in SIGLIP_TASKS for name in names)
  if not siglip:  # the checkpoint is checked first (cheap); the task files next, before the model loads
    model_lib.read_model_config(checkpoint_path)
  elif not os.path.exists(checkpoint_path):
    raise ValueError(f"CHECKPOINT_PATH {checkpoint_path} does not exist")
  evaluators = build(names, data_dir)
  model = _load_siglip(checkpoint_path) if siglip else pali_lib.load(checkpoint_path)
  tokenize = text_tokenizer(tokenizer, model.config.text.max_len) if siglip else None
  step = max(checkpoints.complete_steps(checkpoint_path), default=0)
  output_dir = _checked_output_dir(output_dir or os.path.join(checkpoint_path, "eval_transfer"))
  results = []
  for evaluator in evaluators:
    result = {"task": evaluator.name, "checkpoint": os.path.abspath(checkpoint_path), "step": step}
    if siglip:
      images, texts, present = embed(model, tokenize, evaluator, batch_size, progress)
      result.update(metrics=evaluator.score(images, texts, present), num_examples=len(present),
                    missing_images=len(evaluator.images) - len(present))
      _write_text(os.path.join(output_dir, f"{evaluator.name}.json"), json.dumps(result, indent=1))
    else:
      examples, answers, images, counts = decode(model, evaluator, batch_size, max_new_tokens, truncate_prompts,
                                                 progress)
      result.update(metrics=evaluator.score(answers, examples), num_examples=len(examples), **counts)
      write_task(output_dir, evaluator, result, examples, answers, images)
    results.append(result)
  markdown = table(results)
  _write_text(os.path.join(output_dir, "results.md"), markdown)
  write_tensorboard(output_dir, results, step)
  return results, output_dir
