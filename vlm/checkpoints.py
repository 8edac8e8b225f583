"""Checkpoints: orbax save / restore / resume of the train state, and the file formats of other systems.

- `Checkpointer` wraps an orbax CheckpointManager under MODEL_DIR/checkpoints. Orbax writes each step into
  a temporary directory and renames it when complete, so a killed save never leaves a step that restores.
- Foreign formats: HF safetensors (read / write, atomic) and big_vision .npz (read with pickle disabled).
- Parameter trees are nested dicts; `flatten` / `unflatten` use 'a/b/c' paths, as big_vision's npz does.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

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
                            f"{len(have)} others); is it for a different model?")
    if tuple(want[path].shape) != tuple(np.shape(have[path])):
      raise CheckpointError(f"{source}: parameter {path} has shape {tuple(np.shape(have[path]))} but the "
                            f"model config expects {tuple(want[path].shape)}")
  extra = sorted(set(have) - set(want))
  if extra:
    raise CheckpointError(f"{source}: parameter {extra[0]} is not in the model "
                          f"({len(extra)} unexpected in all); is it for a different model?")


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


# ----------------------------------------------------------------------------------------------------------
# Orbax checkpoints of the train state.
# ----------------------------------------------------------------------------------------------------------

class Checkpointer:
  """Saves the train state every `period` steps under model_dir/checkpoints; keeps the last `keep`."""

  def __init__(self, model_dir: str, period: int, keep: int | None = 3, async_save: bool = True):
    self.directory = os.path.join(os.path.abspath(model_dir), "checkpoints")
    self.period = period
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=1,
                                           enable_async_checkpointing=async_save, create=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def maybe_save(self, step: int, state: Any, force: bool = False) -> bool:
    if not force and step % self.period:
      return False
    if self.manager.latest_step() == step:
      return False
    return self.manager.save(step, args=ocp.args.StandardSave(state), force=True)

  def restore(self, abstract_state: Any, step: int | None = None) -> Any:
    """Restores `step` (default: the latest) into the structure, shapes and shardings of `abstract_state`."""
    step = self.manager.latest_step() if step is None else step
    return self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def restore_params(model_dir: str, abstract_params: Any) -> Any:
  """Just the parameters of the latest checkpoint in MODEL_DIR, as host-local arrays."""
  ckpt = Checkpointer(model_dir, period=1, async_save=False)
  step = ckpt.latest_step()
  if step is None:
    raise CheckpointError(f"{model_dir}: no complete checkpoint under {ckpt.directory}")
  sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), abstract_params)
  item = {"params": target}
  restored = ckpt.manager.restore(step, args=ocp.args.PyTreeRestore(
      item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True))
  ckpt.close()
  return restored["params"]
