"""benchmarks/gpu_suite.py runs on a lent GPU only now and then: its toy-size run here keeps it working."""

import pathlib
import re
import sys

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def suite():
  sys.path.insert(0, str(BENCHMARKS))  # the scripts import their neighbours (timing, decode) by name
  try:
    import gpu_suite  # pylint: disable=import-outside-toplevel
    yield gpu_suite
  finally:
    sys.path.remove(str(BENCHMARKS))


def test_every_section_prints_its_rows_at_toy_sizes(suite, capsys):
  suite.main(["--smoke"])
  out = capsys.readouterr().out
  for header in ("attention numerics", "SigLIP train step", "image tower forward", "PaLI train step",
                 "greedy decoding"):
    assert header in out, header
  assert "out of memory" not in out and "failed" not in out
  # jax.nn's XLA kernel in bf16 is as close to the fp32 reference as the bf16 reference path is.
  numerics = [line for line in out.splitlines() if "T5 bias" in line]
  assert len(numerics) == 2 and all(line.split()[-1] == "ok" for line in numerics), numerics
  train_rows = [line for line in out.splitlines() if re.match(r"(pico/8 @32|pico/8 \+ UL2).*remat", line)]
  assert len(train_rows) == 2  # a SigLIP step and a PaLI step
  for line in train_rows:
    # The plan's estimate against the compiled step's memory, within 2x either way on this CPU.
    assert 0.5 <= float(line.split()[-1]) <= 2.0, line
  ratios = re.findall(r"(\d+\.\d+)x", out)
  assert len(ratios) == 2 and all(float(r) > 0 for r in ratios)  # one forward and one decoding comparison


def test_an_unknown_section_is_one_error_line(suite, capsys):
  with pytest.raises(SystemExit) as exit_info:
    suite.main(["--sections", "siglip,train"])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert "unknown section(s) train" in err and "Traceback" not in err
