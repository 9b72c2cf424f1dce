#!/usr/bin/env bash
# Set up .venv and run the benchmark (scripts/bench.py); arguments go to it:
#   ./scripts/bench.sh                    # every CPU row, ~10 minutes on 2 cores
#   ./scripts/bench.sh --quick --rows 3   # the sampling rows, briefly
#   ./scripts/bench.sh --device cuda      # rows 1, 3 and 5 on a GPU
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
install_charrnn ""
cd "$ROOT"
exec "$VENV/bin/python" scripts/bench.py "$@"
