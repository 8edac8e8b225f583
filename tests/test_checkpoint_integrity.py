"""Checkpoints that were damaged after their save (a truncated, missing or changed file), checkpoints saved
before manifests existed, and the one-writer lock of MODEL_DIR (vlm.run_lock)."""

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time

import flax.struct
import jax
import numpy as np
import pytest

from vlm import checkpoints, manifests, run_lock


def params(scale):
  return {"params": {"dense": {"kernel": np.arange(4000.0).reshape(40, 100) * scale, "bias": np.ones(7) * scale}}}


def saved(model_dir, steps=(1, 2)):
  ckpt = checkpoints.Checkpointer(str(model_dir), period=1)
  for step in steps:
    ckpt.save(step, params(step))
  ckpt.close()
  return model_dir / checkpoints.CHECKPOINTS_DIR


def largest_file(step_dir):
  return max((os.path.join(root, name) for root, _, names in os.walk(step_dir) for name in names),
             key=os.path.getsize)


def truncate(step_dir):
  path = largest_file(step_dir)
  os.truncate(path, os.path.getsize(path) // 2)


def delete(step_dir):
  os.remove(largest_file(step_dir))


def flip_a_byte(step_dir):
  path = largest_file(step_dir)
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2] ^= 0x10
  open(path, "wb").write(bytes(data))


def test_a_committed_step_has_a_manifest_its_files_match(tmp_path):
  step_dir = saved(tmp_path) / "2"
  assert manifests.exists(str(step_dir))
  assert manifests.check(str(step_dir)) is None


def test_the_manifest_is_written_off_the_train_loop_before_the_commit(tmp_path, monkeypatch):
  calls = []
  write = manifests.write
  monkeypatch.setattr(manifests, "write", lambda step_dir: (calls.append((threading.current_thread(), step_dir)),
                                                            write(step_dir)))
  saved(tmp_path, steps=(1,))
  [(thread, step_dir)] = calls
  assert thread is not threading.main_thread()  # orbax's background thread
  assert step_dir.endswith("1.orbax-checkpoint-tmp")  # not yet committed: a committed step has its manifest


def age(step_dir, seconds):
  """Sets every file of step_dir last written `seconds` ago."""
  then = time.time() - seconds
  for root, _, names in os.walk(step_dir):
    for name in names:
      os.utime(os.path.join(root, name), (then, then))


def test_a_step_checked_intact_is_not_read_again_until_a_file_changes(tmp_path, monkeypatch):
  """vlm.eval resolves the step, then its loader restores it: one read of every byte, not two. A settled step
  (files older than the timestamps' granularity) is remembered; any change of size, mtime or inode re-reads."""
  step_dir = str(saved(tmp_path, steps=(1,)) / "1")
  reads = []
  crc32 = manifests._crc32  # pylint: disable=protected-access
  monkeypatch.setattr(manifests, "_crc32", lambda path: (reads.append(path), crc32(path))[1])
  assert manifests.check(step_dir) is None and manifests.check(step_dir) is None
  assert reads and len(reads) % 2 == 0  # just written: not yet settled, read twice
  age(step_dir, 60)
  reads.clear()
  assert manifests.check(step_dir) is None and manifests.check(step_dir) is None
  assert len(reads) == len(json.load(open(os.path.join(step_dir, manifests.MANIFEST_FILE)))["files"])
  flip_a_byte(step_dir)
  age(step_dir, 30)  # other bytes, the same size, a settled (but different) mtime
  assert "does not match its checksum" in manifests.check(step_dir)


@pytest.mark.parametrize("damage", [truncate, delete, flip_a_byte])
def test_a_damaged_newest_step_is_skipped_with_one_warning_and_saved_again(tmp_path, damage):
  directory = saved(tmp_path)
  damage(str(directory / "2"))
  ckpt = checkpoints.Checkpointer(str(tmp_path), period=1)
  with pytest.warns(checkpoints.CheckpointWarning) as caught:
    assert ckpt.latest_step() == 1
  assert len(caught) == 1 and f"{directory / '2'} is damaged" in str(caught[0].message)
  assert (tmp_path / checkpoints.DAMAGED_DIR / "2").is_dir()  # kept for a post-mortem, out of the way
  ckpt.save(2, params(2))  # the resumed run writes the step again
  ckpt.close()
  assert checkpoints.complete_steps(str(tmp_path)) == [1, 2]
  assert manifests.check(str(directory / "2")) is None


def abstract():
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params(1)["params"])


def test_restore_params_falls_back_to_the_newest_intact_step(tmp_path):
  directory = saved(tmp_path)
  flip_a_byte(str(directory / "2"))
  with pytest.warns(checkpoints.CheckpointWarning, match=f"{directory / '2'} is damaged"):
    restored = checkpoints.restore_params(str(tmp_path), abstract())
  np.testing.assert_array_equal(restored["dense"]["kernel"], params(1)["params"]["dense"]["kernel"])
  assert (directory / "2").is_dir()  # an inference loader moves nothing


def test_resolve_step_names_the_step_a_loader_reads(tmp_path):
  """vlm.eval resolves the step before loading, so its report names the step it read: the newest intact one
  (warning once of each damaged newer step) or the one asked for, checked."""
  directory = saved(tmp_path)
  assert checkpoints.resolve_step(str(tmp_path)) == 2 and checkpoints.resolve_step(str(tmp_path), 1) == 1
  flip_a_byte(str(directory / "2"))
  with pytest.warns(checkpoints.CheckpointWarning, match=f"{directory / '2'} is damaged") as caught:
    assert checkpoints.resolve_step(str(tmp_path)) == 1
  assert len(caught) == 1
  with pytest.raises(checkpoints.CheckpointError, match="the checkpoint at step 2 is damaged"):
    checkpoints.resolve_step(str(tmp_path), 2)
  with pytest.raises(checkpoints.CheckpointError, match="no complete checkpoint at step 5; its steps: 1, 2"):
    checkpoints.resolve_step(str(tmp_path), 5)


def test_restore_params_with_every_step_damaged_fails_in_one_line(tmp_path):
  directory = saved(tmp_path, steps=(1,))
  truncate(str(directory / "1"))
  with pytest.warns(checkpoints.CheckpointWarning):
    with pytest.raises(checkpoints.CheckpointError, match="every checkpoint is damaged") as error:
      checkpoints.restore_params(str(tmp_path), abstract())
  assert "\n" not in str(error.value) and "step 1" in str(error.value)


def test_a_step_saved_before_manifests_restores_with_a_warning(tmp_path):
  directory = saved(tmp_path, steps=(1,))
  os.remove(directory / "1" / manifests.MANIFEST_FILE)
  with pytest.warns(checkpoints.CheckpointWarning, match="has no manifest"):
    restored = checkpoints.restore_params(str(tmp_path), abstract())
  np.testing.assert_array_equal(restored["dense"]["bias"], params(1)["params"]["dense"]["bias"])


def test_an_empty_metadata_file_is_named(tmp_path):
  directory = saved(tmp_path, steps=(1,))
  os.remove(directory / "1" / manifests.MANIFEST_FILE)  # unverified: only its JSON can be checked
  (directory / "1" / "state" / "_METADATA").write_text("")
  with pytest.warns(checkpoints.CheckpointWarning):
    with pytest.raises(checkpoints.CheckpointError) as error:
      checkpoints.restore_params(str(tmp_path), abstract())
  assert f"{directory / '1' / 'state' / '_METADATA'} is empty; expected JSON" in str(error.value)


def test_an_empty_model_config_is_named(tmp_path):
  (tmp_path / checkpoints.MODEL_CONFIG_FILE).write_text("")
  with pytest.raises(checkpoints.CheckpointError, match=f"{tmp_path / checkpoints.MODEL_CONFIG_FILE} is empty"):
    checkpoints.read_json(str(tmp_path / checkpoints.MODEL_CONFIG_FILE))


def test_restore_params_of_another_geometry_names_the_parameter_and_both_shapes(tmp_path):
  saved(tmp_path, steps=(1,))
  wider = {"dense": {"kernel": jax.ShapeDtypeStruct((40, 128), np.float64),
                     "bias": jax.ShapeDtypeStruct((7,), np.float64)}}
  with pytest.raises(checkpoints.CheckpointError) as error:
    checkpoints.restore_params(str(tmp_path), wider)
  message = str(error.value)
  assert str(tmp_path) in message and "dense/kernel" in message and "(40, 100)" in message and "(40, 128)" in message


@flax.struct.dataclass
class State:
  params: dict


@pytest.mark.parametrize("restore", ["restore_params", "Checkpointer.restore"])
def test_restoring_logs_none_of_orbaxs_metadata_warnings_but_other_warnings(tmp_path, caplog, restore):
  saved(tmp_path, steps=(1,))
  absl = logging.getLogger("absl")
  for log_filter in checkpoints._ORBAX_LOG_FILTERS:  # as in a fresh process, where a restore comes first
    absl.removeFilter(log_filter)
  with caplog.at_level(logging.WARNING):
    if restore == "restore_params":
      checkpoints.restore_params(str(tmp_path), abstract())
    else:
      ckpt = checkpoints.Checkpointer(str(tmp_path), period=1)
      ckpt.restore(State(params=abstract()), ckpt.latest_step())  # a state with .params: its shapes are read
      ckpt.close()
    absl.warning("another warning")
  messages = [r.getMessage() for r in caplog.records]
  assert not [m for m in messages if "Metadata file does not exist" in m or "read only" in m], messages
  assert "another warning" in messages


def test_only_the_checkpointers_own_array_handler_override_goes_unlogged(caplog):
  """Orbax warns of every type handler override: the one Checkpointer makes on CPU is dropped, a user's is not."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  with caplog.at_level(logging.WARNING):
    checkpoints._save_replicated_arrays_whole_on_cpu()  # pylint: disable=protected-access
    assert not [r for r in caplog.records if "Type handler registry" in r.getMessage()]
    ocp.type_handlers.register_type_handler(jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False),
                                            override=True)
    assert [r for r in caplog.records if "Type handler registry" in r.getMessage()]


# ----------------------------------------------------------------------------------------------------------
# The run lock.
# ----------------------------------------------------------------------------------------------------------

def write_lock(model_dir, host, pid, age_s=0.0):
  path = model_dir / run_lock.LOCK_FILE
  path.write_text(json.dumps({"host": host, "pid": pid, "since": "2026-01-01T00:00:00+00:00"}))
  then = time.time() - age_s
  os.utime(path, (then, then))
  return path


def test_a_live_holder_is_named(tmp_path):
  write_lock(tmp_path, "other-host", 4242)
  with pytest.raises(run_lock.RunLockError) as error:
    run_lock.RunLock(str(tmp_path)).acquire()
  assert "host other-host, pid 4242, since 2026-01-01T00:00:00+00:00" in str(error.value)


def test_a_lock_of_a_lost_host_is_taken_over_once_its_heartbeat_is_stale(tmp_path):
  path = write_lock(tmp_path, "other-host", 4242, age_s=2 * run_lock.STALE_S)
  lock = run_lock.RunLock(str(tmp_path))
  with pytest.warns(run_lock.RunLockWarning, match="host other-host, pid 4242.*heartbeat stopped"):
    lock.acquire()
  assert json.loads(path.read_text())["pid"] == os.getpid()
  lock.release()
  assert not path.exists() and os.listdir(tmp_path) == []


def test_a_lock_of_a_dead_process_of_this_host_is_taken_over(tmp_path):
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
  write_lock(tmp_path, socket.gethostname(), int(dead.stdout))
  with pytest.warns(run_lock.RunLockWarning, match="no longer exists"):
    with run_lock.RunLock(str(tmp_path)):
      pass
  assert os.listdir(tmp_path) == []


def test_of_processes_racing_for_a_lock_exactly_one_gets_it(tmp_path):
  """Eight processes try at once, each holding what it gets for 3 s: one wins, seven are refused."""
  racer = ("import sys, time; from vlm import run_lock\n"
           "try:\n  lock = run_lock.RunLock(sys.argv[1]); lock.acquire()\n"
           "except run_lock.RunLockError:\n  sys.exit(3)\n"
           "time.sleep(3); lock.release()")
  env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
  procs = [subprocess.Popen([sys.executable, "-c", racer, str(tmp_path)], env=env) for _ in range(8)]
  codes = sorted(p.wait(timeout=60) for p in procs)
  assert codes == [0] + [3] * 7
  assert os.listdir(tmp_path) == []
