"""Batches of the generated seqio tasks (tasks.registry) at a test's small image size, as the runs read them:
tasks.pipeline with the shipped sentencepiece vocabulary (tasks.vocab)."""

from tasks import pipeline
from tasks import registry
from tasks import vocab


class Batches(pipeline.SeqioBatches):
  """SeqioBatches of a task or mixture at `size` px: the size is bound whenever a pipeline is built (which
  reads it), so tests at different sizes do not see each other's binding."""

  def __init__(self, name: str, task_feature_lengths: dict, size: int = 16, split: str = "train", seed: int = 0):
    self.size = size
    with registry.image_size_bound(size):
      super().__init__(name, task_feature_lengths, split=split, seed=seed)

  def process_batch(self, step, global_batch_size, process_index, process_count):
    with registry.image_size_bound(self.size):
      return super().process_batch(step, global_batch_size, process_index, process_count)


def vocab_size() -> int:
  """The UL2's / text tower's embedding rows for the shipped vocabulary."""
  return vocab.vocab_size()


def vocabulary():
  return vocab.vocabulary()
