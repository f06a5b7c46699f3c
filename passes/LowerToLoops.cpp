//===- LowerToLoops.cpp - flexattn-lower-to-loops ---------------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// The last flexattn step of the CPU pipeline: linalg ops on memrefs become
// scf.for nests, an scf.parallel flexattn-distribute-tiles left (a body one
// thread runs) becomes a sequential scf.for nest, and the fixed-size tile
// buffers move to the function entry (each thread has its own) so the stack
// does not grow per tile or KV step. Any
// flexattn op still present is an ordering error.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include "mlir/Conversion/AffineToStandard/AffineToStandard.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/Transforms/Transforms.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace mlir::flexattn {
#define GEN_PASS_DEF_FLEXATTNLOWERTOLOOPS
#include "passes/Passes.h.inc"
} // namespace mlir::flexattn

using namespace mlir;
using namespace mlir::flexattn;

namespace {

/// The pass that removes each flexattn op, for the error message.
StringRef passThatRemoves(Operation *op) {
  if (isa<AttentionOp>(op))
    return "flexattn-tile";
  if (isa<KvLoopOp>(op))
    return "flexattn-block-sparsity";
  if (isa<TileStepOp, FinalizeOp>(op))
    return "flexattn-fuse-online-softmax";
  if (isa<AttentionBackwardOp>(op))
    return "flexattn-differentiate-mods and flexattn-tile";
  if (isa<BackwardQLoopOp, BackwardKvLoopOp>(op))
    return "flexattn-block-sparsity";
  if (isa<BackwardStepOp, StoreTileOp>(op))
    return "flexattn-decompose-backward";
  return "flexattn-inline-mods";
}

/// Tile buffers above this size are heap-allocated (the stack is often 8 MiB).
constexpr int64_t kMaxStackTileBytes = 64 * 1024;

/// scf.parallel (no reductions) -> a nest of scf.for in the same order.
void sequentialize(RewriterBase &rewriter, scf::ParallelOp par) {
  rewriter.setInsertionPoint(par);
  scf::buildLoopNest(
      rewriter, par.getLoc(), par.getLowerBound(), par.getUpperBound(),
      par.getStep(), [&](OpBuilder &b, Location, ValueRange ivs) {
        IRMapping map;
        map.map(par.getInductionVars(), ivs);
        for (Operation &op : par.getBody()->without_terminator())
          b.clone(op, map);
      });
  rewriter.eraseOp(par);
}

/// Static-size allocas move to the function entry; scopes left without
/// allocas are dissolved. Correct once loops are sequential: every tile
/// buffer is initialised before it is read in each iteration.
void hoistTileBuffers(RewriterBase &rewriter, func::FuncOp func) {
  Block &entry = func.getBody().front();
  func.walk([&](memref::AllocaOp alloca) {
    if (alloca.getType().hasStaticShape() && alloca->getBlock() != &entry)
      alloca->moveBefore(&entry, entry.begin());
  });
  // Large tiles (a long KV block, a wide Dv) would overflow the stack: they
  // go to the heap, freed before each return.
  SmallVector<memref::AllocaOp> large;
  for (auto alloca : entry.getOps<memref::AllocaOp>()) {
    MemRefType type = alloca.getType();
    if (type.hasStaticShape() &&
        type.getNumElements() * type.getElementTypeBitWidth() / 8 > kMaxStackTileBytes)
      large.push_back(alloca);
  }
  for (memref::AllocaOp alloca : large) {
    rewriter.setInsertionPoint(alloca);
    auto heap = rewriter.replaceOpWithNewOp<memref::AllocOp>(alloca, alloca.getType());
    func.walk([&](func::ReturnOp ret) {
      rewriter.setInsertionPoint(ret);
      memref::DeallocOp::create(rewriter, ret.getLoc(), heap);
    });
  }
  SmallVector<memref::AllocaScopeOp> scopes;
  func.walk([&](memref::AllocaScopeOp scope) { scopes.push_back(scope); });
  for (memref::AllocaScopeOp scope : scopes) {
    if (scope.getNumResults() ||
        scope->walk([](memref::AllocaOp) { return WalkResult::interrupt(); })
            .wasInterrupted())
      continue;
    Block &body = scope.getBodyRegion().front();
    rewriter.eraseOp(body.getTerminator());
    rewriter.inlineBlockBefore(&body, scope);
    rewriter.eraseOp(scope);
  }
}

struct FlexAttnLowerToLoopsPass
    : public flexattn::impl::FlexAttnLowerToLoopsBase<
          FlexAttnLowerToLoopsPass> {
  void runOnOperation() override {
    WalkResult leftover = getOperation()->walk([&](Operation *op) {
      if (!isa<FlexAttnDialect>(op->getDialect()) || isa<YieldOp>(op))
        return WalkResult::advance();
      op->emitOpError() << "must be lowered before flexattn-lower-to-loops; "
                        << "run " << passThatRemoves(op) << " first";
      return WalkResult::interrupt();
    });
    if (leftover.wasInterrupted())
      return signalPassFailure();

    SmallVector<linalg::LinalgOp> ops;
    getOperation()->walk([&](linalg::LinalgOp op) { ops.push_back(op); });
    IRRewriter rewriter(&getContext());
    for (linalg::LinalgOp op : ops) {
      rewriter.setInsertionPoint(op);
      if (failed(linalg::linalgOpToLoops(rewriter, op)))
        return signalPassFailure();
      rewriter.eraseOp(op);
    }

    SmallVector<scf::ParallelOp> parallels;
    getOperation()->walk([&](scf::ParallelOp par) {
      if (par.getNumResults() == 0)
        parallels.push_back(par);
    });
    for (scf::ParallelOp par : parallels) // post-order: inner loops first
      sequentialize(rewriter, par);
    getOperation()->walk([&](func::FuncOp f) { hoistTileBuffers(rewriter, f); });

    // The index arithmetic linalg leaves as affine.apply.
    RewritePatternSet patterns(&getContext());
    populateAffineToStdConversionPatterns(patterns);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      return signalPassFailure();
  }
};
} // namespace
