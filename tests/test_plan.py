"""vlm.plan: exact parameter and optimizer bytes per device, shardings as JAX builds them, the activation and
FLOPs estimates against XLA's compiled train step, and the CLI on the tiny and the real PaLI-3 runs."""

import dataclasses
import math
import os
import subprocess
import sys

import flax.linen as nn
import gin
import jax
import numpy as np
import pytest

from encoders import siglip
from encoders import text as text_lib
from encoders import vit as vit_lib
from tasks import vocab
from vlm import model as model_lib, optim, partitioning, plan, trainer, ul2

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_RUN = "gin_configs/runs/pali_tiny_stage1.gin"
PALI3_812 = "gin_configs/runs/pali3_stage2_812.gin"
LENGTHS = {"inputs": 32, "targets": 32}  # pali_tiny_stage1.gin's (gin_configs/models/pali_tiny.gin)


def tiny_pali(remat="none"):
  """The model of pali_tiny_stage1.gin."""
  return model_lib.PaLIModel(vit=vit_lib.config("mu/4", image_size=32, pool_type="none", remat=remat),
                             ul2=ul2.config("tiny", vocab_size=vocab.vocab_size(), remat=remat))


def tiny_siglip():
  """The model of siglip_tiny_synthetic.gin."""
  return siglip.SigLIPModel(image=vit_lib.config("mu/4", image_size=32),
                            text=text_lib.config("mu", vocab_size=64, max_len=40))


def plan_of(model, mesh=None, *, batch_size=8, lengths=None, dims=1, optimizer=None, frozen=None, microbatches=1):
  mesh = mesh or {"data": 1, "model": 1}
  partitioner = partitioning.Partitioner(num_partitions=mesh["model"], parameter_partitioning_dims=dims,
                                         abstract_mesh=mesh)
  return plan.plan(model, batch_size=batch_size, feature_lengths=lengths or LENGTHS, partitioner=partitioner,
                   optimizer=optimizer or optim.adamw(1e-3), frozen_params=frozen, microbatches=microbatches)


def real_batch(geo):
  return {k: np.ones((1,) + v.shape[1:], v.dtype) for k, v in geo.batch.items()}


def initialise(model, lengths=LENGTHS):
  """Real parameters. One jitted init with the cheap 'unsafe_rbg' generator: the counts do not depend on the
  random bits, and op by op (or with threefry) the tiny PaLI takes tens of seconds on two busy cores."""
  batch = real_batch(plan.geometry(model, lengths, 8))
  rng = jax.random.key(0, impl="unsafe_rbg")
  return nn.meta.unbox(jax.jit(model.init_variables)(rng, batch)["params"])


@pytest.fixture(scope="module")
def pali_params():
  return initialise(tiny_pali())


@pytest.fixture(autouse=True)
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def test_parameter_counts_are_those_of_the_initialised_models(pali_params):
  for result, params in [(plan_of(tiny_pali()), pali_params),
                         (plan_of(tiny_siglip(), lengths={"text": 40}), initialise(tiny_siglip(), {"text": 40}))]:
    count = partitioning.count_params(params)
    assert sum(g.params for g in result.groups) == sum(g.trainable for g in result.groups) == count


def test_per_device_shapes_are_the_shardings_jax_builds():
  if len(jax.devices()) < 4:
    pytest.skip("needs 4 devices (tests/conftest.py asks XLA for 8 CPU devices)")
  model = tiny_pali()
  result = plan_of(model, {"data": 2, "model": 2}, dims=2)
  partitioner = partitioning.Partitioner(num_partitions=2, parameter_partitioning_dims=2,
                                         devices=jax.devices()[:4])
  geo = plan.geometry(model, LENGTHS, 8)
  with partitioner.context():
    boxed = jax.eval_shape(model.init_variables, jax.random.key(0), real_batch(geo))["params"]
  shardings = partitioner.shardings(nn.get_partition_spec(boxed))
  flat = jax.tree_util.tree_flatten_with_path(nn.meta.unbox(boxed))[0]
  for (path, leaf), sharding in zip(flat, jax.tree.leaves(shardings)):
    shape, local = result.local_shapes[optim.path_name(path)]
    assert (shape, local) == (leaf.shape, sharding.shard_shape(leaf.shape)), optim.path_name(path)


def test_parameter_bytes_scale_with_the_mesh_as_the_rules_say():
  model = tiny_pali()
  single = plan_of(model)
  one = single.param_bytes
  assert one == 4 * sum(g.params for g in single.groups)  # float32, whole on one device
  assert plan_of(model, {"data": 2, "model": 1}).param_bytes == one  # data parallel: replicated
  fsdp = plan_of(model, {"data": 2, "model": 1}, dims=2).param_bytes
  assert 0.5 * one <= fsdp < 0.52 * one  # embed over 'data': everything but a few norm scales halves
  tensor = plan_of(model, {"data": 1, "model": 2}).param_bytes
  assert 0.5 * one < tensor < 0.75 * one  # heads / mlp / vocab over 'model'; embed-only tensors replicate
  both = plan_of(model, {"data": 2, "model": 2}, dims=2).param_bytes
  assert 0.25 * one <= both < 0.27 * one
  # Gradients shard like the parameters.
  assert plan_of(model, {"data": 2, "model": 2}, dims=2).grad_bytes == both


def test_frozen_towers_have_no_optimizer_state_and_the_rest_is_exact(pali_params):
  model = tiny_pali()
  frozen = plan_of(model, frozen="img/.*")
  by_label = {g.label: g for g in frozen.groups}
  assert by_label["img (ViT)"].opt_bytes == 0 and by_label["img (ViT)"].trainable == 0
  assert by_label["ul2 encoder"].opt_bytes == 2 * by_label["ul2 encoder"].param_bytes  # AdamW: mu and nu
  trained = {g.label: g for g in plan_of(model).groups}
  assert trained["img (ViT)"].opt_bytes == 2 * trained["img (ViT)"].param_bytes
  # On one device the optimizer bytes are those of the state the trainer initialises.
  state = jax.eval_shape(optim.freeze(optim.adamw(1e-3), "img/.*").init, pali_params)
  assert frozen.opt_bytes == sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
  # Adafactor keeps row and column statistics (replicated) for matrices whose two largest sides are >= 128.
  factored = plan_of(model, optimizer=optim.adafactor(1e-3))
  state = jax.eval_shape(optim.adafactor(1e-3).init, pali_params)
  assert factored.opt_bytes == sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
  assert factored.opt_bytes < 0.25 * plan_of(model).opt_bytes and factored.replicated_opt_bytes > 0


def test_estimates_against_the_compiled_tiny_train_step():
  """The plan of pali_tiny_stage1.gin's step (batch 16, one device) against XLA:CPU's memory and FLOP counts."""
  model, batch_size = tiny_pali(), 16
  result = plan_of(model, batch_size=batch_size, frozen="img/.*")
  geo = plan.geometry(model, LENGTHS, batch_size)
  partitioner = partitioning.Partitioner(devices=jax.devices()[:1])
  fns = trainer.build_step_functions(model, optim.adamw(1e-3), partitioner, geo.batch, frozen_params="img/.*")
  with partitioner.context():
    compiled = fns.train_step.lower(fns.abstract_state, geo.batch).compile()
  memory = compiled.memory_analysis()
  peak = (memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes
          + memory.temp_size_in_bytes)
  ratio = result.total_bytes / peak
  flops_ratio = result.train_flops / compiled.cost_analysis()["flops"]
  print(f"plan {result.total_bytes / 2**20:.1f} MiB vs XLA {peak / 2**20:.1f} MiB: {ratio:.2f}; "
        f"FLOPs {flops_ratio:.3f}")
  # The activation model counts one softmax-sized and two (gated: four) MLP-sized tensors per layer where
  # XLA:CPU keeps more elementwise intermediates. Measured 0.98 (124.5 vs 127.6 MiB) with the sentencepiece
  # vocabulary at 32 + 32 tokens; 0.93 (55.2 vs 59.3 MiB) with the retired 1,136-word vocabulary at 16 + 24:
  # the 7,168-row table makes the fp32 logits, their log-softmax and gradient (which both count alike) half of
  # the planned activations (42 of 84 MiB, from 5 of 38), so the per-layer gap weighs less. Within 2x either way.
  assert 0.5 <= ratio <= 2.0
  # XLA also counts elementwise work and the optimizer; the analytic matmul + attention count is within 5%.
  assert 0.95 <= flops_ratio <= 1.0


def run_cli(capsys, *args):
  """(exit code, stdout, stderr) of `python -m vlm.plan ARGS`, run in this process."""
  try:
    plan.main(list(args))
    code = 0
  except SystemExit as e:
    code = e.code
  captured = capsys.readouterr()
  return code, captured.out, captured.err


def test_cli_on_the_tiny_stage1_run(capsys):
  code, out, _ = run_cli(capsys, f"--gin_file={TINY_RUN}", "--mesh", "data=2", "--device_memory", "1")
  assert code == 0
  # 2,739,328 parameters: ViT 107,776 (frozen) + projection 8,320 + UL2 embeddings 2 x 7,168 x 128 = 1,835,008
  # (input table and untied logits) + encoder 328,448 + decoder 459,776; all but the ViT's are trained.
  for field in ("vocab 7,168", "2,739,328", "2,631,552", "img (ViT)", "ul2 encoder", "activations per device", "FLOPs",
                "data=2 x model=1", "frozen parameters are not differentiated", "fits in 1 GiB: headroom"):
    assert field in out, field
  img = next(line for line in out.splitlines() if line.startswith("  img (ViT)"))
  assert img.split()[3] == "0" and img.split()[6:8] == ["0.0", "MiB"]  # frozen: not trainable, no optimizer state


def test_cli_as_a_user_runs_it_on_the_real_pali3_at_812():
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  result = subprocess.run([sys.executable, "-m", "vlm.plan", f"--gin_file={PALI3_812}", "--mesh", "data=64,model=4",
                           "--device", "tpu-v5e"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  for field in ("ViT width 1664 x 48 layers", "812 px (3,364 tokens", "5,593,973,632", "data=64 x model=4 = 256",
                "(FSDP)", "adafactor", "one ul2 encoder layer rebuilt", "logits 128 x 250,112", "per device",
                "FLOPs", "memory     per device"):
    assert field in result.stdout, field
  assert [line for line in result.stdout.splitlines() if line.startswith("fit        ")][0].split()[1] in (
      "fits", "does")


@pytest.mark.parametrize("mesh", ["data=4,model", "data=0,model=4", "pipe=2", "data=x", "data=-2", "", ",",
                                  "data=2,data=4", "model=2,data=1,model=2"])
def test_bad_mesh_is_one_error_line(capsys, mesh):
  code, out, err = run_cli(capsys, f"--gin_file={TINY_RUN}", f"--mesh={mesh}", "--device=h100")
  errors = [line for line in err.splitlines() if line.startswith("error:")]
  assert code == 1 and not out and len(errors) == 1 and "Traceback" not in err
  assert errors[0].startswith("error: --mesh:") and "data=N,model=M" in errors[0]


def test_other_mistakes_are_one_error_line_or_a_warning(capsys):
  code, _, err = run_cli(capsys, f"--gin_file={TINY_RUN}", "--mesh=data=3", "--device=h100")
  assert code == 1 and "BATCH_SIZE=64 is not divisible by data=3" in err
  code, out, _ = run_cli(capsys, f"--gin_file={TINY_RUN}", "--mesh=model=3", "--device=h100")
  assert code == 0 and "does not split evenly" in out and "NUM_PARTITIONS is 1" in out


@pytest.mark.parametrize("args, fragment", [
    (["--gin.BATCH_SIZE=0"], "BATCH_SIZE must be an integer >= 1; got 0"),
    (["--gin.BATCH_SIZE=-4"], "BATCH_SIZE must be an integer >= 1; got -4"),
    (["--gin.BATCH_SIZE=8.0"], "BATCH_SIZE must be an integer >= 1; got 8.0"),
    (["--gin.vlm.trainer.train.microbatches=0"], "microbatches must be an integer >= 1; got 0"),
    (["--gin.TASK_FEATURE_LENGTHS={'inputs': -3, 'targets': 24}"],
     "TASK_FEATURE_LENGTHS['inputs'] must be an integer >= 1; got -3"),
    (["--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 0}"],
     "TASK_FEATURE_LENGTHS['targets'] must be an integer >= 1; got 0"),
    (["--frames=0"], "argument --frames: '0' is not an integer >= 1"),
    (["--frames=-1"], "argument --frames: '-1' is not an integer >= 1"),
    (["--device_memory=nan"], "--device_memory=nan GiB: give a positive, finite size"),
    (["--gin.encoders.vit.config.variant='Q/4'"], "unknown ViT size 'Q/4'"),
    (["--gin.BATCH_SIZE=%UNDEFINED"], "the gin macro %UNDEFINED is used but not defined: bind it in a gin file or "
                                      "with --gin.UNDEFINED=VALUE"),
    (["--gin.TASK_FEATURE_LENGTHS=None"], "vlm.plan needs TASK_FEATURE_LENGTHS as a dict of feature lengths"),
    (["--gin.vlm.trainer.train.frozen_params='img/(['"], "frozen_params='img/([' is not a regular expression"),
])
def test_bad_sizes_are_one_error_line(capsys, args, fragment):
  """Each used to plan (a batch of 0 'fits') or to end in JAX's or Python's words instead of the input's."""
  code, out, err = run_cli(capsys, f"--gin_file={TINY_RUN}", "--mesh=data=2", "--device=h100", *args)
  errors = [line for line in err.splitlines() if line.startswith("error:")]
  assert code == 1 and not out and len(errors) == 1 and "Traceback" not in err
  assert fragment in errors[0], errors[0]


def test_unknown_gin_file_is_one_error_line(capsys):
  code, out, err = run_cli(capsys, "--gin_file=gin_configs/runs/nope.gin", "--mesh=data=2")
  assert code == 1 and not out and "Traceback" not in err
  assert err.startswith("error: gin file 'gin_configs/runs/nope.gin' not found (looked in .,")


def test_the_help_example_names_the_required_mesh(capsys):
  code, out, _ = run_cli(capsys, "--help")
  example = out.split("Example:")[1].strip()
  assert code == 0 and example.startswith("python -m vlm.plan --gin_file=") and "--mesh data=" in example


def test_without_a_device_the_plan_has_no_verdict(capsys):
  code, out, err = run_cli(capsys, f"--gin_file={TINY_RUN}", "--mesh=data=2")
  assert code == 0 and not err and "memory     per device: parameters" in out
  assert not [line for line in out.splitlines() if line.startswith("fit")] and "fits" not in out
  code, out, _ = run_cli(capsys, "--gin_file=gin_configs/runs/siglip_naflex_tiny_synthetic.gin", "--mesh=data=2")
  table = out.split("per step's feature lengths")[1].splitlines()
  assert code == 0 and not table[1].rstrip().endswith("fit") and table[2].split()[-1].endswith("FLOP")


def test_microbatches_hold_one_slice_of_activations_and_two_gradient_buffers():
  whole, sliced = plan_of(tiny_pali()), plan_of(tiny_pali(), microbatches=2)

  def stacks(result):
    return [size for what, size in result.activations if "layers x" in what]

  assert [2 * size for size in stacks(sliced)] == stacks(whole)
  assert sliced.grad_bytes == 2 * whole.grad_bytes and sliced.train_flops == whole.train_flops
  with pytest.raises(ValueError, match="data=1 x microbatches=3"):
    plan_of(tiny_pali(), microbatches=3)


def test_remat_and_frozen_flops():
  full, none = plan_of(tiny_pali("full")), plan_of(tiny_pali())
  assert math.isclose(full.train_flops, none.train_flops) and none.recompute_flops == 0
  assert 0.2 * full.train_flops < full.recompute_flops < full.train_flops / 3  # the layers' forward again
  # The trainer does not differentiate a frozen ViT that comes before every trained parameter: it skips the
  # ViT's whole backward, twice its forward: 2 FLOPs per kernel weight and visual token, 4 x width x tokens^2
  # per layer of attention; nothing of it is saved, and its parameters take no gradient buffers.
  frozen = plan_of(tiny_pali(), frozen="img/.*")
  tokens, vit = 64, tiny_pali().config.vit
  kernels = sum(math.prod(shape) for path, (shape, _) in frozen.local_shapes.items()
                if path.startswith("img/") and path.endswith("kernel"))
  vit_forward = 8 * (2 * kernels * tokens + 4 * vit.depth * vit.width * tokens ** 2)  # batch 8
  assert none.frozen_skipped_flops == 0
  assert math.isclose(frozen.frozen_skipped_flops, 2 * vit_forward)
  assert math.isclose(frozen.train_flops, none.train_flops - 2 * vit_forward)
  vit_params = sum(g.param_bytes for g in frozen.groups if g.trainable == 0)
  assert vit_params > 0 and frozen.grad_bytes == none.grad_bytes - vit_params
  assert frozen.activation_bytes < none.activation_bytes


def _bf16_pali(remat="none"):
  model = tiny_pali(remat)
  return model_lib.PaLIModel(vit=dataclasses.replace(model.config.vit, dtype="bfloat16"),
                             ul2=dataclasses.replace(model.config.ul2, dtype="bfloat16"))


def test_the_remat_policies_and_a_fused_attention_in_the_estimate():
  by_policy = {r: plan_of(_bf16_pali(r)) for r in ("none", "full", "dots", "dots_with_batch", "offload_dots")}
  act = {r: p.activation_bytes for r, p in by_policy.items()}
  assert act["full"] < act["dots"] < act["dots_with_batch"] < act["none"]
  assert act["offload_dots"] == act["full"]  # what 'dots' keeps waits in host memory
  recompute = {r: p.recompute_flops for r, p in by_policy.items()}
  assert recompute["none"] == recompute["dots_with_batch"] == 0 < recompute["dots"] == recompute["offload_dots"]
  assert recompute["dots"] < recompute["full"]
  # A flash kernel keeps no [len, keys] probabilities: less memory, in half precision only (it takes no fp32).
  partitioner = partitioning.Partitioner(num_partitions=1, abstract_mesh={"data": 1, "model": 1})

  def planned(model, fused):
    return plan.plan(model, batch_size=8, feature_lengths=LENGTHS, partitioner=partitioner,
                     optimizer=optim.adamw(1e-3), fused_attention=fused).activation_bytes

  assert planned(_bf16_pali(), True) < planned(_bf16_pali(), False) == act["none"]
  assert planned(tiny_pali(), True) == planned(tiny_pali(), False)


def test_the_cli_plans_a_gpu_run_with_the_fused_attention_it_runs(capsys):
  gin_file = "gin_configs/runs/pali3_stage2_812.gin"
  outs = {}
  for device in ("h100", "tpu-v5e"):
    gin.clear_config()
    code, outs[device], _ = run_cli(capsys, f"--gin_file={gin_file}", "--mesh", "data=64,model=4", "--device", device)
    assert code == 0
  gin.clear_config()

  def peak(out):
    return next(line for line in out.splitlines() if line.strip().startswith("total (peak)"))

  assert peak(outs["h100"]) != peak(outs["tpu-v5e"])
  assert "flash attention" in outs["h100"] and "flash attention" not in outs["tpu-v5e"]


def test_naflex_runs_plan_each_budget_drawn_per_step(capsys):
  """A NaFlex SigLIP run draws its patch budget per step: the report is the largest budget's, then a line per
  budget, activations and FLOPs growing with it; a NaFlex PaLI's visual tokens are its budget."""
  code, out, _ = run_cli(capsys, "--gin_file=gin_configs/runs/siglip_naflex_tiny_synthetic.gin", "--mesh=data=2",
                         "--device_memory=1")
  assert code == 0 and "NaFlex, a budget of 144 patches" in out
  rows = [line.split() for line in out.split("per step's feature lengths")[1].splitlines()
          if line.strip().startswith("text=")]
  assert [row[1] for row in rows] == ["patches=32", "patches=64", "patches=144"]
  activations = [float(row[2]) * (1024 if row[3] == "GiB" else 1) for row in rows]
  assert activations == sorted(activations) and activations[0] < activations[-1]
  code, out, _ = run_cli(capsys, "--gin_file=gin_configs/runs/pali_tiny_naflex.gin", "--mesh=data=2",
                         "--device_memory=1")
  assert code == 0 and "NaFlex, a budget of 144 patches" in out and "per step's feature lengths" not in out
  assert "img (ViT): 3 layers x 144 tokens" in out and "ul2 encoder: 2 layers x 168 tokens" in out


def test_a_run_with_an_ema_teacher_counts_its_copy(capsys):
  """The real-size TIPSv2 run: the head-only EMA copy (the objective heads) is in the memory total, the
  objective heads get their own row, and the estimate says what it leaves out."""
  code, out, _ = run_cli(capsys, "--gin_file=gin_configs/runs/tipsv2_l14_448.gin", "--mesh=data=1024",
                         "--device=tpu-v5e")
  assert code == 0
  heads = next(line for line in out.splitlines() if line.startswith("  objective heads"))
  copied = int(heads.split()[4].replace(",", ""))
  assert f"an EMA copy of {copied:,} parameters" in out and "+ teacher (EMA)" in out
  assert "fits in 16 GiB" in out and "the teacher's forward add to them" in out


def test_the_plan_shards_with_the_trainers_partitioner_on_a_virtual_mesh():
  real = partitioning.Partitioner(num_partitions=2, parameter_partitioning_dims=2)  # 8 devices: data 4 x model 2
  virtual = partitioning.Partitioner(num_partitions=2, parameter_partitioning_dims=2,
                                     abstract_mesh={"data": 4, "model": 2})
  assert dict(virtual.mesh.shape) == dict(real.mesh.shape) == {"data": 4, "model": 2}
  for logical in [("embed", "mlp"), ("batch", "length", "embed"), ("vocab", "embed"), ("layers", "embed", "heads")]:
    assert virtual.sharding(logical).spec == real.sharding(logical).spec
  sharder = plan.Sharder(virtual)
  assert sharder.local_shape((64, 256), sharder.mesh_axes(("embed", "mlp"))) == (16, 128)


def test_cli_plans_the_ul2_3b_text_pretraining_run(capsys):
  code, out, _ = run_cli(capsys, "--gin_file=gin_configs/runs/ul2_3b_denoise.gin", "--mesh", "data=64,model=4",
                         "--device", "tpu-v5e")
  assert code == 0
  assert "ul2 decoder: 24 layers x 512" in out and "fits in 16 GiB (tpu-v5e)" in out
