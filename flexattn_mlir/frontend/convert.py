"""Export a lifted score_mod / mask_mod with torch-mlir and convert it to a
flexattn region body.

    forward(score?, b, h, q_idx, kv_idx, *captures)   (frontend: the lifted mod)
       ──torch-mlir──▶ linalg-on-tensors (0-d tensors)
       ──detensorize, fold──▶ scalar arith/math + tensor.extract
       ──convert──▶ flexattn.mod score_mod { ^bb0(%score, %b, %h, %q_idx, %kv_idx, %cap0, ...): ... }

The export traces ``forward`` on 0-d example inputs; every failure (data-
dependent control flow, an operation torch-mlir cannot lower, an unusable
result) becomes a :class:`ModCaptureError` that names the mod and says why.
The conversion scalarises the exported function (``linalg-detensorize``),
folds reshapes and slices of captured tensors into their loads (each index a
``flexattn.check_index`` of the index the mod computed: torch's semantics,
see flexattn_mlir.masks.index_checks), turns ``floor(x / C)`` back into
``arith.floordivsi``, and moves the scalar ops into the region of a
``flexattn.mod`` op whose trailing arguments are the captures. Only ``arith`` / ``math``
ops, ``memref.load`` and ``flexattn.check_index`` may remain.

``torch_mlir`` is imported lazily, after ``mlir`` (docs/frontend.md §6).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import re
import warnings
from typing import Callable, Optional, Sequence

import torch
from mlir import ir
from mlir.dialects import arith, memref, tensor

from .. import _native
from ..compiler.mods import FIXED_ARGS, ModIR, holder, holder_region, new_block, region_text
from ..dialects import flexattn as fa
from .index_reads import ScalarIndexReads

log = logging.getLogger(__name__)

INDEX_DTYPE = torch.int32  # the compiled path's index dtype (docs/frontend.md §5)
INDEX_TYPE = "i32"
_FIXED = FIXED_ARGS


class ModCaptureError(TypeError):
    """A score_mod / mask_mod cannot be captured; the message names the mod
    and says why."""

    __module__ = "flexattn_mlir.frontend"  # its public home (re-exported there)


# ---------------------------------------------------------------------------
# torch-mlir export
# ---------------------------------------------------------------------------


class _ResultError(Exception):
    """Raised inside the traced forward when the mod's result is unusable."""


def _forward_module(build: Callable, kind: str, label: str):
    nfixed = len(_FIXED[kind])

    class Forward(torch.nn.Module):
        def forward(self, *args):
            fn = build(args[nfixed:])
            with ScalarIndexReads():  # t[i] without a data-dependent guard
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


def _example_inputs(tensors: Sequence[torch.Tensor], kind: str) -> list[torch.Tensor]:
    idx = [torch.tensor(v, dtype=INDEX_DTYPE) for v in (0, 0, 1, 0)]
    args = ([torch.tensor(0.5, dtype=torch.float32)] if kind == "score" else []) + idx
    return args + [t.detach().to("cpu").contiguous() for t in tensors]


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


def _export(build: Callable, tensors: Sequence[torch.Tensor], names: Sequence[str], kind: str,
            label: str, on_export: Callable[[], None]) -> ModIR:
    """Exports ``build(captures)`` (the mod with its tensors replaced by the
    given inputs) and converts it to a region taking ``tensors`` as captures.
    ``on_export`` is called once the export has been attempted (the
    frontend's ``export_count``)."""
    from torch_mlir import fx  # lazily, and after `mlir` (docs/frontend.md §6)

    module = _forward_module(build, kind, label)
    args = _example_inputs(tensors, kind)
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
        on_export()
    return _to_region(text, kind, label, tensors, names)


# ---------------------------------------------------------------------------
# linalg-on-tensors -> scalar IR -> flexattn region
# ---------------------------------------------------------------------------

_PREP = "func.func(linalg-detensorize{aggressive-mode=true}), canonicalize, cse"
_CLEAN = "canonicalize, cse"
_ALLOWED_DIALECTS = ("arith", "math")


def _run(module: ir.Module, pipeline: str) -> None:
    """Runs upstream passes; a failure is ours, not the mod's: CompilationError
    with a reproducer (driver.run_pipeline)."""
    from ..compiler.driver import run_pipeline

    run_pipeline(module, pipeline, "frontend")


def _owner_op(value: ir.Value):
    """The defining op of ``value``, or None for a block argument."""
    if isinstance(value.owner, ir.Block):
        return None
    return value.owner.opview if hasattr(value.owner, "opview") else value.owner


def _op_named(value: ir.Value, name: str):
    """The op defining ``value`` if it is a ``name`` op, else None."""
    op = _owner_op(value)
    return op if op is not None and op.operation.name == name else None


def _commuted(op, match: Callable[[ir.Value], bool]):
    """The operand of a commutative binary ``op`` other than the one
    ``match`` accepts, or None."""
    a, b = op.operands
    return a if match(b) else b if match(a) else None


def _is_const(value: ir.Value, v: int) -> bool:
    return _const_int(value) == v


def _is_cmp(value: ir.Value, predicate, lhs: ir.Value) -> bool:
    """Whether ``value`` is ``arith.cmpi predicate, lhs, 0``."""
    cmp = _op_named(value, "arith.cmpi")
    return (cmp is not None and ir.IntegerAttr(cmp.attributes["predicate"]).value == predicate
            and cmp.operands[0] == lhs and _is_const(cmp.operands[1], 0))


def _unwrap_select(value: ir.Value, size: int):
    """``select(w >= 0, w, w + size)`` -> w (torch-mlir's second wrap)."""
    sel = _op_named(value, "arith.select")
    if sel is None:
        return None
    cond, w, alt = sel.operands
    add = _op_named(alt, "arith.addi")
    if (add is None or not _is_cmp(cond, arith.CmpIPredicate.sge, w)
            or _commuted(add, lambda v: _is_const(v, size)) != w):
        return None
    return w


def _unwrap_add(value: ir.Value, size: int):
    """``x + extui(x < 0) * size`` -> x (torch-mlir's Python-style wrap)."""
    add = _op_named(value, "arith.addi")
    if add is None:
        return None
    a, b = add.operands
    for x, term in ((a, b), (b, a)):
        mul = _op_named(term, "arith.muli")
        flag = None if mul is None else _commuted(mul, lambda v: _is_const(v, size))
        ext = None if flag is None else _op_named(flag, "arith.extui")
        if ext is not None and _is_cmp(ext.operands[0], arith.CmpIPredicate.slt, x):
            return x
    return None


def _raw_index(value: ir.Value, size: int, label: str) -> ir.Value:
    """The index a mod computed for a dimension of ``size``, from the
    position torch-mlir's export reads (``aten.select`` lowered):
    ``index_cast(min(max(select-wrap(add-wrap(x)), 0), size))``. torch-mlir
    wraps negative indices twice (``t[-2*size]`` would read ``t[0]``) and
    clamps to ``[0, size]``; both are dropped here, and flexattn.check_index
    applies torch's semantics to ``x`` instead. The wraps are absent where
    canonicalisation proved ``x >= 0``; any other shape is refused, never
    guessed (a clamp taken for the index would hide negative indices)."""
    cast = _op_named(value, "arith.index_cast")
    mn = None if cast is None else _op_named(cast.operands[0], "arith.minsi")
    inner = None if mn is None else _commuted(mn, lambda c: _is_const(c, size))
    mx = None if inner is None else _op_named(inner, "arith.maxsi")
    v = None if mx is None else _commuted(mx, lambda c: _is_const(c, 0))
    if v is None:
        raise ModCaptureError(f"{label}: unrecognised index computation for a read of a "
                              f"captured tensor (expected torch-mlir's clamp of a select)")
    w = _unwrap_select(v, size)
    x = _unwrap_add(v if w is None else w, size)
    if w is not None and x is None:
        raise ModCaptureError(f"{label}: unrecognised negative-index wrap in a read of a "
                              f"captured tensor")
    return v if x is None else x


def _checked(value: ir.Value, size: int, label: str) -> ir.Value:
    """A flexattn.check_index of the raw index behind torch-mlir's ``value``
    (``index`` type) into a dimension of ``size``; constants (which torch
    checked while tracing) stay as they are."""
    if _const_int(value) is not None:
        return value
    if size <= 0:
        raise ModCaptureError(f"{label} indexes an empty dimension of a captured tensor")
    raw = _raw_index(value, size, label)
    i64 = ir.IntegerType.get_signless(64)
    return fa.CheckIndexOp(raw, ir.IntegerAttr.get(i64, size)).result


def _root_index(val: ir.Value, idx: list, label: str):
    """Walks ``tensor.extract`` indices up through unit collapse_shape and
    unit-stride extract_slice ops (docs/frontend.md §1.3) to the captured tensor,
    each select's index going through :func:`_checked`."""
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
            src_shape = ir.RankedTensorType(src.type).shape
            if ir.RankedTensorType(op.result.type).rank != len(src_shape) or any(
                s != 1 for s in op.static_strides
            ):
                raise ModCaptureError(f"{label}: unsupported slice of a captured tensor")
            dyn = iter(op.offsets)
            offs = []
            for d, (o, n) in enumerate(zip(op.static_offsets, op.static_sizes)):
                if o != ir.ShapedType.get_dynamic_size():
                    offs.append(arith.constant(index, ir.IntegerAttr.get(index, o)))
                elif n != 1:
                    raise ModCaptureError(f"{label}: a slice of a captured tensor at a computed "
                                          f"offset is not supported; index its elements")
                else:  # t[i]: a select
                    offs.append(_checked(next(dyn), src_shape[d], label))
            idx = [o if i is None else arith.addi(o, i) for o, i in zip(offs, idx)]
            val = src
        else:
            return val, idx


def _describe_checks(idx: list, source: str) -> None:
    """Labels the check_index ops behind each position of a capture read
    with the dimension they index and the tensor (for messages)."""
    i64 = ir.IntegerType.get_signless(64)
    for d, v in enumerate(idx):
        stack = [] if v is None else [v]  # None: a unit dim read at 0
        while stack:
            op = _owner_op(stack.pop())
            if op is None:
                continue
            if op.operation.name == "flexattn.check_index":
                op.attributes["dim"] = ir.IntegerAttr.get(i64, d)
                op.attributes["source"] = ir.StringAttr.get(source)
            elif op.operation.name == "arith.addi":
                stack += list(op.operands)


def _return_read(func_block: ir.Block, nfixed: int) -> None:
    """A mod that returns a captured element itself (``return keep[b, q,
    kv]``: a slice/reshape chain, or a 0-d capture) returns it through
    extract + from_elements, the form the conversion reads."""
    ret = list(func_block.operations)[-1]
    value = ret.operands[0]
    if not isinstance(value.type, ir.RankedTensorType):
        return
    op = _owner_op(value)
    if op is None:
        if ir.BlockArgument(value).arg_number < nfixed:
            return  # returns its input unchanged: _returned reads it
    elif op.operation.name not in ("tensor.collapse_shape", "tensor.extract_slice"):
        return
    if ir.RankedTensorType(value.type).rank != 0:
        return  # not one element: _returned explains
    with ir.InsertionPoint(ret):
        scalar = tensor.extract(value, [])
        ret.operands[0] = tensor.from_elements(value.type, [scalar])


def _fold_extracts(func_block: ir.Block, label: str, names: Sequence[str],
                   nfixed: int) -> None:
    """Every read of a captured tensor becomes one ``tensor.extract`` of the
    capture with checked indices (:func:`_root_index`)."""
    index = ir.IndexType.get()
    for op in list(func_block.operations):
        if op.operation.name != "tensor.extract":
            continue
        src = op.operands[0]
        if _owner_op(src) is None and ir.BlockArgument(src).arg_number < nfixed:
            continue  # b, h, q_idx, kv_idx, score
        with ir.InsertionPoint(op):
            shape = ir.RankedTensorType(src.type).shape
            first = [_checked(i, n, label) for i, n in zip(op.operands[1:], shape)]
            root, idx = _root_index(src, first, label)
            if _owner_op(root) is not None:
                continue  # not a capture: _precheck explains
            n = ir.BlockArgument(root).arg_number - nfixed
            rtype = ir.RankedTensorType(root.type)
            _describe_checks(idx, f"{names[n]} (shape {tuple(rtype.shape)}) in {label}")
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
    an integral constant other than 0 and -1 (docs/frontend.md §1.4): exact for
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


def _capture_types(tensors) -> list[str]:
    from ..compiler.spec import BufferType

    return [BufferType.of(t).memref for t in tensors]


def _to_region(text: str, kind: str, label: str, tensors, names: Sequence[str]) -> ModIR:
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
        _return_read(fblock, nfixed)
        _fold_extracts(fblock, label, names, nfixed)
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

        capture_types = [ir.Type.parse(t) for t in cap_types]
        holder_mod, region = holder(kind)
        arg_types = ([ir.F32Type.get()] if kind == "score" else []) + \
            [ir.IntegerType.get_signless(32)] * 4 + capture_types
        block = new_block(region, kind, arg_types)
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
                        # Indices are check_index results (in the buffer
                        # by construction) or constants torch checked.
                        val = memref.load(block.arguments[n], list(op.operands[1:]))
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
            fa.YieldOp([result])
        # Drop what the move left behind (it referenced the old function).
        func.operation.erase()
        try:
            holder_mod.operation.verify()
        except ir.MLIRError as err:
            raise ModCaptureError(f"{label}: the captured region is invalid: {err}") from None
        _run(holder_mod, _CLEAN)
        block = holder_region(holder_mod).blocks[0]
        for op in block.operations:
            n = op.operation.name
            if not (n.split(".")[0] in _ALLOWED_DIALECTS
                    or n in ("memref.load", "flexattn.yield", "flexattn.check_index")):
                raise ModCaptureError(f"{label}: unsupported operation {n} in the captured region")
        body = region_text(block, kind)
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
        if name == "flexattn.check_index":
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

