#!/usr/bin/env bash
# Prove the GPU path on a machine that already has a CUDA build of torch, and write the
# figures (with the GPU's name and the torch, CUDA and cuDNN versions) to docs/benchmarks.md.
#   ./scripts/gpu_check.sh                    # every stage, in order
#   ./scripts/gpu_check.sh tests bench        # some: tests | bench | quality | precision
#   DATA=~/corpora ./scripts/gpu_check.sh     # a directory holding tinyshakespeare.txt
# Stages, each a few minutes at most:
#   tests      the CUDA-marked tests (real dtypes per precision, contiguous cuDNN weights)
#   bench      bench.py rows 1, 3, 5: training step vs the bare cuDNN step, sampling,
#              evaluation, peak GPU memory, with configs/gpu.toml shapes
#   quality    bench.py row 9: configs/gpu.toml for 5 minutes, best validation loss and curve
#   precision  bench.py row 10: fp32, bf16 and fp16 for the same steps (what auto should be)
# torch, click, tqdm and numpy are used as installed (torch is never reinstalled): charrnn
# goes in with `pip install --no-deps -e .`, and unidecode from a wheel in $WHEELS (default
# .whl/) or from the package index when it is missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
DATA="${DATA:-$ROOT/../shared/data}"
WHEELS="${WHEELS:-$ROOT/.whl}"
STAGES=("$@")
[ ${#STAGES[@]} -gt 0 ] || STAGES=(tests bench quality precision)
for stage in "${STAGES[@]}"; do
    case "$stage" in tests|bench|quality|precision) ;;
        *) echo "gpu_check: unknown stage '$stage'; stages: tests bench quality precision" >&2
           exit 2 ;;
    esac
done
cd "$ROOT"

"$PYTHON" - <<'PY'
import sys
try:
    import torch
except ImportError:
    sys.exit("gpu_check: torch is not installed for this Python; install a CUDA build of "
             "torch first (or set PYTHON=/path/to/python)")
if not torch.cuda.is_available():
    sys.exit(f"gpu_check: torch {torch.__version__} sees no CUDA GPU (CUDA build: "
             f"{torch.version.cuda}); run this on a GPU machine")
print(f"gpu_check: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
      f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
PY
if ! "$PYTHON" -c "import unidecode" 2>/dev/null; then
    wheel=$(ls "$WHEELS"/[Uu]nidecode-*.whl 2>/dev/null | head -n 1 || true)
    if [ -n "$wheel" ]; then
        "$PYTHON" -m pip install --quiet --no-deps --no-index "$wheel"
    else
        "$PYTHON" -m pip install --quiet unidecode
    fi
fi
"$PYTHON" -m pip install --quiet --no-deps --disable-pip-version-check -e "$ROOT"
"$PYTHON" -c "import charrnn, click, tqdm, numpy" \
    || { echo "gpu_check: charrnn does not import next to this torch" >&2; exit 1; }
if [ ! -f "$DATA/tinyshakespeare.txt" ]; then
    echo "gpu_check: $DATA/tinyshakespeare.txt not found; set DATA to its directory" >&2
    exit 1
fi

status=0
for stage in "${STAGES[@]}"; do
    echo "=== $stage ==="
    started=$SECONDS
    case "$stage" in
        tests) "$PYTHON" -m pytest -m cuda -p no:cacheprovider -q tests/test_device.py || status=1 ;;
        bench) "$PYTHON" scripts/bench.py --device cuda --rows 1,3,5 --data "$DATA" \
                   --write docs/benchmarks.md || status=1 ;;
        quality) "$PYTHON" scripts/bench.py --device cuda --rows 9 --data "$DATA" \
                   --write docs/benchmarks.md || status=1 ;;
        precision) "$PYTHON" scripts/bench.py --device cuda --rows 10 --data "$DATA" \
                   --write docs/benchmarks.md || status=1 ;;
    esac
    echo "=== $stage: $((SECONDS - started)) s ==="
done
exit $status
