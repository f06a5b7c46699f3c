//===- Wgmma.cpp - flexattn.mma as Hopper wgmma -----------------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//

#include "passes/Wgmma.h"
#include "passes/HopperAsm.h"

#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

using namespace mlir;
using namespace mlir::flexattn;

namespace {

/// The 64-bit descriptors of a 128-byte-swizzled tile at shared address
/// `base`, each `offset` bytes on: ((base + offset) >> 4) in bits 0-13,
/// LBO >> 4 in 16-29, SBO >> 4 in 32-45, swizzle mode 1 in 62-63 (tiles are
/// 1024-byte aligned: base offset 0). A CTA's shared addresses are below
/// 2^18, so base >> 4 fills bits 0-13 alone and the fields never carry into
/// each other: base >> 4 is taken once per tile, and each descriptor's low
/// word is one 32-bit add of a constant (CUTLASS moves its descriptors the
/// same way). Built per offset from scratch ((base + offset) >> 4, masked,
/// or-ed), a wgmma's two descriptors cost ptxas about six uniform-datapath
/// instructions: a quarter of the issue slots of the D = 128 KV step's
/// overhead beside its softmax (ncu against FlashAttention-4,
/// docs/gpu-pipeline.md §5).
struct Descriptors {
  SharedTiles &t;
  Value base, base16; // base >> 4 (hoisted), else null
  int64_t lbo, sbo;

  Descriptors(SharedTiles &t, Value base, int64_t lbo, int64_t sbo, bool hoisted)
      : t(t), base(base),
        base16(hoisted ? arith::ShRUIOp::create(t.b, base, t.i32(4)) : Value()), lbo(lbo),
        sbo(sbo) {}

  Value at(int64_t offset) {
    ImplicitLocOpBuilder &b = t.b;
    if (!base16) {
      int64_t high = ((lbo >> 4) & 0x3FFF) << 16 | ((sbo >> 4) & 0x3FFF) << 32 |
                     (int64_t(1) << 62);
      Value a = arith::ExtUIOp::create(b, b.getI64Type(), t.at(base, offset));
      a = arith::AndIOp::create(b, arith::ShRUIOp::create(b, a, t.i64(4)), t.i64(0x3FFF));
      return arith::OrIOp::create(b, a, t.i64(high));
    }
    int64_t low = ((lbo >> 4) & 0x3FFF) << 16 | (offset >> 4);
    int64_t high = ((sbo >> 4) & 0x3FFF) << 32 | (int64_t(1) << 62);
    Value word = arith::AddIOp::create(b, base16, t.i32(low));
    return arith::OrIOp::create(b, arith::ExtUIOp::create(b, b.getI64Type(), word),
                                t.i64(high));
  }
};

} // namespace

LogicalResult wgmma::lowerMma(SharedTiles &t, MmaOp op, bool hoisted) {
  ImplicitLocOpBuilder &b = t.b;
  MLIRContext *ctx = b.getContext();
  SmemTileType bType = op.getB().getType();
  Type elem = bType.getElementType();
  if (!elem.isBF16() && !elem.isF16())
    return op.emitOpError("wgmma takes bf16 or f16 tiles here, got ") << elem;
  int64_t regs = op.getType().getNumElements(), n = 2 * regs;
  if (int64_t cols = op.getTransposeB() ? bType.getRows() : bType.getCols(); n != cols)
    return op.emitOpError("wgmma gives each warp 16 rows (one m16 tile): ")
           << cols / 2 << " f32 per thread for N = " << cols << ", got " << regs;
  if (!isa_and_nonnull<MmaOp>(op->getPrevNode()))
    NVVM::WgmmaFenceAlignedOp::create(b);
  Value bAddr = t.tiles.at(op.getB());
  SmallVector<Value> out;
  if (auto aType = dyn_cast<SmemTileType>(op.getA().getType())) {
    // S = A.Bᵀ, both K-major in shared memory: one wgmma per 16 of K, the
    // descriptors moved 32 bytes per step within a panel. A row-major B
    // (MN-major, imm-trans-b 1: the backward's dQ = dX.K) moves 16 rows
    // (2048 bytes) per step, as with a register A.
    bool mnMajorB = !op.getTransposeB();
    auto structType = LLVM::LLVMStructType::getLiteral(
        ctx, SmallVector<Type>(regs, b.getF32Type()));
    Value d = LLVM::PoisonOp::create(b, structType);
    if (op.getAcc())
      for (auto [i, v] : llvm::enumerate(t.elements(op.getAcc())))
        d = LLVM::InsertValueOp::create(b, d, v, ArrayRef<int64_t>{int64_t(i)});
    Value aBase = t.tiles.at(op.getA());
    if (Value row = op.getARow())
      aBase = arith::AddIOp::create(
          b, aBase, arith::MulIOp::create(b, t.toI32(row), t.i32(kSwizzleBytes)));
    auto wgmmaType = elem.isBF16() ? NVVM::WGMMATypes::bf16 : NVVM::WGMMATypes::f16;
    Descriptors as(t, aBase, 16384, 1024, hoisted);
    Descriptors bs(t, bAddr, mnMajorB ? bType.getPanelBytes() : 16384, 1024, hoisted);
    for (int64_t kk = 0; kk < aType.getCols() / 16; ++kk) {
      int64_t inPanel = (kk % 4) * 32;
      Value da = as.at((kk / 4) * aType.getPanelBytes() + inPanel);
      Value db = mnMajorB ? bs.at(kk * 16 * kSwizzleBytes)
                          : bs.at((kk / 4) * bType.getPanelBytes() + inPanel);
      bool accumulate = kk > 0 || op.getAcc();
      d = NVVM::WgmmaMmaAsyncOp::create(
          b, structType, d, da, db, NVVM::MMAShapeAttr::get(ctx, 64, n, 16),
          NVVM::WGMMATypesAttr::get(ctx, wgmmaType),
          NVVM::WGMMATypesAttr::get(ctx, wgmmaType),
          NVVM::WGMMATypesAttr::get(ctx, NVVM::WGMMATypes::f32),
          NVVM::WGMMAScaleOutAttr::get(ctx, accumulate ? NVVM::WGMMAScaleOut::one
                                                       : NVVM::WGMMAScaleOut::zero),
          NVVM::WGMMAScaleInAttr::get(ctx, NVVM::WGMMAScaleIn::one),
          NVVM::WGMMAScaleInAttr::get(ctx, NVVM::WGMMAScaleIn::one),
          NVVM::MMALayoutAttr::get(ctx, NVVM::MMALayout::row),
          NVVM::MMALayoutAttr::get(ctx, mnMajorB ? NVVM::MMALayout::row : NVVM::MMALayout::col),
          NVVM::MMAIntOverflowAttr());
    }
    for (int64_t i = 0; i < regs; ++i)
      out.push_back(LLVM::ExtractValueOp::create(b, d, ArrayRef<int64_t>{i}));
  } else {
    // O += P.B with P in registers and B row-major (MN-major: imm-trans-b 1);
    // the descriptor moves 16 rows (2048 bytes) per step, LBO = the panel size
    // (B's own, also where b_row starts it further down).
    if (op.getTransposeB() || !op.getAcc())
      return op.emitOpError("this lowering takes a register A only with a "
                            "row-major B (no transpose_b) and an accumulator");
    SmallVector<Value> a = t.pairs(op.getA());
    out = t.elements(op.getAcc());
    // From B's row b_row (a multiple of 16: whole swizzle periods).
    if (Value row = op.getBRow())
      bAddr = arith::AddIOp::create(
          b, bAddr, arith::MulIOp::create(b, t.toI32(row), t.i32(kSwizzleBytes)));
    Descriptors bs(t, bAddr, bType.getPanelBytes(), 1024, hoisted);
    for (int64_t kk = 0; kk < int64_t(a.size()) / 4; ++kk) {
      Value db = bs.at(kk * 16 * kSwizzleBytes);
      out = hopper::wgmmaRegisterA(b, out, ArrayRef(a).slice(4 * kk, 4), db, n, elem);
    }
  }
  NVVM::WgmmaGroupSyncAlignedOp::create(b);
  op.replaceAllUsesWith(t.vectorOf(op.getType(), out));
  return success();
}

/// The scalars a vector was built from (vector.from_elements, maybe through
/// a vector.extract_strided_slice of a 1-D one), or none.
static SmallVector<Value> builtElements(Value v) {
  int64_t offset = 0, size = cast<VectorType>(v.getType()).getNumElements();
  if (auto slice = v.getDefiningOp<vector::ExtractStridedSliceOp>()) {
    if (slice.getSourceVectorType().getRank() != 1)
      return {};
    offset = cast<IntegerAttr>(slice.getOffsets()[0]).getInt();
    v = slice.getSource();
  }
  auto built = v.getDefiningOp<vector::FromElementsOp>();
  if (!built || offset + size > int64_t(built.getElements().size()))
    return {};
  return SmallVector<Value>(built.getElements().slice(offset, size));
}

void wgmma::lowerWait(SharedTiles &t, MmaWaitOp op) {
  ImplicitLocOpBuilder &b = t.b;
  if (!op.getAfter().empty()) {
    // The hold goes right after the last of the values computed in this
    // block (else here): ptxas keeps it about where it stands and issues the
    // wait soon after it, so placed at the wait it would pull the work
    // between those values and the wait (P's rounding) ahead of the wait.
    // (Elements of a vector built from scalars here are those scalars, so
    // the hold can follow the one it needs, not the last of the vector.)
    OpBuilder::InsertionGuard g(b);
    SmallVector<Value> after;
    for (Value v : op.getAfter()) {
      SmallVector<Value> known = builtElements(v);
      if (known.empty()) {
        if (Operation *def = v.getDefiningOp(); def && def->getBlock() == op->getBlock())
          b.setInsertionPointAfter(def);
        known = t.elements(v);
        b.setInsertionPoint(op);
      }
      llvm::append_range(after, known);
    }
    Operation *last = nullptr;
    for (Value v : after)
      if (Operation *def = v.getDefiningOp();
          def && def->getBlock() == op->getBlock() && (!last || last->isBeforeInBlock(def)))
        last = def;
    if (last)
      b.setInsertionPointAfter(last);
    hopper::holdUntil(b, after);
  }
  NVVM::WgmmaWaitGroupSyncOp::create(b, op.getPending());
  SmallVector<Value> results;
  for (Value v : op.getValues()) {
    auto type = cast<VectorType>(v.getType());
    if (type.getElementType().isF32()) {
      results.push_back(t.vectorOf(type, hopper::fenceRegisters(b, t.elements(v))));
      continue;
    }
    results.push_back(t.fromPairs(type, hopper::fenceRegisters(b, t.pairs(v))));
  }
  op.replaceAllUsesWith(results);
}
