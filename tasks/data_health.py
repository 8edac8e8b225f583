"""Counts of the bad data the input pipeline skipped or truncated, by source and reason.

Real data has faults: an image that does not decode, a shard cut short, a record without its caption, a text
longer than the model reads. The pipeline never stops for one and never drops one silently: it skips the
example (or truncates the text), calls `record(source, reason)`, and goes on. The trainer writes `counts()` to
its summaries, so a run shows how much of its data it lost and why.

  record("coco_captions", "undecodable_image")   # the first time: one warning line naming the source and reason
  counts()  -> {"coco_captions/undecodable_image": 1}
  reset()   # forget every count (and which warnings were shown)

Counts are of events in this process since the last reset(): an example read twice (two epochs, two evals)
that is bad both times counts twice, and each host of a multi-host run counts only what it read.

The counter is process-wide because tf.data runs the Python callbacks that find the faults on its own
threads, far from the trainer; a lock keeps concurrent updates whole.
"""

from __future__ import annotations

import collections
import logging
import threading

_LOG = logging.getLogger(__name__)
_LOCK = threading.Lock()
_COUNTS: collections.Counter[str] = collections.Counter()
_WARNED: set[str] = set()


def record(source: str, reason: str, detail: str = "", n: int = 1) -> None:
  """Counts n skipped (or truncated) examples of a source; warns the first time a (source, reason) occurs.

  Args:
    source: the data source's name (a task name, such as "coco_captions").
    reason: why, a short snake_case word such as "undecodable_image" or "corrupt_file".
    detail: what was at fault (a file, a record id), shown in the first warning only.
    n: how many examples the event stands for.
  """
  key = f"{source}/{reason}"
  with _LOCK:
    _COUNTS[key] += n
    first = key not in _WARNED
    _WARNED.add(key)
  if first:
    _LOG.warning("data: skipping bad data from %s (%s)%s; further cases are counted in data_health.counts()",
                 source, reason, f": {detail}" if detail else "")


def counts() -> dict[str, int]:
  """Every count so far: {"<source>/<reason>": n}, keys sorted."""
  with _LOCK:
    return dict(sorted(_COUNTS.items()))


def reset() -> None:
  """Forgets every count, and which (source, reason) pairs have been warned about."""
  with _LOCK:
    _COUNTS.clear()
    _WARNED.clear()


__all__ = ["record", "counts", "reset"]
