// RUN: flexattn-opt %s --flexattn-lower-to-ampere=max-shared-memory=166912 --canonicalize --cse | FileCheck %s
// RUN: flexattn-opt %s --flexattn-lower-to-ampere="max-shared-memory=166912 fp32-precision=tf32" --canonicalize --cse | FileCheck %s --check-prefix=TF32
// RUN: not flexattn-opt %s --flexattn-lower-to-ampere=fp32-precision=fast 2>&1 | FileCheck %s --check-prefix=BAD

// f32 tiles (fp32 q/k/v): tf32 mma.sync m16n8k8 with plain shared loads.
//
// Shared memory: Q 128x64 f32 (32 KiB) + K 64x64 f32 (16 KiB) + 128 bytes.
// CHECK-LABEL: func.func @f32_kernel(
// CHECK-SAME:    %{{[^:]+}}: memref<1x2x300x64xf32>, %{{[^:]+}}: memref<1x2x300x40xf32>, %{{[^:]+}}: index, %{{[^:]+}}: index, %{{[^:]+}}: index, %{{[^:]+}}: index, %[[P:[^:]+]]: vector<32xf32>
// CHECK-DAG:     %[[SMEM:.*]] = arith.constant 49280 : i32
// CHECK:         gpu.launch {{.*}} dynamic_shared_memory_size %[[SMEM]] {
// ring.copy of Q: 2048 16-byte chunks (4 floats) over 256 threads, 8 each.
// CHECK-COUNT-8:   nvvm.cp.async.shared.global %{{.*}}, %{{.*}}, 16, cache =  cg, %{{.*}} : !llvm.ptr<3>, !llvm.ptr<1>, i32
// CHECK-NEXT:      nvvm.cp.async.commit.group
// ring.copy of K (40 of the tile's 64 columns: 10 of 16 chunks): the chunks
// past 10 copy 0 bytes from chunk 9 (zero fill); element offsets of 4 floats
// a chunk, 4 bytes each. A thread's 4 chunks share their column, 16 rows
// apart (the rows past 300 clamped and zero-filled).
// CHECK:           %[[SRC:.*]] = arith.minui %[[CC:.*]], %c9_i32 : i32
// CHECK-NEXT:      arith.muli %[[SRC]], %c4_i32 : i32
// CHECK:           arith.muli %{{.*}}, %c4_i64 : i64
// CHECK:           %[[REAL:.*]] = arith.cmpi ult, %[[CC]], %c10_i32 : i32
// CHECK-NEXT:      arith.andi %{{.*}}, %[[REAL]] : i1
// CHECK-NEXT:      %[[SIZE:.*]] = arith.select %{{.*}}, %c16_i32, %c0_i32 : i32
// CHECK:           nvvm.cp.async.shared.global %{{.*}}, %{{.*}}, 16, cache =  cg, %[[SIZE]]
// CHECK-COUNT-3:   nvvm.cp.async.shared.global
// CHECK-NEXT:      nvvm.cp.async.commit.group
// CHECK-NEXT:      nvvm.cp.async.wait.group 0
// frag.load: rows g and g + 8 of the warp's m16 tile, columns 2t, 2t + 1
// of each 8: one 8-byte shared load per row and 8 columns (10: the loads of
// columns 40.. feed no mma, see below, and are dead), no
// ldmatrix (it moves 16-bit elements).
// CHECK-NOT:       nvvm.ldmatrix
// CHECK:           %[[R0:.*]] = llvm.load %{{.*}} {alignment = 8 : i64} : !llvm.ptr<3> -> vector<2xf32>
// CHECK-NEXT:      %[[X0:.*]] = vector.extract %[[R0]][0] : f32 from vector<2xf32>
// CHECK-NEXT:      %[[X1:.*]] = vector.extract %[[R0]][1] : f32 from vector<2xf32>
// CHECK:           %[[R8:.*]] = llvm.load %{{.*}} {alignment = 8 : i64} : !llvm.ptr<3> -> vector<2xf32>
// CHECK-NEXT:      %[[X2:.*]] = vector.extract %[[R8]][0] : f32 from vector<2xf32>
// CHECK-NEXT:      %[[X3:.*]] = vector.extract %[[R8]][1] : f32 from vector<2xf32>
// CHECK-COUNT-8:   llvm.load %{{.*}} {alignment = 8 : i64} : !llvm.ptr<3> -> vector<2xf32>
// S = Q.Kᵀ, first k8 step: each A element split into big = tf32(x) and
// small = tf32(x - big), in the mma's order a0..a3 = (g, 2t), (g + 8, 2t),
// (g, 2t + 1), (g + 8, 2t + 1) (k index t <-> column 2t, t + 4 <-> 2t + 1).
// CHECK:           %[[B0:.*]] = nvvm.convert.float.to.tf32 %[[X0]] {rnd = #nvvm.fp_rnd_mode<rna>}
// CHECK-NEXT:      %[[F0:.*]] = llvm.bitcast %[[B0]] : i32 to f32
// CHECK-NEXT:      %[[D0:.*]] = arith.subf %[[X0]], %[[F0]] : f32
// CHECK-NEXT:      %[[S0:.*]] = nvvm.convert.float.to.tf32 %[[D0]] {rnd = #nvvm.fp_rnd_mode<rna>}
// CHECK-NEXT:      %[[B2:.*]] = nvvm.convert.float.to.tf32 %[[X2]] {rnd = #nvvm.fp_rnd_mode<rna>}
// CHECK:           %[[S2:.*]] = nvvm.convert.float.to.tf32 %{{.*}} {rnd = #nvvm.fp_rnd_mode<rna>}
// CHECK-NEXT:      %[[B1:.*]] = nvvm.convert.float.to.tf32 %[[X1]] {rnd = #nvvm.fp_rnd_mode<rna>}
// CHECK:           %[[S1:.*]] = nvvm.convert.float.to.tf32 %{{.*}} {rnd = #nvvm.fp_rnd_mode<rna>}
// CHECK-NEXT:      %[[B3:.*]] = nvvm.convert.float.to.tf32 %[[X3]] {rnd = #nvvm.fp_rnd_mode<rna>}
// CHECK:           %[[S3:.*]] = nvvm.convert.float.to.tf32 %{{.*}} {rnd = #nvvm.fp_rnd_mode<rna>}
// K (K-major B) for 8 KV columns: row g, columns 2t, 2t + 1: one 8-byte load.
// CHECK:           %[[K:.*]] = llvm.load %{{.*}} {alignment = 8 : i64} : !llvm.ptr<3> -> vector<2xf32>
// CHECK-NEXT:      %[[K0:.*]] = vector.extract %[[K]][0] : f32 from vector<2xf32>
// CHECK-NEXT:      %[[K1:.*]] = vector.extract %[[K]][1] : f32 from vector<2xf32>
// CHECK-NEXT:      %[[KB0:.*]] = nvvm.convert.float.to.tf32 %[[K0]] {rnd = #nvvm.fp_rnd_mode<rna>}
// CHECK:           %[[KS0:.*]] = nvvm.convert.float.to.tf32 %{{.*}} {rnd = #nvvm.fp_rnd_mode<rna>}
// CHECK-NEXT:      %[[KB1:.*]] = nvvm.convert.float.to.tf32 %[[K1]] {rnd = #nvvm.fp_rnd_mode<rna>}
// CHECK:           %[[KS1:.*]] = nvvm.convert.float.to.tf32 %{{.*}} {rnd = #nvvm.fp_rnd_mode<rna>}
// 3xTF32: small.big, big.small, big.big into one f32 accumulator.
// CHECK-NEXT:      %[[C1:.*]] = nvvm.mma.sync A[%[[S0]], %[[S2]], %[[S1]], %[[S3]]]  B[%[[KB0]], %[[KB1]]]  C[%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}]  {layoutA = #nvvm.mma_layout<row>, layoutB = #nvvm.mma_layout<col>, multiplicandAPtxType = #nvvm.mma_type<tf32>, multiplicandBPtxType = #nvvm.mma_type<tf32>, shape = #nvvm.shape<m = 16, n = 8, k = 8>} : (i32, i32, f32) -> !llvm.struct<(f32, f32, f32, f32)>
// CHECK:           %[[C2:.*]] = nvvm.mma.sync A[%[[B0]], %[[B2]], %[[B1]], %[[B3]]]  B[%[[KS0]], %[[KS1]]]
// CHECK:           nvvm.mma.sync A[%[[B0]], %[[B2]], %[[B1]], %[[B3]]]  B[%[[KB0]], %[[KB1]]]
// The rest of S: K's 40 filled columns are 5 k8 steps, x 8 blocks of 8 KV
// columns x 3 = 120 mma in all.
// CHECK-COUNT-117: nvvm.mma.sync
// O = P.V + acc: P's fragment (the S accumulator layout) is the A operand
// as it is, elements 0, 2, 1, 3 of each 8 columns; V (row-major B) is two
// 4-byte loads (k rows 2t and 2t + 1, column g) per 8 x 8 block; the 8
// k8 steps of the 64 KV rows x V's 5 filled 8-column blocks x 3 = 120 mma.
// CHECK-DAG:       %[[P0:.*]] = vector.extract %[[P]][0] : f32 from vector<32xf32>
// CHECK-DAG:       %[[P2:.*]] = vector.extract %[[P]][2] : f32 from vector<32xf32>
// CHECK:           nvvm.convert.float.to.tf32 %[[P0]] {rnd = #nvvm.fp_rnd_mode<rna>}
// CHECK:           nvvm.convert.float.to.tf32 %[[P2]] {rnd = #nvvm.fp_rnd_mode<rna>}
// CHECK:           llvm.load %{{.*}} {alignment = 4 : i64} : !llvm.ptr<3> -> f32
// CHECK:           llvm.load %{{.*}} {alignment = 4 : i64} : !llvm.ptr<3> -> f32
// CHECK-COUNT-120: nvvm.mma.sync
// CHECK-NOT:       nvvm.mma.sync
// CHECK-NOT:       flexattn.

// fp32-precision=tf32: one mma per product (big.big), no split: 80 mma.
// TF32-LABEL: func.func @f32_kernel(
// TF32-NOT:      arith.subf
// TF32:          nvvm.mma.sync A[%{{.*}}]  B[%{{.*}}]  C[%{{.*}}]  {{{.*}}multiplicandAPtxType = #nvvm.mma_type<tf32>, multiplicandBPtxType = #nvvm.mma_type<tf32>, shape = #nvvm.shape<m = 16, n = 8, k = 8>}
// TF32-COUNT-79: nvvm.mma.sync
// TF32-NOT:      nvvm.mma.sync
// TF32-NOT:      arith.subf

// BAD: fp32-precision is 'ieee' (3xTF32) or 'tf32', got 'fast'

func.func @f32_kernel(%q: memref<1x2x300x64xf32>, %k: memref<1x2x300x40xf32>, %b: index, %h: index,
                      %q0: index, %kv0: index, %p: vector<32xf32>, %acc: vector<32xf32>,
                      %out: memref<32xf32>) {
  %c1 = arith.constant 1 : index
  %c256 = arith.constant 256 : index
  %c0 = arith.constant 0 : index
  %c0_i32 = arith.constant 0 : i32
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c256, %sy = %c1, %sz = %c1) {
    %qr = flexattn.ring.alloc consumers(256) : !flexattn.ring<1 x 128x64xf32>
    %kr = flexattn.ring.alloc consumers(256) : !flexattn.ring<1 x 64x64xf32>
    flexattn.ring.acquire %qr[%c0_i32] : !flexattn.ring<1 x 128x64xf32>
    flexattn.ring.copy %q[%b, %h, %q0] into %qr[%c0_i32] : memref<1x2x300x64xf32>, !flexattn.ring<1 x 128x64xf32>
    flexattn.ring.acquire %kr[%c0_i32] : !flexattn.ring<1 x 64x64xf32>
    flexattn.ring.copy %k[%b, %h, %kv0] into %kr[%c0_i32] : memref<1x2x300x40xf32>, !flexattn.ring<1 x 64x64xf32>
    flexattn.ring.wait %kr[%c0_i32] in_flight(0) : !flexattn.ring<1 x 64x64xf32>
    %qs = flexattn.ring.slot %qr[%c0_i32] : !flexattn.ring<1 x 128x64xf32>
    %kt = flexattn.ring.slot %kr[%c0_i32] : !flexattn.ring<1 x 64x64xf32>
    %qf = flexattn.frag.load %qs[%c0] : !flexattn.smem_tile<128x64xf32> -> vector<32xf32>
    %s0 = flexattn.mma %qf, %kt {transpose_b} : vector<32xf32>, !flexattn.smem_tile<64x64xf32> -> vector<32xf32>
    %o0 = flexattn.mma %p, %kt, %acc : vector<32xf32>, !flexattn.smem_tile<64x64xf32>, vector<32xf32> -> vector<32xf32>
    %r = arith.addf %s0, %o0 : vector<32xf32>
    vector.store %r, %out[%c0] : memref<32xf32>, vector<32xf32>
    gpu.terminator
  }
  return
}
