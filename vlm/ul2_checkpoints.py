"""UL2 / T5 checkpoints: HF T5ForConditionalGeneration directories (read and write) and project MODEL_DIRs.

HF stores torch Linear weights as [out, in] with heads joined; ours are [in, heads, head_dim] kernels (see
vlm.layers.MultiHeadAttention) and [heads, buckets] relative-position tables, so every tensor is transposed
and reshaped, nothing else. The name table below is the whole mapping.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import numpy as np

from vlm import checkpoints
from vlm import ul2
from vlm.checkpoints import CheckpointError

_HF_ACTIVATIONS = {"gated-silu": "silu", "gated-gelu": "gelu", "gated-relu": "relu"}


def read(path: str) -> tuple[ul2.UL2Config, Any]:
  """(config, params) from a HF T5 directory or a training MODEL_DIR of a UL2."""
  if os.path.isfile(os.path.join(path, checkpoints.MODEL_CONFIG_FILE)):
    return read_project(path)
  if os.path.isfile(os.path.join(path, "config.json")):
    return read_hf(path)
  raise CheckpointError(f"no UL2/T5 checkpoint at {path}: expected a HF T5ForConditionalGeneration directory "
                        "(config.json + model.safetensors) or a training MODEL_DIR (model_config.json)")


def read_project(model_dir: str) -> tuple[ul2.UL2Config, Any]:
  meta, params = checkpoints.read_project(model_dir, "ul2",
                                          lambda meta: ul2.abstract_params(ul2.UL2Config.from_json(meta)))
  return ul2.UL2Config.from_json(meta), params


def hf_config(hf: dict, has_lm_head: bool) -> ul2.UL2Config:
  """Our geometry from a HF T5Config dict (T5 v1.1 / UL2 / Flan-T5 style: gated MLPs only).

  The output head is tied exactly when the file has no lm_head.weight. Recent transformers always tie it
  and record T5 v1.1's missing output scaling as `scale_decoder_outputs: false`; older configs say
  `tie_word_embeddings: false` (separate head, no scaling) or true (original T5: tied and scaled).
  """
  proj = hf.get("feed_forward_proj", "relu")
  if proj not in _HF_ACTIVATIONS:
    raise CheckpointError(f"feed_forward_proj={proj!r} is not supported: this UL2 reads the gated MLPs of "
                          f"T5 v1.1, Flan-T5 and UL2 ({', '.join(_HF_ACTIVATIONS)}), not T5 v1.0's plain one")
  vocab_size = hf.get("vocab_size", 32128)
  start_id = _token_id(hf, "decoder_start_token_id", ul2.PAD_ID)
  if start_id >= vocab_size:  # the UL2Config would refuse it too, without naming the file
    raise CheckpointError(f"config.json: decoder_start_token_id={start_id} is outside the vocabulary "
                          f"[0, {vocab_size}) of vocab_size; set it to the model's start token (T5's is 0)")
  d_model = hf.get("d_model", 512)
  num_layers = hf.get("num_layers", 6)
  return ul2.UL2Config(
      vocab_size=vocab_size, d_model=d_model, num_heads=hf.get("num_heads", 8),
      head_dim=hf.get("d_kv", 64), d_ff=hf.get("d_ff", 2048), num_encoder_layers=num_layers,
      num_decoder_layers=hf.get("num_decoder_layers") or num_layers, activation=_HF_ACTIVATIONS[proj],
      num_buckets=hf.get("relative_attention_num_buckets", 32),
      max_distance=hf.get("relative_attention_max_distance", 128),
      tie_embeddings=not has_lm_head,
      scale_decoder_outputs=hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True)),
      eps=hf.get("layer_norm_epsilon", 1e-6), eos_id=_token_id(hf, "eos_token_id", ul2.EOS_ID),
      start_id=start_id)


def _token_id(hf: dict, key: str, default: int) -> int:
  """A special token id of a HF config; of a list of EOS ids (some configs give several), the first."""
  value = hf.get(key)
  if isinstance(value, list) and value:
    value = value[0]
  if value is None:
    return default
  if isinstance(value, bool) or not isinstance(value, int) or value < 0:
    raise CheckpointError(f"config.json: {key}={value!r} is not a token id")
  return value


def _hf_names(config: ul2.UL2Config) -> Iterator[tuple[str, str, str]]:
  """(HF name, our flat name, kind) for every tensor; kind says how to convert it."""
  yield "shared.weight", "token_embedder/embedding", "copy"
  if not config.tie_embeddings:
    yield "lm_head.weight", "decoder/logits_dense/kernel", "linear"
  for stack, depth in (("encoder", config.num_encoder_layers), ("decoder", config.num_decoder_layers)):
    yield (f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
           f"{stack}/relpos_bias/rel_embedding", "linear")
    yield f"{stack}.final_layer_norm.weight", f"{stack}/{stack}_norm/scale", "copy"
    sublayers = ([("SelfAttention", "attention", "pre_attention_layer_norm")] if stack == "encoder" else
                 [("SelfAttention", "self_attention", "pre_self_attention_layer_norm"),
                  ("EncDecAttention", "encoder_decoder_attention", "pre_cross_attention_layer_norm")])
    for i in range(depth):
      hf, ours = f"{stack}.block.{i}.layer", f"{stack}/layers_{i}"
      for j, (hf_attn, our_attn, our_norm) in enumerate(sublayers):
        yield f"{hf}.{j}.layer_norm.weight", f"{ours}/{our_norm}/scale", "copy"
        for hf_proj, our_proj in (("q", "query"), ("k", "key"), ("v", "value")):
          yield f"{hf}.{j}.{hf_attn}.{hf_proj}.weight", f"{ours}/{our_attn}/{our_proj}/kernel", "heads_in"
        yield f"{hf}.{j}.{hf_attn}.o.weight", f"{ours}/{our_attn}/out/kernel", "heads_out"
      j = len(sublayers)
      yield f"{hf}.{j}.layer_norm.weight", f"{ours}/pre_mlp_layer_norm/scale", "copy"
      for name in ("wi_0", "wi_1", "wo"):
        yield f"{hf}.{j}.DenseReluDense.{name}.weight", f"{ours}/mlp/{name}/kernel", "linear"


def _to_ours(x: np.ndarray, kind: str, config: ul2.UL2Config) -> np.ndarray:
  if kind == "copy":
    return x
  if kind == "linear":  # torch [out, in] -> [in, out]; relpos [buckets, heads] -> [heads, buckets]
    return x.T
  if kind == "heads_in":  # [heads*head_dim, d] -> [d, heads, head_dim]
    return x.T.reshape(x.shape[1], config.num_heads, config.head_dim)
  return x.T.reshape(config.num_heads, config.head_dim, x.shape[0])  # heads_out: [d, h*k] -> [h, k, d]


def _hf_shape(shape: tuple[int, ...], kind: str) -> tuple[int, ...]:
  """The HF shape of a tensor whose shape is ours, by the same rules as _to_hf."""
  if kind == "copy":
    return tuple(shape)
  if kind == "linear":
    return tuple(reversed(shape))
  if kind == "heads_in":  # [d, h, k] -> [h*k, d]
    return (shape[1] * shape[2], shape[0])
  return (shape[2], shape[0] * shape[1])  # heads_out: [h, k, d] -> [d, h*k]


def _to_hf(x: np.ndarray, kind: str) -> np.ndarray:
  if kind == "copy":
    return x
  if kind == "linear":
    return x.T
  if kind == "heads_in":
    return x.reshape(x.shape[0], -1).T
  return x.reshape(-1, x.shape[-1]).T


def read_hf(directory: str) -> tuple[ul2.UL2Config, Any]:
  """A HF T5ForConditionalGeneration directory (config.json + model.safetensors, or its shards), as an
  unscanned UL2 (vlm.model converts the layout for a scanned PaLI)."""
  hf = checkpoints.read_json(os.path.join(directory, "config.json"))
  if hf.get("model_type", "t5") not in ("t5", "mt5"):
    raise CheckpointError(f"{directory} holds a {hf.get('model_type')!r} model; expected a T5 / mT5 "
                          "encoder-decoder (model_type 't5')")
  tensors, source = checkpoints.read_hf_weights(directory)
  config = hf_config(hf, has_lm_head="lm_head.weight" in tensors)
  expected = checkpoints.flatten(ul2.abstract_params(config))
  flat = {}
  for hf_name, ours, kind in _hf_names(config):
    if hf_name not in tensors:
      raise CheckpointError(f"{source} lacks {hf_name}, which a {config.num_encoder_layers}+"
                            f"{config.num_decoder_layers}-layer T5 with these settings needs")
    want = _hf_shape(expected[ours].shape, kind)
    if tuple(tensors[hf_name].shape) != want:  # checked before the reshapes, which would fail without a name
      raise CheckpointError(f"{source}: {hf_name} has shape {tuple(tensors[hf_name].shape)} but config.json "
                            f"(d_model, d_kv x num_heads, d_ff, vocab_size) implies {want}")
    flat[ours] = _to_ours(np.asarray(tensors[hf_name], np.float32), kind, config)
  return config, checkpoints.unflatten(flat)


def write_hf(config: ul2.UL2Config, params: Any, directory: str) -> None:
  """Exports to a HF T5ForConditionalGeneration directory that transformers loads with from_pretrained.

  params: in either layout (a scanned UL2's stacked layers are exported one by one)."""
  flat = checkpoints.flatten(checkpoints.unstack_layers(params, "layers"))
  tensors = {hf_name: np.ascontiguousarray(_to_hf(np.asarray(flat[ours], np.float32), kind))
             for hf_name, ours, kind in _hf_names(config)}
  # HF ties the encoder/decoder input embeddings to `shared` but expects them in the state dict.
  tensors["encoder.embed_tokens.weight"] = tensors["decoder.embed_tokens.weight"] = tensors["shared.weight"]
  hf = {"architectures": ["T5ForConditionalGeneration"], "model_type": "t5", "vocab_size": config.vocab_size,
        "d_model": config.d_model, "d_kv": config.head_dim, "d_ff": config.d_ff,
        "num_layers": config.num_encoder_layers, "num_decoder_layers": config.num_decoder_layers,
        "num_heads": config.num_heads, "relative_attention_num_buckets": config.num_buckets,
        "relative_attention_max_distance": config.max_distance, "layer_norm_epsilon": config.eps,
        "feed_forward_proj": f"gated-{config.activation}", "tie_word_embeddings": config.tie_embeddings,
        "scale_decoder_outputs": config.scale_decoder_outputs,
        "is_encoder_decoder": True, "pad_token_id": ul2.PAD_ID, "eos_token_id": config.eos_id,
        "decoder_start_token_id": config.start_id, "dropout_rate": 0.0}
  os.makedirs(directory, exist_ok=True)
  checkpoints.write_safetensors(tensors, os.path.join(directory, "model.safetensors"))
  checkpoints.write_json(hf, os.path.join(directory, "config.json"))
