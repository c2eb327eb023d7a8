"""The house rules that can be read from the source with `ast`: no module over 600 lines and
no function over 80 (a config's defaults function may list its fields in one), across the
whole package."""

import ast
import os

from absl.testing import absltest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
ONE_LIST = {("line_jax/config.py", "base_config")}


def sources():
  """(path relative to the repository, source) of each package module."""
  for folder, _, names in os.walk(os.path.join(ROOT, "line_jax")):
    for name in sorted(names):
      if name.endswith(".py"):
        rel = os.path.relpath(os.path.join(folder, name), ROOT).replace(os.sep, "/")
        with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
          yield rel, f.read()


def long_functions(rel: str, source: str, limit: int = MAX_FUNCTION_LINES) -> list:
  return [f"{rel}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
          for node in ast.walk(ast.parse(source, rel))
          if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
          and node.end_lineno - node.lineno + 1 > limit and (rel, node.name) not in ONE_LIST]


class HouseTest(absltest.TestCase):

  def test_no_module_over_600_lines(self):
    long = [f"{rel} ({source.count(chr(10))} lines)" for rel, source in sources()
            if source.count("\n") > MAX_MODULE_LINES]
    self.assertEqual(long, [], "split these modules: one job per file")

  def test_no_function_over_80_lines(self):
    long = [f for rel, source in sources() for f in long_functions(rel, source)]
    self.assertEqual(long, [], "cut these functions into named steps")

  def test_finds_a_planted_long_function(self):
    body = "\n".join(f"  x{i} = {i}" for i in range(81))
    self.assertLen(long_functions("m.py", f"def f():\n{body}\n"), 1)
    self.assertEqual(long_functions("m.py", "def f():\n  return 1\n"), [])


if __name__ == "__main__":
  absltest.main()
