//===- BackwardLoops.cpp - block sparsity of the backward loops -*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// flexattn-block-sparsity for the backward loops: the tile pairs a fixed Q
// tile (backward_kv_loop) or a fixed KV tile (backward_q_loop) visits, one
// flexattn.backward_step each, from the same block lists the forward reads
// (the kv-side ones) or their transposes (the q-side ones).
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

using namespace mlir;
using namespace mlir::flexattn;

namespace {

/// One backward_step of `loop` at (h, q0, kv0), mask_mod applied iff
/// `masked`.
template <typename LoopOp>
void emitBackwardStep(OpBuilder &b, Location loc, LoopOp loop, Value h,
                      Value hkv, Value q0, Value kv0, bool masked) {
  bool applyMask = masked && !loop.getMaskMod().empty();
  auto step = BackwardStepOp::create(
      b, loc, loop.getQ(), loop.getK(), loop.getV(), loop.getDout(),
      loop.getLse(), loop.getDelta(), loop.getDqAcc(), loop.getDkAcc(),
      loop.getDvAcc(), /*dq_sum=*/Value(), loop.getB(), h, hkv, q0, kv0, loop.getCaptures(),
      loop.getCaptureGrads(), loop.getScaleAttr(), loop.getTileSizeAttr(),
      applyMask ? b.getUnitAttr() : UnitAttr(), loop.getGradCapturesAttr(),
      loop.getVjpLoadsAttr());
  cloneRegion(loop.getScoreModVjp(), step.getScoreModVjp());
  if (applyMask)
    cloneRegion(loop.getMaskMod(), step.getMaskMod());
}

/// The partial blocks (masked) then the full ones (unmasked) of a block
/// mask's lists at `row`, or every tile of `extent` without one.
template <typename LoopOp>
void emitVisited(OpBuilder &b, Location loc, LoopOp loop, Value head,
                 Value row, Value extent, int64_t tile,
                 function_ref<void(OpBuilder &, Value, bool)> step) {
  auto at = [&](bool masked) {
    return [&step, masked](OpBuilder &nb, Value start) {
      step(nb, start, masked);
    };
  };
  if (!loop.hasBlockMask()) {
    forEachTile(b, loc, extent, tile, at(/*masked=*/true));
    return;
  }
  forEachListedBlock(b, loc, loop.getNumBlocks(), loop.getIndices(),
                     loop.getB(), head, row, tile, at(/*masked=*/true));
  if (loop.getFullNumBlocks())
    forEachListedBlock(b, loc, loop.getFullNumBlocks(), loop.getFullIndices(),
                       loop.getB(), head, row, tile, at(/*masked=*/false));
}

} // namespace

LogicalResult mlir::flexattn::lowerBackwardQLoop(RewriterBase &rewriter,
                                                 BackwardQLoopOp loop) {
  Location loc = loop.getLoc();
  OpBuilder::InsertionGuard guard(rewriter);
  rewriter.setInsertionPoint(loop);
  int64_t bm = loop.getTileSize()[0];
  Value kb;
  if (loop.hasBlockMask())
    kb = arith::DivUIOp::create(
        rewriter, loc, loop.getKv0(),
        indexConst(rewriter, loc, (*loop.getBlockSize())[1]));
  // for g in [0, G): h = hkv * G + g, the query heads of the KV group.
  Value group = arith::DivUIOp::create(
      rewriter, loc, memrefDim(rewriter, loc, loop.getQ(), 1),
      memrefDim(rewriter, loc, loop.getK(), 1));
  auto heads = scf::ForOp::create(rewriter, loc, indexConst(rewriter, loc, 0),
                                  group, indexConst(rewriter, loc, 1));
  rewriter.setInsertionPointToStart(heads.getBody());
  Value h = arith::AddIOp::create(
      rewriter, loc, arith::MulIOp::create(rewriter, loc, loop.getHkv(), group),
      heads.getInductionVar());
  emitVisited(rewriter, loc, loop, h, kb,
              memrefDim(rewriter, loc, loop.getQ(), 2), bm,
              [&](OpBuilder &b, Value q0, bool masked) {
                emitBackwardStep(b, loc, loop, h, loop.getHkv(), q0,
                                 loop.getKv0(), masked);
              });
  rewriter.eraseOp(loop);
  return success();
}

LogicalResult mlir::flexattn::lowerBackwardKvLoop(RewriterBase &rewriter,
                                                  BackwardKvLoopOp loop) {
  Location loc = loop.getLoc();
  OpBuilder::InsertionGuard guard(rewriter);
  rewriter.setInsertionPoint(loop);
  int64_t bn = loop.getTileSize()[1];
  Value qb;
  if (loop.hasBlockMask())
    qb = arith::DivUIOp::create(
        rewriter, loc, loop.getQ0(),
        indexConst(rewriter, loc, (*loop.getBlockSize())[0]));
  emitVisited(rewriter, loc, loop, loop.getH(), qb,
              memrefDim(rewriter, loc, loop.getK(), 2), bn,
              [&](OpBuilder &b, Value kv0, bool masked) {
                emitBackwardStep(b, loc, loop, loop.getH(), loop.getHkv(),
                                 loop.getQ0(), kv0, masked);
              });
  rewriter.eraseOp(loop);
  return success();
}
