"""The package's imports run one way: no circle, no import inside a function, and no module
imports a command-line entry point. Read from the source with `ast`; nothing is imported."""

import ast
import os
import subprocess
import sys

from absl.testing import absltest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "line_jax"
# `python -m` entry points: flags at module top, so never imported by the package.
ENTRY_POINTS = {"line_jax.train", "line_jax.evaluate", "line_jax.export", "line_jax.embed",
                "line_jax.soup", "line_jax.bench", "line_jax.data.hpo.__main__",
                "line_jax.data.umls.__main__", "line_jax.data.notes.__main__",
                "line_jax.eval.ner.__main__", "line_jax.finetune"}
# Imported inside a function only where they are optional or heavy and rarely needed.
OPTIONAL = {"faiss", "torch", "transformers", "safetensors", "huggingface_hub", "matplotlib"}


def module_files():
  """{module name: path} of every .py file of the package."""
  out = {}
  for folder, _, files in os.walk(os.path.join(ROOT, PACKAGE)):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)
        if parts[-1] == "__init__":
          parts = parts[:-1]
        out[".".join(parts)] = path
  return out


def imported_modules(tree: ast.AST, module: str, is_package: bool, known: set):
  """(name, node) of each package module that `tree` imports."""
  for node in ast.walk(tree):
    names = []
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[:len(anchor) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
      names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
               for a in node.names]
    for name in names:
      if name in known:
        yield name, node


def import_graph():
  files = module_files()
  known = set(files)
  graph, inner = {}, []
  for module, path in files.items():
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read(), path)
    is_package = path.endswith("__init__.py")
    graph[module] = {name for name, _ in imported_modules(tree, module, is_package, known)
                     if name != module}
    for fn in ast.walk(tree):
      if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
        for node in ast.walk(fn):
          if isinstance(node, (ast.Import, ast.ImportFrom)):
            top = (node.module or "").split(".")[0] if isinstance(node, ast.ImportFrom) \
                else node.names[0].name.split(".")[0]
            if getattr(node, "level", 0) or top not in OPTIONAL:
              inner.append(f"{os.path.relpath(path, ROOT)}:{node.lineno} in {fn.name}()")
  return graph, inner


def find_circle(graph):
  """One import circle as a list of modules [a, b, ..., a], or None."""
  state, stack = {}, []

  def visit(module):
    state[module] = "open"
    stack.append(module)
    for other in sorted(graph.get(module, ())):
      if state.get(other) == "open":
        return stack[stack.index(other):] + [other]
      if other not in state:
        found = visit(other)
        if found:
          return found
    stack.pop()
    state[module] = "done"
    return None

  for module in sorted(graph):
    if module not in state:
      found = visit(module)
      if found:
        return found
  return None


# The floors of the house, lowest first: a module imports only from its own floor or below.
LAYERS = ("util", "search", "config", "data", "teachers", "cache", "model", "training",
          "eval", "api", "benchmarks", "commands")


def layer_of(module: str) -> str:
  """The floor of a package module: its first sub-package, `config`, or `commands` for the
  top-level `python -m` modules (and the package itself, whose lazy `LineModel` is the API)."""
  parts = module.split(".")
  if len(parts) == 1:
    return "commands"
  if parts[1] in LAYERS or parts[1] == "config":
    return parts[1]
  if module in ENTRY_POINTS or len(parts) == 2:
    return "commands"
  raise AssertionError(f"{module} belongs to no floor of {LAYERS}")


class ImportDirectionTest(absltest.TestCase):

  def test_imports_go_down_the_floors(self):
    graph, _ = import_graph()
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = sorted(f"{m} ({layer_of(m)}) -> {o} ({layer_of(o)})"
                    for m, deps in graph.items() for o in deps
                    if rank[layer_of(o)] > rank[layer_of(m)])
    self.assertEqual(upward, [])
    top = sorted(m for m in graph if m.count(".") == 1 and layer_of(m) == "commands")
    self.assertEqual(set(top) - ENTRY_POINTS - {"line_jax.config"}, set(),
                     "a top-level module that is not a command: put it on a floor")

  def test_finds_a_planted_circle(self):
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    self.assertEqual(find_circle(graph), ["a", "b", "c", "a"])
    self.assertIsNone(find_circle({"a": {"b"}, "b": set(), "c": {"a", "b"}}))

  def test_no_import_circle(self):
    graph, _ = import_graph()
    self.assertGreater(len(graph), 20)
    circle = find_circle(graph)
    self.assertIsNone(circle, f"import circle: {' -> '.join(circle or [])}")

  def test_no_import_inside_a_function(self):
    _, inner = import_graph()
    self.assertEqual(inner, [], "imports inside functions (move them to the module top)")

  def test_no_module_imports_an_entry_point(self):
    graph, _ = import_graph()
    offenders = sorted(f"{m} -> {e}" for m, deps in graph.items() for e in deps
                       if e in ENTRY_POINTS)
    self.assertEqual(offenders, [])

  def test_training_does_not_import_evaluation_or_the_api(self):
    graph, _ = import_graph()
    reached, todo = set(), ["line_jax.training.trainer"]
    while todo:
      for other in graph[todo.pop()]:
        if other not in reached:
          reached.add(other)
          todo.append(other)
    self.assertFalse({m for m in reached if m.startswith("line_jax.eval")} |
                     ({"line_jax.api.line_model"} & reached), sorted(reached))


class ImportCostTest(absltest.TestCase):

  def test_commands_that_draw_nothing_do_not_load_matplotlib(self):
    """matplotlib (about half a second) is loaded with the first figure, not with training,
    embedding or export: each of their processes starts that much sooner."""
    code = ("import sys, line_jax.train, line_jax.api.embed_file, line_jax.cache.export; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    self.assertEqual(out.strip(), "[]")


if __name__ == "__main__":
  absltest.main()
