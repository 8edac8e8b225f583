"""`python -m vlm.eval` on a tiny PaLI the test trains, over tiny files in every benchmark's own layout: outputs
written, every metric equal to vlm.metrics on the same predictions, missing images counted, bad input one line."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from encoders import vit as vit_lib
from tasks import benchmark_files, locations, scene_tasks
from tests import tiny_models
from tests.cli_errors import assert_one_line_error, run_main
from tests.tensorboard_events import tensorboard_scalars
from vlm import metrics, optim, partitioning, trainer, transfer_eval, transfer_tasks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN = "gin_configs/runs/eval_transfer.gin"
SIZE = tiny_models.PALI_IMAGE_SIZE
# The default EVAL_TASKS of eval_transfer.gin (tests/test_eval_formats.py runs the other PaLI tasks).
PALI_TASKS = ["coco_captions", "coco_karpathy", "vqav2", "textvqa", "docvqa", "chartqa", "refcoco"]
CAPTION_METRICS = lambda p, r: {"cider": metrics.cider(p, r), "bleu4": metrics.bleu4(p, r),  # noqa: E731
                                 "rouge_l": metrics.rouge_l(p, r)}
SCORERS = {  # task -> how a human scores the json's predictions with vlm.metrics
    "coco_captions": CAPTION_METRICS,
    "coco_karpathy": CAPTION_METRICS,
    "vqav2": lambda p, r: {"vqa_accuracy": metrics.vqa_accuracy(p, r)},
    "textvqa": lambda p, r: {"vqa_accuracy": metrics.vqa_accuracy(p, r)},
    "docvqa": lambda p, r: {"anls": metrics.anls(p, r)},
    "chartqa": lambda p, r: {"relaxed_accuracy": metrics.relaxed_accuracy(p, [refs[0] for refs in r])},
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  directory = tmp_path_factory.mktemp("pali")
  tiny_models.train_pali(str(directory), train_steps=2)
  return directory


def _image(path, index, height=48, width=48):
  image = scene_tasks.example(0, index, "validation", "caption", 48)["image"]
  pixels = Image.fromarray(((image + 1) * 127.5).astype(np.uint8)).resize((width, height))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  pixels.save(path)


def _json(path, obj):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(obj, f)


def write_benchmarks(root) -> None:
  """Two or three examples of every benchmark, in its own layout, under the paths eval_transfer.gin names."""
  root = str(root)
  for i in range(3):
    _image(f"{root}/coco/val2017/{i:012d}.jpg", i)
    _image(f"{root}/coco/val2014/COCO_val2014_{i:012d}.jpg", i)
    _image(f"{root}/textvqa/train_images/t{i}.jpg", i)
    _image(f"{root}/docvqa/val/documents/d{i}.png", i)
    _image(f"{root}/chartqa/test/png/c{i}.png", i)
  _image(f"{root}/coco/train2014/r0.jpg", 0, 40, 64)  # RefCOCO images of two sizes
  _image(f"{root}/coco/train2014/r1.jpg", 1)
  _json(f"{root}/coco/annotations/captions_val2017.json", {
      "images": [{"id": i, "file_name": f"{i:012d}.jpg"} for i in range(3)],
      "annotations": [{"image_id": i, "caption": c} for i in range(3) for c in ("a red circle", "one circle")]})
  _json(f"{root}/coco/dataset_coco.json", {"images": [
      {"filepath": "val2017", "filename": f"{i:012d}.jpg", "split": split, "cocoid": i,
       "sentences": [{"raw": "a blue square ."}, {"raw": "two shapes"}]}
      for i, split in enumerate(("test", "test", "train"))]})
  _json(f"{root}/vqav2/v2_OpenEnded_mscoco_val2014_questions.json", {
      "data_subtype": "val2014",
      "questions": [{"image_id": i, "question": "how many circles are there?", "question_id": 10 + i}
                    for i in range(3)]})
  _json(f"{root}/vqav2/v2_mscoco_val2014_annotations.json", {"annotations": [
      {"question_id": 10 + i, "multiple_choice_answer": "2",
       "answers": [{"answer": a, "answer_confidence": "yes"} for a in ["2"] * 7 + ["3"] * 3]} for i in range(3)]})
  long_question = "what color is the circle at the top left of the image next to the small square?"
  _json(f"{root}/textvqa/TextVQA_0.5.1_val.json", {"data": [  # the first prompt is longer than the model's 12
      {"question": long_question if i == 0 else "what color is the circle?", "answers": ["red"] * 10,
       "image_id": f"t{i}", "question_id": i} for i in range(3)]})
  _json(f"{root}/docvqa/val/val_v1.0.json", {"data": [
      {"question": "what is the total?", "answers": ["42", "42.00"], "image": f"documents/d{i}.png",
       "questionId": i} for i in range(4)]})  # d3.png does not exist: skipped and counted
  _json(f"{root}/chartqa/test/test_human.json", [
      {"imgname": f"c{i}.png", "query": "how many circles are there?", "label": "2"} for i in range(3)])
  _json(f"{root}/refcoco/refcoco_val.json", [
      {"file_name": "r0.jpg", "bbox": [8, 4, 20, 16], "sentences": [{"sent": "the red circle"}, "the circle"]},
      {"file_name": "r1.jpg", "bbox": [0, 0, 24, 24], "sentences": ["the square"]}])


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("benchmarks")
  write_benchmarks(root)
  return root


def normalise(x: np.ndarray) -> np.ndarray:
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def siglip_by_hand(checkpoint) -> tuple:
  """(image paths -> L2-normalised pooled embeddings, texts -> the same), computed directly with the encoder:
  what the SigLIP tasks' scores are checked against."""
  from encoders import siglip  # pylint: disable=import-outside-toplevel
  from tests import scene_data  # pylint: disable=import-outside-toplevel
  from vlm import infer, pali  # pylint: disable=import-outside-toplevel
  encoder = siglip.load(checkpoint)
  vocab = scene_data.vocabulary()

  def images(paths):
    return normalise(encoder.encode_image(np.stack([pali.fit_square(infer.read_image(str(p)), SIZE, "squash")
                                                    for p in paths]))["pooled"])

  def texts(batch):  # as the seqio tasks tokenise texts: sentencepiece ids + EOS, cut to 16, padded with 0
    ids = np.zeros((len(batch), 16), np.int32)
    for row, text in enumerate(batch):
      pieces = (list(vocab.encode(text)) + [vocab.eos_id])[:16]
      ids[row, :len(pieces)] = pieces
    return normalise(encoder.encode_text(ids)["pooled"])
  return images, texts


def run_eval(*bindings):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  return subprocess.run([sys.executable, "-m", "vlm.eval", f"--gin_file={GIN}", *bindings], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)


def refused_eval(*bindings):
  """vlm.eval's outcome for bindings it refuses before evaluating: run in this process (cli_errors.run_main)."""
  return run_main("vlm.eval", f"--gin_file={GIN}", *bindings)


def test_every_task_end_to_end_scores_as_vlm_metrics(checkpoint, data_dir, tmp_path):
  out = tmp_path / "out"
  result = run_eval(f"--gin.CHECKPOINT_PATH='{checkpoint}'", f"--gin.DATA_DIR='{data_dir}'",
                    f"--gin.OUTPUT_DIR='{out}'", "--gin.BATCH_SIZE=2")
  assert result.returncode == 0, result.stderr
  assert "| task | metric |" in result.stdout and "ex/s" in result.stderr  # the table, and tqdm's rate
  assert (out / "results.md").read_text() in result.stdout
  assert tensorboard_scalars(out)["vqav2/vqa_accuracy"] == pytest.approx(
      json.loads((out / "vqav2.json").read_text())["metrics"]["vqa_accuracy"])
  for task in PALI_TASKS:
    report = json.loads((out / f"{task}.json").read_text())
    assert (out / f"{task}.png").stat().st_size > 0
    predictions = [row["prediction"] for row in report["examples"]]
    references = [row["references"] for row in report["examples"]]
    assert report["num_examples"] == len(predictions) and report["step"] == 2
    if task in SCORERS:
      assert report["metrics"] == pytest.approx(SCORERS[task](predictions, references))
  counts = {t: json.loads((out / f"{t}.json").read_text())["num_examples"] for t in PALI_TASKS}
  assert counts == {"coco_captions": 3, "coco_karpathy": 2, "vqav2": 3, "textvqa": 3, "docvqa": 3, "chartqa": 3,
                    "refcoco": 3}
  docvqa = json.loads((out / "docvqa.json").read_text())
  assert docvqa["missing_images"] == 1
  cut = {t: json.loads((out / f"{t}.json").read_text())["truncated_prompts"] for t in PALI_TASKS}
  assert cut == {**{t: 0 for t in PALI_TASKS}, "textvqa": 1}  # cut as training cuts, and counted
  assert docvqa["examples"][0]["prompt"] == "answer en what is the total?"
  refcoco = json.loads((out / "refcoco.json").read_text())
  assert [row["prompt"] for row in refcoco["examples"]] == ["refexp the red circle", "refexp the circle",
                                                            "refexp the square"]
  assert set(refcoco["metrics"]) == {"refexp_accuracy", "refexp_centre_baseline"}


def _iou(a, b):
  inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
  return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_refexp_scores_location_boxes_and_the_centre_baseline(data_dir):
  examples = benchmark_files.refcoco(str(data_dir / "refcoco/refcoco_val.json"), str(data_dir / "coco/train2014"))
  examples = [{**ex, "height": h, "width": w} for ex, (h, w) in zip(examples, [(40, 64), (40, 64), (48, 48)])]
  # The first answer is the target box itself; the second a box a quarter of its size; the third names none.
  predictions = [locations.box_to_tokens((4, 8, 20, 28), 40, 64) + " circle",
                 locations.box_to_tokens((4, 8, 12, 18), 40, 64), "square"]
  scores = transfer_tasks.score_refexp(predictions, examples)
  assert scores["refexp_accuracy"] == pytest.approx(100 / 3)
  # By hand: the mean target size relative to its image, centred in each image.
  rel_h, rel_w = np.mean([16 / 40, 16 / 40, 24 / 48]), np.mean([20 / 64, 20 / 64, 24 / 48])
  targets = [(4, 8, 20, 28), (4, 8, 20, 28), (0, 0, 24, 24)]
  centre = [((h - rel_h * h) / 2, (w - rel_w * w) / 2, (h + rel_h * h) / 2, (w + rel_w * w) / 2)
            for h, w in [(40, 64), (40, 64), (48, 48)]]
  assert scores["refexp_centre_baseline"] == pytest.approx(
      100 * np.mean([_iou(c, t) >= 0.5 for c, t in zip(centre, targets)]))


def test_karpathy_reads_only_its_split(data_dir):
  examples = benchmark_files.coco_karpathy(str(data_dir / "coco/dataset_coco.json"), str(data_dir / "coco"))
  assert [ex["id"] for ex in examples] == ["0", "1"]
  assert examples[0]["references"] == ["a blue square .", "two shapes"]
  assert examples[0]["image"] == str(data_dir / "coco/val2017/000000000000.jpg")


def test_unknown_task_is_one_line(checkpoint, data_dir):
  assert_one_line_error(refused_eval(f"--gin.CHECKPOINT_PATH='{checkpoint}'", f"--gin.DATA_DIR='{data_dir}'",
                                     "--gin.EVAL_TASKS=['vqav2', 'nocaps']"), "unknown eval task 'nocaps'", "vqav2")


def test_wrong_layout_names_the_field_and_file(checkpoint, tmp_path):
  write_benchmarks(tmp_path)
  _json(f"{tmp_path}/chartqa/test/test_human.json", [{"imgname": "c0.png", "question": "how many?", "label": "2"}])
  assert_one_line_error(refused_eval(f"--gin.CHECKPOINT_PATH='{checkpoint}'", f"--gin.DATA_DIR='{tmp_path}'",
                                     "--gin.EVAL_TASKS=['chartqa']"), "test_human.json", "'query'")
  _json(f"{tmp_path}/textvqa/TextVQA_0.5.1_val.json", [{"question": "q", "answers": ["a"]}])
  assert_one_line_error(refused_eval(f"--gin.CHECKPOINT_PATH='{checkpoint}'", f"--gin.DATA_DIR='{tmp_path}'",
                                     "--gin.EVAL_TASKS=['textvqa']"), "TextVQA_0.5.1_val.json", "'data'")


def test_empty_references_is_one_line(tmp_path):
  write_benchmarks(tmp_path)
  _json(f"{tmp_path}/docvqa/val/val_v1.0.json", {"data": [
      {"question": "what is the total?", "answers": [], "image": "documents/d0.png", "questionId": 7}]})
  with pytest.raises(ValueError, match="example 7 has an empty references list"):
    transfer_tasks.docvqa(str(tmp_path), "docvqa/val/val_v1.0.json", "docvqa/val")


def test_siglip_checkpoint_is_one_line(data_dir, tmp_path):
  (tmp_path / "model_config.json").write_text(json.dumps({"model": "siglip"}))
  assert_one_line_error(refused_eval(f"--gin.CHECKPOINT_PATH='{tmp_path}'", f"--gin.DATA_DIR='{data_dir}'",
                                     "--gin.EVAL_TASKS=['vqav2']"), "'siglip' model, not a PaLI")
  assert not (tmp_path / "eval_transfer").exists()  # nothing written for a run that could not start


def test_the_checkpoint_is_checked_before_the_task_files(tmp_path):
  """A wrong CHECKPOINT_PATH is named even when the task files are missing too (it is the cheaper mistake to
  find; the files are still read before any parameter is)."""
  for checkpoint in (tmp_path / "nope", tmp_path):
    result = refused_eval(f"--gin.CHECKPOINT_PATH='{checkpoint}'", f"--gin.DATA_DIR='{tmp_path / 'none'}'",
                          "--gin.EVAL_TASKS=['vqav2']")
    assert_one_line_error(result, f"{checkpoint} is not a PaLI training directory")


def test_unset_task_file_names_the_binding(tmp_path):
  with pytest.raises(ValueError, match=r"eval task docvqa needs docvqa.annotations: add --gin.docvqa.annotations="):
    transfer_tasks.docvqa(str(tmp_path), None, "docvqa/val")


@pytest.mark.parametrize("record, message", [
    ({"file_name": "r0.jpg", "bbox": [1, 2, 0, 4], "sentences": ["x"]}, r"record 0 'bbox' must be \[x, y, w, h\]"),
    ({"file_name": "r0.jpg", "bbox": [1, 2, 3, 4], "sentences": []}, "record 0 has an empty 'sentences' list"),
    ({"file_name": "r0.jpg", "box": [1, 2, 3, 4], "sentences": ["x"]}, "record 0 has no 'bbox' field"),
])
def test_bad_refcoco_record_is_named(tmp_path, record, message):
  _json(f"{tmp_path}/refs.json", [record])
  with pytest.raises(ValueError, match=message):
    benchmark_files.refcoco(f"{tmp_path}/refs.json", str(tmp_path))


def test_karpathy_image_without_sentences_is_named(tmp_path):
  _json(f"{tmp_path}/dataset_coco.json", {"images": [{"filepath": "val2014", "filename": "a.jpg", "split": "test"}]})
  with pytest.raises(ValueError, match=r"dataset_coco.json: images\[0\] has no 'sentences' field"):
    benchmark_files.coco_karpathy(f"{tmp_path}/dataset_coco.json", str(tmp_path))


def test_vqav2_question_without_answers_is_named(tmp_path):
  write_benchmarks(tmp_path)
  annotations = f"{tmp_path}/vqav2/v2_mscoco_val2014_annotations.json"
  _json(annotations, {"annotations": [{"question_id": 10, "multiple_choice_answer": "2", "answers": []}]})
  with pytest.raises(ValueError, match="3 question.* have an empty answers list"):
    benchmark_files.vqav2(f"{tmp_path}/vqav2/v2_OpenEnded_mscoco_val2014_questions.json", annotations,
                          f"{tmp_path}/coco/val2014")


def test_unset_checkpoint_is_one_line(data_dir):
  assert_one_line_error(refused_eval(f"--gin.DATA_DIR='{data_dir}'", "--gin.EVAL_TASKS=['vqav2']"),
                        "CHECKPOINT_PATH is not set", "--gin.CHECKPOINT_PATH=")


def test_bleu4_and_rouge_l_equal_coco_caption():
  from pycocoevalcap.bleu.bleu import Bleu  # pylint: disable=import-outside-toplevel  (a test extra)
  from pycocoevalcap.rouge.rouge import Rouge  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  words = "a the red circle square blue two big small at top left of image , .".split()
  caption = lambda low: " ".join(rng.choice(words, rng.integers(low, 10)))  # noqa: E731
  for _ in range(20):
    n = int(rng.integers(1, 6))
    predictions = [caption(0) for _ in range(n)]  # empty ones included
    references = [[caption(1) for _ in range(rng.integers(1, 4))] for _ in range(n)]
    gts = {i: [metrics.ptb_tokenize(r) for r in refs] for i, refs in enumerate(references)}
    res = {i: [metrics.ptb_tokenize(p)] for i, p in enumerate(predictions)}
    bleu = Bleu(4).compute_score(gts, res, verbose=0)[0][3]
    assert metrics.bleu4(predictions, references) == pytest.approx(100 * bleu)
    assert metrics.rouge_l(predictions, references) == pytest.approx(100 * Rouge().compute_score(gts, res)[0])


# ---------------------------------------------------------------------------------------------- SigLIP tasks


@pytest.fixture(scope="module")
def siglip_checkpoint(tmp_path_factory):
  from encoders import siglip, text as text_lib  # pylint: disable=import-outside-toplevel
  from tests import scene_data  # pylint: disable=import-outside-toplevel
  directory = tmp_path_factory.mktemp("siglip")
  model = siglip.SigLIPModel(image=vit_lib.config("pico/4", image_size=SIZE),
                             text=text_lib.config("pico", vocab_size=scene_data.vocab_size(), max_len=16))
  data = scene_data.Batches("webli_pairs_synthetic", {"text": 16}, size=SIZE)
  trainer.train(model, data, model_dir=str(directory), train_steps=2, batch_size=8, optimizer=optim.adamw,
                learning_rate=1e-3, partitioner=partitioning.Partitioner(devices=jax.devices()[:1]),
                checkpoint_period=2, progress=False)
  return directory


def write_siglip_benchmarks(root) -> None:
  """An ImageNet-style folder (two classes) and Karpathy's json for retrieval."""
  root = str(root)
  for i, name in enumerate(["red_circle", "red_circle", "blue_square", "blue_square", "blue_square"]):
    _image(f"{root}/imagenet/val/{name}/{i}.png", i)
  write_benchmarks(root)  # coco/dataset_coco.json: two test images, two captions each


def test_siglip_zero_shot_and_retrieval_end_to_end(siglip_checkpoint, tmp_path):
  write_siglip_benchmarks(tmp_path)
  out = tmp_path / "out"
  result = run_eval(f"--gin.CHECKPOINT_PATH='{siglip_checkpoint}'", f"--gin.DATA_DIR='{tmp_path}'",
                    f"--gin.OUTPUT_DIR='{out}'", "--gin.EVAL_TASKS=['zero_shot', 'coco_retrieval']",
                    "--gin.TOKENIZER='sentencepiece'",
                    "--gin.zero_shot.templates=['a photo of a {}', 'a {}']")
  assert result.returncode == 0, result.stderr
  # By hand: the same encoder, images and texts, through vlm.metrics.
  images, texts = siglip_by_hand(siglip_checkpoint)
  folder = tmp_path / "imagenet/val"
  paths = [folder / c / f for c in ("blue_square", "red_circle") for f in sorted(os.listdir(folder / c))]
  classes = normalise(np.stack([texts([f"a photo of a {c}", f"a {c}"]).mean(0) for c in ("blue square", "red circle")]))
  zero_shot = json.loads((out / "zero_shot.json").read_text())
  assert zero_shot["num_examples"] == 5
  assert zero_shot["metrics"]["zero_shot_accuracy"] == pytest.approx(
      metrics.zero_shot_accuracy(images(paths), classes, np.array([0, 0, 0, 1, 1])), abs=1e-6)
  coco = tmp_path / "coco/val2017"
  captions = ["a blue square .", "two shapes"] * 2
  retrieval = json.loads((out / "coco_retrieval.json").read_text())
  assert retrieval["metrics"] == pytest.approx(metrics.retrieval_multi_caption(
      images([coco / "000000000000.jpg", coco / "000000000001.jpg"]), texts(captions), [0, 0, 1, 1]))
  assert "zero_shot/zero_shot_accuracy" in tensorboard_scalars(out)


def test_retrieval_with_several_captions_an_image():
  images = np.eye(3)
  # Image 0's captions: one far, one its best match; image 1's caption matches image 2 better; image 2 exact.
  texts = np.array([[0, 0, 1.0], [1.0, 0, 0], [0, 0.6, 0.8], [0, 0, 1.0]])
  scores = metrics.retrieval_multi_caption(images, texts / np.linalg.norm(texts, axis=1, keepdims=True),
                                           [0, 0, 1, 2], ks=(1, 2))
  # i2t: image 0 finds caption 1 first; image 1 its only caption; image 2's caption ties caption 0 (ties lose).
  assert scores["i2t_R@1"] == pytest.approx(200 / 3) and scores["i2t_R@2"] == 100
  # t2i: caption 0 (of image 0) is closest to image 2 and ties image 1; caption 2 (of image 1) prefers image 2.
  assert scores["t2i_R@1"] == pytest.approx(50) and scores["t2i_R@2"] == pytest.approx(75)


def test_mixing_siglip_and_pali_tasks_is_refused(tmp_path):
  with pytest.raises(ValueError, match=r"EVAL_TASKS mixes SigLIP tasks \(zero_shot\) with PaLI tasks \(vqav2\)"):
    transfer_tasks.build(["zero_shot", "vqav2"], str(tmp_path))


def test_siglip_tasks_without_a_tokenizer_say_which_to_set():
  with pytest.raises(ValueError, match=r"set TOKENIZER \(transfer_eval.evaluate.tokenizer\) to 'sentencepiece'"):
    transfer_eval.text_tokenizer(None, 16)


def test_hf_tokenizer_pads_to_the_text_length(tmp_path):
  import transformers  # pylint: disable=import-outside-toplevel
  spm = os.path.join(REPO, "tasks/data/spm/pali_tiny.model")
  transformers.SiglipTokenizer(vocab_file=spm).save_pretrained(str(tmp_path))
  reference = transformers.SiglipTokenizer(vocab_file=spm)
  ids = transfer_eval.text_tokenizer(str(tmp_path), 8)(["a photo of a cat", "a red circle at the top left of it"])
  short = reference("a photo of a cat")["input_ids"]
  assert ids.shape == (2, 8) and ids.dtype == np.int32
  assert ids[0].tolist() == short + [reference.pad_token_id] * (8 - len(short))  # padded to max_len, as HF SigLIP
  assert ids[1, -1] == reference.eos_token_id  # a long text is cut with its EOS kept


def test_a_given_checkpoint_step_is_evaluated_or_refused_in_one_line(checkpoint, data_dir, tmp_path):
  from vlm import model as model_lib, pali  # pylint: disable=import-outside-toplevel
  _, newest = model_lib.load(checkpoint)
  _, at_two = model_lib.load(checkpoint, step=2)
  jax.tree.map(np.testing.assert_array_equal, newest, at_two)
  assert pali.load(checkpoint, step=2).max_decode_len == pali.load(checkpoint).max_decode_len
  result = refused_eval(f"--gin.CHECKPOINT_PATH='{checkpoint}'", f"--gin.DATA_DIR='{data_dir}'",
                        f"--gin.OUTPUT_DIR='{tmp_path}'", "--gin.EVAL_TASKS=['vqav2']", "--gin.CHECKPOINT_STEP=7")
  assert_one_line_error(result, "has no complete checkpoint at step 7; its steps: 2")


def test_a_step_for_a_foreign_siglip_checkpoint_is_refused(tmp_path):
  from encoders import siglip  # pylint: disable=import-outside-toplevel
  with pytest.raises(ValueError, match="is not a training MODEL_DIR: it holds one set of parameters"):
    siglip.load(str(tmp_path / "siglip.npz"), step=3)
