"""Tests of the HPO dataset builder on a slice of the real release files, and its parts."""

import collections
import json
import os
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import pyarrow.parquet as pq

from line_jax.data import hpo
from line_jax.data.hpo import graph as hpo_graph
from line_jax.data.hpo import ontology as hpo_ontology
from line_jax.data.hpo import splits as hpo_splits
from line_jax.data.hpo import vignettes as hpo_vignettes
from line_jax.data import obo
from line_jax.data.dataset import load_dataset

SLICE_TERMS = 700
SLICE_DISEASES = 40


def write_obo_slice(source: str, target: str, num_terms: int) -> None:
  """Copies the header and the first `num_terms` [Term] stanzas of an OBO file."""
  seen = 0
  with open(source, encoding="utf-8") as f, open(target, "w", encoding="utf-8") as out:
    for line in f:
      if line.startswith("[Term]"):
        seen += 1
        if seen > num_terms:
          break
      elif line.startswith("[Typedef]"):
        break
      out.write(line)


def write_hpoa_slice(source: str, target: str, term_ids: set, num_diseases: int) -> None:
  """Keeps annotations to `term_ids` of the first diseases with >= 4 such phenotype rows."""
  header, rows = [], collections.defaultdict(list)
  with open(source, encoding="utf-8") as f:
    for line in f:
      if line.startswith("#") or line.startswith("database_id"):
        header.append(line)
        continue
      cells = line.split("\t")
      if cells[3] in term_ids and cells[10] == "P":
        rows[cells[0]].append(line)
  kept = [d for d, lines in rows.items() if len(lines) >= 4][:num_diseases]
  with open(target, "w", encoding="utf-8") as out:
    out.writelines(header)
    for d in kept:
      out.writelines(rows[d])


def slice_config(tmp: str) -> "ml_collections.ConfigDict":
  config = hpo.hpo_settings()
  config.obo_path = os.path.join(tmp, "hp_slice.obo")
  config.hpoa_path = os.path.join(tmp, "slice.hpoa")
  config.max_vignettes = 60
  config.vignettes_per_disease = 2
  config.heldout_fraction = 0.2
  config.num_sibling_pairs = 30
  config.min_co_annotations = 1
  config.max_co_annotated_edges = 50
  config.absent_pool_min_diseases = 2
  config.typo_rate = 0.2
  return config


class HpoSliceBuildTest(parameterized.TestCase):
  """One build over the first terms of hp.obo and a few diseases of phenotype.hpoa."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    write_obo_slice(hpo_ontology.package_data_path("hp.obo"), os.path.join(cls.tmp, "hp_slice.obo"),
                    SLICE_TERMS)
    cls.terms = hpo_ontology.live_terms(obo.read_obo(os.path.join(cls.tmp, "hp_slice.obo")))
    write_hpoa_slice(hpo_ontology.package_data_path("phenotype.hpoa"),
                     os.path.join(cls.tmp, "slice.hpoa"), set(cls.terms), SLICE_DISEASES)
    cls.config = slice_config(cls.tmp)
    cls.root = os.path.join(cls.tmp, "ds")
    cls.stats = hpo.build_hpo_dataset(cls.root, cls.config)
    cls.concepts = pq.read_table(os.path.join(cls.root, "concepts.parquet")).to_pylist()
    cls.relations = pq.read_table(os.path.join(cls.root, "relations.parquet")).to_pylist()
    cls.heldout = pq.read_table(os.path.join(cls.root, "heldout_relations.parquet")).to_pylist()
    cls.pairs = pq.read_table(os.path.join(cls.root, "pairs.parquet")).to_pylist()

  def test_load_dataset_accepts_the_output(self):
    ds = load_dataset(self.root)
    self.assertEqual(ds.num_pairs, len(self.pairs))
    self.assertEqual(ds.num_concepts, len(self.concepts))
    self.assertIsNotNone(ds.true_offsets)
    self.assertEqual(len(ds.heldout_head), len(self.heldout))

  def test_concept_counts(self):
    num_synonyms = len([c for c in self.concepts if c["kind"] != "term"])
    self.assertEqual(self.stats["terms"], len(self.terms))
    self.assertEqual(len(self.concepts), len(self.terms) + num_synonyms)
    self.assertEqual(self.stats["synonym_entries"], num_synonyms)
    raw = sum(len(t.synonyms) for t in self.terms.values())
    self.assertEqual(num_synonyms + self.stats["synonyms_skipped_duplicate"], raw)
    for c in self.concepts:
      self.assertEqual(c["negated_name"], f"{c['name']} unobserved")
      self.assertTrue(c["group"])

  def test_groups_are_top_level_branches(self):
    group = {c["concept_id"]: c["group"] for c in self.concepts}
    self.assertEqual(group["HP:0000118"], "Phenotypic abnormality")
    self.assertEqual(group["HP:0000003"], group["HP:0000107"])  # as its parent, renal cyst
    # A term whose parents fall outside the slice is the root of its own group.
    self.assertEqual(group["HP:0000006"], "Autosomal dominant inheritance")

  def test_groups_on_the_whole_ontology(self):
    terms = hpo_ontology.live_terms(obo.read_obo(hpo_ontology.package_data_path("hp.obo")))
    branch = hpo_ontology.branch_roots(terms)
    self.assertEqual(terms[branch["HP:0000006"]].name, "Mode of inheritance")
    self.assertEqual(terms[branch["HP:0001250"]].name, "Abnormality of the nervous system")
    self.assertLen(terms, 19034)

  def test_relation_counts_in_stats(self):
    train = collections.Counter(r["relation"] for r in self.relations)
    held = collections.Counter(r["relation"] for r in self.heldout)
    self.assertEqual(self.stats["relations"], dict(train))
    self.assertEqual(self.stats["heldout_relations"], dict(held))
    for relation in ("parent_child", "synonym", "layperson", "co_annotated"):
      self.assertGreater(train[relation], 0, relation)
    self.assertGreater(held["sibling"], 0)
    before = self.stats["relations_before_holdout"]
    for relation, count in before.items():
      removed = count - train[relation]
      self.assertGreaterEqual(removed, held[relation], relation)
    self.assertLessEqual(before["co_annotated"], self.config.max_co_annotated_edges)
    with open(os.path.join(self.root, "stats.json")) as f:
      self.assertEqual(json.load(f)["pairs"], len(self.pairs))

  def test_heldout_edges_absent_from_training_graph(self):
    train = {frozenset((r["head_id"], r["tail_id"])) for r in self.relations}
    for edge in self.heldout:
      self.assertNotIn(frozenset((edge["head_id"], edge["tail_id"])), train)

  def test_sibling_pairs_share_a_parent(self):
    for edge in self.heldout:
      if edge["relation"] == "sibling":
        a, b = self.terms[edge["head_id"]], self.terms[edge["tail_id"]]
        self.assertTrue(set(a.parents) & set(b.parents))
        self.assertNotEqual(a.term_id, b.term_id)

  def test_pairs_are_valid(self):
    self.assertGreater(len(self.pairs), 0)
    for p in self.pairs:
      self.assertTrue(p["concept_ids"])
      self.assertEqual(len(p["concept_ids"]), len(p["negated"]))
      self.assertGreater(p["rho"], 0.0)
      self.assertLessEqual(p["rho"], 1.0)
      self.assertLessEqual(len(p["text"].split()), self.config.max_words)
    sources = collections.Counter(p["source"] for p in self.pairs)
    self.assertEqual(sources["definition"] + self.stats["definitions_dropped_no_concept"],
                     self.stats["definitions"])
    self.assertEqual(sources["vignette"] + self.stats["vignettes_dropped_no_concept"],
                     self.stats["vignettes"])
    self.assertLessEqual(len({p["label"] for p in self.pairs}), self.config.num_label_classes)

  def test_every_definition_lists_its_defined_term(self):
    definitions = [p for p in self.pairs if p["source"] == "definition"]
    self.assertEqual(self.stats["definitions_dropped_no_concept"], 0)
    self.assertLen(definitions, self.stats["definitions"])
    for p in definitions:
      self.assertEqual(p["concept_ids"].count(p["source_id"]), 1)   # extracted, or added
      self.assertFalse(p["negated"][p["concept_ids"].index(p["source_id"])])
    self.assertGreater(self.stats["definitions_term_added"], 0)

  def test_definitions_without_their_term(self):
    config = hpo.with_defaults(self.config)
    config.definitions_list_term = False
    root = os.path.join(self.create_tempdir().full_path, "hpo")
    stats = hpo.build_hpo_dataset(root, config)
    self.assertGreater(stats["definitions_dropped_no_concept"], 0)
    self.assertNotIn("definitions_term_added", stats)

  def test_vignettes_are_marked_synthetic_with_truth(self):
    vignettes = [p for p in self.pairs if p["source"] == "vignette"]
    self.assertNotEmpty(vignettes)
    for p in self.pairs:
      self.assertEqual(p["synthetic"], p["source"] == "vignette")
    for p in vignettes:
      self.assertTrue(p["true_concept_ids"])
      self.assertEqual(len(p["true_concept_ids"]), len(p["true_negated"]))
    self.assertTrue(any(any(p["true_negated"]) for p in vignettes))
    self.assertTrue(any(any(p["negated"]) for p in vignettes))
    counts = self.stats["vignette_findings"]
    self.assertGreater(counts["typo"], 0)
    self.assertGreater(counts["layperson"], 0)
    extraction = self.stats["vignette_extraction"]
    self.assertGreater(extraction["precision"], 0.8)
    self.assertGreater(extraction["recall"], 0.6)
    self.assertEqual(self.stats["vignette_recall_by_wording"]["typo"]["recall"], 0.0)

  def test_splits_group_diseases_and_sibling_definitions(self):
    names = {d.disease_id: d.name for d in obo.read_hpoa(self.config.hpoa_path)}
    split_of_family = collections.defaultdict(set)
    split_of_parent = collections.defaultdict(set)
    for p in self.pairs:
      if p["source"] == "vignette":
        split_of_family[hpo_splits.disease_family(names[p["source_id"]])].add(p["split"])
      else:
        term = self.terms[p["source_id"]]
        split_of_parent[term.parents[0] if term.parents else term.term_id].add(p["split"])
    for key, splits in list(split_of_family.items()) + list(split_of_parent.items()):
      self.assertLen(splits, 1, key)
    self.assertLen({p["pair_id"] for p in self.pairs}, len(self.pairs))

  def test_build_is_deterministic(self):
    root = os.path.join(self.tmp, "again")
    hpo.build_hpo_dataset(root, self.config)
    again = pq.read_table(os.path.join(root, "pairs.parquet")).to_pylist()
    self.assertEqual(again, self.pairs)
    self.assertEqual(pq.read_table(os.path.join(root, "heldout_relations.parquet"))
                     .to_pylist(), self.heldout)


class OboReaderTest(absltest.TestCase):

  OBO = """format-version: 1.2

[Term]
id: HP:1
name: All

[Term]
id: HP:2
name: Seizure
def: "A \\"seizure\\" is an event." [PMID:1]
synonym: "Fits" EXACT layperson []
synonym: "Epileptic seizure" EXACT [ORCID:1]
synonym: "Convulsion" RELATED []
is_a: HP:1 ! All

[Term]
id: HP:3
name: Old
is_obsolete: true

[Typedef]
id: part_of
name: part of
"""
  HPOA = ("#description: test\n"
          "database_id\tdisease_name\tqualifier\thpo_id\treference\tevidence\tonset\t"
          "frequency\tsex\tmodifier\taspect\tbiocuration\n"
          "OMIM:1\tDis 1\t\tHP:2\tPMID:1\tPCS\t\t1/2\t\t\tP\tx\n"
          "OMIM:1\tDis 1\tNOT\tHP:4\tPMID:1\tPCS\t\t\t\t\tP\tx\n"
          "OMIM:1\tDis 1\t\tHP:5\tPMID:1\tPCS\t\tHP:0040285\t\t\tP\tx\n"
          "OMIM:1\tDis 1\t\tHP:6\tPMID:1\tPCS\t\t0/7\t\t\tP\tx\n"
          "OMIM:1\tDis 1\t\tHP:0000006\tPMID:1\tPCS\t\t\t\t\tI\tx\n"
          "ORPHA:2\tDis 2\t\tHP:2\tPMID:1\tTAS\t\t\t\t\tP\tx\n")

  def test_read_obo(self):
    path = os.path.join(tempfile.mkdtemp(), "t.obo")
    with open(path, "w") as f:
      f.write(self.OBO)
    terms = obo.read_obo(path)
    self.assertEqual(list(terms), ["HP:1", "HP:2", "HP:3"])
    seizure = terms["HP:2"]
    self.assertEqual(seizure.definition, 'A "seizure" is an event.')
    self.assertEqual(seizure.parents, ("HP:1",))
    self.assertEqual([(s.text, s.scope, s.synonym_type) for s in seizure.synonyms],
                     [("Fits", "EXACT", "layperson"), ("Epileptic seizure", "EXACT", ""),
                      ("Convulsion", "RELATED", "")])
    self.assertTrue(terms["HP:3"].obsolete)
    self.assertEqual(list(hpo_ontology.live_terms(terms)), ["HP:1", "HP:2"])

  def test_read_hpoa(self):
    path = os.path.join(tempfile.mkdtemp(), "t.hpoa")
    with open(path, "w") as f:
      f.write(self.HPOA)
    diseases = obo.read_hpoa(path)
    self.assertEqual([d.disease_id for d in diseases], ["OMIM:1", "ORPHA:2"])
    self.assertEqual(diseases[0].present, ("HP:2",))
    self.assertEqual(diseases[0].absent, ("HP:4", "HP:5", "HP:6"))


class PartsTest(parameterized.TestCase):

  TERMS = {
      "HP:0000001": obo.Term("HP:0000001", "All"),
      "HP:0000118": obo.Term("HP:0000118", "Phenotypic abnormality", parents=("HP:0000001",)),
      "HP:0000005": obo.Term("HP:0000005", "Mode of inheritance", parents=("HP:0000001",)),
      "B": obo.Term("B", "Abnormality of the eye", parents=("HP:0000118",)),
      "C": obo.Term("C", "Cataract", parents=("B",)),
      "D": obo.Term("D", "Nuclear cataract", parents=("C",)),
      "E": obo.Term("E", "Glaucoma", parents=("B",)),
  }

  @staticmethod
  def sibling_reference(terms, count, linked, rng):
    """sibling_pairs drawn as first written: rng.choice with the weights at every draw."""
    children = collections.defaultdict(list)
    for t, term in terms.items():
      for p in term.parents:
        children[p].append(t)
    families = sorted(p for p, c in children.items() if len(c) > 1)
    sizes = np.array([len(children[p]) for p in families], np.float64)
    weights = sizes * (sizes - 1) / (sizes * (sizes - 1)).sum()
    pairs, seen = [], set()
    for _ in range(count * 20):
      parent = families[rng.choice(len(families), p=weights)]
      a, b = rng.choice(len(children[parent]), size=2, replace=False)
      key = tuple(sorted((children[parent][a], children[parent][b])))
      if key not in seen and key not in linked:
        seen.add(key)
        pairs.append((key[0], key[1], "sibling"))
        if len(pairs) >= count:
          break
    return pairs

  @parameterized.parameters((60, 5), (60, 400), (400, 30), (400, 2000))
  def test_sibling_pairs_are_the_draw_by_draw_ones(self, num_terms, count):
    """The same pairs as drawing each family with rng.choice(p=...), on ontologies with
    fewer candidate pairs than asked for (the draws end early) and with more."""
    shape = np.random.default_rng(num_terms)
    terms = {"t0": obo.Term("t0", "root")}
    for i in range(1, num_terms):
      parents = shape.choice(i, size=min(i, 1 + int(shape.integers(2))), replace=False)
      terms[f"t{i}"] = obo.Term(f"t{i}", f"term {i}", parents=tuple(f"t{j}" for j in parents))
    linked = {tuple(sorted((t, p))) for t, term in terms.items() for p in term.parents}
    linked |= {("t1", "t2"), ("t3", "t4")}
    got = hpo_graph.sibling_pairs(terms, count, linked, np.random.default_rng(7))
    want = self.sibling_reference(terms, count, linked, np.random.default_rng(7))
    self.assertNotEmpty(got)
    self.assertEqual(got, want)

  def test_branch_roots_and_ancestors(self):
    branch = hpo_ontology.branch_roots(self.TERMS)
    self.assertEqual(branch["D"], "B")
    self.assertEqual(branch["B"], "B")
    self.assertEqual(branch["HP:0000005"], "HP:0000005")
    self.assertEqual(branch["HP:0000118"], "HP:0000118")
    ancestors = hpo_ontology.ancestor_sets(self.TERMS)
    self.assertEqual(ancestors["D"], {"C", "B", "HP:0000118", "HP:0000001"})

  def test_co_annotated_edges_skip_ancestors(self):
    diseases = [obo.Disease(str(i), "x", ("C", "D", "E"), ()) for i in range(3)]
    edges = hpo_graph.co_annotated_edges(diseases, {"C", "D", "E"},
                                   hpo_ontology.ancestor_sets(self.TERMS), 10, 2)
    self.assertEqual(sorted(edges), [("C", "E", "co_annotated"), ("D", "E", "co_annotated")])

  def test_hold_out_edges(self):
    edges = [(f"a{i}", f"b{i}", "r") for i in range(20)] + [("b0", "a0", "s")]
    train, held, collateral = hpo_graph.hold_out_edges(edges, ("r",), 0.25,
                                                 np.random.default_rng(0))
    self.assertLen(held, 5)
    held_keys = {frozenset(e[:2]) for e in held}
    self.assertFalse(held_keys & {frozenset(e[:2]) for e in train})
    self.assertEqual(len(train) + len(held) + collateral, len(edges))

  @parameterized.parameters(
      ("Developmental and epileptic encephalopathy 96",
       "developmental and epileptic encephalopathy"),
      ("Bardet-Biedl syndrome 1", "bardet biedl syndrome"),
      ("Spinocerebellar ataxia type 2A", "spinocerebellar ataxia"),
      ("Marfan syndrome", "marfan syndrome"),
      ("Osteogenesis imperfecta, type IV", "osteogenesis imperfecta"))
  def test_disease_family(self, name, family):
    self.assertEqual(hpo_splits.disease_family(name), family)

  def test_leading_sentences(self):
    text = "One two three. Four five six. Seven eight."
    self.assertEqual(hpo_vignettes.leading_sentences(text, 6), ("One two three. Four five six.", True))
    self.assertEqual(hpo_vignettes.leading_sentences(text, 60), (text, False))
    self.assertEqual(hpo_vignettes.leading_sentences("a b c d e", 3), ("a b c.", True))

  def test_make_typo_changes_one_word(self):
    rng = np.random.default_rng(0)
    for _ in range(20):
      typo = hpo_vignettes.make_typo("abnormal heart rhythm", rng)
      changed = [a != b for a, b in zip(typo.split(), "abnormal heart rhythm".split())]
      self.assertLen(typo.split(), 3)
      self.assertLessEqual(sum(changed), 1)

  def test_split_of_is_stable_and_follows_fractions(self):
    splits = [hpo_splits.split_of(0, f"k{i}", (0.8, 0.1, 0.1)) for i in range(2000)]
    self.assertEqual(splits, [hpo_splits.split_of(0, f"k{i}", (0.8, 0.1, 0.1)) for i in range(2000)])
    counts = collections.Counter(splits)
    self.assertAlmostEqual(counts["train"] / 2000, 0.8, delta=0.04)

  def test_collapse_labels(self):
    self.assertEqual(hpo_splits.collapse_labels(["a", "a", "b", "b", "c"], 3),
                     ["a", "a", "b", "b", "other"])


if __name__ == "__main__":
  absltest.main()
