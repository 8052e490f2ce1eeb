"""Pickle-free archives: numeric arrays plus JSON metadata in one ``.npz`` file."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

META_KEY = "__meta_json__"


def save_archive(
    path: str | os.PathLike[str], arrays: dict[str, np.ndarray], meta: dict[str, Any]
) -> Path:
    """Write ``arrays`` and JSON ``meta`` atomically (a failed write leaves ``path`` untouched)."""
    path = Path(path)
    for name, value in arrays.items():
        if name == META_KEY or np.asarray(value).dtype.kind not in "biuf":
            dtype = np.asarray(value).dtype
            raise ValueError(f"array {name!r} must be a numeric array, got dtype {dtype}")
    payload = {name: np.asarray(value) for name, value in arrays.items()}
    payload[META_KEY] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_archive(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read an archive written by :func:`save_archive`; ValueError if it is corrupt or foreign."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no archive at {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as err:
        raise ValueError(f"{path} is not a readable ntp-gym archive: {err}") from None
    raw = arrays.pop(META_KEY, None)
    if raw is None or raw.dtype != np.uint8 or raw.ndim != 1:
        raise ValueError(f"{path} is not an ntp-gym archive (no metadata)")
    try:
        meta = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} has corrupt metadata: {err}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path} has corrupt metadata: expected a JSON object")
    return arrays, meta
