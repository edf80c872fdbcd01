"""bottomup: coarse-to-fine ("bottom-up") language models for reasoning."""

import pathlib

import setuptools

setuptools.setup(
  name="bottomup",
  version="0.1.0",
  description=(
    "JAX/Flax coarse-to-fine refiners for reasoning: deep encoder, "
    "shallow decoder, deep state carried from pass to pass."
  ),
  long_description=pathlib.Path("README.md").read_text(encoding="utf-8"),
  long_description_content_type="text/markdown",
  python_requires=">=3.10",
  packages=setuptools.find_packages(
    include=["bottomup*", "data_pipelines*", "experiments*", "launch*"]
  ),
  install_requires=[
    "jax>=0.10,<0.11",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "tensorflow-cpu>=2.21,<2.22",
    "tensorflow-datasets>=4.9.10,<4.10",
    "importlib_resources>=6",
    "ml-collections>=1.1,<1.2",
    "sentencepiece>=0.2.3,<0.3",
    "clu>=0.0.12,<0.1",
    "tensorboard>=2.20",
    "numpy>=1.26",
    # The plots of `python -m launch.reproduce` (the tables need only the
    # standard library; without matplotlib the plots are left out).
    "matplotlib>=3.8,<4",
  ],
  extras_require={
    # Test runner and linter used by .ci/run.
    "test": ["pytest>=8", "pytest-xdist>=3.5", "ruff>=0.8"],
    # The LLM coarsener only needs the standard library's HTTP client;
    # the extra exists so that users opt in explicitly.
    "llm": [],
  },
)
