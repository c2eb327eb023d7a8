"""The fine-tuned concept teacher: loss, leakage, batches, merge, HF output, resume, wiring."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

from absl.testing import absltest, parameterized
import jax
import jax.numpy as jnp
import numpy as np

from line_jax import config as config_lib
from line_jax.cache import export as exporter
from line_jax.data.dataset import DataError, load_dataset, write_dataset
from line_jax.teachers import bert, finetune
from line_jax.teachers.finetune import alpha as ft_alpha
from line_jax.teachers.finetune import batches as ft_batches
from line_jax.teachers.finetune import folder as ft_folder
from line_jax.teachers.finetune import pairs as ft_pairs
from line_jax.teachers.finetune import step as ft_step
from line_jax.teachers import testing as teacher_testing
from line_jax.teachers.encoder import load_tokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = teacher_testing.TINY_WORDS


def write_ontology(root, with_synonyms=True, with_definitions=True, seed=0):
  """12 terms, each with two synonym entries and one layperson entry; one held-out synonym
  edge; definition pairs in every split."""
  rng = np.random.default_rng(seed)
  ids, names, kinds = [], [], []
  rel = {"head_id": [], "tail_id": [], "relation": []}
  held = {"head_id": [], "tail_id": [], "relation": []}

  def phrase(n):
    return " ".join(rng.choice(WORDS, size=n))

  for t in range(12):
    tid = f"T{t}"
    ids.append(tid); names.append(f"{WORDS[t]} {phrase(2)}"); kinds.append("term")
    if t:
      rel["head_id"].append("T0"); rel["tail_id"].append(tid); rel["relation"].append("parent_child")
    for k, relation in enumerate(("synonym", "synonym", "layperson")):
      sid = f"{tid}-S{k}"
      ids.append(sid); names.append(f"{WORDS[t]} {phrase(3)}"); kinds.append(relation)
      target = held if (t == 5 and k == 0) else rel
      if with_synonyms or target is held:
        target["head_id"].append(tid); target["tail_id"].append(sid)
        target["relation"].append(relation)
  concepts = {"concept_id": ids, "name": names, "kind": kinds}
  pairs = {k: [] for k in ("pair_id", "text", "concept_ids", "negated", "rho", "split",
                           "source", "source_id")}
  splits = ["train"] * 8 + ["valid"] * 2 + ["test"] * 2
  for t in range(12):
    split = splits[t] if with_definitions else ("valid" if t % 2 else "test")
    pairs["pair_id"].append(f"def:T{t}")
    pairs["text"].append(f"definition {t} " + phrase(12))
    pairs["concept_ids"].append([f"T{t}"]); pairs["negated"].append([False])
    pairs["rho"].append(1.0); pairs["split"].append(split)
    pairs["source"].append("definition"); pairs["source_id"].append(f"T{t}")
  for v in range(6):
    pairs["pair_id"].append(f"v{v}"); pairs["text"].append("the patient has " + phrase(5))
    pairs["concept_ids"].append([f"T{v}"]); pairs["negated"].append([False])
    pairs["rho"].append(0.5); pairs["split"].append(["train", "valid", "test"][v % 3])
    pairs["source"].append("vignette"); pairs["source_id"].append(f"V{v}")
  if not rel["head_id"]:
    rel = {"head_id": ["T0"], "tail_id": ["T1"], "relation": ["parent_child"]}
  write_dataset(root, concepts, rel, pairs, held)
  return root


def tiny_config(model_dir, data_dir, **finetune_overrides):
  c = config_lib.base_config()
  c.data.dir = data_dir
  c.teacher1 = config_lib.teacher_config(kind="hf", name="tiny", model=model_dir,
                                          pooling="mean", max_length=32, dtype="float32")
  c.teacher2 = config_lib.teacher_config(kind="finetuned", name="tiny-onto", pooling="mean",
                                          max_length=32, dtype="float32")
  c.teacher2.finetune.update(dict(
      base=model_dir, steps=6, batch_size=4, learning_rate=1e-3, warmup_steps=1,
      name_max_length=16, definition_max_length=32, buckets=[8, 16],
      validation_size=3, checkpoint_every=2, eval_batch_size=8))
  c.teacher2.finetune.update(finetune_overrides)
  return c


class FinetuneTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    cls.model_dir = teacher_testing.write_tiny_bert(os.path.join(cls.root, "tiny"),
                                                    extra_tensors=False)
    cls.data_dir = write_ontology(os.path.join(cls.root, "onto"))
    cls.dataset = load_dataset(cls.data_dir)
    # Enough steps to learn the easy task (a synonym shares its term's first word).
    cls.config = tiny_config(cls.model_dir, cls.data_dir, steps=40, learning_rate=3e-3,
                             checkpoint_every=20)
    cls.settings = finetune.read_settings(cls.config.teacher2)
    cls.data = ft_pairs.build_data(cls.dataset, cls.settings)
    cls.workdir = os.path.join(cls.root, "work")
    cls.folder = finetune.ensure_finetuned(cls.config.teacher2, cls.dataset, cls.workdir,
                                           progress_bar=False)

  # --- loss ---
  def test_info_nce_matches_reference(self):
    rng = np.random.default_rng(0)
    za, zb = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    valid = np.array([1, 1, 1, 1, 0], bool)
    ok = np.ones((5, 5), bool)
    ok[0, 1] = ok[1, 0] = False          # rows 0 and 1 name the same term
    t = 0.1
    got = float(ft_step.info_nce(jnp.asarray(za), jnp.asarray(zb), jnp.asarray(valid),
                                  jnp.asarray(ok), t))
    s = za @ zb.T / t
    total = 0.0
    for i in range(4):
      row = [j for j in range(4) if j == i or ok[i, j]]
      col = [j for j in range(4) if j == i or ok[j, i]]
      l1 = np.log(np.exp(s[i, row]).sum()) - s[i, i]
      l2 = np.log(np.exp(s[col, i]).sum()) - s[i, i]
      total += 0.5 * (l1 + l2)
    self.assertAlmostEqual(got, total / 4, places=5)

  # --- data and leakage ---
  def test_no_leakage(self):
    d, ds = self.data, self.dataset
    trained = {ft_pairs.norm_text(x) for x in np.concatenate([d.anchor, d.positive])}
    self.assertEqual(len(d.val_query), 3)
    self.assertEqual(len(d.test_query), 1)
    for q in list(d.val_query) + list(d.test_query):
      self.assertNotIn(ft_pairs.norm_text(q), trained)
    for text in ds.texts[ds.split != "train"]:
      self.assertNotIn(ft_pairs.norm_text(text), trained)
    entry = d.kind == "entry"
    train_edges = {(int(g), int(np.flatnonzero(ds.names == p)[0]))
                   for g, p in zip(d.group[entry], d.positive[entry])}
    self.assertEqual(len(train_edges), 36 - 1 - 3)   # all entries but held-out + validation
    for h, t in zip(ds.heldout_head, ds.heldout_tail):
      self.assertNotIn((int(h), int(t)), train_edges)
    self.assertEqual(sorted(set(d.kind)), ["definition", "entry"])
    defs = d.positive[d.kind == "definition"]
    self.assertEqual(len(defs), 8)    # the train-split definitions only
    self.assertEqual(d.counts["candidates"], 12)
    self.assertTrue(all(ds.concept_ids[c].count("-") == 0 for c in d.candidates))

  def test_held_out_terms_are_not_trained_on(self):
    """A term held out of training (data.heldout_terms) loses its synonym pairs and its
    train definition, and nothing else changes."""
    ds = self.dataset
    rows = np.flatnonzero([c == "T3" or c.startswith("T3-") for c in ds.concept_ids])
    marked = ft_pairs.build_data(
        dataclasses.replace(ds, heldout_concepts=rows.astype(np.int32)), self.settings)
    d = self.data
    touches = np.isin(d.group, rows) | np.isin([str(p) for p in d.positive],
                                               list(ds.names[rows]))
    self.assertEqual(int(touches.sum()), 4)      # three entries and one train definition
    np.testing.assert_array_equal(marked.anchor, d.anchor[~touches])
    np.testing.assert_array_equal(marked.positive, d.positive[~touches])
    np.testing.assert_array_equal(marked.val_query, d.val_query)
    self.assertNotEqual(marked.digest(), d.digest())

  def test_batches_mask_same_term_and_cover_static_shapes(self):
    tok = load_tokenizer(self.model_dir)
    plan = ft_batches.BatchPlan(self.data, tok, self.settings, 0)
    for ids in plan.anchor_ids + plan.positive_ids:    # every word is a known token
      self.assertNotIn(tok.unk_token_id, ids)
    for step in range(plan.batches_per_epoch):
      b = plan.batch(step)
      self.assertIn(b["ids"].shape, ((8, 8), (8, 16), (8, 32)))   # [2B, bucket]
      self.assertTrue(np.diag(b["negative_ok"]).all())
      self.assertGreater(int(b["valid"].sum()), 0)
      n = int(b["valid"].sum())
      # anchors are rows :B, positives rows B:, both with [CLS] first
      self.assertTrue((b["ids"][:n, 0] == b["ids"][4:4 + n, 0]).all())
    # Two entries of the same term in one batch: not negatives of each other.
    s = dict(self.config.teacher2.finetune.to_dict(), batch_size=64, use_definitions=False)
    cfg = tiny_config(self.model_dir, self.data_dir, **s)
    st = finetune.read_settings(cfg.teacher2)
    plan = ft_batches.BatchPlan(ft_pairs.build_data(self.dataset, st), tok, st, 0)
    found = False
    for step in range(plan.batches_per_epoch):
      b = plan.batch(step)
      _, members = plan._epoch(0)[step]
      groups = plan.group[members]
      same = (groups[:, None] == groups[None, :]) & ~np.eye(len(members), dtype=bool)
      n = len(members)
      self.assertEqual(int(b["valid"].sum()), n)
      if same.any():
        found = True
        self.assertFalse(b["negative_ok"][:n, :n][same].any())
      self.assertTrue(b["negative_ok"][:n, :n][~same].all())
    self.assertTrue(found)

  # --- weights ---
  def test_params_round_trip_and_average(self):
    config, params = bert.load_bert(self.model_dir)
    again = bert.params_from_tensors(ft_folder.params_to_tensors(params, config), config)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(again)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    tuned = jax.tree.map(lambda x: np.asarray(x) + 1.0, params)
    for alpha in (0.0, 0.25, 1.0):
      avg = ft_step.average(params, tuned, alpha)
      for b, a in zip(jax.tree.leaves(params), jax.tree.leaves(avg)):
        np.testing.assert_allclose(a, np.asarray(b) + alpha, atol=1e-6)

  def test_output_folder_is_a_bert_checkpoint(self):
    for name in ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json",
                 "finetune.json", "alpha_curve.png"):
      self.assertTrue(os.path.exists(os.path.join(self.folder, name)), name)
    config, params = bert.load_bert(self.folder)
    base_config, base = bert.load_bert(self.model_dir)
    self.assertEqual(config, base_config)
    info = finetune.read_info(self.folder)
    self.assertEqual([c["alpha"] for c in info["curve"]], [0.0, 0.25, 0.5, 0.75, 1.0])
    best = info["alpha"]
    self.assertEqual(best, max(info["curve"], key=lambda c: (
        c["validation"]["acc@1"], c["validation"]["mrr"], -c["alpha"]))["alpha"])
    # The fine-tune learnt: the chosen weights find held-out synonyms the base does not.
    curve = {c["alpha"]: c for c in info["curve"]}
    self.assertGreater(best, 0.0)
    self.assertGreater(curve[best]["validation"]["acc@1"], curve[0.0]["validation"]["acc@1"])
    self.assertGreater(curve[best]["validation"]["mrr"], curve[0.0]["validation"]["mrr"])
    changed = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(params),
                                                     jax.tree.leaves(base))]
    self.assertEqual(any(changed), best > 0)
    # Frozen embedding tables are the base's.
    np.testing.assert_array_equal(params["embeddings"]["word"], base["embeddings"]["word"])

  def test_alpha_zero_curve_point_is_the_base(self):
    config, params = bert.load_bert(self.model_dir)
    tok = load_tokenizer(self.model_dir)
    enc = finetune.encoder_settings(self.config.teacher2, self.model_dir)
    got = ft_alpha.evaluate_params(params, config, tok, enc, self.data, self.settings,
                                   self.dataset.names)
    curve = {c["alpha"]: c for c in finetune.read_info(self.folder)["curve"]}
    self.assertAlmostEqual(got["validation"]["mrr"], curve[0.0]["validation"]["mrr"], 6)

  def test_retrieval_metrics(self):
    keys = np.eye(3)
    queries = np.array([[1.0, 0.1, 0], [0.1, 1, 0.0], [1, 0, 0.5]])
    m = ft_alpha.retrieval_metrics(queries, np.array([0, 1, 2]), keys)
    self.assertAlmostEqual(m["acc@1"], 2 / 3)
    self.assertAlmostEqual(m["mrr"], (1 + 1 + 0.5) / 3)

  # --- cache ---
  def test_cache_reused_and_keyed(self):
    mtime = os.path.getmtime(os.path.join(self.folder, "model.safetensors"))
    again = finetune.ensure_finetuned(self.config.teacher2, self.dataset, self.workdir,
                                      progress_bar=False)
    self.assertEqual(again, self.folder)
    self.assertEqual(mtime, os.path.getmtime(os.path.join(self.folder, "model.safetensors")))
    other = tiny_config(self.model_dir, self.data_dir, steps=7)
    self.assertNotEqual(finetune.finetuned_dir(other.teacher2, self.dataset, self.workdir),
                        self.folder)
    data2 = load_dataset(write_ontology(os.path.join(self.root, "onto2"), seed=1))
    self.assertNotEqual(finetune.finetune_key(self.config.teacher2, data2),
                        finetune.finetune_key(self.config.teacher2, self.dataset))

  # --- bad input ---
  @parameterized.named_parameters(
      ("steps", dict(steps=0), "finetune.steps"),
      ("alpha", dict(alpha=1.5), "finetune.alpha"),
      ("alphas", dict(alphas=[0.0, -0.5]), "finetune.alphas"),
      ("temperature", dict(temperature=0.0), "finetune.temperature"))
  def test_bad_settings(self, overrides, field):
    cfg = tiny_config(self.model_dir, self.data_dir, **overrides)
    with self.assertRaisesRegex(ValueError, field):
      finetune.ensure_finetuned(cfg.teacher2, self.dataset, os.path.join(self.root, "bad"))

  def test_base_without_tokenizer_or_not_bert(self):
    folder = os.path.join(self.root, "no_tok")
    teacher_testing.write_tiny_bert(folder)
    for name in ("vocab.txt", "tokenizer.json"):
      if os.path.exists(os.path.join(folder, name)):
        os.remove(os.path.join(folder, name))
    cfg = tiny_config(folder, self.data_dir)
    with self.assertRaisesRegex(DataError, "no tokenizer files"):
      finetune.ensure_finetuned(cfg.teacher2, self.dataset, os.path.join(self.root, "bad"))
    folder = teacher_testing.write_tiny_bert(os.path.join(self.root, "roberta"))
    path = os.path.join(folder, "config.json")
    hf = json.load(open(path))
    hf["model_type"] = "roberta"
    json.dump(hf, open(path, "w"))
    cfg = tiny_config(folder, self.data_dir)
    with self.assertRaisesRegex(DataError, "config.json: field 'model_type'"):
      finetune.ensure_finetuned(cfg.teacher2, self.dataset, os.path.join(self.root, "bad"))

  def test_no_positive_pairs(self):
    root = write_ontology(os.path.join(self.root, "empty"), with_synonyms=False,
                          with_definitions=False)
    with self.assertRaisesRegex(DataError, "no training pairs"):
      finetune.ensure_finetuned(self.config.teacher2, load_dataset(root),
                                os.path.join(self.root, "bad"))

  def test_empty_name_is_an_error(self):
    import pyarrow as pa
    import pyarrow.parquet as pq
    root = write_ontology(os.path.join(self.root, "noname"))
    path = os.path.join(root, "concepts.parquet")
    table = pq.read_table(path).to_pydict()
    table["name"][3] = " "
    pq.write_table(pa.table(table), path)
    with self.assertRaisesRegex(DataError, "concepts.parquet.*row 3.*name"):
      load_dataset(root)

  # --- wiring ---
  def test_export_and_report(self):
    path = exporter.ensure_teacher_embeddings(self.config.teacher2, self.dataset, self.workdir,
                                            progress_bar=False)
    meta = json.load(open(os.path.join(path, "meta.json")))
    self.assertEqual(meta["finetuned_dir"], self.folder)
    self.assertEqual(meta["kind"], "finetuned")
    vectors = np.load(os.path.join(path, "concepts.npy"))
    from line_jax.teachers import load_encoder
    enc = load_encoder(finetune.hf_teacher_config(self.config.teacher2, self.folder))
    np.testing.assert_allclose(vectors[:5], enc.encode(self.dataset.names[:5]), atol=1e-5)

    from line_jax.cache import store as emb_lib
    base_path = exporter.ensure_teacher_embeddings(self.config.teacher1, self.dataset,
                                                 self.workdir, progress_bar=False)

    class Model:   # what report_metrics reads of a LineModel
      teacher1 = emb_lib.load_teacher_embeddings(base_path, self.dataset)
      teacher2 = emb_lib.load_teacher_embeddings(path, self.dataset)

    metrics = finetune.report_metrics(Model())
    self.assertEqual(sorted(metrics), ["teacher2"])
    info = metrics["teacher2"]
    self.assertEqual(sorted(info["all_terms"]), ["averaged (saved)", "base"])
    # The exported base rows reproduce the curve's alpha = 0 point (all terms are in the pool).
    curve = {c["alpha"]: c for c in info["curve"]}
    self.assertAlmostEqual(info["all_terms"]["base"]["validation"]["mrr"],
                           curve[0.0]["validation"]["mrr"], places=4)
    self.assertAlmostEqual(info["all_terms"]["averaged (saved)"]["test"]["mrr"],
                           curve[info["alpha"]]["test"]["mrr"], places=4)
    text = finetune.report_section(metrics, {"teacher2": "tiny-onto"})
    for row in ("| base | 0 |", "| fine-tuned | 1 |", "| averaged (saved) |"):
      self.assertIn(row, text)
    self.assertEqual(finetune.report_section(None, {}), "")


class ResumeTest(absltest.TestCase):

  def test_killed_finetune_resumes_to_same_weights(self):
    root = tempfile.mkdtemp()
    model_dir = teacher_testing.write_tiny_bert(os.path.join(root, "tiny"),
                                                extra_tensors=False)
    data_dir = write_ontology(os.path.join(root, "onto"))
    overrides = dict(steps=16, checkpoint_every=4)
    config_file = os.path.join(root, "cfg.py")
    with open(config_file, "w") as f:
      f.write(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
        from test_finetune import tiny_config
        def get_config():
          return tiny_config({model_dir!r}, {data_dir!r}, **{overrides!r})
      """))
    killed = os.path.join(root, "killed")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "line_jax.finetune",
                             f"--config={config_file}", f"--workdir={killed}"], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    teachers = os.path.join(killed, "teachers")
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
      found = [os.path.join(teachers, d, "checkpoints") for d in
               (os.listdir(teachers) if os.path.isdir(teachers) else [])]
      steps = [s for c in found if os.path.isdir(c) for s in os.listdir(c) if s.isdigit()]
      if steps:
        break
      time.sleep(0.02)
    self.assertIsNone(proc.poll(), "the fine-tune ended before it could be killed")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    dataset = load_dataset(data_dir)
    config = tiny_config(model_dir, data_dir, **overrides)
    resumed = finetune.ensure_finetuned(config.teacher2, dataset, killed, progress_bar=False)
    info = finetune.read_info(resumed)
    self.assertGreater(info["train"]["resumed_at"], 0)
    whole = finetune.ensure_finetuned(config.teacher2, dataset, os.path.join(root, "whole"),
                                      progress_bar=False)
    self.assertEqual(finetune.read_info(whole)["alpha"], info["alpha"])
    _, a = bert.load_bert(resumed)
    _, b = bert.load_bert(whole)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_allclose(x, y, atol=1e-6, rtol=0)


if __name__ == "__main__":
  absltest.main()
