"""ProntoQA (5-hop, fictional ontology) refiner on a prepared dataset.

Prepare once (needs the raw files; see data_pipelines/tasks/prontoqa.py):

    export BOTTOMUP_DATA_DIR=/path/to/data   # holds prontoqa/prontoqa_*.json
    python -m data_pipelines.prepare --task=prontoqa --scheme=grow \
        --data_dir=prepared

then train and evaluate on the test split:

    python -m bottomup.main --config=experiments/prontoqa.py:cpu \
        --workdir=runs/prontoqa --config.data.data_dir=prepared

Drafts (scheme `grow`): hops 1-2; hops 1-4; the full chain, the conclusion
and "#### True|False". Target (issue: cpu preset): >= 95% on the test split.
Measured (2026-12-05, 2 CPU cores, 66 min): 49.1% (393/800), target missed:
the chains are mostly right (per-pass exact match 76% / 62% / 16%) but the
deciding rule's polarity and the final True/False are not yet learned.

Scheme `backward` (`--config.data.scheme=backward`, 6 passes, drafts up
to 64 tokens; stopped at step 1,100 of 1,500, 82 min): valid 55% at steps
500, 1,000 and 1,100, which is always answering "False" (111 of the 200
valid problems). `python -m bottomup.evaluate --split=valid
--forced_passes=K` shows two separate failures: (1) given the reference
first draft (K=1), the second pass matches its reference on 2% of the
problems: the rule looked up backward is often invented (teacher-forced,
the first draft's concept names are at chance: loss 0.63 a token, the
loss of a uniform guess among the ~14 concepts of a problem); (2) given
the reference drafts d0..d4 (K=5), the last pass writes the proof and
the conclusion right but its final True/False is still the majority
answer (52.5% exact): its teacher-forced loss, 0.013 a token, is one
token at chance (ln 2) over a ~60-token draft, so the answer bit gets
1/60 of the pass's gradient and is never learned. Resumed from step 1,100
with `--config.train.pass_weights=(1,1,1,1,1,10)` to step 1,500: valid
43.5%, now always "True" (89 of 200), teacher-forced loss unchanged
(0.0123): weighting the whole last pass does not teach the answer bit.

Scheme `for_against` with word folding (2026-12-06, commit ac5b885): the
chains ordered by the statement asked, so that the answer is one bit
(whether the proof written is the first chain) instead of a parity, and
`prepare --fold_words`, so that a concept is one token in all its forms:

    python -m data_pipelines.prepare --task=prontoqa --scheme=for_against \
        --fold_words --data_dir=prepared_fold
    python -m bottomup.main --config=experiments/prontoqa.py:cpu \
        --workdir=runs/pqa_fa --config.data.data_dir=prepared_fold \
        --config.data.scheme=for_against --config.train.num_steps=800 \
        --config.eval.every_steps=200
    python -m bottomup.evaluate --workdir=runs/pqa_fa --split=valid \
        --forced_passes=K      # K = 1..5

800 steps, 65 min: test 50.6% (405/800); valid 44.5 / 52.5 / 55.0% at
steps 200 / 400 / 600. Failure (2) is gone: the last pass, teacher-forced,
has loss 0.001 a token and exact match 100% from step 550, and given the
reference d0..d4 it answers 200 of 200 valid problems right (`backward`:
52.5%). Given d0 and d1 only, the answer is still right on 200 of 200 (the
later drafts 5% exact): the refuting chain usually stops growing after a
rule or two, so the last pass tells the proof by its length. What is left
is failure (1), the lookups of passes 0 and 1, folded tokens or not:
pass 0 (the two rules on the property) is never exact, its loss stays at
0.52 a token from step 350; given d0, pass 1 is exact on 1 problem in 200.
In its samples the property and both polarities are right and the rules'
subjects are a wrong concept: the decoder writes a rule's subject before
the object that identifies the rule ("Dumpuses are not floral."), so the
lookup must be done whole in the encoder. Next: drafts that write the key
of each lookup before the rule it finds (as the multiplication drafts
write the partial product before the sum).
"""

import ml_collections

from experiments import base


def get_config(preset: str = "quickstart") -> ml_collections.ConfigDict:
  """The ProntoQA config for `preset`."""
  c = base.get_config()
  c.data.task = "prontoqa"
  # `grow`: the chain written forward, a longer prefix each pass, the
  # answer once at the end. Under the DESIGN's `hops` (conclusion first)
  # the later passes learn to copy the first draft's answer (see
  # data_pipelines/tasks/prontoqa.py). `backward` (both candidate proofs
  # grown backward) did no better: see the module docstring.
  c.data.scheme = "grow"
  c.data.source = "prepared"
  c.data.data_dir = "prepared"
  c.model.max_places = 8  # Text task: few long digit runs.
  # As for multiplication: ReLU is cheaper than GELU on a CPU, and the
  # activations fit in memory without rematerialization.
  c.model.mlp_kind = "relu"
  c.model.remat = False
  c.eval.final_num_examples = 800  # The whole test split.
  c.eval.batch_size = 100
  if preset == "smoke":
    base.smoke(c)
    c.train.batch_size = 8
    c.train.num_steps = 10
    c.eval.every_steps = 10
    c.eval.num_examples = 8
    c.eval.batch_size = 8
    c.eval.final_num_examples = 8
  elif preset == "quickstart":
    c.train.batch_size = 32
    c.train.num_steps = 1000
  elif preset == "cpu":
    c.train.batch_size = 32
    c.train.num_steps = 1500
    c.eval.every_steps = 500
    c.eval.num_examples = 200  # The whole valid split.
  elif preset == "accel":
    base.accel(c)
    c.train.batch_size = 128
    c.train.num_steps = 6000
  else:
    raise base.unknown_preset(preset)
  return c
