"""ProntoQA (5-hop, fictional ontology), in Coconut's format (`prontoqa`).

Raw format: `prontoqa_{train,valid,test}.json`, each one JSON array of

    {"question": "<context sentences> True or false: <statement>",
     "steps": ["Max is a vumpus. Each vumpus is a brimpus.",  # hop 1
               ...,                                           # hops 2-4
               "Max is a numpus. Numpuses are not wooden.",   # hop 5
               "Max is not wooden."],                         # conclusion
     "answer": "True" | "False"}

Every step but the last is one hop (a fact and the rule applied to it); the
last step is the concluding sentence. The answer is True when the conclusion
is the statement asked about and False when it is its negation.

Trajectories (scheme `hops`, the default), coarse to fine; every draft ends
with the answer marker " #### True" or " #### False", so the verifier reads
the answer the same way at every level:

  d0  the conclusion only:
        "Max is not wooden. #### True"
  d1  key hops: every other hop, counted back from the last one, then the
      conclusion. The last hop holds the rule that decides the property, so it
      is always kept; with ProntoQA's 5 hops this keeps hops 1, 3 and 5 (the
      entry point, the middle and the deciding rule), about half the chain:
        "Max is a vumpus. Each vumpus is a brimpus. Max is a grimpus. ...
         Max is not wooden. #### True"
  d2  the full chain, all steps joined by spaces, then the marker.

Scheme `chain` has the single draft d2 (the plain chain-of-thought baseline).

Scheme `grow` writes the chain forward, a longer prefix each pass, and
keeps the deciding rule, the conclusion and the answer for the last draft:

  d_t (t < T-1)  the first ceil(n (t+1) / T) hops of n, no marker
                 (ProntoQA, T = 3: hops 1-2, then hops 1-4);
  d_{T-1}        the full chain, the conclusion and the marker, as above.

Why: under `hops`, teacher forcing shows every later pass the correct
conclusion and answer in its previous draft, so the later passes learn to
copy them. A refiner trained so (experiments/prontoqa.py, 500 steps) wrote
in its final draft the answer of its first draft on 100 of 100 valid
problems: the first draft's guess, made without any chain, decided the
answer. Under `grow` what a pass can copy is a correct prefix, and the
answer is written once, after the whole chain.

Schemes `grow_answer` and `steps` test a reading of the `grow` failure
(experiments/prontoqa.py): a shallow decoder must do alone whatever a
pass adds that depends on tokens written in the same pass, while what
depends on the previous draft gets the deep encoder. `grow_answer` adds a
final pass that only appends the answer (the conclusion is then in the
previous draft, where the encoder can compare it with the question);
`steps` also adds one hop per pass, so that every rule lookup is keyed by
an entity of the previous draft (7 drafts for 5 hops).

Scheme `backward` writes the two candidate proofs backward, a hop more
each pass. The queried property has exactly two rules in the context, of
opposite polarity ("Each wug is shiny." / "Every blorp is not shiny."), and
exactly one of them is reachable from the entity. Read forward, most hops
are a two-way choice (a concept has two parent rules) that only the
property five hops ahead decides; read backward, every hop is a lookup
(each concept has one child rule; both checked over 2,000 training
problems). So:

  d_t (t < n)  both candidate chains, the last t+1 rules of each, in chain
               order, the positive rule's chain first, joined by " | "
               (the order never depends on which one is right);
  d_n          the full chain, the conclusion and the marker, as above.

The distractor chain stops growing when no rule leads into its first
concept. The last pass reads, in its previous draft, which chain reached
a type of the entity (the deep encoder's comparison) and writes that proof
forward. Needs the question's context (`make_drafts(..., context=...)`).
Trained once (experiments/prontoqa.py): valid 55%, the majority answer.

Scheme `for_against` is `backward` with the chains ordered by the query
instead: the chain that would prove the statement asked about first, the
one that would refute it second. Under `backward` the answer is the
parity of two bits (which chain reaches the entity, and whether the
statement is negated), a function with no first-order signal that the
last pass never learned; here it is one bit, whether the proof written is
the first chain. The order depends on the question only, never on the
answer.
Trained once with `prepare --fold_words` (experiments/prontoqa.py): the
last pass learned its answer (200 of 200 valid, given the earlier drafts);
the backward lookups of the first passes are still not learned.

Answers are "True"/"False"; the verifier accepts any letter case after the
last "####" and nothing else (a draft without the marker has no answer).
Loader errors name the file and the record index, as `file[i]` (0-based).
"""

from __future__ import annotations

import json
import pathlib
import re
from collections.abc import Iterator, Sequence

from data_pipelines.trajectory import DataError, Task, Trajectory

ANSWER_MARKER = "####"
_ANSWERS = ("True", "False")
_TRUE_OR_FALSE_RE = re.compile(r"true\s+or\s+false\s*:", re.IGNORECASE)
_ANSWER_RE = re.compile(r"\s*(true|false)\b", re.IGNORECASE)


def key_hops(hops: Sequence[str]) -> list[str]:
  """Every other hop, counted back from the last (which is always kept).

  Args:
    hops: the hop steps, in chain order (the conclusion excluded).

  Returns:
    The kept hops, in chain order: for 5 hops, hops 1, 3 and 5.
  """
  last = len(hops) - 1
  return [h for i, h in enumerate(hops) if (last - i) % 2 == 0]


_SENTENCE_END_RE = re.compile(r"(?<=\.)\s+")
CHAIN_SEP = " | "


def _sentences(text: str) -> list[str]:
  return [x for x in _SENTENCE_END_RE.split(text.strip()) if x]


def _concept(word: str) -> str:
  """A concept's name, singular, lower case: "Lorpuses" -> "lorpus"."""
  w = word.lower().strip(".")
  if w.endswith("uses"):
    return w[:-2]
  if w.endswith("s") and not w.endswith("us"):
    return w[:-1]
  return w


def _rule(sentence: str) -> tuple[str, str, bool]:
  """(subject concept, object, negated) of a rule.

  "Every wug is not shiny." -> ("wug", "shiny", True); "Daxes are wugs."
  -> ("dax", "wugs", False); the object keeps its words ("a" dropped).
  """
  words = sentence.rstrip(".").split()
  if words and words[0] in ("Every", "Each"):
    words = words[1:]
  if len(words) < 3:
    raise ValueError(f"not a rule: {sentence!r}")
  subject, rest = words[0], words[2:]
  negated = rest[0] == "not"
  if negated:
    rest = rest[1:]
  if rest and rest[0] in ("a", "an"):
    rest = rest[1:]
  return _concept(subject), " ".join(rest), negated


def _query_negated(context: str) -> bool:
  """Whether the statement after "True or false:" is negated."""
  parts = _TRUE_OR_FALSE_RE.split(context)
  if len(parts) < 2:
    raise ValueError("no 'True or false:' statement in the question")
  return " not " in f" {parts[-1].strip()} "


def candidate_chains(
  hops: Sequence[str], context: str, by_query: bool = False
) -> list[str]:
  """The `backward` scheme's drafts before the last (module docstring).

  Args:
    hops: the proof's hops, "<entity> is a X. <rule on X>." each.
    context: the question: its rules (and facts, and the query).
    by_query: the chain agreeing with the statement asked first
      (`for_against`); else the positive rule's chain first (`backward`).

  Returns:
    One draft per hop: the last t+1 rules of the proof and of the
    distractor chain (the rule of the opposite polarity on the same
    property, and the rules that lead into it), positive chain first.

  Raises:
    ValueError: a hop without a rule.
  """
  if not hops:
    raise ValueError("no hops before the conclusion")
  facts, proof = [], []
  for h in hops:
    parts = _sentences(h)
    if len(parts) != 2:
      raise ValueError(f"hop is not a fact and a rule: {h!r}")
    facts.append(parts[0])
    proof.append(parts[1])
  entity = facts[0].split()[0]
  _, prop, negated = _rule(proof[-1])
  first_negated = by_query and _query_negated(context)
  parsed = {}  # the context's other rules: sentence -> (subject, object, neg)
  for x in _sentences(context.split("True or false:")[0]):
    if x.startswith(entity + " ") or x in proof:
      continue
    try:
      parsed[x] = _rule(x)
    except ValueError:
      continue
  distractor = [
    x for x, (_, obj, neg) in parsed.items() if obj == prop and neg != negated
  ][:1]
  while distractor and len(distractor) < len(proof):
    head = parsed[distractor[0]][0]
    into = [
      x
      for x, (_, obj, neg) in parsed.items()
      if not neg and _concept(obj) == head
    ]
    if not into or into[0] in distractor:
      break
    distractor.insert(0, into[0])
  drafts = []
  for t in range(len(proof)):
    chains = [proof[-(t + 1) :], distractor[-(t + 1) :]]
    if negated != first_negated:  # the chain led by that polarity first
      chains.reverse()
    drafts.append(CHAIN_SEP.join(" ".join(c) for c in chains if c))
  return drafts


def make_drafts(
  steps: Sequence[str],
  answer: str,
  scheme: str,
  context: str | None = None,
) -> tuple[str, ...]:
  """The drafts of one chain under `scheme`, coarse to fine.

  Args:
    steps: the chain: hops, then the concluding sentence.
    answer: "True" or "False".
    scheme: `hops` (three drafts), `grow` (three drafts, the conclusion
      and answer in the last only), `grow_answer` (`grow`, then the answer
      in a pass of its own), `steps` (one more hop per pass, then the
      conclusion, then the answer), `backward` (both candidate chains
      grown backward, then the chain and the answer), `for_against`
      (`backward`, the chain agreeing with the statement first) or `chain`
      (the full chain only).
    context: the question (its rules); needed by `backward` and
      `for_against` only.

  Returns:
    The drafts; those that state the answer end " #### <answer>".

  Raises:
    ValueError: `backward` without a context, or a chain or context it
      cannot read (the message says what is missing).
  """
  hops, conclusion = list(steps[:-1]), steps[-1]
  full = " ".join([*hops, conclusion])
  marked = lambda d: f"{d} {ANSWER_MARKER} {answer}"
  if scheme == "chain":
    return (marked(full),)
  if scheme in ("backward", "for_against"):
    if context is None:
      raise ValueError(f"scheme {scheme!r} needs the question's context")
    by_query = scheme == "for_against"
    return (*candidate_chains(hops, context, by_query), marked(full))
  if scheme in ("grow", "grow_answer"):
    n, t_len = len(hops), 3
    prefixes = [
      " ".join(hops[: -(-n * (t + 1) // t_len)]) for t in range(t_len - 1)
    ]
    if scheme == "grow_answer":
      return (*prefixes, full, marked(full))
    return (*prefixes, marked(full))
  if scheme == "steps":
    prefixes = [" ".join(hops[: t + 1]) for t in range(len(hops))]
    return (*prefixes, full, marked(full))
  levels = [conclusion, " ".join([*key_hops(hops), conclusion]), full]
  return tuple(marked(d) for d in levels)


class ProntoQATask(Task):
  """ProntoQA true/false questions over a fictional ontology (loader)."""

  name = "prontoqa"
  schemes = (
    "hops",
    "grow",
    "grow_answer",
    "steps",
    "backward",
    "for_against",
    "chain",
  )
  source_subdir = "prontoqa"
  source_files = {
    "train": "prontoqa_train.json",
    "valid": "prontoqa_valid.json",
    "test": "prontoqa_test.json",
  }
  source_url = (
    "https://github.com/asaparov/prontoqa (generator, commit f0145b8), "
    "converted with https://github.com/facebookresearch/coconut "
    "(preprocessing/prontoqa.py, commit 27273cb)"
  )

  def load(
    self, path: pathlib.Path, *, split: str, scheme: str
  ) -> Iterator[Trajectory]:
    """Trajectories from one JSON-array file.

    Args:
      path: a `prontoqa_<split>.json` file.
      split: the split it holds (unused: ids come from the file name).
      scheme: coarsening scheme.

    Returns:
      An iterator of trajectories, in file order.

    Raises:
      DataError: the file is not valid JSON (names line and column) or a
        record is malformed (names `file[i]`).
    """
    del split
    try:
      with open(path, encoding="utf-8") as f:
        records = json.load(f)
    except json.JSONDecodeError as e:
      raise DataError(
        f"{path}:{e.lineno}: malformed JSON at line {e.lineno}, column "
        f"{e.colno} ({e.msg})"
      ) from e
    if not isinstance(records, list):
      raise DataError(f"{path}: expected a JSON array of records")
    for i, record in enumerate(records):
      where = f"{path}[{i}]"
      question, steps, answer = self._fields(record, where)
      try:
        drafts = make_drafts(steps, answer, scheme, context=question)
      except ValueError as e:
        raise DataError(f"{where}: field 'steps': {e}") from e
      yield Trajectory(
        id=f"{path.stem}-{i}",
        task=self.name,
        question=question,
        drafts=drafts,
        answer=answer,
      )

  def _fields(self, record, where: str) -> tuple[str, list[str], str]:
    """Checked (question, steps, answer) of a raw record."""
    if not isinstance(record, dict):
      raise DataError(f"{where}: expected a JSON object")
    for field in ("question", "steps", "answer"):
      if field not in record:
        raise DataError(f"{where}: missing field {field!r}")
    question, steps, answer = (
      record["question"],
      record["steps"],
      record["answer"],
    )
    if not isinstance(question, str):
      raise DataError(f"{where}: field 'question' must be a string")
    if (
      not isinstance(steps, list)
      or not steps
      or not all(isinstance(s, str) and s.strip() for s in steps)
    ):
      raise DataError(
        f"{where}: field 'steps' must be a non-empty list of sentences"
      )
    if answer not in _ANSWERS:
      raise DataError(f"{where}: field 'answer' must be 'True' or 'False'")
    try:
      question = self.parse_question(question)
    except ValueError as e:
      raise DataError(f"{where}: field 'question': {e}") from e
    return question, [" ".join(s.split()) for s in steps], answer

  def answer_draft(self, answer: str) -> str:
    """The answer alone, after the marker the verifier reads."""
    return f"{ANSWER_MARKER} {self.canonical_answer(answer)}"

  def extract_answer(self, text: str) -> str | None:
    """ "True"/"False" after the last "####" (any case), or None.

    Args:
      text: a draft.

    Returns:
      The canonical answer, or None when there is no marker or no answer.
    """
    _, marker, tail = text.rpartition(ANSWER_MARKER)
    m = _ANSWER_RE.match(tail) if marker else None
    return m.group(1).capitalize() if m else None

  def canonical_answer(self, answer: str) -> str:
    """ "true"/"FALSE"/... -> "True"/"False" (other text is only stripped)."""
    answer = answer.strip()
    return (
      answer.capitalize() if answer.lower() in ("true", "false") else answer
    )

  def parse_question(self, text: str) -> str:
    """A user's question in the dataset's form.

    Whitespace is collapsed, the last "true or false:" (any case) becomes
    "True or false:", and the statement ends with a period.

    Args:
      text: context sentences, then "True or false: <statement>".

    Returns:
      "<context> True or false: <statement>." (no context: no leading space).

    Raises:
      ValueError: no "True or false:" or no statement after it.
    """
    text = " ".join(text.split())
    matches = list(_TRUE_OR_FALSE_RE.finditer(text))
    if not matches:
      raise ValueError(
        f"a ProntoQA question ends with 'True or false: <statement>': {text!r}"
      )
    last = matches[-1]
    context = text[: last.start()].strip()
    statement = text[last.end() :].strip().rstrip("?.!").strip()
    if not statement:
      raise ValueError(f"no statement after 'True or false:': {text!r}")
    return " ".join(filter(None, [context, f"True or false: {statement}."]))
