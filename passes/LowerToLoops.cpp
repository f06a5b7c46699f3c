//===- LowerToLoops.cpp - flexattn-lower-to-loops ---------------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// The last flexattn step of the CPU pipeline: linalg ops on memrefs become
// scf.for nests; any flexattn op still present is an ordering error.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include "mlir/Dialect/Linalg/Transforms/Transforms.h"

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
  return "flexattn-inline-mods";
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
  }
};
} // namespace
