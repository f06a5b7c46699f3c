// RUN: flexattn-opt %s -split-input-file -verify-diagnostics --flexattn-multistage --canonicalize --cse | FileCheck %s
// RUN: flexattn-opt %s -split-input-file -verify-diagnostics --flexattn-multistage=stages=3 --canonicalize --cse | FileCheck %s --check-prefix=STAGES3
// RUN: flexattn-opt %s -split-input-file --flexattn-multistage="warp-rows=32" --canonicalize --cse | FileCheck %s --check-prefix=ROWS32
// RUN: flexattn-opt %s -split-input-file --flexattn-multistage="warp-rows=32 q-in-registers=0" --canonicalize --cse | FileCheck %s --check-prefix=QSMEM
// RUN: not flexattn-opt %s --flexattn-multistage=stages=1 2>&1 | FileCheck %s --check-prefix=ONE
// RUN: not flexattn-opt %s --flexattn-multistage=warp-rows=24 2>&1 | FileCheck %s --check-prefix=ROWS24

// ONE: error: 'gpu.launch' op flexattn-multistage needs at least 2 stages (copies run S - 1 steps ahead), got 1
// ROWS24: error: 'gpu.launch' op flexattn-multistage gives a warp 16 or 32 Q rows (one or two m16 tiles), got warp-rows = 24

// 32 rows per warp: one group of 4 warps (128 threads) owns the whole
// 128-row Q tile, two m16 tiles per warp: fragments twice as long, row
// values vector<4xf32>, each K/V fragment feeding both m16 tiles.
// ROWS32-LABEL: func.func @causal(
// ROWS32:         %[[THREADS:.*]] = arith.constant 128 : index
// ROWS32:         gpu.launch blocks({{.*}} threads(%{{.*}}) in (%{{.*}} = %[[THREADS]],
// ROWS32-NEXT:      %[[QR:.*]] = flexattn.ring.alloc consumers(128) : !flexattn.ring<1 x 128x64xbf16>
// ROWS32:           %[[QF:.*]] = flexattn.frag.load %{{.*}}[%{{.*}}] : !flexattn.smem_tile<128x64xbf16> -> vector<64xbf16>
// ROWS32-NEXT:      flexattn.ring.release %[[QR]]
// ROWS32:           scf.for {{.*}} -> (i32, vector<4xf32>, vector<4xf32>, vector<64xf32>) {
// ROWS32:             flexattn.mma %[[QF]], %{{.*}} {transpose_b} : vector<64xbf16>, !flexattn.smem_tile<128x64xbf16> -> vector<128xf32>
// ROWS32:             flexattn.frag.softmax
// ROWS32:             } : vector<128xf32>, vector<4xf32> -> vector<128xbf16>
// ROWS32:             flexattn.frag.rescale %{{.*}}, %{{.*}} : vector<64xf32>, vector<4xf32>
// ROWS32:             flexattn.mma %{{.*}}, %{{.*}}, %{{.*}} : vector<128xbf16>, !flexattn.smem_tile<128x64xbf16>, vector<64xf32> -> vector<64xf32>
// ROWS32:           flexattn.frag.finalize {{.*}} : vector<64xf32>, vector<4xf32>

// Q read from its slot by every S = Q.Kᵀ (the band's first row as the A
// row); the slot is released after the tile's KV loops.
// QSMEM-LABEL: func.func @causal(
// QSMEM:           %[[QR:.*]] = flexattn.ring.alloc consumers(128) : !flexattn.ring<1 x 128x64xbf16>
// QSMEM:           flexattn.ring.wait %[[QR]][%[[C0:.*]]] in_flight(0)
// QSMEM-NEXT:      %[[QS:.*]] = flexattn.ring.slot %[[QR]][%[[C0]]]
// QSMEM-NOT:       flexattn.frag.load
// QSMEM-NOT:       flexattn.ring.release %[[QR]]
// QSMEM:           scf.for
// QSMEM:             flexattn.mma %[[QS]][%{{.*}}], %{{.*}} {transpose_b} : !flexattn.smem_tile<128x64xbf16>, !flexattn.smem_tile<128x64xbf16> -> vector<128xf32>
// QSMEM:           flexattn.ring.release %[[QR]][%[[C0]]]
// QSMEM:           flexattn.frag.finalize
// The launch is marked for flexattn-lower-to-ampere (unrounded shared base,
// fenced ldmatrix lanes).
// QSMEM:         } {flexattn.q_from_shared}

// 256 threads, no producer: every thread copies (cooperative rings released
// by all 256) and computes in one of two 64-row groups.
// CHECK-LABEL: func.func @causal(
// CHECK-SAME:    %[[Q:[^:]+]]: memref<1x2x300x64xbf16>, %[[K:[^:]+]]: memref<1x2x300x64xbf16>, %[[V:[^:]+]]: memref<1x2x300x64xbf16>,
// CHECK-SAME:    %[[O:[^:]+]]: memref<1x2x300x64xbf16>, %[[KVN:[^:]+]]: memref<1x1x3xi32>, %[[KVI:[^:]+]]: memref<1x1x3x3xi32>)
// CHECK:         %[[THREADS:.*]] = arith.constant 256 : index
// CHECK:         gpu.launch blocks(%[[BX:[^,]*]], {{.*}} threads(%{{.*}}) in (%{{.*}} = %[[THREADS]],
// CHECK-NEXT:      %[[QR:.*]] = flexattn.ring.alloc consumers(256) : !flexattn.ring<1 x 128x64xbf16>
// CHECK-NEXT:      %[[KR:.*]] = flexattn.ring.alloc consumers(256) : !flexattn.ring<2 x 128x64xbf16>
// CHECK-NEXT:      %[[VR:.*]] = flexattn.ring.alloc consumers(256) : !flexattn.ring<2 x 128x64xbf16>
// CHECK-NEXT:      %[[TID:.*]] = gpu.thread_id  x
// CHECK-NEXT:      %[[G:.*]] = arith.divui %[[TID]], %{{.*}} : index
// CHECK:           %[[BAND:.*]] = arith.muli %[[G]], %{{.*}} : index
// Per Q tile: copy Q, wait for it, read the group's band into registers
// once (the A operand of every S = Q.Kᵀ of the tile), release it.
// CHECK:           flexattn.ring.acquire %[[QR]][%[[C0:.*]]] : !flexattn.ring<1 x 128x64xbf16>
// CHECK-NEXT:      flexattn.ring.copy %[[Q]][%{{.*}}, %{{.*}}, %{{.*}}] into %[[QR]][%[[C0]]] : memref<1x2x300x64xbf16>, !flexattn.ring<1 x 128x64xbf16>
// CHECK-NEXT:      flexattn.ring.wait %[[QR]][%[[C0]]] in_flight(0)
// CHECK-NEXT:      %[[QS:.*]] = flexattn.ring.slot %[[QR]][%[[C0]]]
// CHECK-NEXT:      %[[QF:.*]] = flexattn.frag.load %[[QS]][%[[BAND]]] : !flexattn.smem_tile<128x64xbf16> -> vector<32xbf16>
// CHECK-NEXT:      flexattn.ring.release %[[QR]][%[[C0]]]
// Prologue: K and V of the loop's first step, its coordinates (the block
// index lookup) recomputed where the step exists, `if` it does.
// CHECK:           %[[N32:.*]] = memref.load %[[KVN]]
// CHECK-NEXT:      %[[N:.*]] = arith.index_cast %[[N32]] : i32 to index
// CHECK-NEXT:      %[[ANY:.*]] = arith.cmpi sgt, %[[N]], %{{.*}} : index
// CHECK:           %[[FIRST:.*]] = scf.if %[[ANY]] -> (index) {
// CHECK:             memref.load %[[KVI]]
// CHECK:           flexattn.ring.acquire %[[KR]][%[[C0]]]
// CHECK-NEXT:      flexattn.ring.acquire %[[VR]][%[[C0]]]
// CHECK-NEXT:      flexattn.ring.copy %[[K]][{{.*}}, %[[FIRST]]] into %[[KR]][%[[C0]]] if %[[ANY]]
// CHECK-NEXT:      flexattn.ring.copy %[[V]][{{.*}}, %[[FIRST]]] into %[[VR]][%[[C0]]] if %[[ANY]]
// Per step: wait K_j (V_j may still be in flight), copy K_{j+1}, S = Q.Kᵀ
// from the Q fragment; softmax; wait V_j (K_{j+1} in flight), copy V_{j+1},
// O = alpha O + P.V_j.
// CHECK:           scf.for %[[J:.*]] = %{{.*}} to %[[N]] step %{{.*}} iter_args(%[[I:[^ ]*]] = %[[C0]], {{.*}}) -> (i32, vector<2xf32>, vector<2xf32>, vector<32xf32>) {
// CHECK:             %[[J1:.*]] = arith.addi %[[J]], %{{.*}} : index
// CHECK-NEXT:        %[[MORE:.*]] = arith.cmpi slt, %[[J1]], %[[N]] : index
// CHECK:             %[[NEXT:.*]] = scf.if %[[MORE]] -> (index) {
// CHECK-NEXT:          memref.load %[[KVI]][%{{.*}}, %{{.*}}, %{{.*}}, %[[J1]]]
// CHECK:             flexattn.ring.wait %[[KR]][%[[I]]] in_flight(1)
// CHECK-NEXT:        %[[I1:.*]] = arith.addi %[[I]], %{{.*}} : i32
// CHECK-NEXT:        flexattn.ring.acquire %[[KR]][%[[I1]]]
// CHECK-NEXT:        flexattn.ring.copy %[[K]][{{.*}}, %[[NEXT]]] into %[[KR]][%[[I1]]] if %[[MORE]]
// CHECK-NEXT:        %[[KT:.*]] = flexattn.ring.slot %[[KR]][%[[I]]]
// CHECK-NEXT:        %[[S0:.*]] = flexattn.mma %[[QF]], %[[KT]] {transpose_b} : vector<32xbf16>, !flexattn.smem_tile<128x64xbf16> -> vector<64xf32>
// CHECK-NEXT:        %[[S:.*]] = flexattn.mma.wait pending(0) %[[S0]] : vector<64xf32>
// CHECK-NEXT:        flexattn.ring.release %[[KR]][%[[I]]]
// CHECK:             %[[P:.*]], %{{.*}}, %{{.*}}, %[[ALPHA:.*]] = flexattn.frag.softmax %[[S]]
// CHECK:             flexattn.frag.rescale %{{.*}}, %[[ALPHA]] : vector<32xf32>, vector<2xf32>
// CHECK-NEXT:        flexattn.ring.wait %[[VR]][%[[I]]] in_flight(1)
// CHECK-NEXT:        flexattn.ring.acquire %[[VR]][%[[I1]]]
// CHECK-NEXT:        flexattn.ring.copy %[[V]][{{.*}}, %[[NEXT]]] into %[[VR]][%[[I1]]] if %[[MORE]]
// CHECK-NEXT:        %[[VT:.*]] = flexattn.ring.slot %[[VR]][%[[I]]]
// CHECK-NEXT:        flexattn.mma %[[P]], %[[VT]], %{{.*}} : vector<64xbf16>, !flexattn.smem_tile<128x64xbf16>, vector<32xf32> -> vector<32xf32>
// CHECK:             scf.yield %[[I1]],
// CHECK:           flexattn.frag.finalize %{{.*}}#3 state(%{{.*}}#1, %{{.*}}#2) outs(%[[O]] : memref<1x2x300x64xbf16>)
// CHECK-NOT:       memref.alloca
// CHECK-NOT:       flexattn.tile_step

// Three stages: the prologue copies two steps, a step copies the one two
// ahead, and a wait lets 2 S - 3 = 3 later copies run.
// STAGES3-LABEL: func.func @causal(
// STAGES3:         flexattn.ring.alloc consumers(256) : !flexattn.ring<3 x 128x64xbf16>
// STAGES3-COUNT-4: flexattn.ring.copy
// STAGES3:         scf.for
// STAGES3:           flexattn.ring.wait %{{.*}}[%{{.*}}] in_flight(3) : !flexattn.ring<3 x 128x64xbf16>
// STAGES3-NEXT:      %[[I2:.*]] = arith.addi %{{.*}}, %{{.*}} : i32
// STAGES3-NEXT:      flexattn.ring.acquire %{{.*}}[%[[I2]]]
func.func @causal(%q: memref<1x2x300x64xbf16>, %k: memref<1x2x300x64xbf16>, %v: memref<1x2x300x64xbf16>,
                  %o: memref<1x2x300x64xbf16>, %kvn: memref<1x1x3xi32>, %kvi: memref<1x1x3x3xi32>) {
  %ninf = arith.constant 0xFF800000 : f32
  %zero = arith.constant 0.000000e+00 : f32
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c3 = arith.constant 3 : index
  %c6 = arith.constant 6 : index
  %c128 = arith.constant 128 : index
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c6, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c1, %sy = %c1, %sz = %c1) {
    %head = arith.divui %bx, %c3 : index
    %b = arith.divui %head, %c2 : index
    %h = arith.remui %head, %c2 : index
    %rev = arith.remui %bx, %c3 : index
    %qt = arith.subi %c2, %rev : index
    %q0 = arith.muli %qt, %c128 : index
    %acc = memref.alloca() : memref<128x64xf32>
    %m = memref.alloca() : memref<128xf32>
    %l = memref.alloca() : memref<128xf32>
    linalg.fill ins(%zero : f32) outs(%acc : memref<128x64xf32>)
    linalg.fill ins(%ninf : f32) outs(%m : memref<128xf32>)
    linalg.fill ins(%zero : f32) outs(%l : memref<128xf32>)
    %n32 = memref.load %kvn[%c0, %c0, %qt] : memref<1x1x3xi32>
    %n = arith.index_cast %n32 : i32 to index
    scf.for %j = %c0 to %n step %c1 {
      %blk32 = memref.load %kvi[%c0, %c0, %qt, %j] : memref<1x1x3x3xi32>
      %blk = arith.index_cast %blk32 : i32 to index
      %kv0 = arith.muli %blk, %c128 : index
      flexattn.tile_step ins(%q, %k, %v : memref<1x2x300x64xbf16>, memref<1x2x300x64xbf16>, memref<1x2x300x64xbf16>)
          state(%acc, %m, %l : memref<128x64xf32>, memref<128xf32>, memref<128xf32>)
          at(%b, %h, %h, %q0, %kv0) attributes {masked, scale = 0.125 : f32, tile_size = array<i64: 128, 128>}
        mask_mod {
        ^bb0(%bb: i32, %hh: i32, %qi: i32, %kj: i32):
          %keep = arith.cmpi sge, %qi, %kj : i32
          flexattn.yield %keep : i1
        }
    }
    flexattn.finalize state(%acc, %m, %l : memref<128x64xf32>, memref<128xf32>, memref<128xf32>)
        outs(%o : memref<1x2x300x64xbf16>) at(%b, %h, %q0)
    gpu.terminator
  }
  return
}


// -----

// Head dims that are not multiples of 64 (D = 24, Dv = 40): the tiles in
// shared memory and the fragments have them padded to a 64-column panel;
// the copies read the tensors' own columns (ring.copy zero-fills the rest),
// and the accumulator's padding columns are not stored by finalize.
// CHECK-LABEL: func.func @padded(
// CHECK:           %[[QR:.*]] = flexattn.ring.alloc consumers(256) : !flexattn.ring<1 x 128x64xbf16>
// CHECK-NEXT:      %[[KR:.*]] = flexattn.ring.alloc consumers(256) : !flexattn.ring<2 x 64x64xbf16>
// CHECK-NEXT:      %[[VR:.*]] = flexattn.ring.alloc consumers(256) : !flexattn.ring<2 x 64x64xbf16>
// CHECK:           flexattn.ring.copy %{{.*}} into %[[QR]][%{{.*}}] : memref<1x2x300x24xbf16>, !flexattn.ring<1 x 128x64xbf16>
// CHECK:           flexattn.frag.load %{{.*}} : !flexattn.smem_tile<128x64xbf16> -> vector<32xbf16>
// CHECK:           flexattn.ring.copy %{{.*}} into %[[KR]][%{{.*}}] {{.*}}: memref<1x2x300x24xbf16>, !flexattn.ring<2 x 64x64xbf16>
// CHECK:           flexattn.ring.copy %{{.*}} into %[[VR]][%{{.*}}] {{.*}}: memref<1x2x300x40xbf16>, !flexattn.ring<2 x 64x64xbf16>
// CHECK:           scf.for {{.*}} -> (i32, vector<2xf32>, vector<2xf32>, vector<32xf32>) {
// CHECK:             flexattn.mma %{{.*}}, %{{.*}} {transpose_b} : vector<32xbf16>, !flexattn.smem_tile<64x64xbf16> -> vector<32xf32>
// CHECK:             flexattn.mma %{{.*}}, %{{.*}}, %{{.*}} : vector<32xbf16>, !flexattn.smem_tile<64x64xbf16>, vector<32xf32> -> vector<32xf32>
// CHECK:           flexattn.frag.finalize {{.*}} outs(%{{.*}} : memref<1x2x300x40xbf16>) {{.*}} : vector<32xf32>, vector<2xf32>
func.func @padded(%q: memref<1x2x300x24xbf16>, %k: memref<1x2x300x24xbf16>, %v: memref<1x2x300x40xbf16>,
                  %o: memref<1x2x300x40xbf16>) {
  %ninf = arith.constant 0xFF800000 : f32
  %zero = arith.constant 0.000000e+00 : f32
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c3 = arith.constant 3 : index
  %c5 = arith.constant 5 : index
  %c6 = arith.constant 6 : index
  %c64 = arith.constant 64 : index
  %c128 = arith.constant 128 : index
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c6, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c1, %sy = %c1, %sz = %c1) {
    %head = arith.divui %bx, %c3 : index
    %b = arith.divui %head, %c2 : index
    %h = arith.remui %head, %c2 : index
    %qt = arith.remui %bx, %c3 : index
    %q0 = arith.muli %qt, %c128 : index
    %acc = memref.alloca() : memref<128x40xf32>
    %m = memref.alloca() : memref<128xf32>
    %l = memref.alloca() : memref<128xf32>
    linalg.fill ins(%zero : f32) outs(%acc : memref<128x40xf32>)
    linalg.fill ins(%ninf : f32) outs(%m : memref<128xf32>)
    linalg.fill ins(%zero : f32) outs(%l : memref<128xf32>)
    scf.for %j = %c0 to %c5 step %c1 {
      %kv0 = arith.muli %j, %c64 : index
      flexattn.tile_step ins(%q, %k, %v : memref<1x2x300x24xbf16>, memref<1x2x300x24xbf16>, memref<1x2x300x40xbf16>)
          state(%acc, %m, %l : memref<128x40xf32>, memref<128xf32>, memref<128xf32>)
          at(%b, %h, %h, %q0, %kv0) attributes {scale = 0.2 : f32, tile_size = array<i64: 128, 64>}
    }
    flexattn.finalize state(%acc, %m, %l : memref<128x40xf32>, memref<128xf32>, memref<128xf32>)
        outs(%o : memref<1x2x300x40xbf16>) at(%b, %h, %q0)
    gpu.terminator
  }
  return
}

