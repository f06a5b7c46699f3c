// RUN: flexattn-opt %s -split-input-file -flexattn-split-full-tiles | FileCheck %s
// RUN: flexattn-opt %s -split-input-file -flexattn-split-full-tiles -flexattn-fuse-online-softmax -canonicalize | FileCheck %s --check-prefix=FUSED

// M = 100 is not a multiple of BM = 32: both the Q and the KV extent are
// checked. The full copy reads views cut at q0 + BM and kv0 + BN; the other
// copy is the op as it was.

// CHECK-LABEL: func.func @step_checks_q_and_kv(
// CHECK-SAME:    %[[Q:[^:]+]]: memref<1x2x100x16xf32>, %[[K:[^:]+]]: memref<1x2x80x16xf32>, %[[V:[^:]+]]: memref<1x2x80x8xf32>, %[[ACC:[^:]+]]: memref<32x8xf32>, %[[M:[^:]+]]: memref<32xf32>, %[[L:[^:]+]]: memref<32xf32>, %[[B:[^:]+]]: index, %[[H:[^:]+]]: index, %[[HKV:[^:]+]]: index, %[[Q0:[^:]+]]: index, %[[KV0:[^:]+]]: index)
// CHECK:         %[[QE:.+]] = arith.addi %[[Q0]], %c32 : index
// CHECK:         %[[QIN:.+]] = arith.cmpi sle, %[[QE]], %c100 : index
// CHECK:         %[[KVE:.+]] = arith.addi %[[KV0]], %c16 : index
// CHECK:         %[[KVIN:.+]] = arith.cmpi sle, %[[KVE]], %c80 : index
// CHECK:         %[[IN:.+]] = arith.andi %[[QIN]], %[[KVIN]] : i1
// CHECK:         scf.if %[[IN]] {
// CHECK:           %[[QC:.+]] = memref.subview %[[Q]][0, 0, 0, 0] [1, 2, %[[QE]], 16] [1, 1, 1, 1] : memref<1x2x100x16xf32> to memref<1x2x?x16xf32, strided<[3200, 1600, 16, 1]>>
// CHECK:           %[[KC:.+]] = memref.subview %[[K]][0, 0, 0, 0] [1, 2, %[[KVE]], 16] [1, 1, 1, 1] : memref<1x2x80x16xf32> to memref<1x2x?x16xf32, strided<[2560, 1280, 16, 1]>>
// CHECK:           %[[VC:.+]] = memref.subview %[[V]][0, 0, 0, 0] [1, 2, %[[KVE]], 8] [1, 1, 1, 1] : memref<1x2x80x8xf32> to memref<1x2x?x8xf32, strided<[1280, 640, 8, 1]>>
// CHECK-NEXT:      flexattn.tile_step ins(%[[QC]], %[[KC]], %[[VC]] : {{.*}}) state(%[[ACC]], %[[M]], %[[L]] : {{.*}}) at(%[[B]], %[[H]], %[[HKV]], %[[Q0]], %[[KV0]])
// CHECK-SAME:        attributes {masked, scale = 2.500000e-01 : f32, tile_size = array<i64: 32, 16>} mask_mod {
// CHECK:         } else {
// CHECK-NEXT:      flexattn.tile_step ins(%[[Q]], %[[K]], %[[V]] : memref<1x2x100x16xf32>, memref<1x2x80x16xf32>, memref<1x2x80x8xf32>) state(%[[ACC]], %[[M]], %[[L]] : {{.*}}) at(%[[B]], %[[H]], %[[HKV]], %[[Q0]], %[[KV0]])
// CHECK-SAME:        attributes {masked, scale = 2.500000e-01 : f32, tile_size = array<i64: 32, 16>} mask_mod {
// CHECK:         }
// CHECK-NOT:     flexattn.tile_step
// CHECK:         return

// After fusion and canonicalisation the full copy's tiles are static, the
// edge copy's stay dynamic.
// FUSED-LABEL: func.func @step_checks_q_and_kv(
// FUSED:         scf.if
// FUSED:           linalg.generic {{.*}} ins(%{{.+}}, %{{.+}} : memref<32x16xf32, strided<[16, 1], offset: ?>>, memref<16x16xf32, strided<[16, 1], offset: ?>>) outs(%{{.+}} : memref<32x16xf32>)
// FUSED:         } else {
// FUSED:           linalg.generic {{.*}} ins(%{{.+}}, %{{.+}} : memref<?x16xf32, strided<[16, 1], offset: ?>>, memref<?x16xf32, strided<[16, 1], offset: ?>>) outs(%{{.+}} : memref<?x?xf32, strided<[16, 1]>>)
func.func @step_checks_q_and_kv(%q: memref<1x2x100x16xf32>, %k: memref<1x2x80x16xf32>, %v: memref<1x2x80x8xf32>,
                                %acc: memref<32x8xf32>, %m: memref<32xf32>, %l: memref<32xf32>,
                                %b: index, %h: index, %hkv: index, %q0: index, %kv0: index) {
  flexattn.tile_step ins(%q, %k, %v : memref<1x2x100x16xf32>, memref<1x2x80x16xf32>, memref<1x2x80x8xf32>)
      state(%acc, %m, %l : memref<32x8xf32>, memref<32xf32>, memref<32xf32>)
      at(%b, %h, %hkv, %q0, %kv0) attributes {masked, scale = 0.25 : f32, tile_size = array<i64: 32, 16>}
    mask_mod {
    ^bb0(%bb: index, %hh: index, %qi: index, %ki: index):
      %keep = arith.cmpi sge, %qi, %ki : index
      flexattn.yield %keep : i1
    }
  return
}

// -----

// BM = 32 divides M = 64: every Q tile is full (flexattn-tile makes q0 a
// multiple of BM below M), only kv0 is checked.

// CHECK-LABEL: func.func @step_checks_kv_only(
// CHECK-SAME:    %[[Q0:[^:]+]]: index, %[[KV0:[^:]+]]: index)
// CHECK-NOT:     arith.cmpi sle, %{{.+}}, %c64
// CHECK:         %[[KVE:.+]] = arith.addi %[[KV0]], %{{.+}} : index
// CHECK-NEXT:    %[[KVIN:.+]] = arith.cmpi sle, %[[KVE]], %{{.+}} : index
// CHECK-NEXT:    scf.if %[[KVIN]] {
func.func @step_checks_kv_only(%q: memref<1x1x64x16xf32>, %k: memref<1x1x64x16xf32>, %v: memref<1x1x64x16xf32>,
                               %acc: memref<32x16xf32>, %m: memref<32xf32>, %l: memref<32xf32>,
                               %i: index, %q0: index, %kv0: index) {
  flexattn.tile_step ins(%q, %k, %v : memref<1x1x64x16xf32>, memref<1x1x64x16xf32>, memref<1x1x64x16xf32>)
      state(%acc, %m, %l : memref<32x16xf32>, memref<32xf32>, memref<32xf32>)
      at(%i, %i, %i, %q0, %kv0) attributes {scale = 0.25 : f32, tile_size = array<i64: 32, 32>}
  return
}

// -----

// finalize: with BM dividing M the full copy replaces the op outright (out and
// lse views cut at q0 + BM); otherwise it is versioned on q0 + BM <= M.

// CHECK-LABEL: func.func @finalize_full(
// CHECK-SAME:    %[[O:[^:]+]]: memref<1x1x64x16xf32>, %[[LSE:[^:]+]]: memref<1x1x64xf32>, %[[I:[^:]+]]: index, %[[Q0:[^:]+]]: index)
// CHECK-NOT:     scf.if
// CHECK:         %[[QE:.+]] = arith.addi %[[Q0]], %{{.+}} : index
// CHECK:         %[[OC:.+]] = memref.subview %[[O]][0, 0, 0, 0] [1, 1, %[[QE]], 16] [1, 1, 1, 1]
// CHECK:         %[[LC:.+]] = memref.subview %[[LSE]][0, 0, 0] [1, 1, %[[QE]]] [1, 1, 1]
// CHECK-NEXT:    flexattn.finalize state({{.*}}) outs(%[[OC]] : {{.*}}) lse(%[[LC]] : {{.*}}) at(%[[I]], %[[I]], %[[Q0]])
// CHECK-NEXT:    return

// FUSED-LABEL: func.func @finalize_full(
// FUSED:         linalg.generic {{.*}} ins(%{{.+}}, %{{.+}} : memref<32x16xf32>, memref<32xf32>) outs(%{{.+}} : memref<32x16xf32, strided<[16, 1], offset: ?>>)
func.func @finalize_full(%acc: memref<32x16xf32>, %m: memref<32xf32>, %l: memref<32xf32>,
                         %o: memref<1x1x64x16xf32>, %lse: memref<1x1x64xf32>, %i: index, %q0: index) {
  flexattn.finalize state(%acc, %m, %l : memref<32x16xf32>, memref<32xf32>, memref<32xf32>)
      outs(%o : memref<1x1x64x16xf32>) lse(%lse : memref<1x1x64xf32>) at(%i, %i, %q0)
  return
}

// -----

// CHECK-LABEL: func.func @finalize_edge(
// CHECK-SAME:    %[[O:[^:]+]]: memref<1x1x40x16xf32>, %[[I:[^:]+]]: index, %[[Q0:[^:]+]]: index)
// CHECK:         %[[QE:.+]] = arith.addi %[[Q0]], %{{.+}} : index
// CHECK:         %[[QIN:.+]] = arith.cmpi sle, %[[QE]], %{{.+}} : index
// CHECK:         scf.if %[[QIN]] {
// CHECK:           %[[OC:.+]] = memref.subview %[[O]][0, 0, 0, 0] [1, 1, %[[QE]], 16] [1, 1, 1, 1]
// CHECK-NEXT:      flexattn.finalize state({{.*}}) outs(%[[OC]] : {{.*}}) at(%[[I]], %[[I]], %[[Q0]])
// CHECK-NEXT:    } else {
// CHECK-NEXT:      flexattn.finalize state({{.*}}) outs(%[[O]] : memref<1x1x40x16xf32>) at(%[[I]], %[[I]], %[[Q0]])
// CHECK-NEXT:    }
func.func @finalize_edge(%acc: memref<32x16xf32>, %m: memref<32xf32>, %l: memref<32xf32>,
                         %o: memref<1x1x40x16xf32>, %i: index, %q0: index) {
  flexattn.finalize state(%acc, %m, %l : memref<32x16xf32>, memref<32xf32>, memref<32xf32>)
      outs(%o : memref<1x1x40x16xf32>) at(%i, %i, %q0)
  return
}
