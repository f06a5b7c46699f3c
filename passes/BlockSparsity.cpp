//===- BlockSparsity.cpp - flexattn-block-sparsity --------------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// Lowers flexattn.kv_loop to the KV tiles a Q tile actually visits: all of
// them without a block mask; otherwise the partial blocks (mask_mod applied)
// and then the full blocks (mask_mod skipped) listed for its query block.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

namespace mlir::flexattn {
#define GEN_PASS_DEF_FLEXATTNBLOCKSPARSITY
#include "passes/Passes.h.inc"
} // namespace mlir::flexattn

using namespace mlir;
using namespace mlir::flexattn;

namespace {

/// The index into a broadcastable block-mask dim: 0 where the mask's dim is 1.
Value broadcastIndex(OpBuilder &b, Location loc, Value mask, int64_t dim,
                     Value idx) {
  auto type = cast<MemRefType>(mask.getType());
  if (!type.isDynamicDim(dim))
    return type.getDimSize(dim) == 1 ? indexConst(b, loc, 0) : idx;
  Value size = memref::DimOp::create(b, loc, mask, dim);
  Value isOne = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, size,
                                      indexConst(b, loc, 1));
  return arith::SelectOp::create(b, loc, isOne, indexConst(b, loc, 0), idx);
}

/// Emits one tile_step at KV offset `kv0`, mask_mod applied iff `masked`.
void emitStep(OpBuilder &b, Location loc, KvLoopOp loop, Value kv0,
              bool masked) {
  bool applyMask = masked && loop.hasMaskMod();
  auto step = TileStepOp::create(
      b, loc, loop.getQ(), loop.getK(), loop.getV(), loop.getAcc(),
      loop.getMax(), loop.getSum(), loop.getB(), loop.getH(), loop.getHkv(),
      loop.getQ0(), kv0, loop.getCaptures(), loop.getScaleAttr(),
      loop.getTileSizeAttr(), applyMask ? b.getUnitAttr() : UnitAttr());
  cloneModRegions(loop, step, /*withMask=*/applyMask);
}

/// for j in [0, min(num[b, h, qb], width)): tile_step at indices[b, h, qb, j].
void emitListedBlocks(OpBuilder &b, Location loc, KvLoopOp loop, Value num,
                      Value indices, Value qb, bool masked) {
  Value bi = broadcastIndex(b, loc, num, 0, loop.getB());
  Value hi = broadcastIndex(b, loc, num, 1, loop.getH());
  Value count = memref::LoadOp::create(b, loc, num, ValueRange{bi, hi, qb});
  count = arith::IndexCastOp::create(b, loc, b.getIndexType(), count);
  // Never read past the index array, whatever the counts say.
  Value width = memrefDim(b, loc, indices, 3);
  count = arith::MinSIOp::create(b, loc, count, width);
  count = arith::MaxSIOp::create(b, loc, count, indexConst(b, loc, 0));
  Value bn = indexConst(b, loc, loop.getTileSize()[1]);
  Value bj = broadcastIndex(b, loc, indices, 0, loop.getB());
  Value hj = broadcastIndex(b, loc, indices, 1, loop.getH());
  auto forOp = scf::ForOp::create(b, loc, indexConst(b, loc, 0), count,
                                  indexConst(b, loc, 1));
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(forOp.getBody());
  Value blk = memref::LoadOp::create(
      b, loc, indices, ValueRange{bj, hj, qb, forOp.getInductionVar()});
  blk = arith::IndexCastOp::create(b, loc, b.getIndexType(), blk);
  Value kv0 = arith::MulIOp::create(b, loc, blk, bn);
  emitStep(b, loc, loop, kv0, masked);
}

} // namespace

LogicalResult mlir::flexattn::lowerKvLoop(RewriterBase &rewriter,
                                          KvLoopOp loop) {
  Location loc = loop.getLoc();
  OpBuilder::InsertionGuard guard(rewriter);
  rewriter.setInsertionPoint(loop);
  int64_t bn = loop.getTileSize()[1];

  if (!loop.hasBlockMask()) {
    // Dense: every KV tile, mask_mod on each.
    Value seqKV = memrefDim(rewriter, loc, loop.getK(), 2);
    Value bnV = indexConst(rewriter, loc, bn);
    Value tiles = arith::CeilDivUIOp::create(rewriter, loc, seqKV, bnV);
    auto forOp = scf::ForOp::create(rewriter, loc, indexConst(rewriter, loc, 0),
                                    tiles, indexConst(rewriter, loc, 1));
    rewriter.setInsertionPointToStart(forOp.getBody());
    Value kv0 =
        arith::MulIOp::create(rewriter, loc, forOp.getInductionVar(), bnV);
    emitStep(rewriter, loc, loop, kv0, /*masked=*/true);
  } else {
    Value qb = arith::DivUIOp::create(
        rewriter, loc, loop.getQ0(),
        indexConst(rewriter, loc, (*loop.getBlockSize())[0]));
    emitListedBlocks(rewriter, loc, loop, loop.getKvNumBlocks(),
                     loop.getKvIndices(), qb, /*masked=*/true);
    if (loop.getFullKvNumBlocks())
      emitListedBlocks(rewriter, loc, loop, loop.getFullKvNumBlocks(),
                       loop.getFullKvIndices(), qb, /*masked=*/false);
  }
  rewriter.eraseOp(loop);
  return success();
}

namespace {
struct FlexAttnBlockSparsityPass
    : public flexattn::impl::FlexAttnBlockSparsityBase<
          FlexAttnBlockSparsityPass> {
  void runOnOperation() override {
    SmallVector<KvLoopOp> loops;
    getOperation()->walk([&](KvLoopOp op) { loops.push_back(op); });
    IRRewriter rewriter(&getContext());
    for (KvLoopOp loop : loops)
      if (failed(lowerKvLoop(rewriter, loop)))
        return signalPassFailure();
  }
};
} // namespace
