"""Row 3 of scripts/bench.py: sampling speed against the plain per-character model call,
against onnxruntime on the same model exported, streaming, the CUDA graph, and the batched
step (fp32 and bf16 products) that serve runs. Run through bench.py (`--rows 3`).
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import torch
from bench_export import OnnxSide, have_onnxruntime
from bench_quality import quiet

from charrnn.core.checkpoint import load_checkpoint, save_checkpoint
from charrnn.core.config_files import load_config
from charrnn.core.cpu import cpu_budget
from charrnn.core.model import CharRNN
from charrnn.core.precision import native_bf16
from charrnn.inference.sample import Sampler, sample_text
from charrnn.inference.stepper import ReferenceStepper, Stepper
from charrnn.inference.trained import model_from_checkpoint
from charrnn.training.trainer import Trainer


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that a clock read after it measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_rate(step, n, device=torch.device("cpu")) -> float:
    """Calls of `step` per second over n calls."""
    with torch.inference_mode():
        sync(device)
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        sync(device)
        return n / (time.perf_counter() - t0)


def sampler_rate(model, vocab, device, n, num_samples=1, **kwargs) -> float:
    """Characters per second after the first piece (set-up and prime: the TTFC row)."""
    sampler = Sampler(model, vocab, temperature=1.0, seed=0, device=device, **kwargs)
    pieces = sampler.generate(n, num_samples=num_samples)
    first = len(next(pieces)[0])
    t0 = time.perf_counter()
    for _ in pieces:
        pass
    return (n - first) * num_samples / (time.perf_counter() - t0)


def sampling_rows(row, data, quick, device, tmp: Path):
    vocab = data.vocab
    torch.manual_seed(0)
    if device.type == "cuda":
        m = load_config("configs/gpu.toml").model
        shape = (m.hidden_size, m.num_layers, m.cell)
    else:
        shape = (512, 2, "lstm")
    label = f"{shape[1]}x{shape[0]} {shape[2].upper()}"
    model = CharRNN(len(vocab), *shape).to(device).eval()
    n = 300 if quick else 1000
    counts = sorted({cpu_budget().default_threads(), torch.get_num_threads()})
    sampler = kernel_rows(row, model, vocab, label, device, n, 4 if quick else 10)
    torch.manual_seed(0)
    gru = CharRNN(len(vocab), 512, 2, "gru").eval()  # the model docs/benchmarks.md compares
    if device.type == "cpu" and not have_onnxruntime():
        row("", "against onnxruntime", "skipped: onnxruntime not installed "
            "(pip install -e '.[export]')")
    elif device.type == "cpu":
        onnx_rows(row, gru, vocab, "2x512 GRU", counts, 400 if quick else 1000,
                  3 if quick else 7)
        onnx_rows(row, model, vocab, label, counts, 300 if quick else 1000, 3 if quick else 5)
    same = all(sample_text(model, vocab, 300, prime="The ", seed=seed, device=device, **kw)
               == sample_text(model, vocab, 300, prime="The ", seed=seed, device=device,
                              reference=True, **kw)
               for seed in range(3) for kw in ({}, {"temperature": 0.5, "top_k": 10}))
    row("", f"same seed: fast path text == nn.{shape[2].upper()} path text",
        "identical" if same else "DIFFERENT", "identical")
    batched = max(sampler_rate(model, vocab, device, n // 4, 64) for _ in range(3))
    row("", "--num-samples 64: total chars/s", f"{batched:,.0f} chars/s",
        f"{batched / sampler:.1f}x single stream")
    first_character_row(row, data, model, shape, device, tmp)
    if device.type == "cpu":
        batched_step_rows(row, gru, "2x512 GRU", 50 if quick else 200, 3 if quick else 5)


def kernel_rows(row, model, vocab, label, device, n, rounds) -> float:
    """The sample loop against the bare step and the plain model call; returns its chars/s."""
    gpu = device.type == "cuda"
    stepper, reference = Stepper(model), ReferenceStepper(model)
    with torch.inference_mode():
        for s in (stepper, reference):
            s.load(model.init_hidden(1))
    kernel_step = cuda_graph(stepper.step, device) if gpu else stepper.step
    # Short interleaved rounds, best of each: a burst of machine noise hits one round of one
    # side, not a whole side.
    rates = {k: [] for k in ("kernel", "sampler", "ref")}
    for _ in range(rounds):
        rates["kernel"].append(step_rate(kernel_step, n, device))
        rates["sampler"].append(sampler_rate(model, vocab, device, n))
        rates["ref"].append(step_rate(reference.step, max(n // 10, 50), device))
    kernel, sampler, ref = (max(rates[k]) for k in ("kernel", "sampler", "ref"))
    threads = f"{torch.get_num_threads()} thread{'s' if torch.get_num_threads() > 1 else ''}"
    row("3 sampling", f"single stream, {label}: charrnn sample loop" +
        ("" if gpu else f" ({threads})"), f"{sampler:,.0f} chars/s", "" if gpu else
        ">= 2,500 chars/s")
    row("", "bare per-step kernel (" + ("one CUDA graph)" if gpu else
        "a fixed list of kernel calls)"), f"{kernel:,.0f} chars/s")
    row("", "ratio sample / bare kernel", f"{sampler / kernel:.2f}", ">= 0.9")
    if gpu:
        eager = max(sampler_rate(model, vocab, device, n, cuda_graph=False) for _ in range(3))
        row("", "the sample loop without the CUDA graph", f"{eager:,.0f} chars/s",
            f"graph {sampler / eager:.1f}x")
    row("", f"nn.{label.split()[-1]} called once per character", f"{ref:,.0f} chars/s",
        f"fast path {sampler / ref:.1f}x")
    return sampler


def onnx_rows(row, model, vocab, label, counts, n, rounds) -> None:
    """charrnn's sample loop against onnxruntime's on the same model exported, at each
    thread count (charrnn sample's default and bench.py's), each side alike."""
    onnx = OnnxSide(model, vocab)
    before = torch.get_num_threads()
    wait = os.environ.get("OMP_WAIT_POLICY", "libgomp's default").lower()
    for threads in counts:
        torch.set_num_threads(threads)
        onnx.rate(n // 4, threads), sampler_rate(model, vocab, "cpu", n // 4)  # warm-up
        ours, theirs = [], []
        for _ in range(rounds):
            theirs.append(onnx.rate(n, threads))
            ours.append(sampler_rate(model, vocab, "cpu", n))
        ours, theirs = statistics.median(ours), statistics.median(theirs)
        row("", f"{label}, 1 stream, {threads} thread(s) each, OpenMP wait {wait}: charrnn "
            f"sample / onnxruntime (examples/onnx_sample.py loop), median of {rounds}",
            f"{ours:,.0f} / {theirs:,.0f} chars/s = {ours / theirs:.2f}x", ">= 1.0x")
    torch.set_num_threads(before)


def batched_step_rows(row, model, label, n, rounds) -> None:
    """The step serve runs for 32 rows against 1, with fp32 and with bf16 products.

    Each figure is rows x steps/s (characters per second); `ceiling` is what 32 rows would
    give if they cost what one row does (32 x the fp32 one-row rate)."""
    steppers = {(p, B): Stepper(model, B, precision=p) for p in ("fp32", "bf16") for B in (1, 32)}
    rates = {k: [] for k in steppers}
    for _ in range(rounds):
        for (p, B), s in steppers.items():
            rates[p, B].append(B * step_rate(s.step, n if B == 1 else max(n // 4, 10)))
    best = {k: max(v) for k, v in rates.items()}
    ceiling = 32 * best["fp32", 1]
    units = "bf16 units" if native_bf16(torch.device("cpu")) else "no bf16 units: emulated"
    for p in ("fp32", "bf16"):
        row("", f"{label} step, {p} products: 1 row / 32 rows, chars/s; 32 rows / fp32 "
            f"ceiling (32 x one row)" + (f" (this CPU: {units})" if p == "bf16" else ""),
            f"{best[p, 1]:,.0f} / {best[p, 32]:,.0f} = {best[p, 32] / ceiling:.2g}")
    row("", "bf16 / fp32 at 32 rows", f"{best['bf16', 32] / best['fp32', 32]:.2g}x",
        ">= 1.5x where the CPU has bf16 units")


def first_character_row(row, data, model, shape, device, tmp: Path) -> None:
    """Time to first character from a checkpoint as training writes it (optimizer included)."""
    cfg = load_config(overrides={"model.cell": shape[2], "model.hidden_size": shape[0],
                                 "model.num_layers": shape[1], "train.device": "cpu"})
    trainer = Trainer(cfg, data, echo=quiet, progress=False)
    trainer.model.load_state_dict(model.state_dict())
    path = tmp / "sample-bench.pt"
    save_checkpoint(path, trainer.checkpoint_state())
    vocab = data.vocab
    prime = "".join(vocab.chars[i % len(vocab)] for i in range(10_000))
    times = []
    for _ in range(3):
        sync(device)
        t0 = time.perf_counter()
        loaded, loaded_vocab, _ = model_from_checkpoint(load_checkpoint(path))
        sampler = Sampler(loaded, loaded_vocab, seed=0, device=device)
        next(iter(sampler.generate(1, prime=prime)))
        times.append(time.perf_counter() - t0)
    row("", "time to first character: load checkpoint, 10,000-char prime",
        f"{min(times) * 1000:,.0f} ms")


def cuda_graph(fn, device):
    """fn captured as a CUDA graph (after a warm-up on a side stream); its replay."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side), torch.inference_mode():
        for _ in range(3):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.inference_mode():
        fn()
    return graph.replay


# ----------------------------------------------------------------------------------------
# 4. prepare
