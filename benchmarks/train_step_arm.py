"""One arm of a train-step benchmark: a model's own jitted step (vlm.trainer.build_step_functions) on a fixed
batch, in the phase where every objective runs; what objectives_cost.py and siglip2_cost.py time."""

from __future__ import annotations

import jax

from timing import best_times
from vlm import optim, partitioning, trainer


class TrainStepArm:
  """`step()` runs one train step to completion; `params` and `teacher_bytes` describe the state."""

  def __init__(self, model, batch: dict, partitioner: partitioning.Partitioner):
    self.partitioner = partitioner
    self.fns = trainer.build_step_functions(model, optim.adamw(learning_rate=1e-3), partitioner, batch)
    with partitioner.context():
      self.state = self.fns.init(jax.random.key(0))
      self.batch = partitioning.global_batch(partitioner, batch)
    self.phase = model.phase(0) if getattr(model, "objectives", ()) else None
    self.params = partitioning.count_params(self.state.params)
    self.teacher_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(self.state.teacher))

  def step(self) -> None:
    with self.partitioner.context():
      self.state, metrics = self.fns.train_step(self.state, self.batch, self.phase)
    jax.block_until_ready(metrics)


def best_step_times(arms, repeats: int) -> list[float]:
  """Seconds of each arm's fastest step (timing.best_times, interleaved), after compiling and one warm step."""
  for arm in arms:
    arm.step()  # compile
    arm.step()
  return best_times([arm.step for arm in arms], repeats)
