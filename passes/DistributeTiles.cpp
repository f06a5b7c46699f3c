//===- DistributeTiles.cpp - flexattn-distribute-tiles ----------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// Turns a CPU kernel's top-level scf.parallel loops into one work queue: the
// function gains a counter argument, and every thread that runs the function
// claims tickets from it with an atomic fetch-and-add until none is left.
// The loops take consecutive ticket ranges (a thread leaving one loop carries
// its unused ticket into the next), so independent loops need no barrier.
// Tiles are numbered heaviest first (the last Q tiles, which a causal-like
// mask makes the most expensive, come first); dynamic claiming balances the
// rest. A function whose loops are not independent, or whose other top-level
// ops write shared memory, runs whole on the first thread to arrive.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include "mlir/IR/IRMapping.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "mlir/Interfaces/ViewLikeInterface.h"

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

/// The buffers a top-level op of `func` reads and writes (frees count as
/// writes), named by their roots: function arguments and buffers allocated at
/// the top level. Buffers the op allocates itself are left out; `unknown` is
/// set when an effect's buffer has another root or no buffer is named.
struct Accesses {
  llvm::SmallPtrSet<Value, 8> reads, writes;
  bool unknown = false;
};

Accesses accessesOf(Operation *op, func::FuncOp func) {
  Accesses acc;
  std::optional<SmallVector<MemoryEffects::EffectInstance>> effects =
      getEffectsRecursively(op);
  if (!effects) {
    acc.unknown = true;
    return acc;
  }
  for (const MemoryEffects::EffectInstance &e : *effects) {
    if (isa<MemoryEffects::Allocate>(e.getEffect()))
      continue;
    Value v = e.getValue();
    if (!v) {
      acc.unknown = true;
      continue;
    }
    while (auto view = v.getDefiningOp<ViewLikeOpInterface>())
      v = view.getViewSource();
    if (Operation *def = v.getDefiningOp()) {
      if (op->isAncestor(def))
        continue; // the op's own buffer
      if (def->getParentOp() != func || !isa<memref::AllocOp, memref::AllocaOp>(def)) {
        acc.unknown = true;
        continue;
      }
    } else if (cast<BlockArgument>(v).getOwner() != &func.getBody().front()) {
      acc.unknown = true;
      continue;
    }
    (isa<MemoryEffects::Read>(e.getEffect()) ? acc.reads : acc.writes).insert(v);
  }
  return acc;
}

bool intersects(const llvm::SmallPtrSet<Value, 8> &a,
                const llvm::SmallPtrSet<Value, 8> &b) {
  return llvm::any_of(a, [&](Value v) { return b.contains(v); });
}

/// Whether every thread may run `func`'s top-level ops with the loops'
/// tiles shared out: no loop writes a buffer another top-level op touches,
/// and the other ops write only buffers allocated in the function (each
/// thread then has its own copy).
bool canShareTiles(func::FuncOp func) {
  SmallVector<std::pair<Operation *, Accesses>> ops;
  for (Operation &op : func.getBody().front().without_terminator())
    ops.push_back({&op, accessesOf(&op, func)});
  for (auto &[op, acc] : ops) {
    if (acc.unknown)
      return false;
    bool loop = isa<scf::ParallelOp>(op);
    if (!loop && llvm::any_of(acc.writes, [](Value v) { return isa<BlockArgument>(v); }))
      return false;
    if (!loop)
      continue;
    for (auto &[other, otherAcc] : ops)
      if (other != op && (intersects(acc.writes, otherAcc.reads) ||
                          intersects(acc.writes, otherAcc.writes)))
        return false;
  }
  return true;
}

/// `counter[0]++` as an index.
Value claimTicket(OpBuilder &b, Location loc, Value counter) {
  Value one = arith::ConstantOp::create(b, loc, b.getI64IntegerAttr(1));
  Value claimed = memref::AtomicRMWOp::create(b, loc, arith::AtomicRMWKind::addi, one,
                                              counter, ValueRange{indexConst(b, loc, 0)});
  return arith::IndexCastOp::create(b, loc, b.getIndexType(), claimed);
}

/// Replaces `par` by `while (t < start + tiles(par)) { body(decode(t - start));
/// t = claim }` starting from `ticket`; returns (the ticket it leaves
/// unused, the end of its range).
std::pair<Value, Value> distributeLoop(RewriterBase &rewriter, scf::ParallelOp par,
                                       Value counter, Value ticket, Value start) {
  Location loc = par.getLoc();
  rewriter.setInsertionPoint(par);
  Value total = indexConst(rewriter, loc, 1);
  for (Value ub : par.getUpperBound())
    total = arith::MulIOp::create(rewriter, loc, total, ub);
  Value end = arith::AddIOp::create(rewriter, loc, start, total);
  Type index = rewriter.getIndexType();
  auto loop = scf::WhileOp::create(rewriter, loc, TypeRange{index}, ValueRange{ticket});
  Block *before = rewriter.createBlock(&loop.getBefore(), {}, {index}, {loc});
  Value t = before->getArgument(0);
  Value more = arith::CmpIOp::create(rewriter, loc, arith::CmpIPredicate::ult, t, end);
  scf::ConditionOp::create(rewriter, loc, more, ValueRange{t});

  Block *after = rewriter.createBlock(&loop.getAfter(), {}, {index}, {loc});
  Value tile = arith::SubIOp::create(rewriter, loc, after->getArgument(0), start);
  IRMapping map;
  map.map(par.getInductionVars(), decodeTile(rewriter, loc, par, tile));
  for (Operation &op : par.getBody()->without_terminator())
    rewriter.clone(op, map);
  scf::YieldOp::create(rewriter, loc, claimTicket(rewriter, loc, counter));
  rewriter.eraseOp(par);
  return {loop.getResult(0), end};
}

/// Wraps the body of `func` in `if (claim == 0)`: the first thread to
/// arrive runs it all, the others return.
void runOnFirstThread(RewriterBase &rewriter, func::FuncOp func, Value counter) {
  Block &body = func.getBody().front();
  Operation *ret = body.getTerminator();
  Location loc = func.getLoc();
  rewriter.setInsertionPointToStart(&body);
  Value first = arith::CmpIOp::create(rewriter, loc, arith::CmpIPredicate::eq,
                                      claimTicket(rewriter, loc, counter),
                                      indexConst(rewriter, loc, 0));
  auto ifOp = scf::IfOp::create(rewriter, loc, first, /*withElseRegion=*/false);
  Block *then = ifOp.thenBlock();
  Operation *from = ifOp->getNextNode();
  while (from != ret) {
    Operation *next = from->getNextNode();
    rewriter.moveOpBefore(from, then->getTerminator());
    from = next;
  }
}

} // namespace

LogicalResult mlir::flexattn::distributeTiles(RewriterBase &rewriter,
                                              func::FuncOp func) {
  if (func.isExternal() || !func.getBody().hasOneBlock())
    return success();
  auto loops = llvm::to_vector(func.getBody().front().getOps<scf::ParallelOp>());
  if (loops.empty())
    return success();
  for (scf::ParallelOp par : loops)
    if (par.getNumResults() || !isZeroOneLoop(par))
      return par.emitOpError() << "must start at 0, step by 1 and have no "
                               << "reductions to be distributed";
  if (func.getBody().front().getTerminator()->getNumOperands())
    return func.emitOpError() << "returns values; flexattn-distribute-tiles "
                              << "distributes kernels that write their results";

  Location loc = func.getLoc();
  MLIRContext *ctx = rewriter.getContext();
  auto counterType = MemRefType::get({1}, rewriter.getI64Type());
  unsigned argNo = func.getNumArguments();
  bool share = canShareTiles(func);
  if (failed(func.insertArgument(argNo, counterType,
                                 rewriter.getDictionaryAttr(rewriter.getNamedAttr(
                                     "flexattn.work_counter", UnitAttr::get(ctx))),
                                 loc)))
    return failure();
  Value counter = func.getArgument(argNo);

  OpBuilder::InsertionGuard guard(rewriter);
  if (!share) {
    runOnFirstThread(rewriter, func, counter);
    return success();
  }
  rewriter.setInsertionPoint(loops.front());
  Value ticket = claimTicket(rewriter, loc, counter);
  Value start = indexConst(rewriter, loc, 0);
  for (scf::ParallelOp par : loops)
    std::tie(ticket, start) = distributeLoop(rewriter, par, counter, ticket, start);
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
