"""python -m vlm.convert: round trips between HF, big_vision and project checkpoints, compared by what the
loaded models compute; refusals in one line; nothing half-written."""

import os
import subprocess
import sys
import types

import numpy as np
import pytest

from encoders import siglip
from tests import hf_fixtures
from tests.cli_errors import assert_one_line_error
from vlm import checkpoints, convert, ul2

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(argv, capsys):
  """vlm.convert's main in this process (no JAX start-up per call): a CompletedProcess-like result."""
  try:
    convert.main([str(a) for a in argv])
    code = 0
  except SystemExit as e:
    code = e.code
  out = capsys.readouterr()
  return types.SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)


def assert_same_siglip(path, reference, naflex=False):
  got, want = siglip.load(path), siglip.load(reference)
  size = 16 if naflex else want.config.image.image_size
  pixels = hf_fixtures.images(2, size, seed=1)
  for key, value in want.encode_image(pixels).items():
    np.testing.assert_allclose(got.encode_image(pixels)[key], value, rtol=1e-5, atol=1e-5)
  if want.config.text is not None:
    ids = np.random.default_rng(0).integers(1, want.config.text.vocab_size, (2, want.config.text.max_len))
    for key, value in want.encode_text(ids).items():
      np.testing.assert_allclose(got.encode_text(ids)[key], value, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def hf_siglip(tmp_path_factory):
  directory = tmp_path_factory.mktemp("hf_siglip")
  hf_fixtures.save_siglip(str(directory))
  return directory


def test_siglip_round_trips_through_project_big_vision_and_hf(hf_siglip, tmp_path, capsys):
  project, npz, back = tmp_path / "project", tmp_path / "siglip.npz", tmp_path / "hf"
  result = run(["--from", hf_siglip, "--to", project, "--format", "project"], capsys)
  assert result.returncode == 0, result.stderr
  assert "SigLIP" in result.stdout
  assert_same_siglip(project, hf_siglip)
  assert run(["--from", project, "--to", npz, "--format", "big_vision"], capsys).returncode == 0
  assert_same_siglip(npz, hf_siglip)
  assert run(["--from", npz, "--to", back, "--format", "hf"], capsys).returncode == 0
  assert sorted(os.listdir(back)) == ["config.json", "model.safetensors"]
  assert_same_siglip(back, hf_siglip)
  assert [p for p in os.listdir(tmp_path) if ".tmp-" in p] == []  # no staging left behind


def test_siglip2_round_trips_with_naflex(tmp_path, capsys):
  hf2 = tmp_path / "hf2"
  hf_fixtures.save_siglip2(str(hf2))
  project, back, npz = tmp_path / "project", tmp_path / "back", tmp_path / "naflex.npz"
  assert run(["--from", hf2, "--to", project, "--format", "project"], capsys).returncode == 0
  assert run(["--from", project, "--to", back, "--format", "hf", "--naflex"], capsys).returncode == 0
  assert '"siglip2"' in (back / "config.json").read_text()
  assert_same_siglip(back, hf2, naflex=True)
  assert run(["--from", project, "--to", npz, "--format", "big_vision", "--naflex"], capsys).returncode == 0
  assert_same_siglip(npz, hf2, naflex=True)


def test_ul2_round_trips_through_project_and_hf(tmp_path, capsys):
  hf = tmp_path / "t5"
  hf_fixtures.save_t5(str(hf), "gated-gelu", False)
  project, back = tmp_path / "project", tmp_path / "back"
  result = run(["--from", hf, "--to", project, "--format", "project"], capsys)
  assert result.returncode == 0 and "UL2" in result.stdout, result.stderr
  assert run(["--from", project, "--to", back, "--format", "hf"], capsys).returncode == 0
  want = ul2.load(hf)
  rng = np.random.default_rng(0)
  encoder, decoder = rng.integers(2, 97, (2, 9)), rng.integers(2, 97, (2, 5))
  for path in (project, back):
    got = ul2.load(path)
    assert got.config == want.config
    np.testing.assert_allclose(got.logits(encoder, decoder), want.logits(encoder, decoder), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got.generate(encoder, 6), want.generate(encoder, 6))


def test_an_existing_output_is_replaced_only_with_overwrite(hf_siglip, tmp_path, capsys):
  target = tmp_path / "out"
  target.mkdir()
  (target / "keep.txt").write_text("mine")
  result = run(["--from", hf_siglip, "--to", target, "--format", "hf"], capsys)
  assert_one_line_error(result, f"--to {target} exists and is not empty; pass --overwrite")
  assert os.listdir(target) == ["keep.txt"]
  result = run(["--from", hf_siglip, "--to", target, "--format", "hf", "--overwrite"], capsys)
  assert result.returncode == 0, result.stderr
  assert sorted(os.listdir(target)) == ["config.json", "model.safetensors"]
  assert_same_siglip(target, hf_siglip)
  (tmp_path / "empty").mkdir()  # an empty directory is no one's work: written without --overwrite
  assert run(["--from", hf_siglip, "--to", f"{tmp_path / 'empty'}/", "--format", "hf"], capsys).returncode == 0
  assert sorted(os.listdir(tmp_path / "empty")) == ["config.json", "model.safetensors"]
  assert sorted(os.listdir(tmp_path)) == ["empty", "out"]  # no staging left behind


def test_a_failed_conversion_leaves_nothing_behind(tmp_path, capsys):
  """A SigLIP with an image head has no HF form: refused while writing, and neither --to nor staging remains."""
  from encoders import siglip_checkpoints, vit as vit_lib  # pylint: disable=import-outside-toplevel
  config = siglip.SigLIPConfig(image=vit_lib.config("pico/4", image_size=16, head_dim=8))
  params = jax_random_params(siglip_checkpoints.abstract_params(config))
  checkpoints.write_model_dir(str(tmp_path / "headed"), config.to_json(), params)
  result = run(["--from", tmp_path / "headed", "--to", tmp_path / "out", "--format", "hf"], capsys)
  assert_one_line_error(result, "HF SigLIP has no image head")
  assert sorted(os.listdir(tmp_path)) == ["headed"]


def jax_random_params(abstract):
  import jax  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  return jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32), abstract)


@pytest.mark.parametrize("args,fragments", [
    (["--from", "{tmp}/missing", "--to", "{tmp}/out", "--format", "hf"], ["--from {tmp}/missing does not exist"]),
    (["--from", "{t5}", "--to", "{tmp}/t5.npz", "--format", "big_vision"],
     ["is a UL2 / T5 checkpoint; big_vision holds SigLIP ones"]),
    (["--from", "{t5}", "--to", "{tmp}/out", "--format", "hf", "--naflex"], ["--naflex applies to SigLIP exports"]),
    (["--from", "{siglip}", "--to", "{tmp}/out", "--format", "big_vision"], ["name it *.npz"]),
    (["--from", "{siglip}", "--to", "{siglip}", "--format", "hf", "--overwrite"], ["is --from"]),
    (["--from", "{tmp}", "--to", "{tmp}/out", "--format", "hf"], ["no SigLIP checkpoint at {tmp}"]),
    (["--from", "{siglip}", "--to", "{tmp}/out", "--format", "orbax"], ["invalid choice: 'orbax'"]),
])
def test_bad_input_is_one_line(args, fragments, hf_siglip, tmp_path, capsys):
  t5 = tmp_path / "t5"
  t5.mkdir()
  (t5 / "config.json").write_text('{"model_type": "t5"}')
  fill = dict(tmp=tmp_path, t5=t5, siglip=hf_siglip)
  result = run([a.format(**fill) for a in args], capsys)
  assert_one_line_error(result, *[f.format(**fill) for f in fragments])
  assert not os.path.exists(tmp_path / "out")


def test_the_module_runs_and_documents_itself(tmp_path):
  env = {**os.environ, "PYTHONPATH": REPO}
  help_text = subprocess.run([sys.executable, "-m", "vlm.convert", "--help"], capture_output=True, text=True,
                             env=env, cwd=REPO, check=True).stdout
  assert "--format {project,hf,big_vision}" in help_text and "python -m vlm.convert --from" in help_text
  result = subprocess.run([sys.executable, "-m", "vlm.convert", "--from", str(tmp_path / "nothing"), "--to",
                           str(tmp_path / "out"), "--format", "project"], capture_output=True, text=True, env=env,
                          cwd=REPO)
  assert_one_line_error(result, "does not exist")
