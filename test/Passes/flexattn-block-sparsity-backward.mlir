// RUN: flexattn-opt %s -split-input-file -flexattn-block-sparsity | FileCheck %s

// The backward loops. backward_q_loop (one KV tile, kv0 = 16 of a 32-key
// block): for each query head of the KV group (Hq / Hkv = 2), the Q blocks
// its q-side lists name for KV block kb = kv0 / 32, partial ones masked,
// full ones not.

// CHECK-LABEL: func.func @q_loop(
// CHECK-SAME:    %[[Q:[^:]+]]: memref<1x4x100x16xf32>, %[[K:[^:]+]]: memref<1x2x80x16xf32>, %[[V:[^:]+]]: memref<1x2x80x8xf32>, %[[DO:[^:]+]]: memref<1x4x100x8xf32>, %[[L:[^:]+]]: memref<1x4x100xf32>, %[[DK:[^:]+]]: memref<16x16xf32>, %[[DV:[^:]+]]: memref<16x8xf32>, %[[QN:[^:]+]]: memref<1x1x3xi32>, %[[QI:[^:]+]]: memref<1x1x3x2xi32>, %[[FN:[^:]+]]: memref<1x1x3xi32>, %[[FI:[^:]+]]: memref<1x1x3x2xi32>, %[[B:[^:]+]]: index, %[[HKV:[^:]+]]: index, %[[KV0:[^:]+]]: index)
// CHECK-DAG:     %[[C32:.+]] = arith.constant 32 : index
// CHECK-DAG:     %[[KB:.+]] = arith.divui %[[KV0]], %[[C32]] : index
// CHECK-DAG:     %[[G:.+]] = arith.divui %{{.+}}, %{{.+}} : index
// CHECK:         scf.for %[[GI:.+]] = %{{.+}} to %[[G]] step %{{.+}} {
// CHECK-NEXT:      %[[HB:.+]] = arith.muli %[[HKV]], %[[G]] : index
// CHECK-NEXT:      %[[H:.+]] = arith.addi %[[HB]], %[[GI]] : index
// CHECK:           %[[N:.+]] = memref.load %[[QN]][%{{.+}}, %{{.+}}, %[[KB]]] : memref<1x1x3xi32>
// CHECK:           scf.for %[[J:.+]] = %{{.+}} to %{{.+}} step %{{.+}} {
// CHECK-NEXT:        %[[BLK:.+]] = memref.load %[[QI]][%{{.+}}, %{{.+}}, %[[KB]], %[[J]]] : memref<1x1x3x2xi32>
// CHECK-NEXT:        %[[BLKI:.+]] = arith.index_cast %[[BLK]] : i32 to index
// CHECK-NEXT:        %[[Q0:.+]] = arith.muli %[[BLKI]], %{{.+}} : index
// CHECK-NEXT:        flexattn.backward_step ins(%[[Q]], %[[K]], %[[V]], %[[DO]] : {{.*}}) stats(%[[L]], %[[L]] : {{.*}}) dk(%[[DK]] : memref<16x16xf32>) dv(%[[DV]] : memref<16x8xf32>) at(%[[B]], %[[H]], %[[HKV]], %[[Q0]], %[[KV0]]) attributes {masked, scale = 1.000000e+00 : f32, tile_size = array<i64: 64, 16>} mask_mod {
// CHECK:           memref.load %[[FN]]
// CHECK:           scf.for
// CHECK:             memref.load %[[FI]]
// CHECK:             flexattn.backward_step {{.*}} at(%[[B]], %[[H]], %[[HKV]], %{{.+}}, %[[KV0]]) attributes {scale = 1.000000e+00 : f32, tile_size = array<i64: 64, 16>}{{ *$}}
// CHECK-NOT:     flexattn.backward_q_loop
func.func @q_loop(%q: memref<1x4x100x16xf32>, %k: memref<1x2x80x16xf32>, %v: memref<1x2x80x8xf32>,
                  %do: memref<1x4x100x8xf32>, %l: memref<1x4x100xf32>,
                  %dk: memref<16x16xf32>, %dv: memref<16x8xf32>,
                  %qn: memref<1x1x3xi32>, %qi: memref<1x1x3x2xi32>, %fn: memref<1x1x3xi32>, %fi: memref<1x1x3x2xi32>,
                  %b: index, %hkv: index, %kv0: index) {
  flexattn.backward_q_loop ins(%q, %k, %v, %do : memref<1x4x100x16xf32>, memref<1x2x80x16xf32>, memref<1x2x80x8xf32>, memref<1x4x100x8xf32>)
      stats(%l, %l : memref<1x4x100xf32>, memref<1x4x100xf32>)
      dk(%dk : memref<16x16xf32>) dv(%dv : memref<16x8xf32>) at(%b, %hkv, %kv0)
      q_block_mask(%qn, %qi : memref<1x1x3xi32>, memref<1x1x3x2xi32>)
      full_q_blocks(%fn, %fi : memref<1x1x3xi32>, memref<1x1x3x2xi32>)
      attributes {scale = 1.0 : f32, tile_size = array<i64: 64, 16>, block_size = array<i64: 64, 32>}
    mask_mod {
    ^bb0(%bb: index, %hh: index, %x: index, %y: index):
      %keep = arith.cmpi sge, %x, %y : index
      flexattn.yield %keep : i1
    }
  return
}

// -----

// Without a block mask: every Q tile of BM = 32 rows (no mask_mod: not
// `masked`).

// CHECK-LABEL: func.func @q_loop_dense(
// CHECK:         scf.for %{{.+}} = %{{.+}} to %{{.+}} step
// CHECK:           %[[QT:.+]] = arith.ceildivui %{{.+}}, %{{.+}} : index
// CHECK:           scf.for %[[J:.+]] = %{{.+}} to %[[QT]] step
// CHECK-NEXT:        %[[Q0:.+]] = arith.muli %[[J]], %{{.+}} : index
// CHECK-NEXT:        flexattn.backward_step {{.*}} at(%{{.+}}, %{{.+}}, %{{.+}}, %[[Q0]], %{{.+}}) attributes {scale = 1.000000e+00 : f32, tile_size = array<i64: 32, 16>}{{ *$}}
func.func @q_loop_dense(%q: memref<1x2x64x16xf32>, %l: memref<1x2x64xf32>, %dk: memref<16x16xf32>, %i: index) {
  flexattn.backward_q_loop ins(%q, %q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>)
      stats(%l, %l : memref<1x2x64xf32>, memref<1x2x64xf32>) dk(%dk : memref<16x16xf32>) at(%i, %i, %i)
      attributes {scale = 1.0 : f32, tile_size = array<i64: 32, 16>}
  return
}

// -----

// backward_kv_loop: the kv-side lists of query block q0 / 64, like
// kv_loop; the capture gradients and the score_mod_vjp go to every step.

// CHECK-LABEL: func.func @kv_loop(
// CHECK-SAME:    %{{[^:]+}}: memref<1x2x64x16xf32>, %{{[^:]+}}: memref<1x2x64xf32>, %[[DQ:[^:]+]]: memref<32x16xf32>, %[[KN:[^:]+]]: memref<1x1x1xi32>, %[[KI:[^:]+]]: memref<1x1x1x2xi32>, %[[W:[^:]+]]: memref<4xf32>, %[[DW:[^:]+]]: memref<4xf32>, %[[B:[^:]+]]: index, %[[H:[^:]+]]: index, %[[HKV:[^:]+]]: index, %[[Q0:[^:]+]]: index)
// CHECK:         %[[QB:.+]] = arith.divui %[[Q0]], %{{.+}} : index
// CHECK:         memref.load %[[KN]][%{{.+}}, %{{.+}}, %[[QB]]]
// CHECK:         scf.for %[[J:.+]] =
// CHECK-NEXT:      %[[BLK:.+]] = memref.load %[[KI]][%{{.+}}, %{{.+}}, %[[QB]], %[[J]]]
// CHECK-NEXT:      %[[BLKI:.+]] = arith.index_cast %[[BLK]] : i32 to index
// CHECK-NEXT:      %[[KV0:.+]] = arith.muli %[[BLKI]], %{{.+}} : index
// CHECK-NEXT:      flexattn.backward_step {{.*}} dq(%[[DQ]] : memref<32x16xf32>) at(%[[B]], %[[H]], %[[HKV]], %[[Q0]], %[[KV0]]) captures(%[[W]] : memref<4xf32>) capture_grads(%[[DW]] : memref<4xf32>) attributes {grad_captures = array<i64: 0>, scale = 1.000000e+00 : f32, tile_size = array<i64: 32, 32>, vjp_loads = array<i64: 0>} score_mod_vjp {
func.func @kv_loop(%q: memref<1x2x64x16xf32>, %l: memref<1x2x64xf32>, %dq: memref<32x16xf32>,
                   %kn: memref<1x1x1xi32>, %ki: memref<1x1x1x2xi32>, %w: memref<4xf32>, %dw: memref<4xf32>,
                   %b: index, %h: index, %hkv: index, %q0: index) {
  flexattn.backward_kv_loop ins(%q, %q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>)
      stats(%l, %l : memref<1x2x64xf32>, memref<1x2x64xf32>) dq(%dq : memref<32x16xf32>) at(%b, %h, %hkv, %q0)
      block_mask(%kn, %ki : memref<1x1x1xi32>, memref<1x1x1x2xi32>)
      captures(%w : memref<4xf32>) capture_grads(%dw : memref<4xf32>)
      attributes {scale = 1.0 : f32, tile_size = array<i64: 32, 32>, block_size = array<i64: 64, 32>,
                  grad_captures = array<i64: 0>, vjp_loads = array<i64: 0>}
    score_mod_vjp {
    ^bb0(%s: f32, %bb: i32, %hh: i32, %x: i32, %y: i32, %c: memref<4xf32>, %dy: f32):
      %hi = arith.index_cast %hh : i32 to index
      %wh = memref.load %c[%hi] : memref<4xf32>
      %r = arith.addf %s, %wh : f32
      flexattn.yield %r, %dy, %dy, %hi : f32, f32, f32, index
    }
  return
}
