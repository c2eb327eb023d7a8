"""Checks that a fine-tuned teacher folder loads in PyTorch and embeds as line_jax does.

  python scripts/check_teacher_torch.py WORKDIR/teachers/minilm-hpo-<key> [--pooling=mean]

Needs torch and transformers (torch is not a line_jax dependency: run it where torch is
installed). Loads the folder with transformers' `BertModel.from_pretrained` (no missing or
unexpected weights allowed), embeds a few strings with the teacher's pooling (mean over
real tokens or CLS, then L2-normalised) and compares with line_jax's JAX encoder on the
same folder. Exits non-zero on any difference above --atol.
"""

import argparse
import json
import os
import sys

import numpy as np

TEXTS = ["Short stature", "Abnormality of the cardiovascular system", "seizures",
         "The patient reports recurrent fevers and a chronic cough since childhood.",
         "Hypoplasia of the left ventricle"]


def torch_embeddings(folder, texts, pooling, max_length):
  import torch
  from transformers import AutoTokenizer, BertModel
  model, info = BertModel.from_pretrained(folder, output_loading_info=True)
  problems = {k: v for k, v in info.items() if v}
  # A checkpoint without pooler weights leaves the (unused) pooler newly initialised.
  problems.get("missing_keys", []) and problems.__setitem__(
      "missing_keys", [k for k in problems["missing_keys"] if not k.startswith("pooler.")])
  problems = {k: v for k, v in problems.items() if v}
  if problems:
    raise SystemExit(f"{folder}: BertModel.from_pretrained reports {problems}")
  model.eval()
  tok = AutoTokenizer.from_pretrained(folder)
  batch = tok(texts, padding=True, truncation=True, max_length=max_length,
              return_tensors="pt")
  with torch.no_grad():
    hidden = model(**batch).last_hidden_state
  if pooling == "mean":
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
  else:
    pooled = hidden[:, 0]
  pooled = torch.nn.functional.normalize(pooled, dim=-1)
  return pooled.numpy()


def jax_embeddings(folder, texts, pooling, max_length):
  from line_jax.teachers import load_encoder
  from line_jax.config import teacher_config
  enc = load_encoder(teacher_config(kind="hf", model=folder, pooling=pooling,
                                    normalize=True, max_length=max_length))
  return enc.encode(texts)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("folder")
  parser.add_argument("--pooling", default="")
  parser.add_argument("--max_length", type=int, default=128)
  parser.add_argument("--atol", type=float, default=1e-4)
  args = parser.parse_args()
  pooling = args.pooling
  if not pooling:
    info_path = os.path.join(args.folder, "finetune.json")
    pooling = json.load(open(info_path)).get("pooling", "mean") if os.path.exists(
        info_path) else "mean"
  if pooling not in ("mean", "cls"):
    raise SystemExit(f"--pooling {pooling!r}: this check handles 'mean' and 'cls'")
  a = torch_embeddings(args.folder, TEXTS, pooling, args.max_length)
  b = jax_embeddings(args.folder, TEXTS, pooling, args.max_length)
  diff = float(np.abs(a - b).max())
  cos = np.sum(a * b, axis=1)
  print(f"{args.folder}: BertModel.from_pretrained loaded; {len(TEXTS)} strings, {pooling} "
        f"pooling; max |torch - jax| = {diff:.2e}, min cosine {cos.min():.6f}")
  if diff > args.atol:
    print(f"FAIL: difference above --atol {args.atol}")
    sys.exit(1)
  print("OK")


if __name__ == "__main__":
  main()
