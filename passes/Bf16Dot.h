//===- Bf16Dot.h - bf16 tile products as AVX512-BF16 dots -------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// Helpers of flexattn-vectorize-tiles (Bf16Dot.cpp): Q.Kᵀ and P.V on bf16
// operands as contractions over VNNI-packed operands, lowered to
// x86vector.avx512.dot (vdpbf16ps: 16 f32 lanes += 16 pairs of bf16
// products).
//
//===----------------------------------------------------------------------===//

#ifndef FLEXATTN_PASSES_BF16DOT_H
#define FLEXATTN_PASSES_BF16DOT_H

#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/IR/PatternMatch.h"

namespace mlir::flexattn {

/// The f32 lanes of one bf16 dot product (512-bit vdpbf16ps).
constexpr int64_t kDotLanes = 16;

/// Rewrites the contraction `op` (i, j, k) -> (i, j), `transposedRhs` for
/// Q.Kᵀ (rhs read as (j, k)) or not for P.V (rhs (k, j)), into a
/// `linalg.contract` (i, j, k2, p) over bf16 operands in VNNI layout: pairs
/// p of the reduction dim k = 2 k2 + p adjacent, packed into stack buffers
/// [M, K/2, 2] and [K/2, N, 2] by vector loops (an f32 lhs, P, rounded to
/// bf16). Returns null, changing nothing, when the operand types or the tile
/// shapes do not fit (bf16 rhs; 16-key blocks and 32-column rows).
linalg::LinalgOp toBf16DotContraction(RewriterBase &rewriter,
                                      linalg::GenericOp op, bool transposedRhs);

/// Lowers the vector.contract ops that toBf16DotContraction's contraction
/// vectorises to: unrolled to one 16-lane accumulator row each, then
/// upstream's x86vector packed-dot patterns.
void populateBf16DotLoweringPatterns(RewritePatternSet &patterns);

} // namespace mlir::flexattn

#endif // FLEXATTN_PASSES_BF16DOT_H
