"""A BERT encoder as pure functions over an explicit parameter pytree.

The parameters come from a Hugging Face checkpoint folder (`config.json` and
`model.safetensors`, or a sharded `model.safetensors.index.json`); no PyTorch is needed.
Only the encoder is built (embeddings, transformer layers, optional pooler); masked-LM and
other task heads in the checkpoint are ignored.

Parameter pytree (float32 numpy or jax arrays):
  {"embeddings": {"word": [V, H], "position": [P, H], "token_type": [T, H],
                  "norm": {"scale": [H], "bias": [H]}},
   "layers": ({"qkv": {"kernel": [H, 3H], "bias": [3H]},
               "attention_out": {"kernel": [H, H], "bias": [H]},
               "attention_norm": {"scale", "bias"},
               "ffn_in": {"kernel": [H, I], "bias": [I]},
               "ffn_out": {"kernel": [I, H], "bias": [H]},
               "ffn_norm": {"scale", "bias"}}, ...),          # one dict per layer
   "pooler": {"kernel": [H, H], "bias": [H]}}                 # only when the checkpoint has it
Kernels are stored [in, out] (PyTorch's Linear stores [out, in]); query, key and value are
fused into one kernel so that a layer does one projection matmul instead of three.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from line_jax.data.dataset import DataError

Params = Mapping[str, Any]

POOLINGS = ("cls", "mean", "pooler")
_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu", "silu", "swish")
# Prefixes a BERT encoder's weights carry inside task models (BertForMaskedLM, ...).
_ENCODER_PREFIXES = ("bert.", "model.", "encoder_model.")


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """The fields of a Hugging Face `config.json` that the encoder needs."""
  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  intermediate_size: int
  max_position_embeddings: int
  type_vocab_size: int
  layer_norm_eps: float
  hidden_act: str
  pad_token_id: int

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @classmethod
  def from_hf_dict(cls, hf: Mapping[str, Any], source: str = "config.json") -> "BertConfig":
    """Validates a Hugging Face config dict; raises DataError naming the offending field."""
    model_type = hf.get("model_type", "bert")
    if model_type != "bert":
      raise DataError(f"{source}: field 'model_type': {model_type!r} is not supported; the "
                      "teacher encoder implements BERT-family checkpoints (model_type 'bert': "
                      "BGE, CODER, SapBERT, PubMedBERT, BioBERT, MiniLM)")
    position_type = hf.get("position_embedding_type", "absolute")
    if position_type != "absolute":
      raise DataError(f"{source}: field 'position_embedding_type': {position_type!r} is "
                      "not supported (only 'absolute')")
    act = hf.get("hidden_act", "gelu")
    if act not in _ACTIVATIONS:
      raise DataError(f"{source}: field 'hidden_act': {act!r} is not one of {_ACTIVATIONS}")
    try:
      config = cls(
          vocab_size=int(hf["vocab_size"]), hidden_size=int(hf["hidden_size"]),
          num_layers=int(hf["num_hidden_layers"]), num_heads=int(hf["num_attention_heads"]),
          intermediate_size=int(hf["intermediate_size"]),
          max_position_embeddings=int(hf.get("max_position_embeddings", 512)),
          type_vocab_size=int(hf.get("type_vocab_size", 2)),
          layer_norm_eps=float(hf.get("layer_norm_eps", 1e-12)), hidden_act=act,
          pad_token_id=int(hf.get("pad_token_id") or 0))
    except KeyError as e:
      raise DataError(f"{source}: field {e.args[0]!r}: missing") from None
    if config.hidden_size % config.num_heads:
      raise DataError(f"{source}: field 'num_attention_heads': {config.num_heads} does not "
                      f"divide hidden_size {config.hidden_size}")
    return config


def read_bert_config(model_dir: str) -> BertConfig:
  path = os.path.join(model_dir, "config.json")
  if not os.path.exists(path):
    raise DataError(f"{path}: file not found (a checkpoint folder needs config.json and "
                    "model.safetensors)")
  with open(path) as f:
    return BertConfig.from_hf_dict(json.load(f), path)


def _safetensors_files(model_dir: str) -> list[str]:
  single = os.path.join(model_dir, "model.safetensors")
  if os.path.exists(single):
    return [single]
  index = os.path.join(model_dir, "model.safetensors.index.json")
  if os.path.exists(index):
    with open(index) as f:
      weight_map = json.load(f)["weight_map"]
    return [os.path.join(model_dir, name) for name in sorted(set(weight_map.values()))]
  found = sorted(os.listdir(model_dir)) if os.path.isdir(model_dir) else []
  hint = ""
  if any(n.endswith(".bin") or n.endswith(".pt") for n in found):
    hint = (" The folder holds PyTorch pickles only; convert them once on a machine with "
            "torch: `AutoModel.from_pretrained(DIR).save_pretrained(DIR, "
            "safe_serialization=True)`.")
  raise DataError(f"{single}: file not found (nor model.safetensors.index.json); the folder "
                  f"holds {found}.{hint}")


def _canonical_name(name: str) -> str:
  for prefix in _ENCODER_PREFIXES:
    if name.startswith(prefix):
      name = name[len(prefix):]
      break
  # Checkpoints saved by old BERT code name LayerNorm parameters gamma/beta.
  return name.replace("LayerNorm.gamma", "LayerNorm.weight").replace(
      "LayerNorm.beta", "LayerNorm.bias")


def read_checkpoint_tensors(model_dir: str) -> dict[str, np.ndarray]:
  """Reads every safetensors tensor of the folder as float32, names without task prefixes."""
  from safetensors.numpy import load_file
  tensors = {}
  for path in _safetensors_files(model_dir):
    try:
      raw = load_file(path)
    except Exception as e:  # safetensors raises its own error types; name the file.
      raise DataError(f"{path}: cannot read safetensors file: {e}") from e
    for name, value in raw.items():
      tensors[_canonical_name(name)] = value
  return tensors


def params_from_tensors(tensors: Mapping[str, np.ndarray], config: BertConfig,
                        source: str = "model.safetensors") -> dict:
  """Builds the parameter pytree from Hugging Face BertModel tensor names."""

  def get(name: str, shape: tuple) -> np.ndarray:
    if name not in tensors:
      raise DataError(f"{source}: field '{name}': tensor missing from the checkpoint")
    value = np.asarray(tensors[name], dtype=np.float32)
    if value.shape != shape:
      raise DataError(f"{source}: field '{name}': shape {value.shape}, expected {shape} "
                      "from config.json")
    return value

  h, i = config.hidden_size, config.intermediate_size

  def dense(prefix: str, n_in: int, n_out: int) -> dict:
    return {"kernel": get(f"{prefix}.weight", (n_out, n_in)).T.copy(),
            "bias": get(f"{prefix}.bias", (n_out,))}

  def norm(prefix: str) -> dict:
    return {"scale": get(f"{prefix}.weight", (h,)), "bias": get(f"{prefix}.bias", (h,))}

  embeddings = {
      "word": get("embeddings.word_embeddings.weight", (config.vocab_size, h)),
      "position": get("embeddings.position_embeddings.weight",
                      (config.max_position_embeddings, h)),
      "token_type": get("embeddings.token_type_embeddings.weight", (config.type_vocab_size, h)),
      "norm": norm("embeddings.LayerNorm"),
  }
  layers = []
  for n in range(config.num_layers):
    p = f"encoder.layer.{n}"
    q, k, v = (dense(f"{p}.attention.self.{part}", h, h) for part in ("query", "key", "value"))
    layers.append({
        "qkv": {"kernel": np.concatenate([q["kernel"], k["kernel"], v["kernel"]], axis=1),
                "bias": np.concatenate([q["bias"], k["bias"], v["bias"]])},
        "attention_out": dense(f"{p}.attention.output.dense", h, h),
        "attention_norm": norm(f"{p}.attention.output.LayerNorm"),
        "ffn_in": dense(f"{p}.intermediate.dense", h, i),
        "ffn_out": dense(f"{p}.output.dense", i, h),
        "ffn_norm": norm(f"{p}.output.LayerNorm"),
    })
  params = {"embeddings": embeddings, "layers": tuple(layers)}
  if "pooler.dense.weight" in tensors:
    params["pooler"] = dense("pooler.dense", h, h)
  return params


def load_bert(model_dir: str) -> tuple[BertConfig, dict]:
  """Reads config.json and the safetensors weights of a checkpoint folder."""
  config = read_bert_config(model_dir)
  tensors = read_checkpoint_tensors(model_dir)
  return config, params_from_tensors(tensors, config, os.path.join(model_dir,
                                                                   "model.safetensors"))


# --- forward pass ------------------------------------------------------------------------

def _dense(x: jax.Array, layer: Params, precision) -> jax.Array:
  return jnp.matmul(x, layer["kernel"], precision=precision) + layer["bias"]


def _layer_norm(x: jax.Array, norm: Params, eps: float) -> jax.Array:
  mean = jnp.mean(x, axis=-1, keepdims=True)
  centred = x - mean
  var = jnp.mean(centred * centred, axis=-1, keepdims=True)
  return centred * jax.lax.rsqrt(var + eps) * norm["scale"] + norm["bias"]


def _activation(x: jax.Array, name: str) -> jax.Array:
  if name == "gelu":
    return jax.nn.gelu(x, approximate=False)
  if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
    return jax.nn.gelu(x, approximate=True)
  if name == "relu":
    return jax.nn.relu(x)
  return jax.nn.silu(x)


def encoder_layer(layer: Params, hidden: jax.Array, key_mask: jax.Array, config: BertConfig,
                  first_token_only: bool = False, precision=None) -> jax.Array:
  """One post-norm transformer layer.

  Args:
    layer: one entry of params["layers"].
    hidden: [B, L, H] input states.
    key_mask: [B, L] bool, True at real tokens.
    config: the model config.
    first_token_only: compute the output of position 0 only (keys and values still span
      every token); what CLS and pooler pooling need from the last layer.
    precision: matmul precision (jax.lax.Precision).

  Returns:
    [B, L, H], or [B, 1, H] when first_token_only.
  """
  batch, length, width = hidden.shape
  heads, head_dim = config.num_heads, config.head_dim
  qkv = _dense(hidden, layer["qkv"], precision)
  query, key, value = jnp.split(qkv, 3, axis=-1)
  residual = hidden
  if first_token_only:
    query, residual = query[:, :1], hidden[:, :1]
  q_len = query.shape[1]
  query = query.reshape(batch, q_len, heads, head_dim)
  key = key.reshape(batch, length, heads, head_dim)
  value = value.reshape(batch, length, heads, head_dim)
  scores = jnp.einsum("bqhd,bkhd->bhqk", query, key, precision=precision)
  scores = scores * (1.0 / np.sqrt(head_dim))
  scores = jnp.where(key_mask[:, None, None, :], scores, jnp.float32(-1e30))
  probs = jax.nn.softmax(scores, axis=-1)
  context = jnp.einsum("bhqk,bkhd->bqhd", probs, value, precision=precision)
  context = context.reshape(batch, q_len, width)
  attended = _layer_norm(_dense(context, layer["attention_out"], precision) + residual,
                         layer["attention_norm"], config.layer_norm_eps)
  inner = _activation(_dense(attended, layer["ffn_in"], precision), config.hidden_act)
  return _layer_norm(_dense(inner, layer["ffn_out"], precision) + attended,
                     layer["ffn_norm"], config.layer_norm_eps)


def embed_tokens(params: Params, input_ids: jax.Array, config: BertConfig) -> jax.Array:
  """Word + position + token-type (all type 0) embeddings, layer-normalised: [B, L, H]."""
  emb = params["embeddings"]
  length = input_ids.shape[1]
  x = jnp.take(emb["word"], input_ids, axis=0)
  x = x + emb["position"][:length][None] + emb["token_type"][0]
  return _layer_norm(x, emb["norm"], config.layer_norm_eps)


def bert_hidden_states(params: Params, input_ids: jax.Array, attention_mask: jax.Array,
                       config: BertConfig, first_token_only: bool = False,
                       precision=None) -> jax.Array:
  """The last layer's hidden states [B, L, H] ([B, 1, H] when first_token_only)."""
  key_mask = attention_mask.astype(bool)
  hidden = embed_tokens(params, input_ids, config)
  last = len(params["layers"]) - 1
  for n, layer in enumerate(params["layers"]):
    hidden = encoder_layer(layer, hidden, key_mask, config,
                           first_token_only=first_token_only and n == last,
                           precision=precision)
  return hidden


def pool(params: Params, hidden: jax.Array, attention_mask: jax.Array, pooling: str,
         normalize: bool, precision=None) -> jax.Array:
  """Pools [B, L, H] hidden states to [B, H] and optionally L2-normalises.

  cls: the first token's state; pooler: tanh(dense(first token)) as BertModel's pooler;
  mean: the mean over real tokens (attention_mask 1), as sentence-transformers.
  """
  if pooling == "cls":
    pooled = hidden[:, 0]
  elif pooling == "pooler":
    if "pooler" not in params:
      raise DataError("pooling 'pooler': the checkpoint has no pooler.dense weights; use "
                      "pooling 'cls' or 'mean'")
    pooled = jnp.tanh(_dense(hidden[:, 0], params["pooler"], precision))
  elif pooling == "mean":
    weights = attention_mask.astype(hidden.dtype)[..., None]
    pooled = jnp.sum(hidden * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1e-9)
  else:
    raise ValueError(f"pooling {pooling!r} is not one of {POOLINGS}")
  if normalize:
    norm = jnp.sqrt(jnp.sum(pooled * pooled, axis=-1, keepdims=True))
    pooled = pooled / jnp.maximum(norm, 1e-12)
  return pooled


def token_states(params: Params, input_ids: jax.Array, attention_mask: jax.Array,
                 config: BertConfig, normalize: bool = False,
                 precision=jax.lax.Precision.HIGHEST) -> jax.Array:
  """Per-token last-layer states [B, L, H] float32 (zero at padding), for token-level tasks.

  With `normalize`, each token's state is L2-normalised, as a teacher that normalises its
  pooled output would present it; row 0 is then the CLS-pooled embedding.
  """
  hidden = bert_hidden_states(params, input_ids, attention_mask, config, precision=precision)
  if normalize:
    norm = jnp.sqrt(jnp.sum(hidden * hidden, axis=-1, keepdims=True))
    hidden = hidden / jnp.maximum(norm, 1e-12)
  return hidden * attention_mask.astype(hidden.dtype)[..., None]


def bert_embed(params: Params, input_ids: jax.Array, attention_mask: jax.Array,
               config: BertConfig, pooling: str, normalize: bool,
               precision=jax.lax.Precision.HIGHEST) -> jax.Array:
  """Token ids [B, L] and mask [B, L] -> pooled embeddings [B, H] float32."""
  if pooling not in POOLINGS:
    raise ValueError(f"pooling {pooling!r} is not one of {POOLINGS}")
  hidden = bert_hidden_states(params, input_ids, attention_mask, config,
                              first_token_only=pooling != "mean", precision=precision)
  return pool(params, hidden, attention_mask, pooling, normalize, precision)
