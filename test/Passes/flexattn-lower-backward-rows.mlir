// RUN: flexattn-opt %s -split-input-file -flexattn-lower-backward-rows -verify-diagnostics | FileCheck %s
// RUN: flexattn-opt %s -split-input-file -flexattn-lower-backward-rows -verify-diagnostics | FileCheck %s --check-prefix=MEM

// A CTA of flexattn-map-backward-to-grid with a dq tile (32 x 16 of an
// M x N = 40 x 24 problem) and a learnable weight: thread t owns query q0 + t.

// MEM-LABEL: func.func @dq_rows(
// MEM-NOT:     memref<32x16xf32>
// MEM-NOT:     memref<40x24
// MEM:         return

// CHECK-LABEL: func.func @dq_rows(
// CHECK-SAME:    %[[Q:[^:]+]]: memref<1x2x40x16xbf16>, %[[K:[^:]+]]: memref<1x1x24x16xbf16>, %{{[^:]+}}: memref<1x1x24x16xbf16>, %{{[^:]+}}: memref<1x2x40x16xbf16>, %[[LSE:[^:]+]]: memref<1x2x40xf32>, %[[DELTA:[^:]+]]: memref<1x2x40xf32>, %[[DQ:[^:]+]]: memref<1x2x40x16xbf16>, %{{[^:]+}}: memref<2xf32>, %[[DW:[^:]+]]: memref<2xf32>)
// CHECK:         gpu.launch
// The thread's own rows (q_i, dout_i) and its dq row.
// CHECK-DAG:       %[[OWNQ:.+]] = memref.alloca() : memref<1x16xf32>
// CHECK-DAG:       %[[OWNDO:.+]] = memref.alloca() : memref<1x16xf32>
// CHECK-DAG:       %[[ACC:.+]] = memref.alloca() : memref<1x16xf32>
// CHECK-NOT:       memref.alloca_scope
// CHECK:           linalg.fill ins(%{{.+}} : f32) outs(%[[ACC]] : memref<1x16xf32>)
// CHECK:           %[[MINE:.+]] = arith.cmpi ult, %[[TID:[^,]+]], %{{.+}} : index
// CHECK:           scf.if %[[MINE]] {
// CHECK:             %[[ROW:.+]] = arith.addi %{{.+}}, %[[TID]] : index
// CHECK:             scf.for
// CHECK:               memref.load %[[Q]][%{{.+}}, %{{.+}}, %[[ROW]], %{{.+}}] : memref<1x2x40x16xbf16>
// CHECK:               memref.store %{{.+}}, %[[OWNQ]]
// CHECK:             scf.for %[[J:.+]] = %{{.+}} to %{{.+}} step
// x = q_i . k_j over D, with fma
// CHECK:               scf.for {{.*}} iter_args({{.*}}) -> (f32) {
// CHECK:                 memref.load %[[K]]
// CHECK:                 memref.load %[[OWNQ]]
// CHECK:                 math.fma
// CHECK:               memref.load %[[LSE]]
// CHECK:               memref.load %[[DELTA]]
// CHECK:               flexattn.apply_mods_vjp
// CHECK:               math.exp2
// The weight's gradient: an f32 atomic add, none where dS = 0.
// CHECK:               arith.cmpf one
// CHECK:               scf.if
// CHECK:                 memref.atomic_rmw addf %{{.+}}, %[[DW]][%{{.+}}] : (f32, memref<2xf32>) -> f32
// dq_i += dX k_j
// CHECK:               scf.for
// CHECK:                 memref.load %[[ACC]]
// CHECK:                 math.fma
// CHECK:                 memref.store %{{.+}}, %[[ACC]]
// The store: the thread's row, when inside dq.
// CHECK:           scf.if
// CHECK:             scf.for
// CHECK:               memref.load %[[ACC]]
// CHECK:               arith.truncf %{{.+}} : f32 to bf16
// CHECK:               memref.store %{{.+}}, %[[DQ]]
// CHECK:           gpu.terminator
func.func @dq_rows(%q: memref<1x2x40x16xbf16>, %k: memref<1x1x24x16xbf16>, %v: memref<1x1x24x16xbf16>,
                   %do: memref<1x2x40x16xbf16>, %lse: memref<1x2x40xf32>, %delta: memref<1x2x40xf32>,
                   %dq: memref<1x2x40x16xbf16>, %w: memref<2xf32>, %dw: memref<2xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c4 = arith.constant 4 : index
  %c16 = arith.constant 16 : index
  %c32 = arith.constant 32 : index
  %zero = arith.constant 0.0 : f32
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c4, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c32, %sy = %c1, %sz = %c1) {
    %h = arith.divui %bx, %c2 : index
    %t = arith.remui %bx, %c2 : index
    memref.alloca_scope {
      %q0 = arith.muli %t, %c32 : index
      %dq_acc = memref.alloca() : memref<32x16xf32>
      linalg.fill ins(%zero : f32) outs(%dq_acc : memref<32x16xf32>)
      scf.for %j = %c0 to %c2 step %c1 {
        %kv0 = arith.muli %j, %c16 : index
        flexattn.backward_step ins(%q, %k, %v, %do : memref<1x2x40x16xbf16>, memref<1x1x24x16xbf16>, memref<1x1x24x16xbf16>, memref<1x2x40x16xbf16>)
            stats(%lse, %delta : memref<1x2x40xf32>, memref<1x2x40xf32>)
            dq(%dq_acc : memref<32x16xf32>) at(%c0, %h, %c0, %q0, %kv0)
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
      }
      flexattn.store_tile %dq_acc : memref<32x16xf32> into %dq : memref<1x2x40x16xbf16> at(%c0, %h, %q0)
    }
    gpu.terminator
  }
  return
}

// -----

// A dk/dv tile (16 keys): thread t owns key kv0 + t and walks the Q tile's
// rows; dv_j += P dout_i, dk_j += dX q_i into its two rows.

// CHECK-LABEL: func.func @kv_rows(
// CHECK-SAME:    %[[Q:[^:]+]]: memref<1x2x40x16xbf16>, %[[K:[^:]+]]: memref<1x1x24x16xbf16>, %[[V:[^:]+]]: memref<1x1x24x8xbf16>, %[[DO:[^:]+]]: memref<1x2x40x8xbf16>
// CHECK:         gpu.launch
// CHECK-DAG:       %[[OWNV:.+]] = memref.alloca() : memref<1x8xf32>
// CHECK-DAG:       %[[OWNK:.+]] = memref.alloca() : memref<1x16xf32>
// CHECK:           %[[DKR:.+]] = memref.alloca() : memref<1x16xf32>
// CHECK:           %[[DVR:.+]] = memref.alloca() : memref<1x8xf32>
// CHECK:           scf.if
// CHECK:             memref.load %[[K]]
// CHECK:             memref.store %{{.+}}, %[[OWNK]]
// CHECK:             memref.load %[[V]]
// CHECK:             memref.store %{{.+}}, %[[OWNV]]
// CHECK:             scf.for
// CHECK:               memref.load %[[OWNK]]
// CHECK-NEXT:          memref.load %[[Q]]
// CHECK-NOT:           flexattn.apply_mods_vjp
// CHECK-NOT:           memref.atomic_rmw
// CHECK:               math.exp2
// dv_j += P dout_i, then dk_j += dX q_i
// CHECK:               memref.load %[[DO]]
// CHECK:               memref.load %[[DVR]]
// CHECK:               memref.store %{{.+}}, %[[DVR]]
// CHECK:               memref.load %[[Q]]
// CHECK:               memref.load %[[DKR]]
// CHECK:               memref.store %{{.+}}, %[[DKR]]
func.func @kv_rows(%q: memref<1x2x40x16xbf16>, %k: memref<1x1x24x16xbf16>, %v: memref<1x1x24x8xbf16>,
                   %do: memref<1x2x40x8xbf16>, %lse: memref<1x2x40xf32>, %delta: memref<1x2x40xf32>,
                   %dk: memref<1x1x24x16xbf16>, %dv: memref<1x1x24x8xbf16>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c16 = arith.constant 16 : index
  %c32 = arith.constant 32 : index
  %zero = arith.constant 0.0 : f32
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c2, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c16, %sy = %c1, %sz = %c1) {
    %kv0 = arith.muli %bx, %c16 : index
    %dk_acc = memref.alloca() : memref<16x16xf32>
    linalg.fill ins(%zero : f32) outs(%dk_acc : memref<16x16xf32>)
    %dv_acc = memref.alloca() : memref<16x8xf32>
    linalg.fill ins(%zero : f32) outs(%dv_acc : memref<16x8xf32>)
    scf.for %h = %c0 to %c2 step %c1 {
      scf.for %qt = %c0 to %c2 step %c1 {
        %q0 = arith.muli %qt, %c32 : index
        flexattn.backward_step ins(%q, %k, %v, %do : memref<1x2x40x16xbf16>, memref<1x1x24x16xbf16>, memref<1x1x24x8xbf16>, memref<1x2x40x8xbf16>)
            stats(%lse, %delta : memref<1x2x40xf32>, memref<1x2x40xf32>)
            dk(%dk_acc : memref<16x16xf32>) dv(%dv_acc : memref<16x8xf32>) at(%c0, %h, %c0, %q0, %kv0)
            attributes {scale = 0.25 : f32, tile_size = array<i64: 32, 16>}
      }
    }
    flexattn.store_tile %dk_acc : memref<16x16xf32> into %dk : memref<1x1x24x16xbf16> at(%c0, %c0, %kv0)
    flexattn.store_tile %dv_acc : memref<16x8xf32> into %dv : memref<1x1x24x8xbf16> at(%c0, %c0, %kv0)
    gpu.terminator
  }
  return
}

// -----

func.func @both_sides(%q: memref<1x1x16x16xf32>, %k: memref<1x1x16x16xf32>, %v: memref<1x1x16x16xf32>,
                      %do: memref<1x1x16x16xf32>, %lse: memref<1x1x16xf32>, %delta: memref<1x1x16xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c16 = arith.constant 16 : index
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c16, %sy = %c1, %sz = %c1) {
    %dq_acc = memref.alloca() : memref<16x16xf32>
    %dk_acc = memref.alloca() : memref<16x16xf32>
    // expected-error @below {{needs a step with dq or with dk/dv, not both}}
    flexattn.backward_step ins(%q, %k, %v, %do : memref<1x1x16x16xf32>, memref<1x1x16x16xf32>, memref<1x1x16x16xf32>, memref<1x1x16x16xf32>)
        stats(%lse, %delta : memref<1x1x16xf32>, memref<1x1x16xf32>)
        dq(%dq_acc : memref<16x16xf32>) dk(%dk_acc : memref<16x16xf32>) at(%c0, %c0, %c0, %c0, %c0)
        attributes {scale = 0.25 : f32, tile_size = array<i64: 16, 16>}
    gpu.terminator
  }
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
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c16, %sy = %c1, %sz = %c1) {
    %dq_acc = memref.alloca() : memref<16x16xf32>
    // expected-error @below {{flexattn-lower-backward-rows adds capture gradients with atomics: per-thread partial sums (the deterministic mode) are flexattn-lower-backward-mma's}}
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
    gpu.terminator
  }
  return
}
