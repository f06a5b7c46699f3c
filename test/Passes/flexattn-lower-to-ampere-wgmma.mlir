// RUN: flexattn-opt %s -split-input-file -verify-diagnostics --flexattn-lower-to-ampere=max-shared-memory=232448 --canonicalize --cse | FileCheck %s

// The backward's shape on sm_90a, a launch marked flexattn.wgmma:
// cooperative cp.async rings (the owned 64-row band, a 32-row streamed
// chunk) and the MMAs as warpgroup MMAs. The mark is dropped.
// Shared memory: the band (64x64 bf16, 8 KiB), 2 chunk slots (32x64, 4 KiB
// each) and 1024 bytes for the run-time alignment of wgmma's swizzle atoms:
// 16384 + 1024 = 17408.
// CHECK-LABEL: func.func @backward_chunk(
// CHECK-DAG:     %[[SMEM:.*]] = arith.constant 17408 : i32
// CHECK-DAG:     %[[MASK:.*]] = arith.constant -1024 : i32
// CHECK:         gpu.launch {{.*}} dynamic_shared_memory_size %[[SMEM]] {
// CHECK:           %[[UP:.*]] = arith.addi %{{.*}}, %c1023_i32 : i32
// CHECK:           arith.andi %[[UP]], %[[MASK]] : i32
// The copies into the swizzled layout, as on sm_80.
// CHECK:           nvvm.cp.async.shared.global
// CHECK:           nvvm.cp.async.commit.group
// ring.wait: this thread's copies, a proxy fence (wgmma reads the slots
// through the async proxy), then the CTA's barrier.
// CHECK:           nvvm.cp.async.wait.group 0
// CHECK-NEXT:      nvvm.fence.proxy {kind = #nvvm.proxy_kind<async.shared>, space = #nvvm.shared_space<cta>}
// CHECK-NEXT:      nvvm.barrier0
// Sᵀ = K Qᵀ (64 x 32 per warpgroup, K = 64): A = the band from shared
// memory, K-major B; 4 k16 steps, the first from zero.
// CHECK:           nvvm.wgmma.fence.aligned
// CHECK:           nvvm.wgmma.mma_async {{.*}} <m = 64, n = 32, k = 16>, D[<f32>, <zero>], A[<bf16>, <one>, <row>], B[<bf16>, <one>, <col>]
// CHECK-COUNT-3:   nvvm.wgmma.mma_async {{.*}} <m = 64, n = 32, k = 16>, D[<f32>, <one>], A[<bf16>, <one>, <row>], B[<bf16>, <one>, <col>]
// CHECK:           nvvm.wgmma.commit.group.sync.aligned
// dV += Pᵀ dout right after it (no second fence): P from registers (K = 32:
// two k16 steps), dout row-major.
// CHECK-NOT:       nvvm.wgmma.fence.aligned
// CHECK:           llvm.inline_asm has_side_effects asm_dialect = att "{\0A.reg .pred p;\0Asetp.ne.b32 p, 1, 0;\0Awgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {{.*}} p, 1, 1, 1;\0A}"
// CHECK:           wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16
// CHECK:           nvvm.wgmma.commit.group.sync.aligned
// One wait for both, their registers fenced.
// CHECK:           nvvm.wgmma.wait.group.sync.aligned 0
// CHECK-NEXT:      llvm.inline_asm has_side_effects asm_dialect = att "", "=f,
// CHECK-NOT:       nvvm.mma.sync
// CHECK-NOT:       nvvm.ldmatrix
// CHECK-NOT:       flexattn.
// CHECK:           gpu.terminator
// CHECK-NEXT:    }{{$}}
func.func @backward_chunk(%q: memref<1x2x300x64xbf16>, %k: memref<1x2x300x64xbf16>,
                          %b: index, %h: index, %q0: index, %kv0: index, %p: vector<16xbf16>,
                          %acc: vector<32xf32>, %i: i32, %out: memref<48xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c128 = arith.constant 128 : index
  %c0_i32 = arith.constant 0 : i32
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c128, %sy = %c1, %sz = %c1) {
    %kr = flexattn.ring.alloc consumers(128) : !flexattn.ring<1 x 64x64xbf16>
    %qr = flexattn.ring.alloc consumers(128) : !flexattn.ring<2 x 32x64xbf16>
    flexattn.ring.acquire %kr[%c0_i32] : !flexattn.ring<1 x 64x64xbf16>
    flexattn.ring.copy %k[%b, %h, %kv0] into %kr[%c0_i32] : memref<1x2x300x64xbf16>, !flexattn.ring<1 x 64x64xbf16>
    flexattn.ring.acquire %qr[%i] : !flexattn.ring<2 x 32x64xbf16>
    flexattn.ring.copy %q[%b, %h, %q0] into %qr[%i] : memref<1x2x300x64xbf16>, !flexattn.ring<2 x 32x64xbf16>
    flexattn.ring.wait %qr[%i] in_flight(0) : !flexattn.ring<2 x 32x64xbf16>
    %ks = flexattn.ring.slot %kr[%c0_i32] : !flexattn.ring<1 x 64x64xbf16>
    %qt = flexattn.ring.slot %qr[%i] : !flexattn.ring<2 x 32x64xbf16>
    %s0 = flexattn.mma %ks[%c0], %qt {transpose_b} : !flexattn.smem_tile<64x64xbf16>, !flexattn.smem_tile<32x64xbf16> -> vector<16xf32>
    %d0 = flexattn.mma %p, %qt, %acc : vector<16xbf16>, !flexattn.smem_tile<32x64xbf16>, vector<32xf32> -> vector<32xf32>
    %s, %d = flexattn.mma.wait pending(0) %s0, %d0 : vector<16xf32>, vector<32xf32>
    flexattn.ring.release %qr[%i] : !flexattn.ring<2 x 32x64xbf16>
    vector.store %s, %out[%c0] : memref<48xf32>, vector<16xf32>
    vector.store %d, %out[%c1] : memref<48xf32>, vector<32xf32>
    gpu.terminator
  } {flexattn.wgmma}
  return
}

// -----

// wgmma takes 16-bit tiles only (f32 tiles are tf32 mma.sync, sm_80 code).
func.func @f32_tiles(%p: vector<32xf32>, %acc: vector<32xf32>, %out: memref<32xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c128 = arith.constant 128 : index
  %c0_i32 = arith.constant 0 : i32
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c128, %sy = %c1, %sz = %c1) {
    %vr = flexattn.ring.alloc consumers(128) : !flexattn.ring<1 x 64x64xf32>
    %vt = flexattn.ring.slot %vr[%c0_i32] : !flexattn.ring<1 x 64x64xf32>
    // expected-error @below {{wgmma takes bf16 or f16 tiles here, got 'f32'}}
    %o = flexattn.mma %p, %vt, %acc : vector<32xf32>, !flexattn.smem_tile<64x64xf32>, vector<32xf32> -> vector<32xf32>
    vector.store %o, %out[%c0] : memref<32xf32>, vector<32xf32>
    gpu.terminator
  } {flexattn.wgmma}
  return
}

// -----

// A warp of wgmma owns 16 rows: a fragment of two m16 tiles (the sm_80
// forward's 32 rows per warp) is refused.
func.func @two_tiles(%acc: vector<64xf32>, %out: memref<64xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c128 = arith.constant 128 : index
  %c0_i32 = arith.constant 0 : i32
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c128, %sy = %c1, %sz = %c1) {
    %qr = flexattn.ring.alloc consumers(128) : !flexattn.ring<1 x 128x64xbf16>
    %kr = flexattn.ring.alloc consumers(128) : !flexattn.ring<1 x 64x64xbf16>
    %qs = flexattn.ring.slot %qr[%c0_i32] : !flexattn.ring<1 x 128x64xbf16>
    %kt = flexattn.ring.slot %kr[%c0_i32] : !flexattn.ring<1 x 64x64xbf16>
    // expected-error @below {{wgmma gives each warp 16 rows (one m16 tile): 32 f32 per thread for N = 64, got 64}}
    %s = flexattn.mma %qs[%c0], %kt {transpose_b} : !flexattn.smem_tile<128x64xbf16>, !flexattn.smem_tile<64x64xbf16> -> vector<64xf32>
    vector.store %s, %out[%c0] : memref<64xf32>, vector<64xf32>
    gpu.terminator
  } {flexattn.wgmma}
  return
}

// -----

// The backward's dQ = dX K (flexattn-atomic-dq): a group's dX fragment
// stored transposed into its tile (4 stmatrix .x4 .trans: 4 words a thread
// each, then the async-proxy fence: wgmma reads it), and a shared A times
// a row-major B,
// rows 64.. of K's second column panel (1 x 128 x 128 + 64 x 128 = 24576
// bytes into K's slot): imm-trans-b (B[<row>]), 4 k16 steps.
// CHECK-LABEL: func.func @dq_product(
// CHECK-DAG:      arith.constant 32768 : i32
// CHECK-COUNT-4: nvvm.stmatrix %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} {eltType = #nvvm.ld_st_matrix_elt_type<b16>, layout = #nvvm.mma_layout<col>, shape = #nvvm.ld_st_matrix_shape<m = 8, n = 8>}
// CHECK-NOT:      nvvm.stmatrix
// CHECK-NOT:      llvm.store
// CHECK:          nvvm.fence.proxy {kind = #nvvm.proxy_kind<async.shared>, space = #nvvm.shared_space<cta>}
// CHECK:          nvvm.wgmma.fence.aligned
// CHECK:          nvvm.wgmma.mma_async {{.*}} <m = 64, n = 64, k = 16>, D[<f32>, <zero>], A[<bf16>, <one>, <row>], B[<bf16>, <one>, <row>]
// CHECK-COUNT-3:  nvvm.wgmma.mma_async {{.*}} <m = 64, n = 64, k = 16>, D[<f32>, <one>], A[<bf16>, <one>, <row>], B[<bf16>, <one>, <row>]
// CHECK:          nvvm.wgmma.commit.group.sync.aligned
func.func @dq_product(%dx: vector<32xbf16>, %out: memref<32xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c64 = arith.constant 64 : index
  %c128 = arith.constant 128 : index
  %c0_i32 = arith.constant 0 : i32
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c128, %sy = %c1, %sz = %c1) {
    %xr = flexattn.ring.alloc consumers(128) : !flexattn.ring<1 x 64x64xbf16>
    %kr = flexattn.ring.alloc consumers(128) : !flexattn.ring<1 x 128x128xbf16>
    %xs = flexattn.ring.slot %xr[%c0_i32] : !flexattn.ring<1 x 64x64xbf16>
    %ks = flexattn.ring.slot %kr[%c0_i32] : !flexattn.ring<1 x 128x128xbf16>
    flexattn.frag.store %dx, %xs {transpose} : vector<32xbf16>, !flexattn.smem_tile<64x64xbf16>
    %kb = flexattn.smem_tile.panel %ks[%c64, %c1] : !flexattn.smem_tile<128x128xbf16> to !flexattn.smem_tile<64x64xbf16>
    %s = flexattn.mma %xs[%c0], %kb : !flexattn.smem_tile<64x64xbf16>, !flexattn.smem_tile<64x64xbf16> -> vector<32xf32>
    %w = flexattn.mma.wait pending(0) %s : vector<32xf32>
    vector.store %w, %out[%c0] : memref<32xf32>, vector<32xf32>
    gpu.terminator
  } {flexattn.wgmma}
  return
}

// -----

// Without the mark: the same MMA is sm_80's mma.sync.
// CHECK-LABEL: func.func @unmarked(
// CHECK-NOT:     nvvm.wgmma
// CHECK-NOT:     nvvm.fence.proxy
// CHECK:         nvvm.mma.sync
func.func @unmarked(%out: memref<16xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c128 = arith.constant 128 : index
  %c0_i32 = arith.constant 0 : i32
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c128, %sy = %c1, %sz = %c1) {
    %kr = flexattn.ring.alloc consumers(128) : !flexattn.ring<1 x 64x64xbf16>
    %qr = flexattn.ring.alloc consumers(128) : !flexattn.ring<1 x 32x64xbf16>
    %ks = flexattn.ring.slot %kr[%c0_i32] : !flexattn.ring<1 x 64x64xbf16>
    %qt = flexattn.ring.slot %qr[%c0_i32] : !flexattn.ring<1 x 32x64xbf16>
    %s = flexattn.mma %ks[%c0], %qt {transpose_b} : !flexattn.smem_tile<64x64xbf16>, !flexattn.smem_tile<32x64xbf16> -> vector<16xf32>
    vector.store %s, %out[%c0] : memref<16xf32>, vector<16xf32>
    gpu.terminator
  }
  return
}

// -----

// A register A with b_row (the backward's second half of a chunk): B's rows
// from 32 (32 x 128 = 4096 bytes into the slot), one descriptor per k16
// step (K = 32 from A's 16 elements: 2 steps, 16 rows = 2048 bytes apart),
// LBO still the slot's panel (64 rows: 8192 bytes, bits 16-29 = 512).
// CHECK-LABEL: func.func @b_row(
// CHECK-DAG:     %[[R32:.*]] = arith.constant 4096 : i32
// CHECK-DAG:     %[[R48:.*]] = arith.constant 6144 : i32
// CHECK-DAG:     arith.constant 4611686293338849280 : i64
// CHECK:         arith.addi %{{.*}}, %[[R32]] : i32
// CHECK:         wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16
// CHECK:         arith.addi %{{.*}}, %[[R48]] : i32
// CHECK:         wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16
// CHECK-NOT:     wgmma.mma_async
// CHECK:         nvvm.wgmma.commit.group.sync.aligned
func.func @b_row(%p: vector<16xbf16>, %acc: vector<32xf32>, %out: memref<32xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c32 = arith.constant 32 : index
  %c128 = arith.constant 128 : index
  %c0_i32 = arith.constant 0 : i32
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c128, %sy = %c1, %sz = %c1) {
    %dr = flexattn.ring.alloc consumers(128) : !flexattn.ring<1 x 64x64xbf16>
    %ds = flexattn.ring.slot %dr[%c0_i32] : !flexattn.ring<1 x 64x64xbf16>
    %o = flexattn.mma %p, %ds[%c32], %acc : vector<16xbf16>, !flexattn.smem_tile<64x64xbf16>, vector<32xf32> -> vector<32xf32>
    %w = flexattn.mma.wait pending(0) %o : vector<32xf32>
    vector.store %w, %out[%c0] : memref<32xf32>, vector<32xf32>
    gpu.terminator
  } {flexattn.wgmma}
  return
}
