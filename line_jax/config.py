"""The base ml_collections config every file under configs/ starts from.

Every number a user may want to change lives here (or in a config file that overrides it);
`--config.a.b=value` on any entry point overrides a single field.
"""

from typing import Any, Optional

import ml_collections

from line_jax.search import scorer as scorer_lib
from line_jax.util import segments


def merge_settings(defaults: ml_collections.ConfigDict, given: Optional[Any],
                   what: str) -> ml_collections.ConfigDict:
  """`defaults` with the fields `given` (a ConfigDict, a dict or None) sets; lists become
  tuples. A field `defaults` does not have is an error that names `what` and the known ones."""
  if given is not None:
    given = given.to_dict() if isinstance(given, ml_collections.ConfigDict) else dict(given)
    for key, value in given.items():
      if key not in defaults:
        raise ValueError(f"unknown {what} setting {key!r}; known: {sorted(defaults)}")
      defaults[key] = tuple(value) if isinstance(value, list) else value
  return defaults


def teacher_config(**kw) -> ml_collections.ConfigDict:
  t = ml_collections.ConfigDict()
  t.kind = "hf"            # "hf" (a Hugging Face BERT folder or name), "precomputed", "synthetic",
                           # "finetuned" (`finetune.base` fine-tuned on the dataset, see below)
  t.name = "teacher"       # short name used in the cache folder and the report
  t.model = ""             # HF model name or local folder (kind="hf")
  t.preset = ""            # "bge", "coder", "sapbert", "minilm" or "" (use fields below)
  t.pooling = "cls"        # "cls", "mean" (masked) or "pooler"
  t.normalize = True       # L2-normalise the pooled output
  t.max_length = 512
  t.batch_size = 64        # export batch size (rows per encoder call)
  t.dtype = "float16"      # storage dtype of the cache (float16 or float32)
  t.negated_rows = "used"  # "used": embed negated forms only of concepts seen negated in pairs
                           # (other rows zero); "all": every concept
  t.text_rows = "all"      # "all": every pair's text; "eval": only pairs outside the train
                           # split (a teacher whose texts only evaluation reads, e.g. the
                           # concept teacher: LINE trains on teacher 1's texts alone)
  t.precomputed = ""       # folder with text/concepts/negated .npy or .parquet (kind="precomputed")
  t.dim = 0                # embedding dimension; 0 = read from the model / files
  t.seed = 0               # kind="synthetic" only
  t.finetune = finetune_config()   # kind="finetuned" only (line_jax.teachers.finetune)
  t.update(kw)
  return t


def finetune_config(**kw) -> ml_collections.ConfigDict:
  """A concept teacher fine-tuned on the dataset's ontology (teacher kind "finetuned"):
  contrastive name <-> synonym/layperson/definition training, then weight averaging."""
  f = ml_collections.ConfigDict()
  f.base = "all-MiniLM-L6-v2"   # model fine-tuned (name or folder); pooling etc. as the teacher's
  f.steps = 100                 # optimizer steps (> 0). Held-out synonym acc@1 (validation,
                                # 2000 candidates; base 0.618): 100 steps at lr 3e-4 0.744,
                                # 150 at 2e-4 0.762, in 166 s vs 235 s of a 2-core CPU, the
                                # largest part of the first run; 300 at 1e-4 took 419 s
  f.batch_size = 64             # pairs per step; the other pairs of a batch are the negatives
  f.learning_rate = 3e-4        # AdamW peak, linear warm-up then cosine decay to 0
  f.warmup_steps = 20
  f.weight_decay = 0.01
  f.temperature = 0.05          # InfoNCE temperature on cosine scores
  f.alpha = 0.5                 # merge weight: alpha * fine-tuned + (1 - alpha) * base
  f.select_alpha = True         # choose alpha among `alphas` on the validation synonyms
  f.alphas = (0.0, 0.25, 0.5, 0.75, 1.0)
  f.relations = ("synonym", "layperson")   # edges whose tail names the head (positives)
  f.entry_relations = ("synonym", "layperson", "related", "broad", "narrow")  # tails are
                                # entries, not terms: left out of the retrieval candidates
  f.use_definitions = True      # name <-> definition for train-split definition pairs
  f.max_definitions = 1000      # at most this many, a fixed random sample (0 = all): a
                                # definition costs a few synonym pairs
  f.name_max_length = 32        # tokens of names and synonyms
  f.definition_max_length = 32  # tokens of definitions (mostly the first sentence)
  f.buckets = [8, 16, 32]       # padded lengths (static shapes: one compilation each)
  f.train_embeddings = False    # also train the token/position embedding tables
  f.train_layers = 0            # train only the top this many layers (0 = all): the frozen
                                # ones run forward only, no backward pass
  f.eval_candidates = 2000      # term names the alpha curve ranks each query among (the
                                # query's term + a fixed random sample; 0 = all terms)
  f.validation_size = 500       # synonym edges held out (string and edge) to choose alpha
  f.seed = 0
  f.checkpoint_every = 50       # steps between orbax checkpoints (a killed run resumes)
  f.eval_batch_size = 256       # rows per encoder call when scoring the validation set
  f.update(kw)
  return f


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()

  c.data = ml_collections.ConfigDict()
  c.data.dir = ""                          # dataset folder (docs/data.md)
  c.data.builder = ""                      # "", "synthetic" or "hpo": build data.dir if missing
  c.data.negation_template = "{name} unobserved"
  c.data.max_concepts_per_pair = 32        # longer lists are truncated, with a count in the log
  c.data.segment_pattern = segments.DEFAULT_PATTERN   # clause split (regex) of the texts a
                                           # model.text_vectors="segments" run trains on:
                                           # teacher 1 embeds every pair text's clauses once
                                           # (line_jax.cache.segments), keyed by this pattern
  c.data.max_segments_per_pair = 8         # segments of a pair in a batch (the whole text +
                                           # up to this - 1 clauses, the first ones); more
                                           # are left out, with a count in the log
  c.data.heldout_terms = 0.0               # fraction of the terms kept out of training (pairs,
                                           # graph, negatives), for the placement protocol
                                           # (line_jax.data.heldout_terms); 0 = none
  c.data.heldout_terms_seed = 0            # which terms (a stable hash of seed and term id)
  c.data.synthetic = ml_collections.ConfigDict(dict(
      num_concepts=300, num_pairs=400, num_relation_types=3, edges_per_concept=3,
      mean_concepts=4, negated_fraction=0.15, dim=32, noise=0.1, seed=0))
  c.data.hpo = ml_collections.ConfigDict()  # filled by configs that use the HPO builder

  c.teacher1 = teacher_config(name="teacher1")   # text encoder (BGE / GPT-4 / MiniLM)
  c.teacher2 = teacher_config(name="teacher2")   # concept encoder (CODER / MiniLM)

  c.model = ml_collections.ConfigDict()
  c.model.dim = 0                  # joint dimension d; 0 = teacher 1's dimension (paper)
  c.model.init = "identity"        # "identity" where square (start from the teachers' spaces), else lecun
  c.model.init_scale = 1.0
  c.model.text_hidden = 0           # > 0: F gets a residual MLP of this width beside its
                                   # linear map, F(t) = t W + b + MLP(t), starting at zero
  c.model.concept_hidden = 0        # > 0: the same for G's W_c (needs loss.normalize)
  c.model.text_vectors = "sentence"  # "sentence": one vector per text, F(text) (the paper);
                                   # "segments": many, F of the text and of each of its
                                   # clauses (data.segment_pattern), a concept scored against
                                   # a text by its best segment (late interaction), in the
                                   # per-concept term of training and in retrieval
  c.model.leaky_relu_slope = 0.2   # GAT attention nonlinearity
  c.model.table_dtype = "auto"      # teacher-2 tables on the device: "" = as stored in the
                                   # cache (float16 by default), "bfloat16", "float32", or
                                   # "auto": as stored where the CPU kernel (cpu_kernel) reads
                                   # them; else float32 on CPU while both tables fit in
                                   # cpu_table_budget_gib (XLA:CPU would otherwise convert
                                   # every gathered row, every step); else as stored
  c.model.cpu_table_budget_gib = 2.0
  c.model.cpu_kernel = "auto"      # G's edge attention on the fused CPU kernel
                                   # (line_jax.model.kernels, compiled on first use): "auto" = on
                                   # the CPU backend when it builds and the table is float32
                                   # or float16, "on" (error if it cannot), "off" (XLA path)
  c.model.cpu_kernel_threads = 0   # threads of that kernel; 0 = the usable cores / local devices

  c.graph = ml_collections.ConfigDict()
  # None: every type in the data. A tuple, so that it can be set on the command line:
  # --config.graph.relations='("parent_child", "synonym")'.
  c.graph.relations = ml_collections.FieldReference(None, field_type=tuple)
  c.graph.fanout = 8               # sampled neighbours per relation type per concept (static)
  c.graph.edge_block = 4           # G's edge slots per block: each receiver's edges are padded
                                   # to a multiple of this so that G sums per block densely
  c.graph.symmetric = True         # attend along both directions of every edge

  c.loss = ml_collections.ConfigDict()
  c.loss.margin = 0.5              # triplet margin on squared distances; with 0.1 the hinge
                                   # was inactive for almost every negative of the teachers'
                                   # (already well aligned) spaces, so nothing was learnt
  c.loss.normalize = False         # L2-normalise F(t) and G(c) before the score (paper: raw)
  c.loss.align_weight = 1.0
  c.loss.align_reduction = "per_pair"   # hinge terms summed over a pair's in-batch negatives,
                                   # averaged over pairs (the paper's double sum per pair);
                                   # "per_term": averaged over all (i, i') terms, which left
                                   # the alignment gradient ~B times weaker than the others
  c.loss.align_batch_reference = 128   # the per-pair sum is scaled by (this - 1) /
                                   # (batch - 1): the term weighs as at batch 128 (the
                                   # paper's) whatever train.batch_size; 0 = the raw sum
  c.loss.relational_weight = 1.0
  c.loss.relational_margin = 0.2   # triplet margin on cosine, known vs corrupted edge
  c.loss.relational_edges = 64     # known edges sampled per batch
  c.loss.negation_weight = 0.1     # 1.0 pushed negated entries so hard that alignment
                                   # fell below the teachers' (HPO + MiniLM)
  c.loss.negation_delta = 0.3      # 0 < delta <= 0.5 (paper, A.1)
  c.loss.concept_weight = 0.0      # per-concept InfoNCE: each text vs each concept of its
                                   # list, against the batch's other concepts, by cosine
                                   # (losses.concept_contrastive_terms); 0 = off
  c.loss.concept_temperature = 0.05
  c.loss.segment_pooling = "max"   # model.text_vectors="segments": a concept's score against
                                   # a text in the per-concept term is its best segment's
                                   # cosine ("max"), or the mean of the segments' cosines
                                   # weighted by their softmax at loss.segment_temperature
                                   # ("softmax")
  c.loss.segment_temperature = 0.05
  c.loss.sentence_concept_weight = 0.0   # "segments": the per-concept term of the whole
                                   # text alone as well (the "sentence" run's term); 0 = off
  c.loss.uniformity_weight = 0.0   # uniformity of the batch's concepts under G (Wang and
                                   # Isola); 0 = off
  c.loss.uniformity_t = 2.0
  c.loss.name_weight = 0.0         # name term: F(teacher 1's name of c) vs G(c), InfoNCE
                                   # against the batch's other concepts (temperature
                                   # loss.concept_temperature); reaches concepts that no
                                   # training text lists, through the relational loss's
                                   # random corrupted tails; 0 = off
  c.loss.text_weight = 0.0         # text term: each listed concept vs the batch's texts
                                   # that do not list it, InfoNCE (temperature
                                   # loss.concept_temperature; losses.text_contrastive_terms);
                                   # 0 = off
  c.loss.random_concepts = 0        # concepts drawn from the whole dictionary per device
                                   # and step as extra negatives (and name-term anchors) of
                                   # the per-concept and name terms; they cost G's work
  c.loss.hard_negatives = 0        # per listed concept and step: this many of its nearest
                                   # other-term concepts under teacher 2 (drawn from its
                                   # loss.hard_pool nearest) join the batch as negatives of
                                   # the per-concept and name terms; 0 = off
  c.loss.hard_pool = 16
  c.loss.same_term_negatives = True   # False: in the per-concept and name terms, a
                                   # concept of the same term (term_id: a term and its
                                   # synonym entries) as a positive is no negative

  c.train = ml_collections.ConfigDict()
  c.train.seed = 0
  c.train.batch_size = 128
  c.train.learning_rate = 1e-3      # at lr_reference_batch; the rule below scales it
  c.train.lr_batch_rule = "sqrt"    # to another batch size: x (B / reference)^(1/2)
  c.train.lr_reference_batch = 128  # ("linear": ^1, "none": unscaled; state.batch_scale)
  c.train.lr_schedule = "constant"  # or "cosine": per stage, from learning_rate down to
  c.train.lr_final_fraction = 0.0   # learning_rate * this (line_jax.training.state.learning_rate)
  c.train.stage1_epochs = 3
  c.train.stage2_epochs = 2
  c.train.log_every = 50
  c.train.checkpoint_every = 500   # steps; also at the end of every epoch and stage
  c.train.keep_checkpoints = 3
  c.train.prefetch = 2             # batches prepared ahead in a background thread
  c.train.batch_builder = "device"  # "device": each device builds its shard of the batch
                                   # inside the jitted step from device-resident tables
                                   # (line_jax.training.device_batches); "host": the numpy reference
                                   # builder (line_jax.training.host_batches), bit-identical batches
  c.train.text_table = "auto"      # teacher 1's text rows for the device builder: "device",
                                   # "host" (each batch's rows streamed from the host memmap:
                                   # bounded host memory) or "auto" (on the device when they fit
                                   # device_table_budget_gib)
  c.train.device_table_budget_gib = 0.0   # 0: half of a GPU's free memory, 2 GiB on a CPU
  c.train.stop_after_steps = 0     # >0: exit after this global step (tests of resumption)
  c.train.evaluate = True          # python -m line_jax.train evaluates at the end
  c.train.on_nonfinite = "stop"    # a NaN/inf loss or gradient: "stop" (error naming the step
                                   # and term) or "skip" (that batch's update is dropped, logged)
  c.train.max_nonfinite_skips = 10  # "skip": more skipped batches than this stop the run

  c.recovery = ml_collections.ConfigDict()
  c.recovery.threshold = 0.9       # paper: cosine >= 0.9
  c.recovery.estimator = "residual"   # "residual" (paper), "completion_gain", "nearest" or
                                      # "segment" (it embeds the texts' clauses: minutes)
                                      # (line_jax/eval/retrieval.py)
  c.recovery.confidence = "score"     # "score" or "margin" (over the runner-up), vs threshold
  c.recovery.segment_explained_k = 3   # estimator "segment": a clause whose this many
                                   # best terms hold a listed one is explained
  c.recovery.segment_pair_block = 2048   # "segment": pairs whose clauses are embedded at once
  c.recovery.segment_skip_groups = ()   # "segment": concept groups (concepts.parquet
                                   # `group`) never proposed, e.g. modifiers; a clause
                                   # naming one is explained
  # The confidence of recovered concepts (line_jax.search.scorer, trained without real text by
  # line_jax.training.scorer_fit; docs/evaluation.md "Recognition on annotated documents").
  c.recovery.scorer = ml_collections.ConfigDict(dict(
      use=False,                 # stage 2 (estimator "segment" only): add a pair's most
                                 # confident candidate when its confidence reaches
      threshold=0.5,             # this, the scorer (fitted on the stage-1 space) deciding
      top_k=3,                   # candidates per clause (its best unlisted terms)
      cue_words=list(scorer_lib.DEFAULT_CUE_WORDS),   # feature `cue`: negation / normality
      hierarchy_relation="parent_child",   # relation whose head is a child of its tail
      max_vignettes=1500,        # training-split synthetic vignettes (known missing concepts)
      max_definitions=2000,      # training-split real texts (definitions): their candidates
                                 # are taken as wrong (they list what they name)
      max_names=6000,            # dictionary entries of training-only terms, as clauses
      vignette_weight=1.0, definition_weight=1.0, name_weight=0.5,   # of each source, in all
      l2=1.0,                    # ridge on the standardised weights
      seed=0))
  c.recovery.top_k = 8             # candidates searched, so that ones already in the list can be skipped
  c.recovery.dictionary_chunk = 8192   # concepts projected per call through G
  c.recovery.pair_block = 32768    # pairs whose residuals are formed and searched at once:
                                   # bounds recovery's host memory (a few block x d arrays)

  c.search = ml_collections.ConfigDict()
  c.search.memory_budget_mb = 1024  # bounds the score block of one device
  c.search.query_chunk = 0          # 0 = derived from the budget
  c.search.key_chunk = 0
  c.search.use_bf16 = False         # bf16 scores, float32 re-scoring of the top candidates
  c.search.rescore_factor = 4

  c.eval = ml_collections.ConfigDict()
  c.eval.split = "test"
  c.eval.reuse = True               # a rerun keeps an evaluation made of the same parameters,
                                    # teachers, data, settings and code (line_jax.eval.reuse)
  c.eval.num_negatives = 100
  c.eval.plots = True               # the PNG figures beside report.md; False: numbers only
  c.eval.seed = 0
  c.eval.cv_folds = 5
  c.eval.max_pairs = 0              # 0 = all
  c.eval.top_k_accuracy = 10
  c.eval.max_relation_pairs = 0     # per held-out relation class; 0 = all
  c.eval.recovery_thresholds = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
  c.eval.map_ridge = 1e-6           # relative ridge of the least-squares map baselines
  c.eval.map_max_train_pairs = 200000
  c.eval.geometry_max_points = 2000
  c.eval.chunk_size = 4096
  c.eval.classifier_learning_rate = 1e-3
  c.eval.classifier_max_epochs = 2000
  c.eval.classifier_tol = 1e-5
  c.eval.classifier_early_stopping = "loss_change"   # or "validation"
  c.eval.classifier_validation_fraction = 0.1
  c.eval.classifier_patience = 20
  c.eval.classifier_standardize = True
  c.eval.classifier_weight_decay = 0.0
  # --- token-level NER protocol (line_jax.eval.ner; python -m line_jax.evaluate --ner=PATH) ---
  c.eval.ner = ml_collections.ConfigDict()
  c.eval.ner.epochs = 20                    # paper: 20
  c.eval.ner.seeds = (0, 1, 2, 3, 4)        # paper: five random initialisations
  c.eval.ner.learning_rate = 1e-3
  c.eval.ner.batch_size = 256               # tokens per step
  c.eval.ner.standardize = True             # features scaled by the training split's mean/std
  c.eval.ner.split_fractions = (0.8, 0.1, 0.1)   # one-file input: sentence split
  c.eval.ner.split_seed = 0
  c.eval.ner.max_sentences = 0              # per split; 0 = all
  c.eval.ner.encode_batch_rows = 32         # sentence windows per encoder batch
  # --- end NER protocol ---
  # --- transfer protocol (line_jax.eval.transfer): a CNN over concept lists, site A -> B ---
  c.eval.transfer = ml_collections.ConfigDict(dict(
      enabled=True, filters=100, batch_size=128, learning_rate=1e-2, tune_learning_rate=1e-3,
      max_epochs=20, tune_max_epochs=20, patience=2, validation_fraction=0.1,
      target_fraction=0.1, num_seeds=5, seed=0,
      site_column="auto",        # "auto": the pairs' `site` column, else `source`
      site_pattern="",           # regex with one group mapping column values to sites
      sites=(),                  # the two compared sites; () = the two largest
      embeddings=("onehot", "teacher1", "teacher2", "line"),
      without_branch_roots="auto",   # also run without branch roots when label = a group
      # Too few examples to learn or transfer anything: a site with fewer labelled pairs is
      # skipped (the protocol is not run); a label class with fewer pairs at either site is
      # left out (10: the fewest whose target_fraction of 0.1 labels one); fewer than two
      # classes left, skipped. Each with its reason in the result and the report.
      min_site_pairs=20, min_class_pairs=10,
      eval_chunk=512))
  # --- end transfer protocol ---
  # --- single concepts (line_jax/eval/retrieval.py, realtext.py) ---
  c.eval.retrieval_ks = [1, 10]     # recall@k of text -> concept / definition -> term
  c.eval.placement_seen_queries = 2000   # placement protocol (a run with data.heldout_terms):
                                    # reference queries drawn from trained terms
  c.eval.retrieval_chunk = 256      # texts scored against the whole dictionary at once
  c.eval.retrieval_by_term = True   # a term's synonym entries count as the term (best of
                                    # them); False: each entry ranked on its own
  c.eval.recovery_hit_k = 10        # hit rate of a missing concept among the k best
  c.eval.recovery_estimators = ["residual", "completion_gain", "nearest",
                                "segment"]        # in the report
  c.eval.recovery_min_precision = 0.5   # operating point: best recall at this precision
  c.eval.recovery_min_added = 10    # ... among thresholds adding at least this many
  c.eval.recovery_curve_points = 41
  c.eval.recovery_choose_on = "valid"   # the split whose vignettes choose each recovery
                                    # operating point, then applied to the evaluated split
                                    # ("" = none; skipped when it is the evaluated split)
  c.eval.realtext = ""              # JSONL of real sentences (text + concept ids) to score
                                    # at evaluation only; "" = none
  c.eval.realtext_ids_field = "hpo_ids"   # its field with the list of concept ids
  # --- recognition on annotated documents (line_jax/eval/recognition.py; --only=recognition) ---
  c.eval.recognition_docs = ""      # JSONL of documents (doc_id, text, ids in
                                    # eval.realtext_ids_field) read at evaluation only; "" =
                                    # skipped (the point is then chosen on the validation
                                    # vignettes)
  c.eval.recognition_ontology = ""  # OBO file of the alt-id map and subtree filter; "" = the
                                    # HPO builder's (none for other builders)
  c.eval.recognition_subtree = "HP:0000118"   # gold and predictions kept inside this
                                    # root's subtree ("" = all); needs the ontology
  c.eval.recognition_split_seed = 0   # documents split by doc_id: choosing / reporting half
  c.eval.recognition_min_precision = 0.8   # operating-point rule (search.scorer.choose_point)
  c.eval.recognition_grid = [round(0.02 * i, 2) for i in range(1, 50)]   # thresholds tried
  c.eval.recognition_confidences = ["scorer", "cosine"]   # may be shipped: the one of
                                    # higher F1 at its point on the choosing data (ties: first)
  c.eval.recognition_max_vignettes = 0   # validation vignettes scored (0 = all)
  c.eval.segment_pattern = segments.DEFAULT_PATTERN   # clause split (regex) of the
                                    # segment-wise retrieval (real text, and the API's
                                    # nearest_concepts(segments=True)); "" = whole texts
  # --- end ---
  return c
