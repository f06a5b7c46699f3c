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
  Value index = op.getIndex();
  int64_t size = op.getSizeAttr().getInt();
  // In the index's own width when it is narrower than 64 bits and holds
  // `size` (an i32 index: 16 vector lanes on the CPU where i64 has 8), or in
  // its source's when it is a sign extension (torch's int64 arithmetic on
  // i32 indices): index + size is only taken for a negative index, where it
  // cannot overflow. The report stores the index sign-extended to i64.
  if (auto ext = index.getDefiningOp<arith::ExtSIOp>())
    index = ext.getIn();
  auto type = dyn_cast<IntegerType>(index.getType());
  if (!type || type.getWidth() >= 64 || type.getWidth() < 2 ||
      !llvm::isIntN(type.getWidth(), size)) {
    type = rewriter.getI64Type();
    if (index.getType() != i64)
      index = arith::ExtSIOp::create(rewriter, loc, i64, index);
  }
  auto intConst = [&](int64_t v) {
    return arith::ConstantOp::create(rewriter, loc, rewriter.getIntegerAttr(type, v));
  };
  std::optional<ArrayRef<int64_t>> bounds = op.getBounds();
  bool nonNegative = bounds && (*bounds)[0] >= 0;
  bool inRange = bounds && (*bounds)[0] >= -size && (*bounds)[1] < size;

  // pos = index < 0 ? index + size : index          (t[-1] is t[size - 1])
  Value pos = index;
  if (!nonNegative) {
    Value negative = arith::CmpIOp::create(rewriter, loc, arith::CmpIPredicate::slt,
                                           index, intConst(0));
    Value wrapped = arith::AddIOp::create(rewriter, loc, index, intConst(size));
    pos = arith::SelectOp::create(rewriter, loc, negative, wrapped, index);
  }
  if (!inRange) {
    // Out of [-size, size) iff pos is outside [0, size) (unsigned compare).
    Value ok = arith::CmpIOp::create(rewriter, loc, arith::CmpIPredicate::ult,
                                     pos, intConst(size));
    if (Value report = op.getReport()) {
      // if (!ok) report[site] = [1, index]
      Value bad = arith::XOrIOp::create(
          rewriter, loc, ok,
          arith::ConstantOp::create(rewriter, loc, rewriter.getBoolAttr(true)));
      Value reported = index.getType() == i64
                           ? index
                           : arith::ExtSIOp::create(rewriter, loc, i64, index);
      auto ifOp = scf::IfOp::create(rewriter, loc, bad, /*withElseRegion=*/false);
      OpBuilder::InsertionGuard inner(rewriter);
      rewriter.setInsertionPointToStart(&ifOp.getThenRegion().front());
      Value site = indexConst(rewriter, loc, op.getSiteAttr().getInt());
      memref::StoreOp::create(
          rewriter, loc,
          arith::ConstantOp::create(rewriter, loc, rewriter.getI64IntegerAttr(1)),
          report, ValueRange{site, indexConst(rewriter, loc, 0)});
      memref::StoreOp::create(rewriter, loc, reported, report,
                              ValueRange{site, indexConst(rewriter, loc, 1)});
    }
    // Out of bounds, read element 0: the load stays inside the buffer.
    pos = arith::SelectOp::create(rewriter, loc, ok, pos, intConst(0));
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
