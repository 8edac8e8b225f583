"""Sharded transfer evaluation (vlm.transfer_eval.Decoder): on 8 simulated CPU devices, with the parameters
split by training's rules, the answers equal vlm.pali's one-device generate; prompts bucketed by length give the
answers unbucketed ones do, in a few compiled shapes; two processes write what one does; decoding per task;
TransferEvaluation inside a training run."""

import json
import os
import subprocess
import sys
import time
import warnings

import gin
import jax
import pytest

from tests import tiny_models
from tests.test_eval import write_benchmarks
from tests.test_multihost import free_port
from vlm import infer, model as model_lib, optim, pali as pali_lib, partitioning, summaries, trainer, transfer_eval
from vlm import transfer_tasks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN = os.path.join(REPO, "gin_configs/runs/eval_transfer.gin")
TASKS = ["textvqa", "refcoco"]  # prompts of two length buckets (12 and 8), one cut; images of two sizes


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  directory = tmp_path_factory.mktemp("pali")
  tiny_models.train_pali(str(directory), train_steps=2)
  return str(directory)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("benchmarks")
  write_benchmarks(root)
  return str(root)


@pytest.fixture(autouse=True)
def task_files():
  """The benchmarks' file paths, as vlm.eval binds them."""
  gin.clear_config()
  gin.add_config_file_search_path(REPO)  # for its include
  gin.parse_config_file(GIN)
  yield
  gin.clear_config()


@pytest.fixture(scope="module")
def pali(checkpoint):
  return pali_lib.load(checkpoint)


def one_device_answers(pali, evaluator, **opts):
  """What vlm.pali.generate answers, one device, prompts at the trained length, file order."""
  present = [ex for ex in evaluator.examples if os.path.isfile(ex["image"])]
  with warnings.catch_warnings():  # textvqa's long prompt is cut, as evaluate cuts it
    warnings.simplefilter("ignore", pali_lib.PromptCutWarning)
    return pali.generate([infer.read_image(ex["image"]) for ex in present], [evaluator.prompt(ex) for ex in present],
                         truncate_prompt=True, **opts)


def predictions(output_dir, task):
  with open(os.path.join(output_dir, f"{task}.json")) as f:
    return [row["prediction"] for row in json.load(f)["examples"]]


@pytest.mark.parametrize("num_partitions", [1, 2])
def test_sharded_eval_answers_as_one_device_generate(checkpoint, data_dir, pali, tmp_path, num_partitions):
  partitioner = partitioning.Partitioner(num_partitions=num_partitions)
  assert partitioner.mesh.size == 8
  results, _ = transfer_eval.evaluate(checkpoint, TASKS, data_dir, str(tmp_path), batch_size=8, progress=False,
                                      partitioner=partitioner)
  for task, result in zip(TASKS, results):
    evaluator = transfer_tasks.TASKS[task](data_dir)
    answers = one_device_answers(pali, evaluator)
    assert predictions(tmp_path, task) == answers, task
    assert result["truncated_prompts"] == (1 if task == "textvqa" else 0)
    # Scored on every example's own image size (RefCOCO's images differ), gathered with the answers.
    sized = [{**ex, "height": image.shape[0], "width": image.shape[1]}
             for ex, image in ((ex, infer.read_image(ex["image"])) for ex in evaluator.examples)]
    assert result["metrics"] == pytest.approx(evaluator.score(answers, sized)), task
  if num_partitions == 2:  # the MLP really is split over 'model'
    params = transfer_eval.sharded_params(pali.model, pali.params, partitioner)
    kernel = params["ul2"]["encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"]
    assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, "model")


def counted_traces(model):
  """model.predict_batch, counting the shapes it is traced (compiled) for."""
  shapes, predict = [], model.predict_batch
  def traced(params, batch, **options):
    shapes.append(batch["encoder_input_tokens"].shape)
    return predict(params, batch, **options)
  model.predict_batch = traced
  return shapes


def test_bucketed_prompts_answer_as_unbucketed_in_a_few_shapes(checkpoint, data_dir):
  model, params = model_lib.load(checkpoint)
  partitioner = partitioning.Partitioner()
  params = transfer_eval.sharded_params(model, params, partitioner)
  answers, lengths = {}, {}
  for bucket in (True, False):
    model, _ = model_lib.load(checkpoint)
    shapes = counted_traces(model)
    decoder = transfer_eval.Decoder(pali_lib.PaLIInputs(model, checkpoint), partitioner, 8, bucket_prompts=bucket)
    plans = [decoder.plan(transfer_tasks.TASKS[task](data_dir)) for task in TASKS]
    answers[bucket] = [decoder.decode(params, plan, {"method": "greedy"})[1] for plan in plans]
    lengths[bucket] = sorted({length for plan in plans for length, _ in plan.batches})
    assert sorted(shapes) == [(8, n) for n in lengths[bucket]]  # one compile a prompt length
  assert answers[True] == answers[False]
  assert lengths == {True: [8, 12], False: [12]}
  assert [transfer_eval.bucket_length(n, 64) for n in (1, 8, 9, 17, 40, 64)] == [8, 8, 16, 32, 64, 64]


def test_decoding_per_task_is_beam_where_gin_says(checkpoint, data_dir, pali, tmp_path):
  beam = {"method": "beam", "beam_size": 3, "alpha": 0.6}
  gin.parse_config(f"transfer_eval.evaluate.decoding = {{'textvqa': {beam!r}}}")
  transfer_eval.evaluate(checkpoint, ["refcoco", "textvqa"], data_dir, str(tmp_path), batch_size=8,
                         progress=False)
  textvqa = transfer_tasks.TASKS["textvqa"](data_dir)
  beam_answers = one_device_answers(pali, textvqa, method="beam", beam_size=3, alpha=0.6)
  assert predictions(tmp_path, "textvqa") == beam_answers != one_device_answers(pali, textvqa)
  assert predictions(tmp_path, "refcoco") == one_device_answers(pali, transfer_tasks.TASKS["refcoco"](data_dir))


@pytest.mark.parametrize("decoding, message", [
    ({"vqav2": {"method": "sample"}}, "decoding of eval task vqav2: method 'sample' is not one of greedy, beam"),
    ({"vqav2": {"method": "beam", "beam_size": 0}}, "decoding of eval task vqav2: beam_size"),
    ({"vqav2": {"method": "beam", "beams": 4}}, "decoding of eval task vqav2: .*beams"),
    ({"okvqa": {"method": "beam"}}, "decoding names task 'okvqa', which is not evaluated here"),
])
def test_a_bad_decoding_names_the_task(decoding, message):
  with pytest.raises(ValueError, match=message):
    transfer_eval.decoding_options(["coco_captions", "vqav2"], decoding)


def test_a_batch_the_data_axis_cannot_split_is_refused(checkpoint, data_dir):
  with pytest.raises(ValueError, match="BATCH_SIZE=6 is not divisible by the 8 devices on the 'data' mesh axis"):
    transfer_eval.evaluate(checkpoint, ["vqav2"], data_dir, batch_size=6, progress=False)


def test_a_bad_max_new_tokens_is_one_line(checkpoint, data_dir):
  with pytest.raises(ValueError, match="max_new_tokens must be an integer >= 1 .*; got 0"):
    transfer_eval.evaluate(checkpoint, ["vqav2"], data_dir, batch_size=8, max_new_tokens=0, progress=False)


def launch_eval(checkpoint, data_dir, output_dir, processes):
  """`python -m vlm.eval` as `processes` processes of 8 / processes CPU devices each, on localhost."""
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_COORDINATOR_ADDRESS")}
  env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={8 // processes}", JAX_PLATFORMS="cpu")
  port = free_port()
  args = [sys.executable, "-m", "vlm.eval", f"--gin_file={GIN}", f"--gin.CHECKPOINT_PATH='{checkpoint}'",
          f"--gin.DATA_DIR='{data_dir}'", f"--gin.OUTPUT_DIR='{output_dir}'", f"--gin.EVAL_TASKS={TASKS}",
          "--gin.BATCH_SIZE=8", "--gin.NUM_PARTITIONS=2"]
  procs = [subprocess.Popen(args + [f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={processes}",
                                    f"--process_id={i}"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for i in range(processes)]
  deadline = time.monotonic() + 300
  try:
    while any(p.poll() is None for p in procs) and all(p.returncode in (None, 0) for p in procs):
      assert time.monotonic() < deadline, "vlm.eval processes did not finish in 300 s"
      time.sleep(0.5)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  outputs = [p.communicate()[0] for p in procs]
  for i, p in enumerate(procs):
    assert p.returncode == 0, f"process {i}: {outputs[i][-3000:]}"
  return outputs


@pytest.mark.slow
def test_two_processes_write_the_predictions_one_process_writes(checkpoint, data_dir, tmp_path):
  transfer_eval.evaluate(checkpoint, TASKS, data_dir, str(tmp_path / "one"), batch_size=8, progress=False,
                         partitioner=partitioning.Partitioner(num_partitions=2))
  launch_eval(checkpoint, data_dir, tmp_path / "two", processes=2)
  for task in TASKS:
    with open(tmp_path / "one" / f"{task}.json") as one, open(tmp_path / "two" / f"{task}.json") as two:
      one, two = json.load(one), json.load(two)
    assert two["examples"] == one["examples"] and two["metrics"] == pytest.approx(one["metrics"]), task
  files = lambda d: sorted("events" if f.startswith("events.out") else f for f in os.listdir(d))  # noqa: E731
  assert files(tmp_path / "two") == files(tmp_path / "one")  # written once (one events file), no leftovers


def test_transfer_evaluation_runs_every_eval_period_in_training(data_dir, tmp_path):
  from encoders import vit as vit_lib  # pylint: disable=import-outside-toplevel
  from tests import scene_data  # pylint: disable=import-outside-toplevel
  from vlm import ul2  # pylint: disable=import-outside-toplevel
  size = tiny_models.PALI_IMAGE_SIZE
  model = model_lib.PaLIModel(vit=vit_lib.config("pico/4", image_size=size, pool_type="none"),
                              ul2=ul2.config("pico", vocab_size=scene_data.vocab_size()), max_decode_len=6,
                              vocabulary=scene_data.vocabulary(), prompt_length=12)
  gin.clear_config()
  gin.parse_config_file(os.path.join(REPO, "gin_configs/runs/transfer_eval_in_training.gin"))
  gin.parse_config("\n".join(["BATCH_SIZE = 8", f"TRANSFER_DATA_DIR = '{data_dir}'",
                               "TRANSFER_TASKS = ['vqav2']"]))
  evaluator = gin.get_bindings("vlm.trainer.train")["evaluator"]  # the file's evaluator, built by gin
  assert isinstance(evaluator, transfer_eval.TransferEvaluation)
  trainer.train(model, scene_data.Batches("vqa_synthetic", {"inputs": 12, "targets": 6}, size=size),
                model_dir=str(tmp_path), train_steps=2, batch_size=8, optimizer=optim.adamw, learning_rate=1e-3,
                partitioner=partitioning.Partitioner(num_partitions=2), checkpoint_period=2, progress=False,
                evaluator=evaluator, eval_period=1)
  evals = [r for r in summaries.read_metrics(str(tmp_path)) if r.get("split") == "eval"]
  assert [r["step"] for r in evals] == [1, 2]
  for record in evals:
    assert "vqav2/vqa_accuracy" in record
    assert 0 <= record["vqav2/vqa_accuracy"] <= 100
