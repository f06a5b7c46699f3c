// RUN: flexattn-opt %s -split-input-file -flexattn-decompose-backward -verify-diagnostics | FileCheck %s
// RUN: flexattn-opt %s -split-input-file -flexattn-decompose-backward -verify-diagnostics | FileCheck %s --check-prefix=MEM

// One backward step on a BM x BN = 32 x 16 tile of an M x N = 100 x 80
// problem, with a masked mod whose captured weight takes a gradient, and a
// dq accumulator.

// MEM-LABEL: func.func @step_capture_grad(
// Three BM x BN f32 tiles on the stack; nothing of M x N, nothing on the heap.
// MEM-NOT:     memref.alloc(
// MEM-NOT:     memref<100x80
// MEM-COUNT-3: memref.alloca() : memref<32x16xf32>
// MEM-NOT:     memref.alloc
// MEM-NOT:     memref<100x80
// MEM:         return

// CHECK-LABEL: func.func @step_capture_grad(
// CHECK-SAME:    %[[Q:[^:]+]]: memref<1x2x100x16xf32>, %[[K:[^:]+]]: memref<1x2x80x16xf32>, %[[V:[^:]+]]: memref<1x2x80x8xf32>, %[[DO:[^:]+]]: memref<1x2x100x8xf32>, %[[LSE:[^:]+]]: memref<1x2x100xf32>, %[[DELTA:[^:]+]]: memref<1x2x100xf32>, %[[DQ:[^:]+]]: memref<32x16xf32>, %[[W:[^:]+]]: memref<2xf32>, %[[DW:[^:]+]]: memref<2xf32>, %[[B:[^:]+]]: index, %[[H:[^:]+]]: index, %[[HKV:[^:]+]]: index, %[[Q0:[^:]+]]: index, %[[KV0:[^:]+]]: index)
// CHECK:         memref.alloca_scope {
// CHECK:           %[[QT:.+]] = memref.subview %[[Q]][%[[B]], %[[H]], %[[Q0]], 0]
// CHECK-NEXT:      %[[KT:.+]] = memref.subview %[[K]][%[[B]], %[[HKV]], %[[KV0]], 0]
// CHECK-NEXT:      %[[VT:.+]] = memref.subview %[[V]][%[[B]], %[[HKV]], %[[KV0]], 0]
// CHECK-NEXT:      %[[DOT:.+]] = memref.subview %[[DO]][%[[B]], %[[H]], %[[Q0]], 0]
// CHECK-NEXT:      %[[LT:.+]] = memref.subview %[[LSE]][%[[B]], %[[H]], %[[Q0]]]
// CHECK-NEXT:      %[[DT:.+]] = memref.subview %[[DELTA]][%[[B]], %[[H]], %[[Q0]]]
// CHECK-NEXT:      memref.alloca() : memref<32x16xf32>
// CHECK-NEXT:      %[[X:.+]] = memref.subview
// CHECK-NEXT:      memref.alloca() : memref<32x16xf32>
// CHECK-NEXT:      %[[P:.+]] = memref.subview
// CHECK-NEXT:      memref.alloca() : memref<32x16xf32>
// CHECK-NEXT:      %[[DS:.+]] = memref.subview
//
// X = Q_tile . K_tileᵀ
// CHECK:           linalg.fill ins(%{{.+}} : f32) outs(%[[X]] :
// CHECK-NEXT:      linalg.generic {{.*}} iterator_types = ["parallel", "parallel", "reduction"]} ins(%[[QT]], %[[KT]] : {{.*}}) outs(%[[X]] :
//
// dP = dO_tile . V_tileᵀ
// CHECK:           linalg.fill ins(%{{.+}} : f32) outs(%[[DS]] :
// CHECK-NEXT:      linalg.generic {{.*}} iterator_types = ["parallel", "parallel", "reduction"]} ins(%[[DOT]], %[[VT]] : {{.*}}) outs(%[[DS]] :
//
// S  = mods(scale * X); P = exp2(log2(e) * S - base(log2(e) * lse)); dS = P * (dP - delta)
// CHECK:           linalg.generic {{.*}} iterator_types = ["parallel", "parallel"]} ins(%[[X]], %[[LT]], %[[DT]] : {{.*}}) outs(%[[P]], %[[DS]] :
// CHECK-NEXT:      ^bb0(%[[XE:[^:]+]]: f32, %[[LE:[^:]+]]: f32, %[[DE:[^:]+]]: f32, %{{[^:]+}}: f32, %[[DPE:[^:]+]]: f32):
// CHECK:             %[[ONE:.+]] = arith.constant 1.000000e+00 : f32
// CHECK:             %[[XS:.+]] = arith.mulf %[[XE]], %{{.+}} : f32
// CHECK:             %[[S:.+]], %{{.+}}, %{{.+}}:2 = flexattn.apply_mods_vjp %[[XS]], %[[ONE]] at(%[[B]], %[[H]], %{{.+}}, %{{.+}}) captures(%[[W]] : memref<2xf32>) attributes {masked, vjp_loads = array<i64: 0>} score_mod_vjp {
// CHECK:             } : f32, f32, f32, index
// CHECK:             %[[BASE:.+]] = arith.select
// CHECK-NEXT:        %[[SL:.+]] = arith.mulf %[[S]], %{{.+}} : f32
// CHECK-NEXT:        %[[E:.+]] = arith.subf %[[SL]], %[[BASE]] : f32
// CHECK-NEXT:        %[[PE:.+]] = math.exp2 %[[E]] : f32
// CHECK-NEXT:        %[[DD:.+]] = arith.subf %[[DPE]], %[[DE]] : f32
// CHECK-NEXT:        %[[DSE:.+]] = arith.mulf %[[PE]], %[[DD]] : f32
// CHECK-NEXT:        linalg.yield %[[PE]], %[[DSE]] : f32, f32
//
// capture_grads[idx] += dS * dS/dcapture: sequential loops over the live tile
// CHECK:           scf.for %[[I:.+]] = %{{.+}} to %{{.+}} step
// CHECK-NEXT:        scf.for %[[J:.+]] = %{{.+}} to %{{.+}} step
// CHECK-NEXT:          %[[XV:.+]] = memref.load %[[X]][%[[I]], %[[J]]]
// CHECK-NEXT:          %[[DSV:.+]] = memref.load %[[DS]][%[[I]], %[[J]]]
// CHECK:               %{{.+}}, %{{.+}}, %[[G:.+]]:2 = flexattn.apply_mods_vjp %{{.+}}, %[[DSV]] at
// CHECK:               %[[GZ:.+]] = arith.select %{{.+}}, %{{.+}}, %[[G]]#0 : f32
// CHECK-NEXT:          %[[OLD:.+]] = memref.load %[[DW]][%[[G]]#1] : memref<2xf32>
// CHECK-NEXT:          %[[NEW:.+]] = arith.addf %[[OLD]], %[[GZ]] : f32
// CHECK-NEXT:          memref.store %[[NEW]], %[[DW]][%[[G]]#1] : memref<2xf32>
//
// dX = scale * dS * dS/dX, 0 where P = 0
// CHECK:           linalg.generic {{.*}} iterator_types = ["parallel", "parallel"]} ins(%[[X]], %[[P]] : {{.*}}) outs(%[[DS]] :
// CHECK:             %{{.+}}, %[[DSDX:[^,]+]], %{{.+}}:2 = flexattn.apply_mods_vjp
// CHECK:             %[[NONE:.+]] = arith.cmpf oeq
// CHECK-NEXT:        %[[PROD:.+]] = arith.mulf %{{.+}}, %[[DSDX]] : f32
// CHECK-NEXT:        %{{.+}} = arith.constant 2.500000e-01 : f32
// CHECK-NEXT:        %[[DX:.+]] = arith.mulf %[[PROD]], %{{.+}} : f32
// CHECK-NEXT:        %[[R:.+]] = arith.select %[[NONE]], %{{.+}}, %[[DX]] : f32
// CHECK-NEXT:        linalg.yield %[[R]] : f32
//
// dQ += dX . K_tile
// CHECK:           %[[DQW:.+]] = memref.subview %[[DQ]][0, 0]
// CHECK-NEXT:      linalg.generic {{.*}} iterator_types = ["parallel", "parallel", "reduction"]} ins(%[[DS]], %[[KT]] : {{.*}}) outs(%[[DQW]] :
// CHECK-NOT:       linalg.generic
// CHECK:         return
// CHECK-NOT:     flexattn.backward_step
func.func @step_capture_grad(%q: memref<1x2x100x16xf32>, %k: memref<1x2x80x16xf32>, %v: memref<1x2x80x8xf32>,
                             %do: memref<1x2x100x8xf32>, %lse: memref<1x2x100xf32>, %delta: memref<1x2x100xf32>,
                             %dq: memref<32x16xf32>, %w: memref<2xf32>, %dw: memref<2xf32>,
                             %b: index, %h: index, %hkv: index, %q0: index, %kv0: index) {
  flexattn.backward_step ins(%q, %k, %v, %do : memref<1x2x100x16xf32>, memref<1x2x80x16xf32>, memref<1x2x80x8xf32>, memref<1x2x100x8xf32>)
      stats(%lse, %delta : memref<1x2x100xf32>, memref<1x2x100xf32>)
      dq(%dq : memref<32x16xf32>) at(%b, %h, %hkv, %q0, %kv0)
      captures(%w : memref<2xf32>) capture_grads(%dw : memref<2xf32>)
      attributes {masked, scale = 0.25 : f32, tile_size = array<i64: 32, 16>, grad_captures = array<i64: 0>, vjp_loads = array<i64: 0>}
    score_mod_vjp {
    ^bb0(%s: f32, %bb: index, %hh: index, %x: index, %y: index, %c: memref<2xf32>, %dy: f32):
      %wh = memref.load %c[%hh] : memref<2xf32>
      %r = arith.mulf %s, %wh : f32
      %ds = arith.mulf %dy, %wh : f32
      %dwh = arith.mulf %dy, %s : f32
      flexattn.yield %r, %ds, %dwh, %hh : f32, f32, f32, index
    } mask_mod {
    ^bb0(%bb: index, %hh: index, %x: index, %y: index, %c: memref<2xf32>):
      %keep = arith.cmpi uge, %x, %y : index
      flexattn.yield %keep : i1
    }
  return
}

// -----

// No mods, dk and dv: one elementwise generic makes P and dX (no
// apply_mods_vjp: the identity), then dV += Pᵀ.dO and dK += dXᵀ.Q.

// CHECK-LABEL: func.func @step_kv(
// CHECK:           linalg.generic {{.*}} iterator_types = ["parallel", "parallel"]} ins(%[[X:.+]], %{{.+}}, %{{.+}} : {{.*}}) outs(%[[P:.+]], %[[DS:.+]] :
// CHECK-NOT:         flexattn.apply_mods_vjp
// CHECK:             %[[PE:.+]] = math.exp2
// CHECK:             %[[DSE:.+]] = arith.mulf %[[PE]], %{{.+}} : f32
// CHECK-NEXT:        %{{.+}} = arith.constant 0.000000e+00 : f32
// CHECK-NEXT:        %{{.+}} = arith.cmpf oeq, %[[PE]], %{{.+}} : f32
// CHECK-NEXT:        %{{.+}} = arith.mulf %[[DSE]], %{{.+}} : f32
// CHECK:             linalg.yield %[[PE]], %{{.+}} : f32, f32
// CHECK-NOT:       scf.for
// dV += Pᵀ . dO_tile
// CHECK:           linalg.generic {indexing_maps = [#[[MT:[a-z0-9]+]], #[[MR:[a-z0-9]+]], #{{.+}}], iterator_types = ["parallel", "parallel", "reduction"]} ins(%[[P]], %{{.+}} : {{.*}}) outs(%{{.+}} : memref<?x8xf32
// dK += dXᵀ . Q_tile
// CHECK:           linalg.generic {indexing_maps = [#[[MT]], #[[MR]], #{{.+}}], iterator_types = ["parallel", "parallel", "reduction"]} ins(%[[DS]], %{{.+}} : {{.*}}) outs(%{{.+}} : memref<?x16xf32
func.func @step_kv(%q: memref<1x2x100x16xbf16>, %k: memref<1x2x80x16xbf16>, %v: memref<1x2x80x8xbf16>,
                   %do: memref<1x2x100x8xbf16>, %lse: memref<1x2x100xf32>, %delta: memref<1x2x100xf32>,
                   %dk: memref<16x16xf32>, %dv: memref<16x8xf32>, %i: index) {
  flexattn.backward_step ins(%q, %k, %v, %do : memref<1x2x100x16xbf16>, memref<1x2x80x16xbf16>, memref<1x2x80x8xbf16>, memref<1x2x100x8xbf16>)
      stats(%lse, %delta : memref<1x2x100xf32>, memref<1x2x100xf32>)
      dk(%dk : memref<16x16xf32>) dv(%dv : memref<16x8xf32>) at(%i, %i, %i, %i, %i)
      attributes {scale = 0.25 : f32, tile_size = array<i64: 32, 16>}
  return
}

// -----

// store_tile: the live rows (clamp(R - row0, 0, T)) of the accumulator,
// truncated to the gradient's bf16.

// CHECK-LABEL: func.func @store(
// CHECK-SAME:    %[[ACC:[^:]+]]: memref<16x16xf32>, %[[DST:[^:]+]]: memref<1x2x80x16xbf16>, %[[B:[^:]+]]: index, %[[H:[^:]+]]: index, %[[R0:[^:]+]]: index)
// CHECK:         %[[REST:.+]] = arith.subi %{{.+}}, %[[R0]] : index
// CHECK:         %[[ROWS:.+]] = arith.maxsi
// CHECK:         %[[SRC:.+]] = memref.subview %[[ACC]][0, 0] [%[[ROWS]], 16] [1, 1]
// CHECK-NEXT:    %[[OUT:.+]] = memref.subview %[[DST]][%[[B]], %[[H]], %[[R0]], 0] [1, 1, %[[ROWS]], 16] [1, 1, 1, 1]
// CHECK-NEXT:    linalg.generic {{.*}} ins(%[[SRC]] : {{.*}}) outs(%[[OUT]] :
// CHECK-NEXT:    ^bb0(%[[A:[^:]+]]: f32, %{{[^:]+}}: bf16):
// CHECK-NEXT:      %[[T:.+]] = arith.truncf %[[A]] : f32 to bf16
// CHECK-NEXT:      linalg.yield %[[T]] : bf16
// CHECK-NOT:     flexattn.store_tile
func.func @store(%acc: memref<16x16xf32>, %dst: memref<1x2x80x16xbf16>, %b: index, %h: index, %r0: index) {
  flexattn.store_tile %acc : memref<16x16xf32> into %dst : memref<1x2x80x16xbf16> at(%b, %h, %r0)
  return
}

// -----

// Per-thread partial sums of a capture gradient (its trailing dim: the
// deterministic mode) are flexattn-lower-backward-mma's layout.
func.func @partial_capture_grads(%q: memref<1x1x16x16xf32>, %k: memref<1x1x16x16xf32>, %v: memref<1x1x16x16xf32>,
                                 %do: memref<1x1x16x16xf32>, %lse: memref<1x1x16xf32>, %delta: memref<1x1x16xf32>,
                                 %w: memref<2xf32>, %dw: memref<2x64xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c16 = arith.constant 16 : index
      %dq_acc = memref.alloca() : memref<16x16xf32>
    // expected-error @below {{flexattn-decompose-backward accumulates capture gradients in a fixed order; per-thread partial sums are flexattn-lower-backward-mma's}}
    flexattn.backward_step ins(%q, %k, %v, %do : memref<1x1x16x16xf32>, memref<1x1x16x16xf32>, memref<1x1x16x16xf32>, memref<1x1x16x16xf32>)
        stats(%lse, %delta : memref<1x1x16xf32>, memref<1x1x16xf32>)
        dq(%dq_acc : memref<16x16xf32>) at(%c0, %c0, %c0, %c0, %c0)
        captures(%w : memref<2xf32>) capture_grads(%dw : memref<2x64xf32>)
        attributes {scale = 0.25 : f32, tile_size = array<i64: 16, 16>, grad_captures = array<i64: 0>, vjp_loads = array<i64: 0>}
      score_mod_vjp {
      ^bb0(%s: f32, %bb: index, %hh: index, %x: index, %y: index, %c: memref<2xf32>, %dy: f32):
        %wh = memref.load %c[%hh] : memref<2xf32>
        %r = arith.addf %s, %wh : f32
        flexattn.yield %r, %dy, %dy, %hh : f32, f32, f32, index
      }
  return
}
