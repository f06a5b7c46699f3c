//===- InlineMods.cpp - flexattn-inline-mods --------------------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// Replaces each flexattn.apply_mods with its score_mod body and, for a masked
// score, its mask_mod body and a select against -inf (each apply_mods_vjp
// likewise, with its score_mod_vjp body); then lowers the
// flexattn.check_index ops the bodies brought along (torch-style wrap, bounds
// check, report store), in the forward and the backward alike.
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

LogicalResult mlir::flexattn::lowerCheckIndex(RewriterBase &rewriter,
                                             CheckIndexOp op) {
  Location loc = op.getLoc();
  OpBuilder::InsertionGuard guard(rewriter);
  rewriter.setInsertionPoint(op);
  Type i64 = rewriter.getI64Type();
  auto i64Const = [&](int64_t v) {
    return arith::ConstantOp::create(rewriter, loc, rewriter.getI64IntegerAttr(v));
  };
  Value index = op.getIndex();
  if (index.getType() != i64)
    index = arith::ExtSIOp::create(rewriter, loc, i64, index);
  int64_t size = op.getSizeAttr().getInt();
  std::optional<ArrayRef<int64_t>> bounds = op.getBounds();
  bool nonNegative = bounds && (*bounds)[0] >= 0;
  bool inRange = bounds && (*bounds)[0] >= -size && (*bounds)[1] < size;

  // pos = index < 0 ? index + size : index          (t[-1] is t[size - 1])
  Value pos = index;
  if (!nonNegative) {
    Value negative = arith::CmpIOp::create(rewriter, loc, arith::CmpIPredicate::slt,
                                           index, i64Const(0));
    Value wrapped = arith::AddIOp::create(rewriter, loc, index, i64Const(size));
    pos = arith::SelectOp::create(rewriter, loc, negative, wrapped, index);
  }
  if (!inRange) {
    // Out of [-size, size) iff pos is outside [0, size) (unsigned compare).
    Value ok = arith::CmpIOp::create(rewriter, loc, arith::CmpIPredicate::ult,
                                     pos, i64Const(size));
    if (Value report = op.getReport()) {
      // if (!ok) report[site] = [1, index]
      Value bad = arith::XOrIOp::create(
          rewriter, loc, ok,
          arith::ConstantOp::create(rewriter, loc, rewriter.getBoolAttr(true)));
      auto ifOp = scf::IfOp::create(rewriter, loc, bad, /*withElseRegion=*/false);
      OpBuilder::InsertionGuard inner(rewriter);
      rewriter.setInsertionPointToStart(&ifOp.getThenRegion().front());
      Value site = indexConst(rewriter, loc, op.getSiteAttr().getInt());
      memref::StoreOp::create(rewriter, loc, i64Const(1), report,
                              ValueRange{site, indexConst(rewriter, loc, 0)});
      memref::StoreOp::create(rewriter, loc, index, report,
                              ValueRange{site, indexConst(rewriter, loc, 1)});
    }
    // Out of bounds, read element 0: the load stays inside the buffer.
    pos = arith::SelectOp::create(rewriter, loc, ok, pos, i64Const(0));
  }
  rewriter.replaceOp(op, arith::IndexCastOp::create(rewriter, loc,
                                                    rewriter.getIndexType(), pos));
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
    // The checks now in code (not those of mod regions still to be inlined).
    SmallVector<CheckIndexOp> checks;
    getOperation()->walk([&](CheckIndexOp op) {
      if (!op->getParentOfType<ModRegionsOpInterface>())
        checks.push_back(op);
    });
    for (CheckIndexOp op : checks)
      if (failed(lowerCheckIndex(rewriter, op)))
        return signalPassFailure();
  }
};
} // namespace
