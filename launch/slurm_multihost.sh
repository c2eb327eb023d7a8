#!/usr/bin/env bash
# Multi-host data-parallel LINE training with JAX's own runtime (jax.distributed).
#
#   sbatch --nodes=2 --gpus-per-node=4 launch/slurm_multihost.sh configs/bge_coder.py runs/bge_coder \
#       --config.data.dir=/data/my_dataset
#
# One process per node, driving all of its node's GPUs. jax.distributed.initialize() reads
# the SLURM environment (coordinator = first node, port from the job id or
# $JAX_COORDINATOR_PORT; process count and index); every process builds the same global
# batch plan and feeds its own devices' shards; parameters are replicated, gradients
# all-reduced. Process 0 writes the work dir and evaluates; the work dir must be on a file
# system all nodes share (orbax writes one checkpoint).
#SBATCH --job-name=line_jax
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=16
#SBATCH --time=12:00:00
set -euo pipefail
config=${1:?config file}; workdir=${2:?work dir}; shift 2
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
# jax's SLURM detection alone gives each process the one GPU numbered by its rank on the
# node (SLURM_LOCALID); this job's single process per node takes all of them.
if [[ -n "${SLURM_GPUS_ON_NODE:-}" && -z "${JAX_LOCAL_DEVICE_IDS:-}" ]]; then
  export JAX_LOCAL_DEVICE_IDS=$(seq -s, 0 $((SLURM_GPUS_ON_NODE - 1)))
fi
# Teacher embeddings are exported once, by one process, before the distributed job starts.
srun --nodes=1 --ntasks=1 python -m line_jax.export --config="$config" --workdir="$workdir" "$@"
srun python -m line_jax.train --distributed --config="$config" --workdir="$workdir" "$@"
