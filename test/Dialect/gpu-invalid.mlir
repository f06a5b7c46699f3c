// RUN: flexattn-opt %s -split-input-file -verify-diagnostics

// One case per verifier error of the GPU types and ops (dialect/FlexAttnGpuOps.cpp).

// expected-error @+1 {{shared-memory tiles hold bf16, f16 or f32, got 'f64'}}
func.func @tile_f64(%t: !flexattn.smem_tile<128x64xf64>) { return }

// -----

// expected-error @+1 {{tile rows must be a positive multiple of 8 (the 128-byte swizzle period), got 100}}
func.func @tile_rows(%t: !flexattn.smem_tile<100x64xbf16>) { return }

// -----

// expected-error @+1 {{tile columns must be a positive multiple of 64 (128-byte panels), got 96}}
func.func @tile_cols(%t: !flexattn.smem_tile<128x96xbf16>) { return }

// -----

// expected-error @+1 {{expected a 2-D tile shape rows x cols, got 3 dimensions}}
func.func @tile_rank(%t: !flexattn.smem_tile<2x128x64xbf16>) { return }

// -----

// expected-error @+1 {{a ring needs at least one stage, got 0}}
func.func @ring_stages(%r: !flexattn.ring<0 x 128x64xbf16>) { return }

// -----

func.func @ring_consumers() {
  // expected-error @+1 {{consumers must be positive, got 0}}
  %r = flexattn.ring.alloc consumers(0) : !flexattn.ring<2 x 128x64xbf16>
  return
}

// -----

func.func @roles_not_warpgroups() {
  // expected-error @+1 {{roles are whole warpgroups: producer_threads and consumer_threads must be multiples of 128, got 96 and 128}}
  flexattn.warp_specialize producer(threads = 96, registers = 40) {
  ^bb0(%t: index):
  } consumers(groups = 2, threads = 128, registers = 232) {
  ^bb0(%g: index, %t: index):
  }
  return
}

// -----

func.func @roles_no_groups() {
  // expected-error @+1 {{consumer_groups must be positive, got 0}}
  flexattn.warp_specialize producer(threads = 128, registers = 40) {
  ^bb0(%t: index):
  } consumers(groups = 0, threads = 128, registers = 232) {
  ^bb0(%g: index, %t: index):
  }
  return
}

// -----

func.func @roles_arguments() {
  // expected-error @+1 {{the consumers region takes 2 index argument(s) (group, thread), got 'index'}}
  flexattn.warp_specialize producer(threads = 128, registers = 40) {
  ^bb0(%t: index):
  } consumers(groups = 2, threads = 128, registers = 232) {
  ^bb0(%t: index):
  }
  return
}

// -----

func.func @roles_block_size() {
  %c1 = arith.constant 1 : index
  %c256 = arith.constant 256 : index
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c256, %sy = %c1, %sz = %c1) {
    // expected-error @+1 {{the roles take 384 threads, but the enclosing gpu.launch has 256 x 1 x 1}}
    flexattn.warp_specialize producer(threads = 128, registers = 40) {
    ^bb0(%t: index):
    } consumers(groups = 2, threads = 128, registers = 232) {
    ^bb0(%g: index, %t: index):
    }
    gpu.terminator
  }
  return
}

// -----

func.func @reinterpret_larger(%t: !flexattn.smem_tile<64x128xbf16>) {
  // expected-error @+1 {{the result (32768 bytes) may not be larger than the source (16384 bytes)}}
  %r = flexattn.smem_tile.reinterpret %t : !flexattn.smem_tile<64x128xbf16> to !flexattn.smem_tile<128x128xbf16>
  return
}

// -----

func.func @reinterpret_type(%t: !flexattn.smem_tile<128x128xbf16>) {
  // expected-error @+1 {{element types must match, got 'bf16' and 'f16'}}
  %r = flexattn.smem_tile.reinterpret %t : !flexattn.smem_tile<128x128xbf16> to !flexattn.smem_tile<64x128xf16>
  return
}

// -----

func.func @mma_no_row(%q: !flexattn.smem_tile<128x128xbf16>, %k: !flexattn.smem_tile<128x128xbf16>) {
  // expected-error @+1 {{a shared-memory A needs the row of its 64-row band: a[%row]}}
  %s = flexattn.mma %q, %k {transpose_b} : !flexattn.smem_tile<128x128xbf16>, !flexattn.smem_tile<128x128xbf16> -> vector<64xf32>
  return
}

// -----

func.func @mma_types(%q: !flexattn.smem_tile<128x128xf16>, %k: !flexattn.smem_tile<128x128xbf16>, %r: index) {
  // expected-error @+1 {{A and B element types must match, got 'f16' and 'bf16'}}
  %s = flexattn.mma %q[%r], %k {transpose_b} : !flexattn.smem_tile<128x128xf16>, !flexattn.smem_tile<128x128xbf16> -> vector<64xf32>
  return
}

// -----

func.func @mma_k(%q: !flexattn.smem_tile<128x64xbf16>, %k: !flexattn.smem_tile<128x128xbf16>, %r: index) {
  // expected-error @+1 {{A has 64 columns but the contraction has K = 128}}
  %s = flexattn.mma %q[%r], %k {transpose_b} : !flexattn.smem_tile<128x64xbf16>, !flexattn.smem_tile<128x128xbf16> -> vector<64xf32>
  return
}

// -----

func.func @mma_register_row(%p: vector<64xbf16>, %v: !flexattn.smem_tile<128x128xbf16>, %r: index) {
  // expected-error @+1 {{a register A (a fragment) takes no row}}
  %o = flexattn.mma %p[%r], %v : vector<64xbf16>, !flexattn.smem_tile<128x128xbf16> -> vector<64xf32>
  return
}

// -----

func.func @mma_register_type(%p: vector<64xf16>, %v: !flexattn.smem_tile<128x128xbf16>) {
  // expected-error @+1 {{A and B element types must match, got 'f16' and 'bf16'}}
  %o = flexattn.mma %p, %v : vector<64xf16>, !flexattn.smem_tile<128x128xbf16> -> vector<64xf32>
  return
}

// -----

func.func @mma_register_k(%p: vector<32xbf16>, %v: !flexattn.smem_tile<128x128xbf16>) {
  // expected-error @+1 {{a register A of K = 128 columns and 16 rows per warp is 64 elements per thread, got 32}}
  %o = flexattn.mma %p, %v : vector<32xbf16>, !flexattn.smem_tile<128x128xbf16> -> vector<64xf32>
  return
}

// -----

func.func @mma_result(%p: vector<64xbf16>, %v: !flexattn.smem_tile<128x64xbf16>) {
  // expected-error @+1 {{the result fragment of N = 64 columns is 32 or 64 f32 per thread (16 or 32 rows per warp), got 'vector<48xf32>'}}
  %o = flexattn.mma %p, %v : vector<64xbf16>, !flexattn.smem_tile<128x64xbf16> -> vector<48xf32>
  return
}

// -----

func.func @mma_acc(%p: vector<64xbf16>, %v: !flexattn.smem_tile<128x64xbf16>, %acc: vector<16xf32>) {
  // expected-error @+1 {{acc type 'vector<16xf32>' must match the result type 'vector<32xf32>'}}
  %o = flexattn.mma %p, %v, %acc : vector<64xbf16>, !flexattn.smem_tile<128x64xbf16>, vector<16xf32> -> vector<32xf32>
  return
}

// -----

func.func @softmax_fragment(%s: vector<62xf32>, %m: vector<2xf32>, %i: index) {
  // expected-error @+1 {{a score fragment of 16 rows per warp ('vector<2xf32>' row values) holds 4 elements per 8 columns, got 62}}
  %p, %m1, %l1, %a = flexattn.frag.softmax %s state(%m, %m) at(%i, %i, %i, %i) attributes {scale = 1.0 : f32, seq_lens = array<i64: 8, 8>, tile_size = array<i64: 128, 128>} : vector<62xf32>, vector<2xf32> -> vector<62xbf16>
  return
}

// -----

func.func @softmax_probs(%s: vector<64xf32>, %m: vector<2xf32>, %i: index) {
  // expected-error @+1 {{probs must have the scores' 64 elements, got 'vector<32xbf16>'}}
  %p, %m1, %l1, %a = flexattn.frag.softmax %s state(%m, %m) at(%i, %i, %i, %i) attributes {scale = 1.0 : f32, seq_lens = array<i64: 8, 8>, tile_size = array<i64: 128, 128>} : vector<64xf32>, vector<2xf32> -> vector<32xbf16>
  return
}

// -----

func.func @softmax_lens(%s: vector<64xf32>, %m: vector<2xf32>, %i: index) {
  // expected-error @+1 {{seq_lens must be two positive lengths [M, N], got 1 value(s)}}
  %p, %m1, %l1, %a = flexattn.frag.softmax %s state(%m, %m) at(%i, %i, %i, %i) attributes {scale = 1.0 : f32, seq_lens = array<i64: 8>, tile_size = array<i64: 128, 128>} : vector<64xf32>, vector<2xf32> -> vector<64xbf16>
  return
}

// -----

func.func @softmax_mods(%s: vector<64xf32>, %m: vector<2xf32>, %i: index) {
  // expected-error @+1 {{mask_mod must yield one i1 value}}
  %p, %m1, %l1, %a = flexattn.frag.softmax %s state(%m, %m) at(%i, %i, %i, %i) attributes {scale = 1.0 : f32, seq_lens = array<i64: 8, 8>, tile_size = array<i64: 128, 128>} mask_mod {
  ^bb0(%b: i32, %h: i32, %q: i32, %k: i32):
    %c = arith.constant 1.0 : f32
    flexattn.yield %c : f32
  } : vector<64xf32>, vector<2xf32> -> vector<64xbf16>
  return
}

// -----

func.func @finalize_out(%acc: vector<64xf32>, %m: vector<2xf32>, %out: memref<?x?x?x128xbf16>, %i: index) {
  // expected-error @+1 {{out must be a 4-D memref [B, Hq, M, Dv] with static Hq and Dv, got 'memref<?x?x?x128xbf16>'}}
  flexattn.frag.finalize %acc state(%m, %m) outs(%out : memref<?x?x?x128xbf16>) at(%i, %i, %i, %i) : vector<64xf32>, vector<2xf32>
  return
}

// -----

func.func @finalize_acc(%acc: vector<32xf32>, %m: vector<2xf32>, %out: memref<1x2x8x128xbf16>, %i: index) {
  // expected-error @+1 {{an accumulator fragment of Dv = 128 columns and 16 rows per warp is 64 f32 per thread (or 64, padded to 128 columns), got 'vector<32xf32>'}}
  flexattn.frag.finalize %acc state(%m, %m) outs(%out : memref<1x2x8x128xbf16>) at(%i, %i, %i, %i) : vector<32xf32>, vector<2xf32>
  return
}

// -----

func.func @finalize_lse(%acc: vector<64xf32>, %m: vector<2xf32>, %out: memref<1x2x8x128xbf16>, %lse: memref<1x2x8xbf16>, %i: index) {
  // expected-error @+1 {{lse must be a 3-D f32 memref [B, Hq, M], got 'memref<1x2x8xbf16>'}}
  flexattn.frag.finalize %acc state(%m, %m) outs(%out : memref<1x2x8x128xbf16>) lse(%lse : memref<1x2x8xbf16>) at(%i, %i, %i, %i) : vector<64xf32>, vector<2xf32>
  return
}

// -----

func.func @softmax_tile(%s: vector<64xf32>, %m: vector<2xf32>, %i: index) {
  // expected-error @+1 {{tile_size must be [BM, BN] with BN = 128 (the fragment's columns)}}
  %p, %m1, %l1, %a = flexattn.frag.softmax %s state(%m, %m) at(%i, %i, %i, %i) attributes {scale = 1.0 : f32, seq_lens = array<i64: 8, 8>, tile_size = array<i64: 128, 64>} : vector<64xf32>, vector<2xf32> -> vector<64xbf16>
  return
}

// -----

func.func @softmax_lens_both(%s: vector<64xf32>, %m: vector<2xf32>, %i: index) {
  // expected-error @+1 {{needs either seq_lens (static lengths) or lens(%M, %N) (run-time lengths), not both}}
  %p, %m1, %l1, %a = flexattn.frag.softmax %s state(%m, %m) at(%i, %i, %i, %i) lens(%i, %i) attributes {scale = 1.0 : f32, seq_lens = array<i64: 8, 8>, tile_size = array<i64: 128, 128>} : vector<64xf32>, vector<2xf32> -> vector<64xbf16>
  return
}

// -----

func.func @softmax_lens_neither(%s: vector<64xf32>, %m: vector<2xf32>, %i: index) {
  // expected-error @+1 {{needs either seq_lens (static lengths) or lens(%M, %N) (run-time lengths), not neither}}
  %p, %m1, %l1, %a = flexattn.frag.softmax %s state(%m, %m) at(%i, %i, %i, %i) attributes {scale = 1.0 : f32, tile_size = array<i64: 128, 128>} : vector<64xf32>, vector<2xf32> -> vector<64xbf16>
  return
}

// -----

func.func @softmax_lens_count(%s: vector<64xf32>, %m: vector<2xf32>, %i: index) {
  // expected-error @+1 {{lens must be two run-time lengths (M, N), got 1 value(s)}}
  %p, %m1, %l1, %a = flexattn.frag.softmax %s state(%m, %m) at(%i, %i, %i, %i) lens(%i) attributes {scale = 1.0 : f32, tile_size = array<i64: 128, 128>} : vector<64xf32>, vector<2xf32> -> vector<64xbf16>
  return
}

// -----

func.func @copy_dynamic_heads(%k: memref<?x?x?x64xbf16>, %i: index, %p: i32) {
  %kv = flexattn.ring.alloc consumers(256) : !flexattn.ring<2 x 128x64xbf16>
  // expected-error @+1 {{the source must be a 4-D memref [B, H, N, C] with static H and C and the identity layout, got 'memref<?x?x?x64xbf16>'}}
  flexattn.ring.copy %k[%i, %i, %i] into %kv[%p] : memref<?x?x?x64xbf16>, !flexattn.ring<2 x 128x64xbf16>
  return
}

// -----

func.func @copy_rank(%k: memref<2x300x64xbf16>, %i: index, %p: i32) {
  %kv = flexattn.ring.alloc consumers(256) : !flexattn.ring<2 x 128x64xbf16>
  // expected-error @+1 {{the source must be a 4-D memref [B, H, N, C] with static H and C and the identity layout, got 'memref<2x300x64xbf16>'}}
  flexattn.ring.copy %k[%i, %i, %i] into %kv[%p] : memref<2x300x64xbf16>, !flexattn.ring<2 x 128x64xbf16>
  return
}

// -----

func.func @copy_dtype(%k: memref<1x2x300x64xf16>, %i: index, %p: i32) {
  %kv = flexattn.ring.alloc consumers(256) : !flexattn.ring<2 x 128x64xbf16>
  // expected-error @+1 {{the source holds 'f16' but the ring 'bf16'}}
  flexattn.ring.copy %k[%i, %i, %i] into %kv[%p] : memref<1x2x300x64xf16>, !flexattn.ring<2 x 128x64xbf16>
  return
}

// -----

func.func @copy_cols_not_multiple_of_8(%k: memref<1x2x300x20xbf16>, %i: index, %p: i32) {
  %kv = flexattn.ring.alloc consumers(256) : !flexattn.ring<2 x 128x64xbf16>
  // expected-error @+1 {{the source rows have 20 columns: a multiple of 8 that the ring's tiles of 64 columns hold, padded by less than a 64-column panel}}
  flexattn.ring.copy %k[%i, %i, %i] into %kv[%p] : memref<1x2x300x20xbf16>, !flexattn.ring<2 x 128x64xbf16>
  return
}

// -----

func.func @copy_cols(%k: memref<1x2x300x128xbf16>, %i: index, %p: i32) {
  %kv = flexattn.ring.alloc consumers(256) : !flexattn.ring<2 x 128x64xbf16>
  // expected-error @+1 {{the source rows have 128 columns: a multiple of 8 that the ring's tiles of 64 columns hold, padded by less than a 64-column panel}}
  flexattn.ring.copy %k[%i, %i, %i] into %kv[%p] : memref<1x2x300x128xbf16>, !flexattn.ring<2 x 128x64xbf16>
  return
}

// -----

func.func @wait_in_flight(%p: i32) {
  %kv = flexattn.ring.alloc consumers(256) : !flexattn.ring<2 x 128x64xbf16>
  // expected-error @+1 {{in_flight must be >= 0, got -1}}
  flexattn.ring.wait %kv[%p] in_flight(-1) : !flexattn.ring<2 x 128x64xbf16>
  return
}

// -----

func.func @frag_load_dtype(%t: !flexattn.smem_tile<128x64xbf16>, %i: index) {
  // expected-error @+1 {{the fragment holds 'f16' but the tile 'bf16'}}
  %f = flexattn.frag.load %t[%i] : !flexattn.smem_tile<128x64xbf16> -> vector<32xf16>
  return
}

// -----

func.func @frag_load_size(%t: !flexattn.smem_tile<128x64xbf16>, %i: index) {
  // expected-error @+1 {{a band of 64 columns is 32 (16 rows per warp) or 64 (32 rows) elements per thread, got 'vector<48xbf16>'}}
  %f = flexattn.frag.load %t[%i] : !flexattn.smem_tile<128x64xbf16> -> vector<48xbf16>
  return
}

// -----

func.func @frag_load_rows(%t: !flexattn.smem_tile<32x64xbf16>, %i: index) {
  // expected-error @+1 {{the tile has 32 rows, fewer than a 64-row band}}
  %f = flexattn.frag.load %t[%i] : !flexattn.smem_tile<32x64xbf16> -> vector<32xbf16>
  return
}

// -----

func.func @frag_load_rows_two_tiles(%t: !flexattn.smem_tile<64x64xbf16>, %i: index) {
  // expected-error @+1 {{the tile has 64 rows, fewer than a 128-row band}}
  %f = flexattn.frag.load %t[%i] : !flexattn.smem_tile<64x64xbf16> -> vector<64xbf16>
  return
}

// -----

func.func @mma_a_two_tiles(%p: vector<64xbf16>, %v: !flexattn.smem_tile<128x64xbf16>) {
  // expected-error @+1 {{a register A of K = 128 columns and 32 rows per warp is 128 elements per thread, got 64}}
  %o = flexattn.mma %p, %v : vector<64xbf16>, !flexattn.smem_tile<128x64xbf16> -> vector<64xf32>
  return
}

// -----

func.func @rescale_rows(%acc: vector<36xf32>, %alpha: vector<4xf32>) {
  // expected-error @+1 {{a rescaled fragment of 32 rows per warp ('vector<4xf32>' row values) holds 8 elements per 8 columns, got 36}}
  %r = flexattn.frag.rescale %acc, %alpha : vector<36xf32>, vector<4xf32>
  return
}

// -----

func.func @softmax_tile_two_tiles(%s: vector<64xf32>, %m: vector<4xf32>, %i: index) {
  // expected-error @+1 {{tile_size must be [BM, BN] with BN = 64 (the fragment's columns)}}
  %p, %m1, %l1, %a = flexattn.frag.softmax %s state(%m, %m) at(%i, %i, %i, %i) attributes {scale = 1.0 : f32, seq_lens = array<i64: 8, 8>, tile_size = array<i64: 128, 128>} : vector<64xf32>, vector<4xf32> -> vector<64xbf16>
  return
}

// -----

func.func @finalize_two_tiles(%acc: vector<64xf32>, %m: vector<4xf32>, %out: memref<1x2x8x128xbf16>, %i: index) {
  // expected-error @+1 {{an accumulator fragment of Dv = 128 columns and 32 rows per warp is 128 f32 per thread (or 128, padded to 128 columns), got 'vector<64xf32>'}}
  flexattn.frag.finalize %acc state(%m, %m) outs(%out : memref<1x2x8x128xbf16>) at(%i, %i, %i, %i) : vector<64xf32>, vector<4xf32>
  return
}

// -----

func.func @panel_columns(%t: !flexattn.smem_tile<128x128xbf16>, %i: index) {
  // expected-error @+1 {{the result is one 128-byte panel (64 columns) of a source of whole panels, got 128 to 128 columns}}
  %p = flexattn.smem_tile.panel %t[%i, %i] : !flexattn.smem_tile<128x128xbf16> to !flexattn.smem_tile<64x128xbf16>
  return
}

// -----

func.func @panel_rows(%t: !flexattn.smem_tile<128x128xbf16>, %i: index) {
  // expected-error @+1 {{the result's rows (136) must be a multiple of 8 and at most the source's (128)}}
  %p = flexattn.smem_tile.panel %t[%i, %i] : !flexattn.smem_tile<128x128xbf16> to !flexattn.smem_tile<136x64xbf16>
  return
}

// -----

func.func @frag_store_shape(%f: vector<32xbf16>, %t: !flexattn.smem_tile<64x128xbf16>) {
  // expected-error @+1 {{a 64-row band of 64 columns is 32 elements per thread and a tile of 64 columns, got 'vector<32xbf16>' and '!flexattn.smem_tile<64x128xbf16>'}}
  flexattn.frag.store %f, %t {transpose} : vector<32xbf16>, !flexattn.smem_tile<64x128xbf16>
  return
}

// -----

func.func @frag_store_type(%f: vector<32xf16>, %t: !flexattn.smem_tile<64x64xbf16>) {
  // expected-error @+1 {{a 16-bit fragment into a tile of its type, got 'vector<32xf16>' and '!flexattn.smem_tile<64x64xbf16>'}}
  flexattn.frag.store %f, %t : vector<32xf16>, !flexattn.smem_tile<64x64xbf16>
  return
}

// -----

func.func @bulk_reduce_columns(%t: !flexattn.smem_tile<64x128xf32>, %d: memref<1x2x64x64xf32>, %i: index, %n: i32) {
  // expected-error @+1 {{adds an f32 tile into a [B, H, rows, cols] f32 memref (identity layout, static H) of the tile's columns, got '!flexattn.smem_tile<64x128xf32>' and 'memref<1x2x64x64xf32>'}}
  flexattn.bulk.reduce_add %t, %d[%i, %i, %i] rows(%n) : !flexattn.smem_tile<64x128xf32>, memref<1x2x64x64xf32>
  return
}

// -----

func.func @frag_stage_type(%f: vector<32xf32>, %t: !flexattn.smem_tile<64x64xbf16>, %i: index) {
  // expected-error @+1 {{an f32 fragment of a 64-row band (N / 2 per thread) into a 64-row f32 tile of at least N columns, got 'vector<32xf32>' and '!flexattn.smem_tile<64x64xbf16>'}}
  flexattn.frag.stage %f, %t[%i] : vector<32xf32>, !flexattn.smem_tile<64x64xbf16>
  return
}

// -----

func.func @mma_b_row_shared_a(%k: !flexattn.smem_tile<64x64xbf16>, %q: !flexattn.smem_tile<64x64xbf16>, %r: index) {
  // expected-error @+1 {{b_row takes a register A and a row-major B (no transpose_b)}}
  %s = flexattn.mma %k[%r], %q[%r] {transpose_b} : !flexattn.smem_tile<64x64xbf16>, !flexattn.smem_tile<64x64xbf16> -> vector<32xf32>
  return
}

// -----

func.func @mma_b_row_past_b(%p: vector<16xbf16>, %v: !flexattn.smem_tile<64x64xbf16>, %acc: vector<32xf32>) {
  %c48 = arith.constant 48 : index
  // expected-error @+1 {{b_row reads B's rows [b_row, b_row + K) with K from A (32), a multiple of 16 inside B's 64 rows}}
  %o = flexattn.mma %p, %v[%c48], %acc : vector<16xbf16>, !flexattn.smem_tile<64x64xbf16>, vector<32xf32> -> vector<32xf32>
  return
}

// -----

func.func @wait_after_not_f32(%o: vector<64xf32>, %m: vector<2xi32>) -> vector<64xf32> {
  // expected-error @below {{operand #1 must be variadic of vector of 32-bit float values}}
  %r = flexattn.mma.wait pending(0) %o after(%m : vector<2xi32>) : vector<64xf32>
  return %r : vector<64xf32>
}

