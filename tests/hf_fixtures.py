"""Random-init tiny HF SigLIP models, saved as HF directories, for parity tests.

Every weight is perturbed (LayerNorm scales away from 1, biases away from 0) so that a mapping that drops or
transposes a tensor cannot pass by accident.
"""

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


def save_siglip(directory: str, seed: int = 0) -> transformers.SiglipModel:
  torch.manual_seed(seed)
  model = perturb(transformers.SiglipModel(transformers.SiglipConfig(text_config=TEXT, vision_config=VISION)), seed)
  model.save_pretrained(directory)
  return model


def save_siglip_vision(directory: str, seed: int = 0) -> transformers.SiglipVisionModel:
  torch.manual_seed(seed)
  model = perturb(transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**VISION)), seed)
  model.save_pretrained(directory)
  return model


def images(n: int, size: int, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 3)).astype(np.float32)


def hf_image(model, pixels: np.ndarray):
  vision = model.vision_model if hasattr(model, "vision_model") else model
  with torch.no_grad():
    out = vision(pixel_values=torch.from_numpy(pixels).permute(0, 3, 1, 2))
  return out.pooler_output.numpy(), out.last_hidden_state.numpy()


def hf_text(model, ids: np.ndarray):
  with torch.no_grad():
    out = model.text_model(input_ids=torch.from_numpy(ids).long())
  return out.pooler_output.numpy(), out.last_hidden_state.numpy()
