"""The GPU half of the driver: stages after ``sparse`` for sm_90a targets,
PTX -> cubin, launch metadata for :mod:`flexattn_runtime`, and the kernel
object :func:`flexattn_mlir.attention` calls on CUDA tensors.

    sparse -> gpu (flexattn-map-to-gpu) -> inlined (flexattn-inline-mods)
           -> nvvm (flexattn-lower-to-nvvm) -> ptx (gpu-module-to-binary)
"""

from __future__ import annotations

import os
from typing import Sequence

from mlir import ir

from . import cache, ptxas, targets
from .driver import CompilationError, Compiled, run_pipeline
from .options import CompileOptions
from .spec import ENTRY, AttentionSpec

__all__ = ["stages", "finish", "launch_metadata", "load_kernel", "compile_kernel", "artifact_stores"]

_TORCH_DTYPE = {"bf16": "bfloat16", "f16": "float16", "f32": "float32", "i32": "int32",
                "i64": "int64", "i8": "uint8", "i16": "int16", "f64": "float64"}


def make_gpu(mod: ir.Module, opts: CompileOptions) -> None:
    run_pipeline(mod, f"flexattn-map-to-gpu{{stages={opts.stages} pipeline={int(opts.pipeline)} "
                      f"pingpong={int(opts.pingpong)} persistent={opts.persistent}}}", "gpu")


def make_inlined(mod: ir.Module, opts: CompileOptions) -> None:
    run_pipeline(mod, "flexattn-inline-mods, canonicalize, cse", "inlined")


def make_nvvm(mod: ir.Module, opts: CompileOptions) -> None:
    run_pipeline(mod, f"flexattn-lower-to-nvvm{{chip={opts.target} opt-level=3}}", "nvvm")


def make_ptx(mod: ir.Module, opts: CompileOptions) -> None:
    run_pipeline(mod, "gpu-module-to-binary{format=isa}", "ptx")


def stages(opts: CompileOptions) -> dict:
    return {"gpu": make_gpu, "inlined": make_inlined, "nvvm": make_nvvm, "ptx": make_ptx}


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
    gpu.launch_func and argument attributes."""
    func = _host_func(mod)
    entry = func.regions[0].blocks[0]
    names = [n for n, _ in spec.arguments()]
    types = dict(spec.arguments())
    launch = None
    for op in entry.operations:
        if op.operation.name == "gpu.launch_func":
            launch = op
    if launch is None:
        raise CompilationError("flexattn-map-to-gpu made no gpu.launch_func")

    def const(v) -> int:
        return ir.IntegerAttr(v.owner.attributes["value"]).value

    operands = list(launch.operands)
    # gpu.launch_func operands: grid x3, block x3, dynamic smem, kernel args.
    grid = [const(v) for v in operands[0:3]]
    block = [const(v) for v in operands[3:6]]
    smem = const(operands[6])
    arg_attrs = func.attributes["arg_attrs"] if "arg_attrs" in func.attributes else None
    params = []
    for v in operands[7:]:
        arg_no = ir.BlockArgument(v).arg_number
        attrs = ir.DictAttr(arg_attrs[arg_no]) if arg_attrs is not None else None
        if attrs is not None and "flexattn.tensor_map" in attrs:
            tensor = ir.StringAttr(attrs["flexattn.tensor_map"]).value
            box = list(ir.DenseI64ArrayAttr(attrs["flexattn.box"]))
            params.append({"kind": "tensormap", "arg": tensor, "elem": types[tensor].elem,
                           "box": box, "swizzle": "128B", "l2_promotion": "256B",
                           "oob_fill": "zero", "interleave": "none"})
        else:
            params.append({"kind": "ptr", "arg": names[arg_no]})
    outputs = ["out"] + (["lse"] if spec.return_lse else [])
    return {
        "version": 1,
        "entry": f"{ENTRY}_kernel",
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
