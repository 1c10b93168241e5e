#!/usr/bin/env bash
# The GPU figures, for a session lent a GPU machine: from the repository root,
#     bash bench/gpu.sh            (through the device tool: run(command="bash bench/gpu.sh"))
# Trains the gpu-3m preset for 3 minutes on tinyshakespeare and writes, under $OUT (default
# ./gpu-out): env.json (python, torch, CUDA, which of charrnn's dependencies import: that
# machine may have only a system python with torch and no network), gpu.json and gpu.md (val
# loss at 3 min against nanoGPT's 1.4697 on an A100, training and sampling chars/s), log.txt.
# Where charrnn's dependencies are missing it runs the plain loop (bench/baseline.py, torch and
# numpy only) of the same shape instead and says so. About 5 minutes; limited to 7.5.
set -u
OUT="${OUT:-gpu-out}"
SECONDS_TO_TRAIN="${GPU_SECONDS:-180}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
cd "$(dirname "$0")/.."

PYTHON=""
for candidate in .venv/bin/python python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c "import torch" 2>/dev/null; then
        PYTHON="$candidate"; break
    fi
done
if [ -z "$PYTHON" ]; then
    echo "error: no python with torch here (tried .venv/bin/python, python3, python)" | tee "$OUT/log.txt"
    exit 1
fi

CORPUS=""
for candidate in data/tinyshakespeare.txt shared/data/tinyshakespeare.txt ../shared/data/tinyshakespeare.txt; do
    if [ -f "$candidate" ]; then CORPUS="$candidate"; break; fi
done
if [ -z "$CORPUS" ]; then
    echo "error: no tinyshakespeare: put it at data/tinyshakespeare.txt (copy it into the repo tree, or carry data/)" | tee "$OUT/log.txt"
    exit 1
fi

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia-smi.csv" 2>&1 || true
echo "python: $PYTHON; corpus: $CORPUS; $SECONDS_TO_TRAIN s of training" | tee "$OUT/log.txt"
set -o pipefail
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 timeout 450 \
    "$PYTHON" -m bench.gpu "$OUT" "$CORPUS" "$SECONDS_TO_TRAIN" 2>&1 | tee -a "$OUT/log.txt"
