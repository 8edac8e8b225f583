"""Where a run's numbers go: MODEL_DIR/metrics.jsonl, TensorBoard events, and a loss-curve plot.

metrics.jsonl has one JSON object a line: train lines carry `step` and `loss` (means over the logging
period); eval lines carry `step` and `split`. TensorBoard events go to MODEL_DIR/train and MODEL_DIR/eval,
as T5X lays them out, so `tensorboard --logdir MODEL_DIR` shows both.
"""

from __future__ import annotations

import json
import os
from typing import Mapping

METRICS_FILE = "metrics.jsonl"
LOSS_PLOT = "loss.png"


class SummaryWriter:
  """Appends to metrics.jsonl and writes TensorBoard scalars. On resume, lines past the resumed step are
  dropped first, so the file always tells one uninterrupted story."""

  def __init__(self, model_dir: str, resume_step: int):
    from tensorboardX import SummaryWriter as TBWriter  # pylint: disable=import-outside-toplevel
    self.path = os.path.join(model_dir, METRICS_FILE)
    _truncate_after(self.path, resume_step)
    self._tb = {split: TBWriter(os.path.join(model_dir, split), flush_secs=30) for split in ("train", "eval")}

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


def _truncate_after(path: str, step: int) -> None:
  if not os.path.exists(path):
    return
  with open(path) as f:
    kept = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
  with open(path, "w") as f:
    f.writelines(kept)


def read_metrics(model_dir: str) -> list[dict]:
  with open(os.path.join(model_dir, METRICS_FILE)) as f:
    return [json.loads(line) for line in f if line.strip()]


def plot_loss(model_dir: str) -> str:
  """Draws the train loss (and eval metrics, if any) to MODEL_DIR/loss.png; returns the path."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  records = read_metrics(model_dir)
  train = [r for r in records if "split" not in r]
  evals = [r for r in records if r.get("split") == "eval"]
  fig, axes = plt.subplots(1, 2 if evals else 1, figsize=(11 if evals else 6, 4), squeeze=False)
  axes[0, 0].plot([r["step"] for r in train], [r["loss"] for r in train])
  axes[0, 0].set(xlabel="step", ylabel="train loss", title="training loss", yscale="log")
  if evals:
    for name in [k for k in evals[-1] if k not in ("step", "split")]:
      axes[0, 1].plot([r["step"] for r in evals], [r.get(name) for r in evals], marker="o", label=name)
    axes[0, 1].set(xlabel="step", title="evaluation")
    axes[0, 1].legend(fontsize=7)
  fig.tight_layout()
  path = os.path.join(model_dir, LOSS_PLOT)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
