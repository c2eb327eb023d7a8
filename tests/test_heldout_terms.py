"""Terms held out of training (data.heldout_terms): which are chosen, what training no longer
sees of them, and the placement protocol that ranks them afterwards."""

import dataclasses
import json
import os

from absl.testing import absltest, parameterized
import numpy as np

from line_jax import config as config_lib
from line_jax.api import line_model
from line_jax.cache import store as emb_lib
from line_jax.data import heldout_terms, prepare_dataset
from line_jax.data.dataset import load_dataset, write_dataset
from line_jax.eval import placement
from line_jax.eval import runner
from line_jax.model import graph as graph_lib
from line_jax.search.terms import Groups
from line_jax.training import host_batches as pipeline


def write_terms(root, num_terms=200, seed=0, order=None):
  """`num_terms` terms T<i>, each with 0-2 synonym entries (concepts.parquet term_id), a
  random graph over the entries and 300 pairs over the terms (definitions among them)."""
  rng = np.random.default_rng(seed)
  ids, terms = [], []
  for t in range(num_terms):
    for k in range(1 + int(rng.integers(0, 3))):
      ids.append(f"T{t}" if k == 0 else f"T{t}-S{k}")
      terms.append(f"T{t}")
  perm = np.arange(len(ids)) if order is None else order(len(ids))
  ids, terms = [ids[i] for i in perm], [terms[i] for i in perm]
  head = rng.integers(0, len(ids), 600)
  tail = rng.integers(0, len(ids), 600)
  keep = head != tail
  relations = dict(head_id=[ids[i] for i in head[keep]], tail_id=[ids[i] for i in tail[keep]],
                   relation=["r"] * int(keep.sum()))
  pairs = {k: [] for k in ("pair_id", "text", "concept_ids", "negated", "rho", "split",
                           "source", "source_id")}
  for p in range(300):
    listed = [f"T{t}" for t in rng.choice(num_terms, size=1 + p % 3, replace=False)]
    pairs["pair_id"].append(f"p{p}")
    pairs["text"].append(f"text {p}")
    pairs["concept_ids"].append(listed)
    pairs["negated"].append([bool(i % 2) for i in range(len(listed))])
    pairs["rho"].append(1.0)
    pairs["split"].append(("train", "train", "train", "valid", "test")[p % 5])
    pairs["source"].append("definition" if len(listed) == 1 else "vignette")
    pairs["source_id"].append(listed[0])
  write_dataset(root, dict(concept_id=ids, name=[f"name of {i}" for i in ids], term_id=terms),
                relations, pairs)
  return root


class SelectionTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = write_terms(os.path.join(absltest.get_default_test_tmpdir(), "terms"))
    cls.ds = load_dataset(cls.root)

  def chosen_ids(self, ds, fraction, seed=0):
    return set(ds.concept_ids[heldout_terms.select(ds, fraction, seed)])

  def test_whole_terms_of_about_the_fraction_are_chosen(self):
    ds = self.ds
    rows = heldout_terms.select(ds, 0.2)
    terms = heldout_terms.term_ids(ds)
    held_terms = set(terms[rows])
    # Every entry of a chosen term, no entry of another.
    np.testing.assert_array_equal(rows, np.flatnonzero(np.isin(terms, list(held_terms))))
    self.assertBetween(len(held_terms), 20, 60)      # 40 expected of 200 (binomial sd 5.7)
    self.assertEqual(heldout_terms.select(ds, 0.0).size, 0)

  def test_stable_over_row_order_nested_in_the_fraction_and_seeded(self):
    other = load_dataset(write_terms(
        os.path.join(self.create_tempdir().full_path, "permuted"),
        order=lambda n: np.random.default_rng(5).permutation(n)))
    self.assertEqual(self.chosen_ids(self.ds, 0.1), self.chosen_ids(other, 0.1))
    self.assertLess(self.chosen_ids(self.ds, 0.1), self.chosen_ids(self.ds, 0.3))
    self.assertNotEqual(self.chosen_ids(self.ds, 0.3), self.chosen_ids(self.ds, 0.3, seed=1))

  @parameterized.parameters(-0.1, 1.0, 2)
  def test_a_fraction_outside_the_range_is_refused(self, fraction):
    with self.assertRaisesRegex(ValueError, r"config\.data\.heldout_terms"):
      heldout_terms.select(self.ds, fraction)

  def test_prepare_dataset_marks_them(self):
    c = config_lib.base_config()
    c.data.dir = self.root
    self.assertIsNone(prepare_dataset(c).heldout_concepts)
    c.data.heldout_terms = 0.2
    c.data.heldout_terms_seed = 3
    np.testing.assert_array_equal(prepare_dataset(c).heldout_concepts,
                                  heldout_terms.select(self.ds, 0.2, 3))

  def test_a_model_is_loaded_with_the_terms_its_run_held_out(self):
    recorded, config = config_lib.base_config(), config_lib.base_config()
    recorded.data.heldout_terms = 0.05
    line_model._check_heldout_terms(recorded, recorded)
    line_model._check_heldout_terms(None, config)
    with self.assertRaisesRegex(ValueError, r"data\.heldout_terms=0\.0, but the run .* 0\.05"):
      line_model._check_heldout_terms(recorded, config)
    config.data.heldout_terms = 0.05
    config.data.heldout_terms_seed = 2
    with self.assertRaisesRegex(ValueError, r"heldout_terms_seed=2"):
      line_model._check_heldout_terms(recorded, config)

  def test_training_view_leaves_out_their_edges_and_train_pairs(self):
    ds = dataclasses.replace(self.ds, heldout_concepts=heldout_terms.select(self.ds, 0.2))
    view = heldout_terms.training_view(ds)
    held = heldout_terms.held_mask(ds)
    touching = held[ds.edge_head] | held[ds.edge_tail]
    self.assertGreater(touching.sum(), 0)
    np.testing.assert_array_equal(view.edge_head, ds.edge_head[~touching])
    np.testing.assert_array_equal(view.edge_type, ds.edge_type[~touching])
    self.assertFalse((held[view.edge_head] | held[view.edge_tail]).any())
    for i in range(ds.num_pairs):
      lists_held = bool(held[ds.pair_concepts(i)[0]].any())
      expected = (heldout_terms.HELDOUT_SPLIT if ds.split[i] == "train" and lists_held
                  else ds.split[i])
      self.assertEqual(view.split[i], expected, f"pair {i}")
    self.assertGreater((view.split == heldout_terms.HELDOUT_SPLIT).sum(), 0)
    self.assertIs(heldout_terms.training_view(self.ds), self.ds)

  def test_the_host_builder_never_draws_them(self):
    """Random, hard-negative and corrupted receivers of the view's batches are never held
    out (and without the mark the same draws do hit those entries)."""
    marked = dataclasses.replace(self.ds, heldout_concepts=heldout_terms.select(self.ds, 0.3))
    view = heldout_terms.training_view(marked)
    held = heldout_terms.held_mask(marked)
    unmarked = dataclasses.replace(view, heldout_concepts=None)
    seen = {}
    for name, ds in (("view", view), ("unmarked", unmarked)):
      lists = pipeline.PairLists(ds, 8)
      table = graph_lib.NeighbourTable.from_dataset(ds)
      shapes = pipeline.batch_shapes(lists, 16, 1, 1, 2, 64, 4)
      text = np.zeros((ds.num_pairs, 4), np.float32)
      builder = pipeline.BatchBuilder(lists, table, text, shapes, 0, random_concepts=64)
      train = ds.split_indices("train")
      hits = 0
      for step in range(8):
        _, shards, _ = builder._plan(train[step * 16 % len(train):][:16], step)
        for shard in shards:
          hits += int(held[shard["pos"]].sum() + held[shard["trip"].reshape(-1)].sum())
      seen[name] = hits
    self.assertEqual(seen["view"], 0)
    self.assertGreater(seen["unmarked"], 0)


def teacher_rows(concepts, text):
  """In-memory teacher embeddings (the negated rows are not read here)."""
  return emb_lib.TeacherEmbeddings(text, concepts, concepts, {}, "<memory>")


class PlacementTest(absltest.TestCase):

  def test_exclusion_ranks_match_a_loop(self):
    rng = np.random.default_rng(0)
    keys = rng.standard_normal((30, 5))
    queries = rng.standard_normal((12, 5))
    groups = Groups.from_ids([f"c{i}" for i in range(30)], [f"t{i % 9}" for i in range(30)])
    target = rng.integers(0, 9, 12)
    own = np.where(np.arange(12) % 3, rng.integers(0, 30, 12), -1)
    got = placement.exclusion_ranks(queries, keys, target, own, groups, chunk=5)
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    for m in range(12):
      cos = unit(keys) @ unit(queries[m])
      best = np.full(9, -np.inf)
      for c in range(30):
        if c != own[m]:
          best[groups.group_of[c]] = max(best[groups.group_of[c]], cos[c])
      self.assertEqual(got[m], 1 + int((best > best[target[m]]).sum()), f"query {m}")

  def test_protocol_on_a_model_against_a_direct_computation(self):
    root = write_terms(os.path.join(self.create_tempdir().full_path, "terms"), num_terms=60)
    ds = load_dataset(root)
    ds = dataclasses.replace(ds, heldout_concepts=heldout_terms.select(ds, 0.25))
    rng = np.random.default_rng(1)
    c = config_lib.base_config()
    c.data.heldout_terms = 0.25
    c.eval.placement_seen_queries = 7
    t1 = teacher_rows(rng.standard_normal((ds.num_concepts, 6)).astype(np.float32),
                      rng.standard_normal((ds.num_pairs, 6)).astype(np.float32))
    t2 = teacher_rows(rng.standard_normal((ds.num_concepts, 4)).astype(np.float32), None)
    w = rng.standard_normal((6, 3)).astype(np.float32)
    g = rng.standard_normal((ds.num_concepts, 3)).astype(np.float32)
    model = type("Model", (), dict(config=c, dataset=ds, teacher1=t1, teacher2=t2,
                                   project_texts=lambda self, x: x @ w,
                                   dictionary=lambda self: g))()
    labels = {"teacher1": "t1", "teacher2": "t2", "line": "LINE"}
    result = placement.evaluate_placement(model, labels)
    groups = Groups.from_ids(ds.concept_ids, heldout_terms.term_ids(ds))
    held = heldout_terms.held_mask(ds)
    size = np.bincount(groups.group_of)
    queries = np.flatnonzero(held & (size[groups.group_of] > 1))
    ranks = placement.exclusion_ranks(t1.concepts[queries] @ w, g, groups.group_of[queries],
                                      queries, groups)
    line = result["name_to_term"]["line"]
    self.assertEqual(line["heldout"]["count"], len(queries))
    self.assertAlmostEqual(line["heldout"]["mrr"], float(np.mean(1.0 / ranks)), places=6)
    self.assertEqual(line["seen"]["count"], 7)
    own = result["name_to_own_entry"]["line"]["heldout"]
    self.assertEqual(own["count"], int(held.sum()))
    defs = result["definition_to_term"]["teacher1"]["heldout"]
    self.assertGreater(defs["count"], 0)
    section = placement.render_section(result)
    self.assertIn("| LINE | held out |", section)
    self.assertIn(f"{result['heldout_terms']} of the 60 terms", section)
    # Alone (`--only=placement`): the metrics.json entry and placement.md.
    workdir = self.create_tempdir().full_path
    path = runner.run_alone(model, workdir, "placement")
    self.assertEqual(os.path.basename(path), placement.REPORT_FILE)
    with open(os.path.join(workdir, "metrics.json")) as f:
      self.assertEqual(json.load(f)["placement"]["heldout_entries"], int(held.sum()))
    model.dataset = dataclasses.replace(ds, heldout_concepts=None)
    self.assertIsNone(placement.evaluate_placement(model, labels))
    self.assertEqual(placement.render_section(None), "")
    with self.assertRaisesRegex(ValueError, "held no terms out of training"):
      runner.run_alone(model, workdir, "placement")


if __name__ == "__main__":
  absltest.main()
