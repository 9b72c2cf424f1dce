#!/usr/bin/env bash
# Set up .venv with the test extras and run the test suite. Extra arguments go to pytest:
#   ./scripts/test.sh                 # everything
#   ./scripts/test.sh -m "not slow"   # skip the slow tests
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
install_charrnn "[test]"
cd "$ROOT"
exec "$VENV/bin/python" -m pytest "$@"
