// RUN: flexattn-opt %s --flexattn-lower-to-ampere=max-shared-memory=166912 --canonicalize --cse | FileCheck %s

// ring.copy from a source of run-time rows (a dynamic-shape kernel's K:
// memref<?x2x?x64xbf16>): N is the source's dim 2, the head's rows start at
// (b H + h) N, and every chunk's row is clamped to N - 1 and copies 0 bytes
// (zero fill) at or past N, as a static kernel's partial last tile does.
// CHECK-LABEL: func.func @dynamic_rows(
// CHECK:           %[[DIM:.*]] = memref.dim %{{.*}}, %{{.*}} : memref<?x2x?x64xbf16>
// CHECK-NEXT:      %[[N:.*]] = arith.index_cast %[[DIM]] : index to i32
// CHECK:           %[[LAST:.*]] = arith.subi %[[N]], %c1_i32 : i32
// CHECK-NEXT:      %[[RC:.*]] = arith.minui %[[ROW:.*]], %[[LAST]] : i32
// CHECK:           arith.muli %{{.*}}, %[[N]] : i32
// CHECK:           %[[IN:.*]] = arith.cmpi ult, %[[ROW]], %[[N]] : i32
// CHECK-NEXT:      %[[SIZE:.*]] = arith.select %[[IN]], %{{.*}}, %{{.*}} : i32
// CHECK:           nvvm.cp.async.shared.global %{{.*}}, %{{.*}}, 16, cache =  cg, %[[SIZE]]
// CHECK:           arith.minui %{{.*}}, %[[LAST]] : i32
// CHECK:           arith.cmpi ult, %{{.*}}, %[[N]] : i32
// CHECK:           nvvm.cp.async.shared.global
func.func @dynamic_rows(%k: memref<?x2x?x64xbf16>, %b: index, %h: index, %row: index) {
  %c1 = arith.constant 1 : index
  %c256 = arith.constant 256 : index
  %c0_i32 = arith.constant 0 : i32
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c256, %sy = %c1, %sz = %c1) {
    %kr = flexattn.ring.alloc consumers(256) : !flexattn.ring<1 x 64x64xbf16>
    flexattn.ring.acquire %kr[%c0_i32] : !flexattn.ring<1 x 64x64xbf16>
    flexattn.ring.copy %k[%b, %h, %row] into %kr[%c0_i32] : memref<?x2x?x64xbf16>, !flexattn.ring<1 x 64x64xbf16>
    flexattn.ring.wait %kr[%c0_i32] in_flight(0) : !flexattn.ring<1 x 64x64xbf16>
    gpu.terminator
  }
  return
}
