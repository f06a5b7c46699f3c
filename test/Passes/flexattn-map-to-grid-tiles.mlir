// RUN: flexattn-opt %s -split-input-file -verify-diagnostics --flexattn-map-to-grid=tiles=4 | FileCheck %s

// tiles=4: of the 1 x 2 x 3 = 6 tiles, the grid's first 4 only (head 0's
// three, heaviest first, then head 1's last Q tile); the tile decode is
// the whole grid's, so CTA t still runs tile t. The last two tiles (head
// 1's Q tiles 1 and 0) are left to the caller.
// CHECK-LABEL: func.func @first_tiles(
// CHECK:         %[[TILES:.*]] = arith.constant 4 : index
// CHECK-NEXT:    gpu.launch blocks(%[[BX:[^,]*]], %{{.*}}, %{{.*}}) in (%{{.*}} = %[[TILES]],
// CHECK:           %[[QTS:.*]] = arith.constant 3 : index
// CHECK:           %[[HEAD:.*]] = arith.divui %[[BX]], %[[QTS]] : index
// CHECK:           %[[HS:.*]] = arith.constant 2 : index
// CHECK:           arith.remui %[[HEAD]], %[[HS]] : index
// CHECK:           %[[LAST:.*]] = arith.constant 2 : index
// CHECK:           %[[REV:.*]] = arith.remui %[[BX]], %[[QTS]] : index
// CHECK:           %[[QT:.*]] = arith.subi %[[LAST]], %[[REV]] : index
// CHECK:           flexattn.finalize
func.func @first_tiles(%o: memref<1x2x300x64xbf16>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c3 = arith.constant 3 : index
  %c128 = arith.constant 128 : index
  scf.parallel (%b, %h, %qt) = (%c0, %c0, %c0) to (%c1, %c2, %c3) step (%c1, %c1, %c1) {
    memref.alloca_scope {
      %acc = memref.alloca() : memref<128x64xf32>
      %m = memref.alloca() : memref<128xf32>
      %l = memref.alloca() : memref<128xf32>
      %q0 = arith.muli %qt, %c128 : index
      flexattn.finalize state(%acc, %m, %l : memref<128x64xf32>, memref<128xf32>, memref<128xf32>)
          outs(%o : memref<1x2x300x64xbf16>) at(%b, %h, %q0)
    }
    scf.reduce
  }
  return
}

// -----

// Fewer tiles than asked for.
func.func @too_few(%o: memref<1x1x300x64xbf16>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c3 = arith.constant 3 : index
  // expected-error @+1 {{flexattn-map-to-grid tiles=4 needs a static grid of at least that many tiles and no split dimension (the grid has 3)}}
  scf.parallel (%b, %h, %qt) = (%c0, %c0, %c0) to (%c1, %c1, %c3) step (%c1, %c1, %c1) {
    %acc = memref.alloca() : memref<128x64xf32>
    %m = memref.alloca() : memref<128xf32>
    %l = memref.alloca() : memref<128xf32>
    flexattn.finalize state(%acc, %m, %l : memref<128x64xf32>, memref<128xf32>, memref<128xf32>)
        outs(%o : memref<1x1x300x64xbf16>) at(%b, %h, %qt)
    scf.reduce
  }
  return
}

// -----

// A grid sized at run time (a dynamic-shape kernel) has no static tiles to cut.
func.func @dynamic(%q: memref<?x2x?x64xbf16>, %o: memref<?x2x?x64xbf16>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c128 = arith.constant 128 : index
  %b = memref.dim %q, %c0 : memref<?x2x?x64xbf16>
  %m = memref.dim %q, %c2 : memref<?x2x?x64xbf16>
  %qt = arith.ceildivui %m, %c128 : index
  // expected-error @+1 {{flexattn-map-to-grid tiles=4 needs a static grid of at least that many tiles and no split dimension (the grid is sized at run time)}}
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

// A split dimension (flexattn-split-kv) numbers CTAs, not tiles: not cut.
func.func @split(%o: memref<1x1x128x64xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c8 = arith.constant 8 : index
  // expected-error @+1 {{flexattn-map-to-grid tiles=4 needs a static grid of at least that many tiles and no split dimension (the grid has 8)}}
  scf.parallel (%s, %b, %h, %qt) = (%c0, %c0, %c0, %c0) to (%c8, %c1, %c1, %c1) step (%c1, %c1, %c1, %c1) {
    %acc = memref.alloca() : memref<128x64xf32>
    %m = memref.alloca() : memref<128xf32>
    %l = memref.alloca() : memref<128xf32>
    flexattn.finalize state(%acc, %m, %l : memref<128x64xf32>, memref<128xf32>, memref<128xf32>)
        outs(%o : memref<1x1x128x64xf32>) at(%b, %h, %qt)
    scf.reduce
  }
  return
}
