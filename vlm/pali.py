"""A trained PaLI as a Python object: `vlm.pali.load(MODEL_DIR)` answers and scores prompts about images.

  pali = vlm.pali.load("runs/pali_tiny_vqa")
  pali.generate(images, ["caption en", "answer en how many circles are there?"])  # -> list[str]
  pali.score(images, ["answer en how many circles are there?"] * 2, ["2", "3"])     # -> [N] log-likelihoods

`images`: uint8 [N, H, W, 3], or a list of uint8 arrays of any size ([H, W, 3], [H, W, 4] or grey [H, W]),
fitted to the model as in training: squashed to its square resolution (bilinear, antialiased), or, for a NaFlex
model (model_config.json records its patch_budget), cut at its own aspect ratio into at most that many patches
(tasks.naflex). Location answers read as `<locNNNN>` tokens followed by the label (tasks.locations turns them
into pixel boxes). `vlm.infer` is this object behind a command line.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Sequence

import jax
import numpy as np

from vlm import decoding, model as model_lib

METHODS = ("greedy", "beam", "sample")


class PromptCutWarning(UserWarning):
  """A prompt longer than the trained prompt length was cut (truncate_prompt=True); one per prompt."""


RESIZE_MODES = ("squash", "pad", "none")


class PaLIInputs:
  """A PaLI's inputs, without its parameters: images fitted and prompts tokenised as training made them.

  vlm.transfer_eval feeds sharded parameters through this; LoadedPaLI adds one device's parameters to it.
  """

  def __init__(self, model: model_lib.PaLIModel, path: str):
    if model.vocabulary is None:
      raise ValueError(f"{path} does not record its vocabulary (model_config.json has no 'vocabulary'); "
                       "retrain with vlm.model.PaLIModel.vocabulary set")
    self.model, self.path = model, path

  @property
  def max_decode_len(self) -> int:
    """The answer length the model was trained with: generate's default max_new_tokens."""
    return self.model.max_decode_len

  # ------------------------------------------------------------------------------------------- inputs

  def image_features(self, images, resize: str = "squash", patch_budget: int | None = None) -> dict[str, np.ndarray]:
    """The model's image inputs for `images`: {'image': [N, S, S, 3]} in [-1, 1], or NaFlex patches.

    resize (square models): 'squash' (PaLI's), 'pad' (keep the aspect ratio, centre on mid-grey, as
    training's resize_image(method='pad')) or 'none' (refuse images of another size). patch_budget (NaFlex models): patches an image may use;
    default the trained budget.
    """
    images = _as_image_list(images)
    if resize not in RESIZE_MODES:
      raise ValueError(f"unknown resize mode {resize!r}; choose one of {', '.join(RESIZE_MODES)}")
    if patch_budget is not None and (isinstance(patch_budget, bool) or not isinstance(patch_budget, (int, np.integer))
                                     or patch_budget < 1):
      raise ValueError(f"patch_budget must be an integer >= 1 (patches an image may use); got {patch_budget!r}")
    if self.model.patch_budget is None:
      if patch_budget is not None:
        raise ValueError(f"--patch_budget is for NaFlex models (patch_budget= in Python); {self.path} takes "
                         "square images (see --resize)")
      size = self.model.config.vit.image_size
      return {"image": np.stack([fit_square(image, size, resize) for image in images])}
    from tasks import naflex  # pylint: disable=import-outside-toplevel
    return naflex.patchify_batch(images, self.model.config.vit.patch_size, patch_budget or self.model.patch_budget)

  def tokenize(self, texts: Sequence[str], length: int | None = None, truncate: bool = False,
               what: str = "prompt") -> np.ndarray:
    """int32 [N, length] token ids with EOS, 0-padded; length default: the trained prompt length.

    A text longer than `length` is refused, or with truncate=True cut (EOS kept last) with a warning.
    """
    return _pad(texts, self._encode_all(texts, what), length or self.model.prompt_length, truncate, what)

  def _encode_all(self, texts: Sequence[str], what: str) -> list[list[int]]:
    encoded = []
    for text in texts:
      if not isinstance(text, str):
        raise ValueError(f"a {what} must be a string; got {type(text).__name__} {text!r}")
      if what == "prompt" and not text.strip():
        raise ValueError("a prompt is empty; PaLI prompts look like 'caption en', 'answer en <question>', 'ocr'")
      encoded.append(_encode(self.model.vocabulary, text))
    return encoded


class LoadedPaLI(PaLIInputs):
  """A PaLI MODEL_DIR's latest parameters with its vocabulary: `generate(images, prompts)`, `score(...)`."""

  def __init__(self, model: model_lib.PaLIModel, params: Any, path: str):
    super().__init__(model, path)
    self.params = jax.device_put(params)  # on the device once, not copied in on every call
    self._predict = decoding.jit(
        lambda p, batch, opts, rng: model.predict_batch(p, batch, **dict(opts), **({} if rng is None else {"rng": rng})),
        static_argnums=(2,))
    self._score = jax.jit(model.score_batch)

  # ------------------------------------------------------------------------------------------- queries

  def generate(self, images, prompts: Sequence[str], max_new_tokens: int | None = None, method: str = "greedy", *,
               seed: int = 0, batch_size: int | None = None, resize: str = "squash",
               patch_budget: int | None = None, truncate_prompt: bool = False, **opts) -> list[str]:
    """The answer to each (image, prompt) pair.

    Args:
      images, prompts: N images (see the module docstring) and N prompts ('caption en', 'answer en <q>', 'ocr',
        'detect <object>', 'refexp <phrase>').
      max_new_tokens: answer tokens at most; default the model's max_decode_len.
      method: 'greedy', 'beam' (opts beam_size, alpha) or 'sample' (opts temperature, top_k, top_p; `seed`).
      batch_size: rows decoded at once (the last batch is padded, so every batch has one compiled shape);
        default all N at once.
      resize, patch_budget: see image_features. truncate_prompt: see tokenize.
    """
    n = self._check_rows(images, prompts)
    if method not in METHODS:
      raise ValueError(f"unknown decoding method {method!r}; choose one of {', '.join(METHODS)}")
    if max_new_tokens is None:
      max_new_tokens = self.max_decode_len
    _check_positive_int(max_new_tokens, "max_new_tokens")
    batch_size = n if batch_size is None else _check_positive_int(batch_size, "batch_size")
    options = tuple(sorted({"max_decode_len": int(max_new_tokens), "method": method, **opts}.items()))
    answers = []
    for start in range(0, n, batch_size):
      batch = {**self.image_features(images[start:start + batch_size], resize, patch_budget),
               "encoder_input_tokens": self.tokenize(prompts[start:start + batch_size], truncate=truncate_prompt)}
      rng = jax.random.fold_in(jax.random.key(seed), start) if method == "sample" else None
      tokens = np.asarray(self._predict(self.params, _pad_rows(batch, batch_size), options, rng).tokens)
      answers += [self.model.detokenize(row) for row in tokens[:len(batch["encoder_input_tokens"])]]
    return answers

  def score(self, images, prompts: Sequence[str], targets: Sequence[str], *, resize: str = "squash",
            patch_budget: int | None = None, truncate_prompt: bool = False) -> np.ndarray:
    """float32 [N]: log p(target | image, prompt), summed over the target's tokens and its EOS."""
    n = self._check_rows(images, prompts)
    if isinstance(targets, str) or len(targets) != n:
      raise ValueError(f"score needs one target per prompt: {n} prompts, "
                       f"{'a string' if isinstance(targets, str) else len(targets)} targets")
    if n == 0:
      return np.zeros([0], np.float32)
    batch = {**self.image_features(images, resize, patch_budget),
             "encoder_input_tokens": self.tokenize(prompts, truncate=truncate_prompt),
             # padded to the longest target, so none is cut
             "decoder_target_tokens": _pad(targets, self._encode_all(targets, "target"), None, False, "target")}
    return np.asarray(self._score(self.params, batch), np.float32)

  @staticmethod
  def _check_rows(images, prompts) -> int:
    if isinstance(prompts, str):
      raise ValueError("prompts must be a list of strings, one per image (got one string)")
    if len(images) != len(prompts):
      raise ValueError(f"got {len(images)} images but {len(prompts)} prompts; give one prompt per image")
    return len(prompts)


def load(path: str | os.PathLike, step: int | None = None) -> LoadedPaLI:
  """The latest checkpoint of a PaLI training MODEL_DIR (or its checkpoint at `step`), ready to answer prompts."""
  model, params = model_lib.load(path, step)
  return LoadedPaLI(model, params, os.fspath(path))


# ----------------------------------------------------------------------------------------------- images

def _as_image_list(images) -> list[np.ndarray]:
  """images as a list of uint8 [H, W, 3] arrays; one ValueError naming the first that is not an image."""
  if isinstance(images, np.ndarray) and images.ndim == 4:
    images = list(images)
  out = []
  for i, image in enumerate(images):
    image = np.asarray(image)
    if image.dtype != np.uint8:
      raise ValueError(f"image {i} is {image.dtype}; images are uint8 pixels (0-255), as PIL or an image "
                       "decoder gives them")
    if image.ndim == 2:
      image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4) or not image.shape[0] or not image.shape[1]:
      raise ValueError(f"image {i} has shape {image.shape}; expected [H, W, 3] (RGB), [H, W, 4] or [H, W]")
    out.append(image[..., :3])
  return out


def pad_geometry(height: int, width: int, size: int) -> tuple[int, int, int, int]:
  """(new_h, new_w, top, left): where resize 'pad' puts an image of height x width in the size x size square.

  As training's tasks.preprocessors.resize_image(method='pad'): the aspect ratio kept, the image centred.
  """
  scale = min(size / height, size / width)
  new_h, new_w = (min(max(int(np.round(d * scale)), 1), size) for d in (height, width))
  return new_h, new_w, (size - new_h) // 2, (size - new_w) // 2


def fit_square(image: np.ndarray, size: int, resize: str) -> np.ndarray:
  """uint8 [H, W, 3] -> float32 [size, size, 3] in [-1, 1], as the training pipeline fits images.

  Normalised first, then resized in float32 by PIL's antialiased bilinear filter, which computes what
  training's tf.image.resize(antialias=True) does (equal to ~1e-6, tests/test_infer.py), without TensorFlow.
  'pad' centres the image on 0 (mid-grey) as training does; 'none' refuses another size.
  """
  height, width = image.shape[:2]
  pixels = image.astype(np.float32) * np.float32(1 / 127.5) - np.float32(1)  # as preprocessors.normalize_image
  if (height, width) == (size, size):
    return pixels
  if resize == "none":
    raise ValueError(f"an image is {height}x{width} but the model takes {size}x{size}; pass --resize squash "
                     "or --resize pad (resize='squash' or 'pad' in Python)")
  if resize == "squash":
    return _resize_float(pixels, size, size)
  new_h, new_w, top, left = pad_geometry(height, width, size)
  out = np.zeros((size, size, 3), np.float32)
  out[top:top + new_h, left:left + new_w] = _resize_float(pixels, new_h, new_w)
  return out


def _resize_float(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
  from PIL import Image  # pylint: disable=import-outside-toplevel
  return np.stack([np.asarray(Image.fromarray(pixels[..., c], mode="F").resize((width, height), Image.BILINEAR))
                   for c in range(pixels.shape[-1])], axis=-1)


def boxes_in_pixels(answer: str, height: int, width: int, size: int, resize: str = "squash") -> list[tuple]:
  """The boxes an answer's location tokens give, in pixels (y0, x0, y1, x1) of the original height x width
  image, undoing the fit: location tokens are fractions of the square the model saw (of the padded square
  for resize 'pad'; of the image itself for 'squash' and NaFlex patches)."""
  from tasks import locations  # pylint: disable=import-outside-toplevel
  if resize != "pad" or (height, width) == (size, size):
    return locations.tokens_to_boxes(answer, height, width)
  new_h, new_w, top, left = pad_geometry(height, width, size)
  return [((y0 - top) * height / new_h, (x0 - left) * width / new_w, (y1 - top) * height / new_h,
           (x1 - left) * width / new_w) for y0, x0, y1, x1 in locations.tokens_to_boxes(answer, size, size)]


def _pad_rows(batch: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
  """Each feature padded to `rows` by repeating its last row (one compiled shape for every batch)."""
  pad = rows - len(batch["encoder_input_tokens"])
  return {k: np.concatenate([v, np.repeat(v[-1:], pad, 0)]) if pad else v for k, v in batch.items()}


def _pad(texts: Sequence[str], encoded: list[list[int]], length: int | None, truncate: bool,
         what: str) -> np.ndarray:
  """The encoded texts 0-padded to `length` (default: the longest), longer ones refused or cut (EOS kept)."""
  length = length or max(map(len, encoded), default=1)
  out = np.zeros((len(encoded), length), np.int32)
  for row, (text, ids) in enumerate(zip(texts, encoded)):
    if len(ids) > length:
      if not truncate:
        raise ValueError(f"{what} {text!r} is {len(ids)} tokens but the model was trained with {length}; "
                         "shorten it or pass --truncate_prompt (truncate_prompt=True in Python)")
      warnings.warn(f"{what} {text!r} cut from {len(ids)} to {length} tokens", PromptCutWarning, stacklevel=4)
      ids = ids[:length - 1] + [ids[-1]]  # keep EOS last
    out[row, :len(ids)] = ids
  return out


def _check_positive_int(value, name: str) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
  return int(value)


def _encode(vocabulary, text: str) -> list[int]:
  """Token ids with EOS (a seqio vocabulary: location tokens are one id each)."""
  return list(vocabulary.encode(text)) + [vocabulary.eos_id]
