"""`python -m vlm.train` feeding a tiny PaLI from the seqio data stack: the generated stage-1 mixture, and a
real-format source (COCO captions) the test writes, selected by gin alone."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

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
