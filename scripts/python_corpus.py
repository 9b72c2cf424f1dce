"""Write a corpus of Python source taken from the standard library of the running Python.

    python scripts/python_corpus.py data/python_stdlib.txt [MAX_MB]

Every machine with Python has this text, so the demo needs no download: a char-RNN learning
to write Python, like the classic Linux-source example.
"""

import sys
import sysconfig
from pathlib import Path


def main(out: str, max_mb: float = 2.0) -> None:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    limit = int(max_mb * 1e6)
    files = sorted(p for p in stdlib.glob("*.py"))  # top-level modules only: no tests, no vendored code
    size = 0
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        for path in files:
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            f.write(text if text.endswith("\n") else text + "\n")
            size += len(text.encode("utf-8"))
            if size >= limit:
                break
    print(f"wrote {out}: {size / 1e6:.1f} MB of Python from {stdlib}")


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3) or sys.argv[1].startswith("-"):
        sys.exit(__doc__.strip().splitlines()[2].strip().join(["usage: ", ""]))
    main(sys.argv[1], *(float(a) for a in sys.argv[2:3]))
