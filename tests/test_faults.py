"""Faults a long run meets, on `python -m vlm.train` as a user runs it: kill -9 while training, kill -9 while a
checkpoint is being written, an unwritable MODEL_DIR, a disk that is full or fills up during a save.

A kill during a write is made deterministic by fault injection from outside the code under test: the trainer
starts with a `sitecustomize` module on PYTHONPATH (Python imports it at start-up) that wraps orbax's commit of
a step, `AtomicRenameTemporaryPath.finalize` (it writes commit_success.txt into `N.orbax-checkpoint-tmp`, then
renames that to `N`). At the chosen step the wrapper creates a marker file, then either hangs, and the test
kills the process once the marker appears: every array of the step is on disk by then, only the commit is
missing, the moment a scheme without atomic commits would be likeliest to hand out a broken checkpoint; or
raises ENOSPC, as a disk that fills up during the save would. The hook is orbax 0.12's (setup.py pins it).
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.cli_errors import assert_one_line_error, run_main
from vlm import checkpoints

RUN = "gin_configs/runs/siglip_tiny_synthetic.gin"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS, PERIOD = 24, 4
TIMEOUT_S = 600

# The tiny run, shrunk: batch 8, no evaluation, every step's loss logged, a checkpoint every PERIOD steps.
ARGS = [f"--gin_file={RUN}", "--gin.BATCH_SIZE=8", f"--gin.TRAIN_STEPS={STEPS}", f"--gin.CHECKPOINT_PERIOD={PERIOD}",
        "--gin.vlm.trainer.train.evaluator=None", "--gin.vlm.trainer.train.log_period=1",
        "--gin.vlm.trainer.train.progress=False"]

INJECTOR = '''
import errno, os, time
from orbax.checkpoint._src.path import atomicity

_finalize = atomicity.AtomicRenameTemporaryPath.finalize

async def finalize(self, *args, **kwargs):
  if self.get_final().name == os.environ["FAULT_STEP"]:  # the step (its items commit under their own names)
    open(os.environ["FAULT_MARKER"], "w").close()
    if os.environ["FAULT"] == "hang":
      time.sleep(3600)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.get()))
  return await _finalize(self, *args, **kwargs)

atomicity.AtomicRenameTemporaryPath.finalize = finalize
'''


def environment(**extra):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device, as a user has
  env.update(JAX_PLATFORMS="cpu", **extra)
  return env


def with_fault(tmp_path, fault, step):
  """The environment of a run whose save of `step` hangs or fails ('hang' / 'enospc'); and the marker file
  that appears when it does."""
  injector = tmp_path / "injector"
  injector.mkdir()
  (injector / "sitecustomize.py").write_text(INJECTOR)
  marker = tmp_path / "fault_reached"
  pythonpath = os.pathsep.join(p for p in (str(injector), os.environ.get("PYTHONPATH")) if p)
  return environment(PYTHONPATH=pythonpath, FAULT=fault, FAULT_STEP=str(step), FAULT_MARKER=str(marker)), marker


def train(model_dir, env=None, extra=()):
  """The run, to its end."""
  return subprocess.run([sys.executable, "-m", "vlm.train", *ARGS, *extra, f"--gin.MODEL_DIR='{model_dir}'"],
                        cwd=REPO, env=env or environment(), capture_output=True, text=True, timeout=TIMEOUT_S)


def refused(model_dir, extra=()):
  """The run's outcome when it stops before training: in this process (tests/cli_errors.run_main)."""
  return run_main("vlm.train", *ARGS, *extra, f"--gin.MODEL_DIR='{model_dir}'")


@contextlib.contextmanager
def training(model_dir, log, env=None):
  """The run in the background, in a process group of its own, killed with the group on leaving."""
  with open(log, "w") as out:
    proc = subprocess.Popen([sys.executable, "-m", "vlm.train", *ARGS, f"--gin.MODEL_DIR='{model_dir}'"], cwd=REPO,
                            env=env or environment(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
  try:
    yield proc
  finally:
    kill(proc)


def kill(proc):
  if proc.poll() is None:
    os.killpg(proc.pid, signal.SIGKILL)
  proc.wait()


def wait_for(condition, proc, log):
  deadline = time.monotonic() + TIMEOUT_S
  while not condition():
    assert proc.poll() is None, f"the run ended ({proc.returncode}) first:\n{open(log).read()[-3000:]}"
    assert time.monotonic() < deadline, "timed out"
    time.sleep(0.05)


def logged_losses(model_dir):
  """{step: loss} of metrics.jsonl's complete lines (a run may be appending to it)."""
  path = os.path.join(model_dir, "metrics.jsonl")
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    records = [json.loads(line) for line in f.read().split("\n")[:-1]]
  return {r["step"]: r["loss"] for r in records if "split" not in r}


def assert_same_run(model_dir, reference):
  losses = logged_losses(model_dir)
  assert sorted(losses) == list(range(1, STEPS + 1))
  np.testing.assert_allclose([losses[s] for s in sorted(losses)], [reference[s] for s in sorted(losses)], rtol=1e-5)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """The losses of the uninterrupted run."""
  model_dir = tmp_path_factory.mktemp("reference")
  result = train(model_dir)
  assert result.returncode == 0, result.stderr
  return logged_losses(model_dir)


@pytest.mark.slow
def test_kill_9_while_training_resumes_from_the_last_complete_checkpoint(tmp_path, reference):
  model_dir, log = tmp_path / "run", tmp_path / "first.log"
  with training(model_dir, log) as proc:
    wait_for(lambda: max(logged_losses(model_dir), default=0) >= 2 * PERIOD + 2, proc, log)
    kill(proc)
  assert proc.returncode == -signal.SIGKILL
  killed_after = max(logged_losses(model_dir))
  complete = checkpoints.complete_steps(str(model_dir))
  assert complete and PERIOD <= complete[-1] <= killed_after < STEPS, (complete, killed_after)

  second = train(model_dir)  # the same command again
  assert second.returncode == 0, second.stderr
  assert f"resuming from step {complete[-1]};" in second.stdout
  assert_same_run(model_dir, reference)


@pytest.mark.slow
def test_kill_9_while_a_checkpoint_is_written_never_restores_it(tmp_path, reference):
  model_dir, log = tmp_path / "run", tmp_path / "first.log"
  env, marker = with_fault(tmp_path, "hang", step=2 * PERIOD)
  ckpt_dir = model_dir / checkpoints.CHECKPOINTS_DIR
  with training(model_dir, log, env) as proc:
    wait_for(marker.exists, proc, log)
    # Step 2 * PERIOD is written in full under its temporary name; only its commit is missing.
    assert (ckpt_dir / f"{2 * PERIOD}.orbax-checkpoint-tmp" / "state").is_dir()
    assert not (ckpt_dir / str(2 * PERIOD)).exists()
    kill(proc)
  assert checkpoints.complete_steps(str(model_dir)) == [PERIOD]

  second = train(model_dir)
  assert second.returncode == 0, second.stderr
  assert f"resuming from step {PERIOD};" in second.stdout
  assert_same_run(model_dir, reference)
  assert not [name for name in os.listdir(ckpt_dir) if "tmp" in name]  # the interrupted write is cleaned up


@pytest.mark.slow
def test_a_disk_that_fills_up_during_a_save_ends_in_one_line(tmp_path):
  model_dir = tmp_path / "run"
  env, marker = with_fault(tmp_path, "enospc", step=2 * PERIOD)
  result = train(model_dir, env)
  assert marker.exists()
  assert_one_line_error(result, f"saving a checkpoint under {model_dir / 'checkpoints'} failed",
                        "No space left on device", f"the last complete checkpoint (step {PERIOD}) is kept",
                        "run the same command again to resume")
  assert checkpoints.complete_steps(str(model_dir)) == [PERIOD]


def test_an_unwritable_model_dir_ends_in_one_line_before_training(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("")
  result = refused(blocker / "run")
  assert_one_line_error(result, f"MODEL_DIR {blocker / 'run'} is not writable", "--gin.MODEL_DIR")
  assert "model:" not in result.stdout  # nothing was built


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_full_disk_ends_in_one_line_before_training(tmp_path):
  # The write probe lands on /dev/full, where every write fails with ENOSPC, as on a full disk.
  model_dir = tmp_path / "run"
  model_dir.mkdir()
  os.symlink("/dev/full", model_dir / ".write_test.0")
  result = refused(model_dir)
  assert_one_line_error(result, f"MODEL_DIR {model_dir} is not writable (No space left on device)", "free space")
  assert "model:" not in result.stdout


def test_a_half_written_or_uncommitted_step_is_not_a_checkpoint(tmp_path):
  ckpt = checkpoints.Checkpointer(str(tmp_path), period=1)
  ckpt.save(1, {"w": np.arange(3.0)})
  ckpt.close()
  directory = tmp_path / checkpoints.CHECKPOINTS_DIR
  (directory / "2.orbax-checkpoint-tmp" / "state").mkdir(parents=True)  # a save killed before its commit
  (directory / "3" / "state").mkdir(parents=True)  # a step directory without a commit file
  assert checkpoints.complete_steps(str(tmp_path)) == [1]
  ckpt = checkpoints.Checkpointer(str(tmp_path), period=1)
  assert ckpt.latest_step() == 1
  ckpt.save(4, {"w": np.arange(3.0)})  # orbax removes leftover temporary directories before its first save
  ckpt.close()
  assert checkpoints.complete_steps(str(tmp_path)) == [1, 4]
  assert not (directory / "2.orbax-checkpoint-tmp").exists()


@pytest.mark.slow
def test_a_truncated_newest_checkpoint_is_skipped_and_the_run_resumes_exactly(tmp_path, reference):
  model_dir = tmp_path / "run"
  assert train(model_dir).returncode == 0
  newest = model_dir / checkpoints.CHECKPOINTS_DIR / str(STEPS)
  files = [os.path.join(root, name) for root, _, names in os.walk(newest) for name in names]
  biggest = max(files, key=os.path.getsize)
  os.truncate(biggest, os.path.getsize(biggest) // 2)

  second = train(model_dir)  # the same command again
  assert second.returncode == 0, second.stderr
  warned = [line for line in second.stderr.splitlines() if line.startswith("warning: checkpoint ")]
  assert len(warned) == 1 and f"{newest} is damaged ({biggest} has" in warned[0], second.stderr
  assert f"resuming from step {STEPS - PERIOD};" in second.stdout
  assert_same_run(model_dir, reference)


@pytest.mark.slow
def test_a_second_run_on_a_held_model_dir_is_refused_and_a_killed_holders_lock_taken_over(tmp_path, reference):
  model_dir, log = tmp_path / "run", tmp_path / "first.log"
  env, marker = with_fault(tmp_path, "hang", step=2 * PERIOD)  # the holder stays alive, in a save
  with training(model_dir, log, env) as first:
    wait_for(marker.exists, first, log)
    second = train(model_dir)
    assert_one_line_error(second, f"MODEL_DIR {model_dir} is in use by a run on host", f"pid {first.pid}, since")
    assert first.poll() is None  # the holder runs on, untouched
    kill(first)
  third = train(model_dir)  # the holder was killed with -9: its lock is stale
  assert third.returncode == 0, third.stderr
  assert "took over" in third.stderr and f"pid {first.pid}" in third.stderr and "no longer exists" in third.stderr
  assert_same_run(model_dir, reference)
  assert not (model_dir / "run.lock").exists()


def test_a_run_that_fails_validation_leaves_no_model_dir_behind(tmp_path):
  result = refused(tmp_path / "new" / "run", extra=["--gin.vlm.trainer.train.microbatches=3"])  # 8 rows: no
  assert result.returncode == 1, result.stderr
  assert not (tmp_path / "new").exists()
  kept = tmp_path / "kept"
  kept.mkdir()
  assert refused(kept, extra=["--gin.vlm.trainer.train.frozen_params='img/(('"]).returncode == 1
  assert kept.is_dir() and os.listdir(kept) == []


def test_an_invalid_frozen_params_regex_ends_in_one_line(tmp_path):
  result = refused(tmp_path / "run", extra=["--gin.vlm.trainer.train.frozen_params='img/(('"])
  assert_one_line_error(result, "frozen_params='img/(('", "is not a valid regular expression", "missing )")
