"""Where a run's numbers go: MODEL_DIR/metrics.jsonl, TensorBoard events, and a loss-curve plot.

metrics.jsonl has one JSON object a line: train lines carry `step` and `loss` (means over the logging
period); eval lines carry `step` and `split`. TensorBoard events go to MODEL_DIR/train and MODEL_DIR/eval,
as T5X lays them out, so `tensorboard --logdir MODEL_DIR` shows both.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from typing import Mapping

METRICS_FILE = "metrics.jsonl"
LOSS_PLOT = "loss.png"


class SummaryWriter:
  """Appends to metrics.jsonl and writes TensorBoard scalars. On resume, lines past the resumed step are
  dropped first, so the file always tells one uninterrupted story."""

  def __init__(self, model_dir: str, resume_step: int):
    TBWriter = _tensorboardx_writer()  # pylint: disable=invalid-name
    self.path = os.path.join(model_dir, METRICS_FILE)
    _truncate_after(self.path, resume_step)
    # purge_step: TensorBoard hides the events a resumed run logged past its checkpoint, as metrics.jsonl drops them.
    self._tb = {split: TBWriter(os.path.join(model_dir, split), flush_secs=30,
                                **({"purge_step": resume_step + 1} if resume_step else {}))
                for split in ("train", "eval")}

  def write(self, step: int, metrics: Mapping[str, float], split: str = "train") -> None:
    record = {"step": int(step), **({"split": split} if split != "train" else {}),
              **{k: float(v) for k, v in metrics.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    for name, value in metrics.items():
      self._tb[split].add_scalar(name, float(value), int(step))

  def close(self) -> None:
    for writer in self._tb.values():
      writer.close()


def _tensorboardx_writer():
  """tensorboardX's SummaryWriter class, imported without torch where torch is not loaded yet.

  tensorboardX imports torch whenever it is installed (the test extras install it), only to accept torch
  tensors, which this module never passes; that import costs ~3 s at the start of every run. A None entry in
  sys.modules makes `import torch` fail, for the duration of this import only.
  """
  if "tensorboardX" in sys.modules or "torch" in sys.modules:
    from tensorboardX import SummaryWriter as TBWriter  # pylint: disable=import-outside-toplevel
    return TBWriter
  sys.modules["torch"] = None
  try:
    from tensorboardX import SummaryWriter as TBWriter  # pylint: disable=import-outside-toplevel
  finally:
    del sys.modules["torch"]
  return TBWriter


def _truncate_after(path: str, step: int) -> None:
  if not os.path.exists(path):
    return
  kept = [json.dumps(r) + "\n" for r in _read_lines(path) if r["step"] <= step]
  with open(f"{path}.tmp", "w") as f:  # then renamed: a crash now leaves the old file, not half of it
    f.writelines(kept)
  os.replace(f"{path}.tmp", path)


def _read_lines(path: str) -> list[dict]:
  """The records of a metrics.jsonl; a line a crash cut short (or any unreadable one) is skipped and counted."""
  records, unreadable = [], 0
  with open(path) as f:
    for line in f:
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        record = None
      if isinstance(record, dict) and "step" in record:
        records.append(record)
      else:
        unreadable += 1
  if unreadable:
    print(f"warning: {path}: skipped {unreadable} unreadable line(s)", file=sys.stderr)
  return records


def read_metrics(model_dir: str) -> list[dict]:
  return _read_lines(os.path.join(model_dir, METRICS_FILE))


# Words that mark an eval key as a baseline (the number a metric has to beat), not a metric.
_BASELINE_WORDS = ("majority", "baseline", "chance")


def _is_baseline(name: str) -> bool:
  return any(w in _BASELINE_WORDS for w in name.split("_"))


def baseline_of(name: str, metrics: list[str]) -> str | None:
  """The metric an eval key is the baseline of, or None if `name` is a metric itself (or pairs with none).

  A baseline names its metric's words before its own (vqa_colour_majority -> vqa_colour); when several
  metrics share them, the one with 'accuracy' is taken (refexp_centre_baseline -> refexp_accuracy), else the
  first (zero_shot_chance -> zero_shot_seen).
  """
  if not _is_baseline(name):
    return None
  words = name.split("_")
  # the metric's words end at the first baseline word or qualifier (refexp_shuffled_images_baseline -> refexp)
  prefix = words[:min(i for i, w in enumerate(words) if w in _BASELINE_WORDS + ("centre", "shuffled"))]
  candidates = [m for m in metrics if m.split("_")[:len(prefix)] == prefix] if prefix else []
  exact = [m for m in candidates if m.split("_") == prefix]
  accuracy = [m for m in candidates if "accuracy" in m.split("_")]
  return (exact or accuracy or candidates or [None])[0]


def plot_loss(model_dir: str) -> str:
  """Draws the train loss (and eval metrics, if any) to MODEL_DIR/loss.png; returns the path.

  Evaluation: each metric in its own colour with its baselines (keys such as vqa_count_majority,
  refexp_centre_baseline) in the same colour, dashed; with a single evaluation, as bars (metric solid,
  baselines hatched) rather than a column of dots.
  """
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  records = read_metrics(model_dir)
  train = [r for r in records if "split" not in r]
  evals = [r for r in records if r.get("split") == "eval"]
  names = [k for k in evals[-1] if k not in ("step", "split")] if evals else []
  metrics = [n for n in names if not _is_baseline(n)]
  owners = {n: baseline_of(n, metrics) for n in names if _is_baseline(n)}
  rows = []  # (key, the metric it is a baseline of): each metric followed by its baselines, unpaired ones last
  for m in metrics:
    rows += [(m, None)] + [(n, m) for n, owner in owners.items() if owner == m]
  rows += [(n, None) for n, owner in owners.items() if owner is None]
  colours = plt.get_cmap("tab20" if len(metrics) > 10 else "tab10")
  colour_of = {m: colours(i % colours.N) for i, m in enumerate(metrics)}
  height = max(4.0, 0.28 * len(rows) + 1) if len(evals) == 1 else 4.0
  fig, axes = plt.subplots(1, 2 if evals else 1, figsize=(12 if evals else 6, height), squeeze=False)
  axes[0, 0].plot([r["step"] for r in train], [r["loss"] for r in train])
  axes[0, 0].set(xlabel="step", ylabel="train loss", title="training loss", yscale="log")
  ax = axes[0, 1] if evals else None
  if len(evals) == 1:
    values = [evals[0].get(n, float("nan")) for n, _ in rows]
    bars = ax.barh(range(len(rows)), values, color=[colour_of.get(o or n, "0.6") for n, o in rows])
    for bar, (n, _) in zip(bars, rows):
      if n not in metrics:
        bar.set(alpha=0.45, hatch="//")
    for i, v in enumerate(values):
      ax.text(v, i, f" {v:.3g}", va="center", fontsize=7)
    ax.set_yticks(range(len(rows)), [n for n, _ in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set(title=f"evaluation at step {evals[0]['step']} (hatched: baselines)")
  elif evals:
    steps = [r["step"] for r in evals]
    for n, owner in rows:
      is_metric = n in metrics
      ax.plot(steps, [r.get(n) for r in evals], color=colour_of.get(owner or n, "0.6"),
              linestyle="-" if is_metric else "--", marker="o" if is_metric else None, label=n)
    ax.set(xlabel="step", title="evaluation (dashed: baselines)")
    ax.legend(fontsize=7, ncol=2 if len(rows) > 12 else 1)
  fig.tight_layout()
  path = os.path.join(model_dir, LOSS_PLOT)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def plot_predictions(images, prompts, answers, targets, path: str, columns: int = 4) -> str:
  """A grid of images with prompt, model answer and expected answer under each; boxes named by location
  tokens in an answer (green) or target (white, dashed) are drawn on the image. Returns the path."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from tasks import locations  # pylint: disable=import-outside-toplevel
  rows = -(-len(images) // columns)
  fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.6 * rows), squeeze=False)
  for ax in axes.flat:
    ax.axis("off")
  for ax, image, prompt, answer, target in zip(axes.flat, images, prompts, answers, targets):
    height, width = image.shape[:2]
    ax.imshow(np.clip((np.asarray(image) + 1) / 2, 0, 1))
    for text, style in ((target, dict(color="white", linestyle="--")), (answer, dict(color="lime"))):
      for y0, x0, y1, x1 in locations.tokens_to_boxes(text, height, width):
        ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, linewidth=1.5, **style))
    ok = "ok" if answer == target else "x"
    ax.set_title(f"{_short(prompt)}\n-> {_short(answer)} [{ok}]\nexpected {_short(target)}", fontsize=7)
  with warnings.catch_warnings():  # an early model's answer may hold pieces of scripts the font lacks
    warnings.filterwarnings("ignore", message="Glyph .* missing from font")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def _short(text: str, limit: int = 38) -> str:
  import re  # pylint: disable=import-outside-toplevel
  text = re.sub(r"(<loc\d{4}>\s*){4}", "[box] ", text).strip()  # four location tokens read as one box
  return text if len(text) <= limit else text[:limit - 3] + "..."
