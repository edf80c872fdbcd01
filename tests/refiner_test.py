"""Tests of bottomup.models.refiner: shapes, dependencies, carry, overfitting."""

import dataclasses
import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bottomup import steps
from bottomup.models import refiner
from bottomup.models.refiner import (
  FIRST_CONTENT_ID,
  PAD_ID,
  Refiner,
  RefinerConfig,
)
from bottomup.train_state import TrainState
from data_pipelines import batching, tasks
from data_pipelines import tokenizer as tok_lib

B, LQ, T, LD, V = 2, 5, 3, 6, 40
DIGITS = tuple(range(21, 31))
CFG = RefinerConfig(
  vocab_size=V,
  d_model=32,
  num_heads=2,
  mlp_dim=64,
  num_encoder_layers=2,
  num_decoder_layers=1,
  num_slots=2,
  compute_dtype="float32",
  digit_ids=DIGITS,
)


def _inputs():
  question = jax.random.randint(jax.random.key(1), (B, LQ), 21, V)
  drafts = jax.random.randint(jax.random.key(2), (B, T, LD), 21, V)
  return question, drafts, jnp.full((B,), T, jnp.int32)


@functools.cache
def _apply_fn(cfg):
  """A jitted teacher-forced forward (one compilation per config)."""
  model = Refiner(cfg)
  return jax.jit(
    lambda p, q, d, n, latent: model.apply({"params": p}, q, d, n, latent)
  )


@pytest.fixture(scope="module")
def params():
  q, d, n = _inputs()
  init = jax.jit(Refiner(CFG).init)
  variables = init({"params": jax.random.key(0)}, q, d, n)
  return flax.linen.meta.unbox(variables["params"])


def _logits(params, drafts, cfg=CFG, latent=None):
  q, _, n = _inputs()
  if latent is None:
    latent = jnp.zeros((T,), bool)
  return np.asarray(_apply_fn(cfg)(params, q, drafts, n, latent))


def _changed(drafts, t, lo=0):
  """`drafts` with pass t's tokens from position `lo` on replaced."""
  new = jax.random.randint(jax.random.key(9), (B, LD - lo), 21, V)
  new = jnp.where(new == drafts[:, t, lo:], (new - 21 + 1) % (V - 21) + 21, new)
  return drafts.at[:, t, lo:].set(new)


def test_forward_shape_and_dtype(params):
  _, drafts, _ = _inputs()
  logits = _logits(params, drafts)
  assert logits.shape == (B, T, LD, V)
  assert logits.dtype == np.float32
  assert np.all(np.isfinite(logits))


def test_later_drafts_do_not_change_earlier_passes(params):
  _, drafts, _ = _inputs()
  base = _logits(params, drafts)
  # d_{T-1} is only pass T-1's target: passes < T-1 do not see it.
  last = _logits(params, _changed(drafts, T - 1))
  np.testing.assert_array_equal(last[:, : T - 1], base[:, : T - 1])
  assert not np.allclose(last[:, T - 1], base[:, T - 1])
  # d_1 is pass 1's target and pass 2's input: pass 0 does not see it.
  mid = _logits(params, _changed(drafts, 1))
  np.testing.assert_array_equal(mid[:, 0], base[:, 0])
  assert not np.allclose(mid[:, 1], base[:, 1])
  assert not np.allclose(mid[:, 2], base[:, 2])


def test_previous_draft_changes_next_pass(params):
  _, drafts, _ = _inputs()
  base = _logits(params, drafts)
  # Changing only the tail of d_0 keeps pass 0's early positions (causal
  # decoder) but changes every position of pass 1 (its encoder reads d_0).
  lo = 3
  changed = _logits(params, _changed(drafts, 0, lo))
  np.testing.assert_allclose(
    changed[:, 0, : lo + 1], base[:, 0, : lo + 1], rtol=1e-5, atol=1e-6
  )
  assert not np.allclose(changed[:, 0, lo + 1 :], base[:, 0, lo + 1 :])
  diff = np.abs(changed[:, 1] - base[:, 1]).max(-1)  # [B, LD]
  assert np.all(diff > 1e-6)


def test_carry_none_differs_from_slots(params):
  _, drafts, _ = _inputs()
  slots = _logits(params, drafts)
  none = _logits(params, drafts, dataclasses.replace(CFG, carry="none"))
  # Pass 0 starts from the learned slots either way.
  np.testing.assert_allclose(none[:, 0], slots[:, 0], rtol=1e-5, atol=1e-6)
  assert not np.allclose(none[:, 1:], slots[:, 1:], atol=1e-4)


def test_unknown_carry_raises(params):
  _, drafts, _ = _inputs()
  with pytest.raises(ValueError, match="carry"):
    _logits(params, drafts, dataclasses.replace(CFG, carry="bogus"))


def test_latent_pass_hides_its_tokens(params):
  _, drafts, _ = _inputs()
  latent = jnp.array([True, False, False])
  base = _logits(params, drafts, latent=latent)
  changed = _logits(params, _changed(drafts, 0), latent=latent)
  # Pass 1 reads pass 0's hidden states, not d_0's tokens.
  np.testing.assert_allclose(changed[:, 1:], base[:, 1:], rtol=1e-5, atol=1e-6)
  # A latent pass's own logits are still computed (for inspection).
  assert not np.allclose(changed[:, 0], base[:, 0])
  # And a latent pass 0 feeds pass 1 something else than its tokens do.
  written = _logits(params, drafts)
  assert not np.allclose(written[:, 1], base[:, 1], atol=1e-4)


def test_remat_does_not_change_logits(params):
  _, drafts, _ = _inputs()
  on = _logits(params, drafts)
  off = _logits(params, drafts, dataclasses.replace(CFG, remat=False))
  np.testing.assert_allclose(on, off, rtol=1e-5, atol=1e-6)


def test_unrolled_passes_equal_the_loop(params):
  # Same logits and gradients whether the scan over passes is unrolled.
  q, drafts, n = _inputs()

  def loss(p, cfg):
    logits = Refiner(cfg).apply({"params": p}, q, drafts, n)
    return jnp.mean(jax.nn.log_softmax(logits)[..., 0]), logits

  outs = [
    jax.jit(jax.grad(loss, has_aux=True), static_argnums=1)(
      params, dataclasses.replace(CFG, unroll_passes=u)
    )
    for u in (True, False)
  ]
  (g_on, l_on), (g_off, l_off) = outs
  np.testing.assert_allclose(l_on, l_off, rtol=1e-5, atol=1e-6)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
    g_on,
    g_off,
  )


def test_place_index_by_hand():
  table = np.zeros((V,), bool)
  table[list(DIGITS)] = True
  plus, eq = 31, 32
  one, two, three, four, five = 22, 23, 24, 25, 26
  # "+12=345" and "12+3=": runs count from 1; other tokens are 0.
  tokens = jnp.array(
    [
      [plus, one, two, eq, three, four, five],
      [one, two, plus, three, eq, PAD_ID, PAD_ID],
    ]
  )
  got = refiner.place_index(tokens, table)
  np.testing.assert_array_equal(
    got, [[0, 1, 2, 0, 1, 2, 3], [1, 2, 0, 1, 0, 0, 0]]
  )
  assert got.dtype == jnp.int32
  # Leading batch axes are fine.
  np.testing.assert_array_equal(
    refiner.place_index(tokens[None], table)[0], got
  )


def test_corrupt_keeps_specials_and_shapes():
  specials = jnp.arange(1, FIRST_CONTENT_ID)  # no PAD: PAD is padding
  content = jnp.arange(FIRST_CONTENT_ID, V)
  row = jnp.concatenate([content[:5], specials, content[5:]])
  tokens = jnp.tile(jnp.concatenate([row, jnp.zeros(6, row.dtype)]), (4, 1))
  key = jax.random.key(3)
  np.testing.assert_array_equal(refiner.corrupt(key, tokens, 0.0, V), tokens)
  for prob in (0.3, 1.0):
    out = np.asarray(refiner.corrupt(key, tokens, prob, V))
    assert out.shape == tokens.shape
    for r in range(out.shape[0]):
      # Specials are never substituted, deleted or inserted: their order is
      # kept (insertions may push the tail past the end, so compare a
      # prefix).
      got = [int(t) for t in out[r] if 0 < t < FIRST_CONTENT_ID]
      want = [int(t) for t in tokens[r] if 0 < t < FIRST_CONTENT_ID]
      assert got == want[: len(got)]
      written = out[r][out[r] >= FIRST_CONTENT_ID]
      assert np.all(written < V)
  # With p = 1 every content token is deleted and a random one inserted
  # before it: the content count is kept but nearly all tokens differ.
  out = np.asarray(refiner.corrupt(key, tokens[:, :5], 1.0, V))
  assert np.all(out >= FIRST_CONTENT_ID)
  assert np.mean(out != np.asarray(tokens[:, :5])) > 0.8
  # Deletion alone shortens a draft: PADs appear at the end.
  shorter = np.asarray(refiner.corrupt(jax.random.key(5), tokens, 0.3, V))
  assert (shorter == 0).sum() != (np.asarray(tokens) == 0).sum()


def test_train_noise_changes_logits_only_when_enabled(params):
  q, drafts, n = _inputs()
  noisy = dataclasses.replace(CFG, corrupt_prob=0.5, self_feed_prob=0.5)
  model = Refiner(noisy)
  train = jax.jit(
    lambda p, k: model.apply(
      {"params": p}, q, drafts, n, train=True, rngs={"noise": k}
    )
  )(params, jax.random.key(4))
  clean = _logits(params, drafts)
  np.testing.assert_allclose(
    _logits(params, drafts, noisy), clean, rtol=1e-5, atol=1e-6
  )
  # Pass 0's input (no draft) has nothing to corrupt or self-feed.
  np.testing.assert_allclose(train[:, 0], clean[:, 0], rtol=1e-5, atol=1e-6)
  assert not np.allclose(train[:, 1:], clean[:, 1:], atol=1e-4)


# -- Overfitting one batch -------------------------------------------------


def _one_batch(n_digits, num=8):
  task = tasks.get_task(f"multiplication_{n_digits}x{n_digits}")
  trajs = list(task.trajectories("train", scheme="scale", num=num, seed=0))
  texts = [t.question for t in trajs] + [d for t in trajs for d in t.drafts]
  tok = tok_lib.Tokenizer.train(texts, model_type="char")
  shapes = batching.Shapes(
    max_question_len=max(len(tok.encode(t.question)) for t in trajs),
    max_draft_len=max(len(tok.encode(d)) for t in trajs for d in t.drafts) + 1,
    max_drafts=n_digits,
  )
  batch, counts = batching.encode_trajectories(trajs, tok, shapes, "reject")
  assert counts.total() == 0
  return batch, tok


def test_tiny_model_overfits_one_batch():
  batch, tok = _one_batch(3)
  cfg = RefinerConfig(
    vocab_size=tok.vocab_size,
    d_model=64,
    num_heads=4,
    mlp_dim=128,
    num_encoder_layers=2,
    num_decoder_layers=1,
    num_slots=2,
    compute_dtype="float32",
    remat=False,
    digit_ids=tuple(int(i) for i in tok.digit_ids),
  )
  model = Refiner(cfg)
  t_len = batch["drafts"].shape[1]
  variables = model.init(
    {"params": jax.random.key(0)},
    batch["question"],
    batch["drafts"],
    batch["num_drafts"],
  )
  params = flax.linen.meta.unbox(variables["params"])
  tx = optax.adam(3e-3)
  state = TrainState.create(params, tx, jax.random.key(1))
  step = jax.jit(steps.make_train_step(model, np.ones(t_len, np.float32)))
  latent = np.zeros(t_len, bool)
  batch = jax.tree.map(jnp.asarray, batch)
  history = []
  for i in range(300):
    state, m = step(state, batch, latent)
    if i % 10 == 9:
      m = jax.device_get(m)
      history.append(float(m["loss"]))
      if m["correct"].sum() == m["tokens"].sum():
        break
  m = jax.device_get(m)
  assert m["tokens"].sum() > 0
  assert m["correct"].sum() == m["tokens"].sum(), (m, history)
  assert m["seq_correct"].sum() == m["seqs"].sum()
  assert history[-1] < 0.2 * history[0] or len(history) == 1
