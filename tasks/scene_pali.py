"""Scene tasks (captions, VQA, referring expressions, detection) batched for an encoder-decoder (PaLI).

Until a run names a seqio mixture, the tiny PaLI curriculum reads these directly: a word-level vocabulary
over every word the scene tasks can produce (location tokens included, one word each), and T5X's
encoder-decoder features. `batch(step, batch_size)` is a pure function of (seed, step), so a resumed run sees
exactly the batches of an uninterrupted one.
"""

from __future__ import annotations

import functools
from typing import Mapping

import gin
import numpy as np

from tasks import feature_converters
from tasks import locations
from tasks import scene_tasks
from tasks import word_vocab


@gin.configurable(module="tasks.scene_pali")
@functools.cache
def vocabulary() -> word_vocab.WordVocabulary:
  return word_vocab.WordVocabulary(scene_tasks.vocabulary_words())


@gin.configurable(module="tasks.scene_pali")
def vocab_size(multiple: int = 8) -> int:
  """The embedding table size, rounded up so it splits evenly over a 'model' mesh axis (as T5X pads)."""
  return -(-vocabulary().vocab_size // multiple) * multiple


def tokenize(texts, length: int) -> np.ndarray:
  """int32 [len(texts), length]: word ids + EOS, truncated (keeping EOS) or padded with 0."""
  return vocabulary().encode_batch([locations.separate_loc_tokens(t) for t in texts], length)


def detokenize(ids) -> str:
  """Text of model output ids; ids of the padded table beyond the vocabulary read as <unk>."""
  vocab = vocabulary()
  return vocab.decode([i if i < vocab.vocab_size else vocab.unk_id for i in map(int, ids)])


@gin.configurable(module="tasks.scene_pali")
class SceneTaskBatches:
  """Batches {'image' [B, S, S, 3], 'encoder_input_tokens' [B, inputs], 'decoder_target_tokens' [B, targets]}.

  Args:
    image_size: square image side in pixels.
    task_feature_lengths: {'inputs': prompt length, 'targets': answer length} in tokens (EOS included).
    tasks: a task name of tasks.scene_tasks ('vqa', 'caption', 'refexp', 'detect', 'vqa_count', ...) or a
      mapping of names to mixing rates.
    split: 'train' or 'validation' (held-out scenes and colour-shape combinations).
  """

  def __init__(self, image_size: int = 32, task_feature_lengths: Mapping[str, int] | None = None,
               tasks: str | Mapping[str, float] = "vqa", split: str = "train", seed: int = 0,
               max_objects: int = 3):
    lengths = feature_converters.check_task_feature_lengths(task_feature_lengths, {"inputs": 16, "targets": 24},
                                                            "SceneTaskBatches")
    self.inputs_length, self.targets_length = lengths["inputs"], lengths["targets"]
    if "vqg" in ([tasks] if isinstance(tasks, str) else tasks):
      raise ValueError("task 'vqg' is not in the word-level scene vocabulary; train it through seqio "
                       "(MIXTURE_OR_TASK_NAME = 'vqg_synthetic', gin_configs/runs/pali_tiny_seqio.gin)")
    self.image_size, self.tasks, self.split, self.seed = image_size, tasks, split, seed
    self.max_objects = max_objects

  def examples(self, step: int, batch_size: int) -> dict:
    """The raw batch: images and the texts (and task kinds) before tokenisation."""
    tasks = dict(self.tasks) if isinstance(self.tasks, Mapping) else self.tasks
    return scene_tasks.batch(self.seed, step, batch_size, self.split, tasks, self.image_size, self.max_objects)

  def batch(self, step: int, batch_size: int) -> dict[str, np.ndarray]:
    raw = self.examples(step, batch_size)
    return {"image": raw["image"],
            "encoder_input_tokens": tokenize(raw["inputs"], self.inputs_length),
            "decoder_target_tokens": tokenize(raw["targets"], self.targets_length)}
