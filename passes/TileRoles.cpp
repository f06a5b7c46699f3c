//===- TileRoles.cpp - re-emitting a CTA's tile body for one role -*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//

#include "passes/TileRoles.h"

#include "mlir/Interfaces/SideEffectInterfaces.h"

using namespace mlir;
using namespace mlir::flexattn;

namespace {

bool holdsTileOps(Operation *op) {
  return op
      ->walk([](Operation *inner) {
        return isa<TileStepOp, FinalizeOp>(inner) ? WalkResult::interrupt()
                                                   : WalkResult::advance();
      })
      .wasInterrupted();
}

struct Emitter {
  ImplicitLocOpBuilder &b;
  const TileBody &tile;
  IRMapping &map;
  RoleEmitter &role;
  bool inTile = false;

  LogicalResult emitBlock(Block &block) {
    for (Operation &op : block.without_terminator())
      if (failed(emit(op)))
        return failure();
    return success();
  }

  LogicalResult emit(Operation &op) {
    if (auto alloca = dyn_cast<memref::AllocaOp>(op);
        alloca && tile.isState(alloca)) {
      if (inTile)
        return success();
      inTile = true;
      return role.beginTile(b, map);
    }
    if (auto fill = dyn_cast<linalg::FillOp>(op);
        fill && fill.getOutputs().size() == 1 &&
        tile.isState(fill.getOutputs().front()))
      return success();
    if (auto step = dyn_cast<TileStepOp>(op))
      return role.step(b, step, map);
    if (auto fin = dyn_cast<FinalizeOp>(op)) {
      inTile = false;
      return role.finalize(b, fin, map);
    }
    if (!holdsTileOps(&op)) {
      b.clone(op, map);
      return success();
    }
    if (auto scope = dyn_cast<memref::AllocaScopeOp>(op);
        scope && scope.getNumResults() == 0)
      return emitBlock(scope.getBodyRegion().front());
    if (auto loop = dyn_cast<scf::ForOp>(op); loop && loop.getNumResults() == 0)
      return emitLoop(loop);
    return op.emitOpError("expected flexattn.tile_step and flexattn.finalize "
                          "only inside scf.for loops and "
                          "memref.alloca_scope ops without results");
  }

  LogicalResult emitLoop(scf::ForOp loop) {
    if (failed(role.beforeLoop(b, loop, map)))
      return failure();
    LogicalResult result = success();
    auto newLoop = scf::ForOp::create(
        b, map.lookupOrDefault(loop.getLowerBound()),
        map.lookupOrDefault(loop.getUpperBound()),
        map.lookupOrDefault(loop.getStep()), role.carried(),
        [&](OpBuilder &nb, Location loc, Value iv, ValueRange iterArgs) {
          OpBuilder::InsertionGuard guard(b);
          b.setInsertionPoint(nb.getInsertionBlock(), nb.getInsertionPoint());
          map.map(loop.getInductionVar(), iv);
          role.setCarried(iterArgs);
          result = emitBlock(*loop.getBody());
          scf::YieldOp::create(b, role.carried());
        });
    if (failed(result))
      return failure();
    role.setCarried(newLoop.getResults());
    return success();
  }
};

} // namespace

FailureOr<TileBody> TileBody::find(Operation *anchor,
                                   ArrayRef<Operation *> ops) {
  TileBody t;
  bool twoFinalizes = false;
  for (Operation *op : ops)
    op->walk([&](Operation *inner) {
      if (auto step = dyn_cast<TileStepOp>(inner))
        t.steps.push_back(step);
      if (auto fin = dyn_cast<FinalizeOp>(inner)) {
        twoFinalizes |= bool(t.finalize);
        t.finalize = fin;
      }
    });
  if (!t.finalize || twoFinalizes)
    return anchor->emitOpError("expected one flexattn.finalize in the CTA "
                               "body (one Q tile per CTA iteration)");
  if (t.steps.empty())
    return anchor->emitOpError("found no flexattn.tile_step; run "
                               "flexattn-block-sparsity first");
  t.acc = t.finalize.getAcc();
  t.max = t.finalize.getMax();
  t.sum = t.finalize.getSum();
  TileStepOp first = t.steps.front();
  for (TileStepOp step : t.steps)
    if (step.getAcc() != t.acc || step.getMax() != t.max ||
        step.getSum() != t.sum || step.getQ() != first.getQ() ||
        step.getK() != first.getK() || step.getV() != first.getV() ||
        step.getTileSize() != first.getTileSize())
      return step.emitOpError("every flexattn.tile_step of a CTA must update "
                              "the finalized state from the same q/k/v and "
                              "tile size");
  return t;
}

LogicalResult mlir::flexattn::emitRole(ImplicitLocOpBuilder &b,
                                       ArrayRef<Operation *> ops,
                                       const TileBody &tile, IRMapping &map,
                                       RoleEmitter &role) {
  Emitter e{b, tile, map, role};
  for (Operation *op : ops)
    if (failed(e.emit(*op)))
      return failure();
  return success();
}

FailureOr<TileCoordinates>
mlir::flexattn::tileCoordinates(FinalizeOp fin, gpu::LaunchOp launch,
                                const IRMapping &map) {
  auto available = [&](Value v) -> Value {
    if (Value mapped = map.lookupOrNull(v))
      return mapped;
    Operation *def = v.getDefiningOp();
    return def && launch->isProperAncestor(def) ? Value() : v;
  };
  TileCoordinates at{available(fin.getB()), available(fin.getH()),
                     available(fin.getQ0())};
  if (!at.b || !at.h || !at.q0)
    return fin.emitOpError("the GPU role passes expect the Q tile's "
                           "coordinates to be computed before its state "
                           "buffers");
  return at;
}

FailureOr<SmallVector<Value>>
mlir::flexattn::valuesAtIteration(ImplicitLocOpBuilder &b, scf::ForOp loop,
                                  const IRMapping &map, Value iv, Value valid,
                                  ValueRange values, StringRef pass) {
  Block *body = loop.getBody();
  SetVector<Operation *> slice;
  SmallVector<Value> work(values);
  while (!work.empty()) {
    Operation *def = work.pop_back_val().getDefiningOp();
    if (!def || def->getBlock() != body || slice.contains(def))
      continue;
    if (def->getNumRegions() || !(isMemoryEffectFree(def) || isa<memref::LoadOp>(def)))
      return def->emitOpError() << pass << " recomputes values of a loop body for a later "
                                           "iteration; they must come from loads and pure "
                                           "ops without regions";
    slice.insert(def);
    llvm::append_range(work, def->getOperands());
  }
  auto ifOp = scf::IfOp::create(b, values.getTypes(), valid, /*withElseRegion=*/true);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(&ifOp.getThenRegion().front());
  IRMapping local = map;
  local.map(loop.getInductionVar(), iv);
  for (Operation &inner : *body)
    if (slice.contains(&inner))
      b.clone(inner, local);
  scf::YieldOp::create(
      b, llvm::map_to_vector(values, [&](Value v) { return local.lookupOrDefault(v); }));
  b.setInsertionPointToStart(&ifOp.getElseRegion().front());
  Value zero = arith::ConstantIndexOp::create(b, 0);
  scf::YieldOp::create(b, SmallVector<Value>(values.size(), zero));
  return SmallVector<Value>(ifOp.getResults());
}
