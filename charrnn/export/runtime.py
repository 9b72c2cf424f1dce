"""onnxruntime-web, the runtime an exported web page runs its model in: the pinned version,
the two files the page loads, where they come from, and their Subresource Integrity hashes.

    runtime_source()                       # the pinned CDN URLs, with their hashes
    runtime_files("onnxruntime-web-1.31.1.tgz")   # the same files read from a local copy

The page loads exactly two files: `ort.wasm.bundle.min.mjs` (the JavaScript API with the
wasm backend's glue code bundled in) and `ort-wasm-simd-threaded.wasm` (the SIMD build, run
here on one thread, so no cross-origin isolation is needed). The package holds 33 MB more
(WebGPU, WebGL, JSPI and asyncify builds, source maps) that the page never asks for.

The hashes are pinned here, not computed at export time, so an export needs no npm and no
network; a test checks them against the package that `npm pack` fetches. Both the CDN copy
and a local copy are fetched by the page with these hashes as `integrity`, so a file that
differs by one byte is refused by the browser rather than run.
"""

from __future__ import annotations

import base64
import hashlib
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

from .exporter import ExportError

VERSION = "1.31.1"
PACKAGE = "onnxruntime-web"
# jsDelivr serves npm packages as published, immutably per version, with CORS headers.
CDN = f"https://cdn.jsdelivr.net/npm/{PACKAGE}@{VERSION}/dist/"
SCRIPT = "ort.wasm.bundle.min.mjs"
WASM = "ort-wasm-simd-threaded.wasm"
INTEGRITY = {
    SCRIPT: "sha384-6BIdAwCg9wGA2hDYLN3zCVAyr+OTK4s2qFUOqXyyOMHOmbTE+W9CyVIpApOKhHN8",
    WASM: "sha384-bQJgW/bZhNOlc9KU45Zu0dyd0EFfNpkOZjfHyH/90dkZQSBBGkFTsAJaabSyYA4Z",
}
LOCAL_DIR = "ort"  # where --runtime puts the two files inside the site


def integrity(data: bytes) -> str:
    """The Subresource Integrity value of a file's bytes (sha384, as browsers check it)."""
    return "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode()


@dataclass(frozen=True)
class Source:
    """What the page is told about its runtime: a URL and a hash per file."""
    version: str
    script: str
    wasm: str
    local: bool

    def to_dict(self) -> dict:
        return {"package": PACKAGE, "version": self.version, "local": self.local,
                "script": {"url": self.script, "integrity": INTEGRITY[SCRIPT]},
                "wasm": {"url": self.wasm, "integrity": INTEGRITY[WASM]}}


def runtime_source(local: bool = False) -> Source:
    """The pinned CDN files, or (`local`) the copies --runtime puts beside the page."""
    base = f"{LOCAL_DIR}/" if local else CDN
    return Source(VERSION, base + SCRIPT, base + WASM, local)


def runtime_files(source: str | Path) -> dict[str, bytes]:
    """The two files, read from an npm tarball, a package directory or its dist/, and
    checked against the pinned hashes: {name: bytes}."""
    source = Path(source)
    if source.is_file():
        files = _from_tarball(source)
    elif source.is_dir():
        dist = source / "dist" if (source / "dist").is_dir() else source
        missing = [name for name in INTEGRITY if not (dist / name).is_file()]
        if missing:
            raise ExportError(f"--runtime {source}: no {missing[0]} in it; give the "
                                f"{PACKAGE} package's dist/ folder or its npm tarball")
        files = {name: (dist / name).read_bytes() for name in INTEGRITY}
    else:
        raise ExportError(f"--runtime {source}: no such file or folder")
    for name, data in files.items():
        if integrity(data) != INTEGRITY[name]:
            raise ExportError(f"--runtime {source}: its {name} is not {PACKAGE} {VERSION}'s "
                                f"(fetch that one: npm pack {PACKAGE}@{VERSION})")
    return files


def _from_tarball(path: Path) -> dict[str, bytes]:
    try:
        with tarfile.open(path) as tar:
            files = {}
            for name in INTEGRITY:
                member = tar.extractfile(f"package/dist/{name}")
                files[name] = member.read()
            version = json.load(tar.extractfile("package/package.json")).get("version")
    except (tarfile.TarError, KeyError, OSError, ValueError, AttributeError) as e:
        raise ExportError(f"--runtime {path}: not an npm tarball of {PACKAGE} "
                            f"({str(e) or type(e).__name__})") from None
    if version != VERSION:
        raise ExportError(f"--runtime {path}: {PACKAGE} {version}, but this charrnn pins "
                            f"{VERSION} (npm pack {PACKAGE}@{VERSION})")
    return files


def npm_pack(cache: str | Path, timeout: float = 300) -> Path | None:
    """The pinned npm tarball in `cache`, fetched with `npm pack` the first time; None when
    npm is missing or the registry does not answer (for tests and benchmarks)."""
    import shutil
    import subprocess

    cache = Path(cache)
    tarball = cache / f"{PACKAGE}-{VERSION}.tgz"
    if tarball.is_file():
        return tarball
    npm = shutil.which("npm")
    if npm is None:
        return None
    cache.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run([npm, "pack", f"{PACKAGE}@{VERSION}", "--silent"], cwd=cache,
                       capture_output=True, timeout=timeout, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return tarball if tarball.is_file() else None
