//===- MapToGrid.cpp - flexattn-map-to-grid ---------------------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// Maps the tiled attention's loop over (batch, head, Q tile), the
// scf.parallel flexattn-tile made, onto a 1-D grid of CTAs, one per tile:
// the loop becomes a gpu.launch whose body decodes its tile from the block
// index and runs the tile's body unchanged (flexattn.tile_step and
// flexattn.finalize on memrefs; the state on the CTA's stack). Tiles of one
// (batch, head) are numbered together, so the CTAs running at once share
// K/V in L2, and the heaviest (last) Q tile of a head comes first:
//
//   t = blockIdx.x:  head = t / QT,  b = head / Hq,  h = head % Hq,
//                    qt = QT - 1 - t % QT
//
// A leading split dimension (flexattn-split-kv{splits=S}) puts a tile's S
// splits on adjacent CTAs: s = t mod S, the rest from t / S as above.
//
// `tiles=N` launches the first N tiles of that order only (static grids,
// no split dimension): the grid's last tiles are the caller's (sm_90a's
// dense kernels leave the `T mod SMs` tiles of a last, nearly empty wave to
// the split-KV kernel on a second stream, docs/gpu-pipeline.md §3).
//
// The CTA has one thread until a role pass (flexattn-warp-specialize)
// assigns the threads' roles.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/Matchers.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "llvm/ADT/SetVector.h"
#include <functional>

namespace mlir::flexattn {
#define GEN_PASS_DEF_FLEXATTNMAPTOGRID
#include "passes/Passes.h.inc"
} // namespace mlir::flexattn

using namespace mlir;
using namespace mlir::flexattn;

std::optional<int64_t> mlir::flexattn::foldIndex(Value v) {
  if (std::optional<int64_t> c = getConstantIntValue(v))
    return c;
  Operation *def = v.getDefiningOp();
  if (!def || def->getNumResults() != 1)
    return std::nullopt;
  SmallVector<Attribute> operands;
  for (Value operand : def->getOperands()) {
    std::optional<int64_t> c = foldIndex(operand);
    if (!c)
      return std::nullopt;
    operands.push_back(IntegerAttr::get(operand.getType(), *c));
  }
  SmallVector<OpFoldResult> folded;
  if (failed(def->fold(operands, folded)) || folded.size() != 1)
    return std::nullopt;
  return getConstantIntValue(folded.front());
}

bool mlir::flexattn::isRecomputable(Value v) {
  Operation *def = v.getDefiningOp();
  // Views of memref arguments (pack-heads' [B, Hkv, G * M, ...]) too.
  auto available = [](Value operand) {
    return isRecomputable(operand) ||
           (isa<BlockArgument>(operand) && isa<MemRefType>(operand.getType()));
  };
  return def && def->getNumRegions() == 0 && isPure(def) &&
         llvm::all_of(def->getOperands(), available);
}

LogicalResult mlir::flexattn::collectKernelInputs(Operation *root, Block *body,
                                                  SetVector<Value> &recomputed,
                                                  StringRef pass) {
  WalkResult outside = body->walk([&](Operation *op) {
    for (Value v : op->getOperands()) {
      if (root->isAncestor(v.getParentBlock()->getParentOp()))
        continue;
      if (isRecomputable(v)) {
        recomputed.insert(v);
      } else if (!(isa<BlockArgument>(v) && isa<MemRefType>(v.getType()))) {
        op->emitOpError() << pass << " cannot pass this value to the kernel "
                          << "(only memref arguments and constants): " << v;
        return WalkResult::interrupt();
      }
    }
    return WalkResult::advance();
  });
  return failure(outside.wasInterrupted());
}

void mlir::flexattn::recomputeInside(RewriterBase &rewriter,
                                     const SetVector<Value> &values,
                                     IRMapping &map) {
  std::function<void(Value)> recompute = [&](Value v) {
    // Memref arguments (the leaves of a view) are passed, not recomputed.
    if (map.contains(v) || !v.getDefiningOp())
      return;
    for (Value operand : v.getDefiningOp()->getOperands())
      recompute(operand);
    rewriter.clone(*v.getDefiningOp(), map);
  };
  for (Value v : values)
    recompute(v);
}

LogicalResult mlir::flexattn::mapToGrid(RewriterBase &rewriter,
                                        scf::ParallelOp par, int64_t limit) {
  Location loc = par.getLoc();
  unsigned loops = par.getNumLoops();
  if (loops != 3 && loops != 4)
    return par.emitOpError("flexattn-map-to-grid expects the loop over "
                           "(batch, head, Q tile) made by flexattn-tile "
                           "(or (split, batch, head, Q tile): flexattn-split-kv)");
  // A leading split dimension (flexattn-split-kv{splits}).
  unsigned first = loops - 3;
  // Extents: constants, or run-time values of a dynamic-shape kernel (the
  // batch and the Q tiles: ceil(M / BM) of memref.dim), which the host
  // multiplies into the grid and the CTA recomputes.
  SmallVector<Value> extent;
  SetVector<Value> recomputed;
  for (unsigned d = 0; d < loops; ++d) {
    std::optional<int64_t> lo = foldIndex(par.getLowerBound()[d]);
    std::optional<int64_t> step = foldIndex(par.getStep()[d]);
    Value hi = par.getUpperBound()[d];
    if (!lo || !step || *lo != 0 || *step != 1 ||
        (!foldIndex(hi) && !isRecomputable(hi)))
      return par.emitOpError("flexattn-map-to-grid needs loop bounds from 0 with "
                             "step 1 and extents that are constants or computed "
                             "from the memref arguments' sizes");
    extent.push_back(hi);
    if (!foldIndex(hi))
      recomputed.insert(hi);
  }

  // Values from outside the loop: memref arguments stay (the launch passes
  // them to the kernel), pure computations over constants and the
  // arguments' sizes are recomputed.
  if (failed(collectKernelInputs(par, par.getBody(), recomputed,
                                 "flexattn-map-to-grid")))
    return failure();

  OpBuilder::InsertionGuard guard(rewriter);
  rewriter.setInsertionPoint(par);
  auto cst = [&](int64_t v) { return arith::ConstantIndexOp::create(rewriter, loc, v); };
  // A static extent as a constant where it is used (host or CTA), a
  // run-time one as the host's value or its copy in the CTA.
  auto extentIn = [&](unsigned d, IRMapping *inside) -> Value {
    if (std::optional<int64_t> c = foldIndex(extent[d]))
      return cst(*c);
    return inside ? inside->lookup(extent[d]) : extent[d];
  };
  std::optional<int64_t> staticTiles = 1;
  for (Value e : extent)
    staticTiles = staticTiles && foldIndex(e) ? std::optional(*staticTiles * *foldIndex(e))
                                              : std::nullopt;
  if (limit < 0 || (limit && (!staticTiles || first || limit > *staticTiles)))
    return par.emitOpError("flexattn-map-to-grid tiles=")
           << limit << " needs a static grid of at least that many tiles and no "
           << "split dimension"
           << (staticTiles ? " (the grid has " + std::to_string(*staticTiles) + ")"
                           : std::string(" (the grid is sized at run time)"));
  Value one = cst(1);
  Value tiles;
  if (staticTiles) {
    tiles = cst(limit ? limit : *staticTiles);
  } else {
    tiles = extentIn(0, nullptr);
    for (unsigned d = 1; d < loops; ++d)
      tiles = arith::MulIOp::create(rewriter, loc, tiles, extentIn(d, nullptr));
  }
  auto launch = gpu::LaunchOp::create(rewriter, loc, tiles, one, one,
                                      one, one, one);
  Block &body = launch.getBody().front();
  rewriter.setInsertionPointToStart(&body);
  IRMapping map;
  recomputeInside(rewriter, recomputed, map);

  // t -> (s, t / S); t / S -> (b, h, qt): heads' tiles adjacent, heaviest
  // Q tile first.
  Value t = launch.getBlockIds().x;
  SmallVector<Value> loopIvs(par.getInductionVars());
  ArrayRef<Value> ivs = loopIvs;
  if (first) {
    Value ss = extentIn(0, &map);
    map.map(ivs[0], arith::RemUIOp::create(rewriter, loc, t, ss));
    t = arith::DivUIOp::create(rewriter, loc, t, ss);
    ivs = ivs.drop_front();
  }
  Value qts = extentIn(first + 2, &map);
  Value head = arith::DivUIOp::create(rewriter, loc, t, qts);
  Value hs = extentIn(first + 1, &map);
  map.map(ivs[0], arith::DivUIOp::create(rewriter, loc, head, hs));
  map.map(ivs[1], arith::RemUIOp::create(rewriter, loc, head, hs));
  Value last;
  if (std::optional<int64_t> n = foldIndex(extent[first + 2]))
    last = cst(*n - 1);
  else
    last = arith::SubIOp::create(rewriter, loc, qts, cst(1));
  map.map(ivs[2],
          arith::SubIOp::create(rewriter, loc, last,
                                arith::RemUIOp::create(rewriter, loc, t, qts)));
  for (Operation &op : par.getBody()->without_terminator())
    rewriter.clone(op, map);
  gpu::TerminatorOp::create(rewriter, loc);
  rewriter.eraseOp(par);
  return success();
}

namespace {
struct FlexAttnMapToGridPass
    : public flexattn::impl::FlexAttnMapToGridBase<FlexAttnMapToGridPass> {
  using FlexAttnMapToGridBase::FlexAttnMapToGridBase;

  void runOnOperation() override {
    IRRewriter rewriter(&getContext());
    for (auto par : opsHoldingTiles<scf::ParallelOp>(getOperation()))
      if (failed(mapToGrid(rewriter, par, tiles)))
        return signalPassFailure();
  }
};
} // namespace
