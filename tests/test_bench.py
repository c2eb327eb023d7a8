"""The benchmarks run at toy sizes and report what they claim (not their speed)."""

from absl.testing import absltest
import jax

from line_jax.benchmarks import paper as bench_paper
from line_jax.benchmarks import train_step as bench_train
from line_jax.training import host_batches as pipeline


class TrainBenchTest(absltest.TestCase):

  def test_train_step_bench_reports_one_compilation_and_its_cost(self):
    r = bench_train.bench_train_step(batch_size=16, dim=16, concepts_per_pair=4, fanout=2,
                                     num_relations=3, steps=2, num_concepts=400,
                                     num_edges=1500, repeats=2)
    self.assertEqual(r["compilations"], 1)
    self.assertGreater(r["pairs_per_s_step"], 0)
    for key in ("pairs_per_s_host_builder", "pairs_per_s_device_builder", "pairs_per_s_loop",
                "pairs_per_s_loop_host_builder"):
      self.assertGreater(r[key], 0, key)
    self.assertGreater(r["loop_over_step"], 0)
    self.assertGreater(r["step_cpu_ms"], 0)
    self.assertGreater(r["loop_cpu_ms"], 0)
    self.assertEqual(r["batch_builder"], "device")
    self.assertLessEqual(r["step_ms_quartiles"][0], r["step_ms_median"])
    self.assertLessEqual(r["step_ms_median"], r["step_ms_quartiles"][1])
    if jax.default_backend() == "cpu":
      from line_jax.model import kernels
      # "auto" on CPU: the kernel reads the stored float16 rows; XLA gets float32 ones.
      self.assertEqual(r["g_edge_attention"], "cpu_kernel" if kernels.available() else "xla")
      self.assertEqual(r["table_dtype"], "float16" if kernels.available() else "float32")
    self.assertGreater(r["kernels_per_step"], 20)
    self.assertGreaterEqual(r["page_faults_per_step"], 0)
    self.assertGreaterEqual(r["kernels_per_step_xla_path"], r["kernels_per_step"])
    line = bench_train.train_gpu_projection(r, 50.0, 2.0, 5.0)     # a GPU runs the XLA path
    self.assertIn(f"{r['kernels_per_step_xla_path']} launches", line)
    self.assertIn("pairs/s", line)

  def test_streaming_bench_trains_from_memmaps_and_recovers_in_blocks(self):
    folder = self.create_tempdir().full_path
    r = bench_train.bench_streaming(num_pairs=300, num_concepts=200, num_edges=800, dim=16,
                                    steps=2, batch_size=16, workdir=folder,
                                    recovery_pairs=100, recovery_pair_block=32)
    self.assertEqual((r["pairs"], r["concepts"], r["steps"]), (300, 200, 2))
    self.assertGreater(r["pairs_per_s"], 0)
    self.assertEqual((r["recovery_pairs"], r["recovery_pair_block"]), (100, 32))
    self.assertGreater(r["recovery_s"], 0)
    self.assertGreaterEqual(r["peak_rss_gib_with_recovery"], r["peak_rss_gib"])
    self.assertGreaterEqual(r["peak_rss_gib"], r["peak_rss_gib_after_setup"])

  def test_paper_schedule_runs_both_stages_and_recovery_at_a_tiny_scale(self):
    shape = bench_paper.PaperShape(pairs=2000, concepts=500, edges=3000, relation_types=3,
                                   concepts_per_pair=4, dim=16, stage1_epochs=2,
                                   stage2_epochs=1)
    r = bench_paper.bench_paper(scale=0.5, batch_size=32, shape=shape,
                                workdir=self.create_tempdir().full_path)
    self.assertEqual((r["pairs"], r["concepts"], r["edges"]), (1000, 250, 1500))
    for phase in ("stage1_s", "recovery_s", "stage2_s"):
      self.assertGreater(r[phase], 0, phase)
    self.assertGreaterEqual(r["schedule_s"], r["stage1_s"] + r["recovery_s"] + r["stage2_s"])
    self.assertEqual(r["compilations"]["stage1"], 1)
    self.assertGreater(r["stage1_steady_pairs_per_s"], 0)
    # The projection: stages grow with the pairs, the search with pairs x concepts.
    steady = (2 * 2000 / r["stage1_steady_pairs_per_s"] + 2000 / r["stage2_steady_pairs_per_s"])
    self.assertAlmostEqual(r["projected_full_stages_s"], steady + r["compile_s"], places=3)
    search = r["recovery_search_s"] * (2000 * 500) / (1000 * 250)
    self.assertAlmostEqual(r["projected_full_recovery_s"],
                           r["recovery_dictionary_s"] / 0.5 + search, places=3)
    with self.assertRaisesRegex(ValueError, "scale=0 must be in"):
      bench_paper.bench_paper(scale=0, shape=shape)

  def test_step_cost_counts(self):
    shapes = pipeline.BatchShapes(batch_size=8, num_shards=1, max_concepts=3,
                                  positive_slots=16, negated_slots=4, edges=40,
                                  relational_edges=2, num_types=3, fanout=2, edge_block=4)
    cost = bench_train.step_cost(shapes, dim=10, num_types=3)
    g = 2 * (2 * 40 * 10 * 3) + 2 * (2 * 40 * 10)       # logits + grad, sums + transpose
    rows = 3 * (2 * 8 + 3 * 2 + 2 * 4 + 8 + 4) + 2 * 8
    total = g + 2 * rows * 10 * 10 + 3 * 2 * 8 * 8 * 10
    self.assertAlmostEqual(cost["gflop_per_step_est"], total / 1e9)
    self.assertAlmostEqual(cost["g_share_of_flop"], g / total)
    self.assertAlmostEqual(cost["edge_slab_mb_moved_per_step_est"], 5 * 40 * 10 * 4 / 2**20)
    self.assertAlmostEqual(cost["cpu_kernel_edge_mb_read_per_step_est"],
                           2 * 40 * 10 * 4 / 2**20)

  def test_count_kernels_skips_free_instructions(self):
    hlo = ("HloModule m\n\nENTRY %main {\n  %p = f32[2] parameter(0)\n"
           "  %c = f32[] constant(1)\n  %b = f32[2,1] bitcast(%p)\n"
           "  %f = f32[2] fusion(%p, %c), kind=kLoop\n  %d = f32[2] dot(%f, %f)\n"
           "  ROOT %t = (f32[2]) tuple(%d)\n}\n")
    self.assertEqual(bench_train.count_kernels(hlo), 2)


if __name__ == "__main__":
  absltest.main()
