//===- ExactIntToFloat.cpp - flexattn-exact-int-to-float --------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// A score_mod that turns an index into a float (a relative bias's
// `q_idx - kv_idx`, ALiBi's distance) pays an integer op and a conversion
// per score (I2FP on sm_90a; on sm_80 I2F, on the quarter-rate unit that
// also runs P's exp2). Where integer range analysis proves it exact, the
// conversion becomes f32 arithmetic instead: a sum or difference of leaves
// that many scores share (a row's q_idx, the thread's first column of the
// tile) and constants is summed in f32, leaves first and the constant
// last, so each score adds one immediate; a lone value x with
// -2^22 <= x < 2^22 converts with two full-rate ops: 0x4B400000 is the bit
// pattern of 1.5 * 2^23, whose ulp is 1; adding x to the pattern adds x to
// the mantissa without leaving the binade, so the pattern reads
// 12582912 + x, and subtracting 12582912.0 leaves x exactly. The fragment
// lowering clamps the mods' indices to the sequence lengths (no-ops) so
// that the analysis sees the bounds.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include "mlir/Analysis/DataFlow/IntegerRangeAnalysis.h"
#include "mlir/Analysis/DataFlow/Utils.h"
#include "mlir/Analysis/DataFlowFramework.h"

namespace mlir::flexattn {
#define GEN_PASS_DEF_FLEXATTNEXACTINTTOFLOAT
#include "passes/Passes.h.inc"
} // namespace mlir::flexattn

using namespace mlir;
using namespace mlir::flexattn;

namespace {

constexpr int64_t kMagicLimit = int64_t(1) << 22; // |x| below it: the add trick
constexpr int64_t kExactLimit = int64_t(1) << 24; // |x| up to it: f32 holds x
constexpr int32_t kMagicBits = 0x4B400000;        // 1.5 * 2^23
constexpr float kMagic = 12582912.0f;

/// The signed range analysis proves for `v`, if any (at most 64 bits).
std::optional<std::pair<int64_t, int64_t>> signedRange(DataFlowSolver &solver, Value v) {
  auto *lattice = solver.lookupState<dataflow::IntegerValueRangeLattice>(v);
  if (!lattice || lattice->getValue().isUninitialized())
    return std::nullopt;
  const ConstantIntRanges &range = lattice->getValue().getValue();
  if (range.smin().getBitWidth() > 64)
    return std::nullopt;
  return std::make_pair(range.smin().getSExtValue(), range.smax().getSExtValue());
}

/// -limit <= v < limit.
bool within(DataFlowSolver &solver, Value v, int64_t limit) {
  auto r = signedRange(solver, v);
  return r && r->first >= -limit && r->second < limit;
}

/// |v| <= 2^24: f32 holds v, and a sum or difference of such values that is
/// one too is computed exactly.
bool exact(DataFlowSolver &solver, Value v) {
  auto r = signedRange(solver, v);
  return r && r->first >= -kExactLimit && r->second <= kExactLimit;
}

unsigned widthOf(Type t) { return t.isIndex() ? 64 : t.getIntOrFloatBitWidth(); }

/// The operand of a cast that keeps `v`'s signed value: a sign extension
/// (index_cast to a wider type included), or a truncation to at least 32
/// bits of a value f32 holds exactly.
Value valueKeepingOperand(DataFlowSolver &solver, Value v) {
  Operation *op = v.getDefiningOp();
  if (!op || !isa<arith::ExtSIOp, arith::IndexCastOp, arith::TruncIOp>(op))
    return {};
  Value x = op->getOperand(0);
  if (widthOf(x.getType()) <= widthOf(v.getType()))
    return isa<arith::TruncIOp>(op) ? Value() : x;
  return widthOf(v.getType()) >= 32 && exact(solver, x) ? x : Value();
}

/// Rewrites int -> f32 conversions of one function-like body.
struct Converter {
  DataFlowSolver &solver;
  IRRewriter &rewriter;
  DenseMap<Value, Value> leaves; // integer leaf -> its f32

  /// A leaf worth converting on its own: a constant, or a value several
  /// ops use (a row's q_idx, a tile's start): its conversion is shared.
  static bool shared(Value v) {
    return matchPattern(v, m_Constant()) || isa<BlockArgument>(v) || !v.hasOneUse();
  }

  /// A sum of signed terms: shared leaves and a constant.
  struct Sum {
    SmallVector<std::pair<Value, bool>> terms; // leaf, negated
    int64_t constant = 0;
    int64_t bound = 0; // sum of the terms' magnitudes
  };

  /// Splits `v` (sums, differences, value-keeping casts, every node exact)
  /// into `sum`'s terms, `negate`d; false where a leaf is not shared
  /// (`sharedCast`: a cast of it is).
  bool collect(Value v, bool negate, Sum &sum, int depth = 0, bool sharedCast = false) {
    if (depth > 16 || !exact(solver, v))
      return false;
    APInt c;
    if (matchPattern(v, m_ConstantInt(&c))) {
      int64_t k = c.getSExtValue();
      sum.constant += negate ? -k : k;
      sum.bound += k < 0 ? -k : k;
      return true;
    }
    if (Operation *op = v.getDefiningOp(); op && isa<arith::AddIOp, arith::SubIOp>(op))
      return collect(op->getOperand(0), negate, sum, depth + 1) &&
             collect(op->getOperand(1), negate != isa<arith::SubIOp>(op), sum, depth + 1);
    // A leaf is shared where any cast of it is (casts are CSE'd already).
    if (Value x = valueKeepingOperand(solver, v))
      return collect(x, negate, sum, depth + 1, sharedCast || shared(v));
    auto r = signedRange(solver, v);
    if (!(sharedCast || shared(v)) || !r)
      return false;
    sum.terms.push_back({v, negate});
    sum.bound += std::max(-r->first, r->second);
    return true;
  }

  /// `v` as f32: the add trick where |v| < 2^22, else sitofp (through i64
  /// for an index).
  Value convertLeaf(Value v) {
    if (Value f = leaves.lookup(v))
      return f;
    OpBuilder::InsertionGuard guard(rewriter);
    rewriter.setInsertionPointAfterValue(v);
    Location loc = v.getLoc();
    Type f32 = rewriter.getF32Type(), i32 = rewriter.getI32Type();
    Value f;
    APInt c;
    if (matchPattern(v, m_ConstantInt(&c))) {
      f = arith::ConstantOp::create(rewriter, loc,
                                    rewriter.getF32FloatAttr(float(c.getSExtValue())));
    } else if (within(solver, v, kMagicLimit)) {
      Value x32 = v;
      if (v.getType().isIndex())
        x32 = arith::IndexCastOp::create(rewriter, loc, i32, v);
      else if (widthOf(v.getType()) > 32)
        x32 = arith::TruncIOp::create(rewriter, loc, i32, v);
      else if (widthOf(v.getType()) < 32)
        x32 = arith::ExtSIOp::create(rewriter, loc, i32, v);
      Value bits = arith::AddIOp::create(
          rewriter, loc, x32, arith::ConstantIntOp::create(rewriter, loc, i32, kMagicBits));
      Value biased = arith::BitcastOp::create(rewriter, loc, f32, bits);
      f = arith::SubFOp::create(
          rewriter, loc, biased,
          arith::ConstantOp::create(rewriter, loc, rewriter.getF32FloatAttr(kMagic)));
    } else {
      Value x = v;
      if (v.getType().isIndex())
        x = arith::IndexCastOp::create(rewriter, loc, rewriter.getI64Type(), v);
      f = arith::SIToFPOp::create(rewriter, loc, f32, x);
    }
    leaves[v] = f;
    return f;
  }

  /// The sum in f32, its leaves in order and the constant last, so that a
  /// row's and a tile's leaves combine once and each score adds only its
  /// column's constant. Exact: every partial sum is an integer of
  /// magnitude at most sum.bound <= 2^24.
  Value convert(const Sum &sum, Location loc) {
    Value acc;
    for (auto [leaf, negated] : sum.terms) {
      Value f = convertLeaf(leaf);
      if (!acc)
        acc = negated ? arith::NegFOp::create(rewriter, loc, f).getResult() : f;
      else if (negated)
        acc = arith::SubFOp::create(rewriter, loc, acc, f);
      else
        acc = arith::AddFOp::create(rewriter, loc, acc, f);
    }
    Value k = arith::ConstantOp::create(rewriter, loc,
                                        rewriter.getF32FloatAttr(float(sum.constant)));
    if (!acc)
      return k;
    return sum.constant ? arith::AddFOp::create(rewriter, loc, acc, k).getResult() : acc;
  }

  void rewrite(Operation *cast) {
    Value x = cast->getOperand(0);
    bool isSigned = isa<arith::SIToFPOp>(cast);
    rewriter.setInsertionPoint(cast);
    // A sum or difference (through casts) of shared leaves is summed in f32.
    Value root = x;
    while (Value inner = valueKeepingOperand(solver, root))
      root = inner;
    Operation *def = root.getDefiningOp();
    Sum sum;
    if (isSigned && def && isa<arith::AddIOp, arith::SubIOp>(def) && collect(x, false, sum) &&
        sum.bound <= kExactLimit) {
      rewriter.replaceOp(cast, convert(sum, cast->getLoc()));
      return;
    }
    // uitofp reads x unsigned: the add trick only for a non-negative x.
    auto r = signedRange(solver, x);
    if (r && r->second < kMagicLimit && r->first >= (isSigned ? -kMagicLimit : 0))
      rewriter.replaceOp(cast, convertLeaf(x));
  }
};

struct FlexAttnExactIntToFloatPass
    : public flexattn::impl::FlexAttnExactIntToFloatBase<FlexAttnExactIntToFloatPass> {
  void runOnOperation() override {
    SmallVector<Operation *> casts;
    getOperation()->walk([&](Operation *op) {
      if (isa<arith::SIToFPOp, arith::UIToFPOp>(op) && op->getResult(0).getType().isF32() &&
          op->getOperand(0).getType().isSignlessInteger())
        casts.push_back(op);
    });
    if (casts.empty())
      return;
    DataFlowSolver solver;
    dataflow::loadBaselineAnalyses(solver);
    solver.load<dataflow::IntegerRangeAnalysis>();
    if (failed(solver.initializeAndRun(getOperation())))
      return signalPassFailure();
    IRRewriter rewriter(&getContext());
    Converter converter{solver, rewriter, {}};
    for (Operation *op : casts)
      converter.rewrite(op);
  }
};

} // namespace
