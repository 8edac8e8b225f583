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
import warnings

import numpy as np

from vlm import host_memory

RESIZE_MODES = ("squash", "pad", "none")
METHODS = ("greedy", "beam", "sample")


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="vlm.infer", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", required=True, help="a PaLI training MODEL_DIR")
  source = p.add_mutually_exclusive_group(required=True)
  source.add_argument("--image", help="one image file (PNG, JPEG ...)")
  source.add_argument("--input", help="a jsonl file of requests")
  p.add_argument("--prompt", help="the prompt for --image")
  p.add_argument("--output", help="where --input's answers go (default: print them as jsonl)")
  p.add_argument("--resize", choices=RESIZE_MODES, default="squash",
                 help="fit images to the model's resolution: squash (PaLI's default), pad (keep the aspect ratio, "
                      "pad with black), none (refuse images of another size)")
  p.add_argument("--patch_budget", type=int,
                 help="NaFlex models: patches an image may use (default: the budget it was trained with)")
  p.add_argument("--truncate_prompt", action="store_true",
                 help="cut prompts longer than the trained prompt length (with a warning) instead of refusing them")
  p.add_argument("--method", default="greedy", help=f"decoding: one of {', '.join(METHODS)}")
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
  if args.method not in METHODS:
    raise ValueError(f"unknown decoding method {args.method!r}; choose one of {', '.join(METHODS)}")
  if args.method == "beam":
    return {"beam_size": args.beam_size, "alpha": args.alpha}
  if args.method == "sample":
    return {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p}
  return {}


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
      requests.append({**request, "image": os.path.join(base, request["image"])})
  if not requests:
    raise ValueError(f"{args.input} holds no requests")
  return requests


def read_image(path: str):
  """The image at `path` as an RGB PIL image, or one ValueError naming the file."""
  from PIL import Image, UnidentifiedImageError  # pylint: disable=import-outside-toplevel
  try:
    with Image.open(path) as image:
      return image.convert("RGB")
  except FileNotFoundError:
    raise ValueError(f"image {path} does not exist") from None
  except (UnidentifiedImageError, OSError) as e:
    raise ValueError(f"image {path} cannot be decoded ({e})") from None


def load_image(path: str, size: int, resize: str) -> tuple[np.ndarray, tuple[int, int]]:
  """float32 [size, size, 3] in [-1, 1] and the original (height, width)."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  image = read_image(path)
  original = (image.height, image.width)
  if original != (size, size):
    if resize == "none":
      raise ValueError(f"image {path} is {image.height}x{image.width} but the model takes {size}x{size}; "
                       "pass --resize squash or --resize pad")
    if resize == "squash":
      image = image.resize((size, size), Image.BILINEAR)
    else:
      scale = size / max(original)
      inner = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                           Image.BILINEAR)
      image = Image.new("RGB", (size, size))
      image.paste(inner, (0, 0))
  return np.asarray(image, np.float32) / 127.5 - 1.0, original


def load_images(paths: list[str], model, args) -> tuple[dict[str, np.ndarray], list[tuple[int, int]]]:
  """The model's image features for `paths` (dense 'image', or NaFlex patches) and each original size."""
  if model.patch_budget is None:
    loaded = [load_image(path, model.config.vit.image_size, args.resize) for path in paths]
    return {"image": np.stack([image for image, _ in loaded])}, [size for _, size in loaded]
  from tasks import naflex  # pylint: disable=import-outside-toplevel
  budget = args.patch_budget or model.patch_budget
  images = [np.asarray(read_image(path)) for path in paths]
  return naflex.patchify_batch(images, model.config.vit.patch_size, budget), [im.shape[:2] for im in images]

def tokenize_prompts(vocabulary, prompts: list[str], length: int, truncate: bool) -> np.ndarray:
  out = np.zeros((len(prompts), length), np.int32)
  for row, prompt in enumerate(prompts):
    if not prompt.strip():
      raise ValueError("a prompt is empty; PaLI prompts look like 'caption en', 'answer en <question>', 'ocr'")
    ids = _encode(vocabulary, prompt)
    if len(ids) > length:
      if not truncate:
        raise ValueError(f"prompt {prompt!r} is {len(ids)} tokens but the model was trained with {length}; "
                         "shorten it or pass --truncate_prompt")
      warnings.warn(f"prompt {prompt!r} cut from {len(ids)} to {length} tokens", stacklevel=2)
      ids = ids[:length - 1] + [ids[-1]]  # keep EOS last
    out[row, :len(ids)] = ids
  return out


def _encode(vocabulary, text: str) -> list[int]:
  """Token ids with EOS, for either vocabulary kind (word-level, or seqio sentencepiece)."""
  from tasks import locations  # pylint: disable=import-outside-toplevel
  if hasattr(vocabulary, "encode_batch"):  # word-level: location tokens are separate words
    return vocabulary.encode(locations.separate_loc_tokens(text))
  return list(vocabulary.encode(text)) + [vocabulary.eos_id]


def run(args) -> list[dict]:
  import jax  # pylint: disable=import-outside-toplevel
  from tasks import locations  # pylint: disable=import-outside-toplevel
  from vlm import decoding, model as model_lib  # pylint: disable=import-outside-toplevel
  options = decoding_options(args)
  requests = read_requests(args)
  if args.patch_budget is not None and args.patch_budget < 1:
    raise ValueError(f"--patch_budget must be >= 1 (patches an image may use); got {args.patch_budget}")
  model, params = model_lib.load(args.checkpoint)
  if args.patch_budget is not None and model.patch_budget is None:
    raise ValueError(f"--patch_budget is for NaFlex models; {args.checkpoint} takes square images (see --resize)")
  if model.vocabulary is None:
    raise ValueError(f"{args.checkpoint} does not record its vocabulary (model_config.json has no "
                     "'vocabulary'); retrain with vlm.model.PaLIModel.vocabulary set")
  prompt_length = model.prompt_length or max(len(_encode(model.vocabulary, r["prompt"])) for r in requests)
  max_len = args.max_decode_len or model.max_decode_len
  rng = jax.random.key(args.seed)
  sample_rng = lambda r: {"rng": r} if args.method == "sample" else {}  # noqa: E731
  predict = decoding.jit(lambda p, b, r: model.predict_batch(p, b, max_decode_len=max_len, method=args.method,
                                                             **options, **sample_rng(r)))
  results = []
  for start in range(0, len(requests), args.batch_size):
    chunk = requests[start:start + args.batch_size]
    images, sizes = load_images([r["image"] for r in chunk], model, args)
    batch = {**images, "encoder_input_tokens": tokenize_prompts(model.vocabulary, [r["prompt"] for r in chunk],
                                                                prompt_length, args.truncate_prompt)}
    pad = args.batch_size - len(chunk)  # one compiled shape for every chunk
    if pad:
      batch = {k: np.concatenate([v, np.repeat(v[-1:], pad, 0)]) for k, v in batch.items()}
    tokens = np.asarray(predict(params, batch, jax.random.fold_in(rng, start)).tokens)[:len(chunk)]
    for request, row, (height, width) in zip(chunk, tokens, sizes):
      answer = model.detokenize(row)
      result = {**request, "answer": answer}
      boxes = locations.tokens_to_boxes(answer, height, width)
      if boxes:
        result["boxes"] = [[round(float(c), 1) for c in box] for box in boxes]
      results.append(result)
  return results


def draw(results: list[dict], directory: str) -> None:
  """Each image with its prompt, answer and boxes drawn on it (matplotlib, headless)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  os.makedirs(directory, exist_ok=True)
  for i, result in enumerate(results):
    with Image.open(result["image"]) as image:
      pixels = np.asarray(image.convert("RGB"))
    fig, ax = plt.subplots(figsize=(4, 4.6))
    ax.imshow(pixels)
    for y0, x0, y1, x1 in result.get("boxes", []):
      ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="lime", linewidth=2))
    ax.set_title(f"{result['prompt']}\n-> {result['answer']}", fontsize=9)
    ax.axis("off")
    fig.savefig(os.path.join(directory, f"{i:04d}.png"), dpi=100, bbox_inches="tight")
    plt.close(fig)


def main(argv=None) -> None:
  host_memory.reuse_freed_memory()  # XLA:CPU's per-call buffers stop page-faulting (vlm.host_memory)
  args = parser().parse_args(argv)
  try:
    results = run(args)
  except (ValueError, OSError) as e:  # bad input of every kind, CheckpointError included
    if args.debug:
      raise
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  if args.draw:
    draw(results, args.draw)
  if args.image:
    print(results[0]["answer"])
    if "boxes" in results[0]:
      print("boxes (y0, x0, y1, x1 in pixels):", results[0]["boxes"])
  elif args.output:
    with open(args.output, "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in results)
    print(f"{len(results)} answers written to {args.output}")
  else:
    for r in results:
      print(json.dumps(r))


if __name__ == "__main__":
  main(sys.argv[1:])
