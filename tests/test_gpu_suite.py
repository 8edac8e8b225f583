"""benchmarks/gpu_suite.py runs on a lent GPU only now and then: its toy-size run here keeps it working."""

import os
import pathlib
import re
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def run_suite(*args):
  env = {**{k: v for k, v in os.environ.items() if k != "XLA_FLAGS"},
         "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "benchmarks")])}
  return subprocess.run([sys.executable, "gpu_suite.py", *args], cwd=REPO / "benchmarks", env=env,
                        capture_output=True, text=True, timeout=600)


def test_every_section_prints_its_rows_at_toy_sizes():
  result = run_suite("--smoke")
  assert result.returncode == 0, result.stderr[-3000:]
  out = result.stdout
  for header in ("attention numerics", "SigLIP train step", "image tower forward", "PaLI train step",
                 "greedy decoding"):
    assert header in out, header
  # jax.nn's XLA kernel in bf16 is as close to the fp32 reference as the bf16 reference path is.
  numerics = [line for line in out.splitlines() if "T5 bias" in line]
  assert len(numerics) == 2 and all(line.split()[-1] == "ok" for line in numerics), numerics
  assert "out of memory" not in out
  train_rows = [line for line in out.splitlines() if re.match(r"(pico/8 @32|pico/8 \+ UL2).*remat", line)]
  assert len(train_rows) == 3  # two SigLIP remat policies and one PaLI step
  for line in train_rows:
    # The plan's estimate against the compiled step's memory, within 2x either way on this CPU.
    assert 0.5 <= float(line.split()[-1]) <= 2.0, line
  ratios = re.findall(r"(\d+\.\d+)x", out)
  assert len(ratios) == 2 and all(float(r) > 0 for r in ratios)  # one forward and one decoding comparison


def test_an_unknown_section_is_one_error_line():
  result = run_suite("--sections", "siglip,train")
  assert result.returncode == 2
  assert "unknown section(s) train" in result.stderr and "Traceback" not in result.stderr
