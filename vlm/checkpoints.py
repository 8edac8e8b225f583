"""Checkpoints: orbax save / restore / resume of the train state, and the file formats of other systems.

- `Checkpointer` wraps an orbax CheckpointManager under MODEL_DIR/checkpoints: asynchronous saves of the train
  state (and of an input pipeline's own state), atomic (each step is written into a temporary directory and
  renamed once complete; only complete steps are listed or restored), the last N and every K-th kept. Each
  step records a manifest of its files (vlm.manifests) before its commit; a restore checks it and falls back to
  the newest step that is intact.
- Foreign formats: HF safetensors (read / write, atomic) and big_vision .npz (read with pickle disabled).
- Parameter trees are nested dicts; `flatten` / `unflatten` use 'a/b/c' paths, as big_vision's npz does.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import re
import tempfile
import warnings
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from vlm import manifests

MODEL_CONFIG_FILE = "model_config.json"  # the model's geometry, written into MODEL_DIR by training


class CheckpointError(ValueError):
  """A checkpoint that cannot be read into the requested model; the message names the thing at fault."""


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """{'a': {'b': x}} -> {'a/b': x}."""
  flat = {}
  for key, value in tree.items():
    path = f"{prefix}/{key}" if prefix else str(key)
    if isinstance(value, Mapping):
      flat.update(flatten(value, path))
    else:
      flat[path] = value
  return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  """{'a/b': x} -> {'a': {'b': x}}."""
  tree: dict[str, Any] = {}
  for path, value in flat.items():
    node = tree
    *parents, leaf = path.split("/")
    for key in parents:
      node = node.setdefault(key, {})
    node[leaf] = value
  return tree


def check_shapes(expected: Mapping[str, Any], got: Mapping[str, Any], source: str) -> None:
  """Raises CheckpointError naming the first missing, unexpected or mis-shaped parameter.

  Args:
    expected: tree of arrays or ShapeDtypeStructs the model wants.
    got: tree of arrays read from `source`.
  """
  want, have = flatten(expected), flatten(got)
  for path in want:
    if path not in have:
      raise CheckpointError(f"{source}: parameter {path} is missing (the checkpoint has "
                            f"{len(have)} others): it holds another architecture than the model config's")
    if tuple(want[path].shape) != tuple(np.shape(have[path])):
      raise CheckpointError(f"{source}: parameter {path} has shape {tuple(np.shape(have[path]))} but the "
                            f"model config expects {tuple(want[path].shape)}")
  extra = sorted(set(have) - set(want))
  if extra:
    raise CheckpointError(f"{source}: parameter {extra[0]} is not in the model "
                          f"({len(extra)} unexpected in all): it holds another architecture than the model config's")


_BLOCK = re.compile(r"^(.*)_(\d+)$")


def stack_layers(tree: Mapping[str, Any], name: str = "encoderblock") -> dict[str, Any]:
  """Turns sibling subtrees name_0 .. name_{n-1} into one subtree `name` with a leading layer axis (scan)."""
  out: dict[str, Any] = {}
  blocks: dict[int, Any] = {}
  for key, value in tree.items():
    m = _BLOCK.match(key)
    if m and m.group(1) == name:
      blocks[int(m.group(2))] = value
    elif isinstance(value, Mapping):
      out[key] = stack_layers(value, name)
    else:
      out[key] = value
  if blocks:
    layers = [blocks[i] for i in range(len(blocks))]
    out[name] = jax.tree.map(lambda *xs: np.stack(xs), *layers)
  return out


def unstack_layers(tree: Mapping[str, Any], name: str = "encoderblock") -> dict[str, Any]:
  """The inverse of `stack_layers`."""
  out: dict[str, Any] = {}
  for key, value in tree.items():
    if key == name:
      depth = jax.tree.leaves(value)[0].shape[0]
      for i in range(depth):
        out[f"{name}_{i}"] = jax.tree.map(lambda x, i=i: np.asarray(x)[i], value)
    elif isinstance(value, Mapping):
      out[key] = unstack_layers(value, name)
    else:
      out[key] = value
  return out


# ----------------------------------------------------------------------------------------------------------
# Foreign formats.
# ----------------------------------------------------------------------------------------------------------

def read_json(path: str) -> dict:
  """A JSON object from a config file, or a CheckpointError naming the file."""
  obj = _load_json(path)
  if not isinstance(obj, dict):
    raise CheckpointError(f"{path}: expected a JSON object, got {type(obj).__name__}")
  return obj


def _load_json(path: str) -> Any:
  """The JSON value in a file, or a CheckpointError naming the file."""
  try:
    with open(path) as f:
      return json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    if os.path.getsize(path) == 0:
      raise CheckpointError(f"{path} is empty; expected JSON") from None
    raise CheckpointError(f"{path}: not valid JSON ({e})") from None


def read_hf_weights(directory: str) -> tuple[dict[str, np.ndarray], str]:
  """(tensors, where) of a HF model directory: model.safetensors, or the shards its index file lists.

  `save_pretrained` splits models over its max_shard_size into model-0000i-of-0000n.safetensors files and a
  model.safetensors.index.json whose weight_map names each tensor's file.
  """
  single = os.path.join(directory, "model.safetensors")
  index = f"{single}.index.json"
  if os.path.isfile(single):
    return read_safetensors(single), single
  if not os.path.isfile(index):
    raise CheckpointError(f"{directory} has config.json but neither model.safetensors nor its sharded "
                          "model.safetensors.index.json (pytorch .bin files are not read: they are pickles; "
                          "re-save with transformers' save_pretrained(..., safe_serialization=True))")
  weight_map = read_json(index).get("weight_map")
  if not isinstance(weight_map, dict):
    raise CheckpointError(f"{index}: no weight_map object naming each tensor's file")
  tensors = {}
  for shard in sorted(set(weight_map.values())):
    tensors.update(read_safetensors(os.path.join(directory, os.path.basename(shard))))
  return tensors, index


def read_safetensors(path: str) -> dict[str, np.ndarray]:
  from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
  try:
    return load_file(path)
  except Exception as e:  # safetensors raises several types for a damaged file
    raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None


def write_safetensors(tensors: Mapping[str, np.ndarray], path: str) -> None:
  """Writes atomically: a temporary file in the same directory, renamed when complete."""
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp")
  os.close(fd)
  try:
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, tmp, metadata={"format": "pt"})
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def write_json(obj: Any, path: str) -> None:
  """Atomic JSON write (temporary file, then rename)."""
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1)
  os.replace(tmp, path)


def read_npz(path: str) -> dict[str, np.ndarray]:
  """A big_vision .npz as a flat {'img/embedding/kernel': array} dict (the 'params/' prefix dropped).

  Pickle stays disabled: an npz of plain arrays never needs it, and an untrusted file must not run code.
  """
  try:
    with np.load(path, allow_pickle=False) as npz:
      flat = {k: npz[k] for k in npz.files}
  except (OSError, ValueError) as e:
    raise CheckpointError(f"{path}: not a readable .npz of arrays ({e})") from None
  return {k.removeprefix("params/"): v for k, v in flat.items()}


def write_npz(arrays: Mapping[str, np.ndarray], path: str) -> None:
  """Writes an .npz of plain arrays atomically (a temporary file in the same directory, then renamed)."""
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp.npz")
  os.close(fd)
  try:
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


# ----------------------------------------------------------------------------------------------------------
# Orbax checkpoints of the train state.
# ----------------------------------------------------------------------------------------------------------

CHECKPOINTS_DIR = "checkpoints"  # under MODEL_DIR
DAMAGED_DIR = "damaged_checkpoints"  # under MODEL_DIR: steps whose files no longer match their manifest
_ORBAX_TMP_SUFFIX = ".orbax-checkpoint-tmp"  # orbax 0.12's name for a step being written (setup.py pins it)
_STATE, _INPUT = "state", "input_pipeline"  # the items of a step: the train state, the input pipeline's state


class CheckpointSaveError(OSError):
  """Writing a checkpoint failed (disk full, permissions, quota); the message names the directory and what to do."""


def complete_steps(model_dir: str) -> list[int]:
  """The steps under MODEL_DIR/checkpoints whose save finished, oldest first. Reads the disk, changes nothing.

  Orbax 0.12 on a POSIX path writes step N into `N.orbax-checkpoint-tmp`, writes commit_success.txt into it
  once every item is complete, and only then renames it to `N`; on GCS it writes `N` in place and marks it with
  the same file last. So the file is the test, not the name (which orbax itself trusts on POSIX): a directory
  copied or deleted half-way is not taken for a checkpoint either.
  """
  directory = os.path.join(model_dir, CHECKPOINTS_DIR)
  if not os.path.isdir(directory):
    return []
  commit = ocp.path.atomicity_types.COMMIT_SUCCESS_FILE
  return sorted(int(name) for name in os.listdir(directory)
                if name.isdigit() and os.path.isfile(os.path.join(directory, name, commit)))


class _DropOrbaxTracebacks(logging.Filter):
  """Orbax logs a failed background save with its traceback, then raises the error again in the main thread,
  where `Checkpointer` turns it into one line that says what to do; the log keeps its message, not the traceback
  (--debug still shows the traceback, of the raised error)."""

  def filter(self, record: logging.LogRecord) -> bool:
    if f"{os.sep}orbax{os.sep}" in record.pathname:
      record.exc_info, record.exc_text = None, None
    return True


class _DropOrbaxNoise(logging.Filter):
  """Drops orbax warnings that start with one of `noise`: by default the two that precede every restore and say
  nothing wrong (a step's items carry no metadata file of their own, the step has one; a read-only manager was
  asked for, restore_params asks for one)."""

  def __init__(self, noise: tuple[str, ...] = ("Metadata file does not exist: ", "Given directory is read only=")):
    super().__init__()
    self.noise = noise

  def filter(self, record: logging.LogRecord) -> bool:
    return not (f"{os.sep}orbax{os.sep}" in record.pathname and str(record.msg).startswith(self.noise))


_ORBAX_LOG_FILTERS = (_DropOrbaxTracebacks(), _DropOrbaxNoise())


def _filter_orbax_logs() -> None:
  for log_filter in _ORBAX_LOG_FILTERS:  # adding a filter twice keeps one
    logging.getLogger("absl").addFilter(log_filter)


class CheckpointWarning(UserWarning):
  """A checkpoint step that is skipped (damaged) or restored without verification (saved before manifests)."""


def _reason(e: Exception) -> str:
  """The first line of an orbax / tensorstore error, without the repr of a bound method tensorstore appends."""
  text = str(e).strip().split("See full TensorStore details")[0].strip()
  return text.splitlines()[0] if text else type(e).__name__


# The JSON files of a step (orbax's metadata; the input pipeline's state), which orbax parses with no word of
# which file failed.
# (Not the step's _CHECKPOINT_METADATA: orbax restores the same arrays without it, logging its own error.)
_JSON_FILES = (f"{_STATE}/_METADATA", f"{_STATE}/_sharding", f"{_INPUT}/metadata")


def check_step(step_dir: str) -> str | None:
  """None if the files of `step_dir` match its manifest, else what does not (the first damaged file).

  A step saved before manifests existed has none: only its JSON metadata can be checked (an empty or cut
  file), and it is restored otherwise unverified, with a CheckpointWarning saying so.
  """
  if manifests.exists(step_dir):
    return manifests.check(step_dir)
  paths = [os.path.join(step_dir, rel) for rel in _JSON_FILES]
  paths += sorted(glob.glob(os.path.join(step_dir, _STATE, "array_metadatas", "*")))
  for path in paths:
    if os.path.isfile(path):
      try:
        _load_json(path)
      except CheckpointError as e:
        return str(e)
  warnings.warn(f"{step_dir} has no manifest (saved before checkpoints recorded one): restoring it unverified",
                CheckpointWarning, stacklevel=2)
  return None


def _warn_damaged(model_dir: str, step: int, problem: str, done: str = "") -> None:
  """The one warning a skipped damaged step gets; `done`: what was done with it, if anything."""
  warnings.warn(f"checkpoint {os.path.join(model_dir, CHECKPOINTS_DIR, str(step))} is damaged ({problem}); "
                f"skipping it{done}", CheckpointWarning, stacklevel=3)


def newest_intact_step(model_dir: str) -> tuple[int | None, list[tuple[int, str]]]:
  """(the newest complete step whose files check out or None, [(step, what is wrong) of newer damaged steps]).

  Reads the disk, changes nothing.
  """
  damaged = []
  for step in reversed(complete_steps(model_dir)):
    problem = check_step(os.path.join(model_dir, CHECKPOINTS_DIR, str(step)))
    if problem is None:
      return step, damaged
    damaged.append((step, problem))
  return None, damaged


def _save_replicated_arrays_whole_on_cpu() -> None:
  """On CPU, orbax saves each replicated array from one device instead of splitting it across its replicas.

  Orbax's replica-parallel save writes a slice of a replicated array from each replica, which spreads the work
  over the hosts of a pod (it is the default on TPU; orbax turns it off on GPU). On a CPU the "devices" share
  one memory and one writer, so the split buys nothing, and it costs a compiled slice per array shape per
  device: ~100 compilations (8 s) at a tiny run's first save on 8 simulated devices.
  """
  if jax.default_backend() == "cpu":
    # Orbax warns of every override; this one is ours, so its warning is dropped while it registers (and only
    # then: a user's own override of the jax.Array handler still shows).
    ours = _DropOrbaxNoise(("Type handler registry type ",))
    logging.getLogger("absl").addFilter(ours)
    try:
      ocp.type_handlers.register_type_handler(jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False),
                                              override=True)
    finally:
      logging.getLogger("absl").removeFilter(ours)


class Checkpointer:
  """Asynchronous, atomic checkpoints of a run under MODEL_DIR/checkpoints.

  A step holds the train state (parameters, optimizer state, step) and, when the input pipeline keeps a state of
  its own, that state as JSON, both inside the one step directory, so both are committed at once (see
  `complete_steps`). A save killed half-way leaves only a temporary directory, which is never listed or restored
  and which the next Checkpointer deletes.

  `save` returns once the arrays are copied to host memory; they are written by a background thread while
  training goes on, which then writes the step's manifest (`_write_manifest`) and commits the step. A write
  that fails surfaces at the next `save`, `wait` or `close` as CheckpointSaveError.

  Kept: the last `keep` steps (None: all), and every step that is a multiple of `keep_period`.
  """

  def __init__(self, model_dir: str, period: int, keep: int | None = 3, keep_period: int | None = None):
    if keep is not None and keep < 1:
      raise ValueError(f"keep_checkpoints={keep}: keep at least the latest checkpoint (None keeps all)")
    self.model_dir = os.path.abspath(model_dir)
    self.directory = os.path.join(self.model_dir, CHECKPOINTS_DIR)
    self.period = period
    self._saving: int | None = None  # the step of the save in flight (orbax runs one at a time)
    policies = [ocp.checkpoint_managers.LatestN(keep)]
    if keep_period:
      policies.append(ocp.checkpoint_managers.EveryNSteps(keep_period))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
        async_options=ocp.AsyncOptions(post_finalization_callback=self._write_manifest),
        cleanup_tmp_directories=True, create=True)
    _filter_orbax_logs()
    _save_replicated_arrays_whole_on_cpu()
    self.manager = ocp.CheckpointManager(self.directory, item_names=(_STATE, _INPUT), options=options)

  def _write_manifest(self) -> None:
    """Orbax calls this in its background thread once every process has written its files of the step, before
    it commits the step: a committed step has its manifest. One process lists the files of all."""
    if jax.process_index() != 0:
      return
    final = os.path.join(self.directory, str(self._saving))
    tmp = f"{final}{_ORBAX_TMP_SUFFIX}"  # POSIX: written under this name, renamed at commit; GCS: in place
    manifests.write(tmp if os.path.isdir(tmp) else final)

  def latest_step(self) -> int | None:
    """The newest complete step on disk whose files match its manifest, once the save in flight has finished.

    Damaged newer steps are moved out of the way, to MODEL_DIR/damaged_checkpoints (a warning names each), so
    that the run saves those steps again. In a multi-host run process 0 checks and every process gets its
    answer, so all restore the same step even on a file system that shows them a directory at different times.
    """
    self.wait()
    step = -1
    if jax.process_index() == 0:
      found, damaged = newest_intact_step(self.model_dir)
      for bad, problem in damaged:
        _warn_damaged(self.model_dir, bad, problem, f" (moved to {self._move_aside(bad)})")
      if damaged:
        self.manager.reload()
      step = -1 if found is None else found
    if jax.process_count() > 1:
      step = int(multihost_utils.broadcast_one_to_all(np.int32(step)))
      self.manager.reload()
    return None if step < 0 else step

  def _move_aside(self, step: int) -> str:
    """Moves a damaged step to MODEL_DIR/damaged_checkpoints/<step>[.n] (kept for a post-mortem); its path."""
    aside = os.path.join(self.model_dir, DAMAGED_DIR)
    os.makedirs(aside, exist_ok=True)
    target, n = os.path.join(aside, str(step)), 0
    while os.path.exists(target):
      n += 1
      target = os.path.join(aside, f"{step}.{n}")
    os.rename(os.path.join(self.directory, str(step)), target)
    return target

  def should_save(self, step: int, force: bool = False) -> bool:
    """Whether `step` ends a period (or `force`) and is not saved (or being saved) already."""
    return (force or step % self.period == 0) and step not in self.manager.all_steps()

  def save(self, step: int, state: Any, input_state: Any = None) -> None:
    """Starts saving `state` (a pytree of arrays) and `input_state` (JSON-serialisable, or None) as `step`."""
    items = {_STATE: ocp.args.StandardSave(state)}
    if input_state is not None:
      items[_INPUT] = ocp.args.JsonSave(input_state)
    with self._reporting_failures():
      self.manager.wait_until_finished()  # the manifest of the save in flight reads `_saving`
      self._saving = step
      self.manager.save(step, args=ocp.args.Composite(**items), force=True)

  def restore(self, abstract_state: Any, step: int) -> tuple[Any, Any]:
    """Step `step` as (state, input pipeline state or None).

    The state takes the structure, shapes, dtypes and shardings of `abstract_state` (ShapeDtypeStructs), so a
    checkpoint written on one mesh restores onto another: orbax reads each device's slice of each array.
    """
    source = os.path.join(self.directory, str(step))
    if getattr(abstract_state, "params", None) is not None:
      _check_saved_param_shapes(abstract_state.params, source)
    items = {_STATE: ocp.args.StandardRestore(abstract_state)}
    if os.path.isdir(os.path.join(source, _INPUT)):
      items[_INPUT] = ocp.args.JsonRestore()
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # pylint: disable=broad-except  (orbax and tensorstore raise many types)
      raise CheckpointError(f"{source} does not restore into this run's state ({_reason(e)}); "
                            f"{_checked_what(source)}. Resume with the configuration that saved it, or use "
                            "another MODEL_DIR") from e
    return restored[_STATE], (restored[_INPUT] if _INPUT in items else None)

  def wait(self) -> None:
    """Blocks until the save in flight (if any) is complete on disk."""
    with self._reporting_failures():
      self.manager.wait_until_finished()

  def close(self) -> None:
    """Finishes the save in flight, then stops orbax's threads."""
    try:
      self.wait()
    finally:
      self.manager.close()

  @contextlib.contextmanager
  def _reporting_failures(self):
    """Any error from a save becomes CheckpointSaveError: what failed, what is kept, what to do."""
    try:
      yield
    except Exception as e:  # pylint: disable=broad-except  (orbax and tensorstore raise many types)
      steps = complete_steps(self.model_dir)
      kept = f"the last complete checkpoint (step {steps[-1]}) is kept" if steps else "no complete checkpoint exists"
      raise CheckpointSaveError(f"saving a checkpoint under {self.directory} failed ({_reason(e)}); {kept}. Free disk "
                                "space or fix the directory's permissions, then run the same command again to "
                                "resume") from e


def _checked_what(step_dir: str) -> str:
  """What a failed restore of a step that passed `check_step` leaves as its cause, as far as was checked."""
  if manifests.exists(step_dir):
    return "its files match their manifest, so what it holds differs from what is asked of it"
  return "it has no manifest, so whether its files are damaged was not checked"


def _check_saved_param_shapes(abstract_params: Any, step_dir: str, leave_out: Sequence[str] = ()) -> None:
  """Names the first parameter whose shape in checkpoint `step_dir` differs from the model's (orbax does not).

  leave_out: top-level parameter subtrees the checkpoint may hold that are not wanted (a training run's heads).
  """
  try:
    with ocp.StandardCheckpointer() as reader:
      saved = reader.metadata(os.path.abspath(os.path.join(step_dir, _STATE))).item_metadata.tree["params"]
  except Exception:  # pylint: disable=broad-except  (no metadata to compare: restore reports what it finds)
    return
  saved = {k: v for k, v in saved.items() if k not in leave_out}
  check_shapes(abstract_params, jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), saved), step_dir)


def write_model_dir(directory: str, config_json: dict, params: Any) -> None:
  """A MODEL_DIR as training leaves it, parameters only: model_config.json and one checkpoint (step 0, with
  its manifest), which load functions and warm starts read (vlm.convert writes project checkpoints so)."""
  os.makedirs(directory, exist_ok=True)
  write_json(config_json, os.path.join(directory, MODEL_CONFIG_FILE))
  ckpt = Checkpointer(directory, period=1)
  try:
    ckpt.save(0, {"params": jax.tree.map(np.asarray, params)})
  finally:
    ckpt.close()


_KINDS = {"pali": "a PaLI", "siglip": "a SigLIP", "ul2": "a UL2"}


def read_model_config(model_dir: str, kind: str) -> dict:
  """model_config.json of a training MODEL_DIR of `kind` ('pali', 'siglip', 'ul2'), or one CheckpointError
  saying why `model_dir` is not one (cheap: no parameters are read, so callers check before slower work)."""
  path = os.path.join(model_dir, MODEL_CONFIG_FILE)
  if not os.path.isfile(path):
    raise CheckpointError(f"{model_dir} is not {_KINDS[kind]} training directory (no {MODEL_CONFIG_FILE})")
  meta = read_json(path)
  if meta.get("model") != kind:
    raise CheckpointError(f"{model_dir} holds a {meta.get('model')!r} model, not {_KINDS[kind]}")
  return meta


def read_project(model_dir: str, kind: str, abstract_params: Callable[[dict], Any],
                 leave_out: Sequence[str] = (), step: int | None = None) -> tuple[dict, Any]:
  """(model_config.json, parameters of the newest intact checkpoint) of a training MODEL_DIR of `kind`: the one
  reader of project checkpoints behind siglip / ul2 / PaLI `load`.

  abstract_params: model_config.json -> the parameters' ShapeDtypeStructs, the restore target.
  leave_out: top-level subtrees of the saved parameters not to read (training-only heads, say).
  step: the checkpoint to read; None: the newest intact one.
  """
  meta = read_model_config(model_dir, kind)
  return meta, restore_params(model_dir, abstract_params(meta), leave_out, step)


def resolve_step(model_dir: str, step: int | None = None) -> int:
  """The checkpoint step of MODEL_DIR to read, its files checked against its manifest: `step`, or the newest
  intact one, with a CheckpointWarning naming each newer damaged step skipped. A missing or damaged `step`, or
  no intact step at all, is a CheckpointError."""
  steps = complete_steps(model_dir)
  if not steps:
    raise CheckpointError(f"{model_dir}: no complete checkpoint under {os.path.join(model_dir, CHECKPOINTS_DIR)}")
  if step is None:
    step, damaged = newest_intact_step(model_dir)
    for bad, problem in damaged:
      _warn_damaged(model_dir, bad, problem)
    if step is None:
      raise CheckpointError(f"{model_dir}: every checkpoint is damaged (the newest, step {damaged[0][0]}: "
                            f"{damaged[0][1]})")
  elif step not in steps:
    raise CheckpointError(f"{model_dir} has no complete checkpoint at step {step}; its steps: "
                          f"{', '.join(map(str, sorted(steps)))}")
  elif problem := check_step(os.path.join(model_dir, CHECKPOINTS_DIR, str(step))):
    raise CheckpointError(f"{model_dir}: the checkpoint at step {step} is damaged ({problem})")
  return step


def restore_params(model_dir: str, abstract_params: Any, leave_out: Sequence[str] = (),
                   step: int | None = None) -> Any:
  """Just the parameters of the newest intact checkpoint in MODEL_DIR (or of `step`), as host-local arrays.

  A newer step whose files no longer match its manifest is skipped, with a CheckpointWarning naming it (nothing
  is moved: a released MODEL_DIR may be read-only); a damaged `step` asked for is an error.

  leave_out: top-level subtrees of the saved parameters not to read (training-only heads, say).
  """
  _filter_orbax_logs()
  step = resolve_step(model_dir, step)
  step_dir = os.path.join(model_dir, CHECKPOINTS_DIR, str(step))
  sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), abstract_params)
  _check_saved_param_shapes(abstract_params, step_dir, leave_out)
  item = {"params": target}
  # Read-only: a released MODEL_DIR may sit on a file system this process cannot write.
  options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)
  try:
    with ocp.CheckpointManager(os.path.join(os.path.abspath(model_dir), CHECKPOINTS_DIR),
                               item_names=(_STATE, _INPUT), options=options) as manager:
      restored = manager.restore(step, args=ocp.args.Composite(**{_STATE: ocp.args.PyTreeRestore(
          item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True)}))
  except Exception as e:  # pylint: disable=broad-except  (orbax and tensorstore raise many types)
    raise CheckpointError(f"{step_dir} does not restore into this model's parameters ({_reason(e)}); "
                          f"{_checked_what(step_dir)}") from e
  return restored[_STATE]["params"]
