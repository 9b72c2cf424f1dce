"""What `charrnn neurons` finds in several models, as one markdown table: for each built-in
feature the best held-out |r| (the cell chosen on the first half of the text, r measured on
the second), each layer's gate saturation, and the cost of the pass (seconds, characters
per second, and the process's peak resident memory, from wait4's rusage of that process).

    python scripts/bench_neurons.py --case "W&P LSTM 10m" runs/wp-lstm-10m wp_heldout.txt \\
                                    --case "C LSTM 10m" runs/c-lstm-10m c_heldout.txt

Each case runs `charrnn neurons RUN TEXT --json` in its own process, one after another.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

FEATURES = ("quote", "bracket", "depth", "comment", "column", "word_start", "capital")


def run_case(run: str, text: str, extra: list[str]) -> tuple[dict, float, int]:
    """(the JSON report, seconds, peak RSS in bytes) of one `charrnn neurons` process."""
    with tempfile.TemporaryFile() as out:
        start = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "charrnn", "neurons", run, text,
                                 "--json", "-q", *extra], stdout=out)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.monotonic() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            sys.exit(f"charrnn neurons {run} {text} failed ({proc.returncode})")
        out.seek(0)
        report = json.load(out)
    scale = 1 if platform.system() == "Darwin" else 1024  # ru_maxrss: bytes there, KiB here
    return report, seconds, usage.ru_maxrss * scale


def best(report: dict, name: str) -> str:
    feature = next(f for f in report["features"] if f["name"] == name)
    if not feature["best"] or feature["best"][0]["r_heldout"] is None:
        return "n/a"
    c = feature["best"][0]
    return f"{abs(c['r_heldout']):.2f} (L{c['layer']} {c['state']} {c['unit']})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", nargs=3, action="append", required=True,
                        metavar=("NAME", "RUN", "TEXT"))
    parser.add_argument("--extra", default="", help="more flags for charrnn neurons")
    args = parser.parse_args()
    results = []
    for name, run, text in args.case:
        report, seconds, rss = run_case(run, text, args.extra.split())
        results.append((name, report, seconds, rss))
        print(f"{name}: {report['chars']:,} chars in {seconds:.0f} s, peak RSS "
              f"{rss / 2**20:.0f} MiB", file=sys.stderr)
    print("| feature | " + " | ".join(n for n, *_ in results) + " |")
    print("|---|" + "---|" * len(results))
    for feature in FEATURES:
        print(f"| {feature} | " + " | ".join(best(r, feature) for _, r, *_ in results) + " |")
    for layer in (1, 2):
        cells = []
        for _, r, *_ in results:
            rows = [s for s in r["saturation"] if s["layer"] == layer]
            cells.append(f"{rows[0]['saturated']:.2f}" if rows else "n/a")
        print(f"| gates saturated, layer {layer} | " + " | ".join(cells) + " |")
    print("| characters | " + " | ".join(f"{r['chars']:,}" for _, r, *_ in results) + " |")
    print("| seconds (chars/s) | " + " | ".join(
        f"{s:.0f} ({r['chars'] / s:,.0f})" for _, r, s, _ in results) + " |")
    print("| peak RSS | " + " | ".join(f"{m / 2**20:.0f} MiB" for *_, m in results) + " |")


if __name__ == "__main__":
    main()
