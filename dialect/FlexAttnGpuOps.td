//===- FlexAttnGpuOps.td - flexattn GPU kernel ops ---------*- tablegen -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// The mid-level IR of the GPU kernel, between the tiled attention
// (flexattn.tile_step on memrefs) and NVVM. Three groups:
//
//   roles      flexattn.warp_specialize              (flexattn-warp-specialize;
//                                                      flexattn-multistage has none)
//   rings      flexattn.ring.*, flexattn.smem_tile.reinterpret
//   compute    flexattn.mma, flexattn.mma.wait,       (target-neutral: the
//              flexattn.frag.*                         sm_80 path reuses them)
//
// Register fragments. A fragment is one thread's share of a tile held in
// registers, a 1-D vector in the layout of the m16n8 MMA accumulator, made of
// T m16 tiles (a warp owns 16 T rows; T = 1 or 2). The thread's element
// `e = E i + 4 j + 2 h + q` (E = the elements of one m16 tile: N / 2 for N
// columns) holds tile element `(row + 16 i + 8 h, col + 8 j + q)`, where
// `row` and `col` are the thread's first fragment row and column (warp w of
// a band holds rows 16 T w .. 16 T w + 16 T - 1; lane = 4 g + t has row
// 16 T w + g and column 2 t). A row value (running max, running sum) is a
// vector<2Txf32>: element `2 i + h` is the thread's row `row + 16 i + 8 h`.
// Hopper's wgmma gives a warp 16 rows (T = 1); sm_80's mma.sync either.
//
//===----------------------------------------------------------------------===//

#ifndef FLEXATTN_GPU_OPS
#define FLEXATTN_GPU_OPS

include "FlexAttnTypes.td"
include "mlir/Dialect/LLVMIR/LLVMOpBase.td"
include "mlir/Interfaces/InferTypeOpInterface.td"

def FlexAttn_Fragment : VectorOfRankAndType<[1], [F32]>;
// An MMA operand in registers: 16-bit values, or f32 (tf32 MMAs).
def FlexAttn_HalfFragment : VectorOfRankAndType<[1], [F16, BF16, F32]>;
// One f32 per row of the thread: 2 per m16 tile of its warp (1 or 2 tiles).
def FlexAttn_RowValues : FixedVectorOfLengthAndType<[2, 4], [F32]>;

defvar RingAt = [{ $ring `[` $position `]` attr-dict `:` qualified(type($ring)) }];

//===----------------------------------------------------------------------===//
// Roles
//===----------------------------------------------------------------------===//

def FlexAttn_WarpSpecializeOp : FlexAttn_Op<"warp_specialize", [
    NoTerminator, RecursiveMemoryEffects]> {
  let summary = "Split a CTA into one producer warpgroup and consumer warpgroups";
  let description = [{
    The CTA's threads take one of two roles: the first `producer_threads`
    run the `producer` region (block argument: the thread's index in the
    role), the next `consumer_groups x consumer_threads` run the `consumers`
    region (block arguments: the group's index and the thread's index in its
    group). `producer_registers` and `consumer_registers` are the per-thread
    register budgets of the roles (the lowering reallocates registers between
    them). The regions share the values defined before the op (rings, tensor
    maps) and talk only through rings.

    ```mlir
    flexattn.warp_specialize producer(threads = 128, registers = 40) {
    ^bb0(%thread: index):
      ...
    } consumers(groups = 2, threads = 128, registers = 232) {
    ^bb0(%group: index, %thread: index):
      ...
    }
    ```
  }];
  let arguments = (ins I64Attr:$producer_threads, I64Attr:$producer_registers,
                       I64Attr:$consumer_groups, I64Attr:$consumer_threads,
                       I64Attr:$consumer_registers);
  let regions = (region SizedRegion<1>:$producer, SizedRegion<1>:$consumers);
  let assemblyFormat = [{
    `producer` `(` `threads` `=` $producer_threads `,` `registers` `=`
      $producer_registers `)` $producer
    `consumers` `(` `groups` `=` $consumer_groups `,` `threads` `=`
      $consumer_threads `,` `registers` `=` $consumer_registers `)` $consumers
    attr-dict
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    int64_t getNumThreads() {
      return getProducerThreads() + getConsumerGroups() * getConsumerThreads();
    }
  }];
}

//===----------------------------------------------------------------------===//
// Rings
//===----------------------------------------------------------------------===//

def FlexAttn_RingAllocOp : FlexAttn_Op<"ring.alloc"> {
  let summary = "Allocate a ring of shared-memory slots and its events";
  let description = [{
    Reserves the ring's slots in shared memory and initialises its events:
    every slot starts empty. `consumers` threads release each slot (the
    empty event completes when all of them have). Allocations are made once,
    at the top of the kernel, before the roles split.

    ```mlir
    %kv = flexattn.ring.alloc consumers(256) : !flexattn.ring<2 x 128x128xbf16>
    ```
  }];
  let arguments = (ins I64Attr:$consumers);
  let results = (outs FlexAttn_RingType:$ring);
  let assemblyFormat = "`consumers` `(` $consumers `)` attr-dict `:` qualified(type($ring))";
  let hasVerifier = 1;
}

def FlexAttn_RingAcquireOp : FlexAttn_Op<"ring.acquire"> {
  let summary = "Producer: wait until a ring position's slot is empty";
  let description = [{
    Blocks until the slot of `position` was released by the consumers of
    `position - stages` (at once in the first round).

    ```mlir
    flexattn.ring.acquire %kv[%i] : !flexattn.ring<2 x 128x128xbf16>
    ```
  }];
  let arguments = (ins FlexAttn_RingType:$ring, I32:$position);
  let assemblyFormat = RingAt;
}

def FlexAttn_RingLoadOp : FlexAttn_Op<"ring.load"> {
  let summary = "Producer: copy a tile of a tensor into a ring slot, asynchronously";
  let description = [{
    Starts copying rows `[row, row + rows)` (all columns) of `tensor[b, h]`
    into the slot of `position`, through `tensor_map`, a pointer to the
    tensor's TMA descriptor (box: 64 columns x `rows` rows, 128-byte swizzle,
    zero fill past the end). The slot's full event completes when the bytes
    have landed. One thread issues it.

    ```mlir
    flexattn.ring.load %kmap[%b, %hkv, %kv0] into %kv[%i] : !llvm.ptr, !flexattn.ring<2 x 128x128xbf16>
    ```
  }];
  let arguments = (ins LLVM_AnyPointer:$tensor_map, Index:$b, Index:$h,
                       Index:$row, FlexAttn_RingType:$ring, I32:$position);
  let assemblyFormat = [{
    $tensor_map `[` $b `,` $h `,` $row `]` `into` $ring `[` $position `]`
    attr-dict `:` type($tensor_map) `,` qualified(type($ring))
  }];
}

def FlexAttn_RingCopyOp : FlexAttn_Op<"ring.copy"> {
  let summary = "All threads: copy a tile of a tensor into a ring slot, asynchronously";
  let description = [{
    Starts copying rows `[row, row + rows)` (all columns) of `source[b, h]`
    into the slot of `position`; rows past the tensor's end are filled with
    zeros, and so are the tile's columns past the source's (a head dim that
    is a multiple of 8 but not of 64, padded to whole 64-column panels: the
    zeros add nothing to a dot product over the padded dim, and a padded
    value column gives output columns that are never stored; the source is
    never read past its rows). Every thread of the CTA executes the op and copies its share (a
    cooperative ring: the same threads fill and read it, there is no
    producer role). With `valid` false, nothing is copied, but the op still
    counts as one copy in the thread's sequence of copies (see the
    `in_flight` of `flexattn.ring.wait`): a software pipeline issues a copy
    per step, also past the end of its loop.

    ```mlir
    flexattn.ring.copy %k[%b, %hkv, %kv0] into %kv[%i] if %more : memref<1x2x300x64xbf16>, !flexattn.ring<2 x 128x64xbf16>
    flexattn.ring.copy %k[%b, %hkv, %kv0] into %kv[%i] : memref<1x2x300x24xbf16>, !flexattn.ring<2 x 128x64xbf16>
    ```
  }];
  let arguments = (ins AnyMemRef:$source, Index:$b, Index:$h, Index:$row,
                       FlexAttn_RingType:$ring, I32:$position, Optional<I1>:$valid);
  let assemblyFormat = [{
    $source `[` $b `,` $h `,` $row `]` `into` $ring `[` $position `]`
    (`if` $valid^)? attr-dict `:` type($source) `,` qualified(type($ring))
  }];
  let hasVerifier = 1;
}

def FlexAttn_RingWaitOp : FlexAttn_Op<"ring.wait"> {
  let summary = "Consumer: wait until a ring position's slot is full";
  let description = [{
    Blocks until the copy into the slot of `position` has landed. Waiting
    again for a position not yet released returns at once.

    For a ring filled by `flexattn.ring.copy`, `in_flight` says how many of
    this thread's later copies (of any ring) may still be running: the
    number of `ring.copy` ops the thread executed after the one of
    `position`. The pass that schedules the copies knows it; the lowering
    waits for all but that many (sm_80: `cp.async.wait_group`).

    ```mlir
    flexattn.ring.wait %kv[%i] : !flexattn.ring<2 x 128x128xbf16>
    flexattn.ring.wait %kv[%i] in_flight(1) : !flexattn.ring<2 x 128x128xbf16>
    ```
  }];
  let arguments = (ins FlexAttn_RingType:$ring, I32:$position,
                       OptionalAttr<I64Attr>:$in_flight);
  let builders = [
    OpBuilder<(ins "::mlir::Value":$ring, "::mlir::Value":$position), [{
      build($_builder, $_state, ring, position, ::mlir::IntegerAttr());
    }]>];
  let assemblyFormat = [{
    $ring `[` $position `]` (`in_flight` `(` $in_flight^ `)`)? attr-dict `:`
    qualified(type($ring))
  }];
  let hasVerifier = 1;
}

def FlexAttn_RingSlotOp : FlexAttn_Op<"ring.slot", [
    Pure, TypesMatchWith<"the result is a slot of the ring", "ring", "tile",
                         "::llvm::cast<RingType>($_self).getTileType()">]> {
  let summary = "The shared-memory tile of a ring position";
  let description = [{
    The slot `position % stages` of the ring, as a tile. Reading it is only
    meaningful between a `ring.wait` and the `ring.release` of the position.

    ```mlir
    %k = flexattn.ring.slot %kv[%i] : !flexattn.ring<2 x 128x128xbf16>
    ```
  }];
  let arguments = (ins FlexAttn_RingType:$ring, I32:$position);
  let results = (outs FlexAttn_SmemTileType:$tile);
  let assemblyFormat = RingAt;
}

def FlexAttn_RingReleaseOp : FlexAttn_Op<"ring.release"> {
  let summary = "Consumer: this thread is done with a ring position's slot";
  let description = [{
    Arrives on the slot's empty event; the producer may refill the slot once
    all `consumers` threads have released it. Reads of the slot (including
    asynchronous MMAs) must be complete.

    ```mlir
    flexattn.ring.release %kv[%i] : !flexattn.ring<2 x 128x128xbf16>
    ```
  }];
  let arguments = (ins FlexAttn_RingType:$ring, I32:$position);
  let assemblyFormat = RingAt;
}

def FlexAttn_SmemTileReinterpretOp : FlexAttn_Op<"smem_tile.reinterpret", [Pure]> {
  let summary = "Read the bytes of a shared-memory tile as a tile of another shape";
  let description = [{
    The same shared memory (its first bytes), viewed as a tile with the
    result's rows and columns; no data moves. The result may not be larger
    than the source and has the same element type. Used where any finite
    data will do: a software-pipelined P.V of the first KV tile multiplies
    P = 0 by the Q tile instead of a V tile not loaded yet.

    ```mlir
    %v = flexattn.smem_tile.reinterpret %q : !flexattn.smem_tile<128x128xbf16> to !flexattn.smem_tile<64x128xbf16>
    ```
  }];
  let arguments = (ins FlexAttn_SmemTileType:$source);
  let results = (outs FlexAttn_SmemTileType:$result);
  let assemblyFormat = "$source attr-dict `:` qualified(type($source)) `to` qualified(type($result))";
  let hasVerifier = 1;
  let hasFolder = 1;
}

def FlexAttn_SmemTilePanelOp : FlexAttn_Op<"smem_tile.panel", [Pure]> {
  let summary = "Rows of one 128-byte column panel of a shared-memory tile";
  let description = [{
    Rows `[row, row + result rows)` of column panel `panel` (the 128 bytes
    of columns `[panel x 128 / bytes, ...)`: 64 columns of a 16-bit type)
    of the source, as a tile of one panel; no data moves. A panel is
    `rows x 128` contiguous bytes with the swizzle phase of its rows, so
    the view is the same layout where `row` is a multiple of 8 (then it
    starts on a 1024-byte boundary, as wgmma's descriptors need). Used to
    multiply by a band of rows and columns of a tile, as the backward's
    dQ += dX K does with K's bands and panels.

    ```mlir
    %kb = flexattn.smem_tile.panel %k[%row, %panel] : !flexattn.smem_tile<128x128xbf16> to !flexattn.smem_tile<64x64xbf16>
    ```
  }];
  let arguments = (ins FlexAttn_SmemTileType:$source, Index:$row, Index:$panel);
  let results = (outs FlexAttn_SmemTileType:$result);
  let assemblyFormat = [{
    $source `[` $row `,` $panel `]` attr-dict `:` qualified(type($source)) `to`
    qualified(type($result))
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Compute on register fragments
//===----------------------------------------------------------------------===//

def FlexAttn_MmaOp : FlexAttn_Op<"mma", [AttrSizedOperandSegments]> {
  let summary = "Asynchronous tensor-core product of a band of rows";
  let description = [{
    `D = A . op(B) (+ acc)` for the band of the executing group of 128
    threads (4 warps x 16 T rows, T m16 tiles per warp: a 64- or 128-row
    band), accumulated in f32: `op(B) = Bᵀ` with
    `transpose_b` (B is `[N, K]`, as K for S = Q.Kᵀ) and `B` otherwise (B is
    `[K, N]`, as V for O = P.V). A is either a shared-memory tile, read at
    rows `[a_row, a_row + 64 T)`, or a fragment of 16-bit values (`T K / 2`
    per thread; f32 for f32 tiles: tf32 MMAs, see flexattn-lower-to-ampere);
    B is a shared-memory tile; with a register A and a row-major B,
    `b_row` (a multiple of 16) reads B's rows `[b_row, b_row + K)`, K read
    off A's size (the second half of a chunk's keys, say). The result is a
    fragment of
    `T N / 2` f32 per thread (T is read off its size); without `acc` the
    product starts from zero. Each B fragment a warp reads feeds its T m16
    tiles.

    The op is asynchronous: it issues the product as one group, and its
    result may only be read through `flexattn.mma.wait`; register operands
    (A, acc) must not change until that wait.

    ```mlir
    %s0 = flexattn.mma %q[%row], %k {transpose_b} : !flexattn.smem_tile<128x128xbf16>, !flexattn.smem_tile<128x128xbf16> -> vector<64xf32>
    %o0 = flexattn.mma %p, %v, %acc : vector<64xbf16>, !flexattn.smem_tile<128x128xbf16>, vector<64xf32> -> vector<64xf32>
    %o1 = flexattn.mma %p1, %v[%c32], %o0 : vector<16xbf16>, !flexattn.smem_tile<64x128xbf16>, vector<64xf32> -> vector<64xf32>
    ```
  }];
  let arguments = (ins AnyTypeOf<[FlexAttn_SmemTileType, FlexAttn_HalfFragment]>:$a,
                       Optional<Index>:$a_row, FlexAttn_SmemTileType:$b,
                       Optional<Index>:$b_row,
                       Optional<FlexAttn_Fragment>:$acc, UnitAttr:$transpose_b);
  let results = (outs FlexAttn_Fragment:$result);
  let assemblyFormat = [{
    $a (`[` $a_row^ `]`)? `,` $b (`[` $b_row^ `]`)? (`,` $acc^)? attr-dict `:` qualified(type($a)) `,` qualified(type($b))
    (`,` type($acc)^)? `->` type($result)
  }];
  let hasVerifier = 1;
}

def FlexAttn_FragStoreOp : FlexAttn_Op<"frag.store"> {
  let summary = "Write the executing group's fragment into a shared tile";
  let description = [{
    The executing group's 64-row fragment (16 rows per warp, `cols / 2`
    16-bit values per thread in the accumulator layout: warp w, lane l
    holds rows 16 w + l / 4 (+ 8), columns 2 (l % 4) + 8 j (+ 1)) written
    into the tile: element (r, c) at tile (r, c), or at (c, r) with
    `transpose` (the tile then has the fragment's columns as rows). Each
    group writes its own tile; the writes are the threads' own shared
    stores (on sm_90a followed by the async-proxy fence, so a wgmma may
    read them after a barrier). A barrier must come before another thread
    reads them.

    ```mlir
    flexattn.frag.store %dx, %t {transpose} : vector<32xbf16>, !flexattn.smem_tile<64x64xbf16>
    ```
  }];
  let arguments = (ins FlexAttn_HalfFragment:$value, FlexAttn_SmemTileType:$tile,
                       UnitAttr:$transpose);
  let assemblyFormat = [{
    $value `,` $tile attr-dict `:` type($value) `,` qualified(type($tile))
  }];
  let hasVerifier = 1;
}

def FlexAttn_FragStageOp : FlexAttn_Op<"frag.stage"> {
  let summary = "Write the group's f32 fragment, row-major, into a staging tile";
  let description = [{
    The executing group's 64-row f32 fragment (the accumulator layout, N
    columns: N / 2 per thread) written into columns `[col, col + N)` of
    the f32 tile, laid out row-major without the swizzle (row r at r x
    cols x 4 bytes): the contiguous rows `flexattn.bulk.reduce_add` reads.
    The threads' own shared stores, then the async-proxy fence; a barrier
    must come before the bulk operation reads them.

    ```mlir
    flexattn.frag.stage %dq, %stage[%col] : vector<32xf32>, !flexattn.smem_tile<64x128xf32>
    ```
  }];
  let arguments = (ins FlexAttn_Fragment:$value, FlexAttn_SmemTileType:$tile, Index:$col);
  let assemblyFormat = [{
    $value `,` $tile `[` $col `]` attr-dict `:` type($value) `,` qualified(type($tile))
  }];
  let hasVerifier = 1;
}

def FlexAttn_BulkReduceAddOp : FlexAttn_Op<"bulk.reduce_add"> {
  let summary = "Add rows of a staged f32 tile into global memory (one bulk reduction)";
  let description = [{
    `dst[b, h, row + r, :] += tile[r, :]` for `r < rows`, the tile's
    columns being dst's last dim: one `cp.reduce.async.bulk` `.add.f32` of
    `rows x cols x 4` contiguous bytes (the tile row-major, as
    `flexattn.frag.stage` writes it), issued by the executing thread (the
    caller elects one) and committed as a bulk group; L2 adds whole lines,
    so the additions of many CTAs into the same rows cost a fraction of
    per-element atomics. `rows` (i32) of 0 or less issues nothing. Their
    order between CTAs varies. `flexattn.bulk.wait_read` waits until the
    tile may be overwritten.

    ```mlir
    flexattn.bulk.reduce_add %stage, %dq[%b, %h, %row] rows(%n) : !flexattn.smem_tile<64x128xf32>, memref<4x16x8192x128xf32>
    ```
  }];
  let arguments = (ins FlexAttn_SmemTileType:$tile, AnyMemRef:$dst, Index:$b, Index:$h,
                       Index:$row, I32:$rows);
  let assemblyFormat = [{
    $tile `,` $dst `[` $b `,` $h `,` $row `]` `rows` `(` $rows `)` attr-dict `:`
    qualified(type($tile)) `,` type($dst)
  }];
  let hasVerifier = 1;
}

def FlexAttn_BulkWaitReadOp : FlexAttn_Op<"bulk.wait_read"> {
  let summary = "Wait until this thread's bulk operations have read shared memory";
  let description = [{
    Blocks the executing thread until the bulk groups it committed
    (`flexattn.bulk.reduce_add`) have read their shared-memory source, so
    a staging tile may be written again after the next barrier.

    ```mlir
    flexattn.bulk.wait_read
    ```
  }];
  let assemblyFormat = "attr-dict";
}

def FlexAttn_FragLoadOp : FlexAttn_Op<"frag.load"> {
  let summary = "Read a band of a shared tile into a register fragment";
  let description = [{
    The executing group's rows `[row, row + 64 T)` of a shared-memory tile,
    as a fragment of its values (`T cols / 2` per thread, T m16 tiles per
    warp) in the fragment layout: the register A operand of `flexattn.mma`.
    A kernel that reads the same A tile at every step (Q) loads it once.

    ```mlir
    %qf = flexattn.frag.load %q[%band] : !flexattn.smem_tile<128x128xbf16> -> vector<64xbf16>
    ```
  }];
  let arguments = (ins FlexAttn_SmemTileType:$tile, Index:$row);
  let results = (outs FlexAttn_HalfFragment:$result);
  let assemblyFormat = [{
    $tile `[` $row `]` attr-dict `:` qualified(type($tile)) `->` type($result)
  }];
  let hasVerifier = 1;
}

def FlexAttn_MmaWaitOp : FlexAttn_Op<"mma.wait", [
    AttrSizedOperandSegments, DeclareOpInterfaceMethods<InferTypeOpInterface>]> {
  let summary = "Wait for asynchronous MMAs; their results become readable";
  let description = [{
    Blocks until at most `pending` of this thread's most recent MMA groups
    are still running, and returns its operands: results of the completed
    MMAs, now readable, and register operands the completed MMAs read, now
    free to be overwritten (listing them keeps them intact until here).

    `after` (float32 values) holds the wait back until they are computed:
    the instruction scheduler may not issue it earlier, even where nothing
    else it waits for stands between (ptxas otherwise issues a
    `wgmma.wait_group` as early as it can, ahead of independent work the
    MMAs could overlap). Moot where MMAs are synchronous (sm_80).

    ```mlir
    %s = flexattn.mma.wait pending(1) %s0 : vector<64xf32>
    %o, %p1 = flexattn.mma.wait pending(0) %o0, %p : vector<64xf32>, vector<64xbf16>
    %o, %p1 = flexattn.mma.wait pending(0) %o0, %p after(%alpha : vector<2xf32>)
        : vector<64xf32>, vector<64xbf16>
    ```
  }];
  let arguments = (ins I64Attr:$pending, Variadic<AnyVectorOfNonZeroRank>:$values,
                       Variadic<VectorOfNonZeroRankOf<[F32]>>:$after);
  let results = (outs Variadic<AnyVectorOfNonZeroRank>:$results);
  let builders = [
    OpBuilder<(ins "int64_t":$pending, "ValueRange":$values), [{
      build($_builder, $_state, pending, values, ValueRange());
    }]>
  ];
  let assemblyFormat = [{
    `pending` `(` $pending `)` $values (`after` `(` $after^ `:` type($after) `)`)?
    attr-dict `:` type($values)
  }];
}

def FlexAttn_FragSoftmaxOp : FlexAttn_Op<"frag.softmax", [
    IsolatedFromAbove, RecursiveMemoryEffects, AttrSizedOperandSegments,
    AllTypesMatch<["max", "sum", "new_max", "new_sum", "alpha"]>,
    DeclareOpInterfaceMethods<FlexAttn_ModRegionsOpInterface>]> {
  let summary = "The online-softmax update of a score fragment";
  let description = [{
    One KV tile's softmax on the scores `S` of this thread's fragment (rows
    from `row`, keys from `col`, see the fragment layout above), with the
    running max `m` and this thread's part of the running sum `l` of its
    rows (log2 units; 2 T rows for T m16 tiles):

      u     = log2(e) * mods(scale * S), -inf where masked (`masked`: mask_mod
              applies) or past `seq_lens[1]` keys; indices given to the mods
              are clamped inside `seq_lens` (needed only where a length is
              not a multiple of `tile_size`, the Q and KV tile the fragment
              is a part of)
      m_new = max(m, rowmax(u))          (over the threads sharing a row)
      alpha = exp2(m - base),  base = m_new, or 0 where m_new = -inf
      P     = exp2(u - base)             (rounded to the result's type)
      l_new = alpha * l + rowsum(P)      (this thread's columns only)

    Results: P, m_new, l_new, alpha. The accumulator is rescaled by
    `flexattn.frag.rescale` and the row sums completed at
    `flexattn.frag.finalize`.

    ```mlir
    %p, %m1, %l1, %alpha = flexattn.frag.softmax %s state(%m, %l) at(%b, %h, %qrow, %kvcol)
        attributes {scale = 0.125 : f32, seq_lens = array<i64: 300, 300>,
                    tile_size = array<i64: 128, 128>}
        : vector<64xf32>, vector<2xf32> -> vector<64xbf16>
    ```

    `packed(%m)` (the decode kernel's packed tiles, see `flexattn.kv_loop`):
    the rows are the packed rows of the query heads from `h`; the mods of
    packed row `r` receive head `h + r / m` and query row `r mod m`.

    `lens(%M, %N)` (a dynamic-shape kernel, docs/inference.md): the lengths
    are run-time values instead of the `seq_lens` attribute (exactly one of
    the two is given); every row and key is then checked against them.

    ```mlir
    %p, %m1, %l1, %alpha = flexattn.frag.softmax %s state(%m, %l) at(%b, %h, %qrow, %kvcol)
        lens(%M, %N) attributes {scale = 0.125 : f32, tile_size = array<i64: 128, 128>}
        : vector<64xf32>, vector<2xf32> -> vector<64xbf16>
    ```
  }];
  let arguments = (ins FlexAttn_Fragment:$scores, FlexAttn_RowValues:$max,
                       FlexAttn_RowValues:$sum, Index:$b, Index:$h, Index:$row,
                       Index:$col, Optional<Index>:$rows_per_head,
                       Variadic<Index>:$lens,
                       Variadic<AnyMemRef>:$captures,
                       F32Attr:$scale, OptionalAttr<DenseI64ArrayAttr>:$seq_lens,
                       DenseI64ArrayAttr:$tile_size, UnitAttr:$masked);
  let results = (outs FlexAttn_HalfFragment:$probs, FlexAttn_RowValues:$new_max,
                      FlexAttn_RowValues:$new_sum, FlexAttn_RowValues:$alpha);
  let regions = (region FlexAttn_ModRegion:$score_mod,
                        FlexAttn_ModRegion:$mask_mod);
  let assemblyFormat = !strconcat([{
    $scores `state` `(` $max `,` $sum `)` `at` `(` $b `,` $h `,` $row `,` $col `)`
    (`packed` `(` $rows_per_head^ `)`)? (`lens` `(` $lens^ `)`)?
  }], ModsAssembly, [{ `:` type($scores) `,` type($max) `->` type($probs) }]);
  let hasVerifier = 1;
}

def FlexAttn_FragRescaleOp : FlexAttn_Op<"frag.rescale", [
    Pure, AllTypesMatch<["acc", "result"]>]> {
  let summary = "Multiply each row of a fragment by its row value";
  let description = [{
    `acc[r, :] *= alpha[r]` for the fragment's rows: element
    `E i + 4 j + 2 h + q` is multiplied by `alpha[2 i + h]`.

    ```mlir
    %acc1 = flexattn.frag.rescale %acc, %alpha : vector<64xf32>, vector<2xf32>
    ```
  }];
  let arguments = (ins FlexAttn_Fragment:$acc, FlexAttn_RowValues:$alpha);
  let results = (outs FlexAttn_Fragment:$result);
  let assemblyFormat = "$acc `,` $alpha attr-dict `:` type($acc) `,` type($alpha)";
  let hasVerifier = 1;
}

def FlexAttn_FragFinalizeOp : FlexAttn_Op<"frag.finalize", [
    AttrSizedOperandSegments, AllTypesMatch<["max", "sum"]>]> {
  let summary = "Normalise an accumulator fragment and store out (and lse, "
                "max_scores)";
  let description = [{
    Completes the row sums `l` over the threads sharing a row and writes this
    thread's elements of rows `row + 16 i + 8 h` (those inside M) of
    `out[b, h]`: `acc / l`, 0 where `l = 0`, rounded to out's type; the
    thread holding column 0 of a row writes `lse[b, h, row] =
    ln(2) (m + log2 l)`, -inf where `l = 0`, and `max_scores[b, h, row] =
    ln(2) m`. With `sinks`, `sinks[h]` joins the completed row state first,
    as in `flexattn.finalize`.

    ```mlir
    flexattn.frag.finalize %acc state(%m, %l) sinks(%sinks : memref<2xf32>)
        outs(%out : memref<1x2x300x128xbf16>) lse(%lse : memref<1x2x300xf32>)
        max_scores(%max : memref<1x2x300xf32>) at(%b, %h, %qrow, %col) : vector<64xf32>, vector<2xf32>
    ```
  }];
  let arguments = (ins FlexAttn_Fragment:$acc, FlexAttn_RowValues:$max,
                       FlexAttn_RowValues:$sum, Optional<AnyMemRef>:$sinks,
                       AnyMemRef:$out, Optional<AnyMemRef>:$lse,
                       Optional<AnyMemRef>:$max_scores, Index:$b, Index:$h,
                       Index:$row, Index:$col);
  let assemblyFormat = !strconcat([{
    $acc `state` `(` $max `,` $sum `)`
  }], SinksAssembly, [{
    `outs` `(` $out `:` type($out) `)`
  }], StatsAssembly, [{
    `at` `(` $b `,` $h `,` $row `,` $col `)` attr-dict `:` type($acc) `,` type($max)
  }]);
  let hasVerifier = 1;
}

#endif // FLEXATTN_GPU_OPS
