// RUN: flexattn-opt %s -split-input-file -verify-diagnostics -flexattn-lower-to-loops | FileCheck %s

// The linalg ops flexattn-fuse-online-softmax makes become scf.for nests of
// memref loads and stores; nothing of linalg remains.

// CHECK-LABEL: func.func @fill_and_rowmax(
// CHECK-SAME:    %[[S:[^:]+]]: memref<?x?xf32, strided<[16, 1]>>, %[[M:[^:]+]]: memref<?xf32, strided<[1]>>)
// CHECK-NOT:     linalg.
// CHECK:         %[[ZERO:.+]] = arith.constant 0.000000e+00 : f32
// CHECK:         %[[ROWS:.+]] = memref.dim %[[S]], %{{.+}}
// CHECK:         %[[COLS:.+]] = memref.dim %[[S]], %{{.+}}
// S = 0
// CHECK:         scf.for %{{.+}} = %{{.+}} to %[[ROWS]] step
// CHECK-NEXT:      scf.for %{{.+}} = %{{.+}} to %[[COLS]] step
// CHECK-NOT:         linalg.
// CHECK:             memref.store %[[ZERO]], %[[S]][%{{.+}}, %{{.+}}]
// CHECK-NEXT:      }
// CHECK-NEXT:    }
// m = max(m, rowmax(S)): the reduction is the inner loop.
// CHECK:         %[[ROWS2:.+]] = memref.dim %[[S]], %{{.+}}
// CHECK:         %[[COLS2:.+]] = memref.dim %[[S]], %{{.+}}
// CHECK:         scf.for %{{.+}} = %{{.+}} to %[[ROWS2]] step
// CHECK-NEXT:      scf.for %{{.+}} = %{{.+}} to %[[COLS2]] step
// CHECK:             %[[SV:.+]] = memref.load %[[S]][%{{.+}}, %{{.+}}]
// CHECK:             %[[MV:.+]] = memref.load %[[M]][%{{.+}}]
// CHECK:             %[[MX:.+]] = arith.maximumf %[[SV]], %[[MV]] : f32
// CHECK-NEXT:        memref.store %[[MX]], %[[M]][%{{.+}}]
// CHECK-NEXT:      }
// CHECK-NEXT:    }
// CHECK-NOT:     linalg.
// CHECK:         return
#ij = affine_map<(d0, d1) -> (d0, d1)>
#i = affine_map<(d0, d1) -> (d0)>
func.func @fill_and_rowmax(%s: memref<?x?xf32, strided<[16, 1]>>, %m: memref<?xf32, strided<[1]>>) {
  %zero = arith.constant 0.0 : f32
  linalg.fill ins(%zero : f32) outs(%s : memref<?x?xf32, strided<[16, 1]>>)
  linalg.generic {indexing_maps = [#ij, #i], iterator_types = ["parallel", "reduction"]}
      ins(%s : memref<?x?xf32, strided<[16, 1]>>) outs(%m : memref<?xf32, strided<[1]>>) {
  ^bb0(%x: f32, %acc: f32):
    %r = arith.maximumf %x, %acc : f32
    linalg.yield %r : f32
  }
  return
}

// -----

// A matmul-shaped generic (S = Q . Kᵀ, bf16 in, f32 out), a copy and a
// generic using linalg.index, inside an alloca scope the earlier passes make
// (dissolved: it holds no alloca): three loops, the reduction innermost; the
// indices become induction variables.

// CHECK-LABEL: func.func @qk_copy_index(
// CHECK-SAME:    %[[Q:[^:]+]]: memref<32x8xbf16>, %[[K:[^:]+]]: memref<16x8xbf16>, %[[S:[^:]+]]: memref<32x16xf32>, %[[A:[^:]+]]: memref<32xf32>, %[[B:[^:]+]]: memref<32xf32>)
// CHECK-NOT:     linalg.
// CHECK-NOT:     memref.alloca_scope
// S = Q . Kᵀ: (i, j) parallel, d the innermost reduction.
// CHECK-DAG:       %[[C32:.+]] = arith.constant 32 : index
// CHECK-DAG:       %[[C16:.+]] = arith.constant 16 : index
// CHECK-DAG:       %[[C8:.+]] = arith.constant 8 : index
// CHECK:           scf.for %{{.+}} = %{{.+}} to %[[C32]] step
// CHECK-NEXT:        scf.for %{{.+}} = %{{.+}} to %[[C16]] step
// CHECK-NEXT:          scf.for %{{.+}} = %{{.+}} to %[[C8]] step
// CHECK:                 %[[QV:.+]] = memref.load %[[Q]][%{{.+}}, %{{.+}}] : memref<32x8xbf16>
// CHECK:                 %[[KV:.+]] = memref.load %[[K]][%{{.+}}, %{{.+}}] : memref<16x8xbf16>
// CHECK:                 %[[SV:.+]] = memref.load %[[S]][%{{.+}}, %{{.+}}] : memref<32x16xf32>
// CHECK-DAG:             %[[QF:.+]] = arith.extf %[[QV]] : bf16 to f32
// CHECK-DAG:             %[[KF:.+]] = arith.extf %[[KV]] : bf16 to f32
// CHECK:                 %[[P:.+]] = arith.mulf %[[QF]], %[[KF]] : f32
// CHECK-NEXT:            %[[R:.+]] = arith.addf %[[SV]], %[[P]] : f32
// CHECK-NEXT:            memref.store %[[R]], %[[S]][%{{.+}}, %{{.+}}] : memref<32x16xf32>
// CHECK-NEXT:          }
// CHECK-NEXT:        }
// CHECK-NEXT:      }
// The copy.
// CHECK:           scf.for
// CHECK:             %[[AV:.+]] = memref.load %[[A]][%{{.+}}] : memref<32xf32>
// CHECK:             memref.store %[[AV]], %[[B]][%{{.+}}] : memref<32xf32>
// CHECK-NEXT:      }
// linalg.index i / j become the induction variables.
// CHECK:           scf.for %[[I:.+]] = %{{.+}} to %{{.+}} step
// CHECK-NEXT:        scf.for %[[J:.+]] = %{{.+}} to %{{.+}} step
// CHECK:               arith.cmpi sge, %[[I]], %[[J]] : index
// CHECK:               memref.store %{{.+}}, %[[S]]
// CHECK-NOT:     linalg.
// CHECK:         return
#qk_q = affine_map<(d0, d1, d2) -> (d0, d2)>
#qk_k = affine_map<(d0, d1, d2) -> (d1, d2)>
#qk_s = affine_map<(d0, d1, d2) -> (d0, d1)>
#ij = affine_map<(d0, d1) -> (d0, d1)>
func.func @qk_copy_index(%q: memref<32x8xbf16>, %k: memref<16x8xbf16>, %s: memref<32x16xf32>,
                         %a: memref<32xf32>, %b: memref<32xf32>) {
  memref.alloca_scope {
    linalg.generic {indexing_maps = [#qk_q, #qk_k, #qk_s], iterator_types = ["parallel", "parallel", "reduction"]}
        ins(%q, %k : memref<32x8xbf16>, memref<16x8xbf16>) outs(%s : memref<32x16xf32>) {
    ^bb0(%x: bf16, %y: bf16, %acc: f32):
      %xf = arith.extf %x : bf16 to f32
      %yf = arith.extf %y : bf16 to f32
      %p = arith.mulf %xf, %yf : f32
      %r = arith.addf %acc, %p : f32
      linalg.yield %r : f32
    }
    linalg.copy ins(%a : memref<32xf32>) outs(%b : memref<32xf32>)
    linalg.generic {indexing_maps = [#ij], iterator_types = ["parallel", "parallel"]} outs(%s : memref<32x16xf32>) {
    ^bb0(%x: f32):
      %i = linalg.index 0 : index
      %j = linalg.index 1 : index
      %keep = arith.cmpi sge, %i, %j : index
      %ninf = arith.constant 0xFF800000 : f32
      %r = arith.select %keep, %x, %ninf : f32
      linalg.yield %r : f32
    }
  }
  return
}

// -----

// Any flexattn op still present is an ordering error naming the pass to run
// first.

func.func @attention_left(%q: memref<1x1x8x8xf32>, %o: memref<1x1x8x8xf32>) {
  // expected-error @+1 {{'flexattn.attention' op must be lowered before flexattn-lower-to-loops; run flexattn-tile first}}
  flexattn.attention ins(%q, %q, %q : memref<1x1x8x8xf32>, memref<1x1x8x8xf32>, memref<1x1x8x8xf32>)
      outs(%o : memref<1x1x8x8xf32>) attributes {scale = 1.0 : f32}
  return
}

// -----

func.func @kv_loop_left(%q: memref<1x1x8x8xf32>, %acc: memref<8x8xf32>, %m: memref<8xf32>, %i: index) {
  // expected-error @+1 {{'flexattn.kv_loop' op must be lowered before flexattn-lower-to-loops; run flexattn-block-sparsity first}}
  flexattn.kv_loop ins(%q, %q, %q : memref<1x1x8x8xf32>, memref<1x1x8x8xf32>, memref<1x1x8x8xf32>)
      state(%acc, %m, %m : memref<8x8xf32>, memref<8xf32>, memref<8xf32>) at(%i, %i, %i, %i)
      attributes {scale = 1.0 : f32, tile_size = array<i64: 8, 8>}
  return
}

// -----

func.func @tile_step_left(%q: memref<1x1x8x8xf32>, %acc: memref<8x8xf32>, %m: memref<8xf32>, %i: index) {
  // expected-error @+1 {{'flexattn.tile_step' op must be lowered before flexattn-lower-to-loops; run flexattn-fuse-online-softmax first}}
  flexattn.tile_step ins(%q, %q, %q : memref<1x1x8x8xf32>, memref<1x1x8x8xf32>, memref<1x1x8x8xf32>)
      state(%acc, %m, %m : memref<8x8xf32>, memref<8xf32>, memref<8xf32>) at(%i, %i, %i, %i, %i)
      attributes {scale = 1.0 : f32, tile_size = array<i64: 8, 8>}
  return
}

// -----

func.func @finalize_left(%acc: memref<8x8xf32>, %m: memref<8xf32>, %o: memref<1x1x8x8xf32>, %i: index) {
  // expected-error @+1 {{'flexattn.finalize' op must be lowered before flexattn-lower-to-loops; run flexattn-fuse-online-softmax first}}
  flexattn.finalize state(%acc, %m, %m : memref<8x8xf32>, memref<8xf32>, memref<8xf32>)
      outs(%o : memref<1x1x8x8xf32>) at(%i, %i, %i)
  return
}

// -----

func.func @apply_mods_left(%s: f32, %i: index) -> f32 {
  // expected-error @+1 {{'flexattn.apply_mods' op must be lowered before flexattn-lower-to-loops; run flexattn-inline-mods first}}
  %r = flexattn.apply_mods %s at(%i, %i, %i, %i) : f32
  return %r : f32
}

// -----

// The Q-tile loop runs sequentially on the CPU: scf.parallel becomes an
// scf.for nest, and the tile buffers are allocated once at the function entry
// (not once per tile: the stack would grow with the sequence length).

// CHECK-LABEL: func.func @sequential_tiles(
// CHECK:         %[[ACC:.+]] = memref.alloca() : memref<64x32xf32>
// CHECK-NOT:     scf.parallel
// CHECK-NOT:     memref.alloca_scope
// CHECK:         scf.for %[[B:.+]] = %{{.+}} to %{{.+}} step
// CHECK-NEXT:      scf.for %[[T:.+]] = %{{.+}} to %{{.+}} step
// CHECK-NOT:         memref.alloca
// CHECK:             memref.store %{{.+}}, %[[ACC]]
// CHECK:             memref.load %[[ACC]]
func.func @sequential_tiles(%out: memref<2x4xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c4 = arith.constant 4 : index
  scf.parallel (%b, %t) = (%c0, %c0) to (%c2, %c4) step (%c1, %c1) {
    memref.alloca_scope {
      %acc = memref.alloca() : memref<64x32xf32>
      %one = arith.constant 1.0 : f32
      memref.store %one, %acc[%c0, %c0] : memref<64x32xf32>
      %v = memref.load %acc[%c0, %c0] : memref<64x32xf32>
      memref.store %v, %out[%b, %t] : memref<2x4xf32>
    }
    scf.reduce
  }
  return
}

// -----

// A tile buffer over 64 KiB (here 256 KiB) goes to the heap, freed at return.

// CHECK-LABEL: func.func @large_tile(
// CHECK:         %[[BIG:.+]] = memref.alloc() : memref<256x256xf32>
// CHECK-NOT:     memref.alloca() : memref<256x256xf32>
// CHECK:         memref.dealloc %[[BIG]] : memref<256x256xf32>
// CHECK-NEXT:    return
func.func @large_tile(%out: memref<2xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  scf.parallel (%t) = (%c0) to (%c2) step (%c1) {
    memref.alloca_scope {
      %tile = memref.alloca() : memref<256x256xf32>
      %one = arith.constant 1.0 : f32
      memref.store %one, %tile[%c0, %c0] : memref<256x256xf32>
      %v = memref.load %tile[%c0, %c0] : memref<256x256xf32>
      memref.store %v, %out[%t] : memref<2xf32>
    }
    scf.reduce
  }
  return
}
