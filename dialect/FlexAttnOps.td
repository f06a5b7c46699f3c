//===- FlexAttnOps.td - flexattn op definitions ------------*- tablegen -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// The ops, from the whole problem down to one score element:
//
//   flexattn.attention   B x Hq x M x N attention            (frontend, driver)
//   flexattn.kv_loop     one Q tile, all visible KV blocks    (flexattn-tile)
//   flexattn.tile_step   one Q tile x one KV tile, online     (flexattn-block-sparsity)
//   flexattn.finalize    acc / l and logsumexp of one Q tile  (flexattn-tile)
//   flexattn.apply_mods  one score element                    (flexattn-fuse-online-softmax)
//   flexattn.check_index a mod's index into a captured buffer (frontend; inside mods)
//
// and, for GPU kernels, the roles, rings and register-fragment ops of
// FlexAttnGpuOps.td (flexattn-warp-specialize and after).
// The backward pass's ops are in FlexAttnBackwardOps.td.
//
// All operate on memrefs (destination passing style). Every op that holds the
// user's modifications implements FlexAttn_ModRegionsOpInterface, so the
// region checks and the cloning/inlining helpers are written once.
//
//===----------------------------------------------------------------------===//

#ifndef FLEXATTN_OPS
#define FLEXATTN_OPS

include "FlexAttnDialect.td"
include "mlir/Interfaces/ControlFlowInterfaces.td"
include "mlir/Interfaces/SideEffectInterfaces.td"

//===----------------------------------------------------------------------===//
// The interface of ops that carry score_mod / mask_mod regions.
//===----------------------------------------------------------------------===//

def FlexAttn_ModRegionsOpInterface : OpInterface<"ModRegionsOpInterface"> {
  let description = [{
    An op holding a `score_mod` region `(score: f32, b, h, q_idx, kv_idx,
    captures...) -> f32` and a `mask_mod` region `(b, h, q_idx, kv_idx,
    captures...) -> i1`. An empty region means the identity score_mod or the
    mask that keeps every score. The four indices share one integer or index
    type; the trailing arguments are the op's captured buffers, in order.
  }];
  let cppNamespace = "::mlir::flexattn";
  let methods = [
    InterfaceMethod<"The score_mod region.", "::mlir::Region &", "getScoreMod">,
    InterfaceMethod<"The mask_mod region.", "::mlir::Region &", "getMaskMod">,
    InterfaceMethod<"The buffers the mods read.", "::mlir::OperandRange",
                    "getCaptures">,
  ];
  let extraSharedClassDeclaration = [{
    bool hasScoreMod() { return !$_op.getScoreMod().empty(); }
    bool hasMaskMod() { return !$_op.getMaskMod().empty(); }
  }];
  let verify = [{ return ::mlir::flexattn::verifyModRegions($_op); }];
}

def FlexAttn_ModRegion : MaxSizedRegion<1>;

// The assembly shared by the ops that carry mods: optional captures, the
// attribute dictionary, then the optional `score_mod {...}` and
// `mask_mod {...}` regions. The regions are parsed as isolated name scopes,
// so a mod's text may reuse the SSA names of the enclosing function.
defvar ModsAssembly = [{
  (`captures` `(` $captures^ `:` type($captures) `)`)?
  attr-dict-with-keyword
  custom<ModRegions>($score_mod, $mask_mod)
}];

defvar QKVAssembly = [{
  `ins` `(` $q `,` $k `,` $v `:` type($q) `,` type($k) `,` type($v) `)`
}];

defvar StateAssembly = [{
  `state` `(` $acc `,` $max `,` $sum `:` type($acc) `,` type($max) `,` type($sum) `)`
}];

// The optional per-head sink logits (an input) and the optional row
// statistics (outputs) of the ops that write a normalised output.
defvar SinksAssembly = [{
  (`sinks` `(` $sinks^ `:` type($sinks) `)`)?
}];

defvar StatsAssembly = [{
  (`lse` `(` $lse^ `:` type($lse) `)`)?
  (`max_scores` `(` $max_scores^ `:` type($max_scores) `)`)?
}];

defvar BlockMaskAssembly = [{
  (`block_mask` `(` $kv_num_blocks^ `,` $kv_indices `:`
     type($kv_num_blocks) `,` type($kv_indices) `)`)?
  (`full_blocks` `(` $full_kv_num_blocks^ `,` $full_kv_indices `:`
     type($full_kv_num_blocks) `,` type($full_kv_indices) `)`)?
}];

//===----------------------------------------------------------------------===//
// flexattn.attention
//===----------------------------------------------------------------------===//

def FlexAttn_AttentionOp : FlexAttn_Op<"attention", [
    AttrSizedOperandSegments, IsolatedFromAbove,
    DeclareOpInterfaceMethods<FlexAttn_ModRegionsOpInterface>]> {
  let summary = "FlexAttention over whole q/k/v buffers";
  let description = [{
    Computes, for every batch `b`, query head `h`, query row `i` and key `j`,

      s[b,h,i,j] = score_mod(scale * q[b,h,i,:] . k[b,h/G,j,:], b, h, i, j)
      out[b,h,i,:] = sum_j softmax_j(s[b,h,i,j] masked by mask_mod) v[b,h/G,j,:]
      lse[b,h,i]  = log sum_j exp(s[b,h,i,j]) over unmasked j

    with `G = Hq / Hkv` query heads per key/value head (grouped-query
    attention). `q` is `[B, Hq, M, D]`, `k` is `[B, Hkv, N, D]`, `v` is
    `[B, Hkv, N, Dv]` (`k` and `v` may have batch 1: shared by every query
    batch), `out` is `[B, Hq, M, Dv]` and the optional `lse` is `[B, Hq, M]`
    f32. A query row with no visible key gets a zero output and
    an lse of -inf, as torch does.

    The optional `max_scores` (`[B, Hq, M]` f32) receives each row's
    largest modified score, max_j s[b,h,i,j] over unmasked j (after
    score_mod, natural units; -inf for a row with no visible key), as torch's
    `AuxRequest(max_scores=True)`. It is the online softmax's running max,
    not a second computation.

    The optional `sinks` (`[Hq]` f32) is a per-head sink logit that joins
    every row's softmax denominator (attention sinks, gpt-oss style):

      out[b,h,i,:] = sum_j exp(s_j) v_j / (exp(sinks[h]) + sum_j exp(s_j))
      lse[b,h,i]   = log(exp(sinks[h]) + sum_j exp(s_j))

    so a row with no visible key gets a zero output and lse = sinks[h].
    `max_scores` does not include the sink.

    The optional block mask has torch's BlockMask layout, with
    `block_size = [Q_BLOCK, KV_BLOCK]`: `kv_num_blocks [Bm, Hm, ceil(M/Q_BLOCK)]`
    i32 counts the partial blocks of each query block, listed first in
    `kv_indices [Bm, Hm, ceil(M/Q_BLOCK), ceil(N/KV_BLOCK)]`; `full_blocks`
    lists, in the same way, the blocks that mask_mod keeps entirely, which skip
    it. `Bm` is 1 or B and `Hm` is 1 or Hq (broadcast). Blocks not listed are
    skipped. Without a block mask every block is visited and mask_mod applied.

    Example (causal attention with an ALiBi bias read from a captured buffer):

    ```mlir
    flexattn.attention ins(%q, %k, %v : memref<2x8x256x64xbf16>,
                               memref<2x8x256x64xbf16>, memref<2x8x256x64xbf16>)
        sinks(%sinks : memref<8xf32>)
        outs(%out : memref<2x8x256x64xbf16>) lse(%lse : memref<2x8x256xf32>)
        max_scores(%max : memref<2x8x256xf32>)
        block_mask(%kvn, %kvi : memref<1x1x2xi32>, memref<1x1x2x2xi32>)
        full_blocks(%fkvn, %fkvi : memref<1x1x2xi32>, memref<1x1x2x2xi32>)
        captures(%slopes : memref<8xf32>)
        attributes {scale = 0.125 : f32, block_size = array<i64: 128, 128>}
      score_mod {
      ^bb0(%s: f32, %b: i32, %h: i32, %qi: i32, %kvi: i32, %sl: memref<8xf32>):
        %hi = arith.index_cast %h : i32 to index
        %slope = memref.load %sl[%hi] : memref<8xf32>
        %d = arith.subi %kvi, %qi : i32
        %df = arith.sitofp %d : i32 to f32
        %bias = arith.mulf %slope, %df : f32
        %r = arith.addf %s, %bias : f32
        flexattn.yield %r : f32
      } mask_mod {
      ^bb0(%b: i32, %h: i32, %qi: i32, %kvi: i32, %sl: memref<8xf32>):
        %keep = arith.cmpi sge, %qi, %kvi : i32
        flexattn.yield %keep : i1
      }
    ```
  }];
  let arguments = (ins
    AnyMemRef:$q, AnyMemRef:$k, AnyMemRef:$v, Optional<AnyMemRef>:$sinks,
    AnyMemRef:$out, Optional<AnyMemRef>:$lse, Optional<AnyMemRef>:$max_scores,
    Optional<AnyMemRef>:$kv_num_blocks, Optional<AnyMemRef>:$kv_indices,
    Optional<AnyMemRef>:$full_kv_num_blocks,
    Optional<AnyMemRef>:$full_kv_indices,
    Variadic<AnyMemRef>:$captures,
    F32Attr:$scale,
    OptionalAttr<DenseI64ArrayAttr>:$block_size);
  let regions = (region FlexAttn_ModRegion:$score_mod,
                        FlexAttn_ModRegion:$mask_mod);
  let assemblyFormat = !strconcat(QKVAssembly, SinksAssembly, [{
    `outs` `(` $out `:` type($out) `)`
  }], StatsAssembly, BlockMaskAssembly, ModsAssembly);
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    bool hasBlockMask() { return getKvNumBlocks() != nullptr; }
  }];
}

//===----------------------------------------------------------------------===//
// flexattn.kv_loop
//===----------------------------------------------------------------------===//

def FlexAttn_KvLoopOp : FlexAttn_Op<"kv_loop", [
    AttrSizedOperandSegments, IsolatedFromAbove,
    DeclareOpInterfaceMethods<FlexAttn_ModRegionsOpInterface>]> {
  let summary = "Online attention of one Q tile over all its visible KV blocks";
  let description = [{
    Produced by `flexattn-tile`: updates the online-softmax state of the Q tile
    of rows `[q0, q0 + tile_size[0])` (clipped to M) of batch `b`, query head
    `h` (key/value head `hkv`) with every KV tile it may see. Without a block
    mask that is every tile of `tile_size[1]` keys; with one it is the
    partial blocks (mask applied) then the full blocks (mask skipped) listed
    for query block `q0 / block_size[0]`, each as `block_size[1] /
    tile_size[1]` KV tiles (`tile_size[1]` divides `block_size[1]`).
    `flexattn-block-sparsity` turns it into loops of `flexattn.tile_step`.

    The state holds, per row, the accumulator `acc [BM, Dv]`, the running
    maximum `max [BM]` of the scores in log2 units and the running sum
    `sum [BM]` of `exp2(score - max)`, all f32.

    ```mlir
    flexattn.kv_loop ins(%q, %k, %v : memref<1x4x200x64xf32>, memref<1x2x200x64xf32>, memref<1x2x200x64xf32>)
        state(%acc, %m, %l : memref<64x64xf32>, memref<64xf32>, memref<64xf32>)
        at(%b, %h, %hkv, %q0) attributes {scale = 0.125 : f32, tile_size = array<i64: 64, 64>}
    ```

    Decoding (`flexattn-tile{pack-heads}`, `flexattn-split-kv`) adds:

    - `packed(%m)`: the tile's rows are the query heads of K/V head `hkv`
      packed together: `q` is `[B, Hkv, G * m, D]` (a view of
      `[B, Hq, m, D]`) indexed by `hkv`, and packed row `r` is query head
      `h + r / m`, query row `r mod m`, which the mods receive (`h` is the
      group's first head, `hkv * G`). The block mask is then the tile's own
      row (query-block dim 1): the union `flexattn-tile` built for it.
    - `split(%s of %n)`: only the `s`-th of `n` contiguous ranges of the KV
      tiles the loop would visit (the partial blocks, then the full ones).

    ```mlir
    flexattn.kv_loop ins(%q, %k, %v : memref<1x2x8x64xf32>, ...) state(...)
        at(%b, %h, %hkv, %q0) packed(%m) split(%s of %n) ...
    ```
  }];
  let arguments = (ins
    AnyMemRef:$q, AnyMemRef:$k, AnyMemRef:$v,
    AnyMemRef:$acc, AnyMemRef:$max, AnyMemRef:$sum,
    Index:$b, Index:$h, Index:$hkv, Index:$q0,
    Optional<Index>:$rows_per_head, Optional<Index>:$split,
    Optional<Index>:$splits,
    Optional<AnyMemRef>:$kv_num_blocks, Optional<AnyMemRef>:$kv_indices,
    Optional<AnyMemRef>:$full_kv_num_blocks,
    Optional<AnyMemRef>:$full_kv_indices,
    Variadic<AnyMemRef>:$captures,
    F32Attr:$scale, DenseI64ArrayAttr:$tile_size,
    OptionalAttr<DenseI64ArrayAttr>:$block_size);
  let regions = (region FlexAttn_ModRegion:$score_mod,
                        FlexAttn_ModRegion:$mask_mod);
  let assemblyFormat = !strconcat(QKVAssembly, StateAssembly, [{
    `at` `(` $b `,` $h `,` $hkv `,` $q0 `)`
    (`packed` `(` $rows_per_head^ `)`)?
    (`split` `(` $split^ `of` $splits `)`)?
  }], BlockMaskAssembly, ModsAssembly);
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    bool hasBlockMask() { return getKvNumBlocks() != nullptr; }
  }];
}

//===----------------------------------------------------------------------===//
// flexattn.tile_step
//===----------------------------------------------------------------------===//

def FlexAttn_TileStepOp : FlexAttn_Op<"tile_step", [
    AttrSizedOperandSegments, IsolatedFromAbove,
    DeclareOpInterfaceMethods<FlexAttn_ModRegionsOpInterface>]> {
  let summary = "One online-softmax update: one Q tile against one KV tile";
  let description = [{
    Folds the keys `[kv0, kv0 + tile_size[1])` (clipped to N) into the
    online-softmax state of the Q tile at `q0`, with mask_mod applied when
    `masked` is set (a partial block) and skipped otherwise (a full block).
    `flexattn-fuse-online-softmax` decomposes it into tile-sized computations:
    no buffer larger than `tile_size[0] x tile_size[1]` scores is created.

    ```mlir
    flexattn.tile_step ins(%q, %k, %v : ...) state(%acc, %m, %l : ...)
        at(%b, %h, %hkv, %q0, %kv0) attributes {masked, scale = 0.125 : f32, tile_size = array<i64: 64, 64>}
    ```

    `packed(%m)` has kv_loop's meaning: `q` holds the packed rows of the
    query heads of K/V head `hkv` (indexed by `hkv`), row `r` being query
    head `h + r / m`, query row `r mod m` for the mods.
  }];
  let arguments = (ins
    AnyMemRef:$q, AnyMemRef:$k, AnyMemRef:$v,
    AnyMemRef:$acc, AnyMemRef:$max, AnyMemRef:$sum,
    Index:$b, Index:$h, Index:$hkv, Index:$q0, Index:$kv0,
    Optional<Index>:$rows_per_head,
    Variadic<AnyMemRef>:$captures,
    F32Attr:$scale, DenseI64ArrayAttr:$tile_size, UnitAttr:$masked);
  let regions = (region FlexAttn_ModRegion:$score_mod,
                        FlexAttn_ModRegion:$mask_mod);
  let assemblyFormat = !strconcat(QKVAssembly, StateAssembly, [{
    `at` `(` $b `,` $h `,` $hkv `,` $q0 `,` $kv0 `)`
    (`packed` `(` $rows_per_head^ `)`)?
  }], ModsAssembly);
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// flexattn.finalize
//===----------------------------------------------------------------------===//

def FlexAttn_FinalizeOp : FlexAttn_Op<"finalize", [AttrSizedOperandSegments]> {
  let summary = "Normalise one Q tile's accumulator and write out and lse";
  let description = [{
    Writes `out[b, h, q0 + i, :] = acc[i, :] / sum[i]` and
    `lse[b, h, q0 + i] = ln(2) * (max[i] + log2(sum[i]))` for the rows of the
    tile inside M. A row whose sum is zero (no visible key) gets 0 and -inf.
    The optional `max_scores[b, h, q0 + i]` gets `ln(2) * max[i]` (the row's
    largest score, -inf for a row without a visible key).

    With `sinks` (`[Hq]` f32, natural log), the sink logit `sinks[h]` first
    joins the state as one more score without a value:
    `max' = max(max, log2(e) sinks[h])`, `alpha = exp2(max - max')`,
    `sum' = alpha sum + exp2(log2(e) sinks[h] - max')`, `acc' = alpha acc`;
    out and lse are then written from the new state (`max_scores` from the
    old max: the sink is not a score).

    ```mlir
    flexattn.finalize state(%acc, %m, %l : memref<64x64xf32>, memref<64xf32>, memref<64xf32>)
        sinks(%sinks : memref<4xf32>)
        outs(%out : memref<1x4x200x64xf32>) lse(%lse : memref<1x4x200xf32>)
        max_scores(%max : memref<1x4x200xf32>) at(%b, %h, %q0)
    ```
  }];
  let arguments = (ins
    AnyMemRef:$acc, AnyMemRef:$max, AnyMemRef:$sum, Optional<AnyMemRef>:$sinks,
    AnyMemRef:$out, Optional<AnyMemRef>:$lse, Optional<AnyMemRef>:$max_scores,
    Index:$b, Index:$h, Index:$q0);
  let assemblyFormat = !strconcat(StateAssembly, SinksAssembly, [{
    `outs` `(` $out `:` type($out) `)`
  }], StatsAssembly, [{
    `at` `(` $b `,` $h `,` $q0 `)` attr-dict
  }]);
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// flexattn.apply_mods
//===----------------------------------------------------------------------===//

def FlexAttn_ApplyModsOp : FlexAttn_Op<"apply_mods", [
    IsolatedFromAbove, RecursiveMemoryEffects,
    DeclareOpInterfaceMethods<FlexAttn_ModRegionsOpInterface>]> {
  let summary = "Apply score_mod (and mask_mod when masked) to one score";
  let description = [{
    Returns `score_mod(score, b, h, q_idx, kv_idx)`, or -inf where `masked` is
    set and `mask_mod(b, h, q_idx, kv_idx)` is false. The indices are `index`
    values and are cast to the regions' index type. `flexattn-inline-mods`
    replaces the op with its regions' bodies.

    ```mlir
    %r = flexattn.apply_mods %s at(%b, %h, %qi, %kvi) attributes {masked}
      mask_mod {
      ^bb0(%b: i32, %h: i32, %q: i32, %kv: i32):
        %c = arith.cmpi sge, %q, %kv : i32
        flexattn.yield %c : i1
      } : f32
    ```
  }];
  let arguments = (ins F32:$score, Index:$b, Index:$h, Index:$q_idx,
                       Index:$kv_idx, Variadic<AnyMemRef>:$captures,
                       UnitAttr:$masked);
  let results = (outs F32:$result);
  let regions = (region FlexAttn_ModRegion:$score_mod,
                        FlexAttn_ModRegion:$mask_mod);
  let assemblyFormat = !strconcat([{
    $score `at` `(` $b `,` $h `,` $q_idx `,` $kv_idx `)`
  }], ModsAssembly, [{ `:` type($result) }]);
}

//===----------------------------------------------------------------------===//
// flexattn.check_index
//===----------------------------------------------------------------------===//

def FlexAttn_CheckIndexOp : FlexAttn_Op<"check_index"> {
  let summary = "A torch-style index into one dimension of a captured buffer";
  let description = [{
    The position a mod reads along one dimension (of `size` elements) of a
    captured buffer, for the signed integer `index` the mod computed, with
    torch's semantics: `index` in `[0, size)` reads that element, `index` in
    `[-size, 0)` reads element `index + size` (Python's `t[-1]`), and any other
    index is out of bounds: torch raises IndexError.

    The result is the position as an `index`. Out of bounds it is 0, so the
    load it feeds never leaves the buffer, and the error is recorded in the
    optional `report` buffer (`[S, 2]` i64, one row per check site): row
    `site` becomes `[1, index]`. The host reads the buffer after the kernel
    and raises; a clamped value is never the answer. Without `report` the
    error is not recorded (only where the caller chose so, e.g. the GPU
    without its debug option).

    `bounds = array<i64: lo, hi>` asserts `lo <= index <= hi`, proved by the
    frontend from the shapes (an interval analysis of the mod): inside
    `[-size, size)` no check is emitted, and from `lo >= 0` no wrap either.
    `dim` and `source` describe the read for messages.
    `flexattn-inline-mods` lowers the op to arith (and an `scf.if` that
    stores the report).

    ```mlir
    %i = flexattn.check_index %x of size 256 report(%err : memref<2x2xi64>)
        {dim = 0 : i64, site = 1 : i64, source = "doc of mask_mod 'document'"} : i64
    %v = memref.load %doc[%i] : memref<256xi32>
    ```
  }];
  let arguments = (ins
    AnySignlessInteger:$index,
    Arg<Optional<MemRefOf<[I64]>>, "the report buffer, [S, 2] i64", [MemWrite]>:$report,
    I64Attr:$size, OptionalAttr<I64Attr>:$site, OptionalAttr<DenseI64ArrayAttr>:$bounds,
    OptionalAttr<I64Attr>:$dim, OptionalAttr<StrAttr>:$source);
  let results = (outs Index:$result);
  let assemblyFormat = [{
    $index `of` `size` $size (`report` `(` $report^ `:` type($report) `)`)? attr-dict
    `:` type($index)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// flexattn.mod
//===----------------------------------------------------------------------===//

def FlexAttn_ModOp : FlexAttn_Op<"mod", [IsolatedFromAbove]> {
  let summary = "One score_mod or mask_mod on its own";
  let description = [{
    Holds one mod region outside an attention op: the unit the Python side
    captures, stores in its caches, hashes and parses back. `kind` is
    `score_mod` (`(score: f32, b, h, q_idx, kv_idx, captures...) -> f32`) or
    `mask_mod` (`(b, h, q_idx, kv_idx, captures...) -> i1`); the block's
    trailing arguments are the captured buffers, and the region is checked
    as the attention ops check theirs. The op is never lowered: its block
    moves into the region of a `flexattn.attention` (or a backward op) that
    the driver builds.

    ```mlir
    flexattn.mod score_mod {
    ^bb0(%score: f32, %b: i32, %h: i32, %q_idx: i32, %kv_idx: i32, %cap0: memref<8xf32>):
      %i = arith.index_cast %h : i32 to index
      %slope = memref.load %cap0[%i] : memref<8xf32>
      %d = arith.subi %q_idx, %kv_idx : i32
      %df = arith.sitofp %d : i32 to f32
      %r = arith.mulf %slope, %df : f32
      %s = arith.subf %score, %r : f32
      flexattn.yield %s : f32
    }
    ```
  }];
  let arguments = (ins StrAttr:$kind);
  let regions = (region SizedRegion<1>:$body);
  let hasCustomAssemblyFormat = 1;
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// score_mod's five leading arguments or mask_mod's four.
    unsigned getNumFixedArguments() { return getKind() == "score_mod" ? 5 : 4; }
  }];
}

//===----------------------------------------------------------------------===//
// flexattn.yield
//===----------------------------------------------------------------------===//

def FlexAttn_YieldOp : FlexAttn_Op<"yield", [
    Pure, ReturnLike, Terminator,
    ParentOneOf<["AttentionOp", "KvLoopOp", "TileStepOp", "ApplyModsOp", "ModOp",
                 "FragSoftmaxOp", "AttentionBackwardOp", "BackwardQLoopOp",
                 "BackwardKvLoopOp", "BackwardStepOp", "ApplyModsVjpOp"]>]> {
  let summary = "Returns the value of a score_mod or mask_mod region";
  let arguments = (ins Variadic<AnyType>:$values);
  let assemblyFormat = "attr-dict ($values^ `:` type($values))?";
  let builders = [OpBuilder<(ins), [{ /* nothing */ }]>];
}

//===----------------------------------------------------------------------===//
// The GPU kernel's mid-level ops (roles, rings, register fragments)
//===----------------------------------------------------------------------===//

include "FlexAttnGpuOps.td"
include "FlexAttnBackwardOps.td"

#endif // FLEXATTN_OPS
