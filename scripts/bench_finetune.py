"""Fine-tune step speed of a config's concept teacher: compile time per bucket length and
pairs/s once compiled (CPU or accelerator, whatever JAX uses).

  python scripts/bench_finetune.py --config=configs/hpo_minilm.py --steps=30

Prints one line per bucket length (first-step seconds, i.e. compile + run) and the steady
pairs/s over the measured steps, with the machine's load average for context.
"""

import os
import time

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (get_config()).")
_STEPS = flags.DEFINE_integer("steps", 30, "Measured steps after warm-up.")
_TEACHER = flags.DEFINE_string("teacher", "teacher2", "Teacher of kind 'finetuned'.")
_LENGTHS = flags.DEFINE_list("lengths", [], "Only batches of these bucket lengths.")


def main(argv):
  del argv
  from line_jax.data import prepare_dataset
  from line_jax.teachers import bert, finetune
  from line_jax.teachers.finetune import batches as ft_batches
  from line_jax.teachers.finetune import pairs as ft_pairs
  from line_jax.teachers.finetune import step as ft_step
  from line_jax.teachers.encoder import load_tokenizer
  from line_jax.teachers.resolve import resolve_model_dir
  config = _CONFIG.value
  tcfg = config[_TEACHER.value]
  s = finetune.read_settings(tcfg)
  dataset = prepare_dataset(config)
  data = ft_pairs.build_data(dataset, s)
  base_dir = resolve_model_dir(s.base)
  bcfg, params = bert.load_bert(base_dir)
  plan = ft_batches.BatchPlan(data, load_tokenizer(base_dir), s, bcfg.pad_token_id)
  enc = finetune.encoder_settings(tcfg, base_dir)
  trainable, frozen = ft_step.split_params(ft_step.stack_layers(params), s.train_embeddings)
  opt = ft_step.make_optimizer(s)
  opt_state = opt.init(trainable)
  step_fn = ft_step.make_train_step(bcfg, enc.pooling, s.temperature, opt)
  by_length = {}
  wanted = {int(x) for x in _LENGTHS.value}
  for step in range(plan.batches_per_epoch):
    length = int(plan.shapes[plan._epoch(0)[step][0]])
    if not wanted or length in wanted:
      by_length.setdefault(length, []).append(step)
  print(f"backend {jax.default_backend()}, load average {os.getloadavg()}, batch "
        f"{s.batch_size} pairs, lengths {sorted(by_length)}")
  for length, steps in sorted(by_length.items()):
    step = steps[0]
    t, c = time.time(), time.process_time()
    trainable, opt_state, loss = step_fn(trainable, opt_state, frozen, plan.batch(step))
    loss.block_until_ready()
    print(f"length {length}: first step {time.time() - t:.1f}s wall, "
          f"{time.process_time() - c:.1f}s CPU (compile + run)", flush=True)
  pairs, t, c = 0, time.time(), time.process_time()
  chosen = sorted(x for steps in by_length.values() for x in steps)
  for step in chosen[:_STEPS.value]:
    batch = plan.batch(step)
    trainable, opt_state, loss = step_fn(trainable, opt_state, frozen, batch)
    pairs += int(batch["valid"].sum())
  loss.block_until_ready()
  seconds, cpu = time.time() - t, time.process_time() - c
  cores = len(os.sched_getaffinity(0))
  print(f"{pairs} pairs in {seconds:.1f}s: {pairs / seconds:.1f} pairs/s wall; "
        f"{cpu:.1f}s CPU, i.e. {pairs / cpu * cores:.1f} pairs/s on {cores} idle cores "
        f"(load average {os.getloadavg()})")


if __name__ == "__main__":
  app.run(main)
