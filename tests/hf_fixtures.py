"""Random-init tiny HF SigLIP models, saved as HF directories, for parity tests.

Every weight is perturbed (LayerNorm scales away from 1, biases away from 0) so that a mapping that drops or
transposes a tensor cannot pass by accident.
"""

import contextlib

import numpy as np
import torch
import transformers

TEXT = dict(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=12, projection_size=40)
VISION = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4, image_size=32,
              patch_size=8)


def perturb(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.1 * torch.randn(p.shape, generator=gen))
  return model.eval()


def save_siglip(directory: str, seed: int = 0, **overrides) -> transformers.SiglipModel:
  """overrides: fields set in both towers' configs (hidden_act='gelu', say)."""
  torch.manual_seed(seed)
  config = transformers.SiglipConfig(text_config={**TEXT, **overrides}, vision_config={**VISION, **overrides})
  model = perturb(transformers.SiglipModel(config), seed)
  model.save_pretrained(directory)
  return model


def save_siglip_vision(directory: str, seed: int = 0, **overrides) -> transformers.SiglipVisionModel:
  torch.manual_seed(seed)
  model = perturb(transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**{**VISION, **overrides})), seed)
  model.save_pretrained(directory)
  return model


def images(n: int, size: int, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 3)).astype(np.float32)


def hf_image(model, pixels: np.ndarray):
  vision = model.vision_model if hasattr(model, "vision_model") else model
  with torch.no_grad():
    out = vision(pixel_values=torch.from_numpy(pixels).permute(0, 3, 1, 2))
  pooled = None if out.pooler_output is None else out.pooler_output.numpy()  # None: a tower without a head
  return pooled, out.last_hidden_state.numpy()


def hf_text(model, ids: np.ndarray):
  with torch.no_grad():
    out = model.text_model(input_ids=torch.from_numpy(ids).long())
  return out.pooler_output.numpy(), out.last_hidden_state.numpy()


def save_t5(directory: str, feed_forward_proj: str, tie_word_embeddings: bool, num_layers: int = 2,
            num_decoder_layers: int = 3, seed: int = 0, max_shard_size: str | None = None,
            **overrides) -> transformers.T5ForConditionalGeneration:
  """A perturbed random T5 (gated MLP); depths differ so encoder/decoder tables cannot be swapped.

  `overrides` replace T5Config fields (special token ids, say); `max_shard_size` saves it in shards.
  """
  torch.manual_seed(seed)
  config = transformers.T5Config(**{
      **dict(vocab_size=97, d_model=32, d_kv=8, d_ff=48, num_layers=num_layers,
             num_decoder_layers=num_decoder_layers, num_heads=4, relative_attention_num_buckets=8,
             relative_attention_max_distance=20, feed_forward_proj=feed_forward_proj,
             tie_word_embeddings=tie_word_embeddings, dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0,
             eos_token_id=1),
      **overrides})
  model = transformers.T5ForConditionalGeneration(config)
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.2 * torch.randn(p.shape, generator=gen))
  model.eval().save_pretrained(directory, **({"max_shard_size": max_shard_size} if max_shard_size else {}))
  return model


def t5_logits(model, encoder_ids: np.ndarray, decoder_ids: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return model(input_ids=torch.tensor(encoder_ids), attention_mask=torch.tensor(encoder_ids != 0),
                 decoder_input_ids=torch.tensor(decoder_ids)).logits.numpy()


def t5_greedy(model, encoder_ids: np.ndarray, max_new_tokens: int) -> np.ndarray:
  """HF greedy decoding without the start token (no KV cache: HF's cache breaks when depths differ)."""
  with torch.no_grad():
    out = model.generate(input_ids=torch.tensor(encoder_ids), attention_mask=torch.tensor(encoder_ids != 0),
                         max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, use_cache=False)
  return out.numpy()[:, 1:]


# SigLIP 2 (NaFlex): the same towers; patches of 4x4 pixels, a position embedding of 8x8 patches.
VISION2 = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4, patch_size=4,
               num_patches=64)


def save_siglip2(directory: str, seed: int = 0, max_shard_size: str | None = None,
                 **overrides) -> transformers.Siglip2Model:
  torch.manual_seed(seed)
  config = transformers.Siglip2Config(text_config={**TEXT, **overrides}, vision_config={**VISION2, **overrides})
  model = perturb(transformers.Siglip2Model(config), seed)
  model.save_pretrained(directory, **({"max_shard_size": max_shard_size} if max_shard_size else {}))
  return model


def save_siglip2_vision(directory: str, seed: int = 0, **overrides) -> transformers.Siglip2VisionModel:
  torch.manual_seed(seed)
  model = perturb(transformers.Siglip2VisionModel(transformers.Siglip2VisionConfig(**{**VISION2, **overrides})),
                  seed)
  model.save_pretrained(directory)
  return model


def naflex_inputs(grids: list[tuple[int, int]], length: int, patch_size: int = 4, seed: int = 0):
  """Random patches [N, length, p*p*3] in [-1, 1], mask and spatial shapes for patch grids `grids`, with
  garbage (not zeros) in the padding, which nothing may read."""
  rng = np.random.default_rng(seed)
  patches = rng.uniform(-1, 1, (len(grids), length, patch_size * patch_size * 3)).astype(np.float32)
  mask = np.array([[k < r * c for k in range(length)] for r, c in grids], np.int32)
  return patches, mask, np.array(grids, np.int64)


def hf_patches(model, patches: np.ndarray, mask: np.ndarray, spatial_shapes: np.ndarray, fix_torch: bool = True):
  """HF's (pooled or None, tokens); with fix_torch, its position-embedding resize corrected for K x 1 grids
  (see correct_torch_antialias)."""
  vision = model.vision_model if hasattr(model, "vision_model") else model
  with torch.no_grad(), (correct_torch_antialias() if fix_torch else contextlib.nullcontext()):
    out = vision(pixel_values=torch.from_numpy(patches), pixel_attention_mask=torch.from_numpy(mask),
                 spatial_shapes=torch.from_numpy(spatial_shapes))
  pooled = None if out.pooler_output is None else out.pooler_output.numpy()
  return pooled, out.last_hidden_state.numpy()


@contextlib.contextmanager
def correct_torch_antialias():
  """torch 2.13's CPU interpolate(bilinear, antialias=True) gives every output row the first row's weights
  when the output is one column wide and taller than the input (checked against PIL and against torch on the
  transposed grid, which is right). HF's Siglip2 resizes its position embedding with it, so its K x 1 grids
  (K > the embedding's side) are wrong on CPU. Inside this context such calls run on the transposed grid."""
  original = torch.nn.functional.interpolate

  def interpolate(x, size=None, **kwargs):
    if size is not None and kwargs.get("antialias") and tuple(size)[1] == 1:
      return original(x.transpose(-1, -2), size=tuple(size)[::-1], **kwargs).transpose(-1, -2)
    return original(x, size=size, **kwargs)

  torch.nn.functional.interpolate = interpolate
  try:
    yield
  finally:
    torch.nn.functional.interpolate = original
