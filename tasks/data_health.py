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
threads, far from the trainer. Those threads record events without a lock: a thread holding a lock can run
Python's garbage collector, which can destroy an old tf.data iterator, whose destructor waits for that
iterator's worker threads; a worker waiting for the lock would never finish (the chart renderer deadlocked
that way). `deque.append` is atomic, so events go through a deque, summed on reading under a lock that only
readers take.
"""

from __future__ import annotations

import collections
import logging
import threading

_LOG = logging.getLogger(__name__)
_EVENTS: collections.deque[tuple[str, int]] = collections.deque()  # recorded, not yet summed into _COUNTS
_COUNTS: collections.Counter[str] = collections.Counter()
_WARNED: set[str] = set()
_READING = threading.Lock()  # readers only: record() never waits


def record(source: str, reason: str, detail: str = "", n: int = 1) -> None:
  """Counts n skipped (or truncated) examples of a source; warns the first time a (source, reason) occurs.

  Args:
    source: the data source's name (a task name, such as "coco_captions").
    reason: why, a short snake_case word such as "undecodable_image" or "corrupt_file".
    detail: what was at fault (a file, a record id), shown in the first warning only.
    n: how many examples the event stands for.
  """
  key = f"{source}/{reason}"
  _EVENTS.append((key, n))
  if key not in _WARNED:  # two threads meeting a new fault at once may both warn: harmless
    _WARNED.add(key)
    _LOG.warning("data: skipping bad data from %s (%s)%s; further cases are counted in data_health.counts()",
                 source, reason, f": {detail}" if detail else "")


def counts() -> dict[str, int]:
  """Every count so far: {"<source>/<reason>": n}, keys sorted."""
  with _READING:
    while _EVENTS:
      key, n = _EVENTS.popleft()
      _COUNTS[key] += n
    return dict(sorted(_COUNTS.items()))


def reset() -> None:
  """Forgets every count, and which (source, reason) pairs have been warned about."""
  with _READING:
    _EVENTS.clear()
    _COUNTS.clear()
    _WARNED.clear()


__all__ = ["record", "counts", "reset"]
