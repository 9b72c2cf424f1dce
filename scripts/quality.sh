#!/usr/bin/env bash
# The quality run: configs/cpu.toml on tiny Shakespeare for 5 minutes, then the validation
# loss (the last 10% of the text) in nats/char.
#   ./scripts/quality.sh [PATH/TO/tinyshakespeare.txt]
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
install_charrnn ""
CORPUS="${1:-$ROOT/../shared/data/tinyshakespeare.txt}"
[ -f "$CORPUS" ] || { echo "tiny Shakespeare not found at $CORPUS; pass its path" >&2; exit 1; }
cd "$ROOT"
"$VENV/bin/charrnn" train "$CORPUS" -c configs/cpu.toml --out runs/quality --max-time 5m
"$VENV/bin/python" - <<'PY'
import json, pathlib
run = pathlib.Path("runs/quality/latest")
vals = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if "val_loss" in l]
last, best = vals[-1], min(v["val_loss"] for v in vals)
print(f"quality: final val loss {last['val_loss']:.4f} nats/char ({last['val_bpc']:.4f} bpc) "
      f"at step {last['step']}; best {best:.4f}; goal <= 1.60")
PY
