"""The fault probe: the command lines and the Python API tried on well over 100 bad inputs and faults, as a careful
new user would try them, each outcome classified.

  python -m tests.fault_probe [--work DIR] [-k SUBSTRING] [--jobs N]

A case passes when the program does what the README promises for that input: a refusal is exit status 1 with
exactly one `error: ...` line on stderr (an API call: one exception of a documented kind whose message is one
line), no traceback, no object repr, within its time limit, leaving behind no half-written file; an accepted
input finishes with exit status 0 and the result the case checks. Everything else is reported as TRACEBACK,
HANG, SILENT (accepted what should be refused, or a wrong result), UNCLEAR (refused, but not in one line that
names the fault), FAILED (refused what should work) LEFTOVER (a refused run left files behind) or LOST (work or data a user had is gone).

Not collected by pytest (the name does not start with test_): it trains two tiny models and runs ~130 processes,
10-20 minutes on 2 CPU cores. The README's reliability section says what it covers; tests/ holds the
regression test of each finding it made.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from typing import Callable

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIGLIP_RUN = "gin_configs/runs/siglip_tiny_synthetic.gin"
PALI_RUN = "gin_configs/runs/pali_tiny_stage1.gin"
TINY = ["--gin.BATCH_SIZE=8", "--gin.TRAIN_STEPS=4", "--gin.CHECKPOINT_PERIOD=2",
        "--gin.vlm.trainer.train.evaluator=None", "--gin.vlm.trainer.train.progress=False"]
API_ERRORS = ("ValueError", "CheckpointError", "FileNotFoundError", "NotADirectoryError", "IsADirectoryError",
              "PermissionError", "OSError", "TypeError")


@dataclasses.dataclass
class Case:
  name: str
  argv: list[str]                      # a command (python -m ...), or ["API", code] for a Python snippet
  expect: str = "error"                # "error": refused in one line; "ok": accepted
  fragments: tuple[str, ...] = ()      # what the error line must name
  # An extra check on the result: None, or what is wrong ('LOST: ...' to name the verdict).
  check: Callable[[subprocess.CompletedProcess], str | None] | None = None
  timeout: int = 240
  cwd: str | None = None


@dataclasses.dataclass
class Outcome:
  case: Case
  verdict: str
  detail: str
  seconds: float


def environment() -> dict[str, str]:
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(JAX_PLATFORMS="cpu", PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""))
  return env


def run_case(case: Case) -> Outcome:
  start = time.time()
  if case.argv[0] == "API":
    argv = [sys.executable, "-c", _API_WRAPPER.format(code=case.argv[1])]
  else:
    argv = [sys.executable, "-m", *case.argv]
  try:
    result = subprocess.run(argv, cwd=case.cwd or REPO, env=environment(), capture_output=True, text=True,
                            timeout=case.timeout)
  except subprocess.TimeoutExpired:
    return Outcome(case, "HANG", f"no exit after {case.timeout} s", time.time() - start)
  return Outcome(case, *_judge(case, result), time.time() - start)


# A snippet's exception is printed as one `API-ERROR <type>: <message>` line: the probe judges the type and message.
_API_WRAPPER = """
import sys
try:
{code}
except Exception as e:
  message = str(e)
  print(f"API-ERROR {{type(e).__name__}}: {{message}}", file=sys.stderr)
  sys.exit(3 if "\\n" in message.strip() else 2)
"""


def _judge(case: Case, result: subprocess.CompletedProcess) -> tuple[str, str]:
  stderr = result.stderr
  last = (stderr.strip().splitlines() or [""])[-1][:300]
  if "Traceback (most recent call last)" in stderr:
    return "TRACEBACK", last
  if case.argv[0] == "API":
    errors = [l for l in stderr.splitlines() if l.startswith("API-ERROR ")]
    if case.expect == "error":
      if not errors:
        return "SILENT", f"no exception (exit {result.returncode})"
      kind = errors[0].split()[1].rstrip(":")
      if kind not in API_ERRORS or result.returncode == 3 or " object at 0x" in errors[0]:
        return "UNCLEAR", errors[0][:300]
      return _fragments(case, errors[0])  # (API snippets write no files to leave behind)
    if errors or result.returncode:
      return "FAILED", (errors[0] if errors else last)[:300]
  elif case.expect == "error":
    lines = [l for l in stderr.splitlines() if l.startswith("error:")]
    if result.returncode == 0:
      return "SILENT", "exit 0"
    if result.returncode != 1 or len(lines) != 1 or " object at 0x" in lines[0]:
      return "UNCLEAR", f"exit {result.returncode}, {len(lines)} error lines; {last}"
    verdict = _fragments(case, lines[0])
    problem = case.check(result) if case.check and verdict[0] == "ok" else None
    return _verdict(problem, "LEFTOVER") if problem else verdict
  elif result.returncode:
    return "FAILED", f"exit {result.returncode}: {last}"
  problem = case.check(result) if case.check else None
  return _verdict(problem, "SILENT") if problem else ("ok", "")


def _verdict(problem: str, default: str) -> tuple[str, str]:
  """A check's problem 'LOST: detail' names its verdict; a plain 'detail' gets the default one."""
  head, _, detail = problem.partition(": ")
  return (head, detail) if head.isupper() and head.isalpha() else (default, problem)


def _fragments(case: Case, line: str) -> tuple[str, str]:
  missing = [f for f in case.fragments if f not in line]
  if missing:
    return "UNCLEAR", f"does not name {missing}: {line[:300]}"
  return "ok", line[:200]


# ------------------------------------------------------------------------------------------- fixtures

def png_header_only(path: str, width: int, height: int) -> None:
  """A PNG that claims width x height and holds no pixels (what a decompression bomb's header looks like)."""
  def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
  with open(path, "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IEND", b""))


def build_fixtures(work: str) -> dict[str, str]:
  """Two tiny trained models and a folder of good and bad files; returns their paths by name."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  paths = {k: os.path.join(work, k) for k in ("siglip", "pali", "files")}
  os.makedirs(paths["files"], exist_ok=True)
  for name, run, extra in (("siglip", SIGLIP_RUN, []),
                           ("pali", PALI_RUN, [f"--gin.SIGLIP_CHECKPOINT='{paths['siglip']}'"])):
    if not os.path.isdir(os.path.join(paths[name], "checkpoints")):
      result = subprocess.run([sys.executable, "-m", "vlm.train", f"--gin_file={run}", *TINY,
                               f"--gin.MODEL_DIR='{paths[name]}'", *extra], cwd=REPO, env=environment(),
                              capture_output=True, text=True, timeout=900)
      if result.returncode:
        sys.exit(f"fault probe: could not train the {name} fixture:\n{result.stderr[-2000:]}")
  files = paths["files"]
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
  Image.fromarray(rgb).save(os.path.join(files, "a.png"))
  Image.fromarray(rgb).save(os.path.join(files, "a.jpg"))
  Image.fromarray(rgb[..., 0]).save(os.path.join(files, "grey8.png"))
  Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(os.path.join(files, "grey16.png"))
  Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])).save(os.path.join(files, "rgba.png"))
  Image.fromarray(rgb).convert("CMYK").save(os.path.join(files, "cmyk.jpg"))
  Image.fromarray(rgb[:1, :1]).save(os.path.join(files, "one_pixel.png"))
  Image.fromarray(np.zeros((1, 400, 3), np.uint8)).save(os.path.join(files, "strip.png"))
  data = open(os.path.join(files, "a.png"), "rb").read()
  open(os.path.join(files, "truncated.png"), "wb").write(data[:len(data) // 2])
  open(os.path.join(files, "empty.png"), "wb").close()
  open(os.path.join(files, "text.png"), "w").write("not an image\n")
  png_header_only(os.path.join(files, "bomb.png"), 30000, 30000)
  os.makedirs(os.path.join(files, "a_dir.png"), exist_ok=True)
  _write(files, "requests.jsonl", "".join(json.dumps({"image": "a.png", "prompt": p}) + "\n"
                                          for p in ("caption en", "answer en what is it?", "detect circle")))
  _write(files, "not_json.jsonl", "{\"image\": \"a.png\", \"prompt\": \"ocr\"}\nthis is not json\n")
  _write(files, "empty.jsonl", "")
  _write(files, "bad_prompt.jsonl", json.dumps({"image": "a.png", "prompt": 7}) + "\n")
  _write(files, "bad_image_field.jsonl", json.dumps({"image": ["a.png"], "prompt": "ocr"}) + "\n")
  _write(files, "no_prompt.jsonl", json.dumps({"image": "a.png"}) + "\n")
  _write(files, "list_line.jsonl", json.dumps(["a.png", "ocr"]) + "\n")
  _write(files, "missing_image.jsonl", json.dumps({"image": "nope.png", "prompt": "ocr"}) + "\n")
  _write(files, "broken_later.jsonl", "".join(json.dumps({"image": name, "prompt": "caption en"}) + "\n"
                                              for name in ("a.png", "a.png", "truncated.png")))
  _write(files, "syntax.gin", "vlm.trainer.train.seed = (\n")
  _write(files, "unknown_include.gin", "include 'gin_configs/runs/no_such_file.gin'\n")
  _write(files, "bad_import.gin", "import no_such_module_at_all\n")
  return paths


def _write(directory: str, name: str, text: str) -> None:
  with open(os.path.join(directory, name), "w") as f:
    f.write(text)


def _copy_run(source: str, target: str) -> str:
  shutil.rmtree(target, ignore_errors=True)
  shutil.copytree(source, target)
  return target


def _newest_step_file(model_dir: str) -> str:
  """The largest file of the newest checkpoint step (the one a damaged disk would most likely hit)."""
  steps = os.path.join(model_dir, "checkpoints")
  newest = os.path.join(steps, str(max(int(s) for s in os.listdir(steps) if s.isdigit())))
  files = [os.path.join(root, f) for root, _, names in os.walk(newest) for f in names]
  return max(files, key=os.path.getsize)


def damage(model_dir: str, how: str) -> str:
  """Damages the newest step's largest file: 'truncate', 'flip' (bytes in the middle) or 'delete'."""
  path = _newest_step_file(model_dir)
  if how == "delete":
    os.remove(path)
  elif how == "truncate":
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)
  else:
    with open(path, "r+b") as f:
      f.seek(os.path.getsize(path) // 2)
      chunk = f.read(64)
      f.seek(-len(chunk), os.SEEK_CUR)
      f.write(bytes(b ^ 0xFF for b in chunk))
  return path


# ------------------------------------------------------------------------------------------- the cases

def cases(paths: dict[str, str], work: str) -> list[Case]:
  f = lambda name: os.path.join(paths["files"], name)  # noqa: E731
  siglip, pali = paths["siglip"], paths["pali"]
  fresh = lambda name: os.path.join(work, "fresh", name)  # noqa: E731  a MODEL_DIR that does not exist yet
  out: list[Case] = []

  def left_nothing(directory: str):
    return lambda _: f"left {directory} behind" if os.path.exists(directory) else None

  # --- vlm.train: configuration
  train = lambda *a: ["vlm.train", f"--gin_file={SIGLIP_RUN}", *TINY, *a]  # noqa: E731
  for name, binding, fragment in [
      ("train: TRAIN_STEPS=0", "--gin.TRAIN_STEPS=0", "TRAIN_STEPS"),
      ("train: TRAIN_STEPS=-3", "--gin.TRAIN_STEPS=-3", "TRAIN_STEPS"),
      ("train: BATCH_SIZE=0", "--gin.BATCH_SIZE=0", "BATCH_SIZE"),
      ("train: BATCH_SIZE=-8", "--gin.BATCH_SIZE=-8", "BATCH_SIZE"),
      ("train: BATCH_SIZE float", "--gin.BATCH_SIZE=8.5", "BATCH_SIZE"),
      ("train: CHECKPOINT_PERIOD=0", "--gin.CHECKPOINT_PERIOD=0", "CHECKPOINT_PERIOD"),
      ("train: unknown mixture", "--gin.MIXTURE_OR_TASK_NAME='no_such_task'", "no_such_task"),
      ("train: feature lengths missing key", "--gin.TASK_FEATURE_LENGTHS={'inputs': 8}", "TASK_FEATURE_LENGTHS"),
      ("train: feature length 0", "--gin.TASK_FEATURE_LENGTHS={'text': 0}", "TASK_FEATURE_LENGTHS"),
      ("train: NUM_PARTITIONS=3", "--gin.NUM_PARTITIONS=3", "NUM_PARTITIONS"),
      ("train: NUM_PARTITIONS=0", "--gin.NUM_PARTITIONS=0", "NUM_PARTITIONS"),
      ("train: PARAMETER_PARTITIONING_DIMS=3", "--gin.PARAMETER_PARTITIONING_DIMS=3", "PARAMETER_PARTITIONING_DIMS"),
      ("train: IMAGE_SIZE=0", "--gin.IMAGE_SIZE=0", "IMAGE_SIZE"),
      ("train: IMAGE_SIZE below a patch", "--gin.IMAGE_SIZE=2", "IMAGE_SIZE"),
      ("train: unknown ViT variant", "--gin.encoders.vit.config.variant='Q/4'", "Q/4"),
      ("train: unknown trainer argument", "--gin.vlm.trainer.train.no_such_arg=3", "no_such_arg"),
      ("train: unquoted string", "--gin.MIXTURE_OR_TASK_NAME=scene", "quotes"),
      ("train: learning rate nan", "--gin.vlm.optim.schedule.peak=float('nan')", ""),
      ("train: negative learning rate", "--gin.vlm.optim.schedule.peak=-1.0", "peak"),
      ("train: frozen_params bad regex", "--gin.vlm.trainer.train.frozen_params='img/(['", "frozen_params"),
      ("train: unknown optimizer argument", "--gin.vlm.optim.adamw.no_such=1", "no_such"),
  ]:
    directory = fresh(name.replace(" ", "_").replace(":", ""))
    out.append(Case(name, train(f"--gin.MODEL_DIR='{directory}'", binding),
                    fragments=(fragment,) if fragment else (), check=left_nothing(directory)))
  out += [
      Case("train: no arguments", ["vlm.train"]),
      Case("train: --help", ["vlm.train", "--help"], expect="ok"),
      Case("train: missing gin file", ["vlm.train", "--gin_file=gin_configs/runs/no_such.gin"], fragments=("no_such",)),
      Case("train: gin syntax error", ["vlm.train", f"--gin_file={f('syntax.gin')}"], fragments=("syntax.gin",)),
      Case("train: missing include", ["vlm.train", f"--gin_file={f('unknown_include.gin')}"],
           fragments=("no_such_file.gin",)),
      Case("train: import of a missing module", ["vlm.train", f"--gin_file={f('bad_import.gin')}"],
           fragments=("no_such_module_at_all",)),
      Case("train: binding without value", train("--gin.TRAIN_STEPS")),
      Case("train: unknown configurable", train("--gin.NoSuchThing.x=3"), fragments=("NoSuchThing",)),
      Case("train: MODEL_DIR is a file", train(f"--gin.MODEL_DIR='{f('a.png')}'"), fragments=("a.png",)),
      Case("train: MODEL_DIR unwritable", train("--gin.MODEL_DIR='/proc/probe_run'"), fragments=("/proc/probe_run",)),
      Case("train: run from another directory", ["vlm.train", f"--gin_file={os.path.join(REPO, SIGLIP_RUN)}", *TINY,
                                                  f"--gin.MODEL_DIR='{fresh('other_cwd')}'"], expect="ok",
           cwd=tempfile.gettempdir(), timeout=600),
      Case("train: relative gin path from another directory", ["vlm.train", f"--gin_file={SIGLIP_RUN}", *TINY,
                                                                f"--gin.MODEL_DIR='{fresh('other_cwd_rel')}'"],
           expect="ok", cwd=tempfile.gettempdir(), timeout=600),
      Case("train: bad --coordinator_address", train(f"--gin.MODEL_DIR='{fresh('coord')}'",
                                                     "--coordinator_address=localhost", "--num_processes=2",
                                                     "--process_id=0"), fragments=("coordinator_address",),
           timeout=120),
      Case("train: --process_id out of range", train(f"--gin.MODEL_DIR='{fresh('pid')}'",
                                                     "--coordinator_address=127.0.0.1:1234", "--num_processes=2",
                                                     "--process_id=5"), fragments=("process_id",), timeout=120),
      Case("train: PaLI warm start from a missing SigLIP", ["vlm.train", f"--gin_file={PALI_RUN}", *TINY,
                                                             f"--gin.MODEL_DIR='{fresh('warm_missing')}'",
                                                             "--gin.SIGLIP_CHECKPOINT='/nonexistent/siglip'"],
           fragments=("/nonexistent/siglip",)),
      Case("train: PaLI warm start from a PaLI dir as SigLIP", ["vlm.train", f"--gin_file={PALI_RUN}", *TINY,
                                                                 f"--gin.MODEL_DIR='{fresh('warm_wrong')}'",
                                                                 f"--gin.SIGLIP_CHECKPOINT='{pali}'"],
           fragments=(pali,)),
      Case("train: PaLI IMAGE_SIZE=0", ["vlm.train", f"--gin_file={PALI_RUN}", *TINY, "--gin.IMAGE_SIZE=0",
                                         f"--gin.MODEL_DIR='{fresh('pali_size0')}'",
                                         f"--gin.SIGLIP_CHECKPOINT='{siglip}'"], fragments=("IMAGE_SIZE",),
           timeout=120),
  ]

  # --- vlm.train: checkpoints and resume
  def resumed_from(step: int):
    def check(result):
      said = result.stdout + result.stderr
      return None if f"resuming from step {step}" in said else f"did not resume from step {step}"
    return check
  for how, done in (("truncate", "truncated"), ("flip", "with flipped bytes"), ("delete", "missing a file")):
    directory = _copy_run(siglip, os.path.join(work, f"damaged_{how}"))
    damage(directory, how)
    out.append(Case(f"resume: newest step {done}", train(f"--gin.MODEL_DIR='{directory}'", "--gin.TRAIN_STEPS=6"),
                    expect="ok", check=resumed_from(2), timeout=600))
  # A second run on a MODEL_DIR that a live run holds is refused, naming the holder.
  held = fresh("held")
  second = [sys.executable, "-m", "vlm.train", f"--gin_file={SIGLIP_RUN}", *TINY, f"--gin.MODEL_DIR='{held}'"]
  first = second + ["--gin.TRAIN_STEPS=100000"]  # (the later binding wins)
  out.append(Case("train: a second run on a held MODEL_DIR", ["API", f"""  import os, subprocess, sys, time
  first = subprocess.Popen({first!r}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  while not os.path.exists(os.path.join({held!r}, "run.lock")) and first.poll() is None:
    time.sleep(0.2)
  r = subprocess.run({second!r}, capture_output=True, text=True, timeout=200)
  first.kill()
  lines = [l for l in r.stderr.splitlines() if l.startswith("error:")]
  assert r.returncode == 1 and len(lines) == 1 and "pid" in lines[0], r.stderr[-500:]"""], expect="ok", timeout=400))
  empty_meta = _copy_run(siglip, os.path.join(work, "empty_meta"))
  open(os.path.join(empty_meta, "model_config.json"), "w").close()
  out.append(Case("load: empty model_config.json", ["API", f"  import encoders.siglip as s; s.load({empty_meta!r})"],
                  fragments=("model_config.json",)))
  out.append(Case("load: truncated newest step", ["API", "  import encoders.siglip as s; "
                                                  f"s.load({os.path.join(work, 'damaged_truncate')!r})"],
                  expect="ok"))

  # --- vlm.infer
  infer = lambda *a: ["vlm.infer", f"--checkpoint={pali}", *a]  # noqa: E731
  kept = os.path.join(work, "kept.jsonl")
  one = lambda image, *a: infer(f"--image={image}", "--prompt=caption en", *a)  # noqa: E731
  out += [
      Case("infer: --help", ["vlm.infer", "--help"], expect="ok"),
      Case("infer: no arguments", ["vlm.infer"]),
      Case("infer: good image", one(f("a.png")), expect="ok"),
      Case("infer: jpeg", one(f("a.jpg")), expect="ok"),
      Case("infer: rgba", one(f("rgba.png")), expect="ok"),
      Case("infer: cmyk jpeg", one(f("cmyk.jpg")), expect="ok"),
      Case("infer: one pixel", one(f("one_pixel.png")), expect="ok"),
      Case("infer: 1x400 strip", one(f("strip.png")), expect="ok"),
      Case("infer: 1x400 strip padded", one(f("strip.png"), "--resize=pad"), expect="ok"),
      Case("infer: 16-bit grey equals 8-bit", one(f("grey16.png")), expect="ok"),
      Case("infer: truncated png", one(f("truncated.png")), fragments=("truncated.png",)),
      Case("infer: empty file", one(f("empty.png")), fragments=("empty.png",)),
      Case("infer: text file as image", one(f("text.png")), fragments=("text.png",)),
      Case("infer: decompression bomb", one(f("bomb.png")), fragments=("bomb.png",)),
      Case("infer: directory as image", one(f("a_dir.png")), fragments=("a_dir.png",)),
      Case("infer: missing image", one(f("nope.png")), fragments=("nope.png",)),
      Case("infer: missing checkpoint", ["vlm.infer", "--checkpoint=/nonexistent/run", f"--image={f('a.png')}",
                                         "--prompt=ocr"], fragments=("/nonexistent/run",)),
      Case("infer: SigLIP dir as checkpoint", ["vlm.infer", f"--checkpoint={siglip}", f"--image={f('a.png')}",
                                               "--prompt=ocr"], fragments=(siglip,)),
      Case("infer: empty prompt", infer(f"--image={f('a.png')}", "--prompt=")),
      Case("infer: whitespace prompt", infer(f"--image={f('a.png')}", "--prompt=   ")),
      Case("infer: no prompt", infer(f"--image={f('a.png')}"), fragments=("--prompt",)),
      Case("infer: over-long prompt", infer(f"--image={f('a.png')}", "--prompt=answer en " + "how many " * 20),
           fragments=("--truncate_prompt",)),
      Case("infer: over-long prompt truncated", infer(f"--image={f('a.png')}", "--prompt=answer en " + "x " * 30,
                                                      "--truncate_prompt"), expect="ok"),
      Case("infer: unknown method", one(f("a.png"), "--method=nucleus"), fragments=("nucleus",)),
      Case("infer: beam", one(f("a.png"), "--method=beam", "--beam_size=2"), expect="ok"),
      Case("infer: beam_size 0", one(f("a.png"), "--method=beam", "--beam_size=0"), fragments=("beam_size",)),
      Case("infer: sample", one(f("a.png"), "--method=sample", "--top_k=3"), expect="ok"),
      Case("infer: temperature 0 (greedy)", one(f("a.png"), "--method=sample", "--temperature=0"), expect="ok"),
      Case("infer: negative temperature", one(f("a.png"), "--method=sample", "--temperature=-1"),
           fragments=("temperature",)),
      Case("infer: negative top_k", one(f("a.png"), "--method=sample", "--top_k=-1"), fragments=("top_k",)),
      Case("infer: top_p 1.5", one(f("a.png"), "--method=sample", "--top_p=1.5"), fragments=("top_p",)),
      Case("infer: batch_size 0", one(f("a.png"), "--batch_size=0"), fragments=("--batch_size",)),
      Case("infer: batch_size -1", one(f("a.png"), "--batch_size=-1"), fragments=("--batch_size",)),
      Case("infer: max_decode_len 0", one(f("a.png"), "--max_decode_len=0"), fragments=("--max_decode_len",)),
      Case("infer: max_decode_len -4", one(f("a.png"), "--max_decode_len=-4"), fragments=("--max_decode_len",)),
      Case("infer: max_decode_len 1", one(f("a.png"), "--max_decode_len=1"), expect="ok"),
      Case("infer: patch_budget on a square model", one(f("a.png"), "--patch_budget=16"),
           fragments=("--patch_budget",)),
      Case("infer: resize none on another size", one(f("a.png"), "--resize=none"), fragments=("--resize",)),
      Case("infer: unknown resize", one(f("a.png"), "--resize=crop")),
      Case("infer: jsonl", infer(f"--input={f('requests.jsonl')}"), expect="ok",
           check=lambda r: None if len(r.stdout.strip().splitlines()) == 3 else "not 3 answers"),
      Case("infer: jsonl not json", infer(f"--input={f('not_json.jsonl')}"), fragments=("line 2",)),
      Case("infer: jsonl empty", infer(f"--input={f('empty.jsonl')}"), fragments=("empty.jsonl",)),
      Case("infer: jsonl prompt not a string", infer(f"--input={f('bad_prompt.jsonl')}"), fragments=("prompt",)),
      Case("infer: jsonl image not a string", infer(f"--input={f('bad_image_field.jsonl')}"), fragments=("image",)),
      Case("infer: jsonl without prompt", infer(f"--input={f('no_prompt.jsonl')}"), fragments=("prompt",)),
      Case("infer: jsonl line is a list", infer(f"--input={f('list_line.jsonl')}"), fragments=("line 1",)),
      Case("infer: jsonl missing image", infer(f"--input={f('missing_image.jsonl')}"), fragments=("nope.png",)),
      Case("infer: missing --input file", infer("--input=/nonexistent/r.jsonl"), fragments=("/nonexistent/r.jsonl",)),
      Case("infer: --prompt with --input", infer(f"--input={f('requests.jsonl')}", "--prompt=ocr")),
      Case("infer: --output in a missing directory", infer(f"--input={f('requests.jsonl')}",
                                                           "--output=/nonexistent/dir/out.jsonl"),
           fragments=("/nonexistent/dir",), timeout=60),
      Case("infer: --output is a directory", infer(f"--input={f('requests.jsonl')}", f"--output={paths['files']}"),
           fragments=(paths["files"],), timeout=60),
      Case("infer: --draw is a file", one(f("a.png"), f"--draw={f('a.png')}"), fragments=("--draw",), timeout=60),
      Case("infer: answers kept when a later image breaks",
           infer(f"--input={f('broken_later.jsonl')}", f"--output={kept}", "--batch_size=2"),
           fragments=("truncated.png",), check=lambda _: None if os.path.isfile(kept) and len(
               open(kept).read().splitlines()) == 2 else "LOST: the first batch's answers are not in --output"),
  ]

  # --- vlm.plan
  def plan(*a):
    mesh = [] if any(x.startswith("--mesh") for x in a) else ["--mesh=data=2,model=1"]
    return ["vlm.plan", f"--gin_file={SIGLIP_RUN}", *mesh, *a]
  out += [
      Case("plan: tiny run", plan(), expect="ok"),
      Case("plan: --device h100", plan("--device=h100"), expect="ok"),
      Case("plan: BATCH_SIZE 0", plan("--gin.BATCH_SIZE=0"), fragments=("BATCH_SIZE",)),
      Case("plan: BATCH_SIZE -4", plan("--gin.BATCH_SIZE=-4"), fragments=("BATCH_SIZE",)),
      Case("plan: --frames 0", plan("--frames=0"), fragments=("--frames",)),
      Case("plan: --frames -1", plan("--frames=-1"), fragments=("--frames",)),
      Case("plan: empty --mesh", plan("--mesh="), fragments=("--mesh",)),
      Case("plan: duplicate mesh axes", plan("--mesh=data=2,data=4"), fragments=("data",)),
      Case("plan: mesh axis 0", plan("--mesh=data=0,model=1"), fragments=("--mesh",)),
      Case("plan: mesh without '='", plan("--mesh=data"), fragments=("--mesh",)),
      Case("plan: unknown device", plan("--device=z80")),
      Case("plan: negative device memory", plan("--device_memory=-1"), fragments=("memory",)),
      Case("plan: missing gin", ["vlm.plan", "--gin_file=gin_configs/runs/nope.gin", "--mesh=data=1"],
           fragments=("nope.gin",)),
      Case("plan: no gin", ["vlm.plan"]),
  ]

  # --- vlm.convert
  conv = lambda *a: ["vlm.convert", *a]  # noqa: E731
  converted = os.path.join(work, "converted")
  out += [
      Case("convert: --help", conv("--help"), expect="ok"),
      Case("convert: no arguments", conv()),
      Case("convert: missing --from", conv("--from=/nonexistent/x", f"--to={fresh('conv1')}", "--format=hf"),
           fragments=("/nonexistent/x",), check=left_nothing(fresh("conv1"))),
      Case("convert: SigLIP to hf", conv(f"--from={siglip}", f"--to={converted}_hf", "--format=hf"), expect="ok",
           check=lambda _: None if os.path.isfile(os.path.join(converted + "_hf", "config.json")) else "no config.json"),
      Case("convert: SigLIP to big_vision", conv(f"--from={siglip}", f"--to={converted}.npz", "--format=big_vision"),
           expect="ok"),
      Case("convert: onto an existing run", conv(f"--from={siglip}", f"--to={pali}", "--format=project"),
           fragments=("--overwrite",)),
      Case("convert: PaLI dir", conv(f"--from={pali}", f"--to={fresh('conv2')}", "--format=hf"), fragments=(pali,),
           check=left_nothing(fresh("conv2"))),
      Case("convert: image file as --from", conv(f"--from={f('a.png')}", f"--to={fresh('conv3')}", "--format=hf"),
           fragments=("a.png",)),
      Case("convert: --to equals --from", conv(f"--from={siglip}", f"--to={siglip}", "--format=project",
                                               "--overwrite"), fragments=("--to",)),
      Case("convert: unknown format", conv(f"--from={siglip}", f"--to={fresh('conv4')}", "--format=onnx")),
      Case("convert: unwritable --to", conv(f"--from={siglip}", "--to=/proc/conv", "--format=hf"),
           fragments=("/proc",)),
  ]

  # --- vlm.eval
  evaluate = lambda *a: ["vlm.eval", "--gin_file=gin_configs/runs/eval_transfer.gin", *a]  # noqa: E731
  out += [
      Case("eval: --help", ["vlm.eval", "--help"], expect="ok"),
      Case("eval: no CHECKPOINT_PATH", evaluate(f"--gin.DATA_DIR='{paths['files']}'"), fragments=("CHECKPOINT_PATH",)),
      Case("eval: unknown task", evaluate(f"--gin.CHECKPOINT_PATH='{pali}'", "--gin.EVAL_TASKS=['no_such_task']"),
           fragments=("no_such_task",)),
      Case("eval: missing benchmark files", evaluate(f"--gin.CHECKPOINT_PATH='{pali}'", "--gin.DATA_DIR='/nonexistent'",
                                                     "--gin.EVAL_TASKS=['vqav2']"), fragments=("/nonexistent",)),
      Case("eval: a SigLIP checkpoint on PaLI tasks", evaluate(f"--gin.CHECKPOINT_PATH='{siglip}'",
                                                               "--gin.EVAL_TASKS=['vqav2']"), fragments=(siglip,)),
      Case("eval: missing checkpoint", evaluate("--gin.CHECKPOINT_PATH='/nonexistent/run'",
                                                "--gin.EVAL_TASKS=['vqav2']"), fragments=("/nonexistent/run",)),
  ]

  # --- tasks.show / tasks.list
  show = lambda *a: ["tasks.show", *a]  # noqa: E731
  out += [
      Case("show: a task", show("--task=vqa_synthetic", "--n=2", f"--out={os.path.join(work, 'show.png')}"),
           expect="ok"),
      Case("show: unknown task", show("--task=no_such_task"), fragments=("no_such_task",)),
      Case("show: --n 0", show("--task=vqa_synthetic", "--n=0"), fragments=("--n",)),
      Case("show: --n -3", show("--task=vqa_synthetic", "--n=-3"), fragments=("--n",)),
      Case("show: unwritable --out", show("--task=vqa_synthetic", "--n=1", "--out=/proc/x/show.png"),
           fragments=("/proc/x",)),
      Case("show: unknown split", show("--task=vqa_synthetic", "--n=1", "--split=nope"), fragments=("nope",)),
      Case("show: --image_size 0", show("--task=vqa_synthetic", "--n=1", "--image_size=0"),
           fragments=("--image_size",), timeout=120),
      Case("show: --image_size -8", show("--task=vqa_synthetic", "--n=1", "--image_size=-8"),
           fragments=("--image_size",), timeout=120),
      Case("list: tasks", ["tasks.list"], expect="ok"),
      Case("list: unknown argument", ["tasks.list", "--nope"]),
  ]

  # --- the Python API
  api = lambda code: ["API", "  " + code]  # noqa: E731
  out += [
      Case("api: siglip.load missing", api("import encoders.siglip as s; s.load('/nonexistent/x')")),
      Case("api: siglip.load a file", api(f"import encoders.siglip as s; s.load({f('a.png')!r})")),
      Case("api: siglip.load empty dir", api(f"import encoders.siglip as s; s.load({paths['files']!r})")),
      Case("api: siglip.load a PaLI dir", api(f"import encoders.siglip as s; s.load({pali!r})")),
      Case("api: encode_image wrong rank", api(f"import encoders.siglip as s, numpy as np; "
                                                f"s.load({siglip!r}).encode_image(np.zeros((32, 32, 3), np.float32))")),
      Case("api: encode_image at another resolution", api(
          f"import encoders.siglip as s, numpy as np; "  # documented: the position embedding is resized
          f"assert s.load({siglip!r}).encode_image(np.zeros((1, 20, 20, 3), np.float32))['tokens'].shape[1] == 25"),
           expect="ok"),
      Case("api: encode_image size not whole patches", api(
          f"import encoders.siglip as s, numpy as np; "
          f"s.load({siglip!r}).encode_image(np.zeros((1, 18, 18, 3), np.float32))")),
      Case("api: encode_image uint8", api(f"import encoders.siglip as s, numpy as np; "
                                           f"s.load({siglip!r}).encode_image(np.zeros((1, 32, 32, 3), np.uint8))")),
      Case("api: encode_image nan", api(f"import encoders.siglip as s, numpy as np; "
                                         f"s.load({siglip!r}).encode_image(np.full((1, 32, 32, 3), np.nan, np.float32))")),
      Case("api: encode_text out of vocabulary", api(f"import encoders.siglip as s, numpy as np; "
                                                      f"s.load({siglip!r}).encode_text(np.full((1, 4), 10**7))")),
      Case("api: encode_text negative ids", api(f"import encoders.siglip as s, numpy as np; "
                                                 f"s.load({siglip!r}).encode_text(np.full((1, 4), -1))")),
      Case("api: encode_text float ids", api(f"import encoders.siglip as s, numpy as np; "
                                              f"s.load({siglip!r}).encode_text(np.ones((1, 4), np.float32))")),
      Case("api: pali.load missing", api("import vlm.pali as p; p.load('/nonexistent/x')")),
      Case("api: pali.load a SigLIP dir", api(f"import vlm.pali as p; p.load({siglip!r})")),
      Case("api: pali.generate", api(f"import vlm.pali as p, numpy as np; m = p.load({pali!r}); "
                                      "a = m.generate(np.zeros((2, 20, 30, 3), np.uint8), ['caption en', 'ocr']); "
                                      "assert len(a) == 2 and all(isinstance(x, str) for x in a)"), expect="ok"),
      Case("api: pali.generate count mismatch", api(f"import vlm.pali as p, numpy as np; "
                                                     f"p.load({pali!r}).generate(np.zeros((2, 8, 8, 3), np.uint8), ['ocr'])")),
      Case("api: pali.generate float images", api(f"import vlm.pali as p, numpy as np; "
                                                   f"p.load({pali!r}).generate(np.zeros((1, 8, 8, 3)), ['ocr'])")),
      Case("api: pali.generate one prompt string", api(f"import vlm.pali as p, numpy as np; "
                                                        f"p.load({pali!r}).generate(np.zeros((1, 8, 8, 3), np.uint8), 'ocr')")),
      Case("api: pali.generate max_new_tokens 0", api(f"import vlm.pali as p, numpy as np; "
                                                       f"p.load({pali!r}).generate(np.zeros((1, 8, 8, 3), np.uint8), "
                                                       "['ocr'], max_new_tokens=0)")),
      Case("api: pali.generate bad option", api(f"import vlm.pali as p, numpy as np; "
                                                 f"p.load({pali!r}).generate(np.zeros((1, 8, 8, 3), np.uint8), "
                                                 "['ocr'], method='beam', beams=2)")),
      Case("api: pali.score", api(f"import vlm.pali as p, numpy as np; m = p.load({pali!r}); "
                                   "s = m.score(np.zeros((2, 8, 8, 3), np.uint8), ['ocr', 'ocr'], ['a', '']); "
                                   "assert s.shape == (2,) and np.isfinite(s).all()"), expect="ok"),
      Case("api: ul2.load missing", api("import vlm.ul2 as u; u.load('/nonexistent/t5')")),
      Case("api: ul2.load a SigLIP dir", api(f"import vlm.ul2 as u; u.load({siglip!r})")),
      Case("api: cider length mismatch", api("import vlm.metrics as m; m.cider(['a'], [['a'], ['b']])")),
      Case("api: cider empty references", api("import vlm.metrics as m; m.cider(['a b'], [[]])")),
      Case("api: vqa_accuracy reference not a list", api("import vlm.metrics as m; m.vqa_accuracy(['2'], ['2'])")),
      Case("api: relaxed_accuracy mismatch", api("import vlm.metrics as m; m.relaxed_accuracy(['1', '2'], ['1'])")),
      Case("api: vqa_accuracy official", api("import vlm.metrics as m; "
                                              "assert m.vqa_accuracy(['two'], [['2'] * 10]) == 100.0"), expect="ok"),
  ]
  return out


def main(argv=None) -> None:
  p = argparse.ArgumentParser(prog="tests.fault_probe", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--work", help="where fixtures and runs go (default: a new temporary directory)")
  p.add_argument("-k", dest="keyword", help="only the cases whose name holds this")
  p.add_argument("--jobs", type=int, default=2, help="cases run at once")
  args = p.parse_args(argv)
  work = args.work or tempfile.mkdtemp(prefix="fault_probe_")
  os.makedirs(work, exist_ok=True)
  print(f"fault probe: fixtures and runs under {work}", flush=True)
  paths = build_fixtures(work)
  selected = [c for c in cases(paths, work) if not args.keyword or args.keyword in c.name]
  print(f"{len(selected)} cases", flush=True)
  outcomes = []
  with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
    for outcome in pool.map(run_case, selected):
      outcomes.append(outcome)
      mark = "  " if outcome.verdict == "ok" else "!!"
      print(f"{mark} {outcome.verdict:9s} {outcome.seconds:5.1f}s  {outcome.case.name}"
            + (f"  -- {outcome.detail}" if outcome.verdict != "ok" else ""), flush=True)
  bad = [o for o in outcomes if o.verdict != "ok"]
  counts = {v: sum(o.verdict == v for o in outcomes) for v in sorted({o.verdict for o in outcomes})}
  print(f"\n{len(outcomes)} cases: " + ", ".join(f"{n} {v}" for v, n in counts.items()))
  with open(os.path.join(work, "outcomes.json"), "w") as f:
    json.dump([{"name": o.case.name, "verdict": o.verdict, "detail": o.detail} for o in outcomes], f, indent=1)
  sys.exit(1 if bad else 0)


if __name__ == "__main__":
  main(sys.argv[1:])
