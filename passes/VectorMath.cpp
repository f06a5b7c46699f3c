//===- VectorMath.cpp - vector approximations of math ops -------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// The CPU vectoriser's math: LLVM scalarises vector math intrinsics into
// libm calls, so f32 vector math ops become polynomial arithmetic first.
// exp2, the online softmax's exponential, gets its own range reduction and
// polynomial (Cephes' exp2f: relative error below 2e-7 on [-126, 127]) with
// exact zeros below -126, so masked scores (-inf) contribute exactly nothing;
// the other functions the mods may use take upstream's approximations.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include "mlir/Dialect/Math/Transforms/Passes.h"

using namespace mlir;

namespace {

/// exp2(x) = 2^n * p(f), n = round(x), f = x - n in [-1/2, 1/2], for x
/// clamped to [-127, 127]; 2^n is built in the exponent bits, and n = -127
/// gives the bit pattern of +0.
struct Exp2Approximation : OpRewritePattern<math::Exp2Op> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(math::Exp2Op op,
                                PatternRewriter &rewriter) const override {
    auto type = dyn_cast<VectorType>(op.getType());
    if (!type || !type.getElementType().isF32())
      return rewriter.notifyMatchFailure(op, "not an f32 vector");
    Location loc = op.getLoc();
    auto f32 = [&](float v) -> Value {
      return arith::ConstantOp::create(
          rewriter, loc, DenseElementsAttr::get(type, rewriter.getF32FloatAttr(v)));
    };
    auto intType = type.clone(rewriter.getI32Type());
    auto i32 = [&](int32_t v) -> Value {
      return arith::ConstantOp::create(
          rewriter, loc,
          DenseElementsAttr::get(intType, rewriter.getI32IntegerAttr(v)));
    };
    Value x = arith::MaximumFOp::create(rewriter, loc, op.getOperand(), f32(-127.0f));
    x = arith::MinimumFOp::create(rewriter, loc, x, f32(127.0f));
    Value n = math::RoundEvenOp::create(rewriter, loc, x);
    Value f = arith::SubFOp::create(rewriter, loc, x, n);
    // p(f) ~ 2^f, Horner form.
    static constexpr float kCoeffs[] = {
        1.535336188319500e-4f, 1.339887440266574e-3f, 9.618437357674640e-3f,
        5.550332471162809e-2f, 2.402264791363012e-1f, 6.931472028550421e-1f,
        1.0f};
    Value p = f32(kCoeffs[0]);
    for (float c : ArrayRef(kCoeffs).drop_front())
      p = math::FmaOp::create(rewriter, loc, p, f, f32(c));
    Value bits = arith::FPToSIOp::create(rewriter, loc, intType, n);
    bits = arith::AddIOp::create(rewriter, loc, bits, i32(127));
    bits = arith::ShLIOp::create(rewriter, loc, bits, i32(23));
    Value scale = arith::BitcastOp::create(rewriter, loc, type, bits);
    rewriter.replaceOpWithNewOp<arith::MulFOp>(op, p, scale);
    return success();
  }
};

} // namespace

void mlir::flexattn::populateVectorMathApproximationPatterns(
    RewritePatternSet &patterns) {
  patterns.add<Exp2Approximation>(patterns.getContext(), /*benefit=*/2);
  populateMathPolynomialApproximationPatterns(patterns, [](StringRef name) {
    return name != math::Exp2Op::getOperationName();
  });
}
