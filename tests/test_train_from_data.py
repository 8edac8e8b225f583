"""`python -m vlm.train` feeding a tiny PaLI from the seqio data stack: the generated stage-1 mixture, and
real-format sources (COCO captions, jsonl) the test writes, selected by gin alone."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests import test_faults
from vlm import checkpoints

RUN = "gin_configs/runs/pali_tiny_seqio.gin"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--gin.TRAIN_STEPS=2", "--gin.BATCH_SIZE=4", "--gin.vlm.trainer.train.log_period=1",
         "--gin.vlm.trainer.train.progress=False"]


def train(model_dir, *args):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  result = subprocess.run([sys.executable, "-m", "vlm.train", f"--gin_file={RUN}", f"--gin.MODEL_DIR='{model_dir}'",
                           *SMALL, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(os.path.join(model_dir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.mark.slow
def test_trains_from_the_generated_mixture(tmp_path):
  records = train(tmp_path)
  assert [r["step"] for r in records] == [1, 2] and all(np.isfinite(r["loss"]) for r in records)


@pytest.mark.slow
def test_trains_from_coco_captions_files(tmp_path):
  images = tmp_path / "images"
  images.mkdir()
  rng = np.random.default_rng(0)
  annotations = {"images": [], "annotations": []}
  for i in range(6):
    name = f"{i:012d}.jpg"
    Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(images / name)
    annotations["images"].append({"id": i, "file_name": name})
    annotations["annotations"].append({"id": 100 + i, "image_id": i, "caption": f"a picture number {i}"})
  (images / "broken.jpg").write_bytes(b"not a jpeg")  # skipped, and counted in the run's summaries
  annotations["images"].append({"id": 6, "file_name": "broken.jpg"})
  annotations["annotations"].append({"id": 106, "image_id": 6, "caption": "a broken picture"})
  (tmp_path / "captions.json").write_text(json.dumps(annotations))
  records = train(tmp_path / "run",
                  "--gin.MIXTURE_OR_TASK_NAME=@tasks.sources.register_coco_captions()",
                  "--gin.tasks.sources.register_coco_captions.name='coco_test'",
                  f"--gin.tasks.sources.register_coco_captions.annotations={{'train': '{tmp_path / 'captions.json'}'}}",
                  f"--gin.tasks.sources.register_coco_captions.images='{images}'",
                  "--gin.tasks.sources.register_coco_captions.image_size=32")
  assert [r["step"] for r in records] == [1, 2] and all(np.isfinite(r["loss"]) for r in records)
  assert records[-1]["data/coco_test/undecodable_image"] >= 1


def dirty_jsonl_args(root):
  """The gin arguments of a jsonl captions task over 8 images, one undecodable and one missing among them."""
  images = root / "images"
  images.mkdir()
  rng = np.random.default_rng(0)
  lines = []
  for i in range(8):
    Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(images / f"{i}.png")
    lines.append({"image": f"{i}.png", "caption": f"a picture number {i}"})
  (images / "broken.jpg").write_bytes(b"not a jpeg")
  lines[2]["image"], lines[5]["image"] = "broken.jpg", "gone.png"
  (root / "train.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
  return ["--gin.MIXTURE_OR_TASK_NAME=@tasks.sources.register_jsonl()",
          "--gin.tasks.sources.register_jsonl.name='jsonl_dirty'",
          f"--gin.tasks.sources.register_jsonl.files={{'train': '{root / 'train.jsonl'}'}}",
          f"--gin.tasks.sources.register_jsonl.images='{images}'",
          "--gin.tasks.sources.register_jsonl.image_size=32"]


@pytest.mark.slow
def test_kill_9_and_resume_on_dirty_data_repeats_the_uninterrupted_losses(tmp_path):
  """Skipped images must not shift the rows after them: the resumed run reads, and so loses, exactly what the
  uninterrupted run did."""
  steps, period = 16, 2
  args = [f"--gin.TRAIN_STEPS={steps}", f"--gin.CHECKPOINT_PERIOD={period}", *dirty_jsonl_args(tmp_path)]
  reference = {r["step"]: r["loss"] for r in train(tmp_path / "reference", *args)}
  model_dir, log = tmp_path / "killed", tmp_path / "killed.log"
  command = [sys.executable, "-m", "vlm.train", f"--gin_file={RUN}", f"--gin.MODEL_DIR='{model_dir}'", *SMALL, *args]
  with open(log, "w") as out:
    proc = subprocess.Popen(command, cwd=REPO, env=test_faults.environment(), stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
  try:
    test_faults.wait_for(lambda: checkpoints.complete_steps(str(model_dir)), proc, log)
  finally:
    test_faults.kill(proc)
  assert proc.returncode == -signal.SIGKILL and checkpoints.complete_steps(str(model_dir))[-1] < steps
  resumed = {r["step"]: r["loss"] for r in train(model_dir, *args)}
  assert sorted(resumed) == list(range(1, steps + 1))
  assert resumed == reference
