"""Registered seqio tasks and mixtures (tasks.registry), and the tasks.list / tasks.show tools."""

import re
import subprocess
import sys
import types

import gin
import numpy as np
import pytest
import seqio

from tasks import list as task_list
from tasks import ocr
from tasks import registry
from tasks import scene_tasks
from tasks import show
from tasks import vocab
from tests.cli_errors import assert_one_line_error

SIZE = 32
LENGTHS = {"inputs": 64, "targets": 48}
TASKS = sorted(registry.IMAGE_TASKS) + ["ul2_denoise_synthetic", "webli_pairs_synthetic"]


@pytest.fixture(autouse=True)
def small_images():
  with registry.image_size_bound(SIZE):
    yield


@pytest.fixture
def cleared_gin():
  """An empty gin config for a test that parses a whole run file, emptied again after it (nothing leaks)."""
  gin.clear_config()
  yield
  gin.clear_config()


def first(name, split="train", seed=0, n=1, shard_info=None):
  lengths = {"text": 40} if name == "webli_pairs_synthetic" else LENGTHS
  ds = seqio.get_mixture_or_task(name).get_dataset(lengths, split=split, shuffle=False, seed=seed,
                                                   shard_info=shard_info)
  return list(ds.take(n).as_numpy_iterator())


def test_every_task_and_the_mixture_are_registered():
  assert set(TASKS) <= set(seqio.TaskRegistry.names())
  for name, rates in (("pali_stage1_synthetic", registry.STAGE1_RATES),
                      ("pali_stage2_synthetic", registry.STAGE2_RATES)):
    mixture = seqio.get_mixture_or_task(name)
    assert sorted(t.name for t in mixture.tasks) == sorted(registry.IMAGE_TASKS) == sorted(rates)
    for task in mixture.tasks:
      assert mixture.get_rate(task) == rates[task.name]
  # stage 2 upweights what the resolution increase helps
  for name in ("webli_ocr_synthetic", "documents_synthetic"):
    share = lambda rates, n=name: rates[n] / sum(rates.values())  # noqa: E731
    assert share(registry.STAGE2_RATES) > 1.5 * share(registry.STAGE1_RATES)


@pytest.mark.parametrize("name", TASKS)
def test_every_task_yields_a_well_formed_example(name):
  (ex,) = first(name)
  v = vocab.vocabulary()
  text_keys = ["text"] if name == "webli_pairs_synthetic" else ["inputs", "targets"]
  for key in text_keys:
    ids = ex[key]
    assert ids.dtype == np.int32 and 2 <= len(ids) <= (40 if key == "text" else LENGTHS[key])
    assert ids[-1] == v.eos_id and (ids[:-1] > 0).all() and (ids < v.vocab_size).all()
  if name == "ul2_denoise_synthetic":
    assert "image" not in ex
    assert ex["inputs"][0] in v.mode_token_ids.values()
    return
  image = ex["image"]
  assert image.dtype == np.float32 and image.shape == (SIZE, SIZE, 3)
  assert -1 <= image.min() < image.max() <= 1
  if name != "webli_pairs_synthetic":
    assert v.decode(ex["inputs"]) == ex["inputs_pretokenized"].decode()


def test_examples_follow_the_generators_and_the_seed():
  (ex,) = first("vqa_synthetic", seed=4)
  expected = scene_tasks.example(4, 0, "train", "vqa", SIZE)
  assert ex["targets_pretokenized"].decode() == expected["targets"]
  np.testing.assert_allclose(ex["image"], expected["image"], atol=1 / 127.5)  # uint8 on the way
  assert first("vqa_synthetic", seed=4)[0]["inputs_pretokenized"] == ex["inputs_pretokenized"]
  other = [e["inputs_pretokenized"] for e in first("vqa_synthetic", seed=5, n=4)]
  assert other != [e["inputs_pretokenized"] for e in first("vqa_synthetic", seed=4, n=4)]


def test_splits_and_shards():
  source = seqio.get_mixture_or_task("webli_captions_synthetic").source
  assert source.num_examples("train") is None and source.num_examples("validation") == 1024
  val = first("webli_captions_synthetic", split="validation")[0]
  assert val["targets_pretokenized"].decode() == scene_tasks.example(0, 0, "validation", "caption", SIZE)["targets"]
  shard = first("webli_captions_synthetic", n=2, shard_info=seqio.ShardInfo(index=1, num_shards=3))
  assert [tuple(e["example_seed"]) for e in shard] == [(0, 1), (0, 4)]


def test_stage1_rates_follow_gin():
  mixture = seqio.get_mixture_or_task("pali_stage1_synthetic")
  charts = seqio.get_mixture_or_task("charts_synthetic")
  with registry.gin_bound("tasks.registry.stage1_rates.rates", {"charts_synthetic": 3.0}):
    assert mixture.get_rate(charts) == 3.0
    assert mixture.get_rate(seqio.get_mixture_or_task("vqa_synthetic")) == 0.0
  assert mixture.get_rate(charts) == registry.STAGE1_RATES["charts_synthetic"]


def test_list_names_every_task_and_mixture():
  text = "\n".join(task_list.describe())
  for name in TASKS + ["pali_stage1_synthetic"]:
    assert name in text
  assert "image (float32, rank 3)" in text


def test_show_writes_a_png(tmp_path):
  out = tmp_path / "grid.png"
  show.main(["--task", "detection_synthetic", "--n", "4", "--image_size", "32", "--out", str(out)])
  assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  rows = show.examples("ul2_denoise_synthetic", "train", 2, 0, {"inputs": 32, "targets": 32})
  assert rows[0]["image"] is None and rows[0]["inputs"].startswith("[")


def run_show(argv, capsys):
  """show.main(argv) as a finished command: its exit code and stderr."""
  capsys.readouterr()
  try:
    show.main(argv)
    code = 0
  except SystemExit as e:
    code = e.code
  return types.SimpleNamespace(returncode=code, stderr=capsys.readouterr().err)


@pytest.mark.parametrize("args, fragments", [
    (["--task", "no_such_task"], ["--task 'no_such_task' is not a registered task", "tasks.list"]),
    (["--n", "0"], ["--n 0", "at least 1"]),
    (["--n", "-3"], ["--n -3", "at least 1"]),
    (["--split", "no_such_split"], ["--split 'no_such_split'", "train"]),
    (["--image_size", "0"], ["--image_size=0", "at least 16"]),
    (["--image_size", "16", "--patches", "16", "--patch_size", "32"], ["--image_size=16", "at least 32"]),
])
def test_show_bad_arguments_end_in_one_line(args, fragments, tmp_path, capsys):
  out = tmp_path / "grid.png"
  result = run_show(["--task", "detection_synthetic", "--out", str(out), *args], capsys)
  assert_one_line_error(result, *fragments)
  assert not out.exists()


def test_show_to_an_unwritable_place_ends_in_one_line(tmp_path, capsys):
  (tmp_path / "file").write_text("")
  for out, fragment in ((tmp_path / "file" / "grid.png", "does not exist"), (tmp_path, "is a folder")):
    result = run_show(["--task", "detection_synthetic", "--n", "1", "--image_size", "32", "--out", str(out)], capsys)
    assert_one_line_error(result, f"--out {out}", fragment)


def test_show_leaves_no_half_written_png_when_the_write_fails(tmp_path, capsys, monkeypatch):
  def disk_full(*_):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(show.os, "replace", disk_full)
  out = tmp_path / "grid.png"
  result = run_show(["--task", "detection_synthetic", "--n", "1", "--image_size", "32", "--out", str(out)], capsys)
  assert_one_line_error(result, "No space left on device")
  assert list(tmp_path.iterdir()) == []


def test_show_with_image_size_0_ends_in_one_line_without_hanging():
  result = subprocess.run([sys.executable, "-m", "tasks.show", "--task", "pali_stage1_synthetic", "--image_size",
                           "0"], capture_output=True, text=True, timeout=300)
  assert_one_line_error(result, "--image_size=0")


PALI3_RUNS = {"pali3_stage1_224": "pali_stage1_synthetic", "pali3_stage2_812": "pali_stage2_synthetic",
              "pali3_stage2_1064": "pali_stage2_synthetic", "pali3_transfer_vqa": "vqa_synthetic",
              "pali3_transfer_captions": "webli_captions_synthetic",
              "pali3_transfer_documents": "documents_synthetic"}


@pytest.mark.parametrize("run", sorted(PALI3_RUNS))
def test_the_real_size_pali3_runs_read_the_registered_mixtures(run, cleared_gin):
  """Each real-size stage file trains on its seqio mixture through the trainer's data path, in ids that fit the
  model's table, with the vocabulary it records (images made small: the files set 224 to 1064 px)."""
  from tasks import pipeline  # pylint: disable=import-outside-toplevel
  from vlm import model as model_lib, train  # pylint: disable=import-outside-toplevel,unused-import
  gin.parse_config_files_and_bindings([f"gin_configs/runs/{run}.gin"], ["IMAGE_SIZE = 28"])
  assert gin.query_parameter("%MIXTURE_OR_TASK_NAME") == PALI3_RUNS[run]
  data = gin.get_configurable("tasks.pipeline.SeqioBatches")()
  assert isinstance(data, pipeline.SeqioBatches) and data.name == PALI3_RUNS[run]
  batch = data.batch(0, 4)
  model = gin.query_parameter("%MODEL").scoped_configurable_fn()
  assert isinstance(model, model_lib.PaLIModel) and model.config.vit.image_size == 28
  assert batch["image"].shape == (4, 28, 28, 3)
  assert batch["encoder_input_tokens"].shape[1] == model.prompt_length
  for key in ("encoder_input_tokens", "decoder_target_tokens"):
    assert batch[key].max() < model.vocabulary.vocab_size <= model.config.ul2.vocab_size
  assert model.vocabulary.decode(batch["decoder_target_tokens"][0].tolist())  # the recorded vocabulary reads it


CURRICULUM_PALI_STAGES = {"pali_tiny_stage1": "pali_stage1_synthetic", "pali_tiny_stage2": "pali_stage2_synthetic",
                          "pali_tiny_transfer_vqa": "vqa_synthetic", "pali_tiny_transfer_refexp": "refexp_synthetic"}


@pytest.mark.parametrize("run", sorted(CURRICULUM_PALI_STAGES))
def test_the_curriculum_stages_read_their_data_at_the_learning_rate_that_localises(run, cleared_gin):
  """Each PaLI stage of `python -m vlm.curriculum` parses, reads its seqio data through the trainer's data path
  and peaks at 1e-3 (at 3e-3 the tiny UL2 did not learn to localise); stage 1 draws referring expressions four
  times as often as the paper's composition does; SEED seeds the parameters and the data."""
  from tasks import pipeline  # pylint: disable=import-outside-toplevel
  from vlm import train  # pylint: disable=import-outside-toplevel,unused-import
  gin.parse_config_files_and_bindings([f"gin_configs/runs/{run}.gin"], ["SEED = 3"])
  assert gin.query_parameter("%MIXTURE_OR_TASK_NAME") == CURRICULUM_PALI_STAGES[run]
  assert gin.query_parameter("%PEAK_LEARNING_RATE") == 1e-3
  data = gin.get_configurable("tasks.pipeline.SeqioBatches")()
  assert isinstance(data, pipeline.SeqioBatches) and data.batch(0, 2)["image"].shape[0] == 2
  seed = gin.query_parameter("vlm.trainer.train.seed").scoped_configurable_fn()  # %SEED, evaluated
  assert data.seed == seed == 3
  paper = registry.STAGE1_RATES["refexp_synthetic"]
  assert registry.stage1_rates()["refexp_synthetic"] == (4 * paper if run == "pali_tiny_stage1" else paper)


def test_size_bindings_are_restored_to_the_previous_binding_or_the_default():
  with registry.image_size_bound(48), registry.patch_size_bound(8):
    assert (registry.image_size(), registry.patch_size()) == (48, 8)
  assert (registry.image_size(), registry.patch_size()) == (SIZE, 16)  # the fixture's binding; the default


@pytest.mark.parametrize("task", ["webli_ocr_synthetic", "documents_synthetic"])
def test_validation_texts_planned_for_one_size_are_the_same_at_every_resolution(task):
  def texts(split, image_size):
    with registry.image_size_bound(image_size):
      return [e["targets_pretokenized"].decode() for e in first(task, split=split, n=8)]

  unplanned = texts("validation", 128)
  with registry.gin_bound("tasks.registry.text_validation_plan_size.size", 32):
    assert texts("validation", 128) == texts("validation", 32) != unplanned  # 128 px plans more text by default
    assert texts("train", 128) != texts("train", 32)  # training keeps planning for the image it draws


def test_ocr_validation_texts_are_made_of_training_words_unless_gin_asks_for_the_held_out_ones():
  """Every OCR word is one sentencepiece piece: held-out words would be pieces no image ever taught the model
  to write. By default the validation split reads new texts of training words; 'validation' keeps tasks.ocr's
  held-out quarter. The random stream (numbers, layout) stays the validation split's either way."""
  def words(n=12):
    texts = [e["targets_pretokenized"].decode() for e in first("webli_ocr_synthetic", split="validation", n=n)]
    return {w.lower() for text in texts for w in text.split(" ") if not re.fullmatch(r"[0-9.]+", w)}

  train_words, held_out = set(ocr.words("train")), set(ocr.words("validation"))
  assert words() <= train_words
  with registry.gin_bound("tasks.registry.ocr_validation_words.split", "validation"):
    assert words() <= held_out
  with pytest.raises(ValueError, match="ocr_validation_words.split='test': use 'train'"):
    registry.ocr_validation_words("test")


@pytest.mark.parametrize("size", [0, -32, 32.0, True, "32"])
def test_a_bad_text_plan_size_is_one_clear_error(size):
  with pytest.raises(ValueError, match="text_validation_plan_size.size=.*positive image side"):
    registry.text_validation_plan_size(size)


def test_scene_tasks_take_their_object_count_from_gin():
  """tasks.registry.scene_max_objects: every PaLI scene task's scenes, training and validation, hold at most that
  many objects (one: a referring expression's object is the only one in its scene)."""
  from vlm import evaluation  # pylint: disable=import-outside-toplevel
  with registry.gin_bound("tasks.registry.scene_max_objects.objects", 1):
    for split in ("train", "validation"):
      for ex in first("refexp_synthetic", split=split, n=4):
        want = scene_tasks.example(0, int(ex["example_seed"][1]), split, "refexp", SIZE, max_objects=1)
        assert ex["targets_pretokenized"].decode() == want["targets"]
    evaluator = evaluation.SeqioTaskEvaluation(("vqa_synthetic",), {"inputs": 16, "targets": 8}, examples_per_task=4)
    assert evaluator.majority == scene_tasks.vqa_majority_baseline(seed=1234, max_objects=1)
  with pytest.raises(ValueError, match=r"scene_max_objects.objects=0: give an integer from 1 to \d"):
    registry.scene_max_objects(0)
