// RUN: flexattn-opt %s -split-input-file -verify-diagnostics \
// RUN:   --pass-pipeline='builtin.module(flexattn-tile{tile-q=128 tile-kv=128}, flexattn-block-sparsity, flexattn-map-to-gpu)' \
// RUN:   | FileCheck %s
// RUN: flexattn-opt %s -split-input-file -verify-diagnostics \
// RUN:   --pass-pipeline='builtin.module(flexattn-tile{tile-q=128 tile-kv=128}, flexattn-block-sparsity, flexattn-map-to-gpu{stages=3})' \
// RUN:   | FileCheck %s --check-prefix=STAGES3
// RUN: flexattn-opt %s -split-input-file -verify-diagnostics \
// RUN:   --pass-pipeline='builtin.module(flexattn-tile{tile-q=128 tile-kv=128}, flexattn-block-sparsity, flexattn-map-to-gpu)' \
// RUN:   | FileCheck %s --check-prefix=NOALLOC --implicit-check-not=memref.alloc
// RUN: flexattn-opt %s -split-input-file -verify-diagnostics \
// RUN:   --pass-pipeline='builtin.module(flexattn-tile{tile-q=128 tile-kv=128}, flexattn-block-sparsity, flexattn-map-to-gpu{pipeline=0 pingpong=0})' \
// RUN:   | FileCheck %s --check-prefix=SERIAL --implicit-check-not=bar.sync
// RUN: flexattn-opt %s -split-input-file -verify-diagnostics \
// RUN:   --pass-pipeline='builtin.module(flexattn-tile{tile-q=128 tile-kv=128}, flexattn-block-sparsity, flexattn-map-to-gpu{persistent=4})' \
// RUN:   | FileCheck %s --check-prefix=PERSISTENT

// persistent=4: 4 CTAs loop over the 6 tiles (t = blockIdx.x, + 4, ...); the
// consumers release Q after the last P.V so the next tile's Q loads early.
// PERSISTENT-LABEL: func.func @causal_alibi(
// PERSISTENT-DAG:   %[[FOUR:.*]] = arith.constant 4 : index
// PERSISTENT:       gpu.launch_func @flexattn_kernels::@causal_alibi_kernel blocks in (%[[FOUR]],
// PERSISTENT:       gpu.func @causal_alibi_kernel
// Producer and consumers each loop over the CTA's tiles.
// PERSISTENT:       %[[FIRST:.*]] = gpu.block_id  x
// PERSISTENT:       scf.for %{{.*}} = %[[FIRST]] to %c6{{.*}} step %c4
// PERSISTENT:       %[[FIRST2:.*]] = gpu.block_id  x
// PERSISTENT:       scf.for %{{.*}} = %[[FIRST2]] to %c6{{.*}} step %c4
// PERSISTENT:         mbarrier.try_wait.parity
// PERSISTENT:         p, 1, 1, 1;
// PERSISTENT:         mbarrier.arrive.shared::cta.b64
// PERSISTENT:         llvm.store

// In order (pipeline=0): S = QK, wait, softmax, O = alpha O, then P.V, wait.
// SERIAL-LABEL: gpu.func @causal_alibi_kernel
// SERIAL:         scf.for
// SERIAL:           wgmma.fence.sync.aligned
// SERIAL-COUNT-8:   p, 1, 1, 0, 0;
// SERIAL:           wgmma.wait_group.sync.aligned 0
// SERIAL:           flexattn.apply_mods {{.*}} attributes {masked} score_mod
// SERIAL:           ex2.approx.ftz.f32
// SERIAL:           wgmma.fence.sync.aligned
// SERIAL-COUNT-8:   p, 1, 1, 1;
// SERIAL:           wgmma.wait_group.sync.aligned 0

// No buffer holds scores, let alone an M x N one: they live in registers, and
// Q/K/V are staged in shared memory by TMA.
// NOALLOC: gpu.func @causal_alibi_kernel
// NOALLOC: gpu.func @full_d64_kernel

// Causal attention with a block mask and an ALiBi score_mod, M = N = 300
// (3 Q tiles, tails), D = 128, bf16.

// The host function gains the CUtensorMaps of q, k and v as arguments.
// CHECK-LABEL: func.func @causal_alibi(
// CHECK-SAME:    %[[TMQ:[a-z0-9]+]]: !llvm.ptr {flexattn.box = array<i64: 64, 128, 1, 1>, flexattn.tensor_arg = 0 : i64, flexattn.tensor_map = "q"}
// CHECK-SAME:    {{.*}}flexattn.tensor_arg = 1 : i64, flexattn.tensor_map = "k"
// CHECK-SAME:    {{.*}}flexattn.tensor_arg = 2 : i64, flexattn.tensor_map = "v"
// The Q-tile loop became a launch of ceil(300/128) x Hq x B = 6 CTAs of 384 threads.
// CHECK-NOT:   scf.parallel
// D=128, 2 stages: Q 32 KiB + 2 x (K 32 KiB + V 32 KiB) + 10 barriers + 1 KiB alignment.
// CHECK-DAG:   %[[SMEM:.*]] = arith.constant 164944 : i32
// CHECK-DAG:   %[[THREADS:.*]] = arith.constant 384 : index
// CHECK-DAG:   %[[CTAS:.*]] = arith.constant 6 : index
// CHECK:       gpu.launch_func @flexattn_kernels::@causal_alibi_kernel blocks in (%[[CTAS]], %{{.*}}, %{{.*}}) threads in (%[[THREADS]], %{{.*}}, %{{.*}}) dynamic_shared_memory_size %[[SMEM]] args(%[[TMQ]] : !llvm.ptr

// CHECK:       gpu.module @flexattn_kernels
// CHECK:         llvm.mlir.global external @__flexattn_smem() {addr_space = 3 : i32, alignment = 16 : i64} : !llvm.array<0 x i8>
// CHECK:         gpu.func @causal_alibi_kernel(%{{.*}}: !llvm.ptr, %{{.*}}: !llvm.ptr, %{{.*}}: !llvm.ptr, {{.*}}memref<1x2x300x128xbf16>)
// CHECK-SAME:      kernel attributes {nvvm.maxntid = array<i32: 384, 1, 1>, nvvm.minctasm = 1 : i32}
// One thread initialises the mbarriers: Q full (1) and empty (256), then per
// stage K/V full (1) and empty (256).
// CHECK:           mbarrier.init.shared::cta.b64
// CHECK:           fence.mbarrier_init
// CHECK:           gpu.barrier
// Producer warpgroup: fewer registers, tensor-map fences, then for the CTA's
// tile (one per CTA here: straight-line code, no tile loop): wait for the
// consumers to free Q (at once for a first tile), TMA Q.
// CHECK:           setmaxnreg.dec.sync.aligned.u32 40
// CHECK:           fence.proxy.tensormap::generic.acquire.sys
// CHECK-NOT:       iter_args(%{{.*}} = %c0_i32{{.*}}) -> (i32, i32)
// CHECK:           mbarrier.try_wait.parity
// CHECK:           mbarrier.arrive.expect_tx
// CHECK:           cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes
// The producer walks the same block-sparse loops: kv_num_blocks bounds them.
// CHECK:           scf.for
// CHECK:             mbarrier.try_wait.parity
// CHECK:             cp.async.bulk.tensor.4d
// Consumers: more registers; consumer warpgroup 1 lets warpgroup 0 issue first.
// CHECK:           setmaxnreg.inc.sync.aligned.u32 232
// CHECK:           bar.arrive 1, 256;
// Software-pipelined KV loop: wait for K_j (and V_{j-1}), take the ping-pong
// turn, issue S_j = Q.K_j^T (8 k16 steps for D = 128) together with the
// previous tile's O += P.V (register-A wgmma, V transposed by the descriptor).
// CHECK:           scf.for
// CHECK:             mbarrier.try_wait.parity
// CHECK:             bar.sync $0, 256;
// CHECK:             wgmma.fence.sync.aligned
// CHECK-COUNT-8:     wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {{.*}} p, 1, 1, 0, 0;
// CHECK:             wgmma.commit_group.sync.aligned
// CHECK-COUNT-8:     wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {{.*}} p, 1, 1, 1;
// CHECK:             wgmma.commit_group.sync.aligned
// CHECK:             bar.arrive $0, 256;
// S is ready while P.V still runs: the softmax overlaps it.
// CHECK:             wgmma.wait_group.sync.aligned 1
// Partial blocks apply both mods on each register fragment element.
// CHECK:             flexattn.apply_mods {{.*}} attributes {masked} score_mod
// Online softmax in registers: quad shuffles and ex2.
// CHECK:             gpu.shuffle  xor
// CHECK:             ex2.approx.ftz.f32
// CHECK:             wgmma.wait_group.sync.aligned 0
// Full blocks: score_mod only.
// CHECK:           scf.for
// CHECK-NOT:         attributes {masked}
// CHECK:             flexattn.apply_mods
// CHECK-NOT:         mask_mod
// The last tile's deferred P.V, then the epilogue.
// CHECK-COUNT-8:   wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {{.*}} p, 1, 1, 1;
// CHECK:           llvm.store
// No buffer of scores in memory at all: scores live in registers.
// CHECK-NOT:       memref.alloc

// STAGES3-LABEL: func.func @causal_alibi(
// D=128, 3 stages: 32 KiB + 3 x 64 KiB + 14 barriers + 1 KiB.
// STAGES3: arith.constant 230512 : i32
func.func @causal_alibi(%q: memref<1x2x300x128xbf16>, %k: memref<1x2x300x128xbf16>, %v: memref<1x2x300x128xbf16>,
                        %o: memref<1x2x300x128xbf16>, %kvn: memref<1x1x3xi32>, %kvi: memref<1x1x3x3xi32>,
                        %fkvn: memref<1x1x3xi32>, %fkvi: memref<1x1x3x3xi32>, %sl: memref<2xf32>) {
  flexattn.attention ins(%q, %k, %v : memref<1x2x300x128xbf16>, memref<1x2x300x128xbf16>, memref<1x2x300x128xbf16>)
      outs(%o : memref<1x2x300x128xbf16>)
      block_mask(%kvn, %kvi : memref<1x1x3xi32>, memref<1x1x3x3xi32>)
      full_blocks(%fkvn, %fkvi : memref<1x1x3xi32>, memref<1x1x3x3xi32>)
      captures(%sl : memref<2xf32>) attributes {scale = 0.125 : f32, block_size = array<i64: 128, 128>}
    score_mod {
    ^bb0(%s: f32, %b: i32, %h: i32, %qi: i32, %kj: i32, %c: memref<2xf32>):
      %hi = arith.index_cast %h : i32 to index
      %slope = memref.load %c[%hi] : memref<2xf32>
      %d = arith.subi %kj, %qi : i32
      %df = arith.sitofp %d : i32 to f32
      %bias = arith.mulf %slope, %df : f32
      %r = arith.addf %s, %bias : f32
      flexattn.yield %r : f32
    } mask_mod {
    ^bb0(%b: i32, %h: i32, %qi: i32, %kj: i32, %c: memref<2xf32>):
      %keep = arith.cmpi sge, %qi, %kj : i32
      flexattn.yield %keep : i1
    }
  return
}

// -----

// D = 64, no mods, no block mask: one panel per tile, folded scale, m64n64 for P.V.
// CHECK-LABEL: func.func @full_d64(
// CHECK:       gpu.func @full_d64_kernel
// CHECK-COUNT-4: wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 {{.*}} p, 1, 1, 0, 0;
// CHECK-NOT:   flexattn.apply_mods
// scale * log2(e) = 0.125 * 1.4427 in one multiply.
// CHECK:       arith.constant 0.180336878 : f32
// CHECK-COUNT-8: wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 {{.*}} p, 1, 1, 1;
func.func @full_d64(%q: memref<2x4x256x64xf16>, %k: memref<2x4x256x64xf16>, %v: memref<2x4x256x64xf16>,
                    %o: memref<2x4x256x64xf16>) {
  flexattn.attention ins(%q, %k, %v : memref<2x4x256x64xf16>, memref<2x4x256x64xf16>, memref<2x4x256x64xf16>)
      outs(%o : memref<2x4x256x64xf16>) attributes {scale = 0.125 : f32}
  return
}

// -----

func.func @f32_inputs(%q: memref<1x1x128x64xf32>, %o: memref<1x1x128x64xf32>) {
  // expected-error @+1 {{'flexattn.tile_step' op the GPU kernel takes bf16 or f16 q/k/v, got 'f32'}}
  flexattn.attention ins(%q, %q, %q : memref<1x1x128x64xf32>, memref<1x1x128x64xf32>, memref<1x1x128x64xf32>)
      outs(%o : memref<1x1x128x64xf32>) attributes {scale = 0.125 : f32}
  return
}

// -----

func.func @head_dim_96(%q: memref<1x1x128x96xbf16>, %o: memref<1x1x128x96xbf16>) {
  // expected-error @+1 {{'flexattn.tile_step' op the GPU kernel supports head dims 64 and 128, got D = 96, Dv = 96}}
  flexattn.attention ins(%q, %q, %q : memref<1x1x128x96xbf16>, memref<1x1x128x96xbf16>, memref<1x1x128x96xbf16>)
      outs(%o : memref<1x1x128x96xbf16>) attributes {scale = 0.125 : f32}
  return
}

// -----

func.func @dynamic(%q: memref<1x1x?x64xbf16>, %o: memref<1x1x?x64xbf16>) {
  // expected-error @+1 {{'flexattn.tile_step' op flexattn-map-to-gpu needs static q/k/v shapes}}
  flexattn.attention ins(%q, %q, %q : memref<1x1x?x64xbf16>, memref<1x1x?x64xbf16>, memref<1x1x?x64xbf16>)
      outs(%o : memref<1x1x?x64xbf16>) attributes {scale = 0.125 : f32}
  return
}
