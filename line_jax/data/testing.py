"""Tiny bring-your-own-data inputs for tests: a UMLS release in RRF and a few notes.

Everything here is made up (no UMLS content); CUIs are C9xxxxxx.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

# (CUI, preferred name, other English strings, semantic type)
TINY_CONCEPTS = (
    ("C9000001", "Disease", ("Disorder",), "Disease or Syndrome"),
    ("C9000002", "Heart disease", ("Cardiac disease",), "Disease or Syndrome"),
    ("C9000003", "Lung disease", ("Pulmonary disease",), "Disease or Syndrome"),
    ("C9000004", "Kidney disease", ("Renal disease",), "Disease or Syndrome"),
    ("C9000005", "Liver disease", ("Hepatic disease",), "Disease or Syndrome"),
    ("C9000006", "Fever", ("Pyrexia", "Febrile"), "Sign or Symptom"),
    ("C9000007", "Cough", ("Coughing",), "Sign or Symptom"),
    ("C9000008", "Chest pain", ("Pain in chest",), "Sign or Symptom"),
    ("C9000009", "Seizure", ("Convulsion",), "Sign or Symptom"),
    ("C9000010", "Ataxia", (), "Sign or Symptom"),
    ("C9000011", "Short stature", ("Small stature",), "Finding"),
    ("C9000012", "Chronic kidney disease", (), "Disease or Syndrome"),
    ("C9000013", "Acute liver disease", (), "Disease or Syndrome"),
    ("C9000014", "Severe chest pain", (), "Sign or Symptom"),
)
# (CUI1, REL, CUI2): REL is the relation of CUI2 to CUI1 (PAR: CUI2 is CUI1's parent).
TINY_RELATIONS = (
    ("C9000002", "PAR", "C9000001"), ("C9000001", "CHD", "C9000002"),
    ("C9000003", "PAR", "C9000001"), ("C9000001", "CHD", "C9000003"),
    ("C9000004", "PAR", "C9000001"), ("C9000005", "PAR", "C9000001"),
    ("C9000012", "PAR", "C9000004"), ("C9000013", "PAR", "C9000005"),
    ("C9000014", "PAR", "C9000008"),
    ("C9000006", "RO", "C9000007"), ("C9000007", "RO", "C9000006"),
    ("C9000008", "RL", "C9000002"), ("C9000009", "RO", "C9000010"),
    ("C9000011", "RQ", "C9000010"), ("C9000012", "RB", "C9000004"),
    ("C9000004", "RN", "C9000012"), ("C9000006", "SY", "C9000006"),
    ("C9000003", "SIB", "C9000002"), ("C9000007", "AQ", "C9000003"),
    ("C9000009", "RO", "C9000099"),     # C9000099 has only a French string
)
FOREIGN_ONLY = ("C9000099", "Convulsion fébrile", "FRE")


def _row(fields: Sequence[str]) -> str:
  return "|".join(fields) + "|\n"


def write_tiny_umls(meta: str, with_optional: bool = True) -> str:
  """Writes MRCONSO/MRREL (and MRSTY/MRDEF) RRF files into `meta`; returns `meta`."""
  os.makedirs(meta, exist_ok=True)
  aui = 0
  with open(os.path.join(meta, "MRCONSO.RRF"), "w", encoding="utf-8") as f:
    for cui, name, others, _ in TINY_CONCEPTS:
      # An atom that is not preferred comes first: the importer must pick by TS/STT/ISPREF.
      for k, (text, ts, stt, ispref) in enumerate(
          [(s, "S", "VO", "N") for s in others] + [(name, "P", "PF", "Y")]):
        aui += 1
        f.write(_row([cui, "ENG", ts, f"L{aui:07d}", stt, f"S{aui:07d}", ispref,
                      f"A{aui:07d}", "", "", "", "TINY", "PT" if ts == "P" else "SY",
                      f"T{aui}", text, "0", "N", ""]))
    cui, text, lat = FOREIGN_ONLY
    f.write(_row([cui, lat, "P", "L9999999", "PF", "S9999999", "Y", "A9999999", "", "", "",
                  "TINY_FR", "PT", "F1", text, "0", "N", ""]))
  with open(os.path.join(meta, "MRREL.RRF"), "w", encoding="utf-8") as f:
    for k, (c1, rel, c2) in enumerate(TINY_RELATIONS):
      f.write(_row([c1, "", "CUI", rel, c2, "", "CUI", "", f"R{k:08d}", "", "TINY", "TINY",
                    "", "", "N", ""]))
  if with_optional:
    with open(os.path.join(meta, "MRSTY.RRF"), "w", encoding="utf-8") as f:
      for cui, _, _, sty in TINY_CONCEPTS[:-1]:   # the last CUI has no type: group Unknown
        f.write(_row([cui, "T047", "B2.2.1.2.1", sty, "AT0001", ""]))
    with open(os.path.join(meta, "MRDEF.RRF"), "w", encoding="utf-8") as f:
      f.write(_row(["C9000006", "A0000001", "AT1", "", "TINY",
                    "Fever is a raised body temperature, often with cough.", "N", ""]))
      f.write(_row(["C9000009", "A0000002", "AT2", "", "TINY",
                    "A seizure is a burst of brain activity.", "N", ""]))
  return meta


TINY_NOTE_SENTENCES = (
    "The patient has fever and cough.",
    "No chest pain.",
    "She denies seizure but has ataxia.",
    "History of chronic kidney disease and heart disease.",
    "Pulmonary disease was ruled out.",
    "Mild short stature.",
    "Acute liver disease with severe chest pain.",
    "No fever, but convulsion was noted.",
)


def tiny_notes(count: int = 24) -> list:
  """(note_id, text) of discharge-style notes with section headers."""
  notes = []
  s = TINY_NOTE_SENTENCES
  for i in range(count):
    a, b, c, d = (s[(i + k) % len(s)] for k in (0, 3, 5, 6))
    text = (f"Chief Complaint: {a}\n\nHistory of Present Illness:\n{b} {c}\n\n"
            f"Past Medical History: {d}\nDischarge Condition: stable.\n")
    notes.append((f"note{i:03d}", text))
  return notes


def write_notes_jsonl(path: str, notes: Sequence[tuple], text_column: str = "text",
                      id_column: str = "note_id") -> str:
  with open(path, "w", encoding="utf-8") as f:
    for note_id, text in notes:
      f.write(json.dumps({id_column: note_id, text_column: text}) + "\n")
  return path
