//===- QuadTranspose.h - 16-byte stores of mma fragments --------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// An mma accumulator fragment gives a thread pairs of adjacent columns
// (2 q + 8 j, q = lane % 4) of a row, the quad's four lanes each row's 8
// columns of every j. Transposing each 4 j's 32-bit words (a 16-bit pair
// each) across the quad gives lane q the 8 adjacent columns of j = 4 g + q,
// one 16-byte store where four 4-byte ones were (a quarter of the store
// requests). Used by the epilogues of flexattn-lower-backward-mma (dK, dV,
// dQ) and flexattn-lower-fragments (out).
//
//===----------------------------------------------------------------------===//

#ifndef FLEXATTN_PASSES_QUADTRANSPOSE_H
#define FLEXATTN_PASSES_QUADTRANSPOSE_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"

namespace mlir::flexattn {

/// The 4 x 4 transpose of i32 words across a quad: lane q (whose first
/// fragment column `col` is 2 q, an index) passes w[0..3] and gets t[p] =
/// lane p's w[q]. Two rounds of xor shuffles (1, then 2), each lane sending
/// the two words its partner needs; every lane of the warp must run it.
inline SmallVector<Value, 4> quadTranspose(ImplicitLocOpBuilder &b, Value col,
                                           ArrayRef<Value> w) {
  auto bit = [&](int64_t colBit) { // q's bit 0 is col's bit 1, q's bit 1 col's 2
    Value m = arith::AndIOp::create(b, col, arith::ConstantIndexOp::create(b, colBit));
    return arith::CmpIOp::create(b, arith::CmpIPredicate::ne, m,
                                 arith::ConstantIndexOp::create(b, 0))
        .getResult();
  };
  auto sel = [&](Value c, Value x, Value y) {
    return arith::SelectOp::create(b, c, x, y).getResult();
  };
  auto swap = [&](Value v, int64_t offset) {
    return gpu::ShuffleOp::create(b, v, offset, 32, gpu::ShuffleMode::XOR).getShuffleResult();
  };
  // Round 1, within pairs of lanes: m = [A[e][o], A[e+1][o], A[e][2+o],
  // A[e+1][2+o]] (e = q & 2, o = q & 1; A[p][j] = lane p's w[j]).
  Value odd = bit(2);
  Value r0 = swap(sel(odd, w[0], w[1]), 1), r1 = swap(sel(odd, w[2], w[3]), 1);
  Value m[4] = {sel(odd, r0, w[0]), sel(odd, w[1], r0), sel(odd, r1, w[2]), sel(odd, w[3], r1)};
  // Round 2, between the pairs.
  Value hi = bit(4);
  Value s0 = swap(sel(hi, m[0], m[2]), 2), s1 = swap(sel(hi, m[1], m[3]), 2);
  return {sel(hi, s0, m[0]), sel(hi, s1, m[1]), sel(hi, m[2], s0), sel(hi, m[3], s1)};
}

} // namespace mlir::flexattn

#endif // FLEXATTN_PASSES_QUADTRANSPOSE_H
