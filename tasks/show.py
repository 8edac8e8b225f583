"""Draws examples of a registered task or mixture into a PNG grid, texts under each image.

  python -m tasks.show --task pali_stage1_synthetic --split train --n 16 --image_size 224 --out grid.png

The examples are rows of the training stream (tasks.pipeline.SeqioBatches, batch 0 of the seed) as the model
receives them: the image, then the prompt and the target decoded back from their token ids (so trimming to
the feature lengths shows), and the row's task. Boxes written as location tokens in the target are drawn on
the image. Text-only tasks (ul2_denoise_synthetic) get text panels.

With --patches N the images go to the model as NaFlex patches (SigLIP 2: native aspect ratio, at most N
patches of --patch_size pixels): each is drawn as its patch grid reassembled, the grid's lines over it and its
rows x cols in the caption.

  python -m tasks.show --task documents_charts_native_synthetic --image_size 96 --patches 144 --patch_size 8
"""

from __future__ import annotations

import argparse
import io
import math
import os
import sys
import textwrap
import warnings

import gin
import numpy as np
from tasks import quiet_tensorflow  # noqa: F401  first: TensorFlow without its start-up lines (seqio imports it)
import seqio
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from tasks import locations
from tasks import naflex
from tasks import pipeline
from tasks import registry
from tasks import vocab

_WRAP = 34  # characters per text line under an image
_MAX_LINES = 6  # text lines per example, the last one cut with "..."
_CELL_INCHES = 2.6


def examples(name: str, split: str, n: int, seed: int, task_feature_lengths: dict[str, int],
             patch_size: int = 16) -> list[dict]:
  """The first n rows of the stream: {'image' float32 [H, W, 3] or None, 'inputs', 'targets', 'task'}, and for
  NaFlex rows 'grid' (rows, cols) with the image reassembled from its patches."""
  batches = pipeline.SeqioBatches(name, task_feature_lengths, split=split, seed=seed)
  try:
    batch = batches.batch(0, n)
  finally:
    batches.close()
  tasks = batches.tasks_of_rows(np.arange(n))
  decode = vocab.vocabulary().decode
  rows = []
  for i in range(n):
    image = batch.get("image", batch["global_views"][:, 0] if "global_views" in batch else None)  # (views: the first)
    if "text" in batch:  # two towers: the caption alone
      inputs, targets = "", decode(batch["text"][i])
    else:
      inputs, targets = decode(batch["encoder_input_tokens"][i]), decode(batch["decoder_target_tokens"][i])
    row = {"image": None if image is None else image[i], "inputs": inputs, "targets": targets, "task": tasks[i]}
    if "patches" in batch:
      row["grid"] = tuple(int(v) for v in batch["spatial_shapes"][i])
      row["image"] = naflex.grid_image(batch["patches"][i], row["grid"], patch_size)
    rows.append(row)
  return rows


def _caption(row: dict) -> str:
  lines = []
  grid = f"{row['grid'][0]} x {row['grid'][1]} patches" if "grid" in row else ""
  for label, text in (("task", row["task"]), ("grid", grid), ("in", row["inputs"]), ("out", row["targets"])):
    if text:
      lines += textwrap.wrap(f"{label}: {text}", _WRAP) or [f"{label}:"]
  if len(lines) > _MAX_LINES:
    lines = lines[:_MAX_LINES - 1] + [lines[_MAX_LINES - 1][:_WRAP - 3] + "..."]
  return "\n".join(lines)


def draw(rows: list[dict], out: str) -> None:
  """Writes the grid PNG: one cell per row, image (with its boxes) above its texts."""
  cols = math.ceil(math.sqrt(len(rows)))
  grid_rows = math.ceil(len(rows) / cols)
  fig = Figure(figsize=(cols * _CELL_INCHES, grid_rows * _CELL_INCHES * 1.45))
  FigureCanvasAgg(fig)
  for k, row in enumerate(rows):
    ax = fig.add_subplot(grid_rows, cols, k + 1)
    ax.set_xticks([])
    ax.set_yticks([])
    image = row["image"]
    if image is not None:
      image = image[0] if image.ndim == 4 else image  # frames: the first
      ax.imshow(np.clip((image + 1) / 2, 0, 1))
      h, w = image.shape[:2]
      for y0, x0, y1, x1 in locations.tokens_to_boxes(row["targets"], h, w):
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="yellow", linewidth=1.5))
      if "grid" in row:  # the patch grid the ViT sees
        rows_, cols_ = row["grid"]
        for r in range(1, rows_):
          ax.axhline(r * h / rows_ - 0.5, color="white", linewidth=0.3, alpha=0.6)
        for c in range(1, cols_):
          ax.axvline(c * w / cols_ - 0.5, color="white", linewidth=0.3, alpha=0.6)
    else:
      ax.axis("off")
    ax.set_xlabel(_caption(row), fontsize=6.5, loc="left", family="DejaVu Sans")
  with warnings.catch_warnings():  # DejaVu has no CJK glyphs: Chinese captions show as boxes, silently
    warnings.filterwarnings("ignore", message="Glyph .* missing")
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
  _write_whole(out, png.getvalue())


def _write_whole(path: str, data: bytes) -> None:
  """Writes `path` through a temporary file renamed over it: a failed write (a full disk) leaves no half PNG."""
  partial = f"{path}.partial"
  try:
    with open(partial, "wb") as f:
      f.write(data)
    os.replace(partial, path)
  finally:
    if os.path.exists(partial):
      os.remove(partial)


def _provider(name: str, split: str) -> seqio.DatasetProviderBase:
  """The registered task or mixture, or one ValueError if it is unknown or none of its tasks has the split."""
  try:
    provider = seqio.get_mixture_or_task(name)
  except ValueError:
    raise ValueError(f"--task {name!r} is not a registered task or mixture (python -m tasks.list lists them)"
                     ) from None
  tasks = provider.tasks if isinstance(provider, seqio.Mixture) else [provider]
  splits = sorted({s for task in tasks for s in task.splits})
  if split not in splits:
    raise ValueError(f"--split {split!r}: {name} has the splits {', '.join(splits)}")
  return provider


def _check_out(out: str) -> None:
  """One ValueError if the PNG cannot be written there, checked before any example is drawn."""
  folder = os.path.dirname(os.path.abspath(out))
  if os.path.isdir(out) or not os.path.isdir(folder) or not os.access(folder, os.W_OK):
    why = ("is a folder" if os.path.isdir(out) else f"folder {folder} does not exist"
           if not os.path.isdir(folder) else f"folder {folder} is not writable")
    raise ValueError(f"--out {out}: cannot write the PNG there ({why})")


def _run(args: argparse.Namespace) -> None:
  if args.n < 1:
    raise ValueError(f"--n {args.n}: draw at least 1 example")
  registry.check_image_size(args.image_size, args.patch_size if args.patches else 1, what="--image_size")
  _check_out(args.out)
  gin.bind_parameter("tasks.registry.image_size.size", args.image_size)
  gin.bind_parameter("tasks.registry.patch_size.size", args.patch_size)
  two_tower = "text" in _provider(args.task, args.split).output_features
  lengths = ({"text": args.inputs_length} if two_tower
             else {"inputs": args.inputs_length, "targets": args.targets_length})
  if args.patches:
    lengths["patches"] = args.patches
  draw(examples(args.task, args.split, args.n, args.seed, lengths, args.patch_size), args.out)
  budget = f", at most {args.patches} patches of {args.patch_size} px" if args.patches else ""
  print(f"wrote {args.out}: {args.n} examples of {args.task} ({args.split}) at {args.image_size} px{budget}")


def main(argv: list[str] | None = None) -> None:
  from vlm import gin_cli  # pylint: disable=import-outside-toplevel  (the project's one-line CLI errors)
  parser = gin_cli.OneLineErrorParser(prog="tasks.show", description=__doc__.splitlines()[0])
  parser.add_argument("--task", required=True, help="a task or mixture name (python -m tasks.list)")
  parser.add_argument("--split", default="train")
  parser.add_argument("--n", type=int, default=16, help="examples to draw")
  parser.add_argument("--image_size", type=int, default=224)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--inputs_length", type=int, default=128, help="or the text length of two-tower tasks")
  parser.add_argument("--targets_length", type=int, default=128)
  parser.add_argument("--patches", type=int, help="NaFlex: the patch budget (images at their native aspect)")
  parser.add_argument("--patch_size", type=int, default=16, help="NaFlex: the patch side in pixels")
  parser.add_argument("--out", default="grid.png")
  args = parser.parse_args(argv)
  try:
    _run(args)
  except (ValueError, RuntimeError, OSError) as e:  # bad input, a failed pipeline, a failed write: one line
    print(f"error: {str(e).strip().splitlines()[0]}", file=sys.stderr)
    raise SystemExit(1) from None


if __name__ == "__main__":
  main()
