"""The dense encoder objectives (encoders/objectives) and the teacher machinery (vlm/ema.py, vlm.trainer): each
loss against a hand-written numpy reference on fixed inputs, the EMA teacher and the phases in the trainer,
the data they read (multi-crop views, block masks, caption granularities), and a TIPSv2 run killed with -9
that resumes with its teacher intact."""

import json
import os
import signal
import subprocess
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from encoders import siglip
from encoders import text as text_lib
from encoders import vit as vit_lib
from encoders.objectives import distillation, heads, masked
from tasks import masks
from vlm import ema, partitioning, trainer


def softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


# ------------------------------------------------------------------------------------------------- losses


def test_dino_loss_matches_numpy():
  rng = np.random.default_rng(0)
  g, v, b, k = 2, 5, 3, 7
  student, teacher, centre = rng.normal(size=(v, b, k)), rng.normal(size=(g, b, k)), rng.normal(size=k) * 0.1
  ts, tt = 0.1, 0.04
  pairs = []
  for i in range(g):
    p = softmax((teacher[i] - centre) / tt)
    for j in range(v):
      if i != j:
        pairs.append(np.mean(-np.sum(p * log_softmax(student[j] / ts), -1)))
  got = distillation.dino_loss(jnp.asarray(student), jnp.asarray(teacher), jnp.asarray(centre), ts, tt)
  np.testing.assert_allclose(got, np.mean(pairs), rtol=1e-5)
  new = distillation.centre_update(jnp.asarray(centre), jnp.asarray(teacher), 0.9)
  np.testing.assert_allclose(new, 0.9 * centre + 0.1 * teacher.reshape(-1, k).mean(0), rtol=1e-5)
  # The teacher is a target: no gradient flows into it.
  grad = jax.grad(lambda t: distillation.dino_loss(jnp.asarray(student), t, jnp.asarray(centre), ts, tt))(
      jnp.asarray(teacher))
  assert float(jnp.abs(grad).max()) == 0.0


@pytest.mark.parametrize("visible_weight", [0.0, 0.5])
def test_masked_patch_loss_matches_numpy(visible_weight):
  rng = np.random.default_rng(1)
  b, t, k = 3, 6, 5
  student, teacher, centre = rng.normal(size=(b, t, k)), rng.normal(size=(b, t, k)), rng.normal(size=k) * 0.1
  mask = np.array([[1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [1, 0, 1, 0, 1, 0]])  # image 1 has no masked patch
  valid = np.array([[1] * 6, [1] * 6, [1, 1, 1, 1, 1, 0]])  # the last patch of image 2 is padding
  ts, tt = 0.1, 0.05
  ce = -np.sum(softmax((teacher - centre) / tt) * log_softmax(student / ts), -1)
  masked_means = [ce[i][(mask[i] == 1) & (valid[i] == 1)].mean() for i in (0, 2)]
  visible_means = [ce[i][(mask[i] == 0) & (valid[i] == 1)].mean() for i in range(3)]
  expected_masked, expected_visible = np.mean(masked_means), np.mean(visible_means)
  loss, masked_term, visible_term = masked.masked_patch_loss(
      jnp.asarray(student), jnp.asarray(teacher), jnp.asarray(mask), jnp.asarray(centre), ts, tt, visible_weight,
      valid=jnp.asarray(valid))
  np.testing.assert_allclose(masked_term, expected_masked, rtol=1e-5)
  np.testing.assert_allclose(visible_term, expected_visible, rtol=1e-5)
  np.testing.assert_allclose(loss, expected_masked + visible_weight * expected_visible, rtol=1e-5)


def test_projection_head_logits_are_cosines():
  head = heads.ProjectionHead(hidden=16, bottleneck=8, prototypes=12)
  x = jnp.asarray(np.random.default_rng(2).normal(size=(4, 10)), jnp.float32)
  params = nn.meta.unbox(head.init(jax.random.key(0), x))
  logits = head.apply(params, x)
  assert logits.shape == (4, 12) and float(jnp.abs(logits).max()) <= 1.0 + 1e-5


# ---------------------------------------------------------------------------------------------------- EMA


def test_ema_select_merge_update():
  params = {"img": {"a": jnp.ones(2), "b": jnp.zeros(3)}, "dino_head": {"w": jnp.full(2, 4.0)}, "t": jnp.float32(1)}
  teacher = ema.select(params, "dino_head/.*")
  assert jax.tree.structure(teacher) == jax.tree.structure({"dino_head": {"w": 0}})
  moved = ema.update(teacher, ema.select({**params, "dino_head": {"w": jnp.zeros(2)}}, "dino_head/.*"), 0.75)
  np.testing.assert_allclose(moved["dino_head"]["w"], [3.0, 3.0])
  merged = ema.merge(params, moved)
  np.testing.assert_allclose(merged["dino_head"]["w"], [3.0, 3.0])
  assert merged["img"] is params["img"]
  with pytest.raises(ValueError, match="match no parameter path"):
    ema.select(params, "nothing/.*")


def test_momentum_schedules():
  constant = ema.momentum_schedule(0.99)
  assert float(constant(0)) == pytest.approx(0.99) and float(constant(10_000)) == pytest.approx(0.99)
  cosine = ema.momentum_schedule(0.99, final=1.0, total_steps=100)
  assert float(cosine(0)) == pytest.approx(0.99) and float(cosine(100)) == pytest.approx(1.0)
  assert float(cosine(50)) == pytest.approx(0.995)
  with pytest.raises(ValueError, match="not in \\[0, 1\\]"):
    ema.momentum_schedule(1.5)
  with pytest.raises(ValueError, match="needs total_steps"):
    ema.momentum_schedule(0.9, final=1.0)


# ------------------------------------------------------------------------------------- the model in training


def tiny_model(objectives, teacher="full", train_steps=10):
  return siglip.SigLIPModel(image=vit_lib.config("pico/4", image_size=16),
                            text=text_lib.config("pico", vocab_size=40, max_len=6), objectives=objectives,
                            teacher=teacher, train_steps=train_steps)


def views_batch(b=4, seed=0):
  rng = np.random.default_rng(seed)
  return {"global_views": rng.uniform(-1, 1, (b, 2, 16, 16, 3)).astype(np.float32),
          "local_views": rng.uniform(-1, 1, (b, 3, 8, 8, 3)).astype(np.float32),
          "global_masks": (rng.random((b, 2, 16)) < 0.3).astype(np.int32),
          "text": rng.integers(1, 40, (b, 6)).astype(np.int32)}


OBJECTIVES = (distillation.SelfDistillation(start=0.5, prototypes=16, hidden=16, bottleneck=8),
              masked.MaskedPrediction(start=0.0, visible_weight=1.0, prototypes=16, hidden=16, bottleneck=8))


@pytest.mark.parametrize("teacher", ["full", "heads"])
def test_the_trainer_keeps_an_ema_teacher_and_runs_each_phase(teacher):
  model = tiny_model(OBJECTIVES, teacher)
  partitioner = partitioning.Partitioner()  # the batch split over the 8 test devices
  batch = views_batch(8)
  fns = trainer.build_step_functions(model, trainer.optim.adamw(learning_rate=1e-2), partitioner, batch)
  with partitioner.context():
    state = fns.init(jax.random.key(0))
  heads_only = {"dino_head", "ibot_head"}
  assert set(state.teacher) == (heads_only | {"img"} if teacher == "full" else heads_only)
  assert set(state.aux) == {"self_distillation_centre", "masked_prediction_centre"}
  assert model.phase(0) == ("masked_prediction",) and model.phase(5) == ("self_distillation", "masked_prediction")
  with partitioner.context():
    for step in (0, 5):
      before = jax.tree.map(np.asarray, state)
      state, metrics = fns.train_step(state, partitioning.global_batch(partitioner, batch), model.phase(step))
      m = float(metrics["teacher_momentum"])
      expected = jax.tree.map(lambda t, p: m * t + (1 - m) * p, before.teacher,
                              ema.select(jax.tree.map(np.asarray, state.params), model.teacher_params))
      for got, want in zip(jax.tree.leaves(state.teacher), jax.tree.leaves(expected)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
      # Every term is logged every step; an objective before its start has weight 0 and its centre stays.
      sd_on = step >= 5
      assert float(metrics["weight/self_distillation"]) == (1.0 if sd_on else 0.0)
      assert float(metrics["weight/masked_prediction"]) == 0.25
      assert (float(metrics["loss/self_distillation"]) > 0) == sd_on
      centre_moved = not np.array_equal(np.asarray(state.aux["self_distillation_centre"]),
                                        before.aux["self_distillation_centre"])
      assert centre_moved == sd_on
  assert len(fns.train_step._compiled) == 2  # pylint: disable=protected-access  (one compile per phase)


def test_the_teacher_is_not_differentiated():
  """The loss's gradient with respect to the teacher's parameters is zero: a target, not a path."""
  model = tiny_model(OBJECTIVES, "full")
  batch = jax.tree.map(jnp.asarray, views_batch())
  params = nn.meta.unbox(model.init_variables(jax.random.key(0), batch))["params"]
  teacher = ema.select(jax.tree.map(lambda x: x + 0.01, params), model.teacher_params)
  aux = model.init_aux()
  grad = jax.grad(lambda t: model.loss_fn_with_teacher(params, batch, None, teacher=t, aux=aux,
                                                       phase=model.phase(9))[0])(teacher)
  assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grad)) == 0.0


@pytest.mark.parametrize("make, match", [
    (lambda: tiny_model(("dino",)), "unknown objective 'dino'"),
    (lambda: distillation.SelfDistillation(start=1.5), r"SelfDistillation start=1.5: .* must be in \[0, 1\]"),
    (lambda: masked.MaskedPrediction(mask_ratio=(0.0, 0.5)), r"mask_ratio=\(0.0, 0.5\): each ratio must be in \(0, 1\)"),
    (lambda: masked.MaskedPrediction(mask_ratio=(0.2, 1.0)), r"each ratio must be in \(0, 1\)"),
    (lambda: tiny_model(OBJECTIVES, teacher="student"), "teacher='student' is not one of"),
    (lambda: tiny_model(OBJECTIVES, train_steps=None), "needs train_steps"),
    (lambda: tiny_model(OBJECTIVES[:1] * 2), "name one objective twice"),
])
def test_bad_objective_settings_are_one_clear_error(make, match):
  with pytest.raises(ValueError, match=match):
    make()


# --------------------------------------------------------------------------------------------------- data


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5])
def test_block_masks_cover_their_ratio_in_blocks(ratio):
  rng = np.random.default_rng(3)
  for _ in range(20):
    mask = masks.block_mask(rng, 8, 8, ratio)
    assert mask.shape == (8, 8) and mask.sum() <= round(ratio * 64)
    assert mask.sum() >= round(ratio * 64) - 4  # blocks of at least 4 patches may leave a few uncovered
  again = masks.block_mask(np.random.default_rng(9), 8, 8, 0.4)
  np.testing.assert_array_equal(again, masks.block_mask(np.random.default_rng(9), 8, 8, 0.4))


def test_caption_granularities():
  from tasks import scenes
  rng = np.random.default_rng(4)
  scene = [scenes.SceneObject("circle", "red", "large", 0.2, 0.2), scenes.SceneObject("ring", "blue", "small", 0.8, 0.5)]
  assert scenes.caption_at(scene, "short", rng) == "a red circle"
  assert set(scenes.caption_at(scene, "medium", rng).split(" and ")) == {"a large red circle", "a small blue ring"}
  long = scenes.caption_at(scene, "long", rng)
  assert long.startswith("a scene with one red object and one blue object namely") or long.startswith(
      "a scene with one blue object and one red object namely")
  assert "at the top left" in long and "on the right" in long
  with pytest.raises(ValueError, match="unknown caption granularity"):
    scenes.caption_at(scene, "huge", rng)


def test_multi_crop_views_are_pure_in_seed_and_step():
  from tasks import pipeline, registry  # also registers the tasks
  with registry.image_size_bound(32), registry.patch_size_bound(4):
    run = pipeline.SeqioBatches("scene_pairs_views_synthetic", {"text": 40}, seed=5)
    first = [run.batch(step, 4) for step in range(3)]
    resumed = pipeline.SeqioBatches("scene_pairs_views_synthetic", {"text": 40}, seed=5).batch(2, 4)
  assert first[0]["global_views"].shape == (4, 2, 32, 32, 3) and first[0]["local_views"].shape == (4, 4, 16, 16, 3)
  ratios = first[0]["global_masks"].mean(-1)
  assert first[0]["global_masks"].shape == (4, 2, 64) and np.all((ratios > 0.05) & (ratios <= 0.5))
  for key in resumed:
    np.testing.assert_array_equal(resumed[key], first[2][key], err_msg=key)
  assert not np.array_equal(first[0]["global_views"][:, 0], first[0]["global_views"][:, 1])  # two crops


# -------------------------------------------------------------------------------------------- dense evals


def test_miou_is_the_standard_definition():
  from vlm import dense_evaluation as de
  truth = np.array([[[0, 0, 1, -1]]])
  predicted = np.array([[[0, 1, 1, 2]]])
  # class 0: tp 1, fp 0, fn 1 -> 1/2; class 1: tp 1, fp 1 -> 1/2; background pixel ignored.
  assert de.miou(predicted, truth) == pytest.approx(50.0)
  assert de.miou(truth, truth) == pytest.approx(100.0)
  background = np.array([[[de.NUM_CLASSES, 0, 1, 0]]])  # predicting background on an object pixel is a miss
  assert de.miou(background, truth) == pytest.approx(100.0 * (0.5 + 1.0) / 2)


def test_patch_majority_and_knn():
  from vlm import dense_evaluation as de
  classes = np.full((1, 4, 4), -1)
  classes[0, :2, :2] = 3
  classes[0, 0, 2:] = 5  # half of the top-right patch
  labels = de.patch_labels(classes, 2)
  assert labels.tolist() == [[[3, 5], [de.NUM_CLASSES, de.NUM_CLASSES]]]  # a tie goes to the lower id
  bank = np.eye(3)[[0, 0, 1, 1, 2, 2]] + 0.01
  queries = np.eye(3) + 0.02
  bank, queries = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (bank, queries))
  assert de.knn_accuracy(bank, np.array([0, 0, 1, 1, 2, 2]), queries, np.array([0, 1, 2]), k=2) == 100.0


def test_the_probe_separates_classes_and_barely_moves_with_rounding_noise():
  from vlm import dense_evaluation as de
  rng = np.random.default_rng(0)
  classes = np.array([0, 7, 30, de.NUM_CLASSES])  # any of the 49 ids, background among them
  centres = rng.normal(size=(len(classes), 16))
  labels = rng.integers(0, len(classes), 4000)
  features = (centres[labels] + 0.2 * rng.normal(size=(4000, 16))).astype(np.float32)
  assert (de.fit_probe(features, classes[labels])(features) == classes[labels]).mean() == 1.0
  # Patch tokens as a small tower gives them: mostly background, classes on a low-rank subspace that overlap,
  # and near-constant (dead) channels. Features that differ by float rounding must give (almost) the same
  # predictions; the Adam-stepped probe this replaced flipped 3 % of them here (and 2.7 % of a real run's).
  n, rank = 8000, 8
  labels = np.where(rng.random(n) < 0.8, de.NUM_CLASSES, rng.integers(0, de.NUM_CLASSES, n))
  centres = rng.normal(size=(de.NUM_CLASSES + 1, rank))
  features = (centres[labels] + rng.normal(size=(n, rank))) @ rng.normal(size=(rank, 64))
  features += 1e-3 * rng.normal(size=features.shape)
  features[:, :8] = 5.0 + 1e-6 * rng.normal(size=(n, 8))
  features = features.astype(np.float32)
  noisy = (features * (1 + 1e-6 * rng.normal(size=features.shape))).astype(np.float32)
  one, two = de.fit_probe(features, labels), de.fit_probe(noisy, labels)
  assert 0.5 < (one(features) == labels).mean() < 1.0
  assert (one(features) != two(features)).mean() < 0.005


def test_the_position_probe_reads_where_tokens_are_only_if_they_say_it():
  from vlm import dense_evaluation as de
  rng = np.random.default_rng(0)
  grid, width = (4, 6), 64
  basis = rng.normal(size=(8, width))  # what the image shows lives in a subspace of the tokens
  content = lambda n: rng.normal(size=(n, 24, 8)) @ basis + 0.05 * rng.normal(size=(n, 24, width))  # noqa: E731
  positional = rng.normal(size=(24, width))  # a learned-looking position embedding: a vector per cell
  assert de.position_probe_r2(content(256) + positional, content(64) + positional, grid) > 99.0
  assert abs(de.position_probe_r2(content(256), content(64), grid)) < 2.0  # nothing in the tokens says where


def test_the_box_probe_finds_a_lone_object_only_in_tokens_that_say_where_they_are():
  """Patch tokens of pixels plus the patch's grid cell: the probe reads the box; the same pixels without the cell
  (an attention pool loses where each token sat) leave it near the mean object's box."""
  from vlm import dense_evaluation as de

  def patches(images, with_cell):  # [N, 32, 32, 3] -> [N, 64, 48 (+2)], 4 px patches in raster order
    n = len(images)
    x = images.reshape(n, 8, 4, 8, 4, 3).transpose(0, 1, 3, 2, 4, 5).reshape(n, 64, 48)
    if not with_cell:
      return x
    rows, cols = np.divmod(np.arange(64), 8)
    cell = np.broadcast_to(np.stack([rows, cols], -1) / 8.0, (n, 64, 2)) * 4.0
    return np.concatenate([x, cell], -1)

  kwargs = dict(train_examples=2048, eval_examples=256, steps=400)
  readable = de.box_probe(lambda images: patches(images, True), **kwargs)
  unreadable = de.box_probe(lambda images: patches(images, False), **kwargs)
  assert readable["box_probe_accuracy"] > 25.0 and readable["box_probe_centre_error"] < 3.0, readable  # 44, 2.1
  assert unreadable["box_probe_accuracy"] < 15.0 and unreadable["box_probe_centre_error"] > 4.0, unreadable  # 8, 5.0


# ------------------------------------------------------------------------------------------ kill -9 resume


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = "gin_configs/runs/tipsv2_tiny_synthetic.gin"
STEPS, PERIOD = 16, 4
ARGS = [f"--gin_file={RUN}", "--gin.BATCH_SIZE=8", f"--gin.TRAIN_STEPS={STEPS}", f"--gin.CHECKPOINT_PERIOD={PERIOD}",
        "--gin.vlm.trainer.train.evaluator=None", "--gin.vlm.trainer.train.log_period=1",
        "--gin.vlm.trainer.train.progress=False", "--gin.OBJECTIVES_START=0.25"]


def _losses(model_dir):
  path = os.path.join(model_dir, "metrics.jsonl")
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    records = [json.loads(line) for line in f.read().split("\n")[:-1]]
  return {r["step"]: r for r in records if "split" not in r}


def _train(model_dir, background=False):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  command = [sys.executable, "-m", "vlm.train", *ARGS, f"--gin.MODEL_DIR='{model_dir}'"]
  if background:
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
  return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_kill_9_resumes_with_the_teacher_intact(tmp_path):
  """The TIPSv2 run, killed with -9 after its objectives started and re-run, continues the uninterrupted run's
  curve of every term (the teacher and the centres came back from the checkpoint exactly)."""
  reference = tmp_path / "reference"
  assert _train(reference).returncode == 0
  killed = tmp_path / "killed"
  proc = _train(killed, background=True)
  deadline = time.monotonic() + 600
  while max(_losses(killed), default=0) < 2 * PERIOD + 2:
    assert proc.poll() is None and time.monotonic() < deadline
    time.sleep(0.05)
  os.killpg(proc.pid, signal.SIGKILL)
  proc.wait()
  second = _train(killed)
  assert second.returncode == 0, second.stderr
  assert "resuming from step" in second.stdout
  got, want = _losses(killed), _losses(reference)
  assert sorted(got) == list(range(1, STEPS + 1))
  for key in ("loss", "loss/self_distillation", "loss/masked_prediction", "loss/contrastive"):
    np.testing.assert_allclose([got[s][key] for s in sorted(got)], [want[s][key] for s in sorted(got)], rtol=1e-5,
                               err_msg=key)
  assert got[STEPS]["weight/self_distillation"] == 1.0 and got[1]["weight/self_distillation"] == 0.0


# ------------------------------------------------------------------------------------ patch distillation


def test_patch_distillation_loss_matches_numpy():
  from encoders.objectives import patch_distillation as pd
  rng = np.random.default_rng(6)
  s, t = rng.normal(size=(2, 5, 4)), rng.normal(size=(2, 5, 4))
  cos = (s * t).sum(-1) / np.linalg.norm(s, axis=-1) / np.linalg.norm(t, axis=-1)
  np.testing.assert_allclose(pd.patch_distillation_loss(jnp.asarray(s), jnp.asarray(t)), np.mean(1 - cos), rtol=1e-5)


def _saved_teacher(directory, patch_size):
  from tests import hf_fixtures
  hf_fixtures.save_siglip_vision(directory, patch_size=patch_size, image_size=4 * patch_size)
  return directory


def test_patch_distillation_from_a_frozen_encoder_of_another_geometry(tmp_path):
  """A teacher of other width and patch size (8 px: a 2 x 2 token grid on 16 px views, resized to the
  student's 4 x 4) trains the student's distillation head; the teacher itself is no parameter of the run."""
  from encoders.objectives import patch_distillation as pd
  objective = pd.PatchDistillation(checkpoint=_saved_teacher(str(tmp_path), 8), start=0.0)
  model = tiny_model((objective,))
  assert model.teacher_params is None  # no EMA copy: the teacher is frozen, outside the train state
  batch = jax.tree.map(jnp.asarray, views_batch())
  params = nn.meta.unbox(model.init_variables(jax.random.key(0), batch))["params"]
  assert params["distill_head"]["kernel"].shape == (32, 48)  # student width 32 -> the teacher's 48
  loss, metrics, _ = model.loss_fn_with_teacher(params, batch, None, teacher=None, aux=model.init_aux(),
                                                phase=model.phase(0))
  assert 0 < float(metrics["loss/patch_distillation"]) < 2 and np.isfinite(float(loss))
  grads = jax.grad(lambda p: model.loss_fn_with_teacher(p, batch, None, teacher=None, aux={},
                                                        phase=model.phase(0))[0])(params)
  assert float(jnp.abs(grads["distill_head"]["kernel"]).max()) > 0


def test_a_teacher_whose_patches_do_not_tile_the_views_is_one_clear_error(tmp_path):
  from encoders.objectives import patch_distillation as pd
  objective = pd.PatchDistillation(checkpoint=_saved_teacher(str(tmp_path), 5), start=0.0)
  model = tiny_model((objective,))
  batch = jax.tree.map(jnp.asarray, views_batch())
  params = nn.meta.unbox(model.init_variables(jax.random.key(0), batch))["params"]
  with pytest.raises(ValueError, match="patches of 5 px do not tile the 16x16 views"):
    model.loss_fn_with_teacher(params, batch, None, teacher=None, aux={}, phase=model.phase(0))
