"""`python -m vlm.infer` on a tiny PaLI checkpoint the test trains: answers, jsonl batches, one-line errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tasks import scene_tasks
from tests import scene_data, tiny_models
from tests.cli_errors import assert_one_line_error, run_main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = tiny_models.PALI_IMAGE_SIZE


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  directory = tmp_path_factory.mktemp("pali")
  # 150 steps (about as quick as 3: compiling dominates): over the 7,168-piece vocabulary, 3 steps leave the
  # decoder emitting stray pieces that never reach EOS (the score test needs answers that end) and ~10 to 40 end
  # nearly every answer at once, empty (the CLI tests read an answer line); by 150 it answers in the VQA
  # answers' words ("yes", "1") and ends them.
  tiny_models.train_pali(str(directory), train_steps=150)
  for i, name in enumerate(("a.png", "b.png")):
    image = scene_tasks.example(0, i, "validation", "caption", 48)["image"]
    Image.fromarray(((image + 1) * 127.5).astype(np.uint8)).save(directory / name)
  return directory


def infer(*args):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  return subprocess.run([sys.executable, "-m", "vlm.infer", *map(str, args)], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)


def infer_here(*args):
  """vlm.infer's outcome run in this process (cli_errors.run_main): the tests of what it refuses and of its
  options. The answers as a user gets them, from `python -m vlm.infer`, are checked by the tests that call infer."""
  return run_main("vlm.infer", *args)


def test_answers_one_image(checkpoint):
  from vlm import pali
  prompt = "answer en is there a circle?"
  result = infer("--checkpoint", checkpoint, "--image", checkpoint / "a.png", "--prompt", prompt)
  assert result.returncode == 0, result.stderr
  answer = result.stdout.strip().splitlines()[0]
  # The line is text of the vocabulary the run recorded (the shipped sentencepiece one), decoded from the model's
  # ids: the same answer vlm.pali decodes from the image, and pieces of that vocabulary that read back to it.
  model = pali.load(checkpoint)
  vocabulary = model.model.vocabulary
  assert vocabulary.to_json() == scene_data.vocabulary().to_json()
  assert model.generate(scene_images(1), [prompt]) == [answer]
  ids = vocabulary.encode(answer)
  assert ids and vocabulary.decode(ids) == answer, answer


def test_jsonl_batch_matches_single_requests(checkpoint):
  requests = checkpoint / "requests.jsonl"
  prompts = ["answer en how many objects are there?", "caption en", "detect circle"]
  requests.write_text("".join(json.dumps({"image": name, "prompt": p}) + "\n"
                              for name in ("a.png", "b.png") for p in prompts))
  out = checkpoint / "answers.jsonl"
  result = infer("--checkpoint", checkpoint, "--input", requests, "--output", out, "--batch_size", 4,
                 "--draw", checkpoint / "drawn")
  assert result.returncode == 0, result.stderr
  answers = [json.loads(line) for line in out.read_text().splitlines()]
  assert [a["prompt"] for a in answers] == prompts * 2 and all("answer" in a for a in answers)
  assert len(os.listdir(checkpoint / "drawn")) == 6
  single = infer("--checkpoint", checkpoint, "--image", checkpoint / "b.png", "--prompt", "caption en")
  assert single.stdout.strip().splitlines()[0] == answers[4]["answer"]


@pytest.mark.parametrize("args, fragment", [
    (("--prompt", ""), "prompt is empty"),
    (("--prompt", "caption en", "--method", "nucleus"), "unknown decoding method 'nucleus'"),
    (("--prompt", "answer en " + "how many " * 10), "pass --truncate_prompt"),
    (("--prompt", "caption en", "--resize", "none"), "pass --resize squash or --resize pad"),
])
def test_bad_input_is_one_clear_line(checkpoint, args, fragment):
  result = infer_here("--checkpoint", checkpoint, "--image", checkpoint / "a.png", *args)
  assert result.returncode == 1 and "Traceback" not in result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and fragment in errors[0], result.stderr


def test_missing_checkpoint_and_image(tmp_path, checkpoint):
  result = infer_here("--checkpoint", tmp_path, "--image", checkpoint / "a.png", "--prompt", "caption en")
  assert result.returncode == 1 and "not a PaLI training directory" in result.stderr
  result = infer_here("--checkpoint", checkpoint, "--image", tmp_path / "nope.png", "--prompt", "caption en")
  assert result.returncode == 1 and "does not exist" in result.stderr


def test_truncated_prompt_still_answers(checkpoint):
  result = infer_here("--checkpoint", checkpoint, "--image", checkpoint / "a.png", "--prompt",
                      "answer en " + "how many " * 10, "--truncate_prompt")
  assert result.returncode == 0 and "cut from" in result.stderr


# ------------------------------------------------------------------- vlm.pali: the same model from Python

def scene_images(n: int, size: int = 48) -> np.ndarray:
  return np.stack([((scene_tasks.example(0, i, "validation", "caption", size)["image"] + 1) * 127.5).astype(np.uint8)
                   for i in range(n)])


def test_pali_generate_matches_the_cli(checkpoint):
  from vlm import pali
  model = pali.load(checkpoint)
  images = scene_images(2)
  answers = model.generate(images, ["caption en", "answer en how many objects are there?"])
  assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
  cli = infer("--checkpoint", checkpoint, "--image", checkpoint / "a.png", "--prompt", "caption en")
  assert cli.stdout.strip().splitlines()[0] == answers[0]
  # A list of images of different sizes (and a grey one) is fitted to the model as a batch is.
  mixed = model.generate([images[0], images[1][:30], images[1][..., 0]], ["caption en"] * 3, batch_size=2)
  assert mixed[0] == answers[0] and len(mixed) == 3


def test_pali_score_is_the_decoders_log_likelihood(checkpoint):
  """score(prompt, greedy answer) is the sum of the greedy steps' log-probabilities, EOS included."""
  from vlm import decoding, pali
  model = pali.load(checkpoint)
  images, prompts = scene_images(3), ["answer en how many objects are there?", "answer en is there a circle?",
                                       "answer en what color is the circle?"]
  batch = {**model.image_features(images), "encoder_input_tokens": model.tokenize(prompts)}
  result = decoding.jit(model.model.predict_batch)(model.params, batch)
  ended = (np.asarray(result.tokens) == model.model.config.ul2.eos_id).any(axis=1)  # others lack their EOS
  assert ended.sum() >= 2
  answers = [model.model.detokenize(row) for row in np.asarray(result.tokens)]
  np.testing.assert_allclose(model.score(images, prompts, answers)[ended], np.asarray(result.scores)[ended],
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("call, fragment", [
    (lambda m, im: m.generate(im, ["caption en"]), "2 images but 1 prompts"),
    (lambda m, im: m.generate(im.astype(np.float32), ["caption en"] * 2), "images are uint8"),
    (lambda m, im: m.generate(im, ["caption en", 3]), "must be a string"),
    (lambda m, im: m.generate(im, ["caption en"] * 2, max_new_tokens=0), "max_new_tokens must be an integer >= 1"),
    (lambda m, im: m.generate(im, ["caption en"] * 2, method="nucleus"), "unknown decoding method"),
    (lambda m, im: m.generate(im, ["caption en"] * 2, method="beam", beams=3), "has no option 'beams'"),
    (lambda m, im: m.generate(im[:, :8], ["caption en"] * 2, resize="none"), "pass --resize squash"),
    (lambda m, im: m.score(im, ["caption en"] * 2, ["a"]), "one target per prompt"),
])
def test_pali_bad_input_is_one_value_error(checkpoint, call, fragment):
  from vlm import pali
  with pytest.raises(ValueError, match=None) as error:
    call(pali.load(checkpoint), scene_images(2))
  assert fragment in str(error.value) and "\n" not in str(error.value)


# ------------------------------------------------------------------- vlm.infer: inputs checked, work kept

def test_a_16_bit_png_reads_as_its_8_bit_twin(checkpoint, tmp_path):
  grey = scene_images(1)[0][..., 0]
  Image.fromarray(grey).save(tmp_path / "grey8.png")
  Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "grey16.png")
  assert Image.open(tmp_path / "grey16.png").mode.startswith("I;16")
  from vlm import infer as infer_lib
  np.testing.assert_array_equal(infer_lib.read_image(str(tmp_path / "grey16.png")),
                                infer_lib.read_image(str(tmp_path / "grey8.png")))
  answers = [infer_here("--checkpoint", checkpoint, "--image", tmp_path / name, "--prompt", "caption en").stdout
             for name in ("grey8.png", "grey16.png")]
  assert answers[0] == answers[1] and answers[0].strip()


def _png_header_only(path, width, height):
  """A PNG whose header claims width x height (no pixel data): what a decompression bomb looks like."""
  import struct
  import zlib
  ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
  chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data  # noqa: E731
                              + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
  path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


@pytest.mark.parametrize("args, fragment", [
    (("--batch_size", 0), "--batch_size must be >= 1"),
    (("--batch_size", -2), "--batch_size must be >= 1"),
    (("--max_decode_len", 0), "--max_decode_len must be >= 1"),
    (("--max_decode_len", -1), "--max_decode_len must be >= 1"),
    (("--output", "/nonexistent_dir/answers.jsonl"), "directory /nonexistent_dir does not exist"),
    (("--draw", "__FILE__"), "is a file"),
])
def test_bad_numbers_and_destinations_are_refused_before_decoding(checkpoint, args, fragment):
  args = [str(checkpoint / "a.png") if a == "__FILE__" else a for a in args]
  result = infer_here("--checkpoint", checkpoint, "--image", checkpoint / "a.png", "--prompt", "caption en", *args)
  assert_one_line_error(result, fragment)


def test_bad_requests_are_one_line(checkpoint, tmp_path):
  _png_header_only(tmp_path / "bomb.png", 30000, 30000)
  bomb = infer_here("--checkpoint", checkpoint, "--image", tmp_path / "bomb.png", "--prompt", "caption en")
  assert_one_line_error(bomb, "bomb.png", "too large to decode safely")
  for request, fragment in (({"image": "a.png", "prompt": ["caption en"]}, "'prompt' must be a string"),
                            ({"image": 7, "prompt": "caption en"}, "'image' must be a string")):
    (tmp_path / "r.jsonl").write_text(json.dumps(request) + "\n")
    assert_one_line_error(infer_here("--checkpoint", checkpoint, "--input", tmp_path / "r.jsonl"), fragment)


def test_answers_written_before_a_failure_are_kept(checkpoint, tmp_path):
  """Each batch's answers reach --output as they are decoded: a bad image later on loses nothing before it."""
  (tmp_path / "a.png").write_bytes((checkpoint / "a.png").read_bytes())
  (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
  requests = tmp_path / "r.jsonl"
  requests.write_text("".join(json.dumps({"image": name, "prompt": "caption en"}) + "\n"
                              for name in ("a.png", "a.png", "broken.png")))
  out = tmp_path / "answers.jsonl"
  result = infer_here("--checkpoint", checkpoint, "--input", requests, "--output", out, "--batch_size", 2)
  assert_one_line_error(result, "broken.png", "cannot be decoded")
  assert [json.loads(line)["prompt"] for line in out.read_text().splitlines()] == ["caption en"] * 2


@pytest.mark.parametrize("method", ["squash", "pad"])
@pytest.mark.parametrize("height, width", [(30, 48), (48, 20), (9, 11), (16, 16)])
def test_inference_fits_images_as_training_does(method, height, width):
  """vlm.pali's TF-free fit equals the training pipeline's resize_image, and 'pad' boxes map back to pixels."""
  import tensorflow as tf
  from tasks import locations, preprocessors
  from vlm import pali
  image = np.random.default_rng(height).integers(0, 256, (height, width, 3), dtype=np.uint8)
  box = np.array([[0.1, 0.2, 0.7, 0.9]], np.float32)  # y0, x0, y1, x1 as fractions of the image
  data = tf.data.Dataset.from_tensors({"image": tf.constant(image), "bbox": tf.constant(box)})
  trained = next(iter(preprocessors.resize_image(preprocessors.normalize_image(data), image_size=SIZE,
                                                 method=method).as_numpy_iterator()))
  np.testing.assert_allclose(pali.fit_square(image, SIZE, method), trained["image"], atol=1e-5)
  answer = locations.box_to_tokens(tuple(trained["bbox"][0]), 1, 1)  # the target training would teach
  expected = box[0] * [height, width, height, width]
  got = pali.boxes_in_pixels(answer, height, width, SIZE, method)
  np.testing.assert_allclose(got[0], expected, atol=max(height, width) / 1024 * SIZE / min(height, width) + 0.05)


def test_a_bad_command_line_is_one_line():
  assert_one_line_error(infer_here(), "--checkpoint", "python -m vlm.infer --help")
  assert_one_line_error(infer_here("--checkpoint", "x", "--prompt", "ocr"), "--image", "--input")
