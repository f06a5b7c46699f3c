//===- DistributeTiles.cpp - flexattn-distribute-tiles ----------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// Turns the CPU kernel's Q-tile scf.parallel into a work queue: the function
// gains a counter argument, and every thread that runs the function claims
// tiles from it with an atomic fetch-and-add until none is left. Tiles are
// numbered heaviest first (the last Q tiles, which a causal-like mask makes
// the most expensive, come first); dynamic claiming balances the rest.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include "mlir/IR/IRMapping.h"

namespace mlir::flexattn {
#define GEN_PASS_DEF_FLEXATTNDISTRIBUTETILES
#include "passes/Passes.h.inc"
} // namespace mlir::flexattn

using namespace mlir;
using namespace mlir::flexattn;

namespace {

/// The induction variables of `par` for tile number `t`: the last dimension
/// counts down from its end, slowest, and the others count up row-major
/// within it, so all tiles of one Q-tile index are claimed together.
SmallVector<Value> decodeTile(OpBuilder &b, Location loc, scf::ParallelOp par,
                              Value t) {
  ValueRange ubs = par.getUpperBound();
  size_t n = ubs.size();
  Value inner = indexConst(b, loc, 1);
  for (Value ub : ubs.drop_back())
    inner = arith::MulIOp::create(b, loc, inner, ub);
  Value outer = arith::DivUIOp::create(b, loc, t, inner);
  Value rest = arith::RemUIOp::create(b, loc, t, inner);
  SmallVector<Value> ivs(n);
  Value lastMinusOne = arith::SubIOp::create(b, loc, ubs.back(), indexConst(b, loc, 1));
  ivs[n - 1] = arith::SubIOp::create(b, loc, lastMinusOne, outer);
  for (size_t d = n - 1; d-- > 0;) {
    ivs[d] = arith::RemUIOp::create(b, loc, rest, ubs[d]);
    rest = arith::DivUIOp::create(b, loc, rest, ubs[d]);
  }
  return ivs;
}

bool isZeroOneLoop(scf::ParallelOp par) {
  auto isConst = [](Value v, int64_t c) {
    auto cst = getConstantIntValue(v);
    return cst && *cst == c;
  };
  return llvm::all_of(par.getLowerBound(), [&](Value v) { return isConst(v, 0); }) &&
         llvm::all_of(par.getStep(), [&](Value v) { return isConst(v, 1); });
}

} // namespace

LogicalResult mlir::flexattn::distributeTiles(RewriterBase &rewriter,
                                              func::FuncOp func) {
  SmallVector<scf::ParallelOp> loops;
  for (auto par : func.getBody().getOps<scf::ParallelOp>())
    loops.push_back(par);
  if (loops.empty())
    return success();
  if (loops.size() > 1)
    return loops[1].emitOpError()
           << "is a second top-level scf.parallel; flexattn-distribute-tiles "
           << "shares one work counter per function";
  scf::ParallelOp par = loops.front();
  if (par.getNumResults() || !isZeroOneLoop(par))
    return par.emitOpError() << "must start at 0, step by 1 and have no "
                             << "reductions to be distributed";

  Location loc = par.getLoc();
  MLIRContext *ctx = rewriter.getContext();
  auto i64 = rewriter.getI64Type();
  auto counterType = MemRefType::get({1}, i64);
  unsigned argNo = func.getNumArguments();
  if (failed(func.insertArgument(argNo, counterType,
                                 rewriter.getDictionaryAttr(rewriter.getNamedAttr(
                                     "flexattn.work_counter", UnitAttr::get(ctx))),
                                 loc)))
    return failure();
  Value counter = func.getArgument(argNo);

  OpBuilder::InsertionGuard guard(rewriter);
  rewriter.setInsertionPoint(par);
  Value total = indexConst(rewriter, loc, 1);
  for (Value ub : par.getUpperBound())
    total = arith::MulIOp::create(rewriter, loc, total, ub);

  // while ((t = counter++) < total) body(decode(t))
  auto loop = scf::WhileOp::create(rewriter, loc, TypeRange{rewriter.getIndexType()},
                                   ValueRange{});
  Block *before = rewriter.createBlock(&loop.getBefore());
  rewriter.setInsertionPointToStart(before);
  Value one = arith::ConstantOp::create(rewriter, loc, rewriter.getI64IntegerAttr(1));
  Value claimed = memref::AtomicRMWOp::create(
      rewriter, loc, arith::AtomicRMWKind::addi, one, counter,
      ValueRange{indexConst(rewriter, loc, 0)});
  Value t = arith::IndexCastOp::create(rewriter, loc, rewriter.getIndexType(), claimed);
  Value more = arith::CmpIOp::create(rewriter, loc, arith::CmpIPredicate::ult, t, total);
  scf::ConditionOp::create(rewriter, loc, more, ValueRange{t});

  Block *after = rewriter.createBlock(&loop.getAfter(), {}, {rewriter.getIndexType()}, {loc});
  rewriter.setInsertionPointToStart(after);
  IRMapping map;
  map.map(par.getInductionVars(), decodeTile(rewriter, loc, par, after->getArgument(0)));
  for (Operation &op : par.getBody()->without_terminator())
    rewriter.clone(op, map);
  scf::YieldOp::create(rewriter, loc);
  rewriter.eraseOp(par);
  return success();
}

namespace {
struct FlexAttnDistributeTilesPass
    : public flexattn::impl::FlexAttnDistributeTilesBase<
          FlexAttnDistributeTilesPass> {
  void runOnOperation() override {
    IRRewriter rewriter(&getContext());
    WalkResult r = getOperation()->walk([&](func::FuncOp func) {
      return failed(distributeTiles(rewriter, func)) ? WalkResult::interrupt()
                                                     : WalkResult::advance();
    });
    if (r.wasInterrupted())
      signalPassFailure();
  }
};
} // namespace
