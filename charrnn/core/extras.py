"""The optional extras and the one line that says how to install one.

charrnn is installed from its checkout (`pip install -e .`): the name `charrnn` on PyPI is
another project's, so `pip install 'charrnn[plot]'` would fetch the wrong package. The line
names both ways that work: the extra from the checkout, or the packages themselves.
"""

EXTRAS = {
    "plot": ("matplotlib",),
    "serve": ("starlette", "uvicorn"),
    "export": ("onnx", "onnxruntime"),
    "novelty": ("pydivsufsort",),
}


def install_hint(extra: str) -> str:
    """e.g. "pip install -e '.[plot]' in charrnn's checkout, or pip install matplotlib"."""
    return (f"pip install -e '.[{extra}]' in charrnn's checkout, or pip install "
            + " ".join(EXTRAS[extra]))
