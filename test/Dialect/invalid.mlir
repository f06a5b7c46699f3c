// RUN: flexattn-opt %s -split-input-file -verify-diagnostics

// One case per verifier error. Every message template emitted by
// dialect/FlexAttnOps.cpp is covered ({role} and <x> vary per case):
//
//   operands (checkMemRef, for q k v out lse kv_num_blocks kv_indices
//             full_kv_num_blocks full_kv_indices acc max sum):
//     {role} must be a <n>-D memref <layout>, got rank <r>
//     {role} element type must be <types>, got <t>
//   q/k/v (verifyQKV, every op that reads them):
//     k element type (<t>) must match q element type (<t>)
//     v element type (<t>) must match q element type (<t>)
//     k batch size / v batch size (<got>) must match <B> [or be 1 (broadcast)]
//     k head dim D / v head count / v sequence length N (<got>) must match <want>
//     q head count (<Hq>) must be a multiple of the k/v head count (<Hkv>) for
//       grouped-query attention
//   out/lse (verifyOutputs, attention):
//     out shape must be [B, Hq, M, Dv] = [...], got [...]
//     lse shape must be [B, Hq, M] = [...], got [...]
//   block mask (verifyBlockMask / verifyBlockMaskPair, attention and kv_loop):
//     full_blocks requires block_mask
//     a block_mask requires the block_size attribute
//     block_size is given without a block_mask         (attention, kv_loop)
//     block_size must be two positive integers [Q_BLOCK, KV_BLOCK], got [...]
//     {num|idx} batch dim / head dim (<d>) must be 1 (broadcast) or <B|Hq>
//     {num} and {idx} must have ceil(M / <QB>) = <n> query blocks, got [...] and [...]
//     {idx} must have ceil(N / <KB>) = <n> KV block slots, got <n>
//     {num} [...] and {idx} [...] must agree on their batch and head dims
//   tiles and state (kv_loop, tile_step, finalize):
//     tile_size must be two positive integers [BM, BN], got [...]
//     acc must have Dv = <dv> columns, got <n>
//     acc [...], max [...] and sum [...] must have the same number of rows
//     state must have tile_size[0] = <bm> rows, got <n>
//     with a block mask, tile_size[1] must divide block_size[1] and tile_size[0]
//       must divide block_size[0], got tile_size [...] and block_size [...]  (kv_loop)
//     packed rows need q viewed as [B, Hkv, G * M, D]: its head count (<n>)
//       must match k's (<n>)                                      (kv_loop, tile_step)
//     split needs both the range and the number of ranges, got only one  (kv_loop)
//     out must be a 4-D memref [B, Hq, M, Dv], got rank <r>            (finalize)
//     lse must be a 3-D f32 memref [B, Hq, M], got <type>              (finalize)
//   score_mod / mask_mod regions (verifyModRegions, every op with mods):
//     {mod} must take <n> arguments (<sig>, then one per captured buffer (<c>)), got <n>
//     score_mod score argument must be f32, got <t>
//     {mod} index arguments (b, h, q_idx, kv_idx) must be signless integers or index, got <t>
//     {mod} index arguments (b, h, q_idx, kv_idx) must share one type, got <t> and <t>
//     {mod} argument #<i> must have the type of captured buffer #<j> (<t>), got <t>
//     {mod} must end with flexattn.yield
//     {mod} may only contain arith, math, scf, memref.load and
//       flexattn.check_index ops (scalar code), found '<op>'
//     {mod} must yield one <f32|i1> value, got <n> value(s) of type(s) <types>
//   check_index:
//     size must be positive, got <n>
//     index must have at most 64 bits, got <t>
//     bounds must be [lo, hi] with lo <= hi, got [...]
//     dim must be non-negative, got <d>
//     site is given without a report buffer
//     report must be a [S, 2] memref of i64, got <t>
//     a report buffer requires the site attribute
//     site <s> is outside the report buffer's <n> rows
//   ODS and the parser: yield outside a flexattn op, a region with two blocks,
//   missing/ill-typed attributes (scale, tile_size, block_size), a non-memref
//   operand, a non-f32 apply_mods result.
//
// Not here: a mod region whose block has no terminator crashes the verifier
// (Block::getTerminator asserts); see invalid-region-no-terminator.mlir.

//===----------------------------------------------------------------------===//
// flexattn.attention: q, k and v ranks and element types
//===----------------------------------------------------------------------===//

func.func @q_must_be_a_4_d(%q: memref<8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                           %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>) {
  // expected-error @+1 {{'flexattn.attention' op q must be a 4-D memref [B, Hq, M, D], got rank 3}}
  flexattn.attention ins(%q, %k, %v : memref<8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      attributes {scale = 1.0 : f32}
  return
}

// -----

func.func @k_must_be_a_4_d(%q: memref<2x8x128x64xf32>, %k: memref<1x2x2x128x64xf32>,
                           %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>) {
  // expected-error @+1 {{'flexattn.attention' op k must be a 4-D memref [B, Hkv, N, D], got rank 5}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<1x2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      attributes {scale = 1.0 : f32}
  return
}

// -----

func.func @v_must_be_a_4_d(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                           %v: memref<128x64xf32>, %o: memref<2x8x128x64xf32>) {
  // expected-error @+1 {{'flexattn.attention' op v must be a 4-D memref [B, Hkv, N, Dv], got rank 2}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      attributes {scale = 1.0 : f32}
  return
}

// -----

func.func @q_element_type_must_be_f32(%q: memref<2x8x128x64xi32>, %k: memref<2x2x128x64xf32>,
                                      %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>) {
  // expected-error @+1 {{'flexattn.attention' op q element type must be f32, f16 or bf16, got 'i32'}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xi32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      attributes {scale = 1.0 : f32}
  return
}

// -----

func.func @k_element_type_must_be_f32(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf64>,
                                      %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>) {
  // expected-error @+1 {{'flexattn.attention' op k element type must be f32, f16 or bf16, got 'f64'}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf64>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      attributes {scale = 1.0 : f32}
  return
}

// -----

func.func @v_element_type_must_be_f32(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                      %v: memref<2x2x128x64xf8E4M3FN>, %o: memref<2x8x128x64xf32>) {
  // expected-error @+1 {{'flexattn.attention' op v element type must be f32, f16 or bf16, got 'f8E4M3FN'}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf8E4M3FN>) outs(%o : memref<2x8x128x64xf32>)
      attributes {scale = 1.0 : f32}
  return
}

// -----

func.func @k_element_type_f16_must_match(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf16>,
                                         %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>) {
  // expected-error @+1 {{'flexattn.attention' op k element type ('f16') must match q element type ('f32')}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf16>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      attributes {scale = 1.0 : f32}
  return
}

// -----

func.func @v_element_type_bf16_must_match(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                          %v: memref<2x2x128x64xbf16>, %o: memref<2x8x128x64xf32>) {
  // expected-error @+1 {{'flexattn.attention' op v element type ('bf16') must match q element type ('f32')}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xbf16>) outs(%o : memref<2x8x128x64xf32>)
      attributes {scale = 1.0 : f32}
  return
}

// -----

//===----------------------------------------------------------------------===//
// flexattn.attention: dimensions shared by q, k and v
//===----------------------------------------------------------------------===//

func.func @k_batch_size_3_must_match(%q: memref<2x8x128x64xf32>, %k: memref<3x2x128x64xf32>,
                                     %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>) {
  // expected-error @+1 {{'flexattn.attention' op k batch size (3) must match 2 or be 1 (broadcast)}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<3x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      attributes {scale = 1.0 : f32}
  return
}

// -----

func.func @v_batch_size_3_must_match(%q: memref<2x8x128x64xf32>, %k: memref<1x2x128x64xf32>,
                                     %v: memref<3x2x128x64xf32>, %o: memref<2x8x128x64xf32>) {
  // expected-error @+1 {{'flexattn.attention' op v batch size (3) must match 2 or be 1 (broadcast)}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<1x2x128x64xf32>, memref<3x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      attributes {scale = 1.0 : f32}
  return
}

// -----

func.func @k_head_dim_d_32_must(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x32xf32>,
                                %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>) {
  // expected-error @+1 {{'flexattn.attention' op k head dim D (32) must match 64}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x32xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      attributes {scale = 1.0 : f32}
  return
}

// -----

func.func @v_head_count_4_must_match(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                     %v: memref<2x4x128x64xf32>, %o: memref<2x8x128x64xf32>) {
  // expected-error @+1 {{'flexattn.attention' op v head count (4) must match 2}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x4x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      attributes {scale = 1.0 : f32}
  return
}

// -----

func.func @v_sequence_length_n_100_must(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                        %v: memref<2x2x100x64xf32>, %o: memref<2x8x128x64xf32>) {
  // expected-error @+1 {{'flexattn.attention' op v sequence length N (100) must match 128}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x100x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      attributes {scale = 1.0 : f32}
  return
}

// -----

func.func @q_head_count_8_must_be(%q: memref<2x8x128x64xf32>, %k: memref<2x3x128x64xf32>,
                                  %v: memref<2x3x128x64xf32>, %o: memref<2x8x128x64xf32>) {
  // expected-error @+1 {{'flexattn.attention' op q head count (8) must be a multiple of the k/v head count (3) for grouped-query attention}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x3x128x64xf32>, memref<2x3x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      attributes {scale = 1.0 : f32}
  return
}

// -----

func.func @q_head_count_8_must_be_2(%q: memref<2x8x128x64xf32>, %k: memref<2x0x128x64xf32>,
                                    %v: memref<2x0x128x64xf32>, %o: memref<2x8x128x64xf32>) {
  // expected-error @+1 {{'flexattn.attention' op q head count (8) must be a multiple of the k/v head count (0) for grouped-query attention}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x0x128x64xf32>, memref<2x0x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      attributes {scale = 1.0 : f32}
  return
}

// -----

//===----------------------------------------------------------------------===//
// flexattn.attention: out and lse
//===----------------------------------------------------------------------===//

func.func @out_must_be_a_4_d(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                             %v: memref<2x2x128x64xf32>, %o: memref<8x128x64xf32>) {
  // expected-error @+1 {{'flexattn.attention' op out must be a 4-D memref [B, Hq, M, Dv], got rank 3}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<8x128x64xf32>)
      attributes {scale = 1.0 : f32}
  return
}

// -----

func.func @out_element_type_must_be_q(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                      %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xbf16>) {
  // expected-error @+1 {{'flexattn.attention' op out element type must be q's (f32), got 'bf16'}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xbf16>)
      attributes {scale = 1.0 : f32}
  return
}

// -----

func.func @out_shape_must_be_b_hq(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                  %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x32xf32>) {
  // expected-error @+1 {{'flexattn.attention' op out shape must be [B, Hq, M, Dv] = [2, 8, 128, 64], got [2, 8, 128, 32]}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x32xf32>)
      attributes {scale = 1.0 : f32}
  return
}

// -----

func.func @out_shape_must_be_b_hq_2(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                    %v: memref<2x2x128x64xf32>, %o: memref<2x2x128x64xf32>) {
  // expected-error @+1 {{'flexattn.attention' op out shape must be [B, Hq, M, Dv] = [2, 8, 128, 64], got [2, 2, 128, 64]}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x2x128x64xf32>)
      attributes {scale = 1.0 : f32}
  return
}

// -----

func.func @lse_must_be_a_3_d(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                             %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>,
                             %lse: memref<2x8x128x1xf32>) {
  // expected-error @+1 {{'flexattn.attention' op lse must be a 3-D memref [B, Hq, M], got rank 4}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>) lse(%lse : memref<2x8x128x1xf32>)
      attributes {scale = 1.0 : f32}
  return
}

// -----

func.func @lse_element_type_must_be_f32(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                        %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>,
                                        %lse: memref<2x8x128xf16>) {
  // expected-error @+1 {{'flexattn.attention' op lse element type must be f32, got 'f16'}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>) lse(%lse : memref<2x8x128xf16>)
      attributes {scale = 1.0 : f32}
  return
}

// -----

func.func @lse_shape_must_be_b_hq(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                  %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>,
                                  %lse: memref<2x8x64xf32>) {
  // expected-error @+1 {{'flexattn.attention' op lse shape must be [B, Hq, M] = [2, 8, 128], got [2, 8, 64]}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>) lse(%lse : memref<2x8x64xf32>)
      attributes {scale = 1.0 : f32}
  return
}

// -----

//===----------------------------------------------------------------------===//
// flexattn.attention: block mask
//===----------------------------------------------------------------------===//

func.func @full_blocks_requires_block_mask(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                           %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>,
                                           %fn: memref<1x1x2xi32>, %fi: memref<1x1x2x2xi32>) {
  // expected-error @+1 {{'flexattn.attention' op full_blocks requires block_mask}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      full_blocks(%fn, %fi : memref<1x1x2xi32>, memref<1x1x2x2xi32>)
      attributes {scale = 1.0 : f32}
  return
}

// -----

func.func @a_block_mask_requires_the_block(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                           %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>,
                                           %n: memref<1x1x2xi32>, %i: memref<1x1x2x2xi32>) {
  // expected-error @+1 {{'flexattn.attention' op a block_mask requires the block_size attribute}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      block_mask(%n, %i : memref<1x1x2xi32>, memref<1x1x2x2xi32>)
      attributes {scale = 1.0 : f32}
  return
}

// -----

func.func @block_size_is_given_without_a(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                         %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>) {
  // expected-error @+1 {{'flexattn.attention' op block_size is given without a block_mask}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      attributes {block_size = array<i64: 64, 64>, scale = 1.0 : f32}
  return
}

// -----

func.func @block_size_must_be_two_positive(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                           %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>,
                                           %n: memref<1x1x2xi32>, %i: memref<1x1x2x2xi32>) {
  // expected-error @+1 {{'flexattn.attention' op block_size must be two positive integers [Q_BLOCK, KV_BLOCK], got [64]}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      block_mask(%n, %i : memref<1x1x2xi32>, memref<1x1x2x2xi32>)
      attributes {block_size = array<i64: 64>, scale = 1.0 : f32}
  return
}

// -----

func.func @block_size_must_be_two_positive_2(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                             %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>,
                                             %n: memref<1x1x2xi32>, %i: memref<1x1x2x2xi32>) {
  // expected-error @+1 {{'flexattn.attention' op block_size must be two positive integers [Q_BLOCK, KV_BLOCK], got [64, 0]}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      block_mask(%n, %i : memref<1x1x2xi32>, memref<1x1x2x2xi32>)
      attributes {block_size = array<i64: 64, 0>, scale = 1.0 : f32}
  return
}

// -----

func.func @kv_num_blocks_must_be_a(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                   %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>,
                                   %n: memref<1x2xi32>, %i: memref<1x1x2x2xi32>) {
  // expected-error @+1 {{'flexattn.attention' op kv_num_blocks must be a 3-D memref [B, H, Q_BLOCKS], got rank 2}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      block_mask(%n, %i : memref<1x2xi32>, memref<1x1x2x2xi32>)
      attributes {block_size = array<i64: 64, 64>, scale = 1.0 : f32}
  return
}

// -----

func.func @kv_num_blocks_element_type_must(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                           %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>,
                                           %n: memref<1x1x2xi64>, %i: memref<1x1x2x2xi32>) {
  // expected-error @+1 {{'flexattn.attention' op kv_num_blocks element type must be i32, got 'i64'}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      block_mask(%n, %i : memref<1x1x2xi64>, memref<1x1x2x2xi32>)
      attributes {block_size = array<i64: 64, 64>, scale = 1.0 : f32}
  return
}

// -----

func.func @kv_indices_must_be_a_4(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                  %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>,
                                  %n: memref<1x1x2xi32>, %i: memref<1x2x2xi32>) {
  // expected-error @+1 {{'flexattn.attention' op kv_indices must be a 4-D memref [B, H, Q_BLOCKS, KV_BLOCKS], got rank 3}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      block_mask(%n, %i : memref<1x1x2xi32>, memref<1x2x2xi32>)
      attributes {block_size = array<i64: 64, 64>, scale = 1.0 : f32}
  return
}

// -----

func.func @kv_indices_element_type_must_be(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                           %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>,
                                           %n: memref<1x1x2xi32>, %i: memref<1x1x2x2xindex>) {
  // expected-error @+1 {{'flexattn.attention' op kv_indices element type must be i32, got 'index'}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      block_mask(%n, %i : memref<1x1x2xi32>, memref<1x1x2x2xindex>)
      attributes {block_size = array<i64: 64, 64>, scale = 1.0 : f32}
  return
}

// -----

func.func @full_kv_num_blocks_must_be(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                      %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>,
                                      %n: memref<1x1x2xi32>, %i: memref<1x1x2x2xi32>,
                                      %fn: memref<1x1x2x2xi32>, %fi: memref<1x1x2x2xi32>) {
  // expected-error @+1 {{'flexattn.attention' op full_kv_num_blocks must be a 3-D memref [B, H, Q_BLOCKS], got rank 4}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      block_mask(%n, %i : memref<1x1x2xi32>, memref<1x1x2x2xi32>)
      full_blocks(%fn, %fi : memref<1x1x2x2xi32>, memref<1x1x2x2xi32>)
      attributes {block_size = array<i64: 64, 64>, scale = 1.0 : f32}
  return
}

// -----

func.func @full_kv_num_blocks_element_type(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                           %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>,
                                           %n: memref<1x1x2xi32>, %i: memref<1x1x2x2xi32>,
                                           %fn: memref<1x1x2xui32>, %fi: memref<1x1x2x2xi32>) {
  // expected-error @+1 {{'flexattn.attention' op full_kv_num_blocks element type must be i32, got 'ui32'}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      block_mask(%n, %i : memref<1x1x2xi32>, memref<1x1x2x2xi32>)
      full_blocks(%fn, %fi : memref<1x1x2xui32>, memref<1x1x2x2xi32>)
      attributes {block_size = array<i64: 64, 64>, scale = 1.0 : f32}
  return
}

// -----

func.func @full_kv_indices_must_be_a(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                     %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>,
                                     %n: memref<1x1x2xi32>, %i: memref<1x1x2x2xi32>,
                                     %fn: memref<1x1x2xi32>, %fi: memref<1x1x2xi32>) {
  // expected-error @+1 {{'flexattn.attention' op full_kv_indices must be a 4-D memref [B, H, Q_BLOCKS, KV_BLOCKS], got rank 3}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      block_mask(%n, %i : memref<1x1x2xi32>, memref<1x1x2x2xi32>)
      full_blocks(%fn, %fi : memref<1x1x2xi32>, memref<1x1x2xi32>)
      attributes {block_size = array<i64: 64, 64>, scale = 1.0 : f32}
  return
}

// -----

func.func @full_kv_indices_element_type_must(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                             %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>,
                                             %n: memref<1x1x2xi32>, %i: memref<1x1x2x2xi32>,
                                             %fn: memref<1x1x2xi32>, %fi: memref<1x1x2x2xi16>) {
  // expected-error @+1 {{'flexattn.attention' op full_kv_indices element type must be i32, got 'i16'}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      block_mask(%n, %i : memref<1x1x2xi32>, memref<1x1x2x2xi32>)
      full_blocks(%fn, %fi : memref<1x1x2xi32>, memref<1x1x2x2xi16>)
      attributes {block_size = array<i64: 64, 64>, scale = 1.0 : f32}
  return
}

// -----

func.func @kv_num_blocks_batch_dim_3(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                     %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>,
                                     %n: memref<3x1x2xi32>, %i: memref<1x1x2x2xi32>) {
  // expected-error @+1 {{'flexattn.attention' op kv_num_blocks batch dim (3) must be 1 (broadcast) or 2}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      block_mask(%n, %i : memref<3x1x2xi32>, memref<1x1x2x2xi32>)
      attributes {block_size = array<i64: 64, 64>, scale = 1.0 : f32}
  return
}

// -----

func.func @kv_indices_batch_dim_4_must(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                       %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>,
                                       %n: memref<1x1x2xi32>, %i: memref<4x1x2x2xi32>) {
  // expected-error @+1 {{'flexattn.attention' op kv_indices batch dim (4) must be 1 (broadcast) or 2}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      block_mask(%n, %i : memref<1x1x2xi32>, memref<4x1x2x2xi32>)
      attributes {block_size = array<i64: 64, 64>, scale = 1.0 : f32}
  return
}

// -----

func.func @kv_num_blocks_head_dim_2(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                    %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>,
                                    %n: memref<1x2x2xi32>, %i: memref<1x1x2x2xi32>) {
  // expected-error @+1 {{'flexattn.attention' op kv_num_blocks head dim (2) must be 1 (broadcast) or 8}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      block_mask(%n, %i : memref<1x2x2xi32>, memref<1x1x2x2xi32>)
      attributes {block_size = array<i64: 64, 64>, scale = 1.0 : f32}
  return
}

// -----

func.func @kv_indices_head_dim_4_must(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                      %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>,
                                      %n: memref<1x1x2xi32>, %i: memref<1x4x2x2xi32>) {
  // expected-error @+1 {{'flexattn.attention' op kv_indices head dim (4) must be 1 (broadcast) or 8}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      block_mask(%n, %i : memref<1x1x2xi32>, memref<1x4x2x2xi32>)
      attributes {block_size = array<i64: 64, 64>, scale = 1.0 : f32}
  return
}

// -----

func.func @full_kv_num_blocks_head_dim(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                       %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>,
                                       %n: memref<1x1x2xi32>, %i: memref<1x1x2x2xi32>,
                                       %fn: memref<1x2x2xi32>, %fi: memref<1x1x2x2xi32>) {
  // expected-error @+1 {{'flexattn.attention' op full_kv_num_blocks head dim (2) must be 1 (broadcast) or 8}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      block_mask(%n, %i : memref<1x1x2xi32>, memref<1x1x2x2xi32>)
      full_blocks(%fn, %fi : memref<1x2x2xi32>, memref<1x1x2x2xi32>)
      attributes {block_size = array<i64: 64, 64>, scale = 1.0 : f32}
  return
}

// -----

func.func @full_kv_indices_batch_dim_3(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                       %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>,
                                       %n: memref<1x1x2xi32>, %i: memref<1x1x2x2xi32>,
                                       %fn: memref<1x1x2xi32>, %fi: memref<3x1x2x2xi32>) {
  // expected-error @+1 {{'flexattn.attention' op full_kv_indices batch dim (3) must be 1 (broadcast) or 2}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      block_mask(%n, %i : memref<1x1x2xi32>, memref<1x1x2x2xi32>)
      full_blocks(%fn, %fi : memref<1x1x2xi32>, memref<3x1x2x2xi32>)
      attributes {block_size = array<i64: 64, 64>, scale = 1.0 : f32}
  return
}

// -----

func.func @kv_num_blocks_and_kv_indices(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                        %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>,
                                        %n: memref<1x1x3xi32>, %i: memref<1x1x2x2xi32>) {
  // expected-error @+1 {{'flexattn.attention' op kv_num_blocks and kv_indices must have ceil(M / 64) = 2 query blocks, got [1, 1, 3] and [1, 1, 2, 2]}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      block_mask(%n, %i : memref<1x1x3xi32>, memref<1x1x2x2xi32>)
      attributes {block_size = array<i64: 64, 64>, scale = 1.0 : f32}
  return
}

// -----

func.func @kv_num_blocks_and_kv_indices_2(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                          %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>,
                                          %n: memref<1x1x2xi32>, %i: memref<1x1x2x3xi32>) {
  // expected-error @+1 {{'flexattn.attention' op kv_num_blocks and kv_indices must have ceil(M / 48) = 3 query blocks, got [1, 1, 2] and [1, 1, 2, 3]}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      block_mask(%n, %i : memref<1x1x2xi32>, memref<1x1x2x3xi32>)
      attributes {block_size = array<i64: 48, 48>, scale = 1.0 : f32}
  return
}

// -----

func.func @kv_indices_must_have_ceil_n(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                       %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>,
                                       %n: memref<1x1x2xi32>, %i: memref<1x1x2x1xi32>) {
  // expected-error @+1 {{'flexattn.attention' op kv_indices must have ceil(N / 64) = 2 KV block slots, got 1}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      block_mask(%n, %i : memref<1x1x2xi32>, memref<1x1x2x1xi32>)
      attributes {block_size = array<i64: 64, 64>, scale = 1.0 : f32}
  return
}

// -----

func.func @full_kv_num_blocks_and_full(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                       %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>,
                                       %n: memref<1x1x2xi32>, %i: memref<1x1x2x2xi32>,
                                       %fn: memref<1x1x1xi32>, %fi: memref<1x1x2x2xi32>) {
  // expected-error @+1 {{'flexattn.attention' op full_kv_num_blocks and full_kv_indices must have ceil(M / 64) = 2 query blocks, got [1, 1, 1] and [1, 1, 2, 2]}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      block_mask(%n, %i : memref<1x1x2xi32>, memref<1x1x2x2xi32>)
      full_blocks(%fn, %fi : memref<1x1x1xi32>, memref<1x1x2x2xi32>)
      attributes {block_size = array<i64: 64, 64>, scale = 1.0 : f32}
  return
}

// -----

func.func @full_kv_indices_must_have_ceil(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                          %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>,
                                          %n: memref<1x1x2xi32>, %i: memref<1x1x2x2xi32>,
                                          %fn: memref<1x1x2xi32>, %fi: memref<1x1x2x4xi32>) {
  // expected-error @+1 {{'flexattn.attention' op full_kv_indices must have ceil(N / 64) = 2 KV block slots, got 4}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      block_mask(%n, %i : memref<1x1x2xi32>, memref<1x1x2x2xi32>)
      full_blocks(%fn, %fi : memref<1x1x2xi32>, memref<1x1x2x4xi32>)
      attributes {block_size = array<i64: 64, 64>, scale = 1.0 : f32}
  return
}

// -----

func.func @kv_num_blocks_1_1_2(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                               %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>,
                               %n: memref<1x1x2xi32>, %i: memref<2x1x2x2xi32>) {
  // expected-error @+1 {{'flexattn.attention' op kv_num_blocks [1, 1, 2] and kv_indices [2, 1, 2, 2] must agree on their batch and head dims}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      block_mask(%n, %i : memref<1x1x2xi32>, memref<2x1x2x2xi32>)
      attributes {block_size = array<i64: 64, 64>, scale = 1.0 : f32}
  return
}

// -----

func.func @full_kv_num_blocks_1_8(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                  %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>,
                                  %n: memref<1x1x2xi32>, %i: memref<1x1x2x2xi32>,
                                  %fn: memref<1x8x2xi32>, %fi: memref<1x1x2x2xi32>) {
  // expected-error @+1 {{'flexattn.attention' op full_kv_num_blocks [1, 8, 2] and full_kv_indices [1, 1, 2, 2] must agree on their batch and head dims}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      block_mask(%n, %i : memref<1x1x2xi32>, memref<1x1x2x2xi32>)
      full_blocks(%fn, %fi : memref<1x8x2xi32>, memref<1x1x2x2xi32>)
      attributes {block_size = array<i64: 64, 64>, scale = 1.0 : f32}
  return
}

// -----

//===----------------------------------------------------------------------===//
// score_mod / mask_mod regions (ModRegionsOpInterface, shared by every op with mods)
//===----------------------------------------------------------------------===//

func.func @score_mod_must_take_5_arguments(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                           %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>) {
  // expected-error @+1 {{'flexattn.attention' op score_mod must take 5 arguments (score, b, h, q_idx, kv_idx, then one per captured buffer (0)), got 4}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      attributes {scale = 1.0 : f32}
    score_mod {
    ^bb0(%s: f32, %b: i32, %h: i32, %qi: i32):
      flexattn.yield %s : f32
    }
  return
}

// -----

func.func @score_mod_must_take_6_arguments(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                           %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>,
                                           %c0: memref<8xf32>) {
  // expected-error @+1 {{'flexattn.attention' op score_mod must take 6 arguments (score, b, h, q_idx, kv_idx, then one per captured buffer (1)), got 5}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      captures(%c0 : memref<8xf32>)
      attributes {scale = 1.0 : f32}
    score_mod {
    ^bb0(%s: f32, %b: i32, %h: i32, %qi: i32, %ki: i32):
      flexattn.yield %s : f32
    }
  return
}

// -----

func.func @mask_mod_must_take_4_arguments(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                          %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>) {
  // expected-error @+1 {{'flexattn.attention' op mask_mod must take 4 arguments (b, h, q_idx, kv_idx, then one per captured buffer (0)), got 5}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      attributes {scale = 1.0 : f32}
    mask_mod {
    ^bb0(%b: i32, %h: i32, %qi: i32, %ki: i32, %x: i32):
      %t = arith.constant true
      flexattn.yield %t : i1
    }
  return
}

// -----

func.func @mask_mod_must_take_6_arguments(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                          %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>,
                                          %c0: memref<8xf32>, %c1: memref<4xi32>) {
  // expected-error @+1 {{'flexattn.attention' op mask_mod must take 6 arguments (b, h, q_idx, kv_idx, then one per captured buffer (2)), got 4}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      captures(%c0, %c1 : memref<8xf32>, memref<4xi32>)
      attributes {scale = 1.0 : f32}
    mask_mod {
    ^bb0(%b: i32, %h: i32, %qi: i32, %ki: i32):
      %t = arith.constant true
      flexattn.yield %t : i1
    }
  return
}

// -----

func.func @score_mod_score_argument_must_be(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                            %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>) {
  // expected-error @+1 {{'flexattn.attention' op score_mod score argument must be f32, got 'f16'}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      attributes {scale = 1.0 : f32}
    score_mod {
    ^bb0(%s: f16, %b: i32, %h: i32, %qi: i32, %ki: i32):
      %e = arith.extf %s : f16 to f32
      flexattn.yield %e : f32
    }
  return
}

// -----

func.func @score_mod_index_arguments_b_h(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                         %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>) {
  // expected-error @+1 {{'flexattn.attention' op score_mod index arguments (b, h, q_idx, kv_idx) must be signless integers or index, got 'f32'}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      attributes {scale = 1.0 : f32}
    score_mod {
    ^bb0(%s: f32, %b: f32, %h: f32, %qi: f32, %ki: f32):
      flexattn.yield %s : f32
    }
  return
}

// -----

func.func @score_mod_index_arguments_b_h_2(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                           %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>) {
  // expected-error @+1 {{'flexattn.attention' op score_mod index arguments (b, h, q_idx, kv_idx) must be signless integers or index, got 'ui32'}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      attributes {scale = 1.0 : f32}
    score_mod {
    ^bb0(%s: f32, %b: ui32, %h: ui32, %qi: ui32, %ki: ui32):
      flexattn.yield %s : f32
    }
  return
}

// -----

func.func @mask_mod_index_arguments_b_h(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                        %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>) {
  // expected-error @+1 {{'flexattn.attention' op mask_mod index arguments (b, h, q_idx, kv_idx) must be signless integers or index, got 'si64'}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      attributes {scale = 1.0 : f32}
    mask_mod {
    ^bb0(%b: si64, %h: si64, %qi: si64, %ki: si64):
      %t = arith.constant true
      flexattn.yield %t : i1
    }
  return
}

// -----

func.func @score_mod_index_arguments_b_h_3(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                           %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>) {
  // expected-error @+1 {{'flexattn.attention' op score_mod index arguments (b, h, q_idx, kv_idx) must share one type, got 'i32' and 'i64'}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      attributes {scale = 1.0 : f32}
    score_mod {
    ^bb0(%s: f32, %b: i32, %h: i32, %qi: i32, %ki: i64):
      flexattn.yield %s : f32
    }
  return
}

// -----

func.func @mask_mod_index_arguments_b_h_2(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                          %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>) {
  // expected-error @+1 {{'flexattn.attention' op mask_mod index arguments (b, h, q_idx, kv_idx) must share one type, got 'index' and 'i32'}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      attributes {scale = 1.0 : f32}
    mask_mod {
    ^bb0(%b: index, %h: i32, %qi: index, %ki: index):
      %t = arith.constant true
      flexattn.yield %t : i1
    }
  return
}

// -----

func.func @score_mod_argument_5_must_have(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                          %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>,
                                          %c0: memref<8xf32>) {
  // expected-error @+1 {{'flexattn.attention' op score_mod argument #5 must have the type of captured buffer #0 ('memref<8xf32>'), got 'memref<4xf32>'}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      captures(%c0 : memref<8xf32>)
      attributes {scale = 1.0 : f32}
    score_mod {
    ^bb0(%s: f32, %b: i32, %h: i32, %qi: i32, %ki: i32, %c: memref<4xf32>):
      flexattn.yield %s : f32
    }
  return
}

// -----

func.func @mask_mod_argument_5_must_have(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                         %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>,
                                         %c0: memref<8xf32>, %c1: memref<?xi32>) {
  // expected-error @+1 {{'flexattn.attention' op mask_mod argument #5 must have the type of captured buffer #1 ('memref<?xi32>'), got 'memref<4xi32>'}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      captures(%c0, %c1 : memref<8xf32>, memref<?xi32>)
      attributes {scale = 1.0 : f32}
    mask_mod {
    ^bb0(%b: i32, %h: i32, %qi: i32, %ki: i32, %c0: memref<8xf32>, %c1: memref<4xi32>):
      %t = arith.constant true
      flexattn.yield %t : i1
    }
  return
}

// -----

func.func @score_mod_must_end_with_flexattn(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                            %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>) {
  // expected-error @+1 {{'flexattn.attention' op score_mod must end with flexattn.yield}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      attributes {scale = 1.0 : f32}
    score_mod {
    ^bb0(%s: f32, %b: i32, %h: i32, %qi: i32, %ki: i32):
      func.return %s : f32
    }
  return
}

// -----

func.func @mask_mod_must_end_with_flexattn(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                           %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>) {
  // expected-error @+1 {{'flexattn.attention' op mask_mod must end with flexattn.yield}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      attributes {scale = 1.0 : f32}
    mask_mod {
    ^bb0(%b: i32, %h: i32, %qi: i32, %ki: i32):
      %t = arith.constant true
      scf.yield
    }
  return
}

// -----

func.func @score_mod_must_yield_one_f32(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                        %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>) {
  // expected-error @+1 {{'flexattn.attention' op score_mod must yield one f32 value, got 0 value(s) of type(s) }}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      attributes {scale = 1.0 : f32}
    score_mod {
    ^bb0(%s: f32, %b: i32, %h: i32, %qi: i32, %ki: i32):
      flexattn.yield
    }
  return
}

// -----

func.func @score_mod_must_yield_one_f32_2(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                          %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>) {
  // expected-error @+1 {{'flexattn.attention' op score_mod must yield one f32 value, got 2 value(s) of type(s) 'f32', 'f32'}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      attributes {scale = 1.0 : f32}
    score_mod {
    ^bb0(%s: f32, %b: i32, %h: i32, %qi: i32, %ki: i32):
      flexattn.yield %s, %s : f32, f32
    }
  return
}

// -----

func.func @score_mod_must_yield_one_f32_3(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                          %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>) {
  // expected-error @+1 {{'flexattn.attention' op score_mod must yield one f32 value, got 1 value(s) of type(s) 'i32'}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      attributes {scale = 1.0 : f32}
    score_mod {
    ^bb0(%s: f32, %b: i32, %h: i32, %qi: i32, %ki: i32):
      flexattn.yield %qi : i32
    }
  return
}

// -----

func.func @mask_mod_must_yield_one_i1(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                      %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>) {
  // expected-error @+1 {{'flexattn.attention' op mask_mod must yield one i1 value, got 1 value(s) of type(s) 'i32'}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      attributes {scale = 1.0 : f32}
    mask_mod {
    ^bb0(%b: i32, %h: i32, %qi: i32, %ki: i32):
      %t = arith.constant true
      flexattn.yield %qi : i32
    }
  return
}

// -----

func.func @mask_mod_must_yield_one_i1_2(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                        %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>) {
  // expected-error @+1 {{'flexattn.attention' op mask_mod must yield one i1 value, got 2 value(s) of type(s) 'i1', 'i1'}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      attributes {scale = 1.0 : f32}
    mask_mod {
    ^bb0(%b: i32, %h: i32, %qi: i32, %ki: i32):
      %t = arith.constant true
      flexattn.yield %t, %t : i1, i1
    }
  return
}

// -----

//===----------------------------------------------------------------------===//
// flexattn.kv_loop and flexattn.tile_step: tile_size, state, block mask vs. tile
//===----------------------------------------------------------------------===//

func.func @q_head_count_8_must_be_3(%q: memref<2x8x128x64xf32>, %k: memref<2x3x128x64xf32>,
                                    %v: memref<2x3x128x64xf32>, %acc: memref<64x64xf32>,
                                    %m: memref<64xf32>, %l: memref<64xf32>, %i: index) {
  // expected-error @+1 {{'flexattn.kv_loop' op q head count (8) must be a multiple of the k/v head count (3) for grouped-query attention}}
  flexattn.kv_loop ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x3x128x64xf32>, memref<2x3x128x64xf32>)
      state(%acc, %m, %l : memref<64x64xf32>, memref<64xf32>, memref<64xf32>) at(%i, %i, %i, %i)
      attributes {scale = 1.0 : f32, tile_size = array<i64: 64, 64>}
  return
}

// -----

// Only flexattn.attention broadcasts k/v over the batch (flexattn-tile makes
// the view the tile ops index by b).
func.func @kv_loop_k_batch_must_match(%q: memref<2x8x128x64xf32>, %k: memref<1x2x128x64xf32>,
                                      %v: memref<2x2x128x64xf32>, %acc: memref<64x64xf32>,
                                      %m: memref<64xf32>, %l: memref<64xf32>, %i: index) {
  // expected-error @+1 {{'flexattn.kv_loop' op k batch size (1) must match 2}}
  flexattn.kv_loop ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<1x2x128x64xf32>, memref<2x2x128x64xf32>)
      state(%acc, %m, %l : memref<64x64xf32>, memref<64xf32>, memref<64xf32>) at(%i, %i, %i, %i)
      attributes {scale = 1.0 : f32, tile_size = array<i64: 64, 64>}
  return
}

// -----

func.func @tile_step_v_batch_must_match(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                        %v: memref<1x2x128x64xf32>, %acc: memref<64x64xf32>,
                                        %m: memref<64xf32>, %l: memref<64xf32>, %i: index) {
  // expected-error @+1 {{'flexattn.tile_step' op v batch size (1) must match 2}}
  flexattn.tile_step ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<1x2x128x64xf32>)
      state(%acc, %m, %l : memref<64x64xf32>, memref<64xf32>, memref<64xf32>) at(%i, %i, %i, %i, %i)
      attributes {scale = 1.0 : f32, tile_size = array<i64: 64, 64>}
  return
}

// -----

// A packed decode tile reads q as [B, Hkv, G * M, D].
func.func @kv_loop_packed_q_heads_must_match_k(%q: memref<2x8x4x64xf32>, %k: memref<2x2x128x64xf32>,
                                               %v: memref<2x2x128x64xf32>, %acc: memref<64x64xf32>,
                                               %m: memref<64xf32>, %l: memref<64xf32>, %i: index) {
  // expected-error @+1 {{'flexattn.kv_loop' op packed rows need q viewed as [B, Hkv, G * M, D]: its head count (8) must match k's (2)}}
  flexattn.kv_loop ins(%q, %k, %v : memref<2x8x4x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>)
      state(%acc, %m, %l : memref<64x64xf32>, memref<64xf32>, memref<64xf32>) at(%i, %i, %i, %i) packed(%i)
      attributes {scale = 1.0 : f32, tile_size = array<i64: 64, 64>}
  return
}

// -----

func.func @tile_step_packed_q_heads_must_match_k(%q: memref<2x8x4x64xf32>, %k: memref<2x2x128x64xf32>,
                                                 %v: memref<2x2x128x64xf32>, %acc: memref<64x64xf32>,
                                                 %m: memref<64xf32>, %l: memref<64xf32>, %i: index) {
  // expected-error @+1 {{'flexattn.tile_step' op packed rows need q viewed as [B, Hkv, G * M, D]: its head count (8) must match k's (2)}}
  flexattn.tile_step ins(%q, %k, %v : memref<2x8x4x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>)
      state(%acc, %m, %l : memref<64x64xf32>, memref<64xf32>, memref<64xf32>) at(%i, %i, %i, %i, %i) packed(%i)
      attributes {scale = 1.0 : f32, tile_size = array<i64: 64, 64>}
  return
}

// -----

// A packed tile's block mask is its own row: one query block.
func.func @kv_loop_packed_mask_is_one_row(%q: memref<1x2x8x64xf32>, %k: memref<1x2x128x64xf32>,
                                          %v: memref<1x2x128x64xf32>, %acc: memref<8x64xf32>,
                                          %m: memref<8xf32>, %l: memref<8xf32>, %i: index,
                                          %kvn: memref<1x1x2xi32>, %kvi: memref<1x1x2x2xi32>) {
  // expected-error @+1 {{'flexattn.kv_loop' op kv_num_blocks and kv_indices must have ceil(M / 64) = 1 query blocks, got [1, 1, 2] and [1, 1, 2, 2]}}
  flexattn.kv_loop ins(%q, %k, %v : memref<1x2x8x64xf32>, memref<1x2x128x64xf32>, memref<1x2x128x64xf32>)
      state(%acc, %m, %l : memref<8x64xf32>, memref<8xf32>, memref<8xf32>) at(%i, %i, %i, %i) packed(%i)
      block_mask(%kvn, %kvi : memref<1x1x2xi32>, memref<1x1x2x2xi32>)
      attributes {scale = 1.0 : f32, tile_size = array<i64: 8, 64>, block_size = array<i64: 64, 64>}
  return
}

// -----

// split(%s of %n) needs both values (here only %s, in the generic form).
func.func @kv_loop_split_needs_both(%q: memref<1x2x8x64xf32>, %k: memref<1x2x128x64xf32>,
                                    %v: memref<1x2x128x64xf32>, %acc: memref<8x64xf32>,
                                    %m: memref<8xf32>, %l: memref<8xf32>, %i: index) {
  // expected-error @+1 {{'flexattn.kv_loop' op split needs both the range and the number of ranges, got only one}}
  "flexattn.kv_loop"(%q, %k, %v, %acc, %m, %l, %i, %i, %i, %i, %i) <{
      operandSegmentSizes = array<i32: 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0>,
      scale = 1.0 : f32, tile_size = array<i64: 8, 64>}> ({
  }, {
  }) : (memref<1x2x8x64xf32>, memref<1x2x128x64xf32>, memref<1x2x128x64xf32>, memref<8x64xf32>,
        memref<8xf32>, memref<8xf32>, index, index, index, index, index) -> ()
  return
}

// -----

func.func @kv_loop_block_size_without_mask(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                           %v: memref<2x2x128x64xf32>, %acc: memref<64x64xf32>,
                                           %m: memref<64xf32>, %l: memref<64xf32>, %i: index) {
  // expected-error @+1 {{'flexattn.kv_loop' op block_size is given without a block_mask}}
  flexattn.kv_loop ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>)
      state(%acc, %m, %l : memref<64x64xf32>, memref<64xf32>, memref<64xf32>) at(%i, %i, %i, %i)
      attributes {scale = 1.0 : f32, tile_size = array<i64: 64, 64>, block_size = array<i64: 64, 64>}
  return
}

// -----

func.func @tile_size_must_be_two_positive(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                          %v: memref<2x2x128x64xf32>, %acc: memref<64x64xf32>,
                                          %m: memref<64xf32>, %l: memref<64xf32>, %i: index) {
  // expected-error @+1 {{'flexattn.kv_loop' op tile_size must be two positive integers [BM, BN], got [64, 64, 1]}}
  flexattn.kv_loop ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>)
      state(%acc, %m, %l : memref<64x64xf32>, memref<64xf32>, memref<64xf32>) at(%i, %i, %i, %i)
      attributes {scale = 1.0 : f32, tile_size = array<i64: 64, 64, 1>}
  return
}

// -----

func.func @tile_size_must_be_two_positive_2(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                            %v: memref<2x2x128x64xf32>, %acc: memref<64x64xf32>,
                                            %m: memref<64xf32>, %l: memref<64xf32>, %i: index) {
  // expected-error @+1 {{'flexattn.kv_loop' op tile_size must be two positive integers [BM, BN], got [0, 64]}}
  flexattn.kv_loop ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>)
      state(%acc, %m, %l : memref<64x64xf32>, memref<64xf32>, memref<64xf32>) at(%i, %i, %i, %i)
      attributes {scale = 1.0 : f32, tile_size = array<i64: 0, 64>}
  return
}

// -----

func.func @tile_size_must_be_two_positive_3(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                            %v: memref<2x2x128x64xf32>, %acc: memref<64x64xf32>,
                                            %m: memref<64xf32>, %l: memref<64xf32>, %i: index) {
  // expected-error @+1 {{'flexattn.tile_step' op tile_size must be two positive integers [BM, BN], got [64, -1]}}
  flexattn.tile_step ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>)
      state(%acc, %m, %l : memref<64x64xf32>, memref<64xf32>, memref<64xf32>) at(%i, %i, %i, %i, %i)
      attributes {scale = 1.0 : f32, tile_size = array<i64: 64, -1>}
  return
}

// -----

func.func @acc_must_be_a_2_d(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                             %v: memref<2x2x128x64xf32>, %acc: memref<64xf32>, %m: memref<64xf32>,
                             %l: memref<64xf32>, %i: index) {
  // expected-error @+1 {{'flexattn.kv_loop' op acc must be a 2-D memref [BM, Dv], got rank 1}}
  flexattn.kv_loop ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>)
      state(%acc, %m, %l : memref<64xf32>, memref<64xf32>, memref<64xf32>) at(%i, %i, %i, %i)
      attributes {scale = 1.0 : f32, tile_size = array<i64: 64, 64>}
  return
}

// -----

func.func @acc_element_type_must_be_f32(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                        %v: memref<2x2x128x64xf32>, %acc: memref<64x64xf16>,
                                        %m: memref<64xf32>, %l: memref<64xf32>, %i: index) {
  // expected-error @+1 {{'flexattn.kv_loop' op acc element type must be f32, got 'f16'}}
  flexattn.kv_loop ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>)
      state(%acc, %m, %l : memref<64x64xf16>, memref<64xf32>, memref<64xf32>) at(%i, %i, %i, %i)
      attributes {scale = 1.0 : f32, tile_size = array<i64: 64, 64>}
  return
}

// -----

func.func @max_must_be_a_1_d(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                             %v: memref<2x2x128x64xf32>, %acc: memref<64x64xf32>,
                             %m: memref<64x1xf32>, %l: memref<64xf32>, %i: index) {
  // expected-error @+1 {{'flexattn.kv_loop' op max must be a 1-D memref [BM], got rank 2}}
  flexattn.kv_loop ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>)
      state(%acc, %m, %l : memref<64x64xf32>, memref<64x1xf32>, memref<64xf32>) at(%i, %i, %i, %i)
      attributes {scale = 1.0 : f32, tile_size = array<i64: 64, 64>}
  return
}

// -----

func.func @max_element_type_must_be_f32(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                        %v: memref<2x2x128x64xf32>, %acc: memref<64x64xf32>,
                                        %m: memref<64xbf16>, %l: memref<64xf32>, %i: index) {
  // expected-error @+1 {{'flexattn.kv_loop' op max element type must be f32, got 'bf16'}}
  flexattn.kv_loop ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>)
      state(%acc, %m, %l : memref<64x64xf32>, memref<64xbf16>, memref<64xf32>) at(%i, %i, %i, %i)
      attributes {scale = 1.0 : f32, tile_size = array<i64: 64, 64>}
  return
}

// -----

func.func @sum_must_be_a_1_d(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                             %v: memref<2x2x128x64xf32>, %acc: memref<64x64xf32>,
                             %m: memref<64xf32>, %l: memref<f32>, %i: index) {
  // expected-error @+1 {{'flexattn.kv_loop' op sum must be a 1-D memref [BM], got rank 0}}
  flexattn.kv_loop ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>)
      state(%acc, %m, %l : memref<64x64xf32>, memref<64xf32>, memref<f32>) at(%i, %i, %i, %i)
      attributes {scale = 1.0 : f32, tile_size = array<i64: 64, 64>}
  return
}

// -----

func.func @sum_element_type_must_be_f32(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                        %v: memref<2x2x128x64xf32>, %acc: memref<64x64xf32>,
                                        %m: memref<64xf32>, %l: memref<64xf64>, %i: index) {
  // expected-error @+1 {{'flexattn.kv_loop' op sum element type must be f32, got 'f64'}}
  flexattn.kv_loop ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>)
      state(%acc, %m, %l : memref<64x64xf32>, memref<64xf32>, memref<64xf64>) at(%i, %i, %i, %i)
      attributes {scale = 1.0 : f32, tile_size = array<i64: 64, 64>}
  return
}

// -----

func.func @acc_must_have_dv_64_columns(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                       %v: memref<2x2x128x64xf32>, %acc: memref<64x32xf32>,
                                       %m: memref<64xf32>, %l: memref<64xf32>, %i: index) {
  // expected-error @+1 {{'flexattn.kv_loop' op acc must have Dv = 64 columns, got 32}}
  flexattn.kv_loop ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>)
      state(%acc, %m, %l : memref<64x32xf32>, memref<64xf32>, memref<64xf32>) at(%i, %i, %i, %i)
      attributes {scale = 1.0 : f32, tile_size = array<i64: 64, 64>}
  return
}

// -----

func.func @acc_64_64_max_32_and(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                %v: memref<2x2x128x64xf32>, %acc: memref<64x64xf32>,
                                %m: memref<32xf32>, %l: memref<64xf32>, %i: index) {
  // expected-error @+1 {{'flexattn.kv_loop' op acc [64, 64], max [32] and sum [64] must have the same number of rows}}
  flexattn.kv_loop ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>)
      state(%acc, %m, %l : memref<64x64xf32>, memref<32xf32>, memref<64xf32>) at(%i, %i, %i, %i)
      attributes {scale = 1.0 : f32, tile_size = array<i64: 64, 64>}
  return
}

// -----

func.func @acc_64_64_max_64_and(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                %v: memref<2x2x128x64xf32>, %acc: memref<64x64xf32>,
                                %m: memref<64xf32>, %l: memref<16xf32>, %i: index) {
  // expected-error @+1 {{'flexattn.kv_loop' op acc [64, 64], max [64] and sum [16] must have the same number of rows}}
  flexattn.kv_loop ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>)
      state(%acc, %m, %l : memref<64x64xf32>, memref<64xf32>, memref<16xf32>) at(%i, %i, %i, %i)
      attributes {scale = 1.0 : f32, tile_size = array<i64: 64, 64>}
  return
}

// -----

func.func @state_must_have_tile_size_0(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                       %v: memref<2x2x128x64xf32>, %acc: memref<64x64xf32>,
                                       %m: memref<64xf32>, %l: memref<64xf32>, %i: index) {
  // expected-error @+1 {{'flexattn.kv_loop' op state must have tile_size[0] = 32 rows, got 64}}
  flexattn.kv_loop ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>)
      state(%acc, %m, %l : memref<64x64xf32>, memref<64xf32>, memref<64xf32>) at(%i, %i, %i, %i)
      attributes {scale = 1.0 : f32, tile_size = array<i64: 32, 64>}
  return
}

// -----

func.func @state_must_have_tile_size_0_2(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                         %v: memref<2x2x128x64xf32>, %acc: memref<64x64xf32>,
                                         %m: memref<64xf32>, %l: memref<64xf32>, %i: index) {
  // expected-error @+1 {{'flexattn.tile_step' op state must have tile_size[0] = 16 rows, got 64}}
  flexattn.tile_step ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>)
      state(%acc, %m, %l : memref<64x64xf32>, memref<64xf32>, memref<64xf32>) at(%i, %i, %i, %i, %i)
      attributes {scale = 1.0 : f32, tile_size = array<i64: 16, 16>}
  return
}

// -----

func.func @a_block_mask_requires_the_block_2(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                             %v: memref<2x2x128x64xf32>, %acc: memref<64x64xf32>,
                                             %m: memref<64xf32>, %l: memref<64xf32>, %i: index,
                                             %n: memref<1x1x2xi32>, %x: memref<1x1x2x2xi32>) {
  // expected-error @+1 {{'flexattn.kv_loop' op a block_mask requires the block_size attribute}}
  flexattn.kv_loop ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>)
      state(%acc, %m, %l : memref<64x64xf32>, memref<64xf32>, memref<64xf32>) at(%i, %i, %i, %i)
      block_mask(%n, %x : memref<1x1x2xi32>, memref<1x1x2x2xi32>)
      attributes {scale = 1.0 : f32, tile_size = array<i64: 64, 64>}
  return
}

// -----

func.func @kv_indices_must_have_ceil_n_2(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                         %v: memref<2x2x128x64xf32>, %acc: memref<64x64xf32>,
                                         %m: memref<64xf32>, %l: memref<64xf32>, %i: index,
                                         %n: memref<1x1x2xi32>, %x: memref<1x1x2x3xi32>) {
  // expected-error @+1 {{'flexattn.kv_loop' op kv_indices must have ceil(N / 64) = 2 KV block slots, got 3}}
  flexattn.kv_loop ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>)
      state(%acc, %m, %l : memref<64x64xf32>, memref<64xf32>, memref<64xf32>) at(%i, %i, %i, %i)
      block_mask(%n, %x : memref<1x1x2xi32>, memref<1x1x2x3xi32>)
      attributes {block_size = array<i64: 64, 64>, scale = 1.0 : f32, tile_size = array<i64: 64, 64>}
  return
}

// -----

func.func @with_a_block_mask_tile_size(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                       %v: memref<2x2x128x64xf32>, %acc: memref<64x64xf32>,
                                       %m: memref<64xf32>, %l: memref<64xf32>, %i: index,
                                       %n: memref<1x1x2xi32>, %x: memref<1x1x2x2xi32>) {
  // expected-error @+1 {{'flexattn.kv_loop' op with a block mask, tile_size[1] must divide block_size[1] and tile_size[0] must divide block_size[0], got tile_size [64, 48] and block_size [64, 64]}}
  flexattn.kv_loop ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>)
      state(%acc, %m, %l : memref<64x64xf32>, memref<64xf32>, memref<64xf32>) at(%i, %i, %i, %i)
      block_mask(%n, %x : memref<1x1x2xi32>, memref<1x1x2x2xi32>)
      attributes {block_size = array<i64: 64, 64>, scale = 1.0 : f32, tile_size = array<i64: 64, 48>}
  return
}

// -----

func.func @with_a_block_mask_tile_size_2(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                         %v: memref<2x2x128x64xf32>, %acc: memref<48x64xf32>,
                                         %m: memref<48xf32>, %l: memref<48xf32>, %i: index,
                                         %n: memref<1x1x2xi32>, %x: memref<1x1x2x2xi32>) {
  // expected-error @+1 {{'flexattn.kv_loop' op with a block mask, tile_size[1] must divide block_size[1] and tile_size[0] must divide block_size[0], got tile_size [48, 64] and block_size [64, 64]}}
  flexattn.kv_loop ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>)
      state(%acc, %m, %l : memref<48x64xf32>, memref<48xf32>, memref<48xf32>) at(%i, %i, %i, %i)
      block_mask(%n, %x : memref<1x1x2xi32>, memref<1x1x2x2xi32>)
      attributes {block_size = array<i64: 64, 64>, scale = 1.0 : f32, tile_size = array<i64: 48, 64>}
  return
}

// -----

func.func @v_element_type_f16_must_match(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                         %v: memref<2x2x128x64xf16>, %acc: memref<64x64xf32>,
                                         %m: memref<64xf32>, %l: memref<64xf32>, %i: index) {
  // expected-error @+1 {{'flexattn.tile_step' op v element type ('f16') must match q element type ('f32')}}
  flexattn.tile_step ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf16>)
      state(%acc, %m, %l : memref<64x64xf32>, memref<64xf32>, memref<64xf32>) at(%i, %i, %i, %i, %i)
      attributes {scale = 1.0 : f32, tile_size = array<i64: 64, 64>}
  return
}

// -----

func.func @acc_must_have_dv_64_columns_2(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                         %v: memref<2x2x128x64xf32>, %acc: memref<64x128xf32>,
                                         %m: memref<64xf32>, %l: memref<64xf32>, %i: index) {
  // expected-error @+1 {{'flexattn.tile_step' op acc must have Dv = 64 columns, got 128}}
  flexattn.tile_step ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>)
      state(%acc, %m, %l : memref<64x128xf32>, memref<64xf32>, memref<64xf32>) at(%i, %i, %i, %i, %i)
      attributes {scale = 1.0 : f32, tile_size = array<i64: 64, 64>}
  return
}

// -----

//===----------------------------------------------------------------------===//
// The region checks on kv_loop and tile_step
//===----------------------------------------------------------------------===//

func.func @score_mod_must_take_6_arguments_2(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                             %v: memref<2x2x128x64xf32>, %acc: memref<64x64xf32>,
                                             %m: memref<64xf32>, %l: memref<64xf32>, %i: index,
                                             %c0: memref<4xf32>) {
  // expected-error @+1 {{'flexattn.kv_loop' op score_mod must take 6 arguments (score, b, h, q_idx, kv_idx, then one per captured buffer (1)), got 5}}
  flexattn.kv_loop ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>)
      state(%acc, %m, %l : memref<64x64xf32>, memref<64xf32>, memref<64xf32>) at(%i, %i, %i, %i)
      captures(%c0 : memref<4xf32>)
      attributes {scale = 1.0 : f32, tile_size = array<i64: 64, 64>}
    score_mod {
    ^bb0(%s: f32, %b: i32, %h: i32, %qi: i32, %ki: i32):
      flexattn.yield %s : f32
    }
  return
}

// -----

func.func @mask_mod_must_yield_one_i1_3(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                        %v: memref<2x2x128x64xf32>, %acc: memref<64x64xf32>,
                                        %m: memref<64xf32>, %l: memref<64xf32>, %i: index) {
  // expected-error @+1 {{'flexattn.tile_step' op mask_mod must yield one i1 value, got 1 value(s) of type(s) 'f32'}}
  flexattn.tile_step ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>)
      state(%acc, %m, %l : memref<64x64xf32>, memref<64xf32>, memref<64xf32>) at(%i, %i, %i, %i, %i)
      attributes {masked, scale = 1.0 : f32, tile_size = array<i64: 64, 64>}
    mask_mod {
    ^bb0(%b: index, %h: index, %qi: index, %ki: index):
      %f = arith.constant 0.0 : f32
      flexattn.yield %f : f32
    }
  return
}

// -----

//===----------------------------------------------------------------------===//
// flexattn.finalize
//===----------------------------------------------------------------------===//

func.func @out_must_be_a_4_d_2(%acc: memref<64x32xf32>, %m: memref<64xf32>, %l: memref<64xf32>,
                               %o: memref<4x200x32xbf16>, %i: index) {
  // expected-error @+1 {{'flexattn.finalize' op out must be a 4-D memref [B, Hq, M, Dv], got rank 3}}
  flexattn.finalize state(%acc, %m, %l : memref<64x32xf32>, memref<64xf32>, memref<64xf32>)
      outs(%o : memref<4x200x32xbf16>) at(%i, %i, %i)
  return
}

// -----

func.func @acc_must_have_dv_16_columns(%acc: memref<64x32xf32>, %m: memref<64xf32>,
                                       %l: memref<64xf32>, %o: memref<1x4x200x16xbf16>, %i: index) {
  // expected-error @+1 {{'flexattn.finalize' op acc must have Dv = 16 columns, got 32}}
  flexattn.finalize state(%acc, %m, %l : memref<64x32xf32>, memref<64xf32>, memref<64xf32>)
      outs(%o : memref<1x4x200x16xbf16>) at(%i, %i, %i)
  return
}

// -----

func.func @max_must_be_a_1_d_2(%acc: memref<64x32xf32>, %m: memref<1x64xf32>, %l: memref<64xf32>,
                               %o: memref<1x4x200x32xbf16>, %i: index) {
  // expected-error @+1 {{'flexattn.finalize' op max must be a 1-D memref [BM], got rank 2}}
  flexattn.finalize state(%acc, %m, %l : memref<64x32xf32>, memref<1x64xf32>, memref<64xf32>)
      outs(%o : memref<1x4x200x32xbf16>) at(%i, %i, %i)
  return
}

// -----

func.func @acc_element_type_must_be_f32_2(%acc: memref<64x32xbf16>, %m: memref<64xf32>,
                                          %l: memref<64xf32>, %o: memref<1x4x200x32xbf16>, %i: index) {
  // expected-error @+1 {{'flexattn.finalize' op acc element type must be f32, got 'bf16'}}
  flexattn.finalize state(%acc, %m, %l : memref<64x32xbf16>, memref<64xf32>, memref<64xf32>)
      outs(%o : memref<1x4x200x32xbf16>) at(%i, %i, %i)
  return
}

// -----

func.func @acc_64_32_max_64_and(%acc: memref<64x32xf32>, %m: memref<64xf32>, %l: memref<32xf32>,
                                %o: memref<1x4x200x32xbf16>, %i: index) {
  // expected-error @+1 {{'flexattn.finalize' op acc [64, 32], max [64] and sum [32] must have the same number of rows}}
  flexattn.finalize state(%acc, %m, %l : memref<64x32xf32>, memref<64xf32>, memref<32xf32>)
      outs(%o : memref<1x4x200x32xbf16>) at(%i, %i, %i)
  return
}

// -----

func.func @lse_must_be_a_3_d_2(%acc: memref<64x32xf32>, %m: memref<64xf32>, %l: memref<64xf32>,
                               %o: memref<1x4x200x32xbf16>, %i: index, %lse: memref<4x200xf32>) {
  // expected-error @+1 {{'flexattn.finalize' op lse must be a 3-D f32 memref [B, Hq, M], got 'memref<4x200xf32>'}}
  flexattn.finalize state(%acc, %m, %l : memref<64x32xf32>, memref<64xf32>, memref<64xf32>)
      outs(%o : memref<1x4x200x32xbf16>) lse(%lse : memref<4x200xf32>) at(%i, %i, %i)
  return
}

// -----

func.func @lse_must_be_a_3_d_3(%acc: memref<64x32xf32>, %m: memref<64xf32>, %l: memref<64xf32>,
                               %o: memref<1x4x200x32xbf16>, %i: index, %lse: memref<1x4x200xf16>) {
  // expected-error @+1 {{'flexattn.finalize' op lse must be a 3-D f32 memref [B, Hq, M], got 'memref<1x4x200xf16>'}}
  flexattn.finalize state(%acc, %m, %l : memref<64x32xf32>, memref<64xf32>, memref<64xf32>)
      outs(%o : memref<1x4x200x32xbf16>) lse(%lse : memref<1x4x200xf16>) at(%i, %i, %i)
  return
}

// -----

//===----------------------------------------------------------------------===//
// flexattn.apply_mods
//===----------------------------------------------------------------------===//

func.func @score_mod_score_argument_must_be_2(%s: f32, %i: index) -> f32 {
  // expected-error @+1 {{'flexattn.apply_mods' op score_mod score argument must be f32, got 'i32'}}
  %r = flexattn.apply_mods %s at(%i, %i, %i, %i)
  score_mod {
  ^bb0(%x: i32, %b: i32, %h: i32, %qi: i32, %ki: i32):
    %e = arith.sitofp %x : i32 to f32
    flexattn.yield %e : f32
  } : f32
  return %r : f32
}

// -----

func.func @mask_mod_argument_4_must_have(%s: f32, %i: index, %c0: memref<8xf32>) -> f32 {
  // expected-error @+1 {{'flexattn.apply_mods' op mask_mod argument #4 must have the type of captured buffer #0 ('memref<8xf32>'), got 'memref<8xf16>'}}
  %r = flexattn.apply_mods %s at(%i, %i, %i, %i) captures(%c0 : memref<8xf32>) attributes {masked}
  mask_mod {
  ^bb0(%b: i32, %h: i32, %qi: i32, %ki: i32, %c: memref<8xf16>):
    %t = arith.constant true
    flexattn.yield %t : i1
  } : f32
  return %r : f32
}

// -----

//===----------------------------------------------------------------------===//
// ODS-generated checks and parser errors
//===----------------------------------------------------------------------===//

func.func @requires_attribute_scale(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                    %v: memref<2x2x128x64xf32>, %o: memref<2x8x128x64xf32>) {
  // expected-error @+1 {{'flexattn.attention' op requires attribute 'scale'}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      attributes {}
  return
}

// -----

func.func @attribute_scale_failed_to_satisfy_constraint(%q: memref<2x8x128x64xf32>,
                                                        %k: memref<2x2x128x64xf32>,
                                                        %v: memref<2x2x128x64xf32>,
                                                        %o: memref<2x8x128x64xf32>) {
  // expected-error @+2 {{custom op 'flexattn.attention' 'flexattn.attention' op attribute 'scale' failed to satisfy constraint: 32-bit float attribute}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      attributes {scale = 1.0 : f64}
  return
}

// -----

func.func @attribute_block_size_failed_to_satisfy(%q: memref<2x8x128x64xf32>,
                                                  %k: memref<2x2x128x64xf32>,
                                                  %v: memref<2x2x128x64xf32>,
                                                  %o: memref<2x8x128x64xf32>, %n: memref<1x1x2xi32>,
                                                  %i: memref<1x1x2x2xi32>) {
  // expected-error @+3 {{custom op 'flexattn.attention' 'flexattn.attention' op attribute 'block_size' failed to satisfy constraint: i64 dense array attribute}}
  flexattn.attention ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      block_mask(%n, %i : memref<1x1x2xi32>, memref<1x1x2x2xi32>)
      attributes {block_size = [64, 64], scale = 1.0 : f32}
  return
}

// -----

func.func @requires_attribute_tile_size(%q: memref<2x8x128x64xf32>, %k: memref<2x2x128x64xf32>,
                                        %v: memref<2x2x128x64xf32>, %acc: memref<64x64xf32>,
                                        %m: memref<64xf32>, %l: memref<64xf32>, %i: index) {
  // expected-error @+1 {{'flexattn.kv_loop' op requires attribute 'tile_size'}}
  flexattn.kv_loop ins(%q, %k, %v : memref<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>)
      state(%acc, %m, %l : memref<64x64xf32>, memref<64xf32>, memref<64xf32>) at(%i, %i, %i, %i)
      attributes {scale = 1.0 : f32}
  return
}

// -----

func.func @invalid_kind_of_type_specified_expected(%q: tensor<2x8x128x64xf32>,
                                                   %k: memref<2x2x128x64xf32>,
                                                   %v: memref<2x2x128x64xf32>,
                                                   %o: memref<2x8x128x64xf32>) {
  // expected-error @+1 {{custom op 'flexattn.attention' invalid kind of type specified: expected builtin.memref, but found 'tensor<2x8x128x64xf32>'}}
  flexattn.attention ins(%q, %k, %v : tensor<2x8x128x64xf32>, memref<2x2x128x64xf32>, memref<2x2x128x64xf32>) outs(%o : memref<2x8x128x64xf32>)
      attributes {scale = 1.0 : f32}
  return
}

// -----

func.func @result_0_must_be_32_bit(%s: f32, %i: index) -> f16 {
  // expected-error @+1 {{'flexattn.apply_mods' op result #0 must be 32-bit float, but got 'f16'}}
  %r = flexattn.apply_mods %s at(%i, %i, %i, %i) : f16
  return %r : f16
}

// -----

func.func @yield_outside(%s: f32) {
  // expected-error @+1 {{'flexattn.yield' op expects parent op to be one of 'flexattn.attention, flexattn.kv_loop, flexattn.tile_step, flexattn.apply_mods, flexattn.mod, flexattn.frag.softmax, flexattn.attention_backward, flexattn.backward_q_loop, flexattn.backward_kv_loop, flexattn.backward_step, flexattn.apply_mods_vjp'}}
  flexattn.yield %s : f32
}

// -----

func.func @yield_in_scf(%s: f32, %n: index) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  scf.for %j = %c0 to %n step %c1 {
    // expected-error @+1 {{'flexattn.yield' op expects parent op to be one of 'flexattn.attention, flexattn.kv_loop, flexattn.tile_step, flexattn.apply_mods, flexattn.mod, flexattn.frag.softmax, flexattn.attention_backward, flexattn.backward_q_loop, flexattn.backward_kv_loop, flexattn.backward_step, flexattn.apply_mods_vjp'}}
    flexattn.yield %s : f32
  }
  return
}

// -----

func.func @two_blocks(%s: f32, %i: index) -> f32 {
  // expected-error @+1 {{'flexattn.apply_mods' op region #0 ('score_mod') failed to verify constraint: region with at most 1 blocks}}
  %r = flexattn.apply_mods %s at(%i, %i, %i, %i) score_mod {
  ^bb0(%x: f32, %b: index, %h: index, %qi: index, %ki: index):
    cf.br ^bb1
  ^bb1:
    flexattn.yield %x : f32
  } : f32
  return %r : f32
}

// -----

// Mod regions hold pure scalar code (they are inlined on every target).
func.func @mod_with_gpu_op(%s: f32, %i: index) -> f32 {
  // expected-error @+1 {{'flexattn.apply_mods' op score_mod may only contain arith, math, scf, memref.load and flexattn.check_index ops (scalar code), found 'gpu.thread_id'}}
  %r = flexattn.apply_mods %s at(%i, %i, %i, %i) score_mod {
  ^bb0(%x: f32, %b: index, %h: index, %qi: index, %ki: index):
    %t = gpu.thread_id x
    flexattn.yield %x : f32
  } : f32
  return %r : f32
}

// -----

func.func @mod_with_store(%s: f32, %i: index, %m: memref<4xf32>) -> f32 {
  // expected-error @+1 {{'flexattn.apply_mods' op mask_mod may only contain arith, math, scf, memref.load and flexattn.check_index ops (scalar code), found 'memref.store'}}
  %r = flexattn.apply_mods %s at(%i, %i, %i, %i) captures(%m : memref<4xf32>) attributes {masked} mask_mod {
  ^bb0(%b: index, %h: index, %qi: index, %ki: index, %c: memref<4xf32>):
    %f = arith.constant 1.0 : f32
    memref.store %f, %c[%b] : memref<4xf32>
    %t = arith.constant true
    flexattn.yield %t : i1
  } : f32
  return %r : f32
}

//===----------------------------------------------------------------------===//
// flexattn.check_index
//===----------------------------------------------------------------------===//

func.func @check_index_size_positive(%x: i64) -> index {
  // expected-error @+1 {{'flexattn.check_index' op size must be positive, got 0}}
  %i = flexattn.check_index %x of size 0 : i64
  return %i : index
}

// -----

func.func @check_index_wide(%x: i128) -> index {
  // expected-error @+1 {{'flexattn.check_index' op index must have at most 64 bits, got 'i128'}}
  %i = flexattn.check_index %x of size 4 : i128
  return %i : index
}

// -----

func.func @check_index_bounds_order(%x: i64) -> index {
  // expected-error @+1 {{'flexattn.check_index' op bounds must be [lo, hi] with lo <= hi, got [3, 1]}}
  %i = flexattn.check_index %x of size 4 {bounds = array<i64: 3, 1>} : i64
  return %i : index
}

// -----

func.func @check_index_bounds_pair(%x: i64) -> index {
  // expected-error @+1 {{'flexattn.check_index' op bounds must be [lo, hi] with lo <= hi, got [0]}}
  %i = flexattn.check_index %x of size 4 {bounds = array<i64: 0>} : i64
  return %i : index
}

// -----

func.func @check_index_dim(%x: i64) -> index {
  // expected-error @+1 {{'flexattn.check_index' op dim must be non-negative, got -1}}
  %i = flexattn.check_index %x of size 4 {dim = -1 : i64} : i64
  return %i : index
}

// -----

func.func @check_index_site_without_report(%x: i64) -> index {
  // expected-error @+1 {{'flexattn.check_index' op site is given without a report buffer}}
  %i = flexattn.check_index %x of size 4 {site = 0 : i64} : i64
  return %i : index
}

// -----

func.func @check_index_report_shape(%x: i64, %r: memref<3xi64>) -> index {
  // expected-error @+1 {{'flexattn.check_index' op report must be a [S, 2] memref of i64, got 'memref<3xi64>'}}
  %i = flexattn.check_index %x of size 4 report(%r : memref<3xi64>) {site = 0 : i64} : i64
  return %i : index
}

// -----

func.func @check_index_report_needs_site(%x: i64, %r: memref<3x2xi64>) -> index {
  // expected-error @+1 {{'flexattn.check_index' op a report buffer requires the site attribute}}
  %i = flexattn.check_index %x of size 4 report(%r : memref<3x2xi64>) : i64
  return %i : index
}

// -----

func.func @check_index_site_in_report(%x: i64, %r: memref<3x2xi64>) -> index {
  // expected-error @+1 {{'flexattn.check_index' op site 3 is outside the report buffer's 3 rows}}
  %i = flexattn.check_index %x of size 4 report(%r : memref<3x2xi64>) {site = 3 : i64} : i64
  return %i : index
}

// -----

func.func @check_index_report_i64(%x: i64, %r: memref<3x2xi32>) -> index {
  // expected-error @+1 {{'flexattn.check_index' op operand #1 must be memref of 64-bit signless integer values, but got 'memref<3x2xi32>'}}
  %i = flexattn.check_index %x of size 4 report(%r : memref<3x2xi32>) {site = 0 : i64} : i64
  return %i : index
}
