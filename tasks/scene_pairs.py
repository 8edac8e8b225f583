"""Image-text pairs from `tasks.scenes`, batched and tokenised for a two-tower (SigLIP) model.

`batch(step, batch_size)` is a pure function of (seed, step), so a resumed run sees exactly the batches of
an uninterrupted one and no iterator state needs saving.
"""

from __future__ import annotations

import functools

import gin
import numpy as np

from tasks import feature_converters
from tasks import scenes
from tasks import word_vocab


@functools.cache
def vocabulary() -> word_vocab.WordVocabulary:
  return word_vocab.WordVocabulary(scenes.vocabulary_words())


@gin.configurable(module="tasks.scene_pairs")
def vocab_size(multiple: int = 8) -> int:
  """For gin: `encoders.text.config.vocab_size = @tasks.scene_pairs.vocab_size()`.

  Rounded up to a multiple of `multiple` (the extra ids are never produced), so the embedding table splits
  evenly over a 'model' mesh axis of up to that size, as T5X pads its vocabularies.
  """
  return -(-vocabulary().vocab_size // multiple) * multiple


@gin.configurable(module="tasks.scene_pairs")
class SceneCaptionPairs:
  """Batches {'image': float32 [B, S, S, 3] in [-1, 1], 'text': int32 [B, task_feature_lengths['text']]}.

  Captions longer than the text length are cut (keeping EOS); the default 40 holds every template's caption.
  """

  def __init__(self, image_size: int = 32, task_feature_lengths: dict[str, int] | None = None,
               split: str = "train", seed: int = 0, max_objects: int = 3):
    self.image_size, self.split = image_size, split
    lengths = feature_converters.check_task_feature_lengths(task_feature_lengths, {"text": 40}, "SceneCaptionPairs")
    self.text_length = lengths["text"]
    self.seed, self.max_objects = seed, max_objects

  def batch(self, step: int, batch_size: int) -> dict[str, np.ndarray]:
    raw = scenes.sample_batch(self.seed, step, batch_size, self.image_size, self.split, self.max_objects)
    return {"image": raw["image"], "text": vocabulary().encode_batch(raw["text"], self.text_length)}
