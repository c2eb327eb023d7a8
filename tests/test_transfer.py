"""line_jax.eval.transfer on small planted cases (SYNTHETIC lists, labels and tables)."""

import dataclasses
import json
import os
import tempfile

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl.testing import absltest
from absl.testing import parameterized

from line_jax.config import base_config
from line_jax.data.dataset import load_dataset
from line_jax.data.dataset import write_dataset
from line_jax.cache.store import TeacherEmbeddings
from line_jax.eval import runner
from line_jax.eval.transfer import cnn
from line_jax.eval.transfer import fitting
from line_jax.eval.transfer import packing
from line_jax.eval.transfer import protocol as transfer_protocol
from line_jax.eval.transfer import report as transfer_report
from line_jax.eval.transfer import settings as transfer_settings
from tests import test_evaluate

# Tiny, quick settings: one compilation per (one-hot / table) and strategy.
FAST = transfer_settings.TransferConfig(
    filters=16, batch_size=32, learning_rate=1e-2, tune_learning_rate=1e-2, max_epochs=40,
    tune_max_epochs=20, patience=4, num_seeds=2, eval_chunk=128)
NOISE = 12          # noise concepts 0..11; deciders after them


def planted_lists(rng, count, deciders, noise=NOISE, length=4):
  """Lists of `length` - 1 noise concepts plus one decider; label = the decider's index."""
  y = rng.integers(0, len(deciders), size=count)
  flat, offsets = [], [0]
  for label in y:
    items = list(rng.choice(noise, size=length - 1, replace=False))
    items.insert(int(rng.integers(0, length)), deciders[label])
    flat.extend(items)
    offsets.append(len(flat))
  return np.array(offsets), np.array(flat), y


def problem_of(lists, y, table, cfg=FAST):
  vocab = 0 if table is not None else len(lists.entry_concept)
  table = table if table is not None else np.zeros((1, 1), np.float32)
  return fitting.Problem(jnp.asarray(lists.ids), jnp.asarray(lists.mask), jnp.asarray(y),
                         jnp.asarray(table, jnp.float32), vocab, int(y.max()) + 1, cfg)


def accuracies(result, strategy):
  return [s["accuracy"] for s in result["results"][strategy]["per_seed"]]


class PlantedTest(parameterized.TestCase):

  @parameterized.parameters("onehot", "table")
  def test_a_label_one_concept_decides_is_learnt_exactly(self, kind):
    rng = np.random.default_rng(0)
    offsets, flat, y = planted_lists(rng, 400, deciders=[NOISE, NOISE + 1, NOISE + 2])
    lists, _ = packing.pack_lists(offsets, flat, np.zeros(len(flat), bool))
    table = None
    if kind == "table":
      table = rng.normal(size=(len(lists.entry_concept), 8)).astype(np.float32)
    problem = problem_of(lists, y, table)
    train, test = np.arange(300), np.arange(300, 400)
    keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.PRNGKey(0), s))(jnp.arange(2))
    start = cnn.init_cnn_params(3, FAST.filters, problem.vocab_size, problem.table, keys)
    params, _, _ = fitting.fit(problem, start, [train[:270]] * 2, [train[270:]] * 2,
                               FAST.learning_rate, True, 60, rng)
    for scores in fitting.scores(problem, params, [test, test]):
      self.assertEqual(scores["accuracy"], 1.0)
      self.assertEqual(scores["f1"], 1.0)

  def test_unseen_concept_helps_only_through_a_close_embedding(self):
    """Site A decides by concepts a0/a1, site B by b0/b1, never seen at A.

    One-hot: b0/b1 keep their untrained rows, so direct transfer is at chance. Embeddings
    with b_k close to a_k: direct transfer is exact.
    """
    rng = np.random.default_rng(1)
    a_off, a_flat, a_y = planted_lists(rng, 300, deciders=[NOISE, NOISE + 1])
    b_off, b_flat, b_y = planted_lists(rng, 300, deciders=[NOISE + 2, NOISE + 3])
    offsets = np.r_[a_off, a_off[-1] + b_off[1:]]
    flat = np.r_[a_flat, b_flat]
    y = np.r_[a_y, b_y]
    lists, _ = packing.pack_lists(offsets, flat, np.zeros(len(flat), bool))
    site_a, site_b = np.arange(300), np.arange(300, 600)
    # Concept vectors: random; b_k = a_k + small noise.
    vectors = rng.normal(size=(NOISE + 4, 16)).astype(np.float32)
    vectors[NOISE + 2:] = vectors[NOISE:NOISE + 2] + 0.05 * rng.normal(size=(2, 16))
    table = vectors[lists.entry_concept]
    rng_for = lambda code, s: np.random.default_rng([7, code, s])  # noqa: E731

    onehot = transfer_protocol.transfer_direction(problem_of(lists, y, None), site_a, site_b,
                                                  rng_for)
    dense = transfer_protocol.transfer_direction(problem_of(lists, y, table), site_a, site_b,
                                                 rng_for)
    self.assertEqual(onehot["target_entries_unseen_at_source"],
                     dense["target_entries_unseen_at_source"])
    self.assertGreater(onehot["target_entries_unseen_at_source"], 0.2)
    for acc in accuracies(onehot, "direct"):
      self.assertLess(acc, 0.7)          # chance is 0.5
    for acc in accuracies(dense, "direct"):
      self.assertGreater(acc, 0.97)
    self.assertEqual(onehot["source_validation"]["accuracy"], 1.0)
    # With labelled target rows, full tuning learns b0/b1 even from one-hot ids.
    self.assertGreater(onehot["results"]["full"]["accuracy"],
                       onehot["results"]["direct"]["accuracy"])


class PartsTest(parameterized.TestCase):

  def test_pack_lists_pads_masks_and_keeps_negated_entries_apart(self):
    offsets = np.array([0, 2, 2, 5])
    flat = np.array([3, 3, 7, 3, 9])
    negated = np.array([False, True, False, False, False])
    lists, removed = packing.pack_lists(offsets, flat, negated)
    self.assertEqual(removed, 0)
    self.assertEqual(lists.ids.shape, (3, 3))
    np.testing.assert_array_equal(lists.mask, [[1, 1, 0], [0, 0, 0], [1, 1, 1]])
    entries = list(zip(lists.entry_concept.tolist(), lists.entry_negated.tolist()))
    self.assertEqual(entries, [(3, False), (3, True), (7, False), (9, False)])
    got = [[entries[i] for i, m in zip(r, k) if m] for r, k in zip(lists.ids, lists.mask)]
    self.assertEqual(got, [[(3, False), (3, True)], [], [(7, False), (3, False), (9, False)]])
    drop = np.zeros(10, bool)
    drop[3] = True
    lists, removed = packing.pack_lists(offsets, flat, negated, drop)
    self.assertEqual(removed, 3)
    np.testing.assert_array_equal(lists.mask.sum(axis=1), [0, 0, 2])

  def test_padding_and_order_do_not_change_the_output(self):
    model = cnn.ListCNN(num_classes=3, filters=5)
    table = jnp.asarray(np.random.default_rng(0).normal(size=(6, 4)), jnp.float32)
    ids = jnp.array([[1, 4, 2, 0, 0]])
    mask = jnp.array([[True, True, True, False, False]])
    params = model.init(jax.random.PRNGKey(0), ids, mask, table)
    out = model.apply(params, ids, mask, table)
    shuffled = model.apply(params, jnp.array([[2, 1, 4]]), jnp.ones((1, 3), bool), table)
    np.testing.assert_allclose(out, shuffled, rtol=1e-6)
    # By hand: relu(x W + b), max over the three real entries, dense.
    p = params["params"]
    h = np.maximum(np.asarray(table)[[1, 4, 2]] @ np.asarray(p["conv"]["kernel"])
                   + np.asarray(p["conv"]["bias"]), 0).max(axis=0)
    np.testing.assert_allclose(out[0], h @ np.asarray(p["dense"]["kernel"])
                               + np.asarray(p["dense"]["bias"]), rtol=1e-5, atol=1e-6)
    empty = model.apply(params, ids, jnp.zeros_like(mask), table)
    np.testing.assert_allclose(empty[0], p["dense"]["bias"], atol=1e-7)

  def test_onehot_conv_is_a_width_one_conv_over_one_hot_vectors(self):
    model = cnn.ListCNN(num_classes=2, filters=3, vocab_size=5)
    ids = jnp.array([[4, 0, 2]])
    mask = jnp.ones((1, 3), bool)
    dummy = jnp.zeros((1, 1))
    params = model.init(jax.random.PRNGKey(1), ids, mask, dummy)
    conv = params["params"]["conv"]
    one_hot = np.eye(5, dtype=np.float32)[np.asarray(ids[0])]
    h = np.maximum(one_hot @ np.asarray(conv["kernel"]) + np.asarray(conv["bias"]), 0)
    dense = params["params"]["dense"]
    np.testing.assert_allclose(model.apply(params, ids, mask, dummy)[0],
                               h.max(0) @ np.asarray(dense["kernel"])
                               + np.asarray(dense["bias"]), rtol=1e-5, atol=1e-6)

  @parameterized.parameters(0, 7)
  def test_packed_batches_compute_the_padded_model(self, vocab_size):
    rng = np.random.default_rng(3)
    lengths = np.array([3, 1, 0, 5, 2, 5, 4, 1])
    mask = np.arange(5)[None, :] < lengths[:, None]
    ids = np.where(mask, rng.integers(0, 7, size=mask.shape), 0).astype(np.int32)
    table = jnp.asarray(rng.normal(size=(7, 4)), jnp.float32) if not vocab_size \
        else jnp.zeros((1, 1))
    model = cnn.ListCNN(num_classes=3, filters=6, vocab_size=vocab_size)
    params = model.init(jax.random.PRNGKey(0), jnp.asarray(ids), jnp.asarray(mask),
                        table)["params"]
    # Jitted, as fitting runs them: one program per batch shape, not one per operation.
    packed_logits = jax.jit(cnn.packed_logits, static_argnums=5)
    apply = jax.jit(model.apply)
    order = np.array([3, 5, 0, 6, 1, 2, 7, 4])   # lengths 5, 5, 3, 4, 1, 0, 1, 2
    capacity = 8   # some batches stop before 3 rows: their lists would overflow it
    packed = packing.pack_batches(ids, mask, [order], batch=3, capacity=capacity)
    steps = packed["rows"].shape[1]
    self.assertGreater(steps, 3)    # 8 rows in batches of 3 would be 3 without the capacity
    seen = []
    for t in range(steps):
      w = packed["w"][0, t]
      rows = packed["rows"][0, t][w > 0]
      seen.extend(rows.tolist())
      self.assertLessEqual(mask[rows].sum(), capacity)
      got = packed_logits(params, packed["flat_ids"][0, t], packed["local_idx"][0, t],
                          packed["local_mask"][0, t], table, vocab_size)
      want = apply({"params": params}, jnp.asarray(ids[rows]), jnp.asarray(mask[rows]), table)
      np.testing.assert_allclose(np.asarray(got)[w > 0], want, rtol=1e-5, atol=1e-6)
    self.assertEqual(seen, order.tolist())   # every row once, in the given order
    # Scoring from entry features (large sets) equals the padded model (small sets).
    problem = fitting.Problem(jnp.asarray(ids), jnp.asarray(mask), jnp.zeros(8, jnp.int32),
                              table, vocab_size, 3, dataclasses.replace(FAST, filters=6))
    stacked = jax.tree.map(lambda x: jnp.stack([x, x]), params)
    big = fitting.logits_of(problem, stacked, [np.arange(8), np.arange(8)[::-1]])
    small = fitting.logits_of(problem, stacked, [np.array([2]), np.array([5])])
    want = np.asarray(model.apply({"params": params}, jnp.asarray(ids), jnp.asarray(mask),
                                  table))
    np.testing.assert_allclose(big[0], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(big[1], want[::-1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.r_[small[0], small[1]], want[[2, 5]], rtol=1e-5, atol=1e-6)

  def test_linear_only_tuning_matches_full_model_training_with_a_frozen_convolution(self):
    # The fast path (pooled features once, dense layer only) against the generic packed
    # path with the convolution frozen: full-batch steps, so both see the same batches.
    rng = np.random.default_rng(4)
    offsets, flat, y = planted_lists(rng, 40, deciders=[NOISE, NOISE + 1])
    lists, _ = packing.pack_lists(offsets, flat, np.zeros(len(flat), bool))
    table = rng.normal(size=(len(lists.entry_concept), 8)).astype(np.float32)
    cfg = dataclasses.replace(FAST, batch_size=64, patience=100)
    problem = problem_of(lists, y, table, cfg)
    keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.PRNGKey(0), s))(jnp.arange(2))
    start = cnn.init_cnn_params(2, cfg.filters, 0, problem.table, keys)
    # Validating on the training rows with a small full-batch step: the loss falls every
    # epoch, so the best parameters are the last ones.
    rows = [np.arange(30)] * 2
    fast, _, best_epoch = fitting.fit(problem, start, rows, rows, 1e-3, False, 5,
                                      np.random.default_rng(0))
    np.testing.assert_array_equal(best_epoch, [5, 5])
    opt, step = fitting._functions(2, cfg.filters, 0, False)
    params, state = start, jax.vmap(opt.init)(start)
    ids, mask = problem.host_lists()
    capacity = packing.packing_capacity(mask.sum(1), 64, ids.shape[1])
    for _ in range(5):
      packed = packing.pack_batches(ids, mask, rows, 64, capacity)
      params, state, _ = step(params, state, *(packed[k][:, 0] for k in (
          "rows", "w", "flat_ids", "local_idx", "local_mask")), problem.labels, problem.table,
                              jnp.float32(1e-3))
    np.testing.assert_array_equal(fast["conv"]["kernel"], start["conv"]["kernel"])
    np.testing.assert_allclose(fast["dense"]["kernel"], params["dense"]["kernel"], atol=1e-5)
    np.testing.assert_allclose(fast["dense"]["bias"], params["dense"]["bias"], atol=1e-5)

  def test_linear_only_tuning_leaves_the_convolution_unchanged(self):
    rng = np.random.default_rng(2)
    offsets, flat, y = planted_lists(rng, 64, deciders=[NOISE, NOISE + 1])
    lists, _ = packing.pack_lists(offsets, flat, np.zeros(len(flat), bool))
    problem = problem_of(lists, y, None)
    keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.PRNGKey(0), s))(jnp.arange(2))
    start = cnn.init_cnn_params(2, FAST.filters, problem.vocab_size, problem.table, keys)
    rows = [np.arange(48)] * 2
    tuned, _, _ = fitting.fit(problem, start, rows, [np.arange(48, 64)] * 2, 1e-2, False,
                              3, rng)
    np.testing.assert_array_equal(tuned["conv"]["kernel"], start["conv"]["kernel"])
    self.assertFalse(np.allclose(tuned["dense"]["kernel"], start["dense"]["kernel"]))

  def test_stratified_part(self):
    labels = np.array([0] * 30 + [1] * 10)
    part, rest = transfer_protocol.stratified_part(np.arange(40), labels, 0.1,
                                                   np.random.default_rng(0))
    self.assertEqual(np.bincount(labels[part]).tolist(), [3, 1])
    self.assertEqual(sorted(np.r_[part, rest].tolist()), list(range(40)))

  def test_config_is_read_and_checked(self):
    config = base_config()
    self.assertEqual(transfer_settings.read_config(config),
                     transfer_settings.TransferConfig())
    config.eval.transfer.sites = ("B", "A")
    config.eval.transfer.num_seeds = 2
    cfg = transfer_settings.read_config(config)
    self.assertEqual((cfg.sites, cfg.num_seeds), (("B", "A"), 2))
    self.assertEqual(transfer_settings.read_config(ml_collections.ConfigDict()),
                     transfer_settings.TransferConfig())
    with self.assertRaisesRegex(ValueError, "embeddings: unknown"):
      transfer_settings.TransferConfig(embeddings=("bert",))
    with self.assertRaisesRegex(ValueError, "target_fraction"):
      transfer_settings.TransferConfig(target_fraction=1.5)


def write_two_site_dataset(root, site_column="site", values=("north", "south")):
  """SYNTHETIC: 6 concepts in two groups, their group names as labels, two sites."""
  rng = np.random.default_rng(3)
  names = ["Heart", "Brain", "heart murmur", "seizure", "tachycardia", "ataxia"]
  groups = ["Heart", "Brain", "Heart", "Brain", "Heart", "Brain"]
  concepts = dict(concept_id=[f"C{i}" for i in range(6)], name=names, group=groups)
  relations = dict(head_id=["C2", "C3"], tail_id=["C0", "C1"],
                   relation=["parent_child"] * 2)
  lists, negs, labels, sites = [], [], [], []
  for i in range(160):
    label = int(rng.integers(0, 2))
    own = [2 + label, 4 + label] if i < 80 else [4 + label]
    items = own + ([label] if rng.random() < 0.3 else []) + [int(rng.integers(2, 6))]
    lists.append([f"C{c}" for c in items])
    negs.append([False] * (len(items) - 1) + [True])
    labels.append(groups[label])
    sites.append(values[0] if i < 80 else values[1])
  pairs = dict(pair_id=[f"p{i}" for i in range(160)], text=[f"case {i}" for i in range(160)],
               concept_ids=lists, negated=negs, rho=[1.0] * 160,
               split=["train", "test"] * 80, label=labels)
  pairs[site_column] = sites
  write_dataset(root, concepts, relations, pairs)


class RunTransferTest(absltest.TestCase):

  def test_end_to_end_on_two_sites_with_the_report_and_the_branch_roots(self):
    root = tempfile.mkdtemp()
    write_two_site_dataset(root, "source", ("db:north", "db:south"))
    dataset = load_dataset(root)
    vectors = np.random.default_rng(4).normal(size=(6, 8)).astype(np.float32)
    embed = lambda idx, neg: vectors[idx] * np.where(neg, -1.0, 1.0)[:, None]  # noqa: E731
    cfg = transfer_settings.TransferConfig(**dict(
        {k: getattr(FAST, k) for k in ("filters", "batch_size", "learning_rate",
                                       "tune_learning_rate", "patience", "eval_chunk")},
        num_seeds=2, max_epochs=5, tune_max_epochs=3, site_pattern=r"^db:(\w+)$",
        target_fraction=0.25, embeddings=("teacher1", "teacher2")))
    plot = os.path.join(root, "plot.png")
    result = transfer_protocol.run_transfer(
        dataset, {"teacher1": ("vectors", embed), "teacher2": ("same vectors", embed)},
        cfg, plot)
    self.assertEqual(result["site_column"], "source")
    self.assertEqual(result["site_counts"], {"north": 80, "south": 80})
    self.assertTrue(result["label_is_concept_group"])
    self.assertEqual(set(result["variants"]), {"all_concepts", "without_branch_roots"})
    without = result["variants"]["without_branch_roots"]
    self.assertEqual(without["branch_root_concepts"], 2)
    self.assertGreater(without["entries_removed"], 0)
    self.assertEqual(set(without["directions"]), {"north → south", "south → north"})
    res = without["directions"]["north → south"]
    self.assertEqual(res["teacher2"]["identical_to"], "teacher1")
    self.assertEqual(set(res["teacher1"]["results"]), set(transfer_settings.STRATEGIES))
    sizes = res["teacher1"]["sizes"]
    self.assertEqual(sizes["target_labelled"] + sizes["target_test"], 80)
    self.assertTrue(os.path.exists(plot))
    json.dumps(result)
    text = transfer_report.render_section(result)
    self.assertIn("### north → south, without branch roots", text)
    self.assertIn("linear-only tuning", text)
    self.assertIn("(= vectors)", text)

  def test_skips_without_a_site_column_and_names_unknown_sites(self):
    root = tempfile.mkdtemp()
    write_two_site_dataset(root, "hospital")
    dataset = load_dataset(root)
    result = transfer_protocol.run_transfer(dataset, {}, FAST)
    self.assertIn("no 'site' or 'source' column", result["skipped"])
    result = transfer_protocol.run_transfer(dataset, {}, transfer_settings.TransferConfig(
        site_column="hospital", sites=("north", "east")))
    self.assertIn("['east'] not among", result["skipped"])
    self.assertIn("Skipped:", transfer_report.render_section(result))


class EvaluateHookTest(absltest.TestCase):

  def test_transfer_protocol_of_a_model_and_the_run_alone_files(self):
    root = tempfile.mkdtemp()
    write_two_site_dataset(root)
    dataset = load_dataset(root)
    rng = np.random.default_rng(5)

    def teacher(dim):
      return TeacherEmbeddings(
          text=rng.normal(size=(dataset.num_pairs, dim)).astype(np.float32),
          concepts=rng.normal(size=(6, dim)).astype(np.float32),
          negated=rng.normal(size=(6, dim)).astype(np.float32), meta={}, path="")

    config = base_config()
    config.eval.transfer.update(dict(
        num_seeds=2, max_epochs=2, tune_max_epochs=2, filters=8, eval_chunk=128,
        embeddings=("line",), without_branch_roots="off"))
    model = test_evaluate.FakeLineModel(config, dataset, teacher(6), teacher(5))
    workdir = tempfile.mkdtemp()
    with open(os.path.join(workdir, "metrics.json"), "w") as f:
      json.dump({"alignment": {"kept": 1}, "transfer": {"old": 1}}, f)
    report = runner.run_alone(model, workdir, "transfer")
    with open(os.path.join(workdir, "metrics.json")) as f:
      merged = json.load(f)
    self.assertEqual(merged["alignment"], {"kept": 1})
    result = merged["transfer"]
    self.assertEqual(result["sites"], ["north", "south"])
    self.assertEqual(list(result["embeddings"]), ["line"])
    self.assertEqual(result["embeddings"]["line"],
                     f"LINE's G ({runner._labels(config)['line']})")
    self.assertTrue(os.path.exists(os.path.join(workdir, transfer_settings.PLOT_FILE)))
    self.assertEqual(report, os.path.join(os.path.abspath(workdir),
                                          transfer_settings.REPORT_FILE))
    with open(report) as f:
      self.assertIn("### north → south, all concepts", f.read())


if __name__ == "__main__":
  absltest.main()
