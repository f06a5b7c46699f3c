// RUN: flexattn-opt %s -split-input-file -flexattn-atomic-dq | FileCheck %s

// flexattn-tile's two nests with an f32 dq (GQA 2/1, M = 64, N = 32, 32 x 16
// tiles): the dk/dv steps add into dq (dq_sum), the dq nest is gone, and dq
// is zero-filled before the dk/dv nest.
// CHECK-LABEL: func.func @two_nests(
// CHECK-SAME:    %[[DQ:[^:]+]]: memref<1x2x64x16xf32>
// CHECK:         linalg.fill ins(%{{.+}} : f32) outs(%[[DQ]] : memref<1x2x64x16xf32>)
// CHECK:         scf.parallel
// CHECK:           flexattn.backward_step {{.*}} dk(%{{[^)]+}}) dv(%{{[^)]+}}) dq_sum(%[[DQ]] : memref<1x2x64x16xf32>) at
// CHECK:           flexattn.store_tile
// CHECK-NOT:     dq(
// CHECK-NOT:     scf.for %{{.*}} = %{{.*}} to %{{.*}} step %{{.*}} {
// CHECK:         return
func.func @two_nests(%q: memref<1x2x64x16xbf16>, %k: memref<1x1x32x16xbf16>, %v: memref<1x1x32x16xbf16>,
                     %do: memref<1x2x64x16xbf16>, %lse: memref<1x2x64xf32>, %delta: memref<1x2x64xf32>,
                     %dq: memref<1x2x64x16xf32>, %dk: memref<1x1x32x16xbf16>, %dv: memref<1x1x32x16xbf16>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c16 = arith.constant 16 : index
  %c32 = arith.constant 32 : index
  %zero = arith.constant 0.0 : f32
  scf.parallel (%b, %hkv, %t) = (%c0, %c0, %c0) to (%c1, %c1, %c2) step (%c1, %c1, %c1) {
    memref.alloca_scope {
      %kv0 = arith.muli %t, %c16 : index
      %dk_acc = memref.alloca() : memref<16x16xf32>
      linalg.fill ins(%zero : f32) outs(%dk_acc : memref<16x16xf32>)
      %dv_acc = memref.alloca() : memref<16x16xf32>
      linalg.fill ins(%zero : f32) outs(%dv_acc : memref<16x16xf32>)
      scf.for %h = %c0 to %c2 step %c1 {
        scf.for %qt = %c0 to %c2 step %c1 {
          %q0 = arith.muli %qt, %c32 : index
          flexattn.backward_step ins(%q, %k, %v, %do : memref<1x2x64x16xbf16>, memref<1x1x32x16xbf16>, memref<1x1x32x16xbf16>, memref<1x2x64x16xbf16>)
              stats(%lse, %delta : memref<1x2x64xf32>, memref<1x2x64xf32>)
              dk(%dk_acc : memref<16x16xf32>) dv(%dv_acc : memref<16x16xf32>) at(%b, %h, %hkv, %q0, %kv0)
              attributes {scale = 0.25 : f32, tile_size = array<i64: 32, 16>}
        }
      }
      flexattn.store_tile %dk_acc : memref<16x16xf32> into %dk : memref<1x1x32x16xbf16> at(%b, %hkv, %kv0)
      flexattn.store_tile %dv_acc : memref<16x16xf32> into %dv : memref<1x1x32x16xbf16> at(%b, %hkv, %kv0)
    }
    scf.reduce
  }
  scf.parallel (%b, %h, %t) = (%c0, %c0, %c0) to (%c1, %c2, %c2) step (%c1, %c1, %c1) {
    memref.alloca_scope {
      %q0 = arith.muli %t, %c32 : index
      %dq_acc = memref.alloca() : memref<32x16xf32>
      linalg.fill ins(%zero : f32) outs(%dq_acc : memref<32x16xf32>)
      scf.for %j = %c0 to %c2 step %c1 {
        %kv0 = arith.muli %j, %c16 : index
        flexattn.backward_step ins(%q, %k, %v, %do : memref<1x2x64x16xbf16>, memref<1x1x32x16xbf16>, memref<1x1x32x16xbf16>, memref<1x2x64x16xbf16>)
            stats(%lse, %delta : memref<1x2x64xf32>, memref<1x2x64xf32>)
            dq(%dq_acc : memref<32x16xf32>) at(%b, %h, %c0, %q0, %kv0)
            attributes {scale = 0.25 : f32, tile_size = array<i64: 32, 16>}
      }
      flexattn.store_tile %dq_acc : memref<32x16xf32> into %dq : memref<1x2x64x16xf32> at(%b, %h, %q0)
    }
    scf.reduce
  }
  return
}

// -----

// dq in q's type (a deterministic backward, or the CPU's): nothing changes.
// CHECK-LABEL: func.func @dq_in_q_type(
// CHECK-NOT:     dq_sum
// CHECK-NOT:     linalg.fill {{.*}} outs(%{{.*}} : memref<1x1x32x16xbf16>)
// CHECK:         flexattn.backward_step {{.*}} dk(
// CHECK:         flexattn.backward_step {{.*}} dq(
// CHECK:         flexattn.store_tile {{.*}} into %{{.*}} : memref<1x1x32x16xbf16>
func.func @dq_in_q_type(%q: memref<1x1x32x16xbf16>, %k: memref<1x1x32x16xbf16>, %v: memref<1x1x32x16xbf16>,
                        %do: memref<1x1x32x16xbf16>, %lse: memref<1x1x32xf32>, %delta: memref<1x1x32xf32>,
                        %dq: memref<1x1x32x16xbf16>, %dk: memref<1x1x32x16xbf16>, %dv: memref<1x1x32x16xbf16>) {
  %c0 = arith.constant 0 : index
  %zero = arith.constant 0.0 : f32
  %dk_acc = memref.alloca() : memref<32x16xf32>
  linalg.fill ins(%zero : f32) outs(%dk_acc : memref<32x16xf32>)
  scf.for %t = %c0 to %c0 step %c0 {
    flexattn.backward_step ins(%q, %k, %v, %do : memref<1x1x32x16xbf16>, memref<1x1x32x16xbf16>, memref<1x1x32x16xbf16>, memref<1x1x32x16xbf16>)
        stats(%lse, %delta : memref<1x1x32xf32>, memref<1x1x32xf32>)
        dk(%dk_acc : memref<32x16xf32>) at(%c0, %c0, %c0, %c0, %c0)
        attributes {scale = 0.25 : f32, tile_size = array<i64: 32, 32>}
  }
  scf.for %t = %c0 to %c0 step %c0 {
    %dq_acc = memref.alloca() : memref<32x16xf32>
    flexattn.backward_step ins(%q, %k, %v, %do : memref<1x1x32x16xbf16>, memref<1x1x32x16xbf16>, memref<1x1x32x16xbf16>, memref<1x1x32x16xbf16>)
        stats(%lse, %delta : memref<1x1x32xf32>, memref<1x1x32xf32>)
        dq(%dq_acc : memref<32x16xf32>) at(%c0, %c0, %c0, %c0, %c0)
        attributes {scale = 0.25 : f32, tile_size = array<i64: 32, 32>}
    flexattn.store_tile %dq_acc : memref<32x16xf32> into %dq : memref<1x1x32x16xbf16> at(%c0, %c0, %c0)
  }
  return
}

// -----

// Capture gradients accumulate along the dq tiles: the dq nest stays.
// CHECK-LABEL: func.func @capture_grads(
// CHECK-NOT:     dq_sum
// CHECK:         flexattn.backward_step {{.*}} dk(
// CHECK:         flexattn.backward_step {{.*}} dq({{.*}} capture_grads(
func.func @capture_grads(%q: memref<1x1x32x16xbf16>, %k: memref<1x1x32x16xbf16>, %v: memref<1x1x32x16xbf16>,
                         %do: memref<1x1x32x16xbf16>, %lse: memref<1x1x32xf32>, %delta: memref<1x1x32xf32>,
                         %dq: memref<1x1x32x16xf32>, %dk: memref<1x1x32x16xbf16>, %dv: memref<1x1x32x16xbf16>,
                         %w: memref<2xf32>, %dw: memref<2xf32>) {
  %c0 = arith.constant 0 : index
  %zero = arith.constant 0.0 : f32
  %dk_acc = memref.alloca() : memref<32x16xf32>
  linalg.fill ins(%zero : f32) outs(%dk_acc : memref<32x16xf32>)
  scf.for %t = %c0 to %c0 step %c0 {
    flexattn.backward_step ins(%q, %k, %v, %do : memref<1x1x32x16xbf16>, memref<1x1x32x16xbf16>, memref<1x1x32x16xbf16>, memref<1x1x32x16xbf16>)
        stats(%lse, %delta : memref<1x1x32xf32>, memref<1x1x32xf32>)
        dk(%dk_acc : memref<32x16xf32>) at(%c0, %c0, %c0, %c0, %c0)
        attributes {scale = 0.25 : f32, tile_size = array<i64: 32, 32>}
  }
  scf.for %t = %c0 to %c0 step %c0 {
    %dq_acc = memref.alloca() : memref<32x16xf32>
    flexattn.backward_step ins(%q, %k, %v, %do : memref<1x1x32x16xbf16>, memref<1x1x32x16xbf16>, memref<1x1x32x16xbf16>, memref<1x1x32x16xbf16>)
        stats(%lse, %delta : memref<1x1x32xf32>, memref<1x1x32xf32>)
        dq(%dq_acc : memref<32x16xf32>) at(%c0, %c0, %c0, %c0, %c0)
        captures(%w : memref<2xf32>) capture_grads(%dw : memref<2xf32>)
        attributes {scale = 0.25 : f32, tile_size = array<i64: 32, 32>, grad_captures = array<i64: 0>, vjp_loads = array<i64: 0>}
      score_mod_vjp {
      ^bb0(%s: f32, %bb: index, %hh: index, %x: index, %y: index, %c: memref<2xf32>, %dy: f32):
        %wh = memref.load %c[%hh] : memref<2xf32>
        %r = arith.addf %s, %wh : f32
        flexattn.yield %r, %dy, %dy, %hh : f32, f32, f32, index
      }
    flexattn.store_tile %dq_acc : memref<32x16xf32> into %dq : memref<1x1x32x16xf32> at(%c0, %c0, %c0)
  }
  return
}
