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
the clock), the Validator (when to evaluate, and whether it improved), the Checkpointer
(best, last and periodic saves), and StopRequests (signals, one decision for all ranks).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..core import distributed
from ..core.checkpoint import load_init
from ..core.config import Config
from ..core.device import resolve_device
from ..core.cpu import apply_threads
from ..core.precision import autocast, cached_speedup, resolve_precision
from ..core.errors import DataError
from ..core.model import CharRNN, cross_entropy, map_hidden, parameter_count
from ..core.units import LN2
from ..corpus.prepared import PreparedData
from ..corpus.streams import Streams
from ..corpus.vocab import Vocab
from ..inference.evaluate import Abandoned, evaluate
from .budget import Budget, StopReason, diverged
from .checkpointer import Checkpointer, collect, restore
from .metrics import IntervalMeter, IntervalStats, MetricsLog
from .optim import apply_gradients, learning_rate, make_optimizer
from .plot import CurveRefresher
from .progress import Progress
from .result import TrainResult
from .setup import (
    agree,
    check_training_memory,
    init_weights,
    startup_lines,
    wrap_model,
)
from .state import TrainingState
from .stopping import StopRequests
from .validator import Validator, sample_chars


class Trainer:
    def __init__(self, cfg: Config, data: PreparedData, *, run_dir: Path | None = None,
                 state: dict | None = None, echo=print, progress: bool = True,
                 resident: bool | None = None, init: tuple[Path, dict, Vocab] | None = None,
                 fused: bool | None = None):
        """`state`: a checkpoint to resume; `init`: `load_init(cfg.train.init_from)` when the
        caller has loaded it already; `fused`: the fused AdamW kernel (default: where
        PyTorch has one)."""
        self.cfg, self.data, self.echo, self.run_dir = cfg, data, echo, run_dir
        t = cfg.train
        self.dist = distributed.from_env()
        self.device = resolve_device(t.device, self.dist.local_rank)
        distributed.init(self.dist, self.device)
        if t.batch_size % self.dist.world_size:
            raise DataError(f"batch_size {t.batch_size} must be divisible by the number of "
                            f"processes ({self.dist.world_size})")
        # Before anything is timed: the precision measurement is per thread count.
        self.threads = apply_threads(t.threads)
        torch.manual_seed(t.seed)
        self.vocab = data.vocab
        check_training_memory(cfg, len(self.vocab), self.dist.world_size, self.device)
        self.model = CharRNN.from_config(len(self.vocab), cfg.model).to(self.device)
        # A checkpoint from before the plan was recorded ran fp32 under auto.
        started = None if state is None else state.get("precision", "fp32")
        self.precision = agree(self.dist, self.device, resolve_precision(
            t.precision, self.device, cfg.model.cell, self._measure_speedup,
            cfg.model.hidden_size, started))
        self.model.recurrent_dtype = self.precision.cast
        if state is None and t.init_from:
            init_weights(self.model, init or load_init(t.init_from), self.vocab, data.root)
        # PyTorch has fused AdamW kernels for cuda and cpu; mps and others take the foreach one.
        fused = self.device.type in ("cuda", "cpu") if fused is None else fused
        self.optimizer = make_optimizer(self.model, t, fused)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision.scaler)
        self._data(t, resident)
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
        self.validator = Validator(t, self.state, self.validation_loss, len(self.val))
        self.metrics, self.curves = MetricsLog(None), CurveRefresher(None)
        self.stop, self.speed = None, 0.0  # the run's StopRequests; chars/s at the last report

    def _data(self, t, resident: bool | None) -> None:
        """This rank's training streams and the validation text."""
        row_start, row_stop = self.dist.rows(t.batch_size)
        self.streams = Streams(self.data.split("train"), t.batch_size, t.seq_len, self.device,
                               row_start, row_stop, resident=resident,
                               reset_every=t.reset_every, doc_starts=self._doc_starts())
        self.steps_per_epoch = self.streams.steps_per_epoch
        self.val = self.data.split("val")
        self.val_chars = len(self.val)  # the split's, before any sample
        flops = 2.0 * parameter_count(len(self.data.vocab), self.cfg.model)
        n = sample_chars(t, len(self.val), flops, self.device.type)
        if n < len(self.val):
            self.val = self.val[:n]

    # ------------------------------------------------------------------------------------
    # the loop

    def run(self, final_eval: bool = True) -> TrainResult:
        """Train until a limit or a signal; evaluate and save at the end (if `final_eval`)."""
        self.final_eval = final_eval
        t, s = self.cfg.train, self.state
        # Before the start-up lines: it imports matplotlib, which takes a second or two.
        self.curves = CurveRefresher(self.run_dir if self.dist.is_main else None)
        if self.dist.is_main:
            for line in startup_lines(self):
                self.echo(line)
        # The clock starts here, after the start-up: --max-time is training time.
        self.budget = budget = Budget(t, self.steps_per_epoch, s)  # the limits as of now
        meter = IntervalMeter(self.device, self.dist, t.batch_size * t.seq_len)
        progress = Progress(self.progress_enabled, s.step, budget.stop_step, self.echo)
        self.curves.warn = progress.write
        self.checkpointer = Checkpointer(self.run_dir, t, self.dist.is_main,
                                         self.checkpoint_state)
        first = self.first = s.step + 1
        log = self.run_dir / "metrics.jsonl" if self.dist.is_main and self.run_dir else None
        with StopRequests(self.dist) as stop, self.metrics.opened(log), progress:
            self.stop = stop
            reason = budget.limit_reached() or (StopReason.MAX_TIME if budget.time_up() else None)
            if reason is not None:  # a resume with nothing left to train: say which limit
                progress.write(budget.spent(reason))
            while reason is None:
                lr = self.schedule()
                meter.add(*self.train_step(lr))
                s.step += 1
                budget.tick()
                progress.step()
                if s.step % t.log_every == 0 or s.step == first:
                    stats = self.report(meter, progress, lr, record=s.step % t.log_every == 0)
                    reason = diverged(stats, t, progress.write)
                if reason is None:
                    reason = self.after_step(stop, meter, progress)
            self._finish(reason, progress, final_eval)
        return TrainResult(self.run_dir, s.step, reason, s.best_val_loss, s.last_val_loss,
                           stop.signal, s.best_step, budget.spent_really(),
                           meter.average_speed())

    def after_step(self, stop: StopRequests, meter: IntervalMeter, progress: Progress):
        """Evaluate and save when due, and why to stop after this step (None: go on). Each
        decision is taken by all ranks together (StopRequests.poll)."""
        budget = self.budget
        # A periodic evaluation now must leave room for the final one too.
        due = self.validator.due(self.state.step)
        reason, due = stop.poll(budget.time_up(self.to_come(due)), due)
        if reason is not None:
            return reason
        with meter.paused():  # chars/s is training speed: evaluations and saves apart
            abandoned = self.evaluate_and_save(progress, due)
        budget.tick()
        if abandoned:
            return StopReason.INTERRUPTED
        if due:  # the evaluation took time: is the budget spent now?
            reason, _ = stop.poll(budget.time_up(self.to_come()))
        return reason or budget.limit_reached()

    def to_come(self, eval_due: bool = False) -> float:
        """Seconds that must stay in the time budget after this step: one more step, the
        final evaluation and the saves (and a periodic evaluation, when one is due), so that
        a --max-time run ends within its time."""
        steps_per_s = self.speed / (self.cfg.train.batch_size * self.cfg.train.seq_len)
        step = 1.0 / steps_per_s if steps_per_s > 0 else 0.0
        final = self.validator.to_come(self.final_eval, self.speed)
        return step + final * (2 if eval_due else 1) + self.checkpointer.save_seconds

    def _doc_starts(self):
        """Where the training split's documents start (streams start blank there), or None
        for a corpus of one document."""
        if self.data.n_documents < 2:
            return None
        return self.data.documents().starts_in(0, self.data.meta["splits"]["train"])

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
            loss = self.loss(logits, targets)
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

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy in nats per character of logits (B, T, V) for targets (B, T)."""
        return cross_entropy(logits, targets)

    def report(self, meter: IntervalMeter, progress: Progress, lr: float,
               record: bool = True) -> IntervalStats:
        """A progress line (and, with `record`, a metrics record that closes the interval).
        Reads the device once."""
        s = self.state
        stats = meter.read(close=record)
        s.skipped = stats.skipped
        if record:
            self.metrics.write({"step": s.step, "epoch": s.step / self.steps_per_epoch,
                                "train_loss": stats.loss, "lr": lr,
                                "chars_per_s": round(stats.chars_per_s, 1),
                                "elapsed": round(s.elapsed, 3), "skipped": stats.skipped})
        if s.step > self.first:  # the very first step is slow (kernels warm up): not it
            self.speed = stats.chars_per_s
        left = self.budget.time_left(stats.chars_per_s / meter.chars_per_step,
                                     self.validator.to_come(self.final_eval, self.speed))
        progress.report(s.step, stats.loss,
                        None if s.last_val_loss is None else s.last_val_loss / LN2,
                        stats.chars_per_s, s.elapsed, left)
        return stats

    def evaluate_and_save(self, progress: Progress, due: bool) -> bool:
        """Evaluate when `due` and save last.pt, and best.pt when it improved; then the
        periodic checkpoints that train.keep and save_every ask for. True when a signal
        came during the evaluation and it was abandoned (nothing recorded or saved)."""
        evaluated = due
        if evaluated:
            try:
                loss, improved = self.validate()
            except Abandoned:
                progress.write(f"step {self.state.step} | validation abandoned (interrupted)")
                return True
            progress.write(f"step {self.state.step} | val loss {loss:.4f} nats/char, "
                           f"{loss / LN2:.4f} bpc" + (" (best)" if improved else ""))
            progress.show_val(loss / LN2)
            self.checkpointer.after_validation(improved)
            self.curves()
        self.checkpointer.periodic(self.state.step, evaluated)
        return False

    def validate(self) -> tuple[float, bool]:
        """The validation loss now, and whether it is the best so far (recorded)."""
        loss, improved = self.validator.validate()
        self.budget.tick()  # the evaluation counts toward the time budget
        self.metrics.write({"step": self.state.step, "val_loss": loss, "val_bpc": loss / LN2,
                            "elapsed": round(self.state.elapsed, 3)})
        return loss, improved

    def validation_loss(self) -> float:
        """Mean nats per character over the validation text (all ranks take part)."""
        t = self.cfg.train
        # In fp32 whatever the plan: the figure that best.pt and patience compare stays one
        # figure across resumes in another precision.
        self.model.recurrent_dtype = None
        # One process abandons an evaluation on Ctrl-C; under DDP every rank must finish it.
        abort = (None if self.dist.enabled or self.stop is None
                 else lambda: self.stop.interrupted)
        try:
            return evaluate(self.model, self.val, t.eval_batch_size, t.seq_len, self.device,
                            None, self.dist, t.eval_context, abort=abort)
        finally:
            self.model.recurrent_dtype = self.precision.cast

    def _finish(self, reason: StopReason, progress: Progress, final_eval: bool) -> None:
        s, done = self.state, self.validator.done_at_this_step
        if reason == StopReason.MAX_TIME:
            self.budget.spend_all()
            if done or not final_eval:
                self.checkpointer.save("last.pt")
        if reason == StopReason.INTERRUPTED:
            progress.write(f"interrupted at step {s.step}: saving last.pt")
            self.checkpointer.save("last.pt")
            self.curves.final()
            return
        if reason == StopReason.EARLY_STOP:
            progress.write(f"no better validation loss in {s.stale_evals} evaluations: "
                           f"stopping (best.pt is step {s.best_step})")
        if reason != StopReason.DIVERGED and final_eval and not done:
            if self.evaluate_and_save(progress, due=True):  # Ctrl-C during it
                progress.write(f"interrupted at step {s.step}: saving last.pt")
                self.checkpointer.save("last.pt")
        self.curves.final()

    def release(self) -> None:
        """Drop the DDP wrapper: its reducer holds the process group, which must be free to
        shut down before the interpreter exits (where gloo can abort)."""
        self.wrapped = self.model

    def _measure_speedup(self):
        """bf16 against fp32 for this model's step, from the per-user cache or measured once
        (each process its own; `agree` then makes them pick the same plan)."""
        t = self.cfg.train
        return cached_speedup(self.model.rnn, t.batch_size // self.dist.world_size,
                              t.seq_len, self.device)

    def checkpoint_state(self) -> dict:
        """Everything a resumed run needs. Collective under DDP: every rank must call it."""
        state = collect(self.model, self.optimizer, self.cfg, self.data, self.state,
                        self.hidden, self.dist, self.device)
        if state is not None:  # the plan it ran in, which a resumed `auto` keeps
            state["precision"] = self.precision.name
        return state
