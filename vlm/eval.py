"""Transfer evaluations of a PaLI checkpoint on the benchmarks' own files (T5X's eval surface).

  python -m vlm.eval --gin_file=gin_configs/runs/eval_transfer.gin --gin.CHECKPOINT_PATH="'runs/pali'" \
      --gin.DATA_DIR="'/data'" [--gin.EVAL_TASKS="['vqav2', 'refcoco']"] [--gin.OUTPUT_DIR="'/tmp/eval'"]

Evaluates the latest checkpoint of a PaLI MODEL_DIR on each task of EVAL_TASKS (vlm.transfer_tasks lists them
and the files each reads) and writes under OUTPUT_DIR (default CHECKPOINT_PATH/eval_transfer): <task>.json,
<task>.png, results.md (the table printed at the end) and TensorBoard scalars.
"""

from __future__ import annotations

import sys

from vlm import gin_cli
from vlm import host_memory


def main(argv=None) -> None:
  host_memory.reuse_freed_memory()  # XLA:CPU's per-call buffers stop page-faulting (vlm.host_memory)
  args = gin_cli.parse(gin_cli.parser("vlm.eval", __doc__), argv)
  from vlm import transfer_eval  # pylint: disable=import-outside-toplevel
  with gin_cli.user_errors(args.debug):
    results, output_dir = transfer_eval.evaluate()
  import jax  # pylint: disable=import-outside-toplevel
  if jax.process_index() == 0:  # every process has the results; one prints them
    print(f"\nresults in {output_dir}:\n")
    print(transfer_eval.table(results))


if __name__ == "__main__":
  main(sys.argv[1:])
