// RUN: flexattn-opt %s -split-input-file -flexattn-inline-mods | FileCheck %s

// flexattn.apply_mods_vjp: the score_mod_vjp body, its trailing dy bound to
// the op's dy; for a masked score, the mask_mod body and selects giving -inf
// and zero derivatives where the mask is false (indices pass through).

// CHECK-LABEL: func.func @masked(
// CHECK-SAME:    %[[S:[^:]+]]: f32, %[[DY:[^:]+]]: f32, %[[B:[^:]+]]: index, %[[H:[^:]+]]: index, %[[QI:[^:]+]]: index, %[[KI:[^:]+]]: index, %[[W:[^:]+]]: memref<4xf32>)
// score_mod_vjp (the four indices cast to its i32)
// CHECK-NEXT:    arith.index_cast %[[B]] : index to i32
// CHECK-NEXT:    %[[H32:.+]] = arith.index_cast %[[H]] : index to i32
// CHECK-NEXT:    arith.index_cast %[[QI]] : index to i32
// CHECK-NEXT:    arith.index_cast %[[KI]] : index to i32
// CHECK-NEXT:    %[[HI:.+]] = arith.index_cast %[[H32]] : i32 to index
// CHECK-NEXT:    %[[WH:.+]] = memref.load %[[W]][%[[HI]]] : memref<4xf32>
// CHECK-NEXT:    %[[R:.+]] = arith.mulf %[[S]], %[[WH]] : f32
// CHECK-NEXT:    %[[DS:.+]] = arith.mulf %[[DY]], %[[WH]] : f32
// CHECK-NEXT:    %[[DW:.+]] = arith.mulf %[[DY]], %[[S]] : f32
// mask_mod
// CHECK:         %[[Q32:.+]] = arith.index_cast %[[QI]] : index to i32
// CHECK-NEXT:    %[[K32:.+]] = arith.index_cast %[[KI]] : index to i32
// CHECK-NEXT:    %[[KEEP:.+]] = arith.cmpi sge, %[[Q32]], %[[K32]] : i32
// keep ? (score, derivatives) : (-inf, 0, 0)
// CHECK-NEXT:    %[[NINF:.+]] = arith.constant 0xFF800000 : f32
// CHECK-NEXT:    %[[R2:.+]] = arith.select %[[KEEP]], %[[R]], %[[NINF]] : f32
// CHECK-NEXT:    %[[Z:.+]] = arith.constant 0.000000e+00 : f32
// CHECK-NEXT:    %[[DS2:.+]] = arith.select %[[KEEP]], %[[DS]], %[[Z]] : f32
// CHECK-NEXT:    %[[Z2:.+]] = arith.constant 0.000000e+00 : f32
// CHECK-NEXT:    %[[DW2:.+]] = arith.select %[[KEEP]], %[[DW]], %[[Z2]] : f32
// CHECK-NEXT:    return %[[R2]], %[[DS2]], %[[DW2]], %[[HI]] : f32, f32, f32, index
// CHECK-NOT:     flexattn.
func.func @masked(%s: f32, %dy: f32, %b: index, %h: index, %qi: index, %ki: index, %w: memref<4xf32>)
    -> (f32, f32, f32, index) {
  %r:4 = flexattn.apply_mods_vjp %s, %dy at(%b, %h, %qi, %ki) captures(%w : memref<4xf32>)
      attributes {masked, vjp_loads = array<i64: 0>}
    score_mod_vjp {
    ^bb0(%x: f32, %bb: i32, %hh: i32, %q: i32, %k: i32, %c: memref<4xf32>, %g: f32):
      %hi = arith.index_cast %hh : i32 to index
      %wh = memref.load %c[%hi] : memref<4xf32>
      %y = arith.mulf %x, %wh : f32
      %dx = arith.mulf %g, %wh : f32
      %dw = arith.mulf %g, %x : f32
      flexattn.yield %y, %dx, %dw, %hi : f32, f32, f32, index
    } mask_mod {
    ^bb0(%bb: i32, %hh: i32, %q: i32, %k: i32, %c: memref<4xf32>):
      %keep = arith.cmpi sge, %q, %k : i32
      flexattn.yield %keep : i1
    } : f32, f32, f32, index
  return %r#0, %r#1, %r#2, %r#3 : f32, f32, f32, index
}

// -----

// No regions: the identity, (score, dy).

// CHECK-LABEL: func.func @identity(
// CHECK-SAME:    %[[S:[^:]+]]: f32, %[[DY:[^:]+]]: f32
// CHECK-NEXT:    return %[[S]], %[[DY]] : f32, f32
func.func @identity(%s: f32, %dy: f32, %i: index) -> (f32, f32) {
  %r:2 = flexattn.apply_mods_vjp %s, %dy at(%i, %i, %i, %i) attributes {masked} : f32, f32
  return %r#0, %r#1 : f32, f32
}
