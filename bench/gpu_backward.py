"""The GPU backward: gradients against torch's flex_attention and the
fwd+bwd benchmark, in the two halves of gpu_suite.py.

  compile (here, no GPU; needs flexattn_mlir):
      python bench/gpu_backward.py compile --out artifacts/bwd [--only SUBSTR]
          [--backward-mma-sync]   (the backward's GEMMs as mma.sync, not wgmma)
          [--backward-atomic-dq]  (dq added into f32 by the dk/dv tiles)
          [--backward-no-overlap] (a chunk's MMAs and element math in turn)
  run (on the H200; needs only torch + flexattn_runtime):
      python bench/gpu_backward.py run --artifacts artifacts/bwd --json $OUT/bwd.json
      [--only check,...] [--ours-only] [--peers triton,cudnn,fa4] [--reps N]

Checks: for every case, dq, dk, dv and the gradients of the captured float
tensors (ALiBi slopes, the T5 bias table: learnable biases) of our backward
kernel, fed the forward's out and lse, against torch flex_attention in float32
on the same inputs (eager; the Triton backend compiled in the input dtype is
measured against the same reference beside it, `triton_rel_err`). Every
gradient element is poisoned first and must be written. Bench: fwd+bwd at
B=4, H=16, S=8192 (our forward kernel, delta, our backward kernel) beside
torch flex (Triton; FA4 where flash-attn-4 imports) and SDPA cuDNN (causal),
counting 3.5 x 4*B*H*M*N*D*density FLOPs (density = visited blocks / all),
with the peak memory each allocates beyond its inputs.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_suite  # noqa: E402  (ROOT, the runtime path, load_zoo, Peers, _inputs)

ZOO = gpu_suite.ZOO
# (name, variant, B, Hq, Hkv, M, N, D, dtype, options)
CHECKS = (
    [(f"check_{v}_d{d}" + ("" if dt == "bfloat16" else "_f16"), v, 1, 2, 2, 600, 600, d, dt, {})
     for v in ZOO for d, dt in ((128, "bfloat16"), (64, "float16"))]
    + [(f"check_{v}_d{d}" + ("" if dt == "bfloat16" else "_f16"), v, 1, 2, 2, 600, 600, d, dt, {})
       for v in ("causal", "alibi_causal", "t5_bias") for d, dt in ((64, "bfloat16"), (128, "float16"))]
    # Whole tiles at D = 128: 64-row chunks (the overlapped halves on sm_90a),
    # where the ragged 600s above take 32-row chunks.
    + [(f"check_{v}_d128_n512", v, 1, 2, 2, 512, 512, 128, "bfloat16", {})
       for v in ("full", "causal", "document", "alibi_causal", "t5_bias", "relative_bias")]
    + [("check_gqa_causal_d128", "causal", 2, 4, 2, 384, 384, 128, "bfloat16", {}),
       ("check_alibi_m700_n300", "alibi_causal", 1, 2, 2, 700, 300, 64, "bfloat16", {})]
    # The deterministic mode (capture gradients in per-thread partial sums):
    # also run twice and compared bitwise.
    + [(f"check_{v}_d{d}_det", v, 1, 2, 2, 600, 600, d, dt, {"deterministic": True})
       for v, d, dt in (("alibi_causal", 128, "bfloat16"), ("t5_bias", 64, "float16"))]
)
BENCH = [(f"bench_{v}_d{d}", v, 4, 16, 16, 8192, 8192, d, "bfloat16", {})
         for v, d in (("causal", 128), ("causal", 64), ("sliding_window", 128),
                      ("document", 128), ("alibi_causal", 128))] + [
    ("bench_det_alibi_causal_d128", "alibi_causal", 4, 16, 16, 8192, 8192, 128, "bfloat16",
     {"deterministic": True})]
# Checked against torch flex's Triton backend too (one torch.compile each).
TRITON_CHECKS = ("check_causal_d128", "check_alibi_causal_d128", "check_t5_bias_d128",
                 "check_document_d64_f16")


# -- compile (here) -----------------------------------------------------------

def compile_all(out: str, only: str | None, device_cc: tuple[int, int] = (9, 0),
                backward_wgmma: bool = True, backward_atomic_dq: bool = False,
                backward_overlap: bool = True) -> None:
    import torch

    import flexattn_mlir as fm
    from flexattn_mlir.compiler import backward
    from flexattn_mlir.compiler.delta import delta_spec

    os.makedirs(out, exist_ok=True)
    items, manifest, first_of = [], {}, {}
    for case in CHECKS + BENCH:
        name = case[0]
        if only and only not in name:
            continue
        spec, captures = gpu_suite.case_spec(case, return_lse=True)
        opts = fm.CompileOptions(target="sm_90a", backward_wgmma=backward_wgmma,
                                 backward_atomic_dq=backward_atomic_dq,
                                 backward_overlap=backward_overlap)
        grad = [i for i, c in enumerate(captures) if c.is_floating_point()]
        q_side = []
        if spec.kv_num_blocks is not None:  # the transposed lists' shapes
            qb, kb = -(-case[5] // 128), -(-case[6] // 128)
            num = torch.empty(1, 1, kb, dtype=torch.int32, device="meta")
            idx = torch.empty(1, 1, kb, qb, dtype=torch.int32, device="meta")
            q_side = [num, idx, num, idx]
        det = bool(case[-1].get("deterministic"))
        bwd = backward.backward_spec(spec, q_side, grad, False, target="sm_90a",
                                     deterministic=det, atomic_dq=backward_atomic_dq)
        items.append((f"{name}.bwd", bwd, opts))
        # One forward (and delta) artifact per spec (artifacts are stored by
        # key: a second item of the same spec would take the first's place).
        fwd = first_of.setdefault(spec.digest(), f"{name}.fwd") if name.startswith("bench") else None
        if fwd == f"{name}.fwd":
            items.append((fwd, spec, opts))
        dspec = delta_spec(spec.out, False)  # the backward's delta
        dname = first_of.setdefault(dspec.digest(), f"{name}.delta")
        if dname == f"{name}.delta":
            items.append((dname, dspec, fm.CompileOptions(target="sm_90a")))
        torch.save([c.contiguous() for c in captures], os.path.join(out, f"{name}.captures.pt"))
        manifest[name] = (*case[:-1], {"grad_captures": grad, "deterministic": det, "fwd": fwd,
                                       "delta": dname})
    gpu_suite.write_artifacts(items, manifest, out, device_cc)


# -- run (on the GPU) ---------------------------------------------------------

def _float_captures(score_mod):
    """The float tensors a zoo score_mod closes over (learnable biases)."""
    import torch

    cells = getattr(score_mod, "__closure__", None) or ()
    return [c.cell_contents for c in cells
            if isinstance(c.cell_contents, torch.Tensor) and c.cell_contents.is_floating_point()]


def _rel(a, b) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30))


class Ours:
    """Our kernels of a case: the backward (and the forward for benchmarks)."""

    def __init__(self, store, keys, name, caps, dev, grad_captures=(), fwd=None, delta=None):
        import torch

        self.bwd = store.get(keys[f"{name}.bwd"])
        # Our delta kernel (artifacts compiled before it: torch's reduction).
        self.delta = store.get(keys[delta]) if delta in keys else None
        fwd = fwd or f"{name}.fwd"
        self.fwd = store.get(keys[fwd]) if fwd in keys else None
        self.caps = [c.to(dev) for c in caps]
        self.grad = list(grad_captures)
        self.zero = self.bwd.metadata.spec.get("zero_init", [])
        self.torch = torch

    def mask_args(self, bm):
        if bm is None:
            return {}
        return {n: getattr(bm, n) for n in (
            "kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices",
            "q_num_blocks", "q_indices", "full_q_num_blocks", "full_q_indices")}

    def backward(self, q, k, v, out, lse, dout, bm, poison=False):
        torch = self.torch
        if self.delta is not None:
            d = torch.empty(out.shape[:3], dtype=torch.float32, device=q.device)
            self.delta(dout=dout, out=out, delta=d)
        else:
            d = torch.einsum("bhmd,bhmd->bhm", dout.float(), out.float()).contiguous()
        args = dict(q=q, k=k, v=v, out=out, dout=dout, lse=lse, delta=d)
        fill = (lambda t: torch.full_like(t, float("nan"))) if poison else torch.empty_like
        args.update(dq=fill(q), dk=fill(k), dv=fill(v), **self.mask_args(bm))
        dtypes = {a.name: a.dtype for a in self.bwd.metadata.arguments}
        if dtypes["dq"] != q.dtype:  # an f32 dq the kernel adds into (atomic dq)
            args["dq"] = fill(q.float())
        args.update({f"capture{i}": c for i, c in enumerate(self.caps)})
        partial = []
        for a in self.bwd.metadata.arguments:
            if a.name.startswith("capture_grad"):
                args[a.name] = torch.empty(a.shape, dtype=torch.float32, device=q.device)
                if len(a.shape) > self.caps[self.grad[int(a.name[12:])]].dim():
                    partial.append(a.name)  # the deterministic mode's slots
            elif a.name == "index_report":  # zeroed; a nonzero row is a read out of bounds
                args[a.name] = torch.zeros(a.shape, dtype=a.dtype, device=q.device)
        for n in self.zero:
            args[n].zero_()
        self.bwd(**args)
        for n in partial:
            args[n] = args[n].sum(-1)
        args["dq"] = args["dq"].to(q.dtype)  # as flex_attention returns it
        return args

    def forward(self, q, k, v, bm):
        torch = self.torch
        B, H, M, _ = q.shape
        args = dict(q=q, k=k, v=v, out=torch.empty_like(q),
                    lse=torch.empty(B, H, M, device=q.device), **{
                        n: a for n, a in self.mask_args(bm).items() if n.startswith(("kv", "full_kv"))})
        args.update({f"capture{i}": c for i, c in enumerate(self.caps)})
        for a in self.fwd.metadata.arguments:
            if a.name == "index_report":
                args[a.name] = torch.zeros(a.shape, dtype=a.dtype, device=q.device)
        self.fwd(**args)
        return args["out"], args["lse"]


def _reference(q, k, v, dout, score_mod, bm, gqa, learn, compiled=None):
    """(out, lse, [dq, dk, dv, *dlearn]) of torch flex_attention."""
    import torch
    from torch.nn.attention.flex_attention import flex_attention

    fn = compiled or flex_attention
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    for t in learn:
        t.requires_grad_(True)
        t.grad = None
    out, lse = fn(*leaves, score_mod=score_mod, block_mask=bm, enable_gqa=gqa, return_lse=True)
    out.backward(dout.to(out.dtype))
    grads = [t.grad for t in leaves] + [t.grad.clone() if t.grad is not None else torch.zeros_like(t)
                                        for t in learn]
    for t in learn:
        t.requires_grad_(False)
    return out.detach(), lse.detach(), grads


def _selected(cases, prefix, only, zoo, dev):
    """(name, case, inputs) of the cases named `prefix...` that `only` selects."""
    for name, case in cases.items():
        if not name.startswith(prefix) or (only and not any(o in name for o in only.split(","))):
            continue
        yield name, case, gpu_suite._inputs(zoo, (*case[:-1], {}), dev)


def _dense_reference(q, k, v, dout, score_mod, mask_mod, learn):
    """float64 autograd on the whole score matrix (small cases): the
    reference where torch's eager flex_attention fails to trace a mod."""
    import torch

    B, H, M, _ = q.shape
    N = k.shape[2]
    leaves = [t.detach().double().requires_grad_() for t in (q, k, v)]
    for t in learn:
        t.requires_grad_(True)
        t.grad = None
    idx = [torch.arange(n, device=q.device).view(*[-1 if i == d else 1 for i in range(4)])
           for d, n in enumerate((B, H, M, N))]
    s = leaves[0] @ leaves[1].transpose(-1, -2) / q.shape[-1] ** 0.5
    if score_mod is not None:
        s = score_mod(s, *idx)
    if mask_mod is not None:
        s = s.masked_fill(~mask_mod(*idx), float("-inf"))
    out = torch.softmax(s, -1) @ leaves[2]
    out.backward(dout.double())
    grads = [t.grad for t in leaves] + [t.grad.clone() for t in learn]
    for t in learn:
        t.requires_grad_(False)
    return out.detach(), torch.logsumexp(s, -1).detach(), grads


def _reference_or_dense(row, zoo, variant, q, k, v, dout, score_mod, bm, gqa, learn):
    """_reference, or the float64 dense one where torch cannot trace the mod."""
    try:
        return _reference(q, k, v, dout, score_mod, bm, gqa, learn)
    except Exception as e:  # noqa: BLE001
        row["reference"] = f"float64 dense (torch flex failed: {type(e).__name__})"
        _, mask_mod = zoo.make(variant, q.shape[1], k.shape[2], q.device)
        return _dense_reference(q, k, v, dout, score_mod, mask_mod, learn)


def run_checks(store, keys, cases, artifacts, results, only, ours_only, dev, save):
    import torch

    zoo = gpu_suite.load_zoo()
    triton = None
    for name, case, (q, k, v, score_mod, bm, _) in _selected(cases, "check", only, zoo, dev):
        _, variant, B, Hq, Hkv, M, N, D, dt, over = case
        gen = torch.Generator(device=dev).manual_seed(1)
        dout = torch.randn(q.shape, device=dev, dtype=q.dtype, generator=gen)
        row = {"case": name, "variant": variant, "B": B, "Hq": Hq, "Hkv": Hkv, "M": M, "N": N,
               "D": D, "dtype": dt}
        results["checks"].append(row)
        try:
            ours = Ours(store, keys, name, torch.load(os.path.join(artifacts, f"{name}.captures.pt")),
                        dev, over["grad_captures"], over.get("fwd"), over.get("delta"))
            learn = _float_captures(score_mod) if score_mod else []
            # out and lse of the forward in the input dtype (torch flex, eager).
            ref_out, ref_lse, _ = _reference_or_dense(row, zoo, variant, q, k, v, dout, score_mod,
                                                      bm, Hq != Hkv, [])
            got = ours.backward(q, k, v, ref_out.to(q.dtype).contiguous(), ref_lse.float().contiguous(),
                                dout, bm, poison=True)
            torch.cuda.synchronize()
            mine = [got["dq"], got["dk"], got["dv"]] + [
                got[f"capture_grad{i}"] for i in range(len(over["grad_captures"]))]
            row["written"] = not any(bool(torch.isnan(g).any()) for g in mine[:3])
            if ours.delta is not None:  # our delta kernel against float64
                o64 = ref_out.to(q.dtype).double()
                want = (dout.double() * o64).sum(-1)
                row["delta_err"] = float((got["delta"].double() - want).abs().max()
                                         / (dout.double().abs() * o64.abs()).sum(-1).max())
                row["written"] = row["written"] and row["delta_err"] < 1e-6
            if over.get("deterministic"):  # a second run, bitwise the same
                again = ours.backward(q, k, v, ref_out.to(q.dtype).contiguous(),
                                      ref_lse.float().contiguous(), dout, bm, poison=True)
                torch.cuda.synchronize()
                row["bitwise_repeat"] = all(
                    torch.equal(again[n].contiguous().view(torch.uint8),
                                got[n].contiguous().view(torch.uint8))
                    for n in ["dq", "dk", "dv"] + [f"capture_grad{i}" for i in
                                                   range(len(over["grad_captures"]))])
                print(f"{name:34s} bitwise_repeat={row['bitwise_repeat']}", flush=True)
            if ours_only:
                row["ok"] = row["written"] and row.get("bitwise_repeat", True)
                print(f"{name:34s} written={row['ok']}", flush=True)
                save()
                continue
            f32 = [t.float() for t in (q, k, v)]
            _, _, ref = _reference_or_dense(row, zoo, variant, *f32, dout.float(), score_mod, bm,
                                            Hq != Hkv, learn)
            names = ["dq", "dk", "dv"] + [f"dcapture{i}" for i in range(len(learn))]
            row["rel_err"] = {n: _rel(a, b) for n, a, b in zip(names, mine, ref)}
            row["learnable"] = len(learn)
            if name in TRITON_CHECKS:
                if triton is None:
                    from torch.nn.attention.flex_attention import flex_attention

                    triton = torch.compile(flex_attention, dynamic=False)
                _, _, tri = _reference(q, k, v, dout, score_mod, bm, Hq != Hkv, learn, triton)
                row["triton_rel_err"] = {n: _rel(a, b) for n, a, b in zip(names, tri, ref)}
                row["ours_vs_triton"] = {n: _rel(a, b) for n, a, b in zip(names, mine, tri)}
            worst = max(row["rel_err"].values())
            row["ok"] = (row["written"] and worst < (3e-2 if dt == "bfloat16" else 1e-2)
                         and row.get("bitwise_repeat", True))
            print(f"{name:34s} " + " ".join(f"{n}={e:.1e}" for n, e in row["rel_err"].items())
                  + f" ok={row['ok']}", flush=True)
        except Exception as e:  # noqa: BLE001 - report and go on
            row["error"] = f"{type(e).__name__}: {e}"[:400]
            print(name, "ERROR", row["error"], flush=True)
        save()


def run_bench(store, keys, cases, artifacts, results, only, reps, peers, dev, save):
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.attention.flex_attention import flex_attention

    zoo = gpu_suite.load_zoo()
    compiled = {"triton": torch.compile(flex_attention, dynamic=False)}
    if "fa4" in peers:
        from functools import partial

        compiled["fa4"] = torch.compile(partial(flex_attention, kernel_options={"BACKEND": "FLASH"}),
                                        dynamic=False)

    def timeit(fn):
        return gpu_suite.median_ms(fn, reps, warmup=1)

    def peak(fn):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20

    for name, case, (q, k, v, score_mod, bm, density) in _selected(cases, "bench", only, zoo, dev):
        _, variant, B, Hq, Hkv, M, N, D, dt, over = case
        dout = torch.randn_like(q)
        flops = 3.5 * 4 * B * Hq * M * N * D * density
        row = {"case": name, "variant": variant, "B": B, "H": Hq, "S": M, "D": D,
               "density": density, "learnable": bool(over["grad_captures"])}
        results["bench"].append(row)
        try:
            ours = Ours(store, keys, name, torch.load(os.path.join(artifacts, f"{name}.captures.pt")),
                        dev, over["grad_captures"], over.get("fwd"), over.get("delta"))

            def ours_step():
                out, lse = ours.forward(q, k, v, bm)
                ours.backward(q, k, v, out, lse, dout, bm)

            ms = timeit(ours_step)
            row.update(ms=ms, tflops=flops / ms / 1e9, peak_extra_mib=peak(ours_step))
            out, lse = ours.forward(q, k, v, bm)
            row["bwd_ms"] = timeit(lambda: ours.backward(q, k, v, out, lse, dout, bm))
        except Exception as e:  # noqa: BLE001
            row["error"] = f"{type(e).__name__}: {e}"[:400]
        learn = _float_captures(score_mod) if (score_mod and over["grad_captures"]) else []
        for p in peers:
            try:
                if p == "cudnn":
                    if variant != "causal":
                        continue
                    leaves = [t.detach().requires_grad_() for t in (q, k, v)]

                    def step():
                        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                            o = torch.nn.functional.scaled_dot_product_attention(
                                *leaves, is_causal=True)
                        o.backward(dout)
                else:
                    fn = compiled[p]
                    leaves = [t.detach().requires_grad_() for t in (q, k, v)]
                    for t in learn:
                        t.requires_grad_(True)

                    def step(fn=fn, leaves=leaves):
                        fn(*leaves, score_mod=score_mod, block_mask=bm).backward(dout)
                pms = timeit(step)
                row.update({f"{p}_ms": pms, f"{p}_tflops": flops / pms / 1e9,
                            f"{p}_peak_extra_mib": peak(step)})
            except Exception as e:  # noqa: BLE001
                row[f"{p}_error"] = f"{type(e).__name__}: {e}"[:300]
        for t in learn:
            t.requires_grad_(False)
        print(f"{name:28s} ours {row.get('tflops', float('nan')):6.2f} TF/s "
              f"({row.get('ms', float('nan')):.1f} ms, bwd {row.get('bwd_ms', float('nan')):.1f} ms)  "
              + "  ".join(f"{p} {row.get(f'{p}_tflops', float('nan')):6.1f}" for p in peers),
              flush=True)
        save()


def run_all(artifacts, out_json, only, reps, peers, ours_only, label) -> None:
    import torch

    from flexattn_runtime import ArtifactStore

    torch.backends.cuda.matmul.allow_tf32 = False
    torch._dynamo.config.recompile_limit = 256
    torch._dynamo.config.accumulated_recompile_limit = 4096
    store = ArtifactStore(artifacts)
    with open(os.path.join(artifacts, "cases.json")) as f:
        cases = json.load(f)["cases"]
    keys = {store.metadata(key)["spec"]["name"]: key for key in store.keys()}
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
               "label": label, "timing": gpu_suite.TIMING,
               "peers": [] if ours_only else peers, "checks": [], "bench": []}

    def save():
        with open(out_json, "w") as f:
            json.dump(results, f, indent=1)

    run_checks(store, keys, cases, artifacts, results, only, ours_only, "cuda", save)
    if not ours_only:
        run_bench(store, keys, cases, artifacts, results, only, reps, peers, "cuda", save)
    save()


if __name__ == "__main__":
    gpu_suite.main(compile_all, run_all, reps=5, peers="triton,cudnn")
