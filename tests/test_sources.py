"""Real-format sources (tasks.sources) on tiny files written here: every format read through its seqio Task,
images decoded to size and range, texts and VQA answers checked, and every kind of bad data skipped (or
truncated) with exact counts in tasks.data_health."""

import concurrent.futures
import io
import json
import logging
import os
import re
import subprocess
import sys
import tarfile

import gin
import numpy as np
import pytest
import seqio
import tensorflow as tf
from PIL import Image

from tasks import data_health
from tasks import pipeline
from tasks import sources
from tasks import tfrecords
from tests.cli_errors import assert_one_line_error

SIZE = 8  # the side images are resized to
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


@pytest.fixture(autouse=True)
def fresh_counts():
  data_health.reset()
  yield
  data_health.reset()


def test_counts_stay_exact_when_threads_record_at_once():
  # tf.data records from its own threads, and data_health takes no lock (see its docstring).
  def record(i):
    for _ in range(2000):
      data_health.record("threads", f"reason_{i % 2}")
    data_health.counts()  # readers drain the events while others still record

  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    list(pool.map(record, range(8)))
  assert data_health.counts() == {"threads/reason_0": 8000, "threads/reason_1": 8000}


def encoded(rgb, fmt="JPEG", size=(12, 10)):
  """A solid-colour image of `size` (width, height), encoded."""
  buffer = io.BytesIO()
  Image.new("RGB", size, rgb).save(buffer, fmt)
  return buffer.getvalue()


def write_image(folder, name, rgb, fmt="JPEG"):
  path = os.path.join(folder, name)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(encoded(rgb, fmt))
  return path


BAD_JPEG = encoded(RED)[:60]  # cut short: not decodable


def read(name, split="train", sequence_length=None):
  """Every example of a registered task's split, in source order, as numpy values (texts as str)."""
  task = seqio.get_mixture_or_task(name)
  ds = task.get_dataset(sequence_length, split=split, shuffle=False)

  def as_python(value):
    if isinstance(value, bytes):
      return value.decode()
    if isinstance(value, np.ndarray) and value.dtype == object:
      return [v.decode() for v in value]
    return value

  return [{k: as_python(v) for k, v in ex.items()} for ex in ds.as_numpy_iterator()]


def colour_of(image):
  """The RGB colour (0..255) of an image given in [-1, 1], checking range, shape and uniformity."""
  assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.float32
  assert image.min() >= -1 - 1e-6 and image.max() <= 1 + 1e-6  # the antialiased resize rounds a hair over
  mean = image.reshape(-1, 3).mean(0)
  assert np.abs(image - mean).max() < 0.1
  return tuple(round(float(c)) for c in (mean + 1) * 127.5)


def assert_colour(image, rgb):
  assert np.allclose(colour_of(image), rgb, atol=12), (colour_of(image), rgb)


def texts(examples, key):
  return [ex[key] for ex in examples]


# ----------------------------------------------------------------------------------------------------------------
# WebDataset
# ----------------------------------------------------------------------------------------------------------------


def write_tar(path, members, mode="w"):
  """A tar of (name, bytes) members, in order ("w:gz" mode: compressed)."""
  with tarfile.open(path, mode) as tar:
    for name, data in members:
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))


def test_webdataset_reads_samples_and_counts_bad_ones(tmp_path):
  write_tar(tmp_path / "shard-000.tar", [
      ("000.jpg", encoded(RED)), ("000.txt", b" a red square "),
      ("dir/001.png", encoded(GREEN, "PNG")), ("dir/001.txt", b"a green square"), ("dir/001.cls", b"7"),
      ("002.txt", b"a caption without its image"),                    # missing_image
      ("003.jpg", BAD_JPEG), ("003.txt", b"a broken image"),          # undecodable_image
      ("004.jpg", encoded(BLUE)),                                     # missing_caption
      ("../005.jpg", encoded(BLUE)), ("/abs/006.txt", b"outside"),    # unsafe_path x2
      ("007.jpg", encoded(BLUE)), ("007.txt", b"\xff\xfe not utf-8"), # bad_record
      ("008.cls", b"3"),                                              # missing_image
  ])
  # A second shard cut off in the middle of its second image: the first sample survives.
  write_tar(tmp_path / "shard-001.tar", [("100.jpg", encoded(BLUE)), ("100.txt", b"a blue square"),
                                         ("101.jpg", encoded(RED)), ("101.txt", b"lost")])
  with tarfile.open(tmp_path / "shard-001.tar") as tar:
    cut = tar.getmember("101.jpg").offset_data + 100
  (tmp_path / "shard-001.tar").write_bytes((tmp_path / "shard-001.tar").read_bytes()[:cut])
  sources.register_webdataset("wds_test", {"train": str(tmp_path / "shard-*.tar")}, image_size=SIZE)

  examples = read("wds_test")
  assert texts(examples, "id") == ["000", "dir/001", "100"]
  assert texts(examples, "targets_pretokenized") == ["a red square", "a green square", "a blue square"]
  assert texts(examples, "inputs_pretokenized") == ["caption en"] * 3
  assert texts(examples, "captions") == [["a red square"], ["a green square"], ["a blue square"]]
  for ex, rgb in zip(examples, (RED, GREEN, BLUE)):
    assert_colour(ex["image"], rgb)
    assert ex["targets"][-1] == 1  # EOS
  assert data_health.counts() == {"wds_test/bad_record": 1, "wds_test/corrupt_file": 1,
                                  "wds_test/missing_caption": 1, "wds_test/missing_image": 2,
                                  "wds_test/undecodable_image": 1, "wds_test/unsafe_path": 2}
  # Shuffled (before decoding: the task has no buffer of its own), the same examples in a seeded order.
  task = seqio.get_mixture_or_task("wds_test")
  shuffled = [[ex["id"] for ex in task.get_dataset(None, shuffle=True, seed=1).as_numpy_iterator()]
              for _ in range(2)]
  assert sorted(shuffled[0]) == [b"000", b"100", b"dir/001"] and shuffled[0] == shuffled[1]


def test_webdataset_json_captions_and_a_shard_cut_at_a_member_boundary(tmp_path):
  members = [("a.jpg", encoded(RED)), ("a.json", json.dumps({"caption": "red", "url": "x"}).encode()),
             ("b.jpg", encoded(GREEN)), ("b.json", b"{not json"),
             ("c.jpg", encoded(BLUE)), ("c.json", b"[1, 2]")]
  write_tar(tmp_path / "whole.tar", members)
  write_tar(tmp_path / "cut.tar", members[:2])
  with tarfile.open(tmp_path / "cut.tar") as tar:
    end = tar.getmembers()[-1].offset_data + 512  # the json member's one data block; no end-of-archive marker
  (tmp_path / "cut.tar").write_bytes((tmp_path / "cut.tar").read_bytes()[:end])
  sources.register_webdataset("wds_json", {"train": str(tmp_path / "whole.tar"),
                                           "validation": str(tmp_path / "cut.tar")},
                              caption_field="caption", image_size=SIZE)

  assert texts(read("wds_json"), "targets_pretokenized") == ["red"]
  assert data_health.counts() == {"wds_json/bad_record": 2}
  assert texts(read("wds_json", "validation"), "targets_pretokenized") == ["red"]
  assert data_health.counts() == {"wds_json/bad_record": 2, "wds_json/corrupt_file": 1}


def test_webdataset_compressed_shards(tmp_path):
  members = [("a.jpg", encoded(RED)), ("a.txt", b"red"), ("b.jpg", encoded(GREEN)), ("b.txt", b"green")]
  write_tar(tmp_path / "whole.tar.gz", members, "w:gz")
  data = (tmp_path / "whole.tar.gz").read_bytes()
  (tmp_path / "cut.tar.gz").write_bytes(data[:len(data) // 2])
  sources.register_webdataset("wds_gz", {"train": str(tmp_path / "whole.tar.gz"),
                                         "validation": str(tmp_path / "cut.tar.gz")}, image_size=SIZE)
  assert texts(read("wds_gz"), "targets_pretokenized") == ["red", "green"]
  assert data_health.counts() == {}
  read("wds_gz", "validation")
  assert data_health.counts() == {"wds_gz/corrupt_file": 1}


# ----------------------------------------------------------------------------------------------------------------
# TFRecord
# ----------------------------------------------------------------------------------------------------------------


def tf_example(features):
  """A serialised tf.train.Example: str / bytes / list values as bytes lists, ints as int64 lists."""
  def feature(value):
    if isinstance(value, int):
      return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
    values = value if isinstance(value, list) else [value]
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v if isinstance(v, bytes) else v.encode()
                                                                 for v in values]))
  return tf.train.Example(features=tf.train.Features(
      feature={k: feature(v) for k, v in features.items()})).SerializeToString()


def write_tfrecord(path, records):
  with tf.io.TFRecordWriter(str(path)) as writer:
    for record in records:
      writer.write(record)


def test_tfrecord_captions(tmp_path):
  write_tfrecord(tmp_path / "a.tfrecord", [
      tf_example({"image/encoded": encoded(RED), "text": ["a red thing", "something red"], "key": "r1"}),
      tf_example({"image/encoded": encoded(GREEN), "key": "g1"}),                # missing_caption
      tf_example({"text": "no image", "key": "n1"}),                             # missing_image
      tf_example({"image/encoded": encoded(BLUE), "text": 5, "key": "b1"}),      # bad_record (not bytes)
      b"\x0a\xff\xff",                                                            # bad_record (not a proto)
      tf_example({"image/encoded": BAD_JPEG, "text": "broken", "key": "x1"}),    # undecodable_image
  ])
  # Two files of three records, one cut inside the third record's header, one inside its data: each keeps two.
  blue = tf_example({"image/encoded": encoded(BLUE), "text": "blue"})
  for name, keep in (("b", 2 * (len(blue) + 16) + 5), ("c", 3 * (len(blue) + 16) - 10)):
    write_tfrecord(tmp_path / f"{name}.tfrecord", [blue] * 3)
    (tmp_path / f"{name}.tfrecord").write_bytes((tmp_path / f"{name}.tfrecord").read_bytes()[:keep])
  sources.register_tfrecord("tfr_caption", {"train": str(tmp_path / "*.tfrecord")}, caption_key="text",
                            id_key="key", image_size=SIZE)

  examples = read("tfr_caption")
  assert texts(examples, "id") == ["r1"] + [f"{tmp_path}/{name}.tfrecord:{i}" for name in "bc" for i in range(2)]
  assert texts(examples, "targets_pretokenized") == ["a red thing"] + ["blue"] * 4
  assert examples[0]["captions"] == ["a red thing", "something red"]
  for ex, rgb in zip(examples, (RED,) + (BLUE,) * 4):
    assert_colour(ex["image"], rgb)
  assert data_health.counts() == {"tfr_caption/bad_record": 2, "tfr_caption/corrupt_file": 2,
                                  "tfr_caption/missing_caption": 1, "tfr_caption/missing_image": 1,
                                  "tfr_caption/undecodable_image": 1}


def test_tfrecord_records_after_a_corrupt_one_are_recovered(tmp_path):
  """A record whose data fails its CRC is skipped and the next one read; a damaged length is resynchronised on
  the next offset whose length CRC verifies; each loss is counted."""
  frames = [bytearray(tfrecords.frame(tf_example({"image/encoded": encoded(RED), "caption": f"c{i}"})))
            for i in range(6)]
  frames[1][20] ^= 0xFF  # inside the data: the length still verifies
  frames[3][2] ^= 0xFF  # inside the length: the framing is lost until record 4
  (tmp_path / "a.tfrecord").write_bytes(b"".join(frames))
  sources.register_tfrecord("tfr_recover", {"validation": str(tmp_path / "a.tfrecord")}, image_size=SIZE)
  assert texts(read("tfr_recover", "validation"), "targets_pretokenized") == ["c0", "c2", "c4", "c5"]
  assert data_health.counts() == {"tfr_recover/bad_record": 1, "tfr_recover/corrupt_file": 1}


def test_tfrecord_vqa(tmp_path):
  write_tfrecord(tmp_path / "vqa.tfrecord", [
      tf_example({"image/encoded": encoded(RED, "PNG"), "question": "what colour?",
                  "answers": ["red", "dark red", "red"]}),
      tf_example({"image/encoded": encoded(RED), "answers": ["red"]}),     # missing_question
      tf_example({"image/encoded": encoded(RED), "question": "what?"}),    # missing_answers
  ])
  sources.register_tfrecord("tfr_vqa", {"validation": str(tmp_path / "vqa.tfrecord")}, kind="vqa",
                            image_size=SIZE)
  [ex] = read("tfr_vqa", "validation")
  assert ex["inputs_pretokenized"] == "answer en what colour?"
  assert ex["targets_pretokenized"] == "red"
  assert ex["answers"] == ["red", "dark red", "red"]
  assert_colour(ex["image"], RED)
  assert data_health.counts() == {"tfr_vqa/missing_answers": 1, "tfr_vqa/missing_question": 1}


# ----------------------------------------------------------------------------------------------------------------
# jsonl + image folder
# ----------------------------------------------------------------------------------------------------------------


def write_lines(path, lines):
  with open(path, "wb") as f:
    f.write(b"\n".join(line if isinstance(line, bytes) else json.dumps(line).encode() for line in lines) + b"\n")


def test_jsonl_captions_and_vqa(tmp_path):
  images = tmp_path / "images"
  write_image(images, "sub/red.jpg", RED)
  write_image(images, "green.png", GREEN, "PNG")
  (images / "big.jpg").write_bytes(encoded(BLUE, size=(200, 160)))  # decoded at 1/8 scale, then resized
  (images / "broken.jpg").write_bytes(BAD_JPEG)
  (tmp_path / "secret.jpg").write_bytes(encoded(BLUE))
  write_lines(tmp_path / "captions.jsonl", [
      {"image": "sub/red.jpg", "caption": "red", "id": 7},
      {"image": "green.png", "captions": ["green", "a green one"]},
      {"image": "big.jpg", "caption": "blue", "id": "big"},
      b"{this is not json",                                      # bad_record
      b"[1, 2, 3]",                                              # bad_record
      b"",                                                       # blank: not an example
      {"caption": "no image"},                                   # missing_image
      {"image": "absent.jpg", "caption": "file not there"},      # missing_image (when read)
      {"image": "../secret.jpg", "caption": "escapes"},          # unsafe_path
      {"image": "/etc/passwd", "caption": "absolute"},           # unsafe_path
      {"image": "green.png"},                                    # missing_caption
      {"image": "broken.jpg", "caption": "broken"},              # undecodable_image
  ])
  write_lines(tmp_path / "vqa.jsonl", [
      {"image": "sub/red.jpg", "question": "what colour is it?", "answers": ["red", "crimson", "crimson"]},
      {"image": "green.png", "question": "and this one?", "answer": "green"},
      {"image": "green.png", "answers": ["green"]},               # missing_question
  ])
  sources.register_jsonl("jsonl_caption", {"train": str(tmp_path / "captions.jsonl")}, str(images),
                         image_size=SIZE)
  sources.register_jsonl("jsonl_vqa", {"train": str(tmp_path / "vqa.jsonl")}, {"train": str(images)}, kind="vqa",
                         image_size=SIZE)

  captions = read("jsonl_caption")
  assert texts(captions, "id") == ["7", f"{tmp_path}/captions.jsonl:2", "big"]
  assert texts(captions, "targets_pretokenized") == ["red", "green", "blue"]
  assert texts(captions, "captions") == [["red"], ["green", "a green one"], ["blue"]]
  for ex, rgb in zip(captions, (RED, GREEN, BLUE)):
    assert_colour(ex["image"], rgb)
  assert data_health.counts() == {"jsonl_caption/bad_record": 2, "jsonl_caption/missing_caption": 1,
                                  "jsonl_caption/missing_image": 2, "jsonl_caption/undecodable_image": 1,
                                  "jsonl_caption/unsafe_path": 2}

  vqa = read("jsonl_vqa")
  assert texts(vqa, "inputs_pretokenized") == ["answer en what colour is it?", "answer en and this one?"]
  assert texts(vqa, "targets_pretokenized") == ["crimson", "green"]
  assert texts(vqa, "answers") == [["red", "crimson", "crimson"], ["green"]]
  assert data_health.counts()["jsonl_vqa/missing_question"] == 1


def test_images_of_every_mode_keep_their_colours(tmp_path):
  """16-bit grayscale PNGs are scaled from their 16-bit range (PIL's own conversion clips them to white);
  palette, gray + alpha and CMYK images convert to their RGB colours."""
  images = {"gray16.png": Image.fromarray(np.full((10, 12), 30000, np.uint16)),
            "palette.png": Image.new("RGB", (12, 10), GREEN).convert("P"),
            "la.png": Image.new("LA", (12, 10), (200, 128)),
            "cmyk.jpg": Image.new("CMYK", (12, 10), (0, 255, 255, 0))}
  for name, image in images.items():
    image.save(tmp_path / name)
  write_lines(tmp_path / "a.jsonl", [{"image": name, "caption": name} for name in images])
  sources.register_jsonl("jsonl_modes", {"validation": str(tmp_path / "a.jsonl")}, str(tmp_path), image_size=SIZE)
  colours = {ex["targets_pretokenized"]: colour_of(ex["image"]) for ex in read("jsonl_modes", "validation")}
  gray = round(30000 / 65535 * 255)
  expected = {"gray16.png": (gray,) * 3, "palette.png": GREEN, "la.png": (200,) * 3, "cmyk.jpg": RED}
  for name, rgb in expected.items():
    assert np.allclose(colours[name], rgb, atol=3), (name, colours[name], rgb)


def test_jsonl_images_linked_to_outside_their_folder_are_refused(tmp_path):
  images = tmp_path / "images"
  write_image(images, "red.jpg", RED)
  write_image(tmp_path, "secret.jpg", BLUE)
  (images / "inside.jpg").symlink_to(images / "red.jpg")
  (images / "outside.jpg").symlink_to(tmp_path / "secret.jpg")
  (images / "sub").symlink_to(tmp_path)  # a linked folder climbs out as well
  names = ["red.jpg", "inside.jpg", "outside.jpg", "sub/secret.jpg"]
  write_lines(tmp_path / "a.jsonl", [{"image": name, "caption": name} for name in names])
  sources.register_jsonl("jsonl_links", {"validation": str(tmp_path / "a.jsonl")}, str(images), image_size=SIZE)
  assert texts(read("jsonl_links", "validation"), "targets_pretokenized") == ["red.jpg", "inside.jpg"]
  assert data_health.counts() == {"jsonl_links/unsafe_path": 2}


def test_read_time_faults_count_every_read_parse_time_faults_once(tmp_path):
  write_image(tmp_path, "ok.jpg", RED)
  write_lines(tmp_path / "a.jsonl", [{"image": "ok.jpg", "caption": "red"}, {"image": "gone.jpg", "caption": "x"},
                                     b"{bad"])
  sources.register_jsonl("jsonl_twice", {"train": str(tmp_path / "a.jsonl")}, str(tmp_path), image_size=SIZE)
  assert len(read("jsonl_twice")) == 1
  assert len(read("jsonl_twice")) == 1
  assert data_health.counts() == {"jsonl_twice/bad_record": 1, "jsonl_twice/missing_image": 2}


# ----------------------------------------------------------------------------------------------------------------
# COCO captions
# ----------------------------------------------------------------------------------------------------------------


def write_json(path, obj):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(obj, f)
  return str(path)


def coco_files(root):
  """COCO-layout captions files for train, val and test, and their images."""
  for name, rgb in (("train2017/000000000001.jpg", RED), ("train2017/000000000002.jpg", GREEN),
                    ("val2017/000000000009.jpg", BLUE), ("test2017/000000000011.jpg", RED)):
    write_image(root, name, rgb)
  train = write_json(root / "annotations/captions_train2017.json", {
      "images": [{"id": 1, "file_name": "000000000001.jpg"}, {"id": 2, "file_name": "000000000002.jpg"},
                 {"id": 3, "file_name": "000000000003.jpg"}, {"file_name": "no_id.jpg"}],
      "annotations": [{"image_id": 1, "id": 10, "caption": "A red square."},
                      {"image_id": 2, "id": 11, "caption": "Green."},
                      {"image_id": 1, "id": 12, "caption": "Something red. "},
                      {"image_id": 3, "id": 13, "caption": "Image 3 is missing on disk."},
                      {"image_id": 4, "id": 14, "caption": "Image 4 is not listed."},
                      {"image_id": 2, "id": 15}]})
  val = write_json(root / "annotations/captions_val2017.json", {
      "images": [{"id": 9, "file_name": "000000000009.jpg"}],
      "annotations": [{"image_id": 9, "caption": c} for c in ("blue", "a blue one", "navy")]})
  test = write_json(root / "annotations/image_info_test2017.json",
                    {"images": [{"id": 11, "file_name": "000000000011.jpg"}]})
  return train, val, test


def test_coco_captions(tmp_path):
  train, val, test = coco_files(tmp_path)
  sources.register_coco_captions(
      "coco_test", {"train": train, "validation": val, "test": test},
      {"train": str(tmp_path / "train2017"), "validation": str(tmp_path / "val2017"),
       "test": str(tmp_path / "test2017")}, image_size=SIZE)

  examples = read("coco_test")  # one per (image, caption)
  assert texts(examples, "id") == ["1", "1", "2"]
  assert texts(examples, "targets_pretokenized") == ["A red square.", "Something red.", "Green."]
  assert texts(examples, "captions") == [["A red square.", "Something red."]] * 2 + [["Green."]]
  for ex, rgb in zip(examples, (RED, RED, GREEN)):
    assert_colour(ex["image"], rgb)
  assert data_health.counts() == {"coco_test/bad_record": 1, "coco_test/missing_caption": 1,
                                  "coco_test/missing_image": 2}  # image 3's file, image 4's caption

  [ex] = read("coco_test", "validation")  # one per image, every caption a reference
  assert ex["targets_pretokenized"] == "blue" and ex["captions"] == ["blue", "a blue one", "navy"]
  [ex] = read("coco_test", "test")
  assert ex["id"] == "11" and ex["targets_pretokenized"] == "" and ex["captions"] == []
  assert_colour(ex["image"], RED)


def test_coco_training_split_needs_captions(tmp_path):
  _, _, test = coco_files(tmp_path)
  sources.register_coco_captions("coco_no_captions", {"train": test}, str(tmp_path / "test2017"))
  with pytest.raises(ValueError, match="has no 'annotations' list"):
    read("coco_no_captions")
  sources.register_coco_captions("coco_no_file", {"train": str(tmp_path / "absent.json")}, str(tmp_path))
  with pytest.raises(FileNotFoundError, match="absent.json"):
    read("coco_no_file")


# ----------------------------------------------------------------------------------------------------------------
# VQAv2
# ----------------------------------------------------------------------------------------------------------------


def vqa_answers(*answers):
  return [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(answers)]


TEN = ["2", "2", "two", "2", "3", "2", "2", "2", "two", "2"]


def vqav2_files(root, images, subtype):
  """VQAv2's questions and annotations files of `subtype` (val2014, ...) under root, their images under
  images/<subtype>; returns the two paths."""
  write_image(images, f"{subtype}/COCO_{subtype}_000000000042.jpg", RED)
  write_image(images, f"{subtype}/COCO_{subtype}_000000000007.jpg", GREEN)
  questions = write_json(root / f"v2_OpenEnded_mscoco_{subtype}_questions.json", {
      "data_subtype": subtype, "task_type": "Open-Ended", "questions": [
          {"image_id": 42, "question": "How many squares?", "question_id": 420},
          {"image_id": 42, "question": "Is it red?", "question_id": 421},
          {"image_id": 7, "question": "What colour?", "question_id": 70},
          {"image_id": 7, "question": "Unanswered?", "question_id": 71},      # missing_answers
          {"image_id": 8, "question": "No image file?", "question_id": 80},   # missing_image (when read)
          {"image_id": "x", "question": "Bad id?", "question_id": 81},        # missing_image (not a number)
          {"image_id": 7, "question": "No question id?"}]})                  # bad_record
  annotations = write_json(root / f"v2_mscoco_{subtype}_annotations.json", {"annotations": [
      {"question_id": 420, "image_id": 42, "multiple_choice_answer": "2", "answers": vqa_answers(*TEN)},
      {"question_id": 421, "image_id": 42, "answers": vqa_answers(*["yes"] * 9 + ["no"])},
      {"question_id": 70, "image_id": 7, "multiple_choice_answer": "green",
       "answers": vqa_answers(*["green"] * 4 + ["light green"] * 6)},
      {"question_id": 80, "image_id": 8, "answers": vqa_answers("yes")},
      {"question_id": 81, "image_id": "x", "answers": vqa_answers("yes")}]})
  return questions, annotations


def test_vqav2(tmp_path):
  questions, annotations = vqav2_files(tmp_path, tmp_path, "val2014")
  write_image(tmp_path, "test2015/COCO_test2015_000000000005.jpg", BLUE)
  test = write_json(tmp_path / "v2_OpenEnded_mscoco_test2015_questions.json", {
      "data_subtype": "test2015", "questions": [{"image_id": 5, "question": "What is this?", "question_id": 50}]})
  sources.register_vqav2("vqav2_test", {"validation": questions, "test": test}, {"validation": annotations},
                         {"validation": str(tmp_path / "val2014"), "test": str(tmp_path / "test2015")},
                         image_size=SIZE)
  examples = read("vqav2_test", "validation")
  assert texts(examples, "id") == ["420", "421", "70"]
  assert texts(examples, "inputs_pretokenized") == ["answer en How many squares?", "answer en Is it red?",
                                                    "answer en What colour?"]
  # The target is the multiple_choice_answer where given (even against the majority), else the most frequent.
  assert texts(examples, "targets_pretokenized") == ["2", "yes", "green"]
  assert texts(examples, "answers") == [TEN, ["yes"] * 9 + ["no"], ["green"] * 4 + ["light green"] * 6]
  for ex, rgb in zip(examples, (RED, RED, GREEN)):
    assert_colour(ex["image"], rgb)
  assert data_health.counts() == {"vqav2_test/bad_record": 1, "vqav2_test/missing_answers": 1,
                                  "vqav2_test/missing_image": 2}

  [ex] = read("vqav2_test", "test")
  assert ex["id"] == "50" and ex["targets_pretokenized"] == "" and ex["answers"] == []
  assert_colour(ex["image"], BLUE)


def test_vqav2_training_split_needs_annotations(tmp_path):
  with pytest.raises(ValueError, match="train need an annotations file"):
    sources.register_vqav2("vqav2_bad", {"train": "q.json"}, {}, str(tmp_path))


# ----------------------------------------------------------------------------------------------------------------
# TextVQA / DocVQA json
# ----------------------------------------------------------------------------------------------------------------


def test_textvqa_and_docvqa_json(tmp_path):
  write_image(tmp_path / "train_images", "0054c91397f2fe05.jpg", RED)
  write_image(tmp_path / "docvqa", "documents/ffbf0023_4.png", GREEN, "PNG")
  textvqa = write_json(tmp_path / "TextVQA_0.5.1_train.json", {"dataset_name": "textvqa", "data": [
      {"question": "what brand is this?", "image_id": "0054c91397f2fe05", "question_id": 0,
       "answers": ["nokia"] * 7 + ["nokia phone"] * 3},
      {"question": "no answers?", "image_id": "0054c91397f2fe05", "question_id": 1},   # missing_answers
      "not a record"]})                                                                 # bad_record
  docvqa = write_json(tmp_path / "docvqa/val_v1.0.json", {"dataset_split": "val", "data": [
      {"questionId": 8366, "question": "What is the date?", "image": "documents/ffbf0023_4.png", "docId": 4,
       "answers": ["1/8/93", "january 8, 1993"]},
      {"questionId": 8367, "question": "Nothing?", "image": "documents/absent.png", "answers": ["x"]}]})
  docvqa_test = write_json(tmp_path / "docvqa/test_v1.0.json", {"data": [
      {"questionId": 9000, "question": "What is the total?", "image": "documents/ffbf0023_4.png"}]})
  sources.register_vqa_json("textvqa_test", {"train": textvqa}, str(tmp_path / "train_images"), image_size=SIZE)
  sources.register_vqa_json("docvqa_test", {"validation": docvqa, "test": docvqa_test}, str(tmp_path / "docvqa"),
                            image_size=SIZE)

  [ex] = read("textvqa_test")
  assert (ex["id"], ex["inputs_pretokenized"], ex["targets_pretokenized"]) == (
      "0", "answer en what brand is this?", "nokia")
  assert ex["answers"] == ["nokia"] * 7 + ["nokia phone"] * 3
  assert_colour(ex["image"], RED)
  [ex] = read("docvqa_test", "validation")
  assert (ex["id"], ex["targets_pretokenized"], ex["answers"]) == ("8366", "1/8/93", ["1/8/93", "january 8, 1993"])
  assert_colour(ex["image"], GREEN)
  [ex] = read("docvqa_test", "test")
  assert (ex["id"], ex["targets_pretokenized"], ex["answers"]) == ("9000", "", [])
  assert data_health.counts() == {"docvqa_test/missing_image": 1, "textvqa_test/bad_record": 1,
                                  "textvqa_test/missing_answers": 1}


# ----------------------------------------------------------------------------------------------------------------
# Over-long texts, sharding, shuffling
# ----------------------------------------------------------------------------------------------------------------


def test_overlong_texts_are_truncated_and_counted(tmp_path):
  write_image(tmp_path, "a.jpg", RED)
  long_caption = " ".join(["a red square on a white background"] * 6)
  write_lines(tmp_path / "a.jsonl", [{"image": "a.jpg", "caption": long_caption},
                                     {"image": "a.jpg", "caption": "red"}])
  sources.register_jsonl("jsonl_long", {"train": str(tmp_path / "a.jsonl")}, str(tmp_path), image_size=SIZE)
  long, short = read("jsonl_long", sequence_length={"inputs": 16, "targets": 8})
  assert len(long["targets"]) == 8 and long["targets"][-1] == 1  # cut, still ending in EOS
  assert long["targets_pretokenized"] == long_caption  # the text itself is kept whole
  assert short["targets_pretokenized"] == "red" and len(short["targets"]) < 8
  assert data_health.counts() == {"jsonl_long/targets_truncated": 1}
  read("jsonl_long")  # no lengths: nothing is cut, nothing counted
  assert data_health.counts() == {"jsonl_long/targets_truncated": 1}


def test_annotated_images_shard_and_shuffle_by_example(tmp_path):
  write_image(tmp_path, "a.jpg", RED)
  write_lines(tmp_path / "a.jsonl", [{"image": "a.jpg", "caption": f"c{i}"} for i in range(10)])
  sources.register_jsonl("jsonl_shards", {"train": str(tmp_path / "a.jsonl")}, str(tmp_path), image_size=SIZE)
  source = seqio.get_mixture_or_task("jsonl_shards").source

  def captions(**kwargs):
    return [ex["caption"].decode() for ex in source.get_dataset("train", **kwargs).as_numpy_iterator()]

  shards = [captions(shuffle=False, shard_info=seqio.ShardInfo(i, 3)) for i in range(3)]
  assert [len(shard) for shard in shards] == [4, 3, 3]
  assert sorted(c for shard in shards for c in shard) == sorted(f"c{i}" for i in range(10))
  shuffled = captions(shuffle=True, seed=3)
  assert sorted(shuffled) == sorted(captions(shuffle=False)) and shuffled == captions(shuffle=True, seed=3)


def test_pipeline_reads_annotated_images_by_index_in_shuffled_epochs(tmp_path):
  """tasks.pipeline's index path: each epoch of "train" is a permutation of the examples, epochs differ, and a
  fresh pipeline asked for step N gives the batch an uninterrupted run gave."""
  for i in range(5):
    write_image(tmp_path, f"{i}.jpg", (50 * i, 0, 0))
  write_lines(tmp_path / "a.jsonl", [{"image": f"{i}.jpg", "caption": f"c{i}"} for i in range(5)])
  sources.register_jsonl("jsonl_indexed", {"train": str(tmp_path / "a.jsonl")}, str(tmp_path), image_size=SIZE)
  lengths = {"inputs": 8, "targets": 8}
  batches = pipeline.SeqioBatches("jsonl_indexed", lengths)
  run = [batches.batch(step, 2) for step in range(5)]
  order = [round(colour_of(image)[0] / 50) for batch in run for image in batch["image"]]
  assert sorted(order[:5]) == sorted(order[5:]) == list(range(5)) and order[:5] != order[5:]
  resumed = pipeline.SeqioBatches("jsonl_indexed", lengths).batch(3, 2)
  assert all(np.array_equal(resumed[k], run[3][k]) for k in run[3])


def assert_resumes_exactly(name, steps=6, batch_size=3):
  """A fresh pipeline asked for step N gives the batch an uninterrupted run gave at step N, for every N."""
  lengths = {"inputs": 8, "targets": 8}
  batches = pipeline.SeqioBatches(name, lengths)
  run = [batches.batch(step, batch_size) for step in range(steps)]
  for step in range(1, steps):
    resumed = pipeline.SeqioBatches(name, lengths)
    batch = resumed.batch(step, batch_size)
    resumed.close()
    assert all(np.array_equal(batch[k], run[step][k]) for k in run[step]), step
  return run


def test_rows_after_an_unusable_image_do_not_shift_on_resume(tmp_path):
  """A row whose image is missing or undecodable takes the next usable example of the stream, so row g stays a
  function of (seed, g): a resumed run reads the same rows as an uninterrupted one."""
  for i in range(6):
    write_image(tmp_path, f"{i}.jpg", (40 * i, 0, 0))
  (tmp_path / "bad.jpg").write_bytes(BAD_JPEG)
  lines = [{"image": f"{i}.jpg", "caption": f"c{i}"} for i in range(6)]
  lines += [{"image": "bad.jpg", "caption": "bad"}, {"image": "gone.jpg", "caption": "gone"}]
  write_lines(tmp_path / "a.jsonl", lines)
  sources.register_jsonl("jsonl_dirty", {"train": str(tmp_path / "a.jsonl")}, str(tmp_path), image_size=SIZE)
  assert_resumes_exactly("jsonl_dirty")
  counts = data_health.counts()
  assert counts["jsonl_dirty/undecodable_image"] >= 1 and counts["jsonl_dirty/missing_image"] >= 1


def test_a_sharded_stream_with_bad_records_resumes_exactly(tmp_path):
  """Sharded sources (tar, TFRecord) stream: row g is the g-th usable example of the seeded stream, the same
  after a restart."""
  records = [tf_example({"image/encoded": encoded((30 * i, 0, 0)), "caption": f"c{i}"}) for i in range(8)]
  records[2] = tf_example({"image/encoded": BAD_JPEG, "caption": "bad"})
  records[5] = b"\x0a\xff\xff"
  write_tfrecord(tmp_path / "a.tfrecord", records[:4])
  write_tfrecord(tmp_path / "b.tfrecord", records[4:])
  sources.register_tfrecord("tfr_dirty", {"train": str(tmp_path / "*.tfrecord")}, image_size=SIZE)
  assert_resumes_exactly("tfr_dirty", steps=4)


def first_batch_error(name):
  batches = pipeline.SeqioBatches(name, {"inputs": 8, "targets": 8})
  with pytest.raises((ValueError, RuntimeError)) as raised:
    batches.batch(0, 2)
  assert "\n" not in str(raised.value) and not batches._streams  # one line, and the pipeline shut down
  return str(raised.value)


def test_a_source_with_no_usable_example_ends_in_one_line(tmp_path):
  write_tfrecord(tmp_path / "bad.tfrecord", [b"\x0a\xff\xff"] * 3)
  sources.register_tfrecord("tfr_none", {"train": str(tmp_path / "bad.tfrecord")}, image_size=SIZE)
  assert re.fullmatch(r"'tfr_none' has no usable example in its 'train' split: every record was skipped "
                      r"\(tfr_none/bad_record: \d+\)", first_batch_error("tfr_none"))
  write_tfrecord(tmp_path / "empty.tfrecord", [])
  sources.register_tfrecord("tfr_empty", {"train": str(tmp_path / "empty.tfrecord")}, image_size=SIZE)
  assert first_batch_error("tfr_empty").endswith("'train' split: its files hold no examples")
  (tmp_path / "bad.jpg").write_bytes(BAD_JPEG)
  write_lines(tmp_path / "a.jsonl", [{"image": "bad.jpg", "caption": "c"}] * 2)
  sources.register_jsonl("jsonl_none", {"train": str(tmp_path / "a.jsonl")}, str(tmp_path), image_size=SIZE)
  assert "ValueError: jsonl_none: no image of the train split can be read and decoded" in first_batch_error(
      "jsonl_none")


def test_a_worker_error_ends_the_command_in_one_line_without_hanging(tmp_path):
  """A tf.data worker's error reaches the main process as one line, and the process exits: a pipeline left
  running while the interpreter shuts down would hang it."""
  (tmp_path / "bad.jpg").write_bytes(BAD_JPEG)
  write_lines(tmp_path / "a.jsonl", [{"image": "bad.jpg", "caption": "c"}] * 4)
  script = ("import sys; from tasks import show, sources; "
            f"sources.register_jsonl('jsonl_fails', {{'train': '{tmp_path / 'a.jsonl'}'}}, '{tmp_path}', "
            "image_size=32); show.main(sys.argv[1:])")
  result = subprocess.run([sys.executable, "-c", script, "--task", "jsonl_fails", "--image_size", "32", "--out",
                           str(tmp_path / "grid.png")], capture_output=True, text=True, timeout=300)
  assert_one_line_error(result, "'jsonl_fails' (train): the input pipeline failed",
                        "no image of the train split can be read and decoded")


# ----------------------------------------------------------------------------------------------------------------
# Registration and gin
# ----------------------------------------------------------------------------------------------------------------


def test_registration_is_idempotent_and_never_takes_another_modules_name(tmp_path):
  shards = {"train": str(tmp_path / "*.tar")}
  assert sources.register_webdataset("wds_again", shards) == "wds_again"
  task = seqio.get_mixture_or_task("wds_again")
  assert sources.register_webdataset("wds_again", shards) == "wds_again"
  assert seqio.get_mixture_or_task("wds_again") is task  # same arguments: kept
  sources.register_webdataset("wds_again", shards, image_size=16)
  assert seqio.get_mixture_or_task("wds_again") is not task  # new arguments: replaced
  with pytest.raises(FileNotFoundError, match=r"no file matches .*\*\.tar"):
    read("wds_again")
  seqio.TaskRegistry.add("someone_elses", source=task.source, output_features=task.output_features)
  try:
    with pytest.raises(ValueError, match="already registered by another module"):
      sources.register_webdataset("someone_elses", shards)
  finally:
    seqio.TaskRegistry.remove("someone_elses")


def docstring_gin():
  """The gin blocks of tasks.sources' docstring (its lines indented by two, from `import tasks.sources` on)."""
  doc = sources.__doc__
  lines = doc[doc.index("  import tasks.sources"):doc.index("An `images` folder")].splitlines()
  return "\n".join(line[2:] for line in lines if line.startswith("  "))


def test_docstring_gin_registers_and_selects(tmp_path):
  """The module docstring's gin lines, verbatim but for the data root and VQAv2's image size, register their
  tasks; MIXTURE_OR_TASK_NAME names VQAv2's, which reads the files."""
  for subtype in ("train2014", "val2014"):
    vqav2_files(tmp_path / "vqa", tmp_path / "coco", subtype)
  config = docstring_gin().replace("/data/", f"{tmp_path}/").replace("image_size = 224", f"image_size = {SIZE}")

  @gin.configurable("test_sources.select")
  def select(mixture_or_task_name):
    return mixture_or_task_name

  try:
    gin.parse_config(config + "\ntest_sources.select.mixture_or_task_name = %MIXTURE_OR_TASK_NAME")
    assert select() == "vqav2" and select() == "vqav2"  # evaluated at each use; registering again is a no-op
    registered = [sources.register_coco_captions(), sources.register_webdataset(), sources.register_tfrecord(),
                  sources.register_jsonl(), sources.register_vqa_json()]
  finally:
    gin.clear_config()
  assert registered == ["coco_captions", "web_captions", "tfrecord_vqa", "jsonl_captions", "docvqa"]
  for name, source_class in zip(registered, [sources.AnnotatedImages, sources.ShardedFiles, sources.ShardedFiles,
                                             sources.AnnotatedImages, sources.AnnotatedImages]):
    assert isinstance(seqio.get_mixture_or_task(name).source, source_class)
  for split in ("train", "validation"):
    assert texts(read("vqav2", split), "targets_pretokenized") == ["2", "yes", "green"]


# ----------------------------------------------------------------------------------------------------------------
# data_health
# ----------------------------------------------------------------------------------------------------------------


def test_data_health_counts_and_warns_once(caplog):
  with caplog.at_level(logging.WARNING, logger="tasks.data_health"):
    data_health.record("src", "undecodable_image", "a.jpg")
    data_health.record("src", "undecodable_image", "b.jpg")
    data_health.record("src", "missing_image", n=3)
  assert data_health.counts() == {"src/missing_image": 3, "src/undecodable_image": 2}
  lines = [r.getMessage() for r in caplog.records if r.name == "tasks.data_health"]
  assert len(lines) == 2 and "src (undecodable_image): a.jpg" in lines[0]
  data_health.reset()
  assert data_health.counts() == {}
