//===- SplitFullTiles.cpp - flexattn-split-full-tiles -----------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// Versions each flexattn.tile_step and flexattn.finalize on whether its tile
// lies wholly inside the sequence. The full-tile copy reads and writes
// through views of q/k/v/out/lse cut at the tile's end, so the tile extents
// the online-softmax decomposition computes, min(BM, end - q0), fold to the
// constants BM and BN: the tile's linalg ops get static shapes, which the
// CPU vectoriser needs. The other copy keeps the clipped, dynamic extents.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"
#include "passes/TileOpRewrites.h"

namespace mlir::flexattn {
#define GEN_PASS_DEF_FLEXATTNSPLITFULLTILES
#include "passes/Passes.h.inc"
} // namespace mlir::flexattn

using namespace mlir;
using namespace mlir::flexattn;

namespace {

/// `buf` viewed up to `end` along its sequence dim (2): the same strides and
/// offset, `end` rows. Inside the full-tile branch end <= the buffer's extent.
Value cutAt(OpBuilder &b, Location loc, Value buf, Value end) {
  auto type = cast<MemRefType>(buf.getType());
  SmallVector<OpFoldResult> offsets(type.getRank(), b.getIndexAttr(0));
  SmallVector<OpFoldResult> strides(type.getRank(), b.getIndexAttr(1));
  SmallVector<OpFoldResult> sizes = memref::getMixedSizes(b, loc, buf);
  sizes[2] = end;
  return memref::SubViewOp::create(b, loc, buf, offsets, sizes, strides);
}

/// The tile [start, start + size) of a sequence of `extent`: its end, and
/// whether it is inside the sequence (null when that holds statically:
/// `start` is a multiple of `size` below `extent`, and `size` divides it).
std::pair<Value, Value> tileEnd(OpBuilder &b, Location loc, Value start,
                                int64_t size, Value extent,
                                bool startIsTileMultiple) {
  Value end = arith::AddIOp::create(b, loc, start, indexConst(b, loc, size));
  auto staticExtent = getConstantIntValue(extent);
  if (startIsTileMultiple && staticExtent && *staticExtent % size == 0)
    return {end, Value()};
  Value inside =
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::sle, end, extent);
  return {end, inside};
}

/// if (cond) { full(); } else { clone of `op` }; with no condition, full()
/// replaces `op` outright.
void version(RewriterBase &rewriter, Operation *op, Value cond,
             function_ref<void(OpBuilder &)> full) {
  Location loc = op->getLoc();
  if (!cond) {
    full(rewriter);
    rewriter.eraseOp(op);
    return;
  }
  auto ifOp = scf::IfOp::create(rewriter, loc, cond, /*withElseRegion=*/true);
  OpBuilder::InsertionGuard guard(rewriter);
  rewriter.setInsertionPoint(ifOp.thenBlock()->getTerminator());
  full(rewriter);
  rewriter.moveOpBefore(op, ifOp.elseBlock()->getTerminator());
}

} // namespace

LogicalResult mlir::flexattn::splitFullTileStep(RewriterBase &rewriter,
                                                TileStepOp op) {
  Location loc = op.getLoc();
  OpBuilder::InsertionGuard guard(rewriter);
  rewriter.setInsertionPoint(op);
  int64_t bm = op.getTileSize()[0], bn = op.getTileSize()[1];
  // flexattn-tile makes q0 a multiple of BM; kv0 may come from a block list
  // and is always checked.
  auto [qEnd, qInside] = tileEnd(rewriter, loc, op.getQ0(), bm,
                                 memrefDim(rewriter, loc, op.getQ(), 2), true);
  auto [kvEnd, kvInside] = tileEnd(rewriter, loc, op.getKv0(), bn,
                                   memrefDim(rewriter, loc, op.getK(), 2), false);
  Value cond = qInside ? arith::AndIOp::create(rewriter, loc, qInside, kvInside)
                       : kvInside;
  version(rewriter, op, cond, [&](OpBuilder &b) {
    Value q = cutAt(b, loc, op.getQ(), qEnd);
    Value k = cutAt(b, loc, op.getK(), kvEnd);
    Value v = cutAt(b, loc, op.getV(), kvEnd);
    auto full = cast<TileStepOp>(b.clone(*op));
    full.getQMutable().set(q);
    full.getKMutable().set(k);
    full.getVMutable().set(v);
  });
  return success();
}

LogicalResult mlir::flexattn::splitFullFinalize(RewriterBase &rewriter,
                                                FinalizeOp op) {
  Location loc = op.getLoc();
  OpBuilder::InsertionGuard guard(rewriter);
  rewriter.setInsertionPoint(op);
  int64_t bm = cast<MemRefType>(op.getAcc().getType()).getDimSize(0);
  if (ShapedType::isDynamic(bm))
    return op.emitOpError() << "needs a static number of accumulator rows";
  auto [qEnd, qInside] = tileEnd(rewriter, loc, op.getQ0(), bm,
                                 memrefDim(rewriter, loc, op.getOut(), 2), true);
  version(rewriter, op, qInside, [&](OpBuilder &b) {
    Value out = cutAt(b, loc, op.getOut(), qEnd);
    auto cut = [&](Value stats) { return stats ? cutAt(b, loc, stats, qEnd) : Value(); };
    Value lse = cut(op.getLse()), maxScores = cut(op.getMaxScores());
    auto full = cast<FinalizeOp>(b.clone(*op));
    full.getOutMutable().set(out);
    if (lse)
      full.getLseMutable().assign(lse);
    if (maxScores)
      full.getMaxScoresMutable().assign(maxScores);
  });
  return success();
}

namespace {
struct FlexAttnSplitFullTilesPass
    : public flexattn::impl::FlexAttnSplitFullTilesBase<
          FlexAttnSplitFullTilesPass> {
  void runOnOperation() override {
    if (failed(rewriteTileOps(getOperation(), splitFullTileStep, splitFullFinalize)))
      signalPassFailure();
  }
};
} // namespace
