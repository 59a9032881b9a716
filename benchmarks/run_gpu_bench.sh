#!/bin/bash
# GPU benchmark on a machine with an NVIDIA card, as the README's GPU numbers were taken.
#
#   bash benchmarks/run_gpu_bench.sh [ONNXRUNTIME_GPU_WHEEL] [extra bench_gpu.py arguments]
#
# With a wheel path (e.g. onnxruntime_gpu-1.31.1-cp312-...whl, for machines that
# cannot reach PyPI), it is installed into /tmp/site first.  The CUDA and cuDNN
# libraries are taken from NVIDIA's pip packages when present (as PyTorch
# images carry them), else from the system.  Results: bench-out/bench_gpu.json.
set -o pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == *.whl ]]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$1" || exit 3
    export PYTHONPATH=/tmp/site
    shift
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD/src"
NV=$(python3 -c "import nvidia, os; print(':'.join(sorted({r for p in nvidia.__path__ for r, d, f in os.walk(p) if any('.so' in x for x in f)})))" 2>/dev/null)
[ -n "$NV" ] && export LD_LIBRARY_PATH="$NV${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())
from illust2vec.providers import cuda_problem; print('CUDA problem:', cuda_problem())"
PYTHONUNBUFFERED=1 python3 benchmarks/bench_gpu.py --device cuda --images 8192 --batch-size 256 \
    --workers "$(( $(nproc) - 1 ))" --fp16 --repeats 3 "$@"
