"""The kernel metadata schema (version 1), parsed into frozen dataclasses.

Pure Python + torch dtypes: nothing here touches CUDA, so the whole schema is
checked on CPU-only machines (by `write_kernel` on the compiler side and by the
tests). The schema is documented in runtime/README.md; `parse_metadata` is its
executable definition. Error messages name the offending field by path, e.g.
``params[2].box: ...``.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from .dynamic import MemrefParam, check_name, is_name, param_words, parse_size
from .errors import MetadataError
from .tensormap import ELEM_TYPES, check_tensormap, tensormap_geometry

SCHEMA_VERSION = 1

# dtype names accepted in "arguments[].dtype": torch's names plus short aliases
DTYPES: dict[str, torch.dtype] = {
    "bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32,
    "float64": torch.float64, "int8": torch.int8, "uint8": torch.uint8,
    "int16": torch.int16, "int32": torch.int32, "int64": torch.int64,
    "bool": torch.bool,
}
DTYPE_ALIASES = {
    "bf16": "bfloat16", "f16": "float16", "half": "float16", "fp16": "float16",
    "f32": "float32", "float": "float32", "fp32": "float32", "f64": "float64",
    "double": "float64", "i8": "int8", "u8": "uint8", "i16": "int16",
    "i32": "int32", "int": "int32", "i64": "int64", "long": "int64",
}

SCALAR_KINDS = ("i32", "i64", "f32")
_TARGET_RE = re.compile(r"^sm_(\d+)(\d)([af]?)$")


@dataclass(frozen=True)
class ArgumentSpec:
    """One user-level tensor: name, shape (outermost first; a dynamic
    kernel's run-time dims are names, `flexattn_runtime.dynamic`), dtype."""
    name: str
    shape: tuple[int | str, ...]
    dtype: torch.dtype
    align: int = 16          # required data_ptr alignment in bytes

    @property
    def dynamic(self) -> bool:
        return any(is_name(d) for d in self.shape)

    @property
    def numel(self) -> int:
        if self.dynamic:
            raise TypeError(f"argument {self.name!r} has run-time dims {list(self.shape)}")
        return math.prod(self.shape)

    def describe(self) -> str:
        return f"{self.name}: {str(self.dtype).replace('torch.', '')}{list(self.shape)}"


@dataclass(frozen=True)
class PtrParam:
    arg: str
    kind: str = "ptr"


@dataclass(frozen=True)
class TensorMapParam:
    """A pointer to a 128-byte CUtensorMap (in global memory) for tensor `arg`."""
    arg: str
    elem: str                               # "bf16" | "f16" | "f32" | "i32"
    box: tuple[int, ...]                    # innermost first
    swizzle: str = "none"                   # "none" | "32B" | "64B" | "128B"
    l2_promotion: str = "256B"              # "none" | "64B" | "128B" | "256B"
    oob_fill: str = "zero"                  # "zero" | "nan"
    interleave: str = "none"                # only "none"
    view: tuple[int, ...] | None = None     # reshape of the tensor, outermost first
    kind: str = "tensormap"


@dataclass(frozen=True)
class ScalarParam:
    kind: str                               # "i32" | "i64" | "f32"
    value: Any                              # a number; a dynamic kernel's: a size

    @property
    def computed(self) -> bool:
        """Whether the value is computed per call from the run-time sizes."""
        return not isinstance(self.value, (int, float))


@dataclass(frozen=True)
class KernelMetadata:
    version: int
    key: str
    entry: str
    target: str
    binary: str
    binary_format: str                      # "ptx" | "cubin"
    grid: tuple[Any, Any, Any]              # ints; a dynamic kernel's: sizes (dynamic.py)
    block: tuple[int, int, int]
    cluster: tuple[int, int, int]
    shared_mem_bytes: int
    arguments: tuple[ArgumentSpec, ...]
    outputs: tuple[str, ...]
    params: tuple[Any, ...]
    spec: dict = field(default_factory=dict, compare=False, hash=False)
    raw: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    def argument(self, name: str) -> ArgumentSpec:
        for a in self.arguments:
            if a.name == name:
                return a
        raise KeyError(name)

    @functools.cached_property
    def argument_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.arguments)

    @functools.cached_property
    def dynamic(self) -> bool:
        """Whether some argument has run-time dims (then the grid is computed
        per call and memref parameters carry the sizes)."""
        return any(a.dynamic for a in self.arguments)

    @property
    def threads_per_block(self) -> int:
        return math.prod(self.block)

    def to_dict(self) -> dict:
        """The metadata as JSON-ready dict (the validated input, unchanged)."""
        return dict(self.raw)


def parse_target(target: str) -> tuple[int, int, str]:
    """'sm_90a' -> (9, 0, 'a'); 'sm_100f' -> (10, 0, 'f'); 'sm_89' -> (8, 9, '')."""
    m = _TARGET_RE.match(target) if isinstance(target, str) else None
    if not m:
        raise MetadataError(f"target: expected 'sm_<major><minor>[a|f]' such as "
                            f"'sm_90a', got {target!r}")
    return int(m.group(1)), int(m.group(2)), m.group(3)


def target_incompatibility(target: str, binary_format: str,
                           cc: tuple[int, int]) -> str | None:
    """Why a binary for `target` cannot run on compute capability `cc`, or None.

    - 'a' targets (sm_90a): architecture-specific features; only that exact cc.
    - 'f' targets (family): same major, minor >= target minor.
    - plain cubin: same major, minor >= target minor (SASS compatibility).
    - plain PTX: any cc >= target (the driver JIT-compiles it forward).
    """
    major, minor, suffix = parse_target(target)
    want = f"{major}.{minor}"
    have = f"{cc[0]}.{cc[1]}"
    if suffix == "a":
        if tuple(cc) != (major, minor):
            return (f"{target} code uses architecture-specific features and runs only "
                    f"on compute capability {want}; this device has {have}")
    elif suffix == "f" or binary_format == "cubin":
        if cc[0] != major or cc[1] < minor:
            kind = "family" if suffix == "f" else "cubin"
            return (f"{target} {kind} code runs on compute capability {major}.x with "
                    f"x >= {minor}; this device has {have}")
    elif tuple(cc) < (major, minor):
        return f"{target} PTX needs compute capability >= {want}; this device has {have}"
    return None


# --- parsing helpers -----------------------------------------------------------

def _err(path: str, msg: str) -> MetadataError:
    return MetadataError(f"{path}: {msg}")


def _int(v: Any, path: str, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _err(path, f"expected an integer, got {v!r}")
    if lo is not None and v < lo:
        raise _err(path, f"must be >= {lo}, got {v}")
    if hi is not None and v > hi:
        raise _err(path, f"must be <= {hi}, got {v}")
    return v


def _str(v: Any, path: str, choices: tuple[str, ...] | None = None) -> str:
    if not isinstance(v, str) or not v:
        raise _err(path, f"expected a non-empty string, got {v!r}")
    if choices is not None and v not in choices:
        raise _err(path, f"expected one of {list(choices)}, got {v!r}")
    return v


def _int_list(v: Any, path: str, *, lo: int = 0, min_len: int = 0,
              max_len: int | None = None) -> tuple[int, ...]:
    if not isinstance(v, (list, tuple)):
        raise _err(path, f"expected a list of integers, got {v!r}")
    if len(v) < min_len or (max_len is not None and len(v) > max_len):
        want = f"{min_len}..{max_len}" if max_len is not None else f">= {min_len}"
        raise _err(path, f"expected {want} entries, got {len(v)}")
    return tuple(_int(x, f"{path}[{i}]", lo=lo) for i, x in enumerate(v))


def _dims3(v: Any, path: str, limits: tuple[int, int, int]) -> tuple[int, int, int]:
    t = _int_list(v, path, lo=1, min_len=1, max_len=3)
    t = t + (1,) * (3 - len(t))
    for i, (x, lim) in enumerate(zip(t, limits)):
        if x > lim:
            raise _err(f"{path}[{i}]", f"must be <= {lim}, got {x}")
    return t  # type: ignore[return-value]


def parse_dtype(name: Any, path: str = "dtype") -> torch.dtype:
    if isinstance(name, str):
        key = DTYPE_ALIASES.get(name, name).removeprefix("torch.")
        if key in DTYPES:
            return DTYPES[key]
    raise _err(path, f"unknown dtype {name!r}; expected one of {sorted(DTYPES)}")


def _filename(v: Any, path: str) -> str:
    s = _str(v, path)
    if "/" in s or "\\" in s or s in (".", "..") or "\0" in s:
        raise _err(path, f"must be a plain file name next to the metadata, got {s!r}")
    return s


def _parse_argument(a: Any, i: int) -> ArgumentSpec:
    path = f"arguments[{i}]"
    if not isinstance(a, Mapping):
        raise _err(path, f"expected an object with name/shape/dtype, got {a!r}")
    for k in ("name", "shape", "dtype"):
        if k not in a:
            raise _err(path, f"missing field {k!r}")
    name = _str(a["name"], f"{path}.name")
    if not isinstance(a["shape"], (list, tuple)):
        raise _err(f"{path}.shape", f"expected a list of sizes, got {a['shape']!r}")
    shape = tuple(check_name(d, f"{path}.shape[{j}]") if isinstance(d, str)
                  else _int(d, f"{path}.shape[{j}]", lo=0) for j, d in enumerate(a["shape"]))
    dtype = parse_dtype(a["dtype"], f"{path}.dtype")
    align = _int(a.get("align", 16), f"{path}.align", lo=1)
    if align & (align - 1):
        raise _err(f"{path}.align", f"must be a power of two, got {align}")
    return ArgumentSpec(name, shape, dtype, align)


def _parse_param(p: Any, i: int, args: dict[str, ArgumentSpec]) -> Any:
    path = f"params[{i}]"
    if not isinstance(p, Mapping):
        raise _err(path, f"expected an object with a 'kind', got {p!r}")
    kind = _str(p.get("kind"), f"{path}.kind", ("ptr", "memref", "tensormap") + SCALAR_KINDS)
    if kind in SCALAR_KINDS:
        if "value" not in p:
            raise _err(path, f"{kind} parameter needs a 'value'")
        v = p["value"]
        names = {d for a in args.values() for d in a.shape if is_name(d)}
        if kind != "f32" and names and (isinstance(v, (str, Mapping))):
            # A size of a dynamic kernel's call (its arguments' run-time dims).
            return ScalarParam(kind, parse_size(v, f"{path}.value", names))
        if kind == "f32":
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise _err(f"{path}.value", f"expected a number, got {v!r}")
            return ScalarParam(kind, float(v))
        bits = 32 if kind == "i32" else 64
        return ScalarParam(kind, _int(v, f"{path}.value", -(1 << (bits - 1)), (1 << (bits - 1)) - 1))
    arg = _str(p.get("arg"), f"{path}.arg")
    if arg not in args:
        raise _err(f"{path}.arg", f"names no argument: {arg!r} (arguments: {list(args)})")
    if kind == "ptr":
        if args[arg].dynamic:
            raise _err(f"{path}.kind", f"argument {arg!r} has run-time dims "
                       f"{list(args[arg].shape)}: the kernel takes it as a 'memref' "
                       "(its sizes), not a bare 'ptr'")
        return PtrParam(arg)
    if kind == "memref":
        return MemrefParam(arg)
    spec = args[arg]
    elem = _str(p.get("elem"), f"{path}.elem", tuple(ELEM_TYPES))
    if ELEM_TYPES[elem].dtype != spec.dtype:
        raise _err(f"{path}.elem", f"{elem!r} does not match argument {arg!r} of dtype "
                   f"{str(spec.dtype).replace('torch.', '')}")
    view = p.get("view")
    if view is not None:
        view = _int_list(view, f"{path}.view", lo=1, min_len=1, max_len=5)
    tm = TensorMapParam(
        arg=arg, elem=elem,
        box=_int_list(p.get("box"), f"{path}.box", lo=1, min_len=1, max_len=5),
        swizzle=_str(p.get("swizzle", "none"), f"{path}.swizzle", ("none", "32B", "64B", "128B")),
        l2_promotion=_str(p.get("l2_promotion", "256B"), f"{path}.l2_promotion",
                          ("none", "64B", "128B", "256B")),
        oob_fill=_str(p.get("oob_fill", "zero"), f"{path}.oob_fill", ("zero", "nan")),
        interleave=_str(p.get("interleave", "none"), f"{path}.interleave", ("none",)),
        view=view,
    )
    if spec.dynamic:
        return tm  # encoding_for checks the geometry of each call's shape
    try:
        dims, strides = tensormap_geometry(spec.shape, ELEM_TYPES[elem].size, tm.view)
        check_tensormap(dims, strides, tm.box, ELEM_TYPES[elem].size, tm.swizzle)
    except ValueError as e:
        raise _err(path, f"tensor map for argument {arg!r} {list(spec.shape)}: {e}") from None
    return tm


def _grid(v: Any, arguments: tuple[ArgumentSpec, ...], cluster) -> tuple:
    """The grid: three ints (a multiple of the cluster), or for a kernel
    with run-time dims, sizes computed from them (`dynamic.parse_size`)."""
    names = {d for a in arguments for d in a.shape if is_name(d)}
    if not names or all(isinstance(g, int) for g in (v if isinstance(v, (list, tuple)) else [])):
        grid = _dims3(v, "grid", ((1 << 31) - 1, 65535, 65535))
        for i, (g, c) in enumerate(zip(grid, cluster)):
            if g % c:
                raise _err("cluster", f"grid {list(grid)} is not a multiple of cluster "
                           f"{list(cluster)} in dimension {i}")
        return grid
    if not isinstance(v, (list, tuple)) or not 1 <= len(v) <= 3:
        raise _err("grid", f"expected 1..3 sizes, got {v!r}")
    if cluster != (1, 1, 1):
        raise _err("cluster", "a grid of run-time sizes takes no thread-block clusters")
    return tuple(parse_size(g, f"grid[{i}]", names) for i, g in enumerate(v)) + (1,) * (3 - len(v))


def parse_metadata(meta: Mapping[str, Any] | KernelMetadata) -> KernelMetadata:
    """Check a metadata dict against schema version 1; return KernelMetadata.

    Raises MetadataError naming the first offending field.
    """
    if isinstance(meta, KernelMetadata):
        return meta
    if not isinstance(meta, Mapping):
        raise MetadataError(f"metadata: expected a JSON object, got {type(meta).__name__}")
    version = meta.get("version")
    if version != SCHEMA_VERSION:
        raise _err("version", f"expected {SCHEMA_VERSION}, got {version!r}")
    for k in ("key", "entry", "target", "binary", "binary_format", "grid", "block",
              "shared_mem_bytes", "arguments", "params"):
        if k not in meta:
            raise _err(k, "missing required field")
    key = _str(meta["key"], "key")
    entry = _str(meta["entry"], "entry")
    target = _str(meta["target"], "target")
    parse_target(target)
    binary = _filename(meta["binary"], "binary")
    binary_format = _str(meta["binary_format"], "binary_format", ("ptx", "cubin"))
    block = _dims3(meta["block"], "block", (1024, 1024, 64))
    if math.prod(block) > 1024:
        raise _err("block", f"{list(block)} is {math.prod(block)} threads; at most 1024")
    cluster = _dims3(meta.get("cluster", [1, 1, 1]), "cluster", (8, 8, 8))
    if math.prod(cluster) > 8:
        raise _err("cluster", f"{list(cluster)} has {math.prod(cluster)} CTAs; the portable "
                   "maximum is 8")
    smem = _int(meta["shared_mem_bytes"], "shared_mem_bytes", lo=0)

    if not isinstance(meta["arguments"], (list, tuple)):
        raise _err("arguments", "expected a list")
    arguments = tuple(_parse_argument(a, i) for i, a in enumerate(meta["arguments"]))
    by_name: dict[str, ArgumentSpec] = {}
    for i, a in enumerate(arguments):
        if a.name in by_name:
            raise _err(f"arguments[{i}].name", f"duplicate argument name {a.name!r}")
        by_name[a.name] = a
    grid = _grid(meta["grid"], arguments, cluster)

    outputs_raw = meta.get("outputs", [])
    if not isinstance(outputs_raw, (list, tuple)):
        raise _err("outputs", "expected a list of argument names")
    outputs = tuple(_str(o, f"outputs[{i}]") for i, o in enumerate(outputs_raw))
    for i, o in enumerate(outputs):
        if o not in by_name:
            raise _err(f"outputs[{i}]", f"names no argument: {o!r}")
    if len(set(outputs)) != len(outputs):
        raise _err("outputs", f"duplicate names in {list(outputs)}")

    if not isinstance(meta["params"], (list, tuple)):
        raise _err("params", "expected a list")
    params = tuple(_parse_param(p, i, by_name) for i, p in enumerate(meta["params"]))

    spec = meta.get("spec", {})
    if not isinstance(spec, Mapping):
        raise _err("spec", f"expected an object, got {type(spec).__name__}")
    return KernelMetadata(
        version=version, key=key, entry=entry, target=target, binary=binary,
        binary_format=binary_format, grid=grid, block=block, cluster=cluster,
        shared_mem_bytes=smem, arguments=arguments, outputs=outputs, params=params,
        spec=dict(spec), raw=dict(meta),
    )


# --- the PTX entry's parameter list (a consistency check of metadata vs binary) -

_PARAM_SIZES = {"u8": 1, "s8": 1, "b8": 1, "u16": 2, "s16": 2, "b16": 2, "f16": 2,
                "u32": 4, "s32": 4, "b32": 4, "f32": 4,
                "u64": 8, "s64": 8, "b64": 8, "f64": 8}
_PARAM_TYPE_RE = re.compile(r"^\.param\b.*?\.([usbf](?:8|16|32|64))\b")
_PARAM_ARRAY_RE = re.compile(r"\[\s*(\d+)\s*\]\s*$")


def ptx_entry_param_sizes(ptx: str, entry: str) -> list[int] | None:
    """Byte sizes of the parameters of `.entry <entry>` in PTX text, or None
    when the entry or its parameter list cannot be parsed (then no check)."""
    m = re.search(r"\.entry\s+" + re.escape(entry) + r"\s*\(", ptx)
    if not m:
        m2 = re.search(r"\.entry\s+" + re.escape(entry) + r"\s*(\{|\.|$)", ptx, re.M)
        return [] if m2 else None
    end = ptx.find(")", m.end())
    if end < 0:
        return None
    body = re.sub(r"//[^\n]*|/\*.*?\*/", "", ptx[m.end():end], flags=re.S)
    parts = [p.strip() for p in body.split(",") if p.strip()]
    sizes = []
    for part in parts:
        pm = _PARAM_TYPE_RE.search(part)
        if not pm or pm.group(1) not in _PARAM_SIZES:
            return None
        n = _PARAM_SIZES[pm.group(1)]
        am = _PARAM_ARRAY_RE.search(part)
        if am:
            n *= int(am.group(1))
        sizes.append(n)
    return sizes


def param_size(p: Any) -> int:
    if isinstance(p, ScalarParam):
        return 4 if p.kind in ("i32", "f32") else 8
    return 8  # ptr and tensormap are 64-bit pointers


def param_sizes(p: Any, ranks: Mapping[str, int]) -> list[int]:
    """The byte sizes of the PTX parameters of a metadata parameter (a
    memref descriptor is 3 + 2 rank 8-byte parameters)."""
    if isinstance(p, MemrefParam):
        return [8] * param_words(p, ranks[p.arg])
    return [param_size(p)]


def check_binary_params(meta: KernelMetadata, binary: bytes) -> None:
    """For PTX binaries: the entry exists and takes exactly the metadata's params
    (count and byte sizes). Cubins: only the ELF/fatbin magic (the driver checks
    the rest at load time)."""
    if meta.binary_format == "cubin":
        if not binary.startswith((b"\x7fELF", b"\x50\xed\x55\xba")):
            raise MetadataError("binary_format: 'cubin' but the binary is neither an ELF "
                                "cubin nor a fatbin (PTX text? use binary_format 'ptx')")
        return
    text = binary.decode("utf-8", errors="replace").rstrip("\0")
    if not re.search(r"\.entry\s+" + re.escape(meta.entry) + r"\b", text):
        entries = re.findall(r"\.entry\s+([\w$]+)", text)
        raise MetadataError(f"entry: the PTX has no kernel {meta.entry!r} "
                            f"(entries: {entries})")
    sizes = ptx_entry_param_sizes(text, meta.entry)
    if sizes is None:
        return
    ranks = {a.name: len(a.shape) for a in meta.arguments}
    want = [size for p in meta.params for size in param_sizes(p, ranks)]
    if sizes != want:
        raise MetadataError(
            f"params: the PTX entry {meta.entry!r} takes {len(sizes)} parameters of "
            f"{sizes} bytes, but the metadata lists {len(want)} of {want} bytes")
