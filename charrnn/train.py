"""Stateful training with truncated backpropagation through time.

    from charrnn.config import load_config
    from charrnn.data import open_corpus
    from charrnn.train import train
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
"""

from __future__ import annotations

import gc
import json
import math
import signal
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from . import distributed
from .checkpoint import config_of, find_checkpoint, load_checkpoint, save_checkpoint
from .config import Config, parse_duration
from .data import PreparedData, Streams
from .device import autocast, describe, resolve_device, resolve_precision
from .errors import CheckpointError, ConfigError, DataError
from .evaluate import LN2, evaluate
from .model import (CharRNN, detach_hidden, hidden_from_tensors, hidden_tensors,
                    select_rows)
from .prepare import TextOptions
from .progress import Progress
from .runs import new_run_dir, prune_periodic, truncate_metrics, update_latest
from .vocab import Vocab


def describe_model(m) -> str:
    return f"{m.num_layers}x{m.hidden_size} {m.cell.upper()}" + (
        f" (embedding {m.embed_dim})" if m.embed_dim else "")


def load_init(source: str) -> tuple[Path, dict, Vocab]:
    """The checkpoint named by `train.init_from`: its path, its state and its vocabulary."""
    path = find_checkpoint(source)
    state = load_checkpoint(path)
    try:
        vocab = Vocab.from_dict(state["vocab"])
    except (KeyError, TypeError, DataError):
        raise CheckpointError(f"--init-from {path}: the checkpoint has no usable vocabulary") from None
    return path, state, vocab


def fine_tuning(cfg: Config, explicit: set[str]):
    """For `train.init_from`: the config with the checkpoint's model, the checkpoint's
    vocabulary and text options (with which new text is to be encoded), and the loaded
    checkpoint for `train(init=...)`. `explicit` names the keys the user set by flag; model
    keys among them must agree with the checkpoint, except the dropout."""
    init = load_init(cfg.train.init_from)
    path, state, vocab = init
    model = config_of(state).model
    for key in sorted(explicit):
        section, _, name = key.partition(".")
        if section == "model" and name != "dropout" and getattr(cfg.model, name) != getattr(model, name):
            raise ConfigError(f"--init-from: the model is the checkpoint's ({describe_model(model)}, "
                              f"model.{name} = {getattr(model, name)!r}); leave out model.{name}")
    if "model.dropout" in explicit:
        model = replace(model, dropout=cfg.model.dropout)
    try:
        options = TextOptions(**state["text_options"])
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"--init-from {path}: the checkpoint is incomplete ({e})") from None
    return replace(cfg, model=model), vocab, options, init


# Settings that may change when a run is resumed; anything else must match the checkpoint.
RESUMABLE = {"max_steps", "max_epochs", "max_time", "device", "precision", "compile",
             "eval_every", "eval_batch_size", "eval_chars", "log_every", "keep", "save_every",
             "max_bad_steps", "lr", "min_lr", "warmup_steps", "lr_decay", "decay_steps", "weight_decay",
             "grad_clip"}


@dataclass
class TrainResult:
    run_dir: Path | None
    step: int
    reason: str  # max_steps | max_epochs | max_time | interrupted | diverged
    best_val_loss: float
    last_val_loss: float | None
    signal: int | None = None


def learning_rate(step: int, cfg, progress: float | None) -> float:
    """Linear warm-up, then cosine decay to min_lr over the run (`progress` in [0, 1])."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_decay == "constant" or progress is None:
        return cfg.lr
    progress = min(max(progress, 0.0), 1.0)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


def resume_config(saved: Config, overrides: dict[str, dict]) -> Config:
    """The checkpoint's config with the overrides a resumed run may apply."""
    for section, values in overrides.items():
        for key, value in values.items():
            old = getattr(getattr(saved, section), key)
            if value == old:
                continue
            if section != "train" or key not in RESUMABLE:
                raise CheckpointError(
                    f"--resume: {section}.{key} is {old!r} in the checkpoint, {value!r} given; "
                    f"it cannot change on resume (start a new run instead)")
    return Config(model=saved.model, train=replace(saved.train, **overrides.get("train", {})))


class _Stop:
    """SIGINT/SIGTERM: the first asks training to stop after the current step and save;
    a second one interrupts at once (checkpoint writes are atomic, so nothing is corrupted)."""

    def __init__(self):
        self.signal: int | None = None
        self.previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


class Trainer:
    def __init__(self, cfg: Config, data: PreparedData, run_dir: Path | None = None,
                 state: dict | None = None, echo=print, progress: bool = True,
                 resident: bool | None = None, init: tuple[Path, dict, Vocab] | None = None,
                 fused: bool | None = None):
        """`state`: a checkpoint to resume; `init`: `load_init(cfg.train.init_from)` when the
        caller has it already (else it is loaded here); `fused`: the fused AdamW kernel
        (default: where PyTorch has one)."""
        self.cfg, self.data, self.echo = cfg, data, echo
        t = cfg.train
        self.dist = distributed.from_env()
        self.device = resolve_device(t.device, self.dist.local_rank)
        distributed.init(self.dist, self.device)
        self.main = self.dist.is_main
        self.precision = resolve_precision(t.precision, self.device)
        self.amp_dtype = self.precision.autocast
        if t.batch_size % self.dist.world_size:
            raise DataError(f"batch_size {t.batch_size} must be divisible by the number of "
                            f"processes ({self.dist.world_size})")

        torch.manual_seed(t.seed)
        self.vocab = data.vocab
        self.model = CharRNN.from_config(len(self.vocab), cfg.model).to(self.device)
        if state is None and t.init_from:
            self._init_weights(init or load_init(t.init_from))
        # PyTorch has fused AdamW kernels for cuda and cpu; mps and others take the foreach one.
        self.fused = self.device.type in ("cuda", "cpu") if fused is None else fused
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=t.lr, betas=(t.beta1, t.beta2),
            weight_decay=t.weight_decay, fused=self.fused)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision.scaler)

        row_start, row_stop = self.dist.rows(t.batch_size)
        self.streams = Streams(data.split("train"), t.batch_size, t.seq_len, self.device,
                               row_start, row_stop, resident=resident)
        self.val = data.split("val")
        if t.eval_chars and t.eval_chars < len(self.val):
            self.val = self.val[:t.eval_chars]
        self.steps_per_epoch = self.streams.steps_per_epoch

        self.step = 0
        self.best_val_loss = math.inf
        self.last_val_loss: float | None = None
        self.last_eval_step = -1
        self.skipped = 0
        self.elapsed = 0.0
        self.hidden = None
        if state is not None:
            self._restore(state)
        elif self.dist.enabled:
            torch.manual_seed(t.seed + self.dist.rank)  # distinct dropout masks per rank

        forward = self.model
        if self.dist.enabled:
            # The only buffer is the constant one-hot table: nothing to re-broadcast per step.
            with warnings.catch_warnings():
                # torch marks broadcast_buffers deprecated but asks that code relying on buffers
                # not being synced keep using it until its replacement exists.
                warnings.filterwarnings("ignore", "`broadcast_buffers` is deprecated",
                                        FutureWarning)
                forward = DistributedDataParallel(
                    self.model,
                    device_ids=[self.device.index] if self.device.type == "cuda" else None,
                    broadcast_buffers=False)
        if t.compile:
            forward = torch.compile(forward)
        self.forward = forward

        self.run_dir = None
        self.metrics = None
        self.progress_enabled = progress and self.main
        if run_dir is not None:
            self.attach(run_dir)

    def _init_weights(self, init: tuple[Path, dict, Vocab]) -> None:
        """Fine-tuning: the weights of another run's checkpoint, on this run's data."""
        path, state, vocab = init
        if vocab.chars != self.vocab.chars:
            raise DataError(f"{self.data.root} is not encoded with the vocabulary of {path}; "
                            f"prepare the text with: charrnn prepare TEXT --vocab {path}")
        try:
            self.model.load_state_dict(state["model"])
        except (KeyError, RuntimeError):
            raise CheckpointError(f"--init-from {path}: its weights do not fit a "
                                  f"{describe_model(self.cfg.model)} model; leave the model "
                                  f"settings to the checkpoint") from None

    def attach(self, run_dir: Path) -> None:
        """Start writing to `run_dir` (the main process only): config, metrics, checkpoints."""
        self.run_dir = run_dir
        if self.main:
            (run_dir / "config.toml").write_text(self.cfg.to_toml(), encoding="utf-8")
            truncate_metrics(run_dir / "metrics.jsonl", self.step)
            self.metrics = open(run_dir / "metrics.jsonl", "a", encoding="utf-8")

    # ------------------------------------------------------------------------------------

    def _restore(self, state: dict) -> None:
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.step = int(state["step"])
            self.best_val_loss = float(state["best_val_loss"])
            self.last_val_loss = state.get("last_val_loss")
            self.last_eval_step = int(state.get("last_eval_step", -1))
            self.skipped = int(state.get("skipped", 0))
            self.elapsed = float(state.get("elapsed", 0.0))
            saved = state.get("hidden")
            if saved:
                rows = slice(*self.dist.rows(self.cfg.train.batch_size))
                hidden = hidden_from_tensors([h.to(self.device) for h in saved], self.cfg.model.cell)
                self.hidden = select_rows(hidden, rows)
            rng = state["rng"]
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            raise CheckpointError(f"checkpoint cannot be resumed: {e}") from None
        if self.dist.enabled:
            torch.manual_seed(self.cfg.train.seed + self.dist.rank + self.step)
        else:
            torch.set_rng_state(rng["torch"])
            if self.device.type == "cuda" and rng.get("cuda") is not None:
                torch.cuda.set_rng_state(rng["cuda"], self.device)

    def checkpoint_state(self) -> dict:
        """Everything a resumed run needs. Collective under DDP: every rank must call it."""
        hidden = None
        if self.hidden is not None:
            hidden = [distributed.gather_rows(self.dist, h.detach()).float().cpu()
                      for h in hidden_tensors(self.hidden)]
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "config": self.cfg.to_dict(),
            "vocab": {"chars": self.vocab.chars},
            "text_options": self.data.options.to_dict(),
            "data": {"name": self.data.name, "root": str(self.data.root.resolve())},
            "step": self.step,
            "epoch": self.step // self.steps_per_epoch,
            "position": self.step % self.steps_per_epoch,
            "best_val_loss": self.best_val_loss,
            "last_val_loss": self.last_val_loss,
            "last_eval_step": self.last_eval_step,
            "skipped": self.skipped,
            "elapsed": self.elapsed,
            "hidden": hidden,
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(self.device)
                    if self.device.type == "cuda" else None},
        }

    def save(self, *names: str) -> None:
        state = self.checkpoint_state()
        if not self.main or self.run_dir is None:
            return
        for name in names:
            save_checkpoint(self.run_dir / name, state)

    def log(self, record: dict) -> None:
        if self.metrics is not None:
            self.metrics.write(json.dumps(record) + "\n")
            self.metrics.flush()

    # ------------------------------------------------------------------------------------

    def stop_step(self) -> int | None:
        t = self.cfg.train
        limits = []
        if t.max_steps:
            limits.append(t.max_steps)
        if t.max_epochs:
            limits.append(math.ceil(t.max_epochs * self.steps_per_epoch))
        return min(limits) if limits else None

    def evaluate(self) -> tuple[float, bool]:
        t = self.cfg.train
        loss = evaluate(self.model, self.val, t.eval_batch_size, t.seq_len, self.device,
                        self.amp_dtype, self.dist)
        self.last_val_loss, self.last_eval_step = loss, self.step
        improved = loss < self.best_val_loss
        if improved:
            self.best_val_loss = loss
        self.log({"step": self.step, "val_loss": loss, "val_bpc": loss / LN2,
                  "elapsed": round(self.elapsed, 3)})
        return loss, improved

    def run(self, final_eval: bool = True) -> TrainResult:
        """Train until a limit or a signal; evaluate and save at the end (if `final_eval`)."""
        t = self.cfg.train
        if self.main:
            self.echo(f"device: {describe(self.device)}"
                      + (f", {self.dist.world_size} processes" if self.dist.enabled else "")
                      + f"; {self.precision.describe(self.device)}")
            params = sum(p.numel() for p in self.model.parameters())
            self.echo(f"model: {describe_model(self.cfg.model)}, {params:,} parameters, vocabulary "
                      f"{len(self.vocab)}; {self.steps_per_epoch} steps per epoch"
                      + (f"; weights from {t.init_from}" if t.init_from and self.step == 0 else ""))
            if self.run_dir is not None:
                self.echo(f"run: {self.run_dir}")
        stop_step = self.stop_step()
        max_seconds = parse_duration(t.max_time)
        if stop_step is None and not max_seconds and self.main:
            self.echo("no --max-steps, --max-epochs or --max-time: training until Ctrl-C")
        progress = Progress(self.progress_enabled, self.step, stop_step, self.echo)
        with _Stop() as stop:
            try:
                reason = self._loop(stop, stop_step, max_seconds, progress, final_eval)
            finally:
                progress.close()
                if self.metrics is not None:
                    self.metrics.close()
        return TrainResult(self.run_dir, self.step, reason, self.best_val_loss,
                           self.last_val_loss, stop.signal)

    def _loop(self, stop: _Stop, stop_step: int | None, max_seconds: float, progress,
              final_eval: bool) -> str:
        t = self.cfg.train
        device, model, opt = self.device, self.model, self.optimizer
        params = [p for p in model.parameters()]
        V = len(self.vocab)
        rows_T = t.batch_size * t.seq_len  # characters per step over all ranks
        loss_sum = torch.zeros((), device=device)
        good = torch.zeros((), device=device)
        bad_run = torch.zeros((), device=device)
        bad_total = torch.zeros((), device=device)
        started = time.monotonic()
        start_elapsed = self.elapsed
        interval_start, interval_steps = started, 0
        reason = None
        while reason is None:
            if stop_step is not None and self.step >= stop_step:
                reason = "max_steps" if t.max_steps == stop_step else "max_epochs"
                break
            chunk = self.step % self.steps_per_epoch
            if chunk == 0 or self.hidden is None:
                self.hidden = model.init_hidden(self.streams.rows, device)  # streams wrapped

            if t.decay_steps:
                frac = self.step / t.decay_steps
            elif stop_step is not None:
                frac = self.step / stop_step
            elif max_seconds:
                frac = (time.monotonic() - started) / max_seconds
            else:
                frac = None
            lr = learning_rate(self.step, t, frac)
            for group in opt.param_groups:
                group["lr"] = lr

            idx, targets = self.streams.batch(chunk)  # (B, T) views
            with autocast(device, self.amp_dtype):
                logits, hidden = self.forward(idx, self.hidden)  # (B, T, V)
                loss = F.cross_entropy(logits.reshape(-1, V).float(), targets.reshape(-1).long())
            opt.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
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
            self.hidden = tuple(torch.where(bad, 0.0, h) for h in hidden_tensors(detach_hidden(hidden)))
            self.hidden = hidden_from_tensors(list(self.hidden), self.cfg.model.cell)
            loss_sum += torch.where(bad, 0.0, loss)
            good += ~bad
            bad_run.add_(bad).mul_(bad)
            bad_total += bad
            self.step += 1
            interval_steps += 1
            progress.step()

            now = time.monotonic()
            self.elapsed = start_elapsed + (now - started)
            if self.step % t.log_every == 0:
                # One read of the device per interval; under DDP the mean over all ranks.
                totals = distributed.all_reduce_sum(self.dist, torch.stack([loss_sum, good]))
                n_good, consecutive = float(totals[1]), int(bad_run.item())
                self.skipped = int(bad_total.item())
                train_loss = float(totals[0]) / n_good if n_good else math.nan
                speed = interval_steps * rows_T / max(now - interval_start, 1e-9)
                self.log({"step": self.step, "epoch": self.step / self.steps_per_epoch,
                          "train_loss": train_loss, "lr": lr, "chars_per_s": round(speed, 1),
                          "elapsed": round(self.elapsed, 3), "skipped": self.skipped})
                left = _time_left(self.step, stop_step, speed / rows_T,
                                  max_seconds - (now - started) if max_seconds else None)
                progress.report(self.step, train_loss,
                                None if self.last_val_loss is None else self.last_val_loss / LN2,
                                speed, self.elapsed, left)
                loss_sum.zero_(), good.zero_()
                interval_start, interval_steps = now, 0
                if consecutive >= t.max_bad_steps:
                    progress.write(
                        f"stopping: {consecutive} steps in a row had a non-finite loss or "
                        f"gradient (skipped, weights untouched); try a lower --lr "
                        f"(now {t.lr:g}) or --grad-clip; last.pt is left as it was")
                    return "diverged"

            paused = now
            if self.step % t.eval_every == 0:
                self._evaluate_and_save(progress)
            if t.save_every and self.step % t.save_every == 0:
                self._save_periodic()
            now = time.monotonic()
            interval_start += now - paused  # chars/s is training speed: evals and saves apart

            if max_seconds and now - started >= max_seconds:
                reason = "max_time"
            check_signal = not self.dist.enabled or self.step % t.log_every == 0
            if check_signal and distributed.any_rank(self.dist, stop.signal is not None, device):
                reason = "interrupted"

        if reason == "interrupted":
            progress.write(f"interrupted at step {self.step}: saving last.pt")
            self.save("last.pt")
        elif final_eval and self.last_eval_step != self.step:
            self._evaluate_and_save(progress)
        return reason

    def _evaluate_and_save(self, progress) -> None:
        loss, improved = self.evaluate()
        progress.write(f"step {self.step} | val loss {loss:.4f} nats/char, "
                       f"{loss / LN2:.4f} bpc" + (" (best)" if improved else ""))
        self.save(*(("best.pt", "last.pt") if improved else ("last.pt",)))
        if self.cfg.train.keep and not self.cfg.train.save_every:
            self._save_periodic()

    def _save_periodic(self) -> None:
        if self.cfg.train.keep == 0:
            return
        self.save(f"step-{self.step:08d}.pt")
        if self.main and self.run_dir is not None:
            prune_periodic(self.run_dir, self.cfg.train.keep)


def skip_or_step(opt: torch.optim.Optimizer, bad: torch.Tensor, fused: bool) -> None:
    """The optimizer step, or none at all where `bad` (a 0-d bool tensor) is set: the
    weights and the optimizer's moments and step count stay as they were."""
    if fused:
        # The fused kernels take found_inf and skip the whole update on the device, with no
        # host synchronisation.
        opt.found_inf = bad.float()
        opt.step()
    elif not bad.item():
        # The other implementations assert that found_inf is unset; for them the decision
        # costs one read of the device per step.
        opt.step()


def _time_left(step, stop_step, steps_per_s, seconds_left):
    options = []
    if stop_step is not None and steps_per_s > 0:
        options.append((stop_step - step) / steps_per_s)
    if seconds_left is not None:
        options.append(max(seconds_left, 0.0))
    return min(options) if options else None


# ----------------------------------------------------------------------------------------


def train(cfg: Config, data: PreparedData, runs_dir: str | Path = "runs",
          name: str | None = None, resume_state: dict | None = None,
          resume_dir: Path | None = None, echo=print, progress: bool = True,
          resident: bool | None = None,
          init: tuple[Path, dict, Vocab] | None = None,
          fused: bool | None = None) -> TrainResult:
    """Train a model on `data`; writes runs_dir/<name>/ (or continues `resume_dir`)."""
    dist = distributed.from_env()
    # Everything that can reject the input (device, data, checkpoint) runs before the run
    # directory is created, so a refused run leaves nothing behind.
    trainer = Trainer(cfg, data, None, resume_state, echo, progress, resident, init, fused)
    run_dir, finished = None, False
    try:
        if dist.is_main:
            run_dir = resume_dir if resume_dir is not None else new_run_dir(runs_dir, name, data.name)
        trainer.attach(run_dir)
        result = trainer.run()
        finished = True
    finally:
        # DDP's reducer holds the process group: release it first, so that the group's
        # threads stop here rather than at interpreter exit (where gloo can abort).
        trainer.forward = trainer.model
        gc.collect()
        distributed.shutdown(dist, wait=finished)
    if dist.is_main and run_dir is not None:
        update_latest(Path(runs_dir) if resume_dir is None else resume_dir.parent, run_dir)
    return result


def resume(run_dir: str | Path, overrides: dict[str, dict], data: PreparedData | None = None,
           **kwargs) -> TrainResult:
    """Continue the run in `run_dir` from its last.pt."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"--resume {run_dir}: not a run directory")
    state = load_checkpoint(run_dir / "last.pt")
    cfg = resume_config(config_of(state), overrides)
    if data is None:
        root = Path(state.get("data", {}).get("root", ""))
        if not (root / "meta.json").exists():
            raise DataError(f"--resume: the run's data directory {root} is gone; pass the "
                            f"corpus or prepared directory again")
        data = PreparedData(root)
    if data.vocab.chars != state["vocab"]["chars"]:
        raise CheckpointError("--resume: the corpus's vocabulary differs from the checkpoint's")
    return train(cfg, data, resume_state=state, resume_dir=run_dir, **kwargs)
