"""Evaluators the trainer calls as evaluator(model, params) -> {name: value}.

`SceneZeroShotRetrieval` judges a two-tower model on the generated scenes of `tasks.scenes`:
  - zero-shot classification of single-object images among all (colour, shape) classes by their prompts,
    reported separately for combinations seen in training and for HELD_OUT_COMBOS (never seen together);
  - image->text and text->image R@1 on held-out scenes.
Chance levels are reported next to them, so a reader can tell learning from luck. The retrieval pairs are
the validation split of a seqio `pairs_task`, tokenised as it is (tasks.vocab); NaFlex models (a 'patches'
budget in the feature lengths) are evaluated on patches. With `dense` (the default) it adds the dense
evaluations of vlm.dense_evaluation: zero-shot and linear-probe segmentation mIoU, k-NN accuracy; and for a
model with a LocCa decoder (encoders/objectives/locca.py) that decoder's referring expressions (IoU >= 0.5,
beside the centre baseline: a box at the image centre of the mean target size, scored the same way) and
captions (CIDEr), by greedy decoding on held-out scenes.

`SeqioTaskEvaluation` judges a PaLI on the validation split of seqio tasks by greedy decoding, each task
scored as its benchmark is (ANLS for documents, relaxed accuracy for charts, else exact match), and the
generated scene tasks beside their baselines (the majority answer, a centre box, shuffled images).

Multi-host: every process calls the evaluator (its jitted computations span every process's devices), feeds
it the same inputs and gets the same numbers; the trainer has process 0 write them.
"""

from __future__ import annotations

import gin
import jax
from jax.experimental import multihost_utils
import numpy as np

from tasks import scenes
from vlm import decoding
from vlm import metrics


def to_host(x: jax.Array) -> np.ndarray:
  """The whole of `x` as numpy on every process, even where it is sharded over other processes' devices."""
  return multihost_utils.process_allgather(x, tiled=True)


def embed(predict, params, batch: dict[str, np.ndarray], chunk: int = 256) -> dict[str, np.ndarray]:
  """A jitted model.predict_batch over a large batch, `chunk` rows at a time (one compiled shape)."""
  n = len(next(iter(batch.values())))
  outs: dict[str, list] = {}
  for start in range(0, n, chunk):
    part = {k: v[start:start + chunk] for k, v in batch.items()}
    pad = chunk - len(next(iter(part.values())))
    if pad:  # keep one shape: pad the last chunk and drop the padding after
      part = {k: np.concatenate([v, np.repeat(v[-1:], pad, axis=0)]) for k, v in part.items()}
    for k, v in predict(params, part).items():
      outs.setdefault(k, []).append(to_host(v)[:chunk - pad])
  return {k: np.concatenate(v) for k, v in outs.items()}


def fixed_lengths(task_feature_lengths: dict) -> dict[str, int]:
  """Feature lengths drawn per step (tuples, tasks.pipeline) evaluated at their largest."""
  return {k: max(v) if isinstance(v, (tuple, list)) else v for k, v in task_feature_lengths.items()}


def seqio_prompts(texts: list[str], length: int) -> np.ndarray:
  """Texts as the seqio tasks tokenise them (the configured tasks.vocab vocabulary, EOS), padded with 0."""
  from tasks import vocab as vocab_lib  # pylint: disable=import-outside-toplevel  (TensorFlow)
  vocab = vocab_lib.vocabulary()
  out = np.zeros((len(texts), length), np.int32)
  for row, text in enumerate(texts):
    ids = (list(vocab.encode(text)) + [vocab.eos_id])[:length]
    out[row, :len(ids)] = ids
  return out


@gin.configurable(module="vlm.evaluation")
class SceneZeroShotRetrieval:
  """Zero-shot accuracy (seen / held-out combinations) and retrieval R@1 on generated scenes.

  Args:
    image_size: the scenes' side (the area of native-aspect ones).
    task_feature_lengths: the run's; 'text' is the prompt length, and 'patches' (its largest choice) makes
      the images NaFlex patches of `patch_size` pixels.
    pairs_task: a seqio task of image-text pairs whose validation split gives the retrieval pairs (and whose
      vocabulary, tasks.vocab, tokenises the class prompts).
    dense: also the dense evaluations (vlm.dense_evaluation), on scenes of image_size.
    languages: retrieval per language as well (i2t_R1_<lang>, t2i_R1_<lang>), on held-out scenes captioned in
      each of these tasks.multilingual languages.
  """

  def __init__(self, image_size: int = 32, task_feature_lengths: dict[str, int] | None = None,
               images_per_class: int = 20, retrieval_pairs: int = 512, seed: int = 1234,
               pairs_task: str = "webli_pairs_synthetic", patch_size: int = 16, dense: bool = True,
               dense_scenes: int = 256, locca_examples: int = 256, languages: tuple[str, ...] = (),
               pairs_per_language: int = 256):
    self._predict = {}  # model -> jitted predict_batch, compiled once per run
    self._features = {}  # model -> jitted image features for the dense evaluations
    self.image_size, self.dense, self.dense_scenes = image_size, dense, dense_scenes
    self._dense_data = None  # built at the first call, when the tower's patch size is known
    self._locca_data, self._locca_decode, self.locca_examples, self.seed = None, {}, locca_examples, seed
    self.by_language = {}  # language -> held-out pairs captioned in it
    self.combos = scenes.all_combos()
    prompts = [scenes.class_prompt(c, s) for c, s in self.combos]
    zs = scenes.zero_shot_batch(seed, self.combos, images_per_class, image_size)
    self.zs_images, self.zs_labels = {"image": zs["image"]}, zs["label"]
    self.held_out = np.array([self.combos[i] in scenes.HELD_OUT_COMBOS for i in self.zs_labels])
    from tasks import naflex, pipeline  # pylint: disable=import-outside-toplevel  (TensorFlow)
    # The pairs' own features: a run's other lengths (LocCa's) belong to its training task.
    lengths = {k: v for k, v in fixed_lengths(task_feature_lengths).items() if k in ("text", "patches")}
    self.pairs = pipeline.SeqioBatches(pairs_task, lengths, split="validation", seed=seed).batch(0, retrieval_pairs)
    self.prompts = seqio_prompts(prompts, lengths["text"])
    for lang in languages:
      from tasks import multilingual  # pylint: disable=import-outside-toplevel
      rows = [multilingual.example(seed, i, "validation", image_size, lang=lang) for i in range(pairs_per_language)]
      self.by_language[lang] = {"image": np.stack([row["image"] for row in rows]),
                                "text": seqio_prompts([row["targets"] for row in rows], lengths["text"])}
    if "patches" in lengths:  # the single-object images as NaFlex patches, at the budget
      pixels = np.clip(np.round((zs["image"] + 1) * 127.5), 0, 255).astype(np.uint8)
      self.zs_images = naflex.patchify_batch(list(pixels), patch_size, lengths["patches"])

  def __call__(self, model, params) -> dict[str, float]:
    predict = self._predict.setdefault(id(model), jax.jit(model.predict_batch))
    classes = embed(predict, params, {"text": self.prompts})["text"]
    images = embed(predict, params, self.zs_images)["image"]
    pairs = embed(predict, params, self.pairs)
    n_classes, n_pairs = len(self.combos), len(self.pairs["text"])
    out = {
        "zero_shot_seen": metrics.zero_shot_accuracy(images[~self.held_out], classes, self.zs_labels[~self.held_out]),
        "zero_shot_held_out": metrics.zero_shot_accuracy(images[self.held_out], classes, self.zs_labels[self.held_out]),
        "zero_shot_chance": 100.0 / n_classes,
    }
    r = metrics.retrieval(pairs["image"], pairs["text"], ks=(1,))
    out.update(i2t_R1=r["i2t_R@1"], t2i_R1=r["t2i_R@1"], retrieval_chance=100.0 / n_pairs)
    for lang, data in self.by_language.items():
      embedded = embed(predict, params, data)
      r = metrics.retrieval(embedded["image"], embedded["text"], ks=(1,))
      out[f"i2t_R1_{lang}"], out[f"t2i_R1_{lang}"] = r["i2t_R@1"], r["t2i_R@1"]
    if self.dense:
      out.update(self._dense(model, params, classes))
    if getattr(model.module, "locca", None) is not None:
      out.update(self._locca(model, params))
    return out

  def _locca(self, model, params) -> dict[str, float]:
    if self._locca_data is None:
      self._locca_data = locca_eval_data(self.image_size, self.locca_examples, self.seed)
    return locca_metrics(model, params, self._locca_data, self.image_size, self._locca_decode)

  def _dense(self, model, params, classes: np.ndarray) -> dict[str, float]:
    from vlm import dense_evaluation  # pylint: disable=import-outside-toplevel
    from encoders import siglip  # pylint: disable=import-outside-toplevel
    if self._dense_data is None:
      self._dense_data = dense_evaluation.SceneDenseData(self.image_size, model.config.image.patch_size,
                                                         eval_scenes=self.dense_scenes)
    if id(model) not in self._features:
      self._features[id(model)] = jax.jit(lambda p, images: model.module.apply(
          {"params": p}, images, per_token_pooled=True, method=siglip.TwoTower.encode_image))
    tower = self._features[id(model)]
    features = lambda images: embed(lambda p, b: tower(p, b["image"]), params, {"image": images})
    return dense_evaluation.dense_metrics(features, self._dense_data, classes)


def locca_eval_data(image_size: int, examples: int, seed: int) -> dict:
  """Held-out scenes for the LocCa decoder: referring expressions and captions, tokenised as the seqio tasks."""
  from tasks import scene_tasks  # pylint: disable=import-outside-toplevel
  data = {}
  for kind, prompt in (("refexp", None), ("caption", "caption en")):
    rows = [scene_tasks.example(seed, i, "validation", kind, image_size, with_scene=True) for i in range(examples)]
    prompts = [prompt or row["inputs"] for row in rows]
    data[kind] = {"image": np.stack([row["image"] for row in rows]), "prompt": seqio_prompts(prompts, 16),
                  "targets": [row["targets"] for row in rows], "objects": np.array([len(row["scene"]) for row in rows])}
  return data


def locca_metrics(model, params, data: dict, image_size: int, cache: dict, max_len: int = 24) -> dict[str, float]:
  """refexp_accuracy, refexp_centre_baseline, refexp_shuffled_images_baseline and caption_cider of the model's
  LocCa decoder on `data`, and the two refexp scores on scenes of one object and of several
  (refexp_one_object_accuracy, refexp_several_objects_shuffled_images_baseline, ...): finding where the only
  object is, against telling objects apart."""
  from encoders import siglip  # pylint: disable=import-outside-toplevel
  from tasks import vocab as vocab_lib  # pylint: disable=import-outside-toplevel
  from vlm import ul2 as ul2_lib  # pylint: disable=import-outside-toplevel
  if id(model) not in cache:
    decoder = ul2_lib.UL2(model.module.locca)

    def decode(p, batch):
      encoded, mask = model.module.apply({"params": p}, batch["image"], batch["prompt"],
                                         method=siglip.TwoTower.locca_encode)
      return ul2_lib.generate_from_encoded(decoder, p["locca"]["ul2"], encoded, mask, max_decode_len=max_len)
    cache[id(model)] = decoding.jit(decode)
  vocab = vocab_lib.vocabulary()
  detokenize = lambda ids: vocab.decode([int(i) for i in ids if 0 < i < vocab.vocab_size])  # noqa: E731
  out = {}
  refexp = data["refexp"]
  truth = target_boxes(refexp["targets"], image_size)
  targets = [t[0] for t in truth]

  def score(metric: str, images: np.ndarray):
    answers = decode_texts(cache[id(model)], params, {"image": images, "prompt": refexp["prompt"]}, detokenize)
    predicted = first_boxes(answers, image_size)  # parsed once, scored on the whole set and on each subset
    out[f"refexp_{metric}"] = metrics.refexp_accuracy(predicted, targets)
    for subset, rows in (("one_object", refexp["objects"] == 1), ("several_objects", refexp["objects"] > 1)):
      if rows.any():
        out[f"refexp_{subset}_{metric}"] = metrics.refexp_accuracy(
            [p for p, r in zip(predicted, rows) if r], [t for t, r in zip(targets, rows) if r])

  score("accuracy", refexp["image"])
  # The same phrases over other scenes' images: what the decoder gets from the words alone ("the ring at the
  # bottom" says where to look), the bar its use of the image has to clear.
  score("shuffled_images_baseline", np.roll(refexp["image"], 1, axis=0))
  out["refexp_centre_baseline"] = centre_baseline(truth, image_size)
  captions = data["caption"]
  answers = decode_texts(cache[id(model)], params, {"image": captions["image"], "prompt": captions["prompt"]},
                         detokenize)
  out["caption_cider"] = metrics.cider(answers, [[t] for t in captions["targets"]])
  return out


def decode_texts(predict, params, batch: dict[str, np.ndarray], detokenize, chunk: int = 128) -> list[str]:
  """Decoded answers of a jitted `predict(params, batch) -> DecodeResult`, `chunk` rows at a time."""
  n = len(next(iter(batch.values())))
  texts = []
  for start in range(0, n, chunk):
    part = {k: v[start:start + chunk] for k, v in batch.items()}
    pad = chunk - len(next(iter(part.values())))
    if pad:  # one compiled shape: pad the last chunk and drop the padding after
      part = {k: np.concatenate([v, np.repeat(v[-1:], pad, axis=0)]) for k, v in part.items()}
    tokens = to_host(predict(params, part).tokens)[:chunk - pad]
    texts.extend(detokenize(row) for row in tokens)
  return texts


def target_boxes(targets: list[str], image_size: int) -> list[list]:
  """The boxes each text's location tokens write (a refexp or detection target or answer), in pixels of a square
  image."""
  from tasks import locations  # pylint: disable=import-outside-toplevel
  return [locations.tokens_to_boxes(t, image_size, image_size) for t in targets]


def first_boxes(answers: list[str], image_size: int) -> list:
  """The first box each answer's location tokens write (None where they write none), in pixels."""
  from tasks import locations  # pylint: disable=import-outside-toplevel
  return [(locations.tokens_to_boxes(a, image_size, image_size) or [None])[0] for a in answers]


def refexp_accuracy(answers: list[str], truth: list[list], image_size: int) -> float:
  """refexp_accuracy: percent of answers whose first box has IoU >= 0.5 with its target's first box."""
  return metrics.refexp_accuracy(first_boxes(answers, image_size), [t[0] for t in truth])


def centre_baseline(truth: list[list], image_size: int) -> float:
  """refexp_centre_baseline of square scenes: targets are lists of boxes, their first scored."""
  return metrics.refexp_centre_baseline([t[0] for t in truth], [(image_size, image_size)] * len(truth))


# The benchmark's metric of each seqio task (tasks.registry); other tasks are scored by exact match.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "webli_ocr_synthetic": ("accuracy", "anls"),  # ANLS: partial credit for nearly read lines
    "documents_synthetic": ("anls", "accuracy"),
    "documents_native_synthetic": ("anls", "accuracy"),
    "charts_synthetic": ("relaxed_accuracy",),
    "charts_native_synthetic": ("relaxed_accuracy",),
}

# The generated scene tasks, reported under short names beside their baselines: VQA per question type beside
# the majority answer's accuracy, caption CIDEr, referring expressions beside the centre box and the same
# phrases over shuffled images, detection by exact match and by box F1 beside a centre box.
SCENE_TASKS: dict[str, str] = {"vqa_synthetic": "vqa", "webli_captions_synthetic": "caption",
                               "refexp_synthetic": "refexp", "detection_synthetic": "detect"}


def score(metric: str, answers: list[str], references: list[str]) -> float:
  """Percent: 'anls' (DocVQA), 'relaxed_accuracy' (ChartQA) or 'accuracy' (exact match)."""
  if metric == "anls":
    return metrics.anls(answers, [[r] for r in references])
  if metric == "relaxed_accuracy":
    return metrics.relaxed_accuracy(answers, references)
  if metric == "accuracy":
    return 100.0 * float(np.mean([a.strip() == r.strip() for a, r in zip(answers, references)]))
  raise ValueError(f"unknown metric {metric!r}: use 'anls', 'relaxed_accuracy' or 'accuracy'")


@gin.configurable(module="vlm.evaluation")
class SeqioTaskEvaluation:
  """A PaLI on the validation split of seqio tasks, by greedy decoding. Each task of SCENE_TASKS is reported
  under its short name beside its baselines (vqa_accuracy, vqa_<question type>, vqa_<type>_majority,
  vqa_majority_baseline; caption_cider; refexp_accuracy, refexp_centre_baseline,
  refexp_shuffled_images_baseline; detect_accuracy, detect_f1, detect_f1_centre_baseline); any other as
  '<task>_<metric>' for each of its TASK_METRICS (exact-match 'accuracy' for others). Dense or NaFlex, as the
  feature lengths say.

  Args:
    tasks: registered seqio task names.
    task_feature_lengths: the run's (choices drawn per step are evaluated at their largest).
    examples_per_task: validation examples decoded per task (its first ones: the same every evaluation).
    seed: the validation examples' data seed.
  """

  def __init__(self, tasks: tuple[str, ...] = gin.REQUIRED, task_feature_lengths: dict | None = None,
               examples_per_task: int = 256, seed: int = 1234):
    from tasks import pipeline, registry, scene_tasks  # pylint: disable=import-outside-toplevel  (TensorFlow)
    lengths = fixed_lengths(task_feature_lengths)
    self.batches = {task: pipeline.SeqioBatches(task, lengths, split="validation", seed=seed).batch(0, examples_per_task)
                    for task in tasks}
    self.image_size = registry.image_size()  # the square scenes' side: the frame their boxes are scored in
    self.majority, self.question_types = None, None
    if "vqa_synthetic" in tasks:  # each row's question type, as the generator the pipeline read it from drew it
      self.majority = scene_tasks.vqa_majority_baseline(seed=seed, max_objects=registry.scene_max_objects())
      self.question_types = np.array([scene_tasks.example_kind(seed, i, "validation", "vqa").removeprefix("vqa_")
                                      for i in range(examples_per_task)])
    self._predict = {}

  def __call__(self, model, params) -> dict[str, float]:
    predict = self._predict.setdefault(id(model), decoding.jit(model.predict_batch))
    out = {}
    for task, batch in self.batches.items():
      inputs = {k: v for k, v in batch.items() if not k.startswith("decoder_")}
      answers = decode_texts(predict, params, inputs, model.detokenize)
      references = [model.detokenize(row) for row in batch["decoder_target_tokens"]]
      name = SCENE_TASKS.get(task)
      if name == "refexp":
        # The same phrases over other scenes' images: what the model gets from the words alone ("the ring at
        # the bottom" says where to look), the bar its use of the image has to clear.
        shuffled = decode_texts(predict, params, {**inputs, "image": np.roll(inputs["image"], 1, axis=0)},
                                model.detokenize)
        out.update(self._refexp(answers, shuffled, references))
      elif name is not None:
        out.update(self._scene_task(name, answers, references))
      else:
        for metric in TASK_METRICS.get(task, ("accuracy",)):
          out[f"{task}_{metric}"] = score(metric, answers, references)
    return out

  def _refexp(self, answers: list[str], shuffled: list[str], references: list[str]) -> dict[str, float]:
    truth = target_boxes(references, self.image_size)
    return {"refexp_accuracy": refexp_accuracy(answers, truth, self.image_size),
            "refexp_centre_baseline": centre_baseline(truth, self.image_size),
            "refexp_shuffled_images_baseline": refexp_accuracy(shuffled, truth, self.image_size)}

  def _scene_task(self, name: str, answers: list[str], references: list[str]) -> dict[str, float]:
    if name == "caption":
      return {"caption_cider": metrics.cider(answers, [[t] for t in references])}
    correct = np.array([a.strip() == t.strip() for a, t in zip(answers, references)])
    out = {f"{name}_accuracy": 100.0 * float(correct.mean())}
    if name == "detect":  # boxes right at IoU >= 0.5, beside a centre box wherever the object is there
      truth, square = target_boxes(references, self.image_size), (self.image_size, self.image_size)
      out["detect_f1"] = metrics.detection_f1(target_boxes(answers, self.image_size), truth)
      out["detect_f1_centre_baseline"] = metrics.detection_centre_baseline(truth, [square] * len(truth))
    if name == "vqa":
      out["vqa_majority_baseline"] = self.majority["all"]["accuracy"]
      for question_type in sorted(set(self.question_types)):
        selected = self.question_types == question_type
        out[f"vqa_{question_type}"] = 100.0 * float(correct[selected].mean())
        out[f"vqa_{question_type}_majority"] = self.majority[question_type]["accuracy"]
    return out
