"""Coarseners: a full solution -> drafts coarse to fine (DESIGN §1)."""
