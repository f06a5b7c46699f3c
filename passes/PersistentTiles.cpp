//===- PersistentTiles.cpp - flexattn-persistent-tiles ----------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// Persistent CTAs: a grid of one CTA per tile (flexattn-map-to-grid) becomes
// a grid of at most `ctas` CTAs, each looping over tiles with a static
// tile scheduler in rounds of `ctas` tiles (the grid's tile order: heaviest
// Q tile of a head first), taken in a snake: round i gives CTA c its tile
// i ctas + c when i is even and i ctas + (ctas - 1 - c) when i is odd.
// Causal Q tiles get lighter along a head, so a CTA that took a heavy tile
// in one round takes a light one in the next: at B = 4, H = 16, 64 Q tiles
// a head, 132 CTAs, the busiest CTA has 1.031x the mean work (a plain round
// robin, c, c + ctas, ...: 1.079x; greedy dynamic scheduling: 1.029x).
// Sparse masks leave short Q tiles, whose prologue and epilogue a persistent
// CTA overlaps with its next tile's loads.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/IR/Matchers.h"

namespace mlir::flexattn {
#define GEN_PASS_DEF_FLEXATTNPERSISTENTTILES
#include "passes/Passes.h.inc"
} // namespace mlir::flexattn

using namespace mlir;
using namespace mlir::flexattn;

LogicalResult mlir::flexattn::makeTilesPersistent(RewriterBase &rewriter,
                                                  gpu::LaunchOp launch,
                                                  int64_t ctas) {
  APInt x, y, z;
  if (!matchPattern(launch.getGridSizeX(), m_ConstantInt(&x)) ||
      !matchPattern(launch.getGridSizeY(), m_ConstantInt(&y)) ||
      !matchPattern(launch.getGridSizeZ(), m_ConstantInt(&z)) || y != 1 ||
      z != 1)
    return launch.emitOpError("flexattn-persistent-tiles expects the static "
                              "1-D grid of flexattn-map-to-grid");
  int64_t tiles = x.getSExtValue();
  if (ctas <= 0 || ctas >= tiles)
    return success(); // one CTA per tile already
  Location loc = launch.getLoc();
  Block &body = launch.getBody().front();
  Value tile = launch.getBlockIds().x;

  OpBuilder::InsertionGuard guard(rewriter);
  rewriter.setInsertionPoint(launch);
  launch.getGridSizeXMutable().assign(
      arith::ConstantIndexOp::create(rewriter, loc, ctas));

  // for i = 0; i < rounds(c); ++i: t = i ctas + (i even ? c : ctas - 1 - c)
  rewriter.setInsertionPointToStart(&body);
  auto cst = [&](int64_t v) -> Value {
    return arith::ConstantIndexOp::create(rewriter, loc, v);
  };
  Value step = cst(ctas), last = cst(ctas - 1), zero = cst(0), one = cst(1);
  Value mirrored = arith::SubIOp::create(rewriter, loc, last, tile);
  // Every CTA runs the full rounds; the last, partial round has `tiles mod
  // ctas` tiles for the CTAs whose position in it is below that.
  int64_t full = tiles / ctas, rem = tiles % ctas;
  Value rounds = cst(full);
  if (rem) {
    Value pos = full % 2 ? mirrored : tile;
    Value inLast = arith::CmpIOp::create(rewriter, loc, arith::CmpIPredicate::ult,
                                         pos, cst(rem));
    rounds = arith::SelectOp::create(rewriter, loc, inLast, cst(full + 1), rounds);
  }
  auto loop = scf::ForOp::create(rewriter, loc, zero, rounds, one);
  rewriter.setInsertionPointToStart(loop.getBody());
  Value i = loop.getInductionVar();
  Value odd = arith::CmpIOp::create(
      rewriter, loc, arith::CmpIPredicate::ne,
      arith::AndIOp::create(rewriter, loc, i, one), zero);
  Value pos = arith::SelectOp::create(rewriter, loc, odd, mirrored, tile);
  Value t = arith::AddIOp::create(
      rewriter, loc, arith::MulIOp::create(rewriter, loc, i, step), pos);
  Block *loopBody = loop.getBody();
  // The rest of the body moves into the loop.
  SmallVector<Operation *> moved;
  for (Operation *op = loop->getNextNode(); op != body.getTerminator();
       op = op->getNextNode())
    moved.push_back(op);
  for (Operation *op : moved)
    op->moveBefore(loopBody->getTerminator());
  rewriter.replaceUsesWithIf(tile, t, [&](OpOperand &use) {
    return use.getOwner() != pos.getDefiningOp() &&
           loop->isProperAncestor(use.getOwner());
  });
  return success();
}

namespace {
struct FlexAttnPersistentTilesPass
    : public flexattn::impl::FlexAttnPersistentTilesBase<
          FlexAttnPersistentTilesPass> {
  using FlexAttnPersistentTilesBase::FlexAttnPersistentTilesBase;

  void runOnOperation() override {
    IRRewriter rewriter(&getContext());
    for (auto launch : opsHoldingTiles<gpu::LaunchOp>(getOperation()))
      if (failed(makeTilesPersistent(rewriter, launch, ctas)))
        return signalPassFailure();
  }
};
} // namespace
