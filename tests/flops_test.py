"""bottomup.flops: matmul FLOPs from a jaxpr, and the sampling estimate."""

import types

import jax
import jax.numpy as jnp
import numpy as np

from bottomup import flops
from data_pipelines.batching import Shapes


def test_matmul_flops_counts_dots_and_scans():
  a, b = jnp.ones((8, 16)), jnp.ones((16, 4))
  assert flops.matmul_flops(lambda a, b: a @ b, a, b) == 2 * 8 * 16 * 4

  def scanned(a, b):
    def body(c, _):
      return c, c @ b

    return jax.lax.scan(body, a, None, length=5)[1]

  assert flops.matmul_flops(scanned, a, b) == 5 * 2 * 8 * 16 * 4
  # Batched: einsum over a batch dimension.
  x, y = jnp.ones((3, 8, 16)), jnp.ones((3, 16, 4))
  f = lambda x, y: jnp.einsum("bij,bjk->bik", x, y)  # noqa: E731
  assert flops.matmul_flops(f, x, y) == 3 * 2 * 8 * 16 * 4


def _params(enc, dec, head, embed):
  return {
    "encoder": {"w": np.zeros((enc,))},
    "decoder": {"w": np.zeros((dec,))},
    "head": {"w": np.zeros((head,))},
    "token_embed": {"w": np.zeros((embed,))},
  }


def _cfg(**kw):
  base = dict(
    num_samples=1,
    guidance=1.0,
    trained_passes=4,
    extra_passes=0,
    beam_width=1,
    diffusion_steps=0,
  )
  return types.SimpleNamespace(**(base | kw))


def test_sampling_flops_by_hand():
  shapes = Shapes(max_question_len=10, max_draft_len=20, max_drafts=4)
  p = _params(enc=1000, dec=300, head=100, embed=50)
  per_pass = 2 * 1000 * (10 + 20 + 4) + 2 * (300 + 100) * 20
  est = lambda **kw: flops.sampling_flops(  # noqa: E731
    "refiner", p, _cfg(**kw), shapes, num_slots=4
  )
  assert est() == 4 * per_pass
  assert est(extra_passes=2) == 6 * per_pass
  # n samples: the encoder once per pass, the decoder n times.
  assert est(num_samples=3) == 4 * (per_pass + 2 * 2 * 400 * 20)
  assert est(guidance=2.0) == 2 * est()
  assert est(beam_width=2) == 2 * est()
  prm = {"encoder": {"w": np.zeros((70,))}, "embed": {"w": np.zeros((9,))}}
  with_prm = flops.sampling_flops(
    "refiner", p, _cfg(num_samples=2), shapes, num_slots=4, prm_params=prm
  )
  assert with_prm == est(num_samples=2) + 4 * 2 * 2 * 70 * 30
  # Left to right with a KV cache: every position once, embeddings free.
  ar = flops.sampling_flops("ar_cot", p, _cfg(), shapes)
  assert ar == 2 * (1000 + 300 + 100) * 30
  assert flops.sampling_flops("ar_cot", p, _cfg(), shapes, num_votes=3) == (
    3 * ar
  )
  # Masked diffusion: the whole network once per denoising step.
  assert flops.sampling_flops("mdlm", p, _cfg(diffusion_steps=8), shapes) == (
    8 * ar
  )
  assert flops.sampling_flops("mdlm", p, _cfg(), shapes) == 20 * ar
