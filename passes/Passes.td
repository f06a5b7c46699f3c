//===- Passes.td - flexattn passes -------------------------*- tablegen -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// The CPU pipeline, in order:
//   flexattn-tile -> flexattn-block-sparsity -> flexattn-split-full-tiles
//   -> flexattn-fuse-online-softmax -> flexattn-inline-mods
//   -> flexattn-vectorize-tiles -> flexattn-distribute-tiles
//   -> flexattn-lower-to-loops
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

    With a block mask, the KV tile is the mask's KV block and the Q tile must
    divide the mask's Q block (it is shrunk to the Q block when larger).

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

def FlexAttnSplitFullTiles : Pass<"flexattn-split-full-tiles", "::mlir::ModuleOp"> {
  let summary = "Version each tile_step and finalize on whether its tile lies "
                "inside the sequence, the full copy on views cut at the tile's "
                "end";
  let description = [{
    Wraps each `flexattn.tile_step` in `scf.if (q0 + BM <= M && kv0 + BN <= N)`
    and each `flexattn.finalize` in `scf.if (q0 + BM <= M)`. The then-branch
    runs a copy of the op on views of q/k/v (out/lse) cut at the tile's end,
    `[.., q0 + BM, ..]`: the tile extents `flexattn-fuse-online-softmax`
    computes, `clamp(end - q0, 0, BM)`, then fold to `BM` (and `BN`) under
    canonicalization, so the full tile's linalg ops have static shapes for
    `flexattn-vectorize-tiles`. The else-branch keeps the op as it was (a
    clipped edge tile, dynamic shapes). The Q check is left out when BM
    divides M (`flexattn-tile` makes q0 a multiple of BM below M); the KV
    check always stays (a block list may name any block), and costs one
    comparison per tile step.

    Before:
    ```mlir
    flexattn.tile_step ins(%q, %k, %v : memref<1x8x2048x64xf32>, ...) state(...)
        at(%b, %h, %hkv, %q0, %kv0) attributes {scale = 0.125 : f32, tile_size = array<i64: 64, 128>}
    ```
    After:
    ```mlir
    %qe = arith.addi %q0, %c64 : index
    %kve = arith.addi %kv0, %c128 : index
    %in = arith.cmpi sle, %kve, %c2048 : index
    scf.if %in {
      %qc = memref.subview %q[0, 0, 0, 0] [1, 8, %qe, 64] [1, 1, 1, 1]
          : memref<1x8x2048x64xf32> to memref<1x8x?x64xf32, strided<[1048576, 131072, 64, 1]>>
      %kc = memref.subview %k[...] [1, 8, %kve, 64] [...]
      %vc = memref.subview %v[...] [1, 8, %kve, 64] [...]
      flexattn.tile_step ins(%qc, %kc, %vc : ...) state(...) at(%b, %h, %hkv, %q0, %kv0) ...
    } else {
      flexattn.tile_step ins(%q, %k, %v : ...) state(...) at(%b, %h, %hkv, %q0, %kv0) ...
    }
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
  let summary = "Replace flexattn.apply_mods with the bodies of its score_mod "
                "and mask_mod regions";
  let description = [{
    Clones the score_mod body with its arguments bound to the score, the
    indices (cast from index to the region's index type) and the captured
    buffers, and, for a masked score, the mask_mod body followed by
    `arith.select %keep, %score, -inf`.

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
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect"];
}

def FlexAttnVectorizeTiles : Pass<"flexattn-vectorize-tiles", "::mlir::ModuleOp"> {
  let summary = "Tile the static-shape tile math to register blocks and lower "
                "it to vector FMAs, loads, stores and shuffles";
  let description = [{
    For every linalg op whose operands all have static shapes (the full
    tiles `flexattn-split-full-tiles` exposes), with upstream transforms:

    - Q.Kᵀ, a contraction `(i, d), (j, d) -> (i, j)`, first gets its K tile
      transposed into a `[D, BN]` stack buffer (`linalg.transpose`, tiled to
      16 x 16 blocks lowered to shuffles), so it becomes a row-major
      `(i, d), (d, j) -> (i, j)` contraction like P.V;
    - row-major contractions are tiled (`scf::tileUsingSCF`) to
      `[row-block, col-block, 1]`, vectorised to `vector.contract`, their
      accumulators hoisted out of the reduction loop into `iter_args`
      (`linalg::hoistRedundantVectorTransfers`) and lowered to outer
      products, i.e. broadcast-FMAs on register rows;
    - other ops (fills, copies, the mods, row max/sum reductions, exp2
      updates) are tiled to one row and vectorised whole along it
      (`linalg::vectorize`; `linalg.index` becomes `vector.step`), row
      reductions lowered to `vector.reduction`. The mods' reads of captured
      buffers are vectorised too (through `tensor.extract` of a
      `bufferization.to_tensor` view, which linalg::vectorize widens, then
      back onto the buffer): a read that does not change along the row
      becomes a broadcast, a contiguous one a vector load, others a
      `vector.gather`;
    - `math.exp2` becomes `exp(x ln 2)` and upstream's polynomial exp.

    With `bf16-dot`, Q.Kᵀ and P.V on bf16 operands instead become
    `linalg.contract`s over VNNI-packed tiles (pairs of the reduction dim
    adjacent: the K tile's 16 x 16 blocks of 32-bit pairs transposed in
    registers, the V tile's row pairs interleaved, P rounded to bf16), tiled
    to `[row-block, col-block, 1, 2]`, unrolled to 16-lane accumulators and
    lowered by upstream's x86vector patterns to `x86vector.avx512.dot`
    (vdpbf16ps); without it bf16 products widen to f32 FMAs.

    Ops with dynamic shapes (edge tiles) or bodies the vectoriser cannot
    widen stay linalg ops for `flexattn-lower-to-loops`.

    Before (the full tile's P.V):
    ```mlir
    linalg.generic {indexing_maps = [(i, j, k) -> (i, k), (i, j, k) -> (k, j), (i, j, k) -> (i, j)], ...}
        ins(%p, %v : memref<64x128xf32>, memref<128x64xf32, strided<[64, 1], offset: ?>>)
        outs(%acc : memref<64x64xf32>)
    ```
    After:
    ```mlir
    scf.for %i = %c0 to %c64 step %c4 {
      %a0 = vector.load %acc[%i, %c0] : memref<64x64xf32>, vector<64xf32>   // x4 rows
      %r:4 = scf.for %k = %c0 to %c128 step %c1 iter_args(%a = %a0, ...) {
        %vrow = vector.load %v[%k, %c0] : ..., vector<64xf32>
        %p0 = memref.load %p[%i, %k] : memref<64x128xf32>
        %b0 = vector.broadcast %p0 : f32 to vector<64xf32>
        %n0 = vector.fma %b0, %vrow, %a : vector<64xf32>                     // x4 rows
        scf.yield %n0, ...
      }
      vector.store %r#0, %acc[%i, %c0] : memref<64x64xf32>, vector<64xf32>   // x4 rows
    }
    ```
  }];
  let options = [
    Option<"rowBlock", "row-block", "int64_t", /*default=*/"4",
           "Rows of a contraction's register block">,
    Option<"colBlock", "col-block", "int64_t", /*default=*/"64",
           "Columns of a contraction's register block">,
    Option<"bf16Dot", "bf16-dot", "bool", /*default=*/"false",
           "Compute products of bf16 operands with AVX512-BF16 dot products "
           "(vdpbf16ps) on VNNI-packed tiles, P rounded to bf16 (needs a CPU "
           "with avx512bf16)">,
  ];
  let dependentDialects = ["::mlir::vector::VectorDialect",
                           "::mlir::x86vector::X86VectorDialect",
                           "::mlir::bufferization::BufferizationDialect",
                           "::mlir::tensor::TensorDialect",
                           "::mlir::scf::SCFDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect",
                           "::mlir::linalg::LinalgDialect"];
}

def FlexAttnDistributeTiles : Pass<"flexattn-distribute-tiles", "::mlir::ModuleOp"> {
  let summary = "Turn the top-level Q-tile scf.parallel into a loop that claims "
                "tiles from an atomic counter, for several threads to share";
  let description = [{
    The function gains a trailing `memref<1xi64>` argument (marked
    `flexattn.work_counter`), zero when called. Every thread runs the whole
    function; each claims tile numbers `t = counter++` (`memref.atomic_rmw
    addi`) until `t` reaches the tile count and runs the scf.parallel's body
    for the tile `t` names. Tiles are numbered heaviest first: the last
    dimension (the Q tile) counts down from its end and changes slowest, so a
    causal-like mask's long rows start first and the short ones fill in at
    the end; claiming one tile at a time balances whatever remains. One
    thread running the function alone visits every tile.

    Before:
    ```mlir
    func.func @flexattn(%q: memref<1x8x2048x64xf32>, ...) {
      scf.parallel (%b, %h, %qt) = (%c0, %c0, %c0) to (%c1, %c8, %c32) step (%c1, %c1, %c1) {
        ... tile (%b, %h, %qt) ...
      }
      return
    }
    ```
    After:
    ```mlir
    func.func @flexattn(%q: memref<1x8x2048x64xf32>, ..., %counter: memref<1xi64> {flexattn.work_counter}) {
      scf.while : () -> () {
        %claimed = memref.atomic_rmw addi %c1_i64, %counter[%c0] : (i64, memref<1xi64>) -> i64
        %t = arith.index_cast %claimed : i64 to index
        %more = arith.cmpi ult, %t, %c256 : index
        scf.condition(%more) %t : index
      } do {
      ^bb0(%t: index):
        %qt = 31 - %t / 8, %b = (%t % 8) / 8, %h = %t % 8
        ... tile (%b, %h, %qt) ...
        scf.yield
      }
      return
    }
    ```
  }];
  let dependentDialects = ["::mlir::scf::SCFDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::arith::ArithDialect"];
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
