"""Pickle-free archives: numeric arrays plus JSON metadata in one ``.npz`` file.

Used for every file the suite saves (demonstrations, fitted policies). Writes are atomic
(temp file, fsync, rename), so a failure leaves the target untouched; reads never unpickle
(``allow_pickle=False``) and turn any corruption into a ValueError, a header that declares
more data than its entry holds included, and entries that inflate to more than a cap (both
checked from the zip directory and the headers, before anything is inflated or allocated).
"""

from __future__ import annotations

import json
import math
import os
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

META_KEY = "metadata"
CORRUPT_FILE_ERRORS = (ValueError, OSError, EOFError, KeyError, RuntimeError,  # RuntimeError
                       SyntaxError, OverflowError, struct.error,  # covers numpy's refusal of
                       zipfile.BadZipFile, zlib.error, UnicodeDecodeError)  # unknown formats
MAX_ARCHIVE_BYTES = 2**33
"""Most bytes the entries of an archive may inflate to, all together (8 GiB: twice the
largest demonstration set a job admits, 2**28 tokens of int64 and float64)."""
MAX_POLICY_BYTES = 2**30
"""Most bytes a saved policy may inflate to (1 GiB: the suite's largest tables are 2**24
float64 entries, 128 MiB); also the cap on SB3 ``.zip`` and torch-saved policy files."""


def save_archive(
    path: str | os.PathLike[str],
    arrays: dict[str, np.ndarray],
    meta: dict[str, Any],
    *,
    compress: bool = False,
) -> Path:
    """Write ``arrays`` and JSON ``meta`` atomically to ``path`` (used as given)."""
    path = Path(path)
    for name, value in arrays.items():
        dtype = np.asarray(value).dtype
        if name == META_KEY or dtype.kind not in "biuf":
            raise ValueError(f"array {name!r} must be a numeric array, got dtype {dtype}")
    payload = {name: np.asarray(value) for name, value in arrays.items()}
    payload[META_KEY] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            (np.savez_compressed if compress else np.savez)(handle, **payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_archive(
    path: str | os.PathLike[str], what: str = "ntp-gym archive", max_bytes: int | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Arrays and metadata of an archive; ValueError naming ``what`` if corrupt or foreign, or
    if its entries inflate to more than ``max_bytes`` (default :data:`MAX_ARCHIVE_BYTES`)."""
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("not an .npz archive")
        with data:
            check_inflated_size(data.zip, MAX_ARCHIVE_BYTES if max_bytes is None else max_bytes)
            if META_KEY not in data.files:
                raise ValueError("no metadata")
            _check_declared_sizes(data)
            arrays = {name: data[name] for name in data.files}
        meta = _read_metadata(arrays.pop(META_KEY))
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except CORRUPT_FILE_ERRORS as err:
        raise ValueError(f"{os.fspath(path)} is not a valid {what}: {err}") from None
    return arrays, meta


def check_inflated_size(archive: zipfile.ZipFile, max_bytes: int,
                        entry_caps: dict[str, int] | None = None) -> None:
    """ValueError when the entries of ``archive`` inflate to more than ``max_bytes`` in all, an
    entry named in ``entry_caps`` to more than its cap, or an entry is neither stored nor
    deflated. Read from the zip directory, before anything is inflated: :mod:`zipfile` returns
    at most an entry's declared size, and a sized ``read(n)`` of a deflated entry inflates at
    most about ``n`` bytes at a time (other methods may inflate a whole chunk at once)."""
    infos = archive.infolist()
    for info in infos:
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ValueError(f"entry {info.filename!r} uses compression method "
                             f"{info.compress_type}: only stored or deflated entries are read")
        cap = (entry_caps or {}).get(info.filename)
        if cap is not None and info.file_size > cap:
            raise ValueError(f"entry {info.filename!r} inflates to {info.file_size} bytes, at "
                             f"most {cap} bytes allowed")
    total = sum(info.file_size for info in infos)
    if total > max_bytes:
        raise ValueError(f"its {len(infos)} entries inflate to {total} bytes, at most "
                         f"{max_bytes} bytes allowed")


def _check_declared_sizes(data: np.lib.npyio.NpzFile) -> None:
    """ValueError for an entry whose ``.npy`` header declares more bytes than it holds."""
    for info in data.zip.infolist():
        if not info.filename.endswith(".npy"):
            continue
        with data.zip.open(info) as member:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(member)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(member)
            else:
                raise ValueError(f"entry {info.filename!r}: unsupported .npy version {version}")
            declared = math.prod(shape) * dtype.itemsize
            held = info.file_size - member.tell()
        if declared > held:
            raise ValueError(f"entry {info.filename!r} declares shape {shape} of {dtype} "
                             f"({declared} bytes) but holds {held} bytes")


def _read_metadata(raw: np.ndarray) -> dict[str, Any]:
    """The metadata dict from a uint8 array of UTF-8 JSON (or a 0-d unicode array)."""
    if raw.dtype.kind == "U" and raw.ndim == 0:
        text = str(raw.item())
    elif raw.dtype == np.uint8 and raw.ndim == 1:
        text = raw.tobytes().decode("utf-8")
    else:
        raise ValueError(f"metadata must be a 0-d string or uint8 array, got {raw.dtype}")
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"metadata is not valid JSON: {err}") from None
    if not isinstance(meta, dict):
        raise ValueError("metadata must be a JSON object")
    return meta
