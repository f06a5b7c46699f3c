//===- MapBackwardToGrid.cpp - flexattn-map-backward-to-grid ----*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// Maps the backward's tile loop nests (flexattn-tile's KV-outer nest of dk/dv
// tiles and its Q-outer nest of dq tiles, each a perfect nest of scf.parallel
// or scf.for over static extents) onto one gpu.launch: a 1-D grid whose first
// CTAs run the first nest's tiles and the next ones the second's, the split
// torch's flex backward and FlashAttention-2 make, with one thread per row of
// the largest accumulator tile. A CTA decodes its tile from the block index
// (row-major over the nest's loops) and runs the tile's body unchanged:
//
//   t = blockIdx.x:  t < T0:  nest 0 at (t / ..., ..., t % E)
//                    else:    nest 1 at the same decoding of t - T0
//
// The nests write disjoint tiles, so the CTAs need no ordering; buffers many
// CTAs accumulate into (the capture gradients) are zero-filled on the host
// before the nests: those fills become a precondition of the launch, listed
// as argument numbers in the function's `flexattn.zero_init` (the launcher
// zeroes them). Any other host computation is an error: only the kernel runs.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/Matchers.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "llvm/ADT/SetVector.h"

namespace mlir::flexattn {
#define GEN_PASS_DEF_FLEXATTNMAPBACKWARDTOGRID
#include "passes/Passes.h.inc"
} // namespace mlir::flexattn

using namespace mlir;
using namespace mlir::flexattn;

namespace {

/// A perfect loop nest over tiles: its induction variables, their static
/// extents, the innermost body and the rows of its accumulator tiles.
struct TileNest {
  Operation *root = nullptr;
  SmallVector<Value> ivs;
  SmallVector<int64_t> extents;
  Block *body = nullptr;
  int64_t rows = 1;

  int64_t tiles() const {
    int64_t n = 1;
    for (int64_t e : extents)
      n *= e;
    return n;
  }
};

bool holdsBackwardTiles(Operation *op) {
  return op
      ->walk([](Operation *o) {
        return isa<BackwardStepOp, StoreTileOp>(o) ? WalkResult::interrupt()
                                                   : WalkResult::advance();
      })
      .wasInterrupted();
}

/// Appends one loop's dimension (static, from 0, step 1) to `nest`.
LogicalResult addDim(TileNest &nest, Operation *loop, Value iv, Value lb,
                     Value ub, Value step) {
  std::optional<int64_t> lo = foldIndex(lb), hi = foldIndex(ub),
                         st = foldIndex(step);
  if (!lo || !hi || !st || *lo != 0 || *st != 1)
    return loop->emitOpError("flexattn-map-backward-to-grid needs static tile "
                             "loops from 0 with step 1 (static shapes)");
  nest.ivs.push_back(iv);
  nest.extents.push_back(*hi);
  return success();
}

/// The perfect nest of scf.parallel / scf.for loops rooted at `root`.
FailureOr<TileNest> collectNest(Operation *root) {
  TileNest nest;
  nest.root = root;
  Operation *op = root;
  while (true) {
    if (auto par = dyn_cast<scf::ParallelOp>(op)) {
      for (unsigned d = 0; d < par.getNumLoops(); ++d)
        if (failed(addDim(nest, op, par.getInductionVars()[d],
                          par.getLowerBound()[d], par.getUpperBound()[d],
                          par.getStep()[d])))
          return failure();
      nest.body = par.getBody();
    } else if (auto loop = dyn_cast<scf::ForOp>(op)) {
      if (!loop.getInitArgs().empty())
        return op->emitOpError("flexattn-map-backward-to-grid: a tile loop "
                               "carries values");
      if (failed(addDim(nest, op, loop.getInductionVar(), loop.getLowerBound(),
                        loop.getUpperBound(), loop.getStep())))
        return failure();
      nest.body = loop.getBody();
    } else {
      return root->emitOpError("flexattn-map-backward-to-grid expects a tile "
                               "loop nest (scf.parallel or scf.for)");
    }
    auto inner = nest.body->without_terminator();
    if (!llvm::hasSingleElement(inner) ||
        !isa<scf::ParallelOp, scf::ForOp>(*inner.begin()))
      break;
    op = &*inner.begin();
  }
  nest.body->walk([&](StoreTileOp store) {
    nest.rows = std::max(
        nest.rows, cast<MemRefType>(store.getAcc().getType()).getDimSize(0));
  });
  return nest;
}

/// A zero fill of a function argument (the host part that may stay).
std::optional<unsigned> zeroFilledArgument(Operation *op) {
  auto fill = dyn_cast<linalg::FillOp>(op);
  if (!fill || fill.getOutputs().size() != 1)
    return std::nullopt;
  auto arg = dyn_cast<BlockArgument>(fill.getOutputs()[0]);
  if (!arg || !isa<func::FuncOp>(arg.getOwner()->getParentOp()) ||
      !matchPattern(fill.getInputs()[0], m_AnyZeroFloat()))
    return std::nullopt;
  return arg.getArgNumber();
}

/// Row-major decoding of the tile number `t` into the nest's variables.
void decodeTile(OpBuilder &b, Location loc, const TileNest &nest, Value t,
                IRMapping &map) {
  for (int64_t d = nest.extents.size() - 1; d >= 0; --d) {
    Value e = arith::ConstantIndexOp::create(b, loc, nest.extents[d]);
    map.map(nest.ivs[d], d == 0 ? t : arith::RemUIOp::create(b, loc, t, e));
    if (d)
      t = arith::DivUIOp::create(b, loc, t, e);
  }
}

} // namespace

LogicalResult mlir::flexattn::mapBackwardToGrid(RewriterBase &rewriter,
                                                func::FuncOp func) {
  SmallVector<TileNest> nests;
  SmallVector<Operation *> fills;
  SmallVector<int64_t> zeroInit;
  for (Operation &op : func.getBody().front().without_terminator()) {
    if (holdsBackwardTiles(&op)) {
      FailureOr<TileNest> nest = collectNest(&op);
      if (failed(nest))
        return failure();
      nests.push_back(*nest);
    } else if (std::optional<unsigned> arg = zeroFilledArgument(&op)) {
      if (!nests.empty())
        return op.emitOpError("flexattn-map-backward-to-grid: a zero fill "
                              "after the tile loops");
      fills.push_back(&op);
      zeroInit.push_back(*arg);
    } else if (!isPure(&op)) {
      return op.emitOpError("flexattn-map-backward-to-grid: only the kernel "
                            "runs on the GPU; this host computation has no "
                            "place (precompute delta: the delta operand of "
                            "flexattn.attention_backward)");
    }
  }
  if (nests.empty())
    return success();

  // Values from outside the nests: memref arguments are passed, pure
  // computations over constants recomputed inside.
  SetVector<Value> recomputed;
  for (const TileNest &nest : nests)
    if (failed(collectKernelInputs(nest.root, nest.body, recomputed,
                                   "flexattn-map-backward-to-grid")))
      return failure();

  Location loc = func.getLoc();
  OpBuilder::InsertionGuard guard(rewriter);
  rewriter.setInsertionPoint(nests.front().root);
  int64_t tiles = 0, threads = 1;
  for (const TileNest &nest : nests) {
    tiles += nest.tiles();
    threads = std::max(threads, nest.rows);
  }
  auto cst = [&](int64_t v) {
    return arith::ConstantIndexOp::create(rewriter, loc, v);
  };
  Value one = cst(1);
  auto launch = gpu::LaunchOp::create(rewriter, loc, cst(tiles), one, one,
                                      cst(threads), one, one);
  rewriter.setInsertionPointToStart(&launch.getBody().front());
  IRMapping map;
  recomputeInside(rewriter, recomputed, map);

  // if (bx < T0) nest 0 else if (bx < T0 + T1) nest 1 else ...
  Value bx = launch.getBlockIds().x;
  int64_t first = 0;
  for (auto [n, nest] : llvm::enumerate(nests)) {
    bool last = n + 1 == nests.size();
    scf::IfOp branch;
    if (!last) {
      Value mine = arith::CmpIOp::create(rewriter, loc, arith::CmpIPredicate::ult,
                                         bx, cst(first + nest.tiles()));
      branch = scf::IfOp::create(rewriter, loc, mine, /*withElseRegion=*/true);
      rewriter.setInsertionPointToStart(branch.thenBlock());
    }
    Value t = first ? arith::SubIOp::create(rewriter, loc, bx, cst(first)) : bx;
    IRMapping local = map;
    decodeTile(rewriter, loc, nest, t, local);
    for (Operation &op : nest.body->without_terminator())
      rewriter.clone(op, local);
    if (!last)
      rewriter.setInsertionPointToStart(branch.elseBlock());
    first += nest.tiles();
  }
  rewriter.setInsertionPointToEnd(&launch.getBody().front());
  gpu::TerminatorOp::create(rewriter, loc);

  for (const TileNest &nest : nests)
    rewriter.eraseOp(nest.root);
  for (Operation *fill : fills)
    rewriter.eraseOp(fill);
  if (!zeroInit.empty())
    func->setAttr(kZeroInitAttrName, rewriter.getDenseI64ArrayAttr(zeroInit));
  return success();
}

namespace {
struct FlexAttnMapBackwardToGridPass
    : public flexattn::impl::FlexAttnMapBackwardToGridBase<
          FlexAttnMapBackwardToGridPass> {
  void runOnOperation() override {
    IRRewriter rewriter(&getContext());
    for (auto func : getOperation().getOps<func::FuncOp>())
      if (failed(mapBackwardToGrid(rewriter, func)))
        return signalPassFailure();
  }
};
} // namespace
