"""One trainer for every model: train state, the jitted step, the loop, checkpoints and summaries.

The trainer sees a model only through a small interface (T5X's idea), so SigLIP, PaLI and the UL2 share it:

  model.init_variables(rng, batch) -> {'params': ...}   boxed with logical axis names
  model.loss_fn(params, batch, rng) -> (loss, metrics)   scalars
  model.config_json() -> dict                             written to MODEL_DIR/model_config.json

and a dataset through `dataset.batch(step, batch_size) -> dict[str, np.ndarray]`, deterministic in `step`,
so a resumed run reads exactly the batches the uninterrupted one would have. In a multi-host run every
process computes and feeds its own rows of each batch (`partitioning.read_batch`); process 0 alone prints
and writes MODEL_DIR's files, orbax checkpoints excepted (every process saves its shards).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any, Callable, Protocol

import flax.linen as nn
import flax.struct
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils

from vlm import checkpoints
from vlm import optim
from vlm import partitioning
from vlm import summaries


class Model(Protocol):
  def init_variables(self, rng: jax.Array, batch: dict) -> dict: ...
  def loss_fn(self, params: Any, batch: dict, rng: jax.Array) -> tuple[jax.Array, dict]: ...
  def config_json(self) -> dict: ...


class Dataset(Protocol):
  def batch(self, step: int, batch_size: int) -> dict[str, np.ndarray]: ...


class _NoSummaries:
  """The SummaryWriter of processes other than 0: one process writes a run's numbers."""

  def write(self, *args, **kwargs) -> None:
    pass

  def close(self) -> None:
    pass


class TrainingHalted(RuntimeError):
  """Training stopped on purpose (non-finite loss); the message says at which step and what was kept."""


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


@dataclasses.dataclass
class StepFunctions:
  """The jitted pieces of a run, with the shardings they were built for."""
  init: Callable[[jax.Array], TrainState]
  train_step: Callable[[TrainState, dict], tuple[TrainState, dict]]
  abstract_state: TrainState  # ShapeDtypeStructs carrying shardings: the restore target


def build_step_functions(model: Model, optimizer: optax.GradientTransformation,
                         partitioner: partitioning.Partitioner, example_batch: dict[str, np.ndarray],
                         seed: int = 0) -> StepFunctions:
  """Shapes and shardings of the train state (without allocating it), its init, and the train step."""
  batch_spec = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in example_batch.items()}
  with partitioner.context():
    boxed = jax.eval_shape(model.init_variables, jax.random.key(seed), batch_spec)["params"]
  param_shardings = partitioner.shardings(nn.get_partition_spec(boxed))
  abstract_params = nn.meta.unbox(boxed)
  partitioner.check_divisible(abstract_params, param_shardings)
  abstract_opt = jax.eval_shape(optimizer.init, abstract_params)
  replicated = partitioner.sharding(None)
  opt_shardings = _opt_state_shardings(abstract_opt, abstract_params, param_shardings, replicated)
  state_shardings = TrainState(step=replicated, params=param_shardings, opt_state=opt_shardings)
  abstract_state = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=abstract_params, opt_state=abstract_opt),
      state_shardings)
  batch_shardings = {k: partitioner.batch_sharding(v.ndim) for k, v in example_batch.items()}

  def init(rng):
    params = nn.meta.unbox(model.init_variables(rng, batch_spec)["params"])
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))

  base_rng = jax.random.key(seed + 1)

  def train_step(state: TrainState, batch: dict):
    rng = jax.random.fold_in(base_rng, state.step)
    (loss, metrics), grads = jax.value_and_grad(model.loss_fn, has_aux=True)(state.params, batch, rng)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "grad_norm": optax.global_norm(grads), "param_norm": optax.global_norm(params),
               **metrics}
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return StepFunctions(
      init=jax.jit(init, out_shardings=state_shardings),
      train_step=jax.jit(train_step, in_shardings=(state_shardings, batch_shardings),
                         out_shardings=(state_shardings, replicated), donate_argnums=(0,)),
      abstract_state=abstract_state)


def _opt_state_shardings(abstract_opt, abstract_params, param_shardings, replicated):
  """Optimizer moments shaped like their parameter are sharded like it; factored or scalar stats replicate.

  A moment's tree path ends with its parameter's path (mu/img/Transformer/...), whatever wraps it (chains,
  masks, multi_transform for frozen parameters), so the match is by that trailing path and the shape.
  """
  params = {_dict_keys(path): (leaf.shape, sharding) for (path, leaf), sharding in zip(
      jax.tree_util.tree_flatten_with_path(abstract_params)[0], jax.tree.leaves(param_shardings))}

  def sharding_of(path, leaf):
    keys = _dict_keys(path)
    for start in range(len(keys)):
      shape, sharding = params.get(keys[start:], (None, None))
      if shape is not None:
        return sharding if shape == leaf.shape else replicated
    return replicated

  return jax.tree_util.tree_map_with_path(sharding_of, abstract_opt)


def _dict_keys(path) -> tuple[str, ...]:
  """The trailing run of dict keys of a tree path (the parameter's name inside optimizer state)."""
  keys = []
  for key in reversed(path):
    if not isinstance(key, jax.tree_util.DictKey):
      break
    keys.append(str(key.key))
  return tuple(reversed(keys))


def _write_or_check_model_config(model_dir: str, config: dict) -> None:
  """Writes model_config.json, or checks that an existing run in MODEL_DIR trained the same model."""
  path = os.path.join(model_dir, checkpoints.MODEL_CONFIG_FILE)
  if os.path.exists(path):
    with open(path) as f:
      if json.load(f) != json.loads(json.dumps(config)):
        raise ValueError(f"MODEL_DIR {model_dir} holds a run of a different model ({path} differs from this "
                         "configuration); use another MODEL_DIR")
    return
  if jax.process_index() == 0:  # one writer; every process checks a file that is already there
    checkpoints.write_json(config, path)


def _initial_state(model: Model, fns: StepFunctions, seed: int) -> TrainState:
  """A fresh state; a model with `warm_start(params) -> params` (PaLI) loads its pretrained towers into it."""
  state = fns.init(jax.random.key(seed))
  if not hasattr(model, "warm_start"):
    return state
  # Gather to host: a parameter may be spread over other processes' devices in a multi-host run.
  params = model.warm_start(multihost_utils.process_allgather(state.params, tiled=True))
  params = jax.device_put(params, jax.tree.map(lambda x: x.sharding, fns.abstract_state.params))
  return state.replace(params=params)


def check_model_dir(model_dir: str) -> None:
  """Fails before any compile if MODEL_DIR cannot be written."""
  try:
    os.makedirs(model_dir, exist_ok=True)
    probe = os.path.join(model_dir, f".write_test.{jax.process_index()}")  # the processes probe at once
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise OSError(f"MODEL_DIR {model_dir} is not writable ({e.strerror}); choose another with "
                  "--gin.MODEL_DIR=\"'...'\"") from None


@gin.configurable(module="vlm.trainer")
def train(model: Model = gin.REQUIRED, train_data: Dataset = gin.REQUIRED, *, model_dir: str = gin.REQUIRED,
          train_steps: int = gin.REQUIRED, batch_size: int = gin.REQUIRED,
          optimizer: Callable[..., optax.GradientTransformation] = gin.REQUIRED,
          learning_rate: optax.Schedule | float = gin.REQUIRED,
          partitioner: partitioning.Partitioner | None = None, checkpoint_period: int = 1000,
          keep_checkpoints: int | None = 3, evaluator: Callable | None = None, eval_period: int | None = None,
          log_period: int = 10, seed: int = 0, progress: bool = True,
          frozen_params: str | None = None) -> dict[str, float]:
  """Trains `model` on `train_data` for `train_steps` steps, resuming from MODEL_DIR if it holds a checkpoint.

  Args:
    optimizer: a factory such as `vlm.optim.adamw`, called with `learning_rate`.
    learning_rate: a schedule (step -> lr) or a constant.
    evaluator: called as evaluator(model, params) -> {name: value} every `eval_period` steps and at the end.
    frozen_params: regex over parameter paths ('img/.*' freezes PaLI's ViT): no updates, no optimizer state.
  Returns:
    the last evaluation's metrics (empty without an evaluator).
  """
  check_model_dir(model_dir)
  partitioner = partitioner or partitioning.Partitioner()
  partitioner.check_batch_size(batch_size)
  schedule = learning_rate if callable(learning_rate) else (lambda _: learning_rate)
  tx = optim.freeze(optimizer(learning_rate=learning_rate), frozen_params)
  _write_or_check_model_config(model_dir, model.config_json())

  # Shapes of the global batch, from this process's rows of batch 0 (a host may be unable to read the rest).
  example = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                         partitioning.read_batch(partitioner, train_data, 0, batch_size))
  fns = build_step_functions(model, tx, partitioner, example, seed)
  n_params = partitioning.count_params(fns.abstract_state.params)
  ckpt = checkpoints.Checkpointer(model_dir, checkpoint_period, keep=keep_checkpoints)
  start = ckpt.latest_step()
  if start is not None and start > train_steps:
    raise ValueError(f"MODEL_DIR {model_dir} already holds a checkpoint at step {start}, past TRAIN_STEPS="
                     f"{train_steps}; raise TRAIN_STEPS or use another MODEL_DIR")
  with partitioner.context():
    if start is None:
      state, start = _initial_state(model, fns, seed), 0
    else:
      state = ckpt.restore(fns.abstract_state)
  main_process = jax.process_index() == 0
  if main_process:
    print(f"model: {n_params:,} parameters; mesh {dict(partitioner.mesh.shape)}; "
          f"{'resuming from step ' + str(start) if start else 'starting from scratch'}; MODEL_DIR={model_dir}",
          flush=True)
  writer = summaries.SummaryWriter(model_dir, start) if main_process else _NoSummaries()
  progress = progress and main_process
  results: dict[str, float] = {}
  try:
    state = _loop(state, start, train_steps, batch_size, fns, partitioner, train_data, ckpt, writer,
                  schedule, log_period, progress, lambda step, st: _evaluate(model, st, evaluator, step, writer,
                                                                             partitioner, eval_period))
    ckpt.maybe_save(train_steps, state, force=True)
    if evaluator is not None and start < train_steps:  # a finished run re-run evaluates nothing new
      results = _evaluate(model, state, evaluator, train_steps, writer, partitioner, None, force=True)
  finally:
    ckpt.close()
    writer.close()
  return results


def _loop(state, start, train_steps, batch_size, fns, partitioner, train_data, ckpt, writer, schedule,
          log_period, progress, maybe_evaluate):
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  bar = tqdm(total=train_steps, initial=start, disable=not progress, unit="step", dynamic_ncols=True,
             mininterval=1.0)
  window: list[dict] = []
  tic = time.perf_counter()
  with partitioner.context():
    for step in range(start, train_steps):
      batch = partitioning.read_batch(partitioner, train_data, step, batch_size)
      state, metrics = fns.train_step(state, batch)
      metrics = jax.device_get(metrics)
      if not math.isfinite(float(metrics["loss"])):
        raise TrainingHalted(f"non-finite loss ({float(metrics['loss'])}) at step {step + 1}; the last good "
                             f"checkpoint (step {ckpt.latest_step()}) is kept. Lower the learning rate or "
                             "check the data")
      window.append(metrics)
      done = step + 1
      bar.update(1)
      bar.set_postfix(loss=f"{float(metrics['loss']):.4f}")
      if done % log_period == 0 or done == train_steps:
        elapsed = time.perf_counter() - tic
        means = {k: float(np.mean([m[k] for m in window])) for k in window[0]}
        # learning_rate: the rate this step's update used (optax counts updates from 0).
        means.update(learning_rate=float(schedule(done - 1)), steps_per_sec=len(window) / elapsed,
                     examples_per_sec=len(window) * batch_size / elapsed)
        writer.write(done, means)
        window, tic = [], time.perf_counter()
      ckpt.maybe_save(done, state)
      if done < train_steps:  # the final evaluation runs after the last save
        maybe_evaluate(done, state)
  bar.close()
  return state


def _evaluate(model, state, evaluator, step, writer, partitioner, eval_period, force=False):
  if evaluator is None or not (force or (eval_period and step % eval_period == 0)):
    return {}
  with partitioner.context():
    results = evaluator(model, state.params)
  writer.write(step, results, split="eval")
  if jax.process_index() == 0:
    print(f"eval at step {step}: " + ", ".join(f"{k}={v:.4g}" for k, v in results.items()), flush=True)
  return results
