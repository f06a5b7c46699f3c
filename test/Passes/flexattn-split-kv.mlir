// RUN: flexattn-opt %s -split-input-file -verify-diagnostics -flexattn-split-kv | FileCheck %s

// The tile loop of flexattn-tile (dynamic B and M, bf16 out): the function
// gains the scratch arguments, the loop a leading split dimension of the
// scratch's leading size S, the kv_loop its range, finalize writes the
// split's partial rows; the last split of a tile to arrive merges them.

// CHECK-LABEL: func.func @tiles(
// CHECK-SAME:    %[[O:[^:]+]]: memref<?x8x?x32xbf16>, %[[LSE:[^:]+]]: memref<?x8x?xf32>,
// CHECK-SAME:    %[[PO:[^:]+]]: memref<?x?xf32> {flexattn.split_kv = "out"}, %[[PL:[^:]+]]: memref<?x?xf32> {flexattn.split_kv = "lse"}, %[[AR:[^:]+]]: memref<?xi32> {flexattn.split_kv = "arrivals"})
// CHECK:         %[[S:.+]] = memref.dim %[[PL]], %{{.+}} : memref<?x?xf32>
// CHECK:         scf.parallel (%[[SI:.+]], %[[BI:.+]], %[[HI:.+]], %[[TI:.+]]) = (%{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}) to (%[[S]], %[[B:.+]], %[[H:.+]], %[[QT:.+]]) step
// CHECK:           flexattn.kv_loop {{.*}} at(%[[BI]], %[[HI]], %{{.+}}, %[[Q0:.+]]) split(%[[SI]] of %[[S]])
// Split s's rows: [B, 8, M, 32] at offset s * B * 8 * M * 32 (and [B, 8, M]).
// CHECK:           %[[OV:.+]] = memref.reinterpret_cast %[[PO]] to offset: [%{{.+}}], sizes: [%{{.+}}, 8, %{{.+}}, 32], strides: [%{{.+}}, %{{.+}}, 32, 1] : memref<?x?xf32> to memref<?x8x?x32xf32, strided<[?, ?, 32, 1], offset: ?>>
// CHECK:           %[[LV:.+]] = memref.reinterpret_cast %[[PL]] to offset: [%{{.+}}], sizes: [%{{.+}}, 8, %{{.+}}], strides: [%{{.+}}, %{{.+}}, 1] : memref<?x?xf32> to memref<?x8x?xf32, strided<[?, ?, 1], offset: ?>>
// CHECK-NEXT:      flexattn.finalize {{.*}} outs(%[[OV]] : {{.+}}) lse(%[[LV]] : {{.+}}) at(%[[BI]], %[[HI]], %[[Q0]])
// The tile's number, (b * H + h) * QT + qt, and its arrival count.
// CHECK-NEXT:      %[[T0:.+]] = arith.muli %[[BI]], %[[H]] : index
// CHECK-NEXT:      %[[T1:.+]] = arith.addi %[[T0]], %[[HI]] : index
// CHECK-NEXT:      %[[T2:.+]] = arith.muli %[[T1]], %[[QT]] : index
// CHECK-NEXT:      %[[T:.+]] = arith.addi %[[T2]], %[[TI]] : index
// CHECK-NEXT:      %[[ONE:.+]] = arith.constant 1 : i32
// CHECK-NEXT:      %[[N:.+]] = memref.atomic_rmw addi %[[ONE]], %[[AR]][%[[T]]] : (i32, memref<?xi32>) -> i32
// CHECK:           %[[LASTI:.+]] = arith.index_cast %{{.+}} : index to i32
// CHECK-NEXT:      %[[LAST:.+]] = arith.cmpi eq, %[[N]], %[[LASTI]] : i32
// CHECK-NEXT:      scf.if %[[LAST]] {
// The merge, row by row: m = max_s lse_s, l = sum_s exp(lse_s - m),
// lse = m + log l, out = sum_s exp(lse_s - m) / l * out_s (bf16).
// CHECK:             scf.for %[[I:.+]] = %[[Q0]] to %{{.+}} step
// CHECK:               scf.for {{.+}} = %{{.+}} to %[[S]] step {{.+}} iter_args(
// CHECK:                 memref.load %[[PL]]
// CHECK:                 arith.maximumf
// CHECK:               scf.for {{.+}} = %{{.+}} to %[[S]] step {{.+}} iter_args(
// CHECK:                 math.exp
// CHECK:               math.log
// CHECK:               memref.store %{{.+}}, %[[LSE]][%[[BI]], %[[HI]], %[[I]]] : memref<?x8x?xf32>
// CHECK:               scf.for %[[D:.+]] = %{{.+}} to %{{.+}} step
// CHECK:                 scf.for {{.+}} = %{{.+}} to %[[S]] step {{.+}} iter_args(
// CHECK:                   memref.load %[[PO]]
// CHECK:                   math.fma
// CHECK:                 arith.truncf %{{.+}} : f32 to bf16
// CHECK-NEXT:            memref.store %{{.+}}, %[[O]][%[[BI]], %[[HI]], %[[I]], %[[D]]] : memref<?x8x?x32xbf16>
func.func @tiles(%q: memref<?x8x?x64xf32>, %k: memref<?x2x?x64xf32>, %v: memref<?x2x?x32xf32>,
                 %o: memref<?x8x?x32xbf16>, %lse: memref<?x8x?xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c4 = arith.constant 4 : index
  %c8 = arith.constant 8 : index
  %c64 = arith.constant 64 : index
  %B = memref.dim %q, %c0 : memref<?x8x?x64xf32>
  %M = memref.dim %q, %c2 : memref<?x8x?x64xf32>
  %QT = arith.ceildivui %M, %c64 : index
  scf.parallel (%b, %h, %qt) = (%c0, %c0, %c0) to (%B, %c8, %QT) step (%c1, %c1, %c1) {
    memref.alloca_scope {
      %hkv = arith.divui %h, %c4 : index
      %q0 = arith.muli %qt, %c64 : index
      %acc = memref.alloca() : memref<64x32xf32>
      %max = memref.alloca() : memref<64xf32>
      %sum = memref.alloca() : memref<64xf32>
      flexattn.kv_loop ins(%q, %k, %v : memref<?x8x?x64xf32>, memref<?x2x?x64xf32>, memref<?x2x?x32xf32>)
          state(%acc, %max, %sum : memref<64x32xf32>, memref<64xf32>, memref<64xf32>)
          at(%b, %h, %hkv, %q0) attributes {scale = 0.125 : f32, tile_size = array<i64: 64, 64>}
      flexattn.finalize state(%acc, %max, %sum : memref<64x32xf32>, memref<64xf32>, memref<64xf32>)
          outs(%o : memref<?x8x?x32xbf16>) lse(%lse : memref<?x8x?xf32>) at(%b, %h, %q0)
    }
    scf.reduce
  }
  return
}

// -----

// Without lse the partial lse is still written (the merge weighs by it).

// CHECK-LABEL: func.func @no_lse(
// CHECK:         flexattn.finalize {{.*}} outs(%{{.+}} : memref<1x2x4x16xf32, strided<[128, 64, 16, 1], offset: ?>>) lse(%{{.+}} : memref<1x2x4xf32, strided<[8, 4, 1], offset: ?>>)
// CHECK-NOT:     math.log
func.func @no_lse(%q: memref<1x2x4x16xf32>, %k: memref<1x2x64x16xf32>, %v: memref<1x2x64x16xf32>,
                  %o: memref<1x2x4x16xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  scf.parallel (%b, %h, %qt) = (%c0, %c0, %c0) to (%c1, %c2, %c1) step (%c1, %c1, %c1) {
    memref.alloca_scope {
      %acc = memref.alloca() : memref<4x16xf32>
      %max = memref.alloca() : memref<4xf32>
      %sum = memref.alloca() : memref<4xf32>
      flexattn.kv_loop ins(%q, %k, %v : memref<1x2x4x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>)
          state(%acc, %max, %sum : memref<4x16xf32>, memref<4xf32>, memref<4xf32>)
          at(%b, %h, %h, %c0) attributes {scale = 0.125 : f32, tile_size = array<i64: 4, 16>}
      flexattn.finalize state(%acc, %max, %sum : memref<4x16xf32>, memref<4xf32>, memref<4xf32>)
          outs(%o : memref<1x2x4x16xf32>) at(%b, %h, %c0)
    }
    scf.reduce
  }
  return
}

// -----

// One attention per function: its scratch arguments are the function's.

// expected-error @+1 {{'func.func' op flexattn-split-kv splits one attention per function, found 2}}
func.func @two(%q: memref<1x1x4x16xf32>, %k: memref<1x1x64x16xf32>, %o: memref<1x1x4x16xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  scf.parallel (%b, %h, %qt) = (%c0, %c0, %c0) to (%c1, %c1, %c1) step (%c1, %c1, %c1) {
    %acc = memref.alloca() : memref<4x16xf32>
    %max = memref.alloca() : memref<4xf32>
    %sum = memref.alloca() : memref<4xf32>
    flexattn.kv_loop ins(%q, %k, %k : memref<1x1x4x16xf32>, memref<1x1x64x16xf32>, memref<1x1x64x16xf32>)
        state(%acc, %max, %sum : memref<4x16xf32>, memref<4xf32>, memref<4xf32>)
        at(%b, %h, %h, %c0) attributes {scale = 0.125 : f32, tile_size = array<i64: 4, 16>}
    flexattn.finalize state(%acc, %max, %sum : memref<4x16xf32>, memref<4xf32>, memref<4xf32>)
        outs(%o : memref<1x1x4x16xf32>) at(%b, %h, %c0)
    scf.reduce
  }
  scf.parallel (%b, %h, %qt) = (%c0, %c0, %c0) to (%c1, %c1, %c1) step (%c1, %c1, %c1) {
    %acc = memref.alloca() : memref<4x16xf32>
    %max = memref.alloca() : memref<4xf32>
    %sum = memref.alloca() : memref<4xf32>
    flexattn.kv_loop ins(%q, %k, %k : memref<1x1x4x16xf32>, memref<1x1x64x16xf32>, memref<1x1x64x16xf32>)
        state(%acc, %max, %sum : memref<4x16xf32>, memref<4xf32>, memref<4xf32>)
        at(%b, %h, %h, %c0) attributes {scale = 0.125 : f32, tile_size = array<i64: 4, 16>}
    flexattn.finalize state(%acc, %max, %sum : memref<4x16xf32>, memref<4xf32>, memref<4xf32>)
        outs(%o : memref<1x1x4x16xf32>) at(%b, %h, %c0)
    scf.reduce
  }
  return
}

// -----

func.func @split_twice(%q: memref<1x1x4x16xf32>, %k: memref<1x1x64x16xf32>, %o: memref<1x1x4x16xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  scf.parallel (%b, %h, %qt) = (%c0, %c0, %c0) to (%c1, %c1, %c1) step (%c1, %c1, %c1) {
    %acc = memref.alloca() : memref<4x16xf32>
    %max = memref.alloca() : memref<4xf32>
    %sum = memref.alloca() : memref<4xf32>
    // expected-error @+1 {{'flexattn.kv_loop' op is split already}}
    flexattn.kv_loop ins(%q, %k, %k : memref<1x1x4x16xf32>, memref<1x1x64x16xf32>, memref<1x1x64x16xf32>)
        state(%acc, %max, %sum : memref<4x16xf32>, memref<4xf32>, memref<4xf32>)
        at(%b, %h, %h, %c0) split(%c0 of %c2) attributes {scale = 0.125 : f32, tile_size = array<i64: 4, 16>}
    flexattn.finalize state(%acc, %max, %sum : memref<4x16xf32>, memref<4xf32>, memref<4xf32>)
        outs(%o : memref<1x1x4x16xf32>) at(%b, %h, %c0)
    scf.reduce
  }
  return
}

// -----

func.func @split_sinks(%q: memref<1x1x4x16xf32>, %k: memref<1x1x64x16xf32>, %s: memref<1xf32>,
                       %o: memref<1x1x4x16xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  scf.parallel (%b, %h, %qt) = (%c0, %c0, %c0) to (%c1, %c1, %c1) step (%c1, %c1, %c1) {
    %acc = memref.alloca() : memref<4x16xf32>
    %max = memref.alloca() : memref<4xf32>
    %sum = memref.alloca() : memref<4xf32>
    flexattn.kv_loop ins(%q, %k, %k : memref<1x1x4x16xf32>, memref<1x1x64x16xf32>, memref<1x1x64x16xf32>)
        state(%acc, %max, %sum : memref<4x16xf32>, memref<4xf32>, memref<4xf32>)
        at(%b, %h, %h, %c0) attributes {scale = 0.125 : f32, tile_size = array<i64: 4, 16>}
    // expected-error @+1 {{'flexattn.finalize' op flexattn-split-kv does not merge attention sinks or max_scores across KV ranges yet}}
    flexattn.finalize state(%acc, %max, %sum : memref<4x16xf32>, memref<4xf32>, memref<4xf32>)
        sinks(%s : memref<1xf32>) outs(%o : memref<1x1x4x16xf32>) at(%b, %h, %c0)
    scf.reduce
  }
  return
}

