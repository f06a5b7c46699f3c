//===- InlineMods.cpp - flexattn-inline-mods --------------------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// Replaces each flexattn.apply_mods with its score_mod body and, for a masked
// score, its mask_mod body and a select against -inf.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include <limits>

namespace mlir::flexattn {
#define GEN_PASS_DEF_FLEXATTNINLINEMODS
#include "passes/Passes.h.inc"
} // namespace mlir::flexattn

using namespace mlir;
using namespace mlir::flexattn;

LogicalResult mlir::flexattn::inlineMods(RewriterBase &rewriter,
                                         ApplyModsOp op) {
  Location loc = op.getLoc();
  OpBuilder::InsertionGuard guard(rewriter);
  rewriter.setInsertionPoint(op);
  SmallVector<Value> indices = {op.getB(), op.getH(), op.getQIdx(),
                                op.getKvIdx()};
  Value score = op.getScore();
  if (op.hasScoreMod())
    score = inlineModRegion(rewriter, loc, op.getScoreMod(), score, indices,
                            op.getCaptures());
  if (op.getMasked() && op.hasMaskMod()) {
    Value keep = inlineModRegion(rewriter, loc, op.getMaskMod(), std::nullopt,
                                 indices, op.getCaptures());
    Value ninf = arith::ConstantOp::create(
        rewriter, loc,
        rewriter.getF32FloatAttr(-std::numeric_limits<float>::infinity()));
    score = arith::SelectOp::create(rewriter, loc, keep, score, ninf);
  }
  rewriter.replaceOp(op, score);
  return success();
}

LogicalResult mlir::flexattn::inlineModsVjp(RewriterBase &rewriter,
                                            ApplyModsVjpOp op) {
  Location loc = op.getLoc();
  OpBuilder::InsertionGuard guard(rewriter);
  rewriter.setInsertionPoint(op);
  SmallVector<Value> indices = {op.getB(), op.getH(), op.getQIdx(),
                                op.getKvIdx()};
  // The identity mod: the score itself and dy.
  SmallVector<Value> results = {op.getScore(), op.getDy()};
  if (!op.getScoreModVjp().empty()) {
    SmallVector<Value> captures(op.getCaptures());
    captures.push_back(op.getDy()); // the region's trailing dy
    results = inlineModRegionValues(rewriter, loc, op.getScoreModVjp(),
                                    op.getScore(), indices, captures);
  }
  if (op.getMasked() && !op.getMaskMod().empty()) {
    // Masked out: score -inf, every derivative 0 (the indices are kept).
    Value keep = inlineModRegion(rewriter, loc, op.getMaskMod(), std::nullopt,
                                 indices, op.getCaptures());
    auto constant = [&](float v) -> Value {
      return arith::ConstantOp::create(rewriter, loc, rewriter.getF32FloatAttr(v));
    };
    for (auto [i, r] : llvm::enumerate(results)) {
      if (!r.getType().isF32())
        continue;
      Value masked = constant(i == 0 ? -std::numeric_limits<float>::infinity() : 0.0f);
      r = arith::SelectOp::create(rewriter, loc, keep, r, masked);
    }
  }
  rewriter.replaceOp(op, results);
  return success();
}

namespace {
struct FlexAttnInlineModsPass
    : public flexattn::impl::FlexAttnInlineModsBase<FlexAttnInlineModsPass> {
  void runOnOperation() override {
    SmallVector<Operation *> ops;
    getOperation()->walk([&](Operation *op) {
      if (isa<ApplyModsOp, ApplyModsVjpOp>(op))
        ops.push_back(op);
    });
    IRRewriter rewriter(&getContext());
    for (Operation *op : ops) {
      LogicalResult r =
          isa<ApplyModsOp>(op)
              ? inlineMods(rewriter, cast<ApplyModsOp>(op))
              : inlineModsVjp(rewriter, cast<ApplyModsVjpOp>(op));
      if (failed(r))
        return signalPassFailure();
    }
  }
};
} // namespace
