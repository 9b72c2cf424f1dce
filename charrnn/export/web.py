"""The model in a web page: a static site that samples and scores in the browser, with no
server behind it. `charrnn export --web DIR` writes it.

    site = export_web(model, vocab, options, "site", state=checkpoint_state)
    python -m http.server -d site                  # or GitHub Pages, an S3 bucket, ...

DIR holds:

    index.html, web.js, worker.js   the page (charrnn/export/site/); the model runs in
                                    worker.js, a Web Worker, so the page never freezes
    style.css, surprisal.js,        the playground's styles, surprisal renderer and escapes,
    escapes.js                      the same
                                    files `charrnn serve` serves (charrnn/serve/static/)
    model.onnx                      the model, checked against PyTorch (exporter.py)
    site.json                       what the page needs: the vocabulary and text options,
                                    the model's description and validation loss, where the
                                    runtime comes from, and the list of the site's files
    ort/                            with --runtime only: the two onnxruntime-web files

The site is built in a hidden folder beside DIR and renamed into place once complete, so a
failure leaves DIR as it was. A DIR that holds anything this export did not write (by the
list in its site.json) is refused: replacing it would delete someone's files.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .. import __version__
from ..core.files import fsync_dir
from ..core.model import CharRNN, describe_model
from ..core.units import LN2
from ..corpus.text import TextOptions
from ..corpus.vocab import Vocab
from .exporter import ExportError, Mismatch, checked_bytes, require_extra
from .metadata import model_metadata
from .runtime import LOCAL_DIR, runtime_files, runtime_source

FORMAT = "charrnn-web"
MANIFEST = "site.json"
PAGE = ("index.html", "web.js", "worker.js")  # charrnn/export/site/
SHARED = ("style.css", "surprisal.js", "escapes.js")  # charrnn/serve/static/, shared with the playground
MAX_LENGTH = 100_000  # characters per generation: bounds what a shared link can ask for


@dataclass(frozen=True)
class Site:
    path: Path
    files: dict[str, int]  # relative path -> bytes
    max_diff: float  # largest |logit difference| of model.onnx from PyTorch (exporter.py)
    runtime: dict  # site.json's "runtime"
    quantized: dict | None = None  # quantize.py's report, with --quantize

    @property
    def size(self) -> int:
        return sum(self.files.values())


def export_web(model: CharRNN, vocab: Vocab, options: TextOptions, directory: str | Path,
               state: dict | None = None, runtime: str | Path | None = None,
               quantize: str | None = None) -> Site:
    """Write the site to `directory` (new, empty, or a site written before). `runtime`: an
    onnxruntime-web npm tarball or dist/ folder to copy in; None loads it from the CDN.
    `quantize`: "int8" for onnxruntime's dynamic quantization (quantize.py)."""
    require_extra()
    directory = Path(directory)
    check_target(directory)
    files = runtime_files(runtime) if runtime is not None else {}  # checked before the work
    data, diff, quantized = _model_file(model, vocab, options, state, quantize, directory)
    source = runtime_source(local=bool(files)).to_dict()
    info = _site_info(model, vocab, options, state, source, quantized)
    build = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp",
                                  dir=directory.parent))
    try:
        written = _build(build, data, files, info)
        _put_in_place(build, directory)
    except BaseException as e:  # a full disk, Ctrl-C: no half-built folder stays behind
        shutil.rmtree(build, ignore_errors=True)
        if isinstance(e, OSError):
            raise ExportError(f"could not write {directory}: {e.strerror or e}; "
                              f"{_kept(directory)}") from None
        raise
    return Site(directory, written, diff, source, quantized)


def _model_file(model: CharRNN, vocab: Vocab, options: TextOptions, state: dict | None,
                quantize: str | None, directory: Path) -> tuple[bytes, float, dict | None]:
    """model.onnx's bytes, checked against PyTorch (and quantized if asked), the largest
    logit difference of the fp32 file, and quantize.py's report."""
    try:
        data, diff = checked_bytes(model, vocab, options, state)
    except Mismatch as e:
        raise ExportError(f"{e}; {directory}: {_kept(directory)}") from None
    if not quantize:
        return data, diff, None
    from .quantize import quantize_model

    data, report = quantize_model(model, data, quantize)
    return data, diff, report


def _kept(directory: Path) -> str:
    return "the previous site is kept" if directory.exists() else "nothing written"


def check_target(directory: Path) -> None:
    """A folder the site can go to: absent, empty, or a site this export wrote before."""
    parent = directory.parent
    if not parent.is_dir():
        raise ExportError(f"cannot write {directory}: {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError(f"cannot write {directory}: no permission to write in {parent}")
    if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
        raise ExportError(f"will not replace {directory}: it is not a folder; choose another")
    if not directory.exists():
        return
    if Path.cwd().resolve().is_relative_to(directory.resolve()):
        raise ExportError(f"will not replace {directory}: it holds the current folder; "
                          f"run the export from outside it")
    foreign = _foreign_files(directory)
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise ExportError(f"{directory} holds files that charrnn export --web did not write "
                          f"({shown}); choose a new or empty folder")


def _foreign_files(directory: Path) -> list[str]:
    """The paths under `directory` that its site.json does not list (all, without one)."""
    ours = {MANIFEST}
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
        if manifest.get("format") == FORMAT:
            ours.update(manifest["files"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    found = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*")
                   if not p.is_dir() or p.is_symlink())
    return [name for name in found if name not in ours]


# ----------------------------------------------------------------------------------------
# building


def _build(build: Path, data: bytes, runtime: dict[str, bytes], info: dict) -> dict[str, int]:
    """The site's files in `build`; returns {path: bytes}."""
    (build / "model.onnx").write_bytes(data)
    if runtime:
        (build / LOCAL_DIR).mkdir()
    for name, content in runtime.items():
        (build / LOCAL_DIR / name).write_bytes(content)
    _copy_page(build)
    return _write_manifest(build, info)


def _copy_page(build: Path) -> None:
    here = resources.files(__package__) / "site"
    shared = resources.files("charrnn") / "serve" / "static"
    for name in PAGE:
        (build / name).write_bytes((here / name).read_bytes())
    for name in SHARED:
        (build / name).write_bytes((shared / name).read_bytes())


def _site_info(model: CharRNN, vocab: Vocab, options: TextOptions, state: dict | None,
               runtime: dict, quantized: dict | None) -> dict:
    """What the page reads before it loads anything else (site.json, less its file list)."""
    meta = model_metadata(model, vocab, options, state)  # as model.onnx carries it
    loss = meta["best_val_loss"]
    return {
        "format": FORMAT, "version": 1, "charrnn": __version__,
        "description": describe_model(model),
        "validation": None if loss is None else {"nats": loss, "bits": loss / LN2},
        "quantized": quantized,
        "model": meta,
        "runtime": runtime,
        "max_length": MAX_LENGTH,
    }


def _write_manifest(build: Path, info: dict) -> dict[str, int]:
    """Write site.json with the list of every file of the site; returns {path: bytes}."""
    files = {p.relative_to(build).as_posix(): p.stat().st_size
             for p in sorted(build.rglob("*")) if p.is_file()}
    document = {**info, "files": sorted([*files, MANIFEST])}
    data = json.dumps(document, ensure_ascii=False, allow_nan=False, indent=1).encode()
    (build / MANIFEST).write_bytes(data)
    return {**files, MANIFEST: len(data)}


def _put_in_place(build: Path, directory: Path) -> None:
    """Rename the finished site to `directory`; a previous site goes only once it is."""
    mask = os.umask(0)
    os.umask(mask)
    for p in [build, *build.rglob("*")]:  # mkdtemp makes the folder private; a site is not
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)
    old = None
    if directory.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".old",
                                    dir=directory.parent))
        os.rename(directory, old / "site")
    try:
        os.rename(build, directory)
    except OSError:
        if old is not None:
            os.rename(old / "site", directory)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    fsync_dir(directory.parent)
