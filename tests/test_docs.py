"""The README and docs/*.md stay true to the code.

For README.md and every docs/*.md: each repository path they name (configs/..., line_jax/...,
docs/..., launch/..., scripts/..., tests/...) exists; each `python -m line_jax.X --flag=...`
command of a code block (and of inline code) names only flags that module defines (its absl
flags, read by importing it in a fresh process; `--config.a.b` fields checked against the
config the command names, else the base config). The README's ```python snippets run against
a tiny trained run; docs/layout.md lists every module of line_jax/; the README stays under
14,000 bytes and links every docs/*.md; the HPO data folder they name is the builder's
current one (hpo-v<DATA_VERSION>). Each checker is a function that returns what it
found wrong, and a test plants a mistake to see it reported.
"""

import contextlib
import glob
import importlib
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
from unittest import mock

from absl.testing import absltest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = "README.md"
README_LIMIT = 14_000
PATH_ROOTS = ("configs", "line_jax", "docs", "launch", "scripts", "tests")
_PATH = re.compile(r"(?<![\w./$~-])((?:%s)/[\w./-]*)" % "|".join(PATH_ROOTS))
_FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```", re.S | re.M)
_INDENTED = re.compile(r"(?:^|\n)\n((?: {4}\S.*\n?)(?: {4}.*\n?)*)")
_INLINE = re.compile(r"`([^`\n]+)`")
_COMMAND = re.compile(r"python3? -m (line_jax(?:\.\w+)*)")
_FLAG = re.compile(r"(?<![^\s\[])--([A-Za-z_][\w.]*)")
_SHELL_LANGUAGES = ("", "bash", "sh", "shell", "console")


def doc_files() -> list:
  """README.md and docs/*.md, relative to the repository root."""
  return [README] + sorted(os.path.relpath(p, ROOT)
                           for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))


def read(relpath: str) -> str:
  with open(os.path.join(ROOT, relpath), encoding="utf-8") as f:
    return f.read()


def code_blocks(text: str, languages=_SHELL_LANGUAGES) -> list:
  """The bodies of the fenced code blocks of `text` in one of `languages`, and, when ""
  (no language) is one of them, of its indented (4-space) code blocks."""
  blocks = [m.group(2) for m in _FENCE.finditer(text) if m.group(1).lower() in languages]
  if "" in languages:
    blocks += [textwrap.dedent(m.group(1)) for m in _INDENTED.finditer(_FENCE.sub("", text))]
  return blocks


def inline_code(text: str) -> list:
  """The inline `code` spans of `text`, fenced blocks left out."""
  return _INLINE.findall(_FENCE.sub("", text))


# --------------------------------------------------------------------------------------
# Paths.
# --------------------------------------------------------------------------------------


def named_paths(text: str) -> list:
  """Repository paths named in inline code and in shell blocks, in order, once each."""
  spans = inline_code(text) + code_blocks(text)
  found = []
  for span in spans:
    for path in _PATH.findall(span):
      path = path.rstrip(".,")
      if path not in found:
        found.append(path)
  return found


def missing_paths(text: str, root: str = ROOT) -> list:
  """The named repository paths that do not exist under `root`."""
  return [p for p in named_paths(text) if not os.path.exists(os.path.join(root, p))]


# --------------------------------------------------------------------------------------
# Commands and their flags.
# --------------------------------------------------------------------------------------


def commands(text: str) -> list:
  """(module, [flag names]) of each `python -m line_jax.X ...` command in a shell block or
  an inline span; continued lines joined, a command ends at ;, &, | or a line end."""
  pieces = [block.replace("\\\n", " ") for block in code_blocks(text)] + inline_code(text)
  out = []
  for piece in pieces:
    for line in piece.splitlines():
      for segment in re.split(r"&&|\|\||[;&|]", line):
        m = _COMMAND.search(segment)
        if m:
          out.append((m.group(1), _FLAG.findall(segment[m.end():]),
                      _config_file(segment[m.end():])))
  return out


def _config_file(arguments: str):
  m = re.search(r"--config=(configs/\w+\.py)\b", arguments)
  return m.group(1) if m else None


_FLAG_TABLE = {}

_FLAG_SCRIPT = r"""
import importlib, json, sys
from absl import flags
FLAGS = flags.FLAGS
out = {}


def fields(flag):
  # The dotted fields of a config_dict flag's ConfigDict; None for other flags (and for a
  # config_file flag, whose config is the file a command names).
  if "Config" not in type(flag).__name__ or flag.default is None:
    return None
  def walk(node, prefix):
    for key, value in node.items():
      yield prefix + key
      if hasattr(value, "items"):
        yield from walk(value, prefix + key + ".")
  try:
    return sorted(walk(flag.value, ""))
  except Exception:
    return None


for name in sys.argv[1:]:
  before = set(FLAGS)
  try:
    module = importlib.import_module(name)
  except Exception as e:  # reported by the test, naming the module
    out[name] = {"error": f"{type(e).__name__}: {e}"}
    continue
  out[name] = {"flags": {n: {"config": "Config" in type(FLAGS[n]).__name__,
                             "bool": bool(FLAGS[n].boolean),
                             "fields": fields(FLAGS[n])} for n in FLAGS}}
  # Commands define flags of the same names (workdir, config): forget this one's.
  for n in set(FLAGS) - before:
    delattr(FLAGS, n)
print(json.dumps(out))
"""


def command_module(name: str) -> str:
  """The module `python -m name` runs: the package's __main__ for a package."""
  spec = importlib.util.find_spec(name)
  if spec is None:
    return name
  return name + ".__main__" if spec.submodule_search_locations else name


def flag_table(modules) -> dict:
  """{module: {"flags": {name: {"config": bool, "bool": bool}}} or {"error": str}}, each
  module imported in one fresh process (absl defines a command's flags at import)."""
  wanted = sorted(set(modules) - set(_FLAG_TABLE))
  if wanted:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    run = subprocess.run([sys.executable, "-c", _FLAG_SCRIPT] +
                         [command_module(m) for m in wanted],
                         capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    if run.returncode:
      raise RuntimeError(f"reading the flags of {wanted} failed:\n{run.stderr[-3000:]}")
    table = json.loads(run.stdout.strip().splitlines()[-1])
    for m in wanted:
      _FLAG_TABLE[m] = table[command_module(m)]
  return {m: _FLAG_TABLE[m] for m in modules}


def _config(config_file):
  """The config a command's --config.FIELD overrides apply to."""
  if config_file and os.path.exists(os.path.join(ROOT, config_file)):
    spec = importlib.util.spec_from_file_location("docs_checked_config",
                                                  os.path.join(ROOT, config_file))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()
  from line_jax.config import base_config
  return base_config()


def _has_field(config, dotted: str) -> bool:
  node = config
  for part in dotted.split("."):
    try:
      node = node[part]
    except (KeyError, TypeError, AttributeError):
      return False
  return True


def unknown_flags(text: str) -> list:
  """"line_jax.X --flag" for every flag of a documented command that the module does not
  define (or, for --config.a.b, a field its config lacks), and "line_jax.X: ..." for a
  module that does not import."""
  found = commands(text)
  table = flag_table({module for module, _, _ in found})
  problems = []
  configs = {}
  for module, names, config_file in found:
    entry = table[module]
    if "error" in entry:
      problems.append(f"{module}: {entry['error']}")
      continue
    defined = entry["flags"]
    for name in names:
      head, _, field = name.partition(".")
      if name in defined:
        continue
      if name.startswith("no") and defined.get(name[2:], {}).get("bool"):
        continue
      if field and defined.get(head, {}).get("fields") is not None:
        if field in defined[head]["fields"]:
          continue
      elif field and defined.get(head, {}).get("config"):
        if config_file not in configs:
          configs[config_file] = _config(config_file)
        if _has_field(configs[config_file], field):
          continue
      problems.append(f"{module} --{name}")
  return problems


# --------------------------------------------------------------------------------------
# The layout and the README.
# --------------------------------------------------------------------------------------


def package_modules(root: str = ROOT) -> list:
  """Every .py file under line_jax/, as a repository path."""
  out = []
  for folder, dirs, files in os.walk(os.path.join(root, "line_jax")):
    dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__pycache__")))
    out += [os.path.relpath(os.path.join(folder, f), root) for f in sorted(files)
            if f.endswith(".py")]
  return sorted(out)


def unlisted_modules(layout_text: str, modules) -> list:
  """The modules (and their folders) that docs/layout.md does not name in inline code."""
  listed = set(named_paths(layout_text))
  listed |= {p.rstrip("/") for p in listed}
  folders = sorted({os.path.dirname(m) for m in modules})
  return [p for p in list(modules) + folders if p not in listed]


def readme_problems(text: str, docs) -> list:
  """The README's size over the limit, and the docs/*.md it does not name."""
  problems = []
  size = len(text.encode("utf-8"))
  if size >= README_LIMIT:
    problems.append(f"README.md is {size} bytes, limit {README_LIMIT}")
  named = set(named_paths(text))
  problems += [f"README.md does not link {d}" for d in docs if d not in named]
  return problems


def stale_data_dirs(text: str, version: int) -> list:
  """Mentions of the HPO data folder other than the builder's current `hpo-v<version>`
  (e.g. an embed example reading `.../line_jax/hpo/pairs.parquet`, which no build writes)."""
  found = [m for m in re.findall(r"hpo-v\d+", text) if m != f"hpo-v{version}"]
  return found + re.findall(r"line_jax\}?/hpo/", text)


def python_snippets(text: str) -> list:
  return code_blocks(text, languages=("python",))


# --------------------------------------------------------------------------------------
# Tests.
# --------------------------------------------------------------------------------------


class DocsTest(absltest.TestCase):

  def test_named_paths_exist(self):
    for doc in doc_files():
      with self.subTest(doc=doc):
        self.assertEqual(missing_paths(read(doc)), [], f"{doc} names missing paths")

  def test_command_flags_are_defined(self):
    texts = {doc: read(doc) for doc in doc_files()}
    flag_table({m for t in texts.values() for m, _, _ in commands(t)})   # one process
    for doc, text in texts.items():
      with self.subTest(doc=doc):
        self.assertEqual(unknown_flags(text), [], f"{doc}: unknown flags")

  def test_layout_lists_every_module(self):
    self.assertEqual(unlisted_modules(read("docs/layout.md"), package_modules()), [])

  def test_readme_is_short_and_links_every_doc(self):
    docs = [d for d in doc_files() if d != README]
    self.assertNotEmpty(docs)
    self.assertEqual(readme_problems(read(README), docs), [])

  def test_hpo_data_folder_is_current(self):
    from line_jax.data.hpo import build as hpo_build
    for doc in doc_files():
      with self.subTest(doc=doc):
        self.assertEqual(stale_data_dirs(read(doc), hpo_build.DATA_VERSION), [])

  def test_readme_keeps_the_ci_test_line(self):
    """.ci/run runs the README's test command verbatim."""
    ci_lines = [line for line in read(".ci/run").splitlines()
                if line.startswith("python3 -m venv")]
    self.assertLen(ci_lines, 1)
    self.assertIn(ci_lines[0], read(README).splitlines())


class CheckersFindMistakesTest(absltest.TestCase):
  """Each check reports a planted mistake."""

  def test_missing_path(self):
    text = ("See `line_jax/api/line_model.py` and `line_jax/api/no_such.py`.\n\n"
            "```bash\npython -m line_jax.train --config=configs/nope.py\n```\n")
    self.assertEqual(missing_paths(text), ["line_jax/api/no_such.py", "configs/nope.py"])
    self.assertEqual(missing_paths("`runs/hpo/report.md`, `$LINE_JAX_DATA/hpo-v2`"), [])

  def test_unknown_flag(self):
    text = ("```bash\npython -m line_jax.evaluate --workdir=W --only=recognition \\\n"
            "  --no_such_flag=1 --config=configs/test.py --config.eval.split=valid "
            "--config.eval.nope=1 && python -m line_jax.soup --noevaluate --nowhere\n```\n"
            "and `python -m line_jax.data.umls --meta=M --out=O --colour=red "
            "--umls.invalid_utf8=replace --umls.nope=1`.\n")
    self.assertEqual(unknown_flags(text),
                     ["line_jax.evaluate --no_such_flag", "line_jax.evaluate --config.eval.nope",
                      "line_jax.soup --nowhere", "line_jax.data.umls --colour",
                      "line_jax.data.umls --umls.nope"])
    self.assertEqual(unknown_flags("```bash\npython -m line_jax.nope --x=1\n```\n")[0][:14],
                     "line_jax.nope:")

  def test_stale_data_folder(self):
    text = "--input=${LINE_JAX_DATA:-$HOME/.cache/line_jax}/hpo/pairs.parquet, `hpo-v1`, hpo-v2"
    self.assertEqual(stale_data_dirs(text, 2), ["hpo-v1", "line_jax}/hpo/"])

  def test_unlisted_module(self):
    modules = ["line_jax/a.py", "line_jax/new/b.py"]
    self.assertEqual(unlisted_modules("`line_jax/`\n- `line_jax/a.py`: a\n- `line_jax/new/`: b\n",
                                      modules), ["line_jax/new/b.py"])

  def test_long_readme_and_unlinked_doc(self):
    text = "`docs/data.md`\n" + "x" * README_LIMIT
    self.assertEqual(readme_problems(text, ["docs/data.md", "docs/other.md"]),
                     [f"README.md is {len(text)} bytes, limit {README_LIMIT}",
                      "README.md does not link docs/other.md"])


def train_tiny_run(root: str) -> str:
  """The synthetic test config, 1 + 1 epochs; returns the work dir."""
  from configs import test as test_config
  from line_jax.training import loop as loop_lib
  config = test_config.get_config()
  config.data.dir = os.path.join(root, "data")
  config.train.stage1_epochs = 1
  config.train.stage2_epochs = 1
  workdir = os.path.join(root, "run")
  loop_lib.train(config, workdir)
  return workdir


def readme_snippet_for(snippet: str, workdir: str, concept_ids) -> str:
  """The snippet on `workdir` instead of runs/hpo, the HPO ids it names replaced by the
  run's own ids in order of first mention."""
  code = snippet.replace('"runs/hpo"', repr(workdir))
  for i, hpo_id in enumerate(dict.fromkeys(re.findall(r"HP:\d{7}", code))):
    code = code.replace(hpo_id, str(concept_ids[i]))
  return code


class ReadmePythonTest(absltest.TestCase):
  """The README's ```python snippets, run on a tiny trained synthetic run whose teacher 1 is
  a tiny random BERT (so that new strings can be embedded, as with the default's MiniLM)."""

  def test_snippets_run(self):
    from line_jax.api.line_model import LineModel
    from line_jax.teachers import testing as teacher_testing
    snippets = python_snippets(read(README))
    self.assertNotEmpty(snippets)
    root = tempfile.mkdtemp()
    workdir = train_tiny_run(root)
    bert = teacher_testing.write_tiny_bert(os.path.join(root, "bert"), hidden_size=32)
    original = LineModel.load.__func__

    def load_with_bert(cls, *args, **kwargs):
      model = original(cls, *args, **kwargs)
      model.config.teacher1.update(kind="hf", model=bert, preset="", pooling="mean",
                                   max_length=16, dim=32, batch_size=8)
      return model

    ids = [str(c) for c in LineModel.load(workdir).dataset.concept_ids]
    with mock.patch.object(LineModel, "load", classmethod(load_with_bert)):
      for i, snippet in enumerate(snippets):
        code = readme_snippet_for(snippet, workdir, ids)
        self.assertNotIn("runs/hpo", code)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
          exec(compile(code, f"README.md python block {i}", "exec"), {"__name__": "readme"})
        self.assertNotEmpty(out.getvalue())


if __name__ == "__main__":
  absltest.main()
