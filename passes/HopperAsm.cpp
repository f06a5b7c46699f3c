//===- HopperAsm.cpp - Hopper instructions MLIR 22 has no op for -*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//

#include "passes/HopperAsm.h"

#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "llvm/Support/FormatVariadic.h"

using namespace mlir;
using namespace mlir::flexattn;

namespace {

/// "{$first, ..., $first+count-1}"
std::string regList(int64_t first, int64_t count) {
  std::string s = "{";
  for (int64_t i = 0; i < count; ++i)
    s += (i ? ", $" : "$") + std::to_string(first + i);
  return s + "}";
}

/// `n` outputs of register kind `kind` ("f" or "r"), then the n inputs tied
/// to them.
std::string tiedConstraints(int64_t n, StringRef kind) {
  std::string s;
  for (int64_t i = 0; i < n; ++i)
    s += (i ? ",=" : "=") + kind.str();
  for (int64_t i = 0; i < n; ++i)
    s += "," + std::to_string(i);
  return s;
}

/// An inline asm with side effects returning `n` (maybe 0) values of `type`.
SmallVector<Value> asmValues(ImplicitLocOpBuilder &b, StringRef text,
                             StringRef constraints, ValueRange operands,
                             Type type, int64_t n) {
  MLIRContext *ctx = b.getContext();
  SmallVector<Type> result;
  if (n)
    result.push_back(n == 1 ? type
                            : LLVM::LLVMStructType::getLiteral(ctx, SmallVector<Type>(n, type)));
  auto op = LLVM::InlineAsmOp::create(
      b, result, operands, b.getStringAttr(text),
      b.getStringAttr(constraints), b.getUnitAttr(), UnitAttr(),
      LLVM::TailCallKindAttr::get(ctx, LLVM::tailcallkind::TailCallKind::None),
      LLVM::AsmDialectAttr::get(ctx, LLVM::AsmDialect::AD_ATT), ArrayAttr());
  if (n <= 1)
    return SmallVector<Value>(op.getResults());
  SmallVector<Value> out;
  for (int64_t i = 0; i < n; ++i)
    out.push_back(LLVM::ExtractValueOp::create(b, op.getResult(0),
                                               ArrayRef<int64_t>{i}));
  return out;
}

} // namespace

SmallVector<Value> hopper::wgmmaRegisterA(ImplicitLocOpBuilder &b,
                                          ArrayRef<Value> acc, ArrayRef<Value> a,
                                          Value descB, int64_t n, Type elem) {
  int64_t regs = n / 2;
  std::string text = llvm::formatv(
      "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n{0}k16.f32.{1}.{1} {2}, {3}, ${4}, p, "
      "1, 1, 1;\n}",
      n, elem.isBF16() ? "bf16" : "f16", regList(0, regs), regList(2 * regs, 4),
      2 * regs + 4);
  SmallVector<Value> operands(acc.begin(), acc.end());
  operands.append(a.begin(), a.end());
  operands.push_back(descB);
  return asmValues(b, text, tiedConstraints(regs, "f") + ",r,r,r,r,l", operands,
                   b.getF32Type(), regs);
}

SmallVector<Value> hopper::fenceRegisters(ImplicitLocOpBuilder &b,
                                          ArrayRef<Value> regs) {
  Type type = regs.front().getType();
  return asmValues(b, "", tiedConstraints(regs.size(), type.isF32() ? "f" : "r"),
                   regs, type, regs.size());
}

void hopper::holdUntil(ImplicitLocOpBuilder &b, ArrayRef<Value> after) {
  assert(!after.empty() && "a hold needs a value to wait for");
  // z = 0 by construction (byte 4 of {a, b} is b's byte 0, and b is 0 or
  // the z before), yet it depends on every value: PRMT is not folded.
  std::string text = "{\n.reg .b32 z;\n.reg .pred p;\n";
  SmallVector<Value> operands;
  for (auto [i, v] : llvm::enumerate(after)) {
    text += llvm::formatv("prmt.b32 z, ${0}, {1}, 0x4444;\n", i, i ? "z" : "0").str();
    operands.push_back(LLVM::BitcastOp::create(b, b.getI32Type(), v));
  }
  text += "setp.ne.b32 p, z, 0;\n@p membar.cta;\n}";
  asmValues(b, text, llvm::join(SmallVector<std::string>(after.size(), "r"), ","), operands,
            Type(), 0);
}

void hopper::bulkReduceAddF32(ImplicitLocOpBuilder &b, Value addr, Value src, Value bytes) {
  asmValues(b, "cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [$0], [$1], $2;",
            "l,r,r,~{memory}", ValueRange{addr, src, bytes}, Type(), 0);
  NVVM::CpAsyncBulkCommitGroupOp::create(b);
}
