#!/usr/bin/env bash
# The GPU benchmark table of issue 14, as one prepared script (under 8 minutes
# on a GPU machine: each row has a 100 s limit, no row starts after 7.5
# minutes, and a row cut short says so in the table).
#
#   bench/gpu.sh            # paper sizes: supernet L = 15, C = 16, batch 64; eval net DARTS_V2 C = 36
#   bench/gpu.sh --smoke    # tiny sizes, any machine (CPU included): checks the script end to end
#
# Rows: paper-size ASM, uniform mixing, DARTS 1st / 2nd order, the evaluation
# network (20 and 15 cells), float32 / mixed_float16 / mixed_bfloat16, XLA
# off / on; then the projected wall time of the paper's 30-epoch CIFAR-10
# search (25,000 weight images, batch 64: 390 steps an epoch) from the
# fastest ASM row. Each row is one fresh process of bench/step_bench.py.
# Results: $OUT (or bench/gpu-results) /gpu.jsonl and table.md.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
SMOKE=0
for arg in "$@"; do
  case $arg in
    --smoke) SMOKE=1 ;;
    *) echo "bench/gpu.sh: unknown argument $arg (expected --smoke)" >&2; exit 2 ;;
  esac
done
OUT_DIR=${OUT:-bench/gpu-results}
mkdir -p "$OUT_DIR"
RESULTS="$OUT_DIR/gpu.jsonl"
: > "$RESULTS"

if [ $SMOKE = 1 ]; then
  SUPERNET=(--num_cells=1 --channels=4 --batch=8 --image_size=8 --steps=2)
  EVAL20=(--network=eval --num_cells=2 --channels=4 --batch=8 --image_size=8 --steps=2)
  EVAL15=(--network=eval --num_cells=2 --channels=6 --batch=8 --image_size=8 --steps=2)
  LIMIT=240
  BUDGET=100000
else
  SUPERNET=(--num_cells=15 --channels=16 --batch=64 --steps=10)
  EVAL20=(--network=eval --num_cells=20 --channels=36 --batch=96 --steps=10)
  EVAL15=(--network=eval --num_cells=15 --channels=36 --batch=64 --steps=10)
  LIMIT=100
  BUDGET=450  # the rows start within 7.5 minutes; a row that would not is recorded as skipped
fi

run() {  # one row: step_bench with these flags, killed after $LIMIT s (or what is left of $BUDGET)
  local label=$1; shift
  local left=$(( BUDGET - SECONDS ))
  local limit=$(( left < LIMIT ? left : LIMIT ))
  if (( limit < 20 )); then
    echo "{\"label\": \"$label\", \"failed\": \"skipped: the script's ${BUDGET} s are spent\", \"flags\": \"$*\"}" >> "$RESULTS"
    return
  fi
  echo "== $label: $*" >&2
  if ! timeout "$limit" "$PY" bench/step_bench.py "$@" --results="$RESULTS" > "$OUT_DIR/last.log" 2>&1; then
    echo "{\"label\": \"$label\", \"failed\": \"exit or over ${limit} s\", \"flags\": \"$*\"}" >> "$RESULTS"
    tail -3 "$OUT_DIR/last.log" >&2
  fi
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU visible" >&2
# Most wanted first: the budget may cut the last rows.
run "asm"                 "${SUPERNET[@]}" --method=asm
run "asm mixed_float16"   "${SUPERNET[@]}" --method=asm --precision=mixed_float16
run "uniform"             "${SUPERNET[@]}" --method=uniform
run "darts1"              "${SUPERNET[@]}" --method=darts1
run "darts2"              "${SUPERNET[@]}" --method=darts2
run "eval 20 cells"       "${EVAL20[@]}"
run "eval 20 cells mixed_float16" "${EVAL20[@]}" --precision=mixed_float16
run "asm xla"             "${SUPERNET[@]}" --method=asm --xla
run "asm mixed_float16 xla" "${SUPERNET[@]}" --method=asm --precision=mixed_float16 --xla
run "asm mixed_bfloat16"  "${SUPERNET[@]}" --method=asm --precision=mixed_bfloat16
run "eval 20 cells xla"   "${EVAL20[@]}" --xla
run "eval 15 cells"       "${EVAL15[@]}"

"$PY" - "$RESULTS" "$OUT_DIR/table.md" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
keys = ["network", "num_cells", "channels", "batch", "method", "precision", "xla", "build_s", "first_step_s",
        "steady_step_s", "images_per_s", "peak_rss_gb"]
lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
for row in rows:
    if "failed" in row:
        lines.append(f"| {row['label']}: {row['failed']} |" + " |" * (len(keys) - 1))
    else:
        lines.append("| " + " | ".join(str(row.get(k, "")) for k in keys) + " |")
asm = [r for r in rows if "failed" not in r and r["network"] == "supernet" and r["method"] == "asm"]
if asm:
    best = min(asm, key=lambda r: r["steady_step_s"])
    steps = 30 * (25000 // 64)  # the paper's search: 30 epochs, 25,000 weight images, batch 64
    hours = steps * best["steady_step_s"] * 64 / best["batch"] / 3600
    lines.append("")
    lines.append(f"Projected 30-epoch CIFAR-10 search ({steps} steps of batch 64) at the fastest ASM row "
                 f"({best['precision']}, xla {best['xla']}, batch {best['batch']}): {hours:.2f} h "
                 f"(goal <= 1.5 h; paper 0.55 GPU-days on a 2080 Ti)")
text = "\n".join(lines) + "\n"
open(sys.argv[2], "w").write(text)
print(text)
EOF
