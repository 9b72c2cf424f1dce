#!/usr/bin/env bash
# Train on a GPU box in the background, with a log file.
#   ./scripts/train_gpu.sh CORPUS [CONFIG] [extra charrnn train flags...]
# GPU picks the device (default 0); the run goes on after you log out.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
CORPUS="${1:?usage: train_gpu.sh CORPUS [CONFIG] [flags...]}"
CONFIG="${2:-$ROOT/configs/gpu.toml}"
shift $(( $# >= 2 ? 2 : 1 ))
install_charrnn ""
mkdir -p logs
LOG="logs/train-$(date +%Y%m%d-%H%M%S).log"
CUDA_VISIBLE_DEVICES="${GPU:-0}" nohup "$VENV/bin/charrnn" train "$CORPUS" -c "$CONFIG" \
    --device cuda "$@" > "$LOG" 2>&1 &
echo "training in the background (pid $!) on GPU ${GPU:-0}"
echo "follow it:   tail -f $LOG"
echo "stop it:     kill -INT $!    (saves last.pt; continue with: charrnn train --resume runs/latest)"
