"""`python -m flexattn_runtime <artifact_dir> [--check]`

Lists the kernels of an artifact directory (name, key, entry, target, grid,
block, cluster, shared memory, arguments). With --check, loads every kernel on
the current GPU (architecture, shared memory and block-size checks, module
load) and reports each; without a CUDA device it says so and skips the check.
Exit status: 0 when everything listed (and loaded, with --check), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys

from .artifacts import ArtifactStore


def _fmt_args(meta) -> str:
    return ", ".join(a.describe() for a in meta.arguments)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flexattn_runtime",
                                 description="List (and --check) flexattn kernel artifacts.")
    ap.add_argument("artifact_dir")
    ap.add_argument("--check", action="store_true",
                    help="load every kernel on the current CUDA device")
    ap.add_argument("--json", action="store_true", help="print the listing as JSON")
    ns = ap.parse_args(argv)

    try:
        store = ArtifactStore(ns.artifact_dir)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    failed = 0
    kernels = []
    for key in store.keys():
        try:
            kernels.append(store.get(key))
        except (OSError, ValueError) as e:
            failed += 1
            print(f"error: kernel {key!r}: {e}", file=sys.stderr)

    if ns.json:
        print(json.dumps([{
            "name": k.name, "key": k.key, "entry": k.entry, "target": k.metadata.target,
            "grid": list(k.metadata.grid), "block": list(k.metadata.block),
            "cluster": list(k.metadata.cluster),
            "shared_mem_bytes": k.metadata.shared_mem_bytes,
            "arguments": [{"name": a.name, "shape": list(a.shape),
                           "dtype": str(a.dtype).replace("torch.", "")}
                          for a in k.metadata.arguments],
            "outputs": list(k.metadata.outputs)} for k in kernels], indent=2))
    else:
        print(f"{store.path}: {len(store)} kernel(s)")
        for k in kernels:
            m = k.metadata
            cl = f" cluster={list(m.cluster)}" if m.cluster != (1, 1, 1) else ""
            print(f"- {k.name}  key={m.key}")
            print(f"    entry={m.entry} target={m.target} {m.binary_format} "
                  f"grid={list(m.grid)} block={list(m.block)}{cl} smem={m.shared_mem_bytes}")
            print(f"    arguments: {_fmt_args(m)}")
            if m.outputs:
                print(f"    outputs: {', '.join(m.outputs)}")

    if ns.check:
        import torch

        if not torch.cuda.is_available():
            print("--check skipped: no CUDA device (torch.cuda.is_available() is False)")
            return 1 if failed else 0
        from .driver import CudaError
        from .errors import OutOfResources, UnsupportedDevice

        dev = torch.cuda.current_device()
        print(f"checking on cuda:{dev} ({torch.cuda.get_device_name(dev)})")
        for k in kernels:
            try:
                lf = k.load(dev)
            except (CudaError, OutOfResources, UnsupportedDevice) as e:
                failed += 1
                print(f"FAIL {k.name}: {type(e).__name__}: {e}")
            else:
                print(f"ok   {k.name}: {lf.num_regs} regs, {lf.static_shared_bytes} B static "
                      f"+ {k.metadata.shared_mem_bytes} B dynamic smem, "
                      f"{lf.local_bytes} B local, max {lf.max_threads_per_block} threads")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
