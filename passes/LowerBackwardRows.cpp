//===- LowerBackwardRows.cpp - flexattn-lower-backward-rows -----*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// Lowers the backward's tile ops inside a gpu.launch (the CTAs of
// flexattn-map-backward-to-grid) to per-thread code: thread t owns row t of
// the tile its accumulators cover and walks the other side's rows, with
// FlashAttention-2's math per score (P recomputed from lse):
//
//   dk/dv step (KV tile): thread t owns key j = kv0 + t; for each query row
//     i of the Q tile: x = q_i.k_j, dp = dout_i.v_j, (s, ds/dx, loads) =
//     mods(scale x), P = exp2(log2e s - base(log2e lse_i)),
//     dS = P (dp - delta_i), dx = scale dS ds/dx (0 where P = 0);
//     dv_j += P dout_i, dk_j += dx q_i
//   dq step (Q tile): thread t owns query i = q0 + t; for each key j of the
//     KV tile: the same scores; capture_grads[idx] += dS dload (f32 atomics,
//     skipped where dS = 0); dq_i += dx k_j
//
// The [T, D] tile accumulators become one f32 row per thread
// (memref<1 x D>), and flexattn.store_tile writes the thread's row. Every
// accumulator has one writer; only the capture gradients take atomics. No
// shared memory and no tensor cores: the CUDA-core baseline of the GPU
// backward, built on the same tile ops as the CPU decomposition.
//
//===----------------------------------------------------------------------===//

#include "passes/BackwardMath.h"
#include "passes/Passes.h"
#include "passes/TileBuilder.h"

namespace mlir::flexattn {
#define GEN_PASS_DEF_FLEXATTNLOWERBACKWARDROWS
#include "passes/Passes.h.inc"
} // namespace mlir::flexattn

using namespace mlir;
using namespace mlir::flexattn;
using namespace mlir::flexattn::tile;
using namespace mlir::flexattn::backward;

namespace {

/// A row operand: buffer[idx..., d] for d in the last dim.
struct Row {
  Value buffer;
  SmallVector<Value> idx;

  Value load(OpBuilder &b, Location loc, Value d) const {
    SmallVector<Value> at(idx);
    at.push_back(d);
    return toF32(b, loc, memref::LoadOp::create(b, loc, buffer, at));
  }
  Value size(OpBuilder &b, Location loc) const {
    auto type = cast<MemRefType>(buffer.getType());
    return memrefDim(b, loc, buffer, type.getRank() - 1);
  }
};

/// sum_d a[d] * c[d] in f32.
Value rowDot(OpBuilder &b, Location loc, const Row &a, const Row &c) {
  Value zero = arith::ConstantOp::create(b, loc, b.getF32FloatAttr(0.0f));
  auto loop = scf::ForOp::create(
      b, loc, indexConst(b, loc, 0), a.size(b, loc), indexConst(b, loc, 1),
      ValueRange{zero},
      [&](OpBuilder &nb, Location l, Value d, ValueRange acc) {
        scf::YieldOp::create(nb, l, ValueRange{math::FmaOp::create(
                                        nb, l, a.load(nb, l, d),
                                        c.load(nb, l, d), acc[0])});
      });
  return loop.getResult(0);
}

/// dst[0, :] = w * src[:] + (accumulate ? dst[0, :] : 0)
void rowUpdate(OpBuilder &b, Location loc, Value dst, Value w, const Row &src,
               bool accumulate) {
  Value c0 = indexConst(b, loc, 0);
  scf::ForOp::create(
      b, loc, c0, src.size(b, loc), indexConst(b, loc, 1), ValueRange{},
      [&](OpBuilder &nb, Location l, Value d, ValueRange) {
        Value x = src.load(nb, l, d);
        Value r = x;
        if (accumulate)
          r = math::FmaOp::create(
              nb, l, w, x, memref::LoadOp::create(nb, l, dst, ValueRange{c0, d}));
        memref::StoreOp::create(nb, l, r, dst, ValueRange{c0, d});
        scf::YieldOp::create(nb, l);
      });
}

/// The thread's row accumulators: old [T, D] tile -> new [1, D] row.
using RowAccs = DenseMap<Value, Value>;

/// An f32 [1, D] buffer of the thread, at the start of the CTA body.
Value threadRow(RewriterBase &rewriter, gpu::LaunchOp launch, Value like) {
  OpBuilder::InsertionGuard guard(rewriter);
  rewriter.setInsertionPointToStart(&launch.getBody().front());
  int64_t d = cast<MemRefType>(like.getType()).getDimSize(3);
  return memref::AllocaOp::create(
      rewriter, launch.getLoc(),
      MemRefType::get({1, d}, rewriter.getF32Type()));
}

LogicalResult lowerStepRows(RewriterBase &rewriter, BackwardStepOp op,
                            gpu::LaunchOp launch, const RowAccs &rows) {
  bool kvOwner = op.getDkAcc() || op.getDvAcc();
  if (kvOwner == static_cast<bool>(op.getDqAcc()))
    return op.emitOpError("flexattn-lower-backward-rows needs a step with dq "
                          "or with dk/dv, not both");
  if (kvOwner && !op.getCaptureGrads().empty())
    return op.emitOpError("flexattn-lower-backward-rows accumulates capture "
                          "gradients in the dq steps only");
  if (op.getDqSum())
    return op.emitOpError("flexattn-lower-backward-rows keeps dq in its own "
                          "tiles: dq_sum (flexattn-atomic-dq) is the tensor-core "
                          "kernel's");
  if (hasPartialCaptureGrads(op))
    return op.emitOpError("flexattn-lower-backward-rows adds capture gradients "
                          "with atomics: per-thread partial sums (the "
                          "deterministic mode) are flexattn-lower-backward-mma's");
  for (Value x : {op.getQ(), op.getK(), op.getV(), op.getDout()})
    if (!cast<MemRefType>(x.getType()).hasStaticShape())
      return op.emitOpError("flexattn-lower-backward-rows needs static shapes");
  Location loc = op.getLoc();
  Value tid = launch.getThreadIds().x;
  // The rows the thread owns, copied once to its own f32 buffers: k_j, v_j
  // (dk/dv steps) or q_i, dout_i (dq steps).
  Value ownA = threadRow(rewriter, launch, kvOwner ? op.getK() : op.getQ());
  Value ownB = threadRow(rewriter, launch, kvOwner ? op.getV() : op.getDout());
  OpBuilder::InsertionGuard guard(rewriter);
  rewriter.setInsertionPoint(op);
  TileBuilder t{rewriter, loc};
  Value nRows = t.live(op.getTileSize()[0],
                       memrefDim(rewriter, loc, op.getQ(), 2), op.getQ0());
  Value nCols = t.live(op.getTileSize()[1],
                       memrefDim(rewriter, loc, op.getK(), 2), op.getKv0());
  Value mine = arith::CmpIOp::create(rewriter, loc, arith::CmpIPredicate::ult,
                                     tid, kvOwner ? nCols : nRows);
  auto owned = scf::IfOp::create(rewriter, loc, mine, /*withElseRegion=*/false);
  rewriter.setInsertionPointToStart(owned.thenBlock());
  Value own = arith::AddIOp::create(rewriter, loc,
                                    kvOwner ? op.getKv0() : op.getQ0(), tid);
  SmallVector<Value> ownIdx = {op.getB(), kvOwner ? op.getHkv() : op.getH(), own};
  Value zero = t.f32(0.0f);
  rowUpdate(rewriter, loc, ownA, zero,
            Row{kvOwner ? op.getK() : op.getQ(), ownIdx}, /*accumulate=*/false);
  rowUpdate(rewriter, loc, ownB, zero,
            Row{kvOwner ? op.getV() : op.getDout(), ownIdx}, /*accumulate=*/false);
  Value c0 = t.index(0);
  Row mineA{ownA, {c0}}, mineB{ownB, {c0}};
  scf::ForOp::create(
      rewriter, loc, c0, kvOwner ? nRows : nCols, t.index(1), ValueRange{},
      [&](OpBuilder &b, Location l, Value other, ValueRange) {
        Value i = kvOwner ? other : tid, j = kvOwner ? tid : other;
        Value qi = arith::AddIOp::create(b, l, op.getQ0(), i);
        Value kj = arith::AddIOp::create(b, l, op.getKv0(), j);
        SmallVector<Value> qIdx = {op.getB(), op.getH(), qi};
        SmallVector<Value> kIdx = {op.getB(), op.getHkv(), kj};
        Row q = kvOwner ? Row{op.getQ(), qIdx} : mineA;
        Row dout = kvOwner ? Row{op.getDout(), qIdx} : mineB;
        Row k = kvOwner ? mineA : Row{op.getK(), kIdx};
        Row v = kvOwner ? mineB : Row{op.getV(), kIdx};
        // x = q_i . k_j,  dP = dout_i . v_j
        Value x = rowDot(b, l, q, k);
        Value dp = rowDot(b, l, dout, v);
        Value lse = memref::LoadOp::create(b, l, op.getLse(), qIdx);
        Value delta = memref::LoadOp::create(b, l, op.getDelta(), qIdx);
        auto [p, dx] = scoreGradient(b, l, op, x, dp, lse, delta, i, j);
        if (Value acc = op.getDvAcc()) // dv_j += P dout_i
          rowUpdate(b, l, rows.lookup(acc), p, dout, /*accumulate=*/true);
        if (Value acc = op.getDkAcc()) // dk_j += dX q_i
          rowUpdate(b, l, rows.lookup(acc), dx, q, /*accumulate=*/true);
        if (Value acc = op.getDqAcc()) // dq_i += dX k_j
          rowUpdate(b, l, rows.lookup(acc), dx, k, /*accumulate=*/true);
        scf::YieldOp::create(b, l);
      });
  rewriter.eraseOp(op);
  return success();
}

/// dst[b, h, row0 + t, :] = the thread's row, for the rows inside dst.
void lowerStoreRows(RewriterBase &rewriter, StoreTileOp op, Value tid,
                    Value row) {
  Location loc = op.getLoc();
  OpBuilder::InsertionGuard guard(rewriter);
  rewriter.setInsertionPoint(op);
  TileBuilder t{rewriter, loc};
  int64_t tileRows = cast<MemRefType>(op.getAcc().getType()).getDimSize(0);
  Value live = t.live(tileRows, memrefDim(rewriter, loc, op.getDst(), 2),
                      op.getRow0());
  Value mine = arith::CmpIOp::create(rewriter, loc, arith::CmpIPredicate::ult,
                                     tid, live);
  auto owned = scf::IfOp::create(rewriter, loc, mine, /*withElseRegion=*/false);
  rewriter.setInsertionPointToStart(owned.thenBlock());
  Type elem = cast<MemRefType>(op.getDst().getType()).getElementType();
  Value r = arith::AddIOp::create(rewriter, loc, op.getRow0(), tid);
  Value c0 = t.index(0);
  scf::ForOp::create(
      rewriter, loc, c0, memrefDim(rewriter, loc, row, 1), t.index(1),
      ValueRange{}, [&](OpBuilder &b, Location l, Value d, ValueRange) {
        Value v = memref::LoadOp::create(b, l, row, ValueRange{c0, d});
        if (!elem.isF32())
          v = arith::TruncFOp::create(b, l, elem, v);
        memref::StoreOp::create(b, l, v, op.getDst(),
                                ValueRange{op.getB(), op.getH(), r, d});
        scf::YieldOp::create(b, l);
      });
  rewriter.eraseOp(op);
}

} // namespace

LogicalResult mlir::flexattn::lowerBackwardRows(RewriterBase &rewriter,
                                                gpu::LaunchOp launch) {
  if (failed(inlineStackScopes(rewriter, launch, "flexattn-lower-backward-rows")))
    return failure();
  SmallVector<BackwardStepOp> steps;
  SmallVector<StoreTileOp> stores;
  SetVector<Value> tiles;
  launch.walk([&](Operation *op) {
    if (auto step = dyn_cast<BackwardStepOp>(op)) {
      steps.push_back(step);
      for (Value acc : {step.getDqAcc(), step.getDkAcc(), step.getDvAcc()})
        if (acc)
          tiles.insert(acc);
    } else if (auto store = dyn_cast<StoreTileOp>(op)) {
      stores.push_back(store);
      tiles.insert(store.getAcc());
    }
  });
  // Each [T, D] accumulator tile (a stack buffer of the CTA) -> a row.
  RowAccs rows;
  for (Value tile : tiles) {
    auto alloca = tile.getDefiningOp<memref::AllocaOp>();
    if (!alloca || !cast<MemRefType>(tile.getType()).hasStaticShape())
      return launch.emitOpError("flexattn-lower-backward-rows: an accumulator "
                                "that is not a static stack tile: ")
             << tile;
    for (Operation *user : tile.getUsers())
      if (!isa<linalg::FillOp, BackwardStepOp, StoreTileOp>(user))
        return user->emitOpError("flexattn-lower-backward-rows: unexpected use "
                                 "of an accumulator tile");
    OpBuilder::InsertionGuard guard(rewriter);
    rewriter.setInsertionPoint(alloca);
    auto type = cast<MemRefType>(tile.getType());
    rows[tile] = memref::AllocaOp::create(
        rewriter, alloca.getLoc(),
        MemRefType::get({1, type.getDimSize(1)}, type.getElementType()));
  }
  for (BackwardStepOp step : steps)
    if (failed(lowerStepRows(rewriter, step, launch, rows)))
      return failure();
  Value tid = launch.getThreadIds().x;
  for (StoreTileOp store : stores)
    lowerStoreRows(rewriter, store, tid, rows.lookup(store.getAcc()));
  for (auto [tile, row] : rows) {
    for (Operation *user : llvm::make_early_inc_range(tile.getUsers()))
      rewriter.modifyOpInPlace(user, [&] { user->replaceUsesOfWith(tile, row); });
    rewriter.eraseOp(tile.getDefiningOp());
  }
  return success();
}

namespace {
struct FlexAttnLowerBackwardRowsPass
    : public flexattn::impl::FlexAttnLowerBackwardRowsBase<
          FlexAttnLowerBackwardRowsPass> {
  void runOnOperation() override {
    IRRewriter rewriter(&getContext());
    SmallVector<gpu::LaunchOp> launches;
    getOperation()->walk([&](gpu::LaunchOp launch) { launches.push_back(launch); });
    for (gpu::LaunchOp launch : launches)
      if (failed(lowerBackwardRows(rewriter, launch)))
        return signalPassFailure();
  }
};
} // namespace
