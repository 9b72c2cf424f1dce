#!/usr/bin/env bash
# Train with PyTorch DDP on every GPU of this box (or NPROC of them), through torchrun.
#   ./scripts/train_multigpu.sh CORPUS [CONFIG] [extra charrnn train flags...]
# The corpus is prepared once first, so the processes do not race to prepare it.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
CORPUS="${1:?usage: train_multigpu.sh CORPUS [CONFIG] [flags...]}"
CONFIG="${2:-$ROOT/configs/gpu.toml}"
shift $(( $# >= 2 ? 2 : 1 ))
install_charrnn ""
NPROC="${NPROC:-$("$VENV/bin/python" -c 'import torch; print(max(1, torch.cuda.device_count()))')}"
DATA="$CORPUS"
if [ -f "$CORPUS" ]; then
    DATA="data/$(basename "${CORPUS%.*}")"
    "$VENV/bin/charrnn" prepare "$CORPUS" -o "$DATA"
fi
exec "$VENV/bin/torchrun" --standalone --nproc_per_node="$NPROC" -m charrnn train "$DATA" \
    -c "$CONFIG" "$@"
