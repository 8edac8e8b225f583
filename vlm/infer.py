"""Answer prompts about images with a trained PaLI checkpoint.

  python -m vlm.infer --checkpoint runs/pali_tiny_vqa --image a.png --prompt "answer en how many circles are there?"
  python -m vlm.infer --checkpoint DIR --input requests.jsonl --output answers.jsonl

A request line is {"image": "path.png", "prompt": "caption en"} (image paths relative to the jsonl file);
each answer line repeats it and adds "answer". Prompts follow PaLI: 'caption <lang>', 'answer <lang> <question>',
'ocr', 'detect <object>', 'refexp <phrase>'. Answers with location tokens (detect, refexp) also get "boxes"
in pixels of the original image, and --draw DIR writes each image with its boxes and answer.

A NaFlex model (trained on patches: model_config.json records its patch_budget) reads each image at its own
aspect ratio, cut into at most that many patches as in training (tasks.naflex); --patch_budget changes the
budget, and --resize does not apply.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from vlm import gin_cli, host_memory, pali as pali_lib


def parser() -> argparse.ArgumentParser:
  p = gin_cli.OneLineErrorParser(prog="vlm.infer", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", required=True, help="a PaLI training MODEL_DIR")
  source = p.add_mutually_exclusive_group(required=True)
  source.add_argument("--image", help="one image file (PNG, JPEG ...)")
  source.add_argument("--input", help="a jsonl file of requests")
  p.add_argument("--prompt", help="the prompt for --image")
  p.add_argument("--output", help="where --input's answers go (default: print them as jsonl)")
  p.add_argument("--resize", choices=pali_lib.RESIZE_MODES, default="squash",
                 help="fit images to the model's resolution: squash (PaLI's default), pad (keep the aspect ratio, "
                      "centre on mid-grey, as training's pad), none (refuse images of another size)")
  p.add_argument("--patch_budget", type=int,
                 help="NaFlex models: patches an image may use (default: the budget it was trained with)")
  p.add_argument("--truncate_prompt", action="store_true",
                 help="cut prompts longer than the trained prompt length (with a warning) instead of refusing them")
  p.add_argument("--method", default="greedy", help=f"decoding: one of {', '.join(pali_lib.METHODS)}")
  p.add_argument("--max_decode_len", type=int, help="answer tokens at most (default: the model's)")
  p.add_argument("--beam_size", type=int, default=4)
  p.add_argument("--alpha", type=float, default=0.6, help="beam search length penalty")
  p.add_argument("--temperature", type=float, default=1.0)
  p.add_argument("--top_k", type=int, default=0)
  p.add_argument("--top_p", type=float, default=1.0)
  p.add_argument("--seed", type=int, default=0, help="sampling seed")
  p.add_argument("--batch_size", type=int, default=16)
  p.add_argument("--draw", metavar="DIR", help="write each image with its answer (and boxes) drawn on it")
  p.add_argument("--debug", action="store_true", help="full tracebacks instead of one-line errors")
  return p


def decoding_options(args) -> dict:
  if args.method not in pali_lib.METHODS:
    raise ValueError(f"unknown decoding method {args.method!r}; choose one of {', '.join(pali_lib.METHODS)}")
  if args.method == "beam":
    return {"beam_size": args.beam_size, "alpha": args.alpha}
  if args.method == "sample":
    return {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p}
  return {}


def check_args(args) -> None:
  """Refuses bad numbers and unwritable destinations before any model is loaded or answer decoded."""
  for name in ("batch_size", "max_decode_len", "patch_budget", "beam_size"):
    value = getattr(args, name)
    if value is not None and value < 1:
      raise ValueError(f"--{name} must be >= 1; got {value}")
  if args.output:
    if os.path.isdir(args.output):
      raise ValueError(f"--output {args.output} is a directory; give a file path for the answers")
    _check_writable_dir(os.path.dirname(os.path.abspath(args.output)), "--output")
  if args.draw:
    if os.path.exists(args.draw) and not os.path.isdir(args.draw):
      raise ValueError(f"--draw {args.draw} is a file; give a directory for the drawn images")
    _check_writable_dir(_existing_parent(os.path.abspath(args.draw)), "--draw")


def _existing_parent(path: str) -> str:
  while not os.path.exists(path):
    path = os.path.dirname(path)
  return path


def _check_writable_dir(directory: str, flag: str) -> None:
  if not os.path.isdir(directory):
    raise ValueError(f"{flag}: directory {directory} does not exist; create it first")
  if not os.access(directory, os.W_OK | os.X_OK):
    raise ValueError(f"{flag}: directory {directory} is not writable")


def read_requests(args) -> list[dict]:
  if args.image:
    if args.prompt is None:
      raise ValueError("--image needs --prompt (for example --prompt 'caption en')")
    return [{"image": args.image, "prompt": args.prompt}]
  if args.prompt is not None:
    raise ValueError("--prompt goes with --image; with --input each jsonl line carries its own prompt")
  base = os.path.dirname(os.path.abspath(args.input))
  requests = []
  with open(args.input) as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        request = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{args.input} line {number} is not JSON ({e.msg})") from None
      if not isinstance(request, dict) or "image" not in request or "prompt" not in request:
        raise ValueError(f"{args.input} line {number} needs an object with 'image' and 'prompt'")
      for key in ("image", "prompt"):
        if not isinstance(request[key], str):
          raise ValueError(f"{args.input} line {number}: '{key}' must be a string; got {request[key]!r}")
      requests.append({**request, "image": os.path.join(base, request["image"])})
  if not requests:
    raise ValueError(f"{args.input} holds no requests")
  return requests


def check_images_exist(requests: list[dict]) -> None:
  """Every request's image is a file (checked before any decoding; unreadable contents are found later)."""
  for request in requests:
    if not os.path.isfile(request["image"]):
      raise ValueError(f"image {request['image']} does not exist" if not os.path.exists(request["image"])
                       else f"image {request['image']} is not a file")


def read_image(path: str) -> np.ndarray:
  """The image at `path` as uint8 RGB [H, W, 3], or one ValueError naming the file.

  High-bit-depth images are scaled by their real range (a 16-bit PNG's 0..65535), not clipped at 255.
  """
  from PIL import Image, UnidentifiedImageError  # pylint: disable=import-outside-toplevel
  from tasks import image_modes  # pylint: disable=import-outside-toplevel
  try:
    with Image.open(path) as image:
      return image_modes.to_rgb(image)
  except FileNotFoundError:
    raise ValueError(f"image {path} does not exist") from None
  except IsADirectoryError:
    raise ValueError(f"image {path} is a directory") from None
  except Image.DecompressionBombError as e:
    raise ValueError(f"image {path} is too large to decode safely ({e})") from None
  except (UnidentifiedImageError, OSError, SyntaxError) as e:
    raise ValueError(f"image {path} cannot be decoded ({e})") from None


def answer(pali, requests: list[dict], args, options: dict):
  """Yields each request with its answer (and boxes in the original image's pixels), a batch at a time."""
  max_len = args.max_decode_len or pali.max_decode_len
  for start in range(0, len(requests), args.batch_size):
    chunk = requests[start:start + args.batch_size]
    images = [read_image(r["image"]) for r in chunk]
    answers = pali.generate(images, [r["prompt"] for r in chunk], max_len, args.method, seed=args.seed + start,
                            batch_size=args.batch_size, resize=args.resize, patch_budget=args.patch_budget,
                            truncate_prompt=args.truncate_prompt, **options)
    resize = "squash" if pali.model.patch_budget else args.resize  # NaFlex patches keep the aspect ratio
    for request, image, text in zip(chunk, images, answers):
      result = {**request, "answer": text}
      boxes = pali_lib.boxes_in_pixels(text, *image.shape[:2], pali.model.config.vit.image_size, resize)
      if boxes:
        result["boxes"] = [[round(float(c), 1) for c in box] for box in boxes]
      yield result


def draw(result: dict, path: str) -> None:
  """The request's image with its prompt, answer and boxes drawn on it (matplotlib, headless)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(4, 4.6))
  ax.imshow(read_image(result["image"]))
  for y0, x0, y1, x1 in result.get("boxes", []):
    ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="lime", linewidth=2))
  ax.set_title(f"{result['prompt']}\n-> {result['answer']}", fontsize=9)
  ax.axis("off")
  fig.savefig(path, dpi=100, bbox_inches="tight")
  plt.close(fig)


def run(args) -> int:
  """Answers every request, writing each batch's answers as soon as they exist; returns how many."""
  check_args(args)
  options = decoding_options(args)
  requests = read_requests(args)
  check_images_exist(requests)
  pali = pali_lib.load(args.checkpoint)
  if args.draw:
    os.makedirs(args.draw, exist_ok=True)
  out = open(args.output, "w") if args.output else None  # pylint: disable=consider-using-with
  try:
    for i, result in enumerate(answer(pali, requests, args, options)):
      if args.image:
        print(result["answer"])
        if "boxes" in result:
          print("boxes (y0, x0, y1, x1 in pixels):", result["boxes"])
      else:
        print(json.dumps(result), file=out or sys.stdout, flush=True)
      if args.draw:
        draw(result, os.path.join(args.draw, f"{i:04d}.png"))
  finally:
    if out:
      out.close()
  return len(requests)


def main(argv=None) -> None:
  host_memory.reuse_freed_memory()  # XLA:CPU's per-call buffers stop page-faulting (vlm.host_memory)
  args = parser().parse_args(argv)
  try:
    count = run(args)
  except (ValueError, OSError) as e:  # bad input of every kind, CheckpointError included
    if args.debug:
      raise
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  if args.output:
    print(f"{count} answers written to {args.output}")


if __name__ == "__main__":
  main(sys.argv[1:])
