"""launch/colab_line_jax.ipynb runs top to bottom (nbclient) on the tiny synthetic config."""

import os
import tempfile

from absl.testing import absltest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, "launch", "colab_line_jax.ipynb")


class NotebookTest(absltest.TestCase):

  def test_runs_top_to_bottom_with_the_test_config(self):
    import nbclient
    import nbformat
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    parameters = [i for i, cell in enumerate(notebook.cells)
                  if "parameters" in cell.metadata.get("tags", [])]
    self.assertLen(parameters, 1)
    self.assertIn('CONFIG = "configs/test.py"', notebook.cells[parameters[0]].source)
    root = tempfile.mkdtemp()
    # Like papermill: a cell after the parameters points the run at a temporary folder and
    # keeps the evaluation's linear probes short.
    injected = nbformat.v4.new_code_cell(
        f"WORKDIR = {os.path.join(root, 'run')!r}\n"
        f"DATA_DIR = {os.path.join(root, 'data')!r}\n"
        'OVERRIDES = {"eval.classifier_max_epochs": 100, "eval.cv_folds": 2}')
    notebook.cells.insert(parameters[0] + 1, injected)
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": REPO}})
    client.execute()

    outputs = "\n".join(out.get("text", "") for cell in notebook.cells
                        if cell.cell_type == "code" for out in cell.outputs)
    self.assertIn("its own text ranks", outputs)
    self.assertIn("in the top 5", outputs)
    self.assertIn("dictionary concepts closest to the text", outputs)
    self.assertIn("new strings cannot be embedded", outputs)
    images = [out for cell in notebook.cells if cell.cell_type == "code"
              for out in cell.outputs if "image/png" in out.get("data", {})]
    self.assertGreaterEqual(len(images), 3)     # ranks, ROC, recovery, loss curves
    self.assertTrue(os.path.exists(os.path.join(root, "run", "report.md")))

  def test_committed_without_outputs(self):
    import nbformat
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:
      if cell.cell_type == "code":
        self.assertEqual(cell.outputs, [])
        self.assertIsNone(cell.execution_count)


if __name__ == "__main__":
  absltest.main()
