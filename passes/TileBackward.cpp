//===- TileBackward.cpp - flexattn-tile for the backward --------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// Splits flexattn.attention_backward into FlashAttention-2's two loop nests,
// each parallel over independent tiles that own f32 accumulators:
//
//   delta[b, h, i] = rowsum(dout * out) - dlse            (one generic)
//   for (b, hkv, KV tile):  dk, dv += every visible (Q tile, KV tile)
//   for (b, h, Q tile):     dq (and the capture gradients) += every visible
//                           (Q tile, KV tile)
//
// Splitting dq off costs a second recomputation of the scores but needs no
// atomics: every accumulator has one writer. The capture gradients have many
// writers, so their loop nest runs sequentially (a fixed order: the result is
// deterministic).
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"
#include "passes/TileBuilder.h"

#include "mlir/Dialect/Math/IR/Math.h"

using namespace mlir;
using namespace mlir::flexattn;
using namespace mlir::flexattn::tile;

namespace {

/// A zero-filled f32 [rows, cols] stack accumulator (cols may be dynamic).
Value zeroAccumulator(OpBuilder &b, Location loc, int64_t rows, Value ref) {
  auto refType = cast<MemRefType>(ref.getType());
  int64_t cols = refType.getDimSize(3);
  SmallVector<Value> dyn;
  if (ShapedType::isDynamic(cols))
    dyn.push_back(memrefDim(b, loc, ref, 3));
  Value acc = memref::AllocaOp::create(
      b, loc, MemRefType::get({rows, cols}, b.getF32Type()), dyn);
  Value zero = arith::ConstantOp::create(b, loc, b.getF32FloatAttr(0.0f));
  linalg::FillOp::create(b, loc, zero, acc);
  return acc;
}

/// delta = rowsum(dout * out) - dlse, [B, Hq, M] f32 on the heap.
Value buildDelta(OpBuilder &b, Location loc, AttentionBackwardOp op) {
  TileBuilder t{b, loc};
  auto lseType = cast<MemRefType>(op.getLse().getType());
  SmallVector<Value> dyn;
  for (int64_t d = 0; d < 3; ++d)
    if (lseType.isDynamicDim(d))
      dyn.push_back(memrefDim(b, loc, op.getLse(), d));
  Value delta = memref::AllocOp::create(
      b, loc, MemRefType::get(lseType.getShape(), b.getF32Type()), dyn);
  linalg::FillOp::create(b, loc, t.f32(0.0f), delta);
  AffineMap all = t.map(4, {0, 1, 2, 3}), rows4 = t.map(4, {0, 1, 2});
  t.generic({op.getDout(), op.getOut()}, {delta}, {all, all, rows4},
            {kPar, kPar, kPar, kRed},
            [](OpBuilder &nb, Location l, ValueRange a) -> Value {
              Value p = arith::MulFOp::create(nb, l, toF32(nb, l, a[0]),
                                              toF32(nb, l, a[1]));
              return arith::AddFOp::create(nb, l, a[2], p);
            });
  if (Value dlse = op.getDlse()) {
    AffineMap rows3 = t.map(3, {0, 1, 2});
    t.generic({dlse}, {delta}, {rows3, rows3}, {kPar, kPar, kPar},
              [](OpBuilder &nb, Location l, ValueRange a) -> Value {
                return arith::SubFOp::create(nb, l, a[1], a[0]);
              });
  }
  return delta;
}

/// dsinks[h] = -sum_{b,i} P_sink D[b,h,i], P_sink = exp(sinks[h] - lse[b,h,i])
/// (0 where lse = -inf).
void buildSinkGrad(OpBuilder &b, Location loc, AttentionBackwardOp op,
                   Value delta) {
  TileBuilder t{b, loc};
  linalg::FillOp::create(b, loc, t.f32(0.0f), op.getDsinks());
  AffineMap heads = t.map(3, {1}), rows = t.map(3, {0, 1, 2});
  t.generic({op.getSinks(), op.getLse(), delta}, {op.getDsinks()},
            {heads, rows, rows, heads}, {kRed, kPar, kRed},
            [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
              auto f32 = [&](float v) -> Value {
                return arith::ConstantOp::create(nb, l, nb.getF32FloatAttr(v));
              };
              Value ninf = f32(-std::numeric_limits<float>::infinity());
              Value empty = arith::CmpFOp::create(nb, l, arith::CmpFPredicate::OEQ,
                                                  a[1], ninf);
              Value p = math::ExpOp::create(nb, l, arith::SubFOp::create(nb, l, a[0], a[1]));
              p = arith::SelectOp::create(nb, l, empty, f32(0.0f), p);
              Value pd = arith::MulFOp::create(nb, l, p, a[2]);
              return arith::SubFOp::create(nb, l, a[3], pd);
            });
}

/// A loop nest over [0, ubs) running `body` on a fresh stack scope:
/// scf.parallel, or a sequential scf.for nest when `sequential`.
void tileLoop(OpBuilder &b, Location loc, ValueRange ubs, bool sequential,
              function_ref<void(OpBuilder &, ValueRange)> body) {
  SmallVector<Value> lbs(ubs.size(), indexConst(b, loc, 0));
  SmallVector<Value> steps(ubs.size(), indexConst(b, loc, 1));
  auto scoped = [&](OpBuilder &nb, Location l, ValueRange ivs) {
    auto scope = memref::AllocaScopeOp::create(nb, l, TypeRange{});
    OpBuilder::InsertionGuard guard(nb);
    nb.setInsertionPointToStart(nb.createBlock(&scope.getBodyRegion()));
    body(nb, ivs);
    memref::AllocaScopeReturnOp::create(nb, l, ValueRange{});
  };
  if (sequential) {
    scf::buildLoopNest(b, loc, lbs, ubs, steps, scoped);
    return;
  }
  auto par = scf::ParallelOp::create(b, loc, lbs, ubs, steps);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(par.getBody());
  scoped(b, loc, par.getInductionVars());
}

/// Copies the op's mask_mod and score_mod_vjp onto a backward loop.
template <typename LoopOp>
void cloneBackwardRegions(AttentionBackwardOp from, LoopOp to) {
  cloneRegion(from.getScoreModVjp(), to.getScoreModVjp());
  cloneRegion(from.getMaskMod(), to.getMaskMod());
}

} // namespace

LogicalResult mlir::flexattn::tileAttentionBackward(RewriterBase &rewriter,
                                                    AttentionBackwardOp op,
                                                    int64_t tileQ,
                                                    int64_t tileKV) {
  if (op.hasScoreMod() && op.getScoreModVjp().empty())
    return op.emitOpError() << "has a score_mod but no score_mod_vjp: run "
                            << "flexattn-differentiate-mods first";
  if (tileQ <= 0 || tileKV <= 0)
    return op.emitOpError() << "tile sizes must be positive, got " << tileQ
                            << " x " << tileKV;
  // The visited tiles are the block mask's blocks; the outer tiles divide
  // them (shrunk to the block when they do not).
  int64_t bmOuter = tileQ, bmInner = tileQ, bnOuter = tileKV, bnInner = tileKV;
  auto bs = op.getBlockSize();
  if (bs && op.hasBlockMask()) {
    bmInner = (*bs)[0];
    bnInner = (*bs)[1];
    if (tileQ > bmInner || bmInner % tileQ != 0)
      bmOuter = bmInner;
    if (tileKV > bnInner || bnInner % tileKV != 0)
      bnOuter = bnInner;
  }

  Location loc = op.getLoc();
  OpBuilder::InsertionGuard guard(rewriter);
  rewriter.setInsertionPoint(op);
  Value q = op.getQ(), k = op.getK();
  Value batch = memrefDim(rewriter, loc, q, 0);
  Value heads = memrefDim(rewriter, loc, q, 1);
  Value kvHeads = memrefDim(rewriter, loc, k, 1);
  Value group = arith::DivUIOp::create(rewriter, loc, heads, kvHeads);
  Value delta = op.getDelta() ? op.getDelta() : buildDelta(rewriter, loc, op);
  if (op.getSinks())
    buildSinkGrad(rewriter, loc, op, delta);
  Value zero = arith::ConstantOp::create(rewriter, loc,
                                         rewriter.getF32FloatAttr(0.0f));
  for (Value grad : op.getCaptureGrads())
    linalg::FillOp::create(rewriter, loc, zero, grad);

  // dk, dv: one KV tile at a time, against every Q tile that sees it.
  Value kvTiles = arith::CeilDivUIOp::create(
      rewriter, loc, memrefDim(rewriter, loc, k, 2),
      indexConst(rewriter, loc, bnOuter));
  tileLoop(rewriter, loc, {batch, kvHeads, kvTiles}, /*sequential=*/false,
           [&](OpBuilder &b, ValueRange ivs) {
             Value kv0 = arith::MulIOp::create(b, loc, ivs[2],
                                               indexConst(b, loc, bnOuter));
             Value dk = zeroAccumulator(b, loc, bnOuter, k);
             Value dv = zeroAccumulator(b, loc, bnOuter, op.getV());
             auto loop = BackwardQLoopOp::create(
                 b, loc, q, k, op.getV(), op.getDout(), op.getLse(), delta,
                 Value(), dk, dv, ivs[0], ivs[1], kv0, op.getQNumBlocks(),
                 op.getQIndices(), op.getFullQNumBlocks(),
                 op.getFullQIndices(), op.getCaptures(), ValueRange{},
                 op.getScaleAttr(),
                 b.getDenseI64ArrayAttr({bmInner, bnOuter}),
                 op.hasBlockMask() ? op.getBlockSizeAttr() : nullptr,
                 op.getGradCapturesAttr(), op.getVjpLoadsAttr());
             cloneBackwardRegions(op, loop);
             StoreTileOp::create(b, loc, dk, op.getDk(), ivs[0], ivs[1], kv0);
             StoreTileOp::create(b, loc, dv, op.getDv(), ivs[0], ivs[1], kv0);
           });

  // dq and the capture gradients: one Q tile at a time, against every KV
  // tile it sees; sequential when capture gradients accumulate.
  Value qTiles = arith::CeilDivUIOp::create(
      rewriter, loc, memrefDim(rewriter, loc, q, 2),
      indexConst(rewriter, loc, bmOuter));
  tileLoop(rewriter, loc, {batch, heads, qTiles},
           /*sequential=*/!op.getCaptureGrads().empty(),
           [&](OpBuilder &b, ValueRange ivs) {
             Value hkv = arith::DivUIOp::create(b, loc, ivs[1], group);
             Value q0 = arith::MulIOp::create(b, loc, ivs[2],
                                              indexConst(b, loc, bmOuter));
             Value dq = zeroAccumulator(b, loc, bmOuter, q);
             auto loop = BackwardKvLoopOp::create(
                 b, loc, q, k, op.getV(), op.getDout(), op.getLse(), delta, dq,
                 Value(), Value(), ivs[0], ivs[1], hkv, q0,
                 op.getKvNumBlocks(), op.getKvIndices(),
                 op.getFullKvNumBlocks(), op.getFullKvIndices(),
                 op.getCaptures(), op.getCaptureGrads(), op.getScaleAttr(),
                 b.getDenseI64ArrayAttr({bmOuter, bnInner}),
                 op.hasBlockMask() ? op.getBlockSizeAttr() : nullptr,
                 op.getGradCapturesAttr(), op.getVjpLoadsAttr());
             cloneBackwardRegions(op, loop);
             StoreTileOp::create(b, loc, dq, op.getDq(), ivs[0], ivs[1], q0);
           });
  if (!op.getDelta())
    memref::DeallocOp::create(rewriter, loc, delta);
  rewriter.eraseOp(op);
  return success();
}
