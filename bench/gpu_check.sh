#!/usr/bin/env bash
# One prepared GPU check (issue 21), meant to run as is on a lent GPU machine in under
# 8 minutes, from the repository root or anywhere:
#
#   bench/gpu_check.sh              # on a CUDA GPU
#   bench/gpu_check.sh --dry-run    # no GPU: the same steps on the CPU with tiny sizes, to
#                                   # check the script itself (figures mean nothing)
#
# Steps: pytest -m cuda; fp16 vs fp32 detections; throughput (batch 1 and 16, fp16, YOLO11n
# when ultralytics is installed); 2 epochs of AMP training on a synthetic project; a 1-GPU
# torchrun training (NCCL); peak GPU memory. Prints one table at the end; exit status 1 when
# any step failed. PYTHON selects the interpreter (default: python3 on PATH).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
DRY=0
case "${1:-}" in
  --dry-run) DRY=1 ;;
  "") ;;
  *) echo "usage: $0 [--dry-run]" >&2; exit 2 ;;
esac
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" QT_QPA_PLATFORM=offscreen POLLENSTUDIO_BACKEND=torch
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
T0=$SECONDS

if ! "$PY" -c 'import torch, pollenstudio' 2>/dev/null; then
  echo "error: $PY cannot import torch and pollenstudio; install the project (pip install -e .[test]) or set PYTHON" >&2
  exit 2
fi
if [[ $DRY -eq 0 ]]; then
  if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "error: no CUDA GPU visible to torch (torch $("$PY" -c 'import torch; print(torch.__version__)')); use --dry-run to test the script on a CPU" >&2
    exit 2
  fi
  DEV=cuda; IMGSZ=640; TINY=(); SYN=(--n 48 --size 640x480); BATCH=16; TRAIN=(--epochs 1 --imgsz 640 --batch 16)
  RUNS=30; FP16_N=16
else
  DEV=cpu; IMGSZ=128; TINY=(--tiny); SYN=(--n 6 --size 256x256); BATCH=2; TRAIN=(--tiny --epochs 1 --imgsz 128 --batch 2)
  RUNS=2; FP16_N=2
  echo "DRY RUN on the CPU: checks the script, not the GPU" >&2
fi
"$PY" - <<'PYEOF'
import torch
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"cuDNN {torch.backends.cudnn.version()}")
else:
    print(f"no GPU; torch {torch.__version__}")
PYEOF

ROWS=()   # "step|status|seconds|result"
PEAKS=()
FAILED=0

# run_step NAME TIMEOUT_S CMD...: runs CMD, keeps its log, takes the last "RESULT ..." line
# (or the last output line) as the result and "PEAK_MB n" lines as peak memory.
run_step() {
  local name="$1" limit="$2"; shift 2
  local log="$WORK/${name// /_}.log" t=$SECONDS status=ok rc=0
  echo "== $name" >&2
  timeout "$limit" "$@" >"$log" 2>&1 || rc=$?
  if [[ $rc -eq 124 ]]; then status="TIMEOUT ${limit}s"; FAILED=1
  elif [[ $rc -ne 0 ]]; then status="FAILED rc=$rc"; FAILED=1; fi
  local result
  result="$(grep -E '^RESULT ' "$log" | tail -1 | sed 's/^RESULT //' || true)"
  [[ -n "$result" ]] || result="$(grep -v '^\s*$' "$log" | tail -1 | cut -c1-160 || true)"
  local peak
  peak="$(grep -E '^PEAK_MB ' "$log" | awk '{print $2}' | sort -n | tail -1 || true)"
  [[ -n "$peak" ]] && PEAKS+=("$name: $peak MB")
  [[ $rc -ne 0 ]] && { echo "-- last lines of $name:" >&2; tail -15 "$log" >&2; }
  ROWS+=("$name|$status|$((SECONDS - t))|$result")
}

# 1. the CUDA tests (skipped on a CPU: the dry run checks they are collected)
run_step "pytest -m cuda" 240 "$PY" -m pytest -m cuda -q -p no:cacheprovider tests/unit

# 2. fp16 vs fp32 detections
run_step "fp16 vs fp32" 120 "$PY" bench/gpu_check.py fp16 --device "$DEV" --imgsz "$IMGSZ" --n "$FP16_N" "${TINY[@]}"

# 3. throughput, batch 1 and 16
run_step "throughput" 150 "$PY" bench/gpu_check.py throughput --device "$DEV" --imgsz "$IMGSZ" --runs "$RUNS" "${TINY[@]}"

# 4. 2 epochs of AMP training on a synthetic project (AMP is on by default on CUDA)
if ! { "$PY" -m pollenstudio synth --out "$WORK/data" "${SYN[@]}" --quiet &&
        "$PY" -m pollenstudio import "$WORK/proj" "$WORK/data/annotations.json" --quiet; } >"$WORK/project.log" 2>&1; then
  echo "error: could not make the synthetic training project:" >&2; tail -20 "$WORK/project.log" >&2; exit 1
fi
run_step "AMP training, 2 epochs" 240 "$PY" bench/gpu_check.py train --project "$WORK/proj" --device "$DEV" \
  --imgsz "$IMGSZ" --batch "$BATCH" "${TINY[@]}"

# 5. a 1-GPU torchrun run (NCCL on CUDA, Gloo in the dry run)
TORCHRUN="$(dirname "$(command -v "$PY")")/torchrun"
[[ -x "$TORCHRUN" ]] || TORCHRUN="$(command -v torchrun || true)"
if [[ -n "$TORCHRUN" ]]; then
  run_step "torchrun, 1 process" 180 bash -c 'set -euo pipefail
    out="$("${@:2}")"
    "$1" -c "import json, sys; d = json.loads(sys.argv[1]); print(\"RESULT\", d.get(\"processes\"), \"process(es), version\", d[\"version_id\"], \"mAP@.5\", round(d.get(\"map50\") or 0, 3), \"in\", d.get(\"seconds\"), \"s\")" "$out"
  ' _ "$PY" "$TORCHRUN" --nproc_per_node=1 --standalone -m pollenstudio train "$WORK/proj" \
    "${TRAIN[@]}" --device "$DEV" --no-compare --json
else
  ROWS+=("torchrun, 1 process|SKIPPED|0|torchrun not found next to $PY or on PATH")
fi

# 6. peak memory (per step, from torch.cuda.max_memory_allocated)
if [[ ${#PEAKS[@]} -gt 0 ]]; then
  ROWS+=("peak GPU memory|ok|0|$(IFS=';'; echo "${PEAKS[*]}")")
else
  ROWS+=("peak GPU memory|n/a|0|no CUDA step reported memory")
fi

echo
printf '%-24s %-14s %6s  %s\n' "step" "status" "s" "result"
printf '%-24s %-14s %6s  %s\n' "----" "------" "--" "------"
for row in "${ROWS[@]}"; do
  IFS='|' read -r a b c d <<<"$row"
  printf '%-24s %-14s %6s  %s\n' "$a" "$b" "$c" "$d"
done
echo "total $((SECONDS - T0)) s$([[ $DRY -eq 1 ]] && echo ' (DRY RUN on the CPU: figures are not GPU figures)')"
exit $FAILED
