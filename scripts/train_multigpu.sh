#!/usr/bin/env bash
# Train with PyTorch DDP on every GPU of this box (or NPROC of them), through torchrun.
# Rerun the same command after an interruption and it continues the same run.
#   ./scripts/train_multigpu.sh CORPUS [CONFIG] [extra charrnn train flags...]
# CONFIG is a file or a preset name (default gpu); NAME the run (default <corpus>-<config>).
# The corpus is prepared once first, so the processes do not race to prepare it. Ctrl-C
# (or SIGTERM) stops every process at the same step, saves last.pt and exits with 130 (143).
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
job_args "$@"
install_charrnn ""
GPUS="$("$VENV/bin/python" -c 'import torch; print(torch.cuda.device_count())')"
if [ -z "${NPROC:-}" ]; then
    [ "$GPUS" -ge 1 ] || { echo "train_multigpu.sh: no CUDA GPU visible; set NPROC=N to run N CPU processes" >&2; exit 1; }
    NPROC="$GPUS"
fi
DATA="$CORPUS"
if [ -f "$CORPUS" ]; then
    DATA="data/$(basename "${CORPUS%.*}")"
    [ -f "$DATA/meta.json" ] || "$VENV/bin/charrnn" prepare "$CORPUS" -o "$DATA"
fi
if [ -f "$RUNS/$NAME/last.pt" ]; then RUN=(--resume "$RUNS/$NAME"); else RUN=(--name "$NAME"); fi
echo "torchrun: $NPROC processes, $RUNS/$NAME"
# torchrun reports a signal it received as an error of its own; the workers stop together
# at the end of the current step and save, and this script exits with the conventional
# status. A step can be long: give the workers that long before torchrun kills them.
export TORCH_ELASTIC_SHUTDOWN_TIMEOUT="${TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-300}"
"$VENV/bin/torchrun" --standalone --nproc_per_node="$NPROC" -m charrnn train "$DATA" \
    -c "$CONFIG" --runs "$RUNS" "${RUN[@]}" "${FLAGS[@]}" &
PID=$!
trap 'kill -INT $PID 2>/dev/null; wait $PID || true; exit 130' INT
trap 'kill -TERM $PID 2>/dev/null; wait $PID || true; exit 143' TERM
wait $PID
