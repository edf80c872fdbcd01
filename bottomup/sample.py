"""Solve one question and print every draft, coarse to fine.

python -m bottomup.sample --workdir=DIR --question="1234*5678"
"""

import jax
import numpy as np
from absl import app, flags

from bottomup import answers, evaluate
from data_pipelines.views import format_viewed

_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir.")
_QUESTION = flags.DEFINE_string("question", None, "A plain question.")
_TEMPERATURE = flags.DEFINE_float("temperature", None, "0 = greedy.")
_EXTRA = flags.DEFINE_integer("extra_passes", None, "Extra passes.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.mark_flags_as_required(["workdir", "question"])


def main(argv):
  evaluate.quiet_libraries()
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  config, data, model, _, params, step = evaluate.restore_run(
    _WORKDIR.value,
    dict(temperature=_TEMPERATURE.value, extra_passes=_EXTRA.value),
  )
  task = data.task
  try:
    question = task.parse_question(_QUESTION.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  ids = data.tokenizer.encode(question)
  lq = data.shapes.max_question_len
  if len(ids) > lq:
    raise app.UsageError(f"question is {len(ids)} tokens; the model takes {lq}")
  q = np.zeros((1, lq), np.int32)
  q[0, : len(ids)] = ids
  evaluator = evaluate.Evaluator(config, data, model, None)
  result = evaluator._refine(params, q, jax.random.key(_SEED.value))
  drafts = answers.decode_text(data.tokenizer, np.asarray(result.drafts))[0]
  fmt_q = getattr(task, "format_question", lambda x: x)
  print(f"Q: {fmt_q(question)}   (model step {step})")
  for t, d in enumerate(drafts):
    print(f"  pass {t}: {format_viewed(task, d) if d else '(latent)'}")
  answer = task.extract_answer(drafts[-1]) if drafts else None
  print(f"answer: {task.format_answer(answer) if answer else None}")


if __name__ == "__main__":
  app.run(main)
