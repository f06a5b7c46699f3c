//===- BackwardMath.h - the backward's per-score formulas -------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// The scalar formulas of one backward score, shared by the decompositions of
// flexattn.backward_step (flexattn-decompose-backward on tiles for the CPU,
// flexattn-lower-backward-rows on a thread's row for a GPU): the mods with
// their derivatives (flexattn.apply_mods_vjp), the scale, and the score
// gradient with its zero where P = 0.
//
//===----------------------------------------------------------------------===//

#ifndef FLEXATTN_PASSES_BACKWARDMATH_H
#define FLEXATTN_PASSES_BACKWARDMATH_H

#include "passes/Passes.h"

namespace mlir::flexattn::backward {

/// Evaluates the step's mods on one score at tile position (i, j) (rows
/// relative to q0, columns to kv0): returns the modified score, dy * d/dscore
/// and the per-load results of score_mod_vjp (see flexattn.apply_mods_vjp).
inline SmallVector<Value> applyVjp(OpBuilder &b, Location loc,
                                   BackwardStepOp op, Value score, Value dy,
                                   Value i, Value j) {
  bool masked = op.getMasked() && !op.getMaskMod().empty();
  if (op.getScoreModVjp().empty() && !masked)
    return {score, dy};
  SmallVector<Type> types = {b.getF32Type(), b.getF32Type()};
  for (int64_t c : op.getVjpLoads() ? *op.getVjpLoads() : ArrayRef<int64_t>()) {
    types.push_back(b.getF32Type());
    types.append(cast<MemRefType>(op.getCaptures()[c].getType()).getRank(),
                 b.getIndexType());
  }
  Value qi = arith::AddIOp::create(b, loc, op.getQ0(), i);
  Value kj = arith::AddIOp::create(b, loc, op.getKv0(), j);
  auto mods = ApplyModsVjpOp::create(
      b, loc, types, score, dy, op.getB(), op.getH(), qi, kj,
      op.getCaptures(), masked ? b.getUnitAttr() : UnitAttr(),
      op.getVjpLoadsAttr());
  cloneRegion(op.getScoreModVjp(), mods.getScoreModVjp());
  if (masked)
    cloneRegion(op.getMaskMod(), mods.getMaskMod());
  return SmallVector<Value>(mods.getResults());
}

/// x * scale, where scale is f32.
inline Value scaled(OpBuilder &b, Location loc, Value x, float scale) {
  return arith::MulFOp::create(
      b, loc, x, arith::ConstantOp::create(b, loc, b.getF32FloatAttr(scale)));
}

/// scale * dS * ds/dx, and 0 where P = 0: a masked score, or a row without
/// visible keys, contributes nothing (never NaN from an infinite derivative).
inline Value dScore(OpBuilder &b, Location loc, Value p, Value ds, Value dsdx,
                    float scale) {
  Value zero = arith::ConstantOp::create(b, loc, b.getF32FloatAttr(0.0f));
  Value none =
      arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ, p, zero);
  Value dx = scaled(b, loc, arith::MulFOp::create(b, loc, ds, dsdx), scale);
  return arith::SelectOp::create(b, loc, none, zero, dx);
}

/// The gradient buffer of capture `capture` (an entry of grad_captures).
inline Value captureGradOf(BackwardStepOp op, int64_t capture) {
  ArrayRef<int64_t> gradCaptures = op.getGradCaptures();
  return op.getCaptureGrads()[llvm::find(gradCaptures, capture) -
                              gradCaptures.begin()];
}

} // namespace mlir::flexattn::backward

#endif // FLEXATTN_PASSES_BACKWARDMATH_H
