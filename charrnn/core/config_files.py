"""Config from files and the command line: TOML files, shipped presets by name, dotted
overrides (`--set train.lr=3e-3`), applied in order on top of the defaults.

    cfg = load_config("configs/cpu.toml", overrides={"model.hidden_size": 512})
    cfg = load_config("tiny")                      # a shipped preset, from any directory

Unknown sections and keys, and values of the wrong type, raise ConfigError naming them.
"""

from __future__ import annotations

import difflib
import re
import sys
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .config import SECTIONS, Config
from .errors import ConfigError


def build_config(*layers: dict[str, dict[str, Any]], base: Config | None = None) -> Config:
    """Apply nested {section: {key: value}} layers, in order, on top of `base`."""
    merged = {name: {} for name in SECTIONS}
    for layer in layers:
        for section, values in layer.items():
            if section not in SECTIONS:
                raise ConfigError(
                    f"unknown config section [{section}]; expected one of: {', '.join(SECTIONS)}")
            if not isinstance(values, dict):
                raise ConfigError(f"config section [{section}] must be a table")
            for key, value in values.items():
                merged[section][key] = _coerce(section, key, value)
    base = base or Config()
    return Config(**{
        name: replace(getattr(base, name), **merged[name]) for name in SECTIONS
    })


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                base: Config | None = None) -> Config:
    """Defaults (or `base`), then the TOML file at `path`, then dotted `overrides`."""
    layers = []
    if path is not None:
        layers.append(read_toml(path))
    if overrides:
        layers.append(nest(overrides))
    return build_config(*layers, base=base)


PRESETS_DIR = Path(__file__).parents[1] / "configs"  # also the repository's configs/


def preset(name: str) -> Path | None:
    """The shipped config file for a preset name (tiny, cpu, cpu-bf16, gpu), or None."""
    path = PRESETS_DIR / f"{name}.toml"
    return path if re.fullmatch(r"[A-Za-z0-9_-]+", name) and path.is_file() else None


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file, or a shipped preset by name (`tiny`, `cpu`, `gpu`) from any directory."""
    path = Path(path)
    if not path.exists() and preset(str(path)):
        path = preset(str(path))
    if path.exists() and not path.is_file():
        kind = "a directory" if path.is_dir() else "not a regular file"
        raise ConfigError(f"config path is {kind}, not a TOML file: {path}")
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        names = ", ".join(sorted(p.stem for p in PRESETS_DIR.glob("*.toml")))
        raise ConfigError(f"config file not found: {path} (shipped presets: {names})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text (byte {e.start}); a config file is "
                          f"TOML, saved as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"malformed TOML in {path}: {e}{_quote_hint(text)}") from None


_BARE_DURATION = re.compile(r"^\s*(\w+)\s*=\s*(\d+(?:\.\d+)?[smhd]\w*)\s*(#.*)?$", re.M)


def _quote_hint(text: str) -> str:
    """A hint for a duration written without quotes (max_time = 3m), which TOML refuses."""
    m = _BARE_DURATION.search(text)
    return f'; quote the value: {m.group(1)} = "{m.group(2)}"' if m else ""


def nest(dotted: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{"model.hidden_size": 512} -> {"model": {"hidden_size": 512}}."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in dotted.items():
        section, _, name = key.partition(".")
        if not name:
            raise ConfigError(f"config key {key!r} must be section.key, e.g. train.lr")
        out.setdefault(section, {})[name] = value
    return out


def parse_set(assignment: str) -> tuple[str, Any]:
    """Parse one `--set section.key=value`; the value is read as TOML, else as a string."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects section.key=value, got {assignment!r}")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip(), value


def _coerce(section: str, key: str, value: Any) -> Any:
    types = {f.name: f.type for f in fields(SECTIONS[section])}
    if key not in types:
        raise ConfigError(
            f"unknown config key {section}.{key}{_did_you_mean(key, types)}; valid keys: "
            f"{', '.join(sorted(types))}")
    want = types[key]
    name = f"{section}.{key}"
    if want == "bool":
        if isinstance(value, bool):
            return value
    elif want == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif want == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif want == "str":
        if isinstance(value, str):
            return value
    elif want == "int | str":  # steps or a duration: the dataclass checks which
        if isinstance(value, (int, str)) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    raise ConfigError(f"{name} must be of type {want}, got {type(value).__name__} {value!r}")


def _did_you_mean(key: str, known) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""
