"""`python -m vlm.infer` on a tiny PaLI checkpoint the test trains: answers, jsonl batches, one-line errors."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from encoders import vit as vit_lib
from tasks import scene_pali, scene_tasks
from vlm import model as model_lib, optim, partitioning, trainer, ul2

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 16


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  directory = tmp_path_factory.mktemp("pali")
  model = model_lib.PaLIModel(vit=vit_lib.config("pico/4", image_size=SIZE, pool_type="none"),
                              ul2=ul2.config("pico", vocab_size=scene_pali.vocab_size()), max_decode_len=6,
                              vocabulary=scene_pali.vocabulary(), prompt_length=12)
  trainer.train(model, scene_pali.SceneTaskBatches(SIZE, {"inputs": 12, "targets": 6}, "vqa"),
                model_dir=str(directory), train_steps=3, batch_size=8, optimizer=optim.adamw, learning_rate=1e-3,
                partitioner=partitioning.Partitioner(devices=jax.devices()[:1]), checkpoint_period=3,
                progress=False)
  for i, name in enumerate(("a.png", "b.png")):
    image = scene_tasks.example(0, i, "validation", "caption", 48)["image"]
    Image.fromarray(((image + 1) * 127.5).astype(np.uint8)).save(directory / name)
  return directory


def infer(*args):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  return subprocess.run([sys.executable, "-m", "vlm.infer", *map(str, args)], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)


def test_answers_one_image(checkpoint):
  result = infer("--checkpoint", checkpoint, "--image", checkpoint / "a.png", "--prompt", "answer en is there a circle?")
  assert result.returncode == 0, result.stderr
  answer = result.stdout.strip().splitlines()[0]
  assert set(answer.split()) <= set(scene_pali.vocabulary().words)


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
  result = infer("--checkpoint", checkpoint, "--image", checkpoint / "a.png", *args)
  assert result.returncode == 1 and "Traceback" not in result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and fragment in errors[0], result.stderr


def test_missing_checkpoint_and_image(tmp_path, checkpoint):
  result = infer("--checkpoint", tmp_path, "--image", checkpoint / "a.png", "--prompt", "caption en")
  assert result.returncode == 1 and "not a PaLI training directory" in result.stderr
  result = infer("--checkpoint", checkpoint, "--image", tmp_path / "nope.png", "--prompt", "caption en")
  assert result.returncode == 1 and "does not exist" in result.stderr


def test_truncated_prompt_still_answers(checkpoint):
  result = infer("--checkpoint", checkpoint, "--image", checkpoint / "a.png", "--prompt",
                 "answer en " + "how many " * 10, "--truncate_prompt")
  assert result.returncode == 0 and "cut from" in result.stderr
