//===- AtomicDq.cpp - flexattn-atomic-dq ----------------------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// FlashAttention-2/3's atomic dQ for the GPU backward: where dq is an f32
// buffer, the KV-outer nest's steps add their dq contributions into it
// (`dq_sum`) and the Q-outer nest, which recomputed Q.Kᵀ and dO.Vᵀ only
// for dq, is removed: the backward does 2.5x the forward's work instead of
// 3.5x, at the price of an f32 dq the launcher zeroes and the caller
// converts, and of dq's summation order varying between runs.
//
//   fill 0 -> dq (f32)                  kv nest: steps dk(..) dv(..)
//   kv nest: steps dk(..) dv(..)   =>            dq_sum(%dq)
//   q nest:  steps dq(acc); store acc -> dq
//
// Applies only where every dq store writes one f32 function argument and
// the dq steps carry no capture gradients (those accumulate along the dq
// tiles); anything else is left as it is.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include "mlir/Dialect/Linalg/IR/Linalg.h"

namespace mlir::flexattn {
#define GEN_PASS_DEF_FLEXATTNATOMICDQ
#include "passes/Passes.h.inc"
} // namespace mlir::flexattn

using namespace mlir;
using namespace mlir::flexattn;

namespace {

/// The backward steps and tile stores under a top-level op of a function.
struct Nest {
  Operation *root;
  SmallVector<BackwardStepOp> steps;
  SmallVector<StoreTileOp> stores;
  bool dq() const {
    return llvm::any_of(steps, [](BackwardStepOp s) { return s.getDqAcc() != nullptr; });
  }
};

void atomicDq(RewriterBase &rewriter, func::FuncOp func) {
  SmallVector<Nest> nests;
  for (Operation &op : func.getBody().front().without_terminator()) {
    Nest nest{&op, {}, {}};
    op.walk([&](Operation *o) {
      if (auto step = dyn_cast<BackwardStepOp>(o))
        nest.steps.push_back(step);
      else if (auto store = dyn_cast<StoreTileOp>(o))
        nest.stores.push_back(store);
    });
    if (!nest.steps.empty())
      nests.push_back(std::move(nest));
  }
  const Nest *qNest = nullptr;
  SmallVector<BackwardStepOp> kvSteps;
  for (const Nest &nest : nests) {
    if (!nest.dq()) {
      llvm::append_range(kvSteps, nest.steps);
      continue;
    }
    if (qNest)
      return; // two dq nests: not flexattn-tile's form
    qNest = &nest;
  }
  if (!qNest || kvSteps.empty())
    return;
  // Every dq step without capture gradients, every store of the nest into
  // one f32 argument (the dq buffer).
  Value dq;
  for (BackwardStepOp step : qNest->steps)
    if (!step.getDqAcc() || step.getDkAcc() || step.getDvAcc() ||
        !step.getCaptureGrads().empty())
      return;
  for (StoreTileOp store : qNest->stores) {
    auto arg = dyn_cast<BlockArgument>(store.getDst());
    if (!arg || arg.getOwner() != &func.getBody().front() ||
        !cast<MemRefType>(arg.getType()).getElementType().isF32() || (dq && dq != arg))
      return;
    dq = arg;
  }
  if (!dq)
    return;
  BackwardStepOp first = qNest->steps.front();
  for (BackwardStepOp step : kvSteps)
    if (step.getDqSum() || step.getScale() != first.getScale())
      return;

  OpBuilder::InsertionGuard guard(rewriter);
  rewriter.setInsertionPoint(nests.front().root);
  Location loc = func.getLoc();
  Value zero = arith::ConstantOp::create(rewriter, loc, rewriter.getF32FloatAttr(0.0f));
  linalg::FillOp::create(rewriter, loc, zero, dq);
  for (BackwardStepOp step : kvSteps)
    rewriter.modifyOpInPlace(step, [&] { step.getDqSumMutable().assign(dq); });
  rewriter.eraseOp(qNest->root);
}

struct FlexAttnAtomicDqPass
    : public flexattn::impl::FlexAttnAtomicDqBase<FlexAttnAtomicDqPass> {
  void runOnOperation() override {
    IRRewriter rewriter(&getContext());
    for (auto func : getOperation().getOps<func::FuncOp>())
      atomicDq(rewriter, func);
  }
};

} // namespace
