"""Tests of bottomup.sampling: KV-cache decoding, refine, votes."""

import dataclasses
import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bottomup import answers, generate, sampling
from bottomup.models.refiner import (
  BOS_ID,
  EOS_ID,
  PAD_ID,
  Refiner,
  RefinerConfig,
)

B, LQ, T, LD = 4, 6, 3, 8
MODEL_CFG = RefinerConfig(
  vocab_size=40,
  d_model=32,
  num_heads=2,
  mlp_dim=64,
  num_encoder_layers=2,
  num_decoder_layers=1,
  num_slots=2,
  compute_dtype="float32",
  digit_ids=tuple(range(21, 31)),
)


@pytest.fixture(scope="module")
def setup():
  model = Refiner(MODEL_CFG)
  question = jax.random.randint(jax.random.key(1), (B, LQ), 21, 40)
  drafts = jax.random.randint(jax.random.key(2), (B, T, LD), 21, 40)
  variables = model.init(
    {"params": jax.random.key(0)}, question, drafts, jnp.full((B,), T)
  )
  return model, flax.linen.meta.unbox(variables["params"]), question


def _apply(model, params):
  return functools.partial(model.apply, {"params": params})


def _first_pass_memory(model, params, question):
  """Memory of pass 0, as `refine` computes it."""
  apply = _apply(model, params)
  q_emb, q_valid = apply(question, method="embed_question")
  empty = jnp.zeros((question.shape[0], LD), jnp.int32)
  prev_emb, prev_valid = apply(empty, method="embed_draft")
  slots = apply(question.shape[0], method="initial_slots")
  memory, mask, _, _ = apply(
    q_emb, q_valid, prev_emb, prev_valid, slots, 0, method="encode_pass"
  )
  return memory, mask


def _likelihood(model, params, memory, mask, draft):
  """Teacher-forced log-likelihood of drafts [N, Ld] (through EOS)."""
  logits = _apply(model, params)(draft, memory, mask, method="decode_logits")
  logp = jax.nn.log_softmax(logits, -1)
  tok = jnp.take_along_axis(logp, draft[..., None], -1)[..., 0]
  return jnp.sum(jnp.where(draft != PAD_ID, tok, 0.0), -1)


def _greedy_rollout(model, params, question, passes, latent=(), guidance=1.0):
  """Argmax rollout by hand: full decoder forward for every token (with
  guidance: also without the question, logits l_u + w * (l_c - l_u))."""
  apply = _apply(model, params)
  decode_logits = jax.jit(
    lambda p, x, m, k: model.apply(
      {"params": p}, x, m, k, method="decode_logits"
    )
  )
  b = question.shape[0]
  q_emb, q_valid = apply(question, method="embed_question")
  q_u = apply(jnp.zeros_like(question), method="embed_question")
  slots = slots_u = apply(b, method="initial_slots")
  prev = apply(jnp.zeros((b, LD), jnp.int32), method="embed_draft")
  out = []
  for t in range(passes):
    memory, mask, h, slots = apply(
      q_emb, q_valid, *prev, slots, t, method="encode_pass"
    )
    mem_u, mask_u, _, slots_u = apply(
      *q_u, *prev, slots_u, t, method="encode_pass"
    )
    tokens = np.zeros((b, LD), np.int32)
    if t in latent:
      out.append(tokens)
      prev = apply(h, method="latent_draft")
      continue
    done = np.zeros((b,), bool)
    for pos in range(LD):
      logits = np.array(decode_logits(params, tokens, memory, mask)[:, pos])
      if guidance != 1.0:
        l_u = np.array(decode_logits(params, tokens, mem_u, mask_u)[:, pos])
        logits = l_u + guidance * (logits - l_u)
      logits[:, [PAD_ID, BOS_ID]] = -np.inf
      tok = np.where(done, PAD_ID, logits.argmax(-1))
      tokens[:, pos] = tok
      done |= tok == EOS_ID
    out.append(tokens)
    prev = apply(jnp.asarray(tokens), method="embed_draft")
  return np.stack(out, 1)


def test_kv_cache_decoding_matches_full_forward(setup):
  model, params, question = setup
  apply = _apply(model, params)
  memory, mask = _first_pass_memory(model, params, question)
  # Digit ids (21..30) and others, so the place embedding's runs vary.
  target = jax.random.randint(jax.random.key(5), (B, LD), 2, 40)
  full = apply(target, memory, mask, method="decode_logits")
  cross = apply(memory, method="cross_kv")
  cache = apply(B, LD, method="init_cache")
  token, run = jnp.full((B,), BOS_ID), jnp.zeros((B,), jnp.int32)
  for pos in range(LD):
    logits, cache, run = apply(
      token, pos, run, cache, cross, mask, method="decode_step"
    )
    np.testing.assert_allclose(logits, full[:, pos], atol=1e-5, rtol=0)
    token = target[:, pos]


def test_greedy_refine_matches_nocache_and_hand_rollout(setup):
  model, params, question = setup
  cfg = sampling.SamplingConfig(max_draft_len=LD, trained_passes=T)
  rng = jax.random.key(0)
  res = sampling.refine(model, params, question, cfg, rng)
  ref = sampling.refine_nocache(model, params, question, cfg, rng)
  assert res.drafts.shape == (B, T, LD) and res.drafts.dtype == jnp.int32
  np.testing.assert_array_equal(res.drafts, ref.drafts)
  np.testing.assert_allclose(res.scores, ref.scores, atol=1e-4)
  assert int(res.num_passes_run) == T
  hand = _greedy_rollout(model, params, question, T)
  np.testing.assert_array_equal(res.drafts, hand)
  # The factory the evaluator uses; num_passes alone means T = num_passes.
  cfg = sampling.SamplingConfig(max_draft_len=LD, num_passes=T)
  again = generate.make_sampler(model, cfg)(params, question, rng)
  np.testing.assert_array_equal(res.drafts, again.drafts)


def test_guided_refine_matches_hand_rollout(setup):
  model, params, question = setup
  rng = jax.random.key(0)
  for w in (0.0, 2.5):
    cfg = sampling.SamplingConfig(
      max_draft_len=LD, trained_passes=T, guidance=w
    )
    res = sampling.refine(model, params, question, cfg, rng)
    hand = _greedy_rollout(model, params, question, T, guidance=w)
    np.testing.assert_array_equal(res.drafts, hand)
    if w == 0.0:  # purely unconditional: every question gets one answer
      assert (np.asarray(res.drafts) == np.asarray(res.drafts[:1])).all()
    else:
      plain = sampling.refine(
        model, params, question, dataclasses.replace(cfg, guidance=1.0), rng
      )
      assert not np.array_equal(res.drafts, plain.drafts)
  with pytest.raises(ValueError, match="kv_cache"):
    sampling.SamplingConfig(
      max_draft_len=LD, trained_passes=T, guidance=2.0, kv_cache=False
    )


def test_question_dropout_hides_the_question(setup):
  model, params, question = setup
  drafts = jax.random.randint(jax.random.key(2), (B, T, LD), 21, 40)
  n = jnp.full((B,), T)
  dropped = dataclasses.replace(MODEL_CFG, question_dropout=1.0)
  rngs = {"noise": jax.random.key(3)}
  logits = [
    Refiner(dropped).apply(
      {"params": params}, q, drafts, n, train=True, rngs=rngs
    )
    for q in (question, question[::-1])
  ]
  # The logits no longer depend on the question.
  np.testing.assert_allclose(logits[0], logits[1], atol=1e-5)
  # Evaluation never drops it.
  kept = [
    Refiner(dropped).apply({"params": params}, q, drafts, n)
    for q in (question, question[::-1])
  ]
  assert not np.allclose(kept[0], kept[1], atol=1e-3)


def test_eos_stops_a_sequence(setup):
  model, params, question = setup
  # Zero logits: the first token that may be written (EOS) is the argmax.
  zero = jax.tree.map(lambda x: x, params)
  zero["head"]["kernel"] = jnp.zeros_like(params["head"]["kernel"])
  cfg = sampling.SamplingConfig(max_draft_len=LD, trained_passes=T)
  memory, mask = _first_pass_memory(model, zero, question)
  state = sampling.decode(model, zero, memory, mask, cfg, jax.random.key(0))
  assert int(state.pos) == 1  # the loop stopped once every row wrote EOS
  expect = np.zeros((B, LD), np.int32)
  expect[:, 0] = EOS_ID
  np.testing.assert_array_equal(state.tokens, expect)
  # Sampled drafts: PAD after the first EOS only, never before it.
  cfg = dataclasses.replace(cfg, temperature=3.0)
  q = jnp.tile(question, (8, 1))
  drafts = np.asarray(
    sampling.refine(model, params, q, cfg, jax.random.key(1)).drafts
  ).reshape(-1, LD)
  is_eos = drafts == EOS_ID
  has_eos = is_eos.any(1)
  first = np.where(has_eos, is_eos.argmax(1), LD)
  after = np.arange(LD)[None] > first[:, None]
  assert (drafts[after] == PAD_ID).all()
  assert (
    drafts[~after & (np.arange(LD)[None] != first[:, None])] != PAD_ID
  ).all()
  assert (first < LD - 1).any()  # some row stopped early


def test_top_k_one_is_greedy(setup):
  model, params, question = setup
  greedy = sampling.SamplingConfig(max_draft_len=LD, trained_passes=T)
  top1 = dataclasses.replace(greedy, temperature=1.0, top_k=1)
  a = sampling.refine(model, params, question, greedy, jax.random.key(0))
  b = sampling.refine(model, params, question, top1, jax.random.key(7))
  np.testing.assert_array_equal(a.drafts, b.drafts)


def test_top_k_and_top_p_truncate():
  # Probabilities 0.5, 0.3, 0.2 over tokens 3, 4, 5 (PAD, BOS, EOS: never).
  probs = jnp.array([0.0, 0.0, 0.0, 0.5, 0.3, 0.2])
  logits = jnp.tile(jnp.log(probs + 1e-30), (4096, 1))
  base = sampling.SamplingConfig(max_draft_len=LD, trained_passes=1)

  def seen(**kw):
    cfg = dataclasses.replace(base, temperature=1.0, **kw)
    return set(np.asarray(sampling.next_token(logits, jax.random.key(0), cfg)))

  assert seen() == {3, 4, 5}
  assert seen(top_k=2) == {3, 4}
  assert seen(top_p=0.6) == {3, 4}  # 0.5 < 0.6: the second is needed
  assert seen(top_p=0.5) == {3}


def test_temperature_sampling_is_reproducible(setup):
  model, params, question = setup
  cfg = sampling.SamplingConfig(
    max_draft_len=LD, trained_passes=T, temperature=1.0, top_p=0.95
  )
  run = lambda seed: np.asarray(
    sampling.refine(model, params, question, cfg, jax.random.key(seed)).drafts
  )
  np.testing.assert_array_equal(run(3), run(3))
  assert (run(3) != run(4)).any()


def test_selection_keeps_the_most_likely_sample(setup):
  model, params, question = setup
  n = 6
  cfg = sampling.SamplingConfig(
    max_draft_len=LD, trained_passes=1, temperature=1.5, num_samples=n
  )
  rng = jax.random.key(11)
  res = sampling.refine(model, params, question, cfg, rng)
  # The candidates of pass 0, drawn with the key `refine` gives that pass.
  memory, mask = _first_pass_memory(model, params, question)
  decode = jax.jit(sampling.decode, static_argnums=(0, 4, 6))
  state = decode(model, params, memory, mask, cfg, sampling.pass_key(rng, 0), n)
  tokens = np.asarray(state.tokens).reshape(B, n, LD)
  assert len({row.tobytes() for row in tokens[0]}) > 1  # a real choice
  tiled = jnp.repeat(memory, n, 0), jnp.repeat(mask, n, 0)
  lik = _likelihood(model, params, *tiled, state.tokens).reshape(B, n)
  np.testing.assert_allclose(state.logprob.reshape(B, n), lik, atol=1e-4)
  best = np.argmax(lik, 1)
  np.testing.assert_array_equal(res.drafts[:, 0], tokens[np.arange(B), best])
  np.testing.assert_allclose(res.scores[:, 0], lik.max(1), atol=1e-4)


def test_select_on_hand_made_scores():
  cands = sampling.Candidates(
    question=jnp.zeros((2, 3), jnp.int32),
    tokens=jnp.arange(2 * 3 * 4).reshape(2, 3, 4),
    logprob=jnp.array([[-3.0, -1.0, -2.0], [-0.5, -4.0, -9.0]]),
    t=0,
  )
  tokens, logprob = sampling.select(cands, cands.logprob)
  np.testing.assert_array_equal(tokens, [[4, 5, 6, 7], [12, 13, 14, 15]])
  np.testing.assert_array_equal(logprob, [-1.0, -0.5])


def test_extra_passes_stop_at_a_fixed_point(setup):
  model, params, question = setup
  zero = jax.tree.map(lambda x: x, params)
  zero["head"]["kernel"] = jnp.zeros_like(params["head"]["kernel"])
  cfg = sampling.SamplingConfig(
    max_draft_len=LD, trained_passes=2, extra_passes=4
  )
  res = sampling.refine(model, zero, question, cfg, jax.random.key(0))
  # Every pass writes [EOS]: the first extra pass already repeats it.
  assert int(res.num_passes_run) == 3
  assert res.drafts.shape == (B, 6, LD)
  assert (res.drafts[:, :, 0] == EOS_ID).all()
  # A real model: compare with the passes forced (num_passes), row by row.
  # These questions reach fixed points after 2, 2, 3 and 5 extra passes.
  q = jax.random.randint(jax.random.key(9), (32, LQ), 21, 40)[
    jnp.array([12, 19, 26, 2])
  ]
  extra = 6
  cfg = dataclasses.replace(cfg, trained_passes=T, extra_passes=extra)
  res = sampling.refine(model, params, q, cfg, jax.random.key(0))
  forced = dataclasses.replace(cfg, num_passes=T + extra, extra_passes=0)
  forced = np.asarray(
    sampling.refine(model, params, q, forced, jax.random.key(0)).drafts
  )
  runs = []
  for i in range(q.shape[0]):
    same = [
      (forced[i, t] == forced[i, t - 1]).all() for t in range(T, T + extra)
    ]
    k = same.index(True) + 1 if any(same) else extra  # extra passes run
    runs.append(k)
    np.testing.assert_array_equal(res.drafts[i, : T + k], forced[i, : T + k])
    # A converged row is frozen: it repeats its fixed point.
    assert (res.drafts[i, T + k :] == forced[i, T + k - 1]).all()
  assert min(runs) < max(runs) < extra  # rows froze at different passes
  assert int(res.num_passes_run) == T + max(runs)


def test_latent_passes_write_pad_and_feed_on(setup):
  model, params, question = setup
  cfg = sampling.SamplingConfig(
    max_draft_len=LD, trained_passes=T, latent=(True, False, False)
  )
  res = sampling.refine(model, params, question, cfg, jax.random.key(0))
  assert (res.drafts[:, 0] == PAD_ID).all() and (res.scores[:, 0] == 0).all()
  assert (res.drafts[:, 1:, 0] != PAD_ID).all()
  hand = _greedy_rollout(model, params, question, T, latent={0})
  np.testing.assert_array_equal(res.drafts, hand)
  by_index = dataclasses.replace(cfg, latent=(0,))
  again = sampling.refine(model, params, question, by_index, jax.random.key(0))
  np.testing.assert_array_equal(res.drafts, again.drafts)


def test_config_rejects_bad_settings():
  with pytest.raises(ValueError, match="trained_passes or num_passes"):
    sampling.SamplingConfig(max_draft_len=LD)
  with pytest.raises(ValueError, match="final pass"):
    sampling.SamplingConfig(max_draft_len=LD, trained_passes=2, latent=(1,))
  with pytest.raises(ValueError, match="selection"):
    sampling.SamplingConfig(max_draft_len=LD, trained_passes=2, selection="x")
  with pytest.raises(ValueError, match="out of range"):
    sampling.SamplingConfig(max_draft_len=LD, trained_passes=2, latent=(5,))


def test_decode_text():
  from data_pipelines import tokenizer as tok_lib

  tok = tok_lib.Tokenizer.train(["12*34", "+0408=0408", "0408"])
  ids = tok.encode("+0408=0408") + [EOS_ID]
  drafts = np.zeros((1, 2, 16), np.int32)
  drafts[0, 1, : len(ids)] = ids
  drafts[0, 1, len(ids)] = 25  # ignored: after EOS
  assert answers.decode_text(tok, drafts) == [["", "+0408=0408"]]


def test_majority_vote():
  votes = [
    ["12", "13", "12"],
    [None, None],
    ["a", "b"],  # a tie goes to the first answer seen
    [None, "7", None],
    ["x", "y", "y", "x", "y"],
  ]
  assert answers.majority_vote(votes) == ["12", None, "a", "7", "y"]
