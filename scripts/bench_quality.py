"""Rows of scripts/bench.py that train for minutes: quality in a time budget, and the
precision settings compared at equal steps. Run through bench.py (`--rows 9`, `--rows 10`).

    python scripts/bench.py --device cuda --rows 9     # configs/gpu.toml, 5 minutes
    python scripts/bench.py --device cuda --rows 10    # fp32 / bf16 / fp16 at equal steps
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from charrnn.core.checkpoint import load_checkpoint
from charrnn.core.config_files import load_config
from charrnn.core.errors import CharRNNError
from charrnn.core.precision import resolve_precision
from charrnn.corpus.prepare import prepare
from charrnn.corpus.prepared import PreparedData
from charrnn.inference.evaluate import blank_start_loss, evaluate
from charrnn.inference.score import dynamic_score, score_ids
from charrnn.inference.trained import model_from_checkpoint
from charrnn.training.run import train


def quiet(*a, **k):
    pass


def config_for(device: torch.device):
    """gpu.toml on a GPU, cpu.toml elsewhere: the shipped preset for the device."""
    return "configs/gpu.toml" if device.type == "cuda" else "configs/cpu.toml"


def validations(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "val_loss" in r]


def quality_rows(row, data: PreparedData, device: torch.device, tmp: Path, quick: bool):
    """The preset for this device on tiny Shakespeare for 5 minutes: best validation loss
    and the curve (validation loss against wall time)."""
    preset = config_for(device)
    budget = "1m" if quick else "5m"
    cfg = load_config(preset, {"train.max_time": budget, "train.device": str(device)})
    result = train(cfg, data, runs_dir=tmp / "quality-runs", echo=quiet, progress=False)
    vals = validations(result.run_dir)
    best = min(vals, key=lambda r: r["val_loss"])
    row("9 quality", f"{preset}, {budget} on tiny Shakespeare: best validation loss",
        f"{best['val_loss']:.4f} nats/char at step {best['step']}",
        "<= 1.42" if device.type == "cuda" else "<= 1.60")
    # The curve: at most 8 evaluations, evenly spaced, the first and the last among them.
    shown = [vals[i] for i in sorted({round(k * (len(vals) - 1) / 7) for k in range(8)})]
    row("", "curve: elapsed s / step / validation loss",
        "; ".join(f"{r['elapsed']:.0f}s {r['step']} {r['val_loss']:.3f}" for r in shown))


def precision_rows(row, data: PreparedData, device: torch.device, tmp: Path, quick: bool):
    """Each precision setting for the same steps from the same seed: speed and validation
    loss, and which one `auto` should be (the fastest within 0.01 nats/char of fp32)."""
    preset = config_for(device)
    steps = 150 if quick else 1000
    results, refused = {}, {}
    for setting in ("fp32", "bf16", "fp16"):
        cfg = load_config(preset, {"train.max_time": "", "train.max_steps": steps,
                                   "train.decay_steps": steps, "train.eval_every": steps,
                                   "train.precision": setting, "train.device": str(device)})
        try:
            t0 = time.perf_counter()
            result = train(cfg, data, runs_dir=tmp / "precision-runs", name=setting, echo=quiet,
                           progress=False)
        except CharRNNError as e:
            refused[setting] = str(e)
            continue
        elapsed = time.perf_counter() - t0
        chars = steps * cfg.train.batch_size * cfg.train.seq_len
        results[setting] = (result.last_val_loss, chars / elapsed)
    if "fp32" not in results:
        return
    ref_loss, ref_speed = results["fp32"]
    for k, (setting, (loss, speed)) in enumerate(results.items()):
        row("10 precision" if k == 0 else "",
            f"{preset}, {steps} steps, --precision {setting}: val loss / chars/s (incl. eval)",
            f"{loss:.4f} / {speed:,.0f} = {speed / ref_speed:.2f}x fp32",
            "reference" if setting == "fp32" else f"{loss - ref_loss:+.4f} vs fp32")
    for setting, why in refused.items():
        row("", f"--precision {setting}", f"refused here: {why}")
    cell = load_config(preset).model.cell
    for setting in results:  # what each setting computed in (bf16 recurrent needs cuDNN 9.13+)
        row("", f"--precision {setting}: the plan",
            resolve_precision(setting, device, cell).describe(device))
    eligible = [s for s, (loss, _) in results.items() if loss - ref_loss <= 0.01]
    pick = max(eligible, key=lambda s: results[s][1])
    row("", "fastest setting within 0.01 nats/char of fp32 (what auto should be)", pick)


DYNAMIC_LRS = (3e-4, 1e-3, 3e-3, 1e-2)


def dynamic_rows(row, shared: Path, device: torch.device, tmp: Path, quick: bool):
    """Dynamic evaluation on tiny Shakespeare's last 10% (a test split nothing trained or
    selected on): a cpu.toml model trained for its 5 minutes, scored statically and
    dynamically at several learning rates."""

    prepare([str(shared / "tinyshakespeare.txt")], tmp / "ts-test", val_frac=0.1, test_frac=0.1)
    data = PreparedData(tmp / "ts-test")
    budget = "1m" if quick else "5m"
    cfg = load_config("configs/cpu.toml", {"train.max_time": budget, "train.device": str(device)})
    result = train(cfg, data, runs_dir=tmp / "dynamic-runs", echo=quiet, progress=False)
    model, _, _ = model_from_checkpoint(load_checkpoint(result.run_dir / "best.pt"))
    test = data.split("test")
    t = cfg.train
    static = score_ids(model, test, t.eval_batch_size, t.seq_len, device)
    one_stream = score_ids(model, test, 1, t.seq_len, device)
    row("11 dynamic evaluation", f"cpu.toml, {budget}, val loss {result.best_val_loss:.3f}; "
        f"test split ({static.chars:,} chars): static, {t.eval_batch_size} / 1 streams",
        f"{static.nats:.4f} / {one_stream.nats:.4f} nats/char ({one_stream.bpc:.3f} bpc)")
    for lr in DYNAMIC_LRS[:2] if quick else DYNAMIC_LRS:
        dyn = dynamic_score(model, test, t.seq_len, device, lr)
        row("", f"dynamic, SGD lr {lr:g}: nats/char (bits/char), time",
            f"{dyn.nats:.4f} ({dyn.bpc:.3f}), {dyn.seconds:.0f} s",
            f"{dyn.nats - one_stream.nats:+.4f} vs static")


RESET_EVERY = (0, 4, 8, 16, 32)
LICENCE_CHARS = 2_500_000


def licence_corpus(out: Path) -> Path | None:
    """The licence and copyright texts this machine has (/usr/share/doc/*/copyright and
    /usr/share/common-licenses), up to 2.5 million characters: the kind of corpus (223
    distinct characters, long repeated passages) on which a model trained without blank
    starts fails from a blank state. None where the machine has none."""
    doc = Path("/usr/share/doc")
    paths = sorted(doc.glob("*/copyright")) + sorted(Path("/usr/share/common-licenses").glob("*"))
    parts, size = [], 0
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        parts.append(text)
        size += len(text)
        if size >= LICENCE_CHARS:
            break
    if size < LICENCE_CHARS // 2:
        return None
    out.write_text("".join(parts)[:LICENCE_CHARS], encoding="utf-8")
    return out


def blank_start_rows(row, shared: Path, device: torch.device, tmp: Path, quick: bool):
    """train.reset_every swept on corpora whose epoch is longer than the run: this machine's
    licence texts (where a run without blank starts fails) and War and Peace. For each
    setting, the validation loss scored with context, the loss of the 200 characters after a
    blank start (256 points of the validation text), and how far the validation loss rose
    above its best during the run."""
    corpora = [c for c in (licence_corpus(tmp / "licences.txt"),
                           shared / "war_and_peace.txt") if c is not None]
    for corpus in corpora[:1] if quick else corpora:
        out = tmp / f"blank-start-{corpus.stem}"
        prepare([str(corpus)], out, val_frac=0.1)
        for k, K in enumerate(RESET_EVERY[:3] if quick else RESET_EVERY):
            carried, blank, rise, steps = blank_start_run(PreparedData(out), K, device, tmp,
                                                          200 if quick else 1000)
            row("12 blank starts" if k == 0 and corpus == corpora[0] else "",
                f"{corpus.name}, cpu.toml {steps} steps, reset_every {K}: val loss (context) / "
                f"first 200 after a blank start / largest rise during the run",
                f"{carried:.4f} / {blank:.4f} ({blank - carried:+.3f}) / {rise:.3f}",
                "blank within 0.15, rise <= 0.05")


def blank_start_run(data: PreparedData, K: int, device: torch.device, tmp: Path, steps: int):
    """One run of `steps` cpu.toml steps with reset_every K, evaluated every steps/10:
    (val loss with context, loss after a blank start, largest rise, steps)."""

    eval_chars = 100_000
    cfg = load_config("configs/cpu.toml", {
        "train.max_time": "", "train.max_steps": steps, "train.decay_steps": steps,
        "train.eval_every": steps // 10, "train.reset_every": K,
        "train.eval_chars": eval_chars, "train.device": str(device)})
    result = train(cfg, data, runs_dir=tmp / "blank-start-runs", name=f"{data.name}-k{K}",
                   echo=quiet, progress=False)
    model, _, _ = model_from_checkpoint(load_checkpoint(result.run_dir / "last.pt"))
    model.to(device)
    val = data.split("val")[:eval_chars]
    carried = evaluate(model, val, 32, cfg.train.seq_len, device)
    blank = blank_start_loss(model, val, device, length=200, starts=256)
    losses = [r["val_loss"] for r in validations(result.run_dir)]
    rise = max(loss - min(losses[:i + 1]) for i, loss in enumerate(losses))
    return carried, blank, rise, steps
