"""Launch scripts: local runs, multi-process CPU, SLURM, TPU pods, tables."""
