"""A concept teacher fine-tuned on the dataset's own ontology, then weight-averaged.

Contrastive training between a concept's name and the other strings that name it (the
BioLORD recipe), as pure functions over the JAX BERT of `line_jax.teachers.bert`, one job a
module:

  settings   the validated `finetune` block of the teacher config;
  pairs      positives: a term's name <-> each of its synonym / layperson entries and
             <-> its train-split definitions; the held-out validation / test synonyms;
  batches    length buckets and a batch order fixed by (seed, step);
  step       model, symmetric InfoNCE loss with in-batch negatives, the jitted step;
  loop       the training loop, checkpointed and resumable;
  alpha      saved weights = alpha * fine_tuned + (1 - alpha) * base, alpha chosen on the
             validation synonyms; the alpha curve;
  folder     the Hugging Face folder written (config.json, model.safetensors, tokenizer
             files, finetune.json, alpha_curve.png) and the kind-"hf" config reading it;
  key        the folder's place, WORKDIR/teachers/<name>-<key>, key = hash(base weights +
             training strings + settings): an unchanged dataset and config reuse it;
  driver     `ensure_finetuned`, all of the above in order;
  report     the evaluation report's section on it.

The names below are the package's interface to the rest of line_jax.
"""

from line_jax.teachers.finetune.driver import ensure_finetuned
from line_jax.teachers.finetune.folder import (hf_teacher_config, is_complete,
                                               new_strings_config, read_info)
from line_jax.teachers.finetune.key import finetune_key, finetuned_dir
from line_jax.teachers.finetune.report import (report_metrics, report_section,
                                               write_report_files)
from line_jax.teachers.finetune.settings import encoder_settings, read_settings

__all__ = ["encoder_settings", "ensure_finetuned", "finetune_key", "finetuned_dir",
           "hf_teacher_config", "is_complete", "new_strings_config", "read_info",
           "read_settings", "report_metrics", "report_section", "write_report_files"]
