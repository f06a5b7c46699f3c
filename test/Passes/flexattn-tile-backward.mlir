// RUN: flexattn-opt %s -split-input-file -flexattn-tile="tile-q=32 tile-kv=16" -verify-diagnostics | FileCheck %s

// flexattn-tile on flexattn.attention_backward: delta, zeroed capture
// gradients, a parallel KV-outer nest for dk/dv and a Q-outer nest for dq
// (sequential here: a capture takes a gradient). GQA 4/2, a 64 x 32 block
// mask: the visited tiles are its blocks, the outer tiles (32 rows, 16 keys)
// divide them.

// CHECK-LABEL: func.func @gqa_block_mask(
// CHECK-SAME:    %[[Q:[^:]+]]: memref<1x4x100x16xf32>, %[[K:[^:]+]]: memref<1x2x80x16xf32>, %[[V:[^:]+]]: memref<1x2x80x8xf32>, %[[O:[^:]+]]: memref<1x4x100x8xf32>, %[[DO:[^:]+]]: memref<1x4x100x8xf32>, %[[LSE:[^:]+]]: memref<1x4x100xf32>, %[[DLSE:[^:]+]]: memref<1x4x100xf32>, %[[DQ:[^:]+]]: memref<1x4x100x16xf32>, %[[DK:[^:]+]]: memref<1x2x80x16xf32>, %[[DV:[^:]+]]: memref<1x2x80x8xf32>, %[[KN:[^:]+]]: memref<1x1x2xi32>, %[[KI:[^:]+]]: memref<1x1x2x3xi32>, %[[QN:[^:]+]]: memref<1x1x3xi32>, %[[QI:[^:]+]]: memref<1x1x3x2xi32>, %[[W:[^:]+]]: memref<4xf32>, %[[DW:[^:]+]]: memref<4xf32>)
// delta = rowsum(dout * out) - dlse, on the heap ([B, Hq, M], not M x N)
// CHECK:         %[[DELTA:.+]] = memref.alloc() : memref<1x4x100xf32>
// CHECK-NEXT:    %[[Z:.+]] = arith.constant 0.000000e+00 : f32
// CHECK-NEXT:    linalg.fill ins(%[[Z]] : f32) outs(%[[DELTA]] : memref<1x4x100xf32>)
// CHECK-NEXT:    linalg.generic {{.*}} iterator_types = ["parallel", "parallel", "parallel", "reduction"]} ins(%[[DO]], %[[O]] : {{.*}}) outs(%[[DELTA]] : memref<1x4x100xf32>)
// CHECK:         linalg.generic {{.*}} iterator_types = ["parallel", "parallel", "parallel"]} ins(%[[DLSE]] : memref<1x4x100xf32>) outs(%[[DELTA]] : memref<1x4x100xf32>)
// CHECK:           arith.subf
// capture gradients start at 0
// CHECK:         linalg.fill ins(%{{.+}} : f32) outs(%[[DW]] : memref<4xf32>)
// dk, dv: (batch, KV head, KV tile of 16), in parallel
// CHECK:         %[[KVT:.+]] = arith.ceildivui %{{.+}}, %{{.+}} : index
// CHECK:         scf.parallel (%[[B:.+]], %[[HKV:.+]], %[[T:.+]]) = (%{{.+}}, %{{.+}}, %{{.+}}) to (%{{.+}}, %[[C2:.+]], %[[KVT]])
// CHECK-NEXT:      memref.alloca_scope
// CHECK:             %[[KV0:.+]] = arith.muli %[[T]], %{{.+}} : index
// CHECK-NEXT:        %[[DKA:.+]] = memref.alloca() : memref<16x16xf32>
// CHECK:             linalg.fill ins(%{{.+}} : f32) outs(%[[DKA]] : memref<16x16xf32>)
// CHECK-NEXT:        %[[DVA:.+]] = memref.alloca() : memref<16x8xf32>
// CHECK:             linalg.fill ins(%{{.+}} : f32) outs(%[[DVA]] : memref<16x8xf32>)
// CHECK-NEXT:        flexattn.backward_q_loop ins(%[[Q]], %[[K]], %[[V]], %[[DO]] : {{.*}}) stats(%[[LSE]], %[[DELTA]] : {{.*}}) dk(%[[DKA]] : memref<16x16xf32>) dv(%[[DVA]] : memref<16x8xf32>) at(%[[B]], %[[HKV]], %[[KV0]]) q_block_mask(%[[QN]], %[[QI]] : {{.*}}) captures(%[[W]] : memref<4xf32>) attributes {block_size = array<i64: 64, 32>, grad_captures = array<i64: 0>, scale = 2.500000e-01 : f32, tile_size = array<i64: 64, 16>, vjp_loads = array<i64: 0>} score_mod_vjp {
// CHECK:             } mask_mod {
// CHECK:             flexattn.store_tile %[[DKA]] : memref<16x16xf32> into %[[DK]] : memref<1x2x80x16xf32> at(%[[B]], %[[HKV]], %[[KV0]])
// CHECK-NEXT:        flexattn.store_tile %[[DVA]] : memref<16x8xf32> into %[[DV]] : memref<1x2x80x8xf32> at(%[[B]], %[[HKV]], %[[KV0]])
// dq and the capture gradients: (batch, query head, Q tile of 32), in order
// CHECK:         scf.for %[[B2:.+]] = %{{.+}} to %{{.+}} step
// CHECK-NEXT:      scf.for %[[H:.+]] = %{{.+}} to %{{.+}} step
// CHECK-NEXT:        scf.for %[[QT:.+]] = %{{.+}} to %{{.+}} step
// CHECK-NEXT:          memref.alloca_scope
// CHECK-NEXT:            %[[HKV2:.+]] = arith.divui %[[H]], %{{.+}} : index
// CHECK:                 %[[Q0:.+]] = arith.muli %[[QT]], %{{.+}} : index
// CHECK-NEXT:            %[[DQA:.+]] = memref.alloca() : memref<32x16xf32>
// CHECK:                 flexattn.backward_kv_loop ins(%[[Q]], %[[K]], %[[V]], %[[DO]] : {{.*}}) stats(%[[LSE]], %[[DELTA]] : {{.*}}) dq(%[[DQA]] : memref<32x16xf32>) at(%[[B2]], %[[H]], %[[HKV2]], %[[Q0]]) block_mask(%[[KN]], %[[KI]] : {{.*}}) captures(%[[W]] : memref<4xf32>) capture_grads(%[[DW]] : memref<4xf32>) attributes {block_size = array<i64: 64, 32>, grad_captures = array<i64: 0>, scale = 2.500000e-01 : f32, tile_size = array<i64: 32, 32>, vjp_loads = array<i64: 0>} score_mod_vjp {
// CHECK:                 flexattn.store_tile %[[DQA]] : memref<32x16xf32> into %[[DQ]] : memref<1x4x100x16xf32> at(%[[B2]], %[[H]], %[[Q0]])
// CHECK:         memref.dealloc %[[DELTA]] : memref<1x4x100xf32>
// CHECK-NOT:     flexattn.attention_backward
func.func @gqa_block_mask(%q: memref<1x4x100x16xf32>, %k: memref<1x2x80x16xf32>, %v: memref<1x2x80x8xf32>,
                          %o: memref<1x4x100x8xf32>, %do: memref<1x4x100x8xf32>, %lse: memref<1x4x100xf32>,
                          %dlse: memref<1x4x100xf32>,
                          %dq: memref<1x4x100x16xf32>, %dk: memref<1x2x80x16xf32>, %dv: memref<1x2x80x8xf32>,
                          %kn: memref<1x1x2xi32>, %ki: memref<1x1x2x3xi32>, %qn: memref<1x1x3xi32>, %qi: memref<1x1x3x2xi32>,
                          %w: memref<4xf32>, %dw: memref<4xf32>) {
  flexattn.attention_backward ins(%q, %k, %v : memref<1x4x100x16xf32>, memref<1x2x80x16xf32>, memref<1x2x80x8xf32>)
      out(%o : memref<1x4x100x8xf32>) dout(%do : memref<1x4x100x8xf32>) lse(%lse : memref<1x4x100xf32>)
      dlse(%dlse : memref<1x4x100xf32>)
      grads(%dq, %dk, %dv : memref<1x4x100x16xf32>, memref<1x2x80x16xf32>, memref<1x2x80x8xf32>)
      block_mask(%kn, %ki : memref<1x1x2xi32>, memref<1x1x2x3xi32>)
      q_block_mask(%qn, %qi : memref<1x1x3xi32>, memref<1x1x3x2xi32>)
      captures(%w : memref<4xf32>) capture_grads(%dw : memref<4xf32>)
      attributes {scale = 0.25 : f32, block_size = array<i64: 64, 32>, grad_captures = array<i64: 0>, vjp_loads = array<i64: 0>}
    score_mod {
    ^bb0(%s: f32, %b: i32, %h: i32, %x: i32, %y: i32, %c: memref<4xf32>):
      %hi = arith.index_cast %h : i32 to index
      %wh = memref.load %c[%hi] : memref<4xf32>
      %r = arith.addf %s, %wh : f32
      flexattn.yield %r : f32
    } mask_mod {
    ^bb0(%b: i32, %h: i32, %x: i32, %y: i32, %c: memref<4xf32>):
      %keep = arith.cmpi sge, %x, %y : i32
      flexattn.yield %keep : i1
    } score_mod_vjp {
    ^bb0(%s: f32, %b: i32, %h: i32, %x: i32, %y: i32, %c: memref<4xf32>, %dy: f32):
      %hi = arith.index_cast %h : i32 to index
      %wh = memref.load %c[%hi] : memref<4xf32>
      %r = arith.addf %s, %wh : f32
      flexattn.yield %r, %dy, %dy, %hi : f32, f32, f32, index
    }
  return
}

// -----

// No capture gradient, no block mask, no dlse: both nests are parallel, no
// subtraction in delta, and the tiles are the requested 32 x 16.

// CHECK-LABEL: func.func @dense(
// CHECK-NOT:     arith.subf
// CHECK:         scf.parallel
// CHECK:           flexattn.backward_q_loop {{.*}} attributes {scale = 1.000000e+00 : f32, tile_size = array<i64: 32, 16>}{{ *$}}
// CHECK:         scf.parallel
// CHECK:           flexattn.backward_kv_loop {{.*}} attributes {scale = 1.000000e+00 : f32, tile_size = array<i64: 32, 16>}{{ *$}}
// CHECK-NOT:     scf.for
func.func @dense(%q: memref<1x2x64x16xf32>, %o: memref<1x2x64x16xf32>, %l: memref<1x2x64xf32>) {
  flexattn.attention_backward ins(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>)
      out(%o : memref<1x2x64x16xf32>) dout(%o : memref<1x2x64x16xf32>) lse(%l : memref<1x2x64xf32>)
      grads(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>)
      attributes {scale = 1.0 : f32}
  return
}

// -----

func.func @not_differentiated(%q: memref<1x2x64x16xf32>, %o: memref<1x2x64x16xf32>, %l: memref<1x2x64xf32>) {
  // expected-error @+1 {{'flexattn.attention_backward' op has a score_mod but no score_mod_vjp: run flexattn-differentiate-mods first}}
  flexattn.attention_backward ins(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>)
      out(%o : memref<1x2x64x16xf32>) dout(%o : memref<1x2x64x16xf32>) lse(%l : memref<1x2x64xf32>)
      grads(%q, %q, %q : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>)
      attributes {scale = 1.0 : f32}
    score_mod {
    ^bb0(%s: f32, %b: i32, %h: i32, %x: i32, %y: i32):
      %t = math.tanh %s : f32
      flexattn.yield %t : f32
    }
  return
}
