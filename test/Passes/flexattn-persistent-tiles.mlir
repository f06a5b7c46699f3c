// RUN: flexattn-opt %s -split-input-file -verify-diagnostics --flexattn-persistent-tiles=ctas=4 | FileCheck %s
// RUN: flexattn-opt %s -split-input-file -verify-diagnostics --flexattn-persistent-tiles=ctas=8 | FileCheck %s --check-prefix=ENOUGH

// 6 tiles on 4 CTAs in rounds of 4, snaking: round 0 gives CTA c tile c,
// round 1 tile 4 + (3 - c) when that is < 6 (CTAs 3 and 2 take 4 and 5); the
// body decodes its tile from t.
// CHECK-LABEL: func.func @causal(
// CHECK:         %[[CTAS:.*]] = arith.constant 4 : index
// CHECK:         gpu.launch blocks(%[[BX:[^,]*]], %{{.*}}) in (%{{.*}} = %[[CTAS]], %{{.*}} = %{{.*}}, %{{.*}} = %{{.*}})
// CHECK-DAG:       %[[STEP:.*]] = arith.constant 4 : index
// CHECK-DAG:       %[[LAST:.*]] = arith.constant 3 : index
// CHECK-DAG:       %[[ZERO:.*]] = arith.constant 0 : index
// CHECK-DAG:       %[[ONE:.*]] = arith.constant 1 : index
// CHECK:           %[[MIRROR:.*]] = arith.subi %[[LAST]], %[[BX]] : index
// CHECK:           %[[REM:.*]] = arith.constant 2 : index
// CHECK:           %[[IN_LAST:.*]] = arith.cmpi ult, %[[MIRROR]], %[[REM]] : index
// CHECK:           %[[ROUNDS:.*]] = arith.select %[[IN_LAST]], %{{.*}}, %{{.*}} : index
// CHECK:           scf.for %[[I:.*]] = %[[ZERO]] to %[[ROUNDS]] step %[[ONE]] {
// CHECK-NEXT:        %[[PAR:.*]] = arith.andi %[[I]], %[[ONE]] : index
// CHECK-NEXT:        %[[ODD:.*]] = arith.cmpi ne, %[[PAR]], %[[ZERO]] : index
// CHECK-NEXT:        %[[POS:.*]] = arith.select %[[ODD]], %[[MIRROR]], %[[BX]] : index
// CHECK-NEXT:        %[[BASE:.*]] = arith.muli %[[I]], %[[STEP]] : index
// CHECK-NEXT:        %[[T:.*]] = arith.addi %[[BASE]], %[[POS]] : index
// CHECK-NEXT:        %[[HEAD:.*]] = arith.divui %[[T]], %{{.*}} : index
// CHECK:             %[[REV:.*]] = arith.remui %[[T]], %{{.*}} : index
// CHECK:             flexattn.tile_step
// CHECK:             flexattn.finalize
// CHECK-NEXT:      }
// CHECK-NEXT:      gpu.terminator

// Enough CTAs for every tile: one CTA per tile stays.
// ENOUGH-LABEL: func.func @causal(
// ENOUGH:         gpu.launch blocks(%[[BX:[^,]*]], %{{.*}}) in (%{{.*}} = %c6,
// ENOUGH-NOT:     scf.for %{{.*}} = %[[BX]]
// ENOUGH:         gpu.terminator
func.func @causal(%q: memref<1x2x300x64xbf16>, %k: memref<1x2x300x64xbf16>, %v: memref<1x2x300x64xbf16>,
                  %o: memref<1x2x300x64xbf16>, %kvn: memref<1x1x3xi32>, %kvi: memref<1x1x3x3xi32>) {
  %ninf = arith.constant 0xFF800000 : f32
  %zero = arith.constant 0.000000e+00 : f32
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c3 = arith.constant 3 : index
  %c6 = arith.constant 6 : index
  %c128 = arith.constant 128 : index
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c6, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c1, %sy = %c1, %sz = %c1) {
    %head = arith.divui %bx, %c3 : index
    %b = arith.divui %head, %c2 : index
    %h = arith.remui %head, %c2 : index
    %rev = arith.remui %bx, %c3 : index
    %qt = arith.subi %c2, %rev : index
    %q0 = arith.muli %qt, %c128 : index
    %acc = memref.alloca() : memref<128x64xf32>
    %m = memref.alloca() : memref<128xf32>
    %l = memref.alloca() : memref<128xf32>
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
    gpu.terminator
  }
  return
}

// -----

func.func @dynamic_grid(%n: index) {
  %c1 = arith.constant 1 : index
  // expected-error @below {{flexattn-persistent-tiles expects the static 1-D grid of flexattn-map-to-grid}}
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %n, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c1, %sy = %c1, %sz = %c1) {
    %acc = memref.alloca() : memref<128x64xf32>
    %m = memref.alloca() : memref<128xf32>
    %o = memref.alloca() : memref<1x1x128x64xbf16>
    flexattn.finalize state(%acc, %m, %m : memref<128x64xf32>, memref<128xf32>, memref<128xf32>)
        outs(%o : memref<1x1x128x64xbf16>) at(%bx, %bx, %bx)
    gpu.terminator
  }
  return
}
