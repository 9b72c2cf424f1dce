#!/usr/bin/env bash
# Train on a GPU box in the background, with a log file; rerun the same command after the
# box went down and it continues the same run (runs/NAME, from its last.pt).
#   ./scripts/train_gpu.sh CORPUS [CONFIG] [extra charrnn train flags...]
#   ./scripts/train_gpu.sh corpus.txt gpu --max-time 1h
# CONFIG is a file or a preset name (default gpu). GPU picks the device (default 0); NAME
# the run (default <corpus>-<config>). The run goes on after you log out.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
job_args "$@"
install_charrnn ""
GPU="${GPU:-0}"
CUDA_VISIBLE_DEVICES="$GPU" "$VENV/bin/python" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' \
    || { echo "train_gpu.sh: no CUDA GPU visible (GPU=$GPU); train on this machine with: charrnn train $CORPUS" >&2; exit 1; }
RESUME=()
if [ -f "$RUNS/$NAME/last.pt" ]; then
    RESUME=(--resume "$RUNS/$NAME")
    echo "continuing $RUNS/$NAME from its last.pt"
else
    RESUME=(--name "$NAME")
fi
mkdir -p logs
LOG="logs/$NAME-$(date +%Y%m%d-%H%M%S).log"
CUDA_VISIBLE_DEVICES="$GPU" nohup "$VENV/bin/charrnn" train "$CORPUS" -c "$CONFIG" \
    --device cuda --runs "$RUNS" "${RESUME[@]}" "${FLAGS[@]}" > "$LOG" 2>&1 &
PID=$!
# Report a job that dies at start (a bad flag, a bad corpus) instead of leaving it to the log.
for _ in 1 2 3 4 5 6 7 8 9 10; do
    sleep 1
    if ! kill -0 "$PID" 2>/dev/null; then
        wait "$PID"; status=$?
        echo "train_gpu.sh: the job stopped at start (status $status):" >&2
        tail -n 5 "$LOG" >&2
        exit 1
    fi
done
echo "training in the background (pid $PID) on GPU $GPU: $RUNS/$NAME"
echo "follow it:   tail -f $LOG"
echo "stop it:     kill -INT $PID    (saves last.pt; rerun this command to continue)"
