r"""Fine-tunes the concept teacher(s) of a config alone (teacher kind "finetuned").

  python -m line_jax.finetune --config=configs/hpo_minilm.py --workdir=runs/hpo

builds (or loads) the dataset and writes each fine-tuned teacher's Hugging Face folder to
WORKDIR/teachers/<name>-<key> (see line_jax.teachers.finetune); `line_jax.train` does the
same on its own when the folder is missing. A killed run resumes from its last checkpoint.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from line_jax.util import logs
from line_jax.data import prepare_dataset
from line_jax.teachers import finetune

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (get_config()).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Work directory (teachers/ is written here).")
_STOP_AFTER = flags.DEFINE_integer("stop_after_steps", 0,
                                   "Tests: train this many steps, checkpoint and exit.")
flags.mark_flags_as_required(["config", "workdir"])


def run(config, workdir: str, stop_after_steps: int = 0) -> dict:
  """{teacher name: fine-tuned folder} for every teacher of kind "finetuned"."""
  dataset = prepare_dataset(config)
  return {config[key].name: finetune.ensure_finetuned(config[key], dataset, workdir,
                                                      stop_after_steps=stop_after_steps)
          for key in ("teacher1", "teacher2") if config[key].kind == "finetuned"}


def main(argv):
  del argv
  logs.setup()
  folders = run(_CONFIG.value, _WORKDIR.value, _STOP_AFTER.value)
  if not folders:
    raise app.UsageError("no teacher of kind 'finetuned' in the config")
  for name, folder in folders.items():
    print(f"{name}: {folder}")


if __name__ == "__main__":
  app.run(main)
