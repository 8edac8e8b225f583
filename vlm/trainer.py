"""One trainer for every model: train state, the jitted step, the loop, checkpoints and summaries.

The trainer sees a model only through vlm.base_model.BaseModel (T5X's idea), so SigLIP, PaLI and the UL2
share it: init_variables, loss_fn, config_json, and the defaults it inherits (warm_start, num_tokens, ...);
and a dataset through `dataset.batch(step, batch_size) -> dict[str, np.ndarray]`, deterministic in `step`,
so a resumed run reads exactly the batches the uninterrupted one would have. In a multi-host run every
process computes and feeds its own rows of each batch (`partitioning.read_batch`); process 0 alone prints
and writes MODEL_DIR's files, orbax checkpoints excepted (every process saves its shards).

Resume. A checkpoint holds the parameters, the optimizer state and the step; nothing else is needed to go on
exactly where the run stopped: the step's randomness is `fold_in(key(seed + 1), step)`, a function of the
step, and this project's datasets are pure in the step. A pipeline that does keep a position of its own (an
iterator over files, say) gives `state_dict()` -> JSON-serialisable and `load_state_dict(state)`: its state
is saved inside each checkpoint and restored with it (vlm.checkpoints.Checkpointer). A run resumes from the
newest step whose files match the manifest written at its save (vlm.manifests), and holds MODEL_DIR alone
while it runs (vlm.run_lock).

Models that learn from a teacher (SigLIP with the dense objectives, encoders/objectives) add:

  model.teacher_params -> str | None       regex of the parameter paths that have an EMA copy (vlm.ema)
  model.teacher_momentum(step) -> scalar   the EMA's momentum at a step
  model.init_aux() -> pytree               state outside the parameters, replicated (DINO's centres)
  model.phase(step) -> hashable            which objectives the step runs; the step compiles once per phase
  model.loss_fn_with_teacher(params, batch, rng, *, teacher, aux, phase) -> (loss, metrics, new aux)
  model.learns_from_teacher -> bool         whether to use these (else plain loss_fn)

The teacher copy and the aux state live in the train state (TrainState.teacher, .aux): checkpointed and
resumed with it, the copy sharded like the parameters it copies, neither differentiated nor given optimizer
state. After each update the copy moves to m * teacher + (1 - m) * the new parameters.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import re
import shutil
import time
from typing import Any, Callable, Iterator, Protocol

import flax.linen as nn
import flax.struct
import gin
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils

from vlm import checkpoints
from vlm import ema
from vlm import mfu
from vlm import optim
from vlm import partitioning
from vlm import run_lock
from vlm import summaries
from vlm.base_model import BaseModel


class Dataset(Protocol):
  def batch(self, step: int, batch_size: int) -> dict[str, np.ndarray]: ...
  # Optional: batch_rows(step, batch_size, rows) (vlm.partitioning.read_batch), state_dict() and
  # load_state_dict(state) (a position of its own, saved in checkpoints), health() -> {"<source>/<reason>": n}.


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
  teacher: Any = None  # the EMA copy of model.teacher_params' subtrees (vlm.ema), or None
  aux: Any = None  # the model's state outside the parameters (model.init_aux), or None


@dataclasses.dataclass
class StepFunctions:
  """The jitted pieces of a run, with the shardings they were built for.

  train_step(state, batch, phase=None): `phase` is the model's phase of the step (model.phase), a static
  argument: each phase compiles once.
  """
  init: Callable[[jax.Array], TrainState]
  train_step: Callable[..., tuple[TrainState, dict]]
  abstract_state: TrainState  # ShapeDtypeStructs carrying shardings: the restore target


def learns_from_teacher(model: BaseModel) -> bool:
  """Whether the model takes the extended interface of the module docstring (teacher, aux state, phases)."""
  return bool(model.learns_from_teacher)


def build_step_functions(model: BaseModel, optimizer: optax.GradientTransformation,
                         partitioner: partitioning.Partitioner, example_batch: dict[str, np.ndarray],
                         seed: int = 0, microbatches: int = 1, frozen_params: str | None = None) -> StepFunctions:
  """Shapes and shardings of the train state (without allocating it), its init, and the train step.

  With `microbatches` > 1 the step accumulates the gradient over that many slices of the batch (see
  `_loss_and_grads`): activations of one slice at a time, the update of the whole batch. Parameters whose path
  matches the regex `frozen_params` are neither differentiated nor updated, nor given optimizer state.
  """
  optimizer = optim.freeze(optimizer, frozen_params)
  batch_spec = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in example_batch.items()}
  with partitioner.context():
    boxed = jax.eval_shape(model.init_variables, jax.random.key(seed), batch_spec)["params"]
  param_shardings = partitioner.shardings(nn.get_partition_spec(boxed))
  abstract_params = nn.meta.unbox(boxed)
  partitioner.check_divisible(abstract_params, param_shardings)
  abstract_opt = jax.eval_shape(optimizer.init, abstract_params)
  replicated = partitioner.sharding(None)
  opt_shardings = _opt_state_shardings(abstract_opt, abstract_params, param_shardings, replicated)
  extended = learns_from_teacher(model)
  teacher_pattern = getattr(model, "teacher_params", None) if extended else None
  abstract_teacher = ema.select(abstract_params, teacher_pattern) if teacher_pattern else None
  abstract_aux = jax.eval_shape(model.init_aux) if extended else None
  state_shardings = TrainState(
      step=replicated, params=param_shardings, opt_state=opt_shardings,
      # The copy is shaped like the parameters it copies, and sharded like them (matched by path and shape).
      teacher=_opt_state_shardings(abstract_teacher, abstract_params, param_shardings, replicated),
      aux=jax.tree.map(lambda _: replicated, abstract_aux))
  abstract_state = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=abstract_params, opt_state=abstract_opt,
                 teacher=abstract_teacher, aux=abstract_aux),
      state_shardings)
  batch_shardings = {k: partitioner.batch_sharding(v.ndim) for k, v in example_batch.items()}

  def init(rng):
    params = nn.meta.unbox(model.init_variables(rng, batch_spec)["params"])
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                      teacher=ema.select(params, teacher_pattern) if teacher_pattern else None,
                      aux=model.init_aux() if extended else None)

  base_rng = jax.random.key(seed + 1)

  def train_step(state: TrainState, batch: dict, phase=None):
    rng = jax.random.fold_in(base_rng, state.step)
    frozen = optim.frozen_mask(state.params, frozen_params)
    if extended:
      def loss_fn(params, b, r):
        loss, metrics, aux = model.loss_fn_with_teacher(params, b, r, teacher=state.teacher, aux=state.aux,
                                                        phase=phase)
        return loss, (metrics, aux)
    else:
      def loss_fn(params, b, r):
        loss, metrics = model.loss_fn(params, b, r)
        return loss, (metrics, None)
    (loss, (metrics, aux)), trained_grads = _loss_and_grads(loss_fn, state.params, frozen, batch, rng,
                                                            microbatches)
    # Frozen parameters' zero "gradients" are never computed: the optimizer ignores them (set_to_zero).
    grads = _merge(frozen, trained_grads, [jnp.zeros_like(x) for x in _split(frozen, state.params)[1]])
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "grad_norm": optax.global_norm(trained_grads),
               "param_norm": optax.global_norm(params), **metrics}
    teacher = state.teacher
    if teacher_pattern:
      momentum = model.teacher_momentum(state.step)
      teacher = ema.update(teacher, ema.select(params, teacher_pattern), momentum)
      metrics["teacher_momentum"] = momentum
    tokens = model.num_tokens(batch)
    if tokens is not None:
      metrics["num_tokens"] = tokens
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state, teacher=teacher,
                      aux=aux if extended else None), metrics

  step_of_phase = functools.partial(jax.jit, in_shardings=(state_shardings, batch_shardings),
                                    out_shardings=(state_shardings, replicated), donate_argnums=(0,))
  return StepFunctions(init=jax.jit(init, out_shardings=state_shardings),
                       train_step=_PhasedStep(train_step, step_of_phase), abstract_state=abstract_state)


class _PhasedStep:
  """`train_step(state, batch, phase=None)` jitted once per phase; `.lower(...)` lowers a phase's step."""

  def __init__(self, step_fn, jit):
    self._step_fn, self._jit, self._compiled = step_fn, jit, {}

  def _of(self, phase):
    if phase not in self._compiled:
      self._compiled[phase] = self._jit(functools.partial(self._step_fn, phase=phase))
    return self._compiled[phase]

  def __call__(self, state: TrainState, batch: dict, phase=None):
    return self._of(phase)(state, batch)

  def lower(self, state, batch, phase=None):
    return self._of(phase).lower(state, batch)


def _loss_and_grads(loss_fn, params, frozen, batch: dict, rng: jax.Array, microbatches: int):
  """`value_and_grad` of the loss: on the whole batch, or the mean over `microbatches` equal slices of it.

  Differentiates only the parameters that `frozen` (a tree of bools like `params`) leaves trained, and returns
  their gradients as a flat list in tree order: a frozen tower ahead of every trained parameter (PaLI's ViT in
  stage 1) then runs forward only, with no backward and no gradient buffers.

  Slice i holds rows i, i + k, i + 2k, ... (k = microbatches): each device on 'data' keeps an equal share of
  every slice, so slicing moves no data between devices. For a loss that averages over examples the mean of
  the slices' losses and gradients is the whole batch's; a loss over the batch as a whole (SigLIP's pairs each
  image with every text of the batch) is computed within each slice, as with a batch that size.
  """
  trained, fixed = _split(frozen, params)
  grad_fn = jax.value_and_grad(lambda t, b, r: loss_fn(_merge(frozen, t, fixed), b, r), has_aux=True)
  if microbatches == 1:
    return grad_fn(trained, batch, rng)

  def split(x):  # [batch, ...] -> [microbatches, batch / microbatches, ...]
    x = x.reshape((x.shape[0] // microbatches, microbatches) + x.shape[1:]).swapaxes(0, 1)
    return nn.with_logical_constraint(x, (None, "batch") + (None,) * (x.ndim - 2))

  def accumulate(total, slice_and_index):
    micro, i = slice_and_index
    return jax.tree.map(jnp.add, total, grad_fn(trained, micro, jax.random.fold_in(rng, i))), None

  slices = jax.tree.map(split, batch)
  zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype),
                       jax.eval_shape(grad_fn, trained, jax.tree.map(lambda x: x[0], slices), rng))
  total, _ = jax.lax.scan(accumulate, zeros, (slices, jnp.arange(microbatches)))
  return jax.tree.map(lambda x: x / microbatches, total)


def _split(frozen, params) -> tuple[list, list]:
  """(trained leaves, frozen leaves) of `params`, each in tree order."""
  pairs = list(zip(jax.tree.leaves(frozen), jax.tree.leaves(params)))
  return [x for f, x in pairs if not f], [x for f, x in pairs if f]


def _merge(frozen, trained: list, fixed: list):
  """The tree shaped like `frozen`: the `trained` leaves where it is False, the `fixed` ones where True."""
  mask, treedef = jax.tree.flatten(frozen)
  trained, fixed = iter(trained), iter(fixed)
  return treedef.unflatten([next(fixed) if is_frozen else next(trained) for is_frozen in mask])


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


def _check_model_config(model_dir: str, config: dict) -> None:
  """Fails, before anything compiles, if MODEL_DIR's model_config.json records another model than this one."""
  path = os.path.join(model_dir, checkpoints.MODEL_CONFIG_FILE)
  if os.path.exists(path) and checkpoints.read_json(path) != json.loads(json.dumps(config)):
    raise ValueError(f"MODEL_DIR {model_dir} holds a run of a different model ({path} differs from this "
                     "configuration); use another MODEL_DIR")


def _record_model_config(model_dir: str, config: dict) -> None:
  """Writes model_config.json once the run has started (a run that fails to resume must not rewrite it)."""
  path = os.path.join(model_dir, checkpoints.MODEL_CONFIG_FILE)
  if jax.process_index() == 0 and not os.path.exists(path):  # one writer
    checkpoints.write_json(config, path)


def _check_counts(**counts) -> None:
  """TRAIN_STEPS, BATCH_SIZE, CHECKPOINT_PERIOD, ...: each an integer >= 1, named as the gin macro."""
  for name, value in counts.items():
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f"{name} must be an integer >= 1; got {value!r}")


def _initial_state(model: BaseModel, fns: StepFunctions, partitioner: partitioning.Partitioner,
                   seed: int) -> TrainState:
  """A fresh state; a model with warm-start sources (PaLI) loads its pretrained towers into it.

  The warm start runs outside the mesh context: reading a checkpoint traces other models, whose logical
  axes must not pick up this run's mesh.
  """
  with partitioner.context():
    state = fns.init(jax.random.key(seed))
  sources = model.warm_start_sources()
  if not sources:
    return state
  if jax.process_index() == 0:
    print("warm start: " + "; ".join(f"{part} from {path}" for part, path in sources.items()), flush=True)
  # Gather to host: a parameter may be spread over other processes' devices in a multi-host run.
  params = model.warm_start(multihost_utils.process_allgather(state.params, tiled=True))
  params = jax.device_put(params, jax.tree.map(lambda x: x.sharding, fns.abstract_state.params))
  if state.teacher is not None:  # the teacher starts as a copy of the warm-started parameters
    teacher = ema.select(params, model.teacher_params)
    return state.replace(params=params, teacher=jax.tree.map(jnp.copy, teacher))
  return state.replace(params=params)


def check_model_dir(model_dir: str) -> None:
  """Fails before any compile if MODEL_DIR cannot be written (permissions, a file in the way, a full disk).

  Changes nothing in a one-process run: a directory it must create to probe is removed again (the run creates it
  once it starts). With several processes, which probe at once, it stays: one process removing the directory it
  made would pull it from under another's probe (makedirs raised "File exists" when the directory vanished
  between its mkdir and its check, in a two-process test).
  """
  if not isinstance(model_dir, (str, os.PathLike)) or not os.fspath(model_dir):
    raise ValueError(f"MODEL_DIR must be a directory path, a quoted string in gin (--gin.MODEL_DIR=\"'/tmp/run'\"); "
                     f"got {model_dir!r}")
  probe = os.path.join(model_dir, f".write_test.{jax.process_index()}")  # the processes probe at once
  created = _outermost_missing(model_dir)
  try:
    os.makedirs(model_dir, exist_ok=True)
    try:
      with open(probe, "w") as f:
        f.write("ok")
    finally:
      if os.path.lexists(probe):  # a full disk can refuse the bytes after creating the file
        os.remove(probe)
  except OSError as e:
    raise OSError(f"MODEL_DIR {model_dir} is not writable ({e.strerror}); free space or fix its permissions, "
                  "or choose another with --gin.MODEL_DIR=\"'...'\"") from None
  finally:
    if created and jax.process_count() == 1:
      _remove_empty_dirs(os.path.abspath(model_dir), created)


def _remove_empty_dirs(path: str, top: str) -> None:
  """Removes `path` and its parents up to `top` while they are empty."""
  while True:
    try:
      os.rmdir(path)
    except OSError:
      return
    if path == top:
      return
    path = os.path.dirname(path)


def _data_health(train_data: Dataset) -> dict[str, float]:
  """Bad records the dataset's sources skipped or cut so far, as 'data/<source>/<reason>' counts: a dataset
  that reads files reports them by `health()` (tasks.pipeline.SeqioBatches); generated data has none."""
  health = train_data.health() if hasattr(train_data, "health") else {}
  return {f"data/{key}": float(n) for key, n in health.items()}


def _throughput(model: BaseModel, fns: StepFunctions, example: dict, batch_size: int, microbatches: int,
                partitioner: partitioning.Partitioner, flops_per_example: float | None,
                peak_flops_per_device: float | None) -> mfu.Throughput:
  """What the run reports on speed: MFU only where the devices' peak is known (given, or an accelerator of
  mfu.DEVICES), with the step's FLOPs from `flops_per_example` or else counted in the model's forward pass."""
  peak = peak_flops_per_device or mfu.device_peak_flops(partitioner.mesh.devices.flat[0].device_kind)
  if not peak:
    return mfu.Throughput(batch_size)
  if flops_per_example:
    flops = flops_per_example * batch_size
  else:
    with partitioner.context():
      flops = mfu.model_flops_per_step(model, fns.abstract_state.params, example, microbatches)
  if jax.process_index() == 0:
    print(f"MFU against a peak of {peak / 1e12:g} TFLOP/s per device; {flops / 1e9:.4g} GFLOPs a step", flush=True)
  return mfu.Throughput(batch_size, flops, peak * partitioner.mesh.size)


@gin.configurable(module="vlm.trainer")
def train(model: BaseModel = gin.REQUIRED, train_data: Dataset = gin.REQUIRED, *, model_dir: str = gin.REQUIRED,
          train_steps: int = gin.REQUIRED, batch_size: int = gin.REQUIRED,
          optimizer: Callable[..., optax.GradientTransformation] = gin.REQUIRED,
          learning_rate: optax.Schedule | float = gin.REQUIRED,
          partitioner: partitioning.Partitioner | None = None, checkpoint_period: int = 1000,
          keep_checkpoints: int | None = 3, keep_period: int | None = None, evaluator: Callable | None = None,
          eval_period: int | None = None, log_period: int = 10, seed: int = 0, progress: bool = True,
          frozen_params: str | None = None, microbatches: int = 1, flops_per_example: float | None = None,
          peak_flops_per_device: float | None = None,
          on_start: Callable[[], None] | None = None) -> dict[str, float]:
  """Trains `model` on `train_data` for `train_steps` steps, resuming from MODEL_DIR if it holds a checkpoint.

  Args:
    optimizer: a factory such as `vlm.optim.adamw`, called with `learning_rate`.
    learning_rate: a schedule (step -> lr) or a constant.
    keep_checkpoints: how many of the latest checkpoints to keep (None: all); `keep_period`: also keep every
      checkpoint whose step is a multiple of it.
    evaluator: called as evaluator(model, params) -> {name: value} every `eval_period` steps and at the end.
    frozen_params: regex over parameter paths ('img/.*' freezes PaLI's ViT): no updates, no optimizer state.
    microbatches: accumulate each step's gradient over this many slices of the batch (less activation memory).
    flops_per_example: training FLOPs (forward and backward) of one example, for MFU; None: counted in the
      model's forward pass (`vlm.mfu.model_flops_per_step`).
    peak_flops_per_device: the devices' peak FLOP/s, for MFU; None: looked up by device kind
      (vlm.mfu.DEVICES), and no MFU where unknown (CPUs).
    on_start: called once the state is initialised or restored, before the first step (vlm.train records
      config.gin there, so that a run which cannot start leaves an earlier run's record alone).
  Returns:
    the last evaluation's metrics (empty without an evaluator).
  """
  _check_counts(TRAIN_STEPS=train_steps, BATCH_SIZE=batch_size, CHECKPOINT_PERIOD=checkpoint_period,
                log_period=log_period, microbatches=microbatches,
                **({} if eval_period is None else {"EVAL_PERIOD": eval_period}))
  check_model_dir(model_dir)
  _check_model_and_data(model, train_data)
  _check_frozen_params(frozen_params)
  partitioner = partitioner or partitioning.Partitioner()
  partitioner.check_batch_size(batch_size)
  _check_microbatches(batch_size, microbatches, partitioner)
  schedule = learning_rate if callable(learning_rate) else (lambda _: learning_rate)
  tx = optimizer(learning_rate=learning_rate)
  _check_model_config(model_dir, model.config_json())

  example = _example_batch(partitioner, train_data, batch_size)
  fns = build_step_functions(model, tx, partitioner, example, seed, microbatches, frozen_params)
  n_params = partitioning.count_params(fns.abstract_state.params)
  main_process = jax.process_index() == 0
  writer = _NoSummaries()
  results: dict[str, float] = {}
  with _claimed(model_dir) as mark_started:
    ckpt = checkpoints.Checkpointer(model_dir, checkpoint_period, keep=keep_checkpoints, keep_period=keep_period)
    try:
      start = ckpt.latest_step()
      if start is not None and start > train_steps:
        raise ValueError(f"MODEL_DIR {model_dir} already holds a checkpoint at step {start}, past TRAIN_STEPS="
                         f"{train_steps}; raise TRAIN_STEPS or use another MODEL_DIR")
      if start is None:
        state, start = _initial_state(model, fns, partitioner, seed), 0
      else:
        with partitioner.context():
          state, input_state = ckpt.restore(fns.abstract_state, start)
        _load_input_state(train_data, input_state)
      mark_started()
      _record_model_config(model_dir, model.config_json())
      if on_start is not None and main_process:
        on_start()
      if main_process:
        print(f"model: {n_params:,} parameters; mesh {dict(partitioner.mesh.shape)}; "
              f"{'resuming from step ' + str(start) if start else 'starting from scratch'}; MODEL_DIR={model_dir}",
              flush=True)
      throughput = _throughput(model, fns, example, batch_size, microbatches, partitioner, flops_per_example,
                               peak_flops_per_device)
      if main_process:
        writer = summaries.SummaryWriter(model_dir, start)
      state = _loop(state, start, train_steps, batch_size, fns, partitioner, train_data, ckpt, writer, throughput,
                    schedule, log_period, progress and main_process, lambda step: _phase(model, step),
                    lambda step, st: _evaluate(model, st, evaluator, step, writer, partitioner, eval_period))
      _maybe_save(ckpt, train_steps, state, train_data, force=True)
      ckpt.wait()  # a failed final save is reported before the evaluation, not after it
      if evaluator is not None and start < train_steps:  # a finished run re-run evaluates nothing new
        results = _evaluate(model, state, evaluator, train_steps, writer, partitioner, None, force=True)
    finally:
      ckpt.close()
      writer.close()
  return results


@contextlib.contextmanager
def _claimed(model_dir: str) -> Iterator[Callable[[], None]]:
  """MODEL_DIR, created if missing and held by this run alone (vlm.run_lock) while the block runs.

  Process 0 takes the lock for every process of the run. Yields `mark_started`, to call once the run has a
  state to write: a run that fails before that removes the directories it created (never one it found).
  """
  created = _outermost_missing(model_dir)
  os.makedirs(model_dir, exist_ok=True)
  started = []
  try:
    with _run_lock(model_dir):
      yield lambda: started.append(True)
  except BaseException:
    if created and not started and jax.process_index() == 0:
      shutil.rmtree(created, ignore_errors=True)
    raise


def _outermost_missing(path: str) -> str | None:
  """The outermost directory of `path` that does not exist yet (the one makedirs would create first), or None."""
  path, missing = os.path.abspath(path), None
  while not os.path.exists(path):
    path, missing = os.path.dirname(path), path
  return missing


@contextlib.contextmanager
def _run_lock(model_dir: str) -> Iterator[None]:
  """MODEL_DIR's lock, taken by process 0 alone; the other processes stop with it if it cannot take it."""
  lock, error = None, None
  if jax.process_index() == 0:
    try:
      lock = run_lock.RunLock(model_dir)
      lock.acquire()
    except (run_lock.RunLockError, OSError) as e:
      lock, error = None, e
  if jax.process_count() > 1 and not int(multihost_utils.broadcast_one_to_all(np.int32(error is None))):
    error = error or run_lock.RunLockError(f"process 0 could not take the lock of MODEL_DIR {model_dir}; its "
                                           "error says why")
  if error is not None:
    raise error
  try:
    yield
  finally:
    if lock is not None:
      lock.release()


def _check_model_and_data(model: BaseModel, train_data: Dataset) -> None:
  """The model is a BaseModel, and seqio batches are made by the feature converter it names."""
  if not isinstance(model, BaseModel):
    raise TypeError(f"the model is a {type(model).__name__}, not a vlm.base_model.BaseModel; subclass it")
  converter, wanted = getattr(train_data, "converter", None), model.FEATURE_CONVERTER_CLS
  if converter is not None and wanted is not None and not isinstance(converter, wanted):
    raise ValueError(f"the data's batches are made by {type(converter).__name__} but a {type(model).__name__} "
                     f"takes {wanted.__name__}'s (bind tasks.pipeline.SeqioBatches.feature_converter to it)")


def _check_frozen_params(frozen_params: str | None) -> None:
  """An invalid frozen_params regex, named with the regex error, before anything is built."""
  if frozen_params:
    try:
      re.compile(frozen_params)
    except re.error as e:
      raise ValueError(f"frozen_params={frozen_params!r} is not a valid regular expression ({e}); fix the "
                       "pattern (paths look like 'img/Transformer/encoderblock/...')") from None


def _check_microbatches(batch_size: int, microbatches: int, partitioner: partitioning.Partitioner) -> None:
  """Each microbatch must split evenly over the 'data' devices: checked before anything compiles."""
  ways = partitioner.data_parallel_size
  if batch_size % (microbatches * ways):  # microbatches >= 1: _check_counts
    raise ValueError(f"BATCH_SIZE={batch_size} does not split into microbatches={microbatches} slices of a "
                     f"multiple of the {ways} devices on the 'data' mesh axis; change microbatches or BATCH_SIZE")


def _example_batch(partitioner: partitioning.Partitioner, train_data: Dataset, batch_size: int) -> dict:
  """Shapes of the global batch, from this process's rows of batch 0 (a host may be unable to read the rest).

  A pipeline with a state of its own is put back where it was, so step 0 still reads batch 0.
  """
  position = train_data.state_dict() if hasattr(train_data, "state_dict") else None
  batch = partitioning.read_batch(partitioner, train_data, 0, batch_size)
  if position is not None:
    train_data.load_state_dict(position)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), batch)


def _maybe_save(ckpt: checkpoints.Checkpointer, step: int, state: TrainState, train_data: Dataset,
                force: bool = False) -> None:
  if ckpt.should_save(step, force):
    ckpt.save(step, state, _input_state(train_data))


def _input_state(train_data: Dataset) -> list | None:
  """Every process's input pipeline state, [process 0's, process 1's, ...], or None for a pure pipeline.

  Each process reads its own rows, so each has its own position; orbax writes JSON from process 0 alone, so
  the states are gathered (as bytes: JSON has no array type to gather).
  """
  if not hasattr(train_data, "state_dict"):
    return None
  data = np.frombuffer(json.dumps(train_data.state_dict()).encode(), np.uint8)
  sizes = multihost_utils.process_allgather(np.int32(data.size))
  padded = np.zeros(int(sizes.max()), np.uint8)
  padded[:data.size] = data
  rows = multihost_utils.process_allgather(padded)
  return [json.loads(bytes(row[:size])) for row, size in zip(rows, sizes)]


def _load_input_state(train_data: Dataset, saved: list | None) -> None:
  if not hasattr(train_data, "load_state_dict"):
    return
  if saved is None:
    raise ValueError("the checkpoint holds no input pipeline state, but this run's pipeline keeps one "
                     "(state_dict); resume with the pipeline that wrote the checkpoint, or use another MODEL_DIR")
  if len(saved) != jax.process_count():
    raise ValueError(f"the checkpoint holds the input pipeline state of {len(saved)} processes, but this run has "
                     f"{jax.process_count()}; resume with as many processes")
  train_data.load_state_dict(saved[jax.process_index()])


def _loop(state, start, train_steps, batch_size, fns, partitioner, train_data, ckpt, writer, throughput,
          schedule, log_period, progress, phase_of, maybe_evaluate):
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  bar = tqdm(total=train_steps, initial=start, disable=not progress, unit="step", dynamic_ncols=True,
             mininterval=1.0)
  try:
    window: list[dict] = []
    tic = time.perf_counter()
    with partitioner.context():
      for step in range(start, train_steps):
        batch = partitioning.read_batch(partitioner, train_data, step, batch_size)
        state, metrics = fns.train_step(state, batch, phase_of(step))
        metrics = jax.device_get(metrics)
        _check_finite(metrics, step + 1, ckpt)
        window.append(metrics)
        done = step + 1
        bar.update(1)
        bar.set_postfix(loss=f"{float(metrics['loss']):.4f}")
        if done % log_period == 0 or done == train_steps:
          means = {**throughput.summarise(window, time.perf_counter() - tic), **_data_health(train_data)}
          # learning_rate: the rate this step's update used (optax counts updates from 0).
          writer.write(done, {**means, "learning_rate": float(schedule(done - 1))})
          window, tic = [], time.perf_counter()
        _maybe_save(ckpt, done, state, train_data)
        if done < train_steps:  # the final evaluation runs after the last save
          maybe_evaluate(done, state)
  finally:  # also on an error, so that its message starts a line of its own instead of trailing the bar
    bar.close()
  return state


def _phase(model, step: int):
  """The model's phase at `step` (which objectives run), or None for a model without phases."""
  return model.phase(step) if learns_from_teacher(model) else None


def _check_finite(metrics: dict, step: int, ckpt: checkpoints.Checkpointer) -> None:
  """Halts before a step whose loss, gradient or updated parameters are not finite can be checkpointed."""
  for name in ("loss", "grad_norm", "param_norm"):
    value = float(metrics[name])
    if not math.isfinite(value):
      what = "parameters after the update" if name == "param_norm" else name.replace("_", " ")
      last = ckpt.latest_step()
      kept = f"the last good checkpoint (step {last}) is kept" if last is not None else "no checkpoint was written"
      raise TrainingHalted(f"non-finite {what} ({name}={value}) at step {step}; {kept}. Lower the learning rate "
                           "or check the data (token ids within the model's vocabulary, finite images)")


def _evaluate(model, state, evaluator, step, writer, partitioner, eval_period, force=False):
  if evaluator is None or not (force or (eval_period and step % eval_period == 0)):
    return {}
  with partitioner.context():
    results = evaluator(model, state.params)
  writer.write(step, results, split="eval")
  if jax.process_index() == 0:
    print(f"eval at step {step}: " + ", ".join(f"{k}={v:.4g}" for k, v in results.items()), flush=True)
  return results
