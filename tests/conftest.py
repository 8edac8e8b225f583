"""Test-wide setup: 8 simulated CPU devices, so sharding tests run on one machine.

The flag must be set before JAX initialises its backend, hence here, before any test module imports jax.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
