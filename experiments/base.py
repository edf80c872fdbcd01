"""Base config: every field of every group, with its default.

Experiment files import `get_config()` from here and override only what
differs. Do not launch this file directly; see experiments/multiplication.py.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """The defaults shared by every experiment."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # Seeds parameters, noise and the generated data stream.

  c.data = ml_collections.ConfigDict()
  c.data.task = "multiplication_4x4"  # Task name (data_pipelines.tasks).
  c.data.scheme = ""  # Coarsening scheme; "" = the task's default.
  # "generator": stream a generated task (no files); "prepared": read a
  # dataset made by `python -m data_pipelines.prepare` from `data_dir`.
  c.data.source = "generator"
  c.data.data_dir = ""  # Prepared datasets root (source=prepared).
  c.data.max_question_len = 0  # Lq; 0 = from the data.
  c.data.max_draft_len = 0  # Ld incl. EOS; 0 = from the data.
  c.data.max_drafts = 0  # T; 0 = from the data.
  c.data.overlength = "truncate"  # "truncate" (and count) or "reject".
  # What the model writes (data_pipelines.views): trajectory | checked |
  # final | concat | answer; "" = the model's own (bottomup.models).
  # `checked` adds a final check pass, for extra passes at test time.
  c.data.view = ""
  # Generated trajectories the char tokenizer is trained on (generator).
  c.data.tokenizer_examples = 2000
  # Train on the first N training problems only, in epochs (0 = the whole
  # stream or split): data-scarce runs, e.g. before bootstrap rounds.
  c.data.train_examples = 0
  # Share of training questions that carry their answer as a hint
  # ("question <sep> answer"): a model that saw hints can rationalize a
  # failed problem in the bootstrap rounds (0 = no hints).
  c.data.hint_prob = 0.0

  c.model = ml_collections.ConfigDict()
  # Model registry name (bottomup.models): refiner, or a baseline: ar_nocot,
  # ar_cot, ar_trajectory, mdlm.
  c.model.name = "refiner"
  # Set this model's MLP width so that its parameter count matches the
  # named model's under this config ("" = off), e.g. "refiner".
  c.model.match_params = ""
  c.model.d_model = 128  # Width of every block.
  c.model.num_heads = 4  # Attention heads (head dim = d_model / heads).
  c.model.mlp_dim = 512  # MLP hidden width.
  c.model.mlp_kind = "gelu"  # "gelu" or "swiglu".
  c.model.num_encoder_layers = 4  # Deep bidirectional encoder.
  c.model.num_decoder_layers = 1  # Shallow causal decoder.
  # Baselines' depth; 0 = num_encoder_layers + num_decoder_layers.
  c.model.num_layers = 0
  c.model.num_slots = 8  # M latent slots carried from pass to pass.
  c.model.carry = "slots"  # "slots" or "none" (ablation).
  c.model.max_passes = 16  # Pass embeddings (extra passes reuse the last).
  c.model.max_places = 32  # Place-value embedding size (digit positions).
  c.model.compute_dtype = "bfloat16"  # Matmul inputs; accumulation is f32.
  c.model.remat = True  # Rematerialize each pass in the backward pass.
  # Unroll the scan over passes: XLA then fuses and schedules across passes
  # (1.6x faster train step on CPU); False keeps one loop body, which
  # compiles faster when there are many passes.
  c.model.unroll_passes = True
  c.model.bptt_truncate = 0  # Stop gradients through the carry every k.
  c.model.corrupt_prob = 0.0  # Token substitution noise on d_{t-1}.
  c.model.self_feed_prob = 0.0  # Feed the model's own d_{t-1} w.p. p.
  c.model.latent_passes = 0  # The first k passes write no tokens.
  # Classifier-free guidance: drop the question of this share of training
  # rows (p_uncond); decode with --config.sampling.guidance=w.
  c.model.question_dropout = 0.0

  c.optim = ml_collections.ConfigDict()
  c.optim.learning_rate = 3e-3  # Peak learning rate.
  c.optim.warmup_steps = 100  # Linear warmup.
  c.optim.final_lr_frac = 0.05  # Cosine decays to this fraction of peak.
  c.optim.b1 = 0.9  # Adam beta1.
  c.optim.b2 = 0.98  # Adam beta2.
  c.optim.eps = 1e-8  # Adam epsilon.
  c.optim.weight_decay = 0.01  # AdamW decay (matrices only).
  c.optim.grad_clip_norm = 1.0  # Global-norm clipping.
  c.optim.grad_accum_steps = 1  # Micro-batches per optimizer update.

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 128  # Global batch (all processes together).
  c.train.num_steps = 2000  # Training steps.
  c.train.log_every = 50  # Metrics (and the NaN check) every k steps.
  c.train.checkpoint_every = 250  # Checkpoint interval in steps.
  c.train.keep_checkpoints = 2  # Checkpoints kept on disk.
  c.train.async_checkpoint = True  # Write checkpoints in the background.
  c.train.pass_weights = ()  # Loss weight per pass; () = all 1.
  # Latent curriculum: one more pass turns latent every k steps, up to
  # model.latent_passes (0 = all latent passes from the start).
  c.train.latent_curriculum_steps = 0
  c.train.progress_bar = True  # One-line progress on local runs.
  # TensorBoard event files beside metrics.jsonl (the writer imports
  # TensorFlow: about 4 s of start-up).
  c.train.tensorboard = True

  c.eval = ml_collections.ConfigDict()
  c.eval.every_steps = 500  # Periodic eval on the valid split.
  c.eval.num_examples = 512  # Valid problems per periodic eval.
  c.eval.batch_size = 256  # Problems per sampler call.
  c.eval.final_split = "test"  # Split of the final eval (never tuned on).
  c.eval.final_num_examples = 1000  # Problems in the final eval.
  c.eval.show_trajectories = 1  # Sample trajectories printed at the end.

  c.sampling = ml_collections.ConfigDict()
  c.sampling.temperature = 0.0  # 0 = greedy.
  c.sampling.top_k = 0  # 0 = off.
  c.sampling.top_p = 1.0  # 1 = off.
  c.sampling.num_samples = 1  # Samples per pass, best kept by likelihood.
  c.sampling.extra_passes = 0  # Re-apply the last pass up to k times.
  # Self-consistency: solve each problem k times, majority-vote the final
  # answers (use with temperature > 0; 1 = off).
  c.sampling.num_votes = 1
  # Masked diffusion: denoiser calls per draft (0 = one per position) and
  # unmasking order: "random" (ancestral) or "confidence".
  c.sampling.diffusion_steps = 0
  c.sampling.unmask_order = "random"
  # Classifier-free guidance weight w (refiner): logits = l_uncond +
  # w * (l_cond - l_uncond); 1 = off. Needs model.question_dropout > 0.
  c.sampling.guidance = 1.0
  # How the samples of a pass are ranked: "likelihood", "prm" (a process
  # reward model trained by `python -m bottomup.prm`, read from prm_dir,
  # default WORKDIR/prm) or "prm_likelihood" (log-likelihood + log PRM
  # probability).
  c.sampling.selection = "likelihood"
  c.sampling.prm_dir = ""
  # Drafts kept per question after each pass (beam over drafts; 1 = one).
  c.sampling.beam_width = 1

  # Bootstrap rounds (STaR, bottomup/bootstrap.py): after supervised
  # training, each round samples solutions of unsolved training questions,
  # keeps the verified ones and fine-tunes on them.
  c.bootstrap = ml_collections.ConfigDict()
  c.bootstrap.rounds = 0  # Rounds after supervised training (0 = off).
  # A finished training workdir to start from instead of training one.
  c.bootstrap.init_workdir = ""
  # Unsolved questions: the training problems after the first
  # data.train_examples (their solutions are never read, only answers).
  c.bootstrap.num_questions = 1000
  # k solutions sampled per question; 0 = the control: the rounds fine-tune
  # on the supervised examples only (tells self-training from more steps).
  c.bootstrap.samples_per_question = 4
  c.bootstrap.temperature = 0.7  # Sampling temperature of the rounds.
  c.bootstrap.top_p = 0.95  # Nucleus sampling of the rounds (1 = off).
  # Distinct verified solutions kept per question.
  c.bootstrap.keep_per_question = 1
  # Retry failed questions with the answer as a hint (needs
  # data.hint_prob > 0); verified ones are kept without the hint.
  c.bootstrap.rationalize = True
  # Fine-tune each round from "base" (the supervised model; STaR) or
  # "previous" (the last round's model).
  c.bootstrap.finetune_from = "base"
  c.bootstrap.steps_per_round = 500  # Fine-tuning steps per round.
  # Also train on the supervised examples in the rounds.
  c.bootstrap.include_supervised = True
  # Valid evaluations inside each stage (supervised and every round's
  # fine-tuning) every this many steps, for learning curves; 0 = only the
  # stage's final one.
  c.bootstrap.stage_eval_every = 0

  # Process reward model (bottomup/prm.py; `python -m bottomup.prm`):
  # Monte-Carlo values of the refiner's drafts and a small scorer.
  c.prm = ml_collections.ConfigDict()
  c.prm.num_problems = 1000  # Training problems rolled out.
  # Trajectories sampled per problem: >= 2 gives the PRM drafts of the same
  # question that are worth different amounts (see bottomup/prm.py).
  c.prm.samples_per_problem = 2
  c.prm.valid_problems = 200  # Valid problems rolled out (calibration).
  c.prm.rollouts = 4  # Continuations per draft (its Monte-Carlo value).
  c.prm.temperature = 0.7  # Sampling temperature of the rollouts.
  c.prm.top_p = 0.95  # Nucleus sampling of the rollouts (1 = off).
  c.prm.steps = 1000  # PRM training steps (at most: see holdout_fraction).
  # Training problems held out (all their drafts); the parameters with the
  # lowest held-out loss, checked every `eval_every` steps, are kept.
  c.prm.holdout_fraction = 0.2
  c.prm.eval_every = 25
  c.prm.batch_size = 256  # Drafts per PRM step.
  c.prm.learning_rate = 1e-3  # AdamW peak learning rate.
  c.prm.d_model = 128  # PRM width.
  c.prm.num_heads = 4  # PRM heads.
  c.prm.mlp_dim = 256  # PRM MLP width.
  c.prm.num_layers = 2  # PRM encoder depth.
  # Start from the refiner's embeddings and encoder (the PRM then takes the
  # refiner's encoder sizes; the four size fields above are ignored).
  c.prm.init_from_refiner = False

  c.mesh = ml_collections.ConfigDict()
  c.mesh.shape = (-1, 1, 1)  # (data, fsdp, tensor); -1 fills the rest.
  # Logical axis -> mesh axes.
  c.mesh.rules = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("embed", "fsdp"),
    ("embed_out", None),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("vocab", "tensor"),
  )
  return c


def smoke(c: ml_collections.ConfigDict) -> None:
  """A tiny model and a few steps: checks the pipeline, not the numbers."""
  c.model.d_model = 32
  c.model.num_heads = 2
  c.model.mlp_dim = 64
  c.model.num_encoder_layers = 2
  c.model.num_slots = 2
  c.train.num_steps = 20
  c.train.log_every = 5
  c.train.checkpoint_every = 10
  c.train.progress_bar = False
  c.train.tensorboard = False  # metrics.jsonl and the log only.
  c.eval.every_steps = 20


def accel(c: ml_collections.ConfigDict) -> None:
  """The model size for one modern GPU or a TPU slice."""
  c.model.d_model = 384
  c.model.num_heads = 6
  c.model.mlp_dim = 1536
  c.model.num_encoder_layers = 8
  c.model.num_decoder_layers = 2
  c.model.num_slots = 16
  c.model.remat = False  # Memory is plentiful at this size.
  c.optim.learning_rate = 1e-3


def unknown_preset(preset: str) -> ValueError:
  return ValueError(
    f"unknown preset {preset!r}; known: smoke, quickstart, cpu, accel"
  )
