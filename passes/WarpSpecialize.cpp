//===- WarpSpecialize.cpp - flexattn-warp-specialize ------------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// Splits each CTA of flexattn-map-to-grid into the roles of a
// FlashAttention-3 style Hopper kernel (flexattn.warp_specialize):
//
//   producer warpgroup: one thread loads, with TMA, the Q tile into a
//     1-slot ring and the K and V tiles of every KV step into `stages`-slot
//     rings, walking a clone of the KV loops (block sparsity included);
//   consumer warpgroups (2 x 64 rows of the 128-row Q tile): per KV step,
//     S = Q.Kᵀ (flexattn.mma), the mods and the online softmax on the
//     register fragment (flexattn.frag.softmax), O = alpha O + P.V; at the
//     end flexattn.frag.finalize.
//
// The rings (flexattn.ring.*) are allocated before the roles split; ring
// positions are i32 values carried through the loops. The host function
// gains one !llvm.ptr argument per tensor read through TMA (q, k, v), with a
// `flexattn.tensor_map` attribute that tells the runtime how to encode it.
// The consumer step is emitted in order; flexattn-schedule-consumers
// pipelines it.
//
//===----------------------------------------------------------------------===//

#include "passes/OnlineSoftmax.h"
#include "passes/TileRoles.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include <limits>

namespace mlir::flexattn {
#define GEN_PASS_DEF_FLEXATTNWARPSPECIALIZE
#include "passes/Passes.h.inc"
} // namespace mlir::flexattn

using namespace mlir;
using namespace mlir::flexattn;

namespace {

// The roles of the kernel: one producer warpgroup with few registers, two
// consumer warpgroups of 64 Q rows each with many (setmaxnreg budgets).
constexpr int64_t kWarpgroup = 128;
constexpr int64_t kProducerRegisters = 40;
constexpr int64_t kConsumerGroups = 2;
constexpr int64_t kConsumerRegisters = 232;
constexpr int64_t kBandRows = 64; // rows of one consumer group (wgmma m64)
constexpr int64_t kTileRows = kConsumerGroups * kBandRows;

/// What the kernel is specialised on, checked once.
struct Plan {
  MemRefType q, k, v;
  int64_t M, N, D, Dv, BN;
  Type elem;
};

FailureOr<Plan> plan(TileStepOp step) {
  auto q = cast<MemRefType>(step.getQ().getType());
  auto k = cast<MemRefType>(step.getK().getType());
  auto v = cast<MemRefType>(step.getV().getType());
  if (!q.hasStaticShape() || !k.hasStaticShape() || !v.hasStaticShape())
    return step.emitOpError("flexattn-warp-specialize needs static q/k/v shapes");
  Plan p{q, k, v, q.getDimSize(2), k.getDimSize(2), q.getDimSize(3),
         v.getDimSize(3), step.getTileSize()[1], q.getElementType()};
  if (!p.elem.isBF16() && !p.elem.isF16())
    return step.emitOpError("the GPU kernel takes bf16 or f16 q/k/v, got ")
           << p.elem;
  if ((p.D != 64 && p.D != 128) || (p.Dv != 64 && p.Dv != 128))
    return step.emitOpError("the GPU kernel supports head dims 64 and 128, "
                            "got D = ")
           << p.D << ", Dv = " << p.Dv;
  if (step.getTileSize()[0] != kTileRows || (p.BN != 64 && p.BN != 128))
    return step.emitOpError("the GPU kernel needs tile_size [128, 64|128] "
                            "(run flexattn-tile{tile-q=128 tile-kv=128}), got [")
           << step.getTileSize()[0] << ", " << p.BN << "]";
  return p;
}

/// The rings and tensor maps both roles use.
struct Rings {
  Value q, k, v;            // !flexattn.ring
  Value qMap, kMap, vMap;   // !llvm.ptr to the CUtensorMaps
};

Value i32(ImplicitLocOpBuilder &b, int64_t v) {
  return arith::ConstantIntOp::create(b, v, 32);
}
Value next(ImplicitLocOpBuilder &b, Value position) {
  return arith::AddIOp::create(b, position, i32(b, 1));
}

//===----------------------------------------------------------------------===//
// Producer: TMA loads of Q per tile, K and V per KV step.
//===----------------------------------------------------------------------===//

struct ProducerRole : RoleEmitter {
  const Rings &rings;
  FinalizeOp finalizeOp; // gives the Q tile's coordinates
  gpu::LaunchOp launch;  // the CTA body being re-emitted
  Value qPos, kvPos;     // ring positions

  ProducerRole(ImplicitLocOpBuilder &b, const Rings &rings, FinalizeOp fin,
               gpu::LaunchOp launch)
      : rings(rings), finalizeOp(fin), launch(launch), qPos(i32(b, 0)),
        kvPos(i32(b, 0)) {}

  SmallVector<Value> carried() const override { return {qPos, kvPos}; }
  void setCarried(ValueRange v) override { qPos = v[0], kvPos = v[1]; }

  LogicalResult beginTile(ImplicitLocOpBuilder &b, IRMapping &map) override {
    // The Q tile's coordinates: cloned already, or defined outside the body.
    auto available = [&](Value v) -> Value {
      if (Value mapped = map.lookupOrNull(v))
        return mapped;
      Operation *def = v.getDefiningOp();
      return def && launch->isProperAncestor(def) ? Value() : v;
    };
    Value bIdx = available(finalizeOp.getB());
    Value h = available(finalizeOp.getH());
    Value q0 = available(finalizeOp.getQ0());
    if (!bIdx || !h || !q0)
      return finalizeOp.emitOpError(
          "flexattn-warp-specialize expects the Q tile's coordinates to be "
          "computed before its state buffers");
    RingAcquireOp::create(b, rings.q, qPos);
    RingLoadOp::create(b, rings.qMap, bIdx, h, q0, rings.q, qPos);
    return success();
  }

  LogicalResult step(ImplicitLocOpBuilder &b, TileStepOp op,
                     IRMapping &map) override {
    Value bIdx = map.lookupOrDefault(op.getB());
    Value hkv = map.lookupOrDefault(op.getHkv());
    Value kv0 = map.lookupOrDefault(op.getKv0());
    for (auto [ring, tensorMap] : {std::pair(rings.k, rings.kMap), {rings.v, rings.vMap}}) {
      RingAcquireOp::create(b, ring, kvPos);
      RingLoadOp::create(b, tensorMap, bIdx, hkv, kv0, ring, kvPos);
    }
    kvPos = next(b, kvPos);
    return success();
  }

  LogicalResult finalize(ImplicitLocOpBuilder &b, FinalizeOp,
                         IRMapping &) override {
    qPos = next(b, qPos);
    return success();
  }
};

//===----------------------------------------------------------------------===//
// Consumers: the in-order online-softmax step on register fragments.
//===----------------------------------------------------------------------===//

struct ConsumerRole : RoleEmitter {
  const Rings &rings;
  const Plan &plan;
  Value band;        // index: first Q row of this group's 64-row band
  Value row, col;    // index: this thread's first fragment row / column
  Value qPos, kvPos; // ring positions
  Value qTile;       // this tile's Q slot
  softmax::State state; // fragments while inside a Q tile

  ConsumerRole(ImplicitLocOpBuilder &b, const Rings &rings, const Plan &plan,
               Value group, Value thread)
      : rings(rings), plan(plan), qPos(i32(b, 0)), kvPos(i32(b, 0)) {
    // The m16n8 accumulator layout: warp w of the band holds rows 16 w ..
    // 16 w + 15; lane 4 g + t holds row 16 w + g (and + 8), columns 2 t + ...
    auto idx = [&](int64_t v) { return arith::ConstantIndexOp::create(b, v); };
    band = arith::MulIOp::create(b, group, idx(kBandRows));
    Value warp = arith::DivUIOp::create(b, thread, idx(32));
    Value lane = arith::RemUIOp::create(b, thread, idx(32));
    Value g = arith::DivUIOp::create(b, lane, idx(4));
    Value t = arith::RemUIOp::create(b, lane, idx(4));
    row = arith::AddIOp::create(
        b, arith::AddIOp::create(b, band, arith::MulIOp::create(b, warp, idx(16))), g);
    col = arith::MulIOp::create(b, t, idx(2));
  }

  SmallVector<Value> carried() const override {
    SmallVector<Value> v = {qPos, kvPos};
    if (state.acc)
      v.append({state.max, state.sum, state.acc});
    return v;
  }
  void setCarried(ValueRange v) override {
    qPos = v[0], kvPos = v[1];
    if (state.acc)
      state = {v[2], v[3], v[4]};
  }

  LogicalResult beginTile(ImplicitLocOpBuilder &b, IRMapping &) override {
    RingWaitOp::create(b, rings.q, qPos);
    qTile = RingSlotOp::create(b, rings.q, qPos);
    auto rowsType = VectorType::get({2}, b.getF32Type());
    auto accType = VectorType::get({plan.Dv / 2}, b.getF32Type());
    auto splat = [&](VectorType t, float v) -> Value {
      return arith::ConstantOp::create(
          b, DenseElementsAttr::get(t, b.getF32FloatAttr(v)));
    };
    state = {splat(rowsType, -std::numeric_limits<float>::infinity()),
             splat(rowsType, 0.0f), splat(accType, 0.0f)};
    return success();
  }

  LogicalResult step(ImplicitLocOpBuilder &b, TileStepOp op,
                     IRMapping &map) override {
    Value q0 = map.lookupOrDefault(op.getQ0());
    Value kv0 = map.lookupOrDefault(op.getKv0());
    auto fragType = [&](int64_t n, Type elem) { return VectorType::get({n / 2}, elem); };
    // S = Q.K_jᵀ
    RingWaitOp::create(b, rings.k, kvPos);
    Value k = RingSlotOp::create(b, rings.k, kvPos);
    Value s = MmaOp::create(b, fragType(plan.BN, b.getF32Type()), qTile, band, k,
                            Value(), b.getUnitAttr());
    s = MmaWaitOp::create(b, 0, ValueRange{s}).getResult(0);
    RingReleaseOp::create(b, rings.k, kvPos);
    // P, m_new, l_new, alpha = the online softmax of the mods of S
    SmallVector<Value> captures;
    for (Value c : op.getCaptures())
      captures.push_back(map.lookupOrDefault(c));
    bool applyMask = op.getMasked() && op.hasMaskMod();
    auto softmax = FragSoftmaxOp::create(
        b, fragType(plan.BN, plan.elem), state.max.getType(), state.max.getType(),
        state.max.getType(), s, state.max, state.sum,
        map.lookupOrDefault(op.getB()), map.lookupOrDefault(op.getH()),
        arith::AddIOp::create(b, q0, row), arith::AddIOp::create(b, kv0, col),
        captures, op.getScaleAttr(), b.getDenseI64ArrayAttr({plan.M, plan.N}),
        op.getTileSizeAttr(), applyMask ? b.getUnitAttr() : UnitAttr());
    cloneModRegions(op, softmax, applyMask);
    // O = alpha O + P.V_j
    Value acc = FragRescaleOp::create(b, state.acc, softmax.getAlpha());
    RingWaitOp::create(b, rings.v, kvPos);
    Value v = RingSlotOp::create(b, rings.v, kvPos);
    acc = MmaOp::create(b, acc.getType(), softmax.getProbs(), Value(), v, acc,
                        UnitAttr());
    acc = MmaWaitOp::create(b, 0, ValueRange{acc, softmax.getProbs()}).getResult(0);
    RingReleaseOp::create(b, rings.v, kvPos);
    state = {softmax.getNewMax(), softmax.getNewSum(), acc};
    kvPos = next(b, kvPos);
    return success();
  }

  LogicalResult finalize(ImplicitLocOpBuilder &b, FinalizeOp op,
                         IRMapping &map) override {
    // Q was read for the last time: the producer may load the next tile's
    // while this one's outputs are stored.
    RingReleaseOp::create(b, rings.q, qPos);
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
};

//===----------------------------------------------------------------------===//
// The transform
//===----------------------------------------------------------------------===//

/// Adds an !llvm.ptr argument to `func` for the CUtensorMap of `tensor` (a
/// function argument), with what the runtime needs to encode it.
FailureOr<Value> addTensorMapArgument(func::FuncOp func, Value tensor,
                                      int64_t boxRows, Location loc) {
  auto arg = dyn_cast<BlockArgument>(tensor);
  if (!arg || arg.getOwner() != &func.getBody().front())
    return emitError(loc, "q/k/v must be arguments of the host function to be "
                          "read through TMA");
  Builder b(func.getContext());
  unsigned argNo = func.getNumArguments();
  auto info = b.getDictionaryAttr({
      b.getNamedAttr("tensor", b.getI64IntegerAttr(arg.getArgNumber())),
      b.getNamedAttr("box", b.getDenseI64ArrayAttr({kPanelCols, boxRows, 1, 1})),
      b.getNamedAttr("swizzle", b.getStringAttr(kSwizzleName)),
      b.getNamedAttr("l2_promotion", b.getStringAttr("256B")),
      b.getNamedAttr("oob_fill", b.getStringAttr("zero")),
      b.getNamedAttr("interleave", b.getStringAttr("none"))});
  if (failed(func.insertArgument(
          argNo, LLVM::LLVMPointerType::get(func.getContext()),
          b.getDictionaryAttr({b.getNamedAttr(kTensorMapAttrName, info)}), loc)))
    return failure();
  return func.getArgument(argNo);
}

} // namespace

LogicalResult mlir::flexattn::warpSpecialize(RewriterBase &rewriter,
                                             gpu::LaunchOp launch,
                                             int64_t stages) {
  Block &body = launch.getBody().front();
  SmallVector<Operation *> ops;
  for (Operation &op : body.without_terminator())
    ops.push_back(&op);
  FailureOr<TileBody> tile = TileBody::find(launch, ops);
  if (failed(tile))
    return failure();
  FailureOr<Plan> p = plan(tile->steps.front());
  if (failed(p))
    return failure();
  auto func = launch->getParentOfType<func::FuncOp>();
  if (!func)
    return launch.emitOpError("flexattn-warp-specialize expects a func.func parent");
  Location loc = launch.getLoc();

  Rings rings;
  TileStepOp first = tile->steps.front();
  int64_t bn = p->BN;
  for (auto [tensor, rows, out] :
       {std::tuple<Value, int64_t, Value *>{first.getQ(), kTileRows, &rings.qMap},
        {first.getK(), bn, &rings.kMap},
        {first.getV(), bn, &rings.vMap}}) {
    FailureOr<Value> map = addTensorMapArgument(func, tensor, rows, loc);
    if (failed(map))
      return failure();
    *out = *map;
  }

  OpBuilder::InsertionGuard guard(rewriter);
  rewriter.setInsertionPoint(launch);
  launch.getBlockSizeXMutable().assign(arith::ConstantIndexOp::create(
      rewriter, loc, kWarpgroup + kConsumerGroups * kWarpgroup));

  ImplicitLocOpBuilder b(loc, rewriter);
  b.setInsertionPointToStart(&body);
  int64_t consumers = kConsumerGroups * kWarpgroup;
  auto ring = [&](int64_t n, int64_t rows, int64_t cols) -> Value {
    return RingAllocOp::create(
        b, RingType::get(b.getContext(), n, rows, cols, p->elem), consumers);
  };
  rings.q = ring(1, kTileRows, p->D);
  rings.k = ring(stages, bn, p->D);
  rings.v = ring(stages, bn, p->Dv);
  auto roles = WarpSpecializeOp::create(b, kWarpgroup, kProducerRegisters,
                                        kConsumerGroups, kWarpgroup,
                                        kConsumerRegisters);
  Type index = b.getIndexType();

  // Producer: thread 0 orders the host's tensor maps before TMA reads them,
  // then walks the tiles.
  b.setInsertionPointToStart(b.createBlock(&roles.getProducer(), {}, {index}, {loc}));
  {
    Value thread = roles.getProducer().getArgument(0);
    Value leader = arith::CmpIOp::create(b, arith::CmpIPredicate::eq, thread,
                                         arith::ConstantIndexOp::create(b, 0));
    auto ifOp = scf::IfOp::create(b, leader, /*withElseRegion=*/false);
    b.setInsertionPointToStart(&ifOp.getThenRegion().front());
    for (Value tensorMap : {rings.qMap, rings.kMap, rings.vMap})
      NVVM::FenceProxyAcquireOp::create(b, NVVM::MemScopeKind::SYS, tensorMap,
                                        i32(b, 128));
    IRMapping map;
    ProducerRole producer(b, rings, tile->finalize, launch);
    if (failed(emitRole(b, ops, *tile, map, producer)))
      return failure();
  }

  b.setInsertionPointToStart(
      b.createBlock(&roles.getConsumers(), {}, {index, index}, {loc, loc}));
  {
    IRMapping map;
    ConsumerRole consumer(b, rings, *p, roles.getConsumers().getArgument(0),
                          roles.getConsumers().getArgument(1));
    if (failed(emitRole(b, ops, *tile, map, consumer)))
      return failure();
  }

  for (Operation *op : llvm::reverse(ops)) {
    op->dropAllUses();
    rewriter.eraseOp(op);
  }
  return success();
}

namespace {
struct FlexAttnWarpSpecializePass
    : public flexattn::impl::FlexAttnWarpSpecializeBase<FlexAttnWarpSpecializePass> {
  using FlexAttnWarpSpecializeBase::FlexAttnWarpSpecializeBase;

  void runOnOperation() override {
    IRRewriter rewriter(&getContext());
    for (auto launch : opsHoldingTiles<gpu::LaunchOp>(getOperation()))
      if (failed(warpSpecialize(rewriter, launch, stages)))
        return signalPassFailure();
  }
};
} // namespace
