"""The train objective of one device's shard of a batch: LINE's projections of the batch
(`project_batch`) and the weighted sum of the paper's losses and the optional terms
(`shard_loss`), combined over the mesh's devices; what the loss reads from the config
(`LossSettings`) and its checks (`check_loss_settings`)."""


from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from line_jax.model import kernels
from line_jax.model import losses as losses_lib
from line_jax.model import network as model_lib



AXIS = "data"


@dataclasses.dataclass(frozen=True)
class LossSettings:
  """What the train loss reads from the config (config.loss.*, config.model.*).

  Attributes:
    normalize: L2-normalise F(t) and G(c) before the scores.
    slope: the graph attention's leaky-ReLU slope.
    margin, relational_margin, negation_delta: the three losses' margins.
    per_pair: alignment hinge terms summed per pair, then averaged over pairs.
    align_scale: what that per-pair sum is multiplied by: (loss.align_batch_reference - 1)
      / (B - 1), so that the term weighs as it does at the reference batch size whatever
      train.batch_size is (1 at the reference, and where the reference is 0).
    weights: (alignment, relational, negation, per-concept, uniformity, name, text,
      sentence per-concept) weights of the total.
    concept_temperature: the per-concept InfoNCE temperature.
    segments: model.text_vectors is "segments": the per-concept term scores a concept
      against a text by its segments (`losses.pool_segments`), the batch carries them.
    segment_pooling, segment_temperature: how (loss.segment_pooling, .segment_temperature).
    uniformity_t: the uniformity term's t.
    cpu_kernel: G's edge attention on the fused CPU kernel.
    kernel_threads: that kernel's threads per device.
  """
  normalize: bool
  slope: float
  margin: float
  relational_margin: float
  negation_delta: float
  per_pair: bool
  align_scale: float
  weights: tuple
  concept_temperature: float
  uniformity_t: float
  cpu_kernel: bool
  kernel_threads: int
  segments: bool = False
  segment_pooling: str = "max"
  segment_temperature: float = 0.05

  @classmethod
  def from_config(cls, config, mesh, cpu_kernel: bool = False) -> "LossSettings":
    lc = config.loss
    # The kernel's threads: each local device of the mesh runs its own call, so they share
    # the cores (4 host-CPU devices on 2 cores would otherwise start 8 threads per step).
    threads = (int(config.model.cpu_kernel_threads)
               or max(1, kernels.usable_cores() // len(mesh.local_devices)))
    segments = text_vectors(config) == "segments"
    return cls(normalize=bool(lc.normalize), slope=float(config.model.leaky_relu_slope),
               margin=lc.margin, relational_margin=lc.relational_margin,
               negation_delta=lc.negation_delta, per_pair=lc.align_reduction == "per_pair",
               align_scale=align_scale(config),
               weights=(lc.align_weight, lc.relational_weight, lc.negation_weight,
                        lc.concept_weight, lc.uniformity_weight,
                        float(lc.get("name_weight", 0.0)),
                        float(lc.get("text_weight", 0.0)),
                        float(lc.get("sentence_concept_weight", 0.0)) if segments else 0.0),
               concept_temperature=float(lc.concept_temperature),
               uniformity_t=float(lc.uniformity_t),
               cpu_kernel=cpu_kernel, kernel_threads=threads, segments=segments,
               segment_pooling=str(lc.get("segment_pooling", "max")),
               segment_temperature=float(lc.get("segment_temperature", 0.05)))

  @property
  def needs_receivers(self) -> bool:
    """The per-concept, uniformity, name or text term is on: they read G of the batch's
    concepts."""
    return bool(self.weights[3] or self.weights[4] or self.weights[5] or self.weights[6]
                or self.weights[7])


TEXT_VECTORS = ("sentence", "segments")


def text_vectors(config) -> str:
  """config model.text_vectors ("sentence" when absent: runs from before it existed)."""
  kind = str(config.model.get("text_vectors", "sentence"))
  if kind not in TEXT_VECTORS:
    raise ValueError(f"model.text_vectors={kind!r}: expected one of {TEXT_VECTORS}")
  return kind


def align_scale(config) -> float:
  """(loss.align_batch_reference - 1) / (train.batch_size - 1) for the per-pair alignment
  sum, else 1: a pair's hinge terms are summed over every other text of the batch, so the
  term (and its gradient) grows with the batch; scaled, it weighs against the other terms
  as it does at the reference batch size, whatever the batch."""
  reference = int(config.loss.get("align_batch_reference", 0))
  if reference < 0 or reference == 1:
    raise ValueError(f"loss.align_batch_reference={reference} must be 0 (off) or >= 2")
  batch = int(config.train.batch_size)
  if not reference or config.loss.align_reduction != "per_pair" or batch < 2:
    return 1.0
  return (reference - 1) / (batch - 1)


def project_batch(params, batch: dict, concept_table, negated_table, num_types: int,
                  settings: LossSettings):
  """One device's batch through LINE: (F(t) [b, d], the pairs' mean G [b, d], G of the
  positive slots the relational and negation losses use, G of the negated slots, and
  W_c of every positive receiver [U, d] (unnormalised, no negation projector) where
  `settings.needs_receivers`, else None). F of the batch's clause rows, where it carries
  them, is `project_segments`."""
  normalize = settings.normalize
  num_receivers = batch["receiver_real"].shape[0]
  num_negated = batch["neg_weight"].shape[0]
  u = num_receivers - num_negated
  pooled = model_lib.aggregate_neighbourhoods(params, batch["graph"], concept_table,
                                              negated_table, num_receivers, num_types,
                                              settings.slope, settings.cpu_kernel,
                                              settings.kernel_threads)
  receiver_negated = batch["graph"].nodes["negated"][:num_receivers]
  pn = params["negation_proj"]
  finish = model_lib.l2_normalize if normalize else (lambda x: x)
  # Slots the relational and negation losses need: rel_* and neg_pos_slot are positive
  # receivers (slots < U), the negated receivers are the V slots from U on.
  positive_slots = jnp.concatenate([batch["rel_head"], batch["rel_tail"],
                                    batch["rel_corrupt"], batch["neg_pos_slot"]])
  neg_slots = u + jnp.arange(num_negated, dtype=jnp.int32)

  t = model_lib.project_text(params, batch["text"])
  w = batch["occ_mask"].astype(jnp.float32)                     # [b, M]
  count = jnp.maximum(w.sum(1), 1.0)[:, None]
  if normalize:
    occ_slot = batch["occ_slot"].reshape(-1)
    occ = finish(model_lib.project_pooled(params, pooled[occ_slot],
                                          receiver_negated[occ_slot]))
    c_mean = jnp.einsum("bm,bmd->bd", w, occ.reshape(*w.shape, -1)) / count
    t = model_lib.l2_normalize(t)
    means = jnp.zeros((0, pooled.shape[1]), pooled.dtype)
  else:
    # G is linear after pooling: the mean of projections is the projection of the mean,
    # per polarity, so W_c runs once per pair instead of once per concept mention.
    occ_pooled = pooled[batch["occ_slot"]]                      # [b, M, d_c]
    neg_w = w * (batch["occ_slot"] >= u)
    means = jnp.concatenate([jnp.einsum("bm,bmc->bc", w - neg_w, occ_pooled),
                             jnp.einsum("bm,bmc->bc", neg_w, occ_pooled)]) / jnp.tile(count,
                                                                                   (2, 1))
  # Every W_c of the step in one matmul, and every negation projector in one more: the
  # pair means (positive, negated), the positive slots, the negated slots.
  nm = means.shape[0] // 2
  # (A residual MLP of G is not linear: only the normalised path, which projects every
  # mention, may have one; `check_model_settings` says so.)
  projected = model_lib.concept_out(params, jnp.concatenate([means, pooled[positive_slots],
                                                              pooled[neg_slots]]))
  n_pos = positive_slots.shape[0]
  neg_in = jnp.concatenate([projected[nm:2 * nm], projected[2 * nm + n_pos:]])
  neg_out = neg_in @ pn["w"]
  g_pos = finish(projected[2 * nm:2 * nm + n_pos])
  g_neg = finish(neg_out[nm:] + pn["b"])
  if not normalize:
    c_mean = (projected[:nm] + neg_out[:nm]
              + (neg_w.sum(1, keepdims=True) / count) * pn["b"])
  g_receivers = (model_lib.concept_out(params, pooled[:u]) if settings.needs_receivers
                 else None)
  return t, c_mean, g_pos, g_neg, g_receivers


def project_segments(params, batch: dict, text: jnp.ndarray, normalize: bool):
  """Every text's segments through F: [b, S, d] with segment 0 the whole text (`text`, F
  of it as `project_batch` gives it) and the clauses after it, and their mask [b, S]."""
  clauses = batch["segments"]
  b, slots = clauses.shape[0], clauses.shape[1]
  f = model_lib.project_text(params, clauses.reshape(b * slots, -1)).reshape(b, slots, -1)
  if normalize:
    f = model_lib.l2_normalize(f)
  return (jnp.concatenate([text[:, None], f], axis=1),
          jnp.concatenate([batch["pair_mask"][:, None], batch["segment_mask"]], axis=1))


def check_model_settings(config) -> None:
  """Clear errors for the model's optional parts, before any long work starts."""
  mc = config.model
  for field in ("text_hidden", "concept_hidden"):
    value = mc.get(field, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
      raise ValueError(f"model.{field}={value!r} must be an integer >= 0 (0: no MLP)")
  if mc.get("concept_hidden", 0) and not config.loss.normalize:
    raise ValueError("model.concept_hidden needs loss.normalize=True: a residual MLP of G is "
                     "not linear, so a list's mean cannot be projected once")
  text_vectors(config)


def check_loss_settings(lc) -> None:
  """Clear errors for the optional terms' settings, before any long work starts."""
  pooling = lc.get("segment_pooling", "max")
  if pooling not in losses_lib.SEGMENT_POOLINGS:
    raise ValueError(f"loss.segment_pooling={pooling!r}: expected one of "
                     f"{losses_lib.SEGMENT_POOLINGS}")
  if not float(lc.get("segment_temperature", 0.05)) > 0:
    raise ValueError(f"loss.segment_temperature={lc.get('segment_temperature')} must be > 0")
  for field in ("concept_weight", "uniformity_weight", "name_weight", "text_weight",
                "sentence_concept_weight"):
    if float(lc.get(field, 0.0)) < 0:
      raise ValueError(f"loss.{field}={lc.get(field)} must be >= 0 (0 turns the term off)")
  if ((lc.concept_weight or lc.get("name_weight", 0.0) or lc.get("text_weight", 0.0))
      and not lc.concept_temperature > 0):
    raise ValueError(f"loss.concept_temperature={lc.concept_temperature} must be > 0")
  reference = lc.get("align_batch_reference", 0)
  if isinstance(reference, bool) or not isinstance(reference, int) or reference < 0 \
      or reference == 1:
    raise ValueError(f"loss.align_batch_reference={reference!r} must be 0 (off) or an "
                     "integer >= 2")
  for field in ("random_concepts", "hard_negatives", "hard_pool"):
    value = lc.get(field, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
      raise ValueError(f"loss.{field}={value!r} must be an integer >= 0")
  if lc.get("hard_negatives", 0) and lc.get("hard_pool", 0) < 1:
    raise ValueError(f"loss.hard_negatives={lc.hard_negatives} draws from each concept's "
                     f"loss.hard_pool nearest concepts: hard_pool={lc.hard_pool} must be >= 1")


def shard_loss(params, batch: dict, concept_table, negated_table, num_types: int,
               settings: LossSettings):
  """The loss of one device's shard of the batch (no leading shard axis), combined over the
  mesh's devices: (weighted total, the terms' means [8]). Runs inside `jax.shard_map`."""
  b = batch["pair_mask"].shape[0]
  rs = batch["rel_head"].shape[0]
  t, c_mean, g_pos, g_neg, g_recv = project_batch(params, batch, concept_table,
                                                  negated_table, num_types, settings)
  texts = jax.lax.all_gather(t, AXIS, tiled=True)
  text_mask = jax.lax.all_gather(batch["pair_mask"], AXIS, tiled=True)
  first = jax.lax.axis_index(AXIS) * b
  a = losses_lib.alignment_terms(c_mean, batch["pair_mask"], batch["rho"], texts,
                                 text_mask, first, settings.margin,
                                 per_anchor=settings.per_pair)
  a = (a[0] * settings.align_scale, a[1])
  r = losses_lib.relational_terms(g_pos[:rs], g_pos[rs:2 * rs], g_pos[2 * rs:3 * rs],
                                  batch["rel_mask"], settings.relational_margin)
  n = losses_lib.negation_terms(g_pos[3 * rs:], g_neg, batch["neg_weight"],
                                settings.negation_delta)
  # Per-concept and uniformity terms (line_jax.model.losses; off at weight 0) over G of the
  # shard's distinct positive concepts.
  cu = uni = nt = tt = cs = (jnp.zeros(()), jnp.zeros(()))
  if g_recv is not None:
    u = g_recv.shape[0]
    recv_real = batch["receiver_real"][:u]
    group = batch.get("receiver_group")    # config loss.same_term_negatives=False
    listed = batch["occ_mask"] & (batch["occ_slot"] < u)
    if settings.weights[3]:
      if settings.segments:    # many vectors per text: a concept meets its best segment
        seg, seg_mask = project_segments(params, batch, t, settings.normalize)
        cu = losses_lib.concept_contrastive_terms(
            seg, g_recv, recv_real, batch["occ_slot"], listed, settings.concept_temperature,
            group, seg_mask, settings.segment_pooling, settings.segment_temperature)
      else:
        cu = losses_lib.concept_contrastive_terms(
            t, g_recv, recv_real, batch["occ_slot"], listed, settings.concept_temperature,
            group)
    if settings.weights[7]:
      # The whole text's own per-concept term, beside the segments' (a "segments" run).
      cs = losses_lib.concept_contrastive_terms(
          t, g_recv, recv_real, batch["occ_slot"], listed, settings.concept_temperature,
          group)
    if settings.weights[6]:
      # Text term: each listed concept vs the shard's texts that do not list it.
      tt = losses_lib.text_contrastive_terms(
          t, batch["pair_mask"], g_recv, batch["occ_slot"],
          batch["occ_mask"] & (batch["occ_slot"] < u), settings.concept_temperature, group)
    if settings.weights[4]:
      uni = losses_lib.uniformity_terms(g_recv, recv_real, settings.uniformity_t)
    if settings.weights[5]:
      # Name term: F of teacher 1's name of each receiver vs G of the receivers.
      names = model_lib.project_text(params, batch["name_text"])
      nt = losses_lib.concept_contrastive_terms(
          names, g_recv, recv_real, jnp.arange(u, dtype=jnp.int32)[:, None],
          recv_real[:, None], settings.concept_temperature, group)
  sums = jax.lax.psum(jnp.stack([a[0], r[0], n[0], cu[0], uni[0], nt[0], tt[0], cs[0]]),
                      AXIS)
  counts = jax.lax.psum(jnp.stack([a[1], r[1], n[1], cu[1], uni[1], nt[1], tt[1], cs[1]]),
                        AXIS)
  parts = sums / jnp.maximum(counts, 1.0)
  return jnp.sum(jnp.asarray(settings.weights) * parts), parts
