"""TensorFlow for the input pipeline, imported without its native start-up lines.

TensorFlow's shared libraries write to the process's stderr while they load and when they first look for
devices, before absl's logging is set up, so TF_CPP_MIN_LOG_LEVEL does not reach them: "All log messages
before absl::InitializeLog() ...", oneDNN's numerics notice, the CPU-instructions notice, and on a machine
without CUDA "Could not find cuda drivers" and "failed call to cuInit". They say nothing to a user of this
project (TensorFlow only reads data here) and would open every run's console. So the import and the device
lookup run with file descriptor 2 pointed at a temporary file; the known start-up lines are dropped and any
other line is written back to stderr unchanged.

Modules that use TensorFlow or seqio (which imports TensorFlow) import `tf` from here first.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

# INFO lines later on (tf.data's end-of-sequence notes) are noise too; a user's own setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

START_UP_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWE]\d{4} [\d:.]+\s+\d+ (port|cudart_stub|cuda_platform|cpu_feature_guard|cuda_dnn|cuda_fft|cuda_blas)\.cc"
    r"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags"
    r"|Unable to register cu(DNN|FFT|BLAS) factory")


def _import_quietly():
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile(mode="w+b") as captured:
    os.dup2(captured.fileno(), 2)
    try:
      import tensorflow  # pylint: disable=import-outside-toplevel
      tensorflow.config.list_physical_devices()  # the CUDA probe's lines come out here, not in a later step
    finally:
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True)
              if not START_UP_NOISE.match(line)]
      sys.stderr.write("".join(kept))
      sys.stderr.flush()
  return tensorflow


tf = sys.modules["tensorflow"] if "tensorflow" in sys.modules else _import_quietly()
