"""`ensure_finetuned`: the fine-tuned, averaged teacher folder, trained first when missing
(resuming a killed run), every bad setting or input reported before the long work starts."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time

from line_jax.data.dataset import Dataset
from line_jax.teachers import bert
from line_jax.teachers.encoder import load_tokenizer
from line_jax.teachers.finetune.alpha import alpha_curve, best_alpha, eval_pool, plot_curve
from line_jax.teachers.finetune.folder import (FOLDER_FILES, copy_tokenizer_files,
                                               is_complete, write_hf_folder)
from line_jax.teachers.finetune.key import finetuned_dir
from line_jax.teachers.finetune.loop import train
from line_jax.teachers.finetune.pairs import FinetuneData, build_data
from line_jax.teachers.finetune.settings import (FinetuneSettings, check_base_folder,
                                                 encoder_settings, read_settings)
from line_jax.teachers.finetune.step import average
from line_jax.teachers.resolve import resolve_model_dir
from line_jax.util import files as files_lib


def _cached_folder(teacher_cfg, folder: str, base_dir: str) -> bool:
  """Whether `folder` holds a finished fine-tune (tokenizer files lost since are restored
  from the base, which fine-tuning never changes)."""
  if (not is_complete(folder) and all(os.path.exists(os.path.join(folder, f))
                                      for f in FOLDER_FILES)):
    logging.warning("teacher %s: %s has no tokenizer files; copying the base model's from %s",
                    teacher_cfg.get("name"), folder, base_dir)
    copy_tokenizer_files(base_dir, folder)
  if is_complete(folder):
    logging.info("teacher %s: fine-tuned model cached in %s", teacher_cfg.get("name"), folder)
    return True
  return False


def _check_lengths(teacher_cfg, s: FinetuneSettings, config: bert.BertConfig,
                   base_dir: str) -> None:
  if max(s.name_max_length, s.definition_max_length) > config.max_position_embeddings:
    raise ValueError(f"teacher {teacher_cfg.get('name')!r}: field 'finetune."
                     f"definition_max_length': longer than the {config.max_position_embeddings}"
                     f" positions of {base_dir}")


def _log_data(teacher_cfg, base_dir: str, data: FinetuneData) -> None:
  logging.info("teacher %s: fine-tuning %s on %d name/entry and %d name/definition pairs "
               "(validation %d, test %d held-out synonyms, %d candidate terms)",
               teacher_cfg.get("name"), base_dir, data.counts["entry_pairs"],
               data.counts["definition_pairs"], data.counts["validation_queries"],
               data.counts["test_queries"], data.counts["candidates"])


def _info(s: FinetuneSettings, base_dir: str, data: FinetuneData, pool, curve: dict,
          best: float, train_info: dict, enc) -> dict:
  """finetune.json: settings, counts, the held-out queries, the alpha curve, training."""
  return {"base": s.base, "base_dir": base_dir, "settings": s.key_dict(),
          "counts": dict(data.counts, eval_candidates=int(len(pool))), "alpha": best,
          "queries": {"validation": [data.val_concept.tolist(), data.val_term.tolist()],
                      "test": [data.test_concept.tolist(), data.test_term.tolist()],
                      "candidates": data.candidates.tolist()},
          "curve": [{"alpha": a, **scores} for a, scores in curve.items()],
          "train": train_info, "pooling": enc.pooling, "normalize": enc.normalize}


def _install(folder: str, params, config: bert.BertConfig, base_dir: str,
             info: dict) -> None:
  """Writes the folder aside (folder.tmp) and renames it into place."""
  tmp = folder + ".tmp"
  os.makedirs(tmp, exist_ok=True)
  write_hf_folder(tmp, params, config, base_dir)
  plot_curve(info, os.path.join(tmp, "alpha_curve.png"))
  with open(os.path.join(tmp, "finetune.json"), "w") as f:
    json.dump(files_lib.json_safe(info), f, indent=1)
  if os.path.exists(folder):
    shutil.rmtree(folder)
  os.replace(tmp, folder)


def ensure_finetuned(teacher_cfg, dataset: Dataset, workdir: str, progress_bar: bool = True,
                     stop_after_steps: int = 0) -> str:
  """The fine-tuned, averaged teacher folder; trained first when missing (resuming a killed
  run). Every bad setting or input is reported before the long work starts.
  `stop_after_steps` > 0 (tests): checkpoint after that step and return "" unfinished."""
  s = read_settings(teacher_cfg)
  base_dir = resolve_model_dir(s.base)
  config = check_base_folder(base_dir)
  folder = finetuned_dir(teacher_cfg, dataset, workdir)
  if _cached_folder(teacher_cfg, folder, base_dir):
    return folder
  enc = encoder_settings(teacher_cfg, base_dir)
  _check_lengths(teacher_cfg, s, config, base_dir)
  data = build_data(dataset, s)
  _log_data(teacher_cfg, base_dir, data)
  _, base_params = bert.load_bert(base_dir)
  tokenizer = load_tokenizer(base_dir)
  work = folder + ".work"
  started = time.time()
  tuned, train_info = train(base_params, config, tokenizer, data, s, enc.pooling, work,
                            progress_bar=progress_bar, stop_after_steps=stop_after_steps)
  if train_info["stopped"]:
    logging.info("fine-tune stopped after step %d (checkpoint in %s)", stop_after_steps, work)
    return ""
  train_info = dict(train_info, seconds=time.time() - started)
  pool = eval_pool(data, s)
  curve = alpha_curve(base_params, tuned, config, tokenizer, enc, data, s, dataset.names, pool)
  best = best_alpha(curve, s)
  info = _info(s, base_dir, data, pool, curve, best, train_info, enc)
  _install(folder, average(base_params, tuned, best), config, base_dir, info)
  shutil.rmtree(work, ignore_errors=True)   # the checkpoints are no longer needed
  logging.info("teacher %s: fine-tuned (alpha %.2f) in %s", teacher_cfg.get("name"), best,
               folder)
  return folder
