"""Stateful training with truncated backpropagation through time: the Trainer and its loop.

    trainer = Trainer(load_config("tiny"), open_corpus("corpus.txt"))
    result = trainer.run()       # or training/run.py's train(), which also owns a run directory

Each step takes the next seq_len characters of all B streams (corpus/streams.py), runs them
from the hidden state the previous chunk left, and detaches that state before the next
step, so gradients flow back at most seq_len characters while the state carries context
across the whole stream. The state is reset when the streams wrap at the end of an epoch,
and each stream also starts blank once every train.reset_every chunks (blank_starts), so
the model keeps working from the blank state that sampling and evaluation start from.

What happens per step is only device work: the batch is a view of the corpus tensor, the
loss is summed on the device and read at log intervals, and a step with a non-finite loss or
gradient is skipped inside the fused optimizer (found_inf) rather than by a host check
(optimizers without a fused kernel, as on mps, read one flag per step instead).

`Trainer.run` is the loop. It hands its cadence to parts of its own: the Budget (limits and
the clock), the Validator (when to evaluate, the figure of the model it is handed, and
whether it improved), StopRequests (signals, one decision for all ranks) and the Recorder
(progress, metrics.jsonl, the checkpoints and curves.png). Each is given what it works on;
none calls back into the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..core import distributed
from ..core.config import Config
from ..core.cpu import apply_threads
from ..core.device import resolve_device
from ..core.errors import DataError
from ..core.model import cross_entropy, map_hidden
from ..core.precision import autocast
from ..corpus.prepared import PreparedData
from ..corpus.vocab import Vocab
from ..inference.evaluate import Abandoned
from .budget import Budget, StopReason, diverged
from .checkpointer import restore, run_state
from .metrics import IntervalMeter, IntervalStats
from .optim import apply_gradients, learning_rate
from .recorder import Recorder
from .result import TrainResult
from .setup import (
    startup_lines,
    training_model,
    training_text,
    wrap_model,
)
from .state import TrainingState
from .stopping import StopRequests
from .validator import Validator


@dataclass
class RunParts:
    """The parts of one `Trainer.run`: made as it starts, gone when it ends."""
    rec: Recorder  # progress, metrics.jsonl, checkpoints, curves.png
    stop: StopRequests
    meter: IntervalMeter
    final_eval: bool
    first: int  # the first step of this invocation (slow: kernels warm up)


class Trainer:
    def __init__(self, cfg: Config, data: PreparedData, *, run_dir: Path | None = None,
                 state: dict | None = None, echo=print, progress: bool = True,
                 resident: bool | None = None, init: tuple[Path, dict, Vocab] | None = None,
                 fused: bool | None = None):
        """`state`: a checkpoint to resume; `init`: `load_init(cfg.train.init_from)` when the
        caller has loaded it already; `fused`: the fused AdamW kernel (default: where
        PyTorch has one); `run_dir`: where `run` writes (None: nowhere)."""
        self.cfg, self.data, self.echo, self.run_dir = cfg, data, echo, run_dir
        t, self.vocab = cfg.train, data.vocab
        self.dist = distributed.from_env()
        self.device = resolve_device(t.device, self.dist.local_rank)
        distributed.init(self.dist, self.device)
        if t.batch_size % self.dist.world_size:
            raise DataError(f"batch_size {t.batch_size} must be divisible by the number of "
                            f"processes ({self.dist.world_size})")
        # Before anything is timed: the precision measurement is per thread count.
        self.threads = apply_threads(t.threads)
        torch.manual_seed(t.seed)
        self.model, self.precision, self.optimizer, self.scaler = training_model(
            cfg, data, self.dist, self.device, state, init, fused)
        text = training_text(cfg, data, self.dist, self.device, resident)
        self.streams, self.val, self.val_chars = text.streams, text.val, text.val_chars
        self.steps_per_epoch = self.streams.steps_per_epoch
        self.state, self.hidden = TrainingState(), None
        if state is not None:
            self.state, self.hidden = restore(state, self.model, self.optimizer, cfg,
                                              self.dist, self.device)
        elif self.dist.enabled:
            torch.manual_seed(t.seed + self.dist.rank)  # distinct dropout masks per rank
        # What a step calls: the model, in DDP with several processes, compiled on request.
        self.wrapped = wrap_model(self.model, self.dist, self.device, t.compile)
        self.progress_enabled = progress and self.dist.is_main
        self.budget = Budget(t, self.steps_per_epoch, self.state)
        self.validator = Validator(t, self.state, self.val, self.device, self.dist)
        self.speed = 0.0  # chars/s at the last report: what the time budget plans with

    # ------------------------------------------------------------------------------------
    # the loop

    def run(self, final_eval: bool = True) -> TrainResult:
        """Train until a limit or a signal; evaluate and save at the end (if `final_eval`)."""
        t, s, budget = self.cfg.train, self.state, self.budget
        rec = Recorder(self.run_dir, t, self.dist.is_main, self.echo, startup_lines(self),
                       show=self.progress_enabled, start_step=s.step, stop_step=budget.stop_step)
        with StopRequests(self.dist) as stop, rec:
            # The clock starts here, after the start-up: --max-time is training time.
            budget.start()
            meter = IntervalMeter(self.device, self.dist, t.batch_size * t.seq_len)
            reason = self._loop(RunParts(rec, stop, meter, final_eval, s.step + 1))
        return TrainResult(self.run_dir, s.step, reason, s.best_val_loss, s.last_val_loss,
                           stop.signal, s.best_step, budget.spent_really(),
                           meter.average_speed())

    def _loop(self, run: RunParts) -> StopReason:
        """Steps until a reason to stop, then the end of the run (_finish)."""
        t, s, budget = self.cfg.train, self.state, self.budget
        reason = budget.limit_reached() or (StopReason.MAX_TIME if budget.time_up() else None)
        if reason is not None:  # a resume with nothing left to train: say which limit
            run.rec.write(budget.spent(reason))
        while reason is None:
            lr = self.schedule()
            run.meter.add(*self.train_step(lr))
            s.step += 1
            budget.tick()
            run.rec.progress.step()
            if s.step % t.log_every == 0 or s.step == run.first:
                stats = self.report(run, lr, record=s.step % t.log_every == 0)
                reason = diverged(stats, t, run.rec.write)
            if reason is None:
                reason = self.after_step(run)
        self._finish(run, reason)
        return reason

    def after_step(self, run: RunParts) -> StopReason | None:
        """Evaluate and save when due, and why to stop after this step (None: go on). Each
        decision is taken by all ranks together (StopRequests.poll)."""
        budget = self.budget
        # A periodic evaluation now must leave room for the final one too.
        due = self.validator.due(self.state.step)
        reason, due = run.stop.poll(budget.time_up(self.to_come(run, due)), due)
        if reason is not None:
            return reason
        with run.meter.paused():  # chars/s is training speed: evaluations and saves apart
            abandoned = self.evaluate_and_save(run, due)
        budget.tick()
        if abandoned:
            return StopReason.INTERRUPTED
        if due:  # the evaluation took time: is the budget spent now?
            reason, _ = run.stop.poll(budget.time_up(self.to_come(run)))
        return reason or budget.limit_reached()

    def to_come(self, run: RunParts, eval_due: bool = False) -> float:
        """Seconds that must stay in the time budget after this step: one more step, the
        final evaluation and the saves (and a periodic evaluation, when one is due), so that
        a --max-time run ends within its time."""
        steps_per_s = self.speed / (self.cfg.train.batch_size * self.cfg.train.seq_len)
        step = 1.0 / steps_per_s if steps_per_s > 0 else 0.0
        final = self.validator.to_come(run.final_eval, self.speed)
        return step + final * (2 if eval_due else 1) + run.rec.checkpointer.save_seconds

    def schedule(self) -> float:
        """Set and return this step's learning rate."""
        lr = learning_rate(self.state.step, self.cfg.train, self.budget.progress())
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def train_step(self, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One step on the next chunk: (loss, bad), both 0-d device tensors; a bad step (a
        non-finite loss or gradient) changes neither the weights nor the optimizer."""
        chunk = self.state.step % self.steps_per_epoch
        self._carry_in(chunk)
        idx, targets = self.streams.batch(chunk)  # (B, T) views
        with autocast(self.device, self.precision.autocast):
            logits, hidden = self.wrapped(idx, self.hidden)  # (B, T, V)
            loss = cross_entropy(logits, targets)  # mean nats per character
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        bad = apply_gradients(self.optimizer, self.scaler, self.cfg.train.grad_clip,
                              loss.detach())
        # A non-finite state would poison every later chunk of its stream: restart it.
        self.hidden = map_hidden(lambda h: torch.where(bad, 0.0, h.detach()), hidden)
        return loss.detach(), bad

    def _carry_in(self, chunk: int) -> None:
        """The state this chunk starts from: blank at the epoch's start, else the last
        chunk's, blank for the streams whose turn it is (Streams.carry)."""
        if chunk == 0 or self.hidden is None:
            self.hidden = self.model.init_hidden(self.streams.rows, self.device)
        else:
            self.hidden = self.streams.carry(self.hidden, chunk)

    def report(self, run: RunParts, lr: float, record: bool = True) -> IntervalStats:
        """A progress line (and, with `record`, a metrics record that closes the interval).
        Reads the device once."""
        s = self.state
        stats = run.meter.read(close=record)
        s.skipped = stats.skipped
        if s.step > run.first:  # the very first step is slow (kernels warm up): not it
            self.speed = stats.chars_per_s
        left = self.budget.time_left(stats.chars_per_s / run.meter.chars_per_step,
                                     self.validator.to_come(run.final_eval, self.speed))
        run.rec.interval(s, stats, lr, s.step / self.steps_per_epoch, left, record)
        return stats

    # ------------------------------------------------------------------------------------
    # evaluations, saves and the end of a run

    def evaluate_and_save(self, run: RunParts, due: bool) -> bool:
        """Evaluate when `due` and save last.pt, and best.pt when it improved; then the
        periodic checkpoints that train.keep and save_every ask for. True when a signal
        came during the evaluation and it was abandoned (nothing recorded or saved)."""
        step, saves = self.state.step, run.rec.checkpointer
        if due:
            # One process abandons an evaluation on Ctrl-C; under DDP every rank must finish it.
            abort = None if self.dist.enabled else (lambda: run.stop.interrupted)
            try:
                loss, improved = self.validator.validate(self.model, abort)
            except Abandoned:
                run.rec.abandoned(step)
                return True
            self.budget.tick()  # the evaluation counts toward the time budget
            run.rec.validated(self.state, loss, improved, self.checkpoint_state())
        if saves.periodic_due(step, due):
            saves.save_periodic(self.checkpoint_state(), step)
        return False

    def _finish(self, run: RunParts, reason: StopReason) -> None:
        """The end of a run: the final evaluation and saves its reason asks for (curves.png
        is drawn a last time as the Recorder closes)."""
        s, done, rec = self.state, self.validator.done_at_this_step, run.rec
        if reason == StopReason.MAX_TIME:
            self.budget.spend_all()
            if done or not run.final_eval:
                rec.checkpointer.save(self.checkpoint_state(), "last.pt")
        if reason == StopReason.INTERRUPTED:
            rec.interrupted(s.step, self.checkpoint_state())
            return
        if reason == StopReason.EARLY_STOP:
            rec.write(f"no better validation loss in {s.stale_evals} evaluations: "
                      f"stopping (best.pt is step {s.best_step})")
        if reason != StopReason.DIVERGED and run.final_eval and not done:
            if self.evaluate_and_save(run, due=True):  # Ctrl-C during it
                rec.interrupted(s.step, self.checkpoint_state())

    def checkpoint_state(self) -> dict:
        """Everything a resumed run needs, and the precision plan it ran in (which a
        resumed `auto` keeps). Collective under DDP: every rank must call it."""
        return run_state(self.model, self.optimizer, self.cfg, self.data, self.state,
                         self.hidden, self.dist, self.device, self.precision.name)

    def release(self) -> None:
        """Drop the DDP wrapper: its reducer holds the process group, which must be free to
        shut down before the interpreter exits (where gloo can abort)."""
        self.wrapped = self.model
