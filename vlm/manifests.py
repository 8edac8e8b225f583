"""Manifests of checkpoint steps: each file's size and CRC-32, written at commit, checked before a restore.

Orbax's commit says a step was written in full; it says nothing about what happened to the files since (a
copy cut short, a disk that flips bits, a file deleted by hand). The manifest does: `write` records every
file of a step directory, `check` names the first file that is missing, has another size, or other bytes.

CRC-32 (zlib) rather than a cryptographic hash: it catches truncation and flipped bits, which is the job, at
about twice SHA-256's speed here (benchmarks/README.md, "Checkpoint manifests"); it is no defence against a
file altered on purpose.
"""

from __future__ import annotations

import json
import os
import stat
import time
import zlib

MANIFEST_FILE = "manifest.vlm.json"  # in the step directory, next to orbax's own files
# Written (the marker) or rewritten (the step's metadata, with its commit time) by orbax after the manifest,
# when it commits the step. Neither holds the state: an empty or lost one restores the same arrays.
_NOT_LISTED = (MANIFEST_FILE, "commit_success.txt", "_CHECKPOINT_METADATA")
_CHUNK = 16 << 20
# Steps this process has read in full and found intact, with each file's (size, mtime, inode) then: the same step
# checked again unchanged (vlm.eval resolves the step it will report, then the loader restores it) is not read a
# second time. Only steps whose files were all last written _SETTLED_S before the check are remembered: a file
# rewritten within the file system's timestamp granularity of its last write could keep its mtime.
_intact: dict[str, tuple] = {}
_SETTLED_S = 2.0


def _crc32(path: str) -> int:
  crc = 0
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      crc = zlib.crc32(chunk, crc)
  return crc


def _files(step_dir: str) -> list[str]:
  """Every file under `step_dir`, as sorted paths relative to it, the manifest and commit marker left out."""
  found = []
  for root, _, names in os.walk(step_dir):
    for name in names:
      rel = os.path.relpath(os.path.join(root, name), step_dir)
      if rel not in _NOT_LISTED:
        found.append(rel)
  return sorted(found)


def write(step_dir: str) -> None:
  """Records each file of `step_dir` (size, CRC-32) in its manifest, written atomically (temporary + rename)."""
  files = {}
  for rel in _files(step_dir):
    path = os.path.join(step_dir, rel)
    files[rel] = {"size": os.path.getsize(path), "crc32": _crc32(path)}
  tmp = os.path.join(step_dir, f"{MANIFEST_FILE}.tmp")
  with open(tmp, "w") as f:
    json.dump({"files": files}, f)
  os.replace(tmp, os.path.join(step_dir, MANIFEST_FILE))


def exists(step_dir: str) -> bool:
  return os.path.isfile(os.path.join(step_dir, MANIFEST_FILE))


def check(step_dir: str) -> str | None:
  """None if every file of the manifest of `step_dir` is there with its size and checksum, else what is not.

  Sizes first, over every file, then checksums: a truncated or missing file is found without reading the rest.
  A settled step already read intact by this process, its files unchanged since, is not read again (_intact).
  """
  path = os.path.join(step_dir, MANIFEST_FILE)
  try:
    with open(path) as f:
      files = json.load(f)["files"]
  except (OSError, ValueError, KeyError, TypeError) as e:
    return f"its manifest {path} is unreadable ({e})"
  stats = [os.stat(path)]  # the manifest's and each file's: sizes checked here, the rest the step's signature
  for rel, want in files.items():
    full = os.path.join(step_dir, rel)
    try:
      st = os.stat(full)
    except OSError:
      st = None
    if st is None or not stat.S_ISREG(st.st_mode):  # os.path.isfile's test, on the one stat the size needs too
      return f"{full} is missing"
    stats.append(st)
    if st.st_size != want["size"]:
      return f"{full} has {st.st_size} bytes, the manifest records {want['size']}"
  key = os.path.abspath(step_dir)
  signature = tuple((st.st_size, st.st_mtime_ns, st.st_ino) for st in stats)
  if _intact.get(key) == signature:
    return None
  started = time.time()
  for rel, want in files.items():
    if _crc32(os.path.join(step_dir, rel)) != want["crc32"]:
      return f"{os.path.join(step_dir, rel)} does not match its checksum (its bytes changed after the save)"
  if started - max(st.st_mtime for st in stats) > _SETTLED_S:
    _intact[key] = signature
  return None
