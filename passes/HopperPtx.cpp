//===- HopperPtx.cpp - Hopper (sm_90a) primitives as inline PTX -*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//

#include "passes/HopperPtx.h"

#include "mlir/Dialect/SCF/IR/SCF.h"
#include "llvm/Support/FormatVariadic.h"

using namespace mlir;
using namespace mlir::flexattn::hopper;

Value PtxBuilder::i32(int64_t v) {
  return arith::ConstantOp::create(b, b.getI32IntegerAttr(v));
}
Value PtxBuilder::i64(int64_t v) {
  return arith::ConstantOp::create(b, b.getI64IntegerAttr(v));
}
Value PtxBuilder::f32(float v) {
  return arith::ConstantOp::create(b, b.getF32FloatAttr(v));
}

Value PtxBuilder::inlineAsm(StringRef asmText, StringRef constraints,
                            ValueRange operands, Type resultType,
                            bool sideEffects) {
  MLIRContext *ctx = b.getContext();
  auto op = LLVM::InlineAsmOp::create(
      b, resultType ? TypeRange{resultType} : TypeRange{}, operands,
      b.getStringAttr(asmText), b.getStringAttr(constraints),
      sideEffects ? b.getUnitAttr() : UnitAttr(), UnitAttr(),
      LLVM::TailCallKindAttr::get(ctx, LLVM::tailcallkind::TailCallKind::None),
      LLVM::AsmDialectAttr::get(ctx, LLVM::AsmDialect::AD_ATT), ArrayAttr());
  return resultType ? op.getResult(0) : Value();
}

void PtxBuilder::setMaxNReg(bool increase, int regs) {
  inlineAsm(llvm::formatv("setmaxnreg.{0}.sync.aligned.u32 {1};",
                          increase ? "inc" : "dec", regs)
                .str(),
            "", {});
}

void PtxBuilder::mbarrierInit(Value bar, int64_t count) {
  inlineAsm("mbarrier.init.shared::cta.b64 [$0], $1;", "r,r", {bar, i32(count)});
}

void PtxBuilder::fenceMbarrierInit() {
  inlineAsm("fence.mbarrier_init.release.cluster;", "", {});
}

void PtxBuilder::mbarrierArrive(Value bar) {
  inlineAsm("mbarrier.arrive.shared::cta.b64 _, [$0];", "r", {bar});
}

void PtxBuilder::mbarrierArriveExpectTx(Value bar, int64_t bytes) {
  inlineAsm("mbarrier.arrive.expect_tx.shared::cta.b64 _, [$0], $1;", "r,r",
            {bar, i32(bytes)});
}

void PtxBuilder::mbarrierWait(Value bar, Value parity) {
  auto loop = scf::WhileOp::create(b, TypeRange{}, ValueRange{});
  {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(b.createBlock(&loop.getBefore()));
    Value done = inlineAsm(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [$1], "
        "$2;\nselp.u32 $0, 1, 0, p;\n}",
        "=r,r,r", {bar, parity}, b.getI32Type());
    Value pending =
        arith::CmpIOp::create(b, arith::CmpIPredicate::eq, done, i32(0));
    scf::ConditionOp::create(b, pending, ValueRange{});
    b.setInsertionPointToStart(b.createBlock(&loop.getAfter()));
    scf::YieldOp::create(b, ValueRange{});
  }
}

void PtxBuilder::fenceTensorMap(Value tensorMap) {
  inlineAsm("fence.proxy.tensormap::generic.acquire.sys [$0], 128;", "l",
            {tensorMap});
}

void PtxBuilder::tmaLoad4d(Value dst, Value tensorMap, ValueRange coords,
                           Value bar) {
  SmallVector<Value> operands = {dst, tensorMap};
  operands.append(coords.begin(), coords.end());
  operands.push_back(bar);
  inlineAsm("cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::"
            "complete_tx::bytes [$0], [$1, {$2, $3, $4, $5}], [$6];",
            "r,l,r,r,r,r,r", operands);
}

Value PtxBuilder::wgmmaDescriptor(Value addr, int64_t lbo, int64_t sbo) {
  // (addr >> 4) in bits 0-13, LBO >> 4 in 16-29, SBO >> 4 in 32-45, and the
  // 128-byte swizzle mode (1) in bits 62-63. Tiles are 1024-byte aligned, so
  // the base offset (bits 49-51) is 0.
  int64_t high = ((lbo >> 4) & 0x3FFF) << 16 | ((sbo >> 4) & 0x3FFF) << 32 |
                 (int64_t(1) << 62);
  Value a = arith::ExtUIOp::create(b, b.getI64Type(), addr);
  a = arith::ShRUIOp::create(b, a, i64(4));
  a = arith::AndIOp::create(b, a, i64(0x3FFF));
  return arith::OrIOp::create(b, a, i64(high));
}

void PtxBuilder::wgmmaFence() { inlineAsm("wgmma.fence.sync.aligned;", "", {}); }
void PtxBuilder::wgmmaCommit() {
  inlineAsm("wgmma.commit_group.sync.aligned;", "", {});
}
void PtxBuilder::wgmmaWait(int pending) {
  inlineAsm(llvm::formatv("wgmma.wait_group.sync.aligned {0};", pending).str(),
            "", {});
}

namespace {
StringRef typeName(Type elem) { return elem.isBF16() ? "bf16" : "f16"; }

/// "{$first, ..., $first+count-1}"
std::string regList(int64_t first, int64_t count) {
  std::string s = "{";
  for (int64_t i = 0; i < count; ++i)
    s += (i ? ", $" : "$") + std::to_string(first + i);
  return s + "}";
}

/// Output constraints "=f" (or "=r") x n, then tied inputs "0".."n-1" when
/// `tied`.
std::string accConstraints(int64_t n, bool tied, StringRef kind = "f") {
  std::string s;
  for (int64_t i = 0; i < n; ++i)
    s += (i ? ",=" : "=") + kind.str();
  if (tied)
    for (int64_t i = 0; i < n; ++i)
      s += "," + std::to_string(i);
  return s;
}

SmallVector<Value> unpack(ImplicitLocOpBuilder &b, Value st, int64_t n) {
  if (n == 1)
    return {st};
  SmallVector<Value> out;
  for (int64_t i = 0; i < n; ++i)
    out.push_back(LLVM::ExtractValueOp::create(b, st, ArrayRef<int64_t>{i}));
  return out;
}

Type accStruct(MLIRContext *ctx, int64_t n, Type elem = nullptr) {
  elem = elem ? elem : Float32Type::get(ctx);
  if (n == 1)
    return elem;
  return LLVM::LLVMStructType::getLiteral(ctx, SmallVector<Type>(n, elem));
}
} // namespace

SmallVector<Value> PtxBuilder::wgmmaSS(ArrayRef<Value> acc, Value descA,
                                       Value descB, int64_t n, Type elem,
                                       bool accumulate) {
  int64_t regs = n / 2;
  int64_t next = accumulate ? 2 * regs : regs;
  std::string text = llvm::formatv(
      "{\n.reg .pred p;\nsetp.ne.b32 p, {0}, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n{1}k16.f32.{2}.{2} {3}, ${4}, ${5}, p, "
      "1, 1, 0, 0;\n}",
      accumulate ? 1 : 0, n, typeName(elem), regList(0, regs), next, next + 1);
  SmallVector<Value> operands;
  if (accumulate)
    operands.append(acc.begin(), acc.end());
  operands.push_back(descA);
  operands.push_back(descB);
  Value st = inlineAsm(text, accConstraints(regs, accumulate) + ",l,l", operands,
                       accStruct(b.getContext(), regs));
  return unpack(b, st, regs);
}

SmallVector<Value> PtxBuilder::wgmmaRS(ArrayRef<Value> acc, ArrayRef<Value> a,
                                       Value descB, int64_t n, Type elem) {
  int64_t regs = n / 2;
  std::string text = llvm::formatv(
      "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n{0}k16.f32.{1}.{1} {2}, {3}, ${4}, p, "
      "1, 1, 1;\n}",
      n, typeName(elem), regList(0, regs), regList(2 * regs, 4), 2 * regs + 4);
  SmallVector<Value> operands(acc.begin(), acc.end());
  operands.append(a.begin(), a.end());
  operands.push_back(descB);
  Value st = inlineAsm(text, accConstraints(regs, true) + ",r,r,r,r,l", operands,
                       accStruct(b.getContext(), regs));
  return unpack(b, st, regs);
}

SmallVector<Value> PtxBuilder::fenceOperands(ArrayRef<Value> regs, bool ints) {
  int64_t n = regs.size();
  Value st = inlineAsm("", accConstraints(n, true, ints ? "r" : "f"), regs,
                       accStruct(b.getContext(), n, ints ? b.getI32Type() : Type()));
  return unpack(b, st, n);
}

Value PtxBuilder::ex2(Value x) {
  return inlineAsm("ex2.approx.ftz.f32 $0, $1;", "=f,f", {x}, b.getF32Type(),
                   /*sideEffects=*/false);
}

Value PtxBuilder::packHalf2(Value lo, Value hi, Type elem) {
  auto f2 = VectorType::get({2}, b.getF32Type());
  auto h2 = VectorType::get({2}, elem);
  Value v = LLVM::PoisonOp::create(b, f2);
  v = LLVM::InsertElementOp::create(b, v, lo, i32(0));
  v = LLVM::InsertElementOp::create(b, v, hi, i32(1));
  Value h = LLVM::FPTruncOp::create(b, h2, v);
  return LLVM::BitcastOp::create(b, b.getI32Type(), h);
}
