//===- ConsumerRole.cpp - the attention step on register fragments -*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//

#include "passes/ConsumerRole.h"

#include <limits>

using namespace mlir;
using namespace mlir::flexattn;

FailureOr<KernelPlan> KernelPlan::of(TileStepOp step, StringRef pass, bool f32,
                                         bool dynamic) {
  auto q = cast<MemRefType>(step.getQ().getType());
  auto k = cast<MemRefType>(step.getK().getType());
  auto v = cast<MemRefType>(step.getV().getType());
  // B, M and N may be run-time sizes (a dynamic-shape kernel: the lengths
  // then reach the softmax as values, `lens`); heads and head dims fix the
  // tiles and the layout.
  for (MemRefType t : {q, k, v})
    if (t.getRank() != 4 || t.isDynamicDim(1) || t.isDynamicDim(3))
      return step.emitOpError() << pass << " needs static heads and head dims, got " << t;
  if (!dynamic && (!q.hasStaticShape() || !k.hasStaticShape() || !v.hasStaticShape()))
    return step.emitOpError() << pass << " needs static q/k/v shapes (its TMA boxes and "
                                         "tile counts); a dynamic-shape kernel runs on "
                                         "flexattn-multistage";
  auto panels = [](int64_t d) { return (d + kPanelCols - 1) / kPanelCols * kPanelCols; };
  KernelPlan p{q, k, v, q.getDimSize(2), k.getDimSize(2), q.getDimSize(3),
               v.getDimSize(3), step.getTileSize()[0], step.getTileSize()[1],
               q.getElementType(),
               panels(q.getDimSize(3)), panels(v.getDimSize(3))};
  if (!p.elem.isBF16() && !p.elem.isF16() && !(f32 && p.elem.isF32()))
    return step.emitOpError(pass)
           << (f32 ? " takes bf16, f16 or f32 q/k/v, got "
                   : " takes bf16 or f16 q/k/v (f32: flexattn-multistage's tf32 "
                     "kernel), got ")
           << p.elem;
  for (int64_t d : {p.D, p.Dv})
    if (d % kHeadDimStep || d < 2 * kHeadDimStep || d > kMaxHeadDim)
      return step.emitOpError("the GPU kernel takes head dims that are multiples of ")
             << kHeadDimStep << " in [" << 2 * kHeadDimStep << ", " << kMaxHeadDim
             << "], got D = " << p.D << ", Dv = " << p.Dv;
  if ((p.BM != kTileRows && p.BM != kBandRows && p.BM != kWideTileRows) ||
      (p.BN != 64 && p.BN != 128))
    return step.emitOpError("the GPU kernel needs tile_size [64|128|192, 64|128] "
                            "(run flexattn-tile{tile-q=128 tile-kv=128}), got [")
           << step.getTileSize()[0] << ", " << p.BN << "]";
  return p;
}

namespace {
Value next(ImplicitLocOpBuilder &b, Value position) {
  return arith::AddIOp::create(b, position, arith::ConstantIntOp::create(b, 1, 32));
}
} // namespace

ConsumerRole::ConsumerRole(ImplicitLocOpBuilder &b, const ConsumerRings &rings,
                           const KernelPlan &plan, Value group, Value thread,
                           int64_t warpTiles)
    : rings(rings), plan(plan), warpTiles(warpTiles),
      qPos(arith::ConstantIntOp::create(b, 0, 32)),
      kvPos(arith::ConstantIntOp::create(b, 0, 32)) {
  // The m16n8 accumulator layout: warp w of the band holds rows 16 T w ..
  // 16 T w + 16 T - 1; lane 4 g + t holds row 16 T w + g (and + 8, + 16 i),
  // columns 2 t + ...
  auto idx = [&](int64_t v) { return arith::ConstantIndexOp::create(b, v); };
  band = arith::MulIOp::create(b, group, idx(kBandRows * warpTiles));
  Value warp = arith::DivUIOp::create(b, thread, idx(32));
  Value lane = arith::RemUIOp::create(b, thread, idx(32));
  Value g = arith::DivUIOp::create(b, lane, idx(4));
  Value t = arith::RemUIOp::create(b, lane, idx(4));
  row = arith::AddIOp::create(
      b, arith::AddIOp::create(b, band, arith::MulIOp::create(b, warp, idx(16 * warpTiles))),
      g);
  col = arith::MulIOp::create(b, t, idx(2));
}

SmallVector<Value> ConsumerRole::carried() const {
  SmallVector<Value> v = {qPos, kvPos};
  if (state.acc)
    v.append({state.max, state.sum, state.acc});
  return v;
}

void ConsumerRole::setCarried(ValueRange v) {
  qPos = v[0], kvPos = v[1];
  if (state.acc)
    state = {v[2], v[3], v[4]};
}

void ConsumerRole::startState(ImplicitLocOpBuilder &b) {
  auto rowsType = VectorType::get({2 * warpTiles}, b.getF32Type());
  auto accType = VectorType::get({warpTiles * plan.Dvp / 2}, b.getF32Type());
  auto splat = [&](VectorType t, float v) -> Value {
    return arith::ConstantOp::create(
        b, DenseElementsAttr::get(t, b.getF32FloatAttr(v)));
  };
  state = {splat(rowsType, -std::numeric_limits<float>::infinity()),
           splat(rowsType, 0.0f), splat(accType, 0.0f)};
}

LogicalResult ConsumerRole::step(ImplicitLocOpBuilder &b, TileStepOp op,
                                 IRMapping &map) {
  Value q0 = map.lookupOrDefault(op.getQ0());
  Value kv0 = map.lookupOrDefault(op.getKv0());
  auto fragType = [&](int64_t n, Type elem) {
    return VectorType::get({warpTiles * n / 2}, elem);
  };
  auto wait = [&](Value ring) -> LogicalResult {
    auto w = RingWaitOp::create(b, ring, kvPos);
    if (std::optional<int64_t> n = waitInFlight())
      w.setInFlight(*n);
    return afterWait(b, ring, op, map);
  };
  // S = Q.K_jᵀ
  if (failed(wait(rings.k)))
    return failure();
  Value k = RingSlotOp::create(b, rings.k, kvPos);
  Value s = MmaOp::create(b, fragType(plan.BN, b.getF32Type()), qA, qRow, k,
                          Value(), Value(), b.getUnitAttr());
  s = MmaWaitOp::create(b, 0, ValueRange{s}).getResult(0);
  RingReleaseOp::create(b, rings.k, kvPos);
  // P, m_new, l_new, alpha = the online softmax of the mods of S
  SmallVector<Value> captures;
  for (Value c : op.getCaptures())
    captures.push_back(map.lookupOrDefault(c));
  bool applyMask = op.getMasked() && op.hasMaskMod();
  Value rowsPerHead = op.getRowsPerHead(); // packed decode tiles
  // Run-time lengths (a dynamic-shape kernel): q's and k's dim 2.
  SmallVector<Value> lens;
  DenseI64ArrayAttr seqLens;
  if (ShapedType::isDynamic(plan.M) || ShapedType::isDynamic(plan.N))
    lens = {memref::DimOp::create(b, map.lookupOrDefault(op.getQ()), 2).getResult(),
            memref::DimOp::create(b, map.lookupOrDefault(op.getK()), 2).getResult()};
  else
    seqLens = b.getDenseI64ArrayAttr({plan.M, plan.N});
  auto softmax = FragSoftmaxOp::create(
      b, fragType(plan.BN, plan.elem), state.max.getType(), state.max.getType(),
      state.max.getType(), s, state.max, state.sum,
      map.lookupOrDefault(op.getB()), map.lookupOrDefault(op.getH()),
      arith::AddIOp::create(b, q0, row), arith::AddIOp::create(b, kv0, col),
      rowsPerHead ? map.lookupOrDefault(rowsPerHead) : Value(), lens,
      captures, op.getScaleAttr(), seqLens,
      op.getTileSizeAttr(), applyMask ? b.getUnitAttr() : UnitAttr());
  cloneModRegions(op, softmax, applyMask);
  // O = alpha O + P.V_j
  Value acc = FragRescaleOp::create(b, state.acc, softmax.getAlpha());
  if (failed(wait(rings.v)))
    return failure();
  Value v = RingSlotOp::create(b, rings.v, kvPos);
  acc = MmaOp::create(b, acc.getType(), softmax.getProbs(), Value(), v, Value(), acc,
                      UnitAttr());
  acc = MmaWaitOp::create(b, 0, ValueRange{acc, softmax.getProbs()}).getResult(0);
  RingReleaseOp::create(b, rings.v, kvPos);
  state = {softmax.getNewMax(), softmax.getNewSum(), acc};
  kvPos = next(b, kvPos);
  return success();
}

LogicalResult ConsumerRole::finalize(ImplicitLocOpBuilder &b, FinalizeOp op,
                                     IRMapping &map) {
  endTile(b);
  Value q0 = map.lookupOrDefault(op.getQ0());
  auto mapped = [&](Value v) { return v ? map.lookupOrDefault(v) : Value(); };
  FragFinalizeOp::create(b, state.acc, state.max, state.sum,
                         mapped(op.getSinks()), mapped(op.getOut()),
                         mapped(op.getLse()), mapped(op.getMaxScores()),
                         map.lookupOrDefault(op.getB()),
                         map.lookupOrDefault(op.getH()),
                         arith::AddIOp::create(b, q0, row), col);
  state = {};
  qPos = next(b, qPos);
  return success();
}
