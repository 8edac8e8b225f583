"""The transfer benchmarks added beside tests/test_eval.py's: XM3600 captioning and retrieval, OK-VQA, ST-VQA,
InfographicVQA, RefCOCO+ / RefCOCOg and few-shot probes, each read from a tiny file in its real layout and scored
as vlm.metrics scores the same predictions (or embeddings) by hand."""

import json

import gin
import jax
import numpy as np
import pytest

from encoders import vit as vit_lib
from tasks import benchmark_files
from tests.test_eval import SIZE, _image, _json, run_eval, siglip_by_hand
from vlm import checkpoints, metrics, transfer_eval, transfer_tasks

NEW_PALI_TASKS = ["xm3600", "okvqa", "stvqa", "infovqa", "refcoco_plus", "refcocog"]
KEYS = ["0a1b", "2c3d", "4e5f"]
CAPTIONS = {  # per language, each image's "caption"s (written again as the file's tokenized fields, never read)
    "en": [["a red circle", "one red circle ."], ["two blue squares"], ["a small green triangle"]],
    "th": [["วงกลมสีแดง"], ["สี่เหลี่ยมสีน้ำเงินสองอัน"], ["สามเหลี่ยมสีเขียว"]],
    "zh": [["一个红色的圆"], ["两个蓝色的正方形", "两个方块"], ["一个绿色的小三角形"]],
}


def _untrained(directory, model, batch):
  """A MODEL_DIR of `model`'s initial parameters (step 0): the metrics are checked against the outputs of the same
  model, which any weights give, and initialising skips tests/test_eval.py's compile of a train step."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  params = nn.meta.unbox(jax.jit(lambda rng: model.init_variables(rng, batch))(jax.random.key(0))["params"])
  checkpoints.write_model_dir(str(directory), model.config_json(), jax.tree.map(np.asarray, params))
  return directory


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  """tests.tiny_models' pico PaLI (16 px, sentencepiece vocabulary, prompts of 12 tokens, answers of 6), untrained."""
  from tests import scene_data  # pylint: disable=import-outside-toplevel
  from vlm import model as model_lib, ul2  # pylint: disable=import-outside-toplevel
  model = model_lib.PaLIModel(vit=vit_lib.config("pico/4", image_size=SIZE, pool_type="none"),
                              ul2=ul2.config("pico", vocab_size=scene_data.vocab_size()), max_decode_len=6,
                              vocabulary=scene_data.vocabulary(), prompt_length=12)
  batch = scene_data.Batches("vqa_synthetic", {"inputs": 12, "targets": 6}, size=SIZE).batch(0, 2)
  return _untrained(tmp_path_factory.mktemp("pali"), model, batch)


@pytest.fixture(scope="module")
def siglip_checkpoint(tmp_path_factory):
  """tests/test_eval.py's pico SigLIP (sentencepiece vocabulary, texts of 16 tokens), untrained."""
  from encoders import siglip, text as text_lib  # pylint: disable=import-outside-toplevel
  from tests import scene_data  # pylint: disable=import-outside-toplevel
  model = siglip.SigLIPModel(image=vit_lib.config("pico/4", image_size=SIZE),
                             text=text_lib.config("pico", vocab_size=scene_data.vocab_size(), max_len=16))
  batch = scene_data.Batches("webli_pairs_synthetic", {"text": 16}, size=SIZE).batch(0, 2)
  return _untrained(tmp_path_factory.mktemp("siglip"), model, batch)


def _jsonl(path, records):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def write_xm3600(root) -> None:
  """captions.jsonl as Crossmodal-3600 ships it (every language a dict of three parallel lists) and its images."""
  records = []
  for i, key in enumerate(KEYS):
    _image(f"{root}/xm3600/images/{key}.jpg", i)
    records.append({"image/key": key, "image/locale": "en", **{
        lang: {"caption": caps[i], "caption/tokenized": caps[i], "caption/tokenized/lowercase": caps[i]}
        for lang, caps in CAPTIONS.items()}})
  _jsonl(root / "xm3600/captions.jsonl", records)


def write_format_benchmarks(root) -> None:
  """Two or three examples of each new PaLI benchmark, in its own layout, under the paths eval_transfer.gin names."""
  write_xm3600(root)
  for i in range(3):
    _image(f"{root}/coco/val2014/COCO_val2014_{i:012d}.jpg", i)
    _image(f"{root}/stvqa/train_images/coco-text/s{i}.jpg", i)
    _image(f"{root}/infovqa/images/{i}.jpeg", i)
  _image(f"{root}/coco/train2014/r0.jpg", 0, 40, 64)
  _json(f"{root}/okvqa/OpenEnded_mscoco_val2014_questions.json", {
      "data_subtype": "val2014", "questions": [
          {"image_id": i, "question": "what sport can you use this for?", "question_id": 50 + i} for i in range(3)]})
  _json(f"{root}/okvqa/mscoco_val2014_annotations.json", {"annotations": [
      {"question_id": 50 + i, "image_id": i, "answers": [
          {"answer_id": j + 1, "raw_answer": a, "answer": a, "answer_confidence": "yes"}
          for j, a in enumerate(["racing"] * 6 + ["circle"] * 4)]} for i in range(3)]})
  _json(f"{root}/stvqa/train_task_3.json", {"dataset_name": "ST-VQA", "dataset_version": "1.0", "data": [
      {"dataset": "coco-text", "file_name": f"s{i}.jpg", "file_path": f"coco-text/s{i}.jpg", "set_name": "train",
       "question": "what is written on the sign?", "answers": ["stop", "stop sign"], "question_id": 70 + i}
      for i in range(3)]})
  _json(f"{root}/infovqa/infographicsVQA_val_v1.0_withQT.json", {"dataset_name": "infographicVQA", "data": [
      {"questionId": 90 + i, "question": "what percentage is red?", "image_local_name": f"{i}.jpeg",
       "image_url": f"https://example.org/{i}.jpeg", "ocr_output_file": f"{i}.json", "answers": ["42%", "42"],
       "data_split": "val"} for i in range(3)]})
  _json(f"{root}/refcoco+/refcoco+_val.json", [
      {"file_name": "r0.jpg", "bbox": [8, 4, 20, 16], "sentences": [{"sent": "red circle"}, "circle"]}])
  _json(f"{root}/refcocog/refcocog_val.json", [
      {"file_name": "r0.jpg", "bbox": [0, 0, 24, 24], "sentences": ["the red circle at the top left of the image"]}])


def _xm3600_by_hand(predictions, references, language):
  """vlm.metrics.cider, zh / th text split into characters first (every character of these captions is one)."""
  if language in ("zh", "th"):
    predictions = [metrics.segment_characters(p) for p in predictions]
    references = [[metrics.segment_characters(r) for r in refs] for refs in references]
  return metrics.cider(predictions, references)


SCORERS = {  # task -> how a human scores the json's predictions with vlm.metrics
    "okvqa": lambda p, r: {"vqa_accuracy": metrics.vqa_accuracy(p, r)},
    "stvqa": lambda p, r: {"anls": metrics.anls(p, r)},
    "infovqa": lambda p, r: {"anls": metrics.anls(p, r)},
}


def test_new_pali_tasks_end_to_end_score_as_vlm_metrics(checkpoint, tmp_path):
  write_format_benchmarks(tmp_path)
  out = tmp_path / "out"
  result = run_eval(f"--gin.CHECKPOINT_PATH='{checkpoint}'", f"--gin.DATA_DIR='{tmp_path}'",
                    f"--gin.OUTPUT_DIR='{out}'", f"--gin.EVAL_TASKS={NEW_PALI_TASKS}", "--gin.BATCH_SIZE=4")
  assert result.returncode == 0, result.stderr
  reports = {task: json.loads((out / f"{task}.json").read_text()) for task in NEW_PALI_TASKS}
  assert {t: r["num_examples"] for t, r in reports.items()} == {
      "xm3600": 9, "okvqa": 3, "stvqa": 3, "infovqa": 3, "refcoco_plus": 2, "refcocog": 1}
  for task, scorer in SCORERS.items():
    rows = reports[task]["examples"]
    assert reports[task]["metrics"] == pytest.approx(scorer([r["prediction"] for r in rows],
                                                            [r["references"] for r in rows]))
  # XM3600: every language of the file, one example an (image, language), scored language by language.
  rows = reports["xm3600"]["examples"]
  assert [r["prompt"] for r in rows] == [f"caption {lang}" for lang in ("en", "th", "zh") for _ in KEYS]
  assert [r["id"] for r in rows[:3]] == [f"{key}/en" for key in KEYS]
  assert [r["references"] for r in rows[6:]] == CAPTIONS["zh"]
  expected = {}
  for lang in ("en", "th", "zh"):
    mine = [r for r in rows if r["prompt"] == f"caption {lang}"]
    expected[f"cider_{lang}"] = _xm3600_by_hand([r["prediction"] for r in mine], [r["references"] for r in mine],
                                                lang)
  expected["cider_mean"] = np.mean(list(expected.values()))
  assert reports["xm3600"]["metrics"] == pytest.approx(expected)
  assert [r["prompt"] for r in reports["refcoco_plus"]["examples"]] == ["refexp red circle", "refexp circle"]
  for task in ("refcoco_plus", "refcocog"):
    assert set(reports[task]["metrics"]) == {"refexp_accuracy", "refexp_centre_baseline"}
  assert reports["stvqa"]["examples"][0]["image"] == str(tmp_path / "stvqa/train_images/coco-text/s0.jpg")
  assert reports["infovqa"]["examples"][2]["image"] == str(tmp_path / "infovqa/images/2.jpeg")


def test_xm3600_reads_the_languages_asked_in_their_order(tmp_path):
  write_xm3600(tmp_path)
  examples = benchmark_files.xm3600(str(tmp_path / "xm3600/captions.jsonl"), str(tmp_path / "xm3600/images"),
                                    ["zh", "en"])
  assert [ex["id"] for ex in examples] == [f"{key}/{lang}" for lang in ("zh", "en") for key in KEYS]
  assert examples[1] == {"id": "2c3d/zh", "image": str(tmp_path / "xm3600/images/2c3d.jpg"),
                         "references": CAPTIONS["zh"][1], "language": "zh"}


def test_segment_characters_splits_only_unspaced_scripts():
  assert metrics.segment_characters("两只猫 on TV 4k").split() == ["两", "只", "猫", "on", "TV", "4k"]
  assert metrics.segment_characters("กับ").split() == ["กั", "บ"]  # the vowel sign stays with its consonant
  assert metrics.segment_characters("カ\u3099ラス").split() == ["カ\u3099", "ラ", "ス"]  # and the voicing mark
  assert metrics.segment_characters("a red circle") == "a red circle"


def test_xm3600_cider_counts_characters_where_words_have_no_spaces():
  predictions = ["一个红色的圆形", "两个蓝色方块", "绿色的三角形"]
  references = [[r] for r in ("一个红色的圆", "两个蓝色的正方形", "一个绿色的小三角形")]
  assert metrics.cider(predictions, references) == 0  # unsegmented, each caption is one token that never matches
  segmented = transfer_tasks.xm3600_cider(predictions, references, "zh")
  assert segmented > 0 and segmented == pytest.approx(metrics.cider(
      [" ".join(p) for p in predictions], [[" ".join(r) for r in refs] for refs in references]))
  assert transfer_tasks.xm3600_cider(predictions, references, "en") == 0  # other languages: PTB words


def test_xm3600_unknown_language_is_one_line(tmp_path):
  """Named before any model loads (vlm.eval prints a ValueError as its one `error:` line)."""
  write_xm3600(tmp_path)
  with pytest.raises(ValueError, match=r"captions.jsonl has no captions in language 'xx'; its languages are en, th, "
                     "zh$") as error:
    benchmark_files.xm3600(str(tmp_path / "xm3600/captions.jsonl"), str(tmp_path / "xm3600/images"), ["en", "xx"])
  assert "\n" not in str(error.value)
  with pytest.raises(ValueError, match=r"xm3600 languages must be a list of language codes"):
    transfer_tasks.xm3600(str(tmp_path), "xm3600/captions.jsonl", "xm3600/images", languages=[])


@pytest.mark.parametrize("line, message", [
    ({"image/locale": "en", "en": {"caption": ["a"]}}, r"captions.jsonl: line 2 has no 'image/key' field"),
    ({"image/key": "ff", "zh": {"caption": ["a"]}}, r"captions.jsonl: line 2 has no 'en' field"),
    ({"image/key": "ff", "en": {"caption/tokenized": ["a"]}}, r"captions.jsonl: line 2 'en' has no 'caption' field"),
    ({"image/key": "ff", "en": {"caption": []}}, r"captions.jsonl: example ff \(en\) has an empty references list"),
])
def test_bad_xm3600_line_is_named(tmp_path, line, message):
  _jsonl(tmp_path / "captions.jsonl", [{"image/key": "aa", "en": {"caption": ["a"]}}, line])
  with pytest.raises(ValueError, match=message) as error:
    benchmark_files.xm3600(str(tmp_path / "captions.jsonl"), str(tmp_path), ["en"])
  assert "\n" not in str(error.value)


def test_xm3600_file_without_languages_is_named(tmp_path):
  _jsonl(tmp_path / "captions.jsonl", [{"image/key": "aa", "image/locale": "en"}])
  with pytest.raises(ValueError, match=r"captions.jsonl: line 1 names no language \(expected one JSON object an "):
    benchmark_files.xm3600(str(tmp_path / "captions.jsonl"), str(tmp_path))


@pytest.mark.parametrize("task, record, message", [
    ("stvqa", {"question": "q", "answers": ["a"], "file_name": "s0.jpg"}, r"train_task_3.json: data\[0\] has no "
     r"'file_path' field"),
    ("infovqa", {"question": "q", "answers": ["a"], "image": "0.jpeg"}, r"withQT.json: data\[0\] has no "
     r"'image_local_name' field"),
    ("infovqa", {"question": "q", "image_local_name": "0.jpeg"}, r"data\[0\] has no 'answers' field"),
])
def test_bad_anls_record_is_named(tmp_path, task, record, message):
  files = {"stvqa": "stvqa/train_task_3.json", "infovqa": "infovqa/infographicsVQA_val_v1.0_withQT.json"}
  _json(f"{tmp_path}/{files[task]}", {"data": [record]})
  with pytest.raises(ValueError, match=message):
    transfer_tasks.TASKS[task](str(tmp_path), files[task], "images")


def test_okvqa_file_without_questions_is_named(tmp_path):
  _json(f"{tmp_path}/q.json", {"data_subtype": "val2014", "question": []})
  _json(f"{tmp_path}/a.json", {"annotations": []})
  with pytest.raises(ValueError, match=r"q.json' has no 'questions' list"):
    transfer_tasks.okvqa(str(tmp_path), "q.json", "a.json", "images")


# ---------------------------------------------------------------------------------------------- SigLIP tasks


def write_fewshot(root) -> None:
  """Train folders of 3 images a class (one class the test set lacks) and a test folder of two classes."""
  index = 0
  for split, names in (("train", ["red_circle", "blue_square", "green_triangle"]),
                       ("test", ["red_circle", "blue_square"])):
    for name in names:
      for _ in range(3 if split == "train" else 2):
        _image(f"{root}/fewshot/{split}/{name}/{index}.png", index)
        index += 1


@pytest.fixture
def gin_bindings():
  """Binds gin parameters for one test, as the gin file and flags would, and clears them after it."""
  yield lambda *lines: gin.parse_config(list(lines))
  gin.clear_config()


def _probe_by_hand(train, train_labels, test, test_labels, l2):
  mean, std = train.mean(0), train.std(0) + 1e-5
  return metrics.linear_probe((train - mean) / std, train_labels, (test - mean) / std, test_labels, l2)


def test_siglip_xm3600_retrieval_and_fewshot(siglip_checkpoint, tmp_path, gin_bindings):
  write_xm3600(tmp_path)
  write_fewshot(tmp_path)
  gin_bindings("vlm.transfer_tasks.xm3600_retrieval.captions = 'xm3600/captions.jsonl'",
               "vlm.transfer_tasks.xm3600_retrieval.images = 'xm3600/images'",
               "vlm.transfer_tasks.xm3600_retrieval.languages = ['zh', 'en']",
               "vlm.transfer_tasks.fewshot.train_images = 'fewshot/train'",
               "vlm.transfer_tasks.fewshot.test_images = 'fewshot/test'",
               "vlm.transfer_tasks.fewshot.shots = [1, 3]", "vlm.transfer_tasks.fewshot.draws = 2")
  results, out = transfer_eval.evaluate(str(siglip_checkpoint), ["xm3600_retrieval", "fewshot"], str(tmp_path),
                                        str(tmp_path / "out"), batch_size=4, tokenizer="sentencepiece", progress=False)
  results = {r["task"]: r for r in results}
  assert json.loads((tmp_path / "out/fewshot.json").read_text())["metrics"] == results["fewshot"]["metrics"]
  # By hand: the same encoder, images and texts, through vlm.metrics.
  images, texts = siglip_by_hand(siglip_checkpoint)
  pictures = images([tmp_path / f"xm3600/images/{key}.jpg" for key in KEYS])
  expected = {}
  for lang in ("zh", "en"):
    captions = [c for caps in CAPTIONS[lang] for c in caps]
    owners = [i for i, caps in enumerate(CAPTIONS[lang]) for _ in caps]
    expected.update({f"{k}_{lang}": v for k, v in
                     metrics.retrieval_multi_caption(pictures, texts(captions), owners).items()})
  for k in ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10"):
    expected[f"{k}_mean"] = (expected[f"{k}_zh"] + expected[f"{k}_en"]) / 2
  assert results["xm3600_retrieval"]["metrics"] == pytest.approx(expected)
  # Few-shot: the draws big_vision makes (seed d, one permutation a class), the train shots standardised.
  classes = ["blue_square", "green_triangle", "red_circle"]  # image_folder's (sorted) order
  train = {c: sorted((tmp_path / f"fewshot/train/{c}").iterdir(), key=lambda p: p.name) for c in classes}
  test_paths = [p for c in ("blue_square", "red_circle") for p in sorted((tmp_path / f"fewshot/test/{c}").iterdir())]
  test_x, test_y = images(test_paths), np.array([0, 0, 2, 2])
  for k in (1, 3):
    accuracies = []
    for seed in range(2):
      rng = np.random.default_rng(seed)
      chosen = [(c, i) for c in range(3) for i in rng.permutation(3)[:k]]
      accuracies.append(_probe_by_hand(images([train[classes[c]][i] for c, i in chosen]),
                                       np.array([c for c, _ in chosen]), test_x, test_y, 2.0**10))
    assert results["fewshot"]["metrics"][f"fewshot_{k}shot"] == pytest.approx(np.mean(accuracies), abs=1e-6)
  assert results["fewshot"]["num_examples"] == 9 + 4  # every train image is drawn at 3 shots
  # Few-shot alone embeds no text: it runs without a TOKENIZER.
  alone, _ = transfer_eval.evaluate(str(siglip_checkpoint), ["fewshot"], str(tmp_path), str(tmp_path / "alone"),
                                    batch_size=4, progress=False)
  assert alone[0]["metrics"] == pytest.approx(results["fewshot"]["metrics"])


def test_fewshot_with_too_few_images_or_an_unknown_test_class_is_named(tmp_path):
  write_fewshot(tmp_path)
  with pytest.raises(ValueError, match=r"class 'blue square' of .*fewshot/train has 3 image\(s\), fewer than the 5 "
                     r"shots asked; lower fewshot.shots"):
    transfer_tasks.fewshot(str(tmp_path), "fewshot/train", "fewshot/test", shots=[1, 5])
  _image(f"{tmp_path}/fewshot/test/yellow_star/0.png", 0)
  with pytest.raises(ValueError, match=r"test class 'yellow star' of .*fewshot/test has no folder in .*fewshot/train"):
    transfer_tasks.fewshot(str(tmp_path), "fewshot/train", "fewshot/test", shots=[1])
