// RUN: flexattn-opt %s -split-input-file -verify-diagnostics --flexattn-map-to-grid | FileCheck %s

// The loop over (batch, head, Q tile) becomes a launch of one CTA per tile:
// 1 x 2 x ceil(300 / 128) = 6 CTAs of one thread (roles come later).
// CHECK-LABEL: func.func @causal(
// CHECK-SAME:    %[[Q:[^:]+]]: memref<1x2x300x64xbf16>, %{{[^:]+}}: memref<1x2x300x64xbf16>, %{{[^:]+}}: memref<1x2x300x64xbf16>, %[[O:[^:]+]]: memref<1x2x300x64xbf16>, %[[KVN:[^:]+]]: memref<1x1x3xi32>
// CHECK-NOT:     scf.parallel
// CHECK:         arith.ceildivui
// CHECK-NEXT:    %[[ONE:.*]] = arith.constant 1 : index
// CHECK-NEXT:    %[[TILES:.*]] = arith.constant 6 : index
// CHECK-NEXT:    gpu.launch blocks(%[[BX:[^,]*]], %{{.*}}, %{{.*}}) in (%{{.*}} = %[[TILES]], %{{.*}} = %[[ONE]], %{{.*}} = %[[ONE]]) threads(%{{.*}}) in (%{{.*}} = %[[ONE]], %{{.*}} = %[[ONE]], %{{.*}} = %[[ONE]]) {
// Constants the body used are recomputed inside, not passed.
// CHECK:           %[[C128:.*]] = arith.constant 128 : index
// Tile t = blockIdx.x: head = t / 3, b = head / 2, h = head % 2, and the
// heaviest Q tile first: qt = 2 - t % 3.
// CHECK:           %[[QTS:.*]] = arith.constant 3 : index
// CHECK:           %[[HEAD:.*]] = arith.divui %[[BX]], %[[QTS]] : index
// CHECK:           %[[HS:.*]] = arith.constant 2 : index
// CHECK:           %[[B:.*]] = arith.divui %[[HEAD]], %[[HS]] : index
// CHECK:           %[[H:.*]] = arith.remui %[[HEAD]], %[[HS]] : index
// CHECK:           %[[LAST:.*]] = arith.constant 2 : index
// CHECK:           %[[REV:.*]] = arith.remui %[[BX]], %[[QTS]] : index
// CHECK:           %[[QT:.*]] = arith.subi %[[LAST]], %[[REV]] : index
// The tile's body, unchanged: stack state, KV loop, finalize.
// CHECK:           memref.alloca_scope {
// CHECK:             %[[Q0:.*]] = arith.muli %[[QT]], %[[C128]] : index
// CHECK:             memref.alloca() : memref<128x64xf32>
// CHECK:             memref.load %[[KVN]][%{{.*}}, %{{.*}}, %[[QT]]]
// CHECK:             scf.for
// CHECK:               flexattn.tile_step ins(%[[Q]], {{.*}} at(%[[B]], %[[H]], %[[H]], %[[Q0]], %{{.*}}) attributes {masked
// CHECK:             flexattn.finalize {{.*}} outs(%[[O]] : memref<1x2x300x64xbf16>) at(%[[B]], %[[H]], %[[Q0]])
// CHECK:           gpu.terminator
func.func @causal(%q: memref<1x2x300x64xbf16>, %k: memref<1x2x300x64xbf16>, %v: memref<1x2x300x64xbf16>,
                  %o: memref<1x2x300x64xbf16>, %kvn: memref<1x1x3xi32>, %kvi: memref<1x1x3x3xi32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c128 = arith.constant 128 : index
  %c300 = arith.constant 300 : index
  %qtiles = arith.ceildivui %c300, %c128 : index
  scf.parallel (%b, %h, %qt) = (%c0, %c0, %c0) to (%c1, %c2, %qtiles) step (%c1, %c1, %c1) {
    memref.alloca_scope {
      %q0 = arith.muli %qt, %c128 : index
      %acc = memref.alloca() : memref<128x64xf32>
      %m = memref.alloca() : memref<128xf32>
      %l = memref.alloca() : memref<128xf32>
      %zero = arith.constant 0.0 : f32
      %ninf = arith.constant 0xFF800000 : f32
      linalg.fill ins(%zero : f32) outs(%acc : memref<128x64xf32>)
      linalg.fill ins(%ninf : f32) outs(%m : memref<128xf32>)
      linalg.fill ins(%zero : f32) outs(%l : memref<128xf32>)
      %n32 = memref.load %kvn[%c0, %c0, %qt] : memref<1x1x3xi32>
      %n = arith.index_cast %n32 : i32 to index
      scf.for %j = %c0 to %n step %c1 {
        %blk32 = memref.load %kvi[%c0, %c0, %qt, %j] : memref<1x1x3x3xi32>
        %blk = arith.index_cast %blk32 : i32 to index
        %kv0 = arith.muli %blk, %c128 : index
        flexattn.tile_step ins(%q, %k, %v : memref<1x2x300x64xbf16>, memref<1x2x300x64xbf16>, memref<1x2x300x64xbf16>)
            state(%acc, %m, %l : memref<128x64xf32>, memref<128xf32>, memref<128xf32>)
            at(%b, %h, %h, %q0, %kv0) attributes {masked, scale = 0.125 : f32, tile_size = array<i64: 128, 128>}
          mask_mod {
          ^bb0(%bb: i32, %hh: i32, %qi: i32, %kj: i32):
            %keep = arith.cmpi sge, %qi, %kj : i32
            flexattn.yield %keep : i1
          }
      }
      flexattn.finalize state(%acc, %m, %l : memref<128x64xf32>, memref<128xf32>, memref<128xf32>)
          outs(%o : memref<1x2x300x64xbf16>) at(%b, %h, %q0)
    }
    scf.reduce
  }
  return
}

// -----

// A dynamic-shape kernel (CompileOptions.dynamic): the batch and the Q
// tiles, ceil(M / 128), are run-time values of q's sizes. The host
// multiplies them into the grid (B x 2 heads x tiles); the CTA recomputes
// the tile count from its memref argument to decode its tile.
// CHECK-LABEL: func.func @dynamic(
// CHECK-SAME:    %[[Q:[^:]+]]: memref<?x2x?x64xbf16>
// CHECK:         %[[B:.*]] = memref.dim %[[Q]], %{{.*}} : memref<?x2x?x64xbf16>
// CHECK:         %[[M:.*]] = memref.dim %[[Q]], %{{.*}} : memref<?x2x?x64xbf16>
// CHECK:         %[[QT:.*]] = arith.ceildivui %[[M]], %{{.*}} : index
// CHECK:         %[[BH:.*]] = arith.muli %[[B]], %{{.*}} : index
// CHECK-NEXT:    %[[TILES:.*]] = arith.muli %[[BH]], %[[QT]] : index
// CHECK-NEXT:    gpu.launch blocks(%[[BX:[^,]*]], %{{.*}}, %{{.*}}) in (%{{.*}} = %[[TILES]],
// CHECK:           memref.dim %[[Q]]
// CHECK:           %[[QTI:.*]] = arith.ceildivui %{{.*}}, %{{.*}} : index
// CHECK-NEXT:      %[[HEAD:.*]] = arith.divui %[[BX]], %[[QTI]] : index
// The heaviest Q tile first: qt = (tiles - 1) - t mod tiles.
// CHECK:           %[[LAST:.*]] = arith.subi %[[QTI]], %{{.*}} : index
// CHECK-NEXT:      %[[REV:.*]] = arith.remui %[[BX]], %[[QTI]] : index
// CHECK-NEXT:      arith.subi %[[LAST]], %[[REV]] : index
func.func @dynamic(%q: memref<?x2x?x64xbf16>, %o: memref<?x2x?x64xbf16>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c128 = arith.constant 128 : index
  %b = memref.dim %q, %c0 : memref<?x2x?x64xbf16>
  %m = memref.dim %q, %c2 : memref<?x2x?x64xbf16>
  %qt = arith.ceildivui %m, %c128 : index
  scf.parallel (%bi, %h, %t) = (%c0, %c0, %c0) to (%b, %c2, %qt) step (%c1, %c1, %c1) {
    %acc = memref.alloca() : memref<128x64xf32>
    %mx = memref.alloca() : memref<128xf32>
    %l = memref.alloca() : memref<128xf32>
    %q0 = arith.muli %t, %c128 : index
    flexattn.finalize state(%acc, %mx, %l : memref<128x64xf32>, memref<128xf32>, memref<128xf32>)
        outs(%o : memref<?x2x?x64xbf16>) at(%bi, %h, %q0)
    scf.reduce
  }
  return
}

// -----

// An extent that is neither a constant nor computed from a memref
// argument's sizes (an index argument) cannot reach the host's grid.
func.func @opaque_extent(%q: memref<1x1x?x64xbf16>, %o: memref<1x1x?x64xbf16>, %n: index) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  // expected-error @+1 {{flexattn-map-to-grid needs loop bounds from 0 with step 1 and extents that are constants or computed from the memref arguments' sizes}}
  scf.parallel (%b, %h, %qt) = (%c0, %c0, %c0) to (%c1, %c1, %n) step (%c1, %c1, %c1) {
    %acc = memref.alloca() : memref<128x64xf32>
    %m = memref.alloca() : memref<128xf32>
    %l = memref.alloca() : memref<128xf32>
    flexattn.finalize state(%acc, %m, %l : memref<128x64xf32>, memref<128xf32>, memref<128xf32>)
        outs(%o : memref<1x1x?x64xbf16>) at(%b, %h, %qt)
    scf.reduce
  }
  return
}

// -----

func.func @not_memref(%o: memref<1x1x128x64xbf16>, %q0: index) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  scf.parallel (%b, %h, %qt) = (%c0, %c0, %c0) to (%c1, %c1, %c1) step (%c1, %c1, %c1) {
    %acc = memref.alloca() : memref<128x64xf32>
    %m = memref.alloca() : memref<128xf32>
    %l = memref.alloca() : memref<128xf32>
    // expected-error @+1 {{flexattn-map-to-grid cannot pass this value to the kernel (only memref arguments and constants)}}
    flexattn.finalize state(%acc, %m, %l : memref<128x64xf32>, memref<128xf32>, memref<128xf32>)
        outs(%o : memref<1x1x128x64xbf16>) at(%b, %h, %q0)
    scf.reduce
  }
  return
}

// -----

// A loop over (split, batch, head, Q tile) (flexattn-split-kv{splits=4}):
// 4 x 2 x 2 x 1 = 16 CTAs, a tile's 4 splits adjacent: s = t % 4, then
// (b, h, qt) from t / 4. Views of the arguments (pack-heads' packed q) are
// recomputed inside.
// CHECK-LABEL: func.func @splits(
// CHECK:         %[[TILES:.*]] = arith.constant 16 : index
// CHECK-NEXT:    gpu.launch blocks(%[[BX:[^,]*]], %{{.*}}, %{{.*}}) in (%{{.*}} = %[[TILES]],
// CHECK:           %[[PQ:.*]] = memref.collapse_shape
// CHECK:           %[[S:.*]] = arith.remui %[[BX]], %[[SS:.*]] : index
// CHECK-NEXT:      %[[T:.*]] = arith.divui %[[BX]], %[[SS]] : index
// CHECK-NEXT:      %[[QTS:.*]] = arith.constant 1 : index
// CHECK-NEXT:      %[[HEAD:.*]] = arith.divui %[[T]], %[[QTS]] : index
// CHECK:           flexattn.kv_loop ins(%[[PQ]], {{.*}} split(%[[S]] of %{{.*}})
func.func @splits(%q: memref<2x8x1x64xbf16>, %k: memref<2x2x512x64xbf16>, %v: memref<2x2x512x64xbf16>,
                  %o: memref<2x2x4x64xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c4 = arith.constant 4 : index
  %pq0 = memref.expand_shape %q [[0], [1, 2], [3], [4]] output_shape [2, 2, 4, 1, 64] : memref<2x8x1x64xbf16> into memref<2x2x4x1x64xbf16>
  %pq = memref.collapse_shape %pq0 [[0], [1], [2, 3], [4]] : memref<2x2x4x1x64xbf16> into memref<2x2x4x64xbf16>
  scf.parallel (%s, %b, %h, %qt) = (%c0, %c0, %c0, %c0) to (%c4, %c2, %c2, %c1) step (%c1, %c1, %c1, %c1) {
    memref.alloca_scope {
      %acc = memref.alloca() : memref<64x64xf32>
      %m = memref.alloca() : memref<64xf32>
      %l = memref.alloca() : memref<64xf32>
      flexattn.kv_loop ins(%pq, %k, %v : memref<2x2x4x64xbf16>, memref<2x2x512x64xbf16>, memref<2x2x512x64xbf16>)
          state(%acc, %m, %l : memref<64x64xf32>, memref<64xf32>, memref<64xf32>)
          at(%b, %h, %h, %c0) packed(%c1) split(%s of %c4) attributes {scale = 0.125 : f32, tile_size = array<i64: 64, 128>}
      flexattn.finalize state(%acc, %m, %l : memref<64x64xf32>, memref<64xf32>, memref<64xf32>)
          outs(%o : memref<2x2x4x64xf32>) at(%b, %h, %c0)
    }
    scf.reduce
  }
  return
}
