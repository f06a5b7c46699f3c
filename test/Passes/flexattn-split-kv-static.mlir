// RUN: flexattn-opt %s -split-input-file -verify-diagnostics -flexattn-split-kv="splits=4 merge=false" | FileCheck %s

// splits=4 merge=false (the GPU decode kernel): static scratch, S = 4 on the
// loop, no arrival counters and no merge (the caller merges).

// CHECK-LABEL: func.func @static_splits(
// CHECK-SAME:    %{{[^:]+}}: memref<2x2x8x32xbf16>, %{{[^:]+}}: memref<2x2x8xf32>, %[[PO:[^:]+]]: memref<4x1024xf32> {flexattn.split_kv = "out"}, %[[PL:[^:]+]]: memref<4x32xf32> {flexattn.split_kv = "lse"})
// CHECK:         %[[S:.+]] = arith.constant 4 : index
// CHECK:         scf.parallel (%[[SI:.+]], %[[BI:.+]], %[[HI:.+]], %[[TI:.+]]) = {{.*}} to (%[[S]], %{{.+}}, %{{.+}}, %{{.+}}) step
// CHECK:           flexattn.kv_loop {{.*}} split(%[[SI]] of %[[S]])
// CHECK:           memref.reinterpret_cast %[[PO]] to offset: [%{{.+}}], sizes: [2, 2, 8, 32], strides: [512, 256, 32, 1] : memref<4x1024xf32> to memref<2x2x8x32xf32, strided<[512, 256, 32, 1], offset: ?>>
// CHECK:           memref.reinterpret_cast %[[PL]] to offset: [%{{.+}}], sizes: [2, 2, 8], strides: [16, 8, 1] : memref<4x32xf32> to memref<2x2x8xf32, strided<[16, 8, 1], offset: ?>>
// CHECK-NEXT:      flexattn.finalize
// CHECK-NOT:       memref.atomic_rmw
// CHECK-NOT:       scf.if
// CHECK:           scf.reduce
func.func @static_splits(%q: memref<2x2x8x64xbf16>, %k: memref<2x2x512x64xbf16>, %v: memref<2x2x512x32xbf16>,
                         %o: memref<2x2x8x32xbf16>, %lse: memref<2x2x8xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  scf.parallel (%b, %h, %qt) = (%c0, %c0, %c0) to (%c2, %c2, %c1) step (%c1, %c1, %c1) {
    memref.alloca_scope {
      %acc = memref.alloca() : memref<64x32xf32>
      %max = memref.alloca() : memref<64xf32>
      %sum = memref.alloca() : memref<64xf32>
      flexattn.kv_loop ins(%q, %k, %v : memref<2x2x8x64xbf16>, memref<2x2x512x64xbf16>, memref<2x2x512x32xbf16>)
          state(%acc, %max, %sum : memref<64x32xf32>, memref<64xf32>, memref<64xf32>)
          at(%b, %h, %h, %c0) attributes {scale = 0.125 : f32, tile_size = array<i64: 64, 128>}
      flexattn.finalize state(%acc, %max, %sum : memref<64x32xf32>, memref<64xf32>, memref<64xf32>)
          outs(%o : memref<2x2x8x32xbf16>) lse(%lse : memref<2x2x8xf32>) at(%b, %h, %c0)
    }
    scf.reduce
  }
  return
}

// -----

func.func @dynamic_out(%q: memref<?x2x8x64xbf16>, %k: memref<?x2x512x64xbf16>, %v: memref<?x2x512x32xbf16>,
                       %o: memref<?x2x8x32xbf16>, %n: index) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  scf.parallel (%b, %h, %qt) = (%c0, %c0, %c0) to (%n, %c2, %c1) step (%c1, %c1, %c1) {
    memref.alloca_scope {
      %acc = memref.alloca() : memref<64x32xf32>
      %max = memref.alloca() : memref<64xf32>
      %sum = memref.alloca() : memref<64xf32>
      flexattn.kv_loop ins(%q, %k, %v : memref<?x2x8x64xbf16>, memref<?x2x512x64xbf16>, memref<?x2x512x32xbf16>)
          state(%acc, %max, %sum : memref<64x32xf32>, memref<64xf32>, memref<64xf32>)
          at(%b, %h, %h, %c0) attributes {scale = 0.125 : f32, tile_size = array<i64: 64, 128>}
      // expected-error @+1 {{flexattn-split-kv{splits} needs a static out, got 'memref<?x2x8x32xbf16>'}}
      flexattn.finalize state(%acc, %max, %sum : memref<64x32xf32>, memref<64xf32>, memref<64xf32>)
          outs(%o : memref<?x2x8x32xbf16>) at(%b, %h, %c0)
    }
    scf.reduce
  }
  return
}
