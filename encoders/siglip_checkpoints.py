"""SigLIP checkpoints of other systems <-> this project's parameter tree.

- HF transformers: a directory with config.json + model.safetensors (SiglipModel, or SiglipVisionModel
  for an image tower alone; SigLIP 2's Siglip2Model / Siglip2VisionModel, the NaFlex models, likewise). Read
  with `read_hf`, written with `write_hf`. Siglip2 differs only in its patch embedding, a Linear over
  flattened (row, col, channel) patches where SigLIP has the equal convolution, and its position embedding
  size, given as num_patches rather than image_size.
- big_vision: an .npz with big_vision's names, which ours follow (except its text encoder, unnamed there and so
  `Encoder_0`, which is `Transformer` here as in the image tower); geometry is read off the shapes. Its NaFlex
  ViT stores the patch embedding as a Dense [p*p*3, width] and the position embedding as [rows, cols, width].
  Read with `read_big_vision`, written with `write_big_vision`.
- This project: a training MODEL_DIR (model_config.json + orbax checkpoints).

Every reader checks the converted tree against the shapes the config implies, so a checkpoint that does
not fit names the parameter and both shapes instead of failing deep inside JAX.
"""

from __future__ import annotations

import functools
import math
import os
import re
from typing import Any, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from encoders import siglip
from encoders import text as text_lib
from encoders import vit as vit_lib
from vlm import checkpoints
from vlm.checkpoints import CheckpointError


def read(path: str, step: int | None = None) -> tuple[siglip.SigLIPConfig, Any]:
  """(config, params) from any supported SigLIP checkpoint; see the module docstring. `step` picks a MODEL_DIR's
  checkpoint (default its latest); the other formats hold one."""
  project = os.path.isfile(os.path.join(path, checkpoints.MODEL_CONFIG_FILE))
  if step is not None and not project:
    raise CheckpointError(f"a checkpoint step ({step}) was given, but {path} is not a training MODEL_DIR: it holds "
                          "one set of parameters; drop the step")
  if os.path.isfile(path) and path.endswith(".npz"):
    return read_big_vision(path)
  if project:
    return read_project(path, step)
  if os.path.isfile(os.path.join(path, "config.json")):
    return read_hf(path)
  raise CheckpointError(f"no SigLIP checkpoint at {path}: expected a HF directory (config.json + "
                        "model.safetensors), a big_vision .npz file, or a training MODEL_DIR (model_config.json)")


def abstract_params(config: siglip.SigLIPConfig) -> Any:
  """Shapes and dtypes of the parameters `config` builds, without allocating them."""
  size = config.image.image_size
  images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  module = siglip.TwoTower(config)
  if config.text is None:
    init = functools.partial(module.init, method=siglip.TwoTower.encode_image)
    variables = jax.eval_shape(init, jax.random.key(0), images)
  else:
    tokens = jax.ShapeDtypeStruct((1, config.text.max_len), jnp.int32)
    variables = jax.eval_shape(module.init, jax.random.key(0), images, tokens)
  return nn.meta.unbox(variables["params"])


def _finish(config: siglip.SigLIPConfig, flat: dict[str, np.ndarray], source: str):
  """Stacks scanned layers, checks every shape against the config and returns (config, params)."""
  params = checkpoints.unflatten({k: np.asarray(v, np.float32) for k, v in flat.items()})
  if config.image.scan or (config.text is not None and config.text.scan):
    params = checkpoints.stack_layers(params)
  checkpoints.check_shapes(abstract_params(config), params, source)
  return config, jax.tree.map(jnp.asarray, params)


# ----------------------------------------------------------------------------------------------------------
# HF transformers.
# ----------------------------------------------------------------------------------------------------------

def _hf_block_names(hf_prefix: str, our_prefix: str, depth: int) -> Iterator[tuple[str, str, str]]:
  """(hf name, our path, kind) for the transformer blocks of one tower."""
  for i in range(depth):
    hf, ours = f"{hf_prefix}encoder.layers.{i}.", f"{our_prefix}Transformer/encoderblock_{i}/"
    yield from _hf_norm(hf + "layer_norm1", ours + "LayerNorm_0")
    yield from _hf_attention(hf + "self_attn.", ours + "MultiHeadDotProductAttention_0/")
    yield from _hf_norm(hf + "layer_norm2", ours + "LayerNorm_1")
    yield from _hf_mlp(hf + "mlp.", ours + "MlpBlock_0/")


def _hf_norm(hf: str, ours: str):
  yield f"{hf}.weight", f"{ours}/scale", "copy"
  yield f"{hf}.bias", f"{ours}/bias", "copy"


def _hf_attention(hf: str, ours: str):
  for hf_name, our_name in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")):
    yield f"{hf}{hf_name}.weight", f"{ours}{our_name}/kernel", "qkv_kernel"
    yield f"{hf}{hf_name}.bias", f"{ours}{our_name}/bias", "qkv_bias"
  yield f"{hf}out_proj.weight", f"{ours}out/kernel", "out_kernel"
  yield f"{hf}out_proj.bias", f"{ours}out/bias", "copy"


def _hf_mlp(hf: str, ours: str):
  for hf_name, our_name in (("fc1", "Dense_0"), ("fc2", "Dense_1")):
    yield f"{hf}{hf_name}.weight", f"{ours}{our_name}/kernel", "linear"
    yield f"{hf}{hf_name}.bias", f"{ours}{our_name}/bias", "copy"


HF_MODEL_TYPES = ("siglip", "siglip2")  # and their vision-only "<type>_vision_model"


def _hf_table(config: siglip.SigLIPConfig, vision_prefix: str, model_type: str) -> list[tuple[str, str, str]]:
  """The whole name map; the in_proj of torch's MultiheadAttention (MAP head) is handled apart."""
  v, img = vision_prefix, "img/"
  patch_kind = "patch_linear" if model_type == "siglip2" else "conv"
  table = [(f"{v}embeddings.patch_embedding.weight", f"{img}embedding/kernel", patch_kind),
           (f"{v}embeddings.patch_embedding.bias", f"{img}embedding/bias", "copy"),
           (f"{v}embeddings.position_embedding.weight", f"{img}pos_embedding", "posemb")]
  table += _hf_block_names(v, img, config.image.depth)
  table += _hf_norm(f"{v}post_layernorm", f"{img}Transformer/encoder_norm")
  if config.image.pool_type == "map":
    head = f"{img}MAPHead_0/"
    table += [(f"{v}head.probe", f"{head}probe", "copy"),
              (f"{v}head.attention.out_proj.weight", f"{head}MultiHeadDotProductAttention_0/out/kernel",
               "out_kernel"),
              (f"{v}head.attention.out_proj.bias", f"{head}MultiHeadDotProductAttention_0/out/bias", "copy")]
    table += _hf_norm(f"{v}head.layernorm", f"{head}LayerNorm_0")
    table += _hf_mlp(f"{v}head.mlp.", f"{head}MlpBlock_0/")
  if config.text is not None:
    t, txt = "text_model.", "txt/"
    table += [(f"{t}embeddings.token_embedding.weight", f"{txt}Embed_0/embedding", "copy"),
              (f"{t}embeddings.position_embedding.weight", f"{txt}pos_embedding", "posemb")]
    table += _hf_block_names(t, txt, config.text.depth)
    table += _hf_norm(f"{t}final_layer_norm", f"{txt}Transformer/encoder_norm")
    table += [(f"{t}head.weight", f"{txt}head/kernel", "linear"), (f"{t}head.bias", f"{txt}head/bias", "copy"),
              ("logit_scale", "t", "scalar"), ("logit_bias", "b", "scalar")]
  return table


def _to_ours(x: np.ndarray, kind: str, heads: int) -> np.ndarray:
  if kind == "linear":  # torch Linear [out, in] -> [in, out]
    return x.T
  if kind == "qkv_kernel":  # [heads*hd, in] -> [in, heads, hd]
    return x.T.reshape(x.shape[1], heads, -1)
  if kind == "qkv_bias":
    return x.reshape(heads, -1)
  if kind == "out_kernel":  # [out, heads*hd] -> [heads, hd, out]
    return x.T.reshape(heads, -1, x.shape[0])
  if kind == "conv":  # [out, in, kh, kw] -> [kh, kw, in, out]
    return x.transpose(2, 3, 1, 0)
  if kind == "patch_linear":  # [out, p*p*3] over (row, col, channel) -> [p, p, 3, out]
    p = _patch_size_of(x.shape[1], "patch_embedding.weight")
    return x.T.reshape(p, p, 3, x.shape[0])
  if kind == "posemb":
    return x[None]
  if kind == "scalar":
    return x.reshape(())
  return x


def _to_hf(x: np.ndarray, kind: str) -> np.ndarray:
  x = np.asarray(x, np.float32)
  if kind == "linear":
    return x.T
  if kind == "qkv_kernel":
    return x.reshape(x.shape[0], -1).T
  if kind == "qkv_bias":
    return x.reshape(-1)
  if kind == "out_kernel":
    return x.reshape(-1, x.shape[-1]).T
  if kind == "conv":
    return x.transpose(3, 2, 0, 1)
  if kind == "patch_linear":
    return x.reshape(-1, x.shape[-1]).T
  if kind == "posemb":
    return x[0]
  if kind == "scalar":
    return x.reshape(1)
  return x


# transformers' SiglipVisionConfig / SiglipTextConfig defaults: older config.json files leave out fields that
# equal them.
_HF_VISION_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                           image_size=224, patch_size=16)
_HF2_VISION_DEFAULTS = dict(num_patches=256)  # Siglip2VisionConfig's
_HF_TEXT_DEFAULTS = dict(vocab_size=32000, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                         num_attention_heads=12, max_position_embeddings=64)


# HF hidden_act -> encoders.vit.ACTIVATIONS (gelu_new and gelu_fast are the same tanh approximation).
_HF_ACTIVATIONS = {"gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh", "gelu_fast": "gelu_tanh",
                   "gelu": "gelu", "quick_gelu": "quick_gelu"}
_HF_ACTIVATION_NAMES = {"gelu_tanh": "gelu_pytorch_tanh", "gelu": "gelu", "quick_gelu": "quick_gelu"}


def _hf_activation(cfg: dict, tower: str) -> str:
  act = cfg.get("hidden_act", "gelu_pytorch_tanh")
  if act not in _HF_ACTIVATIONS:
    raise CheckpointError(f"HF SigLIP {tower} tower uses hidden_act={act!r}; supported: "
                          f"{', '.join(_HF_ACTIVATIONS)}")
  return _HF_ACTIVATIONS[act]


def _patch_size_of(values_per_patch: int, what: str) -> int:
  """p from a flattened patch's p*p*3 values."""
  p = math.isqrt(values_per_patch // 3)
  if p * p * 3 != values_per_patch:
    raise CheckpointError(f"{what} takes {values_per_patch} values a patch, not p*p*3 for any patch size p")
  return p


def _grid_side(num_patches: int, what: str) -> int:
  side = math.isqrt(num_patches)
  if side * side != num_patches:
    raise CheckpointError(f"{what}: a position embedding of {num_patches} patches is not a square grid")
  return side


def _hf_config(hf: dict, model_type: str) -> siglip.SigLIPConfig:
  vision = hf if hf["model_type"].endswith("_vision_model") else hf.get("vision_config")
  vision = {**_HF_VISION_DEFAULTS, **(_HF2_VISION_DEFAULTS if model_type == "siglip2" else {}), **(vision or {})}
  if model_type == "siglip2":  # the position embedding holds num_patches, a square grid of patches
    image_size = _grid_side(vision["num_patches"], "config.json vision num_patches") * vision["patch_size"]
  else:
    image_size = vision["image_size"]
  image = vit_lib.ViTConfig(
      width=vision["hidden_size"], depth=vision["num_hidden_layers"], mlp_dim=vision["intermediate_size"],
      num_heads=vision["num_attention_heads"], patch_size=vision["patch_size"], image_size=image_size,
      pool_type="map" if vision.get("vision_use_head", True) else "none",
      layer_norm_eps=vision.get("layer_norm_eps", 1e-6), activation=_hf_activation(vision, "vision"))
  text = None
  if "text_config" in hf:
    t = {**_HF_TEXT_DEFAULTS, **(hf["text_config"] or {})}
    text = text_lib.TextConfig(
        vocab_size=t["vocab_size"], width=t["hidden_size"], depth=t["num_hidden_layers"],
        mlp_dim=t["intermediate_size"], num_heads=t["num_attention_heads"], max_len=t["max_position_embeddings"],
        head_dim=t.get("projection_size", t["hidden_size"]), layer_norm_eps=t.get("layer_norm_eps", 1e-6),
        activation=_hf_activation(t, "text"))
  return siglip.SigLIPConfig(image=image, text=text)


def read_hf(directory: str) -> tuple[siglip.SigLIPConfig, Any]:
  """A HF SiglipModel / SiglipVisionModel / Siglip2Model / Siglip2VisionModel directory (config.json +
  model.safetensors, or its shards)."""
  hf = checkpoints.read_json(os.path.join(directory, "config.json"))
  known = [t for base in HF_MODEL_TYPES for t in (base, f"{base}_vision_model")]
  if hf.get("model_type") not in known:
    raise CheckpointError(f"{directory}/config.json has model_type={hf.get('model_type')!r}; a SigLIP checkpoint "
                          f"is one of {', '.join(map(repr, known))}")
  model_type = hf["model_type"].removesuffix("_vision_model")
  tensors, weights = checkpoints.read_hf_weights(directory)
  config = _hf_config(hf, model_type)
  # A vision-only model saves its names with or without the 'vision_model.' prefix, depending on version.
  vision_prefix = "vision_model." if any(k.startswith("vision_model.") for k in tensors) else ""
  flat = {}
  for hf_name, ours, kind in _hf_table(config, vision_prefix, model_type):
    if hf_name not in tensors:
      raise CheckpointError(f"{weights}: tensor {hf_name} is missing")
    heads = config.image.num_heads if ours.startswith("img/") else getattr(config.text, "num_heads", 1)
    flat[ours] = _to_ours(tensors[hf_name], kind, heads)
  if config.image.pool_type == "map":
    in_w, in_b = tensors[f"{vision_prefix}head.attention.in_proj_weight"], tensors[
        f"{vision_prefix}head.attention.in_proj_bias"]
    for j, name in enumerate(("query", "key", "value")):
      rows = slice(j * in_w.shape[1], (j + 1) * in_w.shape[1])
      path = f"img/MAPHead_0/MultiHeadDotProductAttention_0/{name}/"
      flat[path + "kernel"] = _to_ours(in_w[rows], "qkv_kernel", config.image.num_heads)
      flat[path + "bias"] = _to_ours(in_b[rows], "qkv_bias", config.image.num_heads)
  flat.setdefault("t", np.float32(config.t_init))  # image-only: unused, but keep the tree uniform
  flat.setdefault("b", np.float32(config.b_init))
  return _finish(config, flat, weights)


def write_hf(config: siglip.SigLIPConfig, params: Any, directory: str, model_type: str = "siglip") -> None:
  """Exports to a HF SiglipModel directory (or SiglipVisionModel for an image tower alone); with
  model_type='siglip2', to Siglip2Model / Siglip2VisionModel (the NaFlex models: patches in, any aspect)."""
  if model_type not in HF_MODEL_TYPES:
    raise ValueError(f"model_type={model_type!r} is not one of {HF_MODEL_TYPES}")
  if config.image.head_dim is not None or config.image.pool_type == "gap":
    raise CheckpointError("HF SigLIP has no image head and no 'gap' pooling; this model cannot be exported to it")
  os.makedirs(directory, exist_ok=True)
  flat = checkpoints.flatten(checkpoints.unstack_layers(jax.tree.map(np.asarray, params)))
  vision_prefix = "vision_model." if config.text is not None else ""
  tensors = {hf_name: _to_hf(flat[ours], kind)
             for hf_name, ours, kind in _hf_table(config, vision_prefix, model_type)}
  if config.image.pool_type == "map":
    path = "img/MAPHead_0/MultiHeadDotProductAttention_0/"
    tensors[f"{vision_prefix}head.attention.in_proj_weight"] = np.concatenate(
        [_to_hf(flat[f"{path}{n}/kernel"], "qkv_kernel") for n in ("query", "key", "value")])
    tensors[f"{vision_prefix}head.attention.in_proj_bias"] = np.concatenate(
        [_to_hf(flat[f"{path}{n}/bias"], "qkv_bias") for n in ("query", "key", "value")])
  img = config.image
  size = dict(num_patches=img.grid ** 2) if model_type == "siglip2" else dict(image_size=img.image_size)
  vision = dict(model_type=f"{model_type}_vision_model", hidden_size=img.width, num_hidden_layers=img.depth,
                intermediate_size=img.mlp_dim, num_attention_heads=img.num_heads, patch_size=img.patch_size,
                **size, num_channels=3, hidden_act=_HF_ACTIVATION_NAMES[img.activation],
                layer_norm_eps=img.layer_norm_eps, vision_use_head=img.pool_type == "map")
  name = "Siglip2" if model_type == "siglip2" else "Siglip"
  if config.text is None:
    hf = dict(architectures=[f"{name}VisionModel"], **vision)
  else:
    t = config.text
    text = dict(model_type=f"{model_type}_text_model", vocab_size=t.vocab_size, hidden_size=t.width,
                num_hidden_layers=t.depth, intermediate_size=t.mlp_dim, num_attention_heads=t.num_heads,
                max_position_embeddings=t.max_len, projection_size=t.head_dim or t.width,
                hidden_act=_HF_ACTIVATION_NAMES[t.activation], layer_norm_eps=t.layer_norm_eps)
    hf = dict(architectures=[f"{name}Model"], model_type=model_type, text_config=text, vision_config=vision)
  checkpoints.write_safetensors(tensors, os.path.join(directory, "model.safetensors"))
  checkpoints.write_json(hf, os.path.join(directory, "config.json"))


# ----------------------------------------------------------------------------------------------------------
# big_vision .npz and project checkpoints.
# ----------------------------------------------------------------------------------------------------------

_BIG_VISION_TEXT_ENCODER = re.compile(r"^txt/Encoder_0/")


def _count_blocks(flat: dict, prefix: str) -> tuple[int, bool]:
  """(depth, scanned) of the tower under `prefix` ('img/' or 'txt/')."""
  scanned_key = f"{prefix}Transformer/encoderblock/LayerNorm_0/scale"
  if scanned_key in flat:
    return flat[scanned_key].shape[0], True
  depth = 0
  while f"{prefix}Transformer/encoderblock_{depth}/LayerNorm_0/scale" in flat:
    depth += 1
  return depth, False


def _from_naflex_layout(flat: dict, path: str) -> None:
  """big_vision's NaFlex ViT names its arrays as the plain ViT does, in other shapes: the patch embedding a
  Dense [p*p*3, width] over (row, col, channel) patches, the position embedding [rows, cols, width]."""
  kernel = flat["img/embedding/kernel"]
  if kernel.ndim == 2:
    p = _patch_size_of(kernel.shape[0], f"{path}: img/embedding/kernel")
    flat["img/embedding/kernel"] = kernel.reshape(p, p, 3, kernel.shape[1])
  posemb = flat.get("img/pos_embedding")
  if posemb is not None and posemb.ndim == 3 and posemb.shape[0] != 1:
    if posemb.shape[0] != posemb.shape[1]:
      raise CheckpointError(f"{path}: img/pos_embedding is a {posemb.shape[0]}x{posemb.shape[1]} grid; only "
                            "square position-embedding grids are supported")
    flat["img/pos_embedding"] = posemb.reshape(1, -1, posemb.shape[-1])


def read_big_vision(path: str) -> tuple[siglip.SigLIPConfig, Any]:
  """A big_vision SigLIP (or ViT) .npz, plain or NaFlex; every size is read off the array shapes."""
  flat = {_BIG_VISION_TEXT_ENCODER.sub("txt/Transformer/", k): v for k, v in checkpoints.read_npz(path).items()}
  if "img/embedding/kernel" not in flat:
    raise CheckpointError(f"{path}: no 'img/embedding/kernel' array; not a big_vision SigLIP checkpoint")
  _from_naflex_layout(flat, path)
  depth, scanned = _count_blocks(flat, "img/")
  if scanned or _count_blocks(flat, "txt/")[1]:  # per-layer names unless the config asks for scan
    flat = checkpoints.flatten(checkpoints.unstack_layers(checkpoints.unflatten(flat)))
  block = "img/Transformer/encoderblock_0/"
  patch, _, _, width = flat["img/embedding/kernel"].shape
  grid = int(round(flat["img/pos_embedding"].shape[1] ** 0.5))
  pool = "map" if "img/MAPHead_0/probe" in flat else "gap"
  image = vit_lib.ViTConfig(
      width=width, depth=depth, mlp_dim=flat[block + "MlpBlock_0/Dense_0/kernel"].shape[1],
      num_heads=flat[block + "MultiHeadDotProductAttention_0/query/kernel"].shape[1], patch_size=patch,
      image_size=grid * patch, pool_type=pool,
      head_dim=flat["img/head/kernel"].shape[1] if "img/head/kernel" in flat else None)
  text = None
  if "txt/Embed_0/embedding" in flat:
    tdepth, _ = _count_blocks(flat, "txt/")
    tblock = "txt/Transformer/encoderblock_0/"
    vocab, twidth = flat["txt/Embed_0/embedding"].shape
    text = text_lib.TextConfig(
        vocab_size=vocab, width=twidth, depth=tdepth, mlp_dim=flat[tblock + "MlpBlock_0/Dense_0/kernel"].shape[1],
        num_heads=flat[tblock + "MultiHeadDotProductAttention_0/query/kernel"].shape[1],
        max_len=flat["txt/pos_embedding"].shape[1], head_dim=flat["txt/head/kernel"].shape[1])
  config = siglip.SigLIPConfig(image=image, text=text)
  flat.setdefault("t", np.float32(config.t_init))
  flat.setdefault("b", np.float32(config.b_init))
  return _finish(config, flat, path)


def write_big_vision(config: siglip.SigLIPConfig, params: Any, path: str, naflex: bool = False) -> None:
  """Exports to a big_vision .npz (per-layer names, its text encoder as `Encoder_0`); with naflex=True in
  its NaFlex ViT's layout (see `_from_naflex_layout`). Written atomically."""
  del config  # the arrays carry every size
  flat = checkpoints.flatten(checkpoints.unstack_layers(jax.tree.map(np.asarray, params)))
  flat = {re.sub(r"^txt/Transformer/", "txt/Encoder_0/", k): np.asarray(v, np.float32) for k, v in flat.items()}
  if naflex:
    kernel, posemb = flat["img/embedding/kernel"], flat["img/pos_embedding"]
    flat["img/embedding/kernel"] = kernel.reshape(-1, kernel.shape[-1])
    side = math.isqrt(posemb.shape[1])
    flat["img/pos_embedding"] = posemb.reshape(side, side, posemb.shape[-1])
  checkpoints.write_npz({f"params/{k}": v for k, v in flat.items()}, path)


TRAINING_ONLY = ("dino_head", "ibot_head", "distill_head", "locca")  # parameters of training objectives


def read_project(model_dir: str, step: int | None = None) -> tuple[siglip.SigLIPConfig, Any]:
  """The latest checkpoint of a training MODEL_DIR."""
  # A run with dense objectives also saved their heads and decoder (encoders/objectives): the towers only here.
  meta, params = checkpoints.read_project(model_dir, "siglip",
                                          lambda meta: abstract_params(siglip.SigLIPConfig.from_json(meta)),
                                          leave_out=TRAINING_ONLY, step=step)
  return siglip.SigLIPConfig.from_json(meta), params
