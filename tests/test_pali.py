"""PaLI assembly: visual-token prefix, decoding and scoring, several images, warm starts, freezing, learning."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio

from encoders import siglip
from encoders import text as text_lib
from encoders import vit as vit_lib
from tasks import registry  # also registers the generated seqio tasks the mixture below names
from tests import hf_fixtures, scene_data
from vlm import checkpoints, model as model_lib, optim, partitioning, trainer, ul2, ul2_checkpoints

IMAGE_SIZE = 16
# Prompts cut at 12 sentencepiece tokens (most VQA prompts fit; the longest comparisons take 21), answers at 6:
# these tests check the model's mechanics, not what it learns.
LENGTHS = {"inputs": 12, "targets": 6}
# Two generated tasks mixed evenly, for the multi-device test (what the old {"vqa": 1, "refexp": 1} mixed).
VQA_REFEXP = "test_pali_vqa_refexp_synthetic"
if VQA_REFEXP not in seqio.MixtureRegistry.names():
  seqio.MixtureRegistry.add(VQA_REFEXP, [("vqa_synthetic", 1.0), ("refexp_synthetic", 1.0)])


def tiny(**kw):
  return model_lib.PaLIModel(vit=vit_lib.config("pico/4", image_size=IMAGE_SIZE, pool_type="none"),
                             ul2=ul2.config("pico", vocab_size=scene_data.vocab_size()), max_decode_len=6, **kw)


def batch(n=4, task="vqa_synthetic", split="train"):
  return scene_data.Batches(task, LENGTHS, size=IMAGE_SIZE, split=split).batch(0, n)


@pytest.fixture(scope="module")
def model_and_params():
  model = tiny()
  params = model.init_variables(jax.random.key(0), batch())["params"]
  return model, jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(1), x.shape), params)


def test_visual_tokens_prefix_the_encoder(model_and_params):
  model, params = model_and_params
  b = batch()
  encoded, mask = model.module.apply({"params": params}, b["image"], b["encoder_input_tokens"],
                                     method=model_lib.PaLI.encode)
  visual = (IMAGE_SIZE // 4) ** 2
  assert encoded.shape == (4, visual + LENGTHS["inputs"], 32)
  np.testing.assert_array_equal(mask[:, :visual], True)
  np.testing.assert_array_equal(mask[:, visual:], b["encoder_input_tokens"] != 0)
  # The image matters: another image changes the encoding of the same prompt.
  other, _ = model.module.apply({"params": params}, b["image"][::-1], b["encoder_input_tokens"],
                                method=model_lib.PaLI.encode)
  assert not np.allclose(encoded[0, visual:], other[0, visual:])


def test_greedy_decode_equals_argmax_of_teacher_forced_logits(model_and_params):
  model, params = model_and_params
  b = batch()
  result = model.predict_batch(params, b, max_decode_len=5)
  tokens = np.asarray(result.tokens)
  logits = model.module.apply({"params": params}, b["image"], b["encoder_input_tokens"], ul2.shift_right(tokens))
  finished = np.cumsum(tokens == ul2.EOS_ID, 1) - (tokens == ul2.EOS_ID) > 0
  np.testing.assert_array_equal(np.where(finished, 0, np.argmax(logits, -1)), tokens)
  # score_batch gives the decoded sequences the log-likelihood decoding reported (scored with their own decoder
  # inputs and weights, not the batch's, which are its dataset targets').
  inputs = {k: v for k, v in b.items() if not k.startswith("decoder_")}
  scores = model.score_batch(params, {**inputs, "decoder_target_tokens": tokens})
  np.testing.assert_allclose(scores, result.scores, rtol=1e-4, atol=1e-4)


def test_several_images_per_example(model_and_params):
  model, params = model_and_params
  b = batch(2)
  frames = np.stack([b["image"], b["image"][::-1]], axis=1)  # [B, 2, H, W, 3]
  encoded, mask = model.module.apply({"params": params}, frames, b["encoder_input_tokens"],
                                     method=model_lib.PaLI.encode)
  assert encoded.shape[1] == 2 * (IMAGE_SIZE // 4) ** 2 + LENGTHS["inputs"] and mask.shape == encoded.shape[:2]
  loss, _ = model.loss_fn(params, {**b, "image": frames})
  assert np.isfinite(loss)


def test_warm_start_from_siglip_and_t5(tmp_path):
  # A SigLIP trained elsewhere at 32 px (its ViT moves to PaLI at 16 px: posemb resized) and a HF T5.
  siglip_config = siglip.SigLIPConfig(image=vit_lib.config("pico/4", image_size=32),
                                      text=text_lib.config("pico", vocab_size=64, max_len=8))
  siglip_params = siglip.TwoTower(siglip_config).init(jax.random.key(3), jnp.zeros((1, 32, 32, 3)),
                                                      jnp.zeros((1, 8), jnp.int32))["params"]
  siglip_dir = tmp_path / "siglip.npz"
  np.savez(siglip_dir, **{k.replace("/", "/"): np.asarray(v) for k, v in
                          checkpoints.flatten(jax.tree.map(np.asarray, nn_unbox(siglip_params))).items()})
  t5_dir = tmp_path / "t5"
  pali_ul2 = ul2.config("pico", vocab_size=97, num_buckets=8, max_distance=20, d_model=32, head_dim=8,
                        num_heads=4, d_ff=48, num_encoder_layers=2, num_decoder_layers=3)
  hf_fixtures.save_t5(str(t5_dir), "gated-silu", False)
  _, t5_params = ul2_checkpoints.read(str(t5_dir))
  model = model_lib.PaLIModel(vit=vit_lib.config("pico/4", image_size=IMAGE_SIZE, pool_type="none"),
                              ul2=dataclass_replace(pali_ul2, tie_embeddings=True),
                              siglip_checkpoint=str(siglip_dir), ul2_checkpoint=str(t5_dir))
  assert model.warm_start_sources() == {"ViT": str(siglip_dir), "UL2": str(t5_dir)}  # the trainer prints them
  params = model.init_variables(jax.random.key(0), batch())["params"]
  warm = model.warm_start(jax.tree.map(np.asarray, nn_unbox(params)))
  jax.tree.map(np.testing.assert_array_equal, warm["ul2"], t5_params)
  flat_siglip = checkpoints.flatten(jax.tree.map(np.asarray, nn_unbox(siglip_params["img"])))
  flat_warm = checkpoints.flatten(warm["img"])
  assert "MAPHead_0/probe" not in flat_warm
  np.testing.assert_array_equal(flat_warm["Transformer/encoder_norm/scale"],
                                flat_siglip["Transformer/encoder_norm/scale"])
  assert flat_warm["pos_embedding"].shape == (1, (IMAGE_SIZE // 4) ** 2, 32)
  # A UL2 of another geometry is refused with the parameter at fault.
  wrong = model_lib.PaLIModel(vit=model.config.vit, ul2=ul2.config("pico", vocab_size=97),
                              ul2_checkpoint=str(t5_dir))
  wrong_params = wrong.init_variables(jax.random.key(0), batch())["params"]
  with pytest.raises(checkpoints.CheckpointError):
    wrong.warm_start(jax.tree.map(np.asarray, nn_unbox(wrong_params)))
  # A ViT whose MLPs compute another function than the checkpoint's is refused too (same shapes).
  other_act = model_lib.PaLIModel(vit=dataclass_replace(model.config.vit, activation="gelu"), ul2=pali_ul2,
                                  siglip_checkpoint=str(siglip_dir))
  with pytest.raises(checkpoints.CheckpointError, match="activation='gelu_tanh'"):
    other_act.warm_start(jax.tree.map(np.asarray, nn_unbox(params)))


def host_params(model):
  return jax.tree.map(np.asarray, nn_unbox(model.init_variables(jax.random.key(0), batch())["params"]))


def assert_same_vit(got, want_unscanned):
  """`got` (either layout) holds the blocks of `want_unscanned`, an unscanned ViT tree, and nothing else."""
  flat_got = checkpoints.flatten(checkpoints.unstack_layers(got))
  flat_want = checkpoints.flatten(want_unscanned)
  assert sorted(flat_got) == sorted(flat_want)
  for path, value in flat_want.items():
    np.testing.assert_array_equal(flat_got[path], value, err_msg=path)


@pytest.mark.parametrize("source_scan", [False, True], ids=["unscanned-siglip", "scanned-siglip"])
def test_siglip_warm_start_converts_the_scan_layout(tmp_path, source_scan):
  """A SigLIP's ViT blocks reach a PaLI ViT of the other `scan` layout (stacked along 'layers', or not)."""
  image = vit_lib.config("pico/4", image_size=IMAGE_SIZE, scan=source_scan)
  siglip_config = siglip.SigLIPConfig(image=image)
  siglip_params = nn_unbox(siglip.TwoTower(siglip_config).init(
      jax.random.key(3), jnp.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3)), method=siglip.TwoTower.encode_image)["params"])
  checkpoints.write_model_dir(str(tmp_path / "siglip"), siglip_config.to_json(), siglip_params)
  model = tiny(siglip_checkpoint=str(tmp_path / "siglip"))
  model.config = model_lib.PaLIConfig(vit=dataclass_replace(model.config.vit, scan=not source_scan),
                                      ul2=model.config.ul2)
  model.module = model_lib.PaLI(model.config)
  params = host_params(model)
  warm = model.warm_start(params)
  assert jax.tree.structure(warm["img"]) == jax.tree.structure(params["img"])  # the PaLI's own layout
  want = {k: v for k, v in jax.tree.map(np.asarray, siglip_params["img"]).items() if k != "MAPHead_0"}
  assert_same_vit(warm["img"], checkpoints.unstack_layers(want))


@pytest.mark.parametrize("source_scan", [False, True], ids=["from-unscanned", "from-scanned"])
def test_pali_warm_start_converts_the_scan_layout(tmp_path, source_scan):
  def pali(scan, **kw):
    return model_lib.PaLIModel(vit=vit_lib.config("pico/4", image_size=IMAGE_SIZE, pool_type="none", scan=scan),
                               ul2=ul2.config("pico", vocab_size=scene_data.vocab_size()), **kw)

  previous = pali(source_scan)
  previous_params = host_params(previous)
  checkpoints.write_model_dir(str(tmp_path / "stage1"), previous.config_json(), previous_params)
  model = pali(not source_scan, pali_checkpoint=str(tmp_path / "stage1"))
  params = host_params(model)
  warm = model.warm_start(params)
  assert jax.tree.structure(warm) == jax.tree.structure(params)  # the PaLI's own layout
  assert_same_vit(warm["img"], checkpoints.unstack_layers(previous_params["img"]))
  jax.tree.map(np.testing.assert_array_equal, warm["ul2"], previous_params["ul2"])


def test_warm_starts_refuse_another_function_with_the_same_shapes(tmp_path):
  """Activations, relative-position settings, norm epsilons: equal shapes, so only the configs can tell."""
  t5_dir = str(tmp_path / "t5")
  hf_fixtures.save_t5(t5_dir, "gated-gelu", True)
  t5_config, _ = ul2_checkpoints.read(t5_dir)
  assert t5_config.tie_embeddings and t5_config.scale_decoder_outputs  # so False differs
  for field, value in [("activation", "silu"), ("max_distance", 64), ("num_buckets", 16),
                       ("tie_embeddings", False), ("eps", 1e-5), ("scale_decoder_outputs", False)]:
    model = model_lib.PaLIModel(vit=vit_lib.config("pico/4", image_size=IMAGE_SIZE, pool_type="none"),
                                ul2=dataclass_replace(t5_config, **{field: value}), ul2_checkpoint=t5_dir)
    with pytest.raises(checkpoints.CheckpointError) as error:
      model.warm_start(host_params(model))
    theirs = getattr(t5_config, field)
    assert str(error.value) == (f"{t5_dir} has {field}={theirs!r} where this PaLI has {value!r} (same shapes, "
                                f"another function); set vlm.ul2.config.{field} = {theirs!r} in the run's gin "
                                "file, or warm-start from a matching checkpoint")
  # A PaLI MODEL_DIR: its ViT and its UL2 are compared alike.
  previous = tiny()
  checkpoints.write_model_dir(str(tmp_path / "stage1"), previous.config_json(), host_params(previous))
  for vit_field, ul2_field in [({"layer_norm_eps": 1e-5}, {}), ({"activation": "gelu"}, {}),
                               ({}, {"max_distance": 64})]:
    model = model_lib.PaLIModel(vit=dataclass_replace(previous.config.vit, **vit_field),
                                ul2=dataclass_replace(previous.config.ul2, **ul2_field),
                                pali_checkpoint=str(tmp_path / "stage1"))
    binding = "encoders.vit.config" if vit_field else "vlm.ul2.config"
    (field, _), = {**vit_field, **ul2_field}.items()
    with pytest.raises(checkpoints.CheckpointError, match=f"set {binding}.{field} = "):
      model.warm_start(host_params(model))
  # A SigLIP's ViT layer-norm epsilon.
  siglip_dir = str(tmp_path / "siglip")
  hf_fixtures.save_siglip_vision(siglip_dir, layer_norm_eps=1e-5)
  model = tiny(siglip_checkpoint=siglip_dir)
  with pytest.raises(checkpoints.CheckpointError, match=r"layer_norm_eps=1e-05 where this PaLI has 1e-06"):
    model.warm_start(host_params(model))


def nn_unbox(tree):
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  return nn.meta.unbox(tree)


def dataclass_replace(config, **kw):
  import dataclasses  # pylint: disable=import-outside-toplevel
  return dataclasses.replace(config, **kw)


def test_frozen_vit_gets_no_update_and_no_optimizer_state(tmp_path):
  data = scene_data.Batches("vqa_synthetic", LENGTHS, size=IMAGE_SIZE)
  model = tiny()
  partitioner = partitioning.Partitioner(devices=jax.devices()[:1])
  fns = trainer.build_step_functions(model, optim.adamw(learning_rate=1e-2), partitioner, data.batch(0, 8),
                                     frozen_params="img/.*")
  with partitioner.context():
    state = fns.init(jax.random.key(0))
    before = jax.device_get(state.params)
    for step in range(2):
      state, _ = fns.train_step(state, partitioning.global_batch(partitioner, data.batch(step, 8)))
  after = jax.device_get(state.params)
  jax.tree.map(np.testing.assert_array_equal, after["img"], before["img"])
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(after["ul2"]), jax.tree.leaves(before["ul2"])))
  moments = sum(x.size for x in jax.tree.leaves(state.opt_state) if hasattr(x, "size") and x.ndim)
  trained = sum(x.size for x in jax.tree.leaves(after["ul2"])) + sum(x.size for x in
                                                                    jax.tree.leaves(after["img_projection"]))
  assert moments == 2 * trained  # Adam's two moments, for the trained parameters only
  with pytest.raises(ValueError, match="matches no parameter"):
    trainer.build_step_functions(model, optim.adamw(), partitioner, data.batch(0, 8), frozen_params="nothing/.*")


def test_wrong_vit_pooling_is_refused():
  with pytest.raises(ValueError, match="pool_type='none'"):
    model_lib.PaLIConfig(vit=vit_lib.config("pico/4"), ul2=ul2.config("pico"))


@pytest.mark.slow
def test_tiny_pali_beats_the_majority_answer(tmp_path, optimised_xla):  # pylint: disable=unused-argument
  """A few hundred steps on generated VQA: answers on held-out scenes clearly beat the majority answer."""
  from vlm import evaluation  # pylint: disable=import-outside-toplevel
  # Sentencepiece prompts take 8 to 21 tokens: 16 cuts the longest position comparisons (~5%), as it cut them
  # in words. Answers are one piece (two for a count) + EOS. Measured: accuracy 48.8 against the majority's 40.5,
  # colour 46.8 against 11.0 (the word vocabulary's: 49.2, colour 63.3).
  lengths = {"inputs": 16, "targets": 4}
  model = model_lib.PaLIModel(vit=vit_lib.config("mu/4", image_size=32, pool_type="none"),
                              ul2=ul2.config("tiny", vocab_size=scene_data.vocab_size()), max_decode_len=4,
                              vocabulary=scene_data.vocabulary())
  with registry.image_size_bound(32):
    evaluator = evaluation.SeqioTaskEvaluation(("vqa_synthetic",), lengths, examples_per_task=400)
  results = trainer.train(
      model, scene_data.Batches("vqa_synthetic", lengths, size=32), model_dir=str(tmp_path), train_steps=300,
      batch_size=64, optimizer=optim.adamw, learning_rate=optim.schedule(3e-3, 50, "cosine", 300),
      partitioner=partitioning.Partitioner(devices=jax.devices()[:1]), checkpoint_period=300, progress=False,
      evaluator=evaluator)
  assert results["vqa_accuracy"] > results["vqa_majority_baseline"] + 5, results
  assert results["vqa_colour"] > 2 * results["vqa_colour_majority"], results


def test_8_devices_match_one_device(tmp_path):
  """The PaLI's losses on 8 devices (ViT frozen, as in stage 1) equal one device's, step by step: FSDP with
  tensor parallelism, which exercises the PaLI's own axis rules (data parallelism alone: tests/test_trainer.py)."""
  from vlm import summaries  # pylint: disable=import-outside-toplevel
  data = scene_data.Batches(VQA_REFEXP, LENGTHS, size=IMAGE_SIZE)

  def run(directory, devices, **partitioning_args):
    trainer.train(tiny(), data, model_dir=str(directory), train_steps=3, batch_size=8, optimizer=optim.adamw,
                  learning_rate=3e-3, frozen_params="img/.*", checkpoint_period=3, log_period=1, progress=False,
                  partitioner=partitioning.Partitioner(devices=jax.devices()[:devices], **partitioning_args))
    return [r["loss"] for r in summaries.read_metrics(str(directory)) if "split" not in r]

  one = run(tmp_path / "one", 1)
  eight = run(tmp_path / "eight", 8, num_partitions=2, parameter_partitioning_dims=2)
  assert len(one) == 3
  np.testing.assert_allclose(eight, one, rtol=1e-4)


def test_the_refexp_centre_baseline_is_one_centre_box_of_the_mean_target_size():
  """DESIGN.md's refexp_centre_baseline: a box at the image centre of the mean target size, IoU >= 0.5. Here
  the mean target is 16 x 16 in a 32 px image: the centre box is (8, 8, 24, 24), the first target itself, and
  a corner target overlaps it by 64 / 448 px, a miss."""
  from vlm import evaluation
  truth = [[(8.0, 8.0, 24.0, 24.0)], [(0.0, 0.0, 16.0, 16.0)]]
  assert evaluation.centre_baseline(truth, 32) == 50.0
  with registry.image_size_bound(32):
    scene = evaluation.SeqioTaskEvaluation(("refexp_synthetic",), {"inputs": 12, "targets": 12}, examples_per_task=8)
  assert scene.image_size == 32  # the frame the boxes are scored in
  references = refexp_references(scene)
  scores = scene._refexp(references, references, references)  # pylint: disable=protected-access
  assert scores["refexp_accuracy"] == 100.0 and 0.0 <= scores["refexp_centre_baseline"] < 100.0


def test_detection_is_scored_by_box_f1_beside_a_centre_box():
  """detect_f1 of the targets themselves is 100 (boxes and "none" alike); the centre box scores less, and a model
  that answers "none" everywhere scores 0 on every example that has a box."""
  from vlm import evaluation
  with registry.image_size_bound(32):
    scene = evaluation.SeqioTaskEvaluation(("detection_synthetic",), {"inputs": 12, "targets": 24},
                                           examples_per_task=16)
  vocabulary = scene_data.vocabulary()
  references = [vocabulary.decode([int(i) for i in row if i])
                for row in scene.batches["detection_synthetic"]["decoder_target_tokens"]]
  with_boxes = [r for r in references if evaluation.target_boxes([r], 32)[0]]
  assert with_boxes and len(with_boxes) < len(references)  # some queries name an absent object: "none"
  right = scene._scene_task("detect", references, references)  # pylint: disable=protected-access
  assert right["detect_f1"] == 100.0 and right["detect_accuracy"] == 100.0
  assert 0.0 <= right["detect_f1_centre_baseline"] < 100.0
  silent = scene._scene_task("detect", ["none"] * len(references), references)  # pylint: disable=protected-access
  assert silent["detect_f1"] == 0.0


def refexp_references(scene):
  """The targets of a SeqioTaskEvaluation's refexp batch (32 px scenes) as text: one box of four location
  tokens each."""
  from vlm import evaluation  # pylint: disable=import-outside-toplevel
  batch, vocabulary = scene.batches["refexp_synthetic"], scene_data.vocabulary()
  assert batch["image"].shape[1:3] == (32, 32)
  references = [vocabulary.decode([int(i) for i in row if i]) for row in batch["decoder_target_tokens"]]
  assert all(len(boxes) == 1 for boxes in evaluation.target_boxes(references, 32)), references
  return references


def test_refexp_is_scored_again_on_other_scenes_images(monkeypatch):
  """refexp_shuffled_images_baseline: the same prompts, each over the next example's image (a roll by one), so
  a model that reads boxes off position words scores there what it scores on the right images."""
  import types  # pylint: disable=import-outside-toplevel
  from vlm import evaluation
  with registry.image_size_bound(32):
    scene = evaluation.SeqioTaskEvaluation(("refexp_synthetic",), {"inputs": 12, "targets": 12}, examples_per_task=8)
  batch = scene.batches["refexp_synthetic"]
  references = refexp_references(scene)
  seen = []

  def decode(predict, params, inputs, detokenize):
    del predict, params, detokenize
    seen.append(inputs)
    return list(references) if len(seen) == 1 else [""] * len(references)

  monkeypatch.setattr(evaluation, "decode_texts", decode)
  vocabulary = scene_data.vocabulary()
  model = types.SimpleNamespace(predict_batch=lambda params, batch: None,
                                detokenize=lambda ids: vocabulary.decode([int(i) for i in ids if i]))
  scores = scene(model, params={})
  assert len(seen) == 2  # the right images, then the shuffled ones
  assert scores["refexp_accuracy"] == 100.0 and scores["refexp_shuffled_images_baseline"] == 0.0
  np.testing.assert_array_equal(seen[0]["image"], batch["image"])
  np.testing.assert_array_equal(seen[1]["image"], np.roll(batch["image"], 1, axis=0))
  np.testing.assert_array_equal(seen[1]["encoder_input_tokens"], batch["encoder_input_tokens"])


def test_ocr_lines_are_scored_by_exact_match_and_anls(monkeypatch):
  """webli_ocr_synthetic: exact match, and ANLS (DocVQA's) for lines read all but a character or two."""
  import types  # pylint: disable=import-outside-toplevel
  from vlm import evaluation
  with registry.image_size_bound(32):
    ocr = evaluation.SeqioTaskEvaluation(("webli_ocr_synthetic",), {"inputs": 12, "targets": 16}, examples_per_task=4)
  vocabulary = scene_data.vocabulary()
  references = [vocabulary.decode([int(i) for i in row if i]) for row in ocr.batches["webli_ocr_synthetic"]
                ["decoder_target_tokens"]]
  answers = [references[0], references[1] + "x", "", references[3]]  # right, one character off, nothing, right
  monkeypatch.setattr(evaluation, "decode_texts", lambda predict, params, inputs, detokenize: answers)
  model = types.SimpleNamespace(predict_batch=lambda params, batch: None,
                                detokenize=lambda ids: vocabulary.decode([int(i) for i in ids if i]))
  scores = ocr(model, params={})
  assert scores["webli_ocr_synthetic_accuracy"] == 50.0
  similarity = 1 - 1 / (len(references[1]) + 1)  # one edit in the longer string
  assert scores["webli_ocr_synthetic_anls"] == pytest.approx(100 * (2 + similarity) / 4)
