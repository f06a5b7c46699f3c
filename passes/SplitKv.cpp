//===- SplitKv.cpp - flexattn-split-kv --------------------------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// Splits the KV tiles of every Q tile into S ranges run as separate tiles
// (FlashDecoding): each range normalises its partial result into scratch
// buffers the caller passes, and the last range of a tile to finish merges
// them by their logsumexp. S is the scratch buffers' leading size, chosen
// per call.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include "mlir/Dialect/Arith/Utils/Utils.h"
#include <limits>

namespace mlir::flexattn {
#define GEN_PASS_DEF_FLEXATTNSPLITKV
#include "passes/Passes.h.inc"
} // namespace mlir::flexattn

using namespace mlir;
using namespace mlir::flexattn;

namespace {

/// The one op of type OpT under `root`, or null.
template <typename OpT>
OpT soleOp(Operation *root) {
  OpT found;
  int n = 0;
  root->walk([&](OpT op) {
    found = op;
    ++n;
  });
  return n == 1 ? found : OpT();
}

Value mul(OpBuilder &b, Location loc, Value x, Value y) {
  return arith::MulIOp::create(b, loc, x, y);
}

/// Split `s`'s part of `scratch` ([S, n] f32) as a contiguous buffer of
/// `shape` (static where known), `sizes`.
Value splitView(OpBuilder &b, Location loc, Value scratch, Value s,
                ArrayRef<int64_t> shape, ArrayRef<OpFoldResult> sizes) {
  int64_t rank = shape.size();
  SmallVector<OpFoldResult> strides(rank);
  SmallVector<int64_t> staticStrides(rank);
  int64_t staticStride = 1;
  Value stride = indexConst(b, loc, 1);
  for (int64_t d = rank - 1; d >= 0; --d) {
    staticStrides[d] = staticStride;
    strides[d] = ShapedType::isDynamic(staticStride)
                     ? OpFoldResult(stride)
                     : OpFoldResult(b.getIndexAttr(staticStride));
    if (ShapedType::isDynamic(shape[d]) || ShapedType::isDynamic(staticStride))
      staticStride = ShapedType::kDynamic;
    else
      staticStride *= shape[d];
    stride = mul(b, loc, stride, getValueOrCreateConstantIndexOp(b, loc, sizes[d]));
  }
  // `stride` is now the number of elements of one split.
  Value offset = mul(b, loc, s, stride);
  auto viewType = MemRefType::get(
      shape, b.getF32Type(),
      StridedLayoutAttr::get(b.getContext(), ShapedType::kDynamic,
                             staticStrides));
  return memref::ReinterpretCastOp::create(b, loc, viewType, scratch,
                                           OpFoldResult(offset), sizes,
                                           strides);
}

/// out[b, h, i, :] and lse[b, h, i] for the rows [q0, end) of a tile, from
/// the S partial results: lse = log sum_s exp(lse_s) and out = sum_s
/// exp(lse_s - lse) out_s (0 and -inf when every lse_s is -inf).
void emitMerge(OpBuilder &b, Location loc, FinalizeOp fin, Value out,
               Value lse, Value partOut, Value partLse, Value splits) {
  Value c0 = indexConst(b, loc, 0), c1 = indexConst(b, loc, 1);
  Type f32 = b.getF32Type();
  auto f = [&](float v) {
    return arith::ConstantOp::create(b, loc, b.getF32FloatAttr(v)).getResult();
  };
  Value ninf = f(-std::numeric_limits<float>::infinity());
  int64_t bm = cast<MemRefType>(fin.getAcc().getType()).getDimSize(0);
  Value rowsM = memrefDim(b, loc, out, 2);
  Value heads = memrefDim(b, loc, out, 1);
  Value dv = memrefDim(b, loc, out, 3);
  Value end = arith::MinUIOp::create(
      b, loc, arith::AddIOp::create(b, loc, fin.getQ0(), indexConst(b, loc, bm)),
      rowsM);
  Type outElem = cast<MemRefType>(out.getType()).getElementType();
  auto rowLoop = scf::ForOp::create(b, loc, fin.getQ0(), end, c1);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(rowLoop.getBody());
  Value i = rowLoop.getInductionVar();
  // The row's place in the [B, H, M] scratch rows.
  Value row = arith::AddIOp::create(
      b, loc,
      mul(b, loc,
          arith::AddIOp::create(b, loc, mul(b, loc, fin.getB(), heads),
                                fin.getH()),
          rowsM),
      i);
  auto reduceSplits = [&](Value init,
                          function_ref<Value(OpBuilder &, Value, Value)> step) {
    auto loop = scf::ForOp::create(b, loc, c0, splits, c1, ValueRange{init});
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(loop.getBody());
    scf::YieldOp::create(
        b, loc, step(b, loop.getInductionVar(), loop.getRegionIterArgs()[0]));
    return loop.getResult(0);
  };
  auto lseOf = [&](OpBuilder &nb, Value s) -> Value {
    return memref::LoadOp::create(nb, loc, partLse, ValueRange{s, row});
  };
  // m = max_s lse_s (0 when all are -inf, so every weight is exp(-inf) = 0)
  Value m = reduceSplits(ninf, [&](OpBuilder &nb, Value s, Value acc) -> Value {
    return arith::MaximumFOp::create(nb, loc, acc, lseOf(nb, s));
  });
  m = arith::SelectOp::create(
      b, loc,
      arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ, m, ninf), f(0),
      m);
  auto weight = [&](OpBuilder &nb, Value s) -> Value {
    return math::ExpOp::create(
        nb, loc, arith::SubFOp::create(nb, loc, lseOf(nb, s), m));
  };
  // l = sum_s exp(lse_s - m); lse = m + log(l)
  Value l = reduceSplits(f(0), [&](OpBuilder &nb, Value s, Value acc) -> Value {
    return arith::AddFOp::create(nb, loc, acc, weight(nb, s));
  });
  if (lse)
    memref::StoreOp::create(
        b, loc,
        arith::AddFOp::create(b, loc, m, math::LogOp::create(b, loc, l)), lse,
        ValueRange{fin.getB(), fin.getH(), i});
  Value empty = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ, l, f(0));
  Value inv = arith::SelectOp::create(b, loc, empty, f(0),
                                      arith::DivFOp::create(b, loc, f(1), l));
  // out = sum_s exp(lse_s - m) / l * out_s
  auto colLoop = scf::ForOp::create(b, loc, c0, dv, c1);
  b.setInsertionPointToStart(colLoop.getBody());
  Value d = colLoop.getInductionVar();
  Value col = arith::AddIOp::create(b, loc, mul(b, loc, row, dv), d);
  Value sum = reduceSplits(f(0), [&](OpBuilder &nb, Value s, Value acc) -> Value {
    Value o = memref::LoadOp::create(nb, loc, partOut, ValueRange{s, col});
    return math::FmaOp::create(nb, loc, weight(nb, s), o, acc);
  });
  Value r = arith::MulFOp::create(b, loc, sum, inv);
  if (outElem != f32)
    r = arith::TruncFOp::create(b, loc, outElem, r);
  memref::StoreOp::create(b, loc, r, out, ValueRange{fin.getB(), fin.getH(), i, d});
}

} // namespace

LogicalResult mlir::flexattn::splitKv(RewriterBase &rewriter,
                                      func::FuncOp func, int64_t staticSplits,
                                      bool merge) {
  if (func.isExternal())
    return success();
  SmallVector<scf::ParallelOp> tiles;
  for (auto par : func.getBody().getOps<scf::ParallelOp>())
    if (soleOp<KvLoopOp>(par))
      tiles.push_back(par);
  if (tiles.empty())
    return success();
  if (tiles.size() != 1)
    return func.emitOpError() << "flexattn-split-kv splits one attention per "
                              << "function, found " << tiles.size();
  scf::ParallelOp par = tiles.front();
  KvLoopOp loop = soleOp<KvLoopOp>(par);
  FinalizeOp fin = soleOp<FinalizeOp>(par);
  if (!fin || par.getNumLoops() != 3 || par.getNumResults())
    return par.emitOpError() << "must be flexattn-tile's loop over (batch, "
                             << "head, Q tile) with one kv_loop and one finalize";
  if (loop.getSplit())
    return loop.emitOpError() << "is split already";
  if (fin.getSinks() || fin.getMaxScores())
    return fin.emitOpError() << "flexattn-split-kv does not merge attention "
                             << "sinks or max_scores across KV ranges yet";

  // The scratch arguments: partial outputs [S, B*H*M*Dv], their lse
  // [S, B*H*M] (f32), and one arrival count per tile (i32, zero) when the
  // kernel merges. Static with `splits`.
  Location loc = par.getLoc();
  MLIRContext *ctx = rewriter.getContext();
  Type f32 = rewriter.getF32Type();
  auto dyn = ShapedType::kDynamic;
  int64_t rows = dyn, cols = dyn, s0 = dyn;
  auto outType = cast<MemRefType>(fin.getOut().getType());
  if (staticSplits > 0) {
    if (!outType.hasStaticShape())
      return fin.emitOpError() << "flexattn-split-kv{splits} needs a static "
                               << "out, got " << outType;
    s0 = staticSplits;
    rows = outType.getNumElements() / outType.getDimSize(3);
    cols = outType.getNumElements();
  }
  unsigned argNo = func.getNumArguments();
  auto named = [&](StringRef role) {
    return rewriter.getDictionaryAttr(rewriter.getNamedAttr(
        "flexattn.split_kv", StringAttr::get(ctx, role)));
  };
  SmallVector<unsigned> at = {argNo, argNo};
  SmallVector<Type> types = {MemRefType::get({s0, cols}, f32),
                             MemRefType::get({s0, rows}, f32)};
  SmallVector<DictionaryAttr> attrs = {named("out"), named("lse")};
  if (merge) {
    at.push_back(argNo);
    types.push_back(MemRefType::get({dyn}, rewriter.getI32Type()));
    attrs.push_back(named("arrivals"));
  }
  if (failed(func.insertArguments(at, types, attrs,
                                  SmallVector<Location>(at.size(), loc))))
    return failure();
  Value partOut = func.getArgument(argNo), partLse = func.getArgument(argNo + 1);

  // (batch, head, Q tile) -> (split, batch, head, Q tile): consecutive
  // tickets of flexattn-distribute-tiles are the splits of one tile.
  OpBuilder::InsertionGuard guard(rewriter);
  rewriter.setInsertionPoint(par);
  Value splits;
  if (staticSplits > 0)
    splits = indexConst(rewriter, loc, staticSplits);
  else
    splits = memref::DimOp::create(rewriter, loc, partLse, 0);
  Value c0 = indexConst(rewriter, loc, 0), c1 = indexConst(rewriter, loc, 1);
  SmallVector<Value> ubs = {splits};
  llvm::append_range(ubs, par.getUpperBound());
  auto split = scf::ParallelOp::create(rewriter, loc,
                                       SmallVector<Value>(4, c0), ubs,
                                       SmallVector<Value>(4, c1));
  Block *body = split.getBody();
  rewriter.eraseOp(body->getTerminator());
  SmallVector<Value> ivs = split.getInductionVars();
  rewriter.mergeBlocks(par.getBody(), body, ArrayRef(ivs).drop_front());
  rewriter.eraseOp(par);
  Value s = ivs[0];

  // The kv_loop visits its split's range; finalize writes its partial rows.
  loop.getSplitMutable().assign(s);
  loop.getSplitsMutable().assign(splits);
  Value out = fin.getOut(), lse = fin.getLse();
  rewriter.setInsertionPoint(fin);
  ArrayRef<int64_t> shape = cast<MemRefType>(out.getType()).getShape();
  SmallVector<OpFoldResult> sizes = memref::getMixedSizes(rewriter, loc, out);
  fin.getOutMutable().assign(splitView(rewriter, loc, partOut, s, shape, sizes));
  fin.getLseMutable().assign(splitView(rewriter, loc, partLse, s,
                                       shape.drop_back(),
                                       ArrayRef(sizes).drop_back()));

  if (!merge)
    return success();
  // The tile's last split to arrive merges (atomic_rmw is acq_rel: the
  // other splits' partial rows are visible to it).
  Value arrivals = func.getArgument(argNo + 2);
  rewriter.setInsertionPointAfter(fin);
  Value tile = arith::AddIOp::create(
      rewriter, loc,
      mul(rewriter, loc,
          arith::AddIOp::create(rewriter, loc, mul(rewriter, loc, ivs[1], ubs[2]),
                                ivs[2]),
          ubs[3]),
      ivs[3]);
  Value one = arith::ConstantOp::create(rewriter, loc, rewriter.getI32IntegerAttr(1));
  Value arrived = memref::AtomicRMWOp::create(
      rewriter, loc, arith::AtomicRMWKind::addi, one, arrivals, ValueRange{tile});
  Value lastIdx = arith::IndexCastOp::create(
      rewriter, loc, rewriter.getI32Type(),
      arith::SubIOp::create(rewriter, loc, splits, c1));
  Value last = arith::CmpIOp::create(rewriter, loc, arith::CmpIPredicate::eq,
                                     arrived, lastIdx);
  auto ifLast = scf::IfOp::create(rewriter, loc, last, /*withElseRegion=*/false);
  rewriter.setInsertionPoint(ifLast.thenBlock()->getTerminator());
  emitMerge(rewriter, loc, fin, out, lse, partOut, partLse, splits);
  return success();
}

namespace {
struct FlexAttnSplitKvPass
    : public flexattn::impl::FlexAttnSplitKvBase<FlexAttnSplitKvPass> {
  using FlexAttnSplitKvBase::FlexAttnSplitKvBase;

  void runOnOperation() override {
    IRRewriter rewriter(&getContext());
    WalkResult r = getOperation()->walk([&](func::FuncOp func) {
      return failed(splitKv(rewriter, func, splits, merge)) ? WalkResult::interrupt()
                                             : WalkResult::advance();
    });
    if (r.wasInterrupted())
      signalPassFailure();
  }
};
} // namespace
