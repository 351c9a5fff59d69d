#!/usr/bin/env bash
# lanner on a CUDA machine: the test suite, training in bf16 and float16 (GradScaler), resume,
# tiled detection training, eval/predict on the GPU and the tiled-vs-SAHI benchmark.
#
#   OUT=results-dir bash benchmarks/gpu_check.sh STAGE [VAL_FOLDER]
#
# STAGE: tests | classify | detect | detect-train (no benchmark) | all. VAL_FOLDER (detect): a COCO folder of large images
# (Roboflow layout, e.g. the val/ of lanner.demo_detect.write_digit_canvases) used for validation
# and the benchmark; training canvases are generated here with another seed.
# Needs lanner importable (pip install -e . or PYTHONPATH=src) and sahi for the benchmark.
set -uo pipefail
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
STAGE=${1:-all}
VAL=${2:-}
WORK=$(mktemp -d)
lanner() { python3 -m lanner "$@"; }
step() { echo; echo "=== $* ($(date +%T))"; }

tests() {
    step "pytest with CUDA visible (browser tests need Chromium: left out)"
    # shellcheck disable=SC2086  # PYTEST_ARGS: extra pytest arguments, word-split on purpose
    eval python3 -m pytest -q -p no:cacheprovider --ignore=tests/test_report_browser.py ${PYTEST_ARGS:-} tests 2>&1 |
        tee "$OUT/pytest.log" | tail -15
}

classify() {
    step "classification demo (auto: cuda, bf16)"
    lanner demo --run "$WORK/demo" --data-dir "$WORK/digits" 2>&1 | tail -25
    step "float16 autocast + GradScaler, 4 epochs, Ctrl-C-free resume with a new LR and more epochs"
    lanner train "$WORK/digits/train" --run "$WORK/fp16" --precision 16-mixed --epochs 4 --model resnet18 \
        --image-size 64 2>&1 | tail -8
    lanner resume "$WORK/fp16" --epochs 6 --lr 0.0005 2>&1 | tail -6
    python3 - "$WORK/fp16" <<'EOF'
import json, sys, torch
from pathlib import Path
from lanner.engine.checkpoint import load_checkpoint
ckpt = load_checkpoint(Path(sys.argv[1]) / "checkpoints" / "last.ckpt")
state = ckpt["train_state"]
print("fp16 run: epochs", state["epoch"], "segments", len(state["segments"]),
      "scaler scale", ckpt.get("scaler", {}).get("scale"),
      "hardware", json.loads((Path(sys.argv[1]) / "hardware.json").read_text()))
EOF
    lanner eval "$WORK/fp16" "$WORK/digits/test" --no-report 2>&1 | tail -4
    lanner eval "$WORK/fp16" "$WORK/digits/test" --no-report --device cpu 2>&1 | tail -4
}

detect_train() {
    step "generate 48 training canvases (2048 px, seed 1); validation: $VAL"
    python3 - "$WORK/canvases" <<'EOF'
import sys
from pathlib import Path
from lanner.demo_detect import write_digit_canvases
write_digit_canvases(Path(sys.argv[1]), n_train=48, n_val=0, seed=1)
EOF
    cp -r "$VAL" "$WORK/canvases/val"
    step "tiled detection training, fcos_resnet18 on 256 px tiles, bf16, 3 minutes"
    lanner train "$WORK/canvases" --task detect --model fcos_resnet18 --tile 256 --overlap 0.25 \
        --batch-size 32 --time 3m --run "$WORK/det" 2>&1 | grep -v "^\s*$" | tail -30
    cp "$WORK/det/history.csv" "$OUT/det_history.csv"
}

detect_bench() {
    step "eval on the GPU (bf16) and on the GPU in float32"
    lanner eval "$WORK/det" --no-report 2>&1 | tail -8
    lanner eval "$WORK/det" --no-report --precision 32 2>&1 | tail -4
    step "tiled vs SAHI on the GPU, bf16 and float32"
    for precision in bf16 32; do
        python3 benchmarks/tiled_vs_sahi.py --run "$WORK/det" --data "$WORK/canvases" --tile 256 \
            --overlap 0.25 --repeats 3 --score-threshold 0.25 --device cuda --precision $precision \
            --out "$OUT/tiled_vs_sahi_gpu_$precision.json" --md "$OUT/tiled_vs_sahi_gpu_$precision.md" 2>&1 |
            grep -E "^(sanity|batch|repeat)" 
        cat "$OUT/tiled_vs_sahi_gpu_$precision.md" | head -16
    done
}

detect_export() {
    step "the trained run, without optimizer state, in 15 MB parts"
    python3 - "$WORK/det" <<'EOF'
import sys
from pathlib import Path
from lanner.engine.checkpoint import load_checkpoint, save_checkpoint
ckpt_dir = Path(sys.argv[1]) / "checkpoints"
for name in ("best.ckpt", "last.ckpt"):
    ckpt = load_checkpoint(ckpt_dir / name)
    for key in ("optimizer", "scaler"):
        ckpt.pop(key, None)
    save_checkpoint(ckpt_dir / name, ckpt)
EOF
    rm -f "$WORK/det/checkpoints/last.ckpt"
    tar -C "$WORK" -czf "$WORK/det.tar.gz" det && split -b 15M "$WORK/det.tar.gz" "$OUT/det.tar.gz.part-"
}

case "$STAGE" in
    tests) tests ;;
    classify) classify ;;
    detect) detect_train; detect_bench; detect_export ;;
    detect-train) detect_train; detect_export ;;
    all) tests; classify; detect_train; detect_bench; detect_export ;;
    *) echo "unknown stage $STAGE"; exit 2 ;;
esac
