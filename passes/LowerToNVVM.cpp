//===- LowerToNVVM.cpp - flexattn-lower-to-nvvm -----------------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// Lowers the kernels of flexattn-map-to-gpu to the NVVM/LLVM dialects:
//  1. the math ops user mods use most (exp, exp2, log, log2, tanh) become
//     short PTX sequences on the special-function unit, so no libdevice is
//     needed (tanh via exp2 keeps about 1e-6 absolute error), f32
//     divisions become multiplies by a reciprocal or div.full, abs,
//     copysign, floor, ceil, sqrt and fma become single PTX instructions and
//     min/max LLVM intrinsics (the NVVM lowering would call libdevice);
//  2. the NVVM target is attached and upstream's conversions run on each
//     gpu.module (scf -> cf, gpu/arith/memref -> NVVM with bare-pointer
//     memref arguments, nvvm -> llvm), ready for gpu-module-to-binary.
//
//===----------------------------------------------------------------------===//

#include "passes/HopperPtx.h"
#include "passes/Passes.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/IR/Matchers.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"
#include "llvm/Support/FormatVariadic.h"

namespace mlir::flexattn {
#define GEN_PASS_DEF_FLEXATTNLOWERTONVVM
#include "passes/Passes.h.inc"
} // namespace mlir::flexattn

using namespace mlir;
using namespace mlir::flexattn;
using hopper::PtxBuilder;

namespace {


Value lg2(PtxBuilder &p, Value x) {
  return p.inlineAsm("lg2.approx.ftz.f32 $0, $1;", "=f,f", {x},
                     p.b.getF32Type(), /*sideEffects=*/false);
}

Value rcp(PtxBuilder &p, Value x) {
  return p.inlineAsm("rcp.approx.ftz.f32 $0, $1;", "=f,f", {x},
                     p.b.getF32Type(), /*sideEffects=*/false);
}

/// f32 division in a mod: by a constant, a multiply by its reciprocal (at
/// most 1.5 ulp from the IEEE quotient); otherwise div.full (2 ulp) instead
/// of the much slower IEEE div.rn.
struct FastDivF : OpRewritePattern<arith::DivFOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(arith::DivFOp op,
                                PatternRewriter &rewriter) const override {
    if (!op.getType().isF32())
      return failure();
    ImplicitLocOpBuilder b(op.getLoc(), rewriter);
    PtxBuilder p{b};
    FloatAttr divisor;
    if (matchPattern(op.getRhs(), m_Constant(&divisor)) &&
        divisor.getValueAsDouble() != 0.0) {
      float reciprocal = static_cast<float>(1.0 / divisor.getValueAsDouble());
      rewriter.replaceOp(op, arith::MulFOp::create(b, op.getLhs(), p.f32(reciprocal)));
      return success();
    }
    rewriter.replaceOp(op, p.inlineAsm("div.full.f32 $0, $1, $2;", "=f,f,f",
                                       {op.getLhs(), op.getRhs()},
                                       b.getF32Type(), /*sideEffects=*/false));
    return success();
  }
};

/// exp, exp2, log, log2, tanh on f32 -> ex2/lg2 sequences.
template <typename MathOp>
struct MathToPtx : OpRewritePattern<MathOp> {
  using OpRewritePattern<MathOp>::OpRewritePattern;
  LogicalResult matchAndRewrite(MathOp op,
                                PatternRewriter &rewriter) const override {
    if (!op.getType().isF32())
      return failure();
    ImplicitLocOpBuilder b(op.getLoc(), rewriter);
    PtxBuilder p{b};
    Value x = op.getOperand();
    Value r;
    if constexpr (std::is_same_v<MathOp, math::Exp2Op>) {
      r = p.ex2(x);
    } else if constexpr (std::is_same_v<MathOp, math::ExpOp>) {
      r = p.ex2(arith::MulFOp::create(b, x, p.f32(static_cast<float>(kLog2e))));
    } else if constexpr (std::is_same_v<MathOp, math::Log2Op>) {
      r = lg2(p, x);
    } else if constexpr (std::is_same_v<MathOp, math::LogOp>) {
      r = arith::MulFOp::create(b, lg2(p, x), p.f32(static_cast<float>(kLn2)));
    } else {
      // tanh(x) = sign(x) (1 - 2 / (exp(2|x|) + 1)), exact at 0 and +-inf;
      // ex2.approx and rcp.approx keep the absolute error near 1e-7.
      Value ax = p.inlineAsm("abs.f32 $0, $1;", "=f,f", {x}, b.getF32Type(), false);
      Value e = p.ex2(arith::MulFOp::create(b, ax, p.f32(static_cast<float>(2.0 * kLog2e))));
      Value inv = rcp(p, arith::AddFOp::create(b, e, p.f32(1.0f)));
      Value t = arith::SubFOp::create(
          b, p.f32(1.0f), arith::MulFOp::create(b, inv, p.f32(2.0f)));
      // PTX copysign.f32 d, a, b: b with the sign of a.
      r = p.inlineAsm("copysign.f32 $0, $1, $2;", "=f,f,f", {x, t},
                      b.getF32Type(), false);
    }
    rewriter.replaceOp(op, r);
    return success();
  }
};

/// f32 ops the NVVM lowering would turn into libdevice calls (it marks even
/// the matching LLVM intrinsics illegal): one PTX instruction each.
template <typename Op>
struct ToPtx : OpRewritePattern<Op> {
  ToPtx(MLIRContext *ctx, StringRef text) : OpRewritePattern<Op>(ctx), text(text) {}
  LogicalResult matchAndRewrite(Op op, PatternRewriter &rewriter) const override {
    if (!op.getType().isF32())
      return failure();
    ImplicitLocOpBuilder b(op.getLoc(), rewriter);
    PtxBuilder p{b};
    std::string constraints = "=f";
    for (unsigned i = 0; i < op->getNumOperands(); ++i)
      constraints += ",f";
    SmallVector<Value> operands(op->getOperands());
    if constexpr (std::is_same_v<Op, math::CopySignOp>)
      std::swap(operands[0], operands[1]); // PTX: d = b with the sign of a
    rewriter.replaceOp(op, p.inlineAsm(text, constraints, operands,
                                       b.getF32Type(), /*sideEffects=*/false));
    return success();
  }
  std::string text;
};

/// f32 min/max: LLVM intrinsics, which NVPTX selects as min/max.f32.
template <typename Op, typename Intrinsic>
struct ToIntrinsic : OpRewritePattern<Op> {
  using OpRewritePattern<Op>::OpRewritePattern;
  LogicalResult matchAndRewrite(Op op, PatternRewriter &rewriter) const override {
    if (!op.getType().isF32())
      return failure();
    rewriter.replaceOpWithNewOp<Intrinsic>(op, op->getOperands());
    return success();
  }
};

/// gpu.dynamic_shared_memory lowers to an internal `[0 x i8]` global, which
/// NVPTX shrinks to one byte (loads and stores through it may be deleted);
/// an external one of the same type and alignment, which the lowering
/// reuses, becomes `.extern .shared .align 16 .b8 __flexattn_smem[]`.
void declareDynamicSharedMemory(gpu::GPUModuleOp gm) {
  if (!gm.walk([](gpu::DynamicSharedMemoryOp) { return WalkResult::interrupt(); })
           .wasInterrupted())
    return;
  OpBuilder b(gm.getBodyRegion());
  b.setInsertionPointToStart(gm.getBody());
  LLVM::GlobalOp::create(b, gm.getLoc(), LLVM::LLVMArrayType::get(b.getI8Type(), 0),
                         /*isConstant=*/false, LLVM::Linkage::External,
                         "__flexattn_smem", Attribute(), /*alignment=*/16,
                         /*addrSpace=*/3);
}

struct FlexAttnLowerToNVVMPass
    : public flexattn::impl::FlexAttnLowerToNVVMBase<FlexAttnLowerToNVVMPass> {
  using FlexAttnLowerToNVVMBase::FlexAttnLowerToNVVMBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    RewritePatternSet patterns(&getContext());
    patterns.add<MathToPtx<math::ExpOp>, MathToPtx<math::Exp2Op>,
                 MathToPtx<math::LogOp>, MathToPtx<math::Log2Op>,
                 MathToPtx<math::TanhOp>, FastDivF,
                 ToIntrinsic<arith::MaxNumFOp, LLVM::MaxNumOp>,
                 ToIntrinsic<arith::MinNumFOp, LLVM::MinNumOp>,
                 ToIntrinsic<arith::MaximumFOp, LLVM::MaximumOp>,
                 ToIntrinsic<arith::MinimumFOp, LLVM::MinimumOp>>(&getContext());
    patterns.add<ToPtx<math::AbsFOp>>(&getContext(), "abs.f32 $0, $1;");
    patterns.add<ToPtx<math::CopySignOp>>(&getContext(), "copysign.f32 $0, $1, $2;");
    patterns.add<ToPtx<math::FloorOp>>(&getContext(), "cvt.rmi.f32.f32 $0, $1;");
    patterns.add<ToPtx<math::CeilOp>>(&getContext(), "cvt.rpi.f32.f32 $0, $1;");
    patterns.add<ToPtx<math::SqrtOp>>(&getContext(), "sqrt.rn.f32 $0, $1;");
    patterns.add<ToPtx<math::FmaOp>>(&getContext(), "fma.rn.f32 $0, $1, $2, $3;");
    for (auto gm : module.getOps<gpu::GPUModuleOp>()) {
      if (failed(applyPatternsGreedily(gm, std::move(patterns))))
        return signalPassFailure();
      declareDynamicSharedMemory(gm);
    }

    std::string pipeline = llvm::formatv(
        "nvvm-attach-target{{chip={0} features={1} O={2}},"
        "gpu.module(arith-expand, convert-scf-to-cf, expand-strided-metadata, lower-affine, "
        "convert-vector-to-llvm, convert-gpu-to-nvvm{{use-bare-ptr-memref-call-conv=1}, "
        "convert-nvvm-to-llvm, canonicalize, cse, reconcile-unrealized-casts)",
        chip, features, optLevel);
    OpPassManager pm(ModuleOp::getOperationName());
    if (failed(parsePassPipeline(pipeline, pm))) {
      module.emitError() << "flexattn-lower-to-nvvm: bad pipeline " << pipeline;
      return signalPassFailure();
    }
    if (failed(runPipeline(pm, module)))
      return signalPassFailure();
  }
};

} // namespace
