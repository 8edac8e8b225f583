"""The T5X way of sharding on plain JAX: a ('data', 'model') device mesh and logical axis rules.

Layers name their axes (batch, embed, mlp, heads, ...); `standard_logical_axis_rules` maps those names to
mesh axes; `Partitioner` turns a tree of logical PartitionSpecs into NamedShardings and holds the mesh
context that jitted steps are traced in. Nothing else in the project mentions a device.

Multi-host (several processes, e.g. one per TPU host or GPU node): `initialize_distributed` joins the
processes into one JAX runtime, the mesh spans every process's devices, and each process feeds only the rows
of a global batch that its own devices hold (`Partitioner.process_rows`, `read_batch`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import warnings
from typing import Any, Sequence

import flax.linen as nn
import gin
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

LogicalRules = Sequence[tuple[str, str | None]]

# Axes no standard rule shards (T5X keeps them replicated).
_REPLICATED_AXES = ("relpos_buckets", "abspos_buckets", "length", "layers", "stack", "mlp_activations")


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> bool:
  """Joins this process to a multi-process JAX runtime when the flags or the environment ask for one.

  Must run before anything else touches a JAX backend. Nothing happens for a plain single-process run.
  Arguments left None are read from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID, and what is
  still None is filled in by `jax.distributed.initialize` from the cluster it detects (SLURM, Open MPI, Cloud
  TPU, Kubernetes). Given all three, cluster detection is off: it would also pin each process to one GPU
  (SLURM_LOCALID), while a process started with explicit flags (one per node, say) keeps every device it sees.

  Returns:
    whether jax.distributed was initialised.
  """
  coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
  num_processes = _from_env(num_processes, "JAX_NUM_PROCESSES")
  process_id = _from_env(process_id, "JAX_PROCESS_ID")
  flags = (coordinator_address, num_processes, process_id)
  if all(v is None for v in flags) and not _multi_process_launch():
    return False
  if coordinator_address is not None:
    _check_address(coordinator_address)
  # CPU processes exchange collectives through gloo (bundled with jaxlib); GPU and TPU use their own fabric,
  # so this only matters on CPU (localhost simulation, CPU clusters).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(*flags, cluster_detection_method="deactivate" if None not in flags else None)
  return True


def _from_env(value: int | None, name: str) -> int | None:
  """`value`, or else the integer in environment variable `name`, or None."""
  if value is not None or not os.environ.get(name):
    return value
  try:
    return int(os.environ[name])
  except ValueError:
    raise ValueError(f"{name}={os.environ[name]!r} is not an integer") from None


def _check_address(address: str) -> None:
  """HOST:PORT with a port number, before JAX tries it (a bad one crashes or waits for a coordinator forever)."""
  host, _, port = address.rpartition(":")
  if not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise ValueError(f"coordinator address {address!r} is not HOST:PORT with a port number 1-65535 (for example "
                     "--coordinator_address=10.0.0.1:12345)")


def _multi_process_launch() -> bool:
  """Whether a cluster launcher JAX knows started this process as one of several.

  JAX has no public query for this, so ask the detectors `jax.distributed.initialize()` itself uses. One
  process is not enough: a single-task SLURM job must keep every GPU of its node, and JAX's SLURM detection
  would pin it to one.
  """
  from jax._src import clusters  # pylint: disable=import-outside-toplevel
  try:
    env = next((c for c in clusters.ClusterEnv._cluster_types  # pylint: disable=protected-access
                if not c.opt_in_only_method and c.is_env_present()), None)
    return env is not None and env.get_process_count() > 1
  except Exception as e:  # pylint: disable=broad-except
    # A detector that cannot answer (Kubernetes without the right to read its pod, say) must not stop a run
    # that was only ever meant to be single-process.
    warnings.warn(f"could not tell whether a cluster launched several processes ({e}); running as one process. "
                  "To run multi-host, pass --coordinator_address, --num_processes and --process_id")
    return False


@gin.configurable(module="vlm.partitioning")
def standard_logical_axis_rules(activation_partitioning_dims: int = 1, parameter_partitioning_dims: int = 1,
                                additional_rules: Sequence[tuple[str, str | None]] | None = None
                                ) -> list[tuple[str, str | None]]:
  """T5X's standard rules, with T5X's arguments in T5X's order; `additional_rules` are appended to them.

  1 / 1: data parallel on 'data', tensor parallel (mlp, heads, vocab) on 'model'.
  parameter_partitioning_dims=2 also shards `embed` of the parameters over 'data' (FSDP / ZeRO-3); an
  activation's batch already holds 'data', and flax skips a mesh axis a tensor already uses, so activations
  stay batch-sharded. activation_partitioning_dims=2 shards activations' `embed` over 'model'.
  """
  if parameter_partitioning_dims not in (1, 2) or activation_partitioning_dims not in (1, 2):
    raise ValueError("PARAMETER_PARTITIONING_DIMS and ACTIVATION_PARTITIONING_DIMS must each be 1 or 2; got "
                     f"{parameter_partitioning_dims} and {activation_partitioning_dims}")
  rules = [("batch", "data"), ("vocab", "model"), ("mlp", "model"), ("heads", "model"), ("kv", None),
           ("joined_kv", "model")]
  if activation_partitioning_dims == 2:
    rules.append(("embed", "model"))
  if parameter_partitioning_dims == 2:
    rules.append(("embed", "data"))
  if activation_partitioning_dims == 1 and parameter_partitioning_dims == 1:
    rules.append(("embed", None))
  return rules + [(name, None) for name in _REPLICATED_AXES] + [tuple(rule) for rule in additional_rules or ()]


@gin.configurable(module="vlm.partitioning")
def make_mesh(num_partitions: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A ('data', 'model') mesh: 'model' has `num_partitions` devices and 'data' takes the rest."""
  devices = list(jax.devices() if devices is None else devices)
  if num_partitions < 1 or len(devices) % num_partitions:
    raise ValueError(f"NUM_PARTITIONS={num_partitions} does not divide the {len(devices)} available devices")
  grid = np.asarray(devices).reshape(len(devices) // num_partitions, num_partitions)
  return Mesh(grid, ("data", "model"))


@gin.configurable(module="vlm.partitioning")
@dataclasses.dataclass
class Partitioner:
  """Owns the mesh and the rules; maps logical specs to shardings and jits with them."""
  num_partitions: int = 1
  parameter_partitioning_dims: int = 1
  activation_partitioning_dims: int = 1
  logical_axis_rules: LogicalRules | None = None  # None: the standard rules for the dims above
  devices: Sequence[jax.Device] | None = None  # None: every device of every process
  # {'data': N, 'model': M} of a virtual mesh (jax.sharding.AbstractMesh): shardings to plan with, no devices
  # (vlm.plan); 'model' must equal num_partitions.
  abstract_mesh: dict[str, int] | None = None

  def __post_init__(self):
    if self.abstract_mesh is None:
      self.mesh = make_mesh(self.num_partitions, self.devices)
    else:
      self.mesh = jax.sharding.AbstractMesh((self.abstract_mesh["data"], self.abstract_mesh["model"]),
                                            ("data", "model"))
    if self.logical_axis_rules is None:
      self.logical_axis_rules = standard_logical_axis_rules(
          activation_partitioning_dims=self.activation_partitioning_dims,
          parameter_partitioning_dims=self.parameter_partitioning_dims)

  @property
  def data_parallel_size(self) -> int:
    return self.mesh.shape["data"]

  def sharding(self, logical_spec: P | Sequence[str | None] | None) -> NamedSharding:
    mesh_spec = nn.logical_to_mesh_axes(tuple(logical_spec or ()), self.logical_axis_rules)
    return NamedSharding(self.mesh, mesh_spec if mesh_spec is not None else P())

  def shardings(self, logical_specs: Any) -> Any:
    """A tree of logical PartitionSpecs (from `nn.get_partition_spec`) -> a tree of NamedShardings."""
    return jax.tree.map(self.sharding, logical_specs, is_leaf=lambda x: isinstance(x, P) or x is None)

  def check_divisible(self, abstract_params: Any, shardings: Any) -> None:
    """Names the first parameter whose shape the mesh cannot split evenly, before anything compiles."""
    flat_params = jax.tree_util.tree_flatten_with_path(abstract_params)[0]
    for (path, param), sharding in zip(flat_params, jax.tree.leaves(shardings)):
      for dim, (size, axes) in enumerate(zip(param.shape, tuple(sharding.spec) + (None,) * param.ndim)):
        ways = math.prod(self.mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes or ()))
        if size % ways:
          name = "/".join(str(getattr(k, "key", k)) for k in path)
          raise ValueError(f"parameter {name} of shape {tuple(param.shape)} cannot be split {ways} ways on axis "
                           f"{dim} (mesh axes {axes}); pad that dimension to a multiple of {ways} or change "
                           "NUM_PARTITIONS / PARAMETER_PARTITIONING_DIMS")

  def batch_sharding(self, ndim: int) -> NamedSharding:
    """Leading (batch) axis over 'data', the rest replicated."""
    return self.sharding(("batch",) + (None,) * (ndim - 1))

  def process_rows(self, batch_size: int) -> np.ndarray:
    """The sorted indices of the rows of a global batch that this process's devices hold on 'data'.

    Processes that share 'data' rows (a 'model' axis spanning processes) get the same rows. With one process:
    every row.
    """
    indices = self.batch_sharding(1).addressable_devices_indices_map((batch_size,)).values()
    return np.unique(np.concatenate([np.arange(batch_size)[index] for index in indices]))

  def check_batch_size(self, batch_size: int) -> None:
    if batch_size % self.data_parallel_size:
      raise ValueError(f"BATCH_SIZE={batch_size} is not divisible by the {self.data_parallel_size} devices on "
                       "the 'data' mesh axis; change BATCH_SIZE or NUM_PARTITIONS")

  @contextlib.contextmanager
  def context(self):
    """The mesh and rules in force while tracing: activation constraints and shard_map read them."""
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.logical_axis_rules):
      yield


def global_batch(partitioner: Partitioner, batch: dict[str, np.ndarray],
                 batch_size: int | None = None) -> dict[str, jax.Array]:
  """Assembles global arrays, split along 'data', from this process's rows of them.

  Args:
    batch: this process's rows of the global batch, `partitioner.process_rows(batch_size)`.
    batch_size: rows of the global batch; None: `batch` is the whole global batch, the same on every process.
  """
  arrays = {}
  for key, value in batch.items():
    global_shape = np.shape(value) if batch_size is None else (batch_size,) + np.shape(value)[1:]
    arrays[key] = jax.make_array_from_process_local_data(partitioner.batch_sharding(np.ndim(value)), value,
                                                         global_shape)
  return arrays


def read_batch(partitioner: Partitioner, dataset: Any, step: int, batch_size: int) -> dict[str, jax.Array]:
  """Global batch `step` of `dataset` (see vlm.trainer.Dataset) on the mesh, each process feeding its rows.

  A source that can read part of a batch defines `batch_rows(step, batch_size, rows)`: the rows `rows` (sorted
  indices) of `batch(step, batch_size)`; each process then reads only its own. Any other source is asked for
  the whole batch on every process, and each keeps its rows: nothing to speak of for generated data. Either
  way the global batch is the same however many processes there are.
  """
  rows = partitioner.process_rows(batch_size)
  if hasattr(dataset, "batch_rows"):
    local = dataset.batch_rows(step, batch_size, rows)
  else:
    local = dataset.batch(step, batch_size)
    if len(rows) < batch_size:
      local = {k: v[rows] for k, v in local.items()}
  return global_batch(partitioner, local, batch_size)


def place(tree: Any, shardings: Any) -> Any:
  """Arrays every process holds whole (numpy or one-device arrays) as global arrays with `shardings`; each
  process copies in only the pieces its own devices hold."""
  def put(x, sharding):
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
  return jax.tree.map(put, tree, shardings)


def local_rows(x: jax.Array, rows: np.ndarray) -> np.ndarray:
  """Rows `rows` (`Partitioner.process_rows`, sorted) of a global array split along 'data', as numpy, read from
  this process's own devices: no communication."""
  out = np.empty((len(rows),) + x.shape[1:], x.dtype)
  for shard in x.addressable_shards:
    start, stop, _ = shard.index[0].indices(x.shape[0])
    out[np.searchsorted(rows, np.arange(start, stop))] = np.asarray(shard.data)
  return out


def count_params(tree: Any) -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))
