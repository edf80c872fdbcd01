"""The BottomUp refiner: a deep encoder and a shallow decoder, run in passes.

Pass t = 0 ... T-1 (DESIGN §2):

    enc_in_t  = [question; d_{t-1}; z_{t-1}] + pass embedding e_t
    (H_t, z_t) = Encoder_deep(enc_in_t)        # z: M slots, z_{-1} learned
    d_t       ~ Decoder_shallow(. | [H_t; z_t])  # causal, cross-attends

Segments are marked by learned segment embeddings rather than BOS/SEP tokens,
and every digit token also gets a learned place-value embedding: its position
in its run of digits (numbers are written least-significant digit first, so
that position is the digit's significance).

Deep state carry (`carry`): `slots` passes z_t on as the next pass's slots;
`none` restarts from the learned slots every pass (ablation). Latent passes
write no tokens: the next pass reads `latent_proj(H_t)` over the draft
positions (a continuous draft) in place of the embedded tokens.

Training runs the passes with `nn.scan` (parameters shared by every pass,
each pass rematerialized when `remat`; the scan is unrolled when
`unroll_passes`) under teacher forcing, with optional corruption
of d_{t-1} and self-feeding (d_{t-1} replaced by the model's own greedy draft
of the previous pass, read from its teacher-forced logits). Question
dropout (`question_dropout`) trains the unconditional model that
classifier-free guidance needs at sampling time (bottomup/sampling.py).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bottomup.models import layers, transformer

PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
# Ids below this are specials (pad, bos, eos, unk, sep, draft markers) that
# corruption never writes (see data_pipelines.tokenizer).
FIRST_CONTENT_ID = 21


@dataclasses.dataclass(frozen=True)
class RefinerConfig:
  """Architecture of the refiner (see experiments/base.py for each field)."""

  vocab_size: int
  d_model: int = 128
  num_heads: int = 4
  mlp_dim: int = 512
  mlp_kind: str = "swiglu"
  num_encoder_layers: int = 4
  num_decoder_layers: int = 1
  num_slots: int = 8
  carry: str = "slots"
  max_passes: int = 16
  max_places: int = 32
  digit_ids: tuple[int, ...] = ()
  compute_dtype: str = "bfloat16"
  remat: bool = True
  unroll_passes: bool = True
  bptt_truncate: int = 0
  corrupt_prob: float = 0.0
  self_feed_prob: float = 0.0
  question_dropout: float = 0.0

  @property
  def stack(self) -> transformer.StackConfig:
    return transformer.stack_config(self)


def place_index(tokens: jax.Array, is_digit_table: jax.Array) -> jax.Array:
  """Position of each token in its digit run (1 = first digit; 0 = no digit).

  tokens: [..., L] -> int32 [..., L].
  """
  is_digit = jnp.asarray(is_digit_table)[tokens]
  idx = jnp.arange(tokens.shape[-1])
  last_other = jax.lax.cummax(
    jnp.where(is_digit, -1, idx), axis=tokens.ndim - 1
  )
  return jnp.where(is_digit, idx - last_other, 0).astype(jnp.int32)


def _embed_init(scale=1.0):
  return nn.initializers.normal(stddev=scale)


class Refiner(nn.Module):
  """Coarse-to-fine refiner. See the module docstring."""

  cfg: RefinerConfig

  def setup(self):
    c = self.cfg
    if c.carry not in ("slots", "none"):
      raise ValueError(f"carry must be slots|none, got {c.carry!r}")
    d = c.d_model
    self.token_embed = layers.Embed(c.vocab_size, d, ("vocab", "embed"))
    self.place_embed = layers.Embed(c.max_places + 1, d, (None, "embed"), 0.5)
    param = lambda name, shape, scale: self.param(
      name,
      nn.with_logical_partitioning(
        _embed_init(scale), (None,) * 1 + ("embed",)
      ),
      shape,
      jnp.float32,
    )
    # 0: question, 1: previous draft, 2: slots.
    self.segment_embed = param("segment_embed", (3, d), 0.5)
    self.pass_embed = param("pass_embed", (c.max_passes, d), 0.5)
    self.slot_init = param("slot_init", (c.num_slots, d), 1.0)
    stack = c.stack
    self.encoder = transformer.Encoder(stack, c.num_encoder_layers)
    self.decoder = transformer.Decoder(stack, c.num_decoder_layers)
    cd = jnp.dtype(c.compute_dtype)
    self.latent_proj = layers.Dense(d, ("embed", "embed_out"), cd)
    self.head = layers.Dense(c.vocab_size, ("embed", "vocab"), cd)
    table = np.zeros((c.vocab_size,), bool)
    table[list(c.digit_ids)] = True
    self.is_digit = table

  # -- Pieces shared by training and sampling --------------------------------

  def embed(self, tokens):
    """Token + place-value embedding. tokens [B, L] -> [B, L, D]."""
    places = jnp.minimum(
      place_index(tokens, self.is_digit), self.cfg.max_places
    )
    return self.token_embed(tokens) + self.place_embed(places)

  def embed_question(self, question):
    """question [B, Lq] -> (embedding [B, Lq, D], valid [B, Lq])."""
    return self.embed(question) + self.segment_embed[0], question != PAD_ID

  def embed_draft(self, draft):
    """A written draft as the next pass's input: ([B, Ld, D], [B, Ld])."""
    return self.embed(draft) + self.segment_embed[1], draft != PAD_ID

  def latent_draft(self, hidden):
    """A latent pass's continuous draft from its draft-position states."""
    emb = self.latent_proj(hidden) + self.segment_embed[1]
    return emb, jnp.ones(hidden.shape[:2], bool)

  def initial_slots(self, batch: int):
    return jnp.broadcast_to(self.slot_init, (batch, *self.slot_init.shape))

  def encode_pass(self, q_emb, q_valid, prev_emb, prev_valid, slots, t):
    """Runs the deep encoder for pass t.

    Returns:
      memory [B, Lq+Ld+M, D] (the decoder's cross-attention input), its mask,
      the draft-position states [B, Ld, D] and the new slots z_t [B, M, D].
    """
    c = self.cfg
    b, lq = q_emb.shape[:2]
    ld = prev_emb.shape[1]
    x = jnp.concatenate(
      [q_emb, prev_emb, slots + self.segment_embed[2]], axis=1
    )
    x = x + self.pass_embed[jnp.minimum(t, c.max_passes - 1)]
    valid = jnp.concatenate(
      [q_valid, prev_valid, jnp.ones((b, c.num_slots), bool)], axis=1
    )
    positions = jnp.broadcast_to(jnp.arange(x.shape[1]), x.shape[:2])
    h = self.encoder(layers.constrain(x), valid, positions)
    return h, valid, h[:, lq : lq + ld], h[:, lq + ld :]

  def decode_logits(self, target, memory, memory_mask):
    """Teacher-forced logits of `target` [B, Ld] -> [B, Ld, V] (float32)."""
    inputs = jnp.concatenate(
      [jnp.full_like(target[:, :1], BOS_ID), target[:, :-1]], axis=1
    )
    h = self.decoder(self.embed(inputs), memory, memory_mask)
    return self.head(h)

  def decode_step(self, token, pos, run, cache, cross_kv, memory_mask):
    """One decoder step for sampling.

    Args:
      token: [B] the previous token (BOS at pos 0).
      pos: [] its position.
      run: [B] digit-run length before `token` (for the place embedding).
      cache: the decoder's DecodeCache.
      cross_kv: `decoder.cross_kv(memory)`, computed once per pass.
      memory_mask: [B, S].

    Returns:
      logits [B, V], the new cache and the new run length.
    """
    run = jnp.where(jnp.asarray(self.is_digit)[token], run + 1, 0)
    places = jnp.minimum(run, self.cfg.max_places)
    x = self.token_embed(token) + self.place_embed(places)
    h, cache = self.decoder.step(x[:, None], pos, cache, cross_kv, memory_mask)
    return self.head(h[:, 0]), cache, run

  def cross_kv(self, memory):
    return self.decoder.cross_kv(memory)

  def init_cache(self, batch, length):
    return self.decoder.init_cache(batch, length)

  # -- Training forward --------------------------------------------------------

  def __call__(self, question, drafts, num_drafts, latent=None, train=False):
    """Teacher-forced logits of every pass.

    Args:
      question: int32 [B, Lq].
      drafts: int32 [B, T, Ld] (drafts + EOS, PAD-padded).
      num_drafts: int32 [B] (unused here: the loss masks padded passes).
      latent: bool [T], which passes are latent (default: none).
      train: enables corruption, self-feeding and question dropout (rng
        stream `noise`).

    Returns:
      float32 logits [B, T, Ld, V].
    """
    del num_drafts
    c = self.cfg
    b, t_len, _ = drafts.shape
    if latent is None:
      latent = jnp.zeros((t_len,), bool)
    latent = jnp.asarray(latent, bool)
    if train and c.question_dropout > 0:
      # Classifier-free guidance: some rows learn p(d | no question).
      drop = jax.random.bernoulli(
        self.make_rng("noise"), c.question_dropout, (b, 1)
      )
      question = jnp.where(drop, PAD_ID, question)
    q_emb, q_valid = self.embed_question(question)
    slots0 = self.initial_slots(b)
    prev = jnp.concatenate([jnp.zeros_like(drafts[:, :1]), drafts[:, :-1]], 1)
    xs = dict(
      t=jnp.arange(t_len),
      target=drafts.swapaxes(0, 1),
      prev=prev.swapaxes(0, 1),
      prev_latent=jnp.concatenate([jnp.zeros((1,), bool), latent[:-1]]),
    )
    ld = drafts.shape[2]
    carry = (
      slots0,
      jnp.zeros((b, ld, c.d_model), jnp.float32),
      jnp.zeros((b, ld), jnp.int32),
    )

    def body(mdl, carry, x, q_emb, q_valid, slots0):
      return mdl._train_pass(carry, x, q_emb, q_valid, slots0, train)

    if c.remat:
      body = nn.remat(body, prevent_cse=False)
    scan = nn.scan(
      body,
      variable_broadcast="params",
      split_rngs={"params": False, "noise": True},
      in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast),
      length=t_len,
      # Unrolled, XLA fuses and schedules across passes; as a loop the
      # step was 1.6x slower on CPU (benchmarks/train_throughput.py).
      unroll=t_len if c.unroll_passes else 1,
    )
    _, logits = scan(self, carry, xs, q_emb, q_valid, slots0)
    return logits.swapaxes(0, 1)

  def _train_pass(self, carry, x, q_emb, q_valid, slots0, train):
    c = self.cfg
    slots, latent_emb, own = carry
    t, prev = x["t"], x["prev"]
    if train and c.self_feed_prob > 0:
      coin = jax.random.bernoulli(
        self.make_rng("noise"), c.self_feed_prob, (prev.shape[0], 1)
      )
      prev = jnp.where(coin & (t > 0), own, prev)
    if train and c.corrupt_prob > 0:
      prev = corrupt(self.make_rng("noise"), prev, c.corrupt_prob, c.vocab_size)
    prev_emb, prev_valid = self.embed_draft(prev)
    lat_emb, lat_valid = latent_emb + self.segment_embed[1], True
    prev_emb = jnp.where(x["prev_latent"], lat_emb, prev_emb)
    prev_valid = jnp.where(x["prev_latent"], lat_valid, prev_valid)
    memory, mask, h_draft, new_slots = self.encode_pass(
      q_emb, q_valid, prev_emb, prev_valid, slots, t
    )
    logits = self.decode_logits(x["target"], memory, mask)
    if c.carry == "none":
      new_slots = slots0
    elif c.bptt_truncate > 0:
      cut = (t + 1) % c.bptt_truncate == 0
      new_slots = jnp.where(cut, jax.lax.stop_gradient(new_slots), new_slots)
    own = jnp.where(
      x["target"] != PAD_ID, jnp.argmax(logits, -1).astype(jnp.int32), PAD_ID
    )
    own = jax.lax.stop_gradient(own)
    new_latent = self.latent_proj(h_draft)
    return (new_slots, new_latent, own), logits


def corrupt(key, tokens, prob, vocab_size):
  """Token noise on a draft: substitution, deletion and insertion.

  Each content token (never PAD/EOS/specials) is independently substituted
  by a random content token, deleted, or preceded by an inserted random
  token, each with probability `prob`. Shapes stay fixed: deletions pad at
  the end, insertions push the tail right and cut it at the length.

  Args:
    key: a PRNG key.
    tokens: int32 [B, L].
    prob: probability of each kind of noise per token.
    vocab_size: random tokens are drawn from [FIRST_CONTENT_ID, vocab_size).

  Returns:
    int32 [B, L].
  """
  k_sub, k_del, k_ins, k_tok1, k_tok2 = jax.random.split(key, 5)
  b, length = tokens.shape
  content = tokens >= FIRST_CONTENT_ID
  rand = lambda k: jax.random.randint(
    k, tokens.shape, FIRST_CONTENT_ID, vocab_size
  )
  sub = jax.random.bernoulli(k_sub, prob, tokens.shape) & content
  tokens = jnp.where(sub, rand(k_tok1), tokens)
  delete = jax.random.bernoulli(k_del, prob, tokens.shape) & content
  insert = jax.random.bernoulli(k_ins, prob, tokens.shape) & content
  # Interleave [inserted_i, token_i] into 2L slots, mark the empty ones,
  # then move the kept slots to the front in order (a stable compaction).
  slots = jnp.stack([rand(k_tok2), tokens], axis=-1).reshape(b, 2 * length)
  keep = jnp.stack([insert, ~delete], axis=-1).reshape(b, 2 * length)
  idx = jnp.arange(2 * length)
  order = jnp.argsort(jnp.where(keep, idx, idx + 2 * length), axis=-1)
  packed = jnp.take_along_axis(slots, order, axis=-1)
  kept = jnp.take_along_axis(keep, order, axis=-1)
  return jnp.where(kept, packed, PAD_ID)[:, :length].astype(tokens.dtype)
