//===- OnlineSoftmax.cpp - the online-softmax decomposition -----*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//

#include "passes/OnlineSoftmax.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include <limits>

using namespace mlir;
using namespace mlir::flexattn;
using namespace mlir::flexattn::softmax;

namespace {
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

Value f32(OpBuilder &b, Location loc, float v) {
  return arith::ConstantOp::create(b, loc, b.getF32FloatAttr(v));
}
} // namespace

Value softmax::finiteBase(OpBuilder &b, Location loc, Value m) {
  Value ninf = f32(b, loc, kNegInf);
  Value zero = f32(b, loc, 0.0f);
  Value empty =
      arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ, m, ninf);
  return arith::SelectOp::create(b, loc, empty, zero, m);
}

Value softmax::rescaleFactor(OpBuilder &b, Location loc, Value m, Value mNew) {
  Value d = arith::SubFOp::create(b, loc, m, finiteBase(b, loc, mNew));
  return math::Exp2Op::create(b, loc, d);
}

Value softmax::probability(OpBuilder &b, Location loc, Value u, Value mNew,
                           float c) {
  Value base = finiteBase(b, loc, mNew);
  Value d;
  if (c == 1.0f) {
    d = arith::SubFOp::create(b, loc, u, base);
  } else {
    Value negBase = arith::NegFOp::create(b, loc, base);
    d = math::FmaOp::create(b, loc, u, f32(b, loc, c), negBase);
  }
  return math::Exp2Op::create(b, loc, d);
}

Value softmax::safeDivide(OpBuilder &b, Location loc, Value x, Value l) {
  Value empty = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ, l,
                                      f32(b, loc, 0.0f));
  Value r = arith::DivFOp::create(b, loc, x, l);
  return arith::SelectOp::create(b, loc, empty, f32(b, loc, 0.0f), r);
}

Value softmax::logSumExp(OpBuilder &b, Location loc, Value m, Value l) {
  Value empty = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ, l,
                                      f32(b, loc, 0.0f));
  Value r = arith::AddFOp::create(b, loc, m, math::Log2Op::create(b, loc, l));
  r = arith::MulFOp::create(b, loc, r, f32(b, loc, static_cast<float>(kLn2)));
  return arith::SelectOp::create(b, loc, empty, f32(b, loc, kNegInf), r);
}

Value softmax::maxScore(OpBuilder &b, Location loc, Value m) {
  return arith::MulFOp::create(b, loc, m, f32(b, loc, static_cast<float>(kLn2)));
}

Value softmax::sinkLog2(OpBuilder &b, Location loc, Value s) {
  return arith::MulFOp::create(b, loc, s, f32(b, loc, static_cast<float>(kLog2e)));
}

Value softmax::log2Score(OpBuilder &b, Location loc, Value s, float scale,
                         function_ref<Value(Value)> mods) {
  if (!mods)
    return arith::MulFOp::create(b, loc, s,
                                 f32(b, loc, static_cast<float>(scale * kLog2e)));
  Value x = arith::MulFOp::create(b, loc, s, f32(b, loc, scale));
  Value modded = mods(x);
  return arith::MulFOp::create(b, loc, modded,
                               f32(b, loc, static_cast<float>(kLog2e)));
}

bool softmax::takesFmaExp2(int64_t e, int64_t k) {
  int64_t i = e % kFmaExp2Period;
  return (i + 1) * k / kFmaExp2Period > i * k / kFmaExp2Period;
}

Value softmax::exp2OnFma(OpBuilder &b, Location loc, Value x) {
  Type i32 = b.getI32Type();
  auto int32 = [&](int32_t v) -> Value {
    return arith::ConstantOp::create(b, loc, b.getI32IntegerAttr(v));
  };
  // 1.5 2^23: x' + 1.5 2^23 rounds x' to the integer n, held in the low
  // mantissa bits of the sum (two's complement); subtracting it back gives n.
  Value magic = f32(b, loc, 12582912.0f);
  Value xc = arith::MaxNumFOp::create(b, loc, x, f32(b, loc, -127.0f));
  Value shifted = arith::AddFOp::create(b, loc, xc, magic);
  Value n = arith::SubFOp::create(b, loc, shifted, magic);
  Value f = arith::SubFOp::create(b, loc, xc, n);
  // p(f) ~ 2^f on [-1/2, 1/2]: the minimax polynomial of relative error
  // (7.5e-5), Horner form.
  static constexpr float kCoeffs[] = {5.517166853e-02f, 2.426111251e-01f,
                                      6.932609677e-01f, 9.999280572e-01f};
  Value p = f32(b, loc, kCoeffs[0]);
  for (float c : ArrayRef(kCoeffs).drop_front())
    p = math::FmaOp::create(b, loc, p, f, f32(b, loc, c));
  // 2^n p: n << 23 added to p's bits (the sum's bits shifted by 23 are
  // n << 23: everything above the low 9 bits leaves the word).
  Value nBits = arith::ShLIOp::create(
      b, loc, arith::BitcastOp::create(b, loc, i32, shifted), int32(23));
  Value bits = arith::AddIOp::create(b, loc, nBits,
                                     arith::BitcastOp::create(b, loc, i32, p));
  // An exponent below the smallest (n = -127, p < 1) makes the bits
  // negative: +0 instead.
  bits = arith::MaxSIOp::create(b, loc, bits, int32(0));
  return arith::BitcastOp::create(b, loc, b.getF32Type(), bits);
}

StepResult softmax::onlineSoftmaxStep(SoftmaxRows &rows, const State &state,
                                      Value u, float c) {
  StepResult r;
  // m_new = max(m, c rowmax(u))
  r.newMax = rows.rowMax(u, state.max, c);
  // alpha = exp2(m - base(m_new))
  r.alpha = rows.mapRows({state.max, r.newMax},
                         [](OpBuilder &b, Location l, ValueRange a) {
                           return rescaleFactor(b, l, a[0], a[1]);
                         });
  // P = exp2(c u - base(m_new))
  r.probs = rows.updateTile(u, {r.newMax},
                            [&](OpBuilder &b, Location l, ValueRange a) {
                              return probability(b, l, a[1], a[0], c);
                            });
  // l = alpha l + rowsum(P)
  r.newSum = rows.updateRows(state.sum, {r.alpha},
                             [](OpBuilder &b, Location l, ValueRange a) -> Value {
                               return arith::MulFOp::create(b, l, a[0], a[1]);
                             });
  r.newSum = rows.addRowSums(r.newSum, r.probs);
  return r;
}

Value softmax::rescaleAccumulator(SoftmaxRows &rows, Value acc, Value alpha) {
  // acc = alpha acc
  return rows.updateTile(acc, {alpha},
                         [](OpBuilder &b, Location l, ValueRange a) -> Value {
                           return arith::MulFOp::create(b, l, a[0], a[1]);
                         });
}

State softmax::foldSink(SoftmaxRows &rows, const State &state, Value sinkLog2) {
  auto withSink = [sinkLog2](OpBuilder &b, Location l, Value m) -> Value {
    return arith::MaximumFOp::create(b, l, m, sinkLog2);
  };
  // alpha = exp2(m - base(m')), m' = max(m, sink)
  Value alpha = rows.mapRows({state.max}, [&](OpBuilder &b, Location l,
                                              ValueRange a) {
    return rescaleFactor(b, l, a[0], withSink(b, l, a[0]));
  });
  // l' = alpha l + exp2(sink - base(m'))
  Value sum = rows.updateRows(
      state.sum, {state.max, alpha},
      [&](OpBuilder &b, Location l, ValueRange a) -> Value {
        Value scaled = arith::MulFOp::create(b, l, a[1], a[2]);
        Value sink = probability(b, l, sinkLog2, withSink(b, l, a[0]), 1.0f);
        return arith::AddFOp::create(b, l, scaled, sink);
      });
  // m' = max(m, sink); acc' = alpha acc
  Value max = rows.updateRows(state.max, {},
                              [&](OpBuilder &b, Location l, ValueRange a) {
                                return withSink(b, l, a[0]);
                              });
  return {max, sum, rescaleAccumulator(rows, state.acc, alpha)};
}
