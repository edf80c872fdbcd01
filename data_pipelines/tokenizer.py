"""Sentencepiece tokenizers, trained per prepared dataset.

Reserved ids (the same in every model): PAD=0, BOS=1, EOS=2, UNK=3, SEP=4,
then draft markers <d0> ... <d{MAX_DRAFT_MARKERS-1}>. Digit tasks use the
`char` model type (one token per character); text tasks use `unigram` or
`bpe`. Whitespace is kept verbatim (no dummy prefix, no whitespace folding)
so that decode(encode(text)) == text for every draft.

Word folding (`Tokenizer.train(..., fold_words=True)`, for text tasks with a
small closed vocabulary such as ProntoQA): before sentencepiece, a word's
capitalized and plural forms are written as the lower-case singular stem
followed by marker pieces, "Gorpuses" -> "gorpus" CAP ES, "Max" -> "max" CAP,
"lempuses" -> "lempus" ES, "animals" -> "animal" S, so that every form of a
concept shares the stem's token and matching a concept across sentences is
matching one token. Decoding puts the forms back (`unfold_text`), so
decode(encode(text)) == text still holds. A model whose vocabulary has the
marker pieces folds; no other setting is stored.

The model file is written next to the prepared dataset as `spm.model`.
"""

from __future__ import annotations

import io
import os
import pathlib
import re
from collections.abc import Iterable, Sequence

import numpy as np
import sentencepiece as spm

PAD_ID, BOS_ID, EOS_ID, UNK_ID, SEP_ID = 0, 1, 2, 3, 4
MAX_DRAFT_MARKERS = 16
SEP_PIECE = "<sep>"
MODEL_FILE = "spm.model"


def draft_marker(t: int) -> str:
  return f"<d{t}>"


# Word folding's marker pieces (module docstring): capital first letter,
# plural "-es" and plural "-s". Characters that no dataset here contains;
# `fold_text` refuses text that has them.
CAP, PLURAL_ES, PLURAL_S = "\u21e7", "\u2039es\u203a", "\u2039s\u203a"
FOLD_MARKERS = (CAP, PLURAL_ES, PLURAL_S)
_WORD_RE = re.compile(r"(?<![A-Za-z])[A-Za-z]+(?![A-Za-z])")
# A stem (maybe empty) and at least one marker.
_FOLDED_RE = re.compile(
  f"([A-Za-z]*)(?:({CAP})({PLURAL_ES}|{PLURAL_S})?|({PLURAL_ES}|{PLURAL_S}))"
)
# Words ending in "s" that are not plurals of a shorter stem.
_NOT_PLURAL = ("ss", "us", "is", "os")


def _fold_word(m: re.Match) -> str:
  w = m.group(0)
  cap = w[0].isupper() and w[1:] == w[1:].lower()
  if cap:
    w = w.lower()
  suffix = ""
  if len(w) >= 6 and w.endswith("uses"):
    w, suffix = w[:-2], PLURAL_ES
  elif len(w) >= 5 and w.endswith("s") and not w.endswith(_NOT_PLURAL):
    w, suffix = w[:-1], PLURAL_S
  return w + (CAP if cap else "") + suffix


def fold_text(text: str) -> str:
  """Writes capitalized and plural words as stem + markers (docstring).

  Raises:
    ValueError: the text already holds a marker character.
  """
  if any(c in text for c in (CAP, "\u2039", "\u203a")):
    raise ValueError(f"text holds a word-folding marker: {text[:80]!r}")
  return _WORD_RE.sub(_fold_word, text)


def _unfold_word(m: re.Match) -> str:
  stem, cap, suffix, bare_suffix = m.groups()
  suffix = suffix or bare_suffix
  if cap:
    stem = stem[:1].upper() + stem[1:]
  return stem + {PLURAL_ES: "es", PLURAL_S: "s", None: ""}[suffix]


def unfold_text(text: str) -> str:
  """The inverse of `fold_text`; stray markers (a model's) become text."""
  return _FOLDED_RE.sub(_unfold_word, text)


class Tokenizer:
  """A sentencepiece model with bottomup's reserved ids."""

  def __init__(self, model_proto: bytes):
    self.model_proto = model_proto
    self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
    if (self.sp.pad_id(), self.sp.bos_id(), self.sp.eos_id()) != (
      PAD_ID,
      BOS_ID,
      EOS_ID,
    ) or self.sp.piece_to_id(SEP_PIECE) != SEP_ID:
      raise ValueError("sentencepiece model lacks bottomup's reserved ids")
    self.vocab_size = self.sp.get_piece_size()
    self.folds_words = all(
      self.sp.piece_to_id(p) != UNK_ID for p in FOLD_MARKERS
    )
    pieces = [self.sp.id_to_piece(i) for i in range(self.vocab_size)]
    # Single-digit pieces: the place-value embedding counts positions in
    # digit runs, so it needs to know which ids are digits.
    self.digit_ids = np.array(
      [i for i, p in enumerate(pieces) if len(p) == 1 and p.isdigit()],
      np.int32,
    )

  pad_id, bos_id, eos_id, unk_id, sep_id = (
    PAD_ID,
    BOS_ID,
    EOS_ID,
    UNK_ID,
    SEP_ID,
  )

  @classmethod
  def train(
    cls,
    texts: Iterable[str],
    *,
    model_type: str = "char",
    vocab_size: int = 0,
    fold_words: bool = False,
  ) -> Tokenizer:
    """Trains a model on `texts`.

    Args:
      texts: training sentences (questions and drafts).
      model_type: `char`, `unigram` or `bpe`.
      vocab_size: target size for unigram/bpe; ignored for `char` (which
        takes every character seen).
      fold_words: fold capitalized and plural words (module docstring).

    Returns:
      The trained tokenizer.
    """
    texts = [t for t in texts if t]
    if not texts:
      raise ValueError("cannot train a tokenizer on no text")
    markers = [SEP_PIECE] + [draft_marker(t) for t in range(MAX_DRAFT_MARKERS)]
    if fold_words:
      texts = [fold_text(t) for t in texts]
      markers += FOLD_MARKERS
    if model_type == "char":
      chars = sorted({c for t in texts for c in t})
      # Every character must be a piece: char models cover all of them.
      vocab_size = 4 + len(markers) + len(chars) + 1
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
      sentence_iterator=iter(texts),
      model_writer=buf,
      model_type=model_type,
      vocab_size=vocab_size,
      character_coverage=1.0,
      pad_id=PAD_ID,
      bos_id=BOS_ID,
      eos_id=EOS_ID,
      unk_id=UNK_ID,
      user_defined_symbols=markers,
      add_dummy_prefix=False,
      remove_extra_whitespaces=False,
      normalization_rule_name="identity",
      split_digits=True,
      byte_fallback=model_type != "char",
      hard_vocab_limit=model_type != "char",
      max_sentence_length=1 << 16,
      input_sentence_size=200_000,
      shuffle_input_sentence=True,
      num_threads=1,
      minloglevel=2,
    )
    return cls(buf.getvalue())

  @classmethod
  def load(cls, path: str | os.PathLike) -> Tokenizer:
    """Loads `path` (a model file, or a directory holding `spm.model`)."""
    path = pathlib.Path(path)
    if path.is_dir():
      path = path / MODEL_FILE
    return cls(path.read_bytes())

  def save(self, path: str | os.PathLike) -> None:
    """Writes the model file atomically."""
    path = pathlib.Path(path)
    if path.is_dir():
      path = path / MODEL_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(self.model_proto)
    os.replace(tmp, path)

  def encode(self, text: str) -> list[int]:
    """Token ids of `text` (no BOS/EOS added)."""
    return self.sp.encode(fold_text(text) if self.folds_words else text)

  def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
    texts = list(texts)
    if self.folds_words:
      texts = [fold_text(t) for t in texts]
    return self.sp.encode(texts)

  def decode_many(self, rows: Sequence[Sequence[int]]) -> list[str]:
    """Texts of rows holding no control ids (batched `sp.decode`)."""
    texts = self.sp.decode([list(map(int, r)) for r in rows])
    return [unfold_text(t) for t in texts] if self.folds_words else texts

  def decode(self, ids: Iterable[int]) -> str:
    """Text of `ids`, stopping at the first EOS and dropping PAD/BOS."""
    out = []
    for i in ids:
      i = int(i)
      if i == EOS_ID:
        break
      if i in (PAD_ID, BOS_ID):
        continue
      out.append(i)
    text = self.sp.decode(out)
    return unfold_text(text) if self.folds_words else text
