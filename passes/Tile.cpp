//===- Tile.cpp - flexattn-tile ---------------------------------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// Splits flexattn.attention into independent Q tiles (parallel over batch,
// query head and Q tile) that each own an online-softmax state and walk the
// KV tiles sequentially through flexattn.kv_loop. K/V of batch 1 shared by
// every query batch are read through a batch-stride-0 view.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include <limits>

namespace mlir::flexattn {
#define GEN_PASS_DEF_FLEXATTNTILE
#include "passes/Passes.h.inc"
} // namespace mlir::flexattn

using namespace mlir;
using namespace mlir::flexattn;

namespace {

Value floatConst(OpBuilder &b, Location loc, float v) {
  return arith::ConstantOp::create(b, loc, b.getF32FloatAttr(v));
}

/// An f32 stack buffer of `shape`, where kDynamic dims take `dynSizes`.
Value allocaF32(OpBuilder &b, Location loc, ArrayRef<int64_t> shape,
                ValueRange dynSizes) {
  auto type = MemRefType::get(shape, b.getF32Type());
  return memref::AllocaOp::create(b, loc, type, dynSizes);
}

/// `kv` as the Q tiles read it: a K or V of batch 1 shared by a query batch
/// of B (broadcast) becomes a [B, ...] view with batch stride 0, so every op
/// below indexes it with the query's b and reads batch 0. No copy.
Value broadcastBatch(OpBuilder &b, Location loc, Value kv, Value q) {
  auto type = cast<MemRefType>(kv.getType());
  auto qType = cast<MemRefType>(q.getType());
  if (type.getDimSize(0) != 1 || qType.getDimSize(0) == 1)
    return kv;
  auto [strides, offset] = type.getStridesAndOffset();
  SmallVector<int64_t> shape(type.getShape());
  shape[0] = qType.getDimSize(0);
  strides[0] = 0;
  auto viewType = MemRefType::get(
      shape, type.getElementType(),
      StridedLayoutAttr::get(b.getContext(), offset, strides),
      type.getMemorySpace());
  // Static sizes, strides and offset as attributes; dynamic ones as values
  // (the metadata of `kv`, the query's batch).
  memref::ExtractStridedMetadataOp meta;
  auto metadata = [&]() {
    if (!meta)
      meta = memref::ExtractStridedMetadataOp::create(b, loc, kv);
    return meta;
  };
  auto fold = [&](int64_t v, function_ref<Value()> dynamic) -> OpFoldResult {
    return ShapedType::isDynamic(v) ? OpFoldResult(dynamic()) : b.getIndexAttr(v);
  };
  SmallVector<OpFoldResult> sizes, strideVals;
  for (int64_t d = 0; d < type.getRank(); ++d) {
    Value source = d == 0 ? q : kv;
    sizes.push_back(fold(shape[d], [&] { return memrefDim(b, loc, source, d); }));
    strideVals.push_back(fold(strides[d], [&] { return metadata().getStrides()[d]; }));
  }
  OpFoldResult off = fold(offset, [&] { return metadata().getOffset(); });
  return memref::ReinterpretCastOp::create(b, loc, viewType, kv, off, sizes,
                                           strideVals);
}

} // namespace

LogicalResult mlir::flexattn::tileAttention(RewriterBase &rewriter,
                                            AttentionOp op, int64_t tileQ,
                                            int64_t tileKV) {
  if (tileQ <= 0 || tileKV <= 0)
    return op.emitOpError() << "tile sizes must be positive, got " << tileQ
                            << " x " << tileKV;
  // A block mask fixes the KV tile to its KV block; the Q tile must divide
  // its Q block so each Q tile reads one row of the mask.
  if (auto bs = op.getBlockSize(); bs && op.hasBlockMask()) {
    tileKV = (*bs)[1];
    if (tileQ > (*bs)[0] || (*bs)[0] % tileQ != 0)
      tileQ = (*bs)[0];
  }

  Location loc = op.getLoc();
  OpBuilder::InsertionGuard guard(rewriter);
  rewriter.setInsertionPoint(op);
  Value q = op.getQ();
  Value k = broadcastBatch(rewriter, loc, op.getK(), q);
  Value v = broadcastBatch(rewriter, loc, op.getV(), q);
  Value c0 = indexConst(rewriter, loc, 0), c1 = indexConst(rewriter, loc, 1);
  Value batch = memrefDim(rewriter, loc, q, 0);
  Value heads = memrefDim(rewriter, loc, q, 1);
  Value seqQ = memrefDim(rewriter, loc, q, 2);
  Value group = arith::DivUIOp::create(rewriter, loc, heads,
                                       memrefDim(rewriter, loc, k, 1));
  Value bm = indexConst(rewriter, loc, tileQ);
  // ceil(M / BM) Q tiles.
  Value qTiles = arith::CeilDivUIOp::create(rewriter, loc, seqQ, bm);

  auto vType = cast<MemRefType>(v.getType());
  int64_t dv = vType.getDimSize(3);
  SmallVector<Value> dynDv;
  if (ShapedType::isDynamic(dv))
    dynDv.push_back(memrefDim(rewriter, loc, v, 3));

  auto par = scf::ParallelOp::create(
      rewriter, loc, ValueRange{c0, c0, c0}, ValueRange{batch, heads, qTiles},
      ValueRange{c1, c1, c1});
  rewriter.setInsertionPointToStart(par.getBody());
  Value b = par.getInductionVars()[0], h = par.getInductionVars()[1],
        qt = par.getInductionVars()[2];

  // The state lives on the stack for one tile: the scope frees it per
  // iteration.
  auto scope = memref::AllocaScopeOp::create(rewriter, loc, TypeRange{});
  Block *body = rewriter.createBlock(&scope.getBodyRegion());
  rewriter.setInsertionPointToStart(body);
  Value hkv = arith::DivUIOp::create(rewriter, loc, h, group);
  Value q0 = arith::MulIOp::create(rewriter, loc, qt, bm);
  Value acc = allocaF32(rewriter, loc, {tileQ, dv}, dynDv);
  Value max = allocaF32(rewriter, loc, {tileQ}, {});
  Value sum = allocaF32(rewriter, loc, {tileQ}, {});
  linalg::FillOp::create(rewriter, loc, floatConst(rewriter, loc, 0.0f), acc);
  linalg::FillOp::create(
      rewriter, loc,
      floatConst(rewriter, loc, -std::numeric_limits<float>::infinity()), max);
  linalg::FillOp::create(rewriter, loc, floatConst(rewriter, loc, 0.0f), sum);

  auto loop = KvLoopOp::create(
      rewriter, loc, q, k, v, acc, max, sum, b, h, hkv, q0,
      op.getKvNumBlocks(), op.getKvIndices(), op.getFullKvNumBlocks(),
      op.getFullKvIndices(), op.getCaptures(), op.getScaleAttr(),
      rewriter.getDenseI64ArrayAttr({tileQ, tileKV}), op.getBlockSizeAttr());
  cloneModRegions(op, loop);
  FinalizeOp::create(rewriter, loc, acc, max, sum, op.getSinks(), op.getOut(),
                     op.getLse(), op.getMaxScores(), b, h, q0);
  memref::AllocaScopeReturnOp::create(rewriter, loc, ValueRange{});

  rewriter.eraseOp(op);
  return success();
}

namespace {
struct FlexAttnTilePass
    : public flexattn::impl::FlexAttnTileBase<FlexAttnTilePass> {
  using FlexAttnTileBase::FlexAttnTileBase;

  void runOnOperation() override {
    SmallVector<Operation *> ops;
    getOperation()->walk([&](Operation *op) {
      if (isa<AttentionOp, AttentionBackwardOp>(op))
        ops.push_back(op);
    });
    IRRewriter rewriter(&getContext());
    for (Operation *op : ops) {
      LogicalResult r =
          isa<AttentionOp>(op)
              ? tileAttention(rewriter, cast<AttentionOp>(op), tileQ, tileKV)
              : tileAttentionBackward(rewriter, cast<AttentionBackwardOp>(op),
                                      tileQ, tileKV);
      if (failed(r))
        return signalPassFailure();
    }
  }
};
} // namespace
