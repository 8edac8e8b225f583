"""What the command-line tests share: a failed command ends in exactly one `error:` line, no traceback."""


def assert_one_line_error(result, *fragments):
  """`result` (a subprocess.CompletedProcess) exited 1 with one `error:` line on stderr holding each fragment."""
  assert result.returncode == 1, result.stderr
  lines = [l for l in result.stderr.strip().splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
  for fragment in fragments:
    assert fragment in lines[0], lines[0]
