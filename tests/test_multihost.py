"""Multi-host training on localhost: 2 processes x 4 CPU devices train exactly as 1 process x 8 devices.

Every process runs `python -m vlm.train` with the distributed flags, as on two hosts (README, "Multi-host");
jax.distributed joins them, with gloo carrying the collectives between CPU processes.
"""

import os
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from tests import scene_data
from vlm import manifests, partitioning, summaries

RUN = "gin_configs/runs/siglip_tiny_synthetic.gin"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 600  # per launch; every process of a launch is killed past it

# The tiny run, shrunk: a few steps of batch 16, a checkpoint every 3 steps, losses logged every step, the
# schedule's length pinned (a 3-step run is then the first half of the 6-step one) and a small evaluation
# (dense metrics on 64 scenes, not 256) at the end only.
ARGS = [f"--gin_file={RUN}", "--gin.BATCH_SIZE=16", "--gin.CHECKPOINT_PERIOD=3", "--gin.EVAL_PERIOD=1000",
        "--gin.vlm.trainer.train.log_period=1", "--gin.vlm.trainer.train.progress=False",
        "--gin.vlm.optim.schedule.total_steps=6",
        "--gin.vlm.evaluation.SceneZeroShotRetrieval.images_per_class=1",
        "--gin.vlm.evaluation.SceneZeroShotRetrieval.retrieval_pairs=32",
        "--gin.vlm.evaluation.SceneZeroShotRetrieval.dense_scenes=64"]


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def launch(log_dir, *args, processes=1, devices=8) -> list[str]:
  """Runs `python -m vlm.train ARGS` as `processes` processes of `devices` CPU devices each.

  Returns each process's output (stdout and stderr). The first process to fail, or the timeout, ends every
  process of the launch, so none is left waiting for a peer.
  """
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_COORDINATOR_ADDRESS")}
  env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
  port = free_port()
  os.makedirs(log_dir, exist_ok=True)
  logs = [os.path.join(log_dir, f"process_{i}.log") for i in range(processes)]
  procs = []
  try:
    for i, log in enumerate(logs):
      flags = ([f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={processes}", f"--process_id={i}"]
               if processes > 1 else [])
      with open(log, "w") as out:
        procs.append(subprocess.Popen([sys.executable, "-m", "vlm.train", *args, *flags], cwd=REPO, env=env,
                                      stdout=out, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + TIMEOUT_S
    while (any(p.poll() is None for p in procs) and time.monotonic() < deadline
           and all(p.returncode in (None, 0) for p in procs)):
      time.sleep(0.5)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
      p.wait()
  outputs = [open(log).read() for log in logs]
  for i, (p, output) in enumerate(zip(procs, outputs)):
    assert p.returncode == 0, f"process {i} of {processes} ended with {p.returncode}:\n{output[-3000:]}"
  return outputs


def records(model_dir):
  train = {r["step"]: r["loss"] for r in summaries.read_metrics(str(model_dir)) if "split" not in r}
  evals = [r for r in summaries.read_metrics(str(model_dir)) if r.get("split") == "eval"]
  return train, evals


@pytest.mark.slow
def test_two_processes_of_four_devices_train_as_one_of_eight_and_resume(tmp_path):
  one, two = tmp_path / "one", tmp_path / "two"
  launch(tmp_path / "logs_one", *ARGS, f"--gin.MODEL_DIR='{one}'", "--gin.TRAIN_STEPS=6")
  # Two processes stop after their step-3 checkpoint, as if killed there; the same command with the full
  # step count resumes them.
  first = launch(tmp_path / "logs_two_first", *ARGS, f"--gin.MODEL_DIR='{two}'", "--gin.TRAIN_STEPS=3",
                 "--gin.vlm.trainer.train.evaluator=None", processes=2, devices=4)
  second = launch(tmp_path / "logs_two_second", *ARGS, f"--gin.MODEL_DIR='{two}'", "--gin.TRAIN_STEPS=6",
                  processes=2, devices=4)

  assert "mesh {'data': 8, 'model': 1}; starting from scratch" in first[0]
  assert "resuming from step 3" in second[0]
  assert "model:" not in first[1] + second[1]  # process 0 alone reports
  (one_losses, one_evals), (two_losses, two_evals) = records(one), records(two)
  # One metrics line a step: process 0 alone wrote metrics.jsonl.
  assert sorted(one_losses) == sorted(two_losses) == list(range(1, 7))
  np.testing.assert_allclose([two_losses[s] for s in range(1, 7)], [one_losses[s] for s in range(1, 7)],
                             rtol=1e-5)
  assert [r["step"] for r in two_evals] == [r["step"] for r in one_evals] == [6]
  # The linear probe is a classifier fitted (by L-BFGS, in float32) on the features: float rounding between the
  # two meshes flips a few of its patch predictions, most where a 6-step tower leaves near ties (0.2 points
  # here; vlm.dense_evaluation.fit_probe), so it gets an absolute tolerance.
  probe_one, probe_two = one_evals[0].pop("seg_miou_probe"), two_evals[0].pop("seg_miou_probe")
  assert probe_two == pytest.approx(probe_one, abs=0.5)
  assert two_evals[0] == pytest.approx(one_evals[0], rel=1e-5)
  assert sorted(int(d) for d in os.listdir(two / "checkpoints") if d.isdigit()) == [3, 6]
  assert (two / "config.gin").exists() and (two / "loss.png").exists()
  assert not [f for f in os.listdir(two) if f.startswith(".write_test")]
  # Process 0 listed every process's files in each step's manifest, and held the run's lock alone, until its end.
  assert all(manifests.check(str(two / "checkpoints" / step)) is None for step in ("3", "6"))
  assert manifests.exists(str(two / "checkpoints" / "6")) and not (two / "run.lock").exists()


def test_bad_distributed_flags_end_in_one_line(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  result = subprocess.run([sys.executable, "-m", "vlm.train", f"--gin_file={RUN}", f"--gin.MODEL_DIR='{tmp_path}'",
                           f"--coordinator_address=127.0.0.1:{free_port()}", "--num_processes=2",
                           "--process_id=2"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and errors[0].startswith("error: jax.distributed: process_id"), result.stderr


def train_once(tmp_path, *flags, **env_vars):
  """One `python -m vlm.train` process with these flags and environment variables, to its end."""
  env = {k: v for k, v in os.environ.items()
         if k not in ("XLA_FLAGS", "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")}
  return subprocess.run([sys.executable, "-m", "vlm.train", f"--gin_file={RUN}", f"--gin.MODEL_DIR='{tmp_path}'",
                         *flags], cwd=REPO, env={**env, **env_vars}, capture_output=True, text=True, timeout=120)


def test_jax_num_processes_and_jax_process_id_are_read_from_the_environment(tmp_path):
  result = train_once(tmp_path, f"--coordinator_address=127.0.0.1:{free_port()}", JAX_NUM_PROCESSES="2",
                      JAX_PROCESS_ID="2")  # read, JAX itself names the process id out of range
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert result.returncode == 1 and len(errors) == 1, result.stderr
  assert errors[0].startswith("error: jax.distributed: process_id"), result.stderr


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.1:port", ":12345", "127.0.0.1:99999"])
def test_a_bad_coordinator_address_ends_in_one_line(tmp_path, address):
  result = train_once(tmp_path, f"--coordinator_address={address}", "--num_processes=2", "--process_id=0")
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert result.returncode == 1 and len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
  assert f"coordinator address {address!r} is not HOST:PORT" in errors[0]


class RowSource(scene_data.Batches):
  """Scene pairs (tasks.pipeline) that read part of a batch, recording which rows they were asked for."""

  def __init__(self):
    super().__init__("webli_pairs_synthetic", {"text": 16}, size=16)
    self.asked = []

  def batch_rows(self, step, batch_size, rows):
    self.asked.append(list(rows))
    return super().batch_rows(step, batch_size, rows)


def test_a_source_that_reads_rows_is_asked_for_this_process_rows_only():
  partitioner = partitioning.Partitioner(num_partitions=2)
  source = RowSource()
  batch = partitioning.read_batch(partitioner, source, 5, 16)
  # One process holds every row of the 4 x 2 mesh's 'data' axis.
  assert source.asked == [list(range(16))]
  expected = RowSource().batch(5, 16)  # a fresh pipeline's whole batch 5
  for key, value in batch.items():
    assert value.shape == expected[key].shape and value.sharding == partitioner.batch_sharding(value.ndim)
    np.testing.assert_array_equal(jax.device_get(value), expected[key])


@pytest.mark.parametrize("tasks, multi_process", [("1", False), ("4", True)])
def test_a_slurm_step_of_several_tasks_starts_jax_distributed_and_one_task_does_not(monkeypatch, tasks,
                                                                                    multi_process):
  slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "node[0-1]", "SLURM_NTASKS": tasks, "SLURM_PROCID": "0",
           "SLURM_LOCALID": "0"}
  for name, value in slurm.items():
    monkeypatch.setenv(name, value)
  assert partitioning._multi_process_launch() is multi_process  # pylint: disable=protected-access
