"""A run's training batches by MIXTURE_OR_TASK_NAME, the gin macro every run file sets.

The name is one of the generated sources the tiny runs read directly, without seqio:

  scene_caption_pairs   image + caption pairs for two towers (tasks.scene_pairs.SceneCaptionPairs)
  scene_tasks           captions / VQA / refexp / detection for PaLI (tasks.scene_pali.SceneTaskBatches)

(their other settings, image_size and tasks, are their own gin bindings), or any registered seqio task or
mixture (`python -m tasks.list`), read through tasks.pipeline.SeqioBatches. A seqio task brings its own
vocabulary and image size (tasks.vocab, tasks.registry.image_size), which the model's must match, as
gin_configs/runs/pali_tiny_seqio.gin sets them.
"""

from __future__ import annotations

from collections.abc import Mapping

import gin

GENERATED = ("scene_caption_pairs", "scene_tasks")


@gin.configurable(module="tasks.by_name")
def batches(mixture_or_task_name: str = gin.REQUIRED, task_feature_lengths: Mapping[str, int] = gin.REQUIRED,
            split: str = "train", seed: int = 0):
  """The batches named `mixture_or_task_name`, an object with batch(step, batch_size) the trainer reads.

  Raises:
    ValueError: the name is neither a generated source nor a registered seqio task or mixture.
  """
  # Imported here: the generated sources need no TensorFlow, which the seqio pipeline loads.
  if mixture_or_task_name == "scene_caption_pairs":
    from tasks import scene_pairs  # pylint: disable=import-outside-toplevel
    return scene_pairs.SceneCaptionPairs(task_feature_lengths=task_feature_lengths, split=split, seed=seed)
  if mixture_or_task_name == "scene_tasks":
    from tasks import scene_pali  # pylint: disable=import-outside-toplevel
    return scene_pali.SceneTaskBatches(task_feature_lengths=task_feature_lengths, split=split, seed=seed)
  from tasks import pipeline  # pylint: disable=import-outside-toplevel  (registers the synthetic tasks)
  import seqio  # pylint: disable=import-outside-toplevel
  if not isinstance(mixture_or_task_name, str) or mixture_or_task_name not in (
      set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names())):
    raise ValueError(f"MIXTURE_OR_TASK_NAME={mixture_or_task_name!r} is neither a generated source "
                     f"({', '.join(GENERATED)}) nor a registered seqio task or mixture (python -m tasks.list "
                     "lists those)")
  return pipeline.SeqioBatches(mixture_or_task_name, task_feature_lengths, split=split, seed=seed)
