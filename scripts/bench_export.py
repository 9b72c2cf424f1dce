"""Single-stream sampling speed of an exported model in onnxruntime next to charrnn's own
Sampler (the written-out Stepper), for the same model in the same run, and the file's size.

    python scripts/bench_export.py                        # 2x256 GRU (the cpu preset's shape)
    python scripts/bench_export.py --hidden-size 512 --threads 1,2    # the 2x512 GRU, both
    python scripts/bench_export.py runs/latest            # a trained model
    python scripts/bench_export.py --cell lstm --hidden-size 512 --length 4000
    python scripts/bench_export.py --hidden-size 512 --threads 1,2 --before e032ff3

The onnxruntime side is the loop of examples/onnx_sample.py (one session call per
character, state fed back, a numpy draw); the charrnn side is `Sampler.generate`, as
`charrnn sample` runs it. Both draw at temperature 1 from a blank start. Short rounds
alternate between the two and the median round of each counts, so a burst of load from
elsewhere on the machine hits one round of one side rather than a whole side. Both sides
get the same number of threads (each count of --threads in turn; torch's default count
unless given), and OpenMP's threads wait passively, as under the charrnn command.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from charrnn.core.cpu import quiet_openmp

if __name__ == "__main__":
    quiet_openmp()  # before torch loads, as the charrnn command does (not when imported)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from charrnn.core.checkpoint import load_checkpoint  # noqa: E402
from charrnn.core.runs import find_checkpoint  # noqa: E402
from charrnn.inference.trained import model_from_checkpoint  # noqa: E402
from charrnn.core.model import CharRNN, describe_model  # noqa: E402
from charrnn.corpus.text import TextOptions  # noqa: E402
from charrnn.corpus.vocab import Vocab  # noqa: E402
from charrnn.inference.sample import Sampler  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "onnx_sample.py"
# 65 characters: the size of tiny Shakespeare's vocabulary.
DEFAULT_CHARS = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def have_onnxruntime() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None and \
        importlib.util.find_spec("onnx") is not None


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


class OnnxSide:
    """The model exported to a temporary ONNX file and sampled by examples/onnx_sample.py's
    loop in onnxruntime; `rate(length, threads)` gives its chars/s."""

    def __init__(self, model: CharRNN, vocab: Vocab, options=None, state=None):
        from charrnn.export import export_onnx

        self.example = load_example()
        with tempfile.TemporaryDirectory() as tmp:
            self.exported = export_onnx(model, vocab, options or TextOptions(),
                                        Path(tmp) / "model.onnx", state=state)
            self.data = self.exported.path.read_bytes()
        self.sessions = {}

    def session(self, threads: int):
        from charrnn.export.verify import session_for

        if threads not in self.sessions:
            self.sessions[threads] = session_for(self.data, threads=threads)
        return self.sessions[threads]

    def rate(self, length: int, threads: int) -> float:
        session = self.session(threads)
        meta = json.loads(session.get_modelmeta().custom_metadata_map["charrnn"])
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()
        n = sum(1 for _ in self.example.generate(session, meta, "", length, 1.0, 0, rng))
        return n / (time.perf_counter() - t0)


def sampler_rate(model: CharRNN, vocab: Vocab, length: int, stepper=None) -> float:
    """chars/s of `Sampler.generate` for one stream, set-up and prime included; with
    `stepper`, that class in place of the Stepper."""
    with stepper_swapped(stepper):
        sampler = Sampler(model, vocab, temperature=1.0, seed=0)
        t0 = time.perf_counter()
        n = sum(len(p[0]) for p in sampler.generate(length))
    return n / (time.perf_counter() - t0)


def stepper_at(rev: str):
    """The Stepper class of charrnn/inference/stepper.py at git revision `rev` (a revision
    where that file stands alone), imported beside today's."""
    source = subprocess.run(["git", "show", f"{rev}:charrnn/inference/stepper.py"],
                            cwd=ROOT, check=True, capture_output=True, text=True).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("charrnn.inference._stepper_before", f.name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    Path(f.name).unlink()
    return module.Stepper


@contextlib.contextmanager
def stepper_swapped(cls):
    """Every loaded charrnn module that names today's Stepper names `cls` instead."""
    from charrnn.inference.stepper import Stepper

    users = [m for name, m in list(sys.modules.items())
             if name.startswith("charrnn.") and getattr(m, "Stepper", None) is Stepper]
    for m in users if cls else ():
        m.Stepper = cls
    try:
        yield
    finally:
        for m in users:
            m.Stepper = Stepper


def side_by_side(model, vocab, onnx: OnnxSide, threads: int, length: int, rounds: int,
                 before=None) -> dict:
    """Median chars/s of each side over interleaved rounds at `threads`: "onnx", "torch"
    and, given a Stepper class `before`, "before"."""
    torch.set_num_threads(threads)
    sides = {"onnx": lambda n: onnx.rate(n, threads),
             "torch": lambda n: sampler_rate(model, vocab, n)}
    if before is not None:
        sides["before"] = lambda n: sampler_rate(model, vocab, n, before)
    for rate in sides.values():
        rate(length // 4)  # warm-up: first-call allocations
    rates = {k: [] for k in sides}
    for _ in range(rounds):
        for k, rate in sides.items():
            rates[k].append(rate(length))
    return {k: statistics.median(v) for k, v in rates.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target", nargs="?", help="checkpoint or run directory (default: random)")
    ap.add_argument("--cell", default="gru", choices=("lstm", "gru", "rnn"))
    ap.add_argument("--hidden-size", type=int, default=256)
    ap.add_argument("--num-layers", type=int, default=2)
    ap.add_argument("--length", type=int, default=1000, help="characters per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", default="0",
                    help="thread counts, comma-separated (0 = torch's default)")
    ap.add_argument("--before", metavar="REV",
                    help="also time the Sampler with the Stepper of this git revision")
    args = ap.parse_args()
    counts = [int(t) or torch.get_num_threads() for t in args.threads.split(",")]
    model, vocab, options, state, source = the_model(args)
    onnx = OnnxSide(model, vocab, options, state)
    before = stepper_at(args.before) if args.before else None
    results = {t: side_by_side(model, vocab, onnx, t, args.length, args.rounds, before)
               for t in counts}
    report(args, model, vocab, onnx, source, results)


def report(args, model, vocab, onnx: OnnxSide, source: str, results: dict) -> None:
    import onnxruntime as ort

    exported = onnx.exported
    print(f"model: {describe_model(model)} over {len(vocab)} characters ({source}); "
          f"file {exported.size / 1e6:.2f} MB, max |logit diff| {exported.max_diff:.1e}")
    print(f"processor: {processor()}; torch {torch.__version__}, onnxruntime {ort.__version__}; "
          f"median of {args.rounds} interleaved rounds of {args.length:,} characters")
    print()
    wait = os.environ.get("OMP_WAIT_POLICY", "default").lower()
    before = f" | Stepper of {args.before}, chars/s | its ratio" if args.before else ""
    print(f"| threads (each side; OpenMP wait {wait}) | charrnn Sampler, chars/s | onnxruntime "
          f"(examples/onnx_sample.py loop), chars/s | charrnn / onnxruntime{before} |")
    print("|---:|---:|---:|---:" + ("|---:|---:" if args.before else "") + "|")
    for t, r in results.items():
        extra = (f" | {r['before']:,.0f} | {r['before'] / r['onnx']:.2f}"
                 if args.before else "")
        print(f"| {t} | {r['torch']:,.0f} | {r['onnx']:,.0f} | {r['torch'] / r['onnx']:.2f}"
              f"{extra} |")


if __name__ == "__main__":
    main()
