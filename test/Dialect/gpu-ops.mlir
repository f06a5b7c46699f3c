// RUN: flexattn-opt %s | flexattn-opt | FileCheck %s
// RUN: flexattn-opt %s -mlir-print-op-generic | flexattn-opt | FileCheck %s

// Round trip of the GPU kernel's mid-level ops and types: roles, rings,
// shared-memory tiles and register fragments.

// CHECK-LABEL: func.func @roles_and_rings(
// CHECK-SAME:    %[[MAP:[^:]+]]: !llvm.ptr, %[[B:[^:]+]]: index, %[[H:[^:]+]]: index, %[[ROW:[^:]+]]: index, %[[I:[^:]+]]: i32)
// CHECK:         %[[KV:.*]] = flexattn.ring.alloc consumers(256) : !flexattn.ring<2 x 128x64xf16>
// CHECK:         flexattn.warp_specialize producer(threads = 128, registers = 40) {
// CHECK:         ^bb0(%{{.*}}: index):
// CHECK:           flexattn.ring.acquire %[[KV]][%[[I]]] : !flexattn.ring<2 x 128x64xf16>
// CHECK:           flexattn.ring.load %[[MAP]][%[[B]], %[[H]], %[[ROW]]] into %[[KV]][%[[I]]] : !llvm.ptr, !flexattn.ring<2 x 128x64xf16>
// CHECK:         } consumers(groups = 2, threads = 128, registers = 232) {
// CHECK:         ^bb0(%{{.*}}: index, %{{.*}}: index):
// CHECK:           flexattn.ring.wait %[[KV]][%[[I]]] : !flexattn.ring<2 x 128x64xf16>
// CHECK:           %[[T:.*]] = flexattn.ring.slot %[[KV]][%[[I]]] : !flexattn.ring<2 x 128x64xf16>
// CHECK:           flexattn.smem_tile.reinterpret %[[T]] : !flexattn.smem_tile<128x64xf16> to !flexattn.smem_tile<64x64xf16>
// CHECK:           flexattn.ring.release %[[KV]][%[[I]]] : !flexattn.ring<2 x 128x64xf16>
func.func @roles_and_rings(%map: !llvm.ptr, %b: index, %h: index, %row: index, %i: i32) {
  %kv = flexattn.ring.alloc consumers(256) : !flexattn.ring<2 x 128x64xf16>
  flexattn.warp_specialize producer(threads = 128, registers = 40) {
  ^bb0(%t: index):
    flexattn.ring.acquire %kv[%i] : !flexattn.ring<2 x 128x64xf16>
    flexattn.ring.load %map[%b, %h, %row] into %kv[%i] : !llvm.ptr, !flexattn.ring<2 x 128x64xf16>
  } consumers(groups = 2, threads = 128, registers = 232) {
  ^bb0(%g: index, %t: index):
    flexattn.ring.wait %kv[%i] : !flexattn.ring<2 x 128x64xf16>
    %tile = flexattn.ring.slot %kv[%i] : !flexattn.ring<2 x 128x64xf16>
    %half = flexattn.smem_tile.reinterpret %tile : !flexattn.smem_tile<128x64xf16> to !flexattn.smem_tile<64x64xf16>
    flexattn.ring.release %kv[%i] : !flexattn.ring<2 x 128x64xf16>
  }
  return
}

// CHECK-LABEL: func.func @fragments(
// CHECK:         %[[S0:.*]] = flexattn.mma %{{.*}}[%{{.*}}], %{{.*}} {transpose_b} : !flexattn.smem_tile<128x128xbf16>, !flexattn.smem_tile<128x128xbf16> -> vector<64xf32>
// CHECK:         %[[S:.*]] = flexattn.mma.wait pending(1) %[[S0]] : vector<64xf32>
// CHECK:         %[[P:.*]], %[[M:.*]], %[[L:.*]], %[[ALPHA:.*]] = flexattn.frag.softmax %[[S]] state(%{{.*}}, %{{.*}}) at(%{{.*}}) captures(%{{.*}} : memref<2xf32>) attributes {masked, scale = 1.250000e-01 : f32, seq_lens = array<i64: 300, 300>, tile_size = array<i64: 128, 128>} score_mod {
// CHECK:         } mask_mod {
// CHECK:         } : vector<64xf32>, vector<2xf32> -> vector<64xbf16>
// CHECK:         %[[ACC:.*]] = flexattn.frag.rescale %{{.*}}, %[[ALPHA]] : vector<64xf32>, vector<2xf32>
// CHECK:         %[[O0:.*]] = flexattn.mma %[[P]], %{{.*}}, %[[ACC]] : vector<64xbf16>, !flexattn.smem_tile<128x128xbf16>, vector<64xf32> -> vector<64xf32>
// CHECK:         %[[O:.*]]:2 = flexattn.mma.wait pending(0) %[[O0]], %[[P]] after(%[[ALPHA]] : vector<2xf32>) : vector<64xf32>, vector<64xbf16>
// CHECK:         flexattn.frag.finalize %[[O]]#0 state(%[[M]], %[[L]]) outs(%{{.*}} : memref<1x2x300x128xbf16>) lse(%{{.*}} : memref<1x2x300xf32>) at(%{{.*}}) : vector<64xf32>, vector<2xf32>
func.func @fragments(%q: !flexattn.smem_tile<128x128xbf16>, %k: !flexattn.smem_tile<128x128xbf16>,
                     %acc0: vector<64xf32>, %m: vector<2xf32>, %l: vector<2xf32>, %slopes: memref<2xf32>,
                     %out: memref<1x2x300x128xbf16>, %lse: memref<1x2x300xf32>,
                     %b: index, %h: index, %row: index, %col: index) {
  %s0 = flexattn.mma %q[%row], %k {transpose_b} : !flexattn.smem_tile<128x128xbf16>, !flexattn.smem_tile<128x128xbf16> -> vector<64xf32>
  %s = flexattn.mma.wait pending(1) %s0 : vector<64xf32>
  %p, %m1, %l1, %alpha = flexattn.frag.softmax %s state(%m, %l) at(%b, %h, %row, %col)
      captures(%slopes : memref<2xf32>) attributes {masked, scale = 0.125 : f32, seq_lens = array<i64: 300, 300>, tile_size = array<i64: 128, 128>}
    score_mod {
    ^bb0(%sc: f32, %bb: i32, %hh: i32, %qi: i32, %kj: i32, %sl: memref<2xf32>):
      %hi = arith.index_cast %hh : i32 to index
      %slope = memref.load %sl[%hi] : memref<2xf32>
      %r = arith.addf %sc, %slope : f32
      flexattn.yield %r : f32
    } mask_mod {
    ^bb0(%bb: i32, %hh: i32, %qi: i32, %kj: i32, %sl: memref<2xf32>):
      %keep = arith.cmpi sge, %qi, %kj : i32
      flexattn.yield %keep : i1
    } : vector<64xf32>, vector<2xf32> -> vector<64xbf16>
  %acc = flexattn.frag.rescale %acc0, %alpha : vector<64xf32>, vector<2xf32>
  %o0 = flexattn.mma %p, %k, %acc : vector<64xbf16>, !flexattn.smem_tile<128x128xbf16>, vector<64xf32> -> vector<64xf32>
  %o, %p1 = flexattn.mma.wait pending(0) %o0, %p after(%alpha : vector<2xf32>) : vector<64xf32>, vector<64xbf16>
  flexattn.frag.finalize %o state(%m1, %l1) outs(%out : memref<1x2x300x128xbf16>) lse(%lse : memref<1x2x300xf32>) at(%b, %h, %row, %col) : vector<64xf32>, vector<2xf32>
  return
}

// The cooperative ring ops of sm_80 kernels (flexattn-multistage): every
// thread copies its share of a tile, waits with a count of later copies,
// and reads a band of a tile into a 16-bit fragment.
// CHECK-LABEL: func.func @cooperative_rings(
// CHECK:         flexattn.ring.copy %{{.*}}[%{{.*}}, %{{.*}}, %{{.*}}] into %{{.*}}[%{{.*}}] : memref<1x2x300x64xbf16>, !flexattn.ring<2 x 128x64xbf16>
// CHECK:         flexattn.ring.copy %{{.*}}[%{{.*}}, %{{.*}}, %{{.*}}] into %{{.*}}[%{{.*}}] if %{{.*}} : memref<1x2x300x64xbf16>, !flexattn.ring<2 x 128x64xbf16>
// CHECK:         flexattn.ring.copy %{{.*}}[%{{.*}}, %{{.*}}, %{{.*}}] into %{{.*}}[%{{.*}}] : memref<1x2x300x24xbf16>, !flexattn.ring<2 x 128x64xbf16>
// CHECK:         flexattn.ring.wait %{{.*}}[%{{.*}}] in_flight(1) : !flexattn.ring<2 x 128x64xbf16>
// CHECK:         flexattn.frag.load %{{.*}}[%{{.*}}] : !flexattn.smem_tile<128x64xbf16> -> vector<32xbf16>
func.func @cooperative_rings(%k: memref<1x2x300x64xbf16>, %b: index, %h: index, %row: index,
                             %i: i32, %more: i1, %k24: memref<1x2x300x24xbf16>) -> vector<32xbf16> {
  %kv = flexattn.ring.alloc consumers(256) : !flexattn.ring<2 x 128x64xbf16>
  flexattn.ring.copy %k[%b, %h, %row] into %kv[%i] : memref<1x2x300x64xbf16>, !flexattn.ring<2 x 128x64xbf16>
  flexattn.ring.copy %k[%b, %h, %row] into %kv[%i] if %more : memref<1x2x300x64xbf16>, !flexattn.ring<2 x 128x64xbf16>
  // A head dim of 24 columns, padded with zeros to the tile's 64.
  flexattn.ring.copy %k24[%b, %h, %row] into %kv[%i] : memref<1x2x300x24xbf16>, !flexattn.ring<2 x 128x64xbf16>
  flexattn.ring.wait %kv[%i] in_flight(1) : !flexattn.ring<2 x 128x64xbf16>
  %t = flexattn.ring.slot %kv[%i] : !flexattn.ring<2 x 128x64xbf16>
  %f = flexattn.frag.load %t[%row] : !flexattn.smem_tile<128x64xbf16> -> vector<32xbf16>
  return %f : vector<32xbf16>
}

// The epilogue with attention sinks and max_scores.
// CHECK-LABEL: func.func @finalize_sinks_max_scores(
// CHECK:         flexattn.frag.finalize %{{.*}} state(%{{.*}}, %{{.*}}) sinks(%{{.*}} : memref<2xf32>) outs(%{{.*}} : memref<1x2x300x128xbf16>) max_scores(%{{.*}} : memref<1x2x300xf32>) at(%{{.*}}) : vector<64xf32>, vector<2xf32>
func.func @finalize_sinks_max_scores(%o: vector<64xf32>, %m: vector<2xf32>, %l: vector<2xf32>,
                                     %sinks: memref<2xf32>, %out: memref<1x2x300x128xbf16>,
                                     %mx: memref<1x2x300xf32>, %i: index) {
  flexattn.frag.finalize %o state(%m, %l) sinks(%sinks : memref<2xf32>) outs(%out : memref<1x2x300x128xbf16>)
      max_scores(%mx : memref<1x2x300xf32>) at(%i, %i, %i, %i) : vector<64xf32>, vector<2xf32>
  return
}

// -----

// The atomic dQ's ops (flexattn-lower-backward-mma with dq_sum) round-trip.
// CHECK-LABEL: func.func @atomic_dq_ops(
// CHECK:         flexattn.frag.store %{{.*}}, %{{.*}} {transpose} : vector<32xbf16>, !flexattn.smem_tile<64x64xbf16>
// CHECK:         flexattn.smem_tile.panel %{{.*}}[%{{.*}}, %{{.*}}] : !flexattn.smem_tile<128x128xbf16> to !flexattn.smem_tile<64x64xbf16>
// CHECK:         flexattn.frag.stage %{{.*}}, %{{.*}}[%{{.*}}] : vector<32xf32>, !flexattn.smem_tile<64x128xf32>
// CHECK:         flexattn.bulk.wait_read
// CHECK:         flexattn.bulk.reduce_add %{{.*}}, %{{.*}}[%{{.*}}, %{{.*}}, %{{.*}}] rows(%{{.*}}) : !flexattn.smem_tile<64x128xf32>, memref<1x2x64x128xf32>
func.func @atomic_dq_ops(%dx: vector<32xbf16>, %s: !flexattn.smem_tile<64x64xbf16>, %k: !flexattn.smem_tile<128x128xbf16>,
                         %dq: vector<32xf32>, %stage: !flexattn.smem_tile<64x128xf32>, %out: memref<1x2x64x128xf32>,
                         %i: index, %n: i32) {
  flexattn.frag.store %dx, %s {transpose} : vector<32xbf16>, !flexattn.smem_tile<64x64xbf16>
  %p = flexattn.smem_tile.panel %k[%i, %i] : !flexattn.smem_tile<128x128xbf16> to !flexattn.smem_tile<64x64xbf16>
  flexattn.frag.stage %dq, %stage[%i] : vector<32xf32>, !flexattn.smem_tile<64x128xf32>
  flexattn.bulk.wait_read
  flexattn.bulk.reduce_add %stage, %out[%i, %i, %i] rows(%n) : !flexattn.smem_tile<64x128xf32>, memref<1x2x64x128xf32>
  return
}

// -----

// A register-A MMA reading B from a row (the backward's chunk halves).
// CHECK-LABEL: func.func @mma_b_row(
// CHECK:         flexattn.mma %{{.*}}, %{{.*}}[%{{.*}}], %{{.*}} : vector<16xbf16>, !flexattn.smem_tile<64x128xbf16>, vector<64xf32> -> vector<64xf32>
func.func @mma_b_row(%p: vector<16xbf16>, %v: !flexattn.smem_tile<64x128xbf16>, %acc: vector<64xf32>, %r: index) {
  %o = flexattn.mma %p, %v[%r], %acc : vector<16xbf16>, !flexattn.smem_tile<64x128xbf16>, vector<64xf32> -> vector<64xf32>
  return
}
