//===- FlexAttnBackwardOps.td - flexattn backward ops ------*- tablegen -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// The backward pass, from the whole problem down to one score element:
//
//   flexattn.attention_backward  dq, dk, dv, capture grads    (frontend)
//   flexattn.backward_q_loop     one KV tile, all visible Q tiles of its
//                                KV group's query heads (dk, dv)
//                                                             (flexattn-tile)
//   flexattn.backward_kv_loop    one Q tile, all visible KV tiles (dq,
//                                capture grads)               (flexattn-tile)
//   flexattn.backward_step       one Q tile x one KV tile     (flexattn-block-sparsity)
//   flexattn.store_tile          an f32 accumulator tile into a gradient
//                                                             (flexattn-tile)
//   flexattn.apply_mods_vjp      one score element and its derivatives
//                                                             (flexattn-decompose-backward)
//
// The score_mod's derivative is a region, `score_mod_vjp`, built from
// score_mod by flexattn-differentiate-mods: pure scalar code that returns
// the modified score, its derivative with respect to the score and, for every
// load of a captured buffer that takes a gradient, the derivative with
// respect to the loaded value and the load's indices. How the capture
// gradients are accumulated (a sequential loop on the CPU, atomics on a GPU)
// is the consumer's choice; the region never writes memory.
//
//===----------------------------------------------------------------------===//

#ifndef FLEXATTN_BACKWARD_OPS
#define FLEXATTN_BACKWARD_OPS

// `score_mod_vjp {...}`, after the forward's two regions.
defvar VjpAssembly = [{
  (`captures` `(` $captures^ `:` type($captures) `)`)?
  (`capture_grads` `(` $capture_grads^ `:` type($capture_grads) `)`)?
  attr-dict-with-keyword
  custom<BackwardRegions>($score_mod_vjp, $mask_mod)
}];

defvar BackwardInputsAssembly = [{
  `ins` `(` $q `,` $k `,` $v `,` $dout `:` type($q) `,` type($k) `,` type($v)
        `,` type($dout) `)`
  `stats` `(` $lse `,` $delta `:` type($lse) `,` type($delta) `)`
}];

defvar AccumulatorsAssembly = [{
  (`dq` `(` $dq_acc^ `:` type($dq_acc) `)`)?
  (`dk` `(` $dk_acc^ `:` type($dk_acc) `)`)?
  (`dv` `(` $dv_acc^ `:` type($dv_acc) `)`)?
}];

defvar BackwardRegionsDoc = [{
    The op carries `mask_mod` and `score_mod_vjp` (see
    `flexattn.attention_backward`); `vjp_loads` describes the latter's
    results and `grad_captures` says which captured buffers have a gradient
    buffer in `capture_grads` (in order). Without `capture_grads` the op
    leaves the capture gradients to another loop.
}];

//===----------------------------------------------------------------------===//
// flexattn.attention_backward
//===----------------------------------------------------------------------===//

def FlexAttn_AttentionBackwardOp : FlexAttn_Op<"attention_backward", [
    AttrSizedOperandSegments, IsolatedFromAbove,
    DeclareOpInterfaceMethods<FlexAttn_ModRegionsOpInterface>]> {
  let summary = "Gradients of flexattn.attention with respect to q, k, v and "
                "the captured buffers";
  let description = [{
    Given the forward's inputs, its output `out` and logsumexp `lse` (natural
    log, `[B, Hq, M]` f32), the gradient `dout` of the loss with respect to
    `out` and, optionally, `dlse` with respect to `lse`, writes

      dq, dk, dv      (the shapes and element types of q, k, v; with grouped-
                       query attention dk and dv sum over the Hq / Hkv query
                       heads of a key/value head)
      capture_grads   one f32 buffer per entry of `grad_captures` (the
                       capture's index), with that capture's shape, or that
                       shape and one trailing dim of P partial sums (the
                       deterministic mode of a GPU kernel: each of its
                       threads adds into its own slot in a fixed order, the
                       caller sums the P slots; the kernel's lowering checks
                       that P covers its threads)

    FlashAttention-2 math: with x = scale * q.kᵀ, s = score_mod(x) (-inf
    where mask_mod is false), P = exp(s - lse) (0 on a row with lse = -inf),
    dP = dout.vᵀ and D = rowsum(dout * out) - dlse,

      dS = P * (dP - D)       dx = dS * ds/dx
      dv = Pᵀ.dout            dq = scale * dx.k      dk = scale * dxᵀ.q
      capture_grads[c][idx] += dS * ds/dcapture[idx]   over every load

    so a row with no visible key contributes nothing (never NaN). No buffer
    of M x N scores exists at any level. `delta(...)` (optional, `[B, Hq,
    M]` f32, lse's shape) passes D precomputed by the caller (a GPU kernel's
    preprocessing, as torch's flex backward does); without it flexattn-tile
    computes D on the heap.

    With attention sinks (`flexattn.attention`'s `sinks`), `lse` includes
    the sink, so P and dS above are unchanged; the optional group
    `sinks(%sinks, %dsinks)` (both `[Hq]` f32) asks for the sink logits'
    gradient, the sink's probability P_sink = exp(sinks[h] - lse) times -D
    summed over the head's rows:

      dsinks[h] = -sum_{b,i} exp(sinks[h] - lse[b,h,i]) D[b,h,i]

    (0 from a row with lse = -inf, which only a sink of -inf leaves).

    Operands and regions as `flexattn.attention`'s, plus the transposed
    block lists a KV-outer loop needs: `q_block_mask(q_num_blocks,
    q_indices)` (`[Bm, Hm, ceil(N/KV_BLOCK)]` and `[Bm, Hm,
    ceil(N/KV_BLOCK), ceil(M/Q_BLOCK)]` i32, the Q blocks each KV block is
    partially visible to) and `full_q_blocks(...)` (fully visible). With a
    block mask, both sides are required.

    `score_mod_vjp` is empty until `flexattn-differentiate-mods` builds it
    from `score_mod`: it takes `(score, b, h, q_idx, kv_idx, captures..., dy:
    f32)` and yields `(score_mod(score), dy * d score_mod / d score)`, then,
    for each entry `c` of `vjp_loads` (a load from capture `c`, which must be
    in `grad_captures`), `dy * d score_mod / d loaded value` (f32) and the
    load's indices (`index`, one per dim of capture `c`).

    ```mlir
    flexattn.attention_backward ins(%q, %k, %v : memref<1x4x200x64xf32>,
            memref<1x4x200x64xf32>, memref<1x4x200x64xf32>)
        out(%o : memref<1x4x200x64xf32>) dout(%do : memref<1x4x200x64xf32>)
        lse(%lse : memref<1x4x200xf32>)
        grads(%dq, %dk, %dv : memref<1x4x200x64xf32>, memref<1x4x200x64xf32>,
              memref<1x4x200x64xf32>)
        captures(%slopes : memref<4xf32>) capture_grads(%dslopes : memref<4xf32>)
        attributes {scale = 0.125 : f32, grad_captures = array<i64: 0>}
      score_mod {
      ^bb0(%s: f32, %b: i32, %h: i32, %qi: i32, %kvi: i32, %sl: memref<4xf32>):
        %hi = arith.index_cast %h : i32 to index
        %slope = memref.load %sl[%hi] : memref<4xf32>
        %r = arith.addf %s, %slope : f32
        flexattn.yield %r : f32
      }
    ```
  }];
  let arguments = (ins
    AnyMemRef:$q, AnyMemRef:$k, AnyMemRef:$v, AnyMemRef:$out,
    AnyMemRef:$dout, AnyMemRef:$lse, Optional<AnyMemRef>:$dlse,
    Optional<AnyMemRef>:$delta,
    Optional<AnyMemRef>:$sinks, Optional<AnyMemRef>:$dsinks,
    AnyMemRef:$dq, AnyMemRef:$dk, AnyMemRef:$dv,
    Optional<AnyMemRef>:$kv_num_blocks, Optional<AnyMemRef>:$kv_indices,
    Optional<AnyMemRef>:$full_kv_num_blocks,
    Optional<AnyMemRef>:$full_kv_indices,
    Optional<AnyMemRef>:$q_num_blocks, Optional<AnyMemRef>:$q_indices,
    Optional<AnyMemRef>:$full_q_num_blocks,
    Optional<AnyMemRef>:$full_q_indices,
    Variadic<AnyMemRef>:$captures, Variadic<AnyMemRef>:$capture_grads,
    F32Attr:$scale,
    OptionalAttr<DenseI64ArrayAttr>:$block_size,
    DefaultValuedAttr<DenseI64ArrayAttr, "{}">:$grad_captures,
    OptionalAttr<DenseI64ArrayAttr>:$vjp_loads);
  let regions = (region FlexAttn_ModRegion:$score_mod,
                        FlexAttn_ModRegion:$mask_mod,
                        FlexAttn_ModRegion:$score_mod_vjp);
  let assemblyFormat = [{
    `ins` `(` $q `,` $k `,` $v `:` type($q) `,` type($k) `,` type($v) `)`
    `out` `(` $out `:` type($out) `)`
    `dout` `(` $dout `:` type($dout) `)`
    `lse` `(` $lse `:` type($lse) `)`
    (`dlse` `(` $dlse^ `:` type($dlse) `)`)?
    (`delta` `(` $delta^ `:` type($delta) `)`)?
    (`sinks` `(` $sinks^ `,` $dsinks `:` type($sinks) `,` type($dsinks) `)`)?
    `grads` `(` $dq `,` $dk `,` $dv `:` type($dq) `,` type($dk) `,` type($dv) `)`
    (`block_mask` `(` $kv_num_blocks^ `,` $kv_indices `:`
       type($kv_num_blocks) `,` type($kv_indices) `)`)?
    (`full_blocks` `(` $full_kv_num_blocks^ `,` $full_kv_indices `:`
       type($full_kv_num_blocks) `,` type($full_kv_indices) `)`)?
    (`q_block_mask` `(` $q_num_blocks^ `,` $q_indices `:`
       type($q_num_blocks) `,` type($q_indices) `)`)?
    (`full_q_blocks` `(` $full_q_num_blocks^ `,` $full_q_indices `:`
       type($full_q_num_blocks) `,` type($full_q_indices) `)`)?
    (`captures` `(` $captures^ `:` type($captures) `)`)?
    (`capture_grads` `(` $capture_grads^ `:` type($capture_grads) `)`)?
    attr-dict-with-keyword
    custom<ModRegions>($score_mod, $mask_mod)
    custom<VjpRegion>($score_mod_vjp)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    bool hasBlockMask() { return getKvNumBlocks() != nullptr; }
  }];
}

//===----------------------------------------------------------------------===//
// flexattn.backward_q_loop
//===----------------------------------------------------------------------===//

def FlexAttn_BackwardQLoopOp : FlexAttn_Op<"backward_q_loop", [
    AttrSizedOperandSegments, IsolatedFromAbove]> {
  let summary = "Gradients from one KV tile against every Q tile that sees it";
  let description = !strconcat([{
    Produced by `flexattn-tile`: for the KV tile of rows `[kv0, kv0 +
    tile_size[1])` of batch `b` and key/value head `hkv`, visits every query
    head `h` of the KV group (`hkv * G` to `hkv * G + G - 1`) and, for each,
    the Q tiles of `tile_size[0]` rows that may see the KV tile: all of them
    without a block mask, else the Q blocks listed in `q_indices[b, h, kb, 0
    : q_num_blocks[b, h, kb]]` (mask applied) then the `full_q_*` ones (mask
    skipped), `kb = kv0 / block_size[1]`. Each pair is one
    `flexattn.backward_step` accumulating into the given tile accumulators
    (`dk [BN, D]`, `dv [BN, Dv]`, f32) and `dq`/`capture_grads`.
    `flexattn-block-sparsity` expands it into those loops. `delta` is
    `rowsum(dout * out) - dlse`, `[B, Hq, M]` f32.
  }], BackwardRegionsDoc, [{

    ```mlir
    flexattn.backward_q_loop ins(%q, %k, %v, %do : ...) stats(%lse, %delta : ...)
        dk(%dk_acc : memref<64x64xf32>) dv(%dv_acc : memref<64x64xf32>)
        at(%b, %hkv, %kv0) attributes {scale = 0.125 : f32, tile_size = array<i64: 64, 64>}
    ```
  }]);
  let arguments = (ins
    AnyMemRef:$q, AnyMemRef:$k, AnyMemRef:$v, AnyMemRef:$dout,
    AnyMemRef:$lse, AnyMemRef:$delta,
    Optional<AnyMemRef>:$dq_acc, Optional<AnyMemRef>:$dk_acc,
    Optional<AnyMemRef>:$dv_acc,
    Index:$b, Index:$hkv, Index:$kv0,
    Optional<AnyMemRef>:$num_blocks, Optional<AnyMemRef>:$indices,
    Optional<AnyMemRef>:$full_num_blocks, Optional<AnyMemRef>:$full_indices,
    Variadic<AnyMemRef>:$captures, Variadic<AnyMemRef>:$capture_grads,
    F32Attr:$scale, DenseI64ArrayAttr:$tile_size,
    OptionalAttr<DenseI64ArrayAttr>:$block_size,
    DefaultValuedAttr<DenseI64ArrayAttr, "{}">:$grad_captures,
    OptionalAttr<DenseI64ArrayAttr>:$vjp_loads);
  let regions = (region FlexAttn_ModRegion:$score_mod_vjp,
                        FlexAttn_ModRegion:$mask_mod);
  let assemblyFormat = !strconcat(BackwardInputsAssembly, AccumulatorsAssembly, [{
    `at` `(` $b `,` $hkv `,` $kv0 `)`
    (`q_block_mask` `(` $num_blocks^ `,` $indices `:`
       type($num_blocks) `,` type($indices) `)`)?
    (`full_q_blocks` `(` $full_num_blocks^ `,` $full_indices `:`
       type($full_num_blocks) `,` type($full_indices) `)`)?
  }], VjpAssembly);
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    bool hasBlockMask() { return getNumBlocks() != nullptr; }
  }];
}

//===----------------------------------------------------------------------===//
// flexattn.backward_kv_loop
//===----------------------------------------------------------------------===//

def FlexAttn_BackwardKvLoopOp : FlexAttn_Op<"backward_kv_loop", [
    AttrSizedOperandSegments, IsolatedFromAbove]> {
  let summary = "Gradients from one Q tile against every KV tile it sees";
  let description = !strconcat([{
    Produced by `flexattn-tile`: for the Q tile of rows `[q0, q0 +
    tile_size[0])` of batch `b`, query head `h` (key/value head `hkv`),
    visits the KV tiles of `tile_size[1]` keys it may see, as
    `flexattn.kv_loop` does (the kv-side block lists), with one
    `flexattn.backward_step` per pair accumulating into the given
    accumulators (`dq [BM, D]` f32, `dk`/`dv`, `capture_grads`).
  }], BackwardRegionsDoc, [{

    ```mlir
    flexattn.backward_kv_loop ins(%q, %k, %v, %do : ...) stats(%lse, %delta : ...)
        dq(%dq_acc : memref<64x64xf32>) at(%b, %h, %hkv, %q0)
        attributes {scale = 0.125 : f32, tile_size = array<i64: 64, 64>}
    ```
  }]);
  let arguments = (ins
    AnyMemRef:$q, AnyMemRef:$k, AnyMemRef:$v, AnyMemRef:$dout,
    AnyMemRef:$lse, AnyMemRef:$delta,
    Optional<AnyMemRef>:$dq_acc, Optional<AnyMemRef>:$dk_acc,
    Optional<AnyMemRef>:$dv_acc,
    Index:$b, Index:$h, Index:$hkv, Index:$q0,
    Optional<AnyMemRef>:$num_blocks, Optional<AnyMemRef>:$indices,
    Optional<AnyMemRef>:$full_num_blocks, Optional<AnyMemRef>:$full_indices,
    Variadic<AnyMemRef>:$captures, Variadic<AnyMemRef>:$capture_grads,
    F32Attr:$scale, DenseI64ArrayAttr:$tile_size,
    OptionalAttr<DenseI64ArrayAttr>:$block_size,
    DefaultValuedAttr<DenseI64ArrayAttr, "{}">:$grad_captures,
    OptionalAttr<DenseI64ArrayAttr>:$vjp_loads);
  let regions = (region FlexAttn_ModRegion:$score_mod_vjp,
                        FlexAttn_ModRegion:$mask_mod);
  let assemblyFormat = !strconcat(BackwardInputsAssembly, AccumulatorsAssembly, [{
    `at` `(` $b `,` $h `,` $hkv `,` $q0 `)`
    (`block_mask` `(` $num_blocks^ `,` $indices `:`
       type($num_blocks) `,` type($indices) `)`)?
    (`full_blocks` `(` $full_num_blocks^ `,` $full_indices `:`
       type($full_num_blocks) `,` type($full_indices) `)`)?
  }], VjpAssembly);
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    bool hasBlockMask() { return getNumBlocks() != nullptr; }
  }];
}

//===----------------------------------------------------------------------===//
// flexattn.backward_step
//===----------------------------------------------------------------------===//

def FlexAttn_BackwardStepOp : FlexAttn_Op<"backward_step", [
    AttrSizedOperandSegments, IsolatedFromAbove]> {
  let summary = "Gradient contributions of one Q tile x one KV tile";
  let description = !strconcat([{
    Recomputes the scores of rows `[q0, q0 + tile_size[0])` (clipped to M)
    of query head `h` against keys `[kv0, kv0 + tile_size[1])` (clipped to
    N) of key/value head `hkv`, with mask_mod applied when `masked` is set,
    their probabilities from `lse`, and adds their contributions to the given
    accumulators: `dq [BM, D]`, `dk [BN, D]`, `dv [BN, Dv]` (f32, rows
    relative to q0 / kv0) and `capture_grads` (whole f32 buffers).
    `flexattn-decompose-backward` turns it into tile-sized linalg ops: no
    buffer larger than `tile_size[0] x tile_size[1]` scores is created.

    `dq_sum` (beside `dk`/`dv`, never with `dq`): a whole `[B, Hq, M, D]`
    f32 buffer the tile's dq contribution, `scale * dS . K`, is added into
    at rows `q0..` of head `h`, by atomics: many KV tiles add into the same
    rows (`flexattn-atomic-dq` makes it, so one nest computes dq, dk and
    dv; GPU kernels only).
  }], BackwardRegionsDoc, [{

    ```mlir
    flexattn.backward_step ins(%q, %k, %v, %do : ...) stats(%lse, %delta : ...)
        dk(%dk_acc : memref<64x64xf32>) dv(%dv_acc : memref<64x64xf32>)
        at(%b, %h, %hkv, %q0, %kv0) attributes {masked, scale = 0.125 : f32, tile_size = array<i64: 64, 64>}
    ```
  }]);
  let arguments = (ins
    AnyMemRef:$q, AnyMemRef:$k, AnyMemRef:$v, AnyMemRef:$dout,
    AnyMemRef:$lse, AnyMemRef:$delta,
    Optional<AnyMemRef>:$dq_acc, Optional<AnyMemRef>:$dk_acc,
    Optional<AnyMemRef>:$dv_acc, Optional<AnyMemRef>:$dq_sum,
    Index:$b, Index:$h, Index:$hkv, Index:$q0, Index:$kv0,
    Variadic<AnyMemRef>:$captures, Variadic<AnyMemRef>:$capture_grads,
    F32Attr:$scale, DenseI64ArrayAttr:$tile_size, UnitAttr:$masked,
    DefaultValuedAttr<DenseI64ArrayAttr, "{}">:$grad_captures,
    OptionalAttr<DenseI64ArrayAttr>:$vjp_loads);
  let regions = (region FlexAttn_ModRegion:$score_mod_vjp,
                        FlexAttn_ModRegion:$mask_mod);
  let assemblyFormat = !strconcat(BackwardInputsAssembly, AccumulatorsAssembly, [{
    (`dq_sum` `(` $dq_sum^ `:` type($dq_sum) `)`)?
    `at` `(` $b `,` $h `,` $hkv `,` $q0 `,` $kv0 `)`
  }], VjpAssembly);
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// flexattn.store_tile
//===----------------------------------------------------------------------===//

def FlexAttn_StoreTileOp : FlexAttn_Op<"store_tile"> {
  let summary = "Write an f32 accumulator tile into rows of a gradient";
  let description = [{
    Writes `dst[b, h, row0 + i, :] = acc[i, :]`, converted to dst's element
    type, for the rows of the tile inside dst (dim 2). `acc` is `[T, D]`
    f32 and `dst` `[B, H, R, D]`.

    ```mlir
    flexattn.store_tile %dk_acc : memref<64x64xf32> into %dk : memref<1x2x200x64xbf16> at(%b, %hkv, %kv0)
    ```
  }];
  let arguments = (ins AnyMemRef:$acc, AnyMemRef:$dst, Index:$b, Index:$h,
                       Index:$row0);
  let assemblyFormat = [{
    $acc `:` type($acc) `into` $dst `:` type($dst)
    `at` `(` $b `,` $h `,` $row0 `)` attr-dict
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// flexattn.apply_mods_vjp
//===----------------------------------------------------------------------===//

def FlexAttn_ApplyModsVjpOp : FlexAttn_Op<"apply_mods_vjp", [
    IsolatedFromAbove, RecursiveMemoryEffects]> {
  let summary = "One modified score and its derivatives, scaled by a "
                "cotangent";
  let description = [{
    Returns what `score_mod_vjp` yields for `(score, b, h, q_idx, kv_idx,
    captures..., dy)` (the indices are `index` values, cast to the regions'
    index type): the modified score, `dy * d/dscore`, and per entry of
    `vjp_loads` the derivative with respect to that load and its indices.
    Where `masked` is set and mask_mod is false, the score is -inf and every
    derivative 0. Without `score_mod_vjp` the mod is the identity.
    `flexattn-inline-mods` replaces the op with its regions' bodies.

    ```mlir
    %s, %ds = flexattn.apply_mods_vjp %x, %dy at(%b, %h, %qi, %kvi)
      attributes {masked} mask_mod {
      ^bb0(%b: i32, %h: i32, %q: i32, %kv: i32):
        %c = arith.cmpi sge, %q, %kv : i32
        flexattn.yield %c : i1
      } : f32, f32
    ```
  }];
  let arguments = (ins F32:$score, F32:$dy, Index:$b, Index:$h,
                       Index:$q_idx, Index:$kv_idx,
                       Variadic<AnyMemRef>:$captures, UnitAttr:$masked,
                       OptionalAttr<DenseI64ArrayAttr>:$vjp_loads);
  let results = (outs F32:$result, F32:$dscore,
                      Variadic<AnyType>:$load_grads);
  let regions = (region FlexAttn_ModRegion:$score_mod_vjp,
                        FlexAttn_ModRegion:$mask_mod);
  let assemblyFormat = [{
    $score `,` $dy `at` `(` $b `,` $h `,` $q_idx `,` $kv_idx `)`
    (`captures` `(` $captures^ `:` type($captures) `)`)?
    attr-dict-with-keyword
    custom<BackwardRegions>($score_mod_vjp, $mask_mod)
    `:` type(results)
  }];
  let hasVerifier = 1;
}

#endif // FLEXATTN_BACKWARD_OPS
