"""The library face: `from charrnn import ...`, and the README's example run as written
on a tiny text."""

import re
import subprocess
import sys
from pathlib import Path

from conftest import make_text

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    """The Python block of the README's "Use it from Python" section."""
    section = README.read_text(encoding="utf-8").split("## Use it from Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_trains_samples_and_scores(workdir):
    (workdir / "corpus.txt").write_text(make_text(20_000), encoding="utf-8")
    code = readme_example().replace('"train.max_steps": 100', '"train.max_steps": 30')
    assert "max_steps\": 30" in code  # a few steps: the example's shape is what is tested
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, cwd=workdir)
    assert out.returncode == 0, out.stderr
    score = out.stdout.splitlines()[-1]  # after the sample, which may hold line breaks
    assert score.endswith(" nats/char") and 0 < float(score.split()[0]) < 10
    assert (workdir / "runs" / "latest" / "best.pt").is_file()
    assert "Traceback" not in out.stderr


def test_the_face_is_light_and_complete():
    """`import charrnn` loads no torch (the CLI sets OpenMP's environment first); each
    name of the face resolves on first use, and a name it lacks is an AttributeError."""
    code = ("import sys, charrnn\n"
            "assert 'torch' not in sys.modules\n"
            "from charrnn import *\n"
            "assert all(callable(globals()[n]) for n in charrnn.__all__)\n"
            "try:\n    charrnn.nothing\nexcept AttributeError:\n    print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout == "ok\n", out.stderr
