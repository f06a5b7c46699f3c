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
//     1-slot ring (2 slots in a persistent CTA, where they fit
//     `max-shared-memory`) and the K and V tiles of every KV step into
//     `stages`-slot rings, walking a clone of the KV loops (block sparsity included);
//   consumer warpgroups (64 rows each: 2 of a 128-row Q tile, or 3 of a
//     192-row one at head dim 64, FlashAttention-3's D = 64 tile): per KV step,
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

#include "passes/ConsumerRole.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

namespace mlir::flexattn {
#define GEN_PASS_DEF_FLEXATTNWARPSPECIALIZE
#include "passes/Passes.h.inc"
} // namespace mlir::flexattn

using namespace mlir;
using namespace mlir::flexattn;

namespace {

// The roles of the kernel: one producer warpgroup with few registers, two
// or three consumer warpgroups of 64 Q rows each with many (setmaxnreg
// budgets, FlashAttention-3's: 40 + 2 x 232 or 32 + 3 x 160 registers per
// thread of a warpgroup, at most 512 in all).
constexpr int64_t kWarpgroup = 128;
// Shared memory beside the rings' tiles: their full/empty barriers and the
// 1024-byte alignment of the first tile (flexattn-lower-to-hopper).
constexpr int64_t kRingSlack = 2048;
struct Budget {
  int64_t producer, consumer;
};
Budget registerBudget(int64_t groups) {
  return groups == 2 ? Budget{40, 232} : Budget{32, 160};
}

/// The rings and tensor maps both roles use.
struct Rings : ConsumerRings {
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
    FailureOr<TileCoordinates> at = tileCoordinates(finalizeOp, launch, map);
    if (failed(at))
      return failure();
    RingAcquireOp::create(b, rings.q, qPos);
    RingLoadOp::create(b, rings.qMap, at->b, at->h, at->q0, rings.q, qPos);
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
// Consumers: the in-order step reading the Q tile the producer loaded.
//===----------------------------------------------------------------------===//

struct HopperConsumer : ConsumerRole {
  using ConsumerRole::ConsumerRole;

  LogicalResult beginTile(ImplicitLocOpBuilder &b, IRMapping &) override {
    RingWaitOp::create(b, rings.q, qPos);
    qA = RingSlotOp::create(b, rings.q, qPos);
    qRow = band;
    startState(b);
    return success();
  }
  // Q was read for the last time: the producer may load the next tile's
  // while this one's outputs are stored.
  void endTile(ImplicitLocOpBuilder &b) override {
    RingReleaseOp::create(b, rings.q, qPos);
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
                                             int64_t stages,
                                             int64_t maxSharedMemory) {
  Block &body = launch.getBody().front();
  SmallVector<Operation *> ops;
  for (Operation &op : body.without_terminator())
    ops.push_back(&op);
  FailureOr<TileBody> tile = TileBody::find(launch, ops);
  if (failed(tile))
    return failure();
  FailureOr<KernelPlan> p = KernelPlan::of(tile->steps.front(), "flexattn-warp-specialize");
  if (failed(p))
    return failure();
  // TMA boxes and wgmma descriptors of whole 64-column panels: other head
  // dims take the mma.sync kernel (flexattn-multistage), which pads them.
  if ((p->D != 64 && p->D != 128) || (p->Dv != 64 && p->Dv != 128))
    return tile->steps.front().emitOpError(
               "flexattn-warp-specialize takes head dims 64 and 128 (other head dims: "
               "flexattn-multistage), got D = ")
           << p->D << ", Dv = " << p->Dv;
  if (p->BM != kTileRows && !(p->BM == kWideTileRows && p->D == 64 && p->Dv == 64))
    return tile->steps.front().emitOpError(
               "flexattn-warp-specialize takes 128-row Q tiles (two 64-row "
               "consumer bands), or 192-row ones (three) at D = Dv = 64; "
               "64-row tiles: flexattn-multistage; got ")
           << p->BM << " rows at D = " << p->D << ", Dv = " << p->Dv;
  int64_t groups = p->BM / kBandRows;
  Budget budget = registerBudget(groups);
  auto func = launch->getParentOfType<func::FuncOp>();
  if (!func)
    return launch.emitOpError("flexattn-warp-specialize expects a func.func parent");
  Location loc = launch.getLoc();

  Rings rings;
  TileStepOp first = tile->steps.front();
  int64_t bn = p->BN;
  for (auto [tensor, rows, out] :
       {std::tuple<Value, int64_t, Value *>{first.getQ(), p->BM, &rings.qMap},
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
      rewriter, loc, kWarpgroup + groups * kWarpgroup));

  ImplicitLocOpBuilder b(loc, rewriter);
  b.setInsertionPointToStart(&body);
  int64_t consumers = groups * kWarpgroup;
  auto ring = [&](int64_t n, int64_t rows, int64_t cols) -> Value {
    return RingAllocOp::create(
        b, RingType::get(b.getContext(), n, rows, cols, p->elem), consumers);
  };
  // A CTA that loops over tiles (flexattn-persistent-tiles) loads its next
  // tile's Q into a second slot while it computes this one, where both fit
  // beside the K and V rings (H200: sliding window, document and NATTEN
  // masks 1.04-1.07x, dense 1.01x; one CTA per tile gains nothing from it,
  // docs/gpu-pipeline.md §2).
  int64_t qSlots = 1;
  if (tile->finalize->getParentOfType<scf::ForOp>() &&
      launch->isProperAncestor(tile->finalize->getParentOfType<scf::ForOp>())) {
    int64_t bytes = p->elem.getIntOrFloatBitWidth() / 8 *
                        (2 * p->BM * p->D + stages * bn * (p->D + p->Dv)) +
                    kRingSlack;
    if (bytes <= maxSharedMemory)
      qSlots = 2;
  }
  rings.q = ring(qSlots, p->BM, p->D);
  rings.k = ring(stages, bn, p->D);
  rings.v = ring(stages, bn, p->Dv);
  auto roles = WarpSpecializeOp::create(b, kWarpgroup, budget.producer, groups,
                                        kWarpgroup, budget.consumer);
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
    HopperConsumer consumer(b, rings, *p, roles.getConsumers().getArgument(0),
                            roles.getConsumers().getArgument(1));
    if (failed(emitRole(b, ops, *tile, map, consumer)))
      return failure();
  }

  eraseReversed(rewriter, ops);
  return success();
}

namespace {
struct FlexAttnWarpSpecializePass
    : public flexattn::impl::FlexAttnWarpSpecializeBase<FlexAttnWarpSpecializePass> {
  using FlexAttnWarpSpecializeBase::FlexAttnWarpSpecializeBase;

  void runOnOperation() override {
    IRRewriter rewriter(&getContext());
    for (auto launch : opsHoldingTiles<gpu::LaunchOp>(getOperation()))
      if (failed(warpSpecialize(rewriter, launch, stages, maxSharedMemory)))
        return signalPassFailure();
  }
};
} // namespace
