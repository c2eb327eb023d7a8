#!/usr/bin/env bash
# The GPU check in one command: the environment, the GPU-relevant tests, the train-step,
# paper-schedule and 1M x 1M search benchmarks. Each step writes its own log under LOGDIR
# and a failed or timed-out step does not stop the others; LOGDIR/summary.txt (also
# printed) lists every step's status, time and result lines.
#
#   bash scripts/gpu_check.sh LOGDIR
#
# Settings (environment variables):
#   GPU_CHECK_TIMEOUT        seconds a step may run (default 1800)
#   GPU_CHECK_TEST_TIMEOUT   seconds the tests may run (default: GPU_CHECK_TIMEOUT)
#   GPU_CHECK_PAPER_SCALE    bench --what=paper --scale (default 0.1)
#   GPU_CHECK_PAPER_FULL     1: also the paper's full scale, 1.0 (default 0)
#   GPU_CHECK_QUICK          1: tiny sizes in every step and a few tests (to try the script
#                            itself, e.g. on a CPU)
#   GPU_CHECK_ONLY           comma list: run only the steps whose names start with one of
#                            these (tests, train, paper, search; e.g. "train_d768,search")
#   GPU_CHECK_TESTS          the pytest arguments of the tests step, split at spaces (default:
#                            the GPU-relevant test files)
#   GPU_CHECK_SITE           where wheels of .whl/ are installed (default /tmp/site)
#   PYTHON                   the interpreter (default: python, else python3)
#
# Without `pip install -e .`: the repository root goes on PYTHONPATH; wheels in a folder
# .whl/ at the root (packages this machine lacks) are first installed, without their
# dependencies, into GPU_CHECK_SITE, which goes on PYTHONPATH too.
set -uo pipefail

logdir=${1:?usage: bash scripts/gpu_check.sh LOGDIR}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$logdir" && logdir=$(cd "$logdir" && pwd)
cd "$repo"

timeout_s=${GPU_CHECK_TIMEOUT:-1800}
test_timeout_s=${GPU_CHECK_TEST_TIMEOUT:-$timeout_s}
paper_scale=${GPU_CHECK_PAPER_SCALE:-0.1}
paper_full=${GPU_CHECK_PAPER_FULL:-0}
quick=${GPU_CHECK_QUICK:-0}
site=${GPU_CHECK_SITE:-/tmp/site}
python=${PYTHON:-$(command -v python || command -v python3)}
summary="$logdir/summary.txt"
: > "$summary"
steps=0
failed=0

# wanted NAME: whether GPU_CHECK_ONLY selects the step NAME.
wanted() {
  [[ -z ${GPU_CHECK_ONLY:-} ]] && return 0
  local prefix
  for prefix in ${GPU_CHECK_ONLY//,/ }; do
    [[ $1 == "$prefix"* ]] && return 0
  done
  return 1
}

# run_step NAME TIMEOUT COMMAND...: COMMAND's output into LOGDIR/NN_NAME.log, its status,
# time and result lines into the summary (unless GPU_CHECK_ONLY leaves the step out).
run_step() {
  local name=$1 limit=$2
  shift 2
  [[ $name == environment || $name == wheels ]] || wanted "$name" || return 0
  steps=$((steps + 1))
  local log
  log=$(printf '%s/%02d_%s.log' "$logdir" "$steps" "$name")
  { echo "\$ ${STEP_SHOWN:-$*}"; echo "# timeout ${limit}s, started $(date '+%F %T')"; } > "$log"
  local started=$SECONDS
  timeout --kill-after=30 "$limit" "$@" >> "$log" 2>&1
  local rc=$? status
  local took=$((SECONDS - started))
  case $rc in
    0) status=ok ;;
    124|137) status="TIMEOUT after ${limit}s" ;;
    *) status="FAILED (exit $rc)" ;;
  esac
  # A benchmark section whose code cannot be imported is reported, and exits 0.
  if [[ $rc == 0 ]] && grep -q ' bench: not available' "$log"; then
    status="NOT AVAILABLE"
  fi
  [[ $status == ok ]] || failed=$((failed + 1))
  echo "# exit $rc after ${took}s" >> "$log"
  printf '%-18s %-22s %6ss  %s\n' "$name" "$status" "$took" "$(basename "$log")" \
    | tee -a "$summary"
  # The benchmarks' result lines (and pytest's last line) under the step.
  grep -E '^(train|paper): |^search: line_jax|bench: not available|[0-9]+ (passed|failed|error).* in [0-9.]+s' \
    "$log" | sed 's/^/    /' | tee -a "$summary" || true
}

environment() {
  echo "repository: $repo ($(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?'))"
  echo "host: $(hostname), $(nproc) cores"
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi
  else
    echo "nvidia-smi: not found"
  fi
  echo "python: $python ($("$python" --version 2>&1))"
  echo "PYTHONPATH=${PYTHONPATH:-}"
  "$python" -m pip list 2> /dev/null | grep -i -E '^(jax|jaxlib|jax-cuda|nvidia-|flax|optax|orbax)' \
    || echo "(pip list: not available)"
  "$python" -c '
import jax, jaxlib
print("jax", jax.__version__, "jaxlib", jaxlib.__version__, "backend", jax.default_backend())
print("devices:", jax.devices())
import line_jax
print("line_jax from", line_jax.__file__)'
}

install_wheels() {
  mkdir -p "$site"
  "$python" -m pip install --no-deps --target "$site" "$repo"/.whl/*.whl
}

# Shell functions as steps: `timeout` runs programs, so each runs in a bash of its own.
export repo python site

if compgen -G "$repo/.whl/*.whl" > /dev/null; then
  STEP_SHOWN="pip install --no-deps --target $site .whl/*.whl" run_step wheels "$timeout_s" bash -c "$(declare -f install_wheels); install_wheels"
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"

if [[ $quick == 1 ]]; then
  tests=(tests/test_losses.py -k "alignment_matches_numpy or relational_matches_numpy")
  train=(--batch_sizes=8 --steps=2 --repeats=1 --concepts_per_pair=2 --fanout=2
         --num_relations=2)
  dims=(16 32)
  paper_scale=0.0002; paper=(--batch_size=32)
  search=(--queries=256 --dict_size=1024 --dim=16 --repeats=1)
else
  tests=(tests/test_model.py tests/test_losses.py tests/test_device_batches.py
         tests/test_search.py tests/test_train.py)
  train=(--batch_sizes=128,1024)
  dims=(384 768)
  paper=()
  search=(--queries=1000000 --dict_size=1000000 --dim=768)
fi

STEP_SHOWN=environment run_step environment "$timeout_s" bash -c "$(declare -f environment); environment"
if [[ -n ${GPU_CHECK_TESTS:-} ]]; then
  read -r -a tests <<< "$GPU_CHECK_TESTS"
fi
run_step tests "$test_timeout_s" "$python" -m pytest -q -p no:cacheprovider "${tests[@]}"
for dim in "${dims[@]}"; do
  run_step "train_d$dim" "$timeout_s" "$python" -m line_jax.bench --what=train --dim="$dim" \
    "${train[@]}"
done
run_step "paper_$paper_scale" "$timeout_s" "$python" -m line_jax.bench --what=paper \
  --scale="$paper_scale" "${paper[@]}"
if [[ $paper_full == 1 ]]; then
  run_step paper_1.0 "$timeout_s" "$python" -m line_jax.bench --what=paper --scale=1.0 \
    "${paper[@]}"
fi
run_step search_bf16 "$timeout_s" "$python" -m line_jax.bench --what=search "${search[@]}" \
  --use_bf16
run_step search_f32 "$timeout_s" "$python" -m line_jax.bench --what=search "${search[@]}"

echo "$((steps - failed)) of $steps steps ok; logs in $logdir" | tee -a "$summary"
[[ $failed == 0 ]]
