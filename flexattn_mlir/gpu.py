"""The GPU half of the driver: stages after ``sparse`` for GPU targets,
PTX -> cubin, launch metadata for :mod:`flexattn_runtime`, and the kernel
object :func:`flexattn_mlir.attention` calls on CUDA tensors.

    sparse -> grid      flexattn-map-to-grid [, flexattn-persistent-tiles]
           -> roles     flexattn-warp-specialize          (sm_90a)
           -> schedule  flexattn-schedule-consumers       (sm_90a)
           -> fragments flexattn-lower-fragments, flexattn-inline-mods
           -> kernel    flexattn-lower-to-hopper, gpu-kernel-outlining (sm_90a)
           -> nvvm      flexattn-lower-to-nvvm
           -> ptx       gpu-module-to-binary

Every launch fact (kernel name, grid, block, shared memory, how to encode
each tensor map) is read off the compiled IR, never restated here.
"""

from __future__ import annotations

import os
from typing import Sequence

from mlir import ir

from . import cache, ptxas, targets
from .driver import CompilationError, Compiled, run_pipeline
from .options import CompileOptions
from .spec import AttentionSpec

__all__ = ["stages", "finish", "launch_metadata", "load_kernel", "compile_kernel", "artifact_stores"]

_TORCH_DTYPE = {"bf16": "bfloat16", "f16": "float16", "f32": "float32", "i32": "int32",
                "i64": "int64", "i8": "uint8", "i16": "int16", "f64": "float64"}
_TENSOR_MAP = "flexattn.tensor_map"  # the host argument attribute the roles pass writes


def make_grid(mod: ir.Module, opts: CompileOptions) -> None:
    run_pipeline(mod, [
        "flexattn-map-to-grid",
        *([f"flexattn-persistent-tiles{{ctas={opts.persistent}}}"] if opts.persistent else []),
    ], "grid")


def make_roles(mod: ir.Module, opts: CompileOptions) -> None:
    run_pipeline(mod, [
        f"flexattn-warp-specialize{{stages={opts.stages}}}",
        "canonicalize",
        "cse",
    ], "roles")


def make_schedule(mod: ir.Module, opts: CompileOptions) -> None:
    run_pipeline(mod, [
        f"flexattn-schedule-consumers{{pipeline={int(opts.pipeline)} pingpong={int(opts.pingpong)}}}",
        "canonicalize",
        "cse",
    ], "schedule")


def make_fragments(mod: ir.Module, opts: CompileOptions) -> None:
    run_pipeline(mod, [
        "flexattn-lower-fragments",
        "flexattn-inline-mods",
        "canonicalize",
        "cse",
    ], "fragments")


def make_kernel(mod: ir.Module, opts: CompileOptions) -> None:
    target = targets.target(opts.target)
    run_pipeline(mod, [
        f"flexattn-lower-to-hopper{{max-shared-memory={target.max_shared_per_block}}}",
        "gpu-launch-sink-index-computations",
        "gpu-kernel-outlining",
        "canonicalize",
        "cse",
    ], "kernel")


def make_nvvm(mod: ir.Module, opts: CompileOptions) -> None:
    target = targets.target(opts.target)
    run_pipeline(mod, [
        f"flexattn-lower-to-nvvm{{chip={target.chip} features={target.features} opt-level=3}}",
    ], "nvvm")


def make_ptx(mod: ir.Module, opts: CompileOptions) -> None:
    run_pipeline(mod, ["gpu-module-to-binary{format=isa}"], "ptx")


def stages(opts: CompileOptions) -> dict:
    """The GPU stages after ``sparse``. The grid, fragments, nvvm and ptx
    stages serve every GPU target; roles, schedule and kernel are sm_90a's
    (TMA producer + wgmma consumers)."""
    if opts.target != "sm_90a":
        raise CompilationError(f"no GPU stages for target {opts.target!r}")
    return {"grid": make_grid, "roles": make_roles, "schedule": make_schedule,
            "fragments": make_fragments, "kernel": make_kernel, "nvvm": make_nvvm,
            "ptx": make_ptx}


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
    ``flexattn.tensor_map`` attributes of its tensor-map arguments."""
    func = _host_func(mod)
    entry = func.regions[0].blocks[0]
    names = [n for n, _ in spec.arguments()]
    types = dict(spec.arguments())
    launch = None
    for op in entry.operations:
        if op.operation.name == "gpu.launch_func":
            launch = op
    if launch is None:
        raise CompilationError("the GPU stages made no gpu.launch_func")

    def const(v) -> int:
        return ir.IntegerAttr(v.owner.attributes["value"]).value

    operands = list(launch.operands)
    # gpu.launch_func operands: grid x3, block x3, dynamic smem, kernel args.
    grid = [const(v) for v in operands[0:3]]
    block = [const(v) for v in operands[3:6]]
    smem = const(operands[6])
    kernel = ir.SymbolRefAttr(launch.attributes["kernel"]).value[-1]
    arg_attrs = func.attributes["arg_attrs"] if "arg_attrs" in func.attributes else None
    params = []
    for v in operands[7:]:
        arg_no = ir.BlockArgument(v).arg_number
        attrs = ir.DictAttr(arg_attrs[arg_no]) if arg_attrs is not None else None
        if attrs is not None and _TENSOR_MAP in attrs:
            tm = ir.DictAttr(attrs[_TENSOR_MAP])
            tensor = names[ir.IntegerAttr(tm["tensor"]).value]
            params.append({"kind": "tensormap", "arg": tensor, "elem": types[tensor].elem,
                           "box": list(ir.DenseI64ArrayAttr(tm["box"])),
                           **{key: ir.StringAttr(tm[key]).value
                              for key in ("swizzle", "l2_promotion", "oob_fill", "interleave")}})
        else:
            params.append({"kind": "ptr", "arg": names[arg_no]})
    outputs = ["out"] + (["lse"] if spec.return_lse else []) + (
        ["max_scores"] if spec.return_max else [])
    return {
        "version": 1,
        "entry": kernel,
        "target": opts.target,
        "grid": grid,
        "block": block,
        "shared_mem_bytes": smem,
        "params": params,
        "arguments": [{"name": n, "shape": list(t.shape), "dtype": _TORCH_DTYPE[t.elem]}
                      for n, t in spec.arguments()],
        "outputs": outputs,
        "spec": {"scale": spec.scale, "block_size": spec.block_size,
                 "compiler": cache.compiler_version()},
    }


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


def binary_of(compiled: Compiled) -> tuple[bytes, str]:
    return compiled.metadata["cubin"], "cubin"


def artifact_stores() -> list[str]:
    """Artifact directories searched for a kernel before compiling:
    ``FLEXATTN_ARTIFACTS`` (os.pathsep-separated, read-only), then the cache."""
    paths = [p for p in os.environ.get("FLEXATTN_ARTIFACTS", "").split(os.pathsep) if p]
    return paths + [str(cache.cache_dir() / "gpu")]


def load_kernel(key: str):
    """The kernel stored under ``key`` in an artifact store, or None."""
    if os.environ.get("FLEXATTN_DISABLE_CACHE"):
        return None
    from flexattn_runtime import ArtifactStore

    for path in artifact_stores():
        if not os.path.isdir(path):
            continue
        store = ArtifactStore(path)
        if key in store:
            return StoredKernel(store.get(key))
    return None


class StoredKernel:
    """A flexattn_runtime kernel called with the spec's arguments in order."""

    def __init__(self, kernel):
        self.kernel = kernel

    def __call__(self, tensors: Sequence) -> None:
        self.kernel(list(tensors))


def compile_kernel(spec: AttentionSpec, opts: CompileOptions, key: str,
                   store: bool = True) -> StoredKernel:
    """Compiles, writes the result to the cache's artifact store (when
    ``store``), loads it."""
    from flexattn_runtime import Kernel, write_kernel

    from . import driver

    compiled = driver.compile(spec, opts, keep_ir=False)
    binary, fmt = binary_of(compiled)
    name = f"{spec.name}-{key[:16]}"
    meta = dict(compiled.metadata["launch"], binary_format=fmt, binary=f"{name}.{fmt}")
    if store and not os.environ.get("FLEXATTN_DISABLE_CACHE"):
        write_kernel(cache.cache_dir() / "gpu", name, meta, binary)
    return StoredKernel(Kernel(meta, binary, name=name))
