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
// the scale) so every exponential is an exp2.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"
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
  Value q = t.rowsOf(op.getQ(), op.getB(), op.getH(), op.getQ0(), rows);
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
  AffineMap ij = t.map(2, {0, 1}), i2 = t.map(2, {0}), i1 = t.map(1, {0});

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
  if (!op.hasScoreMod() && !applyMask) {
    float folded = static_cast<float>(scale * kLog2e);
    t.generic({}, {s}, {ij}, {kPar, kPar},
              [&](OpBuilder &b, Location l, ValueRange a) -> Value {
                return arith::MulFOp::create(b, l, a[0], t.f32(folded));
              });
  } else {
    t.generic({}, {s}, {ij}, {kPar, kPar},
              [&](OpBuilder &b, Location l, ValueRange a) -> Value {
                Value i = linalg::IndexOp::create(b, l, 0);
                Value j = linalg::IndexOp::create(b, l, 1);
                Value qi = arith::AddIOp::create(b, l, op.getQ0(), i);
                Value kj = arith::AddIOp::create(b, l, op.getKv0(), j);
                Value x = arith::MulFOp::create(b, l, a[0], t.f32(scale));
                auto mods = ApplyModsOp::create(
                    b, l, b.getF32Type(), x, op.getB(), op.getH(), qi, kj,
                    op.getCaptures(), applyMask ? b.getUnitAttr() : UnitAttr());
                cloneModRegions(op, mods, applyMask);
                return arith::MulFOp::create(b, l, mods.getResult(),
                                             t.f32(static_cast<float>(kLog2e)));
              });
  }

  // m_new = max(m, rowmax(S))
  linalg::CopyOp::create(rewriter, loc, m, mNew);
  t.generic({s}, {mNew}, {ij, i2}, {kPar, kRed},
            [](OpBuilder &b, Location l, ValueRange a) -> Value {
              return arith::MaximumFOp::create(b, l, a[0], a[1]);
            });

  // alpha = exp2(m - base(m_new))
  t.generic({m, mNew}, {alpha}, {i1, i1, i1}, {kPar},
            [](OpBuilder &b, Location l, ValueRange a) -> Value {
              Value d = arith::SubFOp::create(b, l, a[0], finiteBase(b, l, a[1]));
              return math::Exp2Op::create(b, l, d);
            });

  // P = exp2(S - base(m_new))   (in place of S)
  t.generic({mNew}, {s}, {i2, ij}, {kPar, kPar},
            [](OpBuilder &b, Location l, ValueRange a) -> Value {
              Value d = arith::SubFOp::create(b, l, a[1], finiteBase(b, l, a[0]));
              return math::Exp2Op::create(b, l, d);
            });

  // l = alpha * l + rowsum(P)
  t.generic({alpha}, {l}, {i1, i1}, {kPar},
            [](OpBuilder &b, Location l, ValueRange a) -> Value {
              return arith::MulFOp::create(b, l, a[0], a[1]);
            });
  t.generic({s}, {l}, {ij, i2}, {kPar, kRed},
            [](OpBuilder &b, Location l, ValueRange a) -> Value {
              return arith::AddFOp::create(b, l, a[0], a[1]);
            });

  // acc = alpha * acc + P . V_tile
  t.generic({alpha}, {acc}, {i2, ij}, {kPar, kPar},
            [](OpBuilder &b, Location l, ValueRange a) -> Value {
              return arith::MulFOp::create(b, l, a[0], a[1]);
            });
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

  // out = acc / l, or 0 where l = 0 (no visible key)
  t.generic({acc, l}, {out}, {ij, i2, ij}, {kPar, kPar},
            [&](OpBuilder &b, Location loc, ValueRange a) -> Value {
              Value empty = arith::CmpFOp::create(
                  b, loc, arith::CmpFPredicate::OEQ, a[1], t.f32(0.0f));
              Value r = arith::DivFOp::create(b, loc, a[0], a[1]);
              r = arith::SelectOp::create(b, loc, empty, t.f32(0.0f), r);
              if (outElem.isF32())
                return r;
              return arith::TruncFOp::create(b, loc, outElem, r);
            });

  // lse = ln(2) * (m + log2(l)), or -inf where l = 0
  if (Value lseBuf = op.getLse()) {
    Value lse = t.rowsOf(lseBuf, op.getB(), op.getH(), op.getQ0(), rows);
    t.generic({m, l}, {lse}, {i1, i1, i1}, {kPar},
              [&](OpBuilder &b, Location loc, ValueRange a) -> Value {
                Value empty = arith::CmpFOp::create(
                    b, loc, arith::CmpFPredicate::OEQ, a[1], t.f32(0.0f));
                Value r = arith::AddFOp::create(
                    b, loc, a[0], math::Log2Op::create(b, loc, a[1]));
                r = arith::MulFOp::create(b, loc, r,
                                          t.f32(static_cast<float>(kLn2)));
                return arith::SelectOp::create(b, loc, empty, t.f32(kNegInf), r);
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
    SmallVector<Operation *> ops;
    getOperation()->walk([&](Operation *op) {
      if (isa<TileStepOp, FinalizeOp>(op))
        ops.push_back(op);
    });
    IRRewriter rewriter(&getContext());
    for (Operation *op : ops) {
      LogicalResult r = isa<TileStepOp>(op)
                            ? decomposeTileStep(rewriter, cast<TileStepOp>(op))
                            : decomposeFinalize(rewriter, cast<FinalizeOp>(op));
      if (failed(r))
        return signalPassFailure();
    }
  }
};
} // namespace
