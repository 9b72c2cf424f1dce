#!/usr/bin/env bash
# The quality run: configs/cpu.toml on tiny Shakespeare for 5 minutes, then the validation
# loss (the last 10% of the text) in nats/char against wall time.
#   ./scripts/quality.sh [PATH/TO/tinyshakespeare.txt]
#   ./scripts/quality.sh PATH/TO/tinyshakespeare.txt configs/gpu.toml   # its own max_time (5m)
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
install_charrnn ""
CORPUS="${1:-$ROOT/../shared/data/tinyshakespeare.txt}"
[ -f "$CORPUS" ] || { echo "tiny Shakespeare not found at $CORPUS; pass its path" >&2; exit 1; }
cd "$ROOT"
if [ -n "${2:-}" ]; then
    "$VENV/bin/charrnn" train "$CORPUS" -c "$2" --runs runs/quality
else
    "$VENV/bin/charrnn" train "$CORPUS" -c configs/cpu.toml --runs runs/quality --max-time 5m
fi
"$VENV/bin/python" - <<'PY'
import json, pathlib
run = pathlib.Path("runs/quality/latest")
vals = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if "val_loss" in l]
last, best = vals[-1], min(v["val_loss"] for v in vals)
print("elapsed_s  step  val_loss_nats  val_bpc")
for v in vals:
    print(f"{v.get('elapsed', float('nan')):9.1f} {v['step']:5d} {v['val_loss']:14.4f} {v['val_bpc']:8.4f}")
print(f"quality: final val loss {last['val_loss']:.4f} nats/char ({last['val_bpc']:.4f} bpc) "
      f"at step {last['step']}; best {best:.4f}; goal <= 1.60")
PY
