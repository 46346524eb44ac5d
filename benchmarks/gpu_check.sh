#!/usr/bin/env bash
# One prepared check of the course on a machine with one NVIDIA GPU (issue 13, "Ready for
# the GPU"): the CUDA-only tests, notebooks 07 and 08 at GPU size, host-to-device bandwidth
# (pageable vs pinned), one-GPU NCCL runs of the DDP program (DDP and FSDP), and
# `d2lopt ladder`.
#
#   bash benchmarks/gpu_check.sh                        # on the GPU machine, from the repo
#   GPU_CHECK_DRY_RUN=1 bash benchmarks/gpu_check.sh    # print the plan, run nothing
#
# Everything goes to ${OUT:-benchmarks/results}/gpu-<slug of the GPU's name>/ (a previous
# run's folder is replaced): summary.md, summary.json, steps.tsv, gpu_check.log, logs/, and
# each step's files. From a bare checkout it first runs `make setup` (creates .venv).
# Each step has its own timeout; a failing step is recorded and the next one still runs.
# Exit code: 0 every step ok; 1 a step failed, timed out or had no time left; 2 no usable
# CUDA GPU (nothing is measured: a CPU run must never pass for a GPU result).
set -uo pipefail # no `set -e`: one failing step must not stop the others

# ---- budgets (seconds) ------------------------------------------------------------------
# The whole script stops within DEADLINE_S (8 minutes). Step budgets add up to 460 s, the
# summary has RESERVE_S. `make setup` on a bare checkout comes out of the same deadline: the
# steps that no longer fit are recorded as skipped ("no time left"); re-run on the same
# machine (its .venv is kept) or raise GPU_CHECK_DEADLINE_S to get them.
DEADLINE_S=${GPU_CHECK_DEADLINE_S:-480}
BUDGET_SETUP=300   # 0  make setup (bare checkout only) + CUDA check of the venv's torch
BUDGET_ENV=20      # 1  nvidia-smi, d2lopt env --json, torch/CUDA versions
BUDGET_TESTS=50    # 2  the @requires_cuda tests (skipped on a CPU run)
BUDGET_BW=30       # 3  pageable vs pinned host-to-device bandwidth
BUDGET_DDP=45      # 4  torchrun, 1 process, NCCL, the DDP program, 1 epoch
BUDGET_FSDP=35     # 4b the same with --strategy fsdp (fully_shard, sharded DCP checkpoint)
BUDGET_PAR=20      # 4c notebook 13's program on 1 GPU: DDP, FSDP, a 1-stage pipeline, NCCL
BUDGET_NB07=80     # 5a papermill notebooks/07_cpu_to_gpu.ipynb -p SIZE gpu
BUDGET_NB08=100    # 5b papermill notebooks/08_gpu_compute.ipynb -p SIZE gpu
BUDGET_LADDER=80   # 6  d2lopt ladder
RESERVE_S=20       # kept for the summary
KILL_GRACE_S=5     # after a timeout's SIGTERM, SIGKILL follows this much later
MIN_STEP_S=10      # a step with less time left than this is skipped

# ---- the ladder's and the DDP program's arguments (`--out` is added by this script) -----
# `d2lopt ladder --quick` is sized for ~100 s; shorter decisions keep it in its budget (or set
# GPU_CHECK_LADDER_ARGS / GPU_CHECK_DDP_ARGS). Word-split on purpose: plain flags only.
LADDER_ARGS=${GPU_CHECK_LADDER_ARGS:-"--quick --device cuda --decide-seconds 5 --max-seconds 25"}
DDP_ARGS=${GPU_CHECK_DDP_ARGS:-"--device cuda --backend nccl --epochs 1 --data synthetic \
--n-train 16384 --n-test 2048 --batch-size 256 --timeout 120"}

NVIDIA_SMI=${NVIDIA_SMI:-nvidia-smi} # the tests point it elsewhere to play a GPU-less machine
DRY_RUN=${GPU_CHECK_DRY_RUN:-0}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT_ROOT=${OUT:-$ROOT/benchmarks/results}
case $OUT_ROOT in /*) ;; *) OUT_ROOT=$PWD/$OUT_ROOT ;; esac
case $OUT_ROOT in "$ROOT"/*) OUT_ROOT=${OUT_ROOT#"$ROOT"/} ;; esac # shorter commands
VENV=.venv # paths relative to $ROOT, where main() runs everything
PY=$VENV/bin/python
HELPER=benchmarks/gpu_check.py
T0=$SECONDS
DIR="" # the output folder, once the GPU is known
CURRENT_PID=""

log() { # a timestamped line on stdout, and in gpu_check.log once the folder exists
  local line
  printf -v line '[%(%Y-%m-%dT%H:%M:%S)T] %s' -1 "$*"
  printf '%s\n' "$line"
  if [[ -n $DIR ]]; then printf '%s\n' "$line" >>"$DIR/gpu_check.log"; fi
}

stamp_lines() { # prefix each line of stdin with the time it arrived
  local line
  while IFS= read -r line || [[ -n $line ]]; do
    printf '[%(%H:%M:%S)T] %s\n' -1 "$line"
  done
}
export -f stamp_lines

q() { printf '%q' "$1"; } # quote a path for a command string

no_gpu() { # the one message of a GPU-less run, and exit code 2
  echo "gpu_check.sh: $1; nothing was measured (exit 2). Run it on a machine with an" \
    "NVIDIA GPU, or set GPU_CHECK_DRY_RUN=1 to print the plan." >&2
  exit 2
}

# record ID NAME STATUS RC SECONDS TIMEOUT LOG NOTE COMMAND: one line of steps.tsv
record() {
  local fields=("$@") i
  for i in "${!fields[@]}"; do fields[i]=${fields[i]//$'\t'/ }; fields[i]=${fields[i]//$'\n'/ }; done
  (IFS=$'\t'; printf '%s\n' "${fields[*]}") >>"$DIR/steps.tsv"
}

# run_step ID NAME BUDGET COMMAND: print it (dry run) or run it under its own timeout
run_step() {
  local id=$1 name=$2 budget=$3 cmd=$4
  if [[ $DRY_RUN == 1 ]]; then
    printf 'step %-3s %-10s timeout %4ss  %s\n' "$id" "$name" "$budget" "$cmd"
    return 0
  fi
  local logrel="logs/$id-$name.log"
  local left=$((DEADLINE_S - (SECONDS - T0) - RESERVE_S - KILL_GRACE_S))
  local allowed=$((budget < left ? budget : left))
  if ((allowed < MIN_STEP_S)); then
    log "step $id $name: skipped, $((left > 0 ? left : 0)) s left before the ${DEADLINE_S} s deadline"
    record "$id" "$name" skipped - 0 0 "" "no time left (deadline ${DEADLINE_S} s)" "$cmd"
    return 0
  fi
  log "step $id $name: start, timeout ${allowed} s: $cmd"
  printf '$ %s\n' "$cmd" >"$DIR/$logrel"
  local start=$SECONDS rc
  # timeout runs the step in its own process group and kills all of it (torchrun's ranks,
  # papermill's kernel) at the limit; in the background so a trapped signal is not delayed.
  # shellcheck disable=SC2016 # $1 is expanded by the inner bash, on purpose
  timeout -k "$KILL_GRACE_S" "$allowed" \
    bash -c 'set -o pipefail; { bash -o pipefail -c "$1"; } 2>&1 </dev/null | stamp_lines' \
    _ "$cmd" \
    >>"$DIR/$logrel" &
  CURRENT_PID=$!
  wait "$CURRENT_PID"
  rc=$?
  CURRENT_PID=""
  local took=$((SECONDS - start)) status=failed note=""
  if ((rc == 0)); then
    status=ok
  elif ((rc == 124 || rc == 137)); then
    status=timeout note="stopped after ${allowed} s"
  fi
  echo "exit code $rc after $took s" >>"$DIR/$logrel"
  record "$id" "$name" "$status" "$rc" "$took" "$allowed" "$logrel" "$note" "$cmd"
  log "step $id $name: $status (exit code $rc, $took s)"
  if [[ $status != ok ]]; then tail -n 15 "$DIR/$logrel" | sed 's/^/    | /'; fi
  return 0
}

write_meta() { # meta.json: what the summary needs besides steps.tsv (extra: "key": value)
  local commit
  if commit=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null); then
    git -C "$ROOT" diff --quiet HEAD 2>/dev/null || commit="$commit (with local changes)"
  else
    commit=unknown
  fi
  python3 - "$DIR/meta.json" "$GPU_NAME" "$commit" "$DEADLINE_S" "$((SECONDS - T0))" \
    "$STARTED" "${1:-}" <<'EOF'
import json, sys, time
path, device, commit, deadline, elapsed, started, note = sys.argv[1:]
meta = {"device": device, "git_commit": commit, "started": started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "deadline_s": int(deadline),
        "elapsed_s": int(elapsed)}
if note:
    meta["note"] = note
json.dump(meta, open(path, "w"), indent=2)
EOF
}

finish() { # summary.md + summary.json, then the exit code
  local code=$1 note=${2:-}
  write_meta "$note" || log "could not write meta.json"
  if python3 "$HELPER" summary "$DIR" >/dev/null; then
    log "summary: $DIR/summary.md"
  else
    log "summary.json could not be written; steps.tsv holds the results"
    { echo "# GPU check: $GPU_NAME"; echo; echo "$note"; echo; cat "$DIR/steps.tsv"; } \
      >"$DIR/summary.md" 2>/dev/null
  fi
  if [[ $code == 0 ]] && grep -qv $'\tok\t' "$DIR/steps.tsv"; then code=1; fi
  log "done in $((SECONDS - T0)) s, exit code $code"
  exit "$code"
}

on_signal() {
  if [[ -n $CURRENT_PID ]]; then kill -TERM "$CURRENT_PID" 2>/dev/null; fi
  log "interrupted"
  if [[ -n $DIR ]]; then finish 1 "interrupted by a signal"; fi
  exit 130
}

# notebook_cmd NOTEBOOK NAME: papermill at GPU size, the executed copy kept as NAME.ipynb
notebook_cmd() {
  local py dq
  py=$(q "$PY") dq=$(q "$1")
  printf '%s' "mkdir -p $(q "$D/notebooks") && { $py -c 'import papermill' 2>/dev/null \
|| $py -m pip install --quiet papermill; } && $py $(q "$HELPER") parameters $dq \
&& MPLBACKEND=module://matplotlib_inline.backend_inline $py -m papermill --cwd notebooks \
--no-progress-bar --log-output -k python3 $dq $(q "$D/notebooks/$2.ipynb") -p SIZE gpu"
}

# plan: every step, in order. Cheap, certain results first, so that a slow set-up on a bare
# machine still leaves the tests, the bandwidth and the NCCL run.
plan() {
  D=${DIR:-"$OUT_ROOT/gpu-SLUG"}
  local py d2lopt dq
  py=$(q "$PY") d2lopt=$(q "$VENV/bin/d2lopt") dq=$(q "$D")
  run_step 1 env "$BUDGET_ENV" "mkdir -p $dq/env && rc=0 \
&& { $(q "$NVIDIA_SMI") | tee $dq/env/nvidia-smi.txt || rc=1; } \
&& { $d2lopt env --json | tee $dq/env/d2lopt-env.json || rc=1; } \
&& { $py $(q "$HELPER") versions | tee $dq/env/versions.txt || rc=1; } && exit \$rc"
  run_step 2 tests "$BUDGET_TESTS" "mkdir -p $dq/tests \
&& ids=\$($py $(q "$HELPER") cuda-tests) \
&& $py -m pytest -p no:cacheprovider -rA \$ids --junitxml $dq/tests/junit.xml"
  run_step 3 bandwidth "$BUDGET_BW" "$py $(q "$HELPER") bandwidth --out $dq/bandwidth.json"
  run_step 4 ddp "$BUDGET_DDP" "$(q "$VENV/bin/torchrun") --standalone --nproc-per-node 1 \
-m d2lopt.ddp $DDP_ARGS --out $dq/ddp"
  run_step 4b fsdp "$BUDGET_FSDP" "$(q "$VENV/bin/torchrun") --standalone --nproc-per-node 1 \
-m d2lopt.ddp $DDP_ARGS --strategy fsdp --out $dq/fsdp --save $dq/fsdp/model.pt"
  run_step 4c parallelism "$BUDGET_PAR" "$(q "$VENV/bin/torchrun") --standalone \
--nproc-per-node 1 -m d2lopt.parallelism --device cuda --rounds 3 --batch-size 512 \
--json $dq/parallelism.json"
  run_step 5a nb07 "$BUDGET_NB07" "$(notebook_cmd notebooks/07_cpu_to_gpu.ipynb 07-gpu)"
  run_step 5b nb08 "$BUDGET_NB08" "$(notebook_cmd notebooks/08_gpu_compute.ipynb 08-gpu)"
  run_step 6 ladder "$BUDGET_LADDER" "$d2lopt ladder $LADDER_ARGS --out $dq/ladder"
}

main() {
  cd "$ROOT" || exit 1
  export TQDM_DISABLE=1 MPLBACKEND=Agg PYTHONHASHSEED=0 PYTHONUNBUFFERED=1
  if [[ $DRY_RUN == 1 ]]; then
    echo "gpu_check.sh plan (dry run: nothing runs). Deadline ${DEADLINE_S} s; step 0 runs" \
      "\`make setup\` (timeout ${BUDGET_SETUP} s) only when .venv is missing, then checks" \
      "that torch sees CUDA. Output: $OUT_ROOT/gpu-SLUG/, SLUG from the GPU's name."
    run_step 0 setup "$BUDGET_SETUP" "make setup  # only when .venv is missing"
    plan
    exit 0
  fi

  # The machine must have an NVIDIA GPU before anything is set up or written.
  command -v "$NVIDIA_SMI" >/dev/null 2>&1 || no_gpu "no NVIDIA GPU: $NVIDIA_SMI not found"
  GPU_NAME=$("$NVIDIA_SMI" --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
  [[ -n $GPU_NAME ]] || no_gpu "no NVIDIA GPU: $NVIDIA_SMI lists none"
  local slug
  slug=$(python3 "$HELPER" slug "$GPU_NAME") || no_gpu "cannot name the folder for '$GPU_NAME'"
  DIR=$OUT_ROOT/gpu-$slug
  if [[ -e $DIR && ! -e $DIR/gpu_check.log ]]; then
    echo "gpu_check.sh: $DIR exists and is not a gpu_check result; move it away first" >&2
    exit 1
  fi
  rm -rf "$DIR" && mkdir -p "$DIR/logs" || exit 1
  STARTED=$(date +%Y-%m-%dT%H:%M:%S%z)
  : >"$DIR/steps.tsv"
  trap on_signal INT TERM
  log "gpu_check.sh: $GPU_NAME -> $DIR (deadline ${DEADLINE_S} s)"

  # Step 0: the environment, from a bare checkout if need be.
  if [[ ! -x $PY || ! -e $VENV/.d2lopt-installed ]]; then
    run_step 0 setup "$BUDGET_SETUP" "make setup"
    if ! grep -q $'^0\tsetup\tok\t' "$DIR/steps.tsv"; then
      echo "gpu_check.sh: make setup did not finish (see $DIR/logs/0-setup.log);" \
        "nothing else can run" >&2
      finish 1 "make setup did not finish: no step could run"
    fi
  else
    log "step 0 setup: .venv exists, used as is (run \`make setup\` to refresh it)"
  fi
  if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' \
    >>"$DIR/gpu_check.log" 2>&1; then
    log "torch in .venv cannot use the GPU (torch.cuda.is_available() is False or torch is missing)"
    record 0 cuda-check failed 1 0 0 "gpu_check.log" "torch cannot use CUDA: no GPU result" \
      "$PY -c 'import torch; torch.cuda.is_available()'"
    (finish 2 "torch in .venv cannot use CUDA: not a GPU result") >/dev/null
    no_gpu "torch in .venv cannot use the GPU '$GPU_NAME' (see $DIR/gpu_check.log)"
  fi

  plan
  finish 0
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then main "$@"; fi
