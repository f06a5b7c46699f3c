// RUN: flexattn-opt %s -split-input-file -flexattn-vectorize-tiles -canonicalize -cse | FileCheck %s

// S = Q . Kᵀ on a full 8 x 64 tile, D = 32: the K tile is transposed into a
// [D, BN] stack buffer in 16 x 16 blocks, then each 4-row block of S
// accumulates in registers (iter_args) over d: one broadcast Q element times
// one contiguous row of Kᵀ per row, an FMA.

// CHECK-LABEL: func.func @qk(
// CHECK-SAME:    %[[Q:[^:]+]]: memref<8x32xf32, strided<[32, 1], offset: ?>>, %[[K:[^:]+]]: memref<64x32xf32, strided<[32, 1], offset: ?>>)
// CHECK-NOT:     linalg.
// CHECK:         %[[S:.+]] = memref.alloca() : memref<8x64xf32>
// CHECK:         %[[KT:.+]] = memref.alloca() : memref<32x64xf32>
// CHECK:         scf.for %[[D0:.+]] = %{{.+}} to %{{.+}} step %c16
// CHECK-NEXT:      scf.for %[[J0:.+]] = %{{.+}} to %{{.+}} step %c16
// CHECK-NEXT:        %[[BLK:.+]] = vector.transfer_read %[[K]][%[[J0]], %[[D0]]], %{{.+}} {in_bounds = [true, true], permutation_map = #{{.+}}} : {{.+}}, vector<16x16xf32>
// CHECK-NEXT:        vector.transfer_write %[[BLK]], %[[KT]][%[[D0]], %[[J0]]]
// CHECK:         scf.for %[[I:.+]] = %{{.+}} to %{{.+}} step %c4
// CHECK-NEXT:      %[[ACC0:.+]] = vector.transfer_read %[[S]][%[[I]], %{{.+}}], %{{.+}} : memref<8x64xf32>, vector<4x64xf32>
// CHECK-NEXT:      %[[ACC:.+]] = scf.for %[[D:.+]] = %{{.+}} to %{{.+}} step %{{.+}} iter_args(%[[A:.+]] = %[[ACC0]]) -> (vector<4x64xf32>)
// CHECK-NEXT:        %[[QCOL:.+]] = vector.transfer_read %[[Q]][%[[I]], %[[D]]]{{.*}} vector<4xf32>
// CHECK-NEXT:        %[[KROW:.+]] = vector.transfer_read %[[KT]][%[[D]], %{{.+}}]{{.*}} vector<64xf32>
// CHECK-NEXT:        %[[Q0:.+]] = vector.extract %[[QCOL]][0]
// CHECK-NEXT:        %[[B0:.+]] = vector.broadcast %[[Q0]] : f32 to vector<64xf32>
// CHECK-NEXT:        %[[A0:.+]] = vector.extract %[[A]][0] : vector<64xf32> from vector<4x64xf32>
// CHECK-NEXT:        vector.fma %[[B0]], %[[KROW]], %[[A0]] : vector<64xf32>
// CHECK-COUNT-3:     vector.fma %{{.+}}, %[[KROW]], %{{.+}} : vector<64xf32>
// CHECK:             scf.yield
// CHECK:           vector.transfer_write %[[ACC]], %[[S]][%[[I]], %{{.+}}]
// CHECK-NOT:     linalg.
// CHECK:         return %[[S]]
#qk_q = affine_map<(i, j, d) -> (i, d)>
#qk_k = affine_map<(i, j, d) -> (j, d)>
#qk_s = affine_map<(i, j, d) -> (i, j)>
func.func @qk(%q: memref<8x32xf32, strided<[32, 1], offset: ?>>,
              %k: memref<64x32xf32, strided<[32, 1], offset: ?>>) -> memref<8x64xf32> {
  %s = memref.alloca() : memref<8x64xf32>
  %zero = arith.constant 0.0 : f32
  linalg.fill ins(%zero : f32) outs(%s : memref<8x64xf32>)
  linalg.generic {indexing_maps = [#qk_q, #qk_k, #qk_s], iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%q, %k : memref<8x32xf32, strided<[32, 1], offset: ?>>, memref<64x32xf32, strided<[32, 1], offset: ?>>)
      outs(%s : memref<8x64xf32>) {
  ^bb0(%x: f32, %y: f32, %acc: f32):
    %p = arith.mulf %x, %y : f32
    %r = arith.addf %acc, %p : f32
    linalg.yield %r : f32
  }
  return %s : memref<8x64xf32>
}

// -----

// A head dim narrower than the 16 x 16 transpose block: the K tile is
// transposed in blocks of 8 x 16 (a permuted read of 16 keys).

// CHECK-LABEL: func.func @qk_narrow(
// CHECK-NOT:     linalg.
// CHECK:         vector.transfer_read %{{.+}} {in_bounds = [true, true], permutation_map = #{{.+}}} : memref<32x8xf32, strided<[8, 1], offset: ?>>, vector<8x16xf32>
// CHECK:         vector.fma
#qk_q = affine_map<(i, j, d) -> (i, d)>
#qk_k = affine_map<(i, j, d) -> (j, d)>
#qk_s = affine_map<(i, j, d) -> (i, j)>
func.func @qk_narrow(%q: memref<4x8xf32, strided<[8, 1], offset: ?>>,
                     %k: memref<32x8xf32, strided<[8, 1], offset: ?>>) -> memref<4x32xf32> {
  %s = memref.alloca() : memref<4x32xf32>
  linalg.generic {indexing_maps = [#qk_q, #qk_k, #qk_s], iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%q, %k : memref<4x8xf32, strided<[8, 1], offset: ?>>, memref<32x8xf32, strided<[8, 1], offset: ?>>)
      outs(%s : memref<4x32xf32>) {
  ^bb0(%x: f32, %y: f32, %acc: f32):
    %p = arith.mulf %x, %y : f32
    %r = arith.addf %acc, %p : f32
    linalg.yield %r : f32
  }
  return %s : memref<4x32xf32>
}

// -----

// acc += P . V, the accumulator being tile state (a stack buffer the edge-tile
// branch also views): its 4-row blocks still stay in registers across the
// reduction over j.

// CHECK-LABEL: func.func @pv(
// CHECK-SAME:    %[[P:[^:]+]]: memref<8x64xf32>, %[[V:[^:]+]]: memref<64x16xf32, strided<[16, 1], offset: ?>>
// CHECK:         %[[ACC:.+]] = memref.alloca() : memref<8x16xf32>
// CHECK:         scf.for %[[I:.+]] = %{{.+}} to %{{.+}} step %c4
// CHECK-NEXT:      %[[A0:.+]] = vector.transfer_read %[[ACC]][%[[I]], %{{.+}}]{{.*}} vector<4x16xf32>
// CHECK-NEXT:      %[[R:.+]] = scf.for %[[J:.+]] = {{.*}} iter_args(%{{.+}} = %[[A0]]) -> (vector<4x16xf32>)
// CHECK-NEXT:        vector.transfer_read %[[P]][%[[I]], %[[J]]]{{.*}} vector<4xf32>
// CHECK-NEXT:        %[[VROW:.+]] = vector.transfer_read %[[V]][%[[J]], %{{.+}}]{{.*}} vector<16xf32>
// CHECK-COUNT-4:     vector.fma %{{.+}}, %[[VROW]], %{{.+}} : vector<16xf32>
// CHECK:           vector.transfer_write %[[R]], %[[ACC]][%[[I]], %{{.+}}]
// CHECK:         memref.subview %[[ACC]]
func.func @pv(%p: memref<8x64xf32>, %v: memref<64x16xf32, strided<[16, 1], offset: ?>>, %rows: index)
    -> memref<?x16xf32, strided<[16, 1]>> {
  %acc = memref.alloca() : memref<8x16xf32>
  linalg.generic {indexing_maps = [affine_map<(i, c, j) -> (i, j)>, affine_map<(i, c, j) -> (j, c)>,
                                   affine_map<(i, c, j) -> (i, c)>],
                  iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%p, %v : memref<8x64xf32>, memref<64x16xf32, strided<[16, 1], offset: ?>>) outs(%acc : memref<8x16xf32>) {
  ^bb0(%x: f32, %y: f32, %a: f32):
    %m = arith.mulf %x, %y : f32
    %r = arith.addf %a, %m : f32
    linalg.yield %r : f32
  }
  %window = memref.subview %acc[0, 0] [%rows, 16] [1, 1] : memref<8x16xf32> to memref<?x16xf32, strided<[16, 1]>>
  return %window : memref<?x16xf32, strided<[16, 1]>>
}

// -----

// Row-wise ops: one row at a time, whole rows as vectors. A mask_mod built on
// linalg.index compares vector.step lanes; the row max becomes a
// vector.reduction (maxnumf, nnan: a plain max tree; a NaN score still
// poisons its row through exp2 and the row sum); exp2 becomes a polynomial in f with 2^n built in the
// exponent bits (no math.exp2 is left for LLVM to scalarise).

// CHECK-LABEL: func.func @mask_rowmax_exp2(
// CHECK-SAME:    %[[S:[^:]+]]: memref<4x32xf32>, %[[M:[^:]+]]: memref<4xf32>, %[[Q0:[^:]+]]: index, %[[KV0:[^:]+]]: index)
// CHECK-NOT:     linalg.
// The key indices do not change along the tile's rows: computed once.
// CHECK:         %[[LANES:.+]] = vector.step : vector<32xindex>
// CHECK:         %[[KVB:.+]] = vector.broadcast %[[KV0]] : index to vector<32xindex>
// CHECK-NEXT:    %[[KJ:.+]] = arith.addi %[[KVB]], %[[LANES]] : vector<32xindex>
// CHECK:         scf.for %[[I:.+]] = %{{.+}} to %{{.+}} step %{{.+}} {
// CHECK-NEXT:      %[[ROW:.+]] = vector.transfer_read %[[S]][%[[I]], %{{.+}}]{{.*}} vector<32xf32>
// CHECK:           %[[KEEP:.+]] = arith.cmpi sge, %{{.+}}, %[[KJ]] : vector<32xindex>
// CHECK-NEXT:      %[[MASKED:.+]] = arith.select %[[KEEP]], %[[ROW]], %{{.+}} : vector<32xi1>, vector<32xf32>
// CHECK-NEXT:      vector.transfer_write %[[MASKED]], %[[S]][%[[I]], %{{.+}}]
// CHECK:         scf.for %[[I:.+]] = %{{.+}} to %{{.+}} step %{{.+}} {
// CHECK:           vector.reduction <maxnumf>, %{{.+}}, %{{.+}} fastmath<nnan> : vector<32xf32> into f32
// CHECK:         scf.for %[[I:.+]] = %{{.+}} to %{{.+}} step %{{.+}} {
// CHECK-NOT:       math.exp2
// CHECK:           %[[X:.+]] = arith.subf
// CHECK:           arith.maximumf %[[X]], %{{.+}} : vector<32xf32>
// CHECK:           math.roundeven %{{.+}} : vector<32xf32>
// CHECK-COUNT-6:   math.fma %{{.+}} : vector<32xf32>
// CHECK:           arith.fptosi %{{.+}} : vector<32xf32> to vector<32xi32>
// CHECK:           arith.shli
// CHECK:           arith.bitcast %{{.+}} : vector<32xi32> to vector<32xf32>
// CHECK-NOT:     math.exp2
// CHECK:         return
func.func @mask_rowmax_exp2(%s: memref<4x32xf32>, %m: memref<4xf32>, %q0: index, %kv0: index) {
  linalg.generic {indexing_maps = [affine_map<(i, j) -> (i, j)>], iterator_types = ["parallel", "parallel"]}
      outs(%s : memref<4x32xf32>) {
  ^bb0(%x: f32):
    %i = linalg.index 0 : index
    %j = linalg.index 1 : index
    %qi = arith.addi %q0, %i : index
    %kj = arith.addi %kv0, %j : index
    %keep = arith.cmpi sge, %qi, %kj : index
    %ninf = arith.constant 0xFF800000 : f32
    %r = arith.select %keep, %x, %ninf : f32
    linalg.yield %r : f32
  }
  linalg.generic {indexing_maps = [affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i)>],
                  iterator_types = ["parallel", "reduction"]}
      ins(%s : memref<4x32xf32>) outs(%m : memref<4xf32>) {
  ^bb0(%x: f32, %acc: f32):
    %r = arith.maximumf %x, %acc : f32
    linalg.yield %r : f32
  }
  linalg.generic {indexing_maps = [affine_map<(i, j) -> (i)>, affine_map<(i, j) -> (i, j)>],
                  iterator_types = ["parallel", "parallel"]}
      ins(%m : memref<4xf32>) outs(%s : memref<4x32xf32>) {
  ^bb0(%mx: f32, %x: f32):
    %d = arith.subf %x, %mx : f32
    %e = math.exp2 %d : f32
    linalg.yield %e : f32
  }
  return
}

// -----

// The mods' reads of captured buffers are widened along the row: a slope read
// at the head (the same for the whole row) and a document id read at the
// query index become one scalar load and a broadcast each (arithmetic on
// them would sink below the broadcast: once per row), a document id read at
// a computed key index becomes a gather.

// CHECK-LABEL: func.func @captures(
// CHECK-SAME:    %[[S:[^:]+]]: memref<4x32xf32>, %[[IDS:[^:]+]]: memref<64xi32>, %[[SLOPES:[^:]+]]: memref<8xf32>, %[[H:[^:]+]]: index, %[[Q0:[^:]+]]: index, %[[KV0:[^:]+]]: index)
// CHECK-NOT:     linalg.
// CHECK-NOT:     bufferization.
// CHECK-NOT:     tensor.
// CHECK:         scf.for %[[I:.+]] = %{{.+}} to %{{.+}} step %{{.+}} {
// CHECK-NEXT:      %[[ROW:.+]] = vector.transfer_read %[[S]][%[[I]], %{{.+}}]{{.*}} vector<32xf32>
// CHECK:           %[[SLOPE0:.+]] = memref.load %[[SLOPES]][%[[H]]] : memref<8xf32>
// CHECK-NEXT:      %[[SLOPE:.+]] = vector.broadcast %[[SLOPE0]] : f32 to vector<32xf32>
// CHECK-NEXT:      %[[DQ0:.+]] = memref.load %[[IDS]][%{{.+}}] : memref<64xi32>
// CHECK-NEXT:      %[[DQ:.+]] = vector.broadcast %[[DQ0]] : i32 to vector<32xi32>
// CHECK:           %[[DK:.+]] = vector.gather %[[IDS]][%{{.+}}] [%{{.+}}], %{{.+}}, %{{.+}} : memref<64xi32>, vector<1x32xindex>, vector<1x32xi1>, vector<1x32xi32> into vector<1x32xi32>
// CHECK:           arith.cmpi eq, %[[DQ]], %{{.+}} : vector<32xi32>
// CHECK:           arith.mulf %[[ROW]], %[[SLOPE]] : vector<32xf32>
// CHECK-NOT:     memref.load
func.func @captures(%s: memref<4x32xf32>, %ids: memref<64xi32>, %slopes: memref<8xf32>,
                    %h: index, %q0: index, %kv0: index) {
  linalg.generic {indexing_maps = [affine_map<(i, j) -> (i, j)>], iterator_types = ["parallel", "parallel"]}
      outs(%s : memref<4x32xf32>) {
  ^bb0(%x: f32):
    %i = linalg.index 0 : index
    %j = linalg.index 1 : index
    %qi = arith.addi %q0, %i : index
    %kj = arith.addi %kv0, %j : index
    %slope = memref.load %slopes[%h] : memref<8xf32>
    %c7 = arith.constant 7 : index
    %jj = arith.muli %kj, %c7 : index
    %c63 = arith.constant 63 : index
    %kw = arith.remui %jj, %c63 : index
    %dq = memref.load %ids[%qi] : memref<64xi32>
    %dk = memref.load %ids[%kw] : memref<64xi32>
    %same = arith.cmpi eq, %dq, %dk : i32
    %b = arith.mulf %x, %slope : f32
    %ninf = arith.constant 0xFF800000 : f32
    %r = arith.select %same, %b, %ninf : f32
    linalg.yield %r : f32
  }
  return
}

// -----

// An edge tile (dynamic shape) is left to flexattn-lower-to-loops.

// CHECK-LABEL: func.func @edge_tile_stays(
// CHECK:         linalg.fill ins(%{{.+}} : f32) outs(%{{.+}} : memref<?x32xf32>)
// CHECK-NOT:     vector.
func.func @edge_tile_stays(%s: memref<?x32xf32>) {
  %zero = arith.constant 0.0 : f32
  linalg.fill ins(%zero : f32) outs(%s : memref<?x32xf32>)
  return
}

// -----

// A read the index analysis could not bound keeps its run-time check: the
// report (a branch storing [1, index]) becomes row reductions, whether a row
// had a bad element (ori, i8) and its largest bad index (maxsi), so the mod
// still vectorises (the read a gather); one branch after the rows stores the
// report.

// CHECK-LABEL: func.func @checked_read(
// CHECK-SAME:    %[[S:[^:]+]]: memref<4x64xf32>, %[[T:[^:]+]]: memref<32xf32>, %[[R:[^:]+]]: memref<1x2xi64>
// CHECK-NOT:     linalg.
// CHECK-DAG:     %[[FLAGS:.+]] = memref.alloca() : memref<4xi8>
// CHECK-DAG:     %[[WIT:.+]] = memref.alloca() : memref<4xi64>
// CHECK:         scf.for %[[I:.+]] = %{{.+}} to %{{.+}} step %{{.+}} {
// CHECK-NOT:       scf.if
// CHECK:           %[[BAD:.+]] = arith.cmpi uge, %[[IDX:.+]], %{{.+}} : vector<64xi64>
// CHECK:           %[[BAD8:.+]] = arith.extui %[[BAD]] : vector<64xi1> to vector<64xi8>
// CHECK:           vector.reduction <or>, %[[BAD8]], %{{.+}} : vector<64xi8> into i8
// CHECK:           %[[CAND:.+]] = arith.select %[[BAD]], %[[IDX]], %{{.+}} : vector<64xi1>, vector<64xi64>
// CHECK:           vector.reduction <maxsi>, %[[CAND]], %{{.+}} : vector<64xi64> into i64
// CHECK:           vector.gather %[[T]]
// CHECK:           vector.transfer_write %{{.+}}, %[[S]][%[[I]], %{{.+}}]
// CHECK:         }
// CHECK:         %[[ALL:.+]] = vector.transfer_read %[[FLAGS]]
// CHECK:         %[[ANY:.+]] = vector.reduction <or>, %[[ALL]] : vector<4xi8> into i8
// CHECK:         %[[REPORT:.+]] = arith.cmpi ne, %[[ANY]]
// CHECK:         scf.if %[[REPORT]] {
// CHECK:           %[[ROWS:.+]] = vector.transfer_read %[[WIT]]
// CHECK:           %[[MAX:.+]] = vector.reduction <maxsi>, %[[ROWS]] : vector<4xi64> into i64
// CHECK:           memref.store %{{.+}}, %[[R]][%{{.+}}, %{{.+}}]
// CHECK:           memref.store %[[MAX]], %[[R]][%{{.+}}, %{{.+}}]
// CHECK:         }
func.func @checked_read(%s: memref<4x64xf32>, %table: memref<32xf32>, %report: memref<1x2xi64>,
                        %q0: index, %kv0: index) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %one = arith.constant 1 : i64
  %zero = arith.constant 0 : i64
  %size = arith.constant 32 : i64
  linalg.generic {indexing_maps = [affine_map<(i, j) -> (i, j)>], iterator_types = ["parallel", "parallel"]}
      outs(%s : memref<4x64xf32>) {
  ^bb0(%x: f32):
    %i = linalg.index 0 : index
    %j = linalg.index 1 : index
    %q = arith.addi %q0, %i : index
    %kv = arith.addi %kv0, %j : index
    %d = arith.subi %kv, %q : index
    %index = arith.index_cast %d : index to i64
    %ok = arith.cmpi ult, %index, %size : i64
    %bad = arith.cmpi uge, %index, %size : i64
    scf.if %bad {
      memref.store %one, %report[%c0, %c0] : memref<1x2xi64>
      memref.store %index, %report[%c0, %c1] : memref<1x2xi64>
    }
    %pos = arith.select %ok, %index, %zero : i64
    %p = arith.index_cast %pos : i64 to index
    %bias = memref.load %table[%p] : memref<32xf32>
    %r = arith.addf %x, %bias : f32
    linalg.yield %r : f32
  }
  return
}

// -----

// A branch that is not a report of that form (here it stores a float
// computed per element) leaves the op a scalar linalg.generic.

// CHECK-LABEL: func.func @other_branch(
// CHECK:         linalg.generic
// CHECK:           scf.if
func.func @other_branch(%s: memref<4x64xf32>, %out: memref<1xf32>) {
  %c0 = arith.constant 0 : index
  %limit = arith.constant 100.0 : f32
  linalg.generic {indexing_maps = [affine_map<(i, j) -> (i, j)>], iterator_types = ["parallel", "parallel"]}
      outs(%s : memref<4x64xf32>) {
  ^bb0(%x: f32):
    %big = arith.cmpf ogt, %x, %limit : f32
    scf.if %big {
      memref.store %x, %out[%c0] : memref<1xf32>
    }
    linalg.yield %x : f32
  }
  return
}

// -----

// The checked index depends on kv only (the last loop): the reductions
// still get the row's rank. The index is an i32 checked in i32 and reported
// sign-extended (as flexattn-inline-mods writes it): the largest bad index
// is found in i32, then extended.

// CHECK-LABEL: func.func @checked_read_along_kv(
// CHECK-NOT:     linalg.
// CHECK:         scf.for
// CHECK:           vector.reduction <or>, %{{.+}}, %{{.+}} : vector<64xi8> into i8
// CHECK:           vector.reduction <maxsi>, %{{.+}}, %{{.+}} : vector<64xi32> into i32
// CHECK:           vector.gather
// CHECK:         scf.if
// CHECK:           %[[MAX:.+]] = vector.reduction <maxsi>, %{{.+}} : vector<4xi32> into i32
// CHECK:           %[[MAX64:.+]] = arith.extsi %[[MAX]] : i32 to i64
// CHECK:           memref.store %[[MAX64]]
func.func @checked_read_along_kv(%s: memref<4x64xf32>, %table: memref<32xf32>,
                                 %report: memref<1x2xi64>, %kv0: index) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %one = arith.constant 1 : i64
  %zero = arith.constant 0 : i32
  %size = arith.constant 32 : i32
  linalg.generic {indexing_maps = [affine_map<(i, j) -> (i, j)>], iterator_types = ["parallel", "parallel"]}
      outs(%s : memref<4x64xf32>) {
  ^bb0(%x: f32):
    %j = linalg.index 1 : index
    %kv = arith.addi %kv0, %j : index
    %index = arith.index_cast %kv : index to i32
    %ok = arith.cmpi ult, %index, %size : i32
    %bad = arith.cmpi uge, %index, %size : i32
    %reported = arith.extsi %index : i32 to i64
    scf.if %bad {
      memref.store %one, %report[%c0, %c0] : memref<1x2xi64>
      memref.store %reported, %report[%c0, %c1] : memref<1x2xi64>
    }
    %pos = arith.select %ok, %index, %zero : i32
    %p = arith.index_cast %pos : i32 to index
    %bias = memref.load %table[%p] : memref<32xf32>
    %r = arith.addf %x, %bias : f32
    linalg.yield %r : f32
  }
  return
}
