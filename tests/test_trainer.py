"""The trainer on a tiny SigLIP: it learns, is deterministic, resumes exactly, and stops cleanly on bad input."""

import json
import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from encoders import siglip
from encoders import text as text_lib
from encoders import vit as vit_lib
from tests import scene_data
from tests.tensorboard_events import tensorboard_events
from vlm import base_model, checkpoints, mfu, optim, partitioning, summaries, trainer

IMAGE_SIZE, TEXT_LENGTH = 16, 40
LENGTHS = {"text": TEXT_LENGTH}


def pairs():
  """The tiny run's data: webli_pairs_synthetic at IMAGE_SIZE, sentencepiece texts of TEXT_LENGTH."""
  return scene_data.Batches("webli_pairs_synthetic", LENGTHS, size=IMAGE_SIZE)


def tiny_model():
  return siglip.SigLIPModel(image=vit_lib.config("pico/4", image_size=IMAGE_SIZE),
                            text=text_lib.config("pico", vocab_size=scene_data.vocab_size(), max_len=TEXT_LENGTH))


def run(model_dir, steps, *, data=None, checkpoint_period=4, lr=3e-3, num_devices=1, num_partitions=1,
        parameter_partitioning_dims=1, optimizer=optim.adamw, **kw):
  partitioner = partitioning.Partitioner(num_partitions, parameter_partitioning_dims,
                                         devices=jax.devices()[:num_devices])
  return trainer.train(
      tiny_model(), data or pairs(), model_dir=str(model_dir), train_steps=steps, batch_size=16,
      optimizer=optimizer, learning_rate=lr, partitioner=partitioner, checkpoint_period=checkpoint_period,
      log_period=1, progress=False, **kw)


def losses(model_dir):
  return {r["step"]: r["loss"] for r in summaries.read_metrics(str(model_dir)) if "split" not in r}


def test_tiny_siglip_learns_and_writes_its_outputs(tmp_path):
  run(tmp_path, 40, checkpoint_period=20)
  curve = losses(tmp_path)
  assert sorted(curve) == list(range(1, 41))
  first = summaries.read_metrics(str(tmp_path))[0]
  for key in ("loss", "learning_rate", "grad_norm", "param_norm", "steps_per_sec", "examples_per_sec"):
    assert np.isfinite(first[key]), key
  assert np.mean([curve[s] for s in range(36, 41)]) < 0.7 * np.mean([curve[s] for s in range(1, 6)])
  assert checkpoints.Checkpointer(str(tmp_path), 1).latest_step() == 40
  assert os.listdir(tmp_path / "train") and json.load(open(tmp_path / "model_config.json"))["model"] == "siglip"
  # The trained directory is a checkpoint `encoders.siglip.load` reads.
  encoder = siglip.load(str(tmp_path))
  out = encoder.encode_image(np.zeros((2, IMAGE_SIZE, IMAGE_SIZE, 3), np.float32))
  assert out["pooled"].shape == (2, 32) and out["tokens"].shape == (2, 16, 32)


def test_same_seed_same_loss_curve(tmp_path):
  run(tmp_path / "a", 6)
  run(tmp_path / "b", 6)
  assert losses(tmp_path / "a") == losses(tmp_path / "b")


# Each optimizer once and each layout once: AdamW's moments shard like the parameters, Adafactor's factored
# statistics replicate, the case FSDP + tensor parallelism exercises.
@pytest.mark.parametrize("optimizer, num_partitions, parameter_partitioning_dims",
                         [(optim.adamw, 1, 1), (optim.adafactor, 2, 2)],
                         ids=["adamw-data_parallel", "adafactor-fsdp_and_tensor_parallel"])
def test_8_devices_match_one_device(tmp_path, num_partitions, parameter_partitioning_dims, optimizer):
  run(tmp_path / "one", 4, optimizer=optimizer)
  run(tmp_path / "eight", 4, num_devices=8, num_partitions=num_partitions,
      parameter_partitioning_dims=parameter_partitioning_dims, optimizer=optimizer)
  one, eight = losses(tmp_path / "one"), losses(tmp_path / "eight")
  np.testing.assert_allclose([eight[s] for s in range(1, 5)], [one[s] for s in range(1, 5)], rtol=1e-4)


class PoisonedData:
  """Clean batches, then a NaN image from step `bad_step` on."""

  def __init__(self, bad_step):
    self.clean, self.bad_step = pairs(), bad_step

  def batch(self, step, batch_size):
    batch = dict(self.clean.batch(step, batch_size))
    if step >= self.bad_step:
      batch["image"] = batch["image"].copy()  # the pipeline's own array stays clean
      batch["image"][0, 0, 0, 0] = np.nan
    return batch


def test_non_finite_loss_halts_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
  with pytest.raises(trainer.TrainingHalted, match=r"non-finite loss .* at step 7; the last good checkpoint "
                                                   r"\(step 4\) is kept"):
    run(tmp_path, 10, data=PoisonedData(bad_step=6))
  assert checkpoints.Checkpointer(str(tmp_path), 1).latest_step() == 4


def test_an_update_that_blows_the_parameters_up_is_never_checkpointed(tmp_path):
  with pytest.raises(trainer.TrainingHalted, match=r"non-finite .* at step \d+; "):
    run(tmp_path, 6, checkpoint_period=1, lr=1e30)
  if checkpoints.complete_steps(str(tmp_path)):  # whatever was saved before the halt is sound
    params = checkpoints.restore_params(str(tmp_path), step_functions(1, 1)[1].abstract_state.params)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


@pytest.mark.parametrize("field, value, macro", [
    ("train_steps", 0, "TRAIN_STEPS"), ("batch_size", 0, "BATCH_SIZE"), ("checkpoint_period", 0,
                                                                           "CHECKPOINT_PERIOD"),
    ("train_steps", "4", "TRAIN_STEPS"), ("batch_size", 8.0, "BATCH_SIZE"), ("train_steps", True, "TRAIN_STEPS"),
])
def test_counts_must_be_positive_integers(tmp_path, field, value, macro):
  args = dict(model_dir=str(tmp_path), train_steps=2, batch_size=16, checkpoint_period=1)
  with pytest.raises(ValueError, match=f"{macro} must be an integer >= 1; got {value!r}"):
    trainer.train(tiny_model(), pairs(), optimizer=optim.adamw, learning_rate=1e-3, progress=False,
                  **{**args, field: value})
  assert not (tmp_path / "model_config.json").exists()


def test_a_checkpoint_of_another_shape_is_named_and_leaves_model_dir_as_it_was(tmp_path):
  run(tmp_path, 2, checkpoint_period=2)
  (tmp_path / "model_config.json").unlink()  # as in a copied MODEL_DIR: nothing tells the models apart first
  other = siglip.SigLIPModel(image=vit_lib.config("pico/4", image_size=IMAGE_SIZE),
                             text=text_lib.config("pico", vocab_size=scene_data.vocab_size() + 8, max_len=TEXT_LENGTH))
  with pytest.raises(checkpoints.CheckpointError, match=r"checkpoints/2: parameter txt/Embed_0/embedding has shape "
                                                        r"\(\d+, 32\) but the model config expects"):
    trainer.train(other, pairs(), model_dir=str(tmp_path), train_steps=4, batch_size=16, optimizer=optim.adamw,
                  learning_rate=1e-3, progress=False)
  assert not (tmp_path / "model_config.json").exists()  # not rewritten by the run that could not start
  run(tmp_path, 4, checkpoint_period=2)  # the right model still resumes


def test_a_line_cut_short_in_metrics_jsonl_does_not_block_resuming(tmp_path, capsys):
  run(tmp_path, 2, checkpoint_period=2)
  with open(tmp_path / summaries.METRICS_FILE, "a") as f:
    f.write('{"step": 3, "loss": 0.')  # a crash mid-write
  run(tmp_path, 4, checkpoint_period=2)
  assert sorted(losses(tmp_path)) == [1, 2, 3, 4]
  assert "skipped 1 unreadable line" in capsys.readouterr().err


def test_unwritable_model_dir_fails_before_training(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("")
  with pytest.raises(OSError, match="MODEL_DIR .* is not writable"):
    run(blocker / "sub", 2)


def test_batch_size_must_divide_the_data_axis(tmp_path):
  with pytest.raises(ValueError, match="BATCH_SIZE=16 is not divisible by the 3 devices"):
    trainer.train(tiny_model(), pairs(), model_dir=str(tmp_path),
                  train_steps=1, batch_size=16, optimizer=optim.adamw, learning_rate=1e-3,
                  partitioner=partitioning.Partitioner(devices=jax.devices()[:3]), progress=False)


def test_a_parameter_the_mesh_cannot_split_is_named_before_compiling(tmp_path):
  model = siglip.SigLIPModel(image=vit_lib.config("pico/4", image_size=IMAGE_SIZE),
                             text=text_lib.config("pico", vocab_size=57, max_len=TEXT_LENGTH))
  with pytest.raises(ValueError, match=r"parameter txt/Embed_0/embedding of shape \(57, 32\) cannot be split 2 "
                                       r"ways on axis 0"):
    trainer.train(model, pairs(), model_dir=str(tmp_path),
                  train_steps=1, batch_size=16, optimizer=optim.adamw, learning_rate=1e-3,
                  partitioner=partitioning.Partitioner(num_partitions=2), progress=False)


# ----------------------------------------------------------------------------------------------------------
# Checkpoints: what is kept, what a stateful input pipeline gets back, restoring onto another mesh.
# ----------------------------------------------------------------------------------------------------------

def test_keeps_the_last_n_checkpoints_and_every_kth(tmp_path):
  ckpt = checkpoints.Checkpointer(str(tmp_path), period=1, keep=2, keep_period=4)
  state = {"w": np.arange(4.0)}
  for step in range(1, 11):
    if ckpt.should_save(step):
      ckpt.save(step, state)
  ckpt.close()
  assert checkpoints.complete_steps(str(tmp_path)) == [4, 8, 9, 10]


class StatefulData:
  """A pipeline with a position of its own, as an iterator over files has: it serves its next batch whatever
  step it is asked for, so only its saved state can make a resumed run read what the uninterrupted one did."""

  def __init__(self):
    self.source, self.position, self.served = pairs(), 0, []

  def batch(self, step, batch_size):
    del step
    self.served.append(self.position)
    self.position += 1
    return self.source.batch(self.position - 1, batch_size)

  def state_dict(self):
    return {"position": self.position}

  def load_state_dict(self, state):
    self.position = state["position"]


def test_a_stateful_input_pipeline_is_checkpointed_and_restored(tmp_path):
  first, second = StatefulData(), StatefulData()
  run(tmp_path, 2, data=first, checkpoint_period=2)
  run(tmp_path, 4, data=second, checkpoint_period=2)
  # Batch 0 is read once for the shapes, then the pipeline is put back: step 0 reads it again.
  assert first.served == [0, 0, 1]
  # The resumed run goes on from the position saved at step 2, one list entry a process.
  assert json.load(open(tmp_path / "checkpoints" / "2" / "input_pipeline" / "metadata")) == [{"position": 2}]
  assert second.served == [0, 2, 3]


def step_functions(num_partitions, parameter_partitioning_dims, optimizer=optim.adamw, microbatches=1,
                   model=None, example=None):
  partitioner = partitioning.Partitioner(num_partitions, parameter_partitioning_dims)
  example = example or pairs().batch(0, 16)
  example = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in example.items()}
  tx = optimizer(learning_rate=1e-3)
  return partitioner, trainer.build_step_functions(model or tiny_model(), tx, partitioner, example,
                                                   microbatches=microbatches)


def test_a_checkpoint_of_8_way_data_parallel_restores_onto_a_4x2_fsdp_mesh(tmp_path):
  dp, dp_fns = step_functions(1, 1)
  with dp.context():
    state = dp_fns.init(jax.random.key(0))
  ckpt = checkpoints.Checkpointer(str(tmp_path), period=1)
  ckpt.save(3, state)
  fsdp, fsdp_fns = step_functions(2, 2)
  with fsdp.context():
    restored, input_state = ckpt.restore(fsdp_fns.abstract_state, ckpt.latest_step())
  ckpt.close()
  assert input_state is None
  kernel = restored.params["img"]["Transformer"]["encoderblock_0"]["MlpBlock_0"]["Dense_0"]["kernel"]
  assert kernel.sharding.spec == jax.sharding.PartitionSpec("data", "model")  # embed on 'data', mlp on 'model'
  for got, abstract in zip(jax.tree.leaves(restored), jax.tree.leaves(fsdp_fns.abstract_state)):
    assert got.sharding == abstract.sharding
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), jax.device_get(state))


@pytest.mark.slow
def test_a_run_resumed_on_another_mesh_continues_the_uninterrupted_one(tmp_path):
  run(tmp_path / "dp", 8, num_devices=8, keep_checkpoints=None)  # checkpoints at steps 4 and 8
  # The same run killed after step 4, resumed on a 4 x 2 mesh with FSDP and tensor parallelism.
  shutil.copytree(tmp_path / "dp", tmp_path / "mixed")
  shutil.rmtree(tmp_path / "mixed" / "checkpoints" / "8")
  run(tmp_path / "mixed", 8, num_devices=8, num_partitions=2, parameter_partitioning_dims=2)
  dp, mixed = losses(tmp_path / "dp"), losses(tmp_path / "mixed")
  assert sorted(mixed) == list(range(1, 9))
  np.testing.assert_allclose([mixed[s] for s in range(5, 9)], [dp[s] for s in range(5, 9)], rtol=1e-4)


# ----------------------------------------------------------------------------------------------------------
# Gradient accumulation and throughput summaries.
# ----------------------------------------------------------------------------------------------------------

class _MLP(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(1)(jnp.tanh(nn.Dense(16)(x)))[:, 0]


class Regression(base_model.BaseModel):
  """A loss that averages over examples (squared error of a small MLP): microbatches must not change it."""

  def __init__(self):
    self.module = _MLP()

  def init_variables(self, rng, batch):
    return self.module.init(rng, jnp.zeros((1,) + tuple(batch["x"].shape[1:])))

  def loss_fn(self, params, batch, rng):
    del rng
    error = self.module.apply({"params": params}, batch["x"]) - batch["y"]
    return jnp.mean(error ** 2), {"max_error": jnp.max(jnp.abs(error))}

  def config_json(self):
    return {"model": "regression"}


def test_microbatches_give_the_full_batch_loss_and_gradient():
  rng = np.random.default_rng(0)
  batch = {"x": rng.normal(size=(32, 8)).astype(np.float32), "y": rng.normal(size=(32,)).astype(np.float32)}
  results = []
  for microbatches in (1, 4):
    # SGD with rate 1: the update is minus the gradient.
    partitioner, fns = step_functions(1, 1, lambda learning_rate: optax.sgd(1.0), microbatches, Regression(),
                                      batch)
    with partitioner.context():
      state = fns.init(jax.random.key(0))
      before = jax.device_get(state.params)
      state, metrics = fns.train_step(state, partitioning.global_batch(partitioner, batch))
    grads = jax.tree.map(lambda b, a: b - a, before, jax.device_get(state.params))
    results.append((jax.device_get(metrics), grads))
  (full_metrics, full_grads), (micro_metrics, micro_grads) = results
  for key in ("loss", "grad_norm", "param_norm"):
    np.testing.assert_allclose(micro_metrics[key], full_metrics[key], rtol=1e-5)
  jax.tree.map(lambda m, f: np.testing.assert_allclose(m, f, rtol=1e-5, atol=1e-7), micro_grads, full_grads)


def test_microbatches_must_split_over_the_data_axis(tmp_path):
  with pytest.raises(ValueError, match=r"BATCH_SIZE=16 does not split into microbatches=4 slices of a multiple "
                                       r"of the 8 devices"):
    run(tmp_path, 1, num_devices=8, microbatches=4)


def test_a_microbatched_run_reports_tokens_per_second_and_mfu(tmp_path):
  run(tmp_path, 2, microbatches=2, peak_flops_per_device=1e12)
  for record in summaries.read_metrics(str(tmp_path)):
    assert record["tokens_per_sec"] > record["examples_per_sec"] > 0  # a caption is several tokens
    assert 0 < record["mfu"] < 1


def test_flops_are_counted_from_the_program():
  x = jax.ShapeDtypeStruct((32, 8), jnp.float32)
  model = Regression()
  params = jax.eval_shape(model.init_variables, jax.random.key(0), {"x": x})["params"]
  grad_fn = jax.grad(lambda p, b: model.loss_fn(p, b, None)[0])
  jaxpr = jax.make_jaxpr(grad_fn)(params, {"x": x, "y": jax.ShapeDtypeStruct((32,), jnp.float32)}).jaxpr
  # Forward: 2*B*8*16 + 2*B*16*1. Backward: both kernels' gradients, and the gradient into the hidden layer
  # (none into the inputs, which are not parameters).
  assert mfu.matmul_flops(jaxpr) == 2 * 32 * (8 * 16 + 16) + 2 * 32 * (8 * 16 + 16) + 2 * 32 * 16


@pytest.mark.parametrize("remat", ["none", "full"])
def test_model_flops_count_every_scanned_layer_and_no_recomputation(remat):
  batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype)
           for k, v in pairs().batch(0, 4).items()}

  def flops(scan, remat="none", microbatches=1):
    model = siglip.SigLIPModel(
        image=vit_lib.config("pico/4", image_size=IMAGE_SIZE, scan=scan, remat=remat),
        text=text_lib.config("pico", vocab_size=scene_data.vocab_size(), max_len=TEXT_LENGTH, scan=scan,
                             remat=remat), chunked=False)
    params = nn.meta.unbox(jax.eval_shape(model.init_variables, jax.random.key(0), batch)["params"])
    return mfu.model_flops_per_step(model, params, batch, microbatches)

  unrolled = flops(scan=False)
  assert flops(scan=True, remat=remat) == pytest.approx(unrolled, rel=1e-9)
  # Two slices of half the batch: the same towers' FLOPs, the pairwise loss on half as many pairs.
  assert flops(scan=False, microbatches=2) == pytest.approx(unrolled, rel=0.01)


@pytest.mark.parametrize("kind, peak", [("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12),
                                        ("TPU v4", 275e12), ("TPU v5 lite", 197e12), ("cpu", None)])
def test_peak_flops_by_device_kind(kind, peak):
  assert mfu.device_peak_flops(kind) == peak


def test_every_model_is_a_base_model_naming_its_feature_converter():
  from encoders import siglip  # pylint: disable=import-outside-toplevel
  from tasks import feature_converters  # pylint: disable=import-outside-toplevel
  from vlm import model as model_lib, ul2  # pylint: disable=import-outside-toplevel
  import seqio  # pylint: disable=import-outside-toplevel
  assert siglip.SigLIPModel.FEATURE_CONVERTER_CLS is feature_converters.TwoTowerFeatureConverter
  assert model_lib.PaLIModel.FEATURE_CONVERTER_CLS is feature_converters.MultimodalEncDecFeatureConverter
  assert ul2.UL2Model.FEATURE_CONVERTER_CLS is seqio.EncDecFeatureConverter
  for cls in (siglip.SigLIPModel, model_lib.PaLIModel, ul2.UL2Model):
    assert issubclass(cls, base_model.BaseModel)
  assert Regression().warm_start_sources() == {} and Regression().num_tokens({"x": jnp.ones((2, 3))}) is None
  assert int(Regression().num_tokens({"text": jnp.array([[5, 6, 0], [7, 0, 0]])})) == 3


def test_seqio_batches_of_another_feature_converter_are_refused_in_one_line(tmp_path):
  from tasks import pipeline  # pylint: disable=import-outside-toplevel
  from vlm import model as model_lib  # pylint: disable=import-outside-toplevel
  data = pipeline.SeqioBatches("webli_pairs_synthetic", {"text": 16})  # two-tower batches
  pali = model_lib.PaLIModel.__new__(model_lib.PaLIModel)  # only its class matters here
  with pytest.raises(ValueError, match="made by TwoTowerFeatureConverter but a PaLIModel takes "
                                       "MultimodalEncDecFeatureConverter's"):
    trainer.train(pali, data, model_dir=str(tmp_path / "run"), train_steps=1, batch_size=2,
                  optimizer=optim.adamw, learning_rate=1e-3)
  with pytest.raises(TypeError, match="not a vlm.base_model.BaseModel"):
    trainer.train(object(), data, model_dir=str(tmp_path / "run"), train_steps=1, batch_size=2,
                  optimizer=optim.adamw, learning_rate=1e-3)


def test_each_baseline_pairs_with_its_metric_in_the_evaluation_plot():
  metrics = ["vqa_accuracy", "vqa_colour", "vqa_count", "caption_cider", "refexp_accuracy", "detect_accuracy",
             "detect_f1", "zero_shot_seen", "zero_shot_held_out", "i2t_R1"]
  pairs = {"vqa_majority_baseline": "vqa_accuracy", "vqa_colour_majority": "vqa_colour",
           "vqa_count_majority": "vqa_count", "refexp_centre_baseline": "refexp_accuracy",
           "refexp_shuffled_images_baseline": "refexp_accuracy", "detect_f1_centre_baseline": "detect_f1",
           "zero_shot_chance": "zero_shot_seen",
           "retrieval_chance": None}
  for baseline, metric in pairs.items():
    assert summaries.baseline_of(baseline, metrics) == metric, baseline
  for metric in metrics:
    assert summaries.baseline_of(metric, metrics) is None


@pytest.mark.parametrize("evaluations", [1, 3])
def test_the_plot_draws_one_evaluation_as_bars_and_several_as_curves(tmp_path, evaluations):
  from PIL import Image  # pylint: disable=import-outside-toplevel
  lines = [{"step": s, "loss": 2.0 / s} for s in range(1, 31)]
  lines += [{"step": 10 * (i + 1), "split": "eval", "vqa_accuracy": 40.0 + i, "vqa_majority_baseline": 30.0,
             **{f"vqa_q{q}": 10.0 * q for q in range(12)}, **{f"vqa_q{q}_majority": 5.0 * q for q in range(12)}}
            for i in range(evaluations)]
  (tmp_path / summaries.METRICS_FILE).write_text("".join(json.dumps(line) + "\n" for line in lines))
  width, height = Image.open(summaries.plot_loss(str(tmp_path))).size
  assert width == 1200
  # bars: one row a key, so 26 keys make the figure taller than the curves' fixed 4 inches
  assert (height > 700) == (evaluations == 1), height


def test_the_summary_writer_leaves_torch_unloaded_and_writes_readable_events(tmp_path):
  """tensorboardX imports torch whenever it is installed (~3 s at every run's start); the writer keeps it out
  of a fresh process, and TensorBoard still reads the scalars it wrote."""
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  code = ("import sys; from vlm import summaries; w = summaries.SummaryWriter(sys.argv[1], 0); "
          "w.write(1, {'loss': 2.5}); w.close(); print('torch' in sys.modules); import torch")  # importable after
  result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert result.returncode == 0 and result.stdout.strip() == "False", result.stderr
  assert [value for tag, value in tensorboard_events(tmp_path / "train") if tag == "loss"] == [2.5]
