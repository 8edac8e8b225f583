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
