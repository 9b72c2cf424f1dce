"""The optimizer side of a step: AdamW, the learning-rate schedule as a function of
recorded progress, and a step that a non-finite loss or gradient skips entirely.

    lr = learning_rate(step, cfg.train, run_progress(step, elapsed, cfg.train, stop_step, max_s))
    bad = apply_gradients(optimizer, scaler, grad_clip, loss)  # clipped; skipped if not finite
"""

from __future__ import annotations

import math

import torch


def make_optimizer(model: torch.nn.Module, cfg, fused: bool) -> torch.optim.AdamW:
    """AdamW over every parameter, with the [train] settings (`cfg`)."""
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                             weight_decay=cfg.weight_decay, fused=fused)


def learning_rate(step: int, cfg, progress: float | None) -> float:
    """Linear warm-up, then cosine decay to min_lr over the run (`progress` in [0, 1])."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_decay == "constant" or progress is None:
        return cfg.lr
    progress = min(max(progress, 0.0), 1.0)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


def run_progress(step: int, elapsed: float, cfg, stop_step: int | None,
                 max_seconds: float) -> float | None:
    """How far the run is, in [0, 1], from what the checkpoint records (steps, training
    time): the schedule continues across a resume instead of starting over."""
    if cfg.decay_steps:
        return step / cfg.decay_steps
    if stop_step is not None:
        return step / stop_step
    if max_seconds:
        return elapsed / max_seconds
    return None


def skip_or_step(opt: torch.optim.Optimizer, bad: torch.Tensor) -> None:
    """The optimizer step, or none at all where `bad` (a 0-d bool tensor) is set: the
    weights and the optimizer's moments and step count stay as they were."""
    if opt.defaults.get("fused"):
        # The fused kernels take found_inf and skip the whole update on the device, with no
        # host synchronisation.
        opt.found_inf = bad.float()
        opt.step()
    elif not bad.item():
        # The other implementations assert that found_inf is unset; for them the decision
        # costs one read of the device per step.
        opt.step()


def apply_gradients(opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler, grad_clip: float,
                    loss: torch.Tensor) -> torch.Tensor:
    """Clip and apply the gradients of `loss` (detached) unless it or the gradient is not
    finite; returns that flag, a 0-d bool tensor on the device (no host read)."""
    params = [p for group in opt.param_groups for p in group["params"]]
    if scaler.is_enabled():
        scaler.unscale_(opt)
    if grad_clip > 0:
        # Clipping by global norm keeps one exploding chunk from wrecking the weights.
        norm = torch.nn.utils.clip_grad_norm_(params, grad_clip, foreach=True)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in params], foreach=True)
    if scaler.is_enabled():
        bad = ~torch.isfinite(loss)  # inf gradients are the scaler's business
        scaler.step(opt)
        scaler.update()
    else:
        bad = ~(torch.isfinite(loss) & torch.isfinite(norm))
        skip_or_step(opt, bad)
    return bad
