// RUN: flexattn-opt %s -split-input-file -flexattn-map-backward-to-grid -verify-diagnostics | FileCheck %s

// The two nests flexattn-tile makes for a backward with a learnable capture
// (GQA 2/1, M = 40, N = 24, 32 x 16 tiles, delta precomputed): the KV-outer
// scf.parallel over 1 x 1 x 2 dk/dv tiles and the Q-outer scf.for nest over
// 1 x 2 x 2 dq tiles become one launch of 2 + 4 CTAs of 32 threads (the
// rows of the largest accumulator); the capture gradient's host fill becomes
// flexattn.zero_init (argument 10).

// CHECK-LABEL: func.func @two_nests(
// CHECK-SAME:    %[[DW:[^:]+]]: memref<2xf32>) attributes {flexattn.zero_init = array<i64: 10>}
// CHECK-NOT:     linalg.fill {{.*}}outs(%[[DW]]
// CHECK-NOT:     scf.parallel
// CHECK:         gpu.launch blocks(%[[BX:[^,]+]], %{{[^,]+}}, %{{[^)]+}}) in (%{{[^ ]+}} = %[[C6:[^,]+]], %{{[^ ]+}} = %[[ONE:[^,]+]], %{{[^ ]+}} = %[[ONE]]) threads(%{{[^,]+}}, %{{[^,]+}}, %{{[^)]+}}) in (%{{[^ ]+}} = %[[C32:[^,]+]], %{{[^ ]+}} = %[[ONE]], %{{[^ ]+}} = %[[ONE]])
// CHECK:           %[[FIRST:.+]] = arith.cmpi ult, %[[BX]], %{{.+}} : index
// CHECK:           scf.if %[[FIRST]] {
// CHECK:             %[[KT:.+]] = arith.remui %[[BX]], %{{.+}} : index
// CHECK:             memref.alloca_scope {
// CHECK:               arith.muli %[[KT]], %{{.+}} : index
// CHECK:               flexattn.backward_step {{.*}} dk(
// CHECK:               flexattn.store_tile
// CHECK:           } else {
// CHECK:             %[[T:.+]] = arith.subi %[[BX]], %{{.+}} : index
// CHECK:             %[[QT:.+]] = arith.remui %[[T]], %{{.+}} : index
// CHECK:             memref.alloca_scope {
// CHECK:               arith.muli %[[QT]], %{{.+}} : index
// CHECK:               flexattn.backward_step {{.*}} dq(
// CHECK:               flexattn.store_tile
// CHECK:           }
// CHECK:           gpu.terminator
// CHECK-NOT:     scf.for
// CHECK:         return
func.func @two_nests(%q: memref<1x2x40x16xbf16>, %k: memref<1x1x24x16xbf16>, %v: memref<1x1x24x16xbf16>,
                     %do: memref<1x2x40x16xbf16>, %lse: memref<1x2x40xf32>, %delta: memref<1x2x40xf32>,
                     %dq: memref<1x2x40x16xbf16>, %dk: memref<1x1x24x16xbf16>, %dv: memref<1x1x24x16xbf16>,
                     %w: memref<2xf32>, %dw: memref<2xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c16 = arith.constant 16 : index
  %c24 = arith.constant 24 : index
  %c32 = arith.constant 32 : index
  %zero = arith.constant 0.0 : f32
  linalg.fill ins(%zero : f32) outs(%dw : memref<2xf32>)
  %kts = arith.ceildivui %c24, %c16 : index
  scf.parallel (%b, %hkv, %t) = (%c0, %c0, %c0) to (%c1, %c1, %kts) step (%c1, %c1, %c1) {
    memref.alloca_scope {
      %kv0 = arith.muli %t, %c16 : index
      %dk_acc = memref.alloca() : memref<16x16xf32>
      linalg.fill ins(%zero : f32) outs(%dk_acc : memref<16x16xf32>)
      %dv_acc = memref.alloca() : memref<16x16xf32>
      linalg.fill ins(%zero : f32) outs(%dv_acc : memref<16x16xf32>)
      scf.for %h = %c0 to %c2 step %c1 {
        scf.for %qt = %c0 to %c2 step %c1 {
          %q0 = arith.muli %qt, %c32 : index
          flexattn.backward_step ins(%q, %k, %v, %do : memref<1x2x40x16xbf16>, memref<1x1x24x16xbf16>, memref<1x1x24x16xbf16>, memref<1x2x40x16xbf16>)
              stats(%lse, %delta : memref<1x2x40xf32>, memref<1x2x40xf32>)
              dk(%dk_acc : memref<16x16xf32>) dv(%dv_acc : memref<16x16xf32>) at(%b, %h, %hkv, %q0, %kv0)
              attributes {scale = 0.25 : f32, tile_size = array<i64: 32, 16>}
        }
      }
      flexattn.store_tile %dk_acc : memref<16x16xf32> into %dk : memref<1x1x24x16xbf16> at(%b, %hkv, %kv0)
      flexattn.store_tile %dv_acc : memref<16x16xf32> into %dv : memref<1x1x24x16xbf16> at(%b, %hkv, %kv0)
    }
    scf.reduce
  }
  scf.for %b = %c0 to %c1 step %c1 {
    scf.for %h = %c0 to %c2 step %c1 {
      scf.for %t = %c0 to %c2 step %c1 {
        memref.alloca_scope {
          %q0 = arith.muli %t, %c32 : index
          %dq_acc = memref.alloca() : memref<32x16xf32>
          linalg.fill ins(%zero : f32) outs(%dq_acc : memref<32x16xf32>)
          scf.for %j = %c0 to %kts step %c1 {
            %kv0 = arith.muli %j, %c16 : index
            flexattn.backward_step ins(%q, %k, %v, %do : memref<1x2x40x16xbf16>, memref<1x1x24x16xbf16>, memref<1x1x24x16xbf16>, memref<1x2x40x16xbf16>)
                stats(%lse, %delta : memref<1x2x40xf32>, memref<1x2x40xf32>)
                dq(%dq_acc : memref<32x16xf32>) at(%b, %h, %c0, %q0, %kv0)
                captures(%w : memref<2xf32>) capture_grads(%dw : memref<2xf32>)
                attributes {scale = 0.25 : f32, tile_size = array<i64: 32, 16>, grad_captures = array<i64: 0>, vjp_loads = array<i64: 0>}
              score_mod_vjp {
              ^bb0(%s: f32, %bb: index, %hh: index, %x: index, %y: index, %c: memref<2xf32>, %dy: f32):
                %wh = memref.load %c[%hh] : memref<2xf32>
                %r = arith.addf %s, %wh : f32
                flexattn.yield %r, %dy, %dy, %hh : f32, f32, f32, index
              }
          }
          flexattn.store_tile %dq_acc : memref<32x16xf32> into %dq : memref<1x2x40x16xbf16> at(%b, %h, %q0)
        }
      }
    }
  }
  return
}

// -----

// Host work other than zero fills cannot follow the kernel to the GPU: a
// delta computed on the host (flexattn-tile without the delta operand).

func.func @host_delta(%q: memref<1x1x16x16xf32>, %k: memref<1x1x16x16xf32>, %v: memref<1x1x16x16xf32>,
                      %do: memref<1x1x16x16xf32>, %lse: memref<1x1x16xf32>, %dq: memref<1x1x16x16xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  // expected-error @below {{only the kernel runs on the GPU}}
  %delta = memref.alloc() : memref<1x1x16xf32>
  scf.for %t = %c0 to %c1 step %c1 {
    memref.alloca_scope {
      %dq_acc = memref.alloca() : memref<16x16xf32>
      flexattn.backward_step ins(%q, %k, %v, %do : memref<1x1x16x16xf32>, memref<1x1x16x16xf32>, memref<1x1x16x16xf32>, memref<1x1x16x16xf32>)
          stats(%lse, %delta : memref<1x1x16xf32>, memref<1x1x16xf32>)
          dq(%dq_acc : memref<16x16xf32>) at(%c0, %c0, %c0, %c0, %c0)
          attributes {scale = 0.25 : f32, tile_size = array<i64: 16, 16>}
      flexattn.store_tile %dq_acc : memref<16x16xf32> into %dq : memref<1x1x16x16xf32> at(%c0, %c0, %c0)
    }
  }
  memref.dealloc %delta : memref<1x1x16xf32>
  return
}

// -----

func.func @dynamic_extent(%q: memref<1x1x16x16xf32>, %k: memref<1x1x16x16xf32>, %v: memref<1x1x16x16xf32>,
                          %do: memref<1x1x16x16xf32>, %lse: memref<1x1x16xf32>, %delta: memref<1x1x16xf32>,
                          %dq: memref<1x1x16x16xf32>, %n: index) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  // expected-error @below {{needs static tile loops from 0 with step 1}}
  scf.for %t = %c0 to %n step %c1 {
    memref.alloca_scope {
      %dq_acc = memref.alloca() : memref<16x16xf32>
      flexattn.backward_step ins(%q, %k, %v, %do : memref<1x1x16x16xf32>, memref<1x1x16x16xf32>, memref<1x1x16x16xf32>, memref<1x1x16x16xf32>)
          stats(%lse, %delta : memref<1x1x16xf32>, memref<1x1x16xf32>)
          dq(%dq_acc : memref<16x16xf32>) at(%c0, %c0, %c0, %c0, %c0)
          attributes {scale = 0.25 : f32, tile_size = array<i64: 16, 16>}
      flexattn.store_tile %dq_acc : memref<16x16xf32> into %dq : memref<1x1x16x16xf32> at(%c0, %c0, %c0)
    }
  }
  return
}
