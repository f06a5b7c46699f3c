"""flexattn_runtime: launch compiled flexattn kernels (PTX/cubin + JSON
metadata) on torch CUDA tensors through the CUDA driver. Needs neither MLIR
nor torch-mlir: only torch and the NVIDIA driver (libcuda).

    from flexattn_runtime import ArtifactStore
    store = ArtifactStore("artifacts/")
    kernel = store.get(key)            # parses metadata; loads lazily
    kernel(q=q, k=k, v=v, out=out, lse=lse, ...)

See runtime/README.md for the metadata schema.
"""

from .artifacts import ArtifactStore, run, write_kernel
from .driver import CudaError, DeviceInfo, device_info
from .errors import (ArgumentError, ArgumentTypeError, MetadataError, OutOfResources,
                     UnsupportedDevice)
from .kernel import Kernel, LoadedFunction
from .launch import build_params, validate_args
from .metadata import KernelMetadata, parse_metadata

__version__ = "0.1.0"

__all__ = [
    "ArtifactStore", "run", "write_kernel", "Kernel", "LoadedFunction",
    "KernelMetadata", "parse_metadata", "validate_args", "build_params",
    "CudaError", "DeviceInfo", "device_info", "MetadataError", "ArgumentError", "ArgumentTypeError",
    "OutOfResources", "UnsupportedDevice",
]
