#!/usr/bin/env bash
# One prepared check of the course on a machine with one NVIDIA GPU (issues 13 and 24): the
# CUDA-only tests, notebooks 07 and 08 at GPU size, host-to-device bandwidth (pageable vs
# pinned), one-GPU NCCL runs of the DDP program (DDP and FSDP), and `d2lopt ladder`.
#
# It runs on a prebuilt GPU image as it is (an NGC container, a cluster module, a cloud
# image), offline: the Python named by PYTHON (default python3) must already have CUDA
# PyTorch; the package comes from this checkout (PYTHONPATH); what the image lacks
# (papermill, a Jupyter kernel, d2l: benchmarks/gpu_wheels.txt) is installed from
# .gpu-wheels/ with pip --no-index into .gpu-site/ (a --target folder, never over the
# image's own packages). Make that folder on a networked machine with `make gpu-wheels` and
# copy it along; a step whose package is still missing is skipped, saying which.
#
#   PYTHON=python3 bash benchmarks/gpu_check.sh        # on the GPU machine, from the repo
#   bash benchmarks/gpu_check.sh --plan                # print the plan, run nothing
#
# Work goes to ${GPU_CHECK_WORK:-/tmp/d2lopt-gpu-check}/gpu-<slug of the GPU's name>/
# (summary.md, summary.json, steps.tsv, gpu_check.log, logs/, each step's files; a previous
# run's folder is replaced); the results are ${OUT:-benchmarks/results}/gpu-<slug>/summary.md
# and results.tar.gz (the whole work folder), one folder deep. Each step has its own
# timeout; a failing step is recorded and the next one still runs; a step stopped at its
# limit leaves what it wrote so far (its stamped log, metrics written per epoch, the
# notebook saved after each cell). Exit code: 0 every step ok; 1 a step failed, timed out
# or was skipped; 2 no usable CUDA GPU (nothing is measured: a CPU run must never pass for
# a GPU result), or a bad argument.
set -uo pipefail # no `set -e`: one failing step must not stop the others

# ---- budgets (seconds) ------------------------------------------------------------------
# The whole script stops within DEADLINE_S (8 minutes): the step budgets add up to 445 s,
# the CUDA check, the summary and the packing have RESERVE_S. Nothing is set up first: the
# image's Python is used as it is.
DEADLINE_S=${GPU_CHECK_DEADLINE_S:-480}
BUDGET_WHEELS=15   # 0  install the wheels the image lacks, offline (.gpu-wheels -> .gpu-site)
BUDGET_ENV=20      # 1  nvidia-smi, d2lopt env --json, torch/CUDA versions
BUDGET_TESTS=40    # 2  the @requires_cuda tests (skipped on a CPU run)
BUDGET_BW=30       # 3  pageable vs pinned host-to-device bandwidth
BUDGET_DDP=40      # 4  torchrun, 1 process, NCCL, the DDP program, 1 epoch
BUDGET_FSDP=35     # 4b the same with --strategy fsdp (fully_shard, sharded DCP checkpoint)
BUDGET_PAR=20      # 4c notebook 13's program on 1 GPU: DDP, FSDP, a 1-stage pipeline, NCCL
BUDGET_NB07=75     # 5a papermill notebooks/07_cpu_to_gpu.ipynb -p SIZE gpu
BUDGET_NB08=90     # 5b papermill notebooks/08_gpu_compute.ipynb -p SIZE gpu
BUDGET_LADDER=80   # 6  d2lopt ladder
RESERVE_S=25       # kept for the CUDA check, the summary and results.tar.gz
KILL_GRACE_S=5     # after a timeout's SIGTERM, SIGKILL follows this much later
MIN_STEP_S=10      # a step with less time left than this is skipped

# ---- the ladder's and the DDP program's arguments (`--out` is added by this script) -----
# `d2lopt ladder --quick` takes its budget: 60 s keeps it inside this step's 80 (or set
# GPU_CHECK_LADDER_ARGS / GPU_CHECK_DDP_ARGS). Word-split on purpose: plain flags only.
LADDER_ARGS=${GPU_CHECK_LADDER_ARGS:-"--quick --device cuda --budget 60"}
DDP_ARGS=${GPU_CHECK_DDP_ARGS:-"--device cuda --backend nccl --epochs 1 --data synthetic \
--n-train 16384 --n-test 2048 --batch-size 256 --timeout 120"}
# what the notebook steps import beyond the image's usual packages (python3 kernel, backend)
NOTEBOOK_MODULES="papermill nbclient ipykernel matplotlib_inline"

PYTHON=${PYTHON:-python3}            # the image's Python, with CUDA PyTorch
NVIDIA_SMI=${NVIDIA_SMI:-nvidia-smi} # the tests point it elsewhere to play a GPU-less machine
DRY_RUN=${GPU_CHECK_DRY_RUN:-0}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
absolute() { case $1 in /*) printf '%s' "$1" ;; *) printf '%s' "$PWD/$1" ;; esac; }
OUT_ROOT=$(absolute "${OUT:-$ROOT/benchmarks/results}")
WORK_ROOT=$(absolute "${GPU_CHECK_WORK:-${TMPDIR:-/tmp}/d2lopt-gpu-check}")
WHEELS=$(absolute "${GPU_CHECK_WHEELS:-$ROOT/.gpu-wheels}")
SITE=$(absolute "${GPU_CHECK_SITE:-$ROOT/.gpu-site}")
HELPER=benchmarks/gpu_check.py # relative to $ROOT, where main() runs everything
T0=$SECONDS
DIR=""  # the work folder, once the GPU is known
DEST="" # where summary.md and results.tar.gz go
CURRENT_PID=""
GPU_NAME="" STARTED=""

usage() {
  sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

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
    "NVIDIA GPU, or pass --plan to print the plan." >&2
  exit 2
}

# record ID NAME STATUS RC SECONDS TIMEOUT LOG NOTE COMMAND: one line of steps.tsv
record() {
  local fields=("$@") i
  for i in "${!fields[@]}"; do fields[i]=${fields[i]//$'\t'/ }; fields[i]=${fields[i]//$'\n'/ }; done
  (IFS=$'\t'; printf '%s\n' "${fields[*]}") >>"$DIR/steps.tsv"
}

# run_step ID NAME BUDGET COMMAND [MODULES]: print it (dry run) or run it under its own
# timeout; MODULES (space-separated) must be importable by $PYTHON, else the step is
# skipped with the names of the missing ones.
run_step() {
  local id=$1 name=$2 budget=$3 cmd=$4 modules=${5:-}
  if [[ $DRY_RUN == 1 ]]; then
    printf 'step %-3s %-11s timeout %4ss  %s\n' "$id" "$name" "$budget" "$cmd"
    if [[ -n $modules ]]; then printf '    needs: %s (skipped, saying so, if missing)\n' "$modules"; fi
    return 0
  fi
  local logrel="logs/$id-$name.log"
  if [[ -n $modules ]]; then
    local missing
    # shellcheck disable=SC2086 # the module names are words on purpose
    if ! missing=$("$PYTHON" "$HELPER" missing $modules 2>&1); then
      local note="missing package(s) here: $missing; run make gpu-wheels on a networked machine and copy .gpu-wheels/ into this checkout"
      log "step $id $name: skipped, $note"
      record "$id" "$name" skipped - 0 0 "" "$note" "$cmd"
      return 0
    fi
  fi
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
  # Its log is written line by line as the step runs: a step stopped at its limit keeps it.
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
    status=timeout note="stopped after ${allowed} s; what it wrote so far is kept"
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
  "$PYTHON" - "$DIR/meta.json" "$GPU_NAME" "$commit" "$DEADLINE_S" "$((SECONDS - T0))" \
    "$STARTED" "${1:-}" "$(command -v "$PYTHON")" <<'EOF'
import json, sys, time
path, device, commit, deadline, elapsed, started, note, python = sys.argv[1:]
meta = {"device": device, "git_commit": commit, "started": started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "deadline_s": int(deadline),
        "elapsed_s": int(elapsed), "python": python}
if note:
    meta["note"] = note
json.dump(meta, open(path, "w"), indent=2)
EOF
}

pack() { # DEST/summary.md and DEST/results.tar.gz (the whole work folder)
  mkdir -p "$DEST" || return 1
  rm -f "$DEST/summary.md" "$DEST/results.tar.gz"
  cp "$DIR/summary.md" "$DEST/summary.md" \
    && tar -czf "$DEST/results.tar.gz" -C "$(dirname "$DIR")" "$(basename "$DIR")"
}

finish() { # summary.md + summary.json, results.tar.gz, then the exit code
  local code=$1 note=${2:-}
  write_meta "$note" || log "could not write meta.json"
  if "$PYTHON" "$HELPER" summary "$DIR" >/dev/null; then
    log "summary: $DIR/summary.md"
  else
    log "summary.json could not be written; steps.tsv holds the results"
    { echo "# GPU check: $GPU_NAME"; echo; echo "$note"; echo; cat "$DIR/steps.tsv"; } \
      >"$DIR/summary.md" 2>/dev/null
  fi
  if [[ $code == 0 ]] && grep -qv $'\tok\t' "$DIR/steps.tsv"; then code=1; fi
  log "done in $((SECONDS - T0)) s, exit code $code"
  if pack; then
    log "results: $DEST/summary.md and $DEST/results.tar.gz"
  else
    log "could not pack the results into $DEST; the work folder $DIR holds them"
  fi
  exit "$code"
}

on_signal() {
  if [[ -n $CURRENT_PID ]]; then kill -TERM "$CURRENT_PID" 2>/dev/null; fi
  log "interrupted"
  if [[ -n $DIR ]]; then finish 1 "interrupted by a signal"; fi
  exit 130
}

# notebook_cmd NOTEBOOK NAME: papermill at GPU size, the executed copy kept as NAME.ipynb
# (papermill saves it after every cell: a notebook stopped at its limit keeps what ran)
notebook_cmd() {
  local dq
  dq=$(q "$1")
  printf '%s' "mkdir -p $(q "$D/notebooks") && $PY $(q "$HELPER") parameters $dq \
&& MPLBACKEND=module://matplotlib_inline.backend_inline $PY -m papermill --cwd notebooks \
--no-progress-bar --log-output -k python3 $dq $(q "$D/notebooks/$2.ipynb") -p SIZE gpu"
}

# plan: every step, in order. Cheap, certain results first, so that a slow step still
# leaves the tests, the bandwidth and the NCCL runs.
plan() {
  D=${DIR:-"$WORK_ROOT/gpu-SLUG"}
  PY=$(q "$PYTHON")
  local dq torchrun
  dq=$(q "$D")
  torchrun="$PY -m torch.distributed.run --standalone --nproc-per-node 1"
  run_step 1 env "$BUDGET_ENV" "mkdir -p $dq/env && rc=0 \
&& { $(q "$NVIDIA_SMI") | tee $dq/env/nvidia-smi.txt || rc=1; } \
&& { $PY -m d2lopt.cli env --json | tee $dq/env/d2lopt-env.json || rc=1; } \
&& { $PY $(q "$HELPER") versions | tee $dq/env/versions.txt || rc=1; } && exit \$rc"
  run_step 2 tests "$BUDGET_TESTS" "mkdir -p $dq/tests \
&& ids=\$($PY $(q "$HELPER") cuda-tests) \
&& $PY -m pytest -p no:cacheprovider -v -rA \$ids --junitxml $dq/tests/junit.xml" pytest
  run_step 3 bandwidth "$BUDGET_BW" "$PY $(q "$HELPER") bandwidth --out $dq/bandwidth.json"
  run_step 4 ddp "$BUDGET_DDP" "$torchrun -m d2lopt.ddp $DDP_ARGS --out $dq/ddp"
  run_step 4b fsdp "$BUDGET_FSDP" "$torchrun -m d2lopt.ddp $DDP_ARGS --strategy fsdp \
--out $dq/fsdp --save $dq/fsdp/model.pt"
  run_step 4c parallelism "$BUDGET_PAR" "$torchrun -m d2lopt.parallelism --device cuda \
--rounds 3 --batch-size 512 --json $dq/parallelism.json"
  run_step 5a nb07 "$BUDGET_NB07" "$(notebook_cmd notebooks/07_cpu_to_gpu.ipynb 07-gpu)" \
    "$NOTEBOOK_MODULES"
  run_step 5b nb08 "$BUDGET_NB08" "$(notebook_cmd notebooks/08_gpu_compute.ipynb 08-gpu)" \
    "$NOTEBOOK_MODULES"
  run_step 6 ladder "$BUDGET_LADDER" "$PY -m d2lopt.cli ladder $LADDER_ARGS --out $dq/ladder"
}

print_plan() { # --plan: the Python, the wheels, each step's budget, the files; runs nothing
  local found
  echo "gpu_check.sh plan (dry run: nothing runs). Deadline ${DEADLINE_S} s."
  if found=$(command -v "$PYTHON"); then
    echo "python: PYTHON=$PYTHON -> $found (must have CUDA PyTorch: torch.cuda.is_available()" \
      "is checked first; False stops the run with exit code 2)"
  else
    echo "python: PYTHON=$PYTHON is not found here; set PYTHON to the image's Python"
  fi
  echo "package: d2lopt from this checkout, PYTHONPATH=$ROOT:$SITE (nothing installed into the image)"
  echo "wheels: from $WHEELS, offline (pip install --no-index --no-deps --target $SITE)," \
    "only those $PYTHON lacks:"
  if [[ -n $found && -d $WHEELS ]]; then
    (cd "$ROOT" && "$PYTHON" "$HELPER" wheel-plan "$WHEELS") | sed 's/^/    /'
  else
    echo "    none: no folder $WHEELS (make gpu-wheels on a networked machine makes it);" \
      "the steps that need a missing package are skipped, saying so"
  fi
  run_step 0 wheels "$BUDGET_WHEELS" "$(q "$PYTHON") $(q "$HELPER") install-wheels $(q "$WHEELS") $(q "$SITE")"
  plan
  echo "files: the work folder $WORK_ROOT/gpu-SLUG/ (SLUG from the GPU's name; replaced):" \
    "gpu_check.log, steps.tsv, meta.json, summary.md, summary.json, logs/<step>.log, env/," \
    "tests/junit.xml, bandwidth.json, ddp/, fsdp/, parallelism.json, notebooks/07-gpu.ipynb," \
    "notebooks/08-gpu.ipynb, ladder/"
  echo "results: $OUT_ROOT/gpu-SLUG/summary.md and $OUT_ROOT/gpu-SLUG/results.tar.gz" \
    "(the work folder, packed)"
}

main() {
  while (($#)); do
    case $1 in
      --plan | --dry-run) DRY_RUN=1 ;;
      -h | --help) usage; exit 0 ;;
      *) echo "gpu_check.sh: unknown argument '$1' (use --plan to print the plan)" >&2; exit 2 ;;
    esac
    shift
  done
  cd "$ROOT" || exit 1
  export TQDM_DISABLE=1 MPLBACKEND=Agg PYTHONHASHSEED=0 PYTHONUNBUFFERED=1
  export PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 # offline: pip never reaches out
  if [[ $DRY_RUN == 1 ]]; then
    print_plan
    exit 0
  fi

  # The machine must have an NVIDIA GPU before anything is set up or written.
  command -v "$NVIDIA_SMI" >/dev/null 2>&1 || no_gpu "no NVIDIA GPU: $NVIDIA_SMI not found"
  GPU_NAME=$("$NVIDIA_SMI" --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
  [[ -n $GPU_NAME ]] || no_gpu "no NVIDIA GPU: $NVIDIA_SMI lists none"
  command -v "$PYTHON" >/dev/null 2>&1 \
    || no_gpu "PYTHON=$PYTHON not found; set PYTHON to the GPU image's Python (with CUDA PyTorch)"
  local slug
  slug=$("$PYTHON" "$HELPER" slug "$GPU_NAME") || no_gpu "cannot name the folder for '$GPU_NAME'"
  DIR=$WORK_ROOT/gpu-$slug
  DEST=$OUT_ROOT/gpu-$slug
  if [[ -e $DIR && ! -e $DIR/gpu_check.log ]]; then
    echo "gpu_check.sh: $DIR exists and is not a gpu_check result; move it away first" >&2
    exit 1
  fi
  rm -rf "$DIR" && mkdir -p "$DIR/logs" || exit 1
  STARTED=$(date +%Y-%m-%dT%H:%M:%S%z)
  : >"$DIR/steps.tsv"
  trap on_signal INT TERM
  log "gpu_check.sh: $GPU_NAME -> $DIR (deadline ${DEADLINE_S} s), PYTHON=$(command -v "$PYTHON")"

  # The image's torch must see the GPU; the checkout's d2lopt comes first on the path.
  export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}"
  local check
  if ! check=$("$PYTHON" -c 'import sys, torch
print(f"torch {torch.__version__} (CUDA build {torch.version.cuda}), "
      f"torch.cuda.is_available() is {torch.cuda.is_available()}")
sys.exit(0 if torch.cuda.is_available() else 1)' 2>&1 | tail -n 1); then
    log "$PYTHON: $check"
    record 0 cuda-check failed 1 0 0 "gpu_check.log" "torch cannot use CUDA: no GPU result" \
      "$PYTHON -c 'import torch; torch.cuda.is_available()'"
    (finish 2 "torch in $PYTHON cannot use CUDA ($check): not a GPU result") >/dev/null
    no_gpu "the torch of PYTHON=$PYTHON cannot use the GPU '$GPU_NAME': $check (see $DEST/summary.md)"
  fi
  log "$PYTHON: $check"

  # Step 0: what the image lacks, from the wheels folder, offline, into $SITE.
  run_step 0 wheels "$BUDGET_WHEELS" "PYTHONPATH=$(q "$ROOT") $(q "$PYTHON") $(q "$HELPER") \
install-wheels $(q "$WHEELS") $(q "$SITE")"
  plan
  finish 0
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then main "$@"; fi
