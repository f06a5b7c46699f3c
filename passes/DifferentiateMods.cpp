//===- DifferentiateMods.cpp - flexattn-differentiate-mods ------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// Reverse-mode differentiation of a score_mod region. The mod is straight-line
// scalar code; its derivative region (score_mod_vjp) is the mod itself
// followed by one reverse sweep over the ops on the gradient path:
//
//   active   = values that depend, through floating-point ops, on the score
//              or on a load from a captured buffer that takes a gradient
//   adj[r]   = dy                             (r: the yielded score)
//   adj[x]  += adj[y] * dy/dx                 (each active op y = f(x, ...),
//                                              last to first)
//
// Integer paths (index arithmetic, comparisons, float -> int conversions,
// flexattn.check_index, cloned with its index report) carry no derivative
// and stop the sweep; piecewise-constant float ops
// (floor, ceil, round, trunc) contribute zero. An op on the gradient path
// without a rule (or control flow with a float result there) is an error that
// names the op: never a wrong derivative.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include "mlir/IR/IRMapping.h"
#include "llvm/ADT/TypeSwitch.h"

namespace mlir::flexattn {
#define GEN_PASS_DEF_FLEXATTNDIFFERENTIATEMODS
#include "passes/Passes.h.inc"
} // namespace mlir::flexattn

using namespace mlir;
using namespace mlir::flexattn;

namespace {

constexpr double kLn10 = 2.302585092994046;
constexpr double kTwoOverSqrtPi = 1.1283791670955126;

/// One reverse sweep: the adjoints of the active values, built at the
/// builder's insertion point (after the forward code).
struct Sweep {
  OpBuilder &b;
  DenseSet<Value> active;
  DenseMap<Value, Value> adj;

  Value cst(Location loc, Type t, double v) {
    return arith::ConstantOp::create(b, loc, b.getFloatAttr(t, v));
  }
  Value mul(Location loc, Value x, Value y) {
    return arith::MulFOp::create(b, loc, x, y);
  }
  Value div(Location loc, Value x, Value y) {
    return arith::DivFOp::create(b, loc, x, y);
  }
  Value neg(Location loc, Value x) { return arith::NegFOp::create(b, loc, x); }
  /// `g` where `c`, else 0.
  Value where(Location loc, Value c, Value g) {
    return arith::SelectOp::create(b, loc, c, g, cst(loc, g.getType(), 0.0));
  }

  /// adj[x] += g, for an active x.
  void add(Location loc, Value x, Value g) {
    if (!active.contains(x))
      return;
    auto [it, inserted] = adj.try_emplace(x, g);
    if (!inserted)
      it->second = arith::AddFOp::create(b, loc, it->second, g);
  }

  /// Adds the contributions of `op` (result adjoint `g`) to its operands;
  /// fails on an op without a rule.
  LogicalResult reverse(Operation *op, Value g);
};

LogicalResult Sweep::reverse(Operation *op, Value g) {
  Location loc = op->getLoc();
  Value r = op->getNumResults() ? op->getResult(0) : Value();
  auto x = [&](unsigned i) { return op->getOperand(i); };
  // adj[operand i] += f(), f built only for an active operand.
  auto d = [&](unsigned i, function_ref<Value()> f) {
    if (active.contains(x(i)))
      add(loc, x(i), f());
  };
  Type t = g.getType();
  auto one = [&] { return cst(loc, t, 1.0); };
  auto notOf = [&](Value c) {
    return arith::XOrIOp::create(b, loc, c,
                                 arith::ConstantIntOp::create(b, loc, 1, 1));
  };
  bool handled = true;
  llvm::TypeSwitch<Operation *>(op)
      // Sums and products.
      .Case([&](arith::AddFOp) {
        d(0, [&] { return g; });
        d(1, [&] { return g; });
      })
      .Case([&](arith::SubFOp) {
        d(0, [&] { return g; });
        d(1, [&] { return neg(loc, g); });
      })
      .Case([&](arith::NegFOp) { d(0, [&] { return neg(loc, g); }); })
      .Case([&](arith::MulFOp) {
        d(0, [&] { return mul(loc, g, x(1)); });
        d(1, [&] { return mul(loc, g, x(0)); });
      })
      // d(a / b) = da / b - db r / b
      .Case([&](arith::DivFOp) {
        d(0, [&] { return div(loc, g, x(1)); });
        d(1, [&] { return neg(loc, div(loc, mul(loc, g, r), x(1))); });
      })
      .Case([&](math::FmaOp) {
        d(0, [&] { return mul(loc, g, x(1)); });
        d(1, [&] { return mul(loc, g, x(0)); });
        d(2, [&] { return g; });
      })
      // fmod: d/da = 1, d/db = -trunc(a / b)
      .Case([&](arith::RemFOp) {
        d(0, [&] { return g; });
        d(1, [&] {
          Value q = math::TruncOp::create(b, loc, div(loc, x(0), x(1)));
          return neg(loc, mul(loc, g, q));
        });
      })
      // Selections route the adjoint to the chosen operand (the first one on
      // ties, as torch's clamp does).
      .Case([&](arith::SelectOp sel) {
        d(1, [&] { return where(loc, sel.getCondition(), g); });
        d(2, [&] { return where(loc, notOf(sel.getCondition()), g); });
      })
      .Case<arith::MaximumFOp, arith::MaxNumFOp, arith::MinimumFOp,
            arith::MinNumFOp>([&](Operation *m) {
        bool isMax = isa<arith::MaximumFOp, arith::MaxNumFOp>(m);
        Value first = arith::CmpFOp::create(
            b, loc, isMax ? arith::CmpFPredicate::OGE : arith::CmpFPredicate::OLE,
            x(0), x(1));
        d(0, [&] { return where(loc, first, g); });
        d(1, [&] { return where(loc, notOf(first), g); });
      })
      // clampf(a, lo, hi): to a inside [lo, hi], else to the bound hit.
      .Case([&](math::ClampFOp) {
        Value low = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OLT, x(0), x(1));
        Value high = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OGT, x(0), x(2));
        d(0, [&] {
          return where(loc, notOf(arith::OrIOp::create(b, loc, low, high)), g);
        });
        d(1, [&] { return where(loc, low, g); });
        d(2, [&] { return where(loc, high, g); });
      })
      // Precision changes: the adjoint changes precision the other way.
      .Case([&](arith::ExtFOp) {
        d(0, [&] { return arith::TruncFOp::create(b, loc, x(0).getType(), g); });
      })
      .Case([&](arith::TruncFOp) {
        d(0, [&] { return arith::ExtFOp::create(b, loc, x(0).getType(), g); });
      })
      // Elementary functions, from their results where that is cheaper.
      .Case([&](math::TanhOp) {
        d(0, [&] {
          return mul(loc, g, arith::SubFOp::create(b, loc, one(), mul(loc, r, r)));
        });
      })
      .Case([&](math::ExpOp) { d(0, [&] { return mul(loc, g, r); }); })
      .Case([&](math::Exp2Op) {
        d(0, [&] { return mul(loc, g, mul(loc, r, cst(loc, t, kLn2))); });
      })
      .Case([&](math::ExpM1Op) {
        d(0, [&] { return mul(loc, g, arith::AddFOp::create(b, loc, r, one())); });
      })
      .Case([&](math::LogOp) { d(0, [&] { return div(loc, g, x(0)); }); })
      .Case([&](math::Log2Op) {
        d(0, [&] { return div(loc, g, mul(loc, x(0), cst(loc, t, kLn2))); });
      })
      .Case([&](math::Log10Op) {
        d(0, [&] { return div(loc, g, mul(loc, x(0), cst(loc, t, kLn10))); });
      })
      .Case([&](math::Log1pOp) {
        d(0, [&] { return div(loc, g, arith::AddFOp::create(b, loc, x(0), one())); });
      })
      .Case([&](math::SqrtOp) {
        d(0, [&] { return div(loc, mul(loc, g, cst(loc, t, 0.5)), r); });
      })
      // r = a^-1/2: dr/da = -r / (2a)
      .Case([&](math::RsqrtOp) {
        d(0, [&] {
          return neg(loc, div(loc, mul(loc, g, mul(loc, r, cst(loc, t, 0.5))), x(0)));
        });
      })
      // r = a^1/3: dr/da = 1 / (3 r^2)
      .Case([&](math::CbrtOp) {
        d(0, [&] { return div(loc, g, mul(loc, cst(loc, t, 3.0), mul(loc, r, r))); });
      })
      // |a|' = sign(a), 0 at 0 (torch's convention)
      .Case([&](math::AbsFOp) {
        d(0, [&] {
          Value zero = cst(loc, t, 0.0);
          Value sign = math::CopySignOp::create(b, loc, one(), x(0));
          Value isZero =
              arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ, x(0), zero);
          return mul(loc, g, arith::SelectOp::create(b, loc, isZero, zero, sign));
        });
      })
      // copysign(a, b) = |a| sign(b): d/da = sign(a) sign(b), d/db = 0
      .Case([&](math::CopySignOp) {
        d(0, [&] {
          Value s = mul(loc, math::CopySignOp::create(b, loc, one(), x(0)),
                        math::CopySignOp::create(b, loc, one(), x(1)));
          return mul(loc, g, s);
        });
      })
      .Case([&](math::SinOp) {
        d(0, [&] { return mul(loc, g, math::CosOp::create(b, loc, x(0))); });
      })
      .Case([&](math::CosOp) {
        d(0, [&] { return neg(loc, mul(loc, g, math::SinOp::create(b, loc, x(0)))); });
      })
      .Case([&](math::TanOp) {
        d(0, [&] { return mul(loc, g, arith::AddFOp::create(b, loc, one(), mul(loc, r, r))); });
      })
      .Case([&](math::AtanOp) {
        d(0, [&] {
          return div(loc, g, arith::AddFOp::create(b, loc, one(), mul(loc, x(0), x(0))));
        });
      })
      // atan2(a, b): d/da = b / (a^2 + b^2), d/db = -a / (a^2 + b^2)
      .Case([&](math::Atan2Op) {
        auto norm = [&] {
          return arith::AddFOp::create(b, loc, mul(loc, x(0), x(0)), mul(loc, x(1), x(1)));
        };
        d(0, [&] { return div(loc, mul(loc, g, x(1)), norm()); });
        d(1, [&] { return neg(loc, div(loc, mul(loc, g, x(0)), norm())); });
      })
      .Case([&](math::SinhOp) {
        d(0, [&] { return mul(loc, g, math::CoshOp::create(b, loc, x(0))); });
      })
      .Case([&](math::CoshOp) {
        d(0, [&] { return mul(loc, g, math::SinhOp::create(b, loc, x(0))); });
      })
      // erf' = 2 / sqrt(pi) exp(-a^2) = -erfc'
      .Case<math::ErfOp, math::ErfcOp>([&](Operation *e) {
        d(0, [&] {
          double c = isa<math::ErfOp>(e) ? kTwoOverSqrtPi : -kTwoOverSqrtPi;
          Value ex = math::ExpOp::create(b, loc, neg(loc, mul(loc, x(0), x(0))));
          return mul(loc, g, mul(loc, ex, cst(loc, t, c)));
        });
      })
      // a^b: d/da = b a^(b-1), d/db = r ln(a)
      .Case([&](math::PowFOp) {
        d(0, [&] {
          Value bm1 = arith::SubFOp::create(b, loc, x(1), one());
          return mul(loc, g, mul(loc, x(1), math::PowFOp::create(b, loc, x(0), bm1)));
        });
        d(1, [&] { return mul(loc, g, mul(loc, r, math::LogOp::create(b, loc, x(0)))); });
      })
      // a^n, n an integer: n a^(n-1)
      .Case([&](math::FPowIOp p) {
        d(0, [&] {
          Type it = p.getRhs().getType();
          Value nm1 = arith::SubIOp::create(
              b, loc, p.getRhs(),
              arith::ConstantOp::create(b, loc, b.getIntegerAttr(it, 1)));
          Value n = arith::SIToFPOp::create(b, loc, t, p.getRhs());
          return mul(loc, g, mul(loc, n, math::FPowIOp::create(b, loc, x(0), nm1)));
        });
      })
      // Piecewise constant: derivative 0 almost everywhere.
      .Case<math::FloorOp, math::CeilOp, math::RoundOp, math::RoundEvenOp,
            math::TruncOp>([&](Operation *) {})
      .Default([&](Operation *) { handled = false; });
  return success(handled);
}

/// True if `op` (or an op nested in it) reads an active value.
bool readsActive(Operation *op, const DenseSet<Value> &active) {
  return op
      ->walk([&](Operation *inner) {
        for (Value v : inner->getOperands())
          if (active.contains(v))
            return WalkResult::interrupt();
        return WalkResult::advance();
      })
      .wasInterrupted();
}

InFlightDiagnostic notDifferentiable(Operation *diagOp, Operation *op,
                                     StringRef why) {
  InFlightDiagnostic diag = diagOp->emitOpError()
                            << "cannot differentiate score_mod: '"
                            << op->getName() << "' " << why
                            << " on the gradient path from the score (or a "
                            << "captured buffer that takes a gradient) to the "
                            << "result";
  diag.attachNote(op->getLoc()) << "this op";
  return diag;
}

} // namespace

FailureOr<SmallVector<int64_t>>
mlir::flexattn::buildScoreModVjp(OpBuilder &builder, Operation *diagOp,
                                 Region &scoreMod, Region &vjp,
                                 ArrayRef<int64_t> gradCaptures) {
  Block &src = scoreMod.front();
  Location loc = diagOp->getLoc();
  OpBuilder::InsertionGuard guard(builder);
  // (score, b, h, q_idx, kv_idx, captures..., dy: f32)
  SmallVector<Type> argTypes(src.getArgumentTypes());
  argTypes.push_back(builder.getF32Type());
  SmallVector<Location> argLocs(argTypes.size(), loc);
  Block *block = builder.createBlock(&vjp, vjp.end(), argTypes, argLocs);
  Value dy = block->getArguments().back();
  IRMapping map;
  map.map(src.getArguments(), block->getArguments().drop_back());

  // The forward, cloned; the active values and the differentiated loads.
  Sweep sweep{builder, {}, {}};
  Value score = block->getArgument(0);
  sweep.active.insert(score);
  unsigned firstCapture = 5;
  SmallVector<std::pair<memref::LoadOp, int64_t>> loads; // (load, capture)
  SmallVector<Operation *> forward;
  for (Operation &op : src.without_terminator()) {
    Operation *clone = builder.clone(op, map);
    forward.push_back(clone);
    if (auto load = dyn_cast<memref::LoadOp>(clone)) {
      auto arg = dyn_cast<BlockArgument>(load.getMemRef());
      int64_t cap = arg && arg.getOwner() == block
                        ? static_cast<int64_t>(arg.getArgNumber()) - firstCapture
                        : -1;
      if (cap >= 0 && llvm::is_contained(gradCaptures, cap) &&
          isa<FloatType>(load.getType())) {
        sweep.active.insert(load.getResult());
        loads.push_back({load, cap});
        continue;
      }
    }
    if (!readsActive(clone, sweep.active))
      continue;
    bool floatResult = llvm::any_of(clone->getResultTypes(),
                                    [](Type t) { return isa<FloatType>(t); });
    if (!floatResult)
      continue; // an integer or i1 result: no derivative flows through it
    if (clone->getNumRegions() || clone->getNumResults() != 1) {
      notDifferentiable(diagOp, clone,
                        "(control flow or several results) cannot be "
                        "differentiated");
      return failure();
    }
    sweep.active.insert(clone->getResult(0));
  }

  // The reverse sweep, seeded with dy at the yielded score.
  Value result = map.lookup(cast<YieldOp>(src.getTerminator()).getValues()[0]);
  if (sweep.active.contains(result))
    sweep.adj[result] = dy;
  for (Operation *op : llvm::reverse(forward)) {
    if (op->getNumResults() != 1)
      continue;
    auto it = sweep.adj.find(op->getResult(0));
    if (it == sweep.adj.end() || isa<memref::LoadOp>(op))
      continue;
    if (failed(sweep.reverse(op, it->second))) {
      notDifferentiable(diagOp, op, "has no derivative rule and lies");
      return failure();
    }
  }

  // yield (score', dscore, then per differentiated load: d/dload, indices)
  auto toF32 = [&](Value v) -> Value {
    Type f32 = builder.getF32Type();
    if (v.getType() == f32)
      return v;
    if (cast<FloatType>(v.getType()).getWidth() < 32)
      return arith::ExtFOp::create(builder, loc, f32, v);
    return arith::TruncFOp::create(builder, loc, f32, v);
  };
  SmallVector<Value> yields = {result};
  Value dscore = sweep.adj.lookup(score);
  yields.push_back(dscore ? dscore : sweep.cst(loc, builder.getF32Type(), 0.0));
  SmallVector<int64_t> vjpLoads;
  for (auto [load, cap] : loads) {
    Value g = sweep.adj.lookup(load.getResult());
    if (!g)
      continue; // the loaded value does not reach the result
    vjpLoads.push_back(cap);
    yields.push_back(toF32(g));
    llvm::append_range(yields, load.getIndices());
  }
  YieldOp::create(builder, loc, yields);
  return vjpLoads;
}

LogicalResult mlir::flexattn::differentiateMods(RewriterBase &rewriter,
                                                AttentionBackwardOp op) {
  if (!op.hasScoreMod() || !op.getScoreModVjp().empty())
    return success();
  FailureOr<SmallVector<int64_t>> loads = buildScoreModVjp(
      rewriter, op, op.getScoreMod(), op.getScoreModVjp(), op.getGradCaptures());
  if (failed(loads)) {
    op.getScoreModVjp().getBlocks().clear();
    return failure();
  }
  op.setVjpLoadsAttr(rewriter.getDenseI64ArrayAttr(*loads));
  return success();
}

namespace {
struct FlexAttnDifferentiateModsPass
    : public flexattn::impl::FlexAttnDifferentiateModsBase<
          FlexAttnDifferentiateModsPass> {
  void runOnOperation() override {
    SmallVector<AttentionBackwardOp> ops;
    getOperation()->walk([&](AttentionBackwardOp op) { ops.push_back(op); });
    IRRewriter rewriter(&getContext());
    for (AttentionBackwardOp op : ops)
      if (failed(differentiateMods(rewriter, op)))
        return signalPassFailure();
  }
};
} // namespace
