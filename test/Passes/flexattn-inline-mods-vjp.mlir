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

// -----

// A score_mod_vjp reading a table at a checked index (the frontend's
// flexattn.check_index with the index report, the last capture): inlined,
// then the check lowered as in the forward (wrap, bounds check, report
// store); the derivative's index is the checked position.

// CHECK-LABEL: func.func @checked(
// CHECK-SAME:    %[[S:[^:]+]]: f32, %[[DY:[^:]+]]: f32, %{{[^:]+}}: index, %{{[^:]+}}: index, %{{[^:]+}}: index, %[[KI:[^:]+]]: index, %[[W:[^:]+]]: memref<8xf32>, %[[BK:[^:]+]]: memref<16xi64>, %[[REP:[^:]+]]: memref<1x2xi64>)
// CHECK:         %[[X:.+]] = memref.load %[[BK]][%{{.+}}] : memref<16xi64>
// CHECK:         %[[NEG:.+]] = arith.cmpi slt, %[[X]], %{{.+}} : i64
// CHECK:         %[[POS:.+]] = arith.select %[[NEG]], %{{.+}}, %[[X]] : i64
// CHECK:         %[[OK:.+]] = arith.cmpi ult, %[[POS]], %{{.+}} : i64
// CHECK:         scf.if %{{.+}} {
// CHECK:           memref.store %{{.+}}, %[[REP]][%{{.+}}, %{{.+}}] : memref<1x2xi64>
// CHECK:           memref.store %[[X]], %[[REP]][%{{.+}}, %{{.+}}] : memref<1x2xi64>
// CHECK-NEXT:    }
// CHECK:         %[[SAFE:.+]] = arith.select %[[OK]], %[[POS]], %{{.+}} : i64
// CHECK-NEXT:    %[[J:.+]] = arith.index_cast %[[SAFE]] : i64 to index
// CHECK-NEXT:    %[[WJ:.+]] = memref.load %[[W]][%[[J]]] : memref<8xf32>
// CHECK-NEXT:    %[[R:.+]] = arith.addf %[[S]], %[[WJ]] : f32
// CHECK-NEXT:    return %[[R]], %[[DY]], %[[DY]], %[[J]] : f32, f32, f32, index
// CHECK-NOT:     flexattn.
func.func @checked(%s: f32, %dy: f32, %b: index, %h: index, %qi: index, %ki: index,
                   %w: memref<8xf32>, %bk: memref<16xi64>, %rep: memref<1x2xi64>)
    -> (f32, f32, f32, index) {
  %r:4 = flexattn.apply_mods_vjp %s, %dy at(%b, %h, %qi, %ki)
      captures(%w, %bk, %rep : memref<8xf32>, memref<16xi64>, memref<1x2xi64>)
      attributes {vjp_loads = array<i64: 0>}
    score_mod_vjp {
    ^bb0(%x: f32, %bb: i32, %hh: i32, %q: i32, %k: i32, %c: memref<8xf32>, %bkt: memref<16xi64>,
         %err: memref<1x2xi64>, %g: f32):
      %k64 = arith.extsi %k : i32 to i64
      %i = flexattn.check_index %k64 of size 16 {bounds = array<i64: 0, 15>} : i64
      %x64 = memref.load %bkt[%i] : memref<16xi64>
      %j = flexattn.check_index %x64 of size 8 report(%err : memref<1x2xi64>) {site = 0 : i64} : i64
      %wj = memref.load %c[%j] : memref<8xf32>
      %y = arith.addf %x, %wj : f32
      flexattn.yield %y, %g, %g, %j : f32, f32, f32, index
    } : f32, f32, f32, index
  return %r#0, %r#1, %r#2, %r#3 : f32, f32, f32, index
}
