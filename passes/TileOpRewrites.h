//===- TileOpRewrites.h - one rewrite per tile_step / finalize --*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// The shell of the CPU passes that rewrite each flexattn.tile_step and
// flexattn.finalize on its own (flexattn-split-full-tiles,
// flexattn-fuse-online-softmax).
//
//===----------------------------------------------------------------------===//

#ifndef FLEXATTN_PASSES_TILEOPREWRITES_H
#define FLEXATTN_PASSES_TILEOPREWRITES_H

#include "passes/Passes.h"

namespace mlir::flexattn {

/// Collects the tile_step and finalize ops under `root`, then rewrites each
/// with `onStep` / `onFinalize`; fails at the first failure.
inline LogicalResult
rewriteTileOps(Operation *root,
               function_ref<LogicalResult(RewriterBase &, TileStepOp)> onStep,
               function_ref<LogicalResult(RewriterBase &, FinalizeOp)> onFinalize) {
  SmallVector<Operation *> ops;
  root->walk([&](Operation *op) {
    if (isa<TileStepOp, FinalizeOp>(op))
      ops.push_back(op);
  });
  IRRewriter rewriter(root->getContext());
  for (Operation *op : ops) {
    auto step = dyn_cast<TileStepOp>(op);
    if (failed(step ? onStep(rewriter, step) : onFinalize(rewriter, cast<FinalizeOp>(op))))
      return failure();
  }
  return success();
}

} // namespace mlir::flexattn

#endif // FLEXATTN_PASSES_TILEOPREWRITES_H
