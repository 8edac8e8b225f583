"""The gin command line every entry point shares (T5X's surface).

  --gin_file=F (several allowed; later files override earlier ones)
  --gin.KEY=VALUE  a binding or macro, VALUE written as gin writes it (strings quoted: --gin.MODEL_DIR="'/tmp/x'")
  --gin_search_paths=DIR,DIR  where relative gin files and includes are looked up (the repo root is always)
  --coordinator_address=HOST:PORT --num_processes=N --process_id=I  this process's place in a multi-host run
      (else found in the environment, if anywhere: see vlm.partitioning.initialize_distributed)

Errors a user can make (a missing file, an unknown binding, a bad value, data or checkpoint at fault) end in
one line on stderr naming the thing at fault and exit code 1; `--debug` shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Iterator, Sequence

import gin

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parser(prog: str, description: str) -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog=prog, description=description,
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog="Any --gin.KEY=VALUE argument binds KEY (a macro such as MODEL_DIR or TRAIN_STEPS, "
                                     "or a configurable's parameter) to the gin VALUE.\nExample:\n"
                                     f"  python -m {prog} --gin_file=gin_configs/runs/siglip_tiny_synthetic.gin "
                                     "--gin.TRAIN_STEPS=100 --gin.MODEL_DIR=\"'/tmp/run'\"")
  p.add_argument("--gin_file", action="append", default=[], metavar="FILE",
                 help="gin config file; repeat for several (later ones override)")
  p.add_argument("--gin_search_paths", default="", metavar="DIRS",
                 help="comma-separated directories for relative gin files and includes")
  p.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
  multihost = p.add_argument_group(
      "multi-host", "one process of a jax.distributed run; left out, they come from JAX_COORDINATOR_ADDRESS "
                    "or the cluster launcher (SLURM, Open MPI, Cloud TPU), if any")
  multihost.add_argument("--coordinator_address", metavar="HOST:PORT",
                         help="address of process 0, where the processes meet")
  multihost.add_argument("--num_processes", type=int, metavar="N", help="how many processes take part")
  multihost.add_argument("--process_id", type=int, metavar="I", help="this process's index, 0 .. N-1")
  return p


def parse(p: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
  """Parses flags, joins a multi-host run if asked to, and loads the gin config.

  Unknown flags other than --gin.KEY=VALUE are errors. jax.distributed is initialised before gin runs any
  import a config names, since it must precede every other use of JAX.
  """
  args, rest = p.parse_known_args(argv)
  bindings = []
  for arg in rest:
    if not arg.startswith("--gin.") or "=" not in arg:
      p.error(f"unrecognised argument {arg!r} (gin bindings are written --gin.KEY=VALUE)")
    key, value = arg[len("--gin."):].split("=", 1)
    bindings.append(f"{key} = {value}")
  if not args.gin_file:
    p.error("at least one --gin_file is required (for example gin_configs/runs/siglip_tiny_synthetic.gin)")
  from vlm import partitioning  # pylint: disable=import-outside-toplevel  (--help stays fast without JAX)
  with user_errors(args.debug, "jax.distributed"):
    partitioning.initialize_distributed(args.coordinator_address, args.num_processes, args.process_id)
  search = [REPO_ROOT, os.getcwd()] + [d for d in args.gin_search_paths.split(",") if d]
  for directory in search:
    gin.add_config_file_search_path(directory)
  files = [_resolve(f, search) for f in args.gin_file]
  with user_errors(args.debug, "gin config"):
    gin.parse_config_files_and_bindings(files, bindings, finalize_config=False)
  return args


def _resolve(path: str, search: list[str]) -> str:
  for directory in [""] + search:
    candidate = os.path.join(directory, path)
    if os.path.isfile(candidate):
      return candidate
  raise SystemExit(f"error: gin file {path!r} not found (looked in the current directory and {REPO_ROOT})")


@contextlib.contextmanager
def user_errors(debug: bool, what: str = "") -> Iterator[None]:
  """Turns the errors a user's input causes into one line and exit code 1."""
  try:
    yield
  except (ValueError, TypeError, OSError, KeyError, RuntimeError, SyntaxError) as e:
    if debug:
      raise
    message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if "gin" in type(e).__module__ or "configurable" in message or "binding" in message.lower():
      message = f"{what or 'gin config'}: {message}"
    elif what:
      message = f"{what}: {message}"
    print(f"error: {message}", file=sys.stderr)
    print("(run again with --debug for the full traceback)", file=sys.stderr)
    raise SystemExit(1) from None
