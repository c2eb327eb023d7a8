"""LINE's trainable module: F (text projector), G (relation-typed graph attention) and the
negation projector, as pure functions over an explicit parameter pytree.

params = {
  "text_proj":    {"w": [d_t, d], "b": [d]},      F(t) = t W + b
  "concept_proj": {"w": [d_c, d]},                W_c, shared by every head (paper eq. 1)
  "attention":    {"src": [K, d], "dst": [K, d]}, one GAT attention vector pair per relation type
  "negation_proj": {"w": [d, d], "b": [d]},        applied after G for negated entries
  "text_mlp":     {"w1": [d_t, h], "b1": [h], "w2": [h, d], "b2": [d]}   (model.text_hidden)
  "concept_mlp":  {"w1": [d_c, h], "b1": [h], "w2": [h, d], "b2": [d]}   (model.concept_hidden)
}

Optional residual MLPs (more room where the linear maps run short): F(t) = t W + b +
MLP(t), G's W_c x + MLP(x) on the pooled neighbourhood x; MLP(x) = gelu(x W1 + b1) W2 + b2
with W2 and b2 zero at the start, so training starts at the linear model.

G(c) = mean_k sum_{j in N_k(c) + {c}} alpha^k_cj W_c x_j, with
alpha^k_c. = softmax_j LeakyReLU(a^k_dst . W_c x_c + a^k_src . W_c x_j).

Cost: W_c is shared and linear, so a^k . W_c x = (W_c a^k) . x: the attention logits and the
neighbour sum are computed in the teacher's input space (d_c), and W_c runs once per receiver,
not once per neighbour.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jraph
import numpy as np

from line_jax.model import kernels


def _init_matrix(key, d_in: int, d_out: int, init: str, scale: float) -> jnp.ndarray:
  if init == "identity" and d_in == d_out:
    return jnp.eye(d_in, dtype=jnp.float32) * scale
  return jax.random.normal(key, (d_in, d_out), jnp.float32) * (scale / np.sqrt(d_in))


def _init_mlp(key, d_in: int, hidden: int, d_out: int) -> dict:
  """A residual MLP's parameters: W1 He-scaled, W2 and both biases zero (it adds nothing
  until trained)."""
  return {"w1": jax.random.normal(key, (d_in, hidden), jnp.float32) * np.sqrt(2.0 / d_in),
          "b1": jnp.zeros((hidden,), jnp.float32),
          "w2": jnp.zeros((hidden, d_out), jnp.float32),
          "b2": jnp.zeros((d_out,), jnp.float32)}


def residual_mlp(p: dict, x: jnp.ndarray) -> jnp.ndarray:
  """gelu(x W1 + b1) W2 + b2."""
  return jax.nn.gelu(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]


def init_params(key: jax.Array, text_dim: int, concept_dim: int, dim: int, num_types: int,
                init: str = "identity", init_scale: float = 1.0, text_hidden: int = 0,
                concept_hidden: int = 0) -> dict:
  """Parameters of F, G and the negation projector.

  With init="identity" every square matrix starts as the identity (a choice of ours: training
  starts from the teachers' own spaces, which is what alignment has to improve on); the
  attention vectors start small and random, so the heads begin near uniform attention.
  """
  k_text, k_concept, k_src, k_dst, k_neg = jax.random.split(key, 5)
  attn_scale = 0.1 / np.sqrt(dim)
  params = {
      "text_proj": {"w": _init_matrix(k_text, text_dim, dim, init, init_scale),
                    "b": jnp.zeros((dim,), jnp.float32)},
      "concept_proj": {"w": _init_matrix(k_concept, concept_dim, dim, init, init_scale)},
      "attention": {
          "src": jax.random.normal(k_src, (num_types, dim), jnp.float32) * attn_scale,
          "dst": jax.random.normal(k_dst, (num_types, dim), jnp.float32) * attn_scale},
      "negation_proj": {"w": _init_matrix(k_neg, dim, dim, "identity", 1.0),
                        "b": jnp.zeros((dim,), jnp.float32)},
  }
  # Drawn from keys of their own, so the linear parameters are those of a run without them.
  if text_hidden:
    params["text_mlp"] = _init_mlp(jax.random.fold_in(key, 101), text_dim, text_hidden, dim)
  if concept_hidden:
    params["concept_mlp"] = _init_mlp(jax.random.fold_in(key, 102), concept_dim,
                                      concept_hidden, dim)
  return params


def project_text(params: dict, text: jnp.ndarray) -> jnp.ndarray:
  """F: [N, d_t] -> [N, d] (plus the residual MLP where the run has one)."""
  p = params["text_proj"]
  t = text.astype(jnp.float32)
  out = t @ p["w"] + p["b"]
  if "text_mlp" in params:
    out = out + residual_mlp(params["text_mlp"], t)
  return out


def concept_out(params: dict, pooled: jnp.ndarray) -> jnp.ndarray:
  """G's output before the negation projector: W_c on pooled neighbourhoods [n, d_c] ->
  [n, d] (plus the residual MLP where the run has one)."""
  out = pooled @ params["concept_proj"]["w"]
  if "concept_mlp" in params:
    out = out + residual_mlp(params["concept_mlp"], pooled)
  return out


@jax.custom_vjp
def _block_sums(alpha: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
  """sum_s alpha[v, s] x[v, s, :] for alpha [V, S], x [V, S, d]: [V, d].

  Written as S multiply-adds, which XLA:CPU fuses into one pass at memory speed (the
  batched-dot form of the einsum runs about twice slower); the backward pass uses the dot
  form, which is the fast one there.
  """
  return sum(alpha[:, s, None] * x[:, s] for s in range(x.shape[1]))


def _block_sums_fwd(alpha, x):
  return _block_sums(alpha, x), (alpha, x)


def _block_sums_bwd(res, g):
  alpha, x = res
  return jnp.einsum("vd,vsd->vs", g, x), alpha[:, :, None] * g[:, None, :]


_block_sums.defvjp(_block_sums_fwd, _block_sums_bwd)


def aggregate_neighbourhoods(params: dict, graph: jraph.GraphsTuple,
                             concept_table: jnp.ndarray, negated_table: jnp.ndarray,
                             num_receivers: int, num_types: int,
                             negative_slope: float = 0.2, cpu_kernel: bool = False,
                             kernel_threads: int = 0) -> jnp.ndarray:
  """The attention-weighted neighbourhood of each receiver, in the input space: [R, d_c].

  G(c) = pooled(c) @ W_c (then the negation projector for negated receivers); see
  `graph_attention`. `graph` has the compact blocked layout of
  `line_jax.model.graph.build_graph`: nodes carry {"row", "negated"} (a node's features are row
  `row` of `negated_table` if `negated` else of `concept_table`: frozen teacher-2
  embeddings, [C, d_c], any float dtype); edge slot e's sender is node R + e; edges carry
  {"type", "mask"}, sorted by receiver * K + type; `globals["block_receivers"]` names the
  receiver of each block of S consecutive slots (S = E / number of blocks).
  Each head k softmaxes over the edges of type k entering a receiver (its self loop included)
  with `jraph.segment_softmax`; the heads are averaged.

  Cost: the [E, d_c] slab of neighbour rows is the only
  large operand: written once by the gather, then read four times per training step (the
  attention logits, one [E, d_c] x [d_c, K] matmul; the per-block weighted sums; in the
  backward pass, their transpose and the logit weights' gradient, one matmul). No [E, d_c]
  scatter, and no per-edge gather or scatter of d_c-wide rows but the table rows'.

  cpu_kernel: compute the edge part on the fused CPU kernel of `line_jax.model.kernels` instead
  (same value; one read of each neighbour row per direction, no slab; the caller checks it
  can be used: `kernels.use_kernel`), on `kernel_threads` threads (0: the usable cores).
  """
  w = params["concept_proj"]["w"]                               # [d_c, d]
  # The attention vectors mapped back to the input space, as [K, d_c] rows: the gradient of
  # the [E, d_c] x [K, d_c]^T logits then comes out as a [K, d_c] = [E, K]^T [E, d_c]
  # matmul, which XLA:CPU runs about twice as fast as the [d_c, K] orientation.
  u_src = params["attention"]["src"] @ w.T                      # [K, d_c]
  u_dst = params["attention"]["dst"] @ w.T                      # [K, d_c]
  rows, neg = graph.nodes["row"], graph.nodes["negated"]
  _check_layout(graph, num_receivers)
  # Receivers: their own row (negated ones from the negated table); neighbours: positive.
  r_rows = rows[:num_receivers]
  x_recv = jnp.where(neg[:num_receivers, None], _take(negated_table, r_rows),
                     _take(concept_table, r_rows)).astype(jnp.float32)         # [R, d_c]
  dst_logit = _logits(x_recv, u_dst)                                             # [R, K]
  self_logit = jax.nn.leaky_relu(dst_logit + _logits(x_recv, u_src), negative_slope)
  if cpu_kernel:
    edge_sum, alpha_self = kernels.neighbour_attention(
        concept_table, rows[num_receivers:], graph.edges["type"], graph.edges["mask"],
        graph.receivers, dst_logit, self_logit, u_src, negative_slope, kernel_threads)
  else:
    edge_sum, alpha_self = _xla_neighbour_attention(
        concept_table, graph, num_receivers, num_types, dst_logit, self_logit, u_src,
        negative_slope)
  return (edge_sum + alpha_self.sum(axis=1, keepdims=True) * x_recv) / num_types


def _take(table, idx):
  return table.at[idx].get(mode="promise_in_bounds", wrap_negative_indices=False)


def _logits(x, u):
  return jnp.einsum("ec,kc->ek", x, u)


def _check_layout(graph: jraph.GraphsTuple, num_receivers: int) -> None:
  """ValueError unless `graph` has the compact blocked layout (R receivers, then a sender
  node per edge slot; the slots split evenly into blocks)."""
  num_nodes = graph.nodes["row"].shape[0]
  num_edges = graph.edges["type"].shape[0]
  num_blocks = graph.globals["block_receivers"].reshape(-1).shape[0]
  if num_nodes != num_receivers + num_edges:
    raise ValueError(f"graph has {num_nodes} nodes; the compact layout needs "
                     f"{num_receivers} receivers + {num_edges} edge senders")
  if num_blocks == 0 or num_edges % num_blocks:
    raise ValueError(f"{num_edges} edge slots do not split into {num_blocks} blocks")


def _xla_neighbour_attention(concept_table, graph: jraph.GraphsTuple, num_receivers: int,
                             num_types: int, dst_logit, self_logit, u_src,
                             negative_slope: float):
  """(attention-weighted sum of each receiver's neighbour rows [R, d_c], self-loop weights
  [R, K]) on XLA: the edge part of `aggregate_neighbourhoods`, as
  `kernels.neighbour_attention` computes it on the CPU kernel."""
  rows = graph.nodes["row"]
  etype, emask = graph.edges["type"], graph.edges["mask"]
  block_receivers = graph.globals["block_receivers"].reshape(-1)                  # [V]
  num_edges, num_blocks = etype.shape[0], block_receivers.shape[0]
  num_segments = num_receivers * num_types
  block = num_edges // num_blocks
  # Edge e's sender is node R + e: one plain row gather per edge (a rows[senders] double
  # indirection runs on XLA:CPU as a per-element loop, several times slower). Every use
  # below reads the [V, S, d_c] block view. With a narrower table XLA:CPU converts the rows
  # once per use: on CPU keep the tables in float32 (config model.table_dtype "auto").
  x_edge = _take(concept_table, rows[num_receivers:]).astype(jnp.float32).reshape(
      num_blocks, block, -1)                                                     # [V, S, d_c]
  # Each edge's logit is its own head's: one [E, d_c] x [d_c, K] matmul and a one-hot
  # select (indexing u by type would scatter [E, d_c] rows in the backward pass).
  onehot = jax.nn.one_hot(etype, num_types, dtype=jnp.float32)                   # [E, K]
  edge_logit = jax.nn.leaky_relu(
      jnp.sum((_take(dst_logit, graph.receivers)
               + jnp.einsum("vsc,kc->vsk", x_edge, u_src).reshape(num_edges, -1)) * onehot,
              axis=1),
      negative_slope)
  edge_logit = jnp.where(emask, edge_logit, -1e9)
  # One softmax per (receiver, type) segment over {self loop} + that type's neighbours.
  segments = jnp.concatenate([jnp.arange(num_segments, dtype=jnp.int32),
                              graph.receivers * num_types + etype])
  alpha = jraph.segment_softmax(jnp.concatenate([self_logit.reshape(-1), edge_logit]),
                                segments, num_segments)
  alpha_self = alpha[:num_segments].reshape(num_receivers, num_types)
  alpha_edge = jnp.where(emask, alpha[num_segments:], 0.0)
  # Heads averaged: mean_k (a_self[r,k] x_r + sum_{e in (r,k)} a_e x_e), so the edge sum
  # goes straight to the receiver. Each block has one receiver: a dense weighted sum per
  # block, then a scatter of [V, d_c] block sums (not of [E, d_c] edge rows).
  block_sum = _block_sums(alpha_edge.reshape(num_blocks, block), x_edge)
  pooled = jax.ops.segment_sum(block_sum, block_receivers, num_receivers,
                               indices_are_sorted=True)
  return pooled, alpha_self


def project_pooled(params: dict, pooled: jnp.ndarray, negated: jnp.ndarray) -> jnp.ndarray:
  """W_c on pooled neighbourhoods [n, d_c] -> [n, d]; negated rows through their projector."""
  out = concept_out(params, pooled)
  p = params["negation_proj"]
  return jnp.where(negated[:, None], out @ p["w"] + p["b"], out)


def graph_attention(params: dict, graph: jraph.GraphsTuple, concept_table: jnp.ndarray,
                    negated_table: jnp.ndarray, num_receivers: int, num_types: int,
                    negative_slope: float = 0.2, cpu_kernel: bool = False,
                    kernel_threads: int = 0) -> jnp.ndarray:
  """G over a GraphsTuple; returns [num_receivers, d] for nodes 0..num_receivers-1."""
  pooled = aggregate_neighbourhoods(params, graph, concept_table, negated_table,
                                    num_receivers, num_types, negative_slope, cpu_kernel,
                                    kernel_threads)
  return project_pooled(params, pooled, graph.nodes["negated"][:num_receivers])


def l2_normalize(x: jnp.ndarray, eps: float = 1e-12) -> jnp.ndarray:
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps))
