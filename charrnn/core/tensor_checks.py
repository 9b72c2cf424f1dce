"""Checks of the tensors in a file we read against what they must fit, before torch sees
them: a damaged or foreign checkpoint is refused with one line naming the part, never a
crash inside a kernel (an AdamW moment of the wrong shape segfaults the fused step)."""

from __future__ import annotations

import math

import torch

from .errors import CheckpointError


def check_weights(weights, model: torch.nn.Module, finite: bool = False) -> None:
    """Every weight the model has, with its shape and a floating dtype (and finite values
    with `finite`); raises CheckpointError naming the first that is wrong."""
    check_tensors(weights, dict(model.state_dict()), "weights", finite)


def check_tensors(found, expected: dict, what: str, finite: bool = True) -> None:
    if not isinstance(found, dict):
        raise CheckpointError(f"checkpoint {what} are not a table of tensors")
    if set(found) != set(expected):
        extra, missing = sorted(set(found) - set(expected)), sorted(set(expected) - set(found))
        raise CheckpointError(f"checkpoint {what} do not fit the model: "
                              + (f"missing {missing[0]}" if missing else f"unexpected {extra[0]}"))
    for key, want in expected.items():
        got = found[key]
        if not isinstance(got, torch.Tensor) or got.shape != want.shape:
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise CheckpointError(f"checkpoint {what} {key} has shape {shape}, the model "
                                  f"needs {tuple(want.shape)}")
        if not got.dtype.is_floating_point:
            raise CheckpointError(f"checkpoint {what} {key} is {got.dtype}, not floating point")
        if finite and not bool(torch.isfinite(got).all()):
            raise CheckpointError(f"checkpoint {what} {key} holds NaN or infinite values")


def check_optimizer(saved, optimizer: torch.optim.Optimizer) -> None:
    """An AdamW state for exactly these parameters: groups, moments of each parameter's
    shape, finite step counts (a wrong shape reaches the fused kernel as a crash)."""
    fresh = optimizer.state_dict()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if not isinstance(saved, dict) or not isinstance(saved.get("param_groups"), list) \
            or not isinstance(saved.get("state"), dict):
        raise CheckpointError("checkpoint optimizer state is not an optimizer state")
    if len(saved["param_groups"]) != len(fresh["param_groups"]):
        raise CheckpointError("checkpoint optimizer state has the wrong parameter groups")
    for got, want in zip(saved["param_groups"], fresh["param_groups"]):
        ids = got.get("params") if isinstance(got, dict) else None
        if not isinstance(ids, list) or not all(type(i) is int for i in ids) \
                or ids != want["params"]:
            raise CheckpointError("checkpoint optimizer state has the wrong parameter groups")
        for key, value in want.items():
            if key != "params" and not _same_kind(got.get(key, value), value):
                raise CheckpointError(f"checkpoint optimizer setting {key} is "
                                      f"{got.get(key)!r}")
    for index, entry in saved["state"].items():
        if type(index) is not int or not 0 <= index < len(params) or not isinstance(entry, dict):
            raise CheckpointError(f"checkpoint optimizer state has an entry {index!r} for no parameter")
        shape = params[index].shape
        check_tensors({k: entry.get(k) for k in ("exp_avg", "exp_avg_sq")},
                      {"exp_avg": params[index], "exp_avg_sq": params[index]},
                      f"optimizer state of parameter {index}")
        step = entry.get("step")
        if not isinstance(step, torch.Tensor) or step.numel() != 1 or not bool(
                torch.isfinite(step).all()) or float(step) < 0:
            raise CheckpointError(f"checkpoint optimizer step count of parameter {index} "
                                  f"(shape {tuple(shape)}) is damaged")


def _same_kind(got, want) -> bool:
    """An optimizer setting of the kind a fresh optimizer has (numbers finite)."""
    if isinstance(want, bool) or want is None:
        return got is None or isinstance(got, bool)
    if isinstance(want, (int, float)):
        return isinstance(got, (int, float)) and not isinstance(got, bool) and math.isfinite(got)
    if isinstance(want, tuple):
        return isinstance(got, tuple) and len(got) == len(want) and all(
            _same_kind(g, w) for g, w in zip(got, want))
    return type(got) is type(want)


def check_hidden(hidden, cell: str, num_layers: int, batch_size: int, hidden_size: int) -> None:
    if hidden is None:
        return
    want = (num_layers, batch_size, hidden_size)
    count = 2 if cell == "lstm" else 1  # (h, c) for an LSTM, h otherwise
    if not isinstance(hidden, list) or len(hidden) != count or not all(
            isinstance(h, torch.Tensor) and h.shape == want and h.dtype.is_floating_point
            and bool(torch.isfinite(h).all()) for h in hidden):
        raise CheckpointError(f"checkpoint hidden state is not {count} finite tensor(s) "
                              f"of shape {want}")
