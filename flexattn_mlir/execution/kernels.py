"""The kernel table: takes a spec and options and hands on a callable kernel
(``kernel(tensors)``, the spec's arguments in order), found in this
process's table, the disk cache or a GPU artifact store, or compiled and
stored.

    CPU:  cache/cpu/<key>.o (machine code for this host) -> CpuKernel (linked, no codegen)
    GPU:  FLEXATTN_ARTIFACTS stores, cache/gpu -> flexattn_runtime.Kernel
"""

from __future__ import annotations

import os
import threading
from functools import partial
from typing import Sequence

from ..compiler import cache, driver
from ..compiler.backends.cpu import CpuKernel
from ..compiler.backends.gpu import binary_of, current_capability
from ..compiler.options import CompileOptions
from ..compiler.spec import AttentionSpec

__all__ = ["kernel_for", "clear_table", "compile_count", "table_generation", "artifact_stores",
           "load_kernel", "StoredKernel", "TailSplitKernel", "compile_kernel"]

#: Kernels this process keeps loaded (each CPU kernel holds a JIT session).
TABLE_SIZE = 256

_lock = threading.Lock()
_kernels = cache.LRU(TABLE_SIZE)
# (spec, options) -> kernel: a hit finds its kernel without hashing the key
# (specs and options are frozen dataclasses; equal ones have one key).
_kernels_by_spec = cache.LRU(TABLE_SIZE)
_cpu_cache = cache.DiskCache("cpu", ".o")
# Counts compilations in this process (tests assert cache hits with it).
compile_count = 0
#: Moves on with every clear_table (the call plans holding kernels,
#: :mod:`.call_plans`, forget them with it).
table_generation = 0


def kernel_for(spec, opts: CompileOptions):
    """The kernel of (spec, opts): from this process's table, else the disk
    cache (or, for GPUs, an artifact store), else compiled (and stored).
    FLEXATTN_DUMP_IR dumps the stages of the kernels that are compiled (a
    cache hit stays a hit). With FLEXATTN_OVERRIDE_IR set, every call
    compiles afresh and caches nothing: an overridden stage never reaches
    the caches."""
    if os.environ.get("FLEXATTN_OVERRIDE_IR"):
        return _load_or_compile(spec, opts, cache.kernel_key(spec.digest(), opts),
                                use_cache=False)
    kernel = _kernels_by_spec.get((spec, opts))
    if kernel is not None:
        return kernel
    key = cache.kernel_key(spec.digest(), opts)
    with _lock:
        kernel = _kernels.get(key)
        if kernel is None:
            kernel = _load_or_compile(spec, opts, key)
            _kernels[key] = kernel
        _kernels_by_spec[(spec, opts)] = kernel
    return kernel


def clear_table() -> None:
    """Forgets the kernels this process holds (the disk cache stays)."""
    global table_generation
    with _lock:
        table_generation += 1
        _kernels.clear()
        _kernels_by_spec.clear()


def _load_or_compile(spec, opts: CompileOptions, key: str, use_cache: bool = True):
    global compile_count
    if opts.target == "cpu":
        obj = _cpu_cache.get(key) if use_cache else None
        if obj is not None:
            return CpuKernel(obj, spec, opts)  # machine code: no code generation
        compiled = driver.compile(spec, opts, keep_ir=False)
        compile_count += 1
        kernel = CpuKernel.compile(compiled)  # it loaded: worth caching
        if use_cache:
            _cpu_cache.put(key, kernel.object)
        return kernel
    kernel = load_kernel(key) if use_cache else None
    if kernel is None:
        kernel = compile_kernel(spec, opts, key, store=use_cache)
        compile_count += 1
    return kernel


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
    """A flexattn_runtime kernel called with the spec's arguments in order;
    the arguments its metadata lists under ``zero_init`` are zeroed first.
    A decode kernel's split scratch is allocated and its ranges merged
    around the launch (flexattn_runtime.splitkv)."""

    def __init__(self, kernel):
        from flexattn_runtime.splitkv import split_arguments

        self.kernel = kernel
        names = kernel.metadata.argument_names
        self.zero_init = [names.index(n) for n in kernel.metadata.spec.get("zero_init", [])]
        self.split = bool(split_arguments(kernel.metadata))

    def __call__(self, tensors: Sequence) -> None:
        self._run(tensors)

    def _run(self, tensors: Sequence, launch=None) -> None:
        """Zeroes the ``zero_init`` arguments, launches (through ``launch``,
        a ``PreparedLaunch``, else the kernel), merges a decode kernel's
        ranges."""
        for i in self.zero_init:
            tensors[i].zero_()
        if self.split:
            from flexattn_runtime.splitkv import run_split

            run_split(self.kernel, list(tensors), launch)
        else:
            (launch or self.kernel)(list(tensors))

    def prepare(self, device):
        """What a call plan's hits run (:mod:`.call_plans`): the runtime's
        ``PreparedLaunch`` on ``device``, which checks the tensors' alignment
        and the current device only (the plan's key and guards fix their
        devices, dtypes and shapes; the plan makes them contiguous), inside
        :meth:`_run` where arguments are zeroed or ranges merged."""
        launch = self.kernel.prepare(device)
        if not self.zero_init and not self.split:
            return launch
        return partial(self._run, launch=launch)


class TailSplitKernel:
    """A tail split's two kernels (:mod:`.tail_split`) called as one: the
    main kernel on the attention's tensors, the tail kernel's KV ranges of
    the last ``rows`` rows on a second stream (flexattn_runtime.splitkv.TailSplit)."""

    def __init__(self, main: StoredKernel, tail: StoredKernel, rows: int):
        self.main, self.tail, self.rows = main, tail, rows

    def _split(self, main, tail):
        from flexattn_runtime.splitkv import TailSplit

        return TailSplit(main, tail, self.tail.kernel.metadata, self.rows)

    def __call__(self, tensors: Sequence) -> None:
        self._split(self.main.kernel, self.tail.kernel)(list(tensors))

    def prepare(self, device):
        """Both kernels' prepared launches on ``device``, split as above."""
        return self._split(self.main.kernel.prepare(device), self.tail.kernel.prepare(device))


def compile_kernel(spec: AttentionSpec, opts: CompileOptions, key: str,
                   store: bool = True) -> StoredKernel:
    """Compiles, writes the result to the cache's artifact store (when
    ``store``), loads it."""
    from flexattn_runtime import Kernel, write_kernel

    compiled = driver.compile(spec, opts, keep_ir=False)
    binary, fmt = binary_of(compiled, current_capability())
    name = f"{spec.name}-{key[:16]}"
    meta = dict(compiled.metadata["launch"], binary_format=fmt, binary=f"{name}.{fmt}")
    if store and not os.environ.get("FLEXATTN_DISABLE_CACHE"):
        write_kernel(cache.cache_dir() / "gpu", name, meta, binary)
    return StoredKernel(Kernel(meta, binary, name=name))
