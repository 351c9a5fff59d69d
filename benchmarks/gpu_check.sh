#!/usr/bin/env bash
# lanner on a CUDA machine: the test suite, training in bf16 and float16 (GradScaler), resume,
# tiled detection training, eval/predict on the GPU and the tiled-vs-SAHI benchmark.
#
#   OUT=results-dir bash benchmarks/gpu_check.sh STAGE [VAL_FOLDER]
#
# STAGE: tests | classify | detect | detect-train (no benchmark) | ddp | all. VAL_FOLDER (detect): a COCO folder of large images
# (Roboflow layout, e.g. the val/ of lanner.demo_detect.write_digit_canvases) used for validation
# and the benchmark; training canvases are generated here with another seed.
# ddp (issue 15): detection and tiled detection on every GPU present (--devices = the GPU count:
# torchrun and NCCL when more than one), bf16, one resume, eval in parts, and images/s per GPU
# against a bare PyTorch loop on the same GPU (benchmarks/train_overhead.py --device cuda). Each
# step is guarded: a failure or its time limit (STEP_LIMIT, 150 s) does not stop the next, and steps
# after DDP_BUDGET (420 s) are skipped: about 5 minutes on one H200. Summary: $OUT/ddp_summary.txt;
# each step's output: $OUT/ddp_<step>.log. Classification data: $CLS_DATA, else the sign language
# digits of ../shared/data (or $LANNER_SHARED_DATA), else lanner's demo digits.
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

# ------------------------------------------------------------------------------------- ddp (issue 15)
DDP_SUMMARY="$OUT/ddp_summary.txt"
STEP_LIMIT=${STEP_LIMIT:-150}  # seconds one ddp step may take before it is stopped
DDP_BUDGET=${DDP_BUDGET:-420}  # seconds after which the remaining ddp steps are skipped

guarded() {  # guarded NAME CMD...: one step, time-limited, its output in $OUT/ddp_NAME.log; its status
    local name=$1 status rc t0=$SECONDS  # and time go to the summary, and the next step runs regardless
    shift
    if [ $((SECONDS - DDP_START)) -ge "$DDP_BUDGET" ]; then
        printf '%-16s %-28s\n' "$name" "SKIPPED (past ${DDP_BUDGET}s)" | tee -a "$DDP_SUMMARY"
        return 0
    fi
    step "ddp: $name"
    if timeout --kill-after=10 "$STEP_LIMIT" bash -c '"$@"' _ "$@" >"$OUT/ddp_$name.log" 2>&1; then
        status=ok
    else
        rc=$?
        status="FAILED (exit $rc)"
        if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then status="FAILED (over ${STEP_LIMIT}s)"; fi
    fi
    grep -v "^\s*$" "$OUT/ddp_$name.log" | tail -n 8
    printf '%-16s %-28s %4ss\n' "$name" "$status" "$((SECONDS - t0))" | tee -a "$DDP_SUMMARY"
}

ddp_data() {  # detection canvases (1024 px, 16 train / 4 val); demo digits when CLS_DATA is missing
    python3 - "$WORK/ddp-canvases" <<'PY' || return 1
import sys
from pathlib import Path
from lanner.demo_detect import write_digit_canvases
write_digit_canvases(Path(sys.argv[1]), n_train=16, n_val=4, size=1024, objects=(8, 15), seed=2)
PY
    local cls=$CLS_DATA
    if [ ! -d "$cls" ]; then
        cls="$WORK/ddp-digits/train"
        python3 -c "import sys; from pathlib import Path; from lanner.demo import write_digits; \
write_digits(Path(sys.argv[1]))" "$WORK/ddp-digits" || return 1
    fi
    echo "classification data: $cls"
}

ddp_check_run() {  # ddp_check_run RUN EPOCHS SEGMENTS: the checkpoint, processes and precision expected
    python3 - "$1" "$2" "$3" "$NGPU" <<'PY'
import json, sys
from pathlib import Path
from lanner.engine.checkpoint import load_checkpoint
run, epochs, segments, gpus = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
state = load_checkpoint(run / "checkpoints" / "last.ckpt")["train_state"]
hw = json.loads((run / "hardware.json").read_text())
print(f"{run.name}: epoch {state['epoch']}, segments {len(state['segments'])}, processes {hw['processes']}, "
      f"precision {hw['precision']}, {hw.get('gpu')}; last epoch {state['history'][-1]}")
assert state["epoch"] == epochs and len(state["segments"]) == segments, "epochs or segments"
assert hw["processes"] == gpus and hw["precision"] == "bf16", "processes or precision"
PY
}

ddp_per_gpu() {  # images/s per GPU: lanner --devices NGPU (its history) against the bare loop's JSON
    python3 - "$WORK/ddp-cls" "$OUT/train_overhead_gpu.json" "$NGPU" <<'PY'
import json, sys
from pathlib import Path
from lanner.engine.history import read_history
run, bare_json, gpus = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
speeds = [float(h["images_per_s"]) for h in read_history(run / "history.csv")]  # all processes together
steady = sum(speeds[1:]) / max(1, len(speeds) - 1)  # epoch 1 builds the cache
bare = json.loads(bare_json.read_text())["bare_images_per_s"]
bare_speeds = bare["before"][1:] + bare["after"]  # the bare loop's first epoch is warm-up
bare_mean = sum(bare_speeds) / len(bare_speeds)
print(f"lanner --devices {gpus}: {steady / gpus:.0f} images/s per GPU from epoch 2 ({steady:.0f} in all); "
      f"bare loop on one GPU {bare_mean:.0f} images/s; per GPU / bare {steady / gpus / bare_mean:.3f}")
PY
}

ddp() {
    DDP_START=$SECONDS
    NGPU=$(nvidia-smi -L 2>/dev/null | grep -c "^GPU")
    [ "${NGPU:-0}" -ge 1 ] || NGPU=$(python3 -c "import torch; print(torch.cuda.device_count())" 2>/dev/null)
    NGPU=${NGPU:-0}
    local root found
    root=$(cd "$(dirname "$0")/.." && pwd)
    CLS_DATA=${CLS_DATA:-${LANNER_SHARED_DATA:-$root/../shared/data}/sign_language_digits_cls/Dataset}
    export WORK OUT NGPU CLS_DATA
    export -f lanner ddp_data ddp_check_run ddp_per_gpu  # the steps run in a child bash (timeout)
    : >"$DDP_SUMMARY"
    {
        echo "lanner ddp check $(date -u +%FT%TZ): $NGPU GPU(s); $(nvidia-smi -L 2>/dev/null | head -n 1)"
        if [ "$NGPU" -gt 1 ]; then echo "--devices $NGPU: torchrun, NCCL"; else echo "--devices 1: one process"; fi
    } | tee -a "$DDP_SUMMARY"
    if [ "$NGPU" -lt 1 ]; then echo "no GPU: nothing checked" | tee -a "$DDP_SUMMARY"; return 1; fi
    local dev=(--devices "$NGPU" --precision bf16)
    local det=(--task detect --model fcos_resnet18 --no-hflip --no-eval "${dev[@]}")

    guarded data ddp_data
    found=$(sed -n 's/^classification data: //p' "$OUT/ddp_data.log" | tail -n 1)
    CLS_DATA=${found:-$CLS_DATA}
    # Detection on whole images (resized to 512), 2 epochs, then evaluated in parts by every GPU.
    guarded detect lanner train "$WORK/ddp-canvases" "${det[@]}" --image-size 512 --batch-size 8 \
        --epochs 2 --run "$WORK/ddp-det"
    guarded detect-check ddp_check_run "$WORK/ddp-det" 2 1
    guarded detect-eval lanner eval "$WORK/ddp-det" --devices "$NGPU" --no-report --json
    # Tiled detection: 1 epoch, one resume to 2 with a new LR (a second segment), eval in parts.
    guarded tiled lanner train "$WORK/ddp-canvases" "${det[@]}" --tile 256 --overlap 0.25 \
        --batch-size 16 --epochs 1 --run "$WORK/ddp-tiled"
    guarded tiled-resume lanner resume "$WORK/ddp-tiled" --epochs 2 --lr 0.0005 --devices "$NGPU" --no-eval
    guarded tiled-check ddp_check_run "$WORK/ddp-tiled" 2 2
    guarded tiled-eval lanner eval "$WORK/ddp-tiled" --devices "$NGPU" --no-report --json
    # Images/s: lanner against the bare loop on the same GPU (one process), then per GPU on all of them.
    guarded speed-1gpu python3 benchmarks/train_overhead.py --data "$CLS_DATA" --device cuda \
        --precision bf16 --image-size 128 --batch-size 64 --epochs 3 --out "$OUT/train_overhead_gpu.json"
    grep -E "^lanner / bare" "$OUT/ddp_speed-1gpu.log" >>"$DDP_SUMMARY"
    if [ "$NGPU" -gt 1 ]; then
        guarded speed-ngpu lanner train "$CLS_DATA" --model resnet10t --image-size 128 --batch-size 64 \
            --epochs 3 --schedule constant --no-eval "${dev[@]}" --run "$WORK/ddp-cls"
        guarded speed-per-gpu ddp_per_gpu
        grep "per GPU" "$OUT/ddp_speed-per-gpu.log" >>"$DDP_SUMMARY"
    fi
    step "ddp summary ($DDP_SUMMARY, $((SECONDS - DDP_START))s)"
    cat "$DDP_SUMMARY"
    ! grep -q FAILED "$DDP_SUMMARY"
}

case "$STAGE" in
    tests) tests ;;
    classify) classify ;;
    detect) detect_train; detect_bench; detect_export ;;
    detect-train) detect_train; detect_export ;;
    ddp) ddp ;;
    all) tests; classify; detect_train; detect_bench; detect_export; ddp ;;
    *) echo "unknown stage $STAGE"; exit 2 ;;
esac
