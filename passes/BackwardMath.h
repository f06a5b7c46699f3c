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
#include "passes/TileBuilder.h"

#include "mlir/Interfaces/LoopLikeInterface.h"

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

/// Whether the step's capture gradients carry a trailing dim of per-thread
/// partial sums (the deterministic mode of flexattn-lower-backward-mma).
inline bool hasPartialCaptureGrads(BackwardStepOp op) {
  for (int64_t c : op.getGradCaptures())
    if (!op.getCaptureGrads().empty() &&
        cast<MemRefType>(captureGradOf(op, c).getType()).getRank() !=
            cast<MemRefType>(op.getCaptures()[c].getType()).getRank())
      return true;
  return false;
}

/// Where a score's capture gradients go: called with apply_mods_vjp's
/// results (dy = 1) and dS; the default is accumulateCaptureGrads.
using CaptureGradSink = llvm::function_ref<void(ValueRange mods, Value dS)>;

/// capture_grads[c][idx] += dS * dscore/dload for every differentiated load
/// (`mods` from apply_mods_vjp with dy = 1): an f32 atomic add, skipped
/// where dS = 0 (masked scores never touch memory).
inline void accumulateCaptureGrads(OpBuilder &b, Location loc,
                                   BackwardStepOp op, ValueRange mods,
                                   Value dS) {
  if (op.getCaptureGrads().empty() || !op.getVjpLoads())
    return;
  Value zero = arith::ConstantOp::create(b, loc, b.getF32FloatAttr(0.0f));
  Value some =
      arith::CmpFOp::create(b, loc, arith::CmpFPredicate::ONE, dS, zero);
  auto branch = scf::IfOp::create(b, loc, some, /*withElseRegion=*/false);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(branch.thenBlock());
  unsigned pos = 2;
  ArrayRef<int64_t> loads = *op.getVjpLoads();
  for (int64_t c : loads) {
    auto rank = cast<MemRefType>(op.getCaptures()[c].getType()).getRank();
    Value g = arith::MulFOp::create(b, loc, dS, mods[pos]);
    memref::AtomicRMWOp::create(b, loc, arith::AtomicRMWKind::addf, g,
                                captureGradOf(op, c), mods.slice(pos + 1, rank));
    pos += 1 + rank;
  }
}

/// The probability and score gradient of one score.
struct ScoreGrad {
  Value p, dx;
};

/// FlashAttention-2's per-score backward at tile position (i, j) of `op`
/// (relative to q0 / kv0), from the raw product x = q.k, dp = dout.v and the
/// query row's lse and delta:
///   S = mods(scale x)   P = exp2(log2(e) S - base(log2(e) lse))
///   dS = P (dp - delta)  capture_grads += dS dS/dload (f32 atomics, or
///                        `sink`)
///   dX = scale dS dS/dX, 0 where P = 0
/// `live` (optional, i1) zeroes P where the score lies outside M x N.
inline ScoreGrad scoreGradient(OpBuilder &b, Location loc, BackwardStepOp op,
                               Value x, Value dp, Value lse, Value delta,
                               Value i, Value j, Value live = Value(),
                               CaptureGradSink sink = nullptr) {
  float scale = op.getScale().convertToFloat();
  Value one = arith::ConstantOp::create(b, loc, b.getF32FloatAttr(1.0f));
  SmallVector<Value> mods = applyVjp(b, loc, op, scaled(b, loc, x, scale), one, i, j);
  Value log2e = arith::ConstantOp::create(
      b, loc, b.getF32FloatAttr(static_cast<float>(kLog2e)));
  Value base = tile::finiteBase(b, loc, arith::MulFOp::create(b, loc, lse, log2e));
  Value p = math::Exp2Op::create(
      b, loc, arith::SubFOp::create(
                  b, loc, arith::MulFOp::create(b, loc, mods[0], log2e), base));
  if (live)
    p = arith::SelectOp::create(
        b, loc, live, p, arith::ConstantOp::create(b, loc, b.getF32FloatAttr(0.0f)));
  Value dS = arith::MulFOp::create(b, loc, p, arith::SubFOp::create(b, loc, dp, delta));
  if (sink)
    sink(mods, dS);
  else
    accumulateCaptureGrads(b, loc, op, mods, dS);
  return {p, dScore(b, loc, p, dS, mods[1], scale)};
}

/// The tensor-core kernel's form of scoreGradient (flexattn-lower-backward-
/// mma), from the query row's `base` = base(log2(e) lse), computed once per
/// row by the caller:
///   no score_mod   P = exp2(fma(x, scale log2(e), -base)), masked to 0 by
///                  the mask_mod (a select on the exponent); dX = dS
///   a score_mod    S = mods(scale x), P = exp2(fma(S, log2(e), -base));
///                  dX = dS dS/dX, 0 where P = 0
/// dX leaves out the scale: the caller multiplies the dK and dQ sums by it
/// once (flexattn-lower-backward-mma's stores), not every score. In two
/// steps, P (from x alone) and then dX (dp, delta), so that a caller can
/// compute P while dp's MMA still runs.
struct UnscaledProb {
  Value p;
  SmallVector<Value> mods; // the mods' value and derivatives (a score_mod)
};
inline UnscaledProb unscaledProb(OpBuilder &b, Location loc, BackwardStepOp op, Value x,
                                 Value base, Value i, Value j, Value live) {
  float scale = op.getScale().convertToFloat();
  auto f32 = [&](double v) {
    return arith::ConstantOp::create(b, loc, b.getF32FloatAttr(static_cast<float>(v)))
        .getResult();
  };
  Value one = f32(1.0);
  Value nbase = arith::NegFOp::create(b, loc, base);
  UnscaledProb out;
  if (!op.getScoreModVjp().empty()) {
    out.mods = applyVjp(b, loc, op, scaled(b, loc, x, scale), one, i, j);
    out.p = math::Exp2Op::create(b, loc,
                                 math::FmaOp::create(b, loc, out.mods[0], f32(kLog2e), nbase));
  } else {
    // A mask_mod alone selects on the exponent (-inf where masked).
    Value arg = math::FmaOp::create(b, loc, x, f32(scale * kLog2e), nbase);
    out.p = math::Exp2Op::create(b, loc, applyVjp(b, loc, op, arg, one, i, j)[0]);
  }
  if (live)
    out.p = arith::SelectOp::create(b, loc, live, out.p, f32(0.0));
  return out;
}
inline Value unscaledDx(OpBuilder &b, Location loc, BackwardStepOp op,
                        const UnscaledProb &prob, Value dp, Value delta,
                        CaptureGradSink sink = nullptr) {
  Value dS =
      arith::MulFOp::create(b, loc, prob.p, arith::SubFOp::create(b, loc, dp, delta));
  if (prob.mods.empty())
    return dS;
  if (sink)
    sink(prob.mods, dS);
  else
    accumulateCaptureGrads(b, loc, op, prob.mods, dS);
  return dScore(b, loc, prob.p, dS, prob.mods[1], 1.0f);
}
inline ScoreGrad unscaledScoreGradient(OpBuilder &b, Location loc, BackwardStepOp op,
                                       Value x, Value dp, Value base, Value delta,
                                       Value i, Value j, Value live,
                                       CaptureGradSink sink = nullptr) {
  UnscaledProb prob = unscaledProb(b, loc, op, x, base, i, j, live);
  return {prob.p, unscaledDx(b, loc, op, prob, dp, delta, sink)};
}
/// Inlines the stack scopes of a backward CTA body (from
/// flexattn-map-backward-to-grid, one per tile): their buffers live in the
/// thread's frame. Fails (naming `pass`) on a scope inside a loop or with
/// results.
inline LogicalResult inlineStackScopes(RewriterBase &rewriter, Operation *cta,
                                       StringRef pass) {
  SmallVector<memref::AllocaScopeOp> scopes;
  cta->walk([&](memref::AllocaScopeOp scope) { scopes.push_back(scope); });
  for (memref::AllocaScopeOp scope : scopes) {
    if (!scope->getResults().empty() ||
        scope->getParentOfType<LoopLikeOpInterface>())
      return scope.emitOpError()
             << pass << ": a stack scope inside a loop or with results";
    Block *body = &scope.getBodyRegion().front();
    rewriter.eraseOp(body->getTerminator());
    rewriter.inlineBlockBefore(body, scope);
    rewriter.eraseOp(scope);
  }
  return success();
}

} // namespace mlir::flexattn::backward

#endif // FLEXATTN_PASSES_BACKWARDMATH_H
