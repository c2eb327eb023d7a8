"""A trained LINE, ready to embed: `LineModel.load(workdir)`.

  model = LineModel.load("runs/hpo")
  model.embed_texts(["Patient denies headache."])            # F(teacher 1(text))   [n, d]
  model.embed_concepts([["HP:0001250", "HP:0002315"]],
                       negated=[[False, True]])               # mean of G(...)       [n, d]
  model.nearest_concepts("recurrent seizures", k=5)           # [(concept_id, name, cosine)]
  model.text_vectors                                          # "sentence" or "segments"
  model.embed_segments(["Short stature, kyphosis."])          # per text: F of it and its
                                                              # clauses [1 + clauses, d]

A run trained with model.text_vectors="segments" gives a text many vectors (the text and its
clauses, split by config.data.segment_pattern) and scores a concept by its best one:
`nearest_concepts` does so by default there (segments=True); `embed_texts` stays the whole
text's vector, the one the list proxies are aligned with.

Behaviour at the edges (tested in tests/test_api.py):
  * New strings are embedded with teacher 1's encoder, so only a run whose teacher 1 is a
    Hugging Face teacher (kind "hf") can embed them; a run on precomputed or synthetic
    embeddings raises `TeacherUnavailableError` and can project only the rows it has
    (`dataset_texts`, `project_texts`, `project_concepts`).
  * Texts longer than `teacher1.max_length` tokens (with [CLS]/[SEP]) are truncated to that
    length, as in the export of the training cache: words past the limit do not change the
    vector. `overlong_texts` lists them; `embed_texts(..., overlong="error")` refuses them.
  * Concept lists: every id must be in the run's concepts.parquet (else `DataError` naming
    the list and position); an empty list has no proxy (`DataError`); `negated` must match
    the lists' lengths and hold only booleans (True / False, numpy's included: "false", 0
    or 1 raise `TypeError` naming the list and position). An empty input gives a [0, d]
    array.
  * Counts and switches are checked before any work: `k` is a positive int (at most the
    dictionary's size where it ranks the dictionary), `segments` a bool.
  * A negated concept whose negated form teacher 2 never embedded (export with
    negated_rows="used" embeds only concepts seen negated in the pairs) is embedded on the
    fly by an HF teacher 2, otherwise raises `DataError` that says how to export them all.

The vectors live in the joint space that training used (each concept and text L2-normalised
when `loss.normalize` was on; a proxy is the mean of its concepts' vectors).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import List, Optional, Sequence, Tuple

import jax
import ml_collections
import numpy as np

from line_jax.training import checkpoint as ckpt_lib
from line_jax import config as config_lib
from line_jax.api import proposals
from line_jax.cache import export as exporter
from line_jax.cache import segments as segments_cache
from line_jax.model import graph as graph_lib
from line_jax.model import kernels
from line_jax.model import projection
from line_jax.util import segments as segments_lib
from line_jax.training import state as state_lib
from line_jax.training.objective import text_vectors as text_vectors_of
from line_jax.model import tables
from line_jax import teachers
from line_jax.teachers import finetune
from line_jax.training import workdir as workdir_lib
from line_jax.data import prepare_dataset
from line_jax.data.dataset import DataError
from line_jax.search.topk import cosine_top_k

OVERLONG_CHOICES = ("truncate", "error")


class TeacherUnavailableError(ValueError):
  """A teacher that cannot embed new strings (kind "synthetic" or "precomputed")."""


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config.json that `line_jax.train` saved in `workdir`."""
  path = os.path.join(os.path.abspath(workdir), "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: not found; is {workdir} the work dir of a "
                            "`python -m line_jax.train` run?")
  saved = workdir_lib.read_json(path, "run's config")   # names the file if damaged
  # Over the current defaults, so that a run saved before a field existed gets its default.
  config = config_lib.base_config()
  config.update(saved)
  return config


def restore_state(workdir: str, config: ml_collections.ConfigDict, abstract: dict
                  ) -> Tuple[dict, dict]:
  """(state, progress) of the latest checkpoint of `workdir`, its arrays on this process's
  first device whatever devices the run trained on (the checkpoint names those: several,
  or other processes'); FileNotFoundError if none."""
  here = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = {k: v if k == "added" else jax.tree.map(      # "added" is saved from the host
      lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=here), v)
      for k, v in abstract.items()}
  restored, progress = ckpt_lib.restore_latest(
      ckpt_lib.manager(workdir, config.train.keep_checkpoints, local=True), target)
  if restored is None:
    raise FileNotFoundError(f"{os.path.abspath(workdir)}/checkpoints: no checkpoint to load")
  return restored, progress


def _check_string_list(texts: Sequence[str], what: str) -> List[str]:
  if isinstance(texts, (str, bytes)):
    raise TypeError(f"{what} takes a list of strings, not a single string")
  texts = list(texts)
  for i, t in enumerate(texts):
    if not isinstance(t, str):
      raise TypeError(f"{what}: item {i} is a {type(t).__name__}, not a str")
  return texts


def check_count(k, what: str, limit: Optional[int] = None) -> int:
  """k as an int; TypeError unless an integer (not a bool), ValueError unless in [1, limit]."""
  if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
    raise TypeError(f"{what}: k={k!r} is a {type(k).__name__}; k must be a positive int")
  if k < 1 or (limit is not None and k > limit):
    bound = f" and at most {limit}, the number of concepts in the dictionary" if limit else ""
    raise ValueError(f"{what}: k={int(k)} must be at least 1{bound}")
  return int(k)


def check_flag(value, name: str, what: str) -> bool:
  """value as a bool; TypeError unless a Python or numpy bool ("false", 0 or "no" are not)."""
  if not isinstance(value, (bool, np.bool_)):
    raise TypeError(f"{what}: {name}={value!r} is a {type(value).__name__}; expected True "
                    "or False")
  return bool(value)


def _negated_flags(flags, i: int, length: int) -> np.ndarray:
  """The negation flags of concept list i as a bool array; only True / False (Python or
  numpy bools) are flags: a string such as "false", or 0 and 1, raise TypeError naming the
  list and position (np.asarray(..., bool) would read "false" as True)."""
  if isinstance(flags, (str, bytes)) or not hasattr(flags, "__len__"):
    raise TypeError(f"negated list {i} is a {type(flags).__name__}; pass a list of True / "
                    f"False, one per concept id")
  if isinstance(flags, np.ndarray) and flags.dtype == bool and flags.ndim == 1:
    out = flags
  else:
    for pos, flag in enumerate(flags):
      if not isinstance(flag, (bool, np.bool_)):
        raise TypeError(f"negated list {i}, position {pos}: {flag!r} is a "
                        f"{type(flag).__name__}; negation flags must be True or False")
    out = np.asarray(list(flags), bool)
  if len(out) != length:
    raise DataError(f"concept list {i}: negated has {len(out)} entries for {length} ids")
  return out


def _check_heldout_terms(recorded, config) -> None:
  """ValueError when `config` holds out other terms than the run was trained with: the
  placement protocol would rank terms the model did see as if it had not."""
  if recorded is None:
    return
  for name in ("heldout_terms", "heldout_terms_seed"):
    was, now = recorded.data.get(name, 0), config.data.get(name, 0)
    if was != now:
      raise ValueError(f"config.data.{name}={now!r}, but the run in this work dir was "
                       f"trained with {was!r}: the terms held out of training are the run's "
                       "own and cannot be changed afterwards")


class LineModel:
  """Parameters of a run plus what projecting needs: dataset, teachers, graph.

  Attributes:
    config: the run's ConfigDict.
    workdir: absolute path of the run's work dir.
    dataset: the `line_jax.data.Dataset` the run trained on (its concepts are the dictionary).
    teacher1, teacher2: the cached `TeacherEmbeddings` of the dataset's rows.
    table: the knowledge graph's `NeighbourTable`.
    params: LINE's parameters (F, G, negation projector).
    progress: the checkpoint's progress record (stage, epoch, step, seed, ...), or None.
  """

  def __init__(self, config, workdir, dataset, teacher1, teacher2, table, params,
               progress: Optional[dict] = None):
    self.config, self.workdir, self.dataset = config, workdir, dataset
    self.teacher1, self.teacher2, self.table, self.params = teacher1, teacher2, table, params
    self.progress = progress
    table_dtype = tables.resolve_table_dtype(config, teacher2)
    self.concept_table = tables.table_to_device(teacher2.concepts, dtype=table_dtype)
    self.negated_table = tables.table_to_device(teacher2.negated, dtype=table_dtype)
    self._projection = projection.ProjectionSettings.from_config(
        config, kernels.use_kernel(str(config.model.cpu_kernel), self.concept_table))
    self._negated_missing = ~np.asarray(teacher2.negated != 0).any(axis=1)
    self._dictionary: Optional[np.ndarray] = None
    self._negated_cache: dict = {}
    self._encoders: dict = {}
    self._index: Optional[dict] = None

  @classmethod
  def load(cls, workdir: str, config: Optional[ml_collections.ConfigDict] = None
           ) -> "LineModel":
    """Loads the latest checkpoint of a `line_jax.train` (or `line_jax.soup`) work dir.

    Args:
      workdir: the run's work dir (config.json, checkpoints/, embeddings/).
      config: overrides the saved config.json (e.g. another eval split); shapes must match.
    """
    workdir = os.path.abspath(workdir)
    # The run's own config (absent for a work dir written without one, e.g. a benchmark's
    # when `config` is given; load_config's error names the file when neither is there).
    recorded = (load_config(workdir) if config is None or os.path.exists(
        os.path.join(workdir, workdir_lib.CONFIG_FILE)) else None)
    config = config if config is not None else recorded
    _check_heldout_terms(recorded, config)
    dataset = prepare_dataset(config)
    workdir_lib.check_data(workdir, dataset.root)   # the data the checkpoints were made on
    teacher1 = exporter.ensure_teacher(config.teacher1, dataset, workdir)
    teacher2 = exporter.ensure_teacher(config.teacher2, dataset, workdir)
    table = graph_lib.NeighbourTable.from_dataset(dataset, config.graph.symmetric)
    # The restore target is the run's (its model and its optimiser: a constant rate and a
    # schedule keep different state trees), whatever `config` says of training.
    abstract = state_lib.abstract_state(recorded or config, len(dataset.relation_types),
                                        teacher1.dim, teacher2.dim, dataset.num_pairs)
    restored, progress = restore_state(workdir, config, abstract)
    return cls(config, workdir, dataset, teacher1, teacher2, table, restored["params"],
               progress)

  def fingerprint(self) -> dict:
    """What this model's vectors are made of, for telling its outputs from another's:
    a SHA-256 of its parameters (and the checkpoint's step), the cache keys of both
    teachers' embeddings, and a SHA-256 of the config's fields that shape a run (those a
    resumed run must keep: `line_jax.training.workdir.fingerprint`). Retraining the work dir, a
    later checkpoint, another teacher or another setting each change it."""
    shaped = workdir_lib.shaping_config(self.config)
    teacher_key = lambda t: str(t.meta.get("key") or os.path.basename(t.path))  # noqa: E731
    return {"params_sha256": ckpt_lib.state_checksum(self.params),
            "step": None if self.progress is None else self.progress.get("step"),
            "teacher1": teacher_key(self.teacher1), "teacher2": teacher_key(self.teacher2),
            "config_sha256": hashlib.sha256(json.dumps(shaped, sort_keys=True).encode())
            .hexdigest()}

  @property
  def dim(self) -> int:
    """The joint space's dimension d."""
    return int(self.params["text_proj"]["w"].shape[1])

  @property
  def text_vectors(self) -> str:
    """The run's kind of text vectors (config model.text_vectors): "sentence", one per
    text (the paper's), or "segments", the text's and its clauses', a concept scored
    against a text by the best of them."""
    return text_vectors_of(self.config)

  @property
  def segment_pattern(self) -> str:
    """The clause split of `embed_segments` and `nearest_concepts(segments=True)`: the one
    a "segments" run trained with (config.data.segment_pattern), else
    config.eval.segment_pattern ("" = the whole text alone)."""
    if self.text_vectors == "segments":
      return str(self.config.data.get("segment_pattern", segments_lib.DEFAULT_PATTERN) or "")
    return str(self.config.eval.get("segment_pattern", segments_lib.DEFAULT_PATTERN) or "")

  # --- projections of rows the run already has -----------------------------------------
  def project_texts(self, text_emb: np.ndarray) -> np.ndarray:
    """F over teacher-1 text embeddings [N, d_t] -> [N, d]."""
    return projection.project_texts(self.params, np.asarray(text_emb, np.float32),
                                    self._projection.chunk, self._projection.normalize)

  def project_concepts(self, concept_idx: np.ndarray, negated: np.ndarray) -> np.ndarray:
    """G of dictionary rows (deterministic neighbours), negated rows through their projector."""
    return projection.project_concepts(
        self.params, self.table, self.concept_table, self.negated_table,
        np.asarray(concept_idx), np.asarray(negated, bool), self._projection)

  def dictionary(self) -> np.ndarray:
    """[C, d] G of every concept (positive form), computed once."""
    if self._dictionary is None:
      n = self.dataset.num_concepts
      self._dictionary = self.project_concepts(np.arange(n), np.zeros(n, bool))
    return self._dictionary

  def dataset_texts(self, pair_idx: Sequence[int]) -> np.ndarray:
    """F of the cached teacher-1 rows of dataset pairs `pair_idx` (any teacher kind)."""
    given = np.asarray(pair_idx)
    if given.size and not np.issubdtype(given.dtype, np.integer):
      raise TypeError(f"dataset_texts: pair indices must be integers, got {given.dtype} "
                      f"(e.g. {given.ravel()[0]!r})")
    pair_idx = given.astype(np.int64)
    if pair_idx.size and (pair_idx.min() < 0 or pair_idx.max() >= self.dataset.num_pairs):
      raise IndexError(f"pair indices must lie in [0, {self.dataset.num_pairs})")
    if pair_idx.size == 0:
      return np.zeros((0, self.dim), np.float32)
    unique, inverse = np.unique(pair_idx, return_inverse=True)
    return self.project_texts(np.asarray(self.teacher1.text[unique], np.float32))[inverse]

  def dataset_segments(self, pair_idx: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """F of dataset pairs' segments from teacher 1's cached rows: ([N, d] vectors, [N] int64
    position in `pair_idx` of the pair each belongs to), each pair's whole text first, then
    its clauses (`segment_pattern`; a teacher-1 cache of them is made first when missing:
    `line_jax.cache.segments`)."""
    pair_idx = np.asarray(pair_idx, np.int64)
    whole = self.dataset_texts(pair_idx)
    seg = segments_cache.ensure_segments(self.config.teacher1, self.teacher1, self.dataset,
                                         self.segment_pattern, "all", progress_bar=False)
    rows, owner = seg.pair_rows(pair_idx, np.float32)
    clauses = self.project_texts(rows) if len(rows) else np.zeros((0, self.dim), np.float32)
    vectors = np.concatenate([whole, clauses])
    owner = np.concatenate([np.arange(len(pair_idx)), owner])
    order = np.argsort(owner, kind="stable")       # the whole text before its clauses
    return vectors[order], owner[order]

  # --- new strings ------------------------------------------------------------------------
  def text_encoder(self):
    """Teacher 1's `Encoder` (loaded once); TeacherUnavailableError unless kind "hf"."""
    return self._encoder("teacher1")

  def _encoder(self, which: str):
    if which not in self._encoders:
      tcfg = finetune.new_strings_config(self.config[which], getattr(self, which).meta)
      if tcfg.kind != "hf":
        raise TeacherUnavailableError(
            f"{which} is a {tcfg.kind!r} teacher: it cannot embed new strings, only the "
            "dataset's rows it was given; use dataset_texts / project_texts / "
            "project_concepts, or train with a Hugging Face teacher (kind 'hf')")
      self._encoders[which] = teachers.load_encoder(tcfg)
    return self._encoders[which]

  def overlong_texts(self, texts: Sequence[str]) -> np.ndarray:
    """Indices of the texts that teacher 1 truncates (more than max_length tokens)."""
    texts = _check_string_list(texts, "overlong_texts")
    encoder = self._encoder("teacher1")
    if not texts:
      return np.zeros(0, np.int64)
    ids = encoder.tokenizer(texts, truncation=False, padding=False,
                            return_attention_mask=False, return_token_type_ids=False,
                            verbose=False)["input_ids"]
    limit = encoder.settings.max_length
    return np.asarray([i for i, t in enumerate(ids) if len(t) > limit], np.int64)

  def embed_texts(self, texts: Sequence[str], overlong: str = "truncate") -> np.ndarray:
    """Teacher 1 then F: [len(texts), d].

    Args:
      texts: strings to embed.
      overlong: "truncate" (default): texts over teacher1.max_length tokens are cut there,
        as in the training cache; "error": raise ValueError naming the first such text.
    """
    texts = _check_string_list(texts, "embed_texts")
    if overlong not in OVERLONG_CHOICES:
      raise ValueError(f"overlong={overlong!r}: expected one of {OVERLONG_CHOICES}")
    encoder = self._encoder("teacher1")
    if not texts:
      return np.zeros((0, self.dim), np.float32)
    if overlong == "error":
      too_long = self.overlong_texts(texts)
      if len(too_long):
        raise ValueError(f"text {int(too_long[0])} (and {len(too_long) - 1} more) is longer "
                         f"than teacher1.max_length={encoder.settings.max_length} tokens")
    return self.project_texts(encoder.encode(texts))

  def embed_segments(self, texts: Sequence[str]) -> List[np.ndarray]:
    """Many vectors per text: for each text, [1 + its clauses, d], F of the whole text and
    of each clause (`segment_pattern`), through teacher 1. A concept's score against a
    text is its best cosine over them (what `nearest_concepts(segments=True)` ranks by)."""
    texts = _check_string_list(texts, "embed_segments")
    pieces, owner = segments_lib.segment_table(texts, self.segment_pattern)
    vectors = self.embed_texts(pieces) if pieces else np.zeros((0, self.dim), np.float32)
    bounds = np.searchsorted(owner, np.arange(len(texts) + 1))
    return [vectors[bounds[i]:bounds[i + 1]] for i in range(len(texts))]

  # --- concept lists ----------------------------------------------------------------------
  def concept_rows(self, concept_ids: Sequence[str]) -> np.ndarray:
    """Dictionary row of each concept id; DataError naming an unknown id."""
    if self._index is None:
      self._index = self.dataset.concept_index()
    rows = []
    for pos, cid in enumerate(concept_ids):
      row = self._index.get(cid)
      if row is None:
        raise DataError(f"concept id {cid!r} (position {pos}) is not in "
                        f"{self.dataset.root}/concepts.parquet")
      rows.append(row)
    return np.asarray(rows, np.int64)

  def _fill_missing_negated(self, concept_idx: np.ndarray) -> None:
    """Embeds with teacher 2 the negated forms its cache lacks (zero rows), if it can."""
    missing = np.unique(concept_idx[self._negated_missing[concept_idx]])
    if not len(missing):
      return
    try:
      encoder = self._encoder("teacher2")
    except TeacherUnavailableError as e:
      raise DataError(
          f"concept {self.dataset.concept_ids[missing[0]]!r} (and {len(missing) - 1} more) "
          "has no negated-form embedding in teacher 2's cache "
          f"({self.teacher2.path}/negated.npy); re-export with "
          "--config.teacher2.negated_rows=all") from e
    vectors = encoder.encode([str(self.dataset.negated_names[j]) for j in missing])
    self.negated_table = self.negated_table.at[missing].set(
        vectors.astype(self.negated_table.dtype))
    self._negated_missing[missing] = False

  def _negated_rows(self, concept_idx: np.ndarray) -> np.ndarray:
    """G of the negated forms of `concept_idx`, each distinct concept projected once."""
    todo = np.asarray([j for j in np.unique(concept_idx) if j not in self._negated_cache],
                      np.int64)
    if len(todo):
      self._fill_missing_negated(todo)
    return projection.project_negated(self.project_concepts, concept_idx,
                                      cache=self._negated_cache)

  def embed_concept_rows(self, offsets: np.ndarray, concept_idx: np.ndarray,
                         negated: np.ndarray) -> np.ndarray:
    """Proxies of lists given as flat dictionary rows: list i is `[offsets[i]:offsets[i+1]]`.

    Args:
      offsets: [N + 1] nondecreasing int, offsets[0] = 0, offsets[-1] = len(concept_idx).
      concept_idx: [M] dictionary rows.
      negated: [M] bool, True where the concept is negated.

    Returns:
      [N, d] float32: the mean of G over each list; NaN rows for empty lists.
    """
    offsets = np.asarray(offsets, np.int64)
    concept_idx = np.asarray(concept_idx, np.int64)
    negated = np.asarray(negated, bool)
    if len(concept_idx) != len(negated) or offsets[-1] != len(concept_idx):
      raise ValueError(f"{len(concept_idx)} concepts, {len(negated)} negated flags and "
                       f"offsets ending at {offsets[-1]} must agree")
    rows = np.asarray(self.dictionary()[concept_idx], np.float32)
    if negated.any():
      rows[negated] = self._negated_rows(concept_idx[negated])
    sums = np.add.reduceat(np.concatenate([rows, np.zeros((1, self.dim), np.float32)]),
                           np.minimum(offsets[:-1], len(rows)), axis=0)
    counts = np.diff(offsets)
    with np.errstate(invalid="ignore", divide="ignore"):
      return np.where(counts[:, None] > 0, sums / counts[:, None], np.nan).astype(np.float32)

  def embed_concepts(self, concept_lists: Sequence[Sequence[str]],
                     negated: Optional[Sequence[Sequence[bool]]] = None) -> np.ndarray:
    """Cross-form proxies: the mean of G over each list of dictionary concept ids.

    Args:
      concept_lists: one list of concept ids (concepts.parquet `concept_id`) per item.
      negated: per list, a bool per id (True: the concept is negated); default all False.

    Returns:
      [len(concept_lists), d] float32.

    Raises:
      DataError: an unknown id, an empty list, or a negated list of another length.
      TypeError: a list that is a string, an id that is not a string, or a negation flag
        that is not a bool (e.g. "false", 0, 1), named by list and position.
    """
    if isinstance(concept_lists, (str, bytes)):
      raise TypeError("embed_concepts takes a list of concept-id lists")
    if isinstance(negated, (str, bytes)):
      raise TypeError("embed_concepts: negated takes one list of True / False per concept "
                      "list")
    if negated is not None and len(negated) != len(concept_lists):
      raise DataError(f"negated has {len(negated)} lists for {len(concept_lists)} "
                      "concept lists")
    offsets, flat_rows, flat_negated = [0], [], []
    for i, ids in enumerate(concept_lists):
      if isinstance(ids, (str, bytes)):
        raise TypeError(f"concept list {i} is a string; pass a list of ids, e.g. [{ids!r}]")
      if len(ids) == 0:
        raise DataError(f"concept list {i} is empty: a proxy needs at least one concept")
      for pos, cid in enumerate(ids):
        if not isinstance(cid, str):
          raise TypeError(f"concept list {i}, position {pos}: {cid!r} is a "
                          f"{type(cid).__name__}; concept ids are strings")
      neg = (np.zeros(len(ids), bool) if negated is None
             else _negated_flags(negated[i], i, len(ids)))
      try:
        flat_rows.append(self.concept_rows(ids))
      except DataError as e:
        raise DataError(f"concept list {i}: {e}") from None
      flat_negated.append(neg)
      offsets.append(offsets[-1] + len(ids))
    if not flat_rows:
      return np.zeros((0, self.dim), np.float32)
    return self.embed_concept_rows(np.asarray(offsets), np.concatenate(flat_rows),
                                   np.concatenate(flat_negated))

  # --- retrieval --------------------------------------------------------------------------
  def top_concepts(self, queries: np.ndarray, k: int = 10
                   ) -> List[List[Tuple[str, str, float]]]:
    """For each query vector [Q, d], the k dictionary concepts of highest cosine."""
    k = check_count(k, "top_concepts", self.dataset.num_concepts)
    scores, idx = cosine_top_k(np.atleast_2d(queries), self.dictionary(), k)
    return [[(str(self.dataset.concept_ids[j]), str(self.dataset.names[j]), float(s))
             for s, j in zip(row_scores, row_idx)] for row_scores, row_idx in zip(scores, idx)]

  def nearest_concepts(self, text: str, k: int = 10, segments: Optional[bool] = None,
                       operating_point: Optional[str] = proposals.STORED) -> list:
    """The k dictionary concepts whose G is closest (cosine) to F(text).

    With `segments`, each concept is scored by its best cosine over the text and its
    clauses (`line_jax.util.segments`, split by `segment_pattern`): a text that names
    several findings finds each through the clause that names it (on real annotated
    sentences, recall@10 of the annotated concepts rose from about 0.55 to 0.81). The
    default (None) is True for a run trained with many vectors per text
    (`text_vectors` "segments"), False otherwise.

    Returns (concept_id, name, cosine) tuples, best first; where the work dir holds an
    operating point (`python -m line_jax.evaluate --only=recognition`) and
    `operating_point="stored"` (the default), `proposals.Nearest` tuples that add
    recovery's `confidence` in each and whether it `passes` the point. None: the plain
    tuples whatever the work dir holds.
    """
    if not isinstance(text, str):
      raise TypeError(f"nearest_concepts takes one string, not a {type(text).__name__}")
    k = check_count(k, "nearest_concepts", self.dataset.num_concepts)
    if segments is None:
      segments = self.text_vectors == "segments"
    segments = check_flag(segments, "segments", "nearest_concepts")
    point = proposals.operating_point(self, operating_point)
    if not segments:
      hits = self.top_concepts(self.embed_texts([text]), k)[0]
      return hits if point is None else proposals.nearest(self, text, hits, [text], point)
    pieces = segments_lib.split_segments(text, self.segment_pattern)
    # The best k by best segment are among the union of every segment's own best k.
    best = {}
    for row in self.top_concepts(self.embed_texts(pieces), k):
      for cid, name, score in row:
        if cid not in best or score > best[cid][1]:
          best[cid] = (name, score)
    ranked = sorted(best.items(), key=lambda item: -item[1][1])[:k]
    hits = [(cid, name, score) for cid, (name, score) in ranked]
    return hits if point is None else proposals.nearest(self, text, hits, pieces, point)

  def missing_concepts(self, text: str, concept_ids: Sequence[str], k: int = 5,
                       operating_point: Optional[str] = proposals.STORED) -> list:
    """Concepts that a clause of `text` names and its list `concept_ids` does not explain.

    Where the work dir holds an operating point (`python -m line_jax.evaluate
    --only=recognition`, docs/evaluation.md "Recognition on annotated documents") and
    `operating_point="stored"` (the default): up to k `proposals.Recovered` (concept id,
    name, cosine, clause, confidence, passes), most confident first, ranked by the point's
    confidence (the recovery scorer's probability, or the cosine); `passes` says whether it
    reaches the point's threshold (chosen for a precision of the extractor plus these
    additions of at least 0.8 on real documents).

    Otherwise (no point, or `operating_point=None`): the "segment" recovery estimator
    (`line_jax.search.terms.segment_candidates`): each clause (config.eval.segment_pattern)
    whose config.recovery.segment_explained_k best terms hold none of the list's (in either
    polarity, synonyms counting as their term) proposes its best term, unless that is of a
    group in config.recovery.segment_skip_groups; up to k (concept id, name, cosine,
    clause), best first. Unknown ids raise DataError."""
    if not isinstance(text, str):
      raise TypeError(f"missing_concepts takes one string, not a {type(text).__name__}")
    if isinstance(concept_ids, (str, bytes)):
      raise TypeError("missing_concepts takes a list of concept ids, not a single string")
    k = check_count(k, "missing_concepts")
    listed = self.concept_rows(list(concept_ids))
    return proposals.missing(self, text, listed, k,
                             proposals.operating_point(self, operating_point))
