//===- TileBuilder.h - linalg ops on tile-sized buffers ---------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// The builder the CPU decompositions (flexattn-fuse-online-softmax for the
// forward, flexattn-decompose-backward for the backward) write their formulas
// with: one helper call builds one linalg op on memref windows of a tile.
//
//===----------------------------------------------------------------------===//

#ifndef FLEXATTN_PASSES_TILEBUILDER_H
#define FLEXATTN_PASSES_TILEBUILDER_H

#include "passes/Passes.h"

#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include <limits>

namespace mlir::flexattn::tile {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

using utils::IteratorType;
constexpr IteratorType kPar = IteratorType::parallel;
constexpr IteratorType kRed = IteratorType::reduction;
using BodyFn = function_ref<Value(OpBuilder &, Location, ValueRange)>;

/// Builds linalg ops over memrefs in one place.
struct TileBuilder {
  OpBuilder &b;
  Location loc;

  Value f32(float v) {
    return arith::ConstantOp::create(b, loc, b.getF32FloatAttr(v));
  }
  Value index(int64_t v) { return indexConst(b, loc, v); }

  /// The affine map (d0..d{n-1}) -> (d{dims[0]}, ...).
  AffineMap map(unsigned n, ArrayRef<unsigned> dims) {
    SmallVector<AffineExpr> exprs;
    for (unsigned d : dims)
      exprs.push_back(b.getAffineDimExpr(d));
    return AffineMap::get(n, 0, exprs, b.getContext());
  }

  /// One linalg.generic; `body` gets the block arguments and returns the
  /// value to yield into the (single) output.
  void generic(ValueRange ins, ValueRange outs, ArrayRef<AffineMap> maps,
               ArrayRef<IteratorType> iters, BodyFn body) {
    linalg::GenericOp::create(
        b, loc, ins, outs, maps, iters,
        [&](OpBuilder &nb, Location nloc, ValueRange args) {
          linalg::YieldOp::create(nb, nloc, body(nb, nloc, args));
        });
  }

  /// One linalg.generic with several outputs; `body` returns one value per
  /// output.
  void genericMulti(ValueRange ins, ValueRange outs, ArrayRef<AffineMap> maps,
                    ArrayRef<IteratorType> iters,
                    function_ref<SmallVector<Value>(OpBuilder &, Location,
                                                    ValueRange)>
                        body) {
    linalg::GenericOp::create(
        b, loc, ins, outs, maps, iters,
        [&](OpBuilder &nb, Location nloc, ValueRange args) {
          linalg::YieldOp::create(nb, nloc, body(nb, nloc, args));
        });
  }

  /// A rank-1 or rank-2 f32 stack buffer and its leading `sizes` window.
  Value scratch(ArrayRef<int64_t> shape, ArrayRef<OpFoldResult> sizes) {
    Value buf = memref::AllocaOp::create(
        b, loc, MemRefType::get(shape, b.getF32Type()));
    return window(buf, sizes);
  }

  /// The window [0.., sizes] of a buffer, same rank.
  Value window(Value buf, ArrayRef<OpFoldResult> sizes) {
    SmallVector<OpFoldResult> zeros(sizes.size(), b.getIndexAttr(0));
    SmallVector<OpFoldResult> ones(sizes.size(), b.getIndexAttr(1));
    return memref::SubViewOp::create(b, loc, buf, zeros, sizes, ones);
  }

  /// The rows [row0, row0 + rows) of src[i0, i1] (a 4-D buffer gives a
  /// [rows, D] view, a 3-D one a [rows] view).
  Value rowsOf(Value src, Value i0, Value i1, Value row0, Value rows) {
    auto type = cast<MemRefType>(src.getType());
    SmallVector<OpFoldResult> offsets = {i0, i1, row0};
    SmallVector<OpFoldResult> sizes = {b.getIndexAttr(1), b.getIndexAttr(1),
                                       rows};
    SmallVector<int64_t> shape = {ShapedType::kDynamic};
    if (type.getRank() == 4) {
      offsets.push_back(b.getIndexAttr(0));
      sizes.push_back(type.isDynamicDim(3)
                          ? OpFoldResult(memref::DimOp::create(b, loc, src, 3)
                                             .getResult())
                          : OpFoldResult(b.getIndexAttr(type.getDimSize(3))));
      shape.push_back(type.getDimSize(3));
    }
    SmallVector<OpFoldResult> strides(offsets.size(), b.getIndexAttr(1));
    auto resultType = memref::SubViewOp::inferRankReducedResultType(
        shape, type, offsets, sizes, strides);
    return memref::SubViewOp::create(b, loc, resultType, src, offsets, sizes,
                                     strides);
  }

  /// min(tile, extent - start), at least 0: the live part of a tile.
  Value live(int64_t tile, Value extent, Value start) {
    Value rest = arith::SubIOp::create(b, loc, extent, start);
    Value n = arith::MinSIOp::create(b, loc, index(tile), rest);
    return arith::MaxSIOp::create(b, loc, n, index(0));
  }
};

inline Value toF32(OpBuilder &b, Location loc, Value v) {
  if (v.getType().isF32())
    return v;
  return arith::ExtFOp::create(b, loc, b.getF32Type(), v);
}

/// The running max as a subtraction base: 0 for a row with no finite score
/// yet, so exp2(-inf - base) = 0 instead of NaN.
inline Value finiteBase(OpBuilder &b, Location loc, Value m) {
  Value ninf = arith::ConstantOp::create(b, loc, b.getF32FloatAttr(kNegInf));
  Value zero = arith::ConstantOp::create(b, loc, b.getF32FloatAttr(0.0f));
  Value empty =
      arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ, m, ninf);
  return arith::SelectOp::create(b, loc, empty, zero, m);
}

} // namespace mlir::flexattn::tile

#endif // FLEXATTN_PASSES_TILEBUILDER_H
