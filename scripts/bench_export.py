"""Single-stream sampling speed of an exported model in onnxruntime next to charrnn's own
Sampler (the written-out Stepper), for the same model in the same run, and the file's size.

    python scripts/bench_export.py                        # 2x256 GRU (the cpu preset's shape)
    python scripts/bench_export.py runs/latest            # a trained model
    python scripts/bench_export.py --cell lstm --hidden-size 512 --length 4000

The onnxruntime side is the loop of examples/onnx_sample.py (one session call per
character, state fed back, a numpy draw); the charrnn side is `Sampler.generate`, as
`charrnn sample` runs it. Both draw at temperature 1 from a blank start. Short rounds
alternate between the two and the best round of each counts, so a burst of load from
elsewhere on the machine hits one round of one side rather than a whole side. Both sides
get the same number of threads (torch's, unless --threads).
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from charrnn.core.checkpoint import load_checkpoint
from charrnn.core.model import CharRNN, describe_model
from charrnn.core.runs import find_checkpoint
from charrnn.corpus.text import TextOptions
from charrnn.corpus.vocab import Vocab
from charrnn.export import export_onnx
from charrnn.export.verify import session_for
from charrnn.inference.sample import Sampler
from charrnn.inference.trained import model_from_checkpoint

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "onnx_sample.py"
# 65 characters: the size of tiny Shakespeare's vocabulary.
DEFAULT_CHARS = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def processor() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_example():
    spec = importlib.util.spec_from_file_location("onnx_sample", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def the_model(args) -> tuple[CharRNN, Vocab, TextOptions, dict | None, str]:
    if args.target:
        path = find_checkpoint(args.target)
        state = load_checkpoint(path)
        return (*model_from_checkpoint(state), state, str(path))
    torch.manual_seed(0)  # the speed does not depend on the weights
    vocab = Vocab(list(DEFAULT_CHARS))
    model = CharRNN(len(vocab), args.hidden_size, args.num_layers, args.cell).eval()
    return model, vocab, TextOptions(), None, "random weights"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target", nargs="?", help="checkpoint or run directory (default: random)")
    ap.add_argument("--cell", default="gru", choices=("lstm", "gru", "rnn"))
    ap.add_argument("--hidden-size", type=int, default=256)
    ap.add_argument("--num-layers", type=int, default=2)
    ap.add_argument("--length", type=int, default=1000, help="characters per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="0 = torch's default")
    args = ap.parse_args()
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    model, vocab, options, state, source = the_model(args)
    example = load_example()

    with tempfile.TemporaryDirectory() as tmp:
        exported = export_onnx(model, vocab, options, Path(tmp) / "model.onnx", state=state)
        session = session_for(str(exported.path), threads=threads)
        meta = example.load(str(exported.path))[1]

        def onnx_rate() -> float:
            rng = np.random.default_rng(0)
            t0 = time.perf_counter()
            n = sum(1 for _ in example.generate(session, meta, "", args.length, 1.0, 0, rng))
            return n / (time.perf_counter() - t0)

        def torch_rate() -> float:
            sampler = Sampler(model, vocab, temperature=1.0, seed=0)
            t0 = time.perf_counter()
            n = sum(len(p[0]) for p in sampler.generate(args.length))
            return n / (time.perf_counter() - t0)

        onnx_rate(), torch_rate()  # warm-up: first-call allocations, oneDNN's self-check
        rates = {"onnx": [], "torch": []}
        for _ in range(args.rounds):
            rates["onnx"].append(onnx_rate())
            rates["torch"].append(torch_rate())

    best = {k: max(v) for k, v in rates.items()}
    print(f"model: {describe_model(model)} over {len(vocab)} characters ({source}); "
          f"file {exported.size / 1e6:.2f} MB, max |logit diff| {exported.max_diff:.1e}")
    print(f"processor: {processor()}; threads: {threads}; torch {torch.__version__}, "
          f"onnxruntime {ort.__version__}; best of {args.rounds} rounds of {args.length:,} "
          f"characters")
    print()
    print("| sampler (1 stream, temperature 1) | chars/s | vs charrnn |")
    print("|---|---:|---:|")
    print(f"| charrnn Sampler (Stepper) | {best['torch']:,.0f} | 1.00 |")
    print(f"| onnxruntime, examples/onnx_sample.py loop | {best['onnx']:,.0f} | "
          f"{best['onnx'] / best['torch']:.2f} |")


if __name__ == "__main__":
    main()
