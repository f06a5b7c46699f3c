"""Capture Python score_mod / mask_mod functions as flexattn region IR.

    fn ──lift──▶ forward(score?, b, h, q_idx, kv_idx, *captures)
       ──torch-mlir──▶ linalg-on-tensors (0-d tensors)
       ──detensorize, fold──▶ scalar arith/math + tensor.extract
       ──convert──▶ flexattn.mod score_mod { ^bb0(%score, %b, %h, %q_idx, %kv_idx, %cap0, ...): ... }

Tensors the mod reads (closure cells, module globals its code loads, default
arguments, and the same inside the functions it calls: ``and_masks`` and
helpers) are *lifted*: the function tree is rebuilt with those tensors
replaced by traced inputs (docs/frontend.md §2), so they
become the region's trailing memref arguments and the kernel's operands, never
baked constants. Python scalars the mod reads are baked into the IR and enter
the key. Results are memoised per (code objects, scalar values, capture
shapes/dtypes), so capturing an equal mod again costs a tree walk, not an
export (about 150 ms).

The export and the conversion to a region are in :mod:`.convert`.
``torch_mlir`` is imported lazily, after ``mlir`` (docs/frontend.md §6).
"""

from __future__ import annotations

import builtins
import dis
import functools
import hashlib
import json
import marshal
import sys
import threading
import types
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from mlir import ir

from .. import _native
from ..compiler.cache import LRU
from ..compiler.mods import FIXED_ARGS, ModIR, parse, region_text
from ..compiler.spec import TORCH_TO_MLIR
from .convert import INDEX_DTYPE  # noqa: F401  (re-exported: the index dtype)
from .convert import ModCaptureError, _capture_types, _export

__all__ = [
    "CapturedMod",
    "ModCaptureError",
    "capture_score_mod",
    "capture_mask_mod",
    "combine",
    "capture_labels",
    "replace_tensors",
    "clear_memo",
    "export_count",
    "guards_hold",
    "memo_generation",
]

# Number of torch-mlir exports done by this process (tests assert memo hits).
export_count = 0


def _count_export() -> None:
    global export_count
    export_count += 1


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
    #: The names the mod reads its captures by (``slopes``, ``tables[1]``).
    capture_names: tuple[str, ...] = ()
    #: What capturing ``fn`` again would find the same (:func:`guards_hold`);
    #: None when that cannot be told without capturing again.
    guards: Optional[tuple] = field(default=None, repr=False)

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
        # The name each tensor is read by (the first place found: a closure
        # or global variable, a default argument; "x[1]" inside a tuple).
        self.names: list[str] = []
        # Objects keyed by identity: the memo holds them, so no id is reused.
        self.pinned: list = []
        self._index: dict[int, int] = {}
        self._active: set[int] = set()
        self.memoizable = True
        # "Class.attr" / "module.attr" tensors the code reads (not liftable).
        self.attribute_tensors: list[str] = []
        self.plan, fp = self._node(fn, 0, "<mod>")
        self.fingerprint = fp if self.memoizable else None

    def _tensor(self, t: torch.Tensor, name: str):
        i = self._index.get(id(t))
        if i is None:
            i = self._index[id(t)] = len(self.tensors)
            self.tensors.append(t)
            self.names.append(name)
        fp = ("T", i, tuple(t.shape), str(t.dtype), str(t.device))
        return ("tensor", t, i, True), fp

    def _const(self, value, fp):
        return ("const", value, None, False), fp

    def _node(self, value, depth, name: str):
        if isinstance(value, torch.Tensor):
            return self._tensor(value, name)
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
                kids = [self._node(v, depth + 1, f"{name}[{i}]") for i, v in enumerate(value)]
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
        fn = self._node(p.func, depth + 1, "<fn>")
        args = [self._node(a, depth + 1, f"args[{i}]") for i, a in enumerate(p.args)]
        kw = {k: self._node(v, depth + 1, k) for k, v in p.keywords.items()}
        dirty = fn[0][3] or any(a[0][3] for a in args) or any(v[0][3] for v in kw.values())
        node = ("partial", p, (fn[0], [a[0] for a in args], {k: v[0] for k, v in kw.items()}), dirty)
        fp = ("partial", fn[1], tuple(a[1] for a in args),
              tuple(sorted((k, v[1]) for k, v in kw.items())))
        return node, fp

    def _function(self, fn: types.FunctionType, depth):
        cells = []
        code = fn.__code__
        for cell, var in zip(fn.__closure__ or (), code.co_freevars):
            try:
                cells.append(self._node(cell.cell_contents, depth + 1, var))
            except ValueError:  # an empty cell
                cells.append((("empty", None, None, False), ("empty",)))
        glob = {}
        for name in _global_names(fn.__code__):
            if name in fn.__globals__:
                glob[name] = self._node(fn.__globals__[name], depth + 1, name)
            elif hasattr(builtins, name):
                glob[name] = self._const(getattr(builtins, name), ("builtin", name))
        params = code.co_varnames[:code.co_argcount]
        defaults = [self._node(v, depth + 1, p) for v, p in zip(
            fn.__defaults__ or (), params[len(params) - len(fn.__defaults__ or ()):])]
        kwdefaults = {k: self._node(v, depth + 1, k) for k, v in (fn.__kwdefaults__ or {}).items()}
        dirty = any(n[0][3] for n in [*cells, *glob.values(), *defaults, *kwdefaults.values()])
        node = ("function", fn, ([c[0] for c in cells], {k: v[0] for k, v in glob.items()},
                                 [d[0] for d in defaults], {k: v[0] for k, v in kwdefaults.items()}),
                dirty)
        fp = ("fn", fn.__code__, tuple(c[1] for c in cells),
              tuple(sorted((k, v[1]) for k, v in glob.items())),
              tuple(d[1] for d in defaults), tuple(sorted((k, v[1]) for k, v in kwdefaults.items())),
              self._module_attributes(fn, glob, cells))
        return node, fp

    def _module_attributes(self, fn, glob, cells) -> tuple:
        """Scalars the code may read as ``module.NAME`` or ``Class.NAME``
        (they are baked into the IR, so they enter the key). A tensor read
        that way cannot be lifted to an operand: it is recorded, and
        capturing the mod fails rather than baking its current values in."""
        holders = [n[0][1] for n in [*glob.values(), *cells]
                   if isinstance(n[0][1], (types.ModuleType, type))]
        if not holders:
            return ()
        names = _attribute_names(fn.__code__)
        out = []
        for holder in holders:
            for name in names:
                value = _static_attribute(holder, name)
                label = getattr(holder, "__qualname__", None) or holder.__name__
                if isinstance(value, _SCALARS):
                    out.append((label, name, type(value).__name__, value))
                elif isinstance(value, torch.Tensor):
                    self.attribute_tensors.append(f"{label}.{name}")
        return tuple(out)


def _static_attribute(holder, name: str):
    """``holder.name`` without running descriptors or lazy imports: a
    module's own dict, or the first class in the MRO that defines it."""
    if isinstance(holder, types.ModuleType):
        return holder.__dict__.get(name)
    for klass in holder.__mro__:
        if klass is not object and name in klass.__dict__:
            return klass.__dict__[name]
    return None


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


def replace_tensors(fn: Callable, replacements: dict[int, torch.Tensor]) -> Callable:
    """``fn`` rebuilt with tensors it reads replaced: ``replacements`` maps
    ``id(old tensor)`` to the new one, wherever the mod finds it (closure
    cells, globals, defaults, the functions it calls: the places capture
    lifts tensors from). ``fn`` itself when it reads none of them."""
    walk = _Walk(fn)
    if not any(id(t) in replacements for t in walk.tensors):
        return fn
    return _rebuild(walk.plan, [replacements.get(id(t), t) for t in walk.tensors])


# ---------------------------------------------------------------------------
# Capture
# ---------------------------------------------------------------------------

_lock = threading.RLock()
#: Captures this process remembers (each entry pins the objects its key names).
MEMO_SIZE = 1024
_memo = LRU(MEMO_SIZE)  # (kind, fingerprint) -> (ir, key, pinned objects)


def _mod_name(fn) -> str:
    name = getattr(fn, "__name__", None)
    if name is None and isinstance(fn, functools.partial):
        name = getattr(fn.func, "__name__", None)
    return name or type(fn).__name__


# (code, defaults, kwdefaults, kind) of plain functions whose arity was checked.
_arity_ok: set = set()


def _check_arity(fn, kind: str, label: str) -> None:
    import inspect

    plain = type(fn) is types.FunctionType
    if plain:
        shape = (fn.__code__, len(fn.__defaults__ or ()), tuple(fn.__kwdefaults__ or ()), kind)
        if shape in _arity_ok:
            return
    n = len(FIXED_ARGS[kind])
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
    if plain:
        _arity_ok.add(shape)


def _capture(fn, kind: str) -> CapturedMod:
    name = _mod_name(fn)
    label = f"{kind}_mod {name!r}"
    _check_arity(fn, kind, label)
    walk = _Walk(fn)
    if walk.attribute_tensors:
        raise ModCaptureError(
            f"{label} reads the tensor(s) {', '.join(walk.attribute_tensors)} as an attribute "
            f"of a class or module; such tensors would be baked into the kernel as constants. "
            f"Read them from a closure variable or a module global instead, so they become "
            f"kernel operands"
        )
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
                mod_ir = _export(functools.partial(_rebuild, walk.plan), walk.tensors,
                                 walk.names, kind, label, _count_export)
                _store_captured(disk_key, mod_ir)
            digest = hashlib.sha256(
                (mod_ir.digest() + "|" + ",".join(str(t.dtype) for t in walk.tensors)).encode()
            ).hexdigest()
            hit = (mod_ir, digest, walk.pinned)
            if memo_key is not None:
                _memo[memo_key] = hit
    return CapturedMod(hit[0], tuple(walk.tensors), hit[1], name, fn, tuple(walk.names),
                       _guards(walk))


# ---------------------------------------------------------------------------
# Guards: what a memo hit depends on, checked without walking again
# ---------------------------------------------------------------------------
#
# A memo hit is decided by the walk's fingerprint, which reads closure cells,
# globals, defaults, code objects, list items and scalar attributes of
# modules and classes. The guards are those reads, each with the object it
# found (held, so its identity cannot be reused): while every read finds the
# same object (``is``) and every lifted tensor keeps its shape, dtype and
# device, capturing again would give the same IR and the same tensors. Like
# torch.compile's guards, they never read a tensor's data: the kernel reads
# the captured tensors, so values changed in place are seen without them.

_MISSING = object()
_CELL, _ATTR, _NAMES, _ITEMS, _TENSOR, _STATIC = range(6)


class _Unguarded(Exception):
    """A read the guards cannot check cheaply (a mutable dict of scalars)."""


def _guards(walk: _Walk) -> Optional[tuple]:
    if walk.fingerprint is None:
        return None
    out: list = []
    try:
        _guard_node(walk.plan, out)
    except _Unguarded:
        return None
    return tuple(out)


def _guard_node(node, out: list) -> None:
    kind, obj, payload, _ = node
    if kind == "tensor":
        out.append((_TENSOR, obj, tuple(obj.shape), obj.dtype, obj.device))
    elif kind == "seq":
        typ, kids = payload
        if not issubclass(typ, tuple):  # a list: its items may be replaced
            out.append((_ITEMS, obj, tuple(k[1] for k in kids)))
        for k in kids:
            _guard_node(k, out)
    elif kind == "partial":  # func and args are read-only; keywords is a dict
        fn, args, kw = payload
        out.append((_NAMES, obj.keywords, tuple((k, v[1]) for k, v in kw.items()), len(kw)))
        for k in (fn, *args, *kw.values()):
            _guard_node(k, out)
    elif kind == "function":
        _guard_function(obj, payload, out)
    elif kind == "const" and isinstance(obj, dict):
        raise _Unguarded


def _guard_function(fn, payload, out: list) -> None:
    cells, glob, defaults, kwdefaults = payload
    code = fn.__code__
    out.append((_ATTR, fn, "__code__", code))
    out.append((_ATTR, fn, "__defaults__", fn.__defaults__))
    out.append((_ATTR, fn, "__kwdefaults__", fn.__kwdefaults__))
    if fn.__kwdefaults__ is not None:
        out.append((_NAMES, fn.__kwdefaults__,
                    tuple((k, v[1]) for k, v in kwdefaults.items()), len(kwdefaults)))
    for cell, node in zip(fn.__closure__ or (), cells):
        out.append((_CELL, cell, _MISSING if node[0] == "empty" else node[1]))
    # Every global name the code loads, found or not (a later definition or
    # deletion changes the fingerprint).
    out.append((_NAMES, fn.__globals__,
                tuple((n, fn.__globals__.get(n, _MISSING)) for n in _global_names(code)), None))
    holders = [n[1] for n in [*glob.values(), *cells] if isinstance(n[1], (types.ModuleType, type))]
    for holder in holders:
        for name in _attribute_names(code):
            out.append((_STATIC, holder, name, _static_attribute(holder, name)))
    for node in (*cells, *glob.values(), *defaults, *kwdefaults.values()):
        _guard_node(node, out)


def guards_hold(guards: tuple) -> bool:
    """Whether every read of :attr:`CapturedMod.guards` finds what it found
    (then capturing the mod again would give the same IR and tensors)."""
    for g in guards:
        kind = g[0]
        if kind == _CELL:
            try:
                if g[1].cell_contents is not g[2]:
                    return False
            except ValueError:  # an empty cell
                if g[2] is not _MISSING:
                    return False
        elif kind == _NAMES:
            mapping = g[1]
            for name, value in g[2]:
                if mapping.get(name, _MISSING) is not value:
                    return False
            if g[3] is not None and len(mapping) != g[3]:
                return False
        elif kind == _TENSOR:
            t = g[1]
            if t.shape != g[2] or t.dtype != g[3] or t.device != g[4]:
                return False
        elif kind == _ATTR:
            if getattr(g[1], g[2]) is not g[3]:
                return False
        elif kind == _ITEMS:
            seq = g[1]
            if len(seq) != len(g[2]) or any(a is not b for a, b in zip(seq, g[2])):
                return False
        elif _static_attribute(g[1], g[2]) is not g[3]:  # _STATIC
            return False
    return True


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

    from ..compiler.cache import compiler_version

    versions = (torch.__version__, getattr(torch_mlir, "__version__", "?"),
                f"py{sys.version_info[0]}.{sys.version_info[1]}", compiler_version())
    return hashlib.sha256(repr((kind, stable, versions)).encode()).hexdigest()


def _captured_store():
    global _captured_cache
    if _captured_cache is None:
        from ..compiler.cache import DiskCache

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


#: Moves on with every clear_memo (what remembers captures elsewhere, the
#: call plans of execution/call_plans.py, forgets them with it).
memo_generation = 0


def clear_memo() -> None:
    """Forget every memoised capture (the next captures export again)."""
    global memo_generation
    with _lock:
        _memo.clear()
        memo_generation += 1


# ---------------------------------------------------------------------------
# Combining the captures of a score_mod and a mask_mod
# ---------------------------------------------------------------------------

# (mod's IR, capture mapping, union types and dtypes) -> (rewritten IR, digest).
_retargeted = LRU(1024)


def _retarget(mod: CapturedMod, union: list[torch.Tensor], union_types: list[str],
              union_names: list[str]) -> CapturedMod:
    """``mod`` rewritten to take the captures ``union`` (a superset of its
    own): its region rebuilt with the union's arguments, each read of its
    own capture ``j`` now reading the union's argument for that tensor."""
    pos = {id(t): i for i, t in enumerate(union)}
    mapping = tuple(pos[id(t)] for t in mod.captures)
    memo = (mod.ir, mapping, tuple(union_types), tuple(str(t.dtype) for t in union))
    hit = _retargeted.get(memo)
    if hit is None:
        hit = _retargeted[memo] = _retarget_ir(mod, mapping, union, union_types)
    return CapturedMod(hit[0], tuple(union), hit[1], mod.name, mod.fn, tuple(union_names))


def _retarget_ir(mod: CapturedMod, mapping: tuple[int, ...], union: list[torch.Tensor],
                 union_types: list[str]) -> tuple[ModIR, str]:
    """:func:`_retarget`'s IR (the region rebuilt on IR, not text) and its digest."""
    nfixed = len(FIXED_ARGS[mod.kind])
    arg_map = [*range(nfixed), *(nfixed + j for j in mapping)]
    with _native.new_context(), ir.Location.unknown():
        _, block = parse(mod.ir)
        text = region_text(block, mod.kind, [ir.Type.parse(t) for t in union_types], arg_map)
    mod_ir = ModIR(mod.kind, text, tuple(union_types))
    digest = hashlib.sha256(
        (mod_ir.digest() + "|" + ",".join(str(t.dtype) for t in union)).encode()
    ).hexdigest()
    return mod_ir, digest


def _union(mods) -> tuple[list[torch.Tensor], list[str], list[str]]:
    """The distinct captures of ``mods`` in order (by identity), their names,
    and labels naming the mod that reads each."""
    union: list[torch.Tensor] = []
    names: list[str] = []
    labels: list[str] = []
    seen: set[int] = set()
    for m in mods:
        for t, n in zip(m.captures, m.capture_names or ["<tensor>"] * len(m.captures)):
            if id(t) not in seen:
                seen.add(id(t))
                union.append(t)
                names.append(n)
                labels.append(f"{n} (shape {tuple(t.shape)}, captured by {m.kind}_mod {m.name!r})")
    return union, names, labels


def capture_labels(score: Optional[CapturedMod], mask: Optional[CapturedMod]) -> list[str]:
    """For messages: what each capture of :func:`combine`'s list is, e.g.
    ``"slopes (shape (16,), captured by score_mod 'alibi')"``."""
    return _union([m for m in (score, mask) if m is not None])[2]


def combine(score: Optional[CapturedMod], mask: Optional[CapturedMod]):
    """Rewrites a captured score_mod and mask_mod to share one capture list.

    Returns ``(score', mask', captures)``: the score_mod's captures first,
    then the mask_mod's that are not the same tensor objects; each region
    takes all of them (the ones it does not read are unused arguments).
    Either mod may be None."""
    union, names, _ = _union([m for m in (score, mask) if m is not None])
    union_types = _capture_types(union)
    out = []
    for m in (score, mask):
        if m is None or (list(map(id, m.captures)) == list(map(id, union))):
            out.append(m)
        else:
            out.append(_retarget(m, union, union_types, names))
    return out[0], out[1], tuple(union)
