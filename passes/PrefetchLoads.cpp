//===- PrefetchLoads.cpp - a KV loop's uniform loads, iterations ahead -*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// See PrefetchLoads.h.
//
//===----------------------------------------------------------------------===//

#include "passes/PrefetchLoads.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "mlir/Interfaces/ViewLikeInterface.h"

using namespace mlir;
using namespace mlir::flexattn;

namespace {

/// Which values of a launch every thread of the CTA has alike: those
/// defined outside it, its block ids and sizes, the induction variables of
/// loops with such bounds, and pure ops and loads of such values; never the
/// thread ids, loop-carried values or results of ops with regions.
class Uniformity {
public:
  explicit Uniformity(gpu::LaunchOp launch) : launch(launch) {}

  bool operator()(Value v) {
    if (auto it = memo.find(v); it != memo.end())
      return it->second;
    bool r = compute(v);
    memo[v] = r;
    return r;
  }

private:
  bool compute(Value v) {
    if (!launch->isAncestor(v.getParentRegion()->getParentOp()))
      return true;
    if (auto arg = dyn_cast<BlockArgument>(v)) {
      if (arg.getOwner() == &launch.getBody().front()) {
        gpu::KernelDim3 tid = launch.getThreadIds();
        return v != tid.x && v != tid.y && v != tid.z;
      }
      auto loop = dyn_cast<scf::ForOp>(arg.getOwner()->getParentOp());
      return loop && v == loop.getInductionVar() && (*this)(loop.getLowerBound()) &&
             (*this)(loop.getUpperBound()) && (*this)(loop.getStep());
    }
    Operation *def = v.getDefiningOp();
    if (isa<gpu::ThreadIdOp, gpu::LaneIdOp>(def) || def->getNumRegions())
      return false;
    if (!isa<memref::LoadOp>(def) && !isMemoryEffectFree(def))
      return false;
    return llvm::all_of(def->getOperands(), [&](Value o) { return (*this)(o); });
  }

  gpu::LaunchOp launch;
  DenseMap<Value, bool> memo;
};

/// Whether `launch` only loads from `memref` (defined outside it): every
/// use inside it is a memref.load or a view whose uses are.
bool readOnlyIn(gpu::LaunchOp launch, Value memref) {
  if (launch->isAncestor(memref.getParentRegion()->getParentOp()))
    return false;
  SmallVector<Value> work = {memref};
  while (!work.empty()) {
    Value m = work.pop_back_val();
    for (OpOperand &use : m.getUses()) {
      Operation *user = use.getOwner();
      if (!launch->isAncestor(user))
        continue;
      if (auto load = dyn_cast<memref::LoadOp>(user); load && use.get() == load.getMemRef())
        continue;
      if (isa<ViewLikeOpInterface>(user) && isPure(user)) {
        llvm::append_range(work, user->getResults());
        continue;
      }
      return false;
    }
  }
  return true;
}

/// Whether `op` only computes and reads memrefs `launch` only reads: a pure
/// op without regions, a load of such a memref, or an scf.if of those.
bool onlyReads(gpu::LaunchOp launch, Operation *op) {
  if (auto load = dyn_cast<memref::LoadOp>(op))
    return readOnlyIn(launch, load.getMemRef());
  if (auto ifOp = dyn_cast<scf::IfOp>(op)) {
    bool ok = true;
    ifOp->walk([&](Operation *inner) {
      if (inner != op && !isa<scf::YieldOp>(inner))
        ok = ok && onlyReads(launch, inner);
    });
    return ok;
  }
  return !op->getNumRegions() && isMemoryEffectFree(op);
}

/// The values `op` and the ops of its regions take from above it.
SmallVector<Value> usedValues(Operation *op) {
  SmallVector<Value> used(op->getOperands());
  op->walk([&](Operation *inner) {
    if (inner != op)
      for (Value v : inner->getOperands())
        if (!op->isAncestor(v.getParentRegion()->getParentOp()))
          used.push_back(v);
  });
  return used;
}

/// The analysis of a loop body's top-level ops: which are computable from
/// the induction variable and uniform values defined outside the loop
/// (pure ops, loads of read-only memrefs, scf.if of those), their depth
/// (loads on the way, the op's own included) and whether they depend on the
/// induction variable.
struct BodyAnalysis {
  scf::ForOp loop;
  gpu::LaunchOp launch;
  Uniformity uniform;
  DenseMap<Operation *, int64_t> depth; // the computable ops
  DenseSet<Operation *> onIv;

  BodyAnalysis(gpu::LaunchOp launch, scf::ForOp loop)
      : loop(loop), launch(launch), uniform(launch) {
    for (Operation &op : loop.getBody()->without_terminator())
      visit(&op);
  }

  bool computable(Operation *op) const { return depth.contains(op); }

  /// The ops a loop-carried copy replaces: loads (or scf.if holding one)
  /// that depend on the induction variable, of scalar results.
  bool carried(Operation *op) const {
    if (!computable(op) || !onIv.contains(op))
      return false;
    if (isa<memref::LoadOp>(op))
      return true;
    auto ifOp = dyn_cast<scf::IfOp>(op);
    bool loads = false;
    if (ifOp)
      ifOp->walk([&](memref::LoadOp) { loads = true; });
    return loads && llvm::all_of(op->getResultTypes(), [](Type t) {
             return isa<IntegerType, IndexType, FloatType>(t);
           });
  }

private:
  /// Folds `v` (an operand of a candidate) into `d` / `iv`; false where it
  /// is not computable.
  bool operand(Value v, int64_t &d, bool &iv) {
    if (v == loop.getInductionVar()) {
      iv = true;
      return true;
    }
    if (loop.isDefinedOutsideOfLoop(v))
      return uniform(v);
    Operation *def = v.getDefiningOp();
    if (!def || def->getBlock() != loop.getBody() || !computable(def))
      return false;
    d = std::max(d, depth.lookup(def));
    iv |= onIv.contains(def);
    return true;
  }

  void visit(Operation *op) {
    int64_t d = 0;
    bool iv = false;
    auto all = [&](ValueRange vs) {
      return llvm::all_of(vs, [&](Value v) { return operand(v, d, iv); });
    };
    if (auto load = dyn_cast<memref::LoadOp>(op)) {
      if (!readOnlyIn(launch, load.getMemRef()) || !all(load.getIndices()))
        return;
      ++d;
    } else if (isa<scf::IfOp>(op)) {
      if (!onlyReads(launch, op) || !all(usedValues(op)))
        return;
      ++d;
    } else if (op->getNumRegions() || !isMemoryEffectFree(op) || !all(op->getOperands())) {
      return;
    }
    depth[op] = d;
    if (iv)
      onIv.insert(op);
  }
};

/// Rebuilds the loop with its carried loads in iter_args.
class Pipeline {
public:
  /// Carries the loads after `wait` and the loads their addresses need.
  Pipeline(RewriterBase &rewriter, BodyAnalysis &a, Operation *wait)
      : rewriter(rewriter), a(a), loop(a.loop) {
    Block *body = a.loop.getBody();
    SmallVector<Operation *> work;
    for (Operation &op : body->without_terminator())
      if (a.carried(&op) && wait->isBeforeInBlock(&op))
        work.push_back(&op);
    DenseSet<Operation *> seen;
    while (!work.empty()) {
      Operation *op = work.pop_back_val();
      if (!seen.insert(op).second)
        continue;
      if (a.carried(op))
        chosen.insert(op);
      op->walk([&](Operation *inner) {
        for (Value v : inner->getOperands())
          if (Operation *def = v.getDefiningOp(); def && def->getBlock() == body)
            work.push_back(def);
      });
    }
    for (Operation &op : body->without_terminator())
      if (chosen.contains(&op))
        ops.push_back(&op);
    // Shallow loads first: a deeper one's address needs their values.
    llvm::stable_sort(ops, [&](Operation *x, Operation *y) {
      return a.depth.lookup(x) < a.depth.lookup(y);
    });
    for (Operation *op : ops)
      maxDepth = std::max(maxDepth, a.depth.lookup(op));
  }

  int64_t run() {
    if (ops.empty())
      return 0;
    scf::ForOp old = loop;
    Location loc = old.getLoc();
    // Slots of iterations lb, lb + 1, ... before the loop.
    rewriter.setInsertionPoint(old);
    for (Operation *op : ops)
      for (int64_t k = 0; k < ahead(op); ++k)
        slots[{op, k}] = fresh(op, k, old.getLowerBound());
    SmallVector<Value> inits(old.getInitArgs());
    for (Operation *op : ops)
      for (int64_t k = 0; k < ahead(op); ++k)
        llvm::append_range(inits, slots[{op, k}]);

    // The same body in a loop that carries the slots too.
    auto grown = scf::ForOp::create(rewriter, loc, old.getLowerBound(), old.getUpperBound(),
                                    old.getStep(), inits);
    Block *body = grown.getBody(), *oldBody = old.getBody();
    if (!body->empty())
      rewriter.eraseOp(body->getTerminator());
    for (auto [from, to] : llvm::zip(oldBody->getArguments(), body->getArguments()))
      rewriter.replaceAllUsesWith(from, to);
    body->getOperations().splice(body->end(), oldBody->getOperations());
    loop = grown;
    size_t next = old.getNumRegionIterArgs() + 1;
    slots.clear();
    for (Operation *op : ops)
      for (int64_t k = 0; k < ahead(op); ++k)
        for (size_t r = 0; r < op->getNumResults(); ++r)
          slots[{op, k}].push_back(body->getArgument(next++));

    // The values of iteration j + ahead, loaded at the body's start.
    rewriter.setInsertionPointToStart(body);
    DenseMap<Operation *, SmallVector<Value>> later;
    for (Operation *op : ops)
      later[op] = fresh(op, ahead(op), grown.getInductionVar());
    // The body's uses take slot 0; the yield shifts the slots by one.
    auto yield = cast<scf::YieldOp>(body->getTerminator());
    SmallVector<Value> yields(yield.getOperands());
    for (Operation *op : ops) {
      for (int64_t k = 1; k < ahead(op); ++k)
        llvm::append_range(yields, slots[{op, k}]);
      llvm::append_range(yields, later[op]);
    }
    rewriter.modifyOpInPlace(yield, [&] { yield->setOperands(yields); });
    for (Operation *op : ops) {
      rewriter.replaceAllUsesWith(op->getResults(), slots[{op, 0}]);
      rewriter.eraseOp(op);
    }
    rewriter.replaceOp(old, grown.getResults().take_front(old.getNumResults()));
    return ops.size();
  }

private:
  int64_t ahead(Operation *op) const { return maxDepth - a.depth.lookup(op) + 1; }

  /// `base + k` steps.
  Value offset(Value base, int64_t k) {
    if (!k)
      return base;
    Location loc = loop.getLoc();
    Value step = loop.getStep();
    Value kv = arith::ConstantOp::create(rewriter, loc, rewriter.getIntegerAttr(base.getType(), k));
    return arith::AddIOp::create(rewriter, loc, base,
                                 arith::MulIOp::create(rewriter, loc, step, kv));
  }

  /// `op`'s results at iteration base + k, computed under `if` that
  /// iteration exists (else zeros).
  SmallVector<Value> fresh(Operation *op, int64_t k, Value base) {
    Location loc = op->getLoc();
    Value at = offset(base, k);
    Value exists = arith::CmpIOp::create(rewriter, loc, arith::CmpIPredicate::slt, at,
                                         loop.getUpperBound());
    auto ifOp = scf::IfOp::create(rewriter, loc, op->getResultTypes(), exists,
                                  /*withElseRegion=*/true);
    OpBuilder::InsertionGuard guard(rewriter);
    rewriter.setInsertionPointToStart(&ifOp.getThenRegion().front());
    IRMapping map;
    scf::YieldOp::create(rewriter, loc, cloneAt(op, k, at, map)->getResults());
    rewriter.setInsertionPointToStart(&ifOp.getElseRegion().front());
    SmallVector<Value> zeros;
    for (Type t : op->getResultTypes())
      zeros.push_back(arith::ConstantOp::create(rewriter, loc, rewriter.getZeroAttr(t)));
    scf::YieldOp::create(rewriter, loc, zeros);
    return ifOp.getResults();
  }

  /// `v` (a value of the original body) at iteration `at` = j + k: the
  /// induction variable's offset, a carried slot, or a clone of the pure
  /// op (or of a load that does not depend on the iteration) computing it.
  Value value(Value v, int64_t k, Value at, IRMapping &map) {
    if (Value known = map.lookupOrNull(v))
      return known;
    if (v == loop.getInductionVar())
      return at;
    if (loop.isDefinedOutsideOfLoop(v))
      return v;
    Operation *def = v.getDefiningOp();
    if (chosen.contains(def)) {
      auto it = slots.find({def, k});
      assert(it != slots.end() && "a carried op is needed further ahead than it runs");
      return it->second[cast<OpResult>(v).getResultNumber()];
    }
    return cloneAt(def, k, at, map)->getResult(cast<OpResult>(v).getResultNumber());
  }

  /// A clone of `op` (of the original body) at iteration `at` = j + k: its
  /// operands and the values its regions take from above mapped there.
  Operation *cloneAt(Operation *op, int64_t k, Value at, IRMapping &map) {
    for (Value v : usedValues(op))
      map.map(v, value(v, k, at, map));
    return rewriter.clone(*op, map);
  }

  RewriterBase &rewriter;
  BodyAnalysis &a;
  scf::ForOp loop; // the loop being rebuilt (the grown one once it exists)
  SmallVector<Operation *> ops; // the carried ops, shallow first
  DenseSet<Operation *> chosen; // and as a set
  int64_t maxDepth = 0;
  std::map<std::pair<Operation *, int64_t>, SmallVector<Value>> slots;
};

} // namespace

int64_t mlir::flexattn::prefetchUniformLoads(RewriterBase &rewriter, gpu::LaunchOp launch,
                                              scf::ForOp loop, Operation *wait) {
  BodyAnalysis analysis(launch, loop);
  OpBuilder::InsertionGuard guard(rewriter);
  return Pipeline(rewriter, analysis, wait).run();
}

int64_t mlir::flexattn::hoistLoadsAbove(RewriterBase &rewriter, gpu::LaunchOp launch,
                                         Operation *wait, Operation *end) {
  // The ops between wait and end that only read, whose operands are such
  // ops or come from above wait, in order.
  DenseSet<Operation *> movable;
  SmallVector<Operation *> roots;
  for (Operation *op = wait->getNextNode(); op && op != end; op = op->getNextNode()) {
    if (!onlyReads(launch, op) || !llvm::all_of(usedValues(op), [&](Value v) {
          Operation *def = v.getDefiningOp();
          return !def || def->getBlock() != wait->getBlock() || def->isBeforeInBlock(wait) ||
                 movable.contains(def);
        }))
      continue;
    movable.insert(op);
    bool loads = false;
    op->walk([&](memref::LoadOp) { loads = true; });
    if (loads)
      roots.push_back(op);
  }
  // The loads and the ops they need, moved above wait in their order.
  DenseSet<Operation *> moved;
  SmallVector<Operation *> work(roots);
  while (!work.empty()) {
    Operation *op = work.pop_back_val();
    if (!movable.contains(op) || !moved.insert(op).second)
      continue;
    for (Value v : usedValues(op))
      if (Operation *def = v.getDefiningOp())
        work.push_back(def);
  }
  SmallVector<Operation *> order;
  for (Operation *op = wait->getNextNode(); op && op != end; op = op->getNextNode())
    if (moved.contains(op))
      order.push_back(op);
  for (Operation *op : order)
    rewriter.moveOpBefore(op, wait);
  return order.size();
}
