"""Tests of bottomup.steps (the loss), layers.mp_matmul and optim.decay_mask."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bottomup import optim, steps
from bottomup.models import layers
from bottomup.models.refiner import PAD_ID, Refiner, RefinerConfig

B, T, L, V = 2, 3, 4, 5


def _loss_case():
  """A hand-made batch: PADs, a padded pass, a latent pass, pass weights."""
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(B, T, L, V)).astype(np.float32) * 2.0
  drafts = np.array(
    [
      [[3, 4, 2, 0], [1, 2, 0, 0], [4, 4, 3, 2]],
      # Example 1 has one real draft: passes 1 and 2 are padding.
      [[2, 1, 3, 4], [3, 3, 0, 0], [1, 0, 0, 0]],
    ],
    np.int32,
  )
  num_drafts = np.array([3, 1], np.int32)
  latent = np.array([False, True, False])
  weights = np.array([0.5, 2.0, 1.5], np.float32)
  # Make some predictions right, so that accuracies are not all zero.
  # (Margins stay small, so that no cross-entropy is rounded to zero.)
  logits[0, 0, 0, 3] = logits[1, 0, 2, 3] = 5.0
  logits[:, 0, 1, PAD_ID] = 5.0  # ... but no pass-0 draft is all right.
  logits[0, 2] = np.clip(logits[0, 2], -2.0, 1.0)
  for i, tok in enumerate([4, 4, 3, 2]):  # Pass 2 of example 0: all right.
    logits[0, 2, i, tok] = 2.5
  return logits, drafts, num_drafts, latent, weights


def _numpy_loss(logits, drafts, num_drafts, latent, weights):
  """The loss and per-pass sums, by hand, in float64 numpy."""
  x = logits.astype(np.float64)
  logp = x - x.max(-1, keepdims=True)
  logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
  total, n_valid = 0.0, 0.0
  ce_sum, tokens, correct = np.zeros(T), np.zeros(T), np.zeros(T)
  seq_correct, seqs = np.zeros(T), np.zeros(T)
  for b in range(B):
    for t in range(T):
      if t >= num_drafts[b] or latent[t]:
        continue
      n_tok, n_right = 0, 0
      for i in range(L):
        tok = drafts[b, t, i]
        if tok == PAD_ID:
          continue
        ce = -logp[b, t, i, tok]
        total += weights[t] * ce
        n_valid += 1
        ce_sum[t] += ce
        tokens[t] += 1
        n_tok += 1
        n_right += int(np.argmax(x[b, t, i]) == tok)
      correct[t] += n_right
      if n_tok:
        seqs[t] += 1
        seq_correct[t] += n_right == n_tok
  metrics = dict(
    ce_sum=ce_sum,
    tokens=tokens,
    scored=tokens,  # without token weights every counted token is scored
    correct=correct,
    seq_correct=seq_correct,
    seqs=seqs,
  )
  return total / n_valid, metrics


def test_pass_loss_matches_numpy():
  case = _loss_case()
  loss, metrics = steps.pass_loss(*map(jnp.asarray, case))
  want_loss, want = _numpy_loss(*case)
  np.testing.assert_allclose(float(loss), want_loss, rtol=1e-6)
  assert set(metrics) == set(want)
  for k, v in want.items():
    np.testing.assert_allclose(np.asarray(metrics[k]), v, rtol=1e-6, err_msg=k)
  # The case exercises every mask: pass 1 is latent (nothing counts), pass 2
  # counts example 0 only, and PADs are skipped (11 tokens of 24 count).
  np.testing.assert_array_equal(want["tokens"], [7, 0, 4])
  np.testing.assert_array_equal(want["seq_correct"], [0, 0, 1])


def test_loss_mask_by_hand():
  _, drafts, num_drafts, latent, _ = _loss_case()
  mask = np.asarray(steps.loss_mask(drafts, num_drafts, latent))
  want = np.zeros((B, T, L), np.float32)
  want[0, 0, :3] = 1  # PAD at the end of pass 0
  want[0, 2, :] = 1  # pass 1 is latent; pass 2 has no PAD
  want[1, 0, :] = 1  # example 1: passes 1 and 2 are padding
  np.testing.assert_array_equal(mask, want)


def test_pass_loss_no_valid_tokens_is_zero():
  logits, drafts, _, latent, weights = _loss_case()
  loss, metrics = steps.pass_loss(
    logits, drafts, np.zeros((B,), np.int32), latent, weights
  )
  assert float(loss) == 0.0
  assert float(metrics["tokens"].sum()) == 0.0


def test_summarize_divides_per_pass_sums():
  case = _loss_case()
  loss, metrics = steps.pass_loss(*map(jnp.asarray, case))
  out = steps.summarize(dict(metrics, loss=loss, grad_norm=jnp.float32(3.0)))
  _, want = _numpy_loss(*case)
  assert "loss_pass1" not in out  # latent: no tokens
  np.testing.assert_allclose(
    out["loss_pass2"], want["ce_sum"][2] / want["tokens"][2], rtol=1e-6
  )
  assert out["token_acc_pass2"] == 1.0
  assert out["seq_acc_pass2"] == 1.0
  assert out["grad_norm"] == 3.0


# -- mp_matmul ----------------------------------------------------------------


def _matmul_case(x_dtype, w_dtype, w_shape=(5, 6)):
  kx, kw, kg = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, (3, 4, 5), jnp.float32).astype(x_dtype)
  w = jax.random.normal(kw, w_shape, jnp.float32).astype(w_dtype)
  g = jax.random.normal(kg, (3, 4, *w_shape[1:]), jnp.float32)
  return x, w, g


def _reference(x, w):
  x = x.astype(jnp.float32)
  w = w.astype(jnp.float32)
  return jnp.tensordot(x, w, axes=1, precision=jax.lax.Precision.HIGHEST)


def _value_and_grads(fn, x, w, g):
  out, vjp = jax.vjp(fn, x, w)
  return out, *vjp(g)


@pytest.mark.parametrize("w_shape", [(5, 6), (5, 2, 3)])
def test_mp_matmul_float32_equals_matmul(w_shape):
  x, w, g = _matmul_case(jnp.float32, jnp.float32, w_shape)
  out, dx, dw = _value_and_grads(
    lambda a, b: layers.mp_matmul(a, b, "float32"), x, w, g
  )
  ref, rdx, rdw = _value_and_grads(_reference, x, w, g)
  assert out.shape == ref.shape == (3, 4, *w_shape[1:])
  assert out.dtype == jnp.float32
  for got, want in [(out, ref), (dx, rdx), (dw, rdw)]:
    assert got.dtype == want.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def _rel_err(got, want):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return np.linalg.norm(got - want) / np.linalg.norm(want)


@pytest.mark.parametrize("w_shape", [(5, 6), (5, 2, 3)])
def test_mp_matmul_bfloat16_close_to_matmul(w_shape):
  x, w, g = _matmul_case(jnp.float32, jnp.float32, w_shape)
  fn = lambda a, b: layers.mp_matmul(a, b, jnp.bfloat16)
  out, dx, dw = _value_and_grads(fn, x, w, g)
  ref, rdx, rdw = _value_and_grads(_reference, x, w, g)
  assert out.dtype == dx.dtype == dw.dtype == jnp.float32
  for got, want in [(out, ref), (dx, rdx), (dw, rdw)]:
    assert _rel_err(got, want) < 1e-2
  # bf16 really is used: the result differs from the float32 one.
  assert not np.allclose(out, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
  "x_dtype, w_dtype",
  [
    (jnp.bfloat16, jnp.float32),
    (jnp.float32, jnp.bfloat16),
    (jnp.bfloat16, jnp.bfloat16),
  ],
)
@pytest.mark.parametrize("compute_dtype", ["float32", "bfloat16"])
def test_mp_matmul_gradient_dtypes_follow_inputs(
  x_dtype, w_dtype, compute_dtype
):
  x, w, g = _matmul_case(x_dtype, w_dtype)
  out, dx, dw = _value_and_grads(
    lambda a, b: layers.mp_matmul(a, b, compute_dtype), x, w, g
  )
  assert out.dtype == jnp.float32  # float32 accumulation
  assert dx.dtype == x_dtype
  assert dw.dtype == w_dtype
  _, rdx, rdw = _value_and_grads(_reference, x, w, g)
  assert _rel_err(dx, rdx) < 1e-2
  assert _rel_err(dw, rdw) < 1e-2


def test_mp_matmul_jit_and_grad_of_loss():
  x, w, _ = _matmul_case(jnp.float32, jnp.float32)
  loss = lambda a, b: jnp.sum(jnp.sin(layers.mp_matmul(a, b, "float32")))
  ref = lambda a, b: jnp.sum(jnp.sin(_reference(a, b)))
  got = jax.jit(jax.grad(loss, argnums=(0, 1)))(x, w)
  want = jax.grad(ref, argnums=(0, 1))(x, w)
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# -- decay_mask ---------------------------------------------------------------


def _paths(tree):
  return {
    "/".join(str(getattr(k, "key", k)) for k in path): leaf
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
  }


def test_decay_mask_by_hand():
  z = np.zeros
  params = {
    "dense": {"kernel": z((4, 3)), "bias": z((3,))},
    "attn": {"query": {"kernel": z((4, 2, 2))}},
    "norm": {"scale": z((4,))},
    "token_embed": {"embedding": z((10, 4))},
    "pass_embed": z((6, 4)),
    "segment_embed": z((3, 4)),
    "slot_init": z((2, 4)),
  }
  mask = _paths(optim.decay_mask(params))
  assert mask == {
    "dense/kernel": True,
    "dense/bias": False,
    "attn/query/kernel": True,
    "norm/scale": False,
    "token_embed/embedding": False,
    "pass_embed": False,
    "segment_embed": False,
    "slot_init": False,
  }


def test_decay_mask_on_refiner_params():
  cfg = RefinerConfig(
    vocab_size=30,
    d_model=16,
    num_heads=2,
    mlp_dim=32,
    num_encoder_layers=1,
    num_slots=2,
    compute_dtype="float32",
    digit_ids=tuple(range(21, 30)),
  )
  q = jnp.zeros((1, 3), jnp.int32)
  d = jnp.zeros((1, 2, 4), jnp.int32)
  params = jax.eval_shape(
    lambda: flax.linen.meta.unbox(
      Refiner(cfg).init(
        {"params": jax.random.key(0)}, q, d, jnp.ones((1,), jnp.int32)
      )["params"]
    )
  )
  mask = _paths(optim.decay_mask(params))
  shapes = _paths(params)
  decayed = {p for p, m in mask.items() if m}
  not_decayed = set(mask) - decayed
  assert decayed and not_decayed
  for p in decayed:
    assert p.endswith("kernel"), p
    assert len(shapes[p].shape) >= 2, p
  for p in not_decayed:
    assert "embed" in p or "slot_init" in p or len(shapes[p].shape) < 2, p
  for name in (
    "token_embed/embedding",
    "place_embed/embedding",
    "pass_embed",
    "segment_embed",
    "slot_init",
  ):
    assert mask[name] is False, name
  assert any(p.endswith("scale") for p in not_decayed)  # RMSNorm scales
  assert all(mask[p] for p in mask if p.endswith("kernel"))
