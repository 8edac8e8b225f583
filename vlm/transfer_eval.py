"""Runs transfer evaluations of a checkpoint (vlm.transfer_tasks' benchmarks) and writes their outputs.

`evaluate` runs every task with one loop per model kind (vlm.pali's generate, or the SigLIP towers, in
batches) and writes, under the output directory: <task>.json (metrics; for PaLI tasks every example's
prediction and references), <task>.png for PaLI tasks (a grid of examples), results.md (a table of all tasks,
also printed) and TensorBoard scalars at the checkpoint's step.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Callable

import gin
import numpy as np

from vlm.transfer_tasks import (EmbeddingEvaluator, Evaluator, PLOTTED_EXAMPLES, SIGLIP_TASKS, build,
                                target_box, _normalise)


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
  """(L2-normalised pooled embeddings of the images that exist, of every text ([0, D] for none); those images'
  indices)."""
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
  images = _normalise(np.concatenate(images))
  texts = _normalise(np.concatenate(texts)) if texts else np.zeros((0, images.shape[1]), images.dtype)
  return images, texts, present


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


def _load_siglip(path: str, needs_text: bool):
  from encoders import siglip  # pylint: disable=import-outside-toplevel
  encoder = siglip.load(path)
  if needs_text and encoder.config.text is None:
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
  texts = siglip and any(evaluator.texts for evaluator in evaluators)  # fewshot alone needs no text tower
  model = _load_siglip(checkpoint_path, texts) if siglip else pali_lib.load(checkpoint_path)
  tokenize = text_tokenizer(tokenizer, model.config.text.max_len) if texts else None
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
