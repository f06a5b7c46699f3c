// RUN: flexattn-opt %s -split-input-file -verify-diagnostics -flexattn-distribute-tiles -canonicalize | FileCheck %s

// 2 batches x 3 heads x 4 Q tiles: 24 tiles claimed from the new counter
// argument. Tile t runs (b, h, qt) = ((t % 6) / 3, t % 3, 3 - t / 6): the
// last Q tile of every (batch, head) first.

// CHECK-LABEL: func.func @tiles(
// CHECK-SAME:    %[[OUT:[^:]+]]: memref<2x3x4xf32>, %[[COUNTER:[^:]+]]: memref<1xi64> {flexattn.work_counter})
// CHECK-DAG:     %[[C24:.+]] = arith.constant 24 : index
// CHECK-DAG:     %[[C6:.+]] = arith.constant 6 : index
// CHECK-DAG:     %[[C3:.+]] = arith.constant 3 : index
// CHECK-DAG:     %[[C2:.+]] = arith.constant 2 : index
// CHECK-DAG:     %[[ONE:.+]] = arith.constant 1 : i64
// CHECK-NOT:     scf.parallel
// CHECK:         scf.while : () -> index {
// CHECK-NEXT:      %[[CLAIMED:.+]] = memref.atomic_rmw addi %[[ONE]], %[[COUNTER]][%{{.+}}] : (i64, memref<1xi64>) -> i64
// CHECK-NEXT:      %[[T:.+]] = arith.index_cast %[[CLAIMED]] : i64 to index
// CHECK-NEXT:      %[[MORE:.+]] = arith.cmpi ult, %[[T]], %[[C24]] : index
// CHECK-NEXT:      scf.condition(%[[MORE]]) %[[T]] : index
// CHECK-NEXT:    } do {
// CHECK-NEXT:    ^bb0(%[[TILE:.+]]: index):
// CHECK-NEXT:      %[[OUTER:.+]] = arith.divui %[[TILE]], %[[C6]] : index
// CHECK-NEXT:      %[[REST:.+]] = arith.remui %[[TILE]], %[[C6]] : index
// CHECK-NEXT:      %[[QT:.+]] = arith.subi %[[C3]], %[[OUTER]] : index
// CHECK-NEXT:      %[[H:.+]] = arith.remui %[[REST]], %[[C3]] : index
// CHECK-NEXT:      %[[BH:.+]] = arith.divui %[[REST]], %[[C3]] : index
// CHECK-NEXT:      %[[B:.+]] = arith.remui %[[BH]], %[[C2]] : index
// CHECK-NEXT:      memref.store %{{.+}}, %[[OUT]][%[[B]], %[[H]], %[[QT]]]
// CHECK-NEXT:      scf.yield
// CHECK-NEXT:    }
// CHECK-NEXT:    return
func.func @tiles(%out: memref<2x3x4xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c3 = arith.constant 3 : index
  %c4 = arith.constant 4 : index
  %one = arith.constant 1.0 : f32
  scf.parallel (%b, %h, %qt) = (%c0, %c0, %c0) to (%c2, %c3, %c4) step (%c1, %c1, %c1) {
    memref.store %one, %out[%b, %h, %qt] : memref<2x3x4xf32>
    scf.reduce
  }
  return
}

// -----

// A function without a top-level scf.parallel is left as it is.

// CHECK-LABEL: func.func @nothing(
// CHECK-SAME:    %{{[^:]+}}: memref<2xf32>)
// CHECK-NOT:     flexattn.work_counter
func.func @nothing(%out: memref<2xf32>) {
  return
}

// -----

func.func @two_loops(%out: memref<2xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %one = arith.constant 1.0 : f32
  scf.parallel (%i) = (%c0) to (%c2) step (%c1) {
    memref.store %one, %out[%i] : memref<2xf32>
    scf.reduce
  }
  // expected-error @+1 {{'scf.parallel' op is a second top-level scf.parallel; flexattn-distribute-tiles shares one work counter per function}}
  scf.parallel (%i) = (%c0) to (%c2) step (%c1) {
    memref.store %one, %out[%i] : memref<2xf32>
    scf.reduce
  }
  return
}

// -----

func.func @strided(%out: memref<4xf32>) {
  %c0 = arith.constant 0 : index
  %c2 = arith.constant 2 : index
  %c4 = arith.constant 4 : index
  %one = arith.constant 1.0 : f32
  // expected-error @+1 {{'scf.parallel' op must start at 0, step by 1 and have no reductions to be distributed}}
  scf.parallel (%i) = (%c0) to (%c4) step (%c2) {
    memref.store %one, %out[%i] : memref<4xf32>
    scf.reduce
  }
  return
}
