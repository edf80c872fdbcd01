"""GSM8K (grade-school math word problems) refiner on a prepared dataset.

Prepare once (needs the raw files; see data_pipelines/tasks/gsm8k.py):

    export BOTTOMUP_DATA_DIR=/path/to/data   # holds gsm8k/{train,test}.jsonl
    python -m data_pipelines.prepare --task=gsm8k --data_dir=prepared

then train and evaluate on the test split:

    python -m bottomup.main --config=experiments/gsm8k.py:cpu \
        --workdir=runs/gsm8k --config.data.data_dir=prepared

Drafts: the plan (operations, no values); the equations with values; the
full solution ending "#### N". Small models trained from scratch score low
on GSM8K (the published reference, Coconut on pretrained GPT-2, is 34.1%);
the config exists so the pipeline and tables cover the task.
"""

import ml_collections

from experiments import prontoqa


def get_config(preset: str = "quickstart") -> ml_collections.ConfigDict:
  """The GSM8K config for `preset`: the ProntoQA recipe on GSM8K data."""
  c = prontoqa.get_config(preset)
  c.data.task = "gsm8k"
  c.data.scheme = "plan"
  if preset != "smoke":
    c.eval.final_num_examples = 1319  # The whole test split.
  if preset == "cpu":
    c.eval.num_examples = 500  # The whole valid split.
  return c
