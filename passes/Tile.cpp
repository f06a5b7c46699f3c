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

#include "passes/PackHeads.h"
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
                                            int64_t tileKV, bool packHeads,
                                            bool blockTiles) {
  if (tileQ <= 0 || tileKV <= 0)
    return op.emitOpError() << "tile sizes must be positive, got " << tileQ
                            << " x " << tileKV;
  auto qType = cast<MemRefType>(op.getQ().getType());
  int64_t hq = qType.getDimSize(1);
  int64_t hkvCount = cast<MemRefType>(op.getK().getType()).getDimSize(1);
  if (packHeads) {
    if (op.getSinks() || op.getMaxScores())
      return op.emitOpError() << "pack-heads does not take attention sinks or "
                              << "max_scores yet (their rows are per query head)";
    if (ShapedType::isDynamic(hq) || ShapedType::isDynamic(hkvCount))
      return op.emitOpError() << "pack-heads needs static head counts, got q "
                              << qType << " and k " << op.getK().getType();
    for (Value buf : {op.getQ(), op.getOut(), op.getLse()})
      if (buf && !cast<MemRefType>(buf.getType()).getLayout().isIdentity())
        return op.emitOpError() << "pack-heads views q, out and lse as [B, "
                                << "Hkv, G * M, ...]: they must be contiguous "
                                << "(identity layout), got " << buf.getType();
  }
  // A mask of one row per batch (head dim and query-block dim statically 1)
  // is already the union of a packed tile's rows: read in place (no union).
  auto oneRow = [](Value num) {
    auto t = cast<MemRefType>(num.getType());
    return t.getDimSize(1) == 1 && t.getDimSize(2) == 1;
  };
  bool rowPerBatch = op.hasBlockMask() && oneRow(op.getKvNumBlocks()) &&
                     (!op.getFullKvNumBlocks() || oneRow(op.getFullKvNumBlocks()));
  // A block mask fixes the KV tile to its KV block (with blockTiles: to
  // tileKV where it divides the block, each block then walked as several
  // tiles); an unpacked Q tile must divide its Q block so each Q tile reads
  // one row of the mask (a packed tile reads the union of its rows, built
  // per block).
  if (auto bs = op.getBlockSize(); bs && op.hasBlockMask()) {
    bool unionRows = packHeads && !rowPerBatch;
    if (!blockTiles || unionRows || tileKV > (*bs)[1] || (*bs)[1] % tileKV != 0)
      tileKV = (*bs)[1];
    if (!packHeads && (tileQ > (*bs)[0] || (*bs)[0] % tileQ != 0))
      tileQ = (*bs)[0];
  }

  Location loc = op.getLoc();
  OpBuilder::InsertionGuard guard(rewriter);
  rewriter.setInsertionPoint(op);
  Value q = op.getQ(), out = op.getOut(), lse = op.getLse();
  Value k = broadcastBatch(rewriter, loc, op.getK(), q);
  Value v = broadcastBatch(rewriter, loc, op.getV(), q);
  Value c0 = indexConst(rewriter, loc, 0), c1 = indexConst(rewriter, loc, 1);
  Value batch = memrefDim(rewriter, loc, q, 0);
  Value heads, seqQ, group, rowsPerHead;
  if (packHeads) {
    // The tiles of a K/V head hold the rows of its G query heads.
    int64_t g = hq / hkvCount;
    rowsPerHead = memrefDim(rewriter, loc, q, 2);
    group = indexConst(rewriter, loc, g);
    q = packHeadsView(rewriter, loc, q, g);
    out = packHeadsView(rewriter, loc, out, g);
    if (lse)
      lse = packHeadsView(rewriter, loc, lse, g);
    heads = memrefDim(rewriter, loc, q, 1);
    seqQ = memrefDim(rewriter, loc, q, 2);
  } else {
    heads = memrefDim(rewriter, loc, q, 1);
    seqQ = memrefDim(rewriter, loc, q, 2);
    group = arith::DivUIOp::create(rewriter, loc, heads,
                                   memrefDim(rewriter, loc, k, 1));
  }
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
  // Packed: h is the K/V head; the mods' heads start at h * G.
  Value hkv = packHeads ? h : arith::DivUIOp::create(rewriter, loc, h, group);
  Value modHead = packHeads ? arith::MulIOp::create(rewriter, loc, h, group) : h;
  Value q0 = arith::MulIOp::create(rewriter, loc, qt, bm);
  Value acc = allocaF32(rewriter, loc, {tileQ, dv}, dynDv);
  Value max = allocaF32(rewriter, loc, {tileQ}, {});
  Value sum = allocaF32(rewriter, loc, {tileQ}, {});
  linalg::FillOp::create(rewriter, loc, floatConst(rewriter, loc, 0.0f), acc);
  linalg::FillOp::create(
      rewriter, loc,
      floatConst(rewriter, loc, -std::numeric_limits<float>::infinity()), max);
  linalg::FillOp::create(rewriter, loc, floatConst(rewriter, loc, 0.0f), sum);

  PackedMask mask{op.getKvNumBlocks(), op.getKvIndices(),
                  op.getFullKvNumBlocks(), op.getFullKvIndices()};
  if (packHeads && op.hasBlockMask() && !rowPerBatch) {
    int64_t qBlock = (*op.getBlockSize())[0];
    Value end = arith::MinUIOp::create(
        rewriter, loc, arith::AddIOp::create(rewriter, loc, q0, bm), seqQ);
    Value kvBlocks = arith::CeilDivUIOp::create(
        rewriter, loc, memrefDim(rewriter, loc, k, 2),
        indexConst(rewriter, loc, tileKV));
    mask = unionBlockMask(
        rewriter, loc, op,
        packedTileRows(rewriter, loc, b, modHead, q0, end, rowsPerHead, qBlock),
        kvBlocks);
  }
  auto loop = KvLoopOp::create(
      rewriter, loc, q, k, v, acc, max, sum, b, modHead, hkv, q0, rowsPerHead,
      /*split=*/Value(), /*splits=*/Value(), mask.num, mask.indices,
      mask.fullNum, mask.fullIndices, op.getCaptures(), op.getScaleAttr(),
      rewriter.getDenseI64ArrayAttr({tileQ, tileKV}), op.getBlockSizeAttr());
  cloneModRegions(op, loop);
  FinalizeOp::create(rewriter, loc, acc, max, sum, op.getSinks(), out, lse,
                     op.getMaxScores(), b, packHeads ? hkv : h, q0);
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
              ? tileAttention(rewriter, cast<AttentionOp>(op), tileQ, tileKV,
                              packHeads, blockTiles)
              : tileAttentionBackward(rewriter, cast<AttentionBackwardOp>(op),
                                      tileQ, tileKV);
      if (failed(r))
        return signalPassFailure();
    }
  }
};
} // namespace
