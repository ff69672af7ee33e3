#!/usr/bin/env bash
# One GPU check in at most 8 minutes: throughput per model and dim (training and scoring, bf16 +
# channels_last + pinned memory + workers), GANomaly 2D 128^2 vs fp32 eager (and anomalib when
# importable), GPU busy fraction in steady training from the cache, a short real training run
# on synthetic data and an extrapolated full BraTS 2021 2D GANomaly train + score.
#
#   bash benchmarks/gpu_check.sh OUTDIR          # PYTHON=/path/to/python to pick the interpreter
#
# Each step runs under its own timeout (seconds below; 430 in all) and writes OUTDIR/<step>.json
# and OUTDIR/<step>.log; OUTDIR/summary.md collects the tables. Exits 2 at once without CUDA.
set -u
OUT="${1:?usage: gpu_check.sh OUTDIR}"
HERE="$(cd "$(dirname "$0")" && pwd)"
PY="${PYTHON:-$(command -v python || command -v python3)}"
WORKERS="${WORKERS:-8}"
mkdir -p "$OUT"
cd "$HERE/.."

step() {  # step NAME TIMEOUT_S [extra args]
  local name="$1" limit="$2"; shift 2
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$PY" "$HERE/gpu_check.py" --out "$OUT" --step "$name" --workers "$WORKERS" "$@" \
    >"$OUT/$name.log" 2>&1
  local rc=$?
  [ $rc -eq 124 ] && echo "step $name: TIMEOUT after ${limit}s (partial results kept)" | tee -a "$OUT/$name.log"
  echo "step $name: exit $rc in $((SECONDS - t0)) s" | tee -a "$OUT/steps.txt"
  return $rc
}

: >"$OUT/steps.txt"
step env 30
rc=$?
if [ $rc -eq 2 ]; then
  echo "gpu_check: no CUDA device visible to torch ($PY); this script needs a GPU. See $OUT/env.log" >&2
  exit 2
elif [ $rc -ne 0 ]; then
  echo "gpu_check: the env step failed (exit $rc; python '$PY' with brats_ad installed?); see $OUT/env.log" >&2
  tail -5 "$OUT/env.log" >&2
  exit 1
fi
step throughput 100 --seconds 3
step ganomaly2d 90 --seconds 4
step data 70
step busy 45 --seconds 8
step train 80
step report 15
cat "$OUT/steps.txt"
echo "summary: $OUT/summary.md"
