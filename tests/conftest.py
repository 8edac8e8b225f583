"""Test-wide setup: 8 simulated CPU devices, so sharding tests run on one machine.

The flag must be set before JAX initialises its backend, hence here, before any test module imports jax.
"""

import atexit
import os
import shutil
import tempfile

import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

# One XLA compilation cache per test process (pytest.ini starts two workers), inherited by the `python -m
# vlm.train` processes its tests launch: the same tiny train steps compile in many tests and launches (a fault
# test alone starts five), once each here.
_XLA_CACHE = tempfile.mkdtemp(prefix="vlm-tests-xla-cache-")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _XLA_CACHE)
atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# XLA's backend optimisation off (LLVM at -O0, JAX's jax_disable_most_optimizations) for the tests' compiles,
# and, through the environment, for the processes they start: the suite compiles hundreds of tiny programs and
# runs most of them a few steps, so compiling dominated it. Measured on machine D with the tests' own compiles
# at -O0: compile-bound files 30-50 % faster (test_towers 92 -> 52 s, test_layers 48 -> 25 s, the suite's test
# time 3,425 -> 2,748 s with the in-process error tests), while the one test that trains for hundreds of steps
# ran 33 % slower: it turns the optimisation back on (the `optimised_xla` fixture). Users' runs keep XLA's default.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

# The files whose tests take a minute or more in all, longest first (per-file totals of a full run). With
# `--dist loadfile` xdist hands out whole files in collection order (pytest.ini turns off its own reordering,
# by number of tests, which put these few-test files last), so the long ones start first and the many short
# files fill both workers' ends, instead of one long file running alone while the other worker idles.
LONGEST_FILES = ("test_pali.py", "test_faults.py", "test_naflex_models.py", "test_cli.py", "test_multihost.py",
                 "test_objectives.py", "test_trainer.py", "test_infer.py", "test_train_from_data.py",
                 "test_siglip2_recipe.py", "test_eval.py", "test_eval_sharded.py", "test_ul2_scan.py",
                 "test_towers.py")


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(LONGEST_FILES)}
  items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FILES)))  # stable: the rest keep their order


@pytest.fixture
def optimised_xla():
  """XLA's full optimisation for the compiles of a test that runs hundreds of steps (see above)."""
  import jax  # pylint: disable=import-outside-toplevel  (here: after XLA_FLAGS is set)
  before = jax.config.values["jax_disable_most_optimizations"]
  jax.config.update("jax_disable_most_optimizations", False)
  yield
  jax.config.update("jax_disable_most_optimizations", before)
