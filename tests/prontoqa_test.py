"""Tests of the ProntoQA task: drafts, verifier, parser, loader errors, data."""

import json

import pytest

from data_pipelines.tasks import get_task, prontoqa
from data_pipelines.trajectory import DataError

# A made-up 5-hop chain in the dataset's shape (not dataset text).
_STEPS = [
  "Zed is a blorp. Every blorp is a quib.",
  "Zed is a quib. Quibs are frams.",
  "Zed is a fram. Each fram is a dax.",
  "Zed is a dax. Daxes are wugs.",
  "Zed is a wug. Wugs are not shiny.",
  "Zed is not shiny.",
]
_QUESTION = (
  "Every blorp is a quib. Quibs are frams. Each fram is a dax. Daxes are "
  "wugs. Wugs are not shiny. Zed is a blorp. True or false: Zed is shiny."
)


def _record(**overrides):
  return {"question": _QUESTION, "steps": _STEPS, "answer": "False"} | overrides


def _write(root, split, records):
  folder = root / "prontoqa"
  folder.mkdir(exist_ok=True)
  path = folder / f"prontoqa_{split}.json"
  path.write_text(json.dumps(records, indent=1))
  return path


def test_registry_returns_the_task():
  assert isinstance(get_task("prontoqa"), prontoqa.ProntoQATask)


@pytest.mark.parametrize(
  "num_hops, kept", [(5, [0, 2, 4]), (4, [1, 3]), (1, [0]), (0, [])]
)
def test_key_hops_keep_every_other_hop_ending_at_the_last(num_hops, kept):
  hops = [f"h{i}" for i in range(num_hops)]
  assert prontoqa.key_hops(hops) == [f"h{i}" for i in kept]


def test_hops_scheme_drafts_go_coarse_to_fine():
  d0, d1, d2 = prontoqa.make_drafts(_STEPS, "False", "hops")
  assert d0 == "Zed is not shiny. #### False"
  assert d1 == " ".join(
    [_STEPS[0], _STEPS[2], _STEPS[4], _STEPS[5], "#### False"]
  )
  assert d2 == " ".join(_STEPS) + " #### False"
  assert len(d0) < len(d1) < len(d2)


def test_grow_scheme_writes_longer_prefixes_and_the_answer_last():
  task = prontoqa.ProntoQATask()
  d0, d1, d2 = prontoqa.make_drafts(_STEPS, "False", "grow")
  assert d0 == " ".join(_STEPS[:2])
  assert d1 == " ".join(_STEPS[:4])
  assert d2 == " ".join(_STEPS) + " #### False"
  # Neither the deciding rule, nor the conclusion, nor the answer appear
  # before the last draft.
  for d in (d0, d1):
    assert task.extract_answer(d) is None
    assert "shiny" not in d
  assert task.verify(d2, "False")


def test_answer_pass_schemes_end_with_conclusion_then_answer():
  task = prontoqa.ProntoQATask()
  full = " ".join(_STEPS)
  grow = prontoqa.make_drafts(_STEPS, "True", "grow_answer")
  assert grow == (
    " ".join(_STEPS[:2]),
    " ".join(_STEPS[:4]),
    full,
    full + " #### True",
  )
  steps = prontoqa.make_drafts(_STEPS, "True", "steps")
  hops = _STEPS[:-1]
  assert len(steps) == len(hops) + 2
  for t in range(len(hops)):  # one more hop per pass
    assert steps[t] == " ".join(hops[: t + 1])
  assert steps[-2:] == (full, full + " #### True")
  # Only the last draft states an answer.
  assert [task.extract_answer(d) for d in steps] == [None] * (
    len(steps) - 1
  ) + ["True"]


def test_chain_scheme_is_the_full_chain_only():
  drafts = prontoqa.make_drafts(_STEPS, "True", "chain")
  assert drafts == (" ".join(_STEPS) + " #### True",)


def test_loader_builds_trajectories(tmp_path):
  _write(tmp_path, "train", [_record(), _record(answer="True")])
  task = prontoqa.ProntoQATask()
  trajs = list(task.trajectories("train", source_dir=tmp_path))
  assert [t.id for t in trajs] == ["prontoqa_train-0", "prontoqa_train-1"]
  assert trajs[0].question == _QUESTION
  assert trajs[0].answer == "False" and trajs[1].answer == "True"
  assert all(task.verify(d, t.answer) for t in trajs for d in t.drafts)
  grow = list(task.trajectories("train", scheme="grow", source_dir=tmp_path))
  assert [len(t.drafts) for t in grow] == [3, 3]
  chain = list(task.trajectories("train", scheme="chain", source_dir=tmp_path))
  assert [len(t.drafts) for t in chain] == [1, 1]


@pytest.mark.parametrize(
  "text, expected",
  [
    ("Zed is shiny. #### True", "True"),
    ("Zed is shiny. ####true", "True"),
    ("Zed is not shiny. #### FALSE.", "False"),
    ("#### True\nmore text #### False", "False"),  # the last marker wins
    ("Zed is shiny. True", None),  # no marker, no answer
    ("Zed is shiny. #### maybe", None),
    ("#### Trueish", None),
  ],
)
def test_extract_answer(text, expected):
  assert prontoqa.ProntoQATask().extract_answer(text) == expected


def test_verify_accepts_any_case_and_rejects_the_wrong_answer():
  task = prontoqa.ProntoQATask()
  assert task.verify("x #### true", "True")
  assert task.verify("x #### True", "true")
  assert not task.verify("x #### False", "True")
  assert not task.verify("x", "True")


def test_parse_question_normalizes():
  task = prontoqa.ProntoQATask()
  got = task.parse_question(
    "  Wugs are  not shiny.\n Zed is a wug.  true OR false:  Zed is shiny? "
  )
  assert got == "Wugs are not shiny. Zed is a wug. True or false: Zed is shiny."
  assert task.parse_question(_QUESTION) == _QUESTION
  assert task.parse_question("True or false: Zed is a wug") == (
    "True or false: Zed is a wug."
  )


@pytest.mark.parametrize(
  "text", ["Zed is shiny.", "Zed is a wug. True or false:"]
)
def test_parse_question_rejects_non_questions(text):
  with pytest.raises(ValueError):
    prontoqa.ProntoQATask().parse_question(text)


def test_malformed_json_names_file_and_line(tmp_path):
  path = _write(tmp_path, "train", [_record()] * 3)
  lines = path.read_text().splitlines()
  lines[3] = lines[3] + " }{ broken"
  path.write_text("\n".join(lines))
  with pytest.raises(DataError, match="line 4") as e:
    list(prontoqa.ProntoQATask().trajectories("train", source_dir=tmp_path))
  assert str(path) in str(e.value)


@pytest.mark.parametrize(
  "bad, message",
  [
    ({"question": _QUESTION, "answer": "True"}, "missing field 'steps'"),
    (_record(answer="Maybe"), "'answer'"),
    (_record(steps=[]), "'steps'"),
    (_record(steps="Zed is shiny."), "'steps'"),
    (_record(question="Zed is a wug."), "True or false"),
    (["not", "an", "object"], "JSON object"),
  ],
)
def test_malformed_record_names_file_and_index(tmp_path, bad, message):
  path = _write(tmp_path, "valid", [_record(), _record(), bad])
  with pytest.raises(DataError, match=message) as e:
    list(prontoqa.ProntoQATask().trajectories("valid", source_dir=tmp_path))
  assert f"{path}[2]" in str(e.value)


def test_missing_file_names_files_and_upstream(tmp_path):
  with pytest.raises(FileNotFoundError) as e:
    next(prontoqa.ProntoQATask().trajectories("test", source_dir=tmp_path))
  message = str(e.value)
  for name in (
    "prontoqa_train.json",
    "prontoqa_valid.json",
    "prontoqa_test.json",
  ):
    assert name in message
  assert "https://github.com/asaparov/prontoqa" in message
  assert "https://github.com/facebookresearch/coconut" in message


def test_real_data(data_dir):
  task = prontoqa.ProntoQATask()
  sizes = {"train": 9000, "valid": 200, "test": 800}
  for split, size in sizes.items():
    path = task.source_path(split, data_dir)
    raw = json.loads(path.read_text())
    trajs = list(task.trajectories(split, source_dir=data_dir))
    assert len(trajs) == size
    assert len({t.id for t in trajs}) == size
    for t, r in zip(trajs, raw):
      assert t.question == r["question"]  # already in normal form
      assert len(t.drafts) == 3
      assert all(task.verify(d, t.answer) for d in t.drafts)
      # The data's own logic: True exactly when the chain concludes the
      # statement asked about.
      statement = t.question.rpartition("True or false: ")[2]
      assert (statement == r["steps"][-1]) == (t.answer == "True")
    # `backward`: two candidate chains in every problem, and exactly one
    # of them (the proof) starts at a type of the entity.
    for t in task.trajectories(split, scheme="backward", source_dir=data_dir):
      context, _, statement = t.question.rpartition("True or false: ")
      entity = statement.split()[0]
      types = {
        prontoqa._concept(x.split()[-1])
        for x in prontoqa._sentences(context)
        if x.startswith(f"{entity} is a")
      }
      chains = t.drafts[-2].split(prontoqa.CHAIN_SEP)
      assert len(chains) == 2, t.id
      heads = [prontoqa._rule(prontoqa._sentences(c)[0])[0] for c in chains]
      assert sum(h in types for h in heads) == 1, t.id
    # `for_against`: the answer is True exactly when the first chain (the
    # one agreeing with the statement) is the proof.
    for t in task.trajectories(
      split, scheme="for_against", source_dir=data_dir
    ):
      first = t.drafts[-2].split(prontoqa.CHAIN_SEP)[0]
      proof_end = prontoqa._sentences(t.drafts[-1])[-3]  # the deciding rule
      assert first.endswith(proof_end) == (t.answer == "True"), t.id


# The proof above, plus a distractor: the opposite rule on "shiny" and one
# rule leading into it (made-up text).
_CONTEXT = (
  "Every blorp is a quib. Quibs are frams. Each fram is a dax. Daxes are "
  "wugs. Wugs are not shiny. Every tove is shiny. Each mimsy is a tove. "
  "Zed is a blorp. Zed is a mimsy. True or false: Zed is shiny."
)


def test_backward_scheme_grows_both_candidate_chains_backward():
  drafts = prontoqa.make_drafts(_STEPS, "False", "backward", context=_CONTEXT)
  rules = [h.split(". ")[1] for h in _STEPS[:-1]]
  assert rules[-1] == "Wugs are not shiny."
  # The positive rule's chain first, whichever is the proof.
  assert drafts[0] == "Every tove is shiny. | Wugs are not shiny."
  assert drafts[1] == (
    "Each mimsy is a tove. Every tove is shiny. | "
    "Daxes are wugs. Wugs are not shiny."
  )
  for t in range(2, 5):  # the distractor has no rule into "mimsy": it stops
    assert drafts[t] == (
      "Each mimsy is a tove. Every tove is shiny. | "
      + " ".join(rules[-t - 1 :])
    )
  assert len(drafts) == len(rules) + 1
  assert drafts[-1] == " ".join(_STEPS) + " #### False"
  # Only the last draft states an answer.
  task = prontoqa.ProntoQATask()
  assert [task.extract_answer(d) for d in drafts[:-1]] == [None] * len(rules)


def test_for_against_orders_the_chains_by_the_statement_asked():
  backward = prontoqa.make_drafts(_STEPS, "False", "backward", context=_CONTEXT)
  # "Zed is shiny.": the positive chain argues for it, as in `backward`.
  drafts = prontoqa.make_drafts(
    _STEPS, "False", "for_against", context=_CONTEXT
  )
  assert drafts == backward
  # "Zed is not shiny.": the negative chain (the proof) comes first.
  negated = _CONTEXT.replace("Zed is shiny.", "Zed is not shiny.")
  steps = _STEPS
  drafts = prontoqa.make_drafts(steps, "True", "for_against", context=negated)
  assert drafts[0] == "Wugs are not shiny. | Every tove is shiny."
  assert drafts[1] == (
    "Daxes are wugs. Wugs are not shiny. | "
    "Each mimsy is a tove. Every tove is shiny."
  )
  assert drafts[-1] == " ".join(steps) + " #### True"
  with pytest.raises(ValueError, match="True or false"):
    prontoqa.make_drafts(
      steps, "True", "for_against", context=_CONTEXT.split(" True or")[0]
    )


def test_backward_scheme_needs_the_context_and_readable_hops(tmp_path):
  with pytest.raises(ValueError, match="context"):
    prontoqa.make_drafts(_STEPS, "False", "backward")
  bad = ["Zed is a blorp and a quib.", *_STEPS[1:]]
  path = _write(
    tmp_path, "train", [_record(), _record(question=_CONTEXT, steps=bad)]
  )
  task = prontoqa.ProntoQATask()
  with pytest.raises(DataError, match=r"prontoqa_train.json\[1\].*'steps'"):
    list(task.load(path, split="train", scheme="backward"))
