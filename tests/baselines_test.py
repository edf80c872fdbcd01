"""Tests of the baselines: the causal LM (ar_*) and masked diffusion (mdlm)."""

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from bottomup import generate, sampling, steps
from bottomup.models import causal_lm, count_params, get_model, mdlm
from bottomup.models.refiner import EOS_ID, PAD_ID
from bottomup.train_state import TrainState
from data_pipelines import batching, tasks, views
from data_pipelines import tokenizer as tok_lib

B, LQ, LD, V = 3, 6, 7, 40
DIGITS = tuple(range(21, 31))
SMALL = dict(
  vocab_size=V,
  d_model=32,
  num_heads=2,
  mlp_dim=64,
  num_layers=2,
  compute_dtype="float32",
  remat=False,
  digit_ids=DIGITS,
)


def _inputs(key=1):
  k1, k2 = jax.random.split(jax.random.key(key))
  question = jax.random.randint(k1, (B, LQ), 21, V)
  # Rows of different lengths: PAD at the end of the question.
  question = question.at[0, 4:].set(PAD_ID).at[1, 5:].set(PAD_ID)
  target = jax.random.randint(k2, (B, 1, LD), 21, V)
  return question, target, jnp.ones((B,), jnp.int32)


def _init(model, question, target, n):
  variables = jax.jit(model.init)(
    {"params": jax.random.key(0)}, question, target, n
  )
  return flax.linen.meta.unbox(variables["params"])


@pytest.fixture(scope="module")
def lm():
  model = causal_lm.CausalLM(causal_lm.CausalLMConfig(**SMALL))
  return model, _init(model, *_inputs())


@pytest.fixture(scope="module")
def diffusion():
  model = mdlm.Mdlm(mdlm.MdlmConfig(**SMALL))
  return model, _init(model, *_inputs())


def _zero_head(params):
  params = jax.tree.map(lambda x: x, params)
  params["head"]["kernel"] = jnp.zeros_like(params["head"]["kernel"])
  return params


# -- Causal LM -----------------------------------------------------------------


def test_causal_lm_loss_by_hand(lm):
  """With a zero output head every token costs exactly log V."""
  model, params = lm
  q, d, n = _inputs()
  d = d.at[0, 0, 5:].set(PAD_ID)  # padding does not count
  batch = dict(question=q, drafts=d, num_drafts=n)
  loss, m = steps.batch_loss(
    model, _zero_head(params), batch, np.zeros(1, bool), np.ones(1), False
  )
  np.testing.assert_allclose(loss, np.log(V), rtol=1e-6)
  assert float(m["tokens"].sum()) == B * LD - 2


def test_causal_lm_is_causal(lm):
  model, params = lm
  q, d, n = _inputs()
  base = model.apply({"params": params}, q, d, n)
  changed = model.apply({"params": params}, q, d.at[:, :, 4].set(21), n)
  # Logits at position i read targets < i: positions <= 4 are unchanged.
  np.testing.assert_allclose(base[:, :, :5], changed[:, :, :5], atol=1e-6)
  assert not np.allclose(base[:, :, 5:], changed[:, :, 5:])


def test_question_padding_is_invisible(lm):
  """A row computes the same with more PAD after its question."""
  model, params = lm
  q, d, n = _inputs()
  wide = jnp.pad(q, ((0, 0), (0, 3)))
  a = model.apply({"params": params}, q, d, n)
  b = model.apply({"params": params}, wide, d, n)
  np.testing.assert_allclose(a, b, atol=1e-5)


def test_kv_cache_steps_match_full_forward(lm):
  """Prefill + one cached step per token gives the teacher-forced logits."""
  model, params = lm
  q, d, n = _inputs()
  full = model.apply({"params": params}, q, d, n)[:, 0]
  apply = lambda *a, **k: model.apply({"params": params}, *a, **k)
  cache, q_len = apply(q, LD, method="prefill")
  token = jnp.full((B,), 1, jnp.int32)  # BOS
  run = jnp.zeros((B,), jnp.int32)
  for j in range(LD):
    logits, cache, run = apply(
      token, j, run, cache, q != PAD_ID, q_len, method="decode_step"
    )
    np.testing.assert_allclose(logits, full[:, j], atol=1e-5, rtol=1e-5)
    token = d[:, 0, j]


def test_generate_with_and_without_cache_agree(lm):
  model, params = lm
  q, _, _ = _inputs()
  cfg = sampling.SamplingConfig(max_draft_len=LD, trained_passes=1)
  a = generate.generate(model, params, q, cfg, jax.random.key(0))
  nocache = sampling.SamplingConfig(
    max_draft_len=LD, trained_passes=1, kv_cache=False
  )
  b = generate.generate(model, params, q, nocache, jax.random.key(0))
  np.testing.assert_array_equal(a.drafts, b.drafts)
  np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-5)
  assert a.drafts.shape == (B, 1, LD)


def test_generate_keeps_the_most_likely_of_n_samples(lm, monkeypatch):
  """Same candidates, two selections: the likelihood one keeps the best."""
  model, params = lm
  q, _, n = _inputs()
  monkeypatch.setitem(
    sampling.SELECTIONS, "least_likely", lambda cands, _, cfg: -cands.logprob
  )
  out = {}
  for sel in ("likelihood", "least_likely"):
    cfg = sampling.SamplingConfig(
      max_draft_len=LD,
      trained_passes=1,
      temperature=1.5,
      num_samples=6,
      selection=sel,
    )
    out[sel] = generate.generate(model, params, q, cfg, jax.random.key(3))
  best, worst = out["likelihood"], out["least_likely"]
  assert np.all(np.asarray(best.scores) >= np.asarray(worst.scores))
  assert np.any(np.asarray(best.scores) > np.asarray(worst.scores) + 1e-3)
  # The score is the kept draft's log-likelihood under the model.
  drafts = best.drafts
  logits = model.apply({"params": params}, q, drafts, n)[:, 0]
  logp = jax.nn.log_softmax(logits, axis=-1)
  tok = drafts[:, 0]
  ll = jnp.take_along_axis(logp, tok[..., None], -1)[..., 0]
  # Tokens up to and including EOS count.
  upto = jnp.cumsum(tok == EOS_ID, axis=1) - (tok == EOS_ID) == 0
  want = jnp.where(upto & (tok != PAD_ID), ll, 0.0).sum(1)
  np.testing.assert_allclose(best.scores[:, 0], want, rtol=1e-4, atol=1e-4)


# -- Masked diffusion ------------------------------------------------------------


def test_mdlm_loss_at_full_masking_is_cross_entropy(diffusion, monkeypatch):
  """t = 1: every position masked, weight 1, loss = plain mean CE."""
  model, params = diffusion
  q, d, n = _inputs()
  monkeypatch.setattr(mdlm, "stratified_times", lambda key, b: jnp.ones(b))
  batch = dict(question=q, drafts=d, num_drafts=n)
  loss, m = steps.batch_loss(
    model, params, batch, np.zeros(1, bool), np.ones(1), False
  )
  x_t = jnp.full((B, LD), model.cfg.mask_id, jnp.int32)
  logits = model.apply({"params": params}, q, x_t, method="denoise")
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, d[:, 0])
  np.testing.assert_allclose(loss, ce.mean(), rtol=1e-5)
  assert float(m["scored"].sum()) == B * LD


def test_mdlm_weights_are_inverse_time_on_masked_positions(diffusion):
  model, params = diffusion
  q, d, n = _inputs()
  _, w = model.apply({"params": params}, q, d, n, train=False)
  w = np.asarray(w)[:, 0]
  t = np.asarray(
    mdlm.stratified_times(jax.random.split(jax.random.key(0))[0], B)
  )
  for b in range(B):
    nz = w[b][w[b] > 0]
    np.testing.assert_allclose(nz, 1.0 / t[b], rtol=1e-6)
  # Stratified: one t per stratum [b/B, (b+1)/B).
  assert sorted(np.floor(t * B).astype(int)) == list(range(B))


def test_mdlm_loss_by_hand_with_zero_head(diffusion):
  """Zero head: loss = log V * sum_b (masked_b / t_b) / (B * Ld)."""
  model, params = diffusion
  q, d, n = _inputs()
  batch = dict(question=q, drafts=d, num_drafts=n)
  loss, _ = steps.batch_loss(
    model, _zero_head(params), batch, np.zeros(1, bool), np.ones(1), False
  )
  _, w = model.apply({"params": params}, q, d, n, train=False)
  want = np.log(V) * np.asarray(w).sum() / (B * LD)
  np.testing.assert_allclose(loss, want, rtol=1e-5)


def test_diffusion_writes_every_position_and_pads_after_eos(diffusion):
  model, params = diffusion
  q, _, _ = _inputs()
  for order in ("random", "confidence"):
    cfg = sampling.SamplingConfig(
      max_draft_len=LD,
      trained_passes=1,
      diffusion_steps=3,
      unmask_order=order,
    )
    out = np.asarray(
      generate.diffuse(model, params, q, cfg, jax.random.key(0)).drafts
    )
    assert out.shape == (B, 1, LD)
    assert np.all(out < V)  # no MASK left
    for row in out[:, 0]:
      eos = np.flatnonzero(row == EOS_ID)
      if eos.size:
        assert np.all(row[eos[0] + 1 :] == PAD_ID)


def test_after_eos_to_pad():
  x = jnp.array([[5, EOS_ID, 7, EOS_ID], [5, 6, 7, 8]])
  np.testing.assert_array_equal(
    generate.after_eos_to_pad(x), [[5, EOS_ID, 0, 0], [5, 6, 7, 8]]
  )


# -- Overfitting one batch -------------------------------------------------------


def _task_batch(view, num=8):
  task = tasks.get_task("multiplication_3x3")
  trajs = list(task.trajectories("train", scheme="scale", num=num, seed=0))
  texts = [t.question for t in trajs] + [d for t in trajs for d in t.drafts]
  tok = tok_lib.Tokenizer.train(texts, model_type="char")
  trajs = [views.view_trajectory(task, t, view) for t in trajs]
  shapes = batching.Shapes(
    max_question_len=max(len(tok.encode(t.question)) for t in trajs),
    max_draft_len=max(len(tok.encode(t.drafts[0])) for t in trajs) + 1,
    max_drafts=1,
  )
  batch, counts = batching.encode_trajectories(trajs, tok, shapes, "reject")
  assert counts.total() == 0
  return task, trajs, jax.tree.map(jnp.asarray, batch), tok


@pytest.mark.parametrize(
  "name", ["ar_nocot", "ar_cot", "ar_trajectory", "mdlm"]
)
def test_each_baseline_overfits_one_batch(name):
  """Trained on 8 problems, greedy sampling writes all 8 exactly."""
  from bottomup.models import default_view

  task, trajs, batch, tok = _task_batch(default_view(name))
  cfg = ml_collections.ConfigDict(
    dict(SMALL, name=name, d_model=64, mlp_dim=128, num_heads=4)
  )
  model = get_model(cfg, tok.vocab_size, tok.digit_ids)
  params = _init(model, batch["question"], batch["drafts"], batch["num_drafts"])
  state = TrainState.create(params, optax.adam(3e-3), jax.random.key(1))
  step = jax.jit(steps.make_train_step(model, np.ones(1, np.float32)))
  latent = np.zeros(1, bool)
  scfg = sampling.SamplingConfig(
    max_draft_len=batch["drafts"].shape[2], trained_passes=1
  )
  sampler = jax.jit(generate.make_sampler(model, scfg))
  solved = 0
  for i in range(400):
    state, m = step(state, batch, latent)
    if i % 50 == 49:
      out = sampler(state.params, batch["question"], jax.random.key(0))
      got = np.asarray(out.drafts)[:, 0]
      solved = sum(
        task.verify(tok.decode(row), t.answer) for row, t in zip(got, trajs)
      )
      if solved == len(trajs) and np.array_equal(
        got, np.asarray(batch["drafts"])[:, 0]
      ):
        break
  assert solved == len(trajs), (name, i, float(m["loss"]))


# -- Parameter matching ----------------------------------------------------------


@pytest.mark.parametrize("name", ["ar_cot", "mdlm"])
def test_match_params_to_the_refiner(name):
  cfg = ml_collections.ConfigDict(
    dict(
      name="refiner",
      d_model=64,
      num_heads=4,
      mlp_dim=256,
      mlp_kind="relu",
      num_encoder_layers=3,
      num_decoder_layers=1,
      num_layers=0,
      num_slots=4,
      digit_ids=(),
      match_params="",
    )
  )
  ref = count_params(get_model(cfg, V), (6, 2, 8))
  cfg.name, cfg.match_params = name, "refiner"
  matched = count_params(get_model(cfg, V), (6, 1, 8))
  cfg.match_params = ""
  plain = count_params(get_model(cfg, V), (6, 1, 8))
  # One MLP unit per layer is 2 * d_model * depth parameters.
  assert abs(matched - ref) <= 8 * 2 * 64 * 4, (matched, ref)
  assert abs(matched - ref) < abs(plain - ref)
