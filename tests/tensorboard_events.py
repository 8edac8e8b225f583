"""Reading back the TensorBoard event files a run or an evaluation wrote, as TensorBoard would."""

import os


def tensorboard_events(directory) -> list[tuple[str, float]]:
  """Every scalar in `directory`'s event files, as (tag, value) in the order written."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  return [(value.tag, value.simple_value)
          for name in sorted(os.listdir(directory)) if name.startswith("events.out.tfevents")
          for event in tf.compat.v1.train.summary_iterator(os.path.join(directory, name))
          for value in event.summary.value]


def tensorboard_scalars(directory) -> dict[str, float]:
  """Each tag's last value."""
  return dict(tensorboard_events(directory))
