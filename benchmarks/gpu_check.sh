#!/usr/bin/env bash
# Every GPU check in one run, on one H100/H200 (docs/gpu.md); the parts' time limits add up to under 10 minutes:
#   tests      the tests marked `gpu` (NF4 bit-exactness on CUDA, CUDA graphs)
#   job        the IMDB job (after an untimed warm-up run): train.py --cuda-graphs with --cls-only, then a plain
#              transformers loop, then without --cls-only
#   bench      bench.py's CUDA rows: the training step (eager and CUDA graphs), inference, LoRA / QLoRA (these with
#              bitsandbytes), each against the Hugging Face stack
# Each part has its own time limit and writes into OUT as it goes; a failing part does not stop the next.
#
#   bash benchmarks/gpu_check.sh [IMDB folder] [OUT folder]      # defaults: $MINIBERT_DATA, $OUT or runs/gpu_check
#   PARTS=tests,bench bash benchmarks/gpu_check.sh ...           # only these parts
#
# The IMDB job's run folders (checkpoints: ~270 MB each) go to $RUNS (default runs/gpu_check_imdb_job), outside
# OUT, which keeps only small files: logs, tables, JSON (the job's two reports are copied there). Parts whose needs
# are missing (bitsandbytes, the IMDB folder) say so and are left out. Each part logs its exit status (124: its
# time limit ended it).
set -u
DATA=${1:-${MINIBERT_DATA:?give the IMDB folder or set MINIBERT_DATA}}
OUT=${2:-${OUT:-runs/gpu_check}}
RUNS=${RUNS:-runs/gpu_check_imdb_job}
PARTS=${PARTS:-tests,job,bench}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
mkdir -p "$OUT"
T0=$(date +%s)
log() { echo "[+$(( $(date +%s) - T0 )) s] $*" | tee -a "$OUT/gpu_check.txt"; }
wanted() { [[ ",$PARTS," == *",$1,"* ]]; }
has_bnb() { $PY -c "import bitsandbytes, peft" 2>/dev/null; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$OUT/gpu_check.txt"
$PY -c "import torch, transformers; print('torch', torch.__version__, 'cudnn', torch.backends.cudnn.version(),
'transformers', transformers.__version__)" 2>&1 | tee -a "$OUT/gpu_check.txt"

if wanted tests; then
    tests=(tests/test_cuda_graphs.py)
    if has_bnb; then
        tests+=(tests/test_nf4.py tests/test_quant_model.py tests/test_lora_adapter.py)
    else
        log "bitsandbytes or peft missing: the NF4 and adapter GPU tests are left out"
    fi
    timeout 100 $PY -m pytest -q -m gpu "${tests[@]}" 2>&1 | tee -a "$OUT/gpu_check.txt" | tail -5
    log "tests done (exit ${PIPESTATUS[0]})"
fi

if wanted job; then
    if [ -d "$DATA" ]; then
        timeout 190 $PY -m benchmarks.imdb_job --data "$DATA" --out "$RUNS" --order graphs-cls,reference,graphs \
            --timeout 80 2>&1 | grep --line-buffered -v "it/s\]\|batch/s\]" > "$OUT/imdb_job.txt"
        log "imdb job exit ${PIPESTATUS[0]}"
        tail -15 "$OUT/imdb_job.txt"
        cp "$RUNS/reports.json" "$RUNS/imdb_job.json" "$OUT/" 2>/dev/null
    else
        log "no IMDB folder at $DATA: the IMDB job is left out"
    fi
    log "job done"
fi

if wanted bench; then
    parts=train,inference
    has_bnb && parts=$parts,adapters
    timeout 150 $PY bench.py --cuda-only --cuda-parts $parts --json "$OUT/bench_cuda.json" 2>&1 \
        | grep --line-buffered -v "^{" > "$OUT/bench_cuda.txt"
    log "bench done (exit ${PIPESTATUS[0]})"
    tail -25 "$OUT/bench_cuda.txt"
fi
