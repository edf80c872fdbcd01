"""bottomup: coarse-to-fine refiners for reasoning, in JAX/Flax."""
