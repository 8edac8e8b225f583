"""ACID-style active data curation (encoders/objectives/acid.py): exact, deterministic selection on constructed
losses, the per-example sigmoid terms and the logit distillation against numpy, and a curated step."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from encoders import siglip
from encoders import text as text_lib
from encoders import vit as vit_lib
from encoders.objectives import acid
from tests import hf_fixtures


def test_per_example_terms_and_distillation_match_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(5, 5)) * 3
  labels = 2 * np.eye(5) - 1
  rows = -np.log(1 / (1 + np.exp(-labels * logits))).sum(1)
  np.testing.assert_allclose(acid.per_example_sigmoid_loss(jnp.asarray(logits)), rows, rtol=1e-5)
  teacher = rng.normal(size=(5, 5))
  p = 1 / (1 + np.exp(-teacher))
  q = 1 / (1 + np.exp(-logits))
  expected = -np.mean(p * np.log(q) + (1 - p) * np.log(1 - q))
  np.testing.assert_allclose(acid.logit_distillation(jnp.asarray(logits), jnp.asarray(teacher)), expected, rtol=1e-5)


def test_selection_is_exact_and_deterministic_on_constructed_losses():
  """Diagonal-only logits make each example's loss its own: learnability is then known in closed form."""
  n = 6
  student = np.full((n, n), -30.0)  # negatives right for both models: their terms vanish
  teacher = np.full((n, n), -30.0)
  student_pos = np.array([0.0, -2.0, 3.0, -2.0, 1.0, -5.0])  # the student's positive logits
  teacher_pos = np.array([2.0, 2.0, 2.0, 2.0, 2.0, 2.0])
  np.fill_diagonal(student, student_pos)
  np.fill_diagonal(teacher, teacher_pos)
  softplus = lambda x: np.log1p(np.exp(-x))  # -log sigmoid(x)
  learnability = softplus(student_pos) - softplus(teacher_pos)
  expected = np.argsort(-learnability, kind="stable")[:3]  # rows 5, then 1 and 3 tied (the lower first)
  got = np.asarray(acid.select(jnp.asarray(student), jnp.asarray(teacher), 3))
  assert got.tolist() == expected.tolist() == [5, 1, 3]
  assert np.asarray(acid.select(jnp.asarray(student), jnp.asarray(teacher), 3)).tolist() == got.tolist()


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("acid_teacher"))
  hf_fixtures.save_siglip(directory, seed=4, projection_size=48)  # image and text embeddings of one width
  return directory


def student(checkpoint, vocab=hf_fixtures.TEXT["vocab_size"], **kw):
  return siglip.SigLIPModel(image=vit_lib.config("pico/8", image_size=32),
                            text=text_lib.config("pico", vocab_size=vocab, max_len=12, head_dim=32),
                            objectives=(acid.ActiveCuration(checkpoint=checkpoint, **kw),), train_steps=10)


def test_a_curated_step_trains_on_the_chosen_fraction(teacher_dir):
  m = student(teacher_dir, fraction=0.5, distillation_weight=1.0)
  rng = np.random.default_rng(1)
  batch = {"image": jnp.asarray(rng.uniform(-1, 1, (8, 32, 32, 3)), jnp.float32),
           "text": jnp.asarray(rng.integers(1, 97, (8, 12)), jnp.int32)}
  params = nn.meta.unbox(m.init_variables(jax.random.key(0), batch))["params"]
  loss, metrics, _ = m.loss_fn_with_teacher(params, batch, None, teacher=None, aux={}, phase=m.phase(0))
  assert np.isfinite(float(loss)) and float(metrics["loss/acid_distillation"]) > 0
  assert float(metrics["acid/learnability_kept"]) >= float(metrics["acid/learnability_all"])
  grads = jax.grad(lambda p: m.loss_fn_with_teacher(p, batch, None, teacher=None, aux={}, phase=m.phase(0))[0])(params)
  assert float(jnp.abs(grads["img"]["embedding"]["kernel"]).max()) > 0


@pytest.mark.parametrize("kw, match", [
    (dict(fraction=0.0), r"fraction=0.0: the share of each super-batch kept must be in \(0, 1\]"),
    (dict(fraction=1.5), r"must be in \(0, 1\]"),
])
def test_bad_curation_settings(teacher_dir, kw, match):
  with pytest.raises(ValueError, match=match):
    acid.ActiveCuration(checkpoint=teacher_dir, **kw)


def test_a_teacher_of_another_text_vocabulary_is_one_clear_error(teacher_dir):
  with pytest.raises(ValueError, match="reads another text vocabulary"):
    student(teacher_dir, vocab=64)
