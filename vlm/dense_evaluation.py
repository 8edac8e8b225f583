"""Dense evaluations of a two-tower model on held-out generated scenes, whose renderer knows every pixel's class
(tasks.scenes.class_map: the (colour, shape) of the object on top, or background):

  seg_miou_zero_shot  each patch takes the class whose prompt ("a photo of a red circle") its token (after the
                      last LayerNorm) is most similar to
  seg_miou_zero_shot_maskclip  the same with each token read through the MAP head alone (MaskCLIP's
                      value-embedding trick; encoders.vit.MAPHead per_token), which puts it where the pooled
                      image embedding lives
  seg_miou_probe      a linear probe (softmax regression solved by L-BFGS, background a class) on frozen patch
                      tokens, fitted on train-split scenes, scored on the held-out ones
  position_probe_r2   how well a linear map (ridge regression) reads each frozen patch token's own grid cell (row,
                      column) off the token, fitted on the probe scenes: R^2 in percent on the held-out ones,
                      the mean of the row's and the column's; near 0 the tokens do not say where they are (a
                      PaLI's UL2 can still tell from their order in the sequence, through its relative position
                      biases)
  box_probe           (a function, not part of dense_metrics: it trains a reader) how well a small attention
                      probe finds a lone object's box in frozen tokens (box_probe_accuracy, IoU >= 0.5)
  knn_accuracy        single-object images classified by the cosine-weighted vote of their 20 nearest
                      neighbours (pooled features) in a bank of labelled single-object images (DINO's k-NN)
  seg_miou_oracle     the best a patch-level prediction can do: each patch's majority class as its prediction
  seg_miou_chance     a uniformly random class per patch (with the probe's background class as one of 49)

mIoU by the standard definition: per class, intersection over union of its pixels across the whole split,
averaged over the classes present in the ground truth or the predictions. Scored on object pixels (the 48
object classes; a background prediction there counts against the object's class), the "without background"
protocol of zero-shot segmentation benchmarks: the scenes' background is one uniform dark grey. Patch
predictions are nearest-upsampled to pixels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

NUM_CLASSES = 48  # tasks.scenes.all_combos()
_BACKGROUND = NUM_CLASSES  # the probe's extra class


def miou(predicted: np.ndarray, truth: np.ndarray, num_classes: int = NUM_CLASSES) -> float:
  """Percent mIoU over object pixels (truth >= 0); predictions outside [0, num_classes) count as misses."""
  on = truth >= 0
  p, t = predicted[on].astype(np.int64), truth[on].astype(np.int64)
  p = np.where((p >= 0) & (p < num_classes), p, num_classes)  # background / invalid: its own bin
  confusion = np.bincount(t * (num_classes + 1) + p, minlength=num_classes * (num_classes + 1)).reshape(
      num_classes, num_classes + 1)[:, :num_classes]
  tp = np.diag(confusion).astype(np.float64)
  union = confusion.sum(0) + np.bincount(t, minlength=num_classes) - tp  # predicted + true - both
  present = union > 0
  return float(100.0 * np.mean(tp[present] / union[present])) if present.any() else 0.0


def patch_labels(classes: np.ndarray, patch: int) -> np.ndarray:
  """Per-pixel classes [N, H, W] (-1 background) -> each patch's majority class [N, H/p, W/p] (background
  as _BACKGROUND), ties to the lower class id."""
  n, h, w = classes.shape
  blocks = np.where(classes < 0, _BACKGROUND, classes).reshape(n, h // patch, patch, w // patch, patch)
  blocks = blocks.transpose(0, 1, 3, 2, 4).reshape(n, h // patch, w // patch, -1)
  counts = (blocks[..., None] == np.arange(NUM_CLASSES + 1)).sum(-2)
  return counts.argmax(-1)


def upsample(patch_predictions: np.ndarray, patch: int) -> np.ndarray:
  """[N, gh, gw] -> [N, gh * p, gw * p], each pixel its patch's prediction."""
  return np.repeat(np.repeat(patch_predictions, patch, axis=1), patch, axis=2)


def fit_probe(features: np.ndarray, labels: np.ndarray, steps: int = 100, weight_decay: float = 1e-4) -> callable:
  """A softmax regression of labels [M] (0.._BACKGROUND) on features [M, D], fitted by full-batch L-BFGS from
  zero; returns features [..., D] -> predicted class [...].

  Solved to its optimum rather than stepped with Adam: a strictly convex problem's optimum moves as little as
  its inputs do, while Adam's normalised steps turn rounding noise in near-zero gradients into full-size
  updates (features that differ by 1e-6 flipped 2.7 % of the patches' predictions; L-BFGS flips about 0.2 %).
  For the same reason the features are scaled by one global standard deviation, not per dimension, which would
  blow a near-constant dimension's rounding noise up to unit size.
  """
  import optax  # pylint: disable=import-outside-toplevel
  mean = features.mean(0)
  scale = float(np.sqrt(features.var(0).mean())) + 1e-12
  x = jnp.asarray((features - mean) / scale, jnp.float32)
  y = jax.nn.one_hot(jnp.asarray(labels), NUM_CLASSES + 1)
  params = {"w": jnp.zeros((x.shape[1], NUM_CLASSES + 1)), "b": jnp.zeros((NUM_CLASSES + 1,))}

  def loss(p):
    logits = x @ p["w"] + p["b"]
    return -jnp.mean(jnp.sum(y * jax.nn.log_softmax(logits), -1)) + weight_decay * jnp.sum(p["w"] ** 2)

  solver = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(loss)

  @jax.jit
  def train(p):
    def step(carry, _):
      p, state = carry
      value, grad = value_and_grad(p, state=state)
      updates, state = solver.update(grad, state, p, value=value, grad=grad, value_fn=loss)
      return (optax.apply_updates(p, updates), state), None
    return jax.lax.scan(step, (p, solver.init(p)), None, length=steps)[0][0]

  params = train(params)
  w, b = np.asarray(params["w"]), np.asarray(params["b"])
  return lambda f: np.argmax(((f - mean) / scale) @ w + b, axis=-1)


def position_probe_r2(probe_tokens: np.ndarray, eval_tokens: np.ndarray, grid: tuple[int, int],
                      ridge: float = 1e-3) -> float:
  """Percent R^2 (mean over row and column) of a linear map from patch tokens [N, gh * gw, D] (in raster order)
  to their (row, column), fitted by ridge regression on `probe_tokens`, scored on `eval_tokens`.

  The tokens are centred and scaled by one global standard deviation (as fit_probe's) and the ridge term keeps
  near-constant channels from amplifying float rounding: plain least squares moved by 4e-4 relative between two
  meshes' features of one run.
  """
  rows, cols = np.divmod(np.arange(grid[0] * grid[1]), grid[1])
  where = np.stack([rows, cols], -1).astype(np.float64)  # [T, 2]
  x = probe_tokens.reshape(-1, probe_tokens.shape[-1]).astype(np.float64)
  mean, scale = x.mean(0), float(np.sqrt(x.var(0).mean())) + 1e-12
  x = (x - mean) / scale
  y = np.tile(where, (len(probe_tokens), 1))
  weights = np.linalg.solve(x.T @ x + ridge * len(x) * np.eye(x.shape[1]), x.T @ (y - y.mean(0)))
  truth = np.tile(where, (len(eval_tokens), 1))
  fitted = ((eval_tokens.reshape(-1, eval_tokens.shape[-1]) - mean) / scale) @ weights + y.mean(0)
  residual = ((fitted - truth) ** 2).sum(0)
  return float(100.0 * np.mean(1.0 - residual / ((truth - truth.mean(0)) ** 2).sum(0)))


def lone_object_scenes(image_size: int, count: int, split: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(images float32 [count, S, S, 3] in [-1, 1], boxes [count, 4] as (y0, x0, y1, x1) fractions of the side):
  scenes of one object each and the tight box of its pixels (tasks.scene_tasks.object_box)."""
  from tasks import scene_tasks, scenes  # pylint: disable=import-outside-toplevel
  images, boxes = [], []
  for index in range(-(-count // 256)):
    batch = scenes.sample_batch(seed, index, 256, image_size, split, max_objects=1, with_scenes=True)
    images.append(batch["image"])
    boxes += [scene_tasks.object_box(scene[0], image_size) for scene in batch["scenes"]]
  return np.concatenate(images)[:count], np.asarray(boxes[:count], np.float32) / image_size


def box_probe(encode_tokens, image_size: int = 32, train_examples: int = 8192, eval_examples: int = 512,
              steps: int = 2000, batch_size: int = 64, learning_rate: float = 3e-3,
              seed: int = 0) -> dict[str, float]:
  """Can a small reader find a lone object in frozen patch tokens? What a frozen-ViT stage 1 has to learn.

  A probe (one learned attention query pooling the tokens, a 128-unit GELU layer, four outputs) regresses the
  box of the one object in train-split scenes from the tokens `encode_tokens(images [N, S, S, 3] in [-1, 1])`
  returns ([N, T, D]), by squared error with Adam for `steps` steps of `batch_size`; it is scored on held-out
  scenes. Tokens that do not say where they are (position_probe_r2 near 0) leave it near the box of the mean
  object: about 8 % and 5 px from the centre at 32 px. The probe reads content only; a PaLI's UL2 also sees
  each visual token's place in the sequence through its relative position biases.

  Returns:
    box_probe_accuracy: percent of held-out boxes with IoU >= 0.5 (refexp_accuracy's threshold);
    box_probe_centre_error: the median distance, in pixels, of the predicted from the true box centre (mean of
    the row and column errors).
  """
  import optax  # pylint: disable=import-outside-toplevel
  from vlm import evaluation, metrics  # pylint: disable=import-outside-toplevel
  train_images, train_boxes = lone_object_scenes(image_size, train_examples, "train", seed)
  eval_images, eval_boxes = lone_object_scenes(image_size, eval_examples, "eval", seed)

  def tokens(images):  # in chunks of one shape (one compile of a jitted encoder)
    encoded = evaluation.embed(lambda _, batch: {"tokens": encode_tokens(batch["image"])}, None, {"image": images})
    return encoded["tokens"].astype(np.float32)

  train_tokens, eval_tokens = tokens(train_images), tokens(eval_images)
  scale = float(train_tokens.std()) + 1e-12
  train_tokens, eval_tokens = train_tokens / scale, eval_tokens / scale
  width = train_tokens.shape[-1]
  keys = jax.random.split(jax.random.key(seed), 4)
  params = {"query": jax.random.normal(keys[0], (width,)) / np.sqrt(width),
            "key": jax.random.normal(keys[1], (width, width)) / np.sqrt(width),
            "hidden": jax.random.normal(keys[2], (width, 128)) / np.sqrt(width),
            "out": jax.random.normal(keys[3], (128, 4)) / np.sqrt(128), "bias": jnp.full((4,), 0.5)}

  def predict(p, x):
    attention = jax.nn.softmax(jnp.einsum("ntd,de,e->nt", x, p["key"], p["query"]), axis=-1)
    pooled = jnp.einsum("nt,ntd->nd", attention, x)
    return jax.nn.gelu(pooled @ p["hidden"]) @ p["out"] + p["bias"]

  optimizer = optax.adam(learning_rate)

  @jax.jit
  def step(p, state, x, y):
    grads = jax.grad(lambda p: jnp.mean((predict(p, x) - y) ** 2))(p)
    updates, state = optimizer.update(grads, state)
    return optax.apply_updates(p, updates), state

  state = optimizer.init(params)
  rng = np.random.default_rng(seed)
  for _ in range(steps):
    rows = rng.integers(len(train_tokens), size=batch_size)
    params, state = step(params, state, train_tokens[rows], train_boxes[rows])
  predicted = np.asarray(predict(params, eval_tokens))
  centre = lambda b: (b[:, :2] + b[:, 2:]) / 2  # noqa: E731
  error = np.abs(centre(predicted) - centre(eval_boxes)).mean(axis=1) * image_size
  return {"box_probe_accuracy": metrics.refexp_accuracy(list(predicted), list(eval_boxes)),
          "box_probe_centre_error": float(np.median(error))}


def knn_accuracy(bank: np.ndarray, bank_labels: np.ndarray, queries: np.ndarray, query_labels: np.ndarray,
                 k: int = 20, temperature: float = 0.07) -> float:
  """Percent of queries whose k nearest bank entries (cosine; features L2-normalised) vote for their label,
  votes weighted by exp(similarity / temperature) as DINO's evaluation weighs them."""
  similarity = queries @ bank.T  # [Q, N]
  k = min(k, bank.shape[0])
  nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
  weights = np.exp(np.take_along_axis(similarity, nearest, 1) / temperature)
  votes = np.zeros((len(queries), int(bank_labels.max()) + 1))
  np.add.at(votes, (np.arange(len(queries))[:, None], bank_labels[nearest]), weights)
  return float(100.0 * np.mean(votes.argmax(1) == query_labels))


class SceneDenseData:
  """The scenes and ground truth the dense evaluations read, generated once per run.

  Args:
    image_size, patch_size: the scenes' side and the tower's patch (image_size a multiple of it).
    eval_scenes: held-out scenes for both segmentation scores; probe_scenes: train-split scenes to fit the
      probe on; knn_bank / knn_queries: single-object images per class in the bank and queried.
  """

  def __init__(self, image_size: int, patch_size: int, eval_scenes: int = 256, probe_scenes: int = 512,
               knn_bank: int = 10, knn_queries: int = 5, seed: int = 4321):
    from tasks import scenes  # pylint: disable=import-outside-toplevel
    if image_size % patch_size:
      raise ValueError(f"dense evaluation: image_size {image_size} is not a multiple of patch_size {patch_size}")
    self.patch = patch_size
    held_out = scenes.sample_batch(seed, 0, eval_scenes, image_size, "eval", with_scenes=True)
    self.eval_images, self.eval_classes = held_out["image"], scenes.class_map(held_out["scenes"], image_size)
    probe = scenes.sample_batch(seed + 1, 0, probe_scenes, image_size, "train", with_scenes=True)
    self.probe_images = probe["image"]
    self.probe_labels = patch_labels(scenes.class_map(probe["scenes"], image_size), patch_size)
    combos = scenes.all_combos()
    bank = scenes.zero_shot_batch(seed + 2, combos, knn_bank, image_size)
    queries = scenes.zero_shot_batch(seed + 3, combos, knn_queries, image_size)
    self.bank_images, self.bank_labels = bank["image"], bank["label"]
    self.query_images, self.query_labels = queries["image"], queries["label"]
    oracle = patch_labels(self.eval_classes, patch_size)
    self.oracle_miou = miou(upsample(oracle, patch_size), self.eval_classes)
    rng = np.random.default_rng(seed)
    self.chance_miou = miou(upsample(rng.integers(0, NUM_CLASSES + 1, oracle.shape), patch_size), self.eval_classes)


def _l2(x: np.ndarray) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def dense_metrics(features, data: SceneDenseData, class_text: np.ndarray) -> dict[str, float]:
  """The module docstring's metrics.

  Args:
    features: images [N, H, W, 3] -> {'tokens' [N, T, D], 'pooled' [N, D'], 'per_token_pooled' [N, T, D']}
      as numpy (encoders.vit.ViT with per_token_pooled=True).
    class_text: [48, D'] L2-normalised text embeddings of the class prompts, in all_combos() order.
  """
  p = data.patch
  out = {"seg_miou_oracle": data.oracle_miou, "seg_miou_chance": data.chance_miou}
  evaluated = features(data.eval_images)
  n, h, w = data.eval_classes.shape
  for key, name in (("tokens", "seg_miou_zero_shot"), ("per_token_pooled", "seg_miou_zero_shot_maskclip")):
    patches = evaluated.get(key)
    if patches is None or patches.shape[-1] != class_text.shape[-1]:  # no MAP head, or another width
      continue
    zero_shot = (_l2(patches) @ class_text.T).argmax(-1).reshape(n, h // p, w // p)
    out[name] = miou(upsample(zero_shot, p), data.eval_classes)
  probe_features = features(data.probe_images)["tokens"]
  predict = fit_probe(probe_features.reshape(-1, probe_features.shape[-1]), data.probe_labels.reshape(-1))
  probed = predict(evaluated["tokens"]).reshape(n, h // p, w // p)
  out["seg_miou_probe"] = miou(upsample(probed, p), data.eval_classes)
  out["position_probe_r2"] = position_probe_r2(probe_features, evaluated["tokens"], (h // p, w // p))
  bank, queries = features(data.bank_images)["pooled"], features(data.query_images)["pooled"]
  out["knn_accuracy"] = knn_accuracy(_l2(bank), data.bank_labels, _l2(queries), data.query_labels)
  return out


__all__ = ["NUM_CLASSES", "miou", "patch_labels", "upsample", "fit_probe", "position_probe_r2", "lone_object_scenes",
           "box_probe", "knn_accuracy", "SceneDenseData", "dense_metrics"]
