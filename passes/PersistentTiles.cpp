//===- PersistentTiles.cpp - flexattn-persistent-tiles ----------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// Persistent CTAs: a grid of one CTA per tile (flexattn-map-to-grid) becomes
// a grid of at most `ctas` CTAs, each looping over tiles with a static
// round-robin tile scheduler: CTA c takes tiles c, c + ctas, c + 2 ctas, ...
// in the grid's tile order (heaviest Q tile of a head first). Sparse masks
// leave short Q tiles, whose prologue and epilogue a persistent CTA overlaps
// with its next tile's loads.
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

  // for t = blockIdx.x; t < tiles; t += ctas: { the CTA's body, for tile t }
  rewriter.setInsertionPointToStart(&body);
  Value end = arith::ConstantIndexOp::create(rewriter, loc, tiles);
  Value step = arith::ConstantIndexOp::create(rewriter, loc, ctas);
  auto loop = scf::ForOp::create(rewriter, loc, tile, end, step);
  Block *loopBody = loop.getBody();
  // The rest of the body moves into the loop.
  SmallVector<Operation *> moved;
  for (Operation *op = loop->getNextNode(); op != body.getTerminator();
       op = op->getNextNode())
    moved.push_back(op);
  for (Operation *op : moved)
    op->moveBefore(loopBody->getTerminator());
  rewriter.replaceUsesWithIf(tile, loop.getInductionVar(), [&](OpOperand &use) {
    return loop->isProperAncestor(use.getOwner());
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
