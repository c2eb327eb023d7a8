"""Nothing lost on the data import paths: the UMLS import never writes over a folder it did
not build and swaps a re-import in whole; an empty notes file never replaces pairs.parquet;
bad input files (empty, not UTF-8, damaged or misnamed) give errors naming the file, the line
or row and what was expected."""

import os
import re
import subprocess
import sys
import textwrap
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import pyarrow as pa
import pyarrow.parquet as pq

from line_jax.data import atomic
from line_jax.data import hpo
from line_jax.data import notes
from line_jax.data import testing
from line_jax.data import umls
from line_jax.data.dataset import DataError, load_dataset
from line_jax.data.notes import pairs_import
from line_jax.data.umls import build as umls_build
from line_jax.eval.ner import bio as ner_bio

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = dict(heldout_fraction=0.0, num_sibling_pairs=0)


def run_module(module, *args):
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True,
                        text=True, timeout=120, env={**os.environ, "PYTHONPATH": REPO})


def run_python(script):
  return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=REPO,
                        capture_output=True, text=True, timeout=120,
                        env={**os.environ, "PYTHONPATH": REPO})


def snapshot(folder):
  """{relative path: bytes} of every file under `folder`."""
  out = {}
  for base, _, files in os.walk(folder):
    for name in files:
      path = os.path.join(base, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, folder)] = f.read()
  return out


def parquet_bytes(table):
  sink = pa.BufferOutputStream()
  pq.write_table(table, sink)
  return sink.getvalue().to_pybytes()


class _WithDataset(parameterized.TestCase):
  """A tiny UMLS release imported into `self.dataset`, with pairs from a few notes."""

  def setUp(self):
    super().setUp()
    self.root = self.create_tempdir().full_path
    self.meta = testing.write_tiny_umls(os.path.join(self.root, "META"))
    self.dataset = os.path.join(self.root, "ds")
    umls.build_umls_dataset(self.meta, self.dataset, SETTINGS, progress=False)
    notes.build_pairs(self.dataset, testing.write_notes_jsonl(
        os.path.join(self.root, "notes.jsonl"), testing.tiny_notes(10)), progress=False)
    self.before = snapshot(self.dataset)

  def assertSameFiles(self, folder, expected, names=None):
    found = snapshot(folder)
    names = sorted(set(found) | set(expected)) if names is None else names
    self.assertEqual([n for n in names if found.get(n) != expected.get(n)], [],
                     "files that differ")

  def assertDatasetUnchanged(self):
    self.assertSameFiles(self.dataset, self.before)
    load_dataset(self.dataset)

  def write(self, name, data: bytes):
    path = os.path.join(self.root, name)
    with open(path, "wb") as f:
      f.write(data)
    return path


# --- 1. the UMLS import's output folder -------------------------------------------------


class UmlsOutFolderTest(_WithDataset):

  @parameterized.named_parameters(
      ("users_dataset", {"concepts.parquet": parquet_bytes(pa.table({"x": [1]})),
                         "relations.parquet": parquet_bytes(pa.table({"y": [2]})),
                         "stats.json": b"{\"mine\": 1}"}, "no built_by.json"),
      ("other_files", {"notes.csv": b"note_id,text\n1,fever\n"}, "no built_by.json"),
      ("another_builders_dataset", {"built_by.json": b"{\"builder\": \"hpo\"}",
                                    "concepts.parquet": b"PAR1"}, "the hpo builder made"))
  def test_folder_it_did_not_build_refused_unchanged(self, files, message):
    out = os.path.join(self.root, "mine")
    os.makedirs(out)
    for name, data in files.items():
      with open(os.path.join(out, name), "wb") as f:
        f.write(data)
    siblings = sorted(os.listdir(self.root))
    with self.assertRaisesRegex(DataError, re.escape(out) + ".*" + message):
      umls.build_umls_dataset(self.meta, out, SETTINGS, progress=False)
    self.assertEqual(snapshot(out), files)
    self.assertEqual(sorted(os.listdir(self.root)), siblings)   # no temporary folder left

  def test_command_refuses_users_folder_with_nonzero_exit(self):
    out = os.path.join(self.root, "mine")
    os.makedirs(out)
    files = {"concepts.parquet": parquet_bytes(pa.table({"x": [1]})), "stats.json": b"{}"}
    for name, data in files.items():
      with open(os.path.join(out, name), "wb") as f:
        f.write(data)
    proc = run_module("line_jax.data.umls", f"--meta={self.meta}", f"--out={out}")
    self.assertNotEqual(proc.returncode, 0)
    self.assertIn(out, proc.stderr)
    self.assertIn("built_by.json", proc.stderr)
    self.assertEqual(snapshot(out), files)

  def test_out_is_a_file(self):
    path = self.write("afile", b"mine")
    with self.assertRaisesRegex(DataError, re.escape(path) + ": not a folder"):
      umls.build_umls_dataset(self.meta, path, SETTINGS, progress=False)
    self.assertEqual(snapshot(self.root)["afile"], b"mine")

  def test_reimport_replaces_its_files_and_keeps_the_others(self):
    os.chmod(self.dataset, 0o750)
    stats = umls.build_umls_dataset(self.meta, self.dataset, dict(SETTINGS, max_concepts=5),
                                    progress=False)
    after = snapshot(self.dataset)
    for name in ("pairs.parquet", "notes_stats.json"):       # the notes import's files
      self.assertEqual(after[name], self.before[name], name)
    self.assertNotEqual(after["concepts.parquet"], self.before["concepts.parquet"])
    self.assertEqual(set(pq.read_table(os.path.join(self.dataset, "concepts.parquet"))
                         .column("term_id").to_pylist()),
                     {f"C900000{k}" for k in range(1, 6)})
    self.assertGreater(stats["pairs_parquet_unknown_concept_ids"], 0)  # warned: stale pairs
    self.assertEqual(os.stat(self.dataset).st_mode & 0o777, 0o750)
    self.assertEqual(sorted(os.listdir(self.root)), ["META", "ds", "notes.jsonl"])

  def test_failed_reimport_leaves_previous_dataset(self):
    real = umls_build.write_edges

    def write_edges(edges, path, **kw):
      real(edges[:1], path, **kw)
      raise OSError(28, "No space left on device")

    with mock.patch.object(umls_build, "write_edges", write_edges):
      with self.assertRaisesRegex(OSError, "No space left"):
        umls.build_umls_dataset(self.meta, self.dataset, dict(SETTINGS, max_concepts=5),
                                progress=False)
    self.assertDatasetUnchanged()
    self.assertEqual(sorted(os.listdir(self.root)), ["META", "ds", "notes.jsonl"])

  def test_killed_reimport_leaves_previous_dataset(self):
    proc = run_python(f"""
      import os, signal
      from line_jax.data import umls
      from line_jax.data.umls import build
      real = build.write_edges
      def write_edges(edges, path, **kw):
        real(edges[:1], path, **kw)
        os.kill(os.getpid(), signal.SIGKILL)
      build.write_edges = write_edges
      umls.build_umls_dataset({self.meta!r}, {self.dataset!r},
                              dict(heldout_fraction=0.0, max_concepts=5), progress=False)
    """)
    self.assertEqual(proc.returncode, -9, proc.stderr[-2000:])
    self.assertDatasetUnchanged()
    # The dead import's folder is removed by the next import, which succeeds.
    self.assertTrue(any(".partial-" in n for n in os.listdir(self.root)))
    umls.build_umls_dataset(self.meta, self.dataset, SETTINGS, progress=False)
    self.assertEqual(sorted(os.listdir(self.root)), ["META", "ds", "notes.jsonl"])
    self.assertEqual(load_dataset(self.dataset).num_pairs, len(
        pq.read_table(os.path.join(self.dataset, "pairs.parquet"))))

  def test_swap_file_by_file_where_folders_cannot_be_exchanged(self):
    with mock.patch.object(atomic, "exchange", return_value=False):
      umls.build_umls_dataset(self.meta, self.dataset, dict(SETTINGS, max_concepts=5),
                              progress=False)
    self.assertEqual(snapshot(self.dataset)["pairs.parquet"], self.before["pairs.parquet"])
    self.assertEqual(sorted(os.listdir(self.root)), ["META", "ds", "notes.jsonl"])
    # Stopped half-way through the moves: the folder is refused until a rerun completes.
    real, moved = os.replace, []

    def replace(src, dst):
      if os.path.basename(dst) == "relations.parquet":
        raise OSError(5, "Input/output error")
      moved.append(dst)
      real(src, dst)

    with mock.patch.object(atomic, "exchange", return_value=False), \
        mock.patch.object(atomic.os, "replace", replace):
      with self.assertRaises(OSError):
        umls.build_umls_dataset(self.meta, self.dataset, SETTINGS, progress=False)
    self.assertIn(os.path.join(self.dataset, "concepts.parquet"), moved)
    with self.assertRaisesRegex(DataError, "built_by.json: the umls build was stopped while "
                                "moving its files"):
      load_dataset(self.dataset)
    umls.build_umls_dataset(self.meta, self.dataset, SETTINGS, progress=False)
    self.assertSameFiles(self.dataset, self.before, ["concepts.parquet", "relations.parquet",
                                                     "pairs.parquet"])   # as setUp made them
    load_dataset(self.dataset)

  def test_hpo_builder_does_not_write_over_an_import(self):
    out = os.path.join(self.root, "imported")
    umls.build_umls_dataset(self.meta, out, SETTINGS, progress=False)
    before = snapshot(out)
    with self.assertRaisesRegex(DataError, "the umls builder made"):
      hpo.build_hpo_dataset(out)
    self.assertEqual(snapshot(out), before)


class UmlsRelationsTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.meta = testing.write_tiny_umls(self.create_tempdir().full_path)
    self.mrrel = os.path.join(self.meta, "MRREL.RRF")

  def test_relation_naming_a_cui_absent_from_mrconso_counted_and_logged(self):
    with open(self.mrrel, "a") as f:
      f.write("C9000001||CUI|RO|C7777777||CUI||R1||TINY|TINY|||N||\n")
    line = len(testing.TINY_RELATIONS) + 1
    with self.assertLogs(level="WARNING") as logs:
      stats = umls.build_umls_dataset(self.meta, self.create_tempdir().full_path, SETTINGS,
                                      progress=False)
    self.assertEqual(stats["mrrel"]["dropped_cui_not_in_mrconso"], 1)
    self.assertTrue(any(f"line {line}, CUI1 'C9000001', CUI2 'C7777777'" in m
                        for m in logs.output), logs.output)

  def test_mrrel_of_another_release_refused(self):
    with open(self.mrrel, "w") as f:
      for k in range(3):
        f.write(f"C800000{k}||CUI|RO|C800001{k}||CUI||R{k}||TINY|TINY|||N||\n")
    out = self.create_tempdir().full_path
    with self.assertRaisesRegex(DataError, r"MRREL.RRF: 3 of 3 rows name a CUI that "
                                r"MRCONSO.RRF does not hold \(first: line 1"):
      umls.build_umls_dataset(self.meta, out, SETTINGS, progress=False)
    self.assertEqual(os.listdir(out), [])


# --- 2. a notes file that gives no pair ----------------------------------------------------


class NotesNothingFoundTest(_WithDataset):

  @parameterized.named_parameters(
      ("empty_jsonl", "notes.jsonl", b"", "no notes"),
      ("header_only_csv", "notes.csv", b"note_id,text\n", "no notes"),
      ("zero_row_parquet", "notes.parquet", parquet_bytes(pa.table(
          {"note_id": pa.array([], pa.string()), "text": pa.array([], pa.string())})),
       "no notes"),
      ("nothing_found", "notes.jsonl", b'{"note_id": "a", "text": "The weather is mild."}\n'
       b'{"note_id": "b", "text": "Nothing to report."}\n', "no note text with a concept"),
      ("only_empty_notes", "notes.jsonl", b'{"note_id": "a", "text": "  "}\n',
       "every one of the 1 notes is empty"))
  def test_refused_and_pairs_left_as_they_were(self, name, data, message):
    path = self.write(name, data)
    with self.assertRaisesRegex(DataError, re.escape(path) + ": .*" + message):
      notes.build_pairs(self.dataset, path, progress=False)
    self.assertDatasetUnchanged()
    proc = run_module("line_jax.data.notes", f"--dataset={self.dataset}", f"--notes={path}")
    self.assertNotEqual(proc.returncode, 0)
    self.assertIn(path, proc.stderr)
    self.assertDatasetUnchanged()


# --- 3. input files: empty, not UTF-8, damaged, misnamed ---------------------------------


def _inject(path, line, old: bytes, new: bytes) -> int:
  """Replaces `old` by `new` on line `line` (from 1); returns the byte offset of `new`."""
  with open(path, "rb") as f:
    lines = f.read().split(b"\n")
  assert old in lines[line - 1], (old, lines[line - 1])
  offset = sum(len(x) + 1 for x in lines[:line - 1]) + lines[line - 1].index(old)
  lines[line - 1] = lines[line - 1].replace(old, new, 1)
  with open(path, "wb") as f:
    f.write(b"\n".join(lines))
  return offset


class RrfFileTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.meta = testing.write_tiny_umls(self.create_tempdir("META").full_path)
    self.out = os.path.join(self.create_tempdir().full_path, "ds")

  def build(self, **overrides):
    return umls.build_umls_dataset(self.meta, self.out, dict(SETTINGS, **overrides),
                                   progress=False)

  @parameterized.parameters(("MRCONSO.RRF", "CUI|LAT|TS"), ("MRREL.RRF", "CUI1|AUI1"))
  def test_empty_required_file(self, name, columns):
    open(os.path.join(self.meta, name), "w").close()
    with self.assertRaisesRegex(DataError, re.escape(f"{name}: empty file (0 bytes); expected "
                                                     f"lines of {columns}")):
      self.build()
    self.assertFalse(os.path.exists(self.out))

  @parameterized.parameters(("MRSTY.RRF", "mrsty"), ("MRDEF.RRF", "mrdef"))
  def test_empty_optional_file_has_no_rows(self, name, key):
    open(os.path.join(self.meta, name), "w").close()
    stats = self.build()
    self.assertEqual(stats[key]["rows"], 0)   # the import completes without them
    self.assertTrue(os.path.exists(os.path.join(self.out, "concepts.parquet")))

  @parameterized.parameters(("MRCONSO.RRF", 3, b"Cardiac", "STR"),
                            ("MRREL.RRF", 4, b"TINY", "SAB"),
                            ("MRDEF.RRF", 2, b"seizure", "DEF"))
  def test_not_utf8_names_file_line_field_and_offset(self, name, line, word, field):
    path = os.path.join(self.meta, name)
    offset = _inject(path, line, word, word[:2] + b"\xe9" + word[2:])
    with self.assertRaisesRegex(DataError, re.escape(
        f"{path}: line {line}, field '{field}': not UTF-8 text: byte 0xe9 at byte ") +
        r"\d+ of the value " + re.escape(f"(byte offset {offset + 2} of the file)") +
        ".*invalid_utf8='replace'"):
      self.build()
    self.assertFalse(os.path.exists(self.out))

  def test_not_utf8_replaced_counted_and_logged(self):
    _inject(os.path.join(self.meta, "MRCONSO.RRF"), 3, b"Cardiac", b"Card\xe9ac")
    with self.assertLogs(level="WARNING") as logs:
      stats = self.build(invalid_utf8="replace")
    self.assertEqual(stats["mrconso"]["invalid_utf8_replaced"], 1)
    self.assertTrue(any("1 values held bytes that are not UTF-8" in m for m in logs.output))
    names = pq.read_table(os.path.join(self.out, "concepts.parquet")).column("name")
    self.assertIn("Card\ufffdac disease", names.to_pylist())

  def test_line_numbers_count_blank_lines(self):
    path = os.path.join(self.meta, "MRREL.RRF")
    with open(path) as f:
      lines = f.read().split("\n")
    lines.insert(2, "")
    lines[5] = lines[5].replace("|PAR|", "|ZZ|")
    with open(path, "w") as f:
      f.write("\n".join(lines))
    with self.assertRaisesRegex(DataError, r"MRREL.RRF: line 6: field 'REL': unknown code "
                                r"'ZZ'"):
      self.build()


class NotesFileTest(_WithDataset):

  def check(self, path, message):
    with self.assertRaisesRegex(DataError, re.escape(path) + ": " + message):
      notes.build_pairs(self.dataset, path, progress=False)
    self.assertDatasetUnchanged()

  def test_jsonl_not_utf8(self):
    first = b'{"note_id": "a", "text": "Fever."}\n'
    path = self.write("notes.jsonl", first + b'{"note_id": "b", "text": "Co\xffugh."}\n')
    self.check(path, re.escape(f"line 2: not UTF-8 text: byte 0xff at byte offset "
                               f"{len(first) + 28} of the file"))

  def test_csv_not_utf8(self):
    head = b"note_id,text\na,Fever.\n"
    path = self.write("notes.csv", head + b"b,Co\xffugh.\n")
    self.check(path, re.escape(f"row 1, field 'text': not UTF-8 text: byte 0xff at byte 2 of "
                               f"the value (byte offset {len(head) + 4} of the file, line 3)"))

  def test_csv_header_not_utf8(self):
    path = self.write("notes.csv", b"note_id,te\xffxt\na,Fever.\n")
    self.check(path, re.escape("line 1: not UTF-8 text: byte 0xff at byte offset 10"))

  def test_csv_row_with_too_many_fields(self):
    path = self.write("notes.csv", b"note_id,text\na,Fever.\nb,Cough, then fever.\n")
    self.check(path, re.escape("line 3: 3 fields, expected 2 (as the header row); a text "
                               "holding a comma needs double quotes"))

  def test_csv_column_twice(self):
    path = self.write("notes.csv", b"note_id,text,text\na,Fever.,Cough.\n")
    self.check(path, "field 'text': 2 columns of this name in the header row")

  def test_parquet_id_of_another_type(self):
    path = self.write("notes.parquet", parquet_bytes(pa.table(
        {"note_id": [[1], [2]], "text": ["Fever.", "Cough."]})))
    self.check(path, r"field 'note_id': expected strings or integers, got list")

  def test_folder_given(self):
    path = os.path.join(self.root, "notes.jsonl.d")
    os.makedirs(path)
    self.check(path, r"not a file \(a folder\?\)")

  @parameterized.named_parameters(
      ("truncated_parquet", "notes.parquet", "half", "not a readable Parquet file: it starts "
       r"as Parquet but its end is missing or damaged \(a copy cut short\?\)"),
      ("jsonl_as_parquet", "notes.parquet", "jsonl", "not a readable Parquet file: it looks "
       r"like JSON lines \(it starts with '\{'\); name it .jsonl"),
      ("parquet_as_jsonl", "notes.jsonl", "parquet", r"line 1: not JSON lines: it is a "
       r"Parquet file \(it starts with PAR1\); name it .parquet"),
      ("parquet_as_csv", "notes.csv", "parquet", r"not a CSV file: it is a Parquet file"))
  def test_damaged_or_misnamed(self, name, content, message):
    table = pa.table({"note_id": ["a", "b"], "text": ["Fever.", "Cough."]})
    data = {"parquet": parquet_bytes(table),
            "half": parquet_bytes(table)[:len(parquet_bytes(table)) // 2],
            "jsonl": b'{"note_id": "a", "text": "Fever."}\n'}[content]
    self.check(self.write(name, data), message)


class PairsFileTest(_WithDataset):

  def check(self, path, message):
    with self.assertRaisesRegex(DataError, re.escape(path) + ": " + message):
      pairs_import.import_pairs(self.dataset, path)
    self.assertDatasetUnchanged()

  def test_jsonl_not_utf8(self):
    first = b'{"text": "Fever.", "concept_ids": ["C9000006"]}\n'
    path = self.write("pairs.jsonl", first + b'{"text": "\xff Fever.", "concept_ids": []}\n')
    self.check(path, re.escape(f"line 2: not UTF-8 text: byte 0xff at byte offset "
                               f"{len(first) + 10} of the file"))

  def test_empty_file(self):
    self.check(self.write("pairs.jsonl", b""), r"no usable row \(the file has no rows\)")

  @parameterized.named_parameters(
      ("truncated_parquet", "pairs.parquet", "half", "not a readable Parquet file: it starts "
       "as Parquet but its end is missing"),
      ("jsonl_as_parquet", "pairs.parquet", "jsonl", "not a readable Parquet file: it looks "
       "like JSON lines"),
      ("parquet_as_jsonl", "pairs.jsonl", "parquet", "line 1: not JSON lines: it is a "
       "Parquet file"))
  def test_damaged_or_misnamed(self, name, content, message):
    rows = b'{"text": "Fever.", "concept_ids": ["C9000006"]}\n'
    table = pa.table({"text": ["Fever."], "concept_ids": [["C9000006"]]})
    data = {"parquet": parquet_bytes(table),
            "half": parquet_bytes(table)[:len(parquet_bytes(table)) // 2],
            "jsonl": rows}[content]
    self.check(self.write(name, data), message)


class DamagedDatasetFileTest(_WithDataset):

  def test_cut_short_concepts(self):
    path = os.path.join(self.dataset, "concepts.parquet")
    with open(path, "rb") as f:
      data = f.read()
    with open(path, "wb") as f:
      f.write(data[:len(data) // 2])
    for read in (lambda: load_dataset(self.dataset),
                 lambda: notes.build_pairs(self.dataset, os.path.join(self.root,
                                                                      "notes.jsonl"))):
      with self.assertRaisesRegex(DataError, re.escape(path) + ": not a readable Parquet "
                                  "file"):
        read()
    self.assertEqual(snapshot(self.dataset)["pairs.parquet"], self.before["pairs.parquet"])


class BioFileTest(absltest.TestCase):

  def test_not_utf8_names_line_and_offset(self):
    path = os.path.join(self.create_tempdir().full_path, "train.bio")
    with open(path, "wb") as f:
      f.write(b"fever B-X\ncough\xff O\n")
    with self.assertRaisesRegex(DataError, re.escape(
        f"{path}: line 2: not UTF-8 text: byte 0xff at byte offset 15 of the file")):
      ner_bio.read_bio(path)


if __name__ == "__main__":
  absltest.main()
