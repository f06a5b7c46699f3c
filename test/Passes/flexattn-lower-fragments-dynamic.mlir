// RUN: flexattn-opt %s -split-input-file --flexattn-lower-fragments --canonicalize --cse | FileCheck %s

// Run-time lengths (a dynamic-shape kernel: lens(%M, %N) instead of
// seq_lens): every row is clamped to M - 1 for the mods and every key to
// N - 1, and every key at or past N scores -inf, as for a partial last tile
// of a static kernel.
// CHECK-LABEL: func.func @softmax_dynamic(
// CHECK-SAME:    %{{[^:]+}}: index, %[[MLEN:[^:]+]]: index, %[[NLEN:[^:]+]]: index)
// CHECK:         %[[M:.*]] = arith.index_cast %[[MLEN]] : index to i32
// CHECK-NEXT:    %[[N:.*]] = arith.index_cast %[[NLEN]] : index to i32
// CHECK:         %[[MLAST:.*]] = arith.subi %[[M]], %{{.*}} : i32
// CHECK-NEXT:    arith.minui %{{.*}}, %[[MLAST]] : i32
// CHECK:         %[[NLAST:.*]] = arith.subi %[[N]], %{{.*}} : i32
// CHECK-NEXT:    %[[KC:.*]] = arith.minui %[[K0:.*]], %[[NLAST]] : i32
// CHECK:         flexattn.apply_mods
// CHECK:         %[[IN:.*]] = arith.cmpi ult, %[[K0]], %[[N]] : i32
// CHECK:         arith.select %[[IN]]
func.func @softmax_dynamic(%s: vector<8xf32>, %m: vector<2xf32>, %l: vector<2xf32>,
                           %b: index, %h: index, %row: index, %col: index, %M: index, %N: index) -> (vector<8xbf16>, vector<2xf32>, vector<2xf32>, vector<2xf32>) {
  %p, %m1, %l1, %alpha = flexattn.frag.softmax %s state(%m, %l) at(%b, %h, %row, %col) lens(%M, %N)
      attributes {masked, scale = 0.125 : f32, tile_size = array<i64: 64, 16>}
    mask_mod {
    ^bb0(%bb: i32, %hh: i32, %qi: i32, %kj: i32):
      %keep = arith.cmpi sge, %qi, %kj : i32
      flexattn.yield %keep : i1
    } : vector<8xf32>, vector<2xf32> -> vector<8xbf16>
  return %p, %m1, %l1, %alpha : vector<8xbf16>, vector<2xf32>, vector<2xf32>, vector<2xf32>
}

// -----

// frag.finalize into an out of run-time B and M: the head's rows start at
// head M Dv 2 bytes, and a row is stored where it is below M.
// CHECK-LABEL: func.func @finalize_dynamic(
// CHECK-SAME:    %[[OUT:[^:]+]]: memref<?x2x?x16xbf16>, %{{[^:]+}}: memref<?x2x?xf32>, %{{[^:]+}}: index, %{{[^:]+}}: index, %[[ROW:[^:]+]]: index
// CHECK:         %[[M:.*]] = memref.dim %[[OUT]], %{{.*}} : memref<?x2x?x16xbf16>
// CHECK:         arith.muli %[[M]], %c32 : index
// CHECK:         arith.cmpi ult, %[[ROW]], %[[M]] : index
func.func @finalize_dynamic(%acc: vector<8xf32>, %m: vector<2xf32>, %l: vector<2xf32>,
                            %out: memref<?x2x?x16xbf16>, %lse: memref<?x2x?xf32>, %b: index, %h: index, %row: index, %col: index) {
  flexattn.frag.finalize %acc state(%m, %l) outs(%out : memref<?x2x?x16xbf16>) lse(%lse : memref<?x2x?xf32>)
      at(%b, %h, %row, %col) : vector<8xf32>, vector<2xf32>
  return
}
