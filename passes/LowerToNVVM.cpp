//===- LowerToNVVM.cpp - flexattn-lower-to-nvvm -----------------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// Lowers the GPU kernels (gpu.module, after gpu-kernel-outlining) to the
// NVVM/LLVM dialects:
//  1. the math ops user mods use most (exp, exp2, log, log2, tanh) become
//     the NVVM approximate intrinsics of the special-function unit
//     (ex2.approx, lg2.approx, rcp.approx), so no libdevice is needed (tanh
//     via exp2 keeps about 1e-6 absolute error); f32 divisions become a
//     multiply by a constant's reciprocal or div.full; abs, copysign, floor,
//     ceil, sqrt and fma become the LLVM/NVVM intrinsics of one PTX
//     instruction each and min/max LLVM intrinsics (upstream's NVVM lowering
//     would call libdevice for all of them); an exp2 marked
//     `flexattn.fma_exp2` (part of P, by flexattn-lower-fragments) becomes
//     OnlineSoftmax.h's `exp2OnFma` instead: adds, fmas and integer
//     shift/add/max on the FMA and ALU pipes, no ex2;
//  2. the dynamic shared memory is declared, the NVVM target attached and
//     upstream's conversions run on each gpu.module (scf -> cf, gpu/arith/
//     memref -> NVVM with bare-pointer memref arguments, or memref
//     descriptors for a dynamic-shape kernel, nvvm -> llvm), ready for
//     gpu-module-to-binary.
//
//===----------------------------------------------------------------------===//

#include "passes/OnlineSoftmax.h"
#include "passes/Passes.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"
#include "mlir/IR/Matchers.h"
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

namespace {

/// An f32 LLVM intrinsic call (an NVVM one, or a generic one the NVVM
/// lowering would otherwise turn into a libdevice call).
Value intrinsic(ImplicitLocOpBuilder &b, StringRef name, ValueRange args) {
  return LLVM::CallIntrinsicOp::create(b, b.getF32Type(), b.getStringAttr(name), args)
      .getResult(0);
}

Value f32(ImplicitLocOpBuilder &b, double v) {
  return arith::ConstantOp::create(b, b.getF32FloatAttr(static_cast<float>(v)));
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
    FloatAttr divisor;
    if (matchPattern(op.getRhs(), m_Constant(&divisor)) &&
        divisor.getValueAsDouble() != 0.0) {
      rewriter.replaceOp(op, arith::MulFOp::create(
                                 b, op.getLhs(), f32(b, 1.0 / divisor.getValueAsDouble())));
      return success();
    }
    rewriter.replaceOp(op, intrinsic(b, "llvm.nvvm.div.full", {op.getLhs(), op.getRhs()}));
    return success();
  }
};

/// exp, exp2, log, log2, tanh on f32 -> ex2/lg2 sequences.
template <typename MathOp>
struct MathToSfu : OpRewritePattern<MathOp> {
  using OpRewritePattern<MathOp>::OpRewritePattern;
  LogicalResult matchAndRewrite(MathOp op,
                                PatternRewriter &rewriter) const override {
    if (!op.getType().isF32())
      return failure();
    ImplicitLocOpBuilder b(op.getLoc(), rewriter);
    auto ex2 = [&](Value v) { return intrinsic(b, "llvm.nvvm.ex2.approx.ftz.f32", {v}); };
    auto lg2 = [&](Value v) { return intrinsic(b, "llvm.nvvm.lg2.approx.ftz.f", {v}); };
    Value x = op.getOperand();
    Value r;
    if constexpr (std::is_same_v<MathOp, math::Exp2Op>) {
      // One of P's exponentials that flexattn-lower-fragments put on the
      // FMA pipe: the polynomial, in arith ops lowered below.
      r = op->hasAttr(softmax::kFmaExp2Mark) ? softmax::exp2OnFma(b, b.getLoc(), x) : ex2(x);
    } else if constexpr (std::is_same_v<MathOp, math::ExpOp>) {
      r = ex2(arith::MulFOp::create(b, x, f32(b, kLog2e)));
    } else if constexpr (std::is_same_v<MathOp, math::Log2Op>) {
      r = lg2(x);
    } else if constexpr (std::is_same_v<MathOp, math::LogOp>) {
      r = arith::MulFOp::create(b, lg2(x), f32(b, kLn2));
    } else {
      // tanh(x) = sign(x) (1 - 2 / (exp(2|x|) + 1)), exact at 0 and +-inf;
      // ex2.approx and rcp.approx keep the absolute error near 1e-7.
      Value ax = intrinsic(b, "llvm.fabs.f32", {x});
      Value e = ex2(arith::MulFOp::create(b, ax, f32(b, 2.0 * kLog2e)));
      Value inv = NVVM::RcpApproxFtzF32Op::create(
          b, b.getF32Type(), arith::AddFOp::create(b, e, f32(b, 1.0)));
      Value t = arith::SubFOp::create(b, f32(b, 1.0),
                                      arith::MulFOp::create(b, inv, f32(b, 2.0)));
      r = intrinsic(b, "llvm.copysign.f32", {t, x});
    }
    rewriter.replaceOp(op, r);
    return success();
  }
};

/// f32 ops the NVVM lowering would turn into libdevice calls (it marks even
/// the matching LLVM intrinsic ops illegal): an intrinsic call each, one PTX
/// instruction.
template <typename Op>
struct ToIntrinsicCall : OpRewritePattern<Op> {
  ToIntrinsicCall(MLIRContext *ctx, StringRef name)
      : OpRewritePattern<Op>(ctx), name(name) {}
  LogicalResult matchAndRewrite(Op op, PatternRewriter &rewriter) const override {
    if (!op.getType().isF32())
      return failure();
    ImplicitLocOpBuilder b(op.getLoc(), rewriter);
    rewriter.replaceOp(op, intrinsic(b, name, op->getOperands()));
    return success();
  }
  std::string name;
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

/// setmaxnreg moves registers between warpgroups only in a kernel whose
/// register count is capped at entry: one CTA per SM (`.minnctapersm 1`,
/// with the block size outlining recorded as `.maxntid`).
void capRegistersForRoles(gpu::GPUModuleOp gm) {
  gm.walk([](gpu::GPUFuncOp func) {
    if (func.isKernel() &&
        func.walk([](NVVM::SetMaxRegisterOp) { return WalkResult::interrupt(); })
            .wasInterrupted())
      func->setAttr(NVVM::NVVMDialect::getMinctasmAttrName(),
                    Builder(func).getI32IntegerAttr(1));
  });
}

struct FlexAttnLowerToNVVMPass
    : public flexattn::impl::FlexAttnLowerToNVVMBase<FlexAttnLowerToNVVMPass> {
  using FlexAttnLowerToNVVMBase::FlexAttnLowerToNVVMBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    RewritePatternSet patterns(&getContext());
    patterns.add<MathToSfu<math::ExpOp>, MathToSfu<math::Exp2Op>,
                 MathToSfu<math::LogOp>, MathToSfu<math::Log2Op>,
                 MathToSfu<math::TanhOp>, FastDivF,
                 ToIntrinsic<arith::MaxNumFOp, LLVM::MaxNumOp>,
                 ToIntrinsic<arith::MinNumFOp, LLVM::MinNumOp>,
                 ToIntrinsic<arith::MaximumFOp, LLVM::MaximumOp>,
                 ToIntrinsic<arith::MinimumFOp, LLVM::MinimumOp>>(&getContext());
    patterns.add<ToIntrinsicCall<math::AbsFOp>>(&getContext(), "llvm.fabs.f32");
    patterns.add<ToIntrinsicCall<math::CopySignOp>>(&getContext(), "llvm.copysign.f32");
    patterns.add<ToIntrinsicCall<math::FloorOp>>(&getContext(), "llvm.floor.f32");
    patterns.add<ToIntrinsicCall<math::CeilOp>>(&getContext(), "llvm.ceil.f32");
    patterns.add<ToIntrinsicCall<math::SqrtOp>>(&getContext(), "llvm.nvvm.sqrt.rn.f");
    patterns.add<ToIntrinsicCall<math::FmaOp>>(&getContext(), "llvm.fma.f32");
    for (auto gm : module.getOps<gpu::GPUModuleOp>()) {
      if (failed(applyPatternsGreedily(gm, std::move(patterns))))
        return signalPassFailure();
      declareDynamicSharedMemory(gm);
      capRegistersForRoles(gm);
    }

    if (chip.empty()) {
      module.emitError() << "flexattn-lower-to-nvvm needs chip=<sm_..> (the "
                            "GPU target, e.g. chip=sm_90a features=+ptx83)";
      return signalPassFailure();
    }
    std::string pipeline = llvm::formatv(
        "nvvm-attach-target{{chip={0}{1} O={2}},"
        "gpu.module(arith-expand, convert-scf-to-cf, expand-strided-metadata, lower-affine, "
        "convert-vector-to-llvm, convert-gpu-to-nvvm{{use-bare-ptr-memref-call-conv={3}}, "
        "convert-nvvm-to-llvm, canonicalize, cse, reconcile-unrealized-casts)",
        chip, features.empty() ? std::string() : " features=" + features, optLevel,
        barePointers ? 1 : 0);
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
