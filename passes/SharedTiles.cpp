//===- SharedTiles.cpp - rings in shared memory, fragments in words -*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//

#include "passes/SharedTiles.h"

using namespace mlir;
using namespace mlir::flexattn;

int64_t SharedTiles::layoutSlots(ArrayRef<RingAllocOp> allocs) {
  int64_t off = 0;
  for (RingAllocOp alloc : allocs) {
    RingLayout r{alloc.getType(), off, 0, 0, alloc.getConsumers()};
    off += r.type.getStages() * r.tileBytes();
    rings[alloc] = r;
  }
  return off;
}

LogicalResult SharedTiles::allocate(gpu::LaunchOp launch, Operation *after,
                                    int64_t bytes, int64_t align,
                                    int64_t maxBytes, bool roundUp) {
  bytes += align;
  if (maxBytes > 0 && bytes > maxBytes)
    return launch.emitOpError("the kernel's rings need ")
           << bytes << " bytes of shared memory, more than the " << maxBytes
           << " a block has (fewer stages use less)";
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPoint(launch);
  launch.getDynamicSharedMemorySizeMutable().assign(
      arith::ConstantIntOp::create(b, bytes, 32));
  b.setInsertionPointAfter(after);
  auto smemType = MemRefType::get({ShapedType::kDynamic}, b.getI8Type(), AffineMap(),
                                  gpu::AddressSpaceAttr::get(b.getContext(),
                                                             gpu::AddressSpace::Workgroup));
  Value dyn = gpu::DynamicSharedMemoryOp::create(b, smemType);
  Value raw = toI32(memref::ExtractAlignedPointerAsIndexOp::create(b, dyn));
  smem = roundUp ? arith::AndIOp::create(b, at(raw, align - 1), i32(~(align - 1))).getResult()
                 : raw;
  return success();
}

Value SharedTiles::shared(Value addr) {
  return LLVM::IntToPtrOp::create(b, LLVM::LLVMPointerType::get(b.getContext(), 3),
                                  addr);
}

std::pair<Value, Value> SharedTiles::stagePhase(const RingLayout &r, Value pos) {
  Value s = i32(r.type.getStages());
  Value stage = arith::RemUIOp::create(b, pos, s);
  Value phase = arith::AndIOp::create(b, arith::DivUIOp::create(b, pos, s), i32(1));
  return {stage, phase};
}

Value SharedTiles::slot(const RingLayout &r, Value stage) {
  return arith::AddIOp::create(b, at(smem, r.tileOff),
                               arith::MulIOp::create(b, stage, i32(r.tileBytes())));
}

bool SharedTiles::isTileValue(Operation *op) {
  return isa<RingSlotOp, SmemTileReinterpretOp, SmemTilePanelOp>(op) ||
         (isa<arith::SelectOp>(op) && isa<SmemTileType>(op->getResult(0).getType()));
}

bool SharedTiles::lowerTileValue(Operation *op) {
  if (auto slotOp = dyn_cast<RingSlotOp>(op)) {
    const RingLayout &r = rings.at(slotOp.getRing());
    tiles[slotOp] = slot(r, stagePhase(r, slotOp.getPosition()).first);
  } else if (auto cast = dyn_cast<SmemTileReinterpretOp>(op)) {
    tiles[cast] = tiles.at(cast.getSource());
  } else if (auto panel = dyn_cast<SmemTilePanelOp>(op)) {
    // Panel p starts p x rows x 128 bytes in, its row r r x 128 bytes in.
    int64_t rows = panel.getSource().getType().getRows();
    Value off = arith::AddIOp::create(
        b, arith::MulIOp::create(b, toI32(panel.getPanel()), i32(rows * 128)),
        arith::MulIOp::create(b, toI32(panel.getRow()), i32(128)));
    tiles[panel] = arith::AddIOp::create(b, tiles.at(panel.getSource()), off);
  } else if (auto select = dyn_cast<arith::SelectOp>(op); select && isTileValue(op)) {
    tiles[select] = arith::SelectOp::create(b, select.getCondition(),
                                            tiles.at(select.getTrueValue()),
                                            tiles.at(select.getFalseValue()));
  } else {
    return false;
  }
  return true;
}

SmallVector<Value> SharedTiles::elements(Value vector) {
  SmallVector<Value> out;
  for (int64_t i = 0, n = cast<VectorType>(vector.getType()).getNumElements(); i < n; ++i)
    out.push_back(vector::ExtractOp::create(b, vector, ArrayRef<int64_t>{i}));
  return out;
}

Value SharedTiles::vectorOf(Type type, ValueRange elems) {
  return vector::FromElementsOp::create(b, cast<VectorType>(type), elems);
}

SmallVector<Value> SharedTiles::pairs(Value halves) {
  int64_t n = cast<VectorType>(halves.getType()).getNumElements();
  SmallVector<Value> out;
  for (int64_t i = 0; i < n; i += 2) {
    Value pair = vector::ExtractStridedSliceOp::create(
        b, halves, ArrayRef<int64_t>{i}, ArrayRef<int64_t>{2}, ArrayRef<int64_t>{1});
    Value word = vector::BitCastOp::create(b, VectorType::get({1}, b.getI32Type()), pair);
    out.push_back(vector::ExtractOp::create(b, word, ArrayRef<int64_t>{0}));
  }
  return out;
}

Value SharedTiles::fromPairs(VectorType type, ValueRange words) {
  Value packed = vectorOf(VectorType::get({int64_t(words.size())}, b.getI32Type()), words);
  return vector::BitCastOp::create(b, type, packed);
}
