// RUN: flexattn-opt %s --pass-pipeline='builtin.module(flexattn-differentiate-mods, flexattn-tile{tile-q=32 tile-kv=16}, flexattn-block-sparsity, flexattn-decompose-backward, flexattn-inline-mods, canonicalize, cse, flexattn-distribute-tiles, flexattn-lower-to-loops, canonicalize, cse)' | FileCheck %s --check-prefix=MEM
// RUN: flexattn-opt %s --pass-pipeline='builtin.module(flexattn-differentiate-mods, flexattn-tile{tile-q=32 tile-kv=16}, flexattn-block-sparsity, flexattn-decompose-backward, flexattn-inline-mods, canonicalize, cse, flexattn-distribute-tiles, flexattn-lower-to-loops, canonicalize, cse, convert-scf-to-cf, expand-strided-metadata, lower-affine, finalize-memref-to-llvm, convert-math-to-llvm, convert-arith-to-llvm, convert-index-to-llvm, convert-func-to-llvm, convert-cf-to-llvm, reconcile-unrealized-casts)' | FileCheck %s

// The whole CPU backward pipeline, as flexattn_mlir/backward.py runs it, from
// flexattn.attention_backward (GQA 4/2, M = 100 != N = 80, a 64 x 32 block
// mask with full blocks, a learnable ALiBi slope table, a causal mask_mod,
// dlse) down to loops and to the llvm dialect.

// Memory: the only buffers are [B, Hq, M] delta (heap) and tiles; nothing
// of M x N (100 x 80) scores, at any size. Threads: the capture gradient is
// zeroed and then accumulated by a sequential nest, so the whole body runs
// on the first thread to claim a ticket of the work counter.
// MEM-LABEL: func.func @alibi_causal(
// MEM-SAME:      %{{[^:]+}}: memref<1xi64> {flexattn.work_counter})
// MEM:         memref.atomic_rmw addi
// MEM-NEXT:    arith.index_cast
// MEM-NEXT:    arith.cmpi eq
// MEM-NEXT:    scf.if
// MEM-NOT:     memref<{{[0-9x]*}}100x80
// MEM-NOT:     memref<{{[0-9x]*}}80x100
// MEM:         memref.alloc() : memref<1x4x100xf32>
// MEM-NOT:     memref.alloc(
// MEM-NOT:     memref<{{[0-9x]*}}100x80
// MEM-NOT:     memref<{{[0-9x]*}}80x100
// MEM:         memref.dealloc
// MEM-NOT:     memref.alloc(
// MEM:         return

// CHECK-LABEL: llvm.func @alibi_causal(
// CHECK-NOT:     {{[^.a-z_](flexattn|linalg|scf|memref|arith|math|affine|cf|func)\.}}
// CHECK-NOT:     unrealized_conversion_cast
// CHECK:         llvm.intr.exp2({{.*}}) : (f32) -> f32
// CHECK-NOT:     {{[^.a-z_](flexattn|linalg|scf|memref|arith|math|affine|cf|func)\.}}
// CHECK:         llvm.return
func.func @alibi_causal(%q: memref<1x4x100x16xf32>, %k: memref<1x2x80x16xf32>, %v: memref<1x2x80x8xf32>,
                        %o: memref<1x4x100x8xf32>, %do: memref<1x4x100x8xf32>, %lse: memref<1x4x100xf32>,
                        %dlse: memref<1x4x100xf32>,
                        %dq: memref<1x4x100x16xf32>, %dk: memref<1x2x80x16xf32>, %dv: memref<1x2x80x8xf32>,
                        %kn: memref<1x1x2xi32>, %ki: memref<1x1x2x3xi32>, %fkn: memref<1x1x2xi32>, %fki: memref<1x1x2x3xi32>,
                        %qn: memref<1x1x3xi32>, %qi: memref<1x1x3x2xi32>, %fqn: memref<1x1x3xi32>, %fqi: memref<1x1x3x2xi32>,
                        %slopes: memref<4xf32>, %dslopes: memref<4xf32>) attributes {llvm.emit_c_interface} {
  flexattn.attention_backward ins(%q, %k, %v : memref<1x4x100x16xf32>, memref<1x2x80x16xf32>, memref<1x2x80x8xf32>)
      out(%o : memref<1x4x100x8xf32>) dout(%do : memref<1x4x100x8xf32>) lse(%lse : memref<1x4x100xf32>)
      dlse(%dlse : memref<1x4x100xf32>)
      grads(%dq, %dk, %dv : memref<1x4x100x16xf32>, memref<1x2x80x16xf32>, memref<1x2x80x8xf32>)
      block_mask(%kn, %ki : memref<1x1x2xi32>, memref<1x1x2x3xi32>)
      full_blocks(%fkn, %fki : memref<1x1x2xi32>, memref<1x1x2x3xi32>)
      q_block_mask(%qn, %qi : memref<1x1x3xi32>, memref<1x1x3x2xi32>)
      full_q_blocks(%fqn, %fqi : memref<1x1x3xi32>, memref<1x1x3x2xi32>)
      captures(%slopes : memref<4xf32>) capture_grads(%dslopes : memref<4xf32>)
      attributes {scale = 0.25 : f32, block_size = array<i64: 64, 32>, grad_captures = array<i64: 0>}
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

// Without capture gradients the KV-tile loop (dk, dv) and the Q-tile loop
// (dq) are independent: every thread computes its own delta, then both loops
// share the work counter's tickets, the 2 x 4 KV tiles first ([0, 8)), then
// the 2 x 2 Q tiles ([8, 12)); each thread frees its delta.
// MEM-LABEL: func.func @plain(
// MEM-SAME:      %[[COUNTER:[^:]+]]: memref<1xi64> {flexattn.work_counter})
// MEM-DAG:       %[[C8:.+]] = arith.constant 8 : index
// MEM-DAG:       %[[C12:.+]] = arith.constant 12 : index
// MEM:           %[[DELTA:.+]] = memref.alloc() : memref<1x2x64xf32>
// MEM-NOT:       scf.if
// MEM:           memref.atomic_rmw addi %{{.+}}, %[[COUNTER]]
// MEM:           %[[LEFT:.+]] = scf.while (%[[T:.+]] = %{{.+}}) : (index) -> index {
// MEM-NEXT:        arith.cmpi ult, %[[T]], %[[C8]] : index
// MEM:           scf.while (%[[T2:.+]] = %[[LEFT]]) : (index) -> index {
// MEM-NEXT:        arith.cmpi ult, %[[T2]], %[[C12]] : index
// MEM:           memref.dealloc %[[DELTA]]
// MEM-NEXT:      return
// CHECK-LABEL: llvm.func @plain(
// CHECK:         llvm.atomicrmw add
func.func @plain(%q: memref<1x2x64x16xf32>, %k: memref<1x2x64x16xf32>, %v: memref<1x2x64x16xf32>,
                 %o: memref<1x2x64x16xf32>, %do: memref<1x2x64x16xf32>, %lse: memref<1x2x64xf32>,
                 %dq: memref<1x2x64x16xf32>, %dk: memref<1x2x64x16xf32>, %dv: memref<1x2x64x16xf32>)
    attributes {llvm.emit_c_interface} {
  flexattn.attention_backward ins(%q, %k, %v : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>)
      out(%o : memref<1x2x64x16xf32>) dout(%do : memref<1x2x64x16xf32>) lse(%lse : memref<1x2x64xf32>)
      grads(%dq, %dk, %dv : memref<1x2x64x16xf32>, memref<1x2x64x16xf32>, memref<1x2x64x16xf32>)
      attributes {scale = 0.25 : f32}
  return
}
