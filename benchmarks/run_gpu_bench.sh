#!/bin/bash
# GPU benchmark on a machine with an NVIDIA card, as the GPU numbers in docs/benchmarks.md were taken.
#
#   bash benchmarks/run_gpu_bench.sh [WHEEL.whl ...] [extra bench_gpu.py arguments]
#
# Wheels given first (e.g. onnxruntime_gpu-1.31.1-cp312-...whl and
# nvidia_nvimgcodec_cu13-...whl, for machines that cannot reach PyPI) are
# installed into /tmp/site.  The CUDA and cuDNN libraries are taken from
# NVIDIA's pip packages when present (as PyTorch images carry them), else from
# the system.  The run measures the current pipeline (the baseline) and, in the
# same process, preprocessing on the device (--in-graph) with CPU and
# nvImageCodec decoding (--gpu-decode; CPU decoding with a warning when
# nvImageCodec is missing).  Results: bench-out/bench_gpu.json and the table on stdout.
set -o pipefail
cd "$(dirname "$0")/.."
WHEELS=()
while [[ "${1:-}" == *.whl ]]; do WHEELS+=("$1"); shift; done
if (( ${#WHEELS[@]} )); then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "${WHEELS[@]}" || exit 3
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD/src"
NV=$(python3 -c "import nvidia, os; print(':'.join(sorted({r for p in nvidia.__path__ for r, d, f in os.walk(p) if any('.so' in x for x in f)})))" 2>/dev/null)
[ -n "$NV" ] && export LD_LIBRARY_PATH="$NV${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
git log -1 --format='commit %H %s' 2>/dev/null || true
python3 -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())
from illust2vec.runtime.devices import cuda_problem; print('CUDA problem:', cuda_problem())
from illust2vec.io.gpu_decode import nvimgcodec_problem; print('nvImageCodec problem:', nvimgcodec_problem()[0])"
PYTHONUNBUFFERED=1 python3 benchmarks/bench_gpu.py --device cuda --images 8192 --batch-size 256 \
    --workers "$(( $(nproc) - 1 ))" --fp16 --repeats 3 --in-graph --gpu-decode "$@"
