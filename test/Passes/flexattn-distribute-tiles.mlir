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
// CHECK:         %[[FIRST:.+]] = memref.atomic_rmw addi %[[ONE]], %[[COUNTER]][%{{.+}}] : (i64, memref<1xi64>) -> i64
// CHECK-NEXT:    %[[T0:.+]] = arith.index_cast %[[FIRST]] : i64 to index
// CHECK-NEXT:    scf.while (%[[T:.+]] = %[[T0]]) : (index) -> index {
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
// CHECK-NEXT:      %[[NEXT:.+]] = memref.atomic_rmw addi %[[ONE]], %[[COUNTER]][%{{.+}}] : (i64, memref<1xi64>) -> i64
// CHECK-NEXT:      %[[N:.+]] = arith.index_cast %[[NEXT]] : i64 to index
// CHECK-NEXT:      scf.yield %[[N]] : index
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

// CHECK-LABEL: func.func @two_loops(
// CHECK-SAME:    %[[A:[^:]+]]: memref<2xf32>, %[[B:[^:]+]]: memref<3xf32>, %[[COUNTER:[^:]+]]: memref<1xi64> {flexattn.work_counter})
// CHECK-DAG:     %[[C2:.+]] = arith.constant 2 : index
// CHECK-DAG:     %[[C5:.+]] = arith.constant 5 : index
// CHECK:         %[[SCRATCH:.+]] = memref.alloc() : memref<3xf32>
// CHECK:         linalg.fill {{.*}} outs(%[[SCRATCH]]
// CHECK:         %[[T0:.+]] = arith.index_cast
// CHECK:         %[[LEFT:.+]] = scf.while (%[[T:.+]] = %[[T0]]) : (index) -> index {
// CHECK:           arith.cmpi ult, %[[T]], %[[C2]] : index
// CHECK:           memref.store %{{.+}}, %[[A]][
// CHECK:           memref.atomic_rmw addi %{{.+}}, %[[COUNTER]]
// CHECK:         scf.while (%[[T2:.+]] = %[[LEFT]]) : (index) -> index {
// CHECK:           arith.cmpi ult, %[[T2]], %[[C5]] : index
// CHECK:         } do {
// CHECK-NEXT:    ^bb0(%{{.+}}: index):
// CHECK:           memref.load %[[SCRATCH]][%[[I:.+]]]
// CHECK:           memref.store %{{.+}}, %[[B]][%[[I]]]
// CHECK:         memref.dealloc %[[SCRATCH]]
// CHECK-NEXT:    return

// Two independent loops (each writes its own argument; the scratch buffer
// every thread fills for itself is read only) share the tickets: the
// second's range starts where the first's ends, [2, 5).
func.func @two_loops(%a: memref<2xf32>, %b: memref<3xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c3 = arith.constant 3 : index
  %one = arith.constant 1.0 : f32
  %scratch = memref.alloc() : memref<3xf32>
  linalg.fill ins(%one : f32) outs(%scratch : memref<3xf32>)
  scf.parallel (%i) = (%c0) to (%c2) step (%c1) {
    memref.store %one, %a[%i] : memref<2xf32>
    scf.reduce
  }
  scf.parallel (%i) = (%c0) to (%c3) step (%c1) {
    %x = memref.load %scratch[%i] : memref<3xf32>
    memref.store %x, %b[%i] : memref<3xf32>
    scf.reduce
  }
  memref.dealloc %scratch : memref<3xf32>
  return
}

// -----

// A top-level op outside the loops writes an argument (zeroes a gradient a
// sequential nest then accumulates): the body runs on the first thread to
// claim a ticket, its loops left for flexattn-lower-to-loops.

// CHECK-LABEL: func.func @shared_write(
// CHECK-SAME:    %[[G:[^:]+]]: memref<2xf32>, %{{[^:]+}}: memref<2xf32>, %[[COUNTER:[^:]+]]: memref<1xi64> {flexattn.work_counter})
// CHECK:         %[[CLAIMED:.+]] = memref.atomic_rmw addi %{{.+}}, %[[COUNTER]]
// CHECK-NEXT:    %[[T:.+]] = arith.index_cast %[[CLAIMED]] : i64 to index
// CHECK-NEXT:    %[[FIRST:.+]] = arith.cmpi eq, %[[T]], %{{.+}} : index
// CHECK-NEXT:    scf.if %[[FIRST]] {
// CHECK:           linalg.fill {{.*}} outs(%[[G]]
// CHECK:           scf.parallel
// CHECK:           scf.for
// CHECK:             memref.store %{{.+}}, %[[G]]
// CHECK-NEXT:      }
// CHECK-NEXT:    }
// CHECK-NEXT:    return
func.func @shared_write(%g: memref<2xf32>, %out: memref<2xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %zero = arith.constant 0.0 : f32
  %one = arith.constant 1.0 : f32
  linalg.fill ins(%zero : f32) outs(%g : memref<2xf32>)
  scf.parallel (%i) = (%c0) to (%c2) step (%c1) {
    memref.store %one, %out[%i] : memref<2xf32>
    scf.reduce
  }
  scf.for %i = %c0 to %c2 step %c1 {
    %x = memref.load %g[%i] : memref<2xf32>
    %y = arith.addf %x, %one : f32
    memref.store %y, %g[%i] : memref<2xf32>
  }
  return
}

// -----

// A loop writes what another loop reads: the loops are not independent, so
// the body runs on one thread.

// CHECK-LABEL: func.func @dependent_loops(
// CHECK:         scf.if
// CHECK-COUNT-2:   scf.parallel
func.func @dependent_loops(%a: memref<2xf32>, %b: memref<2xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %one = arith.constant 1.0 : f32
  scf.parallel (%i) = (%c0) to (%c2) step (%c1) {
    memref.store %one, %a[%i] : memref<2xf32>
    scf.reduce
  }
  scf.parallel (%i) = (%c0) to (%c2) step (%c1) {
    %x = memref.load %a[%i] : memref<2xf32>
    memref.store %x, %b[%i] : memref<2xf32>
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

// -----

// expected-error @+1 {{'func.func' op returns values; flexattn-distribute-tiles distributes kernels that write their results}}
func.func @returns(%out: memref<2xf32>) -> f32 {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %one = arith.constant 1.0 : f32
  scf.parallel (%i) = (%c0) to (%c2) step (%c1) {
    memref.store %one, %out[%i] : memref<2xf32>
    scf.reduce
  }
  return %one : f32
}
