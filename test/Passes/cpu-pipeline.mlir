// RUN: flexattn-opt %s --pass-pipeline='builtin.module(flexattn-tile, flexattn-block-sparsity, flexattn-split-full-tiles, flexattn-fuse-online-softmax, flexattn-inline-mods, canonicalize, cse, flexattn-vectorize-tiles, canonicalize, cse, flexattn-distribute-tiles, flexattn-lower-to-loops, canonicalize, cse, arith-expand, convert-vector-to-scf{full-unroll=true}, convert-scf-to-cf, expand-strided-metadata, lower-affine, convert-vector-to-llvm{vector-transpose-lowering=shuffle16x16 enable-x86vector=true}, finalize-memref-to-llvm, convert-math-to-llvm, convert-arith-to-llvm, convert-index-to-llvm, convert-func-to-llvm, convert-cf-to-llvm, convert-ub-to-llvm, reconcile-unrealized-casts)' | FileCheck %s

// The whole CPU pipeline, as flexattn_mlir/driver.py runs it, from
// flexattn.attention (GQA, block mask with full blocks, a captured ALiBi
// slope table, causal mask_mod, lse) down to the llvm dialect. M = N = 100
// with 32 x 32 tiles: every tile step has a full-tile (vectorised) and an
// edge-tile (scalar) version.
//
// canonicalize after flexattn-lower-to-loops is required, not cosmetic: it
// inlines the memref.alloca_scope ops (their parents, scf.parallel and scf.for,
// are allocation scopes already). Left in place, convert-scf-to-cf turns the
// loops inside them into several blocks, which memref.alloca_scope's
// single-block region rejects ("expects region #0 to have 0 or 1 blocks").

// CHECK-LABEL: llvm.func @causal_alibi(
// CHECK-NOT:     unrealized_conversion_cast
// Each thread claims Q tiles from the work counter.
// CHECK:         llvm.atomicrmw add
// Partial blocks (mask_mod applied).
// Full 32 x 32 tiles: vector FMAs (Q.Kᵀ), row max (a vmaxps tree), the exp2
// polynomial (roundeven + FMAs), row sum (reassociated: a tree), vector FMAs
// (P.V, Dv = 16)...
// CHECK-NOT:     {{[^.a-z_](flexattn|linalg|scf|memref|arith|math|affine|cf|func|vector|ub)\.}}
// CHECK:         llvm.intr.fmuladd({{.*}}) : (vector<32xf32>, vector<32xf32>, vector<32xf32>)
// CHECK-NOT:     {{[^.a-z_](flexattn|linalg|scf|memref|arith|math|affine|cf|func|vector|ub)\.}}
// CHECK:         llvm.intr.vector.reduce.fmax({{.*}}) {fastmathFlags = #llvm.fastmath<nnan>} : (vector<32xf32>) -> f32
// CHECK-NOT:     {{[^.a-z_](flexattn|linalg|scf|memref|arith|math|affine|cf|func|vector|ub)\.}}
// CHECK:         llvm.intr.roundeven({{.*}}) : (vector<32xf32>) -> vector<32xf32>
// CHECK-NOT:     {{[^.a-z_](flexattn|linalg|scf|memref|arith|math|affine|cf|func|vector|ub)\.}}
// CHECK:         "llvm.intr.vector.reduce.fadd"({{.*}}) <{fastmathFlags = #llvm.fastmath<reassoc>}>
// CHECK-NOT:     {{[^.a-z_](flexattn|linalg|scf|memref|arith|math|affine|cf|func|vector|ub)\.}}
// CHECK:         llvm.intr.fmuladd({{.*}}) : (vector<16xf32>, vector<16xf32>, vector<16xf32>)
// ...and the edge tiles past row 96: scalar loops.
// CHECK-NOT:     {{[^.a-z_](flexattn|linalg|scf|memref|arith|math|affine|cf|func|vector|ub)\.}}
// CHECK:         llvm.intr.exp2({{.*}}) : (f32) -> f32
// Full blocks.
// Full 32 x 32 tiles: vector FMAs (Q.Kᵀ), row max (a vmaxps tree), the exp2
// polynomial (roundeven + FMAs), row sum (reassociated: a tree), vector FMAs
// (P.V, Dv = 16)...
// CHECK-NOT:     {{[^.a-z_](flexattn|linalg|scf|memref|arith|math|affine|cf|func|vector|ub)\.}}
// CHECK:         llvm.intr.fmuladd({{.*}}) : (vector<32xf32>, vector<32xf32>, vector<32xf32>)
// CHECK-NOT:     {{[^.a-z_](flexattn|linalg|scf|memref|arith|math|affine|cf|func|vector|ub)\.}}
// CHECK:         llvm.intr.vector.reduce.fmax({{.*}}) {fastmathFlags = #llvm.fastmath<nnan>} : (vector<32xf32>) -> f32
// CHECK-NOT:     {{[^.a-z_](flexattn|linalg|scf|memref|arith|math|affine|cf|func|vector|ub)\.}}
// CHECK:         llvm.intr.roundeven({{.*}}) : (vector<32xf32>) -> vector<32xf32>
// CHECK-NOT:     {{[^.a-z_](flexattn|linalg|scf|memref|arith|math|affine|cf|func|vector|ub)\.}}
// CHECK:         "llvm.intr.vector.reduce.fadd"({{.*}}) <{fastmathFlags = #llvm.fastmath<reassoc>}>
// CHECK-NOT:     {{[^.a-z_](flexattn|linalg|scf|memref|arith|math|affine|cf|func|vector|ub)\.}}
// CHECK:         llvm.intr.fmuladd({{.*}}) : (vector<16xf32>, vector<16xf32>, vector<16xf32>)
// ...and the edge tiles past row 96: scalar loops.
// CHECK-NOT:     {{[^.a-z_](flexattn|linalg|scf|memref|arith|math|affine|cf|func|vector|ub)\.}}
// CHECK:         llvm.intr.exp2({{.*}}) : (f32) -> f32
// out = acc / l; lse = ln(2) * (m + log2(l)) (log2 a polynomial too).
// CHECK-NOT:     {{[^.a-z_](flexattn|linalg|scf|memref|arith|math|affine|cf|func|vector|ub)\.}}
// CHECK:         llvm.fdiv
// CHECK-NOT:     {{[^.a-z_](flexattn|linalg|scf|memref|arith|math|affine|cf|func|vector|ub)\.}}
// CHECK-NOT:     unrealized_conversion_cast
// CHECK:         llvm.return
// CHECK-NEXT:  }
func.func @causal_alibi(%q: memref<1x4x100x16xf32>, %k: memref<1x2x100x16xf32>, %v: memref<1x2x100x16xf32>,
                        %o: memref<1x4x100x16xf32>, %lse: memref<1x4x100xf32>,
                        %kvn: memref<1x1x4xi32>, %kvi: memref<1x1x4x4xi32>,
                        %fkvn: memref<1x1x4xi32>, %fkvi: memref<1x1x4x4xi32>,
                        %slopes: memref<4xf32>) {
  flexattn.attention ins(%q, %k, %v : memref<1x4x100x16xf32>, memref<1x2x100x16xf32>, memref<1x2x100x16xf32>)
      outs(%o : memref<1x4x100x16xf32>) lse(%lse : memref<1x4x100xf32>)
      block_mask(%kvn, %kvi : memref<1x1x4xi32>, memref<1x1x4x4xi32>)
      full_blocks(%fkvn, %fkvi : memref<1x1x4xi32>, memref<1x1x4x4xi32>)
      captures(%slopes : memref<4xf32>)
      attributes {scale = 0.25 : f32, block_size = array<i64: 32, 32>}
    score_mod {
    ^bb0(%s: f32, %b: i32, %h: i32, %qi: i32, %ki: i32, %sl: memref<4xf32>):
      %hi = arith.index_cast %h : i32 to index
      %slope = memref.load %sl[%hi] : memref<4xf32>
      %d = arith.subi %ki, %qi : i32
      %df = arith.sitofp %d : i32 to f32
      %bias = arith.mulf %slope, %df : f32
      %r = arith.addf %s, %bias : f32
      flexattn.yield %r : f32
    } mask_mod {
    ^bb0(%b: i32, %h: i32, %qi: i32, %ki: i32, %sl: memref<4xf32>):
      %keep = arith.cmpi sge, %qi, %ki : i32
      flexattn.yield %keep : i1
    }
  return
}
