"""Tiny models the tests train in seconds, shared by the test files that need a real checkpoint."""

import jax

from encoders import vit as vit_lib
from tests import scene_data
from vlm import model as model_lib, optim, partitioning, trainer, ul2

PALI_IMAGE_SIZE = 16


def train_pali(directory: str, train_steps: int) -> None:
  """A pico PaLI (16 px, the shipped sentencepiece vocabulary, prompts of 12 tokens, answers of 6) trained on
  scene VQA (vqa_synthetic) in MODEL_DIR `directory`, with its vocabulary recorded so that vlm.pali / vlm.infer
  can load it."""
  model = model_lib.PaLIModel(vit=vit_lib.config("pico/4", image_size=PALI_IMAGE_SIZE, pool_type="none"),
                              ul2=ul2.config("pico", vocab_size=scene_data.vocab_size()), max_decode_len=6,
                              vocabulary=scene_data.vocabulary(), prompt_length=12)
  trainer.train(model, scene_data.Batches("vqa_synthetic", {"inputs": 12, "targets": 6}, size=PALI_IMAGE_SIZE),
                model_dir=directory, train_steps=train_steps, batch_size=8, optimizer=optim.adamw,
                learning_rate=1e-3, partitioner=partitioning.Partitioner(devices=jax.devices()[:1]),
                checkpoint_period=train_steps, progress=False)
