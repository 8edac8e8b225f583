"""One writer per MODEL_DIR: a lock file that a run holds from before it reads MODEL_DIR until it ends.

MODEL_DIR/run.lock holds its holder (host, pid, since) as JSON. It is taken atomically: the record is written
to a file of this process's own, then hard-linked to run.lock, which fails if run.lock exists, so there is no
moment between "is it free" and "it is mine", and no reader ever sees a half-written record. A thread touches
the file every HEARTBEAT_S seconds while the run lives.

A lock is stale, and is taken over with a warning, when its holder is a process of this host that no longer
exists (kill -9), or when its heartbeat stopped more than `stale_s` seconds ago (a host that was lost; also a
pid of this host reused by another process). The take-over renames the stale file to a name of this
process's own before linking a new one, so of two processes taking over at once only one succeeds.

Works on local disks and on shared file systems with POSIX link/rename semantics (NFS); not on object stores.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import threading
import time
import warnings

LOCK_FILE = "run.lock"
HEARTBEAT_S = 30.0
STALE_S = 300.0  # 10 missed heartbeats


class RunLockError(RuntimeError):
  """MODEL_DIR is held by another live run; the message names it."""


class RunLockWarning(UserWarning):
  """A stale lock (its holder died) was taken over."""


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # exists, owned by another user
    return True
  return True


class RunLock:
  """`with RunLock(model_dir):` holds MODEL_DIR for this process (see the module docstring)."""

  def __init__(self, model_dir: str, stale_s: float = STALE_S, heartbeat_s: float = HEARTBEAT_S):
    self.path = os.path.join(model_dir, LOCK_FILE)
    self.stale_s, self.heartbeat_s = stale_s, heartbeat_s
    self._record = {"host": socket.gethostname(), "pid": os.getpid(),
                    "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    self._own = f"{self.path}.{self._record['host']}.{os.getpid()}"  # this process's private names
    self._stop = threading.Event()
    self._beat: threading.Thread | None = None

  def __enter__(self) -> RunLock:
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()

  def acquire(self) -> None:
    with open(self._own, "w") as f:
      json.dump(self._record, f)
    try:
      if not self._link():
        self._take_over_if_stale()
    finally:
      os.unlink(self._own)
    self._beat = threading.Thread(target=self._heartbeat, name="run-lock-heartbeat", daemon=True)
    self._beat.start()

  def _link(self) -> bool:
    try:
      os.link(self._own, self.path)
    except FileExistsError:
      return False
    return True

  def _take_over_if_stale(self) -> None:
    holder, inode = self._read()
    why = self._stale_because(holder)
    if why is None:
      raise RunLockError(f"MODEL_DIR {os.path.dirname(self.path)} is in use by a run on host {holder['host']}, "
                         f"pid {holder['pid']}, since {holder['since']} ({self.path}); wait for it to end, or use "
                         "another MODEL_DIR")
    aside, took = f"{self._own}.stale", False
    try:
      os.rename(self.path, aside)
    except FileNotFoundError:  # another process took it over first
      aside = None
    if aside is not None:
      if os.stat(aside).st_ino == inode:
        took = self._link()
      else:  # the file moved was the fresh lock of a process that took over first: give it back
        with contextlib.suppress(FileExistsError):
          os.link(aside, self.path)
      os.unlink(aside)
    if not took:
      holder, _ = self._read()
      raise RunLockError(f"MODEL_DIR {os.path.dirname(self.path)} was just taken by a run on host "
                         f"{holder['host']}, pid {holder['pid']}; wait for it to end, or use another MODEL_DIR")
    warnings.warn(f"took over {self.path} from a run on host {holder['host']}, pid {holder['pid']}, since "
                  f"{holder['since']}: {why}", RunLockWarning, stacklevel=3)

  def _read(self) -> tuple[dict, int]:
    """The holder's record and the lock file's inode (a lock being taken over may vanish: then retry)."""
    for _ in range(10):
      try:
        with open(self.path) as f:
          return json.load(f), os.fstat(f.fileno()).st_ino
      except FileNotFoundError:
        time.sleep(0.01)
      except ValueError:
        raise RunLockError(f"{self.path} is not a lock this project wrote (not JSON); if no run uses MODEL_DIR, "
                           "delete it") from None
    raise RunLockError(f"{self.path} keeps changing hands; wait for the other runs to settle")

  def _stale_because(self, holder: dict) -> str | None:
    """Why the lock of `holder` is stale, or None if its run may be alive."""
    if holder["host"] == socket.gethostname() and not _alive(holder["pid"]):
      return "that process no longer exists"
    try:
      silent = time.time() - os.stat(self.path).st_mtime
    except FileNotFoundError:
      return "it was released"
    if silent > self.stale_s:
      return f"its heartbeat stopped {silent:.0f} s ago (more than {self.stale_s:g} s)"
    return None

  def _heartbeat(self) -> None:
    while not self._stop.wait(self.heartbeat_s):
      try:
        os.utime(self.path)
      except OSError:  # MODEL_DIR went away; the run's own writes will report it
        return

  def release(self) -> None:
    """Stops the heartbeat and removes the lock, if it is still this process's."""
    self._stop.set()
    if self._beat is not None:
      self._beat.join()
    try:
      with open(self.path) as f:
        mine = json.load(f) == self._record
    except (OSError, ValueError):
      return
    if mine:
      os.unlink(self.path)
