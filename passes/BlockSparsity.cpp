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

#include "llvm/ADT/TypeSwitch.h"

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

} // namespace

void mlir::flexattn::forEachTile(
    OpBuilder &b, Location loc, Value extent, int64_t tile,
    function_ref<void(OpBuilder &, Value start)> body) {
  Value tileV = indexConst(b, loc, tile);
  Value tiles = arith::CeilDivUIOp::create(b, loc, extent, tileV);
  auto forOp = scf::ForOp::create(b, loc, indexConst(b, loc, 0), tiles,
                                  indexConst(b, loc, 1));
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(forOp.getBody());
  body(b, arith::MulIOp::create(b, loc, forOp.getInductionVar(), tileV));
}

void mlir::flexattn::forEachListedBlock(
    OpBuilder &b, Location loc, Value num, Value indices, Value batch,
    Value head, Value row, int64_t blockSize,
    function_ref<void(OpBuilder &, Value start)> body) {
  Value bi = broadcastIndex(b, loc, num, 0, batch);
  Value hi = broadcastIndex(b, loc, num, 1, head);
  Value count = memref::LoadOp::create(b, loc, num, ValueRange{bi, hi, row});
  count = arith::IndexCastOp::create(b, loc, b.getIndexType(), count);
  // Never read past the index array, whatever the counts say.
  Value width = memrefDim(b, loc, indices, 3);
  count = arith::MinSIOp::create(b, loc, count, width);
  count = arith::MaxSIOp::create(b, loc, count, indexConst(b, loc, 0));
  Value bs = indexConst(b, loc, blockSize);
  Value bj = broadcastIndex(b, loc, indices, 0, batch);
  Value hj = broadcastIndex(b, loc, indices, 1, head);
  auto forOp = scf::ForOp::create(b, loc, indexConst(b, loc, 0), count,
                                  indexConst(b, loc, 1));
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(forOp.getBody());
  Value blk = memref::LoadOp::create(
      b, loc, indices, ValueRange{bj, hj, row, forOp.getInductionVar()});
  blk = arith::IndexCastOp::create(b, loc, b.getIndexType(), blk);
  body(b, arith::MulIOp::create(b, loc, blk, bs));
}

LogicalResult mlir::flexattn::lowerKvLoop(RewriterBase &rewriter,
                                          KvLoopOp loop) {
  Location loc = loop.getLoc();
  OpBuilder::InsertionGuard guard(rewriter);
  rewriter.setInsertionPoint(loop);
  int64_t bn = loop.getTileSize()[1];
  auto step = [&](bool masked) {
    return [&loop, loc, masked](OpBuilder &b, Value kv0) {
      emitStep(b, loc, loop, kv0, masked);
    };
  };

  if (!loop.hasBlockMask()) {
    // Dense: every KV tile, mask_mod on each.
    forEachTile(rewriter, loc, memrefDim(rewriter, loc, loop.getK(), 2), bn,
                step(/*masked=*/true));
  } else {
    Value qb = arith::DivUIOp::create(
        rewriter, loc, loop.getQ0(),
        indexConst(rewriter, loc, (*loop.getBlockSize())[0]));
    forEachListedBlock(rewriter, loc, loop.getKvNumBlocks(),
                       loop.getKvIndices(), loop.getB(), loop.getH(), qb, bn,
                       step(/*masked=*/true));
    if (loop.getFullKvNumBlocks())
      forEachListedBlock(rewriter, loc, loop.getFullKvNumBlocks(),
                         loop.getFullKvIndices(), loop.getB(), loop.getH(), qb,
                         bn, step(/*masked=*/false));
  }
  rewriter.eraseOp(loop);
  return success();
}

namespace {
struct FlexAttnBlockSparsityPass
    : public flexattn::impl::FlexAttnBlockSparsityBase<
          FlexAttnBlockSparsityPass> {
  void runOnOperation() override {
    SmallVector<Operation *> loops;
    getOperation()->walk([&](Operation *op) {
      if (isa<KvLoopOp, BackwardQLoopOp, BackwardKvLoopOp>(op))
        loops.push_back(op);
    });
    IRRewriter rewriter(&getContext());
    for (Operation *loop : loops) {
      LogicalResult r =
          llvm::TypeSwitch<Operation *, LogicalResult>(loop)
              .Case([&](KvLoopOp op) { return lowerKvLoop(rewriter, op); })
              .Case([&](BackwardQLoopOp op) {
                return lowerBackwardQLoop(rewriter, op);
              })
              .Case([&](BackwardKvLoopOp op) {
                return lowerBackwardKvLoop(rewriter, op);
              });
      if (failed(r))
        return signalPassFailure();
    }
  }
};
} // namespace
