// RUN: flexattn-opt %s -split-input-file --flexattn-multistage --canonicalize --cse | FileCheck %s
// RUN: flexattn-opt %s -split-input-file -verify-diagnostics --flexattn-multistage=warp-rows=32 -o /dev/null

// The decode kernel's tile: 64 packed rows (4 query heads x 16 rows of K/V
// head %hkv, packed(%m)), one band of 4 warps of 16 rows: 128 threads, a
// 64-row Q ring; the softmax gets the packed rows' head count.
// CHECK-LABEL: func.func @packed_decode(
// CHECK:         %[[T128:.*]] = arith.constant 128 : index
// CHECK:         gpu.launch {{.*}} threads({{.*}}) in (%{{.*}} = %[[T128]], %{{.*}} = %{{.*}}, %{{.*}} = %{{.*}})
// CHECK:           %[[QR:.*]] = flexattn.ring.alloc consumers(128) : !flexattn.ring<1 x 64x64xbf16>
// CHECK-NEXT:      flexattn.ring.alloc consumers(128) : !flexattn.ring<2 x 128x64xbf16>
// CHECK-NEXT:      flexattn.ring.alloc consumers(128) : !flexattn.ring<2 x 128x64xbf16>
// CHECK:           flexattn.ring.copy %{{.*}} into %[[QR]][%{{.*}}] : memref<1x2x64x64xbf16>, !flexattn.ring<1 x 64x64xbf16>
// CHECK:           flexattn.frag.load %{{.*}} : !flexattn.smem_tile<64x64xbf16> -> vector<32xbf16>
// CHECK:           flexattn.frag.softmax {{.*}} packed(%{{.*}})
// CHECK:           flexattn.frag.finalize {{.*}} outs(%{{.*}} : memref<1x2x64x64xbf16>)
func.func @packed_decode(%q: memref<1x2x64x64xbf16>, %k: memref<1x2x512x64xbf16>, %v: memref<1x2x512x64xbf16>,
                         %o: memref<1x2x64x64xbf16>) {
  %ninf = arith.constant 0xFF800000 : f32
  %zero = arith.constant 0.000000e+00 : f32
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c4 = arith.constant 4 : index
  %c16 = arith.constant 16 : index
  %c128 = arith.constant 128 : index
  // With warp-rows=32 (second RUN line) a 64-row tile would be half a band.
  // expected-error @+1 {{flexattn-multistage needs Q tiles of whole 4-warp bands: 64 rows at warp-rows = 32}}
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c2, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c1, %sy = %c1, %sz = %c1) {
    %hkv = arith.remui %bx, %c2 : index
    %h = arith.muli %hkv, %c4 : index
    %acc = memref.alloca() : memref<64x64xf32>
    %m = memref.alloca() : memref<64xf32>
    %l = memref.alloca() : memref<64xf32>
    linalg.fill ins(%zero : f32) outs(%acc : memref<64x64xf32>)
    linalg.fill ins(%ninf : f32) outs(%m : memref<64xf32>)
    linalg.fill ins(%zero : f32) outs(%l : memref<64xf32>)
    scf.for %j = %c0 to %c4 step %c1 {
      %kv0 = arith.muli %j, %c128 : index
      flexattn.tile_step ins(%q, %k, %v : memref<1x2x64x64xbf16>, memref<1x2x512x64xbf16>, memref<1x2x512x64xbf16>)
          state(%acc, %m, %l : memref<64x64xf32>, memref<64xf32>, memref<64xf32>)
          at(%c0, %h, %hkv, %c0, %kv0) packed(%c16) attributes {scale = 0.125 : f32, tile_size = array<i64: 64, 128>}
    }
    flexattn.finalize state(%acc, %m, %l : memref<64x64xf32>, memref<64xf32>, memref<64xf32>)
        outs(%o : memref<1x2x64x64xbf16>) at(%c0, %hkv, %c0)
    gpu.terminator
  }
  return
}


// -----

// K/V of batch 1 shared by a query batch of 2 (a paged cache): the tile
// steps read flexattn-tile's batch-stride-0 view; the K and V rings copy
// from the batch-1 tensors at batch 0, the Q ring at the tile's batch.
// CHECK-LABEL: func.func @shared_cache_decode(
// CHECK-SAME:    %[[Q:[a-z0-9]+]]: memref<2x2x64x64xbf16>, %[[K:[a-z0-9]+]]: memref<1x2x512x64xbf16>, %[[V:[a-z0-9]+]]: memref<1x2x512x64xbf16>
// CHECK-DAG:     %[[C0:.*]] = arith.constant 0 : index
// CHECK:         gpu.launch
// CHECK:           flexattn.ring.copy %[[Q]][%{{.*}}, %{{.*}}, %{{.*}}] into {{.*}} : memref<2x2x64x64xbf16>
// CHECK:           flexattn.ring.copy %[[K]][%[[C0]], %{{.*}}, %{{.*}}] into {{.*}} : memref<1x2x512x64xbf16>
// CHECK:           flexattn.ring.copy %[[V]][%[[C0]], %{{.*}}, %{{.*}}] into {{.*}} : memref<1x2x512x64xbf16>
// CHECK-NOT:       memref<2x2x512x64xbf16
func.func @shared_cache_decode(%q: memref<2x2x64x64xbf16>, %k1: memref<1x2x512x64xbf16>,
                               %v1: memref<1x2x512x64xbf16>, %o: memref<2x2x64x64xbf16>) {
  %ninf = arith.constant 0xFF800000 : f32
  %zero = arith.constant 0.000000e+00 : f32
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c4 = arith.constant 4 : index
  %c16 = arith.constant 16 : index
  %c128 = arith.constant 128 : index
  %k = memref.reinterpret_cast %k1 to offset: [0], sizes: [2, 2, 512, 64], strides: [0, 32768, 64, 1]
      : memref<1x2x512x64xbf16> to memref<2x2x512x64xbf16, strided<[0, 32768, 64, 1]>>
  %v = memref.reinterpret_cast %v1 to offset: [0], sizes: [2, 2, 512, 64], strides: [0, 32768, 64, 1]
      : memref<1x2x512x64xbf16> to memref<2x2x512x64xbf16, strided<[0, 32768, 64, 1]>>
  // expected-error @+1 {{flexattn-multistage needs Q tiles of whole 4-warp bands: 64 rows at warp-rows = 32}}
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c4, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c1, %sy = %c1, %sz = %c1) {
    %hkv = arith.remui %bx, %c2 : index
    %b = arith.divui %bx, %c2 : index
    %h = arith.muli %hkv, %c4 : index
    %acc = memref.alloca() : memref<64x64xf32>
    %m = memref.alloca() : memref<64xf32>
    %l = memref.alloca() : memref<64xf32>
    linalg.fill ins(%zero : f32) outs(%acc : memref<64x64xf32>)
    linalg.fill ins(%ninf : f32) outs(%m : memref<64xf32>)
    linalg.fill ins(%zero : f32) outs(%l : memref<64xf32>)
    scf.for %j = %c0 to %c4 step %c1 {
      %kv0 = arith.muli %j, %c128 : index
      flexattn.tile_step ins(%q, %k, %v : memref<2x2x64x64xbf16>, memref<2x2x512x64xbf16, strided<[0, 32768, 64, 1]>>, memref<2x2x512x64xbf16, strided<[0, 32768, 64, 1]>>)
          state(%acc, %m, %l : memref<64x64xf32>, memref<64xf32>, memref<64xf32>)
          at(%b, %h, %hkv, %c0, %kv0) packed(%c16) attributes {scale = 0.125 : f32, tile_size = array<i64: 64, 128>}
    }
    flexattn.finalize state(%acc, %m, %l : memref<64x64xf32>, memref<64xf32>, memref<64xf32>)
        outs(%o : memref<2x2x64x64xbf16>) at(%b, %hkv, %c0)
    gpu.terminator
  }
  return
}
