//===- DecomposeBackward.cpp - flexattn-decompose-backward ------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// Decomposes one backward step (flexattn.backward_step) into linalg ops on
// tile-sized buffers, FlashAttention-2's backward math written as the
// formulas it computes: one comment, then one helper call that builds one
// linalg op. Probabilities are recomputed from the forward's logsumexp (in
// log2 units, as the forward keeps its scores); the mod's derivatives come
// from its score_mod_vjp region (flexattn.apply_mods_vjp, linear in its dy,
// so it is evaluated once with dy = 1 per score). Also lowers
// flexattn.store_tile.
//
//===----------------------------------------------------------------------===//

#include "passes/BackwardMath.h"
#include "passes/Passes.h"
#include "passes/TileBuilder.h"

#include "mlir/Dialect/Utils/StaticValueUtils.h"
#include "llvm/ADT/TypeSwitch.h"

namespace mlir::flexattn {
#define GEN_PASS_DEF_FLEXATTNDECOMPOSEBACKWARD
#include "passes/Passes.h.inc"
} // namespace mlir::flexattn

using namespace mlir;
using namespace mlir::flexattn;
using namespace mlir::flexattn::tile;
using namespace mlir::flexattn::backward;

namespace {

/// capture_grads[c][idx] += dS * dscore/dload, for every score of the live
/// tile and every differentiated load: a sequential loop (the accumulation
/// order is fixed), outside linalg (it scatters).
void accumulateCaptureGrads(OpBuilder &b, Location loc, BackwardStepOp op,
                            Value x, Value ds, Value rows, Value cols,
                            float scale) {
  ArrayRef<int64_t> loads = *op.getVjpLoads();
  Value c0 = indexConst(b, loc, 0), c1 = indexConst(b, loc, 1);
  scf::buildLoopNest(
      b, loc, {c0, c0}, {rows, cols}, {c1, c1},
      [&](OpBuilder &nb, Location l, ValueRange ij) {
        Value s = memref::LoadOp::create(nb, l, x, ij);
        Value dS = memref::LoadOp::create(nb, l, ds, ij);
        SmallVector<Value> r =
            applyVjp(nb, l, op, scaled(nb, l, s, scale), dS, ij[0], ij[1]);
        Value zero = arith::ConstantOp::create(nb, l, nb.getF32FloatAttr(0.0f));
        Value none =
            arith::CmpFOp::create(nb, l, arith::CmpFPredicate::OEQ, dS, zero);
        unsigned pos = 2;
        for (int64_t c : loads) {
          auto rank = cast<MemRefType>(op.getCaptures()[c].getType()).getRank();
          Value g = arith::SelectOp::create(nb, l, none, zero, r[pos]);
          ValueRange idx = ValueRange(r).slice(pos + 1, rank);
          Value grad = captureGradOf(op, c);
          Value old = memref::LoadOp::create(nb, l, grad, idx);
          memref::StoreOp::create(nb, l, arith::AddFOp::create(nb, l, old, g),
                                  grad, idx);
          pos += 1 + rank;
        }
      });
}

} // namespace

LogicalResult mlir::flexattn::decomposeBackwardStep(RewriterBase &rewriter,
                                                    BackwardStepOp op) {
  if (hasPartialCaptureGrads(op)) // the CPU's order is fixed already
    return op.emitOpError("flexattn-decompose-backward accumulates capture "
                          "gradients in a fixed order; per-thread partial sums "
                          "are flexattn-lower-backward-mma's");
  if (op.getDqSum()) // one writer per accumulator on the CPU
    return op.emitOpError("flexattn-decompose-backward keeps dq in the Q-outer "
                          "nest; dq_sum (atomic adds, flexattn-atomic-dq) is the "
                          "GPU kernels'");
  Location loc = op.getLoc();
  OpBuilder::InsertionGuard guard(rewriter);
  rewriter.setInsertionPoint(op);
  // The tile's scratch buffers are freed at the end of each step.
  auto scope = memref::AllocaScopeOp::create(rewriter, loc, TypeRange{});
  rewriter.setInsertionPointToStart(rewriter.createBlock(&scope.getBodyRegion()));
  TileBuilder t{rewriter, loc};

  int64_t bm = op.getTileSize()[0], bn = op.getTileSize()[1];
  float scale = op.getScale().convertToFloat();
  Value rows = t.live(bm, memrefDim(rewriter, loc, op.getQ(), 2), op.getQ0());
  Value cols = t.live(bn, memrefDim(rewriter, loc, op.getK(), 2), op.getKv0());
  Value q = t.rowsOf(op.getQ(), op.getB(), op.getH(), op.getQ0(), rows);
  Value k = t.rowsOf(op.getK(), op.getB(), op.getHkv(), op.getKv0(), cols);
  Value v = t.rowsOf(op.getV(), op.getB(), op.getHkv(), op.getKv0(), cols);
  Value dout = t.rowsOf(op.getDout(), op.getB(), op.getH(), op.getQ0(), rows);
  Value lse = t.rowsOf(op.getLse(), op.getB(), op.getH(), op.getQ0(), rows);
  Value delta = t.rowsOf(op.getDelta(), op.getB(), op.getH(), op.getQ0(), rows);
  Value x = t.scratch({bm, bn}, {rows, cols});
  Value p = t.scratch({bm, bn}, {rows, cols});
  Value ds = t.scratch({bm, bn}, {rows, cols});

  AffineMap ij = t.map(2, {0, 1}), i2 = t.map(2, {0});
  auto mmBody = [](OpBuilder &b, Location l, ValueRange a) -> Value {
    Value prod =
        arith::MulFOp::create(b, l, toF32(b, l, a[0]), toF32(b, l, a[1]));
    return arith::AddFOp::create(b, l, a[2], prod);
  };
  // A[i, j] += B[.] * C[.] over the third loop; `lhs`/`rhs` map (d0, d1, d2).
  auto matmul = [&](Value lhs, AffineMap lm, Value rhs, AffineMap rm,
                    Value out) {
    t.generic({lhs, rhs}, {out}, {lm, rm, t.map(3, {0, 1})},
              {kPar, kPar, kRed}, mmBody);
  };

  // X = Q_tile . K_tileᵀ    (f32 accumulation)
  linalg::FillOp::create(rewriter, loc, t.f32(0.0f), x);
  matmul(q, t.map(3, {0, 2}), k, t.map(3, {1, 2}), x);

  // dP = dO_tile . V_tileᵀ
  linalg::FillOp::create(rewriter, loc, t.f32(0.0f), ds);
  matmul(dout, t.map(3, {0, 2}), v, t.map(3, {1, 2}), ds);

  // S  = mods(scale * X)                      (-inf where masked)
  // P  = exp2(log2(e) * S - base(log2(e) * lse))
  // dS = P * (dP - delta)
  // dX = scale * dS * dS/dX, 0 where P = 0    (in place of dS; with capture
  //                                            gradients, after them)
  bool captureGrads = !op.getCaptureGrads().empty() && op.getVjpLoads() &&
                      !op.getVjpLoads()->empty();
  t.genericMulti(
      {x, lse, delta}, {p, ds}, {ij, i2, i2, ij, ij}, {kPar, kPar},
      [&](OpBuilder &b, Location l, ValueRange a) -> SmallVector<Value> {
        Value i = linalg::IndexOp::create(b, l, 0);
        Value j = linalg::IndexOp::create(b, l, 1);
        Value log2e = arith::ConstantOp::create(
            b, l, b.getF32FloatAttr(static_cast<float>(kLog2e)));
        SmallVector<Value> mods = applyVjp(
            b, l, op, scaled(b, l, a[0], scale),
            arith::ConstantOp::create(b, l, b.getF32FloatAttr(1.0f)), i, j);
        Value base = finiteBase(b, l, arith::MulFOp::create(b, l, a[1], log2e));
        Value e = arith::SubFOp::create(
            b, l, arith::MulFOp::create(b, l, mods[0], log2e), base);
        Value prob = math::Exp2Op::create(b, l, e);
        Value dS = arith::MulFOp::create(
            b, l, prob, arith::SubFOp::create(b, l, a[4], a[2]));
        if (captureGrads)
          return {prob, dS};
        return {prob, dScore(b, l, prob, dS, mods[1], scale)};
      });

  if (captureGrads) {
    // capture_grads[idx] += dS * dS/dcapture     (sequential, fixed order)
    accumulateCaptureGrads(rewriter, loc, op, x, ds, rows, cols, scale);
    // dX = scale * dS * dS/dX, 0 where P = 0     (in place of dS)
    t.generic({x, p}, {ds}, {ij, ij, ij}, {kPar, kPar},
              [&](OpBuilder &b, Location l, ValueRange a) -> Value {
                Value i = linalg::IndexOp::create(b, l, 0);
                Value j = linalg::IndexOp::create(b, l, 1);
                SmallVector<Value> mods = applyVjp(
                    b, l, op, scaled(b, l, a[0], scale),
                    arith::ConstantOp::create(b, l, b.getF32FloatAttr(1.0f)),
                    i, j);
                return dScore(b, l, a[1], a[2], mods[1], scale);
              });
  }

  // dV += Pᵀ . dO_tile
  if (Value acc = op.getDvAcc()) {
    OpFoldResult dv = getAsOpFoldResult(memrefDim(rewriter, loc, acc, 1));
    matmul(p, t.map(3, {2, 0}), dout, t.map(3, {2, 1}),
           t.window(acc, {cols, dv}));
  }
  // dQ += dX . K_tile
  if (Value acc = op.getDqAcc()) {
    OpFoldResult d = getAsOpFoldResult(memrefDim(rewriter, loc, acc, 1));
    matmul(ds, t.map(3, {0, 2}), k, t.map(3, {2, 1}), t.window(acc, {rows, d}));
  }
  // dK += dXᵀ . Q_tile
  if (Value acc = op.getDkAcc()) {
    OpFoldResult d = getAsOpFoldResult(memrefDim(rewriter, loc, acc, 1));
    matmul(ds, t.map(3, {2, 0}), q, t.map(3, {2, 1}), t.window(acc, {cols, d}));
  }

  memref::AllocaScopeReturnOp::create(rewriter, loc, ValueRange{});
  rewriter.eraseOp(op);
  return success();
}

LogicalResult mlir::flexattn::decomposeStoreTile(RewriterBase &rewriter,
                                                 StoreTileOp op) {
  Location loc = op.getLoc();
  OpBuilder::InsertionGuard guard(rewriter);
  rewriter.setInsertionPoint(op);
  TileBuilder t{rewriter, loc};
  int64_t tileRows = cast<MemRefType>(op.getAcc().getType()).getDimSize(0);
  Value rows =
      t.live(tileRows, memrefDim(rewriter, loc, op.getDst(), 2), op.getRow0());
  Value acc = t.window(
      op.getAcc(),
      {rows, getAsOpFoldResult(memrefDim(rewriter, loc, op.getAcc(), 1))});
  Value dst = t.rowsOf(op.getDst(), op.getB(), op.getH(), op.getRow0(), rows);
  Type elem = cast<MemRefType>(op.getDst().getType()).getElementType();
  AffineMap ij = t.map(2, {0, 1});
  // dst = acc, converted to dst's element type
  t.generic({acc}, {dst}, {ij, ij}, {kPar, kPar},
            [&](OpBuilder &b, Location l, ValueRange a) -> Value {
              if (elem.isF32())
                return a[0];
              return arith::TruncFOp::create(b, l, elem, a[0]);
            });
  rewriter.eraseOp(op);
  return success();
}

namespace {
struct FlexAttnDecomposeBackwardPass
    : public flexattn::impl::FlexAttnDecomposeBackwardBase<
          FlexAttnDecomposeBackwardPass> {
  void runOnOperation() override {
    SmallVector<Operation *> ops;
    getOperation()->walk([&](Operation *op) {
      if (isa<BackwardStepOp, StoreTileOp>(op))
        ops.push_back(op);
    });
    IRRewriter rewriter(&getContext());
    for (Operation *op : ops) {
      LogicalResult r =
          llvm::TypeSwitch<Operation *, LogicalResult>(op)
              .Case([&](BackwardStepOp s) {
                return decomposeBackwardStep(rewriter, s);
              })
              .Case([&](StoreTileOp s) { return decomposeStoreTile(rewriter, s); });
      if (failed(r))
        return signalPassFailure();
    }
  }
};
} // namespace
