"""Capture Python score_mod / mask_mod functions as flexattn region IR.

    fn ──lift──▶ forward(score?, b, h, q_idx, kv_idx, *captures)
       ──torch-mlir──▶ linalg-on-tensors (0-d tensors)
       ──detensorize, fold──▶ scalar arith/math + tensor.extract
       ──convert──▶ ^bb0(%score, %b, %h, %q_idx, %kv_idx, %cap0, ...): ... flexattn.yield

Tensors the mod reads (closure cells, module globals its code loads, default
arguments, and the same inside the functions it calls: ``and_masks`` and
helpers) are *lifted*: the function tree is rebuilt with those tensors
replaced by traced inputs (FRONTEND_NOTES.md section 2, approach B), so they
become the region's trailing memref arguments and the kernel's operands, never
baked constants. Python scalars the mod reads are baked into the IR and enter
the key. Results are memoised per (code objects, scalar values, capture
shapes/dtypes), so capturing an equal mod again costs a tree walk, not an
export (about 150 ms).

``torch_mlir`` is imported lazily, after ``mlir`` (section 6 of the notes).
"""

from __future__ import annotations

import builtins
import contextlib
import dis
import functools
import hashlib
import io
import json
import marshal
import sys
import logging
import math
import re
import threading
import types
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from mlir import ir
from mlir.dialects import arith, memref, tensor

from . import _native
from .mods import ModIR
from .spec import TORCH_TO_MLIR

__all__ = [
    "CapturedMod",
    "ModCaptureError",
    "capture_score_mod",
    "capture_mask_mod",
    "combine",
    "clear_memo",
    "export_count",
]

log = logging.getLogger(__name__)

# Number of torch-mlir exports done by this process (tests assert memo hits).
export_count = 0

INDEX_DTYPE = torch.int32  # the compiled path's index dtype (notes section 5)
INDEX_TYPE = "i32"
_FIXED = {"score": ("score", "b", "h", "q_idx", "kv_idx"), "mask": ("b", "h", "q_idx", "kv_idx")}


class ModCaptureError(TypeError):
    """A score_mod / mask_mod cannot be captured; the message names the mod
    and says why."""


@dataclass(frozen=True, eq=False)
class CapturedMod:
    """A captured mod: its IR, the live tensors its trailing block arguments
    receive (in order; pass them as the kernel's captures), and a key that
    depends on the IR and the captures' shapes/dtypes, not their values."""

    ir: ModIR
    captures: tuple[torch.Tensor, ...]
    key: str
    name: str = "<mod>"
    fn: Optional[Callable] = field(default=None, repr=False)  # the Python mod

    @property
    def kind(self) -> str:
        return self.ir.kind


def capture_score_mod(fn: Callable) -> CapturedMod:
    """``fn(score, b, h, q_idx, kv_idx) -> Tensor`` (any real dtype; the
    result is converted to float32, as torch does)."""
    return _capture(fn, "score")


def capture_mask_mod(fn: Callable) -> CapturedMod:
    """``fn(b, h, q_idx, kv_idx) -> bool Tensor``."""
    return _capture(fn, "mask")


# ---------------------------------------------------------------------------
# Lifting: the tree of functions a mod calls, with its tensors as inputs.
# ---------------------------------------------------------------------------

_SCALARS = (bool, int, float, complex, str, bytes, type(None), type(Ellipsis))
_STABLE = (types.ModuleType, types.BuiltinFunctionType, type, torch.dtype, torch.device,
           torch.layout, torch.memory_format)
_MAX_DEPTH = 32


class _Walk:
    """One walk over a mod's function tree. ``plan`` rebuilds it with given
    tensors; ``tensors`` are the distinct tensors found (by identity, in
    order); ``fingerprint`` is hashable, or None when some value the mod reads
    cannot be keyed by value (then the memo is bypassed).

    A plan node is ``(kind, original, payload, dirty)``; ``dirty`` says the
    subtree holds lifted tensors (a clean node rebuilds to ``original``)."""

    def __init__(self, fn):
        self.tensors: list[torch.Tensor] = []
        # Objects keyed by identity: the memo holds them, so no id is reused.
        self.pinned: list = []
        self._index: dict[int, int] = {}
        self._active: set[int] = set()
        self.memoizable = True
        self.plan, fp = self._node(fn, 0)
        self.fingerprint = fp if self.memoizable else None

    def _tensor(self, t: torch.Tensor):
        i = self._index.get(id(t))
        if i is None:
            i = self._index[id(t)] = len(self.tensors)
            self.tensors.append(t)
        fp = ("T", i, tuple(t.shape), str(t.dtype), str(t.device))
        return ("tensor", t, i, True), fp

    def _const(self, value, fp):
        return ("const", value, None, False), fp

    def _node(self, value, depth):
        if isinstance(value, torch.Tensor):
            return self._tensor(value)
        if isinstance(value, _SCALARS):
            return self._const(value, (type(value).__name__, value))
        if depth > _MAX_DEPTH or id(value) in self._active:
            self.memoizable = False
            return self._const(value, None)
        if isinstance(value, _STABLE):
            self.pinned.append(value)
            return self._const(value, ("id", id(value)))
        self._active.add(id(value))
        try:
            if isinstance(value, types.FunctionType):
                return self._function(value, depth)
            if isinstance(value, functools.partial):
                return self._partial(value, depth)
            if isinstance(value, (tuple, list)):
                kids = [self._node(v, depth + 1) for v in value]
                dirty = any(k[0][3] for k in kids)
                node = ("seq", value, (type(value), [k[0] for k in kids]), dirty)
                return node, (type(value).__name__, tuple(k[1] for k in kids))
        finally:
            self._active.discard(id(value))
        if callable(value) and not hasattr(value, "__dict__"):
            self.pinned.append(value)
            return self._const(value, ("id", id(value)))  # builtins, C callables
        if isinstance(value, dict):
            try:
                items = tuple(sorted(value.items()))
                if all(isinstance(k, _SCALARS) and isinstance(v, _SCALARS) for k, v in items):
                    return self._const(value, ("dict", items))
            except TypeError:
                pass
        # An object whose state the mod may read (an nn.Module, a config):
        # not keyed by value, so never memoised. Tensors inside it are not
        # lifted; the conversion rejects them if the mod indexes them.
        self.memoizable = False
        return self._const(value, None)

    def _partial(self, p: functools.partial, depth):
        fn = self._node(p.func, depth + 1)
        args = [self._node(a, depth + 1) for a in p.args]
        kw = {k: self._node(v, depth + 1) for k, v in p.keywords.items()}
        dirty = fn[0][3] or any(a[0][3] for a in args) or any(v[0][3] for v in kw.values())
        node = ("partial", p, (fn[0], [a[0] for a in args], {k: v[0] for k, v in kw.items()}), dirty)
        fp = ("partial", fn[1], tuple(a[1] for a in args),
              tuple(sorted((k, v[1]) for k, v in kw.items())))
        return node, fp

    def _function(self, fn: types.FunctionType, depth):
        cells = []
        for cell in fn.__closure__ or ():
            try:
                cells.append(self._node(cell.cell_contents, depth + 1))
            except ValueError:  # an empty cell
                cells.append((("empty", None, None, False), ("empty",)))
        glob = {}
        for name in _global_names(fn.__code__):
            if name in fn.__globals__:
                glob[name] = self._node(fn.__globals__[name], depth + 1)
            elif hasattr(builtins, name):
                glob[name] = self._const(getattr(builtins, name), ("builtin", name))
        defaults = [self._node(v, depth + 1) for v in fn.__defaults__ or ()]
        kwdefaults = {k: self._node(v, depth + 1) for k, v in (fn.__kwdefaults__ or {}).items()}
        dirty = any(n[0][3] for n in [*cells, *glob.values(), *defaults, *kwdefaults.values()])
        node = ("function", fn, ([c[0] for c in cells], {k: v[0] for k, v in glob.items()},
                                 [d[0] for d in defaults], {k: v[0] for k, v in kwdefaults.items()}),
                dirty)
        fp = ("fn", fn.__code__, tuple(c[1] for c in cells),
              tuple(sorted((k, v[1]) for k, v in glob.items())),
              tuple(d[1] for d in defaults), tuple(sorted((k, v[1]) for k, v in kwdefaults.items())),
              self._module_attributes(fn, glob, cells))
        return node, fp

    @staticmethod
    def _module_attributes(fn, glob, cells) -> tuple:
        """Scalars the code may read as ``module.NAME`` (they are baked into
        the IR, so they enter the key)."""
        modules = [n[0][1] for n in [*glob.values(), *cells] if isinstance(n[0][1], types.ModuleType)]
        if not modules:
            return ()
        names = _attribute_names(fn.__code__)
        out = []
        for m in modules:
            for name in names:
                value = m.__dict__.get(name)  # no getattr: it may import lazily
                if isinstance(value, _SCALARS):
                    out.append((m.__name__, name, type(value).__name__, value))
        return tuple(out)


@functools.lru_cache(maxsize=1024)
def _attribute_names(code: types.CodeType) -> tuple[str, ...]:
    """co_names of the code and of the code objects nested in it."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.update(_attribute_names(const))
    return tuple(sorted(names))


@functools.lru_cache(maxsize=1024)
def _global_names(code: types.CodeType) -> tuple[str, ...]:
    """Names the code (and the code objects nested in it) loads as globals."""
    names: list[str] = []
    for ins in dis.get_instructions(code):
        if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME") and ins.argval not in names:
            names.append(ins.argval)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names += [n for n in _global_names(const) if n not in names]
    return tuple(names)


def _rebuild(node, inputs):
    """The object of ``node`` with every lifted tensor replaced by ``inputs``."""
    kind, orig, payload, dirty = node
    if kind == "tensor":
        return inputs[payload]
    if not dirty:
        return orig
    if kind == "seq":
        typ, kids = payload
        return typ(_rebuild(k, inputs) for k in kids)
    if kind == "partial":
        fn, args, kw = payload
        return functools.partial(_rebuild(fn, inputs), *(_rebuild(a, inputs) for a in args),
                                 **{k: _rebuild(v, inputs) for k, v in kw.items()})
    assert kind == "function", kind
    cells, glob, defaults, kwdefaults = payload
    closure = tuple(
        types.CellType() if c[0] == "empty" else types.CellType(_rebuild(c, inputs)) for c in cells
    ) or None
    new_globals = orig.__globals__
    if any(n[3] for n in glob.values()):
        new_globals = dict(orig.__globals__)
        for name, n in glob.items():
            if n[3]:
                new_globals[name] = _rebuild(n, inputs)
    new = types.FunctionType(orig.__code__, new_globals, orig.__name__,
                             tuple(_rebuild(d, inputs) for d in defaults) or None, closure)
    if kwdefaults:
        new.__kwdefaults__ = {k: _rebuild(v, inputs) for k, v in kwdefaults.items()}
    new.__qualname__ = orig.__qualname__
    return new


# ---------------------------------------------------------------------------
# Capture
# ---------------------------------------------------------------------------

_lock = threading.RLock()
_memo: dict[Any, tuple[ModIR, str, list]] = {}  # -> (ir, key, pinned objects)


def _mod_name(fn) -> str:
    name = getattr(fn, "__name__", None)
    if name is None and isinstance(fn, functools.partial):
        name = getattr(fn.func, "__name__", None)
    return name or type(fn).__name__


def _check_arity(fn, kind: str, label: str) -> None:
    import inspect

    n = len(_FIXED[kind])
    if not callable(fn):
        raise ModCaptureError(f"{label} must be callable, got {type(fn).__name__}")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # builtins without a signature: the trace will tell
    try:
        sig.bind(*range(n))
    except TypeError as err:
        want = "(score, b, h, q_idx, kv_idx)" if kind == "score" else "(b, h, q_idx, kv_idx)"
        raise ModCaptureError(
            f"{label} must take {n} positional arguments {want}; its signature is "
            f"{sig}: {err}"
        ) from None


def _capture(fn, kind: str) -> CapturedMod:
    name = _mod_name(fn)
    label = f"{kind}_mod {name!r}"
    _check_arity(fn, kind, label)
    walk = _Walk(fn)
    for t in walk.tensors:
        dt = str(t.dtype).removeprefix("torch.")
        if dt not in TORCH_TO_MLIR or dt == "uint8":
            raise ModCaptureError(
                f"{label} captures a {t.dtype} tensor of shape {tuple(t.shape)}, which is not "
                f"supported; convert it (e.g. .to(torch.int32)) outside the mod"
            )
        if t.is_sparse or t.layout != torch.strided:
            raise ModCaptureError(f"{label} captures a non-strided tensor ({t.layout})")
    memo_key = None if walk.fingerprint is None else (kind, walk.fingerprint)
    with _lock:
        hit = _memo.get(memo_key) if memo_key is not None else None
        if hit is None:
            disk_key = _disk_key(walk, kind)
            mod_ir = _load_captured(disk_key)
            if mod_ir is None:
                mod_ir = _export(walk, kind, label)
                _store_captured(disk_key, mod_ir)
            digest = hashlib.sha256(
                (mod_ir.digest() + "|" + ",".join(str(t.dtype) for t in walk.tensors)).encode()
            ).hexdigest()
            hit = (mod_ir, digest, walk.pinned)
            if memo_key is not None:
                _memo[memo_key] = hit
    return CapturedMod(hit[0], tuple(walk.tensors), hit[1], name, fn)


# ---------------------------------------------------------------------------
# The disk cache of captured mods (a new process skips torch-mlir's export).
# ---------------------------------------------------------------------------

_captured_cache = None


def _stable(fp, objects: dict):
    """``fp`` with process-specific parts replaced by stable ones: code
    objects by their marshalled bytes, identity-keyed objects by their
    qualified names. None if some part has no stable form."""
    if isinstance(fp, types.CodeType):
        return ("code", hashlib.sha256(marshal.dumps(fp)).hexdigest())
    if isinstance(fp, tuple):
        if len(fp) == 2 and fp[0] == "id":
            obj = objects.get(fp[1])
            if isinstance(obj, types.ModuleType):
                return ("module", obj.__name__)
            if isinstance(obj, (torch.dtype, torch.device, torch.layout, torch.memory_format)):
                return ("torch", str(obj))
            module = getattr(obj, "__module__", None)
            qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
            return ("obj", module, qualname) if module and qualname else None
        out = []
        for part in fp:
            stable = _stable(part, objects)
            if stable is None and part is not None:
                return None
            out.append(stable)
        return tuple(out)
    return fp


def _disk_key(walk: _Walk, kind: str) -> Optional[str]:
    if walk.fingerprint is None:
        return None
    stable = _stable(walk.fingerprint, {id(o): o for o in walk.pinned})
    if stable is None:
        return None
    import torch_mlir  # noqa: F401  (its version enters the key)

    from .cache import compiler_version

    versions = (torch.__version__, getattr(torch_mlir, "__version__", "?"),
                f"py{sys.version_info[0]}.{sys.version_info[1]}", compiler_version())
    return hashlib.sha256(repr((kind, stable, versions)).encode()).hexdigest()


def _captured_store():
    global _captured_cache
    if _captured_cache is None:
        from .cache import DiskCache

        _captured_cache = DiskCache("mods", ".json")
    return _captured_cache


def _load_captured(key: Optional[str]) -> Optional[ModIR]:
    if key is None:
        return None
    data = _captured_store().get(key)
    if data is None:
        return None
    try:
        d = json.loads(data)
        return ModIR(d["kind"], d["text"], tuple(d["capture_types"]))
    except (ValueError, KeyError, TypeError):
        return None  # a damaged entry: capture again


def _store_captured(key: Optional[str], mod_ir: ModIR) -> None:
    if key is not None:
        _captured_store().put(key, json.dumps(
            {"kind": mod_ir.kind, "text": mod_ir.text,
             "capture_types": list(mod_ir.capture_types)}).encode())


def clear_memo() -> None:
    """Forget every memoised capture (the next captures export again)."""
    with _lock:
        _memo.clear()


class _ResultError(Exception):
    """Raised inside the traced forward when the mod's result is unusable."""


def _forward_module(walk: _Walk, kind: str, label: str):
    nfixed = len(_FIXED[kind])
    plan = walk.plan

    class Forward(torch.nn.Module):
        def forward(self, *args):
            fn = _rebuild(plan, args[nfixed:])
            out = fn(*args[:nfixed])
            if isinstance(out, bool) or (kind == "score" and isinstance(out, (int, float))):
                out = torch.tensor(out, dtype=torch.bool if isinstance(out, bool) else torch.float32)
            if not isinstance(out, torch.Tensor):
                raise _ResultError(f"{label} must return a tensor, got {type(out).__name__}")
            if out.dim() != 0:
                raise _ResultError(
                    f"{label} must return a 0-d tensor (one value per score), got shape "
                    f"{tuple(out.shape)}"
                )
            if kind == "mask":
                if out.dtype != torch.bool:
                    raise _ResultError(f"{label} must return a bool tensor, got {out.dtype}")
                return out
            if out.is_complex():
                raise _ResultError(f"{label} must return a real tensor, got {out.dtype}")
            # torch converts score_mod's result to the score dtype (float32).
            return out.to(torch.float32)

    return Forward()


def _example_inputs(walk: _Walk, kind: str) -> list[torch.Tensor]:
    idx = [torch.tensor(v, dtype=INDEX_DTYPE) for v in (0, 0, 1, 0)]
    args = ([torch.tensor(0.5, dtype=torch.float32)] if kind == "score" else []) + idx
    return args + [t.detach().to("cpu").contiguous() for t in walk.tensors]


def _root_exception(err: BaseException) -> BaseException:
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, _ResultError):
            return err
        err = err.__cause__ or err.__context__
    return None


@contextlib.contextmanager
def _native_stderr(sink: io.StringIO):
    """Collects what C++ code (torch-mlir's diagnostics) writes to fd 2.
    Process-wide while it lasts: other threads' stderr output lands here too
    (and in the debug log on failure)."""
    import os
    import tempfile

    fd = 2
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = os.dup(fd)
        try:
            os.dup2(tmp.fileno(), fd)
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            sink.write(tmp.read().decode(errors="replace"))


def _explain(err: Exception, label: str, output: str = "") -> ModCaptureError:
    result = _root_exception(err)
    if result is not None:
        return ModCaptureError(str(result))
    chain, e = [], err
    while e is not None and len(chain) < 8:
        chain.append(e)
        e = e.__cause__ or e.__context__
    text = " ".join(f"{type(e).__name__}: {e}" for e in chain) + "\n" + output
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if "DataDependent" in text or "data-dependent" in text or "data dependent" in text:
        return ModCaptureError(
            f"{label} uses data-dependent Python control flow or conversion (an `if` on a "
            f"tensor, bool()/int()/float() of an index); write it with torch.where or tensor "
            f"ops. ({type(err).__name__}: {first})"
        )
    if isinstance(err, IndexError):
        return ModCaptureError(f"{label} indexes out of bounds while being traced: {first}")
    illegal = re.findall(r'name = "torch\.(aten\.[\w.]+)"', text) or re.findall(
        r"failed to legalize operation '([\w.]+)'", text)
    if illegal:
        return ModCaptureError(
            f"{label} uses operations torch-mlir cannot lower: {', '.join(sorted(set(illegal)))} "
            f"(e.g. mixing a Python bool into a tensor expression; use tensors throughout)"
        )
    return ModCaptureError(f"{label} could not be exported to MLIR: {type(err).__name__}: {first}")


def _export(walk: _Walk, kind: str, label: str) -> ModIR:
    global export_count
    from torch_mlir import fx  # lazily, and after `mlir` (notes section 6)

    module = _forward_module(walk, kind, label)
    args = _example_inputs(walk, kind)
    quiet = [logging.getLogger(n) for n in ("torch.fx.experimental.symbolic_shapes",
                                            "torch._dynamo", "torch.export", "torch._export")]
    levels = [lg.level for lg in quiet]
    noise = io.StringIO()
    try:
        for lg in quiet:
            lg.setLevel(logging.CRITICAL)
        with warnings.catch_warnings(), contextlib.redirect_stderr(noise), \
                contextlib.redirect_stdout(noise), _native_stderr(noise):
            warnings.simplefilter("ignore")
            text = str(fx.export_and_import(module, *args, output_type="linalg-on-tensors"))
    except ModCaptureError:
        raise
    except Exception as err:  # noqa: BLE001 - every failure becomes a clear error
        log.debug("export of %s failed; its output:\n%s", label, noise.getvalue())
        raise _explain(err, label, noise.getvalue()) from err
    finally:
        for lg, lv in zip(quiet, levels):
            lg.setLevel(lv)
        export_count += 1
    return _to_region(text, kind, label, walk.tensors)


# ---------------------------------------------------------------------------
# linalg-on-tensors -> scalar IR -> flexattn region
# ---------------------------------------------------------------------------

_PREP = "func.func(linalg-detensorize{aggressive-mode=true}), canonicalize, cse"
_CLEAN = "canonicalize, cse"
_ALLOWED_DIALECTS = ("arith", "math")


def _run(module: ir.Module, pipeline: str) -> None:
    """Runs upstream passes; a failure is ours, not the mod's: CompilationError
    with a reproducer (driver.run_pipeline)."""
    from .driver import run_pipeline

    run_pipeline(module, pipeline, "frontend")


def _owner_op(value: ir.Value):
    """The defining op of ``value``, or None for a block argument."""
    if isinstance(value.owner, ir.Block):
        return None
    return value.owner.opview if hasattr(value.owner, "opview") else value.owner


def _root_index(val: ir.Value, idx: list, label: str):
    """Walks ``tensor.extract`` indices up through unit collapse_shape and
    unit-stride extract_slice ops (notes section 1.3)."""
    index = ir.IndexType.get()
    while True:
        op = _owner_op(val)
        if op is None:
            return val, idx
        name = op.operation.name
        if name == "tensor.collapse_shape":
            src = op.operands[0]
            shape = ir.RankedTensorType(src.type).shape
            new: list = []
            for g, group in enumerate(op.attributes["reassociation"]):
                dims = [ir.IntegerAttr(d).value for d in group]
                big = [d for d in dims if shape[d] != 1]
                if len(big) > 1:
                    raise ModCaptureError(f"{label}: unsupported reshape of a captured tensor")
                new += [idx[g] if shape[d] != 1 else None for d in dims]
            idx, val = new + [None] * (len(shape) - len(new)), src
        elif name == "tensor.extract_slice":
            src = op.operands[0]
            rank = ir.RankedTensorType(src.type).rank
            if ir.RankedTensorType(op.result.type).rank != rank or any(
                s != 1 for s in op.static_strides
            ):
                raise ModCaptureError(f"{label}: unsupported slice of a captured tensor")
            dyn = iter(op.offsets)
            offs = [
                next(dyn) if o == ir.ShapedType.get_dynamic_size()
                else arith.constant(index, ir.IntegerAttr.get(index, o))
                for o in op.static_offsets
            ]
            idx = [o if i is None else arith.addi(o, i) for o, i in zip(offs, idx)]
            val = src
        else:
            return val, idx


def _fold_extracts(func_block: ir.Block, label: str) -> None:
    index = ir.IndexType.get()
    for op in list(func_block.operations):
        if op.operation.name != "tensor.extract":
            continue
        src = op.operands[0]
        if _owner_op(src) is None:
            continue
        with ir.InsertionPoint(op):
            root, idx = _root_index(src, list(op.operands[1:]), label)
            if root == src:
                continue
            zero = None
            full = []
            for i in idx:
                if i is None:
                    zero = zero or arith.constant(index, ir.IntegerAttr.get(index, 0))
                    i = zero
                full.append(i)
            new = tensor.extract(root, full)
        op.results[0].replace_all_uses_with(new)
        op.erase()


def _const_int(value: ir.Value) -> Optional[int]:
    op = _owner_op(value)
    if op is None or op.operation.name != "arith.constant":
        return None
    attr = op.attributes["value"]
    if isinstance(attr, ir.IntegerAttr):
        return attr.value
    if isinstance(attr, ir.FloatAttr):
        f = attr.value
        return int(f) if math.isfinite(f) and f == int(f) else None
    return None


def _rewrite_floordiv(func_block: ir.Block) -> None:
    """``fptosi(floor(sitofp(x) / C))`` -> ``arith.floordivsi x, C`` when C is
    an integral constant other than 0 and -1 (notes section 1.4): exact for
    every x, and no trap is possible."""
    for op in list(func_block.operations):
        if op.operation.name != "arith.fptosi":
            continue
        floor = _owner_op(op.operands[0])
        if floor is None or floor.operation.name != "math.floor":
            continue
        div = _owner_op(floor.operands[0])
        if div is None or div.operation.name != "arith.divf":
            continue
        num = _owner_op(div.operands[0])
        if num is None or num.operation.name != "arith.sitofp":
            continue
        x = num.operands[0]
        den = _owner_op(div.operands[1])
        c = None
        if den is not None and den.operation.name == "arith.sitofp":
            c = _const_int(den.operands[0])
        elif den is not None:
            c = _const_int(div.operands[1])
        if c is None or c in (0, -1) or abs(c) >= 2**31 or x.type != op.results[0].type:
            continue
        if not isinstance(x.type, ir.IntegerType):
            continue
        with ir.InsertionPoint(op):
            cst = arith.constant(x.type, ir.IntegerAttr.get(x.type, c))
            new = arith.floordivsi(x, cst)
        op.results[0].replace_all_uses_with(new)
        op.erase()


def _is_scalar(t: ir.Type) -> bool:
    return isinstance(t, (ir.IntegerType, ir.FloatType, ir.IndexType))


def _clamp_index(value: ir.Value, dim: int) -> ir.Value:
    index = ir.IndexType.get()
    lo = arith.constant(index, ir.IntegerAttr.get(index, 0))
    hi = arith.constant(index, ir.IntegerAttr.get(index, max(dim - 1, 0)))
    return arith.minsi(arith.maxsi(value, lo), hi)


def _holder_module(kind: str, capture_types: list[str]) -> str:
    caps = "".join(f", %cap{i}: {t}" for i, t in enumerate(capture_types))
    names = ", ".join(f"%cap{i}" for i in range(len(capture_types)))
    types_ = ", ".join(capture_types)
    captures = f" captures({names} : {types_})" if capture_types else ""
    return (
        f"func.func @holder(%s: f32, %i: index{caps}) -> f32 {{\n"
        f"  %r = flexattn.apply_mods %s at(%i, %i, %i, %i){captures} attributes {{masked}} : f32\n"
        f"  return %r : f32\n}}\n"
    )


def _capture_types(tensors) -> list[str]:
    from .spec import BufferType

    return [BufferType.of(t).memref for t in tensors]


def _to_region(text: str, kind: str, label: str, tensors) -> ModIR:
    nfixed = len(_FIXED[kind])
    cap_types = _capture_types(tensors)
    with _native.new_context() as ctx, ir.Location.unknown():
        try:
            module = ir.Module.parse(text)
        except ir.MLIRError as err:
            ops = sorted(set(re.findall(r"for custom op '([\w.]+)'", str(err))))
            if ops:
                raise ModCaptureError(_unsupported_message(label, ops)) from None
            raise ModCaptureError(f"{label}: the exported IR does not parse: {err}") from None
        _run(module, _PREP)
        func = module.body.operations[0]
        fblock = func.regions[0].blocks[0]
        _fold_extracts(fblock, label)
        _rewrite_floordiv(fblock)
        _run(module, _CLEAN)
        func = module.body.operations[0]
        fblock = func.regions[0].blocks[0]

        fargs = list(fblock.arguments)
        if len(fargs) != nfixed + len(tensors):
            raise ModCaptureError(f"{label}: the exported function has {len(fargs)} arguments, "
                                  f"expected {nfixed + len(tensors)}")
        # Check everything before moving anything: an error must leave
        # well-formed IR behind (a block without terminator aborts MLIR).
        _precheck(fblock, nfixed, label)

        holder_mod = ir.Module.parse(_holder_module(kind, cap_types))
        apply = holder_mod.body.operations[0].regions[0].blocks[0].operations[0]
        region = apply.regions[0 if kind == "score" else 1]
        arg_types = ([ir.F32Type.get()] if kind == "score" else []) + \
            [ir.IntegerType.get_signless(32)] * 4 + [ir.Type.parse(t) for t in cap_types]
        block = region.blocks.append(*arg_types)
        result = None
        i8 = ir.IntegerType.get_signless(8)
        for op in list(fblock.operations):
            name = op.operation.name
            if name == "tensor.extract" and _owner_op(op.operands[0]) is None:
                n = ir.BlockArgument(op.operands[0]).arg_number
                if n < nfixed:
                    op.results[0].replace_all_uses_with(block.arguments[n])
                else:
                    with ir.InsertionPoint(block):
                        # Clamp into the buffer: torch's export clamps to N,
                        # one past the end (notes section 1.1); a load must
                        # never leave the buffer.
                        shape = tuple(tensors[n - nfixed].shape)
                        idx = [_clamp_index(v, d) for v, d in zip(op.operands[1:], shape)]
                        val = memref.load(block.arguments[n], idx)
                        if tensors[n - nfixed].dtype == torch.bool:
                            zero = arith.constant(i8, ir.IntegerAttr.get(i8, 0))
                            val = arith.cmpi(arith.CmpIPredicate.ne, val, zero)
                    op.results[0].replace_all_uses_with(val)
                op.erase()
            elif name == "func.return":
                result = _result_scalar(op.operands[0], block, label)
            elif name in ("tensor.from_elements", "arith.constant") and not _is_scalar(
                    op.results[0].type):
                continue  # read through by func.return; erased with the function
            else:
                op.detach_from_parent()
                ir.InsertionPoint(block).insert(op)
        with ir.InsertionPoint(block):
            ir.Operation.create("flexattn.yield", operands=[result])
        # Drop what the move left behind (it referenced the old function).
        func.operation.erase()
        try:
            holder_mod.operation.verify()
        except ir.MLIRError as err:
            raise ModCaptureError(f"{label}: the captured region is invalid: {err}") from None
        _run(holder_mod, _CLEAN)
        apply = holder_mod.body.operations[0].regions[0].blocks[0].operations[0]
        block = apply.regions[0 if kind == "score" else 1].blocks[0]
        for op in block.operations:
            n = op.operation.name
            if not (n.split(".")[0] in _ALLOWED_DIALECTS or n in ("memref.load", "flexattn.yield")):
                raise ModCaptureError(f"{label}: unsupported operation {n} in the captured region")
        body = str(block).strip()
    names = list(_FIXED[kind]) + [f"cap{i}" for i in range(len(cap_types))]
    header, _, rest = body.partition("\n")
    printed = re.findall(r"(%[\w$.\-]+):", header)
    if len(printed) != len(names):
        raise AssertionError(f"unexpected region header {header!r}")
    rename = dict(zip(printed, ("%" + n for n in names)))
    header = "^bb0(" + ", ".join(f"{rename[p]}: {t}" for p, t in zip(
        printed, (["f32"] if kind == "score" else []) + [INDEX_TYPE] * 4 + cap_types)) + "):"
    rest = re.sub(r"%[\w$.\-]+", lambda m: rename.get(m.group(0), m.group(0)), rest)
    body = header + "\n" + rest
    return ModIR(kind, body, tuple(cap_types))


def _unsupported_message(label: str, bad: list[str]) -> str:
    names = sorted(set(bad))
    hint = ""
    if any(n.startswith("tensor.") or n == "arith.constant" for n in names):
        hint = (" (a tensor created inside the mod, or read through an object the frontend "
                "does not lift, e.g. an attribute of a module or class instance: create it "
                "outside the mod and refer to it by a closure variable or module global)")
    elif any(n.startswith(("linalg.", "scf.")) for n in names):
        hint = " (a non-elementwise or shape-changing operation)"
    return (f"{label} uses operations that cannot be evaluated per score element: "
            f"{', '.join(names)}{hint}")


def _precheck(fblock, nfixed: int, label: str) -> None:
    """Raises ModCaptureError unless every op of the scalarised function can
    go into a region and its result can be read."""
    bad: list[str] = []
    for op in fblock.operations:
        name = op.operation.name
        if name == "tensor.extract" and _owner_op(op.operands[0]) is None:
            continue
        if name == "func.return":
            _returned(op.operands[0], nfixed, label)
            continue
        if name in ("tensor.from_elements", "arith.constant") and not _is_scalar(op.results[0].type):
            continue
        types_ = [v.type for v in op.operands] + [r.type for r in op.results]
        if name.split(".")[0] not in _ALLOWED_DIALECTS or not all(map(_is_scalar, types_)):
            bad.append(name)
    if bad:
        raise ModCaptureError(_unsupported_message(label, bad))


def _returned(value, nfixed: int, label: str):
    """How the function's result is read: ("arg", n), ("scalar", value) or
    ("splat", attribute)."""
    op = _owner_op(value)
    if op is None:  # returns one of its inputs unchanged
        n = ir.BlockArgument(value).arg_number
        if n >= nfixed:
            raise ModCaptureError(f"{label} returns a captured tensor")
        return ("arg", n)
    name = op.operation.name
    if name == "tensor.from_elements" and len(op.operands) == 1:
        return ("scalar", op.operands[0])
    if name == "arith.constant":
        attr = op.attributes["value"]
        if isinstance(attr, ir.DenseElementsAttr) and attr.is_splat and not attr.type.shape:
            return ("splat", attr.get_splat_value())
    raise ModCaptureError(f"{label} returns a value the frontend cannot read ({name}); "
                          f"it must return a 0-d tensor")


def _result_scalar(value, block, label: str):
    """The scalar the function returns, as a value of ``block``."""
    how, what = _returned(value, len(block.arguments), label)
    if how == "arg":
        return block.arguments[what]
    if how == "scalar":
        return what
    with ir.InsertionPoint(block):
        return arith.constant(what.type, what)


# ---------------------------------------------------------------------------
# Combining the captures of a score_mod and a mask_mod
# ---------------------------------------------------------------------------

_CAP = re.compile(r"%cap(\d+)(?![\w$.\-])")


def _retarget(mod: CapturedMod, union: list[torch.Tensor], union_types: list[str]) -> CapturedMod:
    """``mod`` rewritten to take the captures ``union`` (a superset of its own)."""
    pos = {id(t): i for i, t in enumerate(union)}
    mapping = [pos[id(t)] for t in mod.captures]
    header, _, rest = mod.ir.text.partition("\n")
    if not header.startswith("^bb0("):
        raise ValueError(f"{mod.name}: not a region produced by the frontend")
    fixed = ", ".join(
        f"%{n}: {'f32' if n == 'score' else INDEX_TYPE}" for n in _FIXED[mod.kind]
    )
    caps = "".join(f", %cap{i}: {t}" for i, t in enumerate(union_types))
    new_header = f"^bb0({fixed}{caps}):"
    # Two steps, so %cap1 -> %cap0 never collides with an original %cap0.
    body = _CAP.sub(lambda m: f"%__cap{mapping[int(m.group(1))]}", rest)
    body = body.replace("%__cap", "%cap")
    text = new_header + "\n" + body
    mod_ir = ModIR(mod.kind, text, tuple(union_types))
    digest = hashlib.sha256(
        (mod_ir.digest() + "|" + ",".join(str(t.dtype) for t in union)).encode()
    ).hexdigest()
    return CapturedMod(mod_ir, tuple(union), digest, mod.name, mod.fn)


def combine(score: Optional[CapturedMod], mask: Optional[CapturedMod]):
    """Rewrites a captured score_mod and mask_mod to share one capture list.

    Returns ``(score', mask', captures)``: the score_mod's captures first,
    then the mask_mod's that are not the same tensor objects; each region
    takes all of them (the ones it does not read are unused arguments).
    Either mod may be None."""
    mods = [m for m in (score, mask) if m is not None]
    union: list[torch.Tensor] = []
    seen: set[int] = set()
    for m in mods:
        for t in m.captures:
            if id(t) not in seen:
                seen.add(id(t))
                union.append(t)
    union_types = _capture_types(union)
    out = []
    for m in (score, mask):
        if m is None or (list(map(id, m.captures)) == list(map(id, union))):
            out.append(m)
        else:
            out.append(_retarget(m, union, union_types))
    return out[0], out[1], tuple(union)
