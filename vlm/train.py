"""Train any model of this project from gin files.

  python -m vlm.train --gin_file=gin_configs/runs/siglip_tiny_synthetic.gin [--gin.TRAIN_STEPS=100 ...]

Writes under MODEL_DIR: orbax checkpoints (checkpoints/), TensorBoard events (train/, eval/), metrics.jsonl,
config.gin (the full configuration as run) and loss.png. Re-running the same command resumes, from the newest
checkpoint whose files match its manifest (a damaged newer one is moved to damaged_checkpoints/, with a
warning). One run at a time: while a run holds MODEL_DIR (run.lock), a second is refused, naming it.

Multi-host: run the same command in every process, adding --coordinator_address, --num_processes and
--process_id where the environment does not provide them (README, "Multi-host"). Every process computes;
process 0 alone prints and writes the files above, orbax checkpoints excepted (every process saves its shards).
"""

from __future__ import annotations

import os
import sys

import gin

from vlm import gin_cli
from vlm import host_memory


def main(argv=None) -> None:
  host_memory.reuse_freed_memory()  # before JAX allocates: XLA:CPU's per-step buffers stop page-faulting
  parser = gin_cli.parser("vlm.train", __doc__)
  args = gin_cli.parse(parser, argv)
  import jax  # pylint: disable=import-outside-toplevel
  from vlm import summaries, trainer  # pylint: disable=import-outside-toplevel
  main_process = jax.process_index() == 0
  with gin_cli.user_errors(args.debug):
    model_dir = gin.query_parameter("%MODEL_DIR")
    trainer.check_model_dir(model_dir)

    def record_config() -> None:  # once the run has started: a run that cannot start keeps the old record
      with open(os.path.join(model_dir, "config.gin"), "w") as f:
        f.write(gin.config_str())

    results = trainer.train(on_start=record_config)
    if not main_process:  # process 0 reports for the run
      return
    plot = summaries.plot_loss(model_dir)
  print(f"\nresults in {os.path.abspath(model_dir)}:")
  print(f"  metrics     {os.path.join(model_dir, summaries.METRICS_FILE)}")
  print(f"  loss plot   {plot}")
  print(f"  tensorboard tensorboard --logdir {model_dir}")
  width = max([28] + [len(name) + 2 for name in results])
  for name, value in results.items():
    print(f"  {name:<{width}s}{value:.4f}")


if __name__ == "__main__":
  main(sys.argv[1:])
