"""LINE's trainable module: F (text projector), G (relation-typed graph attention) and the
negation projector, as pure functions over an explicit parameter pytree.

params = {
  "text_proj":    {"w": [d_t, d], "b": [d]},      F(t) = t W + b
  "concept_proj": {"w": [d_c, d]},                W_c, shared by every head (paper eq. 1)
  "attention":    {"src": [K, d], "dst": [K, d]}, one GAT attention vector pair per relation type
  "negation_proj": {"w": [d, d], "b": [d]},        applied after G for negated entries
}

G(c) = mean_k sum_{j in N_k(c) + {c}} alpha^k_cj W_c x_j, with
alpha^k_c. = softmax_j LeakyReLU(a^k_dst . W_c x_c + a^k_src . W_c x_j).

Cost: W_c is shared and linear, so a^k . W_c x = (W_c a^k) . x: the attention logits and the
neighbour sum are computed in the teacher's input space (d_c), and W_c runs once per receiver,
not once per neighbour (the cost model of the "Scale and speed" issue).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jraph
import numpy as np


def _init_matrix(key, d_in: int, d_out: int, init: str, scale: float) -> jnp.ndarray:
  if init == "identity" and d_in == d_out:
    return jnp.eye(d_in, dtype=jnp.float32) * scale
  return jax.random.normal(key, (d_in, d_out), jnp.float32) * (scale / np.sqrt(d_in))


def init_params(key: jax.Array, text_dim: int, concept_dim: int, dim: int, num_types: int,
                init: str = "identity", init_scale: float = 1.0) -> dict:
  """Parameters of F, G and the negation projector.

  With init="identity" every square matrix starts as the identity (a choice of ours: training
  starts from the teachers' own spaces, which is what alignment has to improve on); the
  attention vectors start small and random, so the heads begin near uniform attention.
  """
  k_text, k_concept, k_src, k_dst, k_neg = jax.random.split(key, 5)
  attn_scale = 0.1 / np.sqrt(dim)
  return {
      "text_proj": {"w": _init_matrix(k_text, text_dim, dim, init, init_scale),
                    "b": jnp.zeros((dim,), jnp.float32)},
      "concept_proj": {"w": _init_matrix(k_concept, concept_dim, dim, init, init_scale)},
      "attention": {
          "src": jax.random.normal(k_src, (num_types, dim), jnp.float32) * attn_scale,
          "dst": jax.random.normal(k_dst, (num_types, dim), jnp.float32) * attn_scale},
      "negation_proj": {"w": _init_matrix(k_neg, dim, dim, "identity", 1.0),
                        "b": jnp.zeros((dim,), jnp.float32)},
  }


def project_text(params: dict, text: jnp.ndarray) -> jnp.ndarray:
  """F: [N, d_t] -> [N, d]."""
  p = params["text_proj"]
  return text.astype(jnp.float32) @ p["w"] + p["b"]


def aggregate_neighbourhoods(params: dict, graph: jraph.GraphsTuple,
                             concept_table: jnp.ndarray, negated_table: jnp.ndarray,
                             num_receivers: int, num_types: int,
                             negative_slope: float = 0.2) -> jnp.ndarray:
  """The attention-weighted neighbourhood of each receiver, in the input space: [R, d_c].

  G(c) = pooled(c) @ W_c (then the negation projector for negated receivers); see
  `graph_attention`. Nodes carry {"row", "negated"}: a node's features are row `row` of
  `negated_table` if `negated` else of `concept_table` (frozen teacher-2 embeddings, [C, d_c],
  any float dtype). Edges carry {"type", "mask"} and must be sorted by receiver * K + type.
  Each head k softmaxes over the edges of type k entering a receiver (its self loop included)
  with `jraph.segment_softmax`; the heads are averaged.
  """
  w = params["concept_proj"]["w"]                               # [d_c, d]
  u_src = w @ params["attention"]["src"].T                      # [d_c, K]
  u_dst = w @ params["attention"]["dst"].T                      # [d_c, K]
  rows, neg = graph.nodes["row"], graph.nodes["negated"]
  etype, emask = graph.edges["type"], graph.edges["mask"]
  num_segments = num_receivers * num_types
  # Receivers: their own row (negated ones from the negated table); neighbours: positive.
  x_recv = jnp.where(neg[:num_receivers, None], negated_table[rows[:num_receivers]],
                     concept_table[rows[:num_receivers]]).astype(jnp.float32)   # [R, d_c]
  x_edge = concept_table[rows[graph.senders]].astype(jnp.float32)               # [E, d_c]
  dst_logit = x_recv @ u_dst                                                     # [R, K]
  self_logit = jax.nn.leaky_relu(dst_logit + x_recv @ u_src, negative_slope)    # [R, K]
  edge_logit = jax.nn.leaky_relu(
      dst_logit[graph.receivers, etype] + jnp.einsum("ec,ec->e", x_edge, u_src.T[etype]),
      negative_slope)
  edge_logit = jnp.where(emask, edge_logit, -1e9)
  # One softmax per (receiver, type) segment over {self loop} + that type's neighbours.
  segments = jnp.concatenate([jnp.arange(num_segments, dtype=jnp.int32),
                              graph.receivers * num_types + etype])
  alpha = jraph.segment_softmax(jnp.concatenate([self_logit.reshape(-1), edge_logit]),
                                segments, num_segments)
  alpha_self = alpha[:num_segments].reshape(num_receivers, num_types)
  alpha_edge = jnp.where(emask, alpha[num_segments:], 0.0)
  # Heads averaged: mean_k (a_self[r,k] x_r + sum_{e in (r,k)} a_e x_e), so the edge sum can
  # go straight to the receiver ([R, d_c], not [R*K, d_c]).
  pooled = jax.ops.segment_sum(alpha_edge[:, None] * x_edge, graph.receivers, num_receivers,
                               indices_are_sorted=True)
  return (pooled + alpha_self.sum(axis=1, keepdims=True) * x_recv) / num_types


def project_pooled(params: dict, pooled: jnp.ndarray, negated: jnp.ndarray) -> jnp.ndarray:
  """W_c on pooled neighbourhoods [n, d_c] -> [n, d]; negated rows through their projector."""
  out = pooled @ params["concept_proj"]["w"]
  p = params["negation_proj"]
  return jnp.where(negated[:, None], out @ p["w"] + p["b"], out)


def graph_attention(params: dict, graph: jraph.GraphsTuple, concept_table: jnp.ndarray,
                    negated_table: jnp.ndarray, num_receivers: int, num_types: int,
                    negative_slope: float = 0.2) -> jnp.ndarray:
  """G over a GraphsTuple; returns [num_receivers, d] for nodes 0..num_receivers-1."""
  pooled = aggregate_neighbourhoods(params, graph, concept_table, negated_table,
                                    num_receivers, num_types, negative_slope)
  return project_pooled(params, pooled, graph.nodes["negated"][:num_receivers])


def l2_normalize(x: jnp.ndarray, eps: float = 1e-12) -> jnp.ndarray:
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps))
