"""Stateful training with truncated backpropagation through time.

    from charrnn.core.config import load_config
    from charrnn.corpus.prepared import open_corpus
    from charrnn.training.trainer import train
    result = train(load_config("configs/tiny.toml"), open_corpus("corpus.txt"))
    print(result.run_dir, result.best_val_loss)

Each step takes the next seq_len characters of all B streams (data.py), runs them from the
hidden state the previous chunk left, and detaches that state before the next step, so
gradients flow back at most seq_len characters while the state carries context across the
whole stream. The state is reset when the streams wrap at the end of an epoch.

What happens per step is only device work: the batch is a view of the corpus tensor, the
loss is summed on the device and read at log intervals, and a step with a non-finite loss or
gradient is skipped inside the fused optimizer (found_inf) rather than by a host check
(optimizers without a fused kernel, as on mps, read one flag per step instead).

`Trainer.run` is the loop; each part it calls is a method that can be used on its own:
`schedule` (the learning rate from recorded progress), `train_step`, `report` (logging),
`evaluate_and_save`, and the stop decision (`limit_reached`, `StopRequests.poll`).
"""

from __future__ import annotations

import contextlib
import gc
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from ..core import distributed
from ..core.checkpoint import (check_resumable, hidden_of, load_init, load_optimizer, load_weights,
                         save_checkpoint, training_state)
from ..core.config import Config, parse_duration
from ..corpus.prepared import PreparedData, Streams
from ..core.device import autocast, check_fits, describe, resolve_device, resolve_precision
from ..core.errors import CheckpointError, DataError
from ..inference.evaluate import LN2, evaluate
from ..core.files import DirectoryLock, atomic_write_text, remove_stale
from .metrics import IntervalMeter, MetricsLog
from ..core.model import (GATES, CharRNN, describe_model, hidden_from_tensors, hidden_tensors,
                    parameter_count, select_rows)
from .optim import learning_rate, make_optimizer, run_progress, skip_or_step
from .plot import CurveRefresher
from .progress import Progress, format_seconds
from ..core.runs import new_run_dir, prune_periodic, resolve_run_dir, update_latest
from .stopping import StopRequests
from ..corpus.vocab import Vocab


@dataclass
class TrainResult:
    run_dir: Path | None
    step: int
    reason: str  # max_steps | max_epochs | max_time | early_stop | interrupted | diverged
    best_val_loss: float  # inf when the run never evaluated
    last_val_loss: float | None
    signal: int | None = None
    best_step: int | None = None
    elapsed: float = 0.0  # training time of the whole run, across resumes (seconds)
    chars_per_s: float = 0.0  # average training speed of this invocation

    def summary(self) -> str:
        """The end-of-run line."""
        parts = [f"stopped at step {self.step} ({self.reason}) after "
                 f"{format_seconds(self.elapsed)}"]
        if math.isfinite(self.best_val_loss):
            parts.append(f"best val loss {self.best_val_loss:.4f} nats/char "
                         f"({self.best_val_loss / LN2:.4f} bpc) at step {self.best_step}")
        else:
            parts.append("not evaluated")
        if self.chars_per_s:
            parts.append(f"{self.chars_per_s:,.0f} chars/s")
        return "; ".join(parts) + (f"; {self.run_dir}/" if self.run_dir else "")


class Trainer:
    def __init__(self, cfg: Config, data: PreparedData, *, run_dir: Path | None = None,
                 state: dict | None = None, echo=print, progress: bool = True,
                 resident: bool | None = None, init: tuple[Path, dict, Vocab] | None = None,
                 fused: bool | None = None):
        """`state`: a checkpoint to resume; `init`: `load_init(cfg.train.init_from)` when the
        caller has loaded it already; `fused`: the fused AdamW kernel (default: where
        PyTorch has one)."""
        self.cfg, self.data, self.echo = cfg, data, echo
        t = cfg.train
        self.dist = distributed.from_env()
        self.device = resolve_device(t.device, self.dist.local_rank)
        distributed.init(self.dist, self.device)
        self.main = self.dist.is_main
        self.precision = resolve_precision(t.precision, self.device)
        if t.batch_size % self.dist.world_size:
            raise DataError(f"batch_size {t.batch_size} must be divisible by the number of "
                            f"processes ({self.dist.world_size})")

        torch.manual_seed(t.seed)
        self.vocab = data.vocab
        self._check_memory()
        self.model = CharRNN.from_config(len(self.vocab), cfg.model).to(self.device)
        if state is None and t.init_from:
            self._init_weights(init or load_init(t.init_from))
        # PyTorch has fused AdamW kernels for cuda and cpu; mps and others take the foreach one.
        self.fused = self.device.type in ("cuda", "cpu") if fused is None else fused
        self.optimizer = make_optimizer(self.model, t, self.fused)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision.scaler)

        row_start, row_stop = self.dist.rows(t.batch_size)
        self.streams = Streams(data.split("train"), t.batch_size, t.seq_len, self.device,
                               row_start, row_stop, resident=resident)
        self.val = data.split("val")
        if t.eval_chars and t.eval_chars < len(self.val):
            self.val = self.val[:t.eval_chars]
        self.steps_per_epoch = self.streams.steps_per_epoch
        self.keep = blank_starts(t.reset_every, row_start, row_stop, self.device)

        self.step = 0
        self.best_val_loss, self.best_step = math.inf, None
        self.last_val_loss: float | None = None
        self.last_eval_step = -1
        self.skipped = 0
        self.stale_evals = 0  # evaluations since the best one (train.patience)
        self.elapsed = 0.0  # training time across resumes
        self.eval_seconds = 0.0  # how long the last evaluation took
        self._clock = (time.monotonic(), 0.0)  # (when this invocation started, elapsed then)
        self.hidden = None
        if state is not None:
            self._restore(state)
        elif self.dist.enabled:
            torch.manual_seed(t.seed + self.dist.rank)  # distinct dropout masks per rank
        self.forward = self._wrap(self.model)
        self.run_dir = run_dir
        self.progress_enabled = progress and self.main
        self.metrics = MetricsLog(None)
        self.curves = CurveRefresher(None)

    def _wrap(self, model):
        forward = model
        if self.dist.enabled:
            # The only buffer is the constant one-hot table: nothing to re-broadcast per step.
            with warnings.catch_warnings():
                # torch marks broadcast_buffers deprecated but asks that code relying on
                # buffers not being synced keep using it until its replacement exists.
                warnings.filterwarnings("ignore", "`broadcast_buffers` is deprecated",
                                        FutureWarning)
                forward = DistributedDataParallel(
                    model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                    broadcast_buffers=False)
        return torch.compile(forward) if self.cfg.train.compile else forward

    def _check_memory(self) -> None:
        """Refuse, before allocating, a model and batch that cannot fit on the device: the
        weights, their gradients and two AdamW moments, and a step's activations."""
        t, m, V = self.cfg.train, self.cfg.model, len(self.vocab)
        rows = t.batch_size // self.dist.world_size
        activations = rows * t.seq_len * (m.num_layers * m.hidden_size * (GATES[m.cell] + 2)
                                          + 3 * V)
        check_fits(4 * (4 * parameter_count(V, m) + activations), self.device,
                   f"training a {describe_model(m)} over {V:,} characters with "
                   f"batch_size {t.batch_size} x seq_len {t.seq_len}",
                   "use a smaller model, --batch-size or --seq-len")

    def _init_weights(self, init: tuple[Path, dict, Vocab]) -> None:
        """Fine-tuning: the weights of another run's checkpoint, on this run's data."""
        path, state, vocab = init
        if vocab.chars != self.vocab.chars:
            raise DataError(f"{self.data.root} is not encoded with the vocabulary of {path}; "
                            f"prepare the text with: charrnn prepare TEXT --vocab {path}")
        try:
            load_weights(state, self.model)
        except CheckpointError as e:
            raise CheckpointError(f"--init-from {path}: {e}; leave the model settings to the "
                                  f"checkpoint") from None

    def _restore(self, state: dict) -> None:
        """Continue from a checkpoint, each part checked before torch sees it."""
        m, t = self.cfg.model, self.cfg.train
        rng, progress = check_resumable(state, self.model, self.optimizer, self.cfg)
        # Everything checked: only now does anything change.
        load_weights(state, self.model)
        load_optimizer(state, self.optimizer)
        for key, value in progress.items():
            setattr(self, key, value)
        saved = hidden_of(state)
        if saved:
            rows = slice(*self.dist.rows(t.batch_size))
            hidden = hidden_from_tensors([h.to(self.device) for h in saved], m.cell)
            self.hidden = select_rows(hidden, rows)
        if self.dist.enabled:
            torch.manual_seed(t.seed + self.dist.rank + self.step)
        else:
            torch.set_rng_state(rng["torch"])
            if self.device.type == "cuda" and rng.get("cuda") is not None:
                try:
                    torch.cuda.set_rng_state(rng["cuda"], self.device)
                except RuntimeError:
                    raise CheckpointError("checkpoint cannot be resumed: its CUDA random "
                                          "state is damaged") from None

    # ------------------------------------------------------------------------------------
    # the loop

    def run(self, final_eval: bool = True) -> TrainResult:
        """Train until a limit or a signal; evaluate and save at the end (if `final_eval`)."""
        self._announce()
        t = self.cfg.train
        stop_step, max_seconds = self.stop_step(), parse_duration(t.max_time)
        meter = IntervalMeter(self.device, self.dist, t.batch_size * t.seq_len)
        start_step = self.step
        self._clock = (time.monotonic(), self.elapsed)
        progress = Progress(self.progress_enabled, self.step, stop_step, self.echo)
        self.curves = CurveRefresher(self.run_dir if self.main else None)
        with StopRequests(self.dist) as stop, self.metrics.opened(self._metrics_path()), progress:
            reason = self.limit_reached(stop_step) or (
                "max_time" if self.time_up(max_seconds, final_eval=False) else None)
            while reason is None:
                lr = self.schedule(stop_step, max_seconds)
                meter.add(*self.train_step(lr))
                self.step += 1
                self._tick()
                progress.step()
                if self.step % t.log_every == 0 or self.step == start_step + 1:
                    reason = self.report(meter, progress, lr, stop_step, max_seconds,
                                         record=self.step % t.log_every == 0)
                if reason is None:
                    with meter.paused():  # chars/s is training speed: evals and saves apart
                        self.evaluate_and_save(progress)
                    self._tick()
                    reason = (stop.poll(self.time_up(max_seconds, final_eval))
                              or self.limit_reached(stop_step))
            self._finish(reason, progress, final_eval, max_seconds)
        return TrainResult(self.run_dir, self.step, reason, self.best_val_loss,
                           self.last_val_loss, stop.signal, self.best_step, self.elapsed,
                           meter.average_speed())

    def _tick(self) -> None:
        """Bring `elapsed` (training time across resumes) up to now."""
        started, start_elapsed = self._clock
        self.elapsed = start_elapsed + time.monotonic() - started

    def limit_reached(self, stop_step: int | None) -> str | None:
        t = self.cfg.train
        if stop_step is not None and self.step >= stop_step:
            return "max_steps" if t.max_steps == stop_step else "max_epochs"
        if t.patience and self.stale_evals >= t.patience:
            return "early_stop"
        return None

    def time_up(self, max_seconds: float, final_eval: bool) -> bool:
        """Past the time budget, counting the final evaluation still to come."""
        if not max_seconds:
            return False
        to_come = self.eval_seconds if final_eval and self.last_eval_step != self.step else 0.0
        return self.elapsed + to_come >= max_seconds

    def stop_step(self) -> int | None:
        t = self.cfg.train
        limits = []
        if t.max_steps:
            limits.append(t.max_steps)
        if t.max_epochs:
            limits.append(math.ceil(t.max_epochs * self.steps_per_epoch))
        return min(limits) if limits else None

    def schedule(self, stop_step: int | None, max_seconds: float) -> float:
        """Set and return this step's learning rate."""
        t = self.cfg.train
        lr = learning_rate(self.step, t, run_progress(self.step, self.elapsed, t, stop_step,
                                                      max_seconds))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def train_step(self, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One step on the next chunk: (loss, bad), both 0-d device tensors; a bad step (a
        non-finite loss or gradient) changes neither the weights nor the optimizer."""
        t, opt = self.cfg.train, self.optimizer
        chunk = self.step % self.steps_per_epoch
        if chunk == 0 or self.hidden is None:
            self.hidden = self.model.init_hidden(self.streams.rows, self.device)  # streams wrapped
        elif self.keep is not None:
            keep = self.keep[chunk % len(self.keep)]  # (rows, 1): False where a stream starts blank
            self.hidden = hidden_from_tensors(
                [torch.where(keep, h, 0.0) for h in hidden_tensors(self.hidden)],
                self.cfg.model.cell)
        idx, targets = self.streams.batch(chunk)  # (B, T) views
        with autocast(self.device, self.precision.autocast):
            logits, hidden = self.forward(idx, self.hidden)  # (B, T, V)
            loss = self.loss(logits, targets)
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        params = [p for group in opt.param_groups for p in group["params"]]
        if self.scaler.is_enabled():
            self.scaler.unscale_(opt)
        if t.grad_clip > 0:
            # Clipping by global norm keeps one exploding chunk from wrecking the weights.
            norm = torch.nn.utils.clip_grad_norm_(params, t.grad_clip, foreach=True)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params], foreach=True)
        loss = loss.detach()
        if self.scaler.is_enabled():
            bad = ~torch.isfinite(loss)  # inf gradients are the scaler's business
            self.scaler.step(opt)
            self.scaler.update()
        else:
            bad = ~(torch.isfinite(loss) & torch.isfinite(norm))
            skip_or_step(opt, bad, self.fused)
        # A non-finite state would poison every later chunk of its stream: restart it.
        self.hidden = hidden_from_tensors(
            [torch.where(bad, 0.0, h.detach()) for h in hidden_tensors(hidden)],
            self.cfg.model.cell)
        return loss, bad

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy in nats per character of logits (B, T, V) for targets (B, T)."""
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(),
                               targets.reshape(-1).long())

    def report(self, meter: IntervalMeter, progress: Progress, lr: float,
               stop_step: int | None, max_seconds: float, record: bool = True) -> str | None:
        """A progress line (and, with `record`, a metrics record that closes the interval);
        "diverged" after max_bad_steps non-finite steps in a row. Reads the device once."""
        t = self.cfg.train
        stats = meter.read(close=record)
        self.skipped = stats.skipped
        if record:
            self.metrics.write({"step": self.step, "epoch": self.step / self.steps_per_epoch,
                                "train_loss": stats.loss, "lr": lr,
                                "chars_per_s": round(stats.chars_per_s, 1),
                                "elapsed": round(self.elapsed, 3), "skipped": stats.skipped})
        left = _time_left(self.step, stop_step, stats.chars_per_s / meter.chars_per_step,
                          max_seconds - self.elapsed if max_seconds else None)
        progress.report(self.step, stats.loss,
                        None if self.last_val_loss is None else self.last_val_loss / LN2,
                        stats.chars_per_s, self.elapsed, left)
        if stats.consecutive_bad >= t.max_bad_steps:
            progress.write(f"stopping: {stats.consecutive_bad} steps in a row had a non-finite "
                           f"loss or gradient (skipped, weights untouched); try a lower --lr "
                           f"(now {t.lr:g}) or --grad-clip; last.pt is left as it was")
            return "diverged"
        return None

    def evaluate_and_save(self, progress: Progress, force: bool = False) -> None:
        """Evaluate (every eval_every steps, or now with `force`) and save best/last, and the
        periodic checkpoints that train.save_every or train.keep ask for."""
        t = self.cfg.train
        periodic = t.keep and (self.step % t.save_every == 0 if t.save_every else True)
        if force or self.step % t.eval_every == 0:
            loss, improved = self.validate()
            progress.write(f"step {self.step} | val loss {loss:.4f} nats/char, "
                           f"{loss / LN2:.4f} bpc" + (" (best)" if improved else ""))
            self.save(*(("best.pt", "last.pt") if improved else ("last.pt",)))
            self.curves()
        elif not (t.save_every and self.step % t.save_every == 0):
            return
        if periodic:
            self.save(f"step-{self.step:08d}.pt")
            if self.main and self.run_dir is not None:
                prune_periodic(self.run_dir, t.keep)

    def validate(self) -> tuple[float, bool]:
        """The validation loss now, and whether it is the best so far (recorded)."""
        started = time.monotonic()
        loss = self.validation_loss()
        self.eval_seconds = time.monotonic() - started
        self._tick()  # the evaluation counts toward the time budget
        self.last_val_loss, self.last_eval_step = loss, self.step
        improved = loss < self.best_val_loss
        if improved:
            self.best_val_loss, self.best_step = loss, self.step
        self.stale_evals = 0 if improved else self.stale_evals + 1
        self.metrics.write({"step": self.step, "val_loss": loss, "val_bpc": loss / LN2,
                            "elapsed": round(self.elapsed, 3)})
        return loss, improved

    def validation_loss(self) -> float:
        """Mean nats per character over the validation text (all ranks take part)."""
        t = self.cfg.train
        return evaluate(self.model, self.val, t.eval_batch_size, t.seq_len, self.device,
                        self.precision.autocast, self.dist, t.eval_context)

    def _finish(self, reason: str, progress: Progress, final_eval: bool,
                max_seconds: float = 0.0) -> None:
        if reason == "max_time":
            # The budget is spent, and recorded so: a resume with the same --max-time trains
            # nothing more, even when the last evaluation ran faster than the one before.
            self._tick()
            self._clock = (time.monotonic(), max(self.elapsed, max_seconds))
            self._tick()
            if self.last_eval_step == self.step or not final_eval:
                self.save("last.pt")
        if reason == "interrupted":
            progress.write(f"interrupted at step {self.step}: saving last.pt")
            self.save("last.pt")
            return
        if reason == "early_stop":
            progress.write(f"no better validation loss in {self.stale_evals} evaluations: "
                           f"stopping (best.pt is step {self.best_step})")
        if reason != "diverged" and final_eval and self.last_eval_step != self.step:
            self.evaluate_and_save(progress, force=True)

    # ------------------------------------------------------------------------------------
    # output

    def _announce(self) -> None:
        if not self.main:
            return
        t, V = self.cfg.train, len(self.vocab)
        self.echo(f"device: {describe(self.device)}"
                  + (f", {self.dist.world_size} processes" if self.dist.enabled else "")
                  + f"; {self.precision.describe(self.device)}")
        params = sum(p.numel() for p in self.model.parameters())
        self.echo(f"model: {describe_model(self.cfg.model)}, {params:,} parameters, vocabulary "
                  f"{V}; {self.steps_per_epoch} steps per epoch"
                  + (f"; weights from {t.init_from}" if t.init_from and self.step == 0 else ""))
        advice = sizing_advice(params, self.data.meta["splits"]["train"], self.cfg.model)
        if advice:
            self.echo(advice)
        if not self.cfg.model.embed_dim and V > 500:
            self.echo(f"hint: a one-hot input over {V:,} characters costs {V:,} x "
                      f"{self.cfg.model.hidden_size} multiply-adds per gate per character; "
                      f"--embed-dim 128 is much cheaper")
        if self.run_dir is not None:
            self.echo(f"run: {self.run_dir}")
        if not (t.max_steps or t.max_epochs or t.max_time):
            self.echo("no --max-steps, --max-epochs or --max-time: training until Ctrl-C")

    def _metrics_path(self) -> Path | None:
        return self.run_dir / "metrics.jsonl" if self.main and self.run_dir else None

    def checkpoint_state(self) -> dict:
        """Everything a resumed run needs. Collective under DDP: every rank must call it."""
        hidden = None
        if self.hidden is not None:
            hidden = [distributed.gather_rows(self.dist, h.detach()).float().cpu()
                      for h in hidden_tensors(self.hidden)]
        return training_state(
            model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
            config=self.cfg, vocab=self.vocab, text_options=self.data.options,
            data_root=self.data.root, step=self.step, best_val_loss=self.best_val_loss,
            best_step=self.best_step, last_val_loss=self.last_val_loss,
            last_eval_step=self.last_eval_step, skipped=self.skipped, elapsed=self.elapsed,
            stale_evals=self.stale_evals,
            hidden=hidden, device=self.device)

    def save(self, *names: str) -> None:
        state = self.checkpoint_state()
        if not self.main or self.run_dir is None:
            return
        for name in names:
            save_checkpoint(self.run_dir / name, state)


def blank_starts(reset_every: int, row_start: int, row_stop: int,
                 device: torch.device) -> torch.Tensor | None:
    """Which streams keep their state at each chunk: (K, rows, 1), False where stream b starts
    from a blank state at chunk i, that is where (i + b) % K == 0, b the global row.

    Every stream starts blank once every K chunks and 1/K of them do at each step, so the
    model never forgets how to start from nothing while most streams carry long context.
    It depends only on the chunk and the global row: the same on resume and with any number
    of processes. None when K is 0 (streams start blank only at each epoch's start).
    """
    if reset_every <= 0:
        return None
    chunk = torch.arange(reset_every)[:, None]
    rows = torch.arange(row_start, row_stop)[None, :]
    keep = (chunk + rows) % reset_every != 0
    return keep[:, :, None].to(device)


def sizing_advice(params: int, chars: int, model) -> str:
    """One line relating the parameter count to the training text: char-rnn's rule of thumb
    is the two of the same order of magnitude. A hint when the model is far larger (it
    will memorise) or far smaller (it has room to grow)."""
    ratio = params / max(chars, 1)
    line = (f"size: {params:,} parameters for {chars:,} training characters "
            f"({ratio:.2g} per character)")
    if ratio > 10:
        return (line + f"; the model is far larger than the text and will overfit: raise "
                f"--dropout (now {model.dropout:g}, try 0.3-0.5) or shrink --hidden-size")
    if ratio < 0.1:
        return (line + "; the model is far smaller than the text: a larger --hidden-size or "
                "more --num-layers should do better, given the time")
    return line + " (the same order of magnitude: a good fit)"


def _time_left(step, stop_step, steps_per_s, seconds_left):
    options = []
    if stop_step is not None and steps_per_s > 0:
        options.append((stop_step - step) / steps_per_s)
    if seconds_left is not None:
        options.append(max(seconds_left, 0.0))
    return min(options) if options else None


# ----------------------------------------------------------------------------------------


def train(cfg: Config, data: PreparedData, *, runs_dir: str | Path = "runs",
          name: str | None = None, resume_state: dict | None = None,
          resume_dir: Path | None = None, echo=print, progress: bool = True,
          resident: bool | None = None, init: tuple[Path, dict, Vocab] | None = None,
          fused: bool | None = None) -> TrainResult:
    """Train a model on `data`; writes runs_dir/<name>/ (or continues `resume_dir`)."""
    dist = distributed.from_env()
    # Everything that can reject the input (device, data, checkpoint) runs before the run
    # directory is created, so a refused run leaves nothing behind.
    trainer = Trainer(cfg, data, state=resume_state, echo=echo, progress=progress,
                      resident=resident, init=init, fused=fused)
    run_dir, finished = None, False
    if resume_dir is not None:
        resume_dir = resolve_run_dir(resume_dir)
    try:
        with contextlib.ExitStack() as stack:
            if dist.is_main:
                run_dir = resume_dir if resume_dir is not None else new_run_dir(runs_dir, name, data.name)
                # One trainer per run directory; what a killed one left half-written goes.
                stack.enter_context(DirectoryLock(run_dir, "run directory"))
                remove_stale(run_dir)
                atomic_write_text(run_dir / "config.toml", cfg.to_toml())
                MetricsLog.truncate(run_dir / "metrics.jsonl", trainer.step)
            trainer.run_dir = run_dir
            result = trainer.run()
            finished = True
    finally:
        # DDP's reducer holds the process group: release it first, so that the group's
        # threads stop here rather than at interpreter exit (where gloo can abort).
        trainer.forward = trainer.model
        gc.collect()
        distributed.shutdown(dist, wait=finished)
    if dist.is_main and run_dir is not None:
        update_latest(run_dir.parent if resume_dir is not None else Path(runs_dir), run_dir)
    return result
