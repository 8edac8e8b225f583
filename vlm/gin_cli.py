"""The gin command line every entry point shares (T5X's surface).

  --gin_file=F (several allowed; later files override earlier ones)
  --gin.KEY=VALUE  a binding or macro, VALUE written as gin writes it (strings quoted: --gin.MODEL_DIR="'/tmp/x'")
  --gin_bindings='KEY = VALUE'  the same, as T5X writes it
  --gin_search_paths=DIR,DIR  where relative gin files and includes are looked up (the repo root is always)
  --coordinator_address=HOST:PORT --num_processes=N --process_id=I  this process's place in a multi-host run
      (else found in the environment, if anywhere: see vlm.partitioning.initialize_distributed)

Errors a user can make (a missing file, an unknown binding, a bad value, data or checkpoint at fault) end in
one line on stderr naming the thing at fault and exit code 1; `--debug` shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import logging
import os
import re
import sys
import tokenize
import warnings
from typing import Iterator, Sequence

import gin

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class OneLineErrorParser(argparse.ArgumentParser):
  """argparse, but a bad command line ends as every other user error does: one `error:` line, exit code 1.

  The program's warnings read the same way (`warning: ...`), without Python's quoted source line.
  """

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    warnings.formatwarning = lambda message, *_, **__: f"warning: {message}\n"

  def error(self, message: str):
    print(f"error: {message} (python -m {self.prog} --help lists the flags)", file=sys.stderr)
    raise SystemExit(1)


def parser(prog: str, description: str,
           example: str = "--gin.TRAIN_STEPS=100 --gin.MODEL_DIR=\"'/tmp/run'\"") -> argparse.ArgumentParser:
  """The shared flags; `example`: the flags after --gin_file in the --help's example command."""
  p = OneLineErrorParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog="Any --gin.KEY=VALUE argument binds KEY (a macro such as MODEL_DIR or TRAIN_STEPS, "
                            "or a configurable's parameter) to the gin VALUE.\nMacros every run file sets: "
                            "MODEL_DIR, TRAIN_STEPS, BATCH_SIZE, CHECKPOINT_PERIOD, MIXTURE_OR_TASK_NAME, "
                            "TASK_FEATURE_LENGTHS, NUM_PARTITIONS, PARAMETER_PARTITIONING_DIMS.\nExample:\n"
                            f"  python -m {prog} --gin_file=gin_configs/runs/siglip_tiny_synthetic.gin {example}")
  p.add_argument("--gin_file", action="append", default=[], metavar="FILE",
                 help="gin config file; repeat for several (later ones override)")
  p.add_argument("--gin_bindings", action="append", default=[], metavar="'KEY = VALUE'",
                 help="a gin binding, as T5X writes them; the same as --gin.KEY=VALUE")
  p.add_argument("--gin_search_paths", default="", metavar="DIRS",
                 help="comma-separated directories for relative gin files and includes")
  p.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
  multihost = p.add_argument_group(
      "multi-host", "one process of a jax.distributed run; left out, they come from JAX_COORDINATOR_ADDRESS, "
      "JAX_NUM_PROCESSES and JAX_PROCESS_ID or the cluster launcher (SLURM, Open MPI, Cloud TPU), if any")
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
  bindings = []  # (the flag as given, the gin statement)
  for arg in rest:
    if not arg.startswith("--gin.") or "=" not in arg:
      p.error(f"unrecognised argument {arg!r} (gin bindings are written --gin.KEY=VALUE)")
    key, value = arg[len("--gin."):].split("=", 1)
    bindings.append((arg, f"{key} = {value}"))
  bindings += [(f"--gin_bindings={b}", b) for b in args.gin_bindings]
  if not args.gin_file:
    p.error("at least one --gin_file is required (for example gin_configs/runs/siglip_tiny_synthetic.gin)")
  from vlm import partitioning  # pylint: disable=import-outside-toplevel  (--help stays fast without JAX)
  with user_errors(args.debug, "jax.distributed"):
    partitioning.initialize_distributed(args.coordinator_address, args.num_processes, args.process_id)
  # dict.fromkeys: each directory once, in order (run from the repo, the working directory is REPO_ROOT).
  search = list(dict.fromkeys([REPO_ROOT, os.getcwd()] + [d for d in args.gin_search_paths.split(",") if d]))
  for directory in search:
    gin.add_config_file_search_path(directory)
  with user_errors(args.debug):
    files = [_resolve(f, search) for f in args.gin_file]
  # gin logs an ERROR line for every search path an include is not under, even when a later one has it.
  logging.disable(logging.ERROR)
  try:
    for path in files:  # one at a time, so that an error gin does not place is named by its file
      with user_errors(args.debug, f"gin file {path}"):
        gin.parse_config_file(path)
    for flag, binding in bindings:  # one at a time, so that an error names its flag
      with user_errors(args.debug, flag, hint=_quoting_hint(binding)):
        gin.parse_config(binding)
  finally:
    logging.disable(logging.NOTSET)
  return args


def _quoting_hint(binding: str) -> str:
  """For KEY = VALUE with a bare word or path as VALUE, how to write it as the gin string it must be."""
  if "=" not in binding:
    return ""
  key, value = (part.strip() for part in binding.split("=", 1))
  try:
    ast.literal_eval(value)
  except (ValueError, SyntaxError):
    if value and value[0] not in "@%'\"[{(" and "(" not in value:
      return f"a string needs quotes: --gin.{key}=\"'{value}'\""
    if "(" in value and value[0] not in "@(":
      return "a gin value is a literal (number, 'string', list, dict), @configurable or %MACRO, not a call"
  return ""


def _resolve(path: str, search: list[str]) -> str:
  for directory in [""] + search:
    candidate = os.path.join(directory, path)
    if os.path.isfile(candidate):
      return candidate
  raise FileNotFoundError(f"gin file {path!r} not found (looked in {', '.join(['.'] + search)})")


@contextlib.contextmanager
def user_errors(debug: bool, what: str = "", hint: str = "") -> Iterator[None]:
  """Turns the errors a user's input causes into one line and exit code 1.

  Args:
    what: what was being done, put before the message ("gin config", the flag at fault).
    hint: what to do, put after it.
  """
  try:
    yield
  except (ValueError, TypeError, OSError, KeyError, RuntimeError, SyntaxError, ArithmeticError, ImportError,
          tokenize.TokenError) as e:  # ImportError: a gin `import` line; TokenError: an unclosed bracket
    if debug:
      raise
    text = "a bracket is never closed" if isinstance(e, tokenize.TokenError) else str(e)  # (msg, (line, col))
    lines = [_without_reprs(line.strip()) for line in text.strip().splitlines()]
    message = _undefined_macro(lines) or (lines[0] if lines and lines[0] else type(e).__name__)
    where = next((line for line in lines[1:] if line.startswith("In file")), None)  # gin's file and line
    if where and where not in message:
      message = f"{message} ({where.rstrip(':')})"
    if "gin" in type(e).__module__ or "configurable" in message or "binding" in message.lower():
      message = f"{what or 'gin config'}: {message}"
    elif what:
      message = f"{what}: {message}"
    print(f"error: {message}" + (f"; {hint}" if hint else ""), file=sys.stderr)
    print("(run again with --debug for the full traceback)", file=sys.stderr)
    raise SystemExit(1) from None


def _without_reprs(line: str) -> str:
  """gin's parser reports a bad value as Python's ast error, '... malformed node or string on line 1: <ast.Name
  object at 0x7f...>': the user gets what it means instead of the object's address."""
  line = re.sub(r"malformed node or string on line \d+: <ast\.\w+ object at 0x[0-9a-f]+>", "not a gin value", line)
  return re.sub(r"<([\w.]+) object at 0x[0-9a-f]+>", r"a \1", line)


def _undefined_macro(lines: list[str]) -> str:
  """For gin's call of an unbound %NAME (its `macro` configurable in scope NAME, without a value), says so."""
  calls = [re.search(r"In call to configurable 'macro' .* in scope '([^']+)'", line) for line in lines]
  name = next((call.group(1) for call in calls if call), None)
  if not name:
    return ""
  return f"the gin macro %{name} is used but not defined: bind it in a gin file or with --gin.{name}=VALUE"
