"""NaFlex models end to end: PaLI over patches (its padding invisible to every output), and the two NaFlex gin
runs trained and evaluated through `python -m vlm.train` as the README runs them."""

import json
import os

import flax.linen as nn
import jax
import numpy as np
import pytest

from encoders import vit
from tests import hf_fixtures
from tests.cli_errors import assert_one_line_error, run_main
from tests.test_cli import refused, train
from vlm import model as model_lib
from vlm import ul2


@pytest.fixture(scope="module")
def pali():
  model = model_lib.PaLIModel(vit=vit.config("pico/4", image_size=16, pool_type="none"),
                              ul2=ul2.config("tiny", vocab_size=64), patch_budget=(8, 20))
  batch = naflex_batch([(2, 7), (4, 4), (1, 9)], 20)
  params = nn.meta.unbox(model.init_variables(jax.random.key(0), batch))["params"]
  params = jax.tree.map(lambda x: x + 0.05 * np.random.default_rng(0).standard_normal(x.shape).astype(x.dtype),
                        params)
  return model, params


def naflex_batch(grids, length, seed=0):
  patches, mask, shapes = hf_fixtures.naflex_inputs(grids, length, seed=seed)
  rows = len(grids)
  return {"patches": patches, "patch_mask": mask, "spatial_shapes": shapes.astype(np.int32),
          "encoder_input_tokens": np.array([[5, 6, 7, 1, 0, 0]] * rows, np.int32),
          "decoder_target_tokens": np.array([[9, 10, 11, 1]] * rows, np.int32)}


def test_pali_outputs_do_not_depend_on_patch_padding(pali):
  """Padding moves behind the prompt and is masked: more padding, holding other garbage, changes no logit."""
  model, params = pali
  grids = [(2, 7), (4, 4), (1, 9)]
  base = naflex_batch(grids, 20)
  logits = model.module.apply({"params": params}, None, base["encoder_input_tokens"], base["decoder_target_tokens"],
                              patches=base["patches"], mask=base["patch_mask"],
                              spatial_shapes=base["spatial_shapes"])
  longer = naflex_batch(grids, 33, seed=5)
  longer["patches"][:, :20] = base["patches"]  # same real patches, other garbage, 13 more padding slots
  other = model.module.apply({"params": params}, None, base["encoder_input_tokens"], base["decoder_target_tokens"],
                             patches=longer["patches"], mask=longer["patch_mask"],
                             spatial_shapes=longer["spatial_shapes"])
  np.testing.assert_allclose(other, logits, rtol=0, atol=2e-5 * float(np.abs(logits).max()))
  loss, _ = model.loss_fn(params, base)
  assert np.isfinite(loss)


def test_pali_decodes_naflex_batches_and_records_its_budget(pali):
  model, params = pali
  batch = naflex_batch([(2, 7), (4, 4), (1, 9)], 20)
  result = model.predict_batch(params, {k: v for k, v in batch.items() if not k.startswith("decoder_")},
                               max_decode_len=5)
  assert result.tokens.shape == (3, 5)
  assert model.config_json()["patch_budget"] == 20  # the largest of the budgets it trained at


def _records(model_dir):
  return [json.loads(line) for line in open(os.path.join(model_dir, "metrics.jsonl"))]


@pytest.mark.slow
def test_naflex_siglip_run_trains_at_budgets_drawn_per_step_and_evaluates(tmp_path):
  result = train("--gin_file=gin_configs/runs/siglip_naflex_tiny_synthetic.gin", f"--gin.MODEL_DIR='{tmp_path}'",
                 "--gin.TRAIN_STEPS=6", "--gin.BATCH_SIZE=16", "--gin.EVAL_PERIOD=6", "--gin.CHECKPOINT_PERIOD=6",
                 "--gin.PATCH_BUDGETS=(16, 32)",
                 "--gin.vlm.trainer.train.log_period=1",
                 "--gin.vlm.evaluation.SceneZeroShotRetrieval.retrieval_pairs=32",
                 "--gin.vlm.evaluation.SceneZeroShotRetrieval.images_per_class=1",
                 "--gin.vlm.evaluation.SceneZeroShotRetrieval.dense_scenes=32")
  assert result.returncode == 0, result.stderr
  records = _records(tmp_path)
  assert [r["step"] for r in records if "split" not in r] == [1, 2, 3, 4, 5, 6]
  evals = [r for r in records if r.get("split") == "eval"]
  assert evals and {"zero_shot_seen", "i2t_R1", "t2i_R1"} <= set(evals[-1])


@pytest.mark.slow
def test_naflex_and_squashed_pali_runs_train_and_evaluate(tmp_path):
  for run in ("naflex", "squashed"):
    model_dir = tmp_path / run
    result = train(f"--gin_file=gin_configs/runs/pali_tiny_{run}.gin", f"--gin.MODEL_DIR='{model_dir}'",
                   "--gin.TRAIN_STEPS=3", "--gin.BATCH_SIZE=8", "--gin.EVAL_PERIOD=3", "--gin.CHECKPOINT_PERIOD=3",
                   "--gin.vlm.evaluation.SeqioTaskEvaluation.examples_per_task=8")
    assert result.returncode == 0, result.stderr
    evals = [r for r in _records(model_dir) if r.get("split") == "eval"]
    assert {"documents_native_synthetic_anls", "charts_native_synthetic_relaxed_accuracy"} <= set(evals[-1])
    config = json.load(open(model_dir / "model_config.json"))
    assert config.get("patch_budget") == (144 if run == "naflex" else None)
  # Inference on a receipt-shaped image: cut at its own aspect ratio, within the recorded budget.
  from PIL import Image
  from tasks import documents
  receipt = documents.example(0, 0, "validation", 96, kind="receipt", native_aspect=True)["image"]
  Image.fromarray(np.round((receipt + 1) * 127.5).astype(np.uint8)).save(tmp_path / "receipt.png")
  for extra in ([], ["--patch_budget=64"]):  # vlm.infer in this process (tests/cli_errors.run_main)
    answer = run_main("vlm.infer", f"--checkpoint={tmp_path / 'naflex'}", f"--image={tmp_path / 'receipt.png'}",
                      "--prompt=answer en what is the total?", "--max_decode_len=4", *extra)
    assert answer.returncode == 0 and answer.stdout.strip(), answer.stderr
  not_naflex = run_main("vlm.infer", f"--checkpoint={tmp_path / 'squashed'}", f"--image={tmp_path / 'receipt.png'}",
                     "--prompt=ocr", "--patch_budget=64")
  assert_one_line_error(not_naflex, "--patch_budget is for NaFlex models")


@pytest.mark.parametrize("run, binding", [("pali_tiny_naflex", "--gin.PATCH_BUDGET=0"),
                                          ("siglip_naflex_tiny_synthetic", "--gin.PATCH_BUDGETS=(16, -1)")])
def test_a_budget_below_one_patch_is_one_clear_line(tmp_path, run, binding):
  result = refused(f"--gin_file=gin_configs/runs/{run}.gin", f"--gin.MODEL_DIR='{tmp_path}'", binding)
  assert_one_line_error(result, "TASK_FEATURE_LENGTHS['patches'] must be an integer >= 1")
  assert not os.listdir(tmp_path)  # nothing written
