//===- FuseOnlineSoftmax.cpp - flexattn-fuse-online-softmax -----*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// Decomposes one online-softmax step (flexattn.tile_step) and the final
// normalisation (flexattn.finalize) into linalg ops on tile-sized buffers.
// Written as the formulas it computes: one comment, then one helper call that
// builds one linalg op. Scores are kept in log2 units (log2(e) is folded into
// the scale) so every exponential is an exp2. The softmax itself is the
// shared decomposition of OnlineSoftmax.h, with rows mapped and reduced by
// linalg ops (LinalgRows).
//
//===----------------------------------------------------------------------===//

#include "passes/OnlineSoftmax.h"
#include "passes/Passes.h"
#include "passes/TileOpRewrites.h"
#include "passes/TileBuilder.h"

#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include <limits>

namespace mlir::flexattn {
#define GEN_PASS_DEF_FLEXATTNFUSEONLINESOFTMAX
#include "passes/Passes.h.inc"
} // namespace mlir::flexattn

using namespace mlir;
using namespace mlir::flexattn;
using namespace mlir::flexattn::tile;

namespace {

/// The online softmax's rows as linalg ops on a [rows, cols] tile buffer and
/// [rows] row buffers, updated in place; new row values go to the step's
/// scratch rows (the new max, alpha).
struct LinalgRows : softmax::SoftmaxRows {
  TileBuilder &t;
  Value newMaxBuf, alphaBuf;
  AffineMap ij, i2, i1;

  LinalgRows(TileBuilder &t, Value newMaxBuf, Value alphaBuf)
      : t(t), newMaxBuf(newMaxBuf), alphaBuf(alphaBuf), ij(t.map(2, {0, 1})),
        i2(t.map(2, {0})), i1(t.map(1, {0})) {}

  Value rowMax(Value tile, Value init, float c) override {
    assert(c == 1.0f && "the CPU scales scores before the max");
    linalg::CopyOp::create(t.b, t.loc, init, newMaxBuf);
    t.generic({tile}, {newMaxBuf}, {ij, i2}, {kPar, kRed},
              [](OpBuilder &b, Location l, ValueRange a) -> Value {
                return arith::MaximumFOp::create(b, l, a[0], a[1]);
              });
    return newMaxBuf;
  }
  Value mapRows(ValueRange rows, softmax::ScalarFn f) override {
    t.generic(rows, {alphaBuf}, SmallVector<AffineMap>(rows.size() + 1, i1),
              {kPar}, f);
    return alphaBuf;
  }
  Value updateRows(Value target, ValueRange inputs, softmax::ScalarFn f) override {
    t.generic(inputs, {target}, SmallVector<AffineMap>(inputs.size() + 1, i1),
              {kPar}, f);
    return target;
  }
  Value updateTile(Value tile, ValueRange rows, softmax::ScalarFn f) override {
    SmallVector<AffineMap> maps(rows.size(), i2);
    maps.push_back(ij);
    t.generic(rows, {tile}, maps, {kPar, kPar}, f);
    return tile;
  }
  Value addRowSums(Value target, Value tile) override {
    t.generic({tile}, {target}, {ij, i2}, {kPar, kRed},
              [](OpBuilder &b, Location l, ValueRange a) -> Value {
                return arith::AddFOp::create(b, l, a[0], a[1]);
              });
    return target;
  }
};

} // namespace

LogicalResult mlir::flexattn::decomposeTileStep(RewriterBase &rewriter,
                                                TileStepOp op) {
  Location loc = op.getLoc();
  OpBuilder::InsertionGuard guard(rewriter);
  rewriter.setInsertionPoint(op);
  // The tile's scratch buffers are freed at the end of each step.
  auto scope = memref::AllocaScopeOp::create(rewriter, loc, TypeRange{});
  rewriter.setInsertionPointToStart(rewriter.createBlock(&scope.getBodyRegion()));
  TileBuilder t{rewriter, loc};

  int64_t bm = op.getTileSize()[0], bn = op.getTileSize()[1];
  Value rows = t.live(bm, memrefDim(rewriter, loc, op.getQ(), 2), op.getQ0());
  Value cols = t.live(bn, memrefDim(rewriter, loc, op.getK(), 2), op.getKv0());
  // A packed tile's q is [B, Hkv, G * m, D]: its rows are the group's.
  Value packedRows = op.getRowsPerHead();
  Value q = t.rowsOf(op.getQ(), op.getB(), packedRows ? op.getHkv() : op.getH(),
                     op.getQ0(), rows);
  Value k = t.rowsOf(op.getK(), op.getB(), op.getHkv(), op.getKv0(), cols);
  Value v = t.rowsOf(op.getV(), op.getB(), op.getHkv(), op.getKv0(), cols);
  Value dv = memrefDim(rewriter, loc, op.getAcc(), 1);
  Value acc = t.window(op.getAcc(), {rows, dv});
  Value m = t.window(op.getMax(), {rows});
  Value l = t.window(op.getSum(), {rows});
  Value s = t.scratch({bm, bn}, {rows, cols});
  Value mNew = t.scratch({bm}, {rows});
  Value alpha = t.scratch({bm}, {rows});

  AffineMap ij3[] = {t.map(3, {0, 2}), t.map(3, {1, 2}), t.map(3, {0, 1})};
  AffineMap ij = t.map(2, {0, 1});

  // S = Q_tile . K_tileᵀ  (f32 accumulation)
  linalg::FillOp::create(rewriter, loc, t.f32(0.0f), s);
  t.generic({q, k}, {s}, ij3, {kPar, kPar, kRed},
            [](OpBuilder &b, Location l, ValueRange a) -> Value {
              Value p = arith::MulFOp::create(b, l, toF32(b, l, a[0]),
                                              toF32(b, l, a[1]));
              return arith::AddFOp::create(b, l, a[2], p);
            });

  // S = log2(e) * mods(scale * S)
  bool applyMask = op.getMasked() && op.hasMaskMod();
  float scale = op.getScale().convertToFloat();
  bool mods = op.hasScoreMod() || applyMask;
  t.generic({}, {s}, {ij}, {kPar, kPar},
            [&](OpBuilder &b, Location l, ValueRange a) -> Value {
              if (!mods)
                return softmax::log2Score(b, l, a[0], scale, nullptr);
              Value i = linalg::IndexOp::create(b, l, 0);
              Value j = linalg::IndexOp::create(b, l, 1);
              Value qi = arith::AddIOp::create(b, l, op.getQ0(), i);
              Value kj = arith::AddIOp::create(b, l, op.getKv0(), j);
              // Packed row r: head h + r / m, query r mod m.
              Value head = op.getH();
              if (packedRows) {
                Value g = arith::DivUIOp::create(b, l, qi, packedRows);
                head = arith::AddIOp::create(b, l, head, g);
                qi = arith::RemUIOp::create(b, l, qi, packedRows);
              }
              return softmax::log2Score(b, l, a[0], scale, [&](Value x) -> Value {
                auto apply = ApplyModsOp::create(
                    b, l, b.getF32Type(), x, op.getB(), head, qi, kj,
                    op.getCaptures(), applyMask ? b.getUnitAttr() : UnitAttr());
                cloneModRegions(op, apply, applyMask);
                return apply.getResult();
              });
            });

  // m_new, alpha, P (in place of S), l: the shared online-softmax step
  LinalgRows linalgRows(t, mNew, alpha);
  softmax::onlineSoftmaxStep(linalgRows, {m, l, acc}, s);

  // acc = alpha * acc + P . V_tile
  softmax::rescaleAccumulator(linalgRows, acc, alpha);
  AffineMap pv[] = {t.map(3, {0, 2}), t.map(3, {2, 1}), t.map(3, {0, 1})};
  t.generic({s, v}, {acc}, pv, {kPar, kPar, kRed},
            [](OpBuilder &b, Location l, ValueRange a) -> Value {
              Value p = arith::MulFOp::create(b, l, a[0], toF32(b, l, a[1]));
              return arith::AddFOp::create(b, l, a[2], p);
            });

  // m = m_new
  linalg::CopyOp::create(rewriter, loc, mNew, m);

  memref::AllocaScopeReturnOp::create(rewriter, loc, ValueRange{});
  rewriter.eraseOp(op);
  return success();
}

LogicalResult mlir::flexattn::decomposeFinalize(RewriterBase &rewriter,
                                                FinalizeOp op) {
  Location loc = op.getLoc();
  OpBuilder::InsertionGuard guard(rewriter);
  rewriter.setInsertionPoint(op);
  TileBuilder t{rewriter, loc};
  int64_t bm = cast<MemRefType>(op.getAcc().getType()).getDimSize(0);
  Value rows = t.live(bm, memrefDim(rewriter, loc, op.getOut(), 2), op.getQ0());
  Value dv = memrefDim(rewriter, loc, op.getAcc(), 1);
  Value acc = t.window(op.getAcc(), {rows, dv});
  Value m = t.window(op.getMax(), {rows});
  Value l = t.window(op.getSum(), {rows});
  Value out = t.rowsOf(op.getOut(), op.getB(), op.getH(), op.getQ0(), rows);
  Type outElem = cast<MemRefType>(op.getOut().getType()).getElementType();
  AffineMap ij = t.map(2, {0, 1}), i2 = t.map(2, {0}), i1 = t.map(1, {0});

  // max_scores = ln(2) * m, before the sink (it is not a score)
  if (Value maxBuf = op.getMaxScores()) {
    Value maxScores = t.rowsOf(maxBuf, op.getB(), op.getH(), op.getQ0(), rows);
    t.generic({m}, {maxScores}, {i1, i1}, {kPar},
              [](OpBuilder &b, Location loc, ValueRange a) -> Value {
                return softmax::maxScore(b, loc, a[0]);
              });
  }

  // The sink log2(e) * sinks[h] joins m, l and acc (in place)
  if (Value sinks = op.getSinks()) {
    Value sink = memref::LoadOp::create(rewriter, loc, sinks, op.getH());
    LinalgRows linalgRows(t, Value(), t.scratch({bm}, {rows}));
    softmax::foldSink(linalgRows, {m, l, acc},
                      softmax::sinkLog2(rewriter, loc, sink));
  }

  // out = acc / l, or 0 where l = 0 (no visible key)
  t.generic({acc, l}, {out}, {ij, i2, ij}, {kPar, kPar},
            [&](OpBuilder &b, Location loc, ValueRange a) -> Value {
              Value r = softmax::safeDivide(b, loc, a[0], a[1]);
              if (outElem.isF32())
                return r;
              return arith::TruncFOp::create(b, loc, outElem, r);
            });

  // lse = ln(2) * (m + log2(l)), or -inf where l = 0
  if (Value lseBuf = op.getLse()) {
    Value lse = t.rowsOf(lseBuf, op.getB(), op.getH(), op.getQ0(), rows);
    t.generic({m, l}, {lse}, {i1, i1, i1}, {kPar},
              [](OpBuilder &b, Location loc, ValueRange a) -> Value {
                return softmax::logSumExp(b, loc, a[0], a[1]);
              });
  }
  rewriter.eraseOp(op);
  return success();
}

namespace {
struct FlexAttnFuseOnlineSoftmaxPass
    : public flexattn::impl::FlexAttnFuseOnlineSoftmaxBase<
          FlexAttnFuseOnlineSoftmaxPass> {
  void runOnOperation() override {
    if (failed(rewriteTileOps(getOperation(), decomposeTileStep, decomposeFinalize)))
      signalPassFailure();
  }
};
} // namespace
