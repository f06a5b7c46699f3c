// RUN: flexattn-opt %s -split-input-file -verify-diagnostics --flexattn-multistage --canonicalize --cse | FileCheck %s

// A dynamic-shape kernel (CompileOptions.dynamic: run-time B, M, N and
// block-mask dims; heads and head dims static). The copies read the
// run-time rows of their sources (flexattn-lower-to-ampere checks each row
// against them), and the softmax takes the lengths as values, q's and k's
// dim 2, instead of the static seq_lens: every row and key is checked.
// CHECK-LABEL: func.func @dynamic(
// CHECK-SAME:    %[[Q:[^:]+]]: memref<?x2x?x64xbf16>, %[[K:[^:]+]]: memref<?x2x?x64xbf16>, %[[V:[^:]+]]: memref<?x2x?x64xbf16>,
// CHECK-SAME:    %[[O:[^:]+]]: memref<?x2x?x64xbf16>
// CHECK:           flexattn.ring.copy %[[Q]][{{.*}}] into %{{.*}} : memref<?x2x?x64xbf16>, !flexattn.ring<1 x 128x64xbf16>
// CHECK:           flexattn.ring.copy %[[K]][{{.*}}] into %{{.*}} if %{{.*}} : memref<?x2x?x64xbf16>, !flexattn.ring<2 x 128x64xbf16>
// CHECK:           scf.for
// CHECK:             %[[M:.*]] = memref.dim %[[Q]], %{{.*}} : memref<?x2x?x64xbf16>
// CHECK-NEXT:        %[[N:.*]] = memref.dim %[[K]], %{{.*}} : memref<?x2x?x64xbf16>
// CHECK:             flexattn.frag.softmax %{{.*}} state(%{{.*}}, %{{.*}}) at(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}) lens(%[[M]], %[[N]]) attributes {masked, scale = 1.250000e-01 : f32, tile_size = array<i64: 128, 128>}
// CHECK-NOT:         seq_lens
// CHECK:           flexattn.frag.finalize %{{.*}} outs(%[[O]] : memref<?x2x?x64xbf16>)
func.func @dynamic(%q: memref<?x2x?x64xbf16>, %k: memref<?x2x?x64xbf16>, %v: memref<?x2x?x64xbf16>,
                  %o: memref<?x2x?x64xbf16>, %kvn: memref<?x?x?xi32>, %kvi: memref<?x?x?x?xi32>) {
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
    %n32 = memref.load %kvn[%c0, %c0, %qt] : memref<?x?x?xi32>
    %n = arith.index_cast %n32 : i32 to index
    scf.for %j = %c0 to %n step %c1 {
      %blk32 = memref.load %kvi[%c0, %c0, %qt, %j] : memref<?x?x?x?xi32>
      %blk = arith.index_cast %blk32 : i32 to index
      %kv0 = arith.muli %blk, %c128 : index
      flexattn.tile_step ins(%q, %k, %v : memref<?x2x?x64xbf16>, memref<?x2x?x64xbf16>, memref<?x2x?x64xbf16>)
          state(%acc, %m, %l : memref<128x64xf32>, memref<128xf32>, memref<128xf32>)
          at(%b, %h, %h, %q0, %kv0) attributes {masked, scale = 0.125 : f32, tile_size = array<i64: 128, 128>}
        mask_mod {
        ^bb0(%bb: i32, %hh: i32, %qi: i32, %kj: i32):
          %keep = arith.cmpi sge, %qi, %kj : i32
          flexattn.yield %keep : i1
        }
    }
    flexattn.finalize state(%acc, %m, %l : memref<128x64xf32>, memref<128xf32>, memref<128xf32>)
        outs(%o : memref<?x2x?x64xbf16>) at(%b, %h, %q0)
    gpu.terminator
  }
  return
}

// -----

// Heads fix the tiles and the layout: run-time heads are refused.
func.func @dynamic_heads(%q: memref<1x?x128x64xbf16>, %o: memref<1x?x128x64xbf16>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c1, %sy = %c1, %sz = %c1) {
    %acc = memref.alloca() : memref<128x64xf32>
    %m = memref.alloca() : memref<128xf32>
    %l = memref.alloca() : memref<128xf32>
    // expected-error @+1 {{flexattn-multistage needs static heads and head dims, got 'memref<1x?x128x64xbf16>'}}
    flexattn.tile_step ins(%q, %q, %q : memref<1x?x128x64xbf16>, memref<1x?x128x64xbf16>, memref<1x?x128x64xbf16>)
        state(%acc, %m, %l : memref<128x64xf32>, memref<128xf32>, memref<128xf32>)
        at(%c0, %c0, %c0, %c0, %c0) attributes {scale = 0.125 : f32, tile_size = array<i64: 128, 128>}
    flexattn.finalize state(%acc, %m, %l : memref<128x64xf32>, memref<128xf32>, memref<128xf32>)
        outs(%o : memref<1x?x128x64xbf16>) at(%c0, %c0, %c0)
    gpu.terminator
  }
  return
}
