//===- Multistage.cpp - flexattn-multistage ---------------------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// The roles of an sm_80 (Ampere, Ada) kernel, FlashAttention-2 shaped:
// every warp both copies and computes. The CTA's warps own `warpRows` rows
// of the 128-row Q tile each (64 rows: the decode kernel's packed tiles,
// one group at 16 rows), in groups of 4 warps (16 rows: two groups of
// 64-row bands, 256 threads; 32 rows: one group, 128 threads, each K/V
// fragment a warp reads feeding two m16 tiles), each group computing its
// band with the consumer step of ConsumerRole.h; all threads copy tiles
// into cooperative rings (flexattn.ring.copy, cp.async on sm_80):
//
//   per Q tile   copy Q, wait; with qInRegisters read the band into
//                registers (frag.load) and release (the KV steps multiply
//                that fragment), else the KV steps read the band from the
//                slot, released at the tile's end
//   per KV loop  prologue: copy the K and V tiles of its first S - 1 steps
//   per KV step  wait K_j; copy K_{j+S-1}; S = Q.K_jᵀ; softmax;
//                wait V_j; copy V_{j+S-1}; O = alpha O + P.V_j
//
// so S - 1 steps of copies are in flight while a step computes. A copy past
// the end of its loop is issued with `if false` (it moves nothing), so every
// thread issues the same sequence of copies and each wait knows how many
// later copies may still be running (its `in_flight`: 2 S - 3 for K and V).
// The coordinates of a later step are those of the loop body, recomputed
// for a later induction variable (the block-sparse index lookups included).
// A K or V of batch 1 shared by the query batch (a paged KV cache, read by
// every sequence) reaches the steps as flexattn-tile's batch-stride-0 view;
// its rings copy from the tensor itself at batch 0, so the kernel takes the
// [1, H, N, D] tensor as it is (no expanded copy per call).
//
//===----------------------------------------------------------------------===//

#include "passes/ConsumerRole.h"
#include "passes/SharedTiles.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

namespace mlir::flexattn {
#define GEN_PASS_DEF_FLEXATTNMULTISTAGE
#include "passes/Passes.h.inc"
} // namespace mlir::flexattn

using namespace mlir;
using namespace mlir::flexattn;

namespace {

/// Where the K and V tiles of a step are, and whether there is such a step.
struct StepCoordinates {
  Value valid, b, h, row;
};

/// A ring's source: the tensor a step reads, or, for flexattn-tile's
/// batch-stride-0 view of a batch-1 K/V (memref.reinterpret_cast), the
/// batch-1 tensor, copied at batch 0.
struct RingSource {
  Value tensor;
  bool sharedBatch = false;

  static RingSource of(Value v) {
    if (auto view = v.getDefiningOp<memref::ReinterpretCastOp>()) {
      auto from = cast<MemRefType>(view.getSource().getType());
      auto [strides, offset] = view.getType().getStridesAndOffset();
      if (from.getRank() == 4 && from.getDimSize(0) == 1 && strides[0] == 0)
        return {view.getSource(), true};
    }
    return {v};
  }
};

/// The tile_step of a loop body that holds one directly, or null.
TileStepOp stepOf(scf::ForOp loop) {
  auto steps = loop.getBody()->getOps<TileStepOp>();
  return steps.empty() ? TileStepOp() : *steps.begin();
}

struct CooperativeRole : ConsumerRole {
  int64_t stages;
  bool qInRegisters;
  FinalizeOp finalizeOp;
  gpu::LaunchOp launch;
  StepCoordinates ahead; // the step S - 1 positions ahead of the current one

  CooperativeRole(ImplicitLocOpBuilder &b, const ConsumerRings &rings,
                  const KernelPlan &plan, Value group, Value thread,
                  const MultistageOptions &options, FinalizeOp fin, gpu::LaunchOp launch)
      : ConsumerRole(b, rings, plan, group, thread, options.warpRows / 16),
        stages(options.stages), qInRegisters(options.qInRegisters), finalizeOp(fin),
        launch(launch) {}

  Value i32(ImplicitLocOpBuilder &b, int64_t v) {
    return arith::ConstantIntOp::create(b, v, 32);
  }
  Value at(ImplicitLocOpBuilder &b, Value pos, int64_t ahead) {
    return ahead ? arith::AddIOp::create(b, pos, i32(b, ahead)).getResult() : pos;
  }

  LogicalResult beginTile(ImplicitLocOpBuilder &b, IRMapping &map) override {
    FailureOr<TileCoordinates> tile = tileCoordinates(finalizeOp, launch, map);
    if (failed(tile))
      return failure();
    RingAcquireOp::create(b, rings.q, qPos);
    RingCopyOp::create(b, map.lookupOrDefault(qSource), tile->b, tile->h, tile->q0, rings.q, qPos,
                       Value());
    RingWaitOp::create(b, rings.q, qPos).setInFlight(0);
    Value slot = RingSlotOp::create(b, rings.q, qPos);
    if (qInRegisters) {
      qA = FragLoadOp::create(b, VectorType::get({warpTiles * plan.Dp / 2}, plan.elem), slot,
                              band);
      qRow = Value();
      RingReleaseOp::create(b, rings.q, qPos);
    } else {
      qA = slot;
      qRow = band;
    }
    startState(b);
    return success();
  }

  void endTile(ImplicitLocOpBuilder &b) override {
    if (!qInRegisters)
      RingReleaseOp::create(b, rings.q, qPos);
  }

  /// The coordinates of `op` at iteration `iv` of `loop` (a clone of the
  /// body's computation of them), valid where `iv` < the upper bound.
  FailureOr<StepCoordinates> coordinatesAt(ImplicitLocOpBuilder &b, TileStepOp op,
                                           scf::ForOp loop, IRMapping &map,
                                           Value iv) {
    Value ub = map.lookupOrDefault(loop.getUpperBound());
    Value valid = arith::CmpIOp::create(b, arith::CmpIPredicate::slt, iv, ub);
    FailureOr<SmallVector<Value>> at =
        valuesAtIteration(b, loop, map, iv, valid, {op.getB(), op.getHkv(), op.getKv0()},
                          "flexattn-multistage");
    if (failed(at))
      return failure();
    return StepCoordinates{valid, (*at)[0], (*at)[1], (*at)[2]};
  }

  /// Copies of the K and V tiles of the steps at `coords` into positions
  /// kvPos + 0, 1, ...: all acquires first (one barrier at most), then the
  /// copies in the order the waits count them (K, V, K, V, ...).
  void prime(ImplicitLocOpBuilder &b, ArrayRef<StepCoordinates> coords,
             IRMapping &map) {
    for (size_t s = 0; s < coords.size(); ++s)
      for (Value ring : {rings.k, rings.v})
        RingAcquireOp::create(b, ring, at(b, kvPos, s));
    for (auto [s, c] : llvm::enumerate(coords))
      for (Value ring : {rings.k, rings.v})
        copyKv(b, ring, c, at(b, kvPos, s), map);
  }

  /// Copies the K or V tile at `c` into `ring`'s slot `pos`.
  void copyKv(ImplicitLocOpBuilder &b, Value ring, const StepCoordinates &c, Value pos,
              IRMapping &map) {
    const RingSource &source = ring == rings.k ? kSource : vSource;
    Value batch = source.sharedBatch ? arith::ConstantIndexOp::create(b, 0).getResult() : c.b;
    RingCopyOp::create(b, map.lookupOrDefault(source.tensor), batch, c.h, c.row, ring, pos,
                       c.valid);
  }

  LogicalResult beforeLoop(ImplicitLocOpBuilder &b, scf::ForOp loop,
                           IRMapping &map) override {
    TileStepOp op = stepOf(loop);
    if (!op)
      return success();
    if (llvm::range_size(loop.getBody()->getOps<TileStepOp>()) != 1)
      return loop.emitOpError("flexattn-multistage expects one "
                              "flexattn.tile_step per KV loop");
    Value lb = map.lookupOrDefault(loop.getLowerBound());
    Value st = map.lookupOrDefault(loop.getStep());
    SmallVector<StepCoordinates> coords;
    for (int64_t s = 0; s + 1 < stages; ++s) {
      Value iv = arith::AddIOp::create(
          b, lb, arith::MulIOp::create(b, st, arith::ConstantIndexOp::create(b, s)));
      FailureOr<StepCoordinates> c = coordinatesAt(b, op, loop, map, iv);
      if (failed(c))
        return failure();
      coords.push_back(*c);
    }
    prime(b, coords, map);
    return success();
  }

  LogicalResult step(ImplicitLocOpBuilder &b, TileStepOp op,
                     IRMapping &map) override {
    auto loop = dyn_cast<scf::ForOp>(op->getParentOp());
    if (loop) {
      Value iv = map.lookupOrDefault(loop.getInductionVar());
      Value st = map.lookupOrDefault(loop.getStep());
      Value later = arith::AddIOp::create(
          b, iv, arith::MulIOp::create(b, st, arith::ConstantIndexOp::create(b, stages - 1)));
      FailureOr<StepCoordinates> c = coordinatesAt(b, op, loop, map, later);
      if (failed(c))
        return failure();
      ahead = *c;
    } else {
      // A step outside a loop: its own copies, then none ahead.
      Value no = arith::ConstantIntOp::create(b, 0, 1);
      Value zero = arith::ConstantIndexOp::create(b, 0);
      SmallVector<StepCoordinates> coords = {
          {arith::ConstantIntOp::create(b, 1, 1), map.lookupOrDefault(op.getB()),
           map.lookupOrDefault(op.getHkv()), map.lookupOrDefault(op.getKv0())}};
      coords.resize(stages - 1, StepCoordinates{no, zero, zero, zero});
      prime(b, coords, map);
      ahead = {no, zero, zero, zero};
    }
    return ConsumerRole::step(b, op, map);
  }

  std::optional<int64_t> waitInFlight() const override { return 2 * stages - 3; }

  LogicalResult afterWait(ImplicitLocOpBuilder &b, Value ring, TileStepOp,
                          IRMapping &map) override {
    Value pos = at(b, kvPos, stages - 1);
    RingAcquireOp::create(b, ring, pos);
    copyKv(b, ring, ahead, pos, map);
    return success();
  }

  Value qSource;               // the tensor the Q ring copies
  RingSource kSource, vSource; // and the K and V rings
};

} // namespace

LogicalResult mlir::flexattn::multistage(RewriterBase &rewriter, gpu::LaunchOp launch,
                                         const MultistageOptions &options) {
  int64_t stages = options.stages;
  if (stages < 2)
    return launch.emitOpError("flexattn-multistage needs at least 2 stages "
                              "(copies run S - 1 steps ahead), got ")
           << stages;
  if (options.warpRows != 16 && options.warpRows != 32)
    return launch.emitOpError("flexattn-multistage gives a warp 16 or 32 Q "
                              "rows (one or two m16 tiles), got warp-rows = ")
           << options.warpRows;
  Block &body = launch.getBody().front();
  SmallVector<Operation *> ops;
  for (Operation &op : body.without_terminator())
    ops.push_back(&op);
  FailureOr<TileBody> tile = TileBody::find(launch, ops);
  if (failed(tile))
    return failure();
  FailureOr<KernelPlan> p =
      KernelPlan::of(tile->steps.front(), "flexattn-multistage", /*f32=*/true,
                     /*dynamic=*/true);
  if (failed(p))
    return failure();
  // Groups of 4 warps, each a band of 4 warpRows rows of the Q tile.
  if (p->BM % (4 * options.warpRows))
    return launch.emitOpError("flexattn-multistage needs Q tiles of whole "
                              "4-warp bands: ")
           << p->BM << " rows at warp-rows = " << options.warpRows;
  int64_t threads = p->BM / (4 * options.warpRows) * kGroupThreads;
  Location loc = launch.getLoc();

  OpBuilder::InsertionGuard guard(rewriter);
  rewriter.setInsertionPoint(launch);
  launch.getBlockSizeXMutable().assign(arith::ConstantIndexOp::create(rewriter, loc, threads));

  ImplicitLocOpBuilder b(loc, rewriter);
  b.setInsertionPointToStart(&body);
  auto ring = [&](int64_t n, int64_t rows, int64_t cols) -> Value {
    return RingAllocOp::create(
        b, RingType::get(b.getContext(), n, rows, cols, p->elem), threads);
  };
  ConsumerRings rings;
  rings.q = ring(1, p->BM, p->Dp);
  rings.k = ring(stages, p->BN, p->Dp);
  rings.v = ring(stages, p->BN, p->Dvp);
  auto idx = [&](int64_t v) { return arith::ConstantIndexOp::create(b, v); };
  Value tid = gpu::ThreadIdOp::create(b, gpu::Dimension::x);
  Value group = arith::DivUIOp::create(b, tid, idx(kGroupThreads));
  Value thread = arith::RemUIOp::create(b, tid, idx(kGroupThreads));
  CooperativeRole role(b, rings, *p, group, thread, options, tile->finalize, launch);
  // flexattn-lower-to-ampere gives a kernel that reads Q from shared memory
  // at each S = Q.Kᵀ its own addressing (see kQFromShared there).
  if (!options.qInRegisters)
    launch->setAttr(kQFromShared, b.getUnitAttr());
  TileStepOp first = tile->steps.front();
  role.qSource = first.getQ();
  role.kSource = RingSource::of(first.getK());
  role.vSource = RingSource::of(first.getV());
  IRMapping map;
  if (failed(emitRole(b, ops, *tile, map, role)))
    return failure();

  eraseReversed(rewriter, ops);
  return success();
}

namespace {
struct FlexAttnMultistagePass
    : public flexattn::impl::FlexAttnMultistageBase<FlexAttnMultistagePass> {
  using FlexAttnMultistageBase::FlexAttnMultistageBase;

  void runOnOperation() override {
    IRRewriter rewriter(&getContext());
    for (auto launch : opsHoldingTiles<gpu::LaunchOp>(getOperation()))
      if (failed(multistage(rewriter, launch, {stages, warpRows, qInRegisters})))
        return signalPassFailure();
  }
};
} // namespace
