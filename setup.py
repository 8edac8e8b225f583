"""PaLI-3 style vision-language models in JAX/Flax: SigLIP encoders, UL2, gin training, T5X-style sharding."""

from setuptools import find_packages, setup

# Pinned to the versions the test suite was run with (Python 3.11, CPU).
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "gin-config==0.5.0",
    "numpy==2.4.6",
    "safetensors==0.8.0",
    "tensorboardX==2.6.5",
    "tqdm==4.70.1",
    "matplotlib==3.11.2",
    "pillow==13.0.0",
    # The input pipeline (tasks/): seqio on tf.data, sentencepiece vocabularies. Model code never imports them.
    "seqio==0.0.20",
    "tensorflow-cpu==2.21.0",
    "tensorflow-text==2.21.1",
    "sentencepiece==0.2.3",
]

TEST_REQUIRES = [
    "torch==2.13.0",  # CPU build; the parity reference
    "transformers==5.23.0",
    "pycocoevalcap==1.2",  # the CIDEr reference scorer
    "pytest==9.0.3",
    "pytest-xdist==3.8.0",  # pytest.ini runs the suite on two worker processes
]

setup(
    name="vlm",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.11",
    packages=find_packages(include=["vlm", "vlm.*", "encoders", "encoders.*", "tasks", "tasks.*", "gin_configs",
                                    "gin_configs.*"]),
    # The shipped sentencepiece vocabulary, and the gin files (a non-editable install finds them by package).
    package_data={"tasks": ["data/spm/*.model"], "gin_configs": ["*.gin", "**/*.gin"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": TEST_REQUIRES},
)
