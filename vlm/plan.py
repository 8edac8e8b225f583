"""Plans a training run before it runs: parameters, memory per device, FLOPs per step, and whether it fits.

  python -m vlm.plan --gin_file=gin_configs/runs/pali3_stage2_812.gin --mesh data=64,model=4 --device tpu-v5e

It reads what `vlm.trainer.train` would train (the model, BATCH_SIZE, TASK_FEATURE_LENGTHS, the optimizer
factory, frozen_params and the Partitioner's rules) and allocates nothing: parameters and optimizer state come
from `jax.eval_shape`, and the mesh is virtual (the run's own Partitioner on a jax.sharding.AbstractMesh), so a
256-device plan runs on one CPU. Each array's shard is its shape divided, dimension by dimension, by the
product of the mesh axes `Partitioner.sharding` maps its logical axes to under the run's rules.

Exact: parameter counts; per-device bytes of parameters and optimizer state (frozen parameters have none,
factored Adafactor statistics are row/column vectors and replicate, as the trainer shards them); gradients
(float32, sharded like their parameters, for the trained parameters only: the trainer differentiates nothing
else).

Estimated: activations, for one train step, per device. Notation: b sequences per device (global batch x
frames / data), T tokens per sequence, S encoder positions a decoder layer cross-attends to, D width, F MLP
width, h heads x d head_dim, c bytes of the compute dtype, p = c bytes per attention probability (the
probabilities the probs x values matmul and `layers.softmax`'s backward both read; 0 with a fused kernel,
which keeps only float32 softmax statistics per query: `fused_attention`). A tensor whose logical axis is
heads, mlp or vocab is divided by the 'model' axis (M below); batch by 'data'; embed by 'model' only with
activation_partitioning_dims=2.
  no remat, per layer:  c*b*T*(r*D + 4*h*d/M + m*F/M) + p*b*h*T*T/M
      r = 4 residual-width tensors (block input, its norm, the sum after attention, its norm; 6 in a decoder
      layer), 4 head tensors (q, k, v, the attention context), m = 2 MLP hidden tensors (pre/post activation;
      3 for a gated MLP: both branches and their product): the tensors Korthikanti et al. (2022) count for a
      layer without dropout. The norms keep only their input and two float32 statistics per token
      (`layers.normalize`); the activations are recomputed from their inputs (`layers.MlpBlock`). A decoder
      layer adds its cross-attention: c*b*(2*T + 2*S)*h*d/M + p*b*h*T*S/M. Without remat the backward also
      reads the compute-dtype copy of each weight (sharded like the weight) when c is narrower than the
      parameters.
  remat 'full', per layer: the layer input, c*b*T*D; the layer's no-remat set is rebuilt during its backward,
      so the peak adds that of the largest layer once (counted for 'dots' too: an upper bound).
  remat 'dots': the layer input, q/k/v, the matmul outputs that return to width D (attention output, MLP
      output) and the MLP's first matmul outputs; attention logits and elementwise results are recomputed.
  remat 'dots_with_batch': 'dots' and the attention's batched products: the c-byte logits and the context
      (a fused kernel has no such products: as 'dots').
  remat 'offload_dots': 'dots' kept in host memory: on the device, as 'full' (the host's share is not counted).
  per stack: layers x saved + 2 residual tensors (the final norm's input and output).
  peak = sum over stacks + the largest layer's recompute + one layer's weights gathered over 'data' and cast
      to c + the logits (float32 logits, log-softmax and gradient: 12 bytes, plus c, per batch x target x
      vocab / M element) + the input batch.
With `microbatches` k (the trainer's gradient accumulation) the activations are one slice's (batch / k) and
the gradients take two buffers: the running sum and the slice's own.
Memory per device = parameters + optimizer state + gradients + that peak. Not counted: the optimizer's update
temporaries, collective buffers, layout copies, fragmentation, the SigLIP loss's b x b logits, the MAP head,
and on GPUs the 25% XLA leaves unallocated by default (XLA_PYTHON_CLIENT_MEM_FRACTION). Against XLA:CPU's
compiled tiny PaLI step the whole estimate is 0.93x (batch 16) and 0.81x (batch 64): XLA:CPU keeps some
elementwise intermediates alive that the model does not count (README, "Planning a real PaLI-3 run"). Keep
headroom accordingly.

FLOPs (analytic, per step). Matmuls: every kernel W counts 2*|W| per token it multiplies (ViT kernels: visual
tokens; the projection: visual tokens; UL2 encoder kernels: visual + prompt tokens; decoder kernels: target
tokens, except cross-attention keys/values: encoder tokens; embedding lookups: none; a tied output
projection: target tokens). Attention: 4*h*d*T*(T + S) per layer and sequence (q.k and probs.v; the causal
decoder computes its full T x T). Backward = 2 x forward (input and weight gradients), less what frozen
parameters skip: their weight gradients, and a frozen tower ahead of every trained parameter (stage 1's ViT)
runs forward only (no backward, no recompute, nothing saved for a backward). Recompute: remat 'full' repeats
a stack's layer forward, 'dots' and 'offload_dots' its attention part, 'dots_with_batch' nothing (its
attention part with a fused kernel). Train step = forward + backward as the trainer runs them.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import math
import re
import sys
from typing import Any, Sequence

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

from encoders import siglip
from vlm import gin_cli
from vlm import layers
from vlm import model as pali
from vlm import optim
from vlm import partitioning
from vlm import trainer
from vlm import ul2
from vlm.mfu import DEVICES

GIB = 2 ** 30

# Logical axes of the activation tensors the estimate counts (the layers constrain them so).
RESID = ("batch", "length", "embed")
HEADS = ("batch", "heads", "length", "kv")
PROBS = ("batch", "heads", "length", None)
HIDDEN = ("batch", "length", "mlp")
LOGITS = ("batch", "length", "vocab")


@dataclasses.dataclass(frozen=True)
class Stack:
  """One transformer stack as the activation and attention formulas see it."""
  name: str
  tower: str  # regex over parameter paths: everything of the tower (frozen or not as a whole)
  layer_params: str  # regex over parameter paths: the stack's layers (what remat recomputes)
  layers: int
  sequences: int  # per example: frames for a ViT, 1 otherwise
  length: int  # tokens per sequence
  width: int
  mlp_dim: int
  heads: int
  head_dim: int
  gated: bool  # gated MLP (UL2): twice the saved hidden tensors
  remat: str
  dtype_bytes: int  # compute dtype
  cross_length: int = 0  # encoder positions each layer cross-attends to (a decoder)
  fused_attention: bool = False  # a flash kernel: no [len, keys] probabilities kept (`plan(fused_attention=)`)


@dataclasses.dataclass(frozen=True)
class Geometry:
  """What the planner must know about a model beyond its parameter tree.

  kernel_tokens: (regex over a kernel's path, tokens it multiplies per example); the first match wins.
  groups: (label, regex over parameter paths) of the per-tower breakdown; the first match wins.
  logits: (target tokens per example, vocab, compute-dtype bytes) of a token softmax, or None.
  batch: the global batch's arrays.
  """
  description: str
  stacks: tuple[Stack, ...]  # in data-flow order
  kernel_tokens: tuple[tuple[str, int], ...]
  groups: tuple[tuple[str, str], ...]
  batch: dict[str, jax.ShapeDtypeStruct]
  logits: tuple[int, int, int] | None = None
  extra_forward_flops: float = 0.0  # per step, outside the kernels and stacks (the SigLIP loss)


@dataclasses.dataclass
class Group:
  """A tower's share of the parameters and of one device's memory (bytes)."""
  label: str
  params: int = 0
  trainable: int = 0
  param_bytes: int = 0
  opt_bytes: int = 0
  grad_bytes: int = 0
  paths: list[str] = dataclasses.field(default_factory=list, repr=False)


@dataclasses.dataclass
class Plan:
  """The numbers `report` prints; bytes are per device, FLOPs per step (all devices) unless named."""
  description: str
  mesh: dict[str, int]
  batch_size: int
  microbatches: int
  feature_lengths: dict[str, int]
  groups: list[Group]
  local_shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]]  # path -> (shape, per-device shape)
  replicated_opt_bytes: int  # optimizer state not shaped like a parameter (counts, factored statistics)
  activations: list[tuple[str, int]]  # (what, bytes) whose sum is the activation peak
  forward_flops: float
  train_flops: float  # forward + backward as the trainer runs them (no recompute)
  recompute_flops: float
  frozen_skipped_flops: float  # the backward that frozen parameters do not need (not in train_flops)
  warnings: list[str]
  teacher_params: int = 0  # parameters with an EMA copy in the train state (model.teacher_params)
  teacher_bytes: int = 0  # that copy's bytes per device, sharded like the parameters

  @property
  def num_devices(self) -> int:
    return math.prod(self.mesh.values())

  @property
  def param_bytes(self) -> int:
    return sum(g.param_bytes for g in self.groups)

  @property
  def opt_bytes(self) -> int:
    return sum(g.opt_bytes for g in self.groups) + self.replicated_opt_bytes

  @property
  def grad_bytes(self) -> int:
    return sum(g.grad_bytes for g in self.groups)

  @property
  def activation_bytes(self) -> int:
    return sum(size for _, size in self.activations)

  @property
  def total_bytes(self) -> int:
    return self.param_bytes + self.opt_bytes + self.grad_bytes + self.teacher_bytes + self.activation_bytes


# ------------------------------------------------------------------------------------------ geometry

def geometry(model: Any, feature_lengths: dict[str, int], batch_size: int, frames: int = 1) -> Geometry:
  """The Geometry of a PaLIModel, SigLIPModel or UL2Model for this batch and these feature lengths.

  A 'patches' length (a NaFlex model) is the visual tokens per image: padding is computed as real patches are.
  """
  patches = feature_lengths.get("patches")
  if patches is not None and frames != 1:
    raise ValueError(f"--frames={frames}: NaFlex inputs ('patches' in TASK_FEATURE_LENGTHS) are one image each")
  if isinstance(model, pali.PaLIModel):
    return _pali_geometry(model.config, _lengths(feature_lengths, "inputs", "targets"), batch_size, frames,
                          patches)
  if frames != 1:
    raise ValueError(f"--frames={frames}: only a PaLI model takes several images per example")
  if isinstance(model, siglip.SigLIPModel):
    return _siglip_geometry(model.config, feature_lengths.get("text", 0), batch_size, patches,
                            getattr(model.module, "locca", None), feature_lengths)
  if isinstance(model, ul2.UL2Model):
    inputs, targets = _lengths(feature_lengths, "inputs", "targets")
    stacks, kernels, groups = _ul2_parts(model.config, "", inputs, targets)
    return Geometry(f"UL2 {_ul2_text(model.config)}", stacks, kernels, groups,
                    {"encoder_input_tokens": _tokens(batch_size, inputs),
                     "decoder_target_tokens": _tokens(batch_size, targets)},
                    logits=(targets, model.config.vocab_size, _itemsize(model.config.dtype)))
  raise ValueError(f"vlm.plan knows PaLIModel, SigLIPModel and UL2Model, not {type(model).__name__}")


def _image_batch(vit, batch_size: int, frames: int, patches: int | None) -> tuple[dict, int, str]:
  """(the image features' ShapeDtypeStructs, visual tokens per image, their description)."""
  if patches is not None:
    p = vit.patch_size
    return ({"patches": jax.ShapeDtypeStruct((batch_size, patches, p * p * 3), jnp.float32),
             "patch_mask": _tokens(batch_size, patches), "spatial_shapes": _tokens(batch_size, 2)},
            patches, f"NaFlex, a budget of {patches:,} patches")
  image = (batch_size,) + ((frames,) if frames > 1 else ()) + (vit.image_size, vit.image_size, 3)
  return {"image": jax.ShapeDtypeStruct(image, jnp.float32)}, vit.grid ** 2, f"{vit.grid ** 2:,} tokens"


def _pali_geometry(cfg, lengths: tuple[int, int], batch_size: int, frames: int, patches: int | None) -> Geometry:
  vit, u = cfg.vit, cfg.ul2
  inputs, targets = lengths
  images, per_frame, tokens_text = _image_batch(vit, batch_size, frames, patches)
  visual = per_frame * frames
  stacks, kernels, groups = _ul2_parts(u, "ul2/", visual + inputs, targets)
  return Geometry(
      description=(f"PaLI: ViT {_vit_text(vit)} ({tokens_text} x {frames} frame{'s' * (frames > 1)}) "
                   f"+ UL2 {_ul2_text(u)}"),
      stacks=(_encoder_stack("img (ViT)", "img/", vit, frames, per_frame),) + stacks,
      kernel_tokens=((r"img/.*", visual), (r"img_projection/.*", visual)) + kernels,
      groups=(("img (ViT)", r"img/.*"), ("img_projection", r"img_projection/.*")) + groups,
      batch={**images, "encoder_input_tokens": _tokens(batch_size, inputs),
             "decoder_target_tokens": _tokens(batch_size, targets)},
      logits=(targets, u.vocab_size, _itemsize(u.dtype)))


def _siglip_geometry(cfg, text_length: int, batch_size: int, patches: int | None, locca=None,
                     feature_lengths: dict | None = None) -> Geometry:
  img, txt = cfg.image, cfg.text
  batch, tokens, tokens_text = _image_batch(img, batch_size, 1, patches)
  stacks = (_encoder_stack("img (ViT)", "img/", img, 1, tokens),)
  kernels = ((r"img/MAPHead_0/MultiHeadDotProductAttention_0/(key|value)/.*", tokens),
             (r"img/(MAPHead_0|head)/.*", 1),  # the pooling probe and the head see one position
             (r"img/.*", tokens),
             # The objectives' heads: DINO's on the pooled features, iBOT's on every patch (one view counted).
             (r"dino_head/.*", 1), (r"ibot_head/.*", tokens))
  groups = (("img (ViT)", r"img/.*"), ("objective heads (training only)", r"(dino_head|ibot_head)/.*"))
  embed_dim = img.head_dim or img.width
  description = f"SigLIP: ViT {_vit_text(img)} ({tokens_text})"
  if txt is not None:
    if not text_length:
      raise ValueError("TASK_FEATURE_LENGTHS has no 'text' length for the SigLIP text tower")
    stacks += (_encoder_stack("txt (text)", "txt/", txt, 1, text_length),)
    kernels += ((r"txt/Embed_0/.*", 0), (r"txt/head/.*", 1), (r"txt/.*", text_length))
    groups += (("txt (text tower)", r"txt/.*"),)
    batch["text"] = _tokens(batch_size, text_length)
    description += f" + text tower width {txt.width} x {txt.depth} layers ({text_length} tokens)"
  if locca is not None:  # SigLIP 2's LocCa decoder: a UL2 without encoder layers over the image tokens + prompt
    prompt, targets = _lengths(feature_lengths or {}, "locca_inputs", "locca_targets")
    locca_stacks, locca_kernels, _ = _ul2_parts(locca, "locca/ul2/", tokens + prompt, targets)
    stacks += tuple(s for s in locca_stacks if s.layers)
    kernels += ((r"locca/img_projection/.*", tokens),) + locca_kernels
    groups += (("LocCa decoder (training only)", r"locca/.*"),)
    batch.update(locca_inputs=_tokens(batch_size, prompt), locca_targets=_tokens(batch_size, targets))
    description += f" + LocCa decoder {_ul2_text(locca)}"
  # The sigmoid loss scores every image against every text: 2 B^2 E, chunked or not.
  return Geometry(description, stacks, kernels, groups + (("t, b", r"[tb]"),), batch,
                  extra_forward_flops=2.0 * batch_size * batch_size * embed_dim)


def _encoder_stack(name: str, prefix: str, cfg, sequences: int, length: int) -> Stack:
  """The layers.Encoder of a ViT or SigLIP text tower (cfg: its ViTConfig / TextConfig) under `prefix`."""
  return Stack(name=name, tower=re.escape(prefix) + ".*", layer_params=re.escape(prefix) + "Transformer/encoderblock.*",
               layers=cfg.depth, sequences=sequences, length=length, width=cfg.width, mlp_dim=cfg.mlp_dim,
               heads=cfg.num_heads, head_dim=cfg.width // cfg.num_heads, gated=False, remat=cfg.remat,
               dtype_bytes=_itemsize(cfg.dtype))


def _ul2_parts(u, prefix: str, encoder_tokens: int, decoder_tokens: int):
  """(stacks, kernel_tokens, groups) of a UL2 whose parameters sit under `prefix`."""
  p = re.escape(prefix)
  layer = dict(width=u.d_model, mlp_dim=u.d_ff, heads=u.num_heads, head_dim=u.head_dim, gated=True,
               remat=u.remat, dtype_bytes=_itemsize(u.dtype))
  stacks = (Stack(name="ul2 encoder", tower=p + "encoder/.*", layer_params=p + r"encoder/layers(_\d+)?/.*",
                  layers=u.num_encoder_layers, sequences=1, length=encoder_tokens, **layer),
            Stack(name="ul2 decoder", tower=p + "decoder/.*", layer_params=p + r"decoder/layers(_\d+)?/.*",
                  layers=u.num_decoder_layers, sequences=1, length=decoder_tokens, cross_length=encoder_tokens,
                  **layer))
  kernels = ((p + r"encoder/.*", encoder_tokens),
             (p + r"decoder/layers(_\d+)?/encoder_decoder_attention/(key|value)/.*", encoder_tokens),
             (p + r"decoder/.*", decoder_tokens),
             # A lookup is no matmul; tied, the table is also the output projection.
             (p + r"token_embedder/.*", decoder_tokens if u.tie_embeddings else 0))
  groups = (("ul2 embeddings", p + r"(token_embedder|decoder/logits_dense)/.*"),
            ("ul2 encoder", p + r"encoder/.*"), ("ul2 decoder", p + r"decoder/.*"))
  return stacks, kernels, groups


def _vit_text(vit) -> str:
  return (f"width {vit.width} x {vit.depth} layers, MLP {vit.mlp_dim}, patch {vit.patch_size} "
          f"@ {vit.image_size} px")


def _ul2_text(u) -> str:
  return (f"d_model {u.d_model}, {u.num_encoder_layers}+{u.num_decoder_layers} layers, d_ff {u.d_ff}, "
          f"vocab {u.vocab_size:,}")


def _lengths(feature_lengths: dict[str, int], *names: str) -> tuple[int, ...]:
  missing = [n for n in names if n not in feature_lengths]
  if missing:
    raise ValueError(f"TASK_FEATURE_LENGTHS {feature_lengths} lacks {missing[0]!r}, which this model reads")
  return tuple(int(feature_lengths[n]) for n in names)


def _tokens(batch_size: int, length: int) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct((batch_size, length), jnp.int32)


def _itemsize(dtype) -> int:
  return jnp.dtype(dtype).itemsize


# -------------------------------------------------------------------------------------------- sharding

class Sharder:
  """Per-device shapes on a Partitioner's virtual mesh (jax.sharding.AbstractMesh), under its rules."""

  def __init__(self, partitioner: partitioning.Partitioner):
    self.partitioner, self.mesh = partitioner, dict(partitioner.mesh.shape)

  def mesh_axes(self, logical: Sequence[str | None]) -> tuple:
    """The mesh axes of each dimension, as the trainer's Partitioner.sharding maps the logical ones."""
    spec = self.partitioner.sharding(tuple(logical)).spec
    return tuple(spec) + (None,) * (len(logical) - len(tuple(spec)))

  def ways(self, ndim: int, mesh_axes: Sequence, *, skip: Sequence[str] = ()) -> tuple[int, ...]:
    """How many shards each dimension is cut into: the product of its mesh axes' sizes (but `skip`)."""
    out = []
    for axes in tuple(mesh_axes)[:ndim] + (None,) * (ndim - len(tuple(mesh_axes))):
      names = (axes,) if isinstance(axes, str) else tuple(axes or ())
      out.append(math.prod(self.mesh[a] for a in names if a not in skip))
    return tuple(out)

  def local_shape(self, shape: Sequence[int], mesh_axes: Sequence, *, skip: Sequence[str] = ()) -> tuple:
    """The per-device shape: each dimension divided by its ways, rounding up (an uneven shard pads)."""
    return tuple(-(-size // ways) for size, ways in zip(shape, self.ways(len(shape), mesh_axes, skip=skip)))

  def bytes(self, shape: Sequence[int], logical: Sequence[str | None], itemsize: int) -> int:
    return math.prod(self.local_shape(shape, self.mesh_axes(logical))) * itemsize


# ------------------------------------------------------------------------------------------------ plan

def plan(model: Any, *, batch_size: int, feature_lengths: dict[str, int], partitioner: partitioning.Partitioner,
         optimizer: Any, frozen_params: str | None = None, frames: int = 1, microbatches: int = 1,
         fused_attention: bool = False) -> Plan:
  """Plans one train step of `model` as `vlm.trainer.train` would run it, on a virtual mesh.

  Args:
    model: a PaLIModel, SigLIPModel or UL2Model.
    batch_size: the global batch.
    feature_lengths: TASK_FEATURE_LENGTHS ({'inputs', 'targets'}, or {'text'} for SigLIP).
    partitioner: the run's, on a virtual mesh: Partitioner(abstract_mesh={'data': N, 'model': M}, ...).
    optimizer: the optax transformation before freezing (what the trainer's `optimizer(learning_rate=...)` makes).
    frozen_params: the trainer's regex over parameter paths.
    frames: images per example (PaLI).
    microbatches: the trainer's gradient accumulation: slices of the batch run one after the other.
    fused_attention: half-precision stacks attend through a flash kernel, as `layers.attention_implementation`
      'auto' does on a GPU (`layers.attention_kernel`).
  """
  # The checks vlm.trainer.train makes, with its words: a batch of 0 would otherwise plan (and fit).
  trainer._check_counts(BATCH_SIZE=batch_size, microbatches=microbatches,  # pylint: disable=protected-access
                        **{f"TASK_FEATURE_LENGTHS[{k!r}]": v for k, v in feature_lengths.items()})
  mesh = dict(partitioner.mesh.shape)
  if batch_size % (mesh["data"] * microbatches):
    raise ValueError(f"BATCH_SIZE={batch_size} is not divisible by data={mesh['data']} x microbatches="
                     f"{microbatches}; the trainer refuses it")
  slice_size = batch_size // microbatches
  geo = geometry(model, feature_lengths, batch_size, frames)
  if fused_attention:
    geo = dataclasses.replace(geo, stacks=tuple(dataclasses.replace(s, fused_attention=s.dtype_bytes < 4)
                                                for s in geo.stacks))
  sharder = Sharder(partitioner)
  init_batch = {k: jax.ShapeDtypeStruct((1,) + v.shape[1:], v.dtype) for k, v in geo.batch.items()}
  boxed = jax.eval_shape(model.init_variables, jax.random.key(0), init_batch)["params"]
  params = nn.meta.unbox(boxed)
  paths = [optim.path_name(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  arrays = dict(zip(paths, jax.tree.leaves(params)))
  logical = jax.tree.leaves(nn.get_partition_spec(boxed),
                            is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  axes = {path: sharder.mesh_axes(tuple(spec) + (None,) * (arrays[path].ndim - len(spec)))
          for path, spec in zip(paths, logical, strict=True)}
  local = {path: (tuple(x.shape), sharder.local_shape(x.shape, axes[path])) for path, x in arrays.items()}
  pattern = _frozen_pattern(frozen_params)
  trainable = {path: not (pattern and pattern.fullmatch(path)) for path in paths}

  groups = _groups(geo, arrays, local, trainable, gradient_buffers=2 if microbatches > 1 else 1)
  replicated_opt = _add_optimizer_state(groups, optim.freeze(optimizer, frozen_params), params, paths, local)
  forward_only = _leading_frozen(geo, trainable)
  flops = _flops(geo, arrays, batch_size, trainable, forward_only)
  activations = _activations(geo, sharder, arrays, axes, slice_size, forward_only)
  copied = _teacher_paths(model, paths)
  teacher_params = sum(arrays[path].size for path in copied)
  teacher_bytes = sum(math.prod(local[path][1]) * arrays[path].dtype.itemsize for path in copied)
  notes = _undivisible(sharder, arrays, axes)
  if trainer.learns_from_teacher(model):
    notes.append("activations and FLOPs are one view's: the objectives' multi-crop views (each global view, the "
                 "local ones) and the teacher's forward add to them")
  return Plan(teacher_params=teacher_params, teacher_bytes=teacher_bytes,
              description=geo.description, mesh=dict(mesh), batch_size=batch_size, microbatches=microbatches,
              feature_lengths=dict(feature_lengths), groups=groups, local_shapes=local,
              replicated_opt_bytes=replicated_opt, activations=activations, forward_flops=flops["forward"],
              train_flops=3 * flops["forward"] - flops["frozen_backward"], recompute_flops=flops["recompute"],
              frozen_skipped_flops=flops["frozen_backward"], warnings=notes)


def _frozen_pattern(frozen_params: str | None) -> re.Pattern | None:
  try:
    return re.compile(frozen_params) if frozen_params else None
  except re.error as e:
    raise ValueError(f"frozen_params={frozen_params!r} is not a regular expression: {e}") from None


def _teacher_paths(model, paths: Sequence[str]) -> list[str]:
  """The parameter paths whose EMA copy the trainer keeps (vlm.trainer's teacher interface)."""
  pattern = getattr(model, "teacher_params", None) if trainer.learns_from_teacher(model) else None
  return [path for path in paths if re.fullmatch(pattern, path)] if pattern else []


def _groups(geo: Geometry, arrays, local, trainable, gradient_buffers: int) -> list[Group]:
  """Each parameter in the first group whose regex matches its path ('other' takes the rest)."""
  groups = [Group(label) for label, _ in geo.groups] + [Group("other")]
  for path, x in arrays.items():
    group = groups[next((i for i, (_, p) in enumerate(geo.groups) if re.fullmatch(p, path)), -1)]
    shard_bytes = math.prod(local[path][1]) * x.dtype.itemsize
    group.paths.append(path)
    group.params += x.size
    group.trainable += x.size if trainable[path] else 0
    group.param_bytes += shard_bytes
    if trainable[path]:  # in the parameter's dtype, sharded like it
      group.grad_bytes += gradient_buffers * shard_bytes
  return [g for g in groups if g.paths]


def _add_optimizer_state(groups: list[Group], tx, params, paths, local) -> int:
  """Adds each optimizer leaf's per-device bytes to its parameter's group; returns the replicated rest.

  The trainer places optimizer state with `_opt_state_shardings`: a leaf shaped like its parameter (matched by
  the trailing path) is sharded like it, anything else (step counts, factored row/column statistics)
  replicates. Asking that function, with parameter paths standing in for shardings, keeps the plan exact.
  """
  abstract = jax.eval_shape(tx.init, params)
  named = jax.tree.unflatten(jax.tree.structure(params), paths)
  owners = trainer._opt_state_shardings(abstract, params, named, "")  # pylint: disable=protected-access
  group_of = {path: group for group in groups for path in group.paths}
  replicated = 0
  for owner, leaf in zip(jax.tree.leaves(owners), jax.tree.leaves(abstract)):
    if owner:
      group_of[owner].opt_bytes += math.prod(local[owner][1]) * leaf.dtype.itemsize
    else:
      replicated += leaf.size * leaf.dtype.itemsize
  return replicated


# ----------------------------------------------------------------------------------------------- FLOPs

def _kernel_tokens(geo: Geometry, path: str) -> int | None:
  """Tokens per example a matmul kernel multiplies; None for parameters that are no matmul operand."""
  if path.rsplit("/", 1)[-1] not in ("kernel", "embedding"):
    return None
  for pattern, tokens in geo.kernel_tokens:
    if re.fullmatch(pattern, path):
      return tokens
  raise ValueError(f"vlm.plan does not know how many tokens parameter {path} multiplies; teach its geometry")


def _attention_flops(stack: Stack) -> float:
  """Forward q.k and probs.v FLOPs of a stack, per example."""
  keys = stack.length + stack.cross_length
  return 4.0 * stack.layers * stack.sequences * stack.heads * stack.head_dim * stack.length * keys


def _leading_frozen(geo: Geometry, trainable) -> list[Stack]:
  """The stacks before any trained parameter in the data flow (PaLI's frozen ViT): no backward needed at all."""
  out = []
  for stack in geo.stacks:
    tower = [trainable[p] for p in trainable if re.fullmatch(stack.tower, p)]
    if any(tower):
      break
    out.append(stack)
  return out


def _flops(geo: Geometry, arrays, batch_size: int, trainable, forward_only: list[Stack]) -> dict[str, float]:
  """forward, recompute (remat) and frozen_backward (the backward that frozen parameters skip).

  forward_only: the frozen stacks ahead of every trained parameter (`_leading_frozen`).
  """
  matmul = {path: 2.0 * x.size * tokens for path, x in arrays.items()
            if (tokens := _kernel_tokens(geo, path)) is not None}

  def recompute(stack: Stack) -> float:
    if stack.remat == "none":
      return 0.0
    if stack.remat == "dots_with_batch" and not stack.fused_attention:  # every matmul output is saved
      return 0.0
    if stack.remat in ("dots", "dots_with_batch", "offload_dots"):  # the projections are saved, not q.k / probs.v
      return _attention_flops(stack)
    return _attention_flops(stack) + sum(f for p, f in matmul.items() if re.fullmatch(stack.layer_params, p))

  forward = sum(matmul.values()) + sum(_attention_flops(s) for s in geo.stacks)
  # A frozen kernel never needs its weight gradient. A tower ahead of every trained parameter needs no input
  # gradients either, no attention backward and no recompute.
  frozen_backward = sum(f for p, f in matmul.items() if not trainable[p])
  for stack in forward_only:
    frozen_backward += sum(f for p, f in matmul.items() if re.fullmatch(stack.tower, p))
    frozen_backward += 2 * _attention_flops(stack)
  scale = float(batch_size)
  return {"forward": forward * scale + geo.extra_forward_flops,
          "recompute": sum(recompute(s) for s in geo.stacks if s not in forward_only) * scale,
          "frozen_backward": frozen_backward * scale}


# ----------------------------------------------------------------------------------------- activations

@dataclasses.dataclass(frozen=True)
class _Tensor:
  """`count` activation tensors of one global shape, sharded by their logical axes."""
  count: int
  shape: tuple[int, ...]
  axes: tuple[str | None, ...]
  itemsize: int


def _probs(stack: Stack, n: int, keys: int) -> list[_Tensor]:
  """What an attention keeps of its softmax: the compute-dtype probabilities, or a fused kernel's float32
  log-sum-exp per query."""
  if stack.fused_attention:
    return [_Tensor(1, (n, stack.heads, stack.length), PROBS[:3], 4)]
  return [_Tensor(1, (n, stack.heads, stack.length, keys), PROBS, stack.dtype_bytes)]


def _layer_tensors(stack: Stack, n: int) -> list[_Tensor]:
  """What one layer keeps for its backward without remat (n sequences); see the module docstring."""
  s, c = stack, stack.dtype_bytes

  def heads(length):
    return (n, s.heads, length, s.head_dim)

  out = [_Tensor(6 if s.cross_length else 4, (n, s.length, s.width), RESID, c),
         _Tensor(4, heads(s.length), HEADS, c),
         _Tensor(3 if s.gated else 2, (n, s.length, s.mlp_dim), HIDDEN, c)] + _probs(s, n, s.length)
  if s.cross_length:  # cross-attention: q and context over the targets, k and v over the encoder
    out += [_Tensor(2, heads(s.length), HEADS, c), _Tensor(2, heads(s.cross_length), HEADS, c)]
    out += _probs(s, n, s.cross_length)
  return out


def _saved_tensors(stack: Stack, n: int) -> list[_Tensor]:
  """What one layer keeps until its backward under the stack's remat policy."""
  s, c = stack, stack.dtype_bytes
  if s.remat == "none":
    return _layer_tensors(s, n)
  saved = [_Tensor(1, (n, s.length, s.width), RESID, c)]  # the layer input
  attentions = 2 if s.cross_length else 1
  if s.remat in ("dots", "dots_with_batch"):  # matmul outputs without batch dimensions: projections and MLP
    saved += [_Tensor(1 + attentions, (n, s.length, s.width), RESID, c),
              _Tensor(3 * attentions, (n, s.heads, s.length, s.head_dim), HEADS, c),
              _Tensor(2 if s.gated else 1, (n, s.length, s.mlp_dim), HIDDEN, c)]
  if s.remat == "dots_with_batch" and not s.fused_attention:  # ... and q.k (logits), probs.v (context)
    for keys in (s.length, s.cross_length)[:attentions]:
      saved += [_Tensor(1, (n, s.heads, s.length, keys), PROBS, c),
                _Tensor(1, (n, s.heads, s.length, s.head_dim), HEADS, c)]
  return saved


def _bytes(sharder: Sharder, tensors: list[_Tensor]) -> int:
  return sum(t.count * sharder.bytes(t.shape, t.axes, t.itemsize) for t in tensors)


def _stack_memory(stack: Stack, sharder: Sharder, arrays, axes, batch_size: int) -> tuple[int, int, int]:
  """(saved, one layer's recompute, one layer's weights gathered over 'data' and cast) bytes per device."""
  n = batch_size * stack.sequences
  c = stack.dtype_bytes
  saved = stack.layers * _bytes(sharder, _saved_tensors(stack, n))
  saved += _bytes(sharder, [_Tensor(2, (n, stack.length, stack.width), RESID, c)])  # final norm in / out
  layer_params = [p for p in arrays if re.fullmatch(stack.layer_params, p)]
  cast = c < min((arrays[p].dtype.itemsize for p in layer_params), default=c)
  if stack.remat == "none" and cast:  # the backward of x @ w.astype(c) reads the cast copy
    saved += sum(math.prod(sharder.local_shape(arrays[p].shape, axes[p])) * c for p in layer_params)
  recompute = _bytes(sharder, _layer_tensors(stack, n)) if stack.remat != "none" else 0
  gathered = {p: sharder.local_shape(arrays[p].shape, axes[p], skip=("data",)) for p in layer_params}
  fsdp = any(gathered[p] != sharder.local_shape(arrays[p].shape, axes[p]) for p in layer_params)
  weights = sum(math.prod(shape) * c for shape in gathered.values()) // stack.layers if cast or fsdp else 0
  return saved, recompute, weights


def _activations(geo: Geometry, sharder: Sharder, arrays, axes, batch_size: int,
                 forward_only: list[Stack]) -> list[tuple[str, int]]:
  """(what, bytes per device) rows whose sum is the activation peak of one train step.

  batch_size: the examples computed at once (a microbatch); the input batch is geo.batch, whole.
  forward_only: stacks that need no backward (frozen, ahead of every trained parameter): only their output
  outlives their forward.
  """
  rows, recompute, weights = [], (0, ""), 0
  for stack in geo.stacks:
    dtype = {2: "bf16", 4: "fp32"}.get(stack.dtype_bytes, f"{stack.dtype_bytes} B")
    tokens = f"{stack.length:,}" + (f" (x {stack.cross_length:,} cross)" if stack.cross_length else "")
    frames = f" x {stack.sequences} frames" if stack.sequences > 1 else ""
    fused = ", flash attention" if stack.fused_attention else ""
    what = f"{stack.name}: {stack.layers} layers x {tokens} tokens{frames}, {dtype}{fused}"
    if stack in forward_only:
      output = _Tensor(1, (batch_size * stack.sequences, stack.length, stack.width), RESID, stack.dtype_bytes)
      rows.append((f"{what}, frozen: forward only, its output", _bytes(sharder, [output])))
      continue
    saved, layer, layer_weights = _stack_memory(stack, sharder, arrays, axes, batch_size)
    rows.append((f"{what}, remat {stack.remat}", saved))
    recompute = max(recompute, (layer, stack.name))
    weights = max(weights, layer_weights)
  if recompute[0]:
    rows.append((f"one {recompute[1]} layer rebuilt for its backward (remat)", recompute[0]))
  if weights:
    rows.append(("one layer's weights gathered over 'data' / cast to the compute dtype", weights))
  if geo.logits:
    targets, vocab, c = geo.logits
    shape = (batch_size, targets, vocab)
    copies = [_Tensor(3, shape, LOGITS, 4)] + ([_Tensor(1, shape, LOGITS, c)] if c < 4 else [])
    what = "fp32 logits, log-softmax and gradient" + (" + the compute-dtype logits" if c < 4 else "")
    rows.append((f"logits {targets} x {vocab:,}: {what}", _bytes(sharder, copies)))
  rows.append(("input batch", sum(sharder.bytes(x.shape, ("batch",) + (None,) * (x.ndim - 1), x.dtype.itemsize)
                                  for x in geo.batch.values())))
  return rows


def _undivisible(sharder: Sharder, arrays, axes) -> list[str]:
  """The trainer refuses a parameter the mesh cannot split evenly (Partitioner.check_divisible); name it."""
  bad = [path for path, x in arrays.items()
         if any(size % ways for size, ways in zip(x.shape, sharder.ways(x.ndim, axes[path])))]
  if not bad:
    return []
  return [f"parameter {bad[0]} of shape {tuple(arrays[bad[0]].shape)} does not split evenly over mesh axes "
          f"{axes[bad[0]]} ({len(bad)} such parameters); vlm.train refuses this mesh"]


# ---------------------------------------------------------------------------------------------- report

def report(result: Plan, header: Sequence[tuple[str, str]], memory_gib: float | None,
           device: str | None = None) -> str:
  """The plan as the CLI prints it: header, parameter table, activations, FLOPs, memory and the verdict.

  memory_gib: the device's memory; None leaves the verdict out (no device was named).
  """
  lines = [f"{key:<11}{value}" for key, value in header] + [""]
  lines.append(_param_row("parameters", "total", "trainable", "params/dev", "optimizer", "gradients"))
  for g in result.groups:
    lines.append(_param_row("  " + g.label, f"{g.params:,}", f"{g.trainable:,}", _size(g.param_bytes),
                            _size(g.opt_bytes), _size(g.grad_bytes)))
  if result.replicated_opt_bytes:
    lines.append(_param_row("  (replicated: step counts, factored moments)", "", "", "",
                            _size(result.replicated_opt_bytes), "").rstrip())
  lines.append(_param_row("  total", f"{sum(g.params for g in result.groups):,}",
                          f"{sum(g.trainable for g in result.groups):,}", _size(result.param_bytes),
                          _size(result.opt_bytes), _size(result.grad_bytes)))
  lines += ["", "activations per device, one train step (an estimate: the model is in `python -m vlm.plan --help`)"]
  lines += [f"  {what:<88}{_size(size):>11}" for what, size in result.activations]
  lines += [f"  {'total (peak)':<88}{_size(result.activation_bytes):>11}", "", _flops_text(result, device)]
  if result.frozen_skipped_flops:
    lines.append(f"{'':<11}frozen parameters are not differentiated: {_flops_unit(result.frozen_skipped_flops)} "
                 "of backward skipped per step")
  teacher = f" + teacher (EMA) {_size(result.teacher_bytes)}" if result.teacher_params else ""
  if result.teacher_params:
    lines.append(f"{'teacher':<11}an EMA copy of {result.teacher_params:,} parameters in the train state, sharded "
                 f"like them: {_size(result.teacher_bytes)} per device (no optimizer state, no gradient)")
  lines += ["", f"{'memory':<11}per device: parameters {_size(result.param_bytes)} + optimizer "
                f"{_size(result.opt_bytes)} + gradients {_size(result.grad_bytes)}{teacher} + activations "
                f"{_size(result.activation_bytes)} = {_size(result.total_bytes)}"]
  if memory_gib is not None:
    lines.append(f"{'fit':<11}{verdict(result.total_bytes, memory_gib, device)}")
  lines += [f"{'warning':<11}{w}" for w in result.warnings]
  return "\n".join(lines)


def _param_row(label: str, total: str, trainable: str, params: str, opt: str, grads: str) -> str:
  return f"{label:<46}{total:>15}{trainable:>15}{params:>13}{opt:>11}{grads:>11}"


def verdict(total_bytes: int, memory_gib: float, device: str | None = None) -> str:
  capacity = memory_gib * GIB
  where = f"{memory_gib:g} GiB" + (f" ({device})" if device else "")
  if total_bytes <= capacity:
    return (f"fits in {where}: headroom {_size(capacity - total_bytes)} "
            f"({100 * (capacity - total_bytes) / capacity:.0f}%)")
  return f"does NOT fit in {where}: short by {_size(total_bytes - capacity)}"


def _flops_text(result: Plan, device: str | None) -> str:
  executed = result.train_flops + result.recompute_flops
  text = (f"{'FLOPs':<11}per step: forward {_flops_unit(result.forward_flops)}; train step "
          f"{_flops_unit(result.train_flops)} (forward + backward) + remat recompute "
          f"{_flops_unit(result.recompute_flops)} = {_flops_unit(executed)} executed, "
          f"{_flops_unit(executed / result.num_devices)} per device")
  if device in DEVICES:
    peak = DEVICES[device].peak_tflops * 1e12
    text += (f"\n{'':<11}at the {device}'s {DEVICES[device].peak_tflops:g} TFLOP/s bf16 peak: >= "
             f"{executed / result.num_devices / peak:.3g} s per step")
  return text


def _size(n: float) -> str:
  return f"{n / GIB:.2f} GiB" if n >= GIB / 10 else f"{n / 2 ** 20:.1f} MiB"


def _flops_unit(flops: float) -> str:
  for unit, scale in (("EFLOP", 1e18), ("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9)):
    if flops >= scale:
      return f"{flops / scale:.3g} {unit}"
  return f"{flops / 1e6:.3g} MFLOP"


# ------------------------------------------------------------------------------------------------- gin

def _resolve(value: Any) -> Any:
  """A gin binding's value with references and macros evaluated (gin evaluates them on deep copy)."""
  return copy.deepcopy(value)


def plan_from_gin(mesh: dict[str, int], frames: int = 1, device: str | None = None
                  ) -> tuple[list[Plan], list[tuple[str, str]]]:
  """Plans the run the parsed gin config describes (what `vlm.trainer.train` would get), with its header.

  device: a DEVICES name; on a GPU, half-precision attention is planned as the fused kernel it runs.

  One plan per combination of feature lengths the run draws per step (a NaFlex run's patch budgets,
  tasks.pipeline), smallest first; one plan for fixed lengths.
  """
  bindings = gin.get_bindings("vlm.trainer.train", resolve_references=False)
  missing = [k for k in ("model", "batch_size", "optimizer", "learning_rate") if k not in bindings]
  if missing:
    raise ValueError(f"the gin config binds no vlm.trainer.train.{missing[0]}; is it a training run file?")
  try:
    lengths = _resolve(gin.query_parameter("%TASK_FEATURE_LENGTHS"))
  except ValueError:
    raise ValueError("the gin config defines no TASK_FEATURE_LENGTHS macro") from None
  if not isinstance(lengths, dict):
    raise ValueError(f"vlm.plan needs TASK_FEATURE_LENGTHS as a dict of feature lengths (e.g. {{'inputs': 16, "
                     f"'targets': 24}}); got {lengths!r}")
  model, batch_size = _resolve(bindings["model"]), _resolve(bindings["batch_size"])
  microbatches = _resolve(bindings.get("microbatches", 1))
  factory = _resolve(bindings["optimizer"])
  frozen = _resolve(bindings.get("frozen_params"))
  # vlm.trainer.train's Partitioner() takes its gin bindings; the plan's takes them too, on a virtual mesh.
  part = gin.get_bindings("vlm.partitioning.Partitioner")
  partitioner = partitioning.Partitioner(num_partitions=mesh["model"], abstract_mesh=mesh)
  dims = (partitioner.parameter_partitioning_dims, partitioner.activation_partitioning_dims)
  rules_text = ("the gin config's logical_axis_rules" if part.get("logical_axis_rules") else
                f"parameter_partitioning_dims={dims[0]}{' (FSDP)' if dims[0] == 2 else ''}, "
                f"activation_partitioning_dims={dims[1]}")
  fused = device is not None and DEVICES[device].kind.startswith("NVIDIA") and layers.attention_kernel(
      jnp.bfloat16, "gpu") == "cudnn"
  choices = [dict(zip(lengths, combo)) for combo in itertools.product(
      *(sorted(v) if isinstance(v, (tuple, list)) else (v,) for v in lengths.values()))]
  results = [plan(model, batch_size=batch_size, feature_lengths=choice, partitioner=partitioner,
                  optimizer=factory(learning_rate=_resolve(bindings["learning_rate"])), frozen_params=frozen,
                  frames=frames, microbatches=microbatches, fused_attention=fused) for choice in choices]
  if part.get("num_partitions", 1) != mesh["model"]:
    results[-1].warnings.append(f"the gin config's NUM_PARTITIONS is {part.get('num_partitions', 1)}; planned with "
                                f"model={mesh['model']} as --mesh says (pass --gin.NUM_PARTITIONS={mesh['model']} "
                                "to train so)")
  return results, _header(results[-1], rules_text, f"{getattr(factory, '__name__', factory)}; frozen_params={frozen!r}")


def per_lengths_report(results: Sequence[Plan], memory_gib: float | None) -> str:
  """A line per combination of feature lengths a run draws per step: what changes with them (and whether it fits
  in `memory_gib`, when given)."""
  fit = "  fit" if memory_gib is not None else ""
  lines = ["", "per step's feature lengths (drawn per step; the report above is the largest):",
           f"  {'lengths':<44}{'activations':>13}{'memory/dev':>13}{'train FLOPs':>14}{fit}"]
  for result in results:
    lengths = ", ".join(f"{k}={v}" for k, v in result.feature_lengths.items())
    if memory_gib is not None:
      fit = "  yes" if result.total_bytes <= memory_gib * GIB else "  NO"
    lines.append(f"  {lengths:<44}{_size(result.activation_bytes):>13}{_size(result.total_bytes):>13}"
                 f"{_flops_unit(result.train_flops):>14}{fit}")
  return "\n".join(lines)


def _header(result: Plan, rules_text: str, optimizer_text: str) -> list[tuple[str, str]]:
  per_device = result.batch_size // result.mesh["data"]
  accumulation = (f" in {result.microbatches} microbatches of {per_device // result.microbatches:,}"
                  if result.microbatches > 1 else "")
  lengths = ", ".join(f"{k}={v}" for k, v in result.feature_lengths.items())
  return [("model", result.description),
          ("batch", f"{result.batch_size:,} global, {per_device:,} per 'data' shard{accumulation}; "
                    f"TASK_FEATURE_LENGTHS {lengths}"),
          ("mesh", f"data={result.mesh['data']} x model={result.mesh['model']} = {result.num_devices} devices "
                   f"(virtual); {rules_text}"),
          ("optimizer", optimizer_text)]


# ------------------------------------------------------------------------------------------------- CLI

def parse_mesh(text: str) -> dict[str, int]:
  """'data=64,model=4' -> {'data': 64, 'model': 4}; either axis may be left out (size 1)."""
  usage = "write data=N,model=M with positive integers N and M (e.g. --mesh data=64,model=4)"
  mesh = {}
  for part in filter(None, (p.strip() for p in text.split(","))):
    name, _, size = part.partition("=")
    if name not in ("data", "model") or not size.isdigit() or int(size) < 1:
      raise ValueError(f"{text!r} is not a mesh: {usage}")
    if name in mesh:
      raise ValueError(f"{text!r} names the {name!r} axis twice: {usage}")
    mesh[name] = int(size)
  if not mesh:
    raise ValueError(f"{text!r} names no mesh axis: {usage}")
  return {"data": mesh.get("data", 1), "model": mesh.get("model", 1)}


def device_memory(device: str | None, memory_gib: float | None) -> float | None:
  """GiB per device: --device_memory's, else --device's; None when neither is given (no verdict)."""
  if memory_gib is not None:
    if not 0 < memory_gib < math.inf:  # nan and inf too
      raise ValueError(f"--device_memory={memory_gib:g} GiB: give a positive, finite size")
    return memory_gib
  return None if device is None else float(DEVICES[device].memory_gib)


def _count(text: str) -> int:
  """argparse's type for a count: an integer >= 1."""
  if not text.isdigit() or int(text) < 1:
    raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 1")
  return int(text)


def main(argv: Sequence[str] | None = None) -> None:
  parser = gin_cli.parser("vlm.plan", __doc__, example="--mesh data=2 --device h100")
  parser.add_argument("--mesh", required=True, metavar="data=N,model=M",
                      help="the virtual device mesh to plan for")
  parser.add_argument("--device", choices=sorted(DEVICES), help="device kind: sets the memory (and peak FLOP/s)")
  parser.add_argument("--device_memory", "--device-memory", type=float, metavar="GiB",
                      help="memory per device in GiB (overrides --device's); without either, no fit verdict")
  parser.add_argument("--frames", type=_count, default=1, help="images per example (PaLI on video frames)")
  args = gin_cli.parse(parser, argv)
  with gin_cli.user_errors(args.debug, "--mesh"):
    mesh = parse_mesh(args.mesh)
  with gin_cli.user_errors(args.debug):
    memory = device_memory(args.device, args.device_memory)
    results, header = plan_from_gin(mesh, args.frames, args.device)
  print(report(results[-1], [("run", " ".join(args.gin_file))] + header, memory, args.device))
  if len(results) > 1:
    print(per_lengths_report(results, memory))


if __name__ == "__main__":
  main(sys.argv[1:])
