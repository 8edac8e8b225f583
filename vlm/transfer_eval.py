"""Runs transfer evaluations of a checkpoint (vlm.transfer_tasks' benchmarks) and writes their outputs.

`evaluate` runs every task with one loop per model kind (a PaLI's decoding, or the SigLIP towers, in
batches) and writes, under the output directory: <task>.json (metrics; for PaLI tasks every example's
prediction and references), <task>.png for PaLI tasks (a grid of examples), results.md (a table of all tasks,
also printed) and TensorBoard scalars at the checkpoint's step.

PaLI tasks are decoded by `Decoder`, as training shards a model: the parameters lie on the Partitioner's mesh
(gin: vlm.partitioning.Partitioner, e.g. NUM_PARTITIONS), split by training's logical axis rules; every
global batch is split along 'data', each process reading and feeding only its rows; the answers stay on the
devices until a task ends and are then gathered to every process at once; process 0 alone writes. Prompts
are grouped by length (`bucket_length`: 8, 16, 32, ... up to the trained prompt length), so short prompts
run a short encoder input in a few compiled shapes; answers come back in file order. Decoding is greedy
unless `decoding` names a task: {'coco_karpathy': {'method': 'beam', 'beam_size': 4, 'alpha': 0.6}}.

The same evaluations run inside training, every EVAL_PERIOD steps, on the live sharded parameters
(`TransferEvaluation`, the same Decoder), writing '<task>/<metric>' to metrics.jsonl's eval lines:

  python -m vlm.train --gin_file=<the PaLI run's gin file> \
      --gin_file=gin_configs/runs/transfer_eval_in_training.gin --gin.TRANSFER_DATA_DIR="'/data'" \
      [--gin.TRANSFER_TASKS="['vqav2', 'refcoco']"] [--gin.EVAL_PERIOD=500]

that is, vlm.trainer.train.evaluator = @vlm.transfer_eval.TransferEvaluation() with its tasks, data_dir,
batch_size (the run's BATCH_SIZE) and decoding bound, and the benchmarks' paths of transfer_task_files.gin.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import json
import os
import warnings
from typing import Any, Callable

import gin
import numpy as np

from vlm.transfer_tasks import (EmbeddingEvaluator, Evaluator, PLOTTED_EXAMPLES, SIGLIP_TASKS, build,
                                target_box, _normalise)


# ------------------------------------------------------------------------------------------------- decoding


def _check_found(task: str, found: int, listed: int) -> None:
  if not found:
    raise ValueError(f"eval task {task}: none of its {listed} image files exist; check its images folder")


DECODING_METHODS = ("greedy", "beam")


def decoding_options(tasks: list[str], decoding: dict | None) -> dict[str, dict]:
  """Each task's decoding: greedy, unless `decoding` gives the task its own, e.g. {'coco_karpathy': {'method':
  'beam', 'beam_size': 4, 'alpha': 0.6}}. Checked by vlm.decoding itself, before any model loads."""
  import jax, jax.numpy as jnp  # pylint: disable=import-outside-toplevel,multiple-imports
  from vlm import decoding as decoding_lib  # pylint: disable=import-outside-toplevel
  decoding = dict(decoding or {})
  unknown = [task for task in decoding if task not in tasks]
  if unknown:
    raise ValueError(f"transfer_eval decoding names task {unknown[0]!r}, which is not evaluated here "
                     f"({', '.join(tasks)}); drop it or add it to the tasks")
  toy = lambda ids, step, state: (jnp.zeros(ids.shape + (2,)), state)  # noqa: E731  (a 2-token model)
  out = {}
  for task in tasks:
    options = decoding.get(task, {})
    if not isinstance(options, dict):
      raise ValueError(f"decoding of eval task {task}: expected a dict like {{'method': 'beam', 'beam_size': 4}}; "
                       f"got {options!r}")
    options = {"method": "greedy", **options}
    if options["method"] not in DECODING_METHODS:
      raise ValueError(f"decoding of eval task {task}: method {options['method']!r} is not one of "
                       f"{', '.join(DECODING_METHODS)}")
    try:  # traced only: vlm.decoding checks the options' names and values
      jax.eval_shape(lambda: decoding_lib.decode(toy, jnp.zeros([1, 1]), max_decode_len=1, **options))
    except (ValueError, TypeError) as e:
      raise ValueError(f"decoding of eval task {task}: {e}") from None
    out[task] = options
  return out


def bucket_length(length: int, cap: int) -> int:
  """The prompt length a prompt of `length` tokens is run at: the next power of two, 8 at least, `cap` at most
  (the trained prompt length): a few compiled shapes, and short prompts run a short encoder input."""
  return min(cap, max(8, 1 << (length - 1).bit_length()))


@dataclasses.dataclass
class Plan:
  """One task's examples whose image exists, their prompts tokenised and grouped into global batches.

  Attributes:
    tokens: int32 [N, cap] the prompts, 0-padded (cut to the trained prompt length as training cuts them).
    batches: (prompt length, int [batch_size] example indices) a global batch: examples of one length bucket
      in file order, the last batch of a bucket filled up by repeating its last example.
    counts: missing_images (skipped), truncated_prompts (cut).
  """
  evaluator: Evaluator
  examples: list[dict]
  tokens: np.ndarray
  batches: list[tuple[int, np.ndarray]]
  counts: dict[str, int]


class Decoder:
  """Answers tasks' examples with a PaLI whose parameters lie on a Partitioner's mesh (vlm.eval and
  TransferEvaluation alike).

  Every global batch is split along 'data'; each process reads the images of, and feeds, only its own rows of
  it (partitioning.process_rows). Each batch's answer tokens stay on the devices until the task ends, then
  every process's rows are gathered to every process at once.

  Args:
    inputs: the model's image fitting and tokeniser (vlm.pali.PaLIInputs).
    partitioner: whose mesh the parameters lie on.
    batch_size: rows of a global batch; a multiple of the 'data' devices.
    max_new_tokens: answer tokens at most; default the model's max_decode_len.
    bucket_prompts: run prompts at bucket_length (else all at the trained prompt length).
    cache_images: keep the fitted images of this process's rows (an evaluator called again and again).
  """

  def __init__(self, inputs, partitioner, batch_size: int, max_new_tokens: int | None = None,
               bucket_prompts: bool = True, cache_images: bool = False):
    partitioner.check_batch_size(batch_size)
    if max_new_tokens is not None and (isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int)
                                       or max_new_tokens < 1):
      raise ValueError(f"max_new_tokens must be an integer >= 1 (answer tokens at most); got {max_new_tokens!r}")
    self.inputs, self.partitioner, self.batch_size = inputs, partitioner, batch_size
    self.max_new_tokens = max_new_tokens or inputs.max_decode_len
    self.bucket_prompts = bucket_prompts
    self.rows = partitioner.process_rows(batch_size)
    self._images = {} if cache_images else None
    self._predict = {}

  def plan(self, evaluator: Evaluator, truncate_prompts: bool = True) -> Plan:
    """Tokenises the prompts of the examples whose image exists and groups them into batches.

    Prompts longer than the trained prompt length are cut, keeping EOS, as training's tokenizer cuts them
    (truncate_prompts=False refuses them instead).
    """
    from vlm import pali as pali_lib  # pylint: disable=import-outside-toplevel
    present = [ex for ex in evaluator.examples if os.path.isfile(ex["image"])]
    _check_found(evaluator.name, len(present), len(evaluator.examples))
    with warnings.catch_warnings(record=True) as caught:  # vlm.pali warns once per prompt it cuts
      warnings.simplefilter("always")
      tokens = self.inputs.tokenize([evaluator.prompt(ex) for ex in present], truncate=truncate_prompts)
    cut = 0
    for warning in caught:  # the cuts are counted; any other warning is shown as it would have been
      if issubclass(warning.category, pali_lib.PromptCutWarning):
        cut += 1
      else:
        warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    cap = tokens.shape[1]
    lengths = np.max(np.where(tokens != 0, np.arange(1, cap + 1), 0), axis=1)  # through EOS
    buckets = np.array([bucket_length(int(n), cap) if self.bucket_prompts else cap for n in lengths])
    batches = []
    for length in np.unique(buckets):
      members = np.flatnonzero(buckets == length)
      for start in range(0, len(members), self.batch_size):
        chunk = members[start:start + self.batch_size]
        batches.append((int(length), np.concatenate([chunk, np.repeat(chunk[-1:], self.batch_size - len(chunk))])))
    return Plan(evaluator, present, tokens, batches,
                {"missing_images": len(evaluator.examples) - len(present), "truncated_prompts": cut})

  def decode(self, params, plan: Plan, options: dict, progress: bool = False) -> tuple[list[dict], list[str]]:
    """(the plan's examples, each with its image's height and width; their answers), on every process."""
    import jax  # pylint: disable=import-outside-toplevel
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel
    from vlm import partitioning  # pylint: disable=import-outside-toplevel
    predict = self.predict_fn(options)
    outputs = []
    read = lambda number: self.features(plan, number, plan.batches[number][1][self.rows])  # noqa: E731
    with tqdm(total=len(plan.examples), desc=plan.evaluator.name, unit="ex", dynamic_ncols=True,
              disable=not progress or jax.process_index() != 0) as bar, self.partitioner.context():
      for number, (features, sizes) in enumerate(_prefetched(read, len(plan.batches))):
        length, indices = plan.batches[number]
        local = indices[self.rows]
        batch = partitioning.global_batch(
            self.partitioner, {**features, "encoder_input_tokens": plan.tokens[local, :length]}, self.batch_size)
        outputs.append((local, sizes, predict(params, batch).tokens))  # left on the devices: no wait here
        bar.update(len(np.unique(indices)))
    tokens, sizes = self._gather(plan, outputs)
    examples = [{**ex, "height": int(h), "width": int(w)} for ex, (h, w) in zip(plan.examples, sizes)]
    return examples, [self.inputs.model.detokenize(row) for row in tokens]

  def predict_fn(self, options: dict):
    """The jitted predict_batch of these decoding options (compiled once a prompt length)."""
    key = tuple(sorted(options.items()))
    if key not in self._predict:
      from vlm import decoding  # pylint: disable=import-outside-toplevel
      self._predict[key] = decoding.jit(functools.partial(self.inputs.model.predict_batch,
                                                          max_decode_len=self.max_new_tokens, **options))
    return self._predict[key]

  def features(self, plan: Plan, number: int, local: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """This process's rows of batch `number`: the fitted images (as vlm.pali fits them), and int [rows, 2] their
    heights and widths."""
    from vlm import infer  # pylint: disable=import-outside-toplevel
    key = (plan.evaluator.name, number)
    if self._images is not None and key in self._images:
      return self._images[key]
    unique, inverse = np.unique(local, return_inverse=True)  # a filled-up batch repeats its last example
    images = [infer.read_image(plan.examples[i]["image"]) for i in unique]
    features = {k: v[inverse] for k, v in self.inputs.image_features(images).items()}
    out = features, np.array([images[i].shape[:2] for i in inverse], np.int32)
    if self._images is not None:
      self._images[key] = out
    return out

  def _gather(self, plan: Plan, outputs: list) -> tuple[np.ndarray, np.ndarray]:
    """(int [N, max_new_tokens] answer tokens, int [N, 2] image sizes) of every example, on every process: each
    process's rows of every batch, read from its own devices, gathered at once."""
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    from vlm import partitioning  # pylint: disable=import-outside-toplevel
    rows = np.concatenate([np.concatenate([local[:, None], sizes, partitioning.local_rows(tokens, self.rows)], 1)
                           for local, sizes, tokens in outputs]).astype(np.int32)  # [index, h, w, tokens...]
    rows = multihost_utils.process_allgather(rows, tiled=True)
    table = np.zeros((len(plan.examples), rows.shape[1] - 1), np.int32)
    table[rows[:, 0]] = rows[:, 1:]  # a repeated example's rows are equal
    return table[:, 2:], table[:, :2]


def text_tokenizer(name: str | None, max_len: int) -> Callable[[list[str]], np.ndarray]:
  """texts -> int [N, max_len] as the SigLIP was trained: 'sentencepiece' (the project's runs: the configured
  tasks.vocab vocabulary, EOS appended, padded with 0), or a HF tokenizer directory (padded to max_len, as HF
  SigLIP checkpoints expect)."""
  if name == "sentencepiece":
    from vlm import evaluation  # pylint: disable=import-outside-toplevel
    return lambda texts: evaluation.seqio_prompts(texts, max_len)
  if isinstance(name, str) and os.path.isdir(name):
    import transformers  # pylint: disable=import-outside-toplevel
    tokenizer = transformers.AutoTokenizer.from_pretrained(name)
    return lambda texts: np.asarray(tokenizer(texts, padding="max_length", max_length=max_len,
                                              truncation=True)["input_ids"], np.int32)
  raise ValueError(f"SigLIP tasks need the texts' tokenizer: set TOKENIZER (transfer_eval.evaluate.tokenizer) to "
                   "'sentencepiece' "
                   f"(the project's runs) or a HF tokenizer directory; got {name!r}")


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


def _load_siglip(path: str, needs_text: bool, step: int | None):
  from encoders import siglip  # pylint: disable=import-outside-toplevel
  encoder = siglip.load(path, step)
  if needs_text and encoder.config.text is None:
    raise ValueError(f"{path} holds an image tower only; zero-shot and retrieval need a two-tower SigLIP")
  return encoder


def _prefetched(read: Callable[[int], Any], count: int, depth: int = 2):
  """read(0), ..., read(count - 1) in order, each started `depth` ahead in threads: the images of the next
  batches are read and fitted (PIL releases the GIL) while the devices decode this one."""
  with concurrent.futures.ThreadPoolExecutor(depth) as pool:
    pending = collections.deque(pool.submit(read, i) for i in range(min(depth, count)))
    for i in range(count):
      result = pending.popleft().result()
      if i + depth < count:
        pending.append(pool.submit(read, i + depth))
      yield result


def sharded_params(model, params, partitioner) -> Any:
  """`params` (whole on every process) on the partitioner's mesh, split by the logical axis rules training
  uses; a parameter the mesh cannot split is named before anything is copied."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  import jax, jax.numpy as jnp  # pylint: disable=import-outside-toplevel,multiple-imports
  from vlm import partitioning  # pylint: disable=import-outside-toplevel
  size = model.config.vit.image_size
  spec = {"image": jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32),  # shapes as vlm.model.load's
          "encoder_input_tokens": jax.ShapeDtypeStruct((1, 2), jnp.int32),
          "decoder_target_tokens": jax.ShapeDtypeStruct((1, 2), jnp.int32)}
  with partitioner.context():
    boxed = jax.eval_shape(model.init_variables, jax.random.key(0), spec)["params"]
  shardings = partitioner.shardings(nn.get_partition_spec(boxed))
  partitioner.check_divisible(nn.meta.unbox(boxed), shardings)
  return partitioning.place(params, shardings)


@gin.configurable(module="vlm.transfer_eval")
def evaluate(checkpoint_path: str = gin.REQUIRED, tasks=gin.REQUIRED, data_dir: str = "",
             output_dir: str | None = None, batch_size: int = 32, max_new_tokens: int | None = None,
             truncate_prompts: bool = True, tokenizer: str | None = None, progress: bool = True,
             decoding: dict | None = None, bucket_prompts: bool = True,
             partitioner=None, step: int | None = None) -> tuple[list[dict], str]:
  """Evaluates a checkpoint on `tasks` and writes the outputs (process 0 writes; every process returns them).

  Args:
    checkpoint_path: PaLI tasks: a PaLI MODEL_DIR (its latest checkpoint); SigLIP tasks: any SigLIP checkpoint
      encoders.siglip.load reads.
    tasks: names of TASKS.
    data_dir: what the tasks' relative file paths are relative to.
    output_dir: where the outputs go; default checkpoint_path/eval_transfer.
    batch_size: examples decoded at once (PaLI: a global batch, a multiple of the 'data' mesh axis).
    max_new_tokens: answer tokens at most; default the model's max_decode_len.
    truncate_prompts: cut prompts longer than the trained prompt length, as training does (they are counted);
      False refuses them.
    tokenizer: SigLIP tasks: how texts are tokenised (text_tokenizer).
    decoding: PaLI tasks: {task: {'method': 'beam', 'beam_size': 4, 'alpha': 0.6}}; greedy for tasks not named.
    bucket_prompts: PaLI tasks: run prompts at bucket_length, not all at the trained prompt length.
    partitioner: PaLI tasks: the mesh and logical axis rules (default vlm.partitioning.Partitioner(), with the
      run's gin bindings, e.g. NUM_PARTITIONS).
    step: which checkpoint of a MODEL_DIR to evaluate (CHECKPOINT_STEP); None: its newest intact one.

  Returns:
    (one dict a task: task, checkpoint, step, metrics, num_examples, missing_images, truncated_prompts; the
    output directory).
  """
  import jax  # pylint: disable=import-outside-toplevel
  from vlm import checkpoints, pali as pali_lib, partitioning  # pylint: disable=import-outside-toplevel
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
  if step is None and os.path.isdir(os.path.join(checkpoint_path, checkpoints.CHECKPOINTS_DIR)):
    # Resolved before loading: the results name the step the loader read even if training writes a newer one
    # meanwhile (damaged newer steps are skipped with a warning here).
    step = checkpoints.resolve_step(checkpoint_path)
  if siglip:
    texts = any(evaluator.texts for evaluator in evaluators)  # fewshot alone needs no text tower
    model = _load_siglip(checkpoint_path, texts, step)
    tokenize = text_tokenizer(tokenizer, model.config.text.max_len) if texts else None
  else:
    options = decoding_options(names, decoding)
    partitioner = partitioner or partitioning.Partitioner()
    partitioner.check_batch_size(batch_size)
    model, params = model_lib.load(checkpoint_path, step)
    decoder = Decoder(pali_lib.PaLIInputs(model, checkpoint_path), partitioner, batch_size, max_new_tokens,
                      bucket_prompts)
    params = sharded_params(model, params, partitioner)
  step = step or 0  # a foreign SigLIP (HF, big_vision) has no steps
  output_dir = output_dir or os.path.join(checkpoint_path, "eval_transfer")
  writer = jax.process_index() == 0
  if writer:
    _checked_output_dir(output_dir)
  results = []
  for evaluator in evaluators:
    result = {"task": evaluator.name, "checkpoint": os.path.abspath(checkpoint_path), "step": step}
    if siglip:
      images, texts, present = embed(model, tokenize, evaluator, batch_size, progress)
      result.update(metrics=evaluator.score(images, texts, present), num_examples=len(present),
                    missing_images=len(evaluator.images) - len(present))
      _write_text(os.path.join(output_dir, f"{evaluator.name}.json"), json.dumps(result, indent=1))
    else:
      plan = decoder.plan(evaluator, truncate_prompts)
      examples, answers = decoder.decode(params, plan, options[evaluator.name], progress)
      result.update(metrics=evaluator.score(answers, examples), num_examples=len(examples), **plan.counts)
      if writer:
        write_task(output_dir, evaluator, result, examples, answers, _plotted_images(examples))
    results.append(result)
  if writer:
    _write_text(os.path.join(output_dir, "results.md"), table(results))
    write_tensorboard(output_dir, results, step)
  return results, output_dir


def _plotted_images(examples: list[dict]) -> list[np.ndarray]:
  from vlm import infer  # pylint: disable=import-outside-toplevel
  return [infer.read_image(ex["image"]) for ex in examples[:PLOTTED_EXAMPLES]]


# ------------------------------------------------------------------------------------------------- in training


@gin.configurable(module="vlm.transfer_eval")
class TransferEvaluation:
  """The PaLI transfer evaluations of vlm.eval as a trainer evaluator: evaluator(model, params) ->
  {'<task>/<metric>': value}, decoded on the live (sharded) parameters by the same Decoder as vlm.eval.

  The tasks' files are read once, here; each process's images once, at the first call. Multi-host: every
  process calls it and gets the same numbers.

  Args:
    tasks, data_dir, batch_size, max_new_tokens, truncate_prompts, decoding, bucket_prompts: as
      transfer_eval.evaluate's (PaLI tasks only).
    partitioner: default: one over the mesh the parameters lie on.
  """

  def __init__(self, tasks=gin.REQUIRED, data_dir: str = "", batch_size: int = 32, decoding: dict | None = None,
               max_new_tokens: int | None = None, truncate_prompts: bool = True, bucket_prompts: bool = True,
               partitioner=None):
    names = [tasks] if isinstance(tasks, str) else list(tasks)
    siglip = [name for name in names if name in SIGLIP_TASKS]
    if siglip:
      raise ValueError(f"TransferEvaluation evaluates a PaLI; {siglip[0]} is a SigLIP task (run it with vlm.eval)")
    self.evaluators = build(names, data_dir)
    self.options = decoding_options(names, decoding)
    if partitioner is not None:
      partitioner.check_batch_size(batch_size)
    self.batch_size, self.max_new_tokens, self.partitioner = batch_size, max_new_tokens, partitioner
    self.truncate_prompts, self.bucket_prompts = truncate_prompts, bucket_prompts
    self._decoders = {}  # id(model) -> (Decoder, its plans)

  def __call__(self, model, params) -> dict[str, float]:
    decoder, plans = self._decoder(model, params)
    out = {}
    for plan in plans:
      examples, answers = decoder.decode(params, plan, self.options[plan.evaluator.name])
      out.update({f"{plan.evaluator.name}/{k}": v for k, v in plan.evaluator.score(answers, examples).items()})
    return out

  def _decoder(self, model, params):
    if id(model) not in self._decoders:
      from vlm import pali as pali_lib  # pylint: disable=import-outside-toplevel
      decoder = Decoder(pali_lib.PaLIInputs(model, "the trained model"), self.partitioner or _partitioner_of(params),
                        self.batch_size, self.max_new_tokens, self.bucket_prompts, cache_images=True)
      self._decoders[id(model)] = decoder, [decoder.plan(e, self.truncate_prompts) for e in self.evaluators]
    return self._decoders[id(model)]


def _partitioner_of(params):
  """A Partitioner over the mesh `params` lie on (the trainer's): the batch is split along its 'data' axis."""
  import jax  # pylint: disable=import-outside-toplevel
  from vlm import partitioning  # pylint: disable=import-outside-toplevel
  mesh = jax.tree.leaves(params)[0].sharding.mesh
  return partitioning.Partitioner(num_partitions=mesh.shape["model"], devices=list(mesh.devices.flat))
