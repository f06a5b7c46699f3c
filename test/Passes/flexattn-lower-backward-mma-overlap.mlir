// RUN: flexattn-opt %s -flexattn-lower-backward-mma=overlap=true | FileCheck %s

// With overlap (wgmma), a 64-query chunk of a dk/dv step at D = 64 (whole
// 128 x 128 tiles: two groups of 4 warps) computes its element math in four
// parts of 16 queries (8 elements a thread): part 0's P while dPᵀ's MMA
// still runs, part i's dV, dK (B from row 16 i of the chunk, one k16 step)
// while part i + 1's math runs, each waited for (with its register A
// operands) before the next part's are issued, the last at the chunk's end.
// The two groups issue their Sᵀ, dPᵀ MMAs in turns (named barriers 1 + g,
// 256 threads; group 1 passes group 0 the first turn after the stack
// slots).

// CHECK-LABEL: func.func @overlap(
// CHECK:         gpu.launch
// CHECK:           %[[STRA:.+]] = flexattn.ring.alloc consumers(256) : !flexattn.ring<2 x 64x64xbf16>
// CHECK:           %[[STRB:.+]] = flexattn.ring.alloc consumers(256) : !flexattn.ring<2 x 64x64xbf16>
// CHECK:           %[[DKACC:.+]] = memref.alloca() : memref<vector<32xf32>>
// CHECK:           %[[DVACC:.+]] = memref.alloca() : memref<vector<32xf32>>
// CHECK:           scf.if
// CHECK:             nvvm.barrier.arrive id = %{{.+}} number_of_threads = %{{.+}}
// CHECK-NEXT:      }
// CHECK:           scf.for
// CHECK:             scf.for
// CHECK:               flexattn.ring.wait %[[STRB]][%{{.+}}] in_flight(0)
// CHECK:               %[[DOT:.+]] = flexattn.ring.slot %[[STRB]]
// CHECK:               nvvm.barrier id = %{{.+}} number_of_threads = %{{.+}}
// CHECK-NEXT:          %[[S:.+]] = flexattn.mma %{{.+}}[%{{.+}}], %[[QS:[^ ]+]] {transpose_b} : !flexattn.smem_tile<128x64xbf16>, !flexattn.smem_tile<64x64xbf16> -> vector<32xf32>
// CHECK-NEXT:          %[[DP:.+]] = flexattn.mma %{{.+}}[%{{.+}}], %[[DOT]] {transpose_b}
// CHECK:               nvvm.barrier.arrive id = %{{.+}} number_of_threads = %{{.+}}
// CHECK:               flexattn.mma.wait pending(1) %[[S]] : vector<32xf32>
// CHECK-COUNT-8:       math.exp2
// CHECK-NOT:           math.exp2
// CHECK:               flexattn.mma.wait pending(0) %[[DP]] : vector<32xf32>
// CHECK:               %[[P0:.+]] = vector.from_elements {{.*}} : vector<8xbf16>
// CHECK:               %[[DX0:.+]] = vector.from_elements {{.*}} : vector<8xbf16>
// CHECK:               %[[V0:.+]] = flexattn.mma %[[P0]], %[[DOT]][%[[R0:[a-z0-9_]+]]], %{{.+}} : vector<8xbf16>, !flexattn.smem_tile<64x64xbf16>, vector<32xf32> -> vector<32xf32>
// CHECK:               %[[K0:.+]] = flexattn.mma %[[DX0]], %[[QS]][%[[R0]]], %{{.+}} : vector<8xbf16>
// CHECK-COUNT-8:       math.exp2
// CHECK:               %[[P1:.+]] = vector.from_elements {{.*}} : vector<8xbf16>
// CHECK:               %[[DX1:.+]] = vector.from_elements {{.*}} : vector<8xbf16>
// CHECK:               %[[W0:.+]]:4 = flexattn.mma.wait pending(0) %[[V0]], %[[K0]], %[[P0]], %[[DX0]]
// CHECK:               memref.store %[[W0]]#0, %[[DVACC]][]
// CHECK:               memref.store %[[W0]]#1, %[[DKACC]][]
// CHECK:               flexattn.mma %[[P1]], %[[DOT]][%[[R16:[a-z0-9_]+]]], %{{.+}} : vector<8xbf16>
// CHECK:               flexattn.mma %[[DX1]], %[[QS]][%[[R16]]], %{{.+}} : vector<8xbf16>
// CHECK-COUNT-8:       math.exp2
// CHECK:               flexattn.mma.wait pending(0)
// CHECK:               flexattn.mma %{{.+}}, %[[DOT]][%[[R32:[a-z0-9_]+]]], %{{.+}} : vector<8xbf16>
// CHECK-COUNT-8:       math.exp2
// CHECK:               flexattn.mma.wait pending(0)
// CHECK:               %[[V3:.+]] = flexattn.mma %[[P3:[^,]+]], %[[DOT]][%[[R48:[a-z0-9_]+]]], %{{.+}} : vector<8xbf16>
// CHECK:               %[[K3:.+]] = flexattn.mma %[[DX3:[^,]+]], %[[QS]][%[[R48]]], %{{.+}} : vector<8xbf16>
// CHECK-NEXT:          flexattn.mma.wait pending(0) %[[V3]], %[[K3]], %[[P3]], %[[DX3]]
// CHECK-NOT:           math.exp2
// CHECK:               flexattn.ring.release %[[STRA]]

func.func @overlap(%q: memref<1x1x256x64xbf16>, %k: memref<1x1x256x64xbf16>, %v: memref<1x1x256x64xbf16>,
                   %do: memref<1x1x256x64xbf16>, %lse: memref<1x1x256xf32>, %delta: memref<1x1x256xf32>,
                   %dk: memref<1x1x256x64xbf16>, %dv: memref<1x1x256x64xbf16>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c128 = arith.constant 128 : index
  %zero = arith.constant 0.0 : f32
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c2, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c128, %sy = %c1, %sz = %c1) {
    %kv0 = arith.muli %bx, %c128 : index
    memref.alloca_scope {
      %dk_acc = memref.alloca() : memref<128x64xf32>
      linalg.fill ins(%zero : f32) outs(%dk_acc : memref<128x64xf32>)
      %dv_acc = memref.alloca() : memref<128x64xf32>
      linalg.fill ins(%zero : f32) outs(%dv_acc : memref<128x64xf32>)
      scf.for %qt = %c0 to %c2 step %c1 {
        %q0 = arith.muli %qt, %c128 : index
        flexattn.backward_step ins(%q, %k, %v, %do : memref<1x1x256x64xbf16>, memref<1x1x256x64xbf16>, memref<1x1x256x64xbf16>, memref<1x1x256x64xbf16>)
            stats(%lse, %delta : memref<1x1x256xf32>, memref<1x1x256xf32>)
            dk(%dk_acc : memref<128x64xf32>) dv(%dv_acc : memref<128x64xf32>) at(%c0, %c0, %c0, %q0, %kv0)
            attributes {scale = 0.125 : f32, tile_size = array<i64: 128, 128>}
      }
      flexattn.store_tile %dk_acc : memref<128x64xf32> into %dk : memref<1x1x256x64xbf16> at(%c0, %c0, %kv0)
      flexattn.store_tile %dv_acc : memref<128x64xf32> into %dv : memref<1x1x256x64xbf16> at(%c0, %c0, %kv0)
    }
    gpu.terminator
  }
  return
}
