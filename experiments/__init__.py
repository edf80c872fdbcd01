"""Experiment configs: `base.py` plus one file per experiment."""
