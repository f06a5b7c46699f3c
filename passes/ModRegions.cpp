//===- ModRegions.cpp - helpers for score_mod/mask_mod regions --*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// The one place that copies and inlines the user's modifications: every pass
// (CPU and GPU) that moves the regions to a smaller op or into code calls
// these.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include "mlir/IR/IRMapping.h"

using namespace mlir;
using namespace mlir::flexattn;

void mlir::flexattn::cloneModRegions(ModRegionsOpInterface from,
                                     ModRegionsOpInterface to, bool withMask) {
  IRMapping mapping;
  from.getScoreMod().cloneInto(&to.getScoreMod(), mapping);
  if (withMask)
    from.getMaskMod().cloneInto(&to.getMaskMod(), mapping);
}

void mlir::flexattn::cloneRegion(Region &from, Region &to) {
  IRMapping mapping;
  from.cloneInto(&to, mapping);
}

Value mlir::flexattn::indexConst(OpBuilder &builder, Location loc, int64_t v) {
  return arith::ConstantIndexOp::create(builder, loc, v);
}

Value mlir::flexattn::memrefDim(OpBuilder &builder, Location loc, Value memref,
                                int64_t d) {
  auto type = cast<MemRefType>(memref.getType());
  if (!type.isDynamicDim(d))
    return indexConst(builder, loc, type.getDimSize(d));
  return memref::DimOp::create(builder, loc, memref, d);
}

Value mlir::flexattn::inlineModRegion(OpBuilder &builder, Location loc,
                                      Region &region,
                                      std::optional<Value> score,
                                      ValueRange indices, ValueRange captures) {
  return inlineModRegionValues(builder, loc, region, score, indices,
                               captures)
      .front();
}

SmallVector<Value> mlir::flexattn::inlineModRegionValues(
    OpBuilder &builder, Location loc, Region &region,
    std::optional<Value> score, ValueRange indices, ValueRange captures) {
  Block &block = region.front();
  IRMapping mapping;
  unsigned arg = 0;
  if (score)
    mapping.map(block.getArgument(arg++), *score);
  Type indexType = block.getArgument(arg).getType();
  for (Value idx : indices) {
    Value cast = idx;
    if (!indexType.isIndex())
      cast = arith::IndexCastOp::create(builder, loc, indexType, idx);
    mapping.map(block.getArgument(arg++), cast);
  }
  for (Value cap : captures)
    mapping.map(block.getArgument(arg++), cap);
  for (Operation &op : block.without_terminator())
    builder.clone(op, mapping);
  auto yield = cast<YieldOp>(block.getTerminator());
  return llvm::map_to_vector(yield.getValues(), [&](Value v) {
    return mapping.lookupOrDefault(v);
  });
}
