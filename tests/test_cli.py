"""`python -m vlm.train` as a user runs it: one-line errors for bad input, a run that resumes when re-run."""

import glob
import json
import os
import subprocess
import sys

import pytest

from tests.cli_errors import assert_one_line_error, run_main

RUN = "gin_configs/runs/siglip_tiny_synthetic.gin"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train(*args, timeout=600):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device, as a user has
  return subprocess.run([sys.executable, "-m", "vlm.train", *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=timeout)


def refused(*args):
  """vlm.train's outcome for ARGS it refuses before any work: run in this process (tests/cli_errors.run_main).
  test_unknown_gin_binding and the tests below that train start it as a user does."""
  return run_main("vlm.train", *args)


def test_unknown_gin_binding(tmp_path):
  result = train(f"--gin_file={RUN}", "--gin.vlm.trainer.train.no_such_arg=3", f"--gin.MODEL_DIR='{tmp_path}'")
  assert_one_line_error(result, "no_such_arg")


def test_unknown_configurable(tmp_path):
  result = refused(f"--gin_file={RUN}", "--gin.NoSuchThing.x=3")
  assert_one_line_error(result, "NoSuchThing")


def test_missing_gin_file():
  result = train("--gin_file=gin_configs/runs/nope.gin")
  assert result.returncode != 0 and "gin file 'gin_configs/runs/nope.gin' not found" in result.stderr
  assert "Traceback" not in result.stderr


def test_unknown_size_name(tmp_path):
  result = refused(f"--gin_file={RUN}", "--gin.encoders.vit.config.variant='Q/4'", f"--gin.MODEL_DIR='{tmp_path}'")
  assert_one_line_error(result, "unknown ViT size 'Q/4'")


@pytest.mark.parametrize("flag, fragment", [
    ("--gin.CHECKPOINT_PERIOD=0", "CHECKPOINT_PERIOD must be an integer >= 1; got 0"),
    ("--gin.BATCH_SIZE=8.0", "BATCH_SIZE must be an integer >= 1; got 8.0"),
    ("--gin.TRAIN_STEPS='4'", "total_steps must be an integer >= 1; got '4'"),
    ("--gin.MIXTURE_OR_TASK_NAME='no_such_task'", "'no_such_task' is neither a registered seqio task nor a mixture"),
    ("--gin.TASK_FEATURE_LENGTHS={'inputs': 8}", "takes TASK_FEATURE_LENGTHS with the keys ['text']"),
    ("--gin.vlm.optim.schedule.peak=-1.0", "schedule peak (the learning rate) must be a number > 0; got -1.0"),
    ("--gin.vlm.optim.schedule.peak=0", "schedule peak (the learning rate) must be a number > 0; got 0"),
])
def test_bad_macro_values_name_the_macro(tmp_path, flag, fragment):
  assert_one_line_error(refused(f"--gin_file={RUN}", f"--gin.MODEL_DIR='{tmp_path}'", flag), fragment)


def test_command_line_mistakes(tmp_path):
  assert_one_line_error(refused(f"--gin_file={RUN}", f"--gin.MODEL_DIR={tmp_path}"),
                        f"--gin.MODEL_DIR={tmp_path}", f"a string needs quotes: --gin.MODEL_DIR=\"'{tmp_path}'\"")
  result = refused(f"--gin_file={RUN}", "--gin.MIXTURE_OR_TASK_NAME=scene")  # gin's error held an ast object's repr
  assert_one_line_error(result, "not a gin value; a string needs quotes")
  assert " object at 0x" not in result.stderr
  assert_one_line_error(refused(f"--gin_file={RUN}", "--gin.vlm.optim.schedule.peak=float('nan')"),
                        "not a gin value; a gin value is a literal", "not a call")
  assert_one_line_error(refused(f"--gin_file={RUN}", "--gin.TRAIN_STEPS"), "unrecognised argument '--gin.TRAIN_STEPS'")
  assert_one_line_error(refused(), "at least one --gin_file is required")
  # T5X's spelling of a binding works too.
  assert_one_line_error(refused(f"--gin_file={RUN}", "--gin_bindings=vlm.trainer.train.no_such_arg = 3"), "no_such_arg")


def run_elsewhere(directory, module, *args):
  """`python -m MODULE ARGS` with `directory` as the working directory: the package found on PYTHONPATH."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
  return subprocess.run([sys.executable, "-m", module, *args], cwd=directory, env=env, capture_output=True,
                        text=True, timeout=600)


def test_includes_resolve_from_another_working_directory(tmp_path):
  """gin_configs/runs/x.gin and its includes are found under the package's root from any directory (gin's
  package reader used to fail on gin_configs/ as a namespace package: 'expected str, ..., not NoneType')."""
  result = run_elsewhere(tmp_path, "vlm.train", f"--gin_file={RUN}", "--gin.vlm.trainer.train.no_such_arg=3")
  assert_one_line_error(result, "no_such_arg")  # the binding after the run file and its include


def test_a_missing_include_is_named_with_where_gin_looked(tmp_path):
  (tmp_path / "run.gin").write_text("include 'gin_configs/models/no_such_model.gin'\n")
  result = run_elsewhere(tmp_path, "vlm.train", "--gin_file=run.gin")
  assert_one_line_error(result, "Unable to open file: gin_configs/models/no_such_model.gin", REPO,
                        str(tmp_path), 'In file "run.gin", line 1')


def test_a_run_that_diverges_ends_in_one_line_after_the_progress_bar(tmp_path):
  result = train(f"--gin_file={RUN}", f"--gin.MODEL_DIR='{tmp_path}'", "--gin.TRAIN_STEPS=4", "--gin.BATCH_SIZE=8",
                 "--gin.CHECKPOINT_PERIOD=1", "--gin.vlm.optim.schedule.peak=1e30",
                 "--gin.vlm.optim.schedule.warmup_steps=0")
  assert_one_line_error(result, "non-finite", "Lower the learning rate")  # its own line, not the bar's


def test_help_lists_the_gin_flags():
  result = subprocess.run([sys.executable, "-m", "vlm.train", "--help"], cwd=REPO, capture_output=True, text=True)
  assert result.returncode == 0 and "--gin_file" in result.stdout and "--gin.KEY=VALUE" in result.stdout


@pytest.mark.slow
def test_tiny_run_trains_evaluates_and_resumes(tmp_path):
  # A small evaluation (what it computes is tested elsewhere; here that it runs and is logged at each end).
  args = [f"--gin_file={RUN}", f"--gin.MODEL_DIR='{tmp_path}'", "--gin.CHECKPOINT_PERIOD=10",
          "--gin.EVAL_PERIOD=20", "--gin.BATCH_SIZE=32",
          "--gin.vlm.evaluation.SceneZeroShotRetrieval.images_per_class=2",
          "--gin.vlm.evaluation.SceneZeroShotRetrieval.retrieval_pairs=64",
          "--gin.vlm.evaluation.SceneZeroShotRetrieval.dense_scenes=32"]
  first = train(*args, "--gin.TRAIN_STEPS=10")
  assert first.returncode == 0, first.stderr
  assert "starting from scratch" in first.stdout and "zero_shot_held_out" in first.stdout
  second = train(*args, "--gin.TRAIN_STEPS=20")
  assert second.returncode == 0, second.stderr
  assert "resuming from step 10" in second.stdout
  for run in (first, second):  # a clean console: no library's log lines (absl, orbax, TensorFlow)
    logged = [line for line in run.stderr.splitlines() if line.startswith(("WARNING:", "ERROR:", "INFO:"))]
    assert not logged, logged
  for name in ("metrics.jsonl", "loss.png", "config.gin", "model_config.json", "checkpoints", "train", "eval"):
    assert (tmp_path / name).exists(), name
  records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records if "split" not in r] == [10, 20]  # the run file logs every 10 steps
  evals = [r for r in records if r.get("split") == "eval"]
  assert [r["step"] for r in evals] == [10, 20] and evals[-1]["i2t_R1"] >= 0


@pytest.mark.parametrize("program", ["vlm.curriculum", "tasks.list", "tasks.show"])
def test_each_program_names_itself_for_an_unknown_flag(program):
  task = ["--task=vqa_synthetic"] if program == "tasks.show" else []
  assert_one_line_error(run_main(program, *task, "--bogus"), "--bogus", f"python -m {program} --help")


@pytest.mark.parametrize("text, fragment", [
    ("vlm.trainer.train.seed = (\n", "a bracket is never closed"),  # was tokenize.TokenError's traceback
    ("import no_such_module_at_all\n", "No module named 'no_such_module_at_all'"),  # was ModuleNotFoundError's
])
def test_a_broken_gin_file_is_named_in_one_line(tmp_path, text, fragment):
  (tmp_path / "broken.gin").write_text(text)
  assert_one_line_error(refused(f"--gin_file={tmp_path / 'broken.gin'}"), f"gin file {tmp_path / 'broken.gin'}",
                        fragment)


def test_tensorflow_starts_without_printing_its_native_start_up_lines():
  """The seqio pipeline's TensorFlow loads and runs an op with nothing on stderr (tasks.quiet_tensorflow)."""
  script = ("import tasks.pipeline\nimport tensorflow as tf\nimport sys\n"
            "print(int(tf.constant(1) + 1))\nsys.stderr.write('a line of our own\\n')\n")
  result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  assert result.stdout == "2\n"
  assert result.stderr == "a line of our own\n"


def test_only_the_known_start_up_lines_are_dropped():
  from tasks import quiet_tensorflow  # pylint: disable=import-outside-toplevel
  noise = ["WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
           "I0000 00:00:1796471181.792038   17668 port.cc:153] oneDNN custom operations are on.",
           "I0000 00:00:1796471181.792374   17668 cudart_stub.cc:31] Could not find cuda drivers on your machine",
           "E0000 00:00:1796471211.498651   18117 cuda_platform.cc:52] failed call to cuInit: INTERNAL",
           "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the "
           "appropriate compiler flags."]
  kept = ["E0000 00:00:1796471211.498651   18117 op_kernel.cc:1857] OP_REQUIRES failed",
          "Traceback (most recent call last):", "ImportError: libcudart.so.12: cannot open shared object file"]
  assert all(quiet_tensorflow.START_UP_NOISE.match(line) for line in noise)
  assert not any(quiet_tensorflow.START_UP_NOISE.match(line) for line in kept)


def test_the_tiny_ul2_text_run_trains_and_counts_targets_a_short_length_cuts(tmp_path):
  result = train("--gin_file=gin_configs/runs/ul2_tiny_denoise.gin", f"--gin.MODEL_DIR='{tmp_path}'",
                 "--gin.TRAIN_STEPS=2", "--gin.BATCH_SIZE=8", "--gin.TARGETS_LENGTH=16")
  assert result.returncode == 0, result.stderr
  assert "ul2_denoise (trimmed_targets)" in result.stderr and "raise TASK_FEATURE_LENGTHS['targets']" in result.stderr
  last = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
  assert last["data/ul2_denoise/trimmed_targets"] > 0


def test_the_curriculum_draws_the_last_pretraining_stage_and_every_stage_file_exists():
  """predictions.png shows the mixture's answers (stage 2), not a single-task transfer's, whatever the order."""
  from vlm import curriculum  # pylint: disable=import-outside-toplevel
  assert all(os.path.exists(stage) for stage in curriculum.STAGES)
  stages = [(stage, f"runs/{number}") for number, stage in enumerate(curriculum.STAGES)]
  assert curriculum.predictions_source(stages) == "runs/2"  # pali_tiny_stage2.gin
  assert curriculum.predictions_source(stages[:2]) == "runs/1"
  assert curriculum.predictions_source(stages[3:]) == "runs/4"  # transfers only: the last


def test_the_curriculum_summary_shows_each_headline_beside_its_baselines_stage_by_stage():
  """A metric's rows follow the stages that report it (the resolution increase reads down the column), each with
  that stage's own baselines; stages and baselines a run lacks are left out."""
  from vlm import curriculum  # pylint: disable=import-outside-toplevel
  finals = [{"refexp_accuracy": 28.1, "refexp_centre_baseline": 3.5},
            {"refexp_accuracy": 14.1, "refexp_centre_baseline": 3.5, "refexp_shuffled_images_baseline": 9.8,
             "documents_synthetic_anls": 1.4},
            {},
            {"documents_synthetic_anls": 3.3}]
  lines = curriculum.headline_lines(finals)
  assert lines[1:] == ["  refexp, IoU >= 0.5, %    0:   28.1  centre box 3.5",
                       "                           1:   14.1  centre box 3.5, shuffled images 9.8",
                       "  document ANLS            1:    1.4",
                       "                           3:    3.3"]


@pytest.mark.slow
def test_the_curriculum_runs_its_five_stages_each_from_the_one_before(tmp_path):
  """`python -m vlm.curriculum` as the README runs it, two steps a stage and a few evaluation examples: each
  stage warm-starts from the MODEL_DIR the one before wrote, evaluates beside its baselines, and the summary
  names every stage and the predictions grid."""
  small_evals = ["--gin.vlm.evaluation.SeqioTaskEvaluation.examples_per_task=4",
                 "--gin.vlm.evaluation.SceneZeroShotRetrieval.locca_examples=8",
                 "--gin.vlm.evaluation.SceneZeroShotRetrieval.pairs_per_language=8",
                 "--gin.vlm.evaluation.SceneZeroShotRetrieval.retrieval_pairs=16",
                 "--gin.vlm.evaluation.SceneZeroShotRetrieval.images_per_class=1",
                 "--gin.vlm.evaluation.SceneZeroShotRetrieval.dense=False"]
  result = run_elsewhere(tmp_path, "vlm.curriculum", "--gin.TRAIN_STEPS=2", "--gin.BATCH_SIZE=8",
                         "--gin.CHECKPOINT_PERIOD=2", "--gin.EVAL_PERIOD=2", *small_evals)
  assert result.returncode == 0, result.stderr[-3000:]
  from vlm import curriculum, summaries  # pylint: disable=import-outside-toplevel
  summary = result.stdout[result.stdout.index("=== curriculum summary ==="):]
  assert "held-out results beside their baselines" in summary and "refexp, IoU >= 0.5, %    0:" in summary
  wants = {"siglip_locca_tiny_synthetic": "refexp_shuffled_images_baseline", "pali_tiny/stage1": "detect_f1",
           "pali_tiny/stage2": "webli_ocr_synthetic_accuracy", "pali_tiny/transfer_vqa": "vqa_majority_baseline",
           "pali_tiny/transfer_refexp": "refexp_shuffled_images_baseline"}
  assert len(wants) == len(curriculum.STAGES)
  for run, key in wants.items():
    model_dir = tmp_path / "runs" / run
    assert str(model_dir) in summary or f"runs/{run}" in summary, run
    assert key in [r for r in summaries.read_metrics(str(model_dir)) if r.get("split") == "eval"][-1], run
  assert "warm start: ViT from runs/siglip_locca_tiny_synthetic" in result.stdout
  assert (tmp_path / "runs" / "pali_tiny" / "transfer_refexp" / "predictions.png").is_file()


# Run files that are not runs by themselves: shared includes, and add-ons read beside a run's own file.
_NOT_RUNS = ("pali3_common.gin", "pali_tiny_common.gin", "pali_tiny_documents_common.gin", "siglip2_common.gin",
             "tipsv2_common.gin", "transfer_eval_in_training.gin")
_RUN_FILES = sorted(p for p in glob.glob("gin_configs/runs/**/*.gin", recursive=True)
                    if os.path.basename(p) not in _NOT_RUNS)


@pytest.mark.parametrize("run", _RUN_FILES)
def test_every_run_file_parses(run):
  """A typo in a run file the README names would otherwise surface only when a user runs it."""
  import gin  # pylint: disable=import-outside-toplevel
  from vlm import train  # pylint: disable=import-outside-toplevel,unused-import  (the configurables)
  extra = ["CHECKPOINT_PATH = 'runs/x'"] if run.endswith("eval_transfer.gin") else []
  gin.clear_config()
  try:
    gin.parse_config_files_and_bindings([run], extra)
  finally:
    gin.clear_config()
