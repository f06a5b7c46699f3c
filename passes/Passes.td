//===- Passes.td - flexattn passes -------------------------*- tablegen -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// The CPU pipeline, in order:
//   flexattn-tile -> flexattn-block-sparsity -> flexattn-fuse-online-softmax
//   -> flexattn-inline-mods -> flexattn-lower-to-loops
//
//===----------------------------------------------------------------------===//

#ifndef FLEXATTN_PASSES
#define FLEXATTN_PASSES

include "mlir/Pass/PassBase.td"

def FlexAttnTile : Pass<"flexattn-tile", "::mlir::ModuleOp"> {
  let summary = "Split flexattn.attention into Q tiles, each an online-softmax "
                "loop over KV tiles";
  let description = [{
    Rewrites every `flexattn.attention` into an `scf.parallel` over
    (batch, query head, Q tile). Each iteration allocates the tile's
    online-softmax state (accumulator `[BM, Dv]`, running max and running sum
    `[BM]`, f32) on the stack, initialises it (0, -inf, 0), runs one
    `flexattn.kv_loop` over the KV tiles and writes the tile's rows of `out`
    and `lse` with `flexattn.finalize`. Key/value head = query head / (Hq/Hkv).
    A `k` or `v` of batch 1 shared by a query batch of B is read through a
    `memref.reinterpret_cast` view `[B, ...]` of batch stride 0 (no copy), so
    the tile ops index it with the query's batch.

    With a block mask, the KV tile is the mask's KV block and the Q tile must
    divide the mask's Q block (it is shrunk to the Q block when larger).

    A `flexattn.attention_backward` (after `flexattn-differentiate-mods`)
    becomes: `delta = rowsum(dout * out) - dlse` on a heap `[B, Hq, M]` f32
    buffer; zeroed capture gradients; an `scf.parallel` over (batch, key/value
    head, KV tile) whose `flexattn.backward_q_loop` accumulates the tile's dk
    and dv (f32, on the stack) from every Q tile of the KV group's heads and
    `flexattn.store_tile`s them; and a loop over (batch, query head, Q tile)
    whose `flexattn.backward_kv_loop` accumulates dq (and the capture
    gradients: then the loop is a sequential `scf.for` nest, so the
    accumulation order is fixed). The visited tile is the block mask's block;
    the outer one divides it.

    Before:
    ```mlir
    flexattn.attention ins(%q, %k, %v : ...) outs(%o : ...) attributes {scale = 0.125 : f32}
    ```
    After:
    ```mlir
    scf.parallel (%b, %h, %qt) = (%c0, %c0, %c0) to (%B, %H, %QT) step (%c1, %c1, %c1) {
      memref.alloca_scope {
        %acc = memref.alloca() : memref<64x64xf32>   // + max, sum
        linalg.fill ...
        flexattn.kv_loop ins(%q, %k, %v : ...) state(%acc, %max, %sum : ...) at(%b, %h, %hkv, %q0) ...
        flexattn.finalize state(%acc, %max, %sum : ...) outs(%o : ...) at(%b, %h, %q0)
      }
    }
    ```
  }];
  let options = [
    Option<"tileQ", "tile-q", "int64_t", /*default=*/"64",
           "Rows of a Q tile (BM)">,
    Option<"tileKV", "tile-kv", "int64_t", /*default=*/"64",
           "Keys of a KV tile (BN) when there is no block mask">,
  ];
  let dependentDialects = ["::mlir::scf::SCFDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::linalg::LinalgDialect"];
}

def FlexAttnBlockSparsity : Pass<"flexattn-block-sparsity", "::mlir::ModuleOp"> {
  let summary = "Turn each flexattn.kv_loop into loops over the KV tiles its "
                "block mask lists";
  let description = [{
    Without a block mask the loop visits every KV tile, `scf.for` from 0 to
    ceil(N / BN), applying mask_mod. With one, it visits
    `kv_indices[b, h, qb, 0 : kv_num_blocks[b, h, qb]]` with mask_mod
    (partial blocks), then `full_kv_indices[b, h, qb, 0 : full_kv_num_blocks]`
    without it (full blocks), where `qb = q0 / block_size[0]` and the batch and
    head indices are 0 on broadcast dims. Unlisted blocks are never read. The
    counts are clamped to the index array's width.

    The backward loops lower the same way: `flexattn.backward_kv_loop` like a
    kv_loop, into `flexattn.backward_step`s; `flexattn.backward_q_loop`
    into an `scf.for` over the KV group's query heads around the Q tiles of
    `q_indices[b, h, kb]` / `full_q_indices[b, h, kb]`, `kb = kv0 /
    block_size[1]` (every Q tile without a block mask).

    After (with a block mask):
    ```mlir
    %n = memref.load %kv_num_blocks[%b, %h, %qb] : memref<1x1x4xi32>
    scf.for %j = %c0 to %n_clamped step %c1 {
      %blk = memref.load %kv_indices[%b, %h, %qb, %j] : memref<1x1x4x4xi32>
      %kv0 = arith.muli %blk_index, %c64 : index
      flexattn.tile_step ... at(%b, %h, %hkv, %q0, %kv0) attributes {masked, ...}
    }
    scf.for ... full_kv_num_blocks / full_kv_indices: flexattn.tile_step without `masked`
    ```
  }];
  let dependentDialects = ["::mlir::scf::SCFDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::arith::ArithDialect"];
}

def FlexAttnFuseOnlineSoftmax
    : Pass<"flexattn-fuse-online-softmax", "::mlir::ModuleOp"> {
  let summary = "Decompose tile_step and finalize into tile-sized linalg ops "
                "with a running max and sum";
  let description = [{
    Each `flexattn.tile_step` becomes, on a `[BM, BN]` f32 score tile on the
    stack (the only score storage; no `M x N` buffer exists):

      S     = Q_tile . K_tileᵀ                       (f32 accumulation)
      S     = log2(e) * mods(scale * S)              (flexattn.apply_mods; with
              no mods, one multiply by scale * log2(e))
      m_new = max(m, rowmax(S))
      base  = m_new, or 0 where m_new = -inf         (empty rows stay finite)
      alpha = exp2(m - base)
      P     = exp2(S - base)
      l     = alpha * l + rowsum(P)
      acc   = alpha * acc + P . V_tile
      m     = m_new

    and each `flexattn.finalize` becomes `out = acc / l` (0 where l = 0) and
    `lse = ln(2) * (m + log2(l))` (-inf where l = 0). Rows and columns past M
    or N are excluded by taking dynamic-size subviews.
  }];
  let dependentDialects = ["::mlir::linalg::LinalgDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect"];
}

def FlexAttnInlineMods : Pass<"flexattn-inline-mods", "::mlir::ModuleOp"> {
  let summary = "Replace flexattn.apply_mods and apply_mods_vjp with the "
                "bodies of their mod regions, and lower their index checks";
  let description = [{
    Clones the score_mod body with its arguments bound to the score, the
    indices (cast from index to the region's index type) and the captured
    buffers, and, for a masked score, the mask_mod body followed by
    `arith.select %keep, %score, -inf`.
    A `flexattn.apply_mods_vjp` becomes its score_mod_vjp body (or the
    identity) and, for a masked score, the mask_mod body and selects that
    give -inf and zero derivatives where the mask is false.

    Before:
    ```mlir
    %r = flexattn.apply_mods %s at(%b, %h, %q, %kv) attributes {masked} mask_mod {
    ^bb0(%b_: i32, %h_: i32, %q_: i32, %kv_: i32):
      %c = arith.cmpi sge, %q_, %kv_ : i32
      flexattn.yield %c : i1
    } : f32
    ```
    After:
    ```mlir
    %qi = arith.index_cast %q : index to i32
    %kvi = arith.index_cast %kv : index to i32
    %c = arith.cmpi sge, %qi, %kvi : i32
    %r = arith.select %c, %s, %ninf : f32
    ```

    Then each `flexattn.check_index` the bodies (forward and vjp alike)
    brought into the code becomes
    torch's indexing: `pos = index < 0 ? index + size : index`; unless its
    `bounds` prove `-size <= index < size`, `ok = pos <u size`, an `scf.if`
    storing `[1, index]` into row `site` of its report buffer when not ok,
    and `pos = ok ? pos : 0`; finally `index_cast pos`.

    Before:
    ```mlir
    %i = flexattn.check_index %x of size 4 report(%err : memref<1x2xi64>) {site = 0 : i64} : i64
    ```
    After:
    ```mlir
    %neg = arith.cmpi slt, %x, %c0_i64 : i64
    %w = arith.addi %x, %c4_i64 : i64
    %pos = arith.select %neg, %w, %x : i64
    %ok = arith.cmpi ult, %pos, %c4_i64 : i64
    %bad = arith.xori %ok, %true : i1
    scf.if %bad {
      memref.store %c1_i64, %err[%c0, %c0] : memref<1x2xi64>
      memref.store %x, %err[%c0, %c1] : memref<1x2xi64>
    }
    %safe = arith.select %ok, %pos, %c0_i64 : i64
    %i = arith.index_cast %safe : i64 to index
    ```
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect", "::mlir::scf::SCFDialect",
                           "::mlir::memref::MemRefDialect"];
}

def FlexAttnLowerToLoops : Pass<"flexattn-lower-to-loops", "::mlir::ModuleOp"> {
  let summary = "Lower the decomposed attention to scf/memref/arith/math loops "
                "for the CPU";
  let description = [{
    Lowers the linalg ops made by `flexattn-fuse-online-softmax` to `scf.for`
    loop nests over memref loads and stores and their `affine.apply` index
    arithmetic to arith, leaving only scf, memref, arith and math (what
    upstream's LLVM conversions and the ExecutionEngine take). The CPU runs
    the Q tiles on one thread: the `scf.parallel` over (batch, head, Q tile)
    becomes an `scf.for` nest, and the fixed-size tile buffers (state,
    score tile) move to the function entry, allocated once rather than once
    per tile and KV step (the stack would otherwise grow with the sequence);
    those over 64 KiB are heap-allocated (`memref.alloc`, freed before each
    return).
    Fails, naming the pass to run first, if a flexattn op is left.
  }];
  let dependentDialects = ["::mlir::scf::SCFDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::func::FuncDialect"];
}

//===----------------------------------------------------------------------===//
// The backward pass (CPU): flexattn-differentiate-mods -> flexattn-tile ->
// flexattn-block-sparsity -> flexattn-decompose-backward ->
// flexattn-inline-mods -> flexattn-lower-to-loops. The tile, block-sparsity
// and inline passes handle the backward ops beside the forward's.
//===----------------------------------------------------------------------===//

def FlexAttnDifferentiateMods
    : Pass<"flexattn-differentiate-mods", "::mlir::ModuleOp"> {
  let summary = "Build each flexattn.attention_backward's score_mod_vjp region "
                "by reverse-mode differentiation of its score_mod";
  let description = [{
    Fills the empty `score_mod_vjp` region of every
    `flexattn.attention_backward` that has a `score_mod`: the mod's body,
    then a reverse sweep over the ops on the gradient path (those depending,
    through floating-point ops, on the score or on a load from a captured
    buffer listed in `grad_captures`). The region yields the modified score,
    `dy * d/dscore`, and for each differentiated load its `dy * d/dload` and
    indices; `vjp_loads` records the loads' captures. Integer paths carry no
    derivative (index arithmetic and the `flexattn.check_index` reads, which
    come along with their index report); floor/ceil/round/trunc contribute 0. An op on the gradient
    path without a derivative rule fails the pass with an error naming it.

    Before:
    ```mlir
    flexattn.attention_backward ... attributes {grad_captures = array<i64: 0>, scale = 1.0 : f32}
      score_mod {
      ^bb0(%s: f32, %b: i32, %h: i32, %q: i32, %kv: i32, %sl: memref<4xf32>):
        %hi = arith.index_cast %h : i32 to index
        %slope = memref.load %sl[%hi] : memref<4xf32>
        %r = arith.mulf %s, %slope : f32
        flexattn.yield %r : f32
      }
    ```
    After (the same op, with `vjp_loads = array<i64: 0>` and):
    ```mlir
      score_mod_vjp {
      ^bb0(%s: f32, %b: i32, %h: i32, %q: i32, %kv: i32, %sl: memref<4xf32>, %dy: f32):
        %hi = arith.index_cast %h : i32 to index
        %slope = memref.load %sl[%hi] : memref<4xf32>
        %r = arith.mulf %s, %slope : f32
        %ds = arith.mulf %dy, %slope : f32
        %dslope = arith.mulf %dy, %s : f32
        flexattn.yield %r, %ds, %dslope, %hi : f32, f32, f32, index
      }
    ```
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect"];
}

def FlexAttnDecomposeBackward
    : Pass<"flexattn-decompose-backward", "::mlir::ModuleOp"> {
  let summary = "Decompose backward_step and store_tile into tile-sized "
                "linalg ops (FlashAttention-2 backward math)";
  let description = [{
    Each `flexattn.backward_step` becomes, on three `[BM, BN]` f32 tiles on
    the stack (no `M x N` buffer exists):

      X    = Q_tile . K_tileᵀ                           (f32 accumulation)
      dP   = dO_tile . V_tileᵀ
      S    = score_mod(scale * X)  (-inf where masked; flexattn.apply_mods_vjp)
      P    = exp2(log2(e) * S - base(log2(e) * lse))   (base: 0 where lse = -inf)
      dS   = P * (dP - delta)
      capture_grads[idx] += dS * dS/dcapture         (an scf.for over the tile,
                                                      when there are any)
      dX   = scale * dS * dS/dX, 0 where P = 0       (never NaN)
      dv  += Pᵀ . dO_tile      dq += dX . K_tile      dk += dXᵀ . Q_tile

    Rows and columns past M or N are excluded by dynamic-size subviews. Each
    `flexattn.store_tile` becomes one generic writing the live rows of its
    accumulator, converted to the gradient's element type.

    Before:
    ```mlir
    flexattn.backward_step ins(%q, %k, %v, %do : ...) stats(%lse, %delta : ...)
        dq(%dq_acc : memref<64x64xf32>) at(%b, %h, %hkv, %q0, %kv0)
        attributes {masked, scale = 0.125 : f32, tile_size = array<i64: 64, 64>} mask_mod {...}
    ```
    After (the last op, the dq accumulation):
    ```mlir
    memref.alloca_scope {
      ...
      linalg.generic {iterator_types = ["parallel", "parallel", "reduction"]}
          ins(%dx, %k_tile : memref<?x?xf32, strided<[64, 1]>>, memref<?x64xf32, strided<...>>)
          outs(%dq_window : memref<?x64xf32, strided<[64, 1]>>) {...}
    }
    ```
  }];
  let dependentDialects = ["::mlir::linalg::LinalgDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::scf::SCFDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect"];
}

//===----------------------------------------------------------------------===//
// GPU (Hopper, sm_90a): flexattn-tile{tile-q=128 tile-kv=128} ->
// flexattn-block-sparsity -> flexattn-map-to-gpu -> flexattn-inline-mods ->
// flexattn-lower-to-nvvm -> gpu-module-to-binary
//===----------------------------------------------------------------------===//

def FlexAttnMapToGPU : Pass<"flexattn-map-to-gpu", "::mlir::ModuleOp"> {
  let summary = "Map each tiled, block-sparse Q-tile loop onto a "
                "warp-specialised TMA + wgmma kernel and its launch";
  let description = [{
    Outlines the `scf.parallel` over (batch, head, Q tile) made by
    `flexattn-tile{tile-q=128}` and `flexattn-block-sparsity` into a
    `gpu.func` in `gpu.module @flexattn_kernels`, launched with
    `gpu.launch_func` on a 1-D grid of 384-thread CTAs, one per tile (or
    `persistent` of them, each looping over tiles); the Q tiles of a
    (batch, head) are numbered together, so CTAs running at once share K/V in
    L2, heaviest (last) first:

    - warpgroup 0, the producer (setmaxnreg 40): one thread loads Q once and
      K, V tiles into `stages` shared-memory slots with TMA (128-byte swizzle,
      tx-count mbarriers), walking a clone of the KV loops, so it visits
      exactly the blocks the block mask lists;
    - warpgroups 1 and 2, the consumers (setmaxnreg 232), 64 rows each:
      S = Q.Kᵀ with wgmma from shared memory; `flexattn.apply_mods` on each
      register fragment element (mask_mod only on partial blocks; -inf past
      N); the online softmax in registers (ex2, quad shuffles); P rounded to
      16 bits in registers; O += P.V with register-A wgmma; empty barriers
      hand slots back; the epilogue normalises and stores out and lse.
      With `pipeline`, tile j's Q.Kᵀ is issued together with tile j-1's P.V
      (FlashAttention-3's intra-warpgroup overlap); with `pingpong`, named
      barriers alternate the two consumer warpgroups' GEMM issue. Q tiles
      run last-first (the heavy tiles of a causal mask start early).

    The host function gains three `!llvm.ptr` arguments, the CUtensorMaps of
    q, k and v (`flexattn.tensor_map`, `flexattn.box`, `flexattn.tensor_arg`
    argument attributes say which); memref arguments the loop used become
    kernel parameters. Needs static shapes, bf16/f16 inputs, head dims 64 or
    128 and a KV tile of 64 or 128.

    After:
    ```mlir
    gpu.launch_func @flexattn_kernels::@flexattn_kernel blocks in (%c4096, %c1, %c1)
        threads in (%c384, %c1, %c1) dynamic_shared_memory_size %smem
        args(%qmap : !llvm.ptr, %kmap : !llvm.ptr, %vmap : !llvm.ptr, %out : memref<...>)
    gpu.module @flexattn_kernels {
      gpu.func @flexattn_kernel(...) kernel attributes {nvvm.maxntid = array<i32: 384, 1, 1>, ...}
    }
    ```
  }];
  let options = [
    Option<"stages", "stages", "int64_t", /*default=*/"2",
           "Shared-memory slots of the K and V rings">,
    Option<"pipeline", "pipeline", "bool", /*default=*/"true",
           "Issue each tile's Q.Kᵀ with the previous tile's P.V so the softmax "
           "overlaps a GEMM (needs D == Dv)">,
    Option<"pingpong", "pingpong", "bool", /*default=*/"true",
           "Alternate the two consumer warpgroups' GEMM issue with named "
           "barriers (needs pipeline)">,
    Option<"persistent", "persistent", "int64_t", /*default=*/"0",
           "Launch at most this many CTAs, each looping over tiles (132: one "
           "per H100 SM); 0 launches one CTA per tile">,
  ];
  let dependentDialects = ["::mlir::gpu::GPUDialect",
                           "::mlir::LLVM::LLVMDialect",
                           "::mlir::NVVM::NVVMDialect",
                           "::mlir::scf::SCFDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect"];
}

def FlexAttnLowerToNVVM : Pass<"flexattn-lower-to-nvvm", "::mlir::ModuleOp"> {
  let summary = "Lower the flexattn GPU kernels to the NVVM and LLVM dialects";
  let description = [{
    Rewrites f32 `math.exp`, `exp2`, `log`, `log2` and `tanh` in the
    kernels into `ex2.approx`/`lg2.approx`/`rcp.approx` sequences (no
    libdevice needed), f32 `arith.divf` into a multiply by the reciprocal
    of a constant divisor or `div.full.f32`, f32 abs, copysign, floor, ceil,
    sqrt and fma into single PTX instructions and min/max into LLVM
    intrinsics (upstream's lowering would call libdevice for them, which
    exists only where CUDA is installed),
    attaches an NVVM target (`chip`, `features`, `opt-level`) to each
    `gpu.module` and runs upstream's conversions on it: scf to cf, strided
    metadata, affine, vector, gpu to NVVM (bare-pointer memref arguments) and
    nvvm to llvm. The result is ready for `gpu-module-to-binary`.
  }];
  let options = [
    Option<"chip", "chip", "std::string", /*default=*/"\"sm_90a\"",
           "Target chip">,
    Option<"features", "features", "std::string", /*default=*/"\"+ptx83\"",
           "PTX features">,
    Option<"optLevel", "opt-level", "int64_t", /*default=*/"3",
           "LLVM optimisation level">,
  ];
  let dependentDialects = ["::mlir::gpu::GPUDialect",
                           "::mlir::LLVM::LLVMDialect",
                           "::mlir::NVVM::NVVMDialect",
                           "::mlir::math::MathDialect"];
}

#endif // FLEXATTN_PASSES
