"""Compile targets: one table of names, chips and hardware limits.

Everything the compiler and the API need to know about a target lives in
:data:`TARGETS`; no other file restates a chip name, an SM count or a
shared-memory limit. Where a CUDA device is present, :func:`sm_count` reads
the device (through :mod:`flexattn_runtime`) instead of the table's default.

    cpu      the ExecutionEngine (LLVM JIT on this machine)
    sm_90a   Hopper (H100/H200): TMA + wgmma, warp-specialised kernel
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Target", "TARGETS", "target", "gpu_targets", "for_device", "sm_count"]


@dataclass(frozen=True)
class Target:
    """A compile target.

    name: the ``CompileOptions.target`` string.
    kind: ``"cpu"`` or ``"cuda"``.
    chip, features: the NVVM target (``nvvm-attach-target``) and the PTX
      features the kernel needs (``+ptx83``: the tensor-map proxy fence).
    compute_capability: the devices that run the code (``sm_90a`` code runs
      only on 9.0).
    sm_count: SMs of the reference part, used for persistent CTAs when no
      device can be asked (AOT on a machine without a GPU).
    max_shared_per_block: opt-in shared memory of one CTA, bytes.
    dtypes, head_dims, kv_blocks, q_block: what the target's kernel handles
      (q/k/v element types, head dims, KV tile sizes, the Q tile rows).
    """

    name: str
    kind: str
    chip: str = ""
    features: str = ""
    compute_capability: tuple[int, int] | None = None
    sm_count: int = 0
    max_shared_per_block: int = 0
    dtypes: tuple[str, ...] = ("float32", "bfloat16", "float16")
    head_dims: tuple[int, ...] = ()
    kv_blocks: tuple[int, ...] = ()
    q_block: int = 0

    @property
    def is_gpu(self) -> bool:
        return self.kind == "cuda"


TARGETS: dict[str, Target] = {t.name: t for t in [
    Target("cpu", "cpu"),
    Target("sm_90a", "cuda", chip="sm_90a", features="+ptx83", compute_capability=(9, 0),
           sm_count=132, max_shared_per_block=232448, dtypes=("bfloat16", "float16"),
           head_dims=(64, 128), kv_blocks=(64, 128), q_block=128),
]}


def target(name: str) -> Target:
    """The table entry of ``name``; a clear error naming the choices otherwise."""
    try:
        return TARGETS[name]
    except KeyError:
        raise ValueError(f"unknown target {name!r}; expected one of {tuple(TARGETS)}") from None


def gpu_targets() -> tuple[str, ...]:
    return tuple(n for n, t in TARGETS.items() if t.is_gpu)


def for_device(device) -> Target:
    """The target of a torch device: ``cpu``, or the GPU target whose compute
    capability the CUDA device has."""
    if device.type == "cpu":
        return TARGETS["cpu"]
    gpus = ", ".join(f"{t.name} (compute capability {t.compute_capability[0]}."
                     f"{t.compute_capability[1]})" for t in TARGETS.values() if t.is_gpu)
    if device.type != "cuda":
        raise ValueError(f"query is on {device}; flexattn_mlir runs on the CPU and on CUDA "
                         f"GPUs: {gpus}")
    import torch

    cc = tuple(torch.cuda.get_device_capability(device))
    for t in TARGETS.values():
        if t.is_gpu and t.compute_capability == cc:
            return t
    raise ValueError(f"query is on a CUDA device of compute capability {cc[0]}.{cc[1]}; "
                     f"flexattn_mlir's GPU targets are {gpus}")


def sm_count(name: str, device=None) -> int:
    """SMs for persistent CTAs: read from ``device`` (a CUDA torch device)
    through flexattn_runtime when given, else the table's reference part."""
    t = target(name)
    if device is not None and getattr(device, "type", None) == "cuda":
        from flexattn_runtime import device_info

        return device_info(device.index if device.index is not None else _current_device()).sm_count
    return t.sm_count


def _current_device() -> int:
    import torch

    return torch.cuda.current_device()
