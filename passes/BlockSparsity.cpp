//===- BlockSparsity.cpp - flexattn-block-sparsity --------------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// Lowers flexattn.kv_loop to the KV tiles a Q tile actually visits: all of
// them without a block mask; otherwise the partial blocks (mask_mod applied)
// and then the full blocks (mask_mod skipped) listed for its query block,
// each block as the KV tiles it holds (one, or block / tile in order).
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
      loop.getQ0(), kv0, loop.getRowsPerHead(), loop.getCaptures(),
      loop.getScaleAttr(), loop.getTileSizeAttr(),
      applyMask ? b.getUnitAttr() : UnitAttr());
  cloneModRegions(loop, step, /*withMask=*/applyMask);
}

Value clamp(OpBuilder &b, Location loc, Value v, Value lo, Value hi) {
  v = arith::MaxSIOp::create(b, loc, v, lo);
  return arith::MinSIOp::create(b, loc, v, hi);
}

} // namespace

void mlir::flexattn::forRange(OpBuilder &b, Location loc, Value lo, Value hi,
                              function_ref<void(OpBuilder &, Value)> body) {
  auto forOp = scf::ForOp::create(b, loc, lo, hi, indexConst(b, loc, 1));
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(forOp.getBody());
  body(b, forOp.getInductionVar());
}

void mlir::flexattn::forEachTile(
    OpBuilder &b, Location loc, Value extent, int64_t tile,
    function_ref<void(OpBuilder &, Value start)> body) {
  Value tileV = indexConst(b, loc, tile);
  Value tiles = arith::CeilDivUIOp::create(b, loc, extent, tileV);
  forRange(b, loc, indexConst(b, loc, 0), tiles, [&](OpBuilder &nb, Value t) {
    body(nb, arith::MulIOp::create(nb, loc, t, tileV));
  });
}

BlockList mlir::flexattn::blockList(OpBuilder &b, Location loc, Value num,
                                    Value indices, Value batch, Value head,
                                    Value row) {
  Value bi = broadcastIndex(b, loc, num, 0, batch);
  Value hi = broadcastIndex(b, loc, num, 1, head);
  Value count = memref::LoadOp::create(b, loc, num, ValueRange{bi, hi, row});
  count = arith::IndexCastOp::create(b, loc, b.getIndexType(), count);
  // Never read past the index array, whatever the counts say.
  count = arith::MinSIOp::create(b, loc, count, memrefDim(b, loc, indices, 3));
  count = arith::MaxSIOp::create(b, loc, count, indexConst(b, loc, 0));
  return {indices, batch, head, row, count};
}

void mlir::flexattn::forEachListed(
    OpBuilder &b, Location loc, const BlockList &list, Value lo, Value hi,
    int64_t blockSize, function_ref<void(OpBuilder &, Value start)> body) {
  Value bs = indexConst(b, loc, blockSize);
  Value bj = broadcastIndex(b, loc, list.indices, 0, list.batch);
  Value hj = broadcastIndex(b, loc, list.indices, 1, list.head);
  forRange(b, loc, lo ? lo : indexConst(b, loc, 0), hi, [&](OpBuilder &nb, Value j) {
    Value blk = memref::LoadOp::create(nb, loc, list.indices,
                                       ValueRange{bj, hj, list.row, j});
    blk = arith::IndexCastOp::create(nb, loc, nb.getIndexType(), blk);
    body(nb, arith::MulIOp::create(nb, loc, blk, bs));
  });
}

void mlir::flexattn::forEachListedBlock(
    OpBuilder &b, Location loc, Value num, Value indices, Value batch,
    Value head, Value row, int64_t blockSize,
    function_ref<void(OpBuilder &, Value start)> body) {
  BlockList list = blockList(b, loc, num, indices, batch, head, row);
  forEachListed(b, loc, list, Value(), list.count, blockSize, body);
}

namespace {

/// The range [lo, hi) of `total` items the s-th of n splits takes:
/// contiguous ranges of ceil(total / n) items.
std::pair<Value, Value> splitRange(OpBuilder &b, Location loc, Value total,
                                   Value s, Value n) {
  Value chunk = arith::CeilDivUIOp::create(b, loc, total, n);
  Value lo = arith::MulIOp::create(b, loc, s, chunk);
  Value hi = arith::AddIOp::create(b, loc, lo, chunk);
  Value zero = indexConst(b, loc, 0);
  return {clamp(b, loc, lo, zero, total), clamp(b, loc, hi, zero, total)};
}

/// `body(start)` for the KV tiles of blocks [lo, hi) of `list` (lo null:
/// 0): one tile per block where `tile` is the block, else the block's
/// blockSize / tile tiles in order, walked as one flat loop over
/// j in [lo r, hi r) (block j / r, its tile j % r) so each loop body holds
/// one tile step.
void forEachListedTile(OpBuilder &b, Location loc, const BlockList &list,
                       Value lo, Value hi, int64_t blockSize, int64_t tile,
                       function_ref<void(OpBuilder &, Value start)> body) {
  if (tile == blockSize)
    return forEachListed(b, loc, list, lo, hi, blockSize, body);
  Value r = indexConst(b, loc, blockSize / tile);
  Value bs = indexConst(b, loc, blockSize), tileV = indexConst(b, loc, tile);
  Value bj = broadcastIndex(b, loc, list.indices, 0, list.batch);
  Value hj = broadcastIndex(b, loc, list.indices, 1, list.head);
  Value first = lo ? arith::MulIOp::create(b, loc, lo, r).getResult() : indexConst(b, loc, 0);
  Value last = arith::MulIOp::create(b, loc, hi, r);
  forRange(b, loc, first, last, [&](OpBuilder &nb, Value j) {
    Value blk = memref::LoadOp::create(
        nb, loc, list.indices,
        ValueRange{bj, hj, list.row, arith::DivUIOp::create(nb, loc, j, r)});
    blk = arith::IndexCastOp::create(nb, loc, nb.getIndexType(), blk);
    Value sub = arith::MulIOp::create(nb, loc, arith::RemUIOp::create(nb, loc, j, r), tileV);
    body(nb, arith::AddIOp::create(nb, loc, arith::MulIOp::create(nb, loc, blk, bs), sub));
  });
}

} // namespace

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
  // The part [lo, hi) of `total` items this loop visits: all of them, or
  // its split's range.
  auto range = [&](Value total) -> std::pair<Value, Value> {
    if (!loop.getSplit())
      return {indexConst(rewriter, loc, 0), total};
    return splitRange(rewriter, loc, total, loop.getSplit(), loop.getSplits());
  };

  if (!loop.hasBlockMask()) {
    // Dense: every KV tile, mask_mod on each.
    Value bnV = indexConst(rewriter, loc, bn);
    Value tiles = arith::CeilDivUIOp::create(
        rewriter, loc, memrefDim(rewriter, loc, loop.getK(), 2), bnV);
    auto [lo, hi] = range(tiles);
    forRange(rewriter, loc, lo, hi, [&](OpBuilder &b, Value t) {
      step(/*masked=*/true)(b, arith::MulIOp::create(b, loc, t, bnV));
    });
  } else {
    // A packed tile's mask is its own row; otherwise its query block's.
    Value qb = loop.getRowsPerHead()
                   ? indexConst(rewriter, loc, 0)
                   : arith::DivUIOp::create(
                         rewriter, loc, loop.getQ0(),
                         indexConst(rewriter, loc, (*loop.getBlockSize())[0]));
    // A KV block of `block` columns is walked in tiles of bn (dividing it).
    int64_t block = (*loop.getBlockSize())[1];
    auto list = [&](Value num, Value indices) {
      return blockList(rewriter, loc, num, indices, loop.getB(), loop.getH(), qb);
    };
    BlockList partial = list(loop.getKvNumBlocks(), loop.getKvIndices());
    if (!loop.getSplit()) {
      // The partial blocks (mask_mod applied), then the full ones.
      forEachListedTile(rewriter, loc, partial, Value(), partial.count, block, bn,
                        step(/*masked=*/true));
      if (loop.getFullKvNumBlocks()) {
        BlockList full = list(loop.getFullKvNumBlocks(), loop.getFullKvIndices());
        forEachListedTile(rewriter, loc, full, Value(), full.count, block, bn,
                          step(/*masked=*/false));
      }
      rewriter.eraseOp(loop);
      return success();
    }
    std::optional<BlockList> full;
    if (loop.getFullKvNumBlocks())
      full = list(loop.getFullKvNumBlocks(), loop.getFullKvIndices());
    Value total = partial.count;
    if (full)
      total = arith::AddIOp::create(rewriter, loc, total, full->count);
    // Split: the partial blocks then the full ones, as one list of `total`.
    auto [lo, hi] = range(total);
    Value pHi = arith::MinSIOp::create(rewriter, loc, hi, partial.count);
    forEachListedTile(rewriter, loc, partial, lo, pHi, block, bn, step(/*masked=*/true));
    if (full) {
      Value zero = indexConst(rewriter, loc, 0);
      Value fLo = clamp(rewriter, loc,
                        arith::SubIOp::create(rewriter, loc, lo, partial.count),
                        zero, full->count);
      Value fHi = clamp(rewriter, loc,
                        arith::SubIOp::create(rewriter, loc, hi, partial.count),
                        zero, full->count);
      forEachListedTile(rewriter, loc, *full, fLo, fHi, block, bn, step(/*masked=*/false));
    }
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
