#!/usr/bin/env bash
# Set up .venv, train briefly with the preset for this machine and print a sample.
#   ./scripts/demo.sh              # on Python's own standard library source (every machine has it)
#   ./scripts/demo.sh corpus.txt   # on your text
# DEMO_TIME sets the training time (default 2m).
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
install_charrnn ""
cd "$ROOT"
CORPUS="${1:-}"
if [ -z "$CORPUS" ]; then
    CORPUS=data/python_stdlib.txt
    [ -f "$CORPUS" ] || "$VENV/bin/python" scripts/python_corpus.py "$CORPUS" 2
fi
"$VENV/bin/charrnn" train "$CORPUS" --max-time "${DEMO_TIME:-2m}"
echo
echo "--- sample (temperature 0.7) ---"
"$VENV/bin/charrnn" sample --temperature 0.7 --length 600
echo
# What to expect: the model above trained for DEMO_TIME only. On 2 CPU cores a few minutes
# give text with the shape of its corpus (indentation, brackets, comment openers) but few
# real words of it; longer training gives much more (README, under the demo).
echo "--- trained ${DEMO_TIME:-2m} (the last line of training says its steps and validation loss)."
echo "--- For text closer to the corpus: DEMO_TIME=10m ./scripts/demo.sh${1:+ $1}"
