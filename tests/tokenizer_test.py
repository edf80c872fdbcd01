"""Tests of the sentencepiece tokenizer: reserved ids, round trips, files."""

import io

import numpy as np
import pytest
import sentencepiece as spm

from data_pipelines import tokenizer as tok_lib
from data_pipelines.tasks import multiplication

# A small hand-written corpus: newlines, money, runs of spaces.
_CORPUS = [
  "The price is $1,000.50 today.\n",
  "Two  spaces   here and 42 apples.",
  "Line one\nLine two\n\nend",
  "She paid $3,250.75 for 12 books and 7 pens.",
  "  leading and trailing spaces  ",
  "Tom has 3 apples; Ann has 14. Together: 17 #### 17",
] * 10


def _trajectories(num=20):
  task = multiplication.MultiplicationTask(4)
  trajs = []
  for scheme in task.schemes:
    trajs += task.generate("train", num=num, seed=0, scheme=scheme)
  return trajs


def _texts(trajs):
  return [t.question for t in trajs] + [d for t in trajs for d in t.drafts]


@pytest.fixture(scope="module")
def char_tok():
  return tok_lib.Tokenizer.train(_texts(_trajectories()), model_type="char")


def test_reserved_ids(char_tok):
  sp = char_tok.sp
  assert (sp.pad_id(), sp.bos_id(), sp.eos_id(), sp.unk_id()) == (0, 1, 2, 3)
  assert sp.piece_to_id(tok_lib.SEP_PIECE) == tok_lib.SEP_ID == 4
  assert (char_tok.pad_id, char_tok.bos_id, char_tok.eos_id) == (0, 1, 2)
  assert (char_tok.unk_id, char_tok.sep_id) == (3, 4)
  for t in range(tok_lib.MAX_DRAFT_MARKERS):
    assert sp.piece_to_id(tok_lib.draft_marker(t)) == 5 + t


def test_digit_ids_are_exactly_the_ten_digits(char_tok):
  pieces = [char_tok.sp.id_to_piece(int(i)) for i in char_tok.digit_ids]
  assert sorted(pieces) == list("0123456789")
  assert char_tok.digit_ids.dtype == np.int32
  assert set(char_tok.encode("0123456789")) == set(char_tok.digit_ids)
  non_digits = set(char_tok.encode("+=*#()"))
  assert not non_digits & set(char_tok.digit_ids.tolist())


def test_char_round_trip_on_every_draft(char_tok):
  trajs = _trajectories(num=5)
  task = multiplication.MultiplicationTask(4)
  trajs += task.generate("test", num=5, seed=9, scheme="icot")
  for text in _texts(trajs):
    ids = char_tok.encode(text)
    assert len(ids) == len(text)  # one token per character
    assert tok_lib.UNK_ID not in ids
    assert char_tok.decode(ids) == text
  drafts = [d for t in trajs for d in t.drafts]
  assert [char_tok.decode(i) for i in char_tok.encode_many(drafts)] == drafts


def test_decode_stops_at_eos_and_drops_pad_and_bos(char_tok):
  pad, bos, eos = tok_lib.PAD_ID, tok_lib.BOS_ID, tok_lib.EOS_ID
  ids = (
    [bos]
    + char_tok.encode("12")
    + [pad]
    + char_tok.encode("3*4")
    + [eos]
    + char_tok.encode("99")
    + [pad, pad]
  )
  assert char_tok.decode(ids) == "123*4"
  assert char_tok.decode(np.array(ids, np.int32)) == "123*4"
  assert char_tok.decode([eos] + char_tok.encode("5")) == ""
  assert char_tok.decode([pad, bos, pad]) == ""


def test_save_and_load_a_file(char_tok, tmp_path):
  path = tmp_path / "digits.model"
  char_tok.save(path)
  loaded = tok_lib.Tokenizer.load(path)
  assert loaded.model_proto == char_tok.model_proto
  assert loaded.vocab_size == char_tok.vocab_size
  np.testing.assert_array_equal(loaded.digit_ids, char_tok.digit_ids)
  text = "+00007160=00007160"
  assert loaded.encode(text) == char_tok.encode(text)
  assert [p.name for p in tmp_path.iterdir()] == ["digits.model"]


def test_save_and_load_a_directory(char_tok, tmp_path):
  char_tok.save(tmp_path)
  assert (tmp_path / tok_lib.MODEL_FILE).is_file()
  assert sorted(p.name for p in tmp_path.iterdir()) == [tok_lib.MODEL_FILE]
  loaded = tok_lib.Tokenizer.load(tmp_path)
  assert loaded.model_proto == char_tok.model_proto
  # Saving again replaces the file in place.
  char_tok.save(tmp_path)
  assert tok_lib.Tokenizer.load(tmp_path).model_proto == char_tok.model_proto


@pytest.mark.parametrize(
  "model_type, vocab_size", [("unigram", 330), ("bpe", 360)]
)
def test_text_models_round_trip_exactly(model_type, vocab_size):
  tok = tok_lib.Tokenizer.train(
    _CORPUS, model_type=model_type, vocab_size=vocab_size
  )
  assert tok.vocab_size == vocab_size
  assert tok.sp.piece_to_id(tok_lib.SEP_PIECE) == tok_lib.SEP_ID
  for text in _CORPUS:
    assert tok.decode(tok.encode(text)) == text
  # Text never seen in training decodes exactly too (byte fallback).
  unseen = "Naïve café: 10 € ≈ $11.2   ok\n\ttab"
  assert tok.decode(tok.encode(unseen)) == unseen
  # Digits are split one per token.
  pieces = [tok.sp.id_to_piece(i) for i in tok.encode("$1,000.50")]
  digit_pieces = [p for p in pieces if any(c.isdigit() for c in p)]
  assert digit_pieces == list("100050")
  corpus_digits = sorted({c for text in _CORPUS for c in text if c.isdigit()})
  digit_pieces = sorted(tok.sp.id_to_piece(int(i)) for i in tok.digit_ids)
  assert digit_pieces == corpus_digits


def test_model_without_reserved_ids_is_rejected():
  buf = io.BytesIO()
  spm.SentencePieceTrainer.train(
    sentence_iterator=iter(_CORPUS),
    model_writer=buf,
    model_type="char",
    vocab_size=40,
    hard_vocab_limit=False,
    minloglevel=2,
  )
  with pytest.raises(ValueError, match="reserved ids"):
    tok_lib.Tokenizer(buf.getvalue())


def test_model_without_sep_is_rejected():
  buf = io.BytesIO()
  spm.SentencePieceTrainer.train(
    sentence_iterator=iter(_CORPUS),
    model_writer=buf,
    model_type="char",
    vocab_size=40,
    hard_vocab_limit=False,
    pad_id=0,
    bos_id=1,
    eos_id=2,
    unk_id=3,
    minloglevel=2,
  )
  with pytest.raises(ValueError, match="reserved ids"):
    tok_lib.Tokenizer(buf.getvalue())


def test_training_on_no_text_is_rejected():
  with pytest.raises(ValueError, match="no text"):
    tok_lib.Tokenizer.train(["", ""])


# ProntoQA-like sentences (made up here): one concept in four forms.
_CONCEPTS = [
  "Every gorpus is a lempus. Gorpuses are lempuses. Max is a gorpus.",
  "Each vumpus is not shiny. Vumpuses are not shiny. Sally is a vumpus.",
  "Lempuses are bright. Every animal is small. Animals are small.",
  "True or false: Max is not shiny. #### True",
] * 10


def test_fold_text_round_trips_and_shares_the_stem():
  folded = tok_lib.fold_text("Gorpuses are lempuses. Max is a gorpus.")
  cap, es = tok_lib.CAP, tok_lib.PLURAL_ES
  assert folded == f"gorpus{cap}{es} are lempus{es}. max{cap} is a gorpus."
  for text in _CONCEPTS + _CORPUS + ["GSM8K: Bus's 5th class, USA is"]:
    assert tok_lib.unfold_text(tok_lib.fold_text(text)) == text
  with pytest.raises(ValueError, match="marker"):
    tok_lib.fold_text(f"already {cap} folded")
  # A model may write markers anywhere: they unfold without error.
  assert tok_lib.unfold_text(f"{es}{cap} x{tok_lib.PLURAL_S}") == "es xs"


def test_fold_words_gives_every_form_of_a_concept_its_stem_token():
  tok = tok_lib.Tokenizer.train(
    _CONCEPTS, model_type="bpe", vocab_size=330, fold_words=True
  )
  assert tok.folds_words
  for text in _CONCEPTS:
    assert tok.decode(tok.encode(text)) == text
  rows = tok.encode_many(_CONCEPTS[:4])
  assert tok.decode_many(rows) == _CONCEPTS[:4]
  stem = tok.encode(" gorpus")
  markers = {tok.sp.piece_to_id(p) for p in tok_lib.FOLD_MARKERS}
  for form in (" Gorpuses", " gorpuses", " Gorpus"):
    ids = tok.encode(form)
    assert ids[: len(stem)] == stem, form
    assert set(ids[len(stem) :]) <= markers, form
  # The setting travels with the model file.
  assert tok_lib.Tokenizer(tok.model_proto).folds_words
  plain = tok_lib.Tokenizer.train(_CONCEPTS, model_type="bpe", vocab_size=330)
  assert not plain.folds_words
  plain_stem = plain.encode(" gorpus")
  assert plain.encode(" Gorpuses")[: len(plain_stem)] != plain_stem
