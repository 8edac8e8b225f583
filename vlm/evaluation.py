"""Evaluators the trainer calls as evaluator(model, params) -> {name: value}.

`SceneZeroShotRetrieval` judges a two-tower model on the generated scenes of `tasks.scenes`:
  - zero-shot classification of single-object images among all (colour, shape) classes by their prompts,
    reported separately for combinations seen in training and for HELD_OUT_COMBOS (never seen together);
  - image->text and text->image R@1 on held-out scenes.
Chance levels are reported next to them, so a reader can tell learning from luck.
"""

from __future__ import annotations

import gin
import jax
import numpy as np

from tasks import scene_pairs
from tasks import scenes
from vlm import metrics


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
      outs.setdefault(k, []).append(np.asarray(v)[:chunk - pad])
  return {k: np.concatenate(v) for k, v in outs.items()}


@gin.configurable(module="vlm.evaluation")
class SceneZeroShotRetrieval:
  """Zero-shot accuracy (seen / held-out combinations) and retrieval R@1 on generated scenes."""

  def __init__(self, image_size: int = 32, task_feature_lengths: dict[str, int] | None = None,
               images_per_class: int = 20, retrieval_pairs: int = 512, seed: int = 1234):
    pairs = scene_pairs.SceneCaptionPairs(image_size, task_feature_lengths, split="eval", seed=seed)
    text_length = pairs.text_length
    vocab = scene_pairs.vocabulary()
    self.combos = scenes.all_combos()
    self.prompts = vocab.encode_batch([scenes.class_prompt(c, s) for c, s in self.combos], text_length)
    zs = scenes.zero_shot_batch(seed, self.combos, images_per_class, image_size)
    self.zs_images, self.zs_labels = zs["image"], zs["label"]
    self.held_out = np.array([self.combos[i] in scenes.HELD_OUT_COMBOS for i in self.zs_labels])
    self.pairs = pairs.batch(0, retrieval_pairs)

    self._predict = {}  # model -> jitted predict_batch, compiled once per run

  def __call__(self, model, params) -> dict[str, float]:
    predict = self._predict.setdefault(id(model), jax.jit(model.predict_batch))
    classes = embed(predict, params, {"text": self.prompts})["text"]
    images = embed(predict, params, {"image": self.zs_images})["image"]
    pairs = embed(predict, params, self.pairs)
    n_classes, n_pairs = len(self.combos), len(self.pairs["text"])
    out = {
        "zero_shot_seen": metrics.zero_shot_accuracy(images[~self.held_out], classes, self.zs_labels[~self.held_out]),
        "zero_shot_held_out": metrics.zero_shot_accuracy(images[self.held_out], classes, self.zs_labels[self.held_out]),
        "zero_shot_chance": 100.0 / n_classes,
    }
    r = metrics.retrieval(pairs["image"], pairs["text"], ks=(1,))
    out.update(i2t_R1=r["i2t_R@1"], t2i_R1=r["t2i_R@1"], retrieval_chance=100.0 / n_pairs)
    return out
