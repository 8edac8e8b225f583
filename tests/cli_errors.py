"""What the command-line tests share: a failed command ends in exactly one `error:` line, no traceback."""

import contextlib
import importlib
import io
import os
import subprocess
import sys
import traceback
import warnings

import gin


def assert_one_line_error(result, *fragments):
  """`result` (a subprocess.CompletedProcess) exited 1 with one `error:` line on stderr holding each fragment."""
  assert result.returncode == 1, result.stderr
  lines = [l for l in result.stderr.strip().splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
  for fragment in fragments:
    assert fragment in lines[0], lines[0]


def run_main(module: str, *args) -> subprocess.CompletedProcess:
  """`python -m MODULE ARGS` as a call of MODULE.main(ARGS) in this process, its outcome as the process's would be.

  For the commands a test expects to fail before they do any work. A `python -m` start pays its imports each
  time (about 8 s on the 2-core CI machine, TensorFlow's 5 s of them), and the one-line-error tests, one start
  each, were a sixth of the suite's time. Each program keeps tests that start it as a user does, in its own
  process. Here the exit code is SystemExit's, an exception that escapes main is printed to stderr as the
  interpreter would print it (a traceback, exit code 1), and so are warnings. The gin config is cleared before
  and after, and the program runs with glibc's default malloc (vlm.host_memory's settings would stay with this
  process).
  """
  out, err = io.StringIO(), io.StringIO()
  saved_format, saved_malloc = warnings.formatwarning, os.environ.get("VLM_SYSTEM_MALLOC")
  os.environ["VLM_SYSTEM_MALLOC"] = "1"
  gin.clear_config()
  code = 0
  try:
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
      _interpreter_warnings()
      try:
        importlib.import_module(module).main([str(a) for a in args])
      except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
      except Exception:  # pylint: disable=broad-except  (what the interpreter does with it)
        traceback.print_exc()
        code = 1
  finally:
    gin.clear_config()
    warnings.formatwarning = saved_format
    if saved_malloc is None:
      del os.environ["VLM_SYSTEM_MALLOC"]
    else:
      os.environ["VLM_SYSTEM_MALLOC"] = saved_malloc
  return subprocess.CompletedProcess(["python", "-m", module, *map(str, args)], code, out.getvalue(), err.getvalue())


def _interpreter_warnings() -> None:
  """Warnings as a fresh interpreter shows them: its default filters, each printed to (the current) sys.stderr,
  instead of pytest's recording them."""
  warnings.resetwarnings()
  for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
    warnings.simplefilter("ignore", category)
  warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: sys.stderr.write(
      warnings.formatwarning(message, category, filename, lineno, line))
