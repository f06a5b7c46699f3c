// RUN: flexattn-opt %s -split-input-file --pass-pipeline='builtin.module(flexattn-vectorize-tiles{bf16-dot=true}, canonicalize, cse)' | FileCheck %s

// Q.Kᵀ on bf16 tiles (BM x D = 8 x 32, BN = 16): Q's rows are copied as
// [8, 16, 2] pairs, the K tile's 16 x 16 block of 32-bit column pairs is
// transposed in registers into [D/2, BN, 2] (VNNI), and each 4-row block
// accumulates over the 16 pairs with one vdpbf16ps per row: the row's pair
// broadcast to 16 lanes against one packed row of Kᵀ.

// CHECK-LABEL: func.func @qk_bf16(
// CHECK-SAME:    %[[Q:[^:]+]]: memref<8x32xbf16, strided<[32, 1], offset: ?>>, %[[K:[^:]+]]: memref<16x32xbf16, strided<[32, 1], offset: ?>>)
// CHECK-NOT:     linalg.
// CHECK:         %[[S:.+]] = memref.alloca() : memref<8x16xf32>
// CHECK:         %[[QP:.+]] = memref.alloca() : memref<8x16x2xbf16>
// CHECK:         scf.for
// CHECK:           vector.transfer_read %[[Q]][%{{.+}}, %{{.+}}]{{.*}} vector<32xbf16>
// CHECK:         %[[KP:.+]] = memref.alloca() : memref<16x16x2xbf16>
// CHECK:         %[[BLK:.+]] = vector.transfer_read %[[K]]{{.*}} vector<16x32xbf16>
// CHECK-NEXT:    %[[PAIRS:.+]] = vector.bitcast %[[BLK]] : vector<16x32xbf16> to vector<16x16xf32>
// CHECK-NEXT:    %[[T:.+]] = vector.transpose %[[PAIRS]], [1, 0] : vector<16x16xf32> to vector<16x16xf32>
// CHECK-NEXT:    vector.bitcast %[[T]] : vector<16x16xf32> to vector<16x32xbf16>
// CHECK:         scf.for %[[I:.+]] = %{{.+}} to %{{.+}} step %c4
// CHECK-NEXT:      %[[ACC0:.+]] = vector.transfer_read %[[S]][%[[I]], %{{.+}}]{{.*}} vector<4x16xf32>
// CHECK-NEXT:      %[[ACC:.+]] = scf.for %[[K2:.+]] = {{.*}} iter_args(%{{.+}} = %[[ACC0]]) -> (vector<4x16xf32>)
// CHECK-NEXT:        %[[QPAIRS:.+]] = vector.transfer_read %[[QP]][%[[I]], %[[K2]], %{{.+}}]{{.*}} vector<4x2xbf16>
// CHECK:             %[[KROW:.+]] = vector.transfer_read %{{.+}}{{.*}} vector<32xbf16>
// CHECK-NEXT:        %[[PAIR0:.+]] = vector.extract %[[QPAIRS]][0] : vector<2xbf16> from vector<4x2xbf16>
// CHECK:             %[[WORD:.+]] = vector.bitcast %[[PAIR0]] : vector<2xbf16> to vector<1xi32>
// CHECK-NEXT:        %[[SPLAT:.+]] = vector.broadcast %[[WORD]] : vector<1xi32> to vector<16xi32>
// CHECK-NEXT:        %[[A:.+]] = vector.bitcast %[[SPLAT]] : vector<16xi32> to vector<32xbf16>
// CHECK-NEXT:        x86vector.avx512.dot %{{.+}}, %[[A]], %[[KROW]] : vector<32xbf16> -> vector<16xf32>
// CHECK-COUNT-3:     x86vector.avx512.dot %{{.+}}, %{{.+}}, %[[KROW]] : vector<32xbf16> -> vector<16xf32>
// CHECK:             scf.yield
// CHECK:           vector.transfer_write %[[ACC]], %[[S]][%[[I]], %{{.+}}]
// CHECK-NOT:     vector.fma
// CHECK:         return %[[S]]
func.func @qk_bf16(%q: memref<8x32xbf16, strided<[32, 1], offset: ?>>,
                   %k: memref<16x32xbf16, strided<[32, 1], offset: ?>>) -> memref<8x16xf32> {
  %s = memref.alloca() : memref<8x16xf32>
  %zero = arith.constant 0.0 : f32
  linalg.fill ins(%zero : f32) outs(%s : memref<8x16xf32>)
  linalg.generic {indexing_maps = [affine_map<(i, j, d) -> (i, d)>, affine_map<(i, j, d) -> (j, d)>,
                                   affine_map<(i, j, d) -> (i, j)>],
                  iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%q, %k : memref<8x32xbf16, strided<[32, 1], offset: ?>>, memref<16x32xbf16, strided<[32, 1], offset: ?>>)
      outs(%s : memref<8x16xf32>) {
  ^bb0(%x: bf16, %y: bf16, %acc: f32):
    %xf = arith.extf %x : bf16 to f32
    %yf = arith.extf %y : bf16 to f32
    %p = arith.mulf %xf, %yf : f32
    %r = arith.addf %acc, %p : f32
    linalg.yield %r : f32
  }
  return %s : memref<8x16xf32>
}

// -----

// P.V with f32 P and a bf16 V tile (32 keys, Dv = 32): P is rounded to bf16
// pairs (truncf), rows 2 j2 and 2 j2 + 1 of V are interleaved into
// [16, 32, 2], and each packed row of V feeds two dots (32 columns).

// CHECK-LABEL: func.func @pv_bf16(
// CHECK-SAME:    %[[P:[^:]+]]: memref<8x32xf32>, %[[V:[^:]+]]: memref<32x32xbf16, strided<[32, 1], offset: ?>>)
// CHECK-NOT:     linalg.
// CHECK:         memref.alloca() : memref<8x16x2xbf16>
// CHECK:         scf.for
// CHECK:           %[[PROW:.+]] = vector.transfer_read %[[P]]{{.*}} vector<32xf32>
// CHECK-NEXT:      arith.truncf %[[PROW]] : vector<32xf32> to vector<32xbf16>
// CHECK:         memref.alloca() : memref<16x32x2xbf16>
// CHECK:         scf.for
// CHECK:           %[[ODD:.+]] = vector.transfer_read %[[V]]{{.*}} vector<32xbf16>
// CHECK-NEXT:      %[[EVEN:.+]] = vector.transfer_read %[[V]]{{.*}} vector<32xbf16>
// CHECK-NEXT:      vector.interleave %[[EVEN]], %[[ODD]] : vector<32xbf16> -> vector<64xbf16>
// CHECK:         scf.for
// CHECK:           scf.for {{.*}} iter_args
// CHECK:             %[[VROW:.+]] = vector.transfer_read %{{.+}} vector<64xbf16>
// CHECK:             %[[LO:.+]] = vector.extract_strided_slice %[[VROW]] {offsets = [0], sizes = [32], strides = [1]}
// CHECK:             x86vector.avx512.dot %{{.+}}, %{{.+}}, %[[LO]]
// CHECK:             %[[HI:.+]] = vector.extract_strided_slice %[[VROW]] {offsets = [32], sizes = [32], strides = [1]}
// CHECK:             x86vector.avx512.dot %{{.+}}, %{{.+}}, %[[HI]]
// CHECK-NOT:     vector.fma
// CHECK:         return
func.func @pv_bf16(%p: memref<8x32xf32>, %v: memref<32x32xbf16, strided<[32, 1], offset: ?>>) -> memref<8x32xf32> {
  %acc = memref.alloca() : memref<8x32xf32>
  linalg.generic {indexing_maps = [affine_map<(i, c, j) -> (i, j)>, affine_map<(i, c, j) -> (j, c)>,
                                   affine_map<(i, c, j) -> (i, c)>],
                  iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%p, %v : memref<8x32xf32>, memref<32x32xbf16, strided<[32, 1], offset: ?>>) outs(%acc : memref<8x32xf32>) {
  ^bb0(%x: f32, %y: bf16, %a: f32):
    %yf = arith.extf %y : bf16 to f32
    %m = arith.mulf %x, %yf : f32
    %r = arith.addf %a, %m : f32
    linalg.yield %r : f32
  }
  return %acc : memref<8x32xf32>
}

// -----

// 16 keys cannot fill the 32-column pair rows of P: the product stays an f32
// FMA contraction (V widened with extf).

// CHECK-LABEL: func.func @pv_bf16_too_short(
// CHECK-NOT:     x86vector.avx512.dot
// CHECK:         arith.extf %{{.+}} : vector<32xbf16> to vector<32xf32>
// CHECK:         vector.fma
func.func @pv_bf16_too_short(%p: memref<8x16xf32>, %v: memref<16x32xbf16, strided<[32, 1], offset: ?>>) -> memref<8x32xf32> {
  %acc = memref.alloca() : memref<8x32xf32>
  linalg.generic {indexing_maps = [affine_map<(i, c, j) -> (i, j)>, affine_map<(i, c, j) -> (j, c)>,
                                   affine_map<(i, c, j) -> (i, c)>],
                  iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%p, %v : memref<8x16xf32>, memref<16x32xbf16, strided<[32, 1], offset: ?>>) outs(%acc : memref<8x32xf32>) {
  ^bb0(%x: f32, %y: bf16, %a: f32):
    %yf = arith.extf %y : bf16 to f32
    %m = arith.mulf %x, %yf : f32
    %r = arith.addf %a, %m : f32
    linalg.yield %r : f32
  }
  return %acc : memref<8x32xf32>
}
