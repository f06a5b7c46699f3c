// RUN: flexattn-opt %s -split-input-file -flexattn-exact-int-to-float | FileCheck %s
// RUN: flexattn-opt %s -split-input-file -flexattn-exact-int-to-float -canonicalize -cse | FileCheck %s --check-prefix=CSE

// A relative bias's q_idx - kv_idx as the fragment lowering leaves it: a
// row's query index and the tile's start clamped to the lengths (M = N =
// 8192, 128-key tiles), each score's column a constant. The difference is
// summed in f32, leaves first and the column's constant last: after CSE,
// one conversion per row and per tile, one subtraction of the pair per
// row, one add of an immediate per score, and no sitofp.

// CHECK-LABEL: func.func @relative_bias(
// CHECK-SAME:    %[[ROW:[^:]+]]: i32, %[[START:[^:]+]]: i32
// CHECK:         %[[Q:.+]] = arith.minui %[[ROW]], %{{.+}} : i32
// The leaf's conversion sits right after its definition: an add to the
// bit pattern of 1.5 * 2^23 and a subtraction of 12582912.
// CHECK-NEXT:    %[[MB:.+]] = arith.constant 1262485504 : i32
// CHECK-NEXT:    %[[QB:.+]] = arith.addi %[[Q]], %[[MB]] : i32
// CHECK-NEXT:    %[[QBF:.+]] = arith.bitcast %[[QB]] : i32 to f32
// CHECK-NEXT:    %[[M:.+]] = arith.constant 0x4B400000 : f32
// CHECK-NEXT:    %[[QF:.+]] = arith.subf %[[QBF]], %[[M]] : f32
// CHECK-NEXT:    %[[KV0:.+]] = arith.minui %[[START]], %{{.+}} : i32
// CHECK:         %[[KF:.+]] = arith.subf %{{.+}}, %{{.+}} : f32
// CHECK:         %[[D0:.+]] = arith.subf %[[QF]], %[[KF]] : f32
// CHECK-NEXT:    %[[C3:.+]] = arith.constant -3.000000e+00 : f32
// CHECK-NEXT:    %[[F0:.+]] = arith.addf %[[D0]], %[[C3]] : f32
// CHECK-NEXT:    arith.mulf %[[F0]], %{{.+}} : f32
// CHECK-NOT:     arith.sitofp

// CSE-LABEL: func.func @relative_bias(
// CSE:         %[[D:.+]] = arith.subf %{{[0-9]+}}, %{{[0-9]+}} : f32
// CSE-NEXT:    %[[F0:.+]] = arith.addf %[[D]], %cst{{.*}} : f32
// CSE-NEXT:    arith.mulf %[[F0]]
// CSE-NEXT:    arith.addf
// CSE-NEXT:    %[[F1:.+]] = arith.addf %[[D]], %cst{{.*}} : f32
// CSE-NEXT:    arith.mulf %[[F1]]
// CSE-NEXT:    arith.addf
// CSE-NEXT:    return
func.func @relative_bias(%row: i32, %start: i32, %s0: f32, %s1: f32) -> (f32, f32) {
  %last = arith.constant 8191 : i32
  %lastStart = arith.constant 8064 : i32
  %c3 = arith.constant 3 : i32
  %c5 = arith.constant 5 : i32
  %k = arith.constant 0.01 : f32
  %q = arith.minui %row, %last : i32
  %kv0 = arith.minui %start, %lastStart : i32
  %qi = arith.index_cast %q : i32 to index
  %q64 = arith.index_cast %qi : index to i64
  // Score 0: column 3.
  %kv3 = arith.addi %kv0, %c3 : i32
  %kv3i = arith.index_cast %kv3 : i32 to index
  %kv3l = arith.index_cast %kv3i : index to i64
  %d3 = arith.subi %q64, %kv3l : i64
  %f3 = arith.sitofp %d3 : i64 to f32
  %b3 = arith.mulf %f3, %k : f32
  %r0 = arith.addf %s0, %b3 : f32
  // Score 1: column 5.
  %kv5 = arith.addi %kv0, %c5 : i32
  %kv5i = arith.index_cast %kv5 : i32 to index
  %kv5l = arith.index_cast %kv5i : index to i64
  %d5 = arith.subi %q64, %kv5l : i64
  %f5 = arith.sitofp %d5 : i64 to f32
  %b5 = arith.mulf %f5, %k : f32
  %r1 = arith.addf %s1, %b5 : f32
  return %r0, %r1 : f32, f32
}

// -----

// A lone value in [-2^22, 2^22) (here [-8191, 8191]) converts with the add
// trick; uitofp too where the value is not negative.

// CHECK-LABEL: func.func @lone(
// CHECK:         %[[D:.+]] = arith.subi
// CHECK-NEXT:    %[[MB:.+]] = arith.constant 1262485504 : i32
// CHECK-NEXT:    %[[B:.+]] = arith.addi %[[D]], %[[MB]] : i32
// CHECK-NEXT:    %[[BF:.+]] = arith.bitcast %[[B]] : i32 to f32
// CHECK-NEXT:    %[[M:.+]] = arith.constant 0x4B400000 : f32
// CHECK-NEXT:    %[[F:.+]] = arith.subf %[[BF]], %[[M]] : f32
// CHECK:         %[[U:.+]] = arith.minui
// CHECK-NEXT:    %[[U32:.+]] = arith.trunci %[[U]] : i64 to i32
// CHECK-NEXT:    %[[MB2:.+]] = arith.constant 1262485504 : i32
// CHECK-NEXT:    arith.addi %[[U32]], %[[MB2]]
// CHECK-NOT:     itofp
// CHECK:         return %[[F]]
func.func @lone(%a: i32, %b: i32, %c: i64) -> (f32, f32) {
  %last = arith.constant 8191 : i32
  %x = arith.minui %a, %last : i32
  %y = arith.minui %b, %last : i32
  %d = arith.subi %x, %y : i32
  %f = arith.sitofp %d : i32 to f32
  %big = arith.constant 4194303 : i64
  %u = arith.minui %c, %big : i64
  %g = arith.uitofp %u : i64 to f32
  return %f, %g : f32, f32
}

// -----

// Left alone: an unbounded value, a value at 2^22 or past it (the add
// trick's limit), a sum whose terms' magnitudes reach past 2^24, a uitofp
// of a value that may be negative, and a conversion to f16.

// CHECK-LABEL: func.func @left_alone(
// CHECK-COUNT-5: itofp
// CHECK-NOT:     arith.bitcast
func.func @left_alone(%a: i32, %b: i32, %c: i32) -> (f32, f32, f32, f32, f16) {
  %f0 = arith.sitofp %a : i32 to f32
  %limit = arith.constant 4194304 : i32
  %x = arith.minui %b, %limit : i32
  %f1 = arith.sitofp %x : i32 to f32
  %wide = arith.constant 16777216 : i32
  %y = arith.minui %c, %wide : i32
  %one = arith.constant 1 : i32
  %y1 = arith.addi %y, %one : i32
  %f2 = arith.sitofp %y1 : i32 to f32
  %k = arith.constant 100 : i32
  %small = arith.minui %a, %k : i32
  %neg = arith.subi %small, %k : i32
  %f3 = arith.uitofp %neg : i32 to f32
  %f4 = arith.sitofp %small : i32 to f16
  return %f0, %f1, %f2, %f3, %f4 : f32, f32, f32, f32, f16
}
