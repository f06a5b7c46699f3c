// RUN: flexattn-opt %s -split-input-file -verify-diagnostics --flexattn-lower-to-ampere=max-shared-memory=166912 --canonicalize --cse | FileCheck %s

// Shared memory: the Q slot (128x64 f16, 16 KiB), 2 K slots (64x64, 8 KiB
// each) and 128 bytes for the run-time alignment: 32768 + 128 = 32896. No
// barriers live in shared memory: cp.async groups and CTA barriers order it.
// CHECK-LABEL: func.func @kernel(
// CHECK-DAG:     %[[SMEM:.*]] = arith.constant 32896 : i32
// CHECK:         gpu.launch {{.*}} dynamic_shared_memory_size %[[SMEM]] {
// The base, rounded up to 128 bytes (one swizzle period: 8 rows x 16 bytes).
// CHECK:           %[[DYN:.*]] = gpu.dynamic_shared_memory : memref<?xi8, #gpu.address_space<workgroup>>
// CHECK:           %[[P:.*]] = memref.extract_aligned_pointer_as_index %[[DYN]]
// CHECK:           %[[RAW:.*]] = arith.index_cast %[[P]] : index to i32
// CHECK:           %[[UP:.*]] = arith.addi %[[RAW]], %{{.*}} : i32
// CHECK:           %[[BASE:.*]] = arith.andi %[[UP]], %{{.*}} : i32
// ring.acquire of a fresh ring: a CTA barrier.
// CHECK:           nvvm.barrier0
// ring.copy: 1024 16-byte chunks of Q over 256 threads, 4 each. A thread's
// chunks share its column (t % 8) and swizzle and lie 32 rows apart: one
// row and slot address per thread, the slot address moving by 32 x 128
// bytes per chunk. Rows past the tensor's 300 are clamped and copy 0 bytes
// (zero fill); one group.
// CHECK:           arith.minui %[[ROW:.*]], %c299_i32 : i32
// CHECK:           %[[IN:.*]] = arith.cmpi ult, %[[ROW]], %c300_i32 : i32
// CHECK-NEXT:      %[[SIZE:.*]] = arith.select %[[IN]], %{{.*}}, %{{.*}} : i32
// CHECK-NEXT:      llvm.inttoptr
// CHECK-NEXT:      %[[P0:.*]] = llvm.inttoptr %[[DST:.*]] : i32 to !llvm.ptr<3>
// CHECK-NEXT:      nvvm.cp.async.shared.global %[[P0]], %{{.*}}, 16, cache =  cg, %[[SIZE]] : !llvm.ptr<3>, !llvm.ptr<1>, i32
// CHECK-NEXT:      arith.addi %[[ROW]], %c32_i32 : i32
// CHECK:           %[[DST1:.*]] = arith.addi %[[DST]], %c4096_i32 : i32
// CHECK:           %[[P1:.*]] = llvm.inttoptr %[[DST1]] : i32 to !llvm.ptr<3>
// CHECK-NEXT:      nvvm.cp.async.shared.global %[[P1]], %{{.*}}, 16, cache =  cg
// CHECK-COUNT-2:   nvvm.cp.async.shared.global
// CHECK-NEXT:      nvvm.cp.async.commit.group
// ring.wait in_flight(0): all of this thread's groups, then the CTA's.
// CHECK-NEXT:      nvvm.cp.async.wait.group 0
// CHECK-NEXT:      nvvm.barrier0
// frag.load: the warp's 16 rows of the band, ldmatrix.x4 per 16 columns.
// CHECK-COUNT-4:   nvvm.ldmatrix %{{.*}} {eltType = #nvvm.ld_st_matrix_elt_type<b16>, layout = #nvvm.mma_layout<row>, num = 4 : i32, shape = #nvvm.ld_st_matrix_shape<m = 8, n = 8>}
// CHECK:           %[[QF:.*]] = vector.bitcast %{{.*}} : vector<16xi32> to vector<32xf16>
// ring.release: nothing; the next acquire's barrier orders it.
// CHECK-NEXT:      nvvm.barrier0
// CHECK-COUNT-2:   nvvm.cp.async.shared.global
// CHECK-NEXT:      nvvm.cp.async.commit.group
// CHECK-NEXT:      nvvm.cp.async.wait.group 0
// CHECK-NEXT:      nvvm.barrier0
// An acquire right after a wait of the same ring one position back needs no
// barrier (every thread released the slot before it waited); a copy with
// `if` commits a group either way.
// CHECK:           scf.if %{{.*}} {
// CHECK:             nvvm.cp.async.shared.global
// CHECK:             nvvm.cp.async.shared.global
// CHECK:           }
// CHECK-NEXT:      nvvm.cp.async.commit.group
// S = Q.Kᵀ (64 x 64 per band): A from the registers of frag.load, K-major B
// with ldmatrix (no .trans), two m16n8k16 per ldmatrix.x4, 8 x 4 in all.
// CHECK:           vector.extract_strided_slice %[[QF]] {offsets = [0], sizes = [2], strides = [1]} : vector<32xf16> to vector<2xf16>
// CHECK:           nvvm.ldmatrix %{{.*}} {eltType = #nvvm.ld_st_matrix_elt_type<b16>, layout = #nvvm.mma_layout<row>, {{.*}}}
// CHECK-COUNT-2:   nvvm.mma.sync A[{{.*}}] B[{{.*}}] C[{{.*}}] {layoutA = #nvvm.mma_layout<row>, layoutB = #nvvm.mma_layout<col>, shape = #nvvm.shape<m = 16, n = 8, k = 16>} : (vector<2xf16>, vector<2xf16>, f32) -> !llvm.struct<(f32, f32, f32, f32)>
// CHECK-COUNT-30:  nvvm.mma.sync
// O = P.V + acc: P's pairs as A, the row-major B transposed on load; 32 more.
// CHECK:           nvvm.ldmatrix %{{.*}} {eltType = #nvvm.ld_st_matrix_elt_type<b16>, layout = #nvvm.mma_layout<col>, {{.*}}}
// CHECK-COUNT-32:  nvvm.mma.sync
// CHECK-NOT:       nvvm.mma.sync
// CHECK-NOT:       flexattn.
func.func @kernel(%q: memref<1x2x300x64xf16>, %k: memref<1x2x300x64xf16>, %b: index, %h: index,
                  %q0: index, %kv0: index, %p: vector<32xf16>, %acc: vector<32xf32>, %i: i32,
                  %more: i1, %out: memref<32xf32>) {
  %c1 = arith.constant 1 : index
  %c256 = arith.constant 256 : index
  %c0_i32 = arith.constant 0 : i32
  %c1_i32 = arith.constant 1 : i32
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c256, %sy = %c1, %sz = %c1) {
    %qr = flexattn.ring.alloc consumers(256) : !flexattn.ring<1 x 128x64xf16>
    %kr = flexattn.ring.alloc consumers(256) : !flexattn.ring<2 x 64x64xf16>
    %band = arith.muli %tx, %c1 : index
    flexattn.ring.acquire %qr[%c0_i32] : !flexattn.ring<1 x 128x64xf16>
    flexattn.ring.copy %q[%b, %h, %q0] into %qr[%c0_i32] : memref<1x2x300x64xf16>, !flexattn.ring<1 x 128x64xf16>
    flexattn.ring.wait %qr[%c0_i32] in_flight(0) : !flexattn.ring<1 x 128x64xf16>
    %qs = flexattn.ring.slot %qr[%c0_i32] : !flexattn.ring<1 x 128x64xf16>
    %qf = flexattn.frag.load %qs[%band] : !flexattn.smem_tile<128x64xf16> -> vector<32xf16>
    flexattn.ring.release %qr[%c0_i32] : !flexattn.ring<1 x 128x64xf16>
    flexattn.ring.acquire %kr[%i] : !flexattn.ring<2 x 64x64xf16>
    flexattn.ring.copy %k[%b, %h, %kv0] into %kr[%i] : memref<1x2x300x64xf16>, !flexattn.ring<2 x 64x64xf16>
    flexattn.ring.wait %kr[%i] in_flight(0) : !flexattn.ring<2 x 64x64xf16>
    %i1 = arith.addi %i, %c1_i32 : i32
    flexattn.ring.acquire %kr[%i1] : !flexattn.ring<2 x 64x64xf16>
    flexattn.ring.copy %k[%b, %h, %kv0] into %kr[%i1] if %more : memref<1x2x300x64xf16>, !flexattn.ring<2 x 64x64xf16>
    %kt = flexattn.ring.slot %kr[%i] : !flexattn.ring<2 x 64x64xf16>
    %s0 = flexattn.mma %qf, %kt {transpose_b} : vector<32xf16>, !flexattn.smem_tile<64x64xf16> -> vector<32xf32>
    %s = flexattn.mma.wait pending(0) %s0 : vector<32xf32>
    %o0 = flexattn.mma %p, %kt, %acc : vector<32xf16>, !flexattn.smem_tile<64x64xf16>, vector<32xf32> -> vector<32xf32>
    %o, %p1 = flexattn.mma.wait pending(0) %o0, %p : vector<32xf32>, vector<32xf16>
    flexattn.ring.release %kr[%i] : !flexattn.ring<2 x 64x64xf16>
    %r = arith.addf %s, %o : vector<32xf32>
    vector.store %r, %out[%c1] : memref<32xf32>, vector<32xf32>
    gpu.terminator
  }
  return
}

// -----

// Two m16 tiles per warp (32 rows; one group of 4 warps owns the 128-row
// band), A read from shared memory: per 16 columns of K, one ldmatrix.x4 of
// A per m16 tile, then per 16 columns of N one ldmatrix.x4 of B feeding
// 2 x 2 mma.sync (two n8 halves, both m16 tiles). S = Q.Kᵀ with K = 64,
// N = 64: 4 x (2 + 4) ldmatrix, 4 x 4 x 4 mma.sync.
// With Q read from shared memory (the launch marked
// flexattn.q_from_shared by flexattn-multistage) the base is the block's
// own address (not rounded up at run time), and each ldmatrix address is a lane offset
// (one of 4 per operand layout), moved once per block through an opaque
// copy, plus the tile and a constant pointer offset (an immediate in PTX):
// LLVM keeps no register per address across a KV loop.
// CHECK-LABEL: func.func @two_tiles(
// CHECK:           %[[DYN:.*]] = gpu.dynamic_shared_memory
// CHECK-NEXT:      %[[P:.*]] = memref.extract_aligned_pointer_as_index %[[DYN]]
// CHECK-NEXT:      %[[BASE:.*]] = arith.index_cast %[[P]] : index to i32
// CHECK-NOT:       arith.andi %{{.*}}, %c-128_i32
// CHECK:           nvvm.cp.async.wait.group 0
// CHECK:           %[[QL:.*]] = llvm.inline_asm has_side_effects asm_dialect = att "mov.b32 $0, $1;", "=r,r" %{{.*}} : (i32) -> i32
// CHECK-NEXT:      %[[QA:.*]] = arith.addi %[[QL]], %[[BASE]] : i32
// CHECK-NEXT:      %[[QP:.*]] = llvm.inttoptr %[[QA]] : i32 to !llvm.ptr<3>
// CHECK-NEXT:      nvvm.ldmatrix %[[QP]] {eltType = #nvvm.ld_st_matrix_elt_type<b16>, layout = #nvvm.mma_layout<row>, {{.*}}}
// CHECK:           %[[QP1:.*]] = llvm.getelementptr inbounds %[[QP]][2048] : (!llvm.ptr<3>) -> !llvm.ptr<3>, i8
// CHECK-NEXT:      nvvm.ldmatrix %[[QP1]] {eltType = #nvvm.ld_st_matrix_elt_type<b16>, layout = #nvvm.mma_layout<row>, {{.*}}}
// CHECK:           llvm.inline_asm has_side_effects
// CHECK:           nvvm.ldmatrix %{{.*}} {eltType = #nvvm.ld_st_matrix_elt_type<b16>, layout = #nvvm.mma_layout<row>, {{.*}}}
// CHECK-NOT:       nvvm.ldmatrix
// CHECK-COUNT-4:   nvvm.mma.sync A[{{.*}}] B[{{.*}}] C[{{.*}}] {layoutA = #nvvm.mma_layout<row>, layoutB = #nvvm.mma_layout<col>, multiplicandAPtxType = #nvvm.mma_type<bf16>, multiplicandBPtxType = #nvvm.mma_type<bf16>, shape = #nvvm.shape<m = 16, n = 8, k = 16>}
// CHECK-COUNT-60:  nvvm.mma.sync
// O = P.V + acc: P of two m16 tiles from registers (no ldmatrix of A), V
// transposed on load: 4 x 4 ldmatrix.trans, 64 mma.sync.
// CHECK:           nvvm.ldmatrix %{{.*}} {eltType = #nvvm.ld_st_matrix_elt_type<b16>, layout = #nvvm.mma_layout<col>, {{.*}}}
// CHECK-COUNT-64:  nvvm.mma.sync
// CHECK-NOT:       nvvm.mma.sync
// CHECK-NOT:       flexattn.{{[a-z_.]+ }}
func.func @two_tiles(%q: memref<1x2x300x64xbf16>, %b: index, %h: index, %q0: index,
                     %p: vector<64xbf16>, %acc: vector<64xf32>, %out: memref<64xf32>) {
  %c1 = arith.constant 1 : index
  %c128 = arith.constant 128 : index
  %c0 = arith.constant 0 : index
  %c0_i32 = arith.constant 0 : i32
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c128, %sy = %c1, %sz = %c1) {
    %qr = flexattn.ring.alloc consumers(128) : !flexattn.ring<1 x 128x64xbf16>
    %kr = flexattn.ring.alloc consumers(128) : !flexattn.ring<1 x 64x64xbf16>
    flexattn.ring.acquire %qr[%c0_i32] : !flexattn.ring<1 x 128x64xbf16>
    flexattn.ring.copy %q[%b, %h, %q0] into %qr[%c0_i32] : memref<1x2x300x64xbf16>, !flexattn.ring<1 x 128x64xbf16>
    flexattn.ring.acquire %kr[%c0_i32] : !flexattn.ring<1 x 64x64xbf16>
    flexattn.ring.copy %q[%b, %h, %q0] into %kr[%c0_i32] : memref<1x2x300x64xbf16>, !flexattn.ring<1 x 64x64xbf16>
    flexattn.ring.wait %kr[%c0_i32] in_flight(0) : !flexattn.ring<1 x 64x64xbf16>
    %qs = flexattn.ring.slot %qr[%c0_i32] : !flexattn.ring<1 x 128x64xbf16>
    %kt = flexattn.ring.slot %kr[%c0_i32] : !flexattn.ring<1 x 64x64xbf16>
    %s0 = flexattn.mma %qs[%c0], %kt {transpose_b} : !flexattn.smem_tile<128x64xbf16>, !flexattn.smem_tile<64x64xbf16> -> vector<64xf32>
    %o0 = flexattn.mma %p, %kt, %acc : vector<64xbf16>, !flexattn.smem_tile<64x64xbf16>, vector<64xf32> -> vector<64xf32>
    %r = arith.addf %s0, %o0 : vector<64xf32>
    vector.store %r, %out[%c0] : memref<64xf32>, vector<64xf32>
    gpu.terminator
  } {flexattn.q_from_shared}
  return
}

// -----

// A head dim padded to a 64-column panel (D = 24: 3 of a row's 8 chunks):
// the chunks past the source's columns copy 0 bytes (zero fill) from a
// clamped address in the row; no row tail (256 rows of 64-row tiles).
// CHECK-LABEL: func.func @padded_columns(
// A thread's chunks share their column (t % 8), so the clamp and the
// zero-fill size are computed once and its second chunk is 32 rows on
// (32 x 24 x 2 bytes in the tensor, 32 x 128 in the slot).
// CHECK:           memref.extract_aligned_pointer_as_index %{{.*}} : memref<1x2x256x24xbf16>
// CHECK:           %[[CC:.*]] = arith.remui %{{.*}}, %c8_i32 : i32
// CHECK:           %[[SRC:.*]] = arith.minui %[[CC]], %c2_i32 : i32
// CHECK-NEXT:      arith.muli %[[SRC]], %c8_i32 : i32
// CHECK:           %[[REAL:.*]] = arith.cmpi ult, %[[CC]], %c3_i32 : i32
// CHECK-NEXT:      %[[SIZE:.*]] = arith.select %[[REAL]], %{{.*}}, %{{.*}} : i32
// CHECK:           nvvm.cp.async.shared.global %{{.*}}, %{{.*}}, 16, cache =  cg, %[[SIZE]] : !llvm.ptr<3>, !llvm.ptr<1>, i32
// CHECK-NEXT:      arith.addi %{{.*}}, %c1536_i64 : i64
// CHECK-NEXT:      arith.addi %{{.*}}, %c4096_i32 : i32
// CHECK:           nvvm.cp.async.shared.global %{{.*}}, %{{.*}}, 16, cache =  cg, %[[SIZE]]
// CHECK-NEXT:      nvvm.cp.async.commit.group
// S = Q.Kᵀ over the 24 filled columns: 2 k16 steps (not 4) x 8 blocks of
// 8 KV columns; P.V over 24 of the 64 value columns: 3 blocks of 8 (not 8)
// x 4 k16 steps.
// CHECK-COUNT-16:  nvvm.mma.sync
// CHECK-NOT:       nvvm.mma.sync
// CHECK:           vector.store
// CHECK-COUNT-12:  nvvm.mma.sync
// CHECK-NOT:       nvvm.mma.sync
func.func @padded_columns(%k: memref<1x2x256x24xbf16>, %b: index, %h: index, %row: index,
                          %qf: vector<32xbf16>, %pf: vector<32xbf16>, %s: memref<64xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c256 = arith.constant 256 : index
  %c0_i32 = arith.constant 0 : i32
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c256, %sy = %c1, %sz = %c1) {
    %kr = flexattn.ring.alloc consumers(256) : !flexattn.ring<1 x 64x64xbf16>
    flexattn.ring.acquire %kr[%c0_i32] : !flexattn.ring<1 x 64x64xbf16>
    flexattn.ring.copy %k[%b, %h, %row] into %kr[%c0_i32] : memref<1x2x256x24xbf16>, !flexattn.ring<1 x 64x64xbf16>
    flexattn.ring.wait %kr[%c0_i32] in_flight(0) : !flexattn.ring<1 x 64x64xbf16>
    %kt = flexattn.ring.slot %kr[%c0_i32] : !flexattn.ring<1 x 64x64xbf16>
    %st = flexattn.mma %qf, %kt {transpose_b} : vector<32xbf16>, !flexattn.smem_tile<64x64xbf16> -> vector<32xf32>
    vector.store %st, %s[%c0] : memref<64xf32>, vector<32xf32>
    %o = flexattn.mma %pf, %kt : vector<32xbf16>, !flexattn.smem_tile<64x64xbf16> -> vector<32xf32>
    vector.store %o, %s[%c0] : memref<64xf32>, vector<32xf32>
    gpu.terminator
  }
  return
}

// -----

// Two rings filled in pairs, the next pair copied right after the wait for
// this one (the backward's streamed chunks): the first wait is implied by
// the second (no more copies in flight), so one cp.async.wait_group and one
// barrier; the next position's acquires follow the waits (of both rings)
// and need none.
// CHECK-LABEL: func.func @paired_rings(
// CHECK:           scf.for
// CHECK-NOT:         nvvm.barrier0
// CHECK:             nvvm.cp.async.wait.group 0
// CHECK-NEXT:        nvvm.barrier0
// CHECK-NOT:         nvvm.cp.async.wait.group
// CHECK-NOT:         nvvm.barrier0
// CHECK:             scf.if %{{.*}} {
// CHECK:             nvvm.cp.async.commit.group
// CHECK:             scf.if %{{.*}} {
// CHECK:             nvvm.cp.async.commit.group
// CHECK-NOT:         nvvm.barrier0
// CHECK:             nvvm.mma.sync
// CHECK-NOT:         nvvm.barrier0
// CHECK:           }
func.func @paired_rings(%q: memref<1x2x300x64xbf16>, %b: index, %h: index, %row: index,
                        %i: i32, %more: i1, %qf: vector<32xbf16>, %s: memref<16xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c4 = arith.constant 4 : index
  %c128 = arith.constant 128 : index
  %c1_i32 = arith.constant 1 : i32
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c128, %sy = %c1, %sz = %c1) {
    %ar = flexattn.ring.alloc consumers(128) : !flexattn.ring<2 x 32x64xbf16>
    %br = flexattn.ring.alloc consumers(128) : !flexattn.ring<2 x 32x64xbf16>
    scf.for %c = %c0 to %c4 step %c1 {
      flexattn.ring.wait %ar[%i] in_flight(1) : !flexattn.ring<2 x 32x64xbf16>
      %at = flexattn.ring.slot %ar[%i] : !flexattn.ring<2 x 32x64xbf16>
      flexattn.ring.wait %br[%i] in_flight(0) : !flexattn.ring<2 x 32x64xbf16>
      %bt = flexattn.ring.slot %br[%i] : !flexattn.ring<2 x 32x64xbf16>
      %next = arith.addi %i, %c1_i32 : i32
      flexattn.ring.acquire %ar[%next] : !flexattn.ring<2 x 32x64xbf16>
      flexattn.ring.acquire %br[%next] : !flexattn.ring<2 x 32x64xbf16>
      flexattn.ring.copy %q[%b, %h, %row] into %ar[%next] if %more : memref<1x2x300x64xbf16>, !flexattn.ring<2 x 32x64xbf16>
      flexattn.ring.copy %q[%b, %h, %row] into %br[%next] if %more : memref<1x2x300x64xbf16>, !flexattn.ring<2 x 32x64xbf16>
      %x = flexattn.mma %qf, %at {transpose_b} : vector<32xbf16>, !flexattn.smem_tile<32x64xbf16> -> vector<16xf32>
      %y = flexattn.mma %qf, %bt {transpose_b} : vector<32xbf16>, !flexattn.smem_tile<32x64xbf16> -> vector<16xf32>
      %z = arith.addf %x, %y : vector<16xf32>
      vector.store %z, %s[%c0] : memref<16xf32>, vector<16xf32>
      flexattn.ring.release %ar[%i] : !flexattn.ring<2 x 32x64xbf16>
      flexattn.ring.release %br[%i] : !flexattn.ring<2 x 32x64xbf16>
    }
    gpu.terminator
  }
  return
}

// -----

// A launch marked flexattn.prefetch_loads (the decode kernel's): the
// loads of the KV loop that every thread makes alike, that depend on the
// iteration and that the step needs after its first wait (the page-table
// entry of its block), and the loads their addresses need (the block
// index), are issued iterations ahead and carried (passes/PrefetchLoads.h).
// The block index, one load on its address path, goes two iterations
// ahead (slots j and j + 1; j's is unused here and canonicalize drops it);
// the page entry one ahead, from the carried index of iteration j + 1.
// Before the loop: the slots of iterations 0 and 1, each under `if` it
// exists. A load before the wait that nothing after it needs (the copies'
// index, a step ahead), a load by thread (the thread id in its address)
// and one from a memref the launch writes stay where they were.
// CHECK-LABEL: func.func @prefetch_loads(
// CHECK-SAME:    %[[KVI:[^:]+]]: memref<4x8xi32>, %[[TABLE:[^:]+]]: memref<4x16xi64>, %[[OUT:[^:]+]]: memref<4x8xi32>, %[[N:[^:]+]]: index, %[[I:[^:]+]]: i32,
// CHECK:         gpu.launch blocks(%[[BX:[^,]*]], {{.*}} threads(%[[TX:[^,]*]],
// CHECK:           %[[ANY:.*]] = arith.cmpi sgt, %[[N]], %[[C0:.*]] : index
// CHECK:           %[[B0:.*]] = scf.if %[[ANY]] -> (i32) {
// CHECK-NEXT:        memref.load %[[KVI]][%[[BX]], %[[C0]]]
// CHECK:           %[[TWO:.*]] = arith.cmpi sgt, %[[N]], %[[C1:.*]] : index
// CHECK:           %[[B1:.*]] = scf.if %[[TWO]] -> (i32) {
// CHECK-NEXT:        memref.load %[[KVI]][%[[BX]], %[[C0]]]
// CHECK:           %[[P0:.*]] = scf.if %[[ANY]] -> (i64) {
// CHECK-NEXT:        arith.index_cast %[[B0]] : i32 to index
// CHECK:             memref.load %[[TABLE]]
// CHECK:           scf.for %[[J:.*]] = %[[C0]] to %[[N]] step %[[C1]] iter_args(%[[POS:.*]] = %[[I]], %[[BNEXT:.*]] = %[[B1]], %[[PAGE:.*]] = %[[P0]]) -> (i32, i32, i64) {
// CHECK-NEXT:        %[[J2:.*]] = arith.addi %[[J]], %[[C2:.*]] : index
// CHECK-NEXT:        %[[HAS2:.*]] = arith.cmpi slt, %[[J2]], %[[N]] : index
// CHECK-NEXT:        %[[B2:.*]] = scf.if %[[HAS2]] -> (i32) {
// CHECK-NEXT:          %[[JB2:.*]] = arith.divui %[[J2]], %[[C2]] : index
// CHECK-NEXT:          memref.load %[[KVI]][%[[BX]], %[[JB2]]]
// CHECK:             %[[J1:.*]] = arith.addi %[[J]], %[[C1]] : index
// CHECK-NEXT:        %[[HAS1:.*]] = arith.cmpi slt, %[[J1]], %[[N]] : index
// CHECK-NEXT:        %[[P1:.*]] = scf.if %[[HAS1]] -> (i64) {
// CHECK-NEXT:          arith.index_cast %[[BNEXT]] : i32 to index
// CHECK:               memref.load %[[TABLE]]
// CHECK:             %[[JB:.*]] = arith.divui %[[J]], %[[C2]] : index
// CHECK-NEXT:        %[[JB1:.*]] = arith.divui %[[J1]], %[[C2]] : index
// CHECK-NEXT:        %[[AHEAD:.*]] = memref.load %[[KVI]][%[[BX]], %[[JB1]]]
// CHECK-NEXT:        memref.store %[[AHEAD]]
// CHECK-NEXT:        nvvm.cp.async.wait.group 0
// CHECK-NEXT:        nvvm.barrier0
// CHECK-NEXT:        %[[VALID:.*]] = arith.cmpi sge, %[[PAGE]], %{{.*}} : i64
// CHECK-NEXT:        memref.load %[[KVI]][%[[TX]], %[[JB]]]
// CHECK-NEXT:        memref.load %[[OUT]][%[[BX]], %[[JB]]]
// CHECK-NOT:         memref.load
// CHECK:             arith.select %[[VALID]]
// CHECK:             scf.yield %{{.*}}, %[[B2]], %[[P1]] : i32, i32, i64
func.func @prefetch_loads(%kvi: memref<4x8xi32>, %table: memref<4x16xi64>, %out: memref<4x8xi32>,
                          %n: index, %i: i32, %qf: vector<32xbf16>, %s: memref<128x16xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c4 = arith.constant 4 : index
  %c64 = arith.constant 64 : index
  %c128 = arith.constant 128 : index
  %c0_i64 = arith.constant 0 : i64
  %c1_i32 = arith.constant 1 : i32
  %zero = arith.constant dense<0.0> : vector<16xf32>
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c4, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c128, %sy = %c1, %sz = %c1) {
    %r = flexattn.ring.alloc consumers(128) : !flexattn.ring<2 x 32x64xbf16>
    %last = scf.for %j = %c0 to %n step %c1 iter_args(%pos = %i) -> (i32) {
      %jb = arith.divui %j, %c2 : index
      %blk32 = memref.load %kvi[%bx, %jb] : memref<4x8xi32>
      %j1 = arith.addi %j, %c1 : index
      %jb1 = arith.divui %j1, %c2 : index
      %ahead = memref.load %kvi[%bx, %jb1] : memref<4x8xi32>
      memref.store %ahead, %out[%bx, %c0] : memref<4x8xi32>
      flexattn.ring.wait %r[%pos] in_flight(0) : !flexattn.ring<2 x 32x64xbf16>
      %blk = arith.index_cast %blk32 : i32 to index
      %kv0 = arith.muli %blk, %c64 : index
      %page = arith.divui %kv0, %c128 : index
      %entry = memref.load %table[%bx, %page] : memref<4x16xi64>
      %valid = arith.cmpi sge, %entry, %c0_i64 : i64
      %mine = memref.load %kvi[%tx, %jb] : memref<4x8xi32>
      %written = memref.load %out[%bx, %jb] : memref<4x8xi32>
      %sum = arith.addi %mine, %written : i32
      memref.store %sum, %out[%bx, %jb] : memref<4x8xi32>
      %t = flexattn.ring.slot %r[%pos] : !flexattn.ring<2 x 32x64xbf16>
      %x = flexattn.mma %qf, %t {transpose_b} : vector<32xbf16>, !flexattn.smem_tile<32x64xbf16> -> vector<16xf32>
      %m = arith.select %valid, %x, %zero : vector<16xf32>
      vector.store %m, %s[%tx, %c0] : memref<128x16xf32>, vector<16xf32>
      flexattn.ring.release %r[%pos] : !flexattn.ring<2 x 32x64xbf16>
      %next = arith.addi %pos, %c1_i32 : i32
      scf.yield %next : i32
    }
    gpu.terminator
  } {flexattn.prefetch_loads}
  return
}

// -----

// A launch marked flexattn.hoist_loads (the decode kernel's): the loads
// between its first wait (the Q tile's) and its last KV loop, of memrefs
// the launch only reads (the block count, the first block index under
// `if` the loop runs), with the pure ops they need (the range), move above
// the wait, in order: they run while Q is copied. A load whose address
// needs what the wait guards (Q from shared memory), one of a memref the
// launch writes, one after the last loop, the ops the moved loads do not
// need and the copy stay where they were.
// CHECK-LABEL: func.func @hoist_loads(
// CHECK-SAME:    %[[Q:[^:]+]]: memref<4x1x128x64xbf16>, %[[NB:[^:]+]]: memref<4xi32>, %[[KVI:[^:]+]]: memref<4x8xi32>, %[[OUT:[^:]+]]: memref<4x8xi32>,
// CHECK:         gpu.launch blocks(%[[BX:[^,]*]],
// CHECK:           nvvm.cp.async.commit.group
// CHECK-NEXT:      %[[N32:.*]] = memref.load %[[NB]][%[[BX]]] : memref<4xi32>
// CHECK-NEXT:      %[[N:.*]] = arith.index_cast %[[N32]] : i32 to index
// CHECK-NEXT:      %[[ANY:.*]] = arith.cmpi sgt, %[[N]], %{{.*}} : index
// CHECK-NEXT:      %[[FIRST:.*]] = scf.if %[[ANY]] -> (i32) {
// CHECK-NEXT:        memref.load %[[KVI]][%[[BX]], %{{.*}}] : memref<4x8xi32>
// CHECK:           nvvm.cp.async.wait.group 0
// CHECK-NEXT:      nvvm.barrier0
// CHECK:           nvvm.ldmatrix
// CHECK:           %[[QX:.*]] = arith.index_cast %{{.*}} : i16 to index
// CHECK-NEXT:      memref.load %[[KVI]][%[[BX]], %[[QX]]] : memref<4x8xi32>
// CHECK-NEXT:      memref.load %[[OUT]][%[[BX]], %{{.*}}] : memref<4x8xi32>
// CHECK:           memref.store %[[FIRST]], %[[OUT]]
// CHECK:           scf.for
// CHECK:           memref.load %[[NB]]
// CHECK:           gpu.terminator
func.func @hoist_loads(%q: memref<4x1x128x64xbf16>, %nb: memref<4xi32>, %kvi: memref<4x8xi32>,
                       %out: memref<4x8xi32>, %qf: vector<32xbf16>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c4 = arith.constant 4 : index
  %c128 = arith.constant 128 : index
  %c0_i32 = arith.constant 0 : i32
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c4, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c128, %sy = %c1, %sz = %c1) {
    %qr = flexattn.ring.alloc consumers(128) : !flexattn.ring<1 x 128x64xbf16>
    %r = flexattn.ring.alloc consumers(128) : !flexattn.ring<2 x 32x64xbf16>
    flexattn.ring.acquire %qr[%c0_i32] : !flexattn.ring<1 x 128x64xbf16>
    flexattn.ring.copy %q[%bx, %c0, %c0] into %qr[%c0_i32] : memref<4x1x128x64xbf16>, !flexattn.ring<1 x 128x64xbf16>
    flexattn.ring.wait %qr[%c0_i32] in_flight(0) : !flexattn.ring<1 x 128x64xbf16>
    %qs = flexattn.ring.slot %qr[%c0_i32] : !flexattn.ring<1 x 128x64xbf16>
    %qv = flexattn.frag.load %qs[%c0] : !flexattn.smem_tile<128x64xbf16> -> vector<32xbf16>
    %q0 = vector.extract %qv[0] : bf16 from vector<32xbf16>
    %qi = arith.bitcast %q0 : bf16 to i16
    %qx = arith.index_cast %qi : i16 to index
    %n32 = memref.load %nb[%bx] : memref<4xi32>
    %n = arith.index_cast %n32 : i32 to index
    %any = arith.cmpi sgt, %n, %c0 : index
    %first = scf.if %any -> (i32) {
      %v = memref.load %kvi[%bx, %c0] : memref<4x8xi32>
      scf.yield %v : i32
    } else {
      scf.yield %c0_i32 : i32
    }
    %mine = memref.load %kvi[%bx, %qx] : memref<4x8xi32>
    %written = memref.load %out[%bx, %c1] : memref<4x8xi32>
    %sum = arith.addi %mine, %written : i32
    memref.store %sum, %out[%bx, %c0] : memref<4x8xi32>
    memref.store %first, %out[%bx, %c1] : memref<4x8xi32>
    scf.for %j = %c0 to %n step %c1 {
      flexattn.ring.wait %r[%c0_i32] in_flight(0) : !flexattn.ring<2 x 32x64xbf16>
    }
    %after = memref.load %nb[%c0] : memref<4xi32>
    memref.store %after, %out[%bx, %c0] : memref<4x8xi32>
    gpu.terminator
  } {flexattn.hoist_loads}
  return
}

// -----

// Unmarked: the same loop keeps its loads where they were.
// CHECK-LABEL: func.func @unmarked(
// CHECK-NOT:     memref.load
// CHECK:         scf.for %{{.*}} iter_args(%{{.*}} = %{{.*}}) -> (i32) {
// CHECK:           nvvm.cp.async.wait.group 0
// CHECK:           memref.load %{{.*}} : memref<4x16xi64>
func.func @unmarked(%kvi: memref<4x8xi32>, %table: memref<4x16xi64>, %out: memref<4x8xi32>,
                          %n: index, %i: i32, %qf: vector<32xbf16>, %s: memref<128x16xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c4 = arith.constant 4 : index
  %c64 = arith.constant 64 : index
  %c128 = arith.constant 128 : index
  %c0_i64 = arith.constant 0 : i64
  %c1_i32 = arith.constant 1 : i32
  %zero = arith.constant dense<0.0> : vector<16xf32>
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c4, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c128, %sy = %c1, %sz = %c1) {
    %r = flexattn.ring.alloc consumers(128) : !flexattn.ring<2 x 32x64xbf16>
    %last = scf.for %j = %c0 to %n step %c1 iter_args(%pos = %i) -> (i32) {
      %jb = arith.divui %j, %c2 : index
      %blk32 = memref.load %kvi[%bx, %jb] : memref<4x8xi32>
      %j1 = arith.addi %j, %c1 : index
      %jb1 = arith.divui %j1, %c2 : index
      %ahead = memref.load %kvi[%bx, %jb1] : memref<4x8xi32>
      memref.store %ahead, %out[%bx, %c0] : memref<4x8xi32>
      flexattn.ring.wait %r[%pos] in_flight(0) : !flexattn.ring<2 x 32x64xbf16>
      %blk = arith.index_cast %blk32 : i32 to index
      %kv0 = arith.muli %blk, %c64 : index
      %page = arith.divui %kv0, %c128 : index
      %entry = memref.load %table[%bx, %page] : memref<4x16xi64>
      %valid = arith.cmpi sge, %entry, %c0_i64 : i64
      %mine = memref.load %kvi[%tx, %jb] : memref<4x8xi32>
      %written = memref.load %out[%bx, %jb] : memref<4x8xi32>
      %sum = arith.addi %mine, %written : i32
      memref.store %sum, %out[%bx, %jb] : memref<4x8xi32>
      %t = flexattn.ring.slot %r[%pos] : !flexattn.ring<2 x 32x64xbf16>
      %x = flexattn.mma %qf, %t {transpose_b} : vector<32xbf16>, !flexattn.smem_tile<32x64xbf16> -> vector<16xf32>
      %m = arith.select %valid, %x, %zero : vector<16xf32>
      vector.store %m, %s[%tx, %c0] : memref<128x16xf32>, vector<16xf32>
      flexattn.ring.release %r[%pos] : !flexattn.ring<2 x 32x64xbf16>
      %next = arith.addi %pos, %c1_i32 : i32
      scf.yield %next : i32
    }
    gpu.terminator
  }
  return
}

// -----

func.func @too_much_shared_memory() {
  %c1 = arith.constant 1 : index
  %c256 = arith.constant 256 : index
  // expected-error @below {{the kernel's rings need 229504 bytes of shared memory, more than the 166912 a block has (fewer stages use less)}}
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c256, %sy = %c1, %sz = %c1) {
    %qr = flexattn.ring.alloc consumers(256) : !flexattn.ring<1 x 128x128xbf16>
    %kr = flexattn.ring.alloc consumers(256) : !flexattn.ring<3 x 128x128xbf16>
    %vr = flexattn.ring.alloc consumers(256) : !flexattn.ring<3 x 128x128xbf16>
    gpu.terminator
  }
  return
}

// -----

func.func @wait_without_in_flight(%i: i32) {
  %c1 = arith.constant 1 : index
  %c256 = arith.constant 256 : index
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c256, %sy = %c1, %sz = %c1) {
    %kr = flexattn.ring.alloc consumers(256) : !flexattn.ring<2 x 64x64xbf16>
    // expected-error @below {{on a ring filled by flexattn.ring.copy needs in_flight (how many later copies may run)}}
    flexattn.ring.wait %kr[%i] : !flexattn.ring<2 x 64x64xbf16>
    gpu.terminator
  }
  return
}

// -----

func.func @producer_role(%i: i32) {
  %c1 = arith.constant 1 : index
  %c384 = arith.constant 384 : index
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c384, %sy = %c1, %sz = %c1) {
    %kr = flexattn.ring.alloc consumers(256) : !flexattn.ring<2 x 64x64xbf16>
    // expected-error @below {{has a producer role: Hopper's (flexattn-lower-to-hopper); sm_80 kernels have none (flexattn-multistage)}}
    flexattn.warp_specialize producer(threads = 128, registers = 40) {
    ^bb0(%thread: index):
    } consumers(groups = 2, threads = 128, registers = 232) {
    ^bb0(%group: index, %thread: index):
    }
    gpu.terminator
  }
  return
}
