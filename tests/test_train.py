"""End to end on the tiny synthetic config: two stages, recovery, resumption, compile count."""

import json
import os
import subprocess
import sys
import textwrap

from absl.testing import absltest, parameterized
import jax
import numpy as np

from configs import test as test_config
import host_devices
from line_jax.benchmarks import train_step as bench_train
from line_jax.training import checkpoint as ckpt_lib
from line_jax.cache import store as emb_lib
from line_jax.model import graph as graph_lib
from line_jax.training import host_batches as pipeline
from line_jax.training import state as state_lib
from line_jax.model import tables
from line_jax.training import loop as loop_lib
from line_jax.training import objective as objective_lib
from line_jax.training import step as step_lib
from line_jax.training import trainer as trainer_lib
from tests import test_losses


def make_config(root, **train_overrides):
  c = test_config.get_config()
  c.data.dir = os.path.join(root, "data")
  c.train.update(train_overrides)
  return c


def loss_inputs(config, num_pairs=96, num_concepts=80, dims=(32, 24), seed=0):
  """What the train loss needs, built directly rather than by a `Trainer` (no dataset or
  teacher files, no capacity fitting): an in-memory dataset with a random graph and random
  teacher rows, its batch builder, the mesh, teacher 2's tables and initial parameters."""
  ds = bench_train.synthetic_dataset(num_pairs, num_concepts, 4 * num_concepts, 3, 4,
                                     seed=seed)
  rng = np.random.default_rng(seed)
  rows = lambda n, d: rng.standard_normal((n, d)).astype(np.float32)
  text = rows(num_pairs, dims[0])
  concepts, negated = rows(num_concepts, dims[1]), rows(num_concepts, dims[1])
  teacher2 = emb_lib.TeacherEmbeddings(rows(1, dims[1]), concepts, negated, {}, "<memory>")
  table = graph_lib.NeighbourTable.from_dataset(ds, config.graph.symmetric)
  lists = pipeline.PairLists(ds, config.data.max_concepts_per_pair)
  mesh = step_lib.make_mesh()
  shapes = pipeline.batch_shapes(lists, config.train.batch_size, mesh.size,
                                 len(ds.relation_types), config.graph.fanout,
                                 config.loss.relational_edges, config.graph.edge_block)
  names = rows(num_concepts, dims[0]) if config.loss.name_weight else None
  # Terms of two entries each on average (a term and its synonym entries share one).
  groups = (None if config.loss.same_term_negatives
            else rng.integers(0, num_concepts // 2, num_concepts))
  builder = pipeline.BatchBuilder(lists, table, text, shapes, config.train.seed, names=names,
                                  groups=groups)
  params = state_lib.init_params_from_config(config, dims[0], dims[1],
                                             len(ds.relation_types), seed)
  return dict(dataset=ds, builder=builder, mesh=mesh, params=params, names=names,
              groups=groups,
              concept_table=tables.table_to_device(teacher2.concepts),
              negated_table=tables.table_to_device(teacher2.negated))


def final_state(workdir, config):
  trainer = trainer_lib.Trainer(config, workdir)
  mgr = ckpt_lib.manager(workdir, 3)
  state = trainer.init_state()
  restored, progress = ckpt_lib.restore_latest(mgr, {**state, "added": trainer.lists.added})
  return restored, progress


class TrainTest(parameterized.TestCase):

  @classmethod
  def run_config(cls, **train_overrides):
    """The tiny config with the optional single-concept terms on, so the whole trainer
    runs them (names read from teacher 1's cache, dictionary draws, term groups), resumes
    included."""
    config = make_config(cls.root, **train_overrides)
    config.loss.update(dict(concept_weight=0.3, name_weight=0.3, random_concepts=16,
                            same_term_negatives=False, hard_negatives=2, hard_pool=4,
                            text_weight=0.2))
    config.train.update(dict(lr_schedule="cosine", lr_final_fraction=0.1))
    return config

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    import tempfile
    cls.root = tempfile.mkdtemp()
    cls.config = cls.run_config()
    cls.workdir = os.path.join(cls.root, "full")
    cls.summary = loop_lib.train(cls.config, cls.workdir)
    cls.state, cls.progress = final_state(cls.workdir, cls.config)

  def test_runs_both_stages_with_one_compilation_each_at_most(self):
    self.assertFalse(self.summary["stopped"])
    self.assertEqual(self.progress["stage"], 3)
    # Stage 2 recompiles only if the recovered concepts outgrow the stage-1 capacities,
    # and then once, at its start (capacities are refitted before the first batch).
    self.assertEqual(self.summary["compilations"]["stage1"], 1)
    self.assertLessEqual(self.summary["compilations"]["stage2"], 1)
    self.assertEqual(self.summary["capacity_growths"], {"stage1": 0, "stage2": 0})
    steps_per_epoch = -(-277 // 32)
    self.assertEqual(self.progress["step"], 5 * steps_per_epoch)
    log = [json.loads(l) for l in open(os.path.join(self.workdir, "train_log.jsonl"))]
    self.assertEqual({r["stage"] for r in log}, {1, 2})
    for r in log:
      self.assertTrue(all(np.isfinite([r["loss"], r["align"], r["relational"],
                                       r["negation"], r["concept"], r["name"], r["text"]])))
      self.assertGreater(r["name"], 0)
      self.assertGreater(r["text"], 0)
      self.assertGreater(r["concept"], 0)

  def test_logged_learning_rate_follows_the_stages(self):
    # The cosine schedule over stages of 3 and 2 epochs of 9 steps: each record carries the
    # rate of its window's last update, falling within a stage and back at the peak when
    # stage 2 starts.
    log = [json.loads(l) for l in open(os.path.join(self.workdir, "train_log.jsonl"))]
    lr = state_lib.learning_rate(self.config, -(-277 // 32))
    np.testing.assert_allclose([r["learning_rate"] for r in log],
                               [float(lr(r["step"] - 1)) for r in log], rtol=1e-6)
    end1 = [r for r in log if r["stage"] == 1][-1]["learning_rate"]
    first2 = [r for r in log if r["stage"] == 2][0]["learning_rate"]
    self.assertLess(end1, 0.15 * self.config.train.learning_rate)
    self.assertGreater(first2, 0.5 * self.config.train.learning_rate)

  def test_recovery_adds_new_concepts_only(self):
    info = json.load(open(os.path.join(self.workdir, "recovery.json")))
    added = np.asarray(self.state["added"])
    self.assertEqual(info["gained"], int((added >= 0).sum()))
    self.assertGreater(info["gained"], 0)
    trainer = trainer_lib.Trainer(self.config, self.workdir)
    ds = trainer.dataset
    train_idx = set(ds.split_indices("train").tolist())
    for i in np.flatnonzero(added >= 0):
      self.assertIn(i, train_idx)
      self.assertNotIn(added[i], ds.pair_concepts(i)[0].tolist())

  def test_recovered_concepts_beat_chance(self):
    # The synthetic data drops one true concept from half of the lists; after this very short
    # training a recovered concept is a true miss far more often than a random pick would be
    # (exact recovery on a constructed case: tests/test_recovery.py).
    trainer = trainer_lib.Trainer(self.config, self.workdir)
    ds = trainer.dataset
    added = np.asarray(self.state["added"])
    hits = [added[i] in ds.true_flat[ds.true_offsets[i]:ds.true_offsets[i + 1]]
            for i in np.flatnonzero(added >= 0)]
    self.assertGreater(np.mean(hits), 10 / ds.num_concepts)

  def test_keeps_latest_checkpoints(self):
    steps = ckpt_lib.manager(self.workdir, 3).all_steps()
    self.assertLessEqual(len(steps), 3)
    self.assertEqual(max(steps), self.progress["step"])

  @parameterized.named_parameters(("stage1_mid_epoch", 5), ("stage1_end", 36),
                                  ("stage2", 40))
  def test_interrupted_run_resumes_to_same_parameters(self, stop_at):
    workdir = os.path.join(self.root, f"stop{stop_at}")
    config = self.run_config(stop_after_steps=stop_at)
    summary = loop_lib.train(config, workdir)
    self.assertTrue(summary["stopped"])
    self.assertEqual(summary["step"], stop_at)
    config.train.stop_after_steps = 0
    summary = loop_lib.train(config, workdir)
    self.assertFalse(summary["stopped"])
    state, progress = final_state(workdir, config)
    self.assertEqual(progress["step"], self.progress["step"])
    np.testing.assert_array_equal(state["added"], self.state["added"])
    for a, b in zip(jax.tree.leaves(state["params"]), jax.tree.leaves(self.state["params"])):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, rtol=0)


class TeacherTextRowsTest(absltest.TestCase):

  def test_segment_recovery_needs_a_teacher_1_for_new_strings(self):
    config = make_config(self.create_tempdir().full_path)
    config.recovery.estimator = "segment"
    with self.assertRaisesRegex(ValueError, "which is a 'synthetic' teacher: it needs kind"):
      trainer_lib.Trainer(config, self.create_tempdir().full_path)

  def test_teacher1_must_embed_every_text(self):
    config = make_config(self.create_tempdir().full_path)
    config.teacher1.text_rows = "eval"
    with self.assertRaisesRegex(ValueError, "teacher1.text_rows must be 'all'"):
      trainer_lib.Trainer(config, self.create_tempdir().full_path)


class LossSettingsTest(parameterized.TestCase):

  @parameterized.parameters(
      ("name_weight", -0.1, r"loss.name_weight=-0.1 must be >= 0"),
      ("concept_weight", -1.0, r"loss.concept_weight=-1.0 must be >= 0"),
      ("random_concepts", -5, r"loss.random_concepts=-5 must be an integer >= 0"),
      ("hard_negatives", -1, r"loss.hard_negatives=-1 must be an integer >= 0"),
      ("hard_pool", -3, r"loss.hard_pool=-3 must be an integer >= 0"),
      ("text_weight", -0.5, r"loss.text_weight=-0.5 must be >= 0"),
      ("concept_temperature", 0.0, r"loss.concept_temperature=0.0 must be > 0"),
      ("align_batch_reference", 1, r"loss.align_batch_reference=1 must be 0 \(off\) or"),
      ("align_batch_reference", -2, r"loss.align_batch_reference=-2 must be 0 \(off\)"))
  def test_bad_settings_named(self, field, value, message):
    config = test_config.get_config()
    config.loss.name_weight = 0.3
    config.loss[field] = value
    with self.assertRaisesRegex(ValueError, message):
      objective_lib.check_loss_settings(config.loss)

  def test_hard_negatives_need_a_pool(self):
    config = test_config.get_config()
    config.loss.update(dict(concept_weight=0.3, hard_negatives=2, hard_pool=0))
    with self.assertRaisesRegex(ValueError, r"hard_pool=0 must be >= 1"):
      objective_lib.check_loss_settings(config.loss)

  def test_checked_before_the_data_and_teachers(self):
    config = make_config(self.create_tempdir().full_path)
    config.loss.name_weight = -1.0
    with self.assertRaisesRegex(ValueError, r"loss.name_weight=-1.0 must be >= 0"):
      trainer_lib.Trainer(config, self.create_tempdir().full_path)
    self.assertFalse(os.path.exists(config.data.dir))     # nothing built first

  @parameterized.parameters((128, 128, 1.0), (1024, 128, 127 / 1023), (32, 8, 7 / 31),
                            (4096, 0, 1.0))
  def test_alignment_weighs_as_at_the_reference_batch(self, batch, reference, scale):
    config = test_config.get_config()
    config.train.batch_size, config.loss.align_batch_reference = batch, reference
    self.assertAlmostEqual(objective_lib.align_scale(config), scale)
    config.loss.align_reduction = "per_term"     # a mean over terms needs no scale
    self.assertEqual(objective_lib.align_scale(config), 1.0)

  @parameterized.parameters((128, "sqrt", 1.0), (512, "sqrt", 2.0), (1024, "linear", 8.0),
                            (1024, "none", 1.0), (32, "sqrt", 0.5))
  def test_learning_rate_follows_the_batch_rule(self, batch, rule, scale):
    from line_jax.training import state
    config = test_config.get_config()
    config.train.update(batch_size=batch, lr_batch_rule=rule, lr_reference_batch=128,
                        learning_rate=1e-3, lr_schedule="constant")
    self.assertAlmostEqual(state.learning_rate(config), 1e-3 * scale)
    config.train.lr_schedule = "cosine"
    self.assertAlmostEqual(float(state.learning_rate(config, 10)(0)), 1e-3 * scale, places=9)
    config.train.lr_batch_rule = "cube"
    with self.assertRaisesRegex(ValueError, r"train.lr_batch_rule='cube'"):
      state.learning_rate(config)

  def test_gpu_config_is_the_default_at_a_larger_batch(self):
    from configs import hpo_minilm, hpo_minilm_gpu
    from line_jax.training import state
    gpu, cpu = hpo_minilm_gpu.get_config(), hpo_minilm.get_config()
    self.assertEqual(gpu.train.batch_size, 512)
    self.assertAlmostEqual(state.learning_rate(gpu, 10)(0),
                           2 * state.learning_rate(cpu, 10)(0), places=7)
    self.assertAlmostEqual(objective_lib.align_scale(gpu), 127 / 511)
    gpu.train.batch_size = cpu.train.batch_size
    self.assertEqual(gpu.to_json(), cpu.to_json())

  def test_default_settings_pass(self):
    from configs import hpo_minilm
    objective_lib.check_loss_settings(hpo_minilm.get_config().loss)
    objective_lib.check_loss_settings(test_config.get_config().loss)


class LossFunctionTest(parameterized.TestCase):

  @parameterized.parameters((False, True), (True, True), (True, False))
  def test_loss_matches_per_mention_reference(self, normalize, same_term_negatives):
    """The step's loss (W_c once per pair on the linear path, every projection in one
    matmul) equals projecting every mention through G, for raw and normalised spaces."""
    import jax.numpy as jnp
    from line_jax.model import losses
    from line_jax.model import network as model
    config = test_config.get_config()
    config.loss.relational_margin = 1.5     # every relational hinge active
    config.loss.normalize = normalize
    config.loss.concept_weight = 0.7
    config.loss.uniformity_weight = 0.3
    config.loss.name_weight = 0.4
    config.loss.text_weight = 0.25
    config.loss.same_term_negatives = same_term_negatives
    config.loss.align_batch_reference = 8 if normalize else 32
    inputs = loss_inputs(config)
    ds, mesh = inputs["dataset"], inputs["mesh"]
    concept_table, negated_table = inputs["concept_table"], inputs["negated_table"]
    params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.PRNGKey(3),
                                                                  p.shape), inputs["params"])
    host = inputs["builder"].build(ds.split_indices("train")[:32], 0)
    # Jitted, as the train step runs it (op by op, shard_map alone takes most of a minute).
    loss_fn = jax.jit(step_lib.make_loss_fn(config, len(ds.relation_types), mesh))
    total, parts = loss_fn(params, step_lib.shard_batch(host, mesh), concept_table,
                           negated_table)
    b = jax.tree.map(lambda x: x[0], host)
    num_receivers = b["receiver_real"].shape[0]
    g = np.asarray(jax.jit(model.graph_attention, static_argnums=(4, 5))(
        params, b["graph"], concept_table, negated_table, num_receivers,
        len(ds.relation_types)))
    t = np.asarray(model.project_text(params, b["text"]))
    if normalize:
      g = g / np.linalg.norm(g, axis=1, keepdims=True)
      t = t / np.linalg.norm(t, axis=1, keepdims=True)
    w = b["occ_mask"].astype(np.float32)
    c_mean = np.einsum("bm,bmd->bd", w, g[b["occ_slot"]]) / w.sum(1, keepdims=True)
    lc = config.loss
    a = losses.alignment_terms(jnp.asarray(c_mean), b["pair_mask"], b["rho"], jnp.asarray(t),
                               b["pair_mask"], 0, lc.margin, per_anchor=True)
    # The per-pair sum weighs as at the reference batch size.
    a = (a[0] * (lc.align_batch_reference - 1) / (config.train.batch_size - 1), a[1])
    r = losses.relational_terms(g[b["rel_head"]], g[b["rel_tail"]], g[b["rel_corrupt"]],
                                b["rel_mask"], lc.relational_margin)
    u = num_receivers - b["neg_weight"].shape[0]
    n = losses.negation_terms(g[b["neg_pos_slot"]], g[u:], b["neg_weight"],
                              lc.negation_delta)
    positive_occ = b["occ_mask"] & (b["occ_slot"] < u)
    real = np.flatnonzero(b["receiver_real"][:u])
    receivers = np.asarray(b["graph"].nodes["row"])[real]
    # The receivers' terms, written out: padding rows belong to no term.
    group = np.arange(u) if same_term_negatives else -1 - np.arange(u)
    if not same_term_negatives:
      group[real] = inputs["groups"][receivers]
      self.assertLess(len(np.unique(group[real])), len(real))   # some terms repeat
    c = test_losses.np_concept_contrastive(t, g[:u], b["receiver_real"][:u], b["occ_slot"],
                                           positive_occ, lc.concept_temperature, group)
    un = losses.uniformity_terms(jnp.asarray(g[:u]), b["receiver_real"][:u], lc.uniformity_t)
    # Name term, written out: F(teacher 1's name of receiver k) against G of every real
    # positive receiver, by cosine / tau; its own G is the positive.
    np.testing.assert_array_equal(b["name_text"][real], inputs["names"][receivers])
    self.assertFalse(b["name_text"][len(real):].any())
    f_names = np.asarray(model.project_text(params, inputs["names"][receivers]), np.float64)
    gr = np.asarray(g[real], np.float64)
    cos = ((f_names / np.linalg.norm(f_names, axis=1, keepdims=True))
           @ (gr / np.linalg.norm(gr, axis=1, keepdims=True)).T) / lc.concept_temperature
    same = group[real][:, None] == group[real][None, :]
    den = np.exp(np.diag(cos)) + np.where(same, 0.0, np.exp(cos)).sum(1)
    nm = (float(np.sum(np.log(den) - np.diag(cos))), len(real))
    tx = test_losses.np_text_contrastive(t, b["pair_mask"], g[:u], b["occ_slot"],
                                         positive_occ, lc.concept_temperature, group)
    ref = np.array([float(x[0]) / max(float(x[1]), 1.0)
                    for x in (a, r, n, c, un, nm, tx)])
    self.assertGreater(ref[1], 0)
    self.assertGreater(ref[2], 0)
    self.assertGreater(ref[3], 0)
    self.assertGreater(ref[5], 0)
    self.assertGreater(ref[6], 0)
    # A sentence run has no sentence-level per-concept term beside the per-concept one.
    ref = np.append(ref, 0.0)
    np.testing.assert_allclose(np.asarray(parts), ref, rtol=5e-5, atol=1e-5)
    weights = np.array([lc.align_weight, lc.relational_weight, lc.negation_weight,
                        lc.concept_weight, lc.uniformity_weight, lc.name_weight,
                        lc.text_weight, 0.0])
    np.testing.assert_allclose(float(total), float(weights @ ref), rtol=2e-5)


class CommandLineTest(parameterized.TestCase):

  @parameterized.parameters("hpo_minilm", "bge_coder")
  def test_sequences_can_be_set_on_the_command_line(self, name):
    """The relation types of G and the concept teacher's fine-tune relations are tuples:
    ml_collections' flags cannot override a list field."""
    import configs
    script = textwrap.dedent("""
        import json
        from absl import app
        from ml_collections import config_flags
        CONFIG = config_flags.DEFINE_config_file("config")
        def main(_):
          c = CONFIG.value
          print(json.dumps([c.graph.relations, c.teacher2.finetune.relations,
                            c.train.lr_schedule]))
        app.run(main)
        """)
    path = os.path.join(os.path.dirname(configs.__file__), f"{name}.py")
    out = subprocess.run(
        [sys.executable, "-c", script, f"--config={path}",
         '--config.graph.relations=("synonym", "parent_child")',
         "--config.teacher2.finetune.relations=('synonym',)",
         "--config.train.lr_schedule=cosine"],
        capture_output=True, text=True, check=True,
        cwd=os.path.dirname(os.path.dirname(configs.__file__)))
    self.assertEqual(json.loads(out.stdout.strip().splitlines()[-1]),
                     [["synonym", "parent_child"], ["synonym"], "cosine"])


class LearningRateTest(parameterized.TestCase):

  def test_constant_is_the_paper_setting(self):
    config = test_config.get_config()
    self.assertEqual(state_lib.learning_rate(config, 10), config.train.learning_rate)

  def test_cosine_restarts_at_stage_2(self):
    config = test_config.get_config()
    config.train.update(dict(lr_schedule="cosine", lr_final_fraction=0.1, learning_rate=1e-2,
                             stage1_epochs=3, stage2_epochs=2))
    lr = state_lib.learning_rate(config, steps_per_epoch=10)     # stages of 30 and 20 steps
    at = lambda step: float(lr(step))
    peak, low = 1e-2, 1e-3
    np.testing.assert_allclose([at(0), at(15), at(30), at(40), at(50), at(60)],
                               [peak, (peak + low) / 2, peak, (peak + low) / 2, low, low],
                               rtol=1e-5)
    self.assertGreater(at(29), low)
    self.assertLess(at(29), at(28))               # decreasing within a stage

  def test_optimizer_state_tree_does_not_depend_on_the_stage_length(self):
    config = test_config.get_config()
    config.train.lr_schedule = "cosine"
    params = {"w": np.zeros((2, 2), np.float32)}
    shape = lambda n: jax.tree.structure(state_lib.make_optimizer(config, n).init(params))
    self.assertEqual(shape(1), shape(57))

  @parameterized.parameters((dict(lr_schedule="linear"), r"train.lr_schedule='linear'"),
                            (dict(lr_schedule="cosine", lr_final_fraction=1.5),
                             r"train.lr_final_fraction=1.5 must be in \[0, 1\]"))
  def test_bad_schedule_named(self, overrides, message):
    config = test_config.get_config()
    config.train.update(overrides)
    with self.assertRaisesRegex(ValueError, message):
      state_lib.learning_rate(config, 10)


class TableDtypeTest(parameterized.TestCase):

  @parameterized.parameters(
      ("auto", "off", 1.0, "float32"),   # CPU, XLA path, fits the budget: convert once
      ("auto", "off", 1e-6, ""),         # over the budget: as stored
      ("auto", "auto", 1.0, ""),         # the fused kernel reads float16 rows as they are
      ("bfloat16", "auto", 1.0, "bfloat16"), ("", "off", 1.0, ""))
  def test_resolve(self, setting, kernel, budget_gib, expected):
    from line_jax import config as config_lib
    from line_jax.cache import store as embeddings
    from line_jax.model import kernels
    config = config_lib.base_config()
    config.model.table_dtype = setting
    config.model.cpu_kernel = kernel
    config.model.cpu_table_budget_gib = budget_gib
    table = np.zeros((100, 16), np.float16)
    teacher = embeddings.TeacherEmbeddings(table[:1], table, table, {}, "<memory>")
    if jax.default_backend() != "cpu":
      self.skipTest("'auto' resolves on CPU only")
    if kernel == "auto" and setting == "auto" and not kernels.available():
      expected = "float32"
    self.assertEqual(tables.resolve_table_dtype(config, teacher), expected)


class DataParallelTest(absltest.TestCase):

  def test_four_devices_match_one(self):
    """Same losses and parameters on a 4-device mesh as on one device (host CPU devices)."""
    root = self.create_tempdir().full_path
    script = textwrap.dedent(f"""
      import os
      import jax, numpy as np
      from configs import test as tc
      from line_jax.training import loop as loop_lib
      from line_jax.training import objective as objective_lib
      from line_jax.training import step as step_lib
      from line_jax.training import trainer as trainer_lib
      results = {{}}
      for n in (1, 4):
        c = tc.get_config()
        c.data.dir = os.path.join({root!r}, "data")
        c.train.stop_after_steps = 6
        trainer = trainer_lib.Trainer(c, os.path.join({root!r}, f"w{{n}}"), jax.devices()[:n])
        state = trainer.init_state()
        order = np.arange(32 * 6)
        losses = []
        for i in range(6):
          batch = trainer.builder.build(order[i * 32:(i + 1) * 32], i)
          state, m = trainer.train_step(state, step_lib.shard_batch(batch, trainer.mesh),
                                        trainer.concept_table, trainer.negated_table)
          losses.append([float(m[k]) for k in ("loss", "align", "relational", "negation")])
        results[n] = (np.array(losses), jax.tree.leaves(jax.device_get(state["params"])))
      assert len(jax.devices()) == 4
      np.testing.assert_allclose(results[1][0], results[4][0], rtol=1e-5, atol=1e-6)
      for a, b in zip(results[1][1], results[4][1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
      print("OK", results[4][0][0])
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=host_devices.REPO,
                          env=host_devices.cpu_env(4), capture_output=True, text=True,
                          timeout=600)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertIn("OK", proc.stdout)


if __name__ == "__main__":
  absltest.main()
