//===- Passes.td - flexattn passes -------------------------*- tablegen -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// The CPU pipeline, in order:
//   flexattn-tile -> [flexattn-split-kv] -> flexattn-block-sparsity
//   -> flexattn-split-full-tiles
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
    and `lse` (and `max_scores`) with `flexattn.finalize`, which also takes
    the op's attention `sinks`. Key/value head = query head / (Hq/Hkv).
    A `k` or `v` of batch 1 shared by a query batch of B is read through a
    `memref.reinterpret_cast` view `[B, ...]` of batch stride 0 (no copy), so
    the tile ops index it with the query's batch.

    With a block mask, the KV tile is the mask's KV block and the Q tile must
    divide the mask's Q block (it is shrunk to the Q block when larger). With
    `block-tiles`, a `tile-kv` that divides the KV block is kept: the
    kv_loop's `tile_size` is `[BM, tile-kv]` beside `block_size`, and
    `flexattn-block-sparsity` walks each listed block as its block / tile-kv
    tiles (a kernel whose KV tile is narrower than torch's default 128-column
    blocks, sm_80's 64 columns, runs the default masks). Not with
    `pack-heads`.

    A `flexattn.attention_backward` (after `flexattn-differentiate-mods`)
    becomes: `delta = rowsum(dout * out) - dlse` on a heap `[B, Hq, M]` f32
    buffer; with `sinks(%sinks, %dsinks)`, `dsinks[h] = -sum_{b,i}
    exp(sinks[h] - lse) * delta` (one reduction over delta, 0 where lse =
    -inf); zeroed capture gradients; an `scf.parallel` over (batch, key/value
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

    With `pack-heads` (decoding: few query rows), the G = Hq / Hkv query
    heads of a K/V head share tiles, so K/V are read once per group: q, out
    and lse (contiguous) are viewed as `[B, Hkv, G * M, ...]`
    (`memref.expand_shape` + `collapse_shape`, no copy), the loop runs over
    (batch, K/V head, tile of `tile-q` packed rows), and the kv_loop is
    `packed(%M)`: row `r` is query head `hkv * G + r / M`, query `r mod M`
    for the mods. With a block mask, each tile first builds its own mask row
    on the stack, the union of the rows of the heads and query blocks it
    holds (a block full for every one of them stays full, any other listed
    block is partial), in increasing block order. The union equals torch's
    rows when they agree or when the block mask is consistent with mask_mod
    (`create_block_mask`); `flex_attention` packs only the former.

    After (pack-heads, Hq = 8, Hkv = 2, M = 1):
    ```mlir
    %qp = memref.collapse_shape %qe [[0], [1], [2, 3], [4]]
        : memref<1x2x4x1x64xf32> into memref<1x2x4x64xf32>
    scf.parallel (%b, %hkv, %qt) = ... to (%c1, %c2, %c1) ... {
      memref.alloca_scope {
        %h = arith.muli %hkv, %c4 : index
        ...
        flexattn.kv_loop ins(%qp, %k, %v : ...) state(...) at(%b, %h, %hkv, %q0) packed(%c1) ...
        flexattn.finalize state(...) outs(%outp : memref<1x2x4x64xf32>) at(%b, %hkv, %q0)
      }
    }
    ```
  }];
  let options = [
    Option<"tileQ", "tile-q", "int64_t", /*default=*/"64",
           "Rows of a Q tile (BM)">,
    Option<"tileKV", "tile-kv", "int64_t", /*default=*/"64",
           "Keys of a KV tile (BN) when there is no block mask">,
    Option<"packHeads", "pack-heads", "bool", /*default=*/"false",
           "Pack the query heads of each K/V head into the rows of shared "
           "tiles (decoding); forward only">,
    Option<"blockTiles", "block-tiles", "bool", /*default=*/"false",
           "With a block mask, keep a tile-kv that divides the KV block "
           "(each block walked as several KV tiles); forward only">,
  ];
  let dependentDialects = ["::mlir::scf::SCFDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::linalg::LinalgDialect"];
}

def FlexAttnSplitKv : Pass<"flexattn-split-kv", "::mlir::ModuleOp"> {
  let summary = "Split each Q tile's KV blocks into S ranges run as separate "
                "tiles, merged by their logsumexp (FlashDecoding)";
  let description = [{
    For decoding, where a few Q tiles would leave most threads idle: the
    function's tile loop from `flexattn-tile` (batch, head, Q tile) gains a
    leading split dimension `s` in `[0, S)`, its `flexattn.kv_loop` becomes
    `split(%s of %S)` (the `s`-th of S contiguous ranges of the KV tiles it
    visits: partial blocks, then full ones), and its `flexattn.finalize`
    writes the normalised partial rows and their lse into scratch buffers the
    function gains as trailing arguments (marked `flexattn.split_kv`):

    - `out` `memref<?x?xf32>` `[S, B * H * M * Dv]` partial outputs,
    - `lse` `memref<?x?xf32>` `[S, B * H * M]` their logsumexps,
    - `arrivals` `memref<?xi32>` one counter per tile, zero at the call.

    S is the scratch's leading size: the caller chooses it per call (from
    the work and its threads) without recompiling. After its finalize each
    split adds one to its tile's counter (`memref.atomic_rmw`, acq_rel); the
    split that brings it to S merges the tile's rows:
    `lse = log Σ_s exp(lse_s)`, `out = Σ_s exp(lse_s - lse) out_s` (a row
    with no visible key in any split: 0 and -inf). H and M are those of
    finalize's out (the packed `[B, Hkv, G * M]` under `pack-heads`).

    Options (the GPU decode kernel): `splits=S` makes S static (scratch
    `memref<Sx(B*H*M*Dv)xf32>`, `memref<Sx(B*H*M)xf32>`; static shapes
    needed), so `flexattn-map-to-grid` can put the splits on the grid;
    `merge=false` leaves the merge to the caller: no `arrivals` argument,
    no atomic, each split only writes its partial rows and lse (the GPU
    merges in a second step, docs/inference.md).

    Before:
    ```mlir
    scf.parallel (%b, %h, %qt) = (%c0, %c0, %c0) to (%B, %H, %QT) step (%c1, %c1, %c1) {
      memref.alloca_scope {
        flexattn.kv_loop ... at(%b, %h, %hkv, %q0) ...
        flexattn.finalize state(...) outs(%out : ...) lse(%lse : ...) at(%b, %h, %q0)
      }
    }
    ```
    After:
    ```mlir
    func.func @flexattn(..., %part_out: memref<?x?xf32> {flexattn.split_kv = "out"},
                        %part_lse: memref<?x?xf32> {flexattn.split_kv = "lse"},
                        %arrivals: memref<?xi32> {flexattn.split_kv = "arrivals"})
    %S = memref.dim %part_lse, %c0 : memref<?x?xf32>
    scf.parallel (%s, %b, %h, %qt) = (%c0, %c0, %c0, %c0) to (%S, %B, %H, %QT) ... {
      memref.alloca_scope {
        flexattn.kv_loop ... at(%b, %h, %hkv, %q0) split(%s of %S) ...
        %po = memref.reinterpret_cast %part_out to offset: [%off] ... : memref<?x?xf32> to memref<1x4x128x64xf32, strided<[32768, 8192, 64, 1], offset: ?>>
        flexattn.finalize state(...) outs(%po : ...) lse(%pl : ...) at(%b, %h, %q0)
        %n = memref.atomic_rmw addi %c1_i32, %arrivals[%tile] : (i32, memref<?xi32>) -> i32
        %last = arith.cmpi eq, %n, %S_minus_1 : i32
        scf.if %last {
          scf.for %i = %q0 to %end step %c1 { ... the merge of row %i ... }
        }
      }
    }
    ```
  }];
  let options = [
    Option<"splits", "splits", "int64_t", /*default=*/"0",
           "static number of KV ranges (0: the scratch's leading size, per call)">,
    Option<"merge", "merge", "bool", /*default=*/"true",
           "merge in the kernel (the last split of a tile); false: the caller merges">,
  ];
  let dependentDialects = ["::mlir::scf::SCFDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect"];
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
    counts are clamped to the index array's width. Where the KV tile BN is
    narrower than the KV block (`flexattn-tile{block-tiles}`), each listed
    block is r = block_size[1] / BN tiles, in order and with its block's
    masking: one flat loop over j in [0, r n), block `j / r`, tile `j % r`
    (`kv0 = blk * block_size[1] + (j % r) * BN`), so each loop body still
    holds one tile step.

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
    or N are excluded by taking dynamic-size subviews. `max_scores = ln(2) *
    m` is written first; with `sinks`, the sink joins the state in place
    before out and lse (OnlineSoftmax.h `foldSink`):

      s     = log2(e) * sinks[h]
      alpha = exp2(m - base(max(m, s)))
      l     = alpha * l + exp2(s - base(max(m, s)))
      m     = max(m, s)
      acc   = alpha * acc

    Before:
    ```mlir
    flexattn.finalize state(%acc, %m, %l : memref<32x8xf32>, memref<32xf32>, memref<32xf32>)
        sinks(%sinks : memref<2xf32>) outs(%o : memref<1x2x100x8xbf16>)
        lse(%lse : memref<1x2x100xf32>) max_scores(%mx : memref<1x2x100xf32>) at(%b, %h, %q0)
    ```
    After (excerpt):
    ```mlir
    linalg.generic ins(%m_rows) outs(%mx_rows) { ... arith.mulf %m, %ln2 ... }
    %sink = memref.load %sinks[%h] : memref<2xf32>
    %s = arith.mulf %sink, %log2e : f32
    linalg.generic ins(%m_rows) outs(%alpha) { ... arith.maximumf %m, %s ... math.exp2 ... }
    linalg.generic ins(%m_rows, %alpha) outs(%l_rows) { ... }   // l = alpha l + exp2(s - base)
    linalg.generic outs(%m_rows) { ... arith.maximumf ... }     // m = max(m, s)
    linalg.generic ins(%alpha) outs(%acc) { ... arith.mulf ... } // acc = alpha acc
    linalg.generic ins(%acc, %l_rows) outs(%out_rows) { ... }    // out = acc / l
    linalg.generic ins(%m_rows, %l_rows) outs(%lse_rows) { ... } // lse
    ```
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
    and `pos = ok ? pos : 0`; finally `index_cast pos`. An index narrower
    than 64 bits, or a sign extension of one (torch's int64 arithmetic on
    i32 indices), is checked in that width (`index + size` is only taken
    for a negative index: no overflow; an i32 vectorises 16 lanes to a
    register, an i64 8); the report stores it sign-extended to i64.

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

def FlexAttnFoldTileDivisions
    : Pass<"flexattn-fold-tile-divisions", "::mlir::ModuleOp"> {
  let summary = "Divide a tile's start instead of an index inside the tile "
                "where the divisor is a multiple of the tile (a page, a "
                "block): the quotient becomes the same for the whole tile";
  let description = [{
    After `flexattn-inline-mods` the mods compute on each score's indices,
    `kv = kv0 + j` (the tile start plus the column in the tile). A mod that
    divides such an index by a multiple P of the tile width (a paged KV
    cache's `physical_to_logical[b, kv // page]`, a block-diagonal mask's
    `kv // block`) gets the same quotient on the whole tile. This pass
    proves that and rewrites `arith.floordivsi` / `arith.divui` by a
    positive constant P to divide the tile start instead; CSE then keeps
    one per tile (and one page-table load), and the CPU vectoriser
    broadcasts one scalar read instead of gathering a row.

    The proof: the dividend splits into `base + off (mod 2^w)`, where base
    sums the terms nothing bounds (loaded block indices, function
    arguments) or that are multiples of G, and off the bounded ones (thread
    ids of a constant-sized `gpu.launch`, else below CUDA's 1024 threads;
    NVIDIA's 32 lanes; `linalg.index` of a static loop, scf.for indices
    over constant bounds, remainders, masks, constants); sums, multiples by
    constants and casts are split term by term (integers of at most 64 bits,
    `index` taken as 64 bits, at most 512 nodes per division). It folds for the largest power of two G dividing P for which base
    is a multiple of G and off lies in [0, G): base + off cannot wrap
    (the largest multiple of G is 2^(w-1) - G), so floormod(base, P) <=
    P - G and `(base + off) floordiv P == base floordiv P`. A truncation
    keeps the congruence; an extension needs its operand's split exact
    already. torch's floor modulo of such an index (`remsi`, then `+ P`
    where the remainder is negative: Python's `%` as torch-mlir lowers it)
    becomes `index - P * (base floordiv P)`, one subtraction per score.
    Anything else (divsi, a lone remsi, a tail's clamped index) is left as
    it is.

    Before (`%t` a block index loaded at run time, `%lane` in [0, 4)):
    ```mlir
    %start = arith.muli %t, %c128 : index
    %j = arith.muli %lane, %c2 : index
    %kv = arith.addi %start, %j : index
    %kv8 = arith.addi %kv, %c8 : index
    %i = arith.index_cast %kv8 : index to i32
    %page = arith.floordivsi %i, %c128_i32 : i32
    ```
    After:
    ```mlir
    %base = arith.index_cast %start : index to i32
    %page = arith.floordivsi %base, %c128_i32 : i32
    ```
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect"];
}

def FlexAttnExactIntToFloat : Pass<"flexattn-exact-int-to-float", "::mlir::ModuleOp"> {
  let summary = "Convert integers to f32 as exact f32 sums of shared leaves, "
                "or with an integer add and a float subtraction, where range "
                "analysis bounds them";
  let description = [{
    A score_mod that turns an index into a float (a relative bias's
    `q_idx - kv_idx`, ALiBi's distance) pays an integer op and a
    conversion per score (I2FP on sm_90a; I2F on sm_80, on the quarter-rate
    unit that also runs P's exp2). For -2^22 <= x < 2^22,
    `bitcast(x + 0x4B400000) - 12582912.0` is x exactly: 0x4B400000 is the
    pattern of 1.5 * 2^23, whose ulp is 1, and adding x to it stays in that
    binade. A sum or difference of shared leaves (constants, block
    arguments, values with several uses: a row's q_idx, a tile's column)
    whose terms' magnitudes add up to at most 2^24 is summed in f32
    instead, leaves first and the constant last: every partial sum is an
    integer f32 holds, so each step is exact, and after CSE each score adds
    one immediate.

    Each scalar `arith.sitofp` to f32 of such a sum (through sign
    extensions and value-keeping truncations) is rewritten so; otherwise a
    scalar `arith.sitofp` / `arith.uitofp` to f32 whose operand (any
    signless integer width) upstream `IntegerRangeAnalysis` bounds to
    [-2^22, 2^22) (uitofp: [0, 2^22)) takes the add trick, the operand
    truncated or extended to i32 first. Anything else is left as it is. On launches
    marked `flexattn.exact_index_floats` (sm_90a's and the decode kernel,
    where the driver runs this pass) the fragment lowering clamps the
    indices of a score_mod that converts one to the static sequence lengths
    (no-ops) so that the analysis sees the bound; a dynamic-shape kernel,
    and the backward where no tail clamps them, keep their conversions.

    Before (`%q` a row's index in [0, 8191] and `%c0` the thread's first
    column in [0, 8070], each with several uses):
    ```mlir
    %kv = arith.addi %c0, %c3_i32 : i32
    %d = arith.subi %q, %kv : i32
    %f = arith.sitofp %d : i32 to f32
    ```
    After (the leaves' conversions right after their definitions):
    ```mlir
    %qb = arith.addi %q, %c1262485504_i32 : i32
    %qf = arith.subf (arith.bitcast %qb : i32 to f32), %cst : f32  // 12582912.0
    ...                                                             // %c0f likewise
    %d0 = arith.subf %qf, %c0f : f32
    %f = arith.addf %d0, %cst_m3 : f32                              // -3.0
    ```
    A lone value in range (`%d` above without shared leaves):
    `%b = arith.addi %d, %c1262485504_i32`, `%f = arith.subf (arith.bitcast
    %b : i32 to f32), %cst`.
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
      becomes one scalar load and a `vector.broadcast` (elementwise ops on
      broadcasts then sink below them, upstream's sink patterns: a paged
      mask's page arithmetic runs once per row), a contiguous one a vector
      load, others a `vector.gather`. A read checked at run time reports from under an
      `scf.if`, which the vectoriser refuses: the report becomes row
      reductions (any bad element, `ori`; its largest bad index, `maxsi`)
      and one `scf.if` after the op stores it;
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
  let summary = "Turn a kernel's top-level scf.parallel loops into one work "
                "queue (tiles claimed from an atomic counter) for several "
                "threads to share";
  let description = [{
    The function gains a trailing `memref<1xi64>` argument (marked
    `flexattn.work_counter`), zero when called. Every thread runs the whole
    function; each claims tickets `t = counter++` (`memref.atomic_rmw addi`)
    and runs the scf.parallel body of the tile `t` names. The top-level
    loops take consecutive ticket ranges: a thread leaving one loop carries
    the ticket it holds into the next, so every tile of every loop runs
    exactly once, and no thread waits for another (the loops must be
    independent). Tiles are numbered heaviest first for the forward: the
    last dimension (the Q tile) counts down from its end and changes
    slowest, so a causal-like mask's long rows start first and the short
    ones fill in at the end; claiming one tile at a time balances whatever
    remains. One thread running the function alone visits every tile.

    The other top-level ops run on every thread, so they may write only
    buffers the function allocates (each thread computes its own copy, as
    the backward's `delta`). When a top-level op outside the loops writes an
    argument (the backward's capture gradients, zeroed and then accumulated
    by a sequential nest), a loop writes a buffer another top-level op
    reads or writes, or an op's memory effects are unknown, the whole body
    instead runs on the first thread to claim a ticket (`scf.if` on ticket
    0) and the other threads return at once.

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
      %first = memref.atomic_rmw addi %c1_i64, %counter[%c0] : (i64, memref<1xi64>) -> i64
      %t0 = arith.index_cast %first : i64 to index
      %left = scf.while (%t = %t0) : (index) -> index {
        %more = arith.cmpi ult, %t, %c256 : index
        scf.condition(%more) %t : index
      } do {
      ^bb0(%t: index):
        %qt = 31 - %t / 8, %b = (%t % 8) / 8, %h = %t % 8
        ... tile (%b, %h, %qt) ...
        %next = memref.atomic_rmw addi %c1_i64, %counter[%c0] : (i64, memref<1xi64>) -> i64
        %n = arith.index_cast %next : i64 to index
        scf.yield %n : index
      }
      // a second loop would continue from %left over [256, 256 + its tiles)
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
    upstream's LLVM conversions take). An `scf.parallel` still there (in a
    body `flexattn-distribute-tiles` keeps for one thread, or without that
    pass) becomes an `scf.for` nest, and the fixed-size tile buffers (state,
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
// flexattn-inline-mods -> flexattn-distribute-tiles -> flexattn-lower-to-loops.
// The tile, block-sparsity and inline passes handle the backward ops beside
// the forward's.
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
// The GPU backward (any NVIDIA target), after flexattn-differentiate-mods,
// flexattn-tile (with a precomputed delta) and flexattn-block-sparsity:
//   [flexattn-atomic-dq] -> flexattn-map-backward-to-grid ->
//   flexattn-lower-backward-mma | -rows -> flexattn-inline-mods ->
//   gpu-kernel-outlining -> flexattn-lower-to-nvvm
//===----------------------------------------------------------------------===//

def FlexAttnAtomicDq : Pass<"flexattn-atomic-dq", "::mlir::ModuleOp"> {
  let summary = "Add dq into an f32 buffer from the KV-outer nest and drop "
                "the Q-outer nest (FlashAttention's atomic dQ)";
  let description = [{
    Where a function's dq tiles (flexattn-tile's Q-outer nest) are all stored
    into one f32 argument and carry no capture gradients, the KV-outer
    nest's `flexattn.backward_step`s get that argument as `dq_sum`: each
    adds its tile's `scale * dS . K` into the rows of its queries (atomics,
    `flexattn-lower-backward-mma`), and the Q-outer nest, which recomputed
    `Q Kᵀ` and `dO Vᵀ` only for dq, is erased. The backward then does 2.5x
    the forward's GEMM work instead of 3.5x. The buffer is zero-filled
    before the nests (`flexattn-map-backward-to-grid` turns the fill into
    the launcher's `flexattn.zero_init`); the caller converts it to q's
    type. The order of the additions varies between runs, so a
    deterministic backward keeps dq in q's type (and this pass leaves it).
    Anything else (a dq of q's type, capture gradients, the CPU) is left
    as it is.

    Before:
    ```mlir
    scf.parallel (%b, %hkv, %kt) = ... {   // dk/dv tiles
      ... flexattn.backward_step ... dk(%dk_acc : memref<128x128xf32>) dv(%dv_acc : ...) at(...)
    }
    scf.parallel (%b, %h, %qt) = ... {     // dq tiles
      ... flexattn.backward_step ... dq(%dq_acc : memref<128x128xf32>) at(...)
      flexattn.store_tile %dq_acc : memref<128x128xf32> into %dq : memref<1x2x512x128xf32> at(...)
    }
    ```
    After:
    ```mlir
    linalg.fill ins(%cst : f32) outs(%dq : memref<1x2x512x128xf32>)
    scf.parallel (%b, %hkv, %kt) = ... {
      ... flexattn.backward_step ... dk(%dk_acc : ...) dv(%dv_acc : ...)
            dq_sum(%dq : memref<1x2x512x128xf32>) at(...)
    }
    ```
  }];
  let dependentDialects = ["::mlir::linalg::LinalgDialect",
                           "::mlir::arith::ArithDialect"];
}

def FlexAttnMapBackwardToGrid
    : Pass<"flexattn-map-backward-to-grid", "::mlir::ModuleOp"> {
  let summary = "Turn the backward's dk/dv and dq tile loop nests into one "
                "gpu.launch, a CTA per tile and a thread per tile row";
  let description = [{
    Each function's tile loop nests (top-level `scf.parallel` or `scf.for`
    nests over static extents whose bodies hold `flexattn.backward_step` or
    `flexattn.store_tile`: flexattn-tile's KV-outer nest of dk/dv tiles and
    its Q-outer nest of dq tiles) become one `gpu.launch` on a 1-D grid: the
    first CTAs take the first nest's tiles, the next ones the second's
    (torch's flex backward splits its grid the same way), each decoding its
    tile row-major from the block index and running the tile's body
    unchanged. The CTA has one thread per row of the largest accumulator
    tile (`flexattn-lower-backward-rows` gives each its row). Pure
    computations over constants are recomputed inside; memref arguments are
    passed. Zero fills of arguments before the nests (the capture gradients
    CTAs accumulate into) are removed and listed, as argument numbers, in
    the function attribute `flexattn.zero_init`: the launcher zeroes those
    buffers. Any other host computation (a delta not precomputed) is an
    error.

    Before:
    ```mlir
    linalg.fill ins(%cst : f32) outs(%dslopes : memref<4xf32>)
    scf.parallel (%b, %hkv, %kt) = (%c0, %c0, %c0) to (%c1, %c2, %c5) step (%c1, %c1, %c1) {
      memref.alloca_scope { ... flexattn.backward_step ... dk(%dk_acc : memref<16x16xf32>) ...
                            flexattn.store_tile %dk_acc ... }
    }
    scf.for %b = %c0 to %c1 step %c1 {
      scf.for %h = %c0 to %c4 step %c1 {
        scf.for %qt = %c0 to %c4 step %c1 {
          memref.alloca_scope { ... flexattn.backward_step ... dq(%dq_acc : memref<32x16xf32>) ... }
    }}}
    ```
    After (`func.func ... attributes {flexattn.zero_init = array<i64: 19>}`):
    ```mlir
    gpu.launch blocks(%bx, %by, %bz) in (%gx = %c26, %gy = %c1, %gz = %c1)
               threads(%tx, %ty, %tz) in (%sx = %c32, %sy = %c1, %sz = %c1) {
      %first = arith.cmpi ult, %bx, %c10 : index
      scf.if %first {
        %kt = arith.remui %bx, %c5 : index   // (b, hkv, kt) of CTA bx
        ...
        memref.alloca_scope { ... dk/dv tile ... }
      } else {
        %t = arith.subi %bx, %c10 : index    // (b, h, qt) of CTA bx - 10
        ...
        memref.alloca_scope { ... dq tile ... }
      }
      gpu.terminator
    }
    ```
  }];
  let dependentDialects = ["::mlir::gpu::GPUDialect",
                           "::mlir::scf::SCFDialect",
                           "::mlir::arith::ArithDialect"];
}

def FlexAttnLowerBackwardRows
    : Pass<"flexattn-lower-backward-rows", "::mlir::ModuleOp"> {
  let summary = "Lower the backward's tile ops in a gpu.launch to per-thread "
                "row code: a thread owns one row of its CTA's accumulators";
  let description = [{
    In each `gpu.launch` (from `flexattn-map-backward-to-grid`), thread t owns
    row t of the tile its accumulators cover and walks the other side:

      dk/dv step: t owns key j = kv0 + t; for each query row i of the Q tile
      dq step:    t owns query i = q0 + t; for each key j of the KV tile
        x = q_i . k_j    dP = dout_i . v_j       (f32, fma over D)
        S = score_mod(scale x)  (flexattn.apply_mods_vjp, dy = 1; -inf masked)
        P = exp2(log2(e) S - base(log2(e) lse_i))     dS = P (dP - delta_i)
        capture_grads[idx] += dS * dS/dload     (dq steps; f32 atomics, none
                                                 where dS = 0)
        dX = scale dS dS/dX, 0 where P = 0
        dv_j += P dout_i    dk_j += dX q_i    |    dq_i += dX k_j

    Each `[T, D]` accumulator tile (a stack buffer of the CTA) becomes a
    `memref<1 x D>` row of the thread; `flexattn.store_tile` writes the
    thread's row (converted to the gradient's type) when it lies inside the
    gradient. Threads past a tile's live rows do nothing. No buffer of more
    than one score exists.

    Before:
    ```mlir
    %dq = memref.alloca() : memref<32x16xf32>
    linalg.fill ins(%cst : f32) outs(%dq : memref<32x16xf32>)
    flexattn.backward_step ins(%q, %k, %v, %do : ...) stats(%lse, %delta : ...)
        dq(%dq : memref<32x16xf32>) at(%b, %h, %hkv, %q0, %kv0) attributes {...}
    flexattn.store_tile %dq : memref<32x16xf32> into %dqg : memref<1x4x100x16xf32> at(%b, %h, %q0)
    ```
    After:
    ```mlir
    %dq = memref.alloca() : memref<1x16xf32>
    linalg.fill ins(%cst : f32) outs(%dq : memref<1x16xf32>)
    scf.if %owns_row {
      scf.for %j = %c0 to %cols step %c1 {
        %x = scf.for %d ... iter_args(%a = %zero) -> (f32) { ... math.fma ... }
        ...
        %s:4 = flexattn.apply_mods_vjp ...
        ...
        scf.for %d = %c0 to %c16 step %c1 { ... math.fma %dx, %kd, %old ... }
      }
    }
    scf.if %row_inside { scf.for %d ... { memref.store %v, %dqg[%b, %h, %row, %d] } }
    ```
  }];
  let dependentDialects = ["::mlir::scf::SCFDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::flexattn::FlexAttnDialect"];
}

def FlexAttnLowerBackwardMma
    : Pass<"flexattn-lower-backward-mma", "::mlir::ModuleOp"> {
  let summary = "Lower the backward's tile ops in a gpu.launch to tensor-core "
                "code: cooperative rings, flexattn.mma, per-element math on "
                "fragments";
  let description = [{
    In place of `flexattn-lower-backward-rows` (FlashAttention-2's backward,
    sm_80 code, lowered next by `flexattn-lower-to-ampere`; on sm_90a its
    MMAs become wgmma there, the launch marked `flexattn.wgmma`). Each CTA of
    `flexattn-map-backward-to-grid` owns a square tile of R = 64 or 128 rows
    (keys for dk/dv, queries for dq) in R / 64 groups of 4 warps (the block
    becomes R / 64 x 128 threads), copies its owned tiles into rings once
    and streams the other side in 64-row chunks (32 at D = 128 where a tile
    crosses M or N: 64 spills there) in a loop, through two-slot rings at a
    run-time position (slot addresses are not kept live across loops). Each
    chunk waits for its copy (one wait, one barrier) and then issues the
    next one, which lands while this chunk is computed: within a step the
    step's next chunk; after its last, the first chunk of the next step of
    its loop (a step alone in a block-sparse list's loop: the body's
    coordinates cloned for the next iteration), the loop's first step's
    being copied before the loop. Other steps copy their first chunk
    themselves.

      dk/dv step, per chunk of 64 queries (wait Q, dout; copy the next):
        Sᵀ = K Qᵀ    dPᵀ = V doutᵀ            (flexattn.mma, A = the band)
        per element: Pᵀ, dXᵀ without the scale
        dV += Pᵀ dout    dK += dXᵀ Q           (register A)
      dq step, per chunk of 64 keys (wait K, V; copy the next):
        S = Q Kᵀ    dP = dout Vᵀ;  dX, capture_grads += dS dload
        dQ += dX K

    Per element (`unscaledScoreGradient`, passes/BackwardMath.h), from the
    query's base = base(log2(e) lse) and delta, read once per query: with a
    mask_mod alone P = exp2(fma(x, scale log2(e), -base)), masked on the
    exponent, and dX = dS = P (dP - delta); with a score_mod S = mods(scale
    x), P = exp2(fma(S, log2(e), -base)) and dX = dS dS/dx (0 where P = 0).
    The scale multiplies the dK and dQ sums once, at their stores. Scores
    past M x N get P = 0 by a select only where a tile crosses them.

    Capture gradients: per thread and differentiated load, a running sum
    for one index (registers), flushed when the index changes and at the dq
    tile's end, with an f32 atomic; where the gradient buffer has a
    trailing dim of partial slots (the deterministic mode), into the
    thread's own slot ((b Hq + h) ceil(M / R) + Q tile) x threads + thread
    with a plain load and store (fewer slots than that is an error).

    Accumulator tiles `[R, D]` become one fragment per thread (a
    `memref<vector<D/2 x f32>>` at the kernel's entry, whole-vector accesses
    only, so LLVM keeps it in registers); `flexattn.store_tile` stores the
    thread's elements. Needs static shapes, bf16/f16, D = Dv in {64, 128},
    square tiles of 64 or 128 (flexattn-tile), capture gradients in dq steps
    only; anything else is an error (Python picks
    `flexattn-lower-backward-rows` for it).

    Before:
    ```mlir
    %dq = memref.alloca() : memref<64x64xf32>
    linalg.fill ins(%cst : f32) outs(%dq : memref<64x64xf32>)
    scf.for %j = %c0 to %n step %c1 {
      flexattn.backward_step ins(%q, %k, %v, %do : ...) stats(%lse, %delta : ...)
          dq(%dq : memref<64x64xf32>) at(%b, %h, %hkv, %q0, %kv0) attributes {...}
    }
    flexattn.store_tile %dq : memref<64x64xf32> into %dqg : memref<1x2x256x64xbf16> at(%b, %h, %q0)
    ```
    After:
    ```mlir
    %own_q = flexattn.ring.alloc consumers(128) : !flexattn.ring<1 x 64x64xbf16>
    ...
    %dq = memref.alloca() : memref<vector<32xf32>>
    memref.store %zeros, %dq[] : memref<vector<32xf32>>
    flexattn.ring.copy %q[%b, %h, %q0] into %own_q[%c0_i32] ...
    flexattn.ring.copy %k[%b, %hkv, %kv0_first] into %str_a[%at0] if %any ...
    scf.for %j = %c0 to %n step %c1 {
      scf.for %c = %c0 to %c128 step %c64 {
        %later:1 = scf.if %last_and_more -> (index) { ... kv0 at %j + 1 ... }
        %at = memref.load %position[] : memref<i32>
        flexattn.ring.wait %str_a[%at] in_flight(1) ...
        %row = arith.select %in_step, %kv0_c1, %later#0 : index
        flexattn.ring.copy %k[%b, %hkv, %row] into %str_a[%next] if %copy ...
        %s = flexattn.mma %qt[%band], %kt {transpose_b} ...
        %dp = flexattn.mma %dot[%band], %vt {transpose_b} ...
        ... flexattn.apply_mods_vjp, math.fma, math.exp2 per element ...
        %acc = flexattn.mma %dx, %kt, %old ...
      }
    }
    %dqs = arith.mulf %dq_sum, %scale : vector<32xf32>
    scf.if %row_inside { vector.store %pair, %dqg[%b, %h, %row, %col] ... }
    ```

    With `overlap` (for wgmma, whose MMAs run asynchronously; the driver
    sets it on sm_90a) a 64-row chunk's element math runs in four parts of
    16 columns (two 8-column blocks j each), so that a group's MMAs overlap
    its own math: part 0's P while dPᵀ's MMA runs, part i's products (B
    from row 16 i: `b_row`, one k16 step) while part i + 1's math runs,
    each waited for before the next part's are issued. With two groups
    (R = 128) their Sᵀ, dPᵀ are issued in turns (named barriers 1 + g;
    group 1 passes group 0 the first turn at the kernel's entry):

    ```mlir
    nvvm.barrier id = %turn number_of_threads = %c256_i32
    %s = flexattn.mma %kt[%band], %qs {transpose_b} ...
    %dp = flexattn.mma %vt[%band], %dos {transpose_b} ...
    nvvm.barrier.arrive id = %other number_of_threads = %c256_i32
    %x = flexattn.mma.wait pending(1) %s ...             // Sᵀ only
    ... part 0's P (math.exp2), while dPᵀ runs ...
    %dpw = flexattn.mma.wait pending(0) %dp ...
    ... part 0's dX ...
    %dv0 = flexattn.mma %p0, %dos[%c0], %dv ...          // B's rows 0-15
    %dk0 = flexattn.mma %dx0, %qs[%c0], %dk ...
    ... part 1's P and dX, while part 0's products run ...
    %w:4 = flexattn.mma.wait pending(0) %dv0, %dk0, %p0, %dx0 ...
    %dv1 = flexattn.mma %p1, %dos[%c16], %w#0 ...        // rows 16-31
    ... parts 2 and 3 alike; the last waited for at the chunk's end
    ```

    Where a chunk is 32 rows anyway (D = 128 on a ragged tile) or dQ is
    summed into dq_sum, `overlap` changes nothing.
  }];
  let options = [
    Option<"overlap", "overlap", "bool", /*default=*/"false",
           "Run each 64-row chunk's element math in four parts that overlap "
           "the chunk's MMAs, the two groups' MMAs in turns (wgmma)">,
  ];
  let dependentDialects = ["::mlir::scf::SCFDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::vector::VectorDialect",
                           "::mlir::NVVM::NVVMDialect",
                           "::mlir::flexattn::FlexAttnDialect"];
}

//===----------------------------------------------------------------------===//
// GPU kernels. The pipeline for Hopper (sm_90a), after
// flexattn-tile{tile-q=128 tile-kv=128} and flexattn-block-sparsity:
//   flexattn-map-to-grid -> [flexattn-persistent-tiles] ->
//   flexattn-warp-specialize -> flexattn-schedule-consumers ->
//   flexattn-lower-fragments -> flexattn-inline-mods ->
//   flexattn-lower-to-hopper -> gpu-kernel-outlining ->
//   flexattn-lower-to-nvvm -> gpu-module-to-binary
// For sm_80 (Ampere, Ada) flexattn-multistage takes the place of
// warp-specialize and schedule-consumers, flexattn-lower-to-ampere that of
// lower-to-hopper.
// Target-neutral: map-to-grid, persistent-tiles, lower-fragments; Hopper:
// warp-specialize (TMA producer, mbarrier rings), schedule-consumers (wgmma
// overlap), lower-to-hopper; sm_80: multistage (cooperative cp.async rings),
// lower-to-ampere (mma.sync, ldmatrix).
//===----------------------------------------------------------------------===//

def FlexAttnMapToGrid : Pass<"flexattn-map-to-grid", "::mlir::ModuleOp"> {
  let summary = "Turn the loop over (batch, head, Q tile) into a gpu.launch "
                "of one CTA per tile";
  let description = [{
    Replaces each `scf.parallel` made by `flexattn-tile` (whose body holds a
    `flexattn.finalize`) with a `gpu.launch` on a 1-D grid of one CTA per
    tile. The CTA decodes its tile from the block index, the Q tiles of a
    (batch, head) adjacent (the CTAs running at once share K/V in L2) and the
    heaviest (last) Q tile of a head first, and runs the tile's body
    unchanged. A loop over (split, batch, head, Q tile) from
    `flexattn-split-kv{splits=S}` puts the S splits of a tile on adjacent
    CTAs: `s = t mod S`, then (batch, head, Q tile) from `t / S` as above. The CTA has one thread until a role pass assigns more. Pure
    computations over constants are recomputed inside; memref arguments are
    passed. Extents may be run-time values computed from the memref
    arguments' sizes (a dynamic-shape kernel's batch and `ceildiv(M, BM)` Q
    tiles): the host multiplies them into the grid and the CTA recomputes
    them (lit: the `@dynamic` case of its test).

    `tiles=N` launches the first N tiles of that order only (a static grid
    without a split dimension; lit: `@first_tiles`): the last `T - N` tiles
    (the first Q tiles of the last heads) are the caller's. sm_90a's dense
    kernels leave the `T mod SMs` tiles of a nearly empty last wave to the
    split-KV kernel, run on a second stream (flexattn_runtime.splitkv,
    docs/gpu-pipeline.md §3).

    Before:
    ```mlir
    scf.parallel (%b, %h, %qt) = (%c0, %c0, %c0) to (%c1, %c2, %c3) step (%c1, %c1, %c1) {
      memref.alloca_scope { ... flexattn.tile_step ... flexattn.finalize ... }
    }
    ```
    After:
    ```mlir
    gpu.launch blocks(%bx, %by, %bz) in (%gx = %c6, %gy = %c1, %gz = %c1)
               threads(%tx, %ty, %tz) in (%sx = %c1, %sy = %c1, %sz = %c1) {
      %head = arith.divui %bx, %c3 : index
      %b = arith.divui %head, %c2 : index
      %h = arith.remui %head, %c2 : index
      %qt = arith.subi %c2_0, (arith.remui %bx, %c3) : index
      memref.alloca_scope { ... flexattn.tile_step ... flexattn.finalize ... }
      gpu.terminator
    }
    ```
  }];
  let options = [
    Option<"tiles", "tiles", "int64_t", /*default=*/"0",
           "launch the first `tiles` tiles of the grid's order only (0: all; "
           "a static grid without a split dimension)">,
  ];
  let dependentDialects = ["::mlir::gpu::GPUDialect",
                           "::mlir::arith::ArithDialect"];
}

def FlexAttnPersistentTiles : Pass<"flexattn-persistent-tiles", "::mlir::ModuleOp"> {
  let summary = "Launch at most `ctas` CTAs, each looping over tiles "
                "(static snake-order tile scheduler)";
  let description = [{
    For a grid of T > `ctas` tiles from `flexattn-map-to-grid`, launches
    `ctas` CTAs that take the tiles in rounds of `ctas`, in the grid's tile
    order, snaking: in round i CTA c runs tile i ctas + c when i is even and
    i ctas + (ctas - 1 - c) when i is odd (while < T). Causal Q tiles get
    lighter along a head (the grid puts the heaviest first), so a CTA that
    took a heavy tile in one round takes a light one in the next: the work
    of the busiest CTA stays near the mean (B = 4, H = 16, 64 Q tiles a
    head on 132 CTAs: 1.031x the mean, a plain round robin 1.079x). With
    `ctas` = 0 or >= T nothing changes.

    After (`ctas` = 4, 6 tiles: CTA c runs c, then 7 - c if that is < 6):
    ```mlir
    gpu.launch blocks(%bx, %by, %bz) in (%gx = %c4, %gy = %c1, %gz = %c1) ... {
      %mirror = arith.subi %c3, %bx : index
      %in_last = arith.cmpi ult, %mirror, %c2 : index
      %rounds = arith.select %in_last, %c2, %c1 : index
      scf.for %i = %c0 to %rounds step %c1 {
        %odd = arith.cmpi ne, (arith.andi %i, %c1), %c0 : index
        %pos = arith.select %odd, %mirror, %bx : index
        %t = arith.addi (arith.muli %i, %c4), %pos : index
        %head = arith.divui %t, %c3 : index
        ...
      }
      gpu.terminator
    }
    ```
  }];
  let options = [
    Option<"ctas", "ctas", "int64_t", /*default=*/"0",
           "CTAs to launch (one per SM); 0 keeps one CTA per tile">,
  ];
  let dependentDialects = ["::mlir::scf::SCFDialect",
                           "::mlir::arith::ArithDialect"];
}

def FlexAttnWarpSpecialize : Pass<"flexattn-warp-specialize", "::mlir::ModuleOp"> {
  let summary = "Split each CTA into a TMA producer warpgroup and two "
                "consumer warpgroups talking through rings";
  let description = [{
    Rewrites the CTA body of `flexattn-map-to-grid` into a
    `flexattn.warp_specialize` of 384 threads (Hopper, FlashAttention-3
    shape). Three rings are allocated first: Q (1 slot of 128 rows; 2 in a
    CTA that loops over tiles, where they fit `max-shared-memory` beside K and
    V, so the next tile's Q loads while this one computes), K and V (`stages`
    slots of a KV tile each). The producer's thread 0 fences the
    tensor maps and, walking a clone of the tile loops, loads Q per tile and
    K, V per KV step (`ring.acquire`, `ring.load`). The consumers (2 groups
    of 64 rows; each thread's first fragment row is 64 group + 16 warp +
    lane / 4, its column 2 (lane % 4)) run the in-order online-softmax step on
    register fragments and `flexattn.frag.finalize`. Ring positions and the
    softmax state are loop-carried values. The host function gains the
    CUtensorMaps of q, k and v as `!llvm.ptr` arguments with a
    `flexattn.tensor_map` dictionary (tensor argument, box, swizzle, L2
    promotion, out-of-bounds fill, interleave), the launch 384 threads.
    Needs static shapes, bf16/f16, head dims 64/128, tiles of 128 x 64|128.

    After (one KV loop of the consumers):
    ```mlir
    %q = flexattn.ring.alloc consumers(256) : !flexattn.ring<1 x 128x128xbf16>
    %k = flexattn.ring.alloc consumers(256) : !flexattn.ring<2 x 128x128xbf16>
    %v = flexattn.ring.alloc consumers(256) : !flexattn.ring<2 x 128x128xbf16>
    flexattn.warp_specialize producer(threads = 128, registers = 40) {
    ^bb0(%thread: index):
      ... flexattn.ring.acquire %k[%i] ; flexattn.ring.load %kmap[%b, %hkv, %kv0] into %k[%i] ...
    } consumers(groups = 2, threads = 128, registers = 232) {
    ^bb0(%group: index, %thread: index):
      %r:5 = scf.for %j = %c0 to %n step %c1 iter_args(%qi = .., %i = .., %m = .., %l = .., %acc = ..) {
        flexattn.ring.wait %k[%i] : !flexattn.ring<2 x 128x128xbf16>
        %kt = flexattn.ring.slot %k[%i] : !flexattn.ring<2 x 128x128xbf16>
        %s0 = flexattn.mma %qt[%band], %kt {transpose_b} : ... -> vector<64xf32>
        %s = flexattn.mma.wait pending(0) %s0 : vector<64xf32>
        flexattn.ring.release %k[%i] : !flexattn.ring<2 x 128x128xbf16>
        %p, %m1, %l1, %alpha = flexattn.frag.softmax %s state(%m, %l) at(...) ...
        %acc1 = flexattn.frag.rescale %acc, %alpha : vector<64xf32>, vector<2xf32>
        flexattn.ring.wait %v[%i] ...
        %acc2 = flexattn.mma %p, %vt, %acc1 : vector<64xbf16>, ... -> vector<64xf32>
        %acc3:2 = flexattn.mma.wait pending(0) %acc2, %p : vector<64xf32>, vector<64xbf16>
        flexattn.ring.release %v[%i] ...
        scf.yield %qi, %i1, %m1, %l1, %acc3#0 : ...
      }
      flexattn.ring.release %q[%qi] ...
      flexattn.frag.finalize %r#4 state(%r#2, %r#3) outs(%out : ...) at(...) : vector<64xf32>, vector<2xf32>
    }
    ```
  }];
  let options = [
    Option<"stages", "stages", "int64_t", /*default=*/"2",
           "Slots of the K and V rings">,
    Option<"maxSharedMemory", "max-shared-memory", "int64_t", /*default=*/"0",
           "Shared memory of one CTA in bytes (0: unknown, Q takes one slot)">,
  ];
  let dependentDialects = ["::mlir::flexattn::FlexAttnDialect",
                           "::mlir::NVVM::NVVMDialect",
                           "::mlir::LLVM::LLVMDialect",
                           "::mlir::scf::SCFDialect",
                           "::mlir::arith::ArithDialect"];
}

def FlexAttnMultistage : Pass<"flexattn-multistage", "::mlir::ModuleOp"> {
  let summary = "Give every warp of each CTA both roles: copy tiles into "
                "multistage rings ahead of use, and compute (sm_80)";
  let description = [{
    Rewrites the CTA body of `flexattn-map-to-grid` into the
    FlashAttention-2 shape of an sm_80 kernel: groups of 4 warps, each warp
    owning `warp-rows` rows of the 128-row Q tile (16: two groups of 64-row
    bands, 256 threads; 32: one group of 128 threads, two m16 tiles per
    warp, so each K/V fragment a warp reads from shared memory feeds two
    MMAs), each computing its band with the consumer step of
    `flexattn-warp-specialize` (S = Q.Kᵀ, the softmax on register fragments,
    O = alpha O + P.V, `frag.finalize`). There is no producer: all threads
    copy tiles into cooperative rings (`flexattn.ring.copy`, all threads
    release each slot). Per Q tile: copy Q and wait; with `q-in-registers`,
    read the group's band into registers (`flexattn.frag.load`, the A
    operand of every S = Q.Kᵀ of the tile) and release it, otherwise every
    S = Q.Kᵀ reads the band from the slot (fewer registers: D = 128 with 32
    rows per warp) and the slot is released at the tile's end (the launch
    then carries `{flexattn.q_from_shared}` for flexattn-lower-to-ampere's
    addressing). Per KV
    loop: copy the K and V tiles of its first `stages` - 1 steps; per step,
    after the wait for K_j (V_j), copy K_{j+stages-1} (V_{j+stages-1}), so
    `stages` - 1 steps of copies are in flight while a step computes. The
    coordinates of a later step are the loop body's, recomputed for a later
    induction variable (block-sparse index lookups included); a copy past
    the loop's end gets `if false`, so each wait's `in_flight` is fixed:
    2 `stages` - 3. A K or V of batch 1 shared by the query batch (a paged
    cache), which the steps read through `flexattn-tile`'s batch-stride-0
    view, is copied from the batch-1 tensor at batch 0. Needs static heads
    and head dims (B, M and N may be run-time sizes: a dynamic-shape
    kernel's copies then check every row against N and its softmax takes
    `lens(%M, %N)`, q's and k's dim 2), bf16/f16 (f32: tf32), tiles of
    64|128 x 64|128, `stages` >= 2, one `flexattn.tile_step` per KV loop.

    After (one KV loop, `stages` = 2):
    ```mlir
    %q = flexattn.ring.alloc consumers(256) : !flexattn.ring<1 x 128x64xbf16>
    %k = flexattn.ring.alloc consumers(256) : !flexattn.ring<2 x 128x64xbf16>
    %v = flexattn.ring.alloc consumers(256) : !flexattn.ring<2 x 128x64xbf16>
    flexattn.ring.acquire %q[%c0_i32] : !flexattn.ring<1 x 128x64xbf16>
    flexattn.ring.copy %arg0[%b, %h, %q0] into %q[%c0_i32] : memref<1x2x300x64xbf16>, !flexattn.ring<1 x 128x64xbf16>
    flexattn.ring.wait %q[%c0_i32] in_flight(0) : !flexattn.ring<1 x 128x64xbf16>
    %qs = flexattn.ring.slot %q[%c0_i32] : !flexattn.ring<1 x 128x64xbf16>
    %qf = flexattn.frag.load %qs[%band] : !flexattn.smem_tile<128x64xbf16> -> vector<32xbf16>
    flexattn.ring.release %q[%c0_i32] : !flexattn.ring<1 x 128x64xbf16>
    %c:3 = scf.if %first_valid -> (index, index, index) { ...the body's coordinates at %lb... }
    flexattn.ring.acquire %k[%i0] ...
    flexattn.ring.copy %arg1[%c#0, %c#1, %c#2] into %k[%i0] if %first_valid ...
    flexattn.ring.copy %arg2[%c#0, %c#1, %c#2] into %v[%i0] if %first_valid ...
    scf.for %j = %lb to %ub step %c1 iter_args(... %i = %i0, %m = .., %l = .., %acc = ..) {
      %n:3 = scf.if %more -> (index, index, index) { ...coordinates at %j + 1... }
      flexattn.ring.wait %k[%i] in_flight(1) : !flexattn.ring<2 x 128x64xbf16>
      flexattn.ring.acquire %k[%i1] ...
      flexattn.ring.copy %arg1[%n#0, %n#1, %n#2] into %k[%i1] if %more ...
      %kt = flexattn.ring.slot %k[%i] ...
      %s0 = flexattn.mma %qf, %kt {transpose_b} : vector<32xbf16>, !flexattn.smem_tile<128x64xbf16> -> vector<64xf32>
      ... frag.softmax, frag.rescale, the same for V with in_flight(1), mma ...
    }
    ```
  }];
  let options = [
    Option<"stages", "stages", "int64_t", /*default=*/"2",
           "Slots of the K and V rings (copies run stages - 1 steps ahead)">,
    Option<"warpRows", "warp-rows", "int64_t", /*default=*/"16",
           "Q rows per warp: 16 (one m16 tile, 256 threads) or 32 (two m16 "
           "tiles, 128 threads)">,
    Option<"qInRegisters", "q-in-registers", "bool", /*default=*/"true",
           "Read each Q tile into registers once (else every S = Q.Kᵀ reads "
           "it from shared memory)">,
  ];
  let dependentDialects = ["::mlir::flexattn::FlexAttnDialect",
                           "::mlir::gpu::GPUDialect",
                           "::mlir::scf::SCFDialect",
                           "::mlir::arith::ArithDialect"];
}

def FlexAttnScheduleConsumers
    : Pass<"flexattn-schedule-consumers", "::mlir::ModuleOp"> {
  let summary = "Software-pipeline the consumers' KV step (Q.Kᵀ with the "
                "previous P.V) and ping-pong the consumer groups";
  let description = [{
    A transform of the in-order step `flexattn-warp-specialize` emits. With
    `pipeline`, each KV step issues S_j = Q.K_jᵀ together with the previous
    step's O += P_{j-1}.V_{j-1} and waits only for S before the softmax
    (FlashAttention-3's intra-warpgroup overlap); P is carried through the
    KV loops, the first step multiplies P = 0 by the Q tile reinterpreted as
    a V tile, the last P.V follows the loops. With `pingpong` too, the two
    consumer groups take turns issuing their MMAs through named barriers
    (`nvvm.barrier`, `nvvm.barrier.arrive`). A kernel with D != Dv stays in
    order. Without `pipeline` nothing changes. `pv-wait` places the wait
    for each P.V: after the softmax (`step`, as below), or at the start of
    the next step (`next-step`: the softmax yields float32 P, carried with
    alpha and the V slot, and reduces its rows as four chains; ptxas hoists
    a wait in the softmax's block above its exponentials), or after the
    softmax held until the first row's alpha (`alpha`: `flexattn.mma.wait
    ... after(%alpha0)`, which ptxas cannot issue before alpha0 is
    computed, and the row max as four chains, `flexattn.max_chains`);
    `auto` takes `next-step` where the
    score_mod is plain arithmetic, else `alpha` with two consumer groups
    at D = 128, else `step`; with three consumer groups the `step` wait
    reduces the row max as four chains too, unless the mods read captured
    buffers (a thread of 512 has 128 registers; the chains spilled the
    document mask's kernel).

    After (`pipeline`, `pingpong`):
    ```mlir
    %r:6 = scf.for ... iter_args(..., %i = .., %m = .., %l = .., %acc = .., %pprev = ..) {
      flexattn.ring.wait %k[%i] ...
      %has = arith.cmpi ugt, %i, %first : i32
      scf.if %has { flexattn.ring.wait %v[%prev] ... }
      %vp = arith.select %has, %vslot, %qasv : !flexattn.smem_tile<128x128xbf16>
      nvvm.barrier id = %turn number_of_threads = %c256
      %s0 = flexattn.mma %qt[%band], %kt {transpose_b} ...
      %o0 = flexattn.mma %pprev, %vp, %acc ...
      nvvm.barrier.arrive id = %other number_of_threads = %c256
      %s = flexattn.mma.wait pending(1) %s0 : vector<64xf32>
      flexattn.ring.release %k[%i] ...
      %p, %m1, %l1, %alpha = flexattn.frag.softmax %s ...
      %o:2 = flexattn.mma.wait pending(0) %o0, %pprev : vector<64xf32>, vector<64xbf16>
      scf.if %has { flexattn.ring.release %v[%prev] ... }
      %acc1 = flexattn.frag.rescale %o#0, %alpha : vector<64xf32>, vector<2xf32>
      scf.yield ..., %m1, %l1, %acc1, %p : ...
    }
    ```
  }];
  let options = [
    Option<"pipeline", "pipeline", "bool", /*default=*/"true",
           "Issue each tile's Q.Kᵀ with the previous tile's P.V so the softmax "
           "overlaps a GEMM (needs D == Dv)">,
    Option<"pingpong", "pingpong", "bool", /*default=*/"true",
           "Alternate the two consumer groups' MMA issue with named barriers "
           "(with pipeline only)">,
    Option<"pvWait", "pv-wait", "std::string", /*default=*/"\"auto\"",
           "Where a step waits for its P.V: step (after the softmax), "
           "alpha (after the softmax, held until alpha is computed), "
           "next-step (at the next step's start; P carried in float32), or "
           "auto (next-step where the softmax has a score_mod without "
           "math-dialect ops, else alpha with two consumer groups at D = 128, "
           "else step)">,
  ];
  let dependentDialects = ["::mlir::NVVM::NVVMDialect",
                           "::mlir::scf::SCFDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::vector::VectorDialect"];
}

def FlexAttnLowerFragments : Pass<"flexattn-lower-fragments", "::mlir::ModuleOp"> {
  let summary = "Lower the register-fragment ops to scalar code with quad "
                "shuffles (the shared online-softmax decomposition)";
  let description = [{
    `flexattn.frag.softmax` becomes per-element code: `flexattn.apply_mods`
    on each score (mask_mod where `masked`, -inf past N, indices clamped),
    then the online-softmax step of OnlineSoftmax.h with rows reduced over
    the thread's elements and the 4 threads sharing a row (`gpu.shuffle
    xor` 1, 2); P is rounded in pairs to 16 bits. Without mods the max is
    taken over the raw scores and scale log2(e) is fused into P's exponent
    (one fma); on a launch marked `flexattn.masked_raw_max` a mask_mod alone
    applies to the raw scores too. On a launch marked
    `flexattn.natural_scores` the modded scores stay mods(scale S) (the
    score_mod's float arithmetic marked `fastmath<contract>`) and log2(e)
    joins P's exponent fma; otherwise they are multiplied by it.
    `flexattn.frag.rescale` is a multiply per element;
    `flexattn.frag.finalize` completes the row sums, folds in the
    attention sink (`sinks[h]`, when given: OnlineSoftmax.h `foldSink` on the
    complete rows), multiplies by 1 / l (0 where l = 0), stores rounded pairs
    of out and, by the row's first thread, its lse and max_scores (ln(2) m,
    the max before the sink). Target-neutral: any m16n8-layout accumulator,
    with one or two m16 tiles per warp (read off the row values:
    vector<2xf32> or vector<4xf32>).

    Before:
    ```mlir
    %p, %m1, %l1, %alpha = flexattn.frag.softmax %s state(%m, %l) at(%b, %h, %row, %col)
        attributes {scale = 0.125 : f32, seq_lens = array<i64: 256, 256>, tile_size = array<i64: 128, 128>}
        : vector<64xf32>, vector<2xf32> -> vector<64xbf16>
    ```
    After (excerpt):
    ```mlir
    %s0 = vector.extract %s[0] : f32 from vector<64xf32>
    %mx = arith.maxnumf %ninf, %s0 : f32
    ...
    %sh = gpu.shuffle xor %mx, %c1_i32, %c32_i32 : f32
    ...
    %e = math.fma %s0, %c, %nbase : f32
    %p0 = math.exp2 %e : f32
    ```
    The epilogue, before:
    ```mlir
    flexattn.frag.finalize %acc state(%m, %l) sinks(%sinks : memref<2xf32>)
        outs(%out : memref<1x2x100x16xbf16>) lse(%lse : memref<1x2x100xf32>)
        max_scores(%mx : memref<1x2x100xf32>) at(%b, %h, %row, %col) : vector<8xf32>
    ```
    After (excerpt):
    ```mlir
    %l0 = gpu.shuffle xor %l_0, %c1_i32, %c32_i32 : f32     // complete row sums
    %sink = memref.load %sinks[%h] : memref<2xf32>
    %m1 = arith.maximumf %m_0, %sink2 : f32                  // the sink joins
    %alpha = math.exp2 ... ; %l1 = arith.addf (alpha l), exp2(sink2 - m1)
    scf.if %inside { llvm.store ... }                        // out = alpha acc / l1
    scf.if %first { memref.store %lse_v, %lse[...]; memref.store %max_v, %mx[...] }
    ```
  }];
  let dependentDialects = ["::mlir::vector::VectorDialect",
                           "::mlir::gpu::GPUDialect",
                           "::mlir::LLVM::LLVMDialect",
                           "::mlir::scf::SCFDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect"];
}

def FlexAttnLowerToHopper : Pass<"flexattn-lower-to-hopper", "::mlir::ModuleOp"> {
  let summary = "Lower roles, rings and MMAs to sm_90a NVVM ops (TMA, "
                "mbarriers, wgmma, setmaxnreg)";
  let description = [{
    Lays the rings out in dynamic shared memory (slots, then barriers; the
    base aligned to 1024 bytes at run time), sets the launch's dynamic
    shared memory, and lowers: `ring.alloc` to mbarrier.init by thread 0
    plus a CTA barrier; `ring.acquire`/`ring.wait` to
    `nvvm.mbarrier.try_wait.parity`; `ring.load` to
    `nvvm.mbarrier.arrive.expect_tx` and one `nvvm.cp.async.bulk.tensor`
    per 64-column panel; `ring.release` to `nvvm.mbarrier.arrive`; `mma` to
    `nvvm.wgmma.fence.aligned` (unless it follows an mma), one wgmma per 16
    of K (`nvvm.wgmma.mma_async` for a shared-memory A, inline PTX for a
    register A: MLIR 22 has no op) and a commit; `mma.wait` to
    `nvvm.wgmma.wait.group.sync.aligned` plus operand fences;
    `warp_specialize` to a branch on the thread index with
    `nvvm.setmaxregister` per role. Fails if the rings need more than
    `max-shared-memory` bytes.

    Before:
    ```mlir
    flexattn.ring.wait %k[%i] : !flexattn.ring<2 x 128x128xbf16>
    ```
    After:
    ```mlir
    %stage = arith.remui %i, %c2_i32 : i32
    %phase = arith.andi (arith.divui %i, %c2_i32), %c1_i32 : i32
    %bar = arith.addi %full_k, (arith.muli %stage, %c8_i32) : i32
    %ptr = llvm.inttoptr %bar : i32 to !llvm.ptr<3>
    nvvm.mbarrier.try_wait.parity %ptr, %phase, %ticks : !llvm.ptr<3>, i32, i32
    ```
  }];
  let options = [
    Option<"maxSharedMemory", "max-shared-memory", "int64_t", /*default=*/"0",
           "Shared memory a block may use, in bytes (0: unchecked)">,
  ];
  let dependentDialects = ["::mlir::NVVM::NVVMDialect",
                           "::mlir::LLVM::LLVMDialect",
                           "::mlir::gpu::GPUDialect",
                           "::mlir::vector::VectorDialect",
                           "::mlir::scf::SCFDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::arith::ArithDialect"];
}

def FlexAttnLowerToAmpere : Pass<"flexattn-lower-to-ampere", "::mlir::ModuleOp"> {
  let summary = "Lower cooperative rings and MMAs to sm_80 NVVM ops "
                "(cp.async, ldmatrix, mma.sync)";
  let description = [{
    Lays the rings' slots out in dynamic shared memory (the base aligned to
    128 bytes at run time; in a kernel that reads Q from shared memory,
    marked `flexattn.q_from_shared` by flexattn-multistage, the block's own
    address, so slot addresses are a symbol plus constants), sets the
    launch's dynamic shared memory, and
    lowers: `ring.copy` to each thread's 16-byte chunks with
    `nvvm.cp.async.shared.global` (cache global, zero fill past the
    tensor's end) into the swizzled tile layout (where a CTA's pass over
    the tile covers a multiple of 8 rows, a thread's chunks share their
    column and swizzle: one source and one slot address per thread, moved
    by constants, so no per-chunk address lives across the KV loop), then
    `nvvm.cp.async.commit.group` (an empty group where `if` is false);
    `ring.wait` to `nvvm.cp.async.wait.group` `in_flight` and a CTA barrier
    (nothing right before another wait with no more copies in flight: that
    one covers both); `ring.acquire` to a CTA barrier, left out right after
    (only waits and acquires between) a wait of the same ring at most
    `stages` - 1 positions back (each thread released the slot before it
    waited) or an acquire that made one; `ring.release` to
    nothing; `frag.load` to `nvvm.ldmatrix` x4 per 16 columns; `mma` to
    `nvvm.mma.sync` m16n8k16 (bf16, f16) per warp, 8 columns of N and 16 of
    K, A from the fragment's registers or ldmatrix, B with ldmatrix (a
    K-major B) or ldmatrix.trans (row-major, as V); `mma.wait` to nothing.
    In such a kernel each ldmatrix address is the lane's
    offset (one of 4 per operand layout) through an opaque
    `llvm.inline_asm` move once per block, plus the tile and a constant
    `llvm.getelementptr` offset (the ldmatrix immediate), so LLVM keeps no
    register per address across a KV loop:
    ```mlir
    %l = llvm.inline_asm has_side_effects asm_dialect = att "mov.b32 $0, $1;", "=r,r" %lane : (i32) -> i32
    %a = arith.addi %l, %base : i32
    %p = llvm.inttoptr %a : i32 to !llvm.ptr<3>
    %q0 = nvvm.ldmatrix %p {...} : (!llvm.ptr<3>) -> !llvm.struct<(i32, i32, i32, i32)>
    %p1 = llvm.getelementptr inbounds %p[2048] : (!llvm.ptr<3>) -> !llvm.ptr<3>, i8
    %q1 = nvvm.ldmatrix %p1 {...} : (!llvm.ptr<3>) -> !llvm.struct<(i32, i32, i32, i32)>
    ```
    Runs on sm_80 and later. Fails if the rings need more than
    `max-shared-memory` bytes.

    f32 tiles (fp32 q/k/v): `ring.copy` moves 4 floats per 16-byte chunk
    (32 columns per 128-byte panel), `frag.load` and the MMAs read operands
    with plain shared loads (8 bytes for a row's pair), `mma` is tf32
    `nvvm.mma.sync` m16n8k8 with the k index permuted (the mma's k = t and
    t + 4 are the 8-column step's columns 2t and 2t + 1, for A and B alike:
    the accumulator's pairs are then the A layout, so P needs no shuffle),
    each operand split into big = tf32(x) and small = tf32(x - big)
    (`nvvm.convert.float.to.tf32` rna) and three mma per product (small.big,
    big.small, big.big: 3xTF32), or one (big.big) with
    `fp32-precision=tf32`.

    A `gpu.launch` marked `flexattn.wgmma` (a unit attribute, dropped here;
    sm_90a, the backward's GEMMs of `flexattn-lower-backward-mma`: Python's
    rule `backward_wgmma` sets it):
    the same rings and copies (their swizzled layout is the 128-byte swizzle
    of wgmma's shared-memory descriptors; the base is aligned to 1024 bytes),
    a `nvvm.fence.proxy` (async.shared, cta) between a wait's
    `cp.async.wait.group` and its barrier (wgmma reads the slots through the
    async proxy), and the MMAs of flexattn-lower-to-hopper: a warpgroup per
    64 rows, one `nvvm.wgmma.mma_async` m64nNk16 per 16 of K for a shared A
    and a K-major B, the register-A wgmma for a register A and a row-major B
    (with an accumulator), `wgmma.commit.group`; `mma.wait` to
    `nvvm.wgmma.wait.group.sync.aligned` and operand fences. Refused: f32
    tiles, more than 16 rows per warp (`frag.load` A of two m16 tiles), the
    other operand combinations.

    Before (in a launch marked `flexattn.wgmma`):
    ```mlir
    flexattn.ring.wait %kr[%i] in_flight(0) : !flexattn.ring<2 x 32x64xbf16>
    %s0 = flexattn.mma %own[%band], %kt {transpose_b} : !flexattn.smem_tile<64x64xbf16>, !flexattn.smem_tile<32x64xbf16> -> vector<16xf32>
    %s = flexattn.mma.wait pending(0) %s0 : vector<16xf32>
    ```
    After:
    ```mlir
    nvvm.cp.async.wait.group 0
    nvvm.fence.proxy {kind = #nvvm.proxy_kind<async.shared>, space = #nvvm.shared_space<cta>}
    nvvm.barrier0
    nvvm.wgmma.fence.aligned
    %d0 = nvvm.wgmma.mma_async %da0, %db0, %acc0, <m = 64, n = 32, k = 16>, D [<f32>, <zero>, <wrapped>], A [<bf16>, <one>, <row>], B [<bf16>, <one>, <col>] : ...
    ... (4 per 64 columns of K)
    nvvm.wgmma.commit.group.sync.aligned
    nvvm.wgmma.wait.group.sync.aligned 0
    ```

    Before (f32):
    ```mlir
    %s = flexattn.mma %qf, %kt {transpose_b} : vector<32xf32>, !flexattn.smem_tile<64x64xf32> -> vector<32xf32>
    ```
    After (per 8 columns of K and of N; x0..x3 the fragment's elements):
    ```mlir
    %k = llvm.load %kaddr {alignment = 8 : i64} : !llvm.ptr<3> -> vector<2xf32>
    %a0 = nvvm.convert.float.to.tf32 %x0 {rnd = #nvvm.fp_rnd_mode<rna>}
    %r0 = llvm.bitcast %a0 : i32 to f32
    %d0 = arith.subf %x0, %r0 : f32
    %a0s = nvvm.convert.float.to.tf32 %d0 {rnd = #nvvm.fp_rnd_mode<rna>}
    ...
    %c1 = nvvm.mma.sync A[%a0s, %a2s, %a1s, %a3s] B[%b0, %b1] C[...] {... shape = #nvvm.shape<m = 16, n = 8, k = 8>} : (i32, i32, f32) -> !llvm.struct<(f32, f32, f32, f32)>
    %c2 = nvvm.mma.sync A[%a0, %a2, %a1, %a3] B[%b0s, %b1s] C[...] ...
    %c3 = nvvm.mma.sync A[%a0, %a2, %a1, %a3] B[%b0, %b1] C[...] ...
    ```

    Before:
    ```mlir
    flexattn.ring.wait %k[%i] in_flight(1) : !flexattn.ring<2 x 128x64xbf16>
    flexattn.ring.acquire %k[%i1] : !flexattn.ring<2 x 128x64xbf16>
    flexattn.ring.copy %arg1[%b, %h, %row] into %k[%i1] if %more : memref<1x2x300x64xbf16>, !flexattn.ring<2 x 128x64xbf16>
    ```
    After:
    ```mlir
    nvvm.cp.async.wait.group 1
    nvvm.barrier0
    scf.if %more {
      ...
      nvvm.cp.async.shared.global %dst, %src, 16, cache = cg, %size : !llvm.ptr<3>, !llvm.ptr<1>, i32
      ...
    }
    nvvm.cp.async.commit.group
    ```
  }];
  let options = [
    Option<"maxSharedMemory", "max-shared-memory", "int64_t", /*default=*/"0",
           "Shared memory a block may use, in bytes (0: unchecked)">,
    Option<"fp32Precision", "fp32-precision", "std::string", /*default=*/"\"ieee\"",
           "Products of f32 tiles: 'ieee' (3xTF32) or 'tf32' (one tf32 mma)">,
  ];
  let dependentDialects = ["::mlir::NVVM::NVVMDialect",
                           "::mlir::LLVM::LLVMDialect",
                           "::mlir::gpu::GPUDialect",
                           "::mlir::vector::VectorDialect",
                           "::mlir::scf::SCFDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::arith::ArithDialect"];
}

def FlexAttnLowerToNVVM : Pass<"flexattn-lower-to-nvvm", "::mlir::ModuleOp"> {
  let summary = "Lower the outlined GPU kernels to the NVVM and LLVM dialects";
  let description = [{
    Rewrites f32 `math.exp`, `exp2`, `log`, `log2` and `tanh` in the
    kernels into the special-function unit's NVVM intrinsics
    (`llvm.nvvm.ex2.approx.ftz`, `lg2.approx`, `nvvm.rcp.approx.ftz.f`: no
    libdevice needed), f32 `arith.divf` into a multiply by the reciprocal of
    a constant divisor or `llvm.nvvm.div.full`, f32 abs, copysign, floor,
    ceil, sqrt and fma into intrinsic calls of one PTX instruction each and
    min/max into LLVM intrinsics (upstream's lowering would call libdevice
    for them, which exists only where CUDA is installed); declares the
    dynamic shared memory (`__flexattn_smem`, an external `[0 x i8]` that
    `gpu.dynamic_shared_memory` lowers to); attaches an NVVM target (`chip`,
    `features`, `opt-level`) to each `gpu.module` and runs upstream's
    conversions on it: scf to cf, strided metadata, affine, vector, gpu to
    NVVM and nvvm to llvm. The result is ready for `gpu-module-to-binary`.

    Memref arguments of a kernel are bare pointers (`bare-pointers=1`, one
    `.u64` parameter each), which needs static shapes; a dynamic-shape
    kernel (`memref<?x8x?x64xbf16>`) takes upstream's memref descriptors
    instead (`bare-pointers=0`: allocated and aligned pointer, offset, sizes
    and strides, each a parameter), from which it reads its run-time sizes.

    Before:
    ```mlir
    %e = math.exp2 %x : f32
    ```
    After:
    ```mlir
    %e = llvm.call_intrinsic "llvm.nvvm.ex2.approx.ftz.f32"(%x) : (f32) -> f32
    ```
  }];
  let options = [
    Option<"chip", "chip", "std::string", /*default=*/"",
           "Target chip (required; flexattn_mlir.targets names it)">,
    Option<"features", "features", "std::string", /*default=*/"",
           "PTX features (e.g. +ptx83; empty: the chip's default PTX version)">,
    Option<"optLevel", "opt-level", "int64_t", /*default=*/"3",
           "LLVM optimisation level">,
    Option<"barePointers", "bare-pointers", "bool", /*default=*/"true",
           "Memref kernel arguments as bare pointers (static shapes), else as "
           "memref descriptors (a dynamic-shape kernel)">,
  ];
  let dependentDialects = ["::mlir::gpu::GPUDialect",
                           "::mlir::LLVM::LLVMDialect",
                           "::mlir::NVVM::NVVMDialect",
                           "::mlir::math::MathDialect"];
}

#endif // FLEXATTN_PASSES
