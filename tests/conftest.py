"""Test-wide setup: 8 simulated CPU devices, so sharding tests run on one machine.

The flag must be set before JAX initialises its backend, hence here, before any test module imports jax.
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

# One XLA compilation cache per test process (pytest.ini starts two workers), inherited by the `python -m
# vlm.train` processes its tests launch: the same tiny train steps compile in many tests and launches (a fault
# test alone starts five), once each here.
_XLA_CACHE = tempfile.mkdtemp(prefix="vlm-tests-xla-cache-")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _XLA_CACHE)
atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

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
