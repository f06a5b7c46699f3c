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

namespace {
struct FlexAttnInlineModsPass
    : public flexattn::impl::FlexAttnInlineModsBase<FlexAttnInlineModsPass> {
  void runOnOperation() override {
    SmallVector<ApplyModsOp> ops;
    getOperation()->walk([&](ApplyModsOp op) { ops.push_back(op); });
    IRRewriter rewriter(&getContext());
    for (ApplyModsOp op : ops)
      if (failed(inlineMods(rewriter, op)))
        return signalPassFailure();
  }
};
} // namespace
