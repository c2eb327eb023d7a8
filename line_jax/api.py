"""A trained LINE, ready to embed: `LineModel.load(workdir)`.

  model = LineModel.load("runs/hpo")
  model.embed_texts(["Patient denies headache."])            # F(teacher 1(text))   [n, d]
  model.embed_concepts([["HP:0001250", "HP:0002315"]],
                       negated=[[False, True]])               # mean of G(...)       [n, d]
  model.nearest_concepts("recurrent seizures", k=5)           # [(concept_id, name, cosine)]

Texts and concept names that are not in the training dataset are embedded with the teachers'
encoders (Hugging Face teachers only; a run on precomputed or synthetic embeddings can
project only the rows it has). The vectors live in the joint space that training used (L2-
normalised when `loss.normalize` was on).
"""

from __future__ import annotations

import json
import os
from typing import Optional, Sequence

import jax
import ml_collections
import numpy as np

from line_jax import checkpoint as ckpt_lib
from line_jax import graph as graph_lib
from line_jax import model as model_lib
from line_jax import recovery as recovery_lib
from line_jax.data import prepare_dataset
from line_jax.data.dataset import DataError


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(os.path.abspath(workdir), "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: not found; is {workdir} the work dir of a "
                            "`python -m line_jax.train` run?")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


class LineModel:
  """Parameters of a run plus what projecting needs: dataset, teachers, graph."""

  def __init__(self, config, workdir, dataset, teacher1, teacher2, table, params):
    self.config, self.workdir, self.dataset = config, workdir, dataset
    self.teacher1, self.teacher2, self.table, self.params = teacher1, teacher2, table, params
    self.concept_table = jax.device_put(np.asarray(teacher2.concepts))
    self.negated_table = jax.device_put(np.asarray(teacher2.negated))
    self._dictionary: Optional[np.ndarray] = None
    self._encoders = {}
    self._index = None

  @classmethod
  def load(cls, workdir: str, config: Optional[ml_collections.ConfigDict] = None
           ) -> "LineModel":
    from line_jax import train as train_lib   # ensure_teacher, make_optimizer
    workdir = os.path.abspath(workdir)
    config = config if config is not None else load_config(workdir)
    dataset = prepare_dataset(config)
    teacher1 = train_lib.ensure_teacher(config.teacher1, dataset, workdir)
    teacher2 = train_lib.ensure_teacher(config.teacher2, dataset, workdir)
    table = graph_lib.NeighbourTable.from_dataset(dataset, config.graph.symmetric)
    dim = int(config.model.dim or teacher1.dim)
    params = model_lib.init_params(jax.random.PRNGKey(0), teacher1.dim, teacher2.dim, dim,
                                   len(dataset.relation_types), config.model.init,
                                   config.model.init_scale)
    optimizer = train_lib.make_optimizer(config)
    abstract = {"params": params, "opt_state": optimizer.init(params),
                "step": np.zeros((), np.int32),
                "added": np.zeros(dataset.num_pairs, np.int32)}
    restored, _ = ckpt_lib.restore_latest(
        ckpt_lib.manager(workdir, config.train.keep_checkpoints), abstract)
    if restored is None:
      raise FileNotFoundError(f"{workdir}/checkpoints: no checkpoint to load")
    return cls(config, workdir, dataset, teacher1, teacher2, table, restored["params"])

  # --- projections of rows the run already has -----------------------------------------
  @property
  def _normalize(self) -> bool:
    return bool(self.config.loss.normalize)

  def project_texts(self, text_emb: np.ndarray) -> np.ndarray:
    """F over teacher-1 text embeddings [N, d_t] -> [N, d]."""
    return recovery_lib.project_texts(self.params, np.asarray(text_emb, np.float32),
                                      int(self.config.recovery.dictionary_chunk),
                                      self._normalize)

  def project_concepts(self, concept_idx: np.ndarray, negated: np.ndarray) -> np.ndarray:
    """G of dictionary rows (deterministic neighbours), negated rows through their projector."""
    return recovery_lib.project_concepts(
        self.params, self.table, self.concept_table, self.negated_table,
        np.asarray(concept_idx), np.asarray(negated, bool), self.config.graph.fanout,
        int(self.config.recovery.dictionary_chunk), self.config.model.leaky_relu_slope,
        self._normalize)

  def dictionary(self) -> np.ndarray:
    """[C, d] G of every concept (positive form), computed once."""
    if self._dictionary is None:
      n = self.dataset.num_concepts
      self._dictionary = self.project_concepts(np.arange(n), np.zeros(n, bool))
    return self._dictionary

  # --- the user-facing API ---------------------------------------------------------------
  def _encoder(self, which: str):
    if which not in self._encoders:
      tcfg = self.config[which]
      if tcfg.kind != "hf":
        raise ValueError(f"{which} is a {tcfg.kind!r} teacher: new strings cannot be embedded; "
                         "use project_texts / project_concepts on its cached rows")
      from line_jax import teachers
      self._encoders[which] = teachers.load_encoder(tcfg)
    return self._encoders[which]

  def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
    """Teacher 1 then F. Texts longer than teacher1.max_length tokens are truncated (as in
    export)."""
    if isinstance(texts, str):
      raise TypeError("embed_texts takes a list of strings")
    if not texts:
      return np.zeros((0, self.params["text_proj"]["w"].shape[1]), np.float32)
    return self.project_texts(self._encoder("teacher1").encode(list(texts)))

  def concept_rows(self, concept_ids: Sequence[str]) -> np.ndarray:
    if self._index is None:
      self._index = self.dataset.concept_index()
    rows = []
    for pos, cid in enumerate(concept_ids):
      if cid not in self._index:
        raise DataError(f"concept id {cid!r} (position {pos}) is not in "
                        f"{self.dataset.root}/concepts.parquet")
      rows.append(self._index[cid])
    return np.asarray(rows, np.int64)

  def embed_concepts(self, concept_lists: Sequence[Sequence[str]],
                     negated: Optional[Sequence[Sequence[bool]]] = None) -> np.ndarray:
    """Cross-form proxies: the mean of G over each list of dictionary concept ids."""
    out = []
    for i, ids in enumerate(concept_lists):
      if len(ids) == 0:
        raise DataError(f"concept list {i} is empty: a proxy needs at least one concept")
      neg = np.zeros(len(ids), bool) if negated is None else np.asarray(negated[i], bool)
      if len(neg) != len(ids):
        raise DataError(f"concept list {i}: negated has {len(neg)} entries for {len(ids)} ids")
      rows = self.concept_rows(ids)
      out.append(self.project_concepts(rows, neg).mean(0))
    return np.stack(out) if out else np.zeros((0, self.dictionary().shape[1]), np.float32)

  def nearest_concepts(self, text: str, k: int = 10):
    """The k dictionary concepts whose G is closest (cosine) to F(text)."""
    from line_jax import search as search_lib
    query = self.embed_texts([text])
    scores, idx = search_lib.search_topk(query, self.dictionary(), k, normalize=True)
    return [(self.dataset.concept_ids[j], self.dataset.names[j], float(s))
            for s, j in zip(scores[0], idx[0])]
