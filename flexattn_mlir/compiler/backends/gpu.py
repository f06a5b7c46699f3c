"""The GPU backend: stages after ``sparse`` for GPU targets, PTX -> cubin,
and the launch metadata :mod:`flexattn_runtime` runs the cubin with.

    [tiled -> splitkv   flexattn-split-kv{splits merge=false}: the decode kernel,
                        a tail split's tail kernel]
    sparse -> grid      flexattn-map-to-grid [{tiles}] [, flexattn-persistent-tiles]
           -> roles     flexattn-warp-specialize (sm_90a) | flexattn-multistage (sm_80)
           -> schedule  flexattn-schedule-consumers       (sm_90a)
           -> fragments flexattn-lower-fragments (part of P's exp2 on the FMA pipe
                        where exp2_poly marks the launch), flexattn-inline-mods,
                        flexattn-fold-tile-divisions, flexattn-exact-int-to-float
                        (where natural scores: sm_90a, decode)
           -> kernel    flexattn-lower-to-hopper (sm_90a) | flexattn-lower-to-ampere
                        (sm_80), gpu-kernel-outlining
           -> nvvm      flexattn-lower-to-nvvm
           -> ptx       gpu-module-to-binary

The backward (flexattn_mlir/backward.py) shares the last three:

    sparse -> grid      flexattn-map-backward-to-grid
           -> steps     flexattn-lower-backward-mma (tensor cores) |
                        flexattn-lower-backward-rows (CUDA cores, what the
                        first does not cover: backward_kernel_gap),
                        flexattn-inline-mods, flexattn-fold-tile-divisions,
                        flexattn-exact-int-to-float
           -> kernel    flexattn-lower-to-ampere (mma.sync, or on sm_90a wgmma
                        where backward_wgmma marks the launch), gpu-kernel-outlining
           -> nvvm -> ptx

Every launch fact (kernel name, grid, block, shared memory, how to encode
each tensor map) is read off the compiled IR, never restated here.
"""

from __future__ import annotations

from dataclasses import replace

from mlir import ir

from .. import cache, ptxas, targets
from ..options import CompileOptions
from ..pipeline import (Backend, CompilationError, make_differentiated, make_sparse, make_tiled,
                        run_pipeline)
from ..spec import AttentionSpec, dim_names

__all__ = ["BACKEND", "stages", "backward_stages", "finish", "launch_metadata", "binary_of"]

_TORCH_DTYPE = {"bf16": "bfloat16", "f16": "float16", "f32": "float32", "i32": "int32",
                "i64": "int64", "i8": "uint8", "i16": "int16", "f64": "float64"}
_TENSOR_MAP = "flexattn.tensor_map"  # the host argument attribute the roles pass writes
_ZERO_INIT = "flexattn.zero_init"  # the host function attribute of the backward's grid pass


def _ops(mod: ir.Module, name: str, first: bool = False) -> list:
    """The ops named `name` in `mod` (only the first with `first`)."""
    found = []

    def visit(op):
        if op.name == name:
            found.append(op)
            if first:
                return ir.WalkResult.INTERRUPT
        return ir.WalkResult.ADVANCE

    mod.operation.walk(visit)
    return found


def _first_op(mod: ir.Module, name: str):
    found = _ops(mod, name, first=True)
    if not found:
        raise CompilationError(f"no {name} in the module")
    return found[0]


def _head_dim(op) -> int:
    """The head dim of a flexattn.attention / tile_step: q's last dim."""
    return ir.MemRefType(op.operands[0].type).shape[-1]


def _value_dim(op) -> int:
    """The value head dim of a flexattn.attention / tile_step: v's last dim."""
    return ir.MemRefType(op.operands[2].type).shape[-1]


def _table_dim(op) -> int:
    """The head dim whose table rows (KV tile, tiling) a kernel takes: the
    larger of D and Dv (registers and shared memory grow with both)."""
    return max(_head_dim(op), _value_dim(op))


def _dtype(op) -> str:
    """The torch name of q's element type of a flexattn.attention / tile_step."""
    return _TORCH_DTYPE[str(ir.MemRefType(op.operands[0].type).element_type)]


def _kernel_target(op, opts: CompileOptions) -> targets.Target:
    """The table entry whose kernel runs the head dims and element type of
    ``op`` (an attention or tile_step) on ``opts.target``: see
    ``Target.kernel``. The decode kernel and the dynamic-shape kernel are
    the mma.sync kernel of ``Target.general`` (its KV tiles and block tiles)
    on every head dim."""
    return targets.target(opts.target).kernel(_head_dim(op), _value_dim(op), _dtype(op),
                                              decode=bool(opts.decode), dynamic=opts.dynamic)


def _has_op(mod: ir.Module, name: str) -> bool:
    try:
        _first_op(mod, name)
    except CompilationError:
        return False
    return True


def make_gpu_tiled(mod: ir.Module, opts: CompileOptions) -> None:
    """``flexattn-tile`` with the kernel's KV tile for the head dim where
    ``opts.tile_kv`` is 0. A block mask fixes it to its KV block, except on
    a kernel with ``block_tiles`` where the tile divides the block (then
    each block is walked as several KV tiles)."""
    op = _first_op(mod, "flexattn.attention")
    target = _kernel_target(op, opts)
    tile_kv = opts.tile_kv or target.kv_tile(_table_dim(op), _dtype(op), dynamic=opts.dynamic)
    make_tiled(mod, replace(opts, tile_kv=tile_kv), block_tiles=target.block_tiles)


def make_backward_tiled(mod: ir.Module, opts: CompileOptions) -> None:
    """``flexattn-tile`` of the backward: tile_kv 0 is the Q block."""
    make_tiled(mod, replace(opts, tile_kv=opts.tile_kv or targets.target(opts.target).q_block))


def make_splitkv(mod: ir.Module, opts: CompileOptions) -> None:
    """The split of the decode kernel (``opts.splits`` KV ranges per packed
    tile) or of a tail split's tail kernel (per Q tile), on the grid; the
    caller merges the partial rows (flexattn_runtime.splitkv)."""
    run_pipeline(mod, f"flexattn-split-kv{{splits={opts.splits} merge=false}}", "splitkv")


def make_grid(mod: ir.Module, opts: CompileOptions) -> None:
    run_pipeline(mod, [
        f"flexattn-map-to-grid{{tiles={opts.tiles}}}" if opts.tiles else "flexattn-map-to-grid",
        *([f"flexattn-persistent-tiles{{ctas={opts.persistent}}}"] if opts.persistent else []),
    ], "grid")


def make_roles(mod: ir.Module, opts: CompileOptions) -> None:
    """sm_90a: the warp-specialised wgmma kernel for the head dims it takes,
    else (and for the decode kernel's 64-row packed tiles) the mma.sync
    kernel of ``Target.general`` (``make_multistage_roles``)."""
    target = _kernel_target(_first_op(mod, "flexattn.tile_step"), opts)
    if target.name != opts.target:
        return make_multistage_roles(mod, opts)
    run_pipeline(mod, [
        f"flexattn-warp-specialize{{stages={opts.stages} "
        f"max-shared-memory={target.max_shared_per_block}}}",
        "canonicalize",
        "cse",
    ], "roles")


def make_multistage_roles(mod: ir.Module, opts: CompileOptions) -> None:
    """``flexattn-multistage`` with the target's tiling of the kernel's head
    dim and KV tile (read off its tile_step) where ``opts`` leaves it open."""
    step = _first_op(mod, "flexattn.tile_step")
    kv_tile = list(ir.DenseI64ArrayAttr(step.attributes["tile_size"]))[1]
    tiling = _kernel_target(step, opts).tiling(_table_dim(step), kv_tile, _dtype(step),
                                               decode=bool(opts.decode), dynamic=opts.dynamic)
    # The decode kernel's 64-row tile is one band of 4 warps of 16 rows.
    rows = 16 if opts.decode else opts.warp_rows or tiling.warp_rows
    q_regs = tiling.q_in_registers if opts.q_in_registers is None else opts.q_in_registers
    run_pipeline(mod, [
        f"flexattn-multistage{{stages={opts.stages} warp-rows={rows} "
        f"q-in-registers={int(q_regs)}}}",
        "canonicalize",
        "cse",
    ], "roles")


def make_schedule(mod: ir.Module, opts: CompileOptions) -> None:
    if not _has_op(mod, "flexattn.warp_specialize"):
        return  # an mma.sync kernel (make_roles): no schedule stage
    run_pipeline(mod, [
        f"flexattn-schedule-consumers{{pipeline={int(opts.pipeline)} pingpong={int(opts.pingpong)}}}",
        "canonicalize",
        "cse",
    ], "schedule")


def exp2_poly(mod: ir.Module, opts: CompileOptions) -> int:
    """The one rule for P's exponentials on the FMA pipe (FlashAttention-4's
    exp2 emulation, ``flexattn-lower-fragments`` on launches marked
    ``flexattn.exp2_poly = k``): k of every 16 elements of P on sm_90a's
    wgmma forward kernel (16-bit inputs, its own head dims), k =
    ``opts.exp2_poly`` or, where that is None, the target's choice for the
    head dim (``Target.exp2_poly``); 0 (ex2.approx for every element) on
    the mma.sync kernels (sm_80, the decode and dynamic kernels, float32
    inputs, the other head dims)."""
    if not _has_op(mod, "flexattn.warp_specialize"):
        return 0
    if opts.exp2_poly is not None:
        return opts.exp2_poly
    finalize = _first_op(mod, "flexattn.frag.finalize")
    # Its out (b, h, row, Dv) is its one operand of rank 4; Dv = D here.
    out = next(v.type for v in finalize.operands
               if isinstance(v.type, ir.MemRefType) and v.type.rank == 4)
    return targets.target(opts.target).fma_exp2_share(out.shape[-1])


def masked_raw_max(opts: CompileOptions) -> bool:
    """Whether a mask_mod without a score_mod applies to the raw scores of a
    partial tile, so its softmax takes the full tile's one fma per element
    (``flexattn-lower-fragments`` on launches marked
    ``flexattn.masked_raw_max``): the decode kernel's, where the paged
    cache's partial tiles measured faster (docs/inference.md, "Masked tiles
    on raw scores"); the prefill kernels measured no faster on sm_90a and
    spill on sm_80 with it."""
    return bool(opts.decode)


def natural_scores(mod: ir.Module, opts: CompileOptions) -> bool:
    """Whether the softmax keeps modded scores in natural units, mods(scale
    S), with log2(e) inside P's exponent fma instead of one multiply per
    score (``flexattn-lower-fragments`` on launches marked
    ``flexattn.natural_scores``): sm_90a's wgmma kernels and the decode
    kernel. sm_80's mma.sync prefill kernels spill with it at D = 128
    (docs/gpu-pipeline.md), so they, and the dynamic-shape kernel built like
    them, keep log2(e) multiplied into each score."""
    return _has_op(mod, "flexattn.warp_specialize") or bool(opts.decode)


def exact_index_floats(mod: ir.Module, opts: CompileOptions) -> bool:
    """Whether a score_mod's index -> float conversions become exact f32 sums
    (``flexattn-exact-int-to-float``; ``flexattn-lower-fragments`` bounds
    the indices on launches marked ``flexattn.exact_index_floats``): the
    kernels with natural scores (sm_90a's wgmma kernels, the decode kernel).
    sm_80's prefill kernels keep their conversions: at D = 128 and 255
    registers the hoisted row values spilled 8 bytes (relative bias,
    test/python/test_gpu_codegen_sm80.py)."""
    return natural_scores(mod, opts)


def make_fragments(mod: ir.Module, opts: CompileOptions) -> None:
    share = exp2_poly(mod, opts)
    exact = exact_index_floats(mod, opts)
    marks = [m for m, on in (("masked_raw_max", masked_raw_max(opts)),
                             ("natural_scores", natural_scores(mod, opts)),
                             ("exact_index_floats", exact)) if on]
    for launch in _ops(mod, "gpu.launch"):  # flexattn-lower-fragments reads the marks
        if share:
            launch.attributes["flexattn.exp2_poly"] = ir.IntegerAttr.get(
                ir.IntegerType.get_signless(64), share)
        for mark in marks:
            launch.attributes[f"flexattn.{mark}"] = ir.UnitAttr.get()
    run_pipeline(mod, [
        "flexattn-lower-fragments",
        "flexattn-inline-mods",
        "canonicalize",
        # A page's (block's) quotient of a column is the tile's: one
        # page-table read per tile instead of one per score.
        "flexattn-fold-tile-divisions",
        "cse",
    ] + ([
        # A mod's index -> float conversion as exact f32 sums of a row's and
        # a tile's leaves (one add per score), or an add and a subtraction.
        "flexattn-exact-int-to-float",
        "canonicalize",
        "cse",
    ] if exact else []), "fragments")


def prefetch_loads(opts: CompileOptions) -> bool:
    """Whether the mma.sync kernel's KV loops load their CTA-uniform values
    (block indices, page-table entries) iterations ahead: ``opts.prefetch_loads``,
    or where that is None the decode kernel's (docs/inference.md, "Loads a
    step ahead")."""
    return bool(opts.decode) if opts.prefetch_loads is None else opts.prefetch_loads


def hoist_loads(opts: CompileOptions) -> bool:
    """Whether the mma.sync kernel's loads before its KV loops run while
    its Q tile is copied: ``opts.hoist_loads``, or where that is None as
    ``prefetch_loads`` (docs/inference.md, "Loads a step ahead")."""
    return prefetch_loads(opts) if opts.hoist_loads is None else opts.hoist_loads


def make_kernel(mod: ir.Module, opts: CompileOptions) -> None:
    """The roles' lowering: ``flexattn-lower-to-hopper`` after
    ``flexattn-warp-specialize``, ``flexattn-lower-to-ampere`` after
    ``flexattn-multistage`` (with ``opts.fp32_precision`` for float32
    tiles); the target's shared memory per block."""
    target = targets.target(opts.target)
    hopper = _has_op(mod, "flexattn.warp_specialize")
    lowering = ("flexattn-lower-to-hopper{" if hopper
                else f"flexattn-lower-to-ampere{{fp32-precision={opts.fp32_precision} ")
    for mark, on in (("prefetch_loads", prefetch_loads(opts)), ("hoist_loads", hoist_loads(opts))):
        if not hopper and on:  # flexattn-lower-to-ampere reads the marks
            for launch in _ops(mod, "gpu.launch"):
                launch.attributes[f"flexattn.{mark}"] = ir.UnitAttr.get()
    run_pipeline(mod, [
        f"{lowering}max-shared-memory={target.max_shared_per_block}}}",
        "gpu-launch-sink-index-computations",
        "gpu-kernel-outlining",
        "canonicalize",
        "cse",
    ], "kernel")


def make_nvvm(mod: ir.Module, opts: CompileOptions) -> None:
    """NVVM for the target's chip; a dynamic-shape kernel takes memref
    descriptors (its run-time sizes) instead of bare pointers."""
    target = targets.target(opts.target)
    run_pipeline(mod, [
        f"flexattn-lower-to-nvvm{{chip={target.chip} features={target.features} opt-level=3 "
        f"bare-pointers={int(not opts.dynamic)}}}",
    ], "nvvm")


def make_ptx(mod: ir.Module, opts: CompileOptions) -> None:
    run_pipeline(mod, ["gpu-module-to-binary{format=isa}"], "ptx")


# The stages of each GPU target: grid, fragments, nvvm and ptx serve every
# one; roles, schedule and kernel are the target's (sm_90a: TMA producer +
# wgmma consumers for its own head dims, sm_80's kernel for the others;
# sm_80: every warp copies with cp.async and computes with mma.sync).
_STAGES = {
    "sm_90a": {"grid": make_grid, "roles": make_roles, "schedule": make_schedule,
               "fragments": make_fragments, "kernel": make_kernel,
               "nvvm": make_nvvm, "ptx": make_ptx},
    "sm_80": {"grid": make_grid, "roles": make_multistage_roles, "fragments": make_fragments,
              "kernel": make_kernel, "nvvm": make_nvvm,
              "ptx": make_ptx},
}


def stages(opts: CompileOptions) -> dict:
    """The GPU stages of ``opts.target``: ``tiled`` and ``sparse`` as on every
    target, then the target's own (sm_90a: TMA producer + wgmma consumers;
    sm_80: multistage cp.async + mma.sync), see ``_STAGES``. The decode
    kernel (``opts.decode``) adds ``splitkv`` after ``tiled`` (packed tiles
    from ``flexattn-tile{pack-heads}``) and runs the mma.sync roles; so does
    a tail kernel (``opts.splits`` without decode: sm_90a's own kernel
    walks each range)."""
    if opts.target not in _STAGES:
        raise CompilationError(f"no GPU stages for target {opts.target!r}")
    split = {"splitkv": make_splitkv} if opts.decode or opts.splits else {}
    return {"tiled": make_gpu_tiled, **split, "sparse": make_sparse, **_STAGES[opts.target]}


def make_backward_grid(mod: ir.Module, opts: CompileOptions) -> None:
    """One launch of the backward's tile nests; where dq is f32
    (``BackwardSpec.dq_f32``) and the tensor-core kernel runs the steps
    (:func:`backward_kernel_gap`), the dk/dv tiles add dq into it and the dq
    tiles are dropped first (``flexattn-atomic-dq``)."""
    atomic = [] if backward_kernel_gap(mod) else ["flexattn-atomic-dq"]
    run_pipeline(mod, [*atomic, "flexattn-map-backward-to-grid"], "grid")


def backward_kernel_gap(mod: ir.Module) -> str | None:
    """The one rule that picks the backward kernel: None when the
    tensor-core kernel (``flexattn-lower-backward-mma``) covers the
    backward's steps (bf16/f16, D = Dv in {64, 128}, square 64 or 128
    tiles), else why the CUDA-core kernel (``flexattn-lower-backward-rows``)
    runs it. Read off the first ``flexattn.backward_step``; the pass checks
    every step and fails rather than compile what it does not cover."""
    step = _first_op(mod, "flexattn.backward_step")
    q, k, v = (ir.MemRefType(step.operands[i].type) for i in range(3))
    elem = str(q.element_type)
    if elem not in ("bf16", "f16"):
        return f"{elem} q/k/v (the tensor-core kernel takes bf16 and f16)"
    if q.shape[-1] not in (64, 128) or v.shape[-1] != q.shape[-1]:
        return f"head dims D = {q.shape[-1]}, Dv = {v.shape[-1]} (it takes D = Dv in 64, 128)"
    tile = list(ir.DenseI64ArrayAttr(step.attributes["tile_size"]))
    if tile[0] != tile[1] or tile[0] not in (64, 128):
        return f"tiles {tile[0]} x {tile[1]} (it takes square tiles of 64 or 128)"
    return None


def make_backward_steps(mod: ir.Module, opts: CompileOptions) -> None:
    """The backward's steps on tensor cores, or on CUDA cores a thread per
    row where :func:`backward_kernel_gap` says the tensor-core kernel does
    not cover them. With wgmma (:func:`backward_wgmma`'s rule) and
    ``opts.backward_overlap`` a chunk's MMAs overlap its element math
    (``flexattn-lower-backward-mma{overlap}``)."""
    overlap = "{overlap=true}" if _backward_wgmma_target(opts) and opts.backward_overlap else ""
    lowering = ("flexattn-lower-backward-rows" if backward_kernel_gap(mod)
                else f"flexattn-lower-backward-mma{overlap}")
    run_pipeline(mod, [
        lowering,
        "flexattn-inline-mods",
        "flexattn-fold-tile-divisions",
        "convert-linalg-to-loops",
        "canonicalize",
        "cse",
        "flexattn-exact-int-to-float",
        "canonicalize",
        "cse",
    ], "steps")


def backward_wgmma(mod: ir.Module, opts: CompileOptions) -> bool:
    """The one rule for the tensor-core backward's GEMMs: warpgroup MMAs
    (``flexattn-lower-to-ampere`` on launches marked ``flexattn.wgmma``) on
    sm_90a, over everything the tensor-core kernel covers (bf16/f16, D = Dv
    in {64, 128}, square 64/128 tiles, capture gradients, the deterministic
    mode); mma.sync where ``opts.backward_wgmma`` is False and on sm_80
    targets (no wgmma); the CUDA-core kernel (``backward_kernel_gap``) has
    no MMAs."""
    return _backward_wgmma_target(opts) and _has_op(mod, "flexattn.mma")


def _backward_wgmma_target(opts: CompileOptions) -> bool:
    return opts.backward_wgmma and targets.target(opts.target).chip == "sm_90a"


def make_backward_kernel(mod: ir.Module, opts: CompileOptions) -> None:
    target = targets.target(opts.target)
    if backward_wgmma(mod, opts):  # flexattn-lower-to-ampere reads the mark
        for launch in _ops(mod, "gpu.launch"):
            launch.attributes["flexattn.wgmma"] = ir.UnitAttr.get()
    run_pipeline(mod, [
        f"flexattn-lower-to-ampere{{max-shared-memory={target.max_shared_per_block}}}",
        "gpu-launch-sink-index-computations",
        "gpu-kernel-outlining",
        "canonicalize",
        "cse",
    ], "kernel")


def backward_stages(opts: CompileOptions) -> dict:
    """The backward's GPU stages: ``differentiated``, ``tiled`` and ``sparse``
    as on the CPU, then one launch of dk/dv and dq tiles whose steps run on
    tensor cores (mma.sync, sm_80 code on every NVIDIA target; wgmma on
    sm_90a where :func:`backward_wgmma` says so) or, where
    :func:`backward_kernel_gap` says so, a thread per tile row on CUDA cores;
    the kernel reads a precomputed delta (``BackwardSpec.delta_input``)."""
    targets.target(opts.target)
    return {"differentiated": make_differentiated, "tiled": make_backward_tiled,
            "sparse": make_sparse,
            "grid": make_backward_grid, "steps": make_backward_steps,
            "kernel": make_backward_kernel, "nvvm": make_nvvm, "ptx": make_ptx}


def make_delta_kernel(mod: ir.Module, opts: CompileOptions) -> None:
    run_pipeline(mod, ["gpu-kernel-outlining", "canonicalize", "cse"], "kernel")


def delta_stages(opts: CompileOptions) -> dict:
    """The stages of the backward's preprocessing kernel
    (:class:`~flexattn_mlir.compiler.delta.DeltaSpec`, built in upstream
    dialects): outlined, lowered to NVVM, assembled."""
    targets.target(opts.target)
    return {"kernel": make_delta_kernel, "nvvm": make_nvvm, "ptx": make_ptx}


def _ptx_of(mod: ir.Module) -> str:
    for op in mod.body.operations:
        if op.operation.name == "gpu.binary":
            obj = ir.Attribute(op.attributes["objects"][0])
            from mlir.dialects import gpu as gpu_d

            return gpu_d.ObjectAttr(obj).object.decode()
    raise CompilationError("no gpu.binary in the compiled module")


def _host_func(mod: ir.Module):
    for op in mod.body.operations:
        if op.operation.name == "func.func":
            return op
    raise CompilationError("no host function in the compiled module")


def launch_metadata(mod: ir.Module, spec: AttentionSpec, opts: CompileOptions) -> dict:
    """The flexattn_runtime metadata (schema v1) read off the host function's
    gpu.launch_func (kernel, grid, block, shared memory, arguments) and the
    ``flexattn.tensor_map`` attributes of its tensor-map arguments. A
    dynamic-shape kernel's (``opts.dynamic``) arguments name their run-time
    dims (``spec.dim_names``: q ``["B", 8, "M", 64]``), its grid and the
    sizes the host passes (i64 params) are the host's arithmetic on them
    (``_size_expr``), and its memrefs are passed as memref descriptors
    (``"memref"`` params: the kernel reads its sizes from them)."""
    func = _host_func(mod)
    entry = func.regions[0].blocks[0]
    names = [n for n, _ in spec.arguments()]
    types = dict(spec.arguments())
    arguments = [{"name": n, "shape": dim_names(n, t.shape), "dtype": _TORCH_DTYPE[t.elem]}
                 for n, t in spec.arguments()]
    arg_attrs = func.attributes["arg_attrs"] if "arg_attrs" in func.attributes else None
    # flexattn-split-kv's scratch (the decode kernel): trailing arguments
    # "split_out" and "split_lse", f32, allocated and merged by the caller.
    for arg in list(entry.arguments)[len(names):]:
        attrs = ir.DictAttr(arg_attrs[arg.arg_number]) if arg_attrs is not None else None
        if attrs is None or "flexattn.split_kv" not in attrs:
            continue  # a tensor map's pointer (its own params entry below)
        role = attrs["flexattn.split_kv"]
        t = ir.MemRefType(arg.type)
        names.append(f"split_{ir.StringAttr(role).value}")
        arguments.append({"name": names[-1], "shape": list(t.shape), "dtype": "float32"})
    launch = None
    for op in entry.operations:
        if op.operation.name == "gpu.launch_func":
            launch = op
    if launch is None:
        raise CompilationError("the GPU stages made no gpu.launch_func")

    def const(v) -> int:
        return ir.IntegerAttr(v.owner.attributes["value"]).value

    view = launch.opview
    shapes = {a["name"]: a["shape"] for a in arguments}
    grid = [_size_expr(v, names, shapes)
            for v in (view.gridSizeX, view.gridSizeY, view.gridSizeZ)]
    block = [const(v) for v in (view.blockSizeX, view.blockSizeY, view.blockSizeZ)]
    smem = 0 if view.dynamicSharedMemorySize is None else const(view.dynamicSharedMemorySize)
    kernel = ir.SymbolRefAttr(launch.attributes["kernel"]).value[-1]
    params = []
    for v in view.kernelOperands:
        if not isinstance(v.owner, ir.Block):
            # A size the host computed (a dynamic kernel's Q tiles, which CSE
            # shares with the grid): an index, i64 in the kernel.
            params.append({"kind": "i64", "value": _size_expr(v, names, shapes)})
            continue
        arg_no = ir.BlockArgument(v).arg_number
        attrs = ir.DictAttr(arg_attrs[arg_no]) if arg_attrs is not None else None
        if attrs is not None and _TENSOR_MAP in attrs:
            tm = ir.DictAttr(attrs[_TENSOR_MAP])
            tensor = names[ir.IntegerAttr(tm["tensor"]).value]
            params.append({"kind": "tensormap", "arg": tensor, "elem": types[tensor].elem,
                           "box": list(ir.DenseI64ArrayAttr(tm["box"])),
                           **{key: ir.StringAttr(tm[key]).value
                              for key in ("swizzle", "l2_promotion", "oob_fill", "interleave")}})
        else:  # a dynamic-shape kernel takes memref descriptors (make_nvvm)
            params.append({"kind": "memref" if opts.dynamic else "ptr", "arg": names[arg_no]})
    if hasattr(spec, "output_names"):
        outputs = spec.output_names()
    else:
        outputs = ["out"] + (["lse"] if spec.return_lse else []) + (
            ["max_scores"] if spec.return_max else [])
    # Buffers the kernel accumulates into, zeroed by the launcher first.
    zero_init = ([names[i] for i in ir.DenseI64ArrayAttr(func.attributes[_ZERO_INIT])]
                 if _ZERO_INIT in func.attributes else [])
    forward = getattr(spec, "forward", spec)
    return {
        "version": 1,
        "entry": kernel,
        "target": opts.target,
        "grid": grid,
        "block": block,
        "shared_mem_bytes": smem,
        "params": params,
        "arguments": arguments,
        "outputs": outputs,
        "spec": {"scale": getattr(forward, "scale", None),
                 "block_size": getattr(forward, "block_size", None),
                 "compiler": cache.compiler_version(), "zero_init": zero_init},
    }


# The host's index arithmetic a dynamic kernel's grid is made of, by the
# runtime's names (flexattn_runtime.dynamic evaluates them).
_SIZE_OPS = {"arith.muli": "mul", "arith.addi": "add", "arith.subi": "sub",
             "arith.divui": "div", "arith.ceildivui": "ceildiv", "arith.remui": "rem",
             "arith.minui": "min", "arith.maxui": "max"}


def _size_expr(v, names: list, shapes: dict):
    """A launch size as the metadata writes it: an int, the name of a
    run-time dim (``"M"``: ``memref.dim`` of an argument) or ``{"op":
    "ceildiv", "args": [...]}`` over those: how a dynamic kernel's grid
    follows from the call's sizes, read off the host IR."""
    op = v.owner
    name = op.name if isinstance(op, ir.Operation) else op.operation.name
    if name == "arith.constant":
        return ir.IntegerAttr(op.attributes["value"]).value
    if name == "memref.dim":
        arg = ir.BlockArgument(op.operands[0]).arg_number
        axis = ir.IntegerAttr(op.operands[1].owner.attributes["value"]).value
        return shapes[names[arg]][axis]
    if name in _SIZE_OPS:
        return {"op": _SIZE_OPS[name], "args": [_size_expr(o, names, shapes) for o in op.operands]}
    raise CompilationError(f"the launch's size is computed by {name}, which the launch "
                           f"metadata cannot express")


def finish(mod: ir.Module, spec: AttentionSpec, opts: CompileOptions) -> dict:
    """PTX, cubin (ptxas; none found is an error) with its resource usage
    (registers, spills), and launch metadata of a compiled module."""
    ptx = _ptx_of(mod)
    meta = launch_metadata(mod, spec, opts)
    try:
        cubin, resources = ptxas.assemble(ptx, targets.target(opts.target).chip,
                                          error=CompilationError)
    except ptxas.PtxasNotFound as e:
        raise CompilationError(str(e)) from None
    meta["key"] = cache.kernel_key(spec.digest(), opts)
    return {"launch": meta, "ptx": ptx, "cubin": cubin, "resources": resources}


def binary_of(compiled: Compiled, device_cc: tuple[int, int] | None = None) -> tuple[bytes, str]:
    """The kernel binary and its format: the cubin, or, for a device of
    compute capability ``device_cc`` that cannot run it (``sm_80`` code on a
    Hopper GPU), the PTX, which the driver compiles for that device."""
    if device_cc is not None:
        from flexattn_runtime.metadata import target_incompatibility

        if target_incompatibility(compiled.options.target, "cubin", device_cc):
            return compiled.metadata["ptx"].encode(), "ptx"
    return compiled.metadata["cubin"], "cubin"


def current_capability() -> tuple[int, int] | None:
    import torch

    return tuple(torch.cuda.get_device_capability()) if torch.cuda.is_available() else None


BACKEND = Backend("gpu", targets.gpu_targets(), stages, backward_stages, delta_stages, finish)
