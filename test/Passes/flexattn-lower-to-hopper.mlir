// RUN: flexattn-opt %s -split-input-file -verify-diagnostics --flexattn-lower-to-hopper=max-shared-memory=229376 --canonicalize --cse | FileCheck %s

// Shared memory: Q slot (16 KiB), 2 K slots (8 KiB each), then the barriers
// (Q full, empty; K full x2, empty x2) and 1024 bytes for the run-time
// alignment: 32768 + 48 + 1024 = 33840.
// CHECK-LABEL: func.func @kernel(
// CHECK-SAME:    %[[QMAP:[^:]+]]: !llvm.ptr, %[[KMAP:[^:]+]]: !llvm.ptr,
// CHECK-DAG:     %[[SMEM:.*]] = arith.constant 33840 : i32
// CHECK:         gpu.launch {{.*}} dynamic_shared_memory_size %[[SMEM]] {
// The base, rounded up to 1024 bytes.
// CHECK:           %[[DYN:.*]] = gpu.dynamic_shared_memory : memref<?xi8, #gpu.address_space<workgroup>>
// CHECK:           %[[P:.*]] = memref.extract_aligned_pointer_as_index %[[DYN]]
// CHECK:           %[[RAW:.*]] = arith.index_cast %[[P]] : index to i32
// CHECK:           %[[UP:.*]] = arith.addi %[[RAW]], %{{.*}} : i32
// CHECK:           %[[BASE:.*]] = arith.andi %[[UP]], %{{.*}} : i32
// Thread 0 initialises every barrier (full: 1 arrival, empty: 256), then all wait.
// CHECK:           %[[TID:.*]] = gpu.thread_id  x
// CHECK:           scf.if
// CHECK-COUNT-6:     nvvm.mbarrier.init
// CHECK:             nvvm.fence.mbarrier.init
// CHECK:           gpu.barrier
// The roles: a branch on the thread index, registers moved between them.
// CHECK:           %[[ISP:.*]] = arith.cmpi ult, %[[TID]], %{{.*}} : index
// CHECK:           scf.if %[[ISP]] {
// CHECK-NEXT:        nvvm.setmaxregister  decrease 40
// ring.acquire: the empty barrier, parity flipped (round 0 passes at once)
// CHECK:             nvvm.mbarrier.try_wait.parity %{{.*}}, %{{.*}}, %{{.*}} : !llvm.ptr<3>, i32, i32
// ring.load: expect the slot's bytes, one TMA per 64-column panel
// CHECK:             nvvm.mbarrier.arrive.expect_tx %[[QFULL:.*]], %{{.*}} : !llvm.ptr<3>, i32
// CHECK:             nvvm.cp.async.bulk.tensor.shared.cluster.global %{{.*}}, %[[QMAP]], %[[QFULL]], box[%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}] : !llvm.ptr<7>, !llvm.ptr
// K position i: slot i % 2, parity (i / 2) & 1.
// CHECK:             %[[STAGE:.*]] = arith.remui %{{.*}}, %{{.*}} : i32
// CHECK:             nvvm.mbarrier.try_wait.parity
// CHECK:             nvvm.mbarrier.arrive.expect_tx
// CHECK:             nvvm.cp.async.bulk.tensor.shared.cluster.global %{{.*}}, %[[KMAP]]
// CHECK:           } else {
// CHECK-NEXT:        nvvm.setmaxregister  increase 232
// The group index read from lane 0 (warp-uniform for ptxas).
// CHECK:             %[[WG:.*]] = arith.divui %[[TID]], %{{.*}} : index
// CHECK:             %[[WGI:.*]] = arith.index_cast %[[WG]] : index to i32
// CHECK:             %[[WGU:.*]], %{{.*}} = gpu.shuffle  idx %[[WGI]], %{{.*}}, %{{.*}} : i32
// CHECK:             %[[WGX:.*]] = arith.index_cast %[[WGU]] : i32 to index
// CHECK:             %[[GROUP:.*]] = arith.subi %[[WGX]], %{{.*}} : index
// ring.wait: the full barrier
// CHECK:             nvvm.mbarrier.try_wait.parity
// CHECK:             nvvm.mbarrier.try_wait.parity
// The select between tiles is a select between addresses.
// CHECK:             %[[VADDR:.*]] = arith.select %{{.*}}, %{{.*}}, %[[BASE]] : i32
// S = Q.Kᵀ: one fence, 4 k16 steps from shared memory (the first starts from 0), commit.
// A descriptor: the tile's address >> 4 (once) plus a constant (LBO 16384
// >> 4 in bits 16-29, the k16 step's 32 bytes >> 4), SBO 1024 >> 4 and the
// 128-byte swizzle in the high word.
// CHECK:             nvvm.wgmma.fence.aligned
// CHECK:             %[[A16:.*]] = arith.shrui %{{.*}}, %{{.*}} : i32
// CHECK:             %[[B16:.*]] = arith.shrui %{{.*}}, %{{.*}} : i32
// CHECK:             %[[A0:.*]] = arith.addi %[[A16]], %c67108864_i32 : i32
// CHECK:             %[[A0W:.*]] = arith.extui %[[A0]] : i32 to i64
// CHECK:             %[[DA0:.*]] = arith.ori %[[A0W]], %c4611686293305294848_i64 : i64
// CHECK:             nvvm.wgmma.mma_async %[[DA0]], %{{.*}}, %{{.*}}, <m = 64, n = 64, k = 16>, D[<f32>, <zero>], A[<f16>, <one>, <row>], B[<f16>, <one>, <col>]
// CHECK:             %[[A1:.*]] = arith.addi %[[A16]], %c67108866_i32 : i32
// CHECK-COUNT-3:     nvvm.wgmma.mma_async {{.*}} <m = 64, n = 64, k = 16>, D[<f32>, <one>], A[<f16>, <one>, <row>], B[<f16>, <one>, <col>]
// CHECK:             nvvm.wgmma.commit.group.sync.aligned
// O += P.V right after it (no second fence): P packed in pairs, V row-major
// (imm-trans-b = 1) through descriptors 2048 bytes (16 rows) apart.
// CHECK-NOT:         nvvm.wgmma.fence.aligned
// CHECK:             vector.bitcast %{{.*}} : vector<2xf16> to vector<1xi32>
// CHECK:             %[[V16:.*]] = arith.shrui %[[VADDR]], %{{.*}} : i32
// CHECK:             arith.addi %[[V16]], %c33554432_i32 : i32
// CHECK:             llvm.inline_asm has_side_effects asm_dialect = att "{\0A.reg .pred p;\0Asetp.ne.b32 p, 1, 0;\0Awgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 {{.*}} p, 1, 1, 1;\0A}"
// CHECK:             arith.addi %[[V16]], %c33554560_i32 : i32
// CHECK-COUNT-3:     wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16
// CHECK:             nvvm.wgmma.commit.group.sync.aligned
// mma.wait pending(0) after(%x0, %w): the hold right after the last of the
// scalars they are made of is computed (%x0 is the first element of a vector
// built from %x, computed ahead of the wait for S, and %y, computed after
// it: the hold needs %x only), an instruction ptxas cannot issue before them
// (a never-taken membar.cta whose predicate is a PRMT of them that selects
// zero bytes) and keeps before the wait it holds.
// CHECK:             %[[X:.*]] = arith.mulf %{{.*}}, %{{.*}} : f32
// CHECK:             %[[W:.*]] = arith.mulf %{{.*}}, %{{.*}} : vector<1xf32>
// CHECK:             %[[W0:.*]] = vector.extract %[[W]][0] : f32 from vector<1xf32>
// CHECK-NEXT:        %[[H0:.*]] = llvm.bitcast %[[X]] : f32 to i32
// CHECK-NEXT:        %[[H1:.*]] = llvm.bitcast %[[W0]] : f32 to i32
// CHECK-NEXT:        llvm.inline_asm has_side_effects asm_dialect = att "{\0A.reg .b32 z;\0A.reg .pred p;\0Aprmt.b32 z, $0, 0, 0x4444;\0Aprmt.b32 z, $1, z, 0x4444;\0Asetp.ne.b32 p, z, 0;\0A@p membar.cta;\0A}", "r,r" %[[H0]], %[[H1]] : (i32, i32) -> ()
// mma.wait pending(1): S readable; its registers fenced.
// CHECK:             nvvm.wgmma.wait.group.sync.aligned 1
// CHECK-NEXT:        llvm.inline_asm has_side_effects asm_dialect = att "", "=f,
// ring.release: arrive on the empty barrier
// CHECK:             nvvm.mbarrier.arrive %{{.*}} : !llvm.ptr<3>
// mma.wait pending(0): O readable, P's registers kept until here.
// CHECK-NOT:         membar
// CHECK:             nvvm.wgmma.wait.group.sync.aligned 0
// CHECK-NEXT:        llvm.inline_asm has_side_effects asm_dialect = att "", "=f,
// CHECK:             llvm.inline_asm has_side_effects asm_dialect = att "", "=r,
// CHECK-NOT:       flexattn.
func.func @kernel(%qmap: !llvm.ptr, %kmap: !llvm.ptr, %b: index, %h: index, %q0: index,
                  %p: vector<32xf16>, %acc: vector<32xf32>, %i: i32, %has: i1, %out: memref<32xf32>,
                  %alpha: vector<2xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c384 = arith.constant 384 : index
  %c0_i32 = arith.constant 0 : i32
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c384, %sy = %c1, %sz = %c1) {
    %qr = flexattn.ring.alloc consumers(256) : !flexattn.ring<1 x 128x64xf16>
    %kr = flexattn.ring.alloc consumers(256) : !flexattn.ring<2 x 64x64xf16>
    flexattn.warp_specialize producer(threads = 128, registers = 40) {
    ^bb0(%thread: index):
      flexattn.ring.acquire %qr[%c0_i32] : !flexattn.ring<1 x 128x64xf16>
      flexattn.ring.load %qmap[%b, %h, %q0] into %qr[%c0_i32] : !llvm.ptr, !flexattn.ring<1 x 128x64xf16>
      flexattn.ring.acquire %kr[%i] : !flexattn.ring<2 x 64x64xf16>
      flexattn.ring.load %kmap[%b, %h, %c0] into %kr[%i] : !llvm.ptr, !flexattn.ring<2 x 64x64xf16>
    } consumers(groups = 2, threads = 128, registers = 232) {
    ^bb0(%group: index, %thread: index):
      flexattn.ring.wait %qr[%c0_i32] : !flexattn.ring<1 x 128x64xf16>
      %q = flexattn.ring.slot %qr[%c0_i32] : !flexattn.ring<1 x 128x64xf16>
      flexattn.ring.wait %kr[%i] : !flexattn.ring<2 x 64x64xf16>
      %k = flexattn.ring.slot %kr[%i] : !flexattn.ring<2 x 64x64xf16>
      %qk = flexattn.smem_tile.reinterpret %q : !flexattn.smem_tile<128x64xf16> to !flexattn.smem_tile<64x64xf16>
      %v = arith.select %has, %k, %qk : !flexattn.smem_tile<64x64xf16>
      %s0 = flexattn.mma %q[%group], %k {transpose_b} : !flexattn.smem_tile<128x64xf16>, !flexattn.smem_tile<64x64xf16> -> vector<32xf32>
      %o0 = flexattn.mma %p, %v, %acc : vector<32xf16>, !flexattn.smem_tile<64x64xf16>, vector<32xf32> -> vector<32xf32>
      %a = vector.extract %alpha[0] : f32 from vector<2xf32>
      %x = arith.mulf %a, %a : f32
      %a1 = vector.extract_strided_slice %alpha {offsets = [1], sizes = [1], strides = [1]} : vector<2xf32> to vector<1xf32>
      %w = arith.mulf %a1, %a1 : vector<1xf32>
      %s = flexattn.mma.wait pending(1) %s0 : vector<32xf32>
      %y = arith.addf %a, %a : f32
      %xy = vector.from_elements %x, %y : vector<2xf32>
      %x0 = vector.extract_strided_slice %xy {offsets = [0], sizes = [1], strides = [1]} : vector<2xf32> to vector<1xf32>
      flexattn.ring.release %kr[%i] : !flexattn.ring<2 x 64x64xf16>
      %o, %p1 = flexattn.mma.wait pending(0) %o0, %p after(%x0, %w : vector<1xf32>, vector<1xf32>) : vector<32xf32>, vector<32xf16>
      %r = arith.addf %s, %o : vector<32xf32>
      vector.store %r, %out[%c0] : memref<32xf32>, vector<32xf32>
    }
    gpu.terminator
  }
  return
}

// -----

func.func @too_much_shared_memory() {
  %c1 = arith.constant 1 : index
  %c384 = arith.constant 384 : index
  // expected-error @below {{the kernel's rings need 230512 bytes of shared memory, more than the 229376 a block has (fewer stages use less)}}
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c384, %sy = %c1, %sz = %c1) {
    %qr = flexattn.ring.alloc consumers(256) : !flexattn.ring<1 x 128x128xbf16>
    %kr = flexattn.ring.alloc consumers(256) : !flexattn.ring<3 x 128x128xbf16>
    %vr = flexattn.ring.alloc consumers(256) : !flexattn.ring<3 x 128x128xbf16>
    gpu.terminator
  }
  return
}

// -----

// Hopper's wgmma gives each warp one m16 tile: a fragment of two (an sm_80
// kernel's 32 rows per warp) is refused.
func.func @two_m16_tiles(%p: vector<64xf16>, %i: i32, %out: memref<64xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c384 = arith.constant 384 : index
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c384, %sy = %c1, %sz = %c1) {
    %kr = flexattn.ring.alloc consumers(256) : !flexattn.ring<2 x 64x64xf16>
    flexattn.warp_specialize producer(threads = 128, registers = 40) {
    ^bb0(%thread: index):
    } consumers(groups = 2, threads = 128, registers = 232) {
    ^bb0(%group: index, %thread: index):
      flexattn.ring.wait %kr[%i] : !flexattn.ring<2 x 64x64xf16>
      %k = flexattn.ring.slot %kr[%i] : !flexattn.ring<2 x 64x64xf16>
      // expected-error @below {{wgmma gives each warp 16 rows (one m16 tile): 32 f32 per thread for N = 64, got 64}}
      %o0 = flexattn.mma %p, %k : vector<64xf16>, !flexattn.smem_tile<64x64xf16> -> vector<64xf32>
      %o = flexattn.mma.wait pending(0) %o0 : vector<64xf32>
      vector.store %o, %out[%c0] : memref<64xf32>, vector<64xf32>
    }
    gpu.terminator
  }
  return
}
