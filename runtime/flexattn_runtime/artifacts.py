"""Artifact directories: many kernels, each as `<name>.json` (metadata) plus its
binary (`<name>.ptx` or `<name>.cubin`), indexed by `index.json`:

    <dir>/index.json   {"version": 1, "kernels": {"<key>": "<name>.json", ...}}
    <dir>/<name>.json  the kernel metadata (schema: README.md, metadata.py)
    <dir>/<name>.ptx   or .cubin
    <dir>/.lock        flock'ed while index.json is rewritten

Writers (`write_kernel`, used by the compiler side) write every file to a
temporary file in the same directory and `os.replace` it into place, binary
first, then metadata, then the index under an exclusive `fcntl.flock` on
`.lock`, so concurrent writers (several processes) never lose each other's
index entries and readers never see a partial file or an index entry whose
files are missing. Readers (`ArtifactStore`) take no lock.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

from .errors import MetadataError
from .kernel import Kernel

__all__ = ["ArtifactStore", "write_kernel", "run", "INDEX", "INDEX_VERSION"]

INDEX = "index.json"
LOCK = ".lock"
INDEX_VERSION = 1
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_EXT = {"ptx": ".ptx", "cubin": ".cubin"}


def _atomic_write(path: str, data: bytes) -> None:
    d, base = os.path.split(path)
    fd, tmp = tempfile.mkstemp(dir=d or ".", prefix=f".{base}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


@contextmanager
def _locked(directory: str) -> Iterator[None]:
    import fcntl  # POSIX only; imported here so that reading works anywhere

    fd = os.open(os.path.join(directory, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _read_index(directory: str) -> dict[str, str]:
    path = os.path.join(directory, INDEX)
    try:
        with open(path, encoding="utf-8") as f:
            idx = json.load(f)
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as e:
        raise MetadataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(idx, dict) or idx.get("version") != INDEX_VERSION \
            or not isinstance(idx.get("kernels"), dict):
        raise MetadataError(f"{path}: expected {{\"version\": {INDEX_VERSION}, "
                            "\"kernels\": {key: file}}")
    return dict(idx["kernels"])


def _dump_json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8")


def write_kernel(directory: str | os.PathLike, name: str, metadata: Mapping[str, Any],
                 binary: bytes) -> str:
    """Write one kernel into an artifact directory (created if needed), atomically.

    `name` is the file stem (letters, digits, `_ . -`). "binary" in the metadata
    defaults to `<name>.ptx`/`.cubin` from "binary_format". The metadata is
    validated (and, for PTX, checked against the entry's parameter list) before
    anything is written. An existing entry for the same key is replaced.
    Returns the path of `<name>.json`.
    """
    directory = os.fspath(directory)
    if not isinstance(name, str) or not _NAME_RE.match(name) or name.endswith(".json"):
        raise ValueError(f"kernel name {name!r}: use letters, digits, '_', '.', '-' "
                         "(no path separators, no .json suffix)")
    meta = dict(metadata)
    fmt = meta.get("binary_format")
    if "binary" not in meta and fmt in _EXT:
        meta["binary"] = name + _EXT[fmt]
    # validates metadata and binary (raises MetadataError) before anything is written
    parsed = Kernel(meta, binary, name=name).metadata
    if parsed.binary == INDEX or parsed.binary.endswith(".json") or parsed.binary == LOCK:
        raise MetadataError(f"binary: {parsed.binary!r} would clash with the artifact files")
    try:
        meta_bytes = _dump_json(meta)
    except (TypeError, ValueError) as e:
        raise MetadataError(f"metadata is not JSON-serializable: {e}") from None

    os.makedirs(directory, exist_ok=True)
    _atomic_write(os.path.join(directory, parsed.binary), bytes(binary))
    meta_file = name + ".json"
    _atomic_write(os.path.join(directory, meta_file), meta_bytes)
    with _locked(directory):
        kernels = _read_index(directory)
        kernels[parsed.key] = meta_file
        _atomic_write(os.path.join(directory, INDEX),
                      _dump_json({"version": INDEX_VERSION, "kernels": kernels}))
    return os.path.join(directory, meta_file)


class ArtifactStore:
    """Read side of an artifact directory.

    `keys()`, `get(key) -> Kernel` (cached; a key not in the index triggers
    one re-read, for kernels written since), `find(**spec_fields)` (keys whose
    metadata "spec" has all the given field values; `find(key=...)` matches the
    key), `metadata(key)`, `in`, `len`, iteration over keys.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        if not os.path.isdir(self.path):
            raise FileNotFoundError(f"artifact directory {self.path!r} does not exist")
        self._lock = threading.Lock()
        self._kernels: dict[str, Kernel] = {}
        self._index: dict[str, str] = {}
        self.refresh()

    def refresh(self) -> None:
        """Re-read index.json (kernels written by other processes appear)."""
        idx = _read_index(self.path)
        with self._lock:
            self._index = idx
            for k in [k for k, kern in self._kernels.items()
                      if idx.get(k) is None or kern.path is None
                      or os.path.basename(kern.path) != idx[k]]:
                del self._kernels[k]

    def keys(self) -> list[str]:
        return sorted(self._index)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def file(self, key: str) -> str:
        if key not in self._index:
            self.refresh()
        if key not in self._index:
            raise KeyError(f"no kernel with key {key!r} in {self.path} "
                           f"({len(self._index)} kernels)")
        return os.path.join(self.path, self._index[key])

    def metadata(self, key: str) -> dict:
        with open(self.file(key), encoding="utf-8") as f:
            return json.load(f)

    def get(self, key: str) -> Kernel:
        k = self._kernels.get(key)
        if k is not None:
            return k
        path = self.file(key)
        kern = Kernel.from_file(path)
        if kern.key != key:
            raise MetadataError(f"{path}: index.json lists it under key {key!r} but its "
                                f"metadata says key {kern.key!r}")
        with self._lock:
            return self._kernels.setdefault(key, kern)

    def find(self, **fields: Any) -> list[str]:
        """Keys whose metadata "spec" contains every given field with that value
        (`key=` and `entry=` match the top-level fields instead)."""
        found = []
        for key in self.keys():
            meta = self.metadata(key)
            spec = meta.get("spec", {})
            ok = True
            for f, v in fields.items():
                have = meta.get(f) if f in ("key", "entry") else spec.get(f, _MISSING)
                if have != v:
                    ok = False
                    break
            if ok:
                found.append(key)
        return found

    def __repr__(self) -> str:
        return f"ArtifactStore({self.path!r}, {len(self)} kernels)"


_MISSING = object()


def run(store_or_path: ArtifactStore | str | os.PathLike, key: str, tensors: Any
        ) -> dict:
    """Load kernel `key` from a store (or directory) and launch it on `tensors`."""
    if isinstance(store_or_path, ArtifactStore):
        store = store_or_path
    else:
        path = os.path.realpath(os.fspath(store_or_path))
        store = _stores.get(path)
        if store is None:
            store = _stores.setdefault(path, ArtifactStore(path))
    return store.get(key)(tensors)


_stores: dict[str, ArtifactStore] = {}
