// RUN: flexattn-opt %s -split-input-file -flexattn-fold-tile-divisions | FileCheck %s
// RUN: flexattn-opt %s -split-input-file -flexattn-fold-tile-divisions -cse | FileCheck %s --check-prefix=CSE

// The GPU decode kernel's columns: a 64-column half (%half) of a 128-key
// block loaded at run time (%blk), a thread's first column (2 x its lane in
// the quad) and the element's constant column. Divided by a 128-token page
// every element's quotient is the block start's: one page-table load per
// tile after CSE.

// CHECK-LABEL: func.func @gpu_page(
// CHECK:         gpu.launch
// CHECK:           %[[BLK:.+]] = arith.index_cast %{{.+}} : i32 to index
// CHECK:           %[[START:.+]] = arith.muli %[[BLK]], %c128 : index
// CHECK:           %[[S0:.+]] = arith.index_cast %[[START]] : index to i32
// CHECK-NEXT:      %[[P0:.+]] = arith.floordivsi %[[S0]], %c128_i32 : i32
// CHECK-NEXT:      %[[I0:.+]] = arith.index_cast %[[P0]] : i32 to index
// CHECK-NEXT:      memref.load %{{.+}}[%[[I0]]] : memref<512xi64>
// CHECK:           %[[S1:.+]] = arith.index_cast %[[START]] : index to i32
// CHECK-NEXT:      arith.floordivsi %[[S1]], %c128_i32 : i32

// CSE-LABEL: func.func @gpu_page(
// CSE-COUNT-1:   arith.floordivsi
// CSE-NOT:       arith.floordivsi
// CSE-COUNT-1:   memref.load %{{.+}} : memref<512xi64>
// CSE-NOT:       memref.load %{{.+}} : memref<512xi64>
func.func @gpu_page(%blocks: memref<8xi32>, %table: memref<512xi64>, %out: memref<128x2xi64>) {
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c4 = arith.constant 4 : index
  %c32 = arith.constant 32 : index
  %c64 = arith.constant 64 : index
  %c128 = arith.constant 128 : index
  %c0 = arith.constant 0 : index
  %c8_i32 = arith.constant 8 : i32
  %c57_i32 = arith.constant 57 : i32
  %c128_i32 = arith.constant 128 : i32
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c128, %sy = %c1, %sz = %c1) {
    %tid = gpu.thread_id x
    %lane = arith.remui %tid, %c32 : index
    %quad = arith.remui %lane, %c4 : index
    %col = arith.muli %quad, %c2 : index
    %step = arith.remui %bx, %c2 : index
    %idx = arith.divui %bx, %c2 : index
    %b32 = memref.load %blocks[%idx] : memref<8xi32>
    %blk = arith.index_cast %b32 : i32 to index
    %start = arith.muli %blk, %c128 : index
    %half = arith.muli %step, %c64 : index
    %tile = arith.addi %start, %half : index
    %first = arith.addi %tile, %col : index
    %kv0 = arith.index_cast %first : index to i32
    %e1 = arith.addi %kv0, %c8_i32 : i32
    %p1 = arith.floordivsi %e1, %c128_i32 : i32
    %i1 = arith.index_cast %p1 : i32 to index
    %v1 = memref.load %table[%i1] : memref<512xi64>
    %e2 = arith.addi %kv0, %c57_i32 : i32
    %p2 = arith.floordivsi %e2, %c128_i32 : i32
    %i2 = arith.index_cast %p2 : i32 to index
    %v2 = memref.load %table[%i2] : memref<512xi64>
    memref.store %v1, %out[%tid, %c0] : memref<128x2xi64>
    memref.store %v2, %out[%tid, %c1] : memref<128x2xi64>
    gpu.terminator
  }
  return
}

// -----

// The CPU path: a row of a 128-key tile in a linalg.generic, its column
// linalg.index 1 in [0, 128) after a start that is a multiple of 128; the
// mod computes in i64 on the sign-extended i32 index, so the split goes
// through the extension too.

// CHECK-LABEL: func.func @cpu_page(
// CHECK:         %[[START:.+]] = arith.muli %{{.+}}, %c128 : index
// CHECK:         linalg.generic
// CHECK:           %[[S32:.+]] = arith.index_cast %[[START]] : index to i32
// CHECK-NEXT:      %[[S64:.+]] = arith.extsi %[[S32]] : i32 to i64
// CHECK-NEXT:      %[[P:.+]] = arith.floordivsi %[[S64]], %c256_i64 : i64
// CHECK-NEXT:      arith.index_cast %[[P]] : i64 to index
func.func @cpu_page(%t: index, %table: memref<64xf32>, %s: memref<4x128xf32>) {
  %c128 = arith.constant 128 : index
  %c256_i64 = arith.constant 256 : i64
  %start = arith.muli %t, %c128 : index
  linalg.generic {indexing_maps = [affine_map<(i, j) -> (i, j)>],
                  iterator_types = ["parallel", "parallel"]} outs(%s : memref<4x128xf32>) {
  ^bb0(%o: f32):
    %j = linalg.index 1 : index
    %kv = arith.addi %start, %j : index
    %kv32 = arith.index_cast %kv : index to i32
    %kv64 = arith.extsi %kv32 : i32 to i64
    %p = arith.floordivsi %kv64, %c256_i64 : i64
    %i = arith.index_cast %p : i64 to index
    %v = memref.load %table[%i] : memref<64xf32>
    %r = arith.addf %o, %v : f32
    linalg.yield %r : f32
  }
  return
}

// -----

// torch's floor modulo (Python's %: remsi, then + P where the remainder is
// negative) of a column by its page becomes the column less the page's
// start: one subtraction per score, the quotient shared with the page's
// (the remainder's ops are left dead for canonicalize).

// CHECK-LABEL: func.func @floor_mod(
// CHECK-SAME:    %[[T:[^:]+]]: index, %[[LANE:[^:]+]]: index
// CHECK:         %[[START:.+]] = arith.muli %[[T]], %c128 : index
// CHECK:         %[[KV:.+]] = arith.index_cast %{{.+}} : index to i32
// CHECK-NEXT:    %[[E:.+]] = arith.addi %[[KV]], %c9_i32 : i32
// CHECK:         %[[S:.+]] = arith.index_cast %[[START]] : index to i32
// CHECK-NEXT:    %[[Q:.+]] = arith.floordivsi %[[S]], %c128_i32 : i32
// CHECK-NEXT:    %[[QP:.+]] = arith.muli %[[Q]], %c128_i32 : i32
// CHECK-NEXT:    %[[M:.+]] = arith.subi %[[E]], %[[QP]] : i32
// CHECK-NEXT:    return %[[M]] : i32
func.func @floor_mod(%t: index, %lane: index) -> i32 {
  %c2 = arith.constant 2 : index
  %c4 = arith.constant 4 : index
  %c128 = arith.constant 128 : index
  %c0_i32 = arith.constant 0 : i32
  %c9_i32 = arith.constant 9 : i32
  %c128_i32 = arith.constant 128 : i32
  %start = arith.muli %t, %c128 : index
  %q = arith.remui %lane, %c4 : index
  %col = arith.muli %q, %c2 : index
  %kv = arith.addi %start, %col : index
  %kv32 = arith.index_cast %kv : index to i32
  %e = arith.addi %kv32, %c9_i32 : i32
  %r = arith.remsi %e, %c128_i32 : i32
  %nz = arith.cmpi ne, %r, %c0_i32 : i32
  %neg = arith.cmpi slt, %r, %c0_i32 : i32
  %both = arith.andi %nz, %neg : i1
  %up = arith.addi %r, %c128_i32 : i32
  %m = arith.select %both, %up, %r : i32
  return %m : i32
}

// -----

// A divisor with an odd factor: 96 = 3 x 32. The 64-column tile start is a
// multiple of 32 and the offsets [8, 15) stay inside it: folds (the start's
// remainder mod 96 is 0, 32 or 64, plus at most 14, stays below 96).

// CHECK-LABEL: func.func @odd_divisor(
// CHECK:         %[[START:.+]] = arith.muli %{{.+}}, %c64 : index
// CHECK:         %[[S:.+]] = arith.index_cast %[[START]] : index to i32
// CHECK-NEXT:    arith.floordivsi %[[S]], %c96_i32 : i32
func.func @odd_divisor(%t: index, %lane: index) -> i32 {
  %c4 = arith.constant 4 : index
  %c2 = arith.constant 2 : index
  %c64 = arith.constant 64 : index
  %c8_i32 = arith.constant 8 : i32
  %c96_i32 = arith.constant 96 : i32
  %start = arith.muli %t, %c64 : index
  %q = arith.remui %lane, %c4 : index
  %col = arith.muli %q, %c2 : index
  %kv = arith.addi %start, %col : index
  %kv32 = arith.index_cast %kv : index to i32
  %e = arith.addi %kv32, %c8_i32 : i32
  %p = arith.floordivsi %e, %c96_i32 : i32
  return %p : i32
}

// -----

// Not folded: the offset can reach the divisor's power of two (a 64-aligned
// start and a column up to 127 over 128), a truncating division (divsi is
// not floor division for negative starts), a tail's clamped index (minui is
// no sum), an unbounded offset, an extension of a split that wraps in i32
// (its offset reaches the modulus), and an index that is the start itself.

// CHECK-LABEL: func.func @kept(
// CHECK-SAME:    %[[T:[^:]+]]: index, %[[J:[^:]+]]: index, %[[X:[^:]+]]: i32
// CHECK:         %[[WIDE:.+]] = arith.addi %{{.+}}, %{{.+}} : index
// CHECK:         %[[W32:.+]] = arith.index_cast %[[WIDE]] : index to i32
// CHECK:         arith.floordivsi %[[W32]], %c128_i32 : i32
// CHECK:         %[[N:.+]] = arith.index_cast %{{.+}} : index to i32
// CHECK:         arith.divsi %[[N]], %c128_i32 : i32
// CHECK:         %[[MIN:.+]] = arith.minui
// CHECK:         arith.floordivsi %[[MIN]], %c128_i32 : i32
// CHECK:         %[[UNB:.+]] = arith.addi %{{.+}}, %[[X]] : i32
// CHECK:         arith.floordivsi %[[UNB]], %c128_i32 : i32
// CHECK:         %[[EXT:.+]] = arith.extsi %{{.+}} : i32 to i64
// CHECK:         arith.floordivsi %[[EXT]], %c128_i64 : i64
// CHECK:         %[[S0:.+]] = arith.index_cast %{{.+}} : index to i32
// CHECK:         arith.floordivsi %[[S0]], %c128_i32 : i32
func.func @kept(%t: index, %j: index, %x: i32) -> (i32, i32, i32, i32, i64, i32) {
  %c127 = arith.constant 127 : index
  %c64 = arith.constant 64 : index
  %c128 = arith.constant 128 : index
  %c4 = arith.constant 4 : index
  %c100_i32 = arith.constant 100 : i32
  %c200_i32 = arith.constant 200 : i32
  %c128_i32 = arith.constant 128 : i32
  %c128_i64 = arith.constant 128 : i64
  %start64 = arith.muli %t, %c64 : index
  %col = arith.andi %j, %c127 : index
  %wide = arith.addi %start64, %col : index
  %w32 = arith.index_cast %wide : index to i32
  %a = arith.floordivsi %w32, %c128_i32 : i32
  %start128 = arith.muli %t, %c128 : index
  %q = arith.remui %j, %c4 : index
  %near = arith.addi %start128, %q : index
  %n32 = arith.index_cast %near : index to i32
  %b = arith.divsi %n32, %c128_i32 : i32
  %min = arith.minui %n32, %c100_i32 : i32
  %c = arith.floordivsi %min, %c128_i32 : i32
  %s32 = arith.index_cast %start128 : index to i32
  %unb = arith.addi %s32, %x : i32
  %d = arith.floordivsi %unb, %c128_i32 : i32
  %far = arith.addi %n32, %c200_i32 : i32
  %ext = arith.extsi %far : i32 to i64
  %e = arith.floordivsi %ext, %c128_i64 : i64
  %s0 = arith.index_cast %start128 : index to i32
  %f = arith.floordivsi %s0, %c128_i32 : i32
  return %a, %b, %c, %d, %e, %f : i32, i32, i32, i32, i64, i32
}

// -----

// Found in review (each crashed or read freed memory before): a constant
// too large to be an offset, integers wider than 64 bits, and a second,
// unused select on the floor modulo's remainder. Left as they are (the
// floor modulo itself still folds).

// CHECK-LABEL: func.func @review_cases(
// CHECK:         %[[V:.+]] = arith.addi %{{.+}}, %c2199023255553_i64 : i64
// CHECK:         arith.floordivsi %[[V]], %c128_i64 : i64
// CHECK:         %[[W:.+]] = arith.addi %{{.+}}, %c18446744073709551617_i128 : i128
// CHECK:         arith.floordivsi %[[W]], %c128_i128 : i128
// CHECK:         %[[Q:.+]] = arith.floordivsi %{{.+}}, %c128_i32 : i32
// CHECK:         %[[QP:.+]] = arith.muli %[[Q]], %c128_i32 : i32
// CHECK:         %[[M:.+]] = arith.subi %{{.+}}, %[[QP]] : i32
// CHECK:         return %{{.+}}, %{{.+}}, %[[M]]
func.func @review_cases(%x: i64, %y: i128, %t: index, %lane: index) -> (i64, i128, i32) {
  %c128_i64 = arith.constant 128 : i64
  %big = arith.constant 2199023255553 : i64
  %s = arith.muli %x, %c128_i64 : i64
  %v = arith.addi %s, %big : i64
  %a = arith.floordivsi %v, %c128_i64 : i64
  %c128_i128 = arith.constant 128 : i128
  %wide = arith.constant 18446744073709551617 : i128
  %ws = arith.muli %y, %c128_i128 : i128
  %w = arith.addi %ws, %wide : i128
  %b = arith.floordivsi %w, %c128_i128 : i128
  %c4 = arith.constant 4 : index
  %c128 = arith.constant 128 : index
  %c0_i32 = arith.constant 0 : i32
  %c128_i32 = arith.constant 128 : i32
  %start = arith.muli %t, %c128 : index
  %q = arith.remui %lane, %c4 : index
  %kv = arith.addi %start, %q : index
  %e = arith.index_cast %kv : index to i32
  %r = arith.remsi %e, %c128_i32 : i32
  %nz = arith.cmpi ne, %r, %c0_i32 : i32
  %neg = arith.cmpi slt, %r, %c0_i32 : i32
  %both = arith.andi %nz, %neg : i1
  %up = arith.addi %r, %c128_i32 : i32
  %m = arith.select %both, %up, %r : i32
  %unused = arith.select %neg, %r, %up : i32
  return %a, %b, %m : i64, i128, i32
}
