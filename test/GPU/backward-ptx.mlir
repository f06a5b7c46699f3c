// RUN: flexattn-opt %s --pass-pipeline='builtin.module(flexattn-differentiate-mods, flexattn-tile{tile-q=128 tile-kv=128}, flexattn-block-sparsity, flexattn-map-backward-to-grid, flexattn-lower-backward-rows, flexattn-inline-mods, convert-linalg-to-loops, canonicalize, cse)' \
// RUN:   | FileCheck %s --check-prefix=MEM
// RUN: flexattn-opt %s --pass-pipeline='builtin.module(flexattn-differentiate-mods, flexattn-tile{tile-q=128 tile-kv=128}, flexattn-block-sparsity, flexattn-map-backward-to-grid, flexattn-lower-backward-rows, flexattn-inline-mods, convert-linalg-to-loops, canonicalize, cse, gpu-launch-sink-index-computations, gpu-kernel-outlining, canonicalize, cse, flexattn-lower-to-nvvm{chip=sm_90a features=+ptx83}, gpu-module-to-binary{format=isa})' \
// RUN:   | FileCheck %s
// RUN: flexattn-opt %s --pass-pipeline='builtin.module(flexattn-differentiate-mods, flexattn-tile{tile-q=128 tile-kv=128}, flexattn-block-sparsity, flexattn-map-backward-to-grid, flexattn-lower-backward-mma, flexattn-inline-mods, convert-linalg-to-loops, canonicalize, cse)' \
// RUN:   | FileCheck %s --check-prefix=MEM
// RUN: flexattn-opt %s --pass-pipeline='builtin.module(flexattn-differentiate-mods, flexattn-tile{tile-q=128 tile-kv=128}, flexattn-block-sparsity, flexattn-map-backward-to-grid, flexattn-lower-backward-mma, flexattn-inline-mods, convert-linalg-to-loops, canonicalize, cse, flexattn-lower-to-ampere{max-shared-memory=232448}, gpu-launch-sink-index-computations, gpu-kernel-outlining, canonicalize, cse, flexattn-lower-to-nvvm{chip=sm_90a features=+ptx83}, gpu-module-to-binary{format=isa})' \
// RUN:   | FileCheck %s --check-prefix=MMA

// The GPU backward from flexattn.attention_backward down to PTX, made
// without a GPU: ALiBi with a learnable slope table, causal, a 128 x 128
// block mask with full blocks, GQA 4/2, bf16, D = 64, M = N = 300, delta
// precomputed.

// No buffer of M x N (300 x 300) scores, and no tile of them either: the
// only buffers are the threads' f32 rows.
// MEM-LABEL: func.func @alibi_causal(
// MEM-NOT:     memref<{{[0-9x]*}}300x300
// MEM-NOT:     memref<128x128xf32>
// MEM-NOT:     memref.alloc(
// MEM:         gpu.launch
// MEM-NOT:     memref<{{[0-9x]*}}300x300
// MEM-NOT:     memref<128x128xf32>
// MEM-NOT:     memref<128x64xf32>
// MEM:         return

// The tensor-core kernel (flexattn-lower-backward-mma): the same 18 CTAs,
// two groups of 4 warps per 128-row tile; cp.async copies, ldmatrix,
// mma.sync.
// MMA: gpu.launch_func @alibi_causal_kernel::@alibi_causal_kernel blocks in (%{{.+}}, %{{.+}}, %{{.+}}) threads in (%{{.+}}, %{{.+}}, %{{.+}})
// MMA: gpu.binary @alibi_causal_kernel
// MMA-SAME: .maxntid 256, 1, 1
// MMA-SAME: cp.async.cg.shared.global
// MMA-SAME: ldmatrix.sync.aligned.m8n8.x4.shared.b16
// MMA-SAME: mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32
// MMA-SAME: ex2.approx.ftz.f32
// MMA-SAME: ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16

// One kernel: 2 x 3 dk/dv CTAs then 4 x 3 dq CTAs of 128 threads; the slope
// gradient by f32 reductions to global memory; the scores by ex2.
// CHECK: func.func @alibi_causal({{.*}}) attributes {flexattn.zero_init = array<i64: 19>}
// CHECK-DAG: %[[C18:.+]] = arith.constant 18 : index
// CHECK-DAG: %[[C128:.+]] = arith.constant 128 : index
// CHECK: gpu.launch_func @alibi_causal_kernel::@alibi_causal_kernel blocks in (%[[C18]], %{{.+}}, %{{.+}}) threads in (%[[C128]], %{{.+}}, %{{.+}})
// CHECK: gpu.binary @alibi_causal_kernel
// CHECK-SAME: .target sm_90a
// CHECK-SAME: .visible .entry alibi_causal_kernel(
// CHECK-SAME: .maxntid 128, 1, 1
// CHECK-SAME: ex2.approx.ftz.f32
// CHECK-SAME: atom.global.add.f32
func.func @alibi_causal(%q: memref<1x4x300x64xbf16>, %k: memref<1x2x300x64xbf16>, %v: memref<1x2x300x64xbf16>,
                        %o: memref<1x4x300x64xbf16>, %do: memref<1x4x300x64xbf16>, %lse: memref<1x4x300xf32>,
                        %delta: memref<1x4x300xf32>,
                        %dq: memref<1x4x300x64xbf16>, %dk: memref<1x2x300x64xbf16>, %dv: memref<1x2x300x64xbf16>,
                        %kn: memref<1x1x3xi32>, %ki: memref<1x1x3x3xi32>, %fkn: memref<1x1x3xi32>, %fki: memref<1x1x3x3xi32>,
                        %qn: memref<1x1x3xi32>, %qi: memref<1x1x3x3xi32>, %fqn: memref<1x1x3xi32>, %fqi: memref<1x1x3x3xi32>,
                        %slopes: memref<4xf32>, %dslopes: memref<4xf32>) {
  flexattn.attention_backward ins(%q, %k, %v : memref<1x4x300x64xbf16>, memref<1x2x300x64xbf16>, memref<1x2x300x64xbf16>)
      out(%o : memref<1x4x300x64xbf16>) dout(%do : memref<1x4x300x64xbf16>) lse(%lse : memref<1x4x300xf32>)
      delta(%delta : memref<1x4x300xf32>)
      grads(%dq, %dk, %dv : memref<1x4x300x64xbf16>, memref<1x2x300x64xbf16>, memref<1x2x300x64xbf16>)
      block_mask(%kn, %ki : memref<1x1x3xi32>, memref<1x1x3x3xi32>)
      full_blocks(%fkn, %fki : memref<1x1x3xi32>, memref<1x1x3x3xi32>)
      q_block_mask(%qn, %qi : memref<1x1x3xi32>, memref<1x1x3x3xi32>)
      full_q_blocks(%fqn, %fqi : memref<1x1x3xi32>, memref<1x1x3x3xi32>)
      captures(%slopes : memref<4xf32>) capture_grads(%dslopes : memref<4xf32>)
      attributes {scale = 0.125 : f32, block_size = array<i64: 128, 128>, grad_captures = array<i64: 0>}
    score_mod {
    ^bb0(%s: f32, %b: i32, %h: i32, %qi_: i32, %kvi: i32, %sl: memref<4xf32>):
      %hi = arith.index_cast %h : i32 to index
      %slope = memref.load %sl[%hi] : memref<4xf32>
      %d = arith.subi %kvi, %qi_ : i32
      %df = arith.sitofp %d : i32 to f32
      %bias = arith.mulf %slope, %df : f32
      %r = arith.addf %s, %bias : f32
      flexattn.yield %r : f32
    } mask_mod {
    ^bb0(%b: i32, %h: i32, %qi_: i32, %kvi: i32, %sl: memref<4xf32>):
      %keep = arith.cmpi sge, %qi_, %kvi : i32
      flexattn.yield %keep : i1
    }
  return
}
