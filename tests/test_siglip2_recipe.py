"""The SigLIP 2 recipe as a user runs it: the tiny run trains (LocCa from the start, the dense objectives after
their start) and evaluates the LocCa decoder and retrieval per language; an ACID student distils from it; the
encoder it exports carries no decoder."""

import json
import os

import pytest

from tests.test_cli import train


def _records(model_dir):
  return [json.loads(line) for line in open(os.path.join(model_dir, "metrics.jsonl"))]


@pytest.mark.slow
def test_siglip2_tiny_run_then_an_acid_student(tmp_path):
  teacher = tmp_path / "siglip2"
  result = train("--gin_file=gin_configs/runs/siglip2_tiny_synthetic.gin", f"--gin.MODEL_DIR='{teacher}'",
                 "--gin.TRAIN_STEPS=6", "--gin.BATCH_SIZE=16", "--gin.EVAL_PERIOD=6", "--gin.CHECKPOINT_PERIOD=6",
                 "--gin.DENSE_START=0.5", "--gin.vlm.trainer.train.log_period=1",
                 "--gin.vlm.evaluation.SceneZeroShotRetrieval.locca_examples=16",
                 "--gin.vlm.evaluation.SceneZeroShotRetrieval.pairs_per_language=16",
                 "--gin.vlm.evaluation.SceneZeroShotRetrieval.retrieval_pairs=32",
                 "--gin.vlm.evaluation.SceneZeroShotRetrieval.images_per_class=1",
                 "--gin.vlm.evaluation.SceneZeroShotRetrieval.dense=False")
  assert result.returncode == 0, result.stderr
  records = _records(teacher)
  steps = [r for r in records if "split" not in r]
  assert [r["weight/self_distillation"] for r in steps] == [0, 0, 0, 1, 1, 1]  # the last half: start 0.5
  assert all(r["weight/locca"] == 1 and r["loss/locca"] > 0 for r in steps)
  evals = [r for r in records if r.get("split") == "eval"][-1]
  for key in ("refexp_accuracy", "refexp_centre_baseline", "refexp_shuffled_images_baseline", "caption_cider",
              "refexp_one_object_accuracy", "refexp_several_objects_shuffled_images_baseline",
              "i2t_R1_de", "t2i_R1_zh"):
    assert key in evals, key

  from encoders import siglip
  encoder = siglip.load(str(teacher))  # the towers alone: the heads and the decoder stay behind
  assert set(encoder.params) == {"img", "txt", "t", "b"}

  student = tmp_path / "acid"
  result = train("--gin_file=gin_configs/runs/siglip2_tiny_acid.gin", f"--gin.MODEL_DIR='{student}'",
                 f"--gin.TEACHER='{teacher}'", "--gin.TRAIN_STEPS=3", "--gin.BATCH_SIZE=16",
                 "--gin.EVAL_PERIOD=3", "--gin.CHECKPOINT_PERIOD=3", "--gin.vlm.trainer.train.log_period=1",
                 "--gin.vlm.evaluation.SceneZeroShotRetrieval.dense=False",
                 "--gin.vlm.evaluation.SceneZeroShotRetrieval.retrieval_pairs=32",
                 "--gin.vlm.evaluation.SceneZeroShotRetrieval.images_per_class=1")
  assert result.returncode == 0, result.stderr
  step = [r for r in _records(student) if "split" not in r][-1]
  assert step["acid/learnability_kept"] >= step["acid/learnability_all"] and step["loss/acid_distillation"] > 0
