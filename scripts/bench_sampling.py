"""Row 3 of scripts/bench.py: sampling speed against the plain per-character model call,
streaming, and the CUDA graph. Run through bench.py (`--rows 3`).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from bench_quality import quiet

from charrnn.core.checkpoint import load_checkpoint, save_checkpoint
from charrnn.core.config_files import load_config
from charrnn.core.model import CharRNN
from charrnn.inference.sample import Sampler, sample_text
from charrnn.inference.stepper import ReferenceStepper, Stepper
from charrnn.inference.trained import model_from_checkpoint
from charrnn.training.trainer import Trainer


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that a clock read after it measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    rounds = 4 if quick else 10
    gpu = device.type == "cuda"
    stepper = Stepper(model)
    reference = ReferenceStepper(model)
    steppers = {"kernel": stepper, "ref": reference}
    if not gpu:  # where oneDNN is an option: the same step with every product through BLAS
        steppers["blas"] = Stepper(model)
        steppers["blas"].onednn = False
    with torch.inference_mode():
        for s in steppers.values():
            s.load(model.init_hidden(1))
    kernel_step = stepper.step
    if gpu:
        kernel_step = cuda_graph(stepper.step, device)  # the fastest form of the kernel there

    def kernel_rate(step, n):
        with torch.inference_mode():
            sync(device)
            t0 = time.perf_counter()
            for _ in range(n):
                step()
            sync(device)
            return n / (time.perf_counter() - t0)

    def sampler_rate(n, num_samples=1, **kwargs):
        """Characters per second after the first piece (set-up and prime: the TTFC row)."""
        sampler = Sampler(model, vocab, temperature=1.0, seed=0, device=device, **kwargs)
        pieces = sampler.generate(n, num_samples=num_samples)
        first = len(next(pieces)[0])
        t0 = time.perf_counter()
        for _ in pieces:
            pass
        return (n - first) * num_samples / (time.perf_counter() - t0)

    # Short interleaved rounds, best of each: a burst of machine noise hits one round of one
    # side, not a whole side.
    rates = {k: [] for k in ("kernel", "sampler", *steppers)}
    for _ in range(rounds):
        rates["kernel"].append(kernel_rate(kernel_step, n))
        rates["sampler"].append(sampler_rate(n))
        if "blas" in steppers:
            rates["blas"].append(kernel_rate(steppers["blas"].step, n // 2))
        rates["ref"].append(kernel_rate(reference.step, max(n // 10, 50)))
    kernel, sampler, ref = (max(rates[k]) for k in ("kernel", "sampler", "ref"))
    row("3 sampling", f"single stream, {label}: charrnn sample loop", f"{sampler:,.0f} chars/s",
        "" if gpu else ">= 2,500 chars/s")
    row("", "bare per-step kernel (matrix-vector products" +
        (", one CUDA graph)" if gpu else ", oneDNN)"), f"{kernel:,.0f} chars/s")
    row("", "ratio sample / bare kernel", f"{sampler / kernel:.2f}", ">= 0.9")
    if gpu:
        eager = max(sampler_rate(n, cuda_graph=False) for _ in range(3))
        row("", "the sample loop without the CUDA graph", f"{eager:,.0f} chars/s",
            f"graph {sampler / eager:.1f}x")
    else:
        row("", "the same kernel with BLAS addmv (one core)", f"{max(rates['blas']):,.0f} chars/s")
    row("", f"nn.{shape[2].upper()} called once per character", f"{ref:,.0f} chars/s",
        f"fast path {sampler / ref:.1f}x")
    same = all(sample_text(model, vocab, 300, prime="The ", seed=seed, device=device, **kw)
               == sample_text(model, vocab, 300, prime="The ", seed=seed, device=device,
                              reference=True, **kw)
               for seed in range(3) for kw in ({}, {"temperature": 0.5, "top_k": 10}))
    row("", f"same seed: fast path text == nn.{shape[2].upper()} path text",
        "identical" if same else "DIFFERENT", "identical")
    batched = max(sampler_rate(n // 4, 64) for _ in range(3))
    row("", "--num-samples 64: total chars/s", f"{batched:,.0f} chars/s",
        f"{batched / sampler:.1f}x single stream")
    # Time to first character from a checkpoint as training writes it (optimizer included).
    cfg = load_config(overrides={"model.cell": shape[2], "model.hidden_size": shape[0],
                                 "model.num_layers": shape[1], "train.device": "cpu"})
    trainer = Trainer(cfg, data, echo=quiet, progress=False)
    trainer.model.load_state_dict(model.state_dict())
    path = tmp / "sample-bench.pt"
    save_checkpoint(path, trainer.checkpoint_state())
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
