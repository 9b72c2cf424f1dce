# Sourced by the other scripts: make .venv (once) and install charrnn into it.
# The constraints file pins the torch these tests ran with; pip resolves it to the CPU or
# CUDA build that fits the machine.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-$ROOT/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV" >&2
    "$PYTHON" -m venv "$VENV"
fi
install_charrnn() {  # $1: extras, e.g. "[test]" or ""
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        -c "$ROOT/constraints.txt" -e "$ROOT$1" 2>&1 | grep -v "is ignored" >&2 || true
    "$VENV/bin/python" -c "import charrnn, torch" || { echo "install failed" >&2; exit 1; }
}
job_args() {  # "$@" of a training script -> CORPUS, CONFIG (default gpu), NAME, RUNS, FLAGS
    local script; script="$(basename "$0")"
    [ $# -ge 1 ] || { echo "usage: $script CORPUS [CONFIG] [charrnn train flags...]" >&2; exit 2; }
    CORPUS="$1"; shift
    CONFIG=gpu
    if [ $# -ge 1 ] && [ "${1#-}" = "$1" ]; then CONFIG="$1"; shift; fi
    [ -e "$CORPUS" ] || { echo "$script: corpus not found: $CORPUS" >&2; exit 1; }
    NAME="${NAME:-$(basename "${CORPUS%.*}")-$(basename "${CONFIG%.toml}")}"
    RUNS="${RUNS:-runs}"
    FLAGS=("$@")
}
