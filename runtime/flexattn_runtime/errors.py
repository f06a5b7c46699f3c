"""Typed errors of flexattn_runtime.

Every failure the runtime can diagnose before touching the GPU has its own class,
so callers (and tests) can tell a bad artifact from a bad argument from a device
that cannot run the kernel:

- `MetadataError`: the kernel's JSON metadata is malformed or inconsistent with
  its binary (a compiler-side bug or a hand-edited artifact).
- `ArgumentError` / `ArgumentTypeError`: a tensor handed to `Kernel.__call__`
  does not match the metadata (device, dtype, shape, layout, alignment). Raised
  before anything is launched.
- `UnsupportedDevice`: the current GPU cannot run the binary (architecture, or
  no CUDA at all).
- `OutOfResources`: the kernel needs more shared memory or threads per block
  than the device or the compiled function allows.
- `CudaError` (in `driver`): a CUDA driver call returned an error.
"""

from __future__ import annotations


class MetadataError(ValueError):
    """Kernel metadata is malformed, or does not match its binary."""


class ArgumentError(ValueError):
    """A kernel argument does not match the kernel's metadata."""


class ArgumentTypeError(ArgumentError, TypeError):
    """A kernel argument has the wrong type or dtype (also a TypeError)."""


class UnsupportedDevice(RuntimeError):
    """The current device cannot run this kernel."""


class OutOfResources(RuntimeError):
    """The kernel needs more resources (shared memory, threads) than allowed."""

    def __init__(self, message: str, *, required: int | None = None,
                 limit: int | None = None, resource: str | None = None):
        super().__init__(message)
        self.required = required
        self.limit = limit
        self.resource = resource
