"""Sentencepiece tokenizers, trained per prepared dataset.

Reserved ids (the same in every model): PAD=0, BOS=1, EOS=2, UNK=3, SEP=4,
then draft markers <d0> ... <d{MAX_DRAFT_MARKERS-1}>. Digit tasks use the
`char` model type (one token per character); text tasks use `unigram` or
`bpe`. Whitespace is kept verbatim (no dummy prefix, no whitespace folding)
so that decode(encode(text)) == text for every draft.

The model file is written next to the prepared dataset as `spm.model`.
"""

from __future__ import annotations

import io
import os
import pathlib
from collections.abc import Iterable, Sequence

import numpy as np
import sentencepiece as spm

PAD_ID, BOS_ID, EOS_ID, UNK_ID, SEP_ID = 0, 1, 2, 3, 4
MAX_DRAFT_MARKERS = 16
SEP_PIECE = "<sep>"
MODEL_FILE = "spm.model"


def draft_marker(t: int) -> str:
  return f"<d{t}>"


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
  ) -> Tokenizer:
    """Trains a model on `texts`.

    Args:
      texts: training sentences (questions and drafts).
      model_type: `char`, `unigram` or `bpe`.
      vocab_size: target size for unigram/bpe; ignored for `char` (which
        takes every character seen).

    Returns:
      The trained tokenizer.
    """
    texts = [t for t in texts if t]
    if not texts:
      raise ValueError("cannot train a tokenizer on no text")
    markers = [SEP_PIECE] + [draft_marker(t) for t in range(MAX_DRAFT_MARKERS)]
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
    return self.sp.encode(text)

  def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
    return self.sp.encode(list(texts))

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
    return self.sp.decode(out)
