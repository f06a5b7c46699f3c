//===- LowerToHopper.cpp - flexattn-lower-to-hopper -------------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// Lowers the roles, rings and MMAs of a kernel to Hopper (sm_90a) NVVM ops:
//
//   shared memory  the rings' slots (1024-byte aligned tiles), then their
//                  barriers, in a dynamic shared-memory block; the launch
//                  asks for it (+1024 bytes: the base is aligned at run time)
//   ring.alloc     mbarrier.init by thread 0 (full: 1 arrival + the bytes,
//                  empty: `consumers` arrivals), fence, CTA barrier
//   ring.acquire   mbarrier.try_wait.parity on the empty barrier
//   ring.load      mbarrier.arrive.expect_tx + one TMA load per 64-column
//                  panel (cp.async.bulk.tensor, 128-byte swizzle)
//   ring.wait      mbarrier.try_wait.parity on the full barrier
//   ring.release   mbarrier.arrive on the empty barrier
//   mma, mma.wait  wgmma (passes/Wgmma.h)
//   warp_specialize  a branch on the thread index, setmaxnreg per role
//
// Position i of a ring of S stages uses slot i % S in phase (i / S) & 1.
// Shared-memory addresses are 32-bit offsets in the CTA's window.
//
//===----------------------------------------------------------------------===//

#include "passes/Wgmma.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"

namespace mlir::flexattn {
#define GEN_PASS_DEF_FLEXATTNLOWERTOHOPPER
#include "passes/Passes.h.inc"
} // namespace mlir::flexattn

using namespace mlir;
using namespace mlir::flexattn;

namespace {

constexpr int64_t kAlign = 1024;          // 128-byte swizzle atoms
constexpr int64_t kWaitTicks = 10000000;  // try_wait suspend-time hint (ns)

struct Lowering : SharedTiles {
  using SharedTiles::SharedTiles;

  Value barrier(int64_t off, Value stage) {
    return arith::AddIOp::create(b, at(smem, off),
                                 arith::MulIOp::create(b, stage, i32(8)));
  }
  void waitParity(Value bar, Value parity) {
    NVVM::MBarrierTryWaitParityOp::create(b, shared(bar), parity, i32(kWaitTicks));
  }

  LogicalResult lower(Operation *op);
};

LogicalResult Lowering::lower(Operation *op) {
  b.setLoc(op->getLoc());
  b.setInsertionPoint(op);
  if (auto acquire = dyn_cast<RingAcquireOp>(op)) {
    const RingLayout &r = rings.at(acquire.getRing());
    auto [stage, phase] = stagePhase(r, acquire.getPosition());
    waitParity(barrier(r.emptyOff, stage), arith::XOrIOp::create(b, phase, i32(1)));
  } else if (auto load = dyn_cast<RingLoadOp>(op)) {
    const RingLayout &r = rings.at(load.getRing());
    auto [stage, phase] = stagePhase(r, load.getPosition());
    (void)phase;
    Value full = shared(barrier(r.fullOff, stage));
    NVVM::MBarrierArriveExpectTxOp::create(b, Type(), full, i32(r.tileBytes()),
                                           NVVM::MemScopeKind::CTA, false, Value());
    Value dst = slot(r, stage);
    SmemTileType tile = r.type.getTileType();
    SmallVector<Value> coords = {Value(), toI32(load.getRow()), toI32(load.getH()),
                                 toI32(load.getB())};
    for (int64_t p = 0; p < tile.getCols() / kPanelCols; ++p) {
      coords[0] = i32(p * kPanelCols);
      // A CTA's shared::cta address is valid in the shared::cluster window.
      Value panel = LLVM::IntToPtrOp::create(
          b, LLVM::LLVMPointerType::get(b.getContext(), 7),
          at(dst, p * tile.getPanelBytes()));
      NVVM::CpAsyncBulkTensorGlobalToSharedClusterOp::create(
          b, panel, load.getTensorMap(), coords, full, ValueRange{}, Value(), Value(),
          NVVM::TMALoadMode::TILE, /*isCTAOnly=*/false, NVVM::CTAGroupKindAttr(),
          Value());
    }
  } else if (auto wait = dyn_cast<RingWaitOp>(op)) {
    const RingLayout &r = rings.at(wait.getRing());
    auto [stage, phase] = stagePhase(r, wait.getPosition());
    waitParity(barrier(r.fullOff, stage), phase);
  } else if (auto release = dyn_cast<RingReleaseOp>(op)) {
    const RingLayout &r = rings.at(release.getRing());
    auto [stage, phase] = stagePhase(r, release.getPosition());
    (void)phase;
    NVVM::MBarrierArriveOp::create(b, Type(), shared(barrier(r.emptyOff, stage)),
                                   Value());
  } else if (lowerTileValue(op)) {
  } else if (auto mma = dyn_cast<MmaOp>(op)) {
    return wgmma::lowerMma(*this, mma, /*hoisted=*/true);
  } else if (auto mmaWait = dyn_cast<MmaWaitOp>(op)) {
    wgmma::lowerWait(*this, mmaWait);
  }
  return success();
}

/// The roles as a branch on the thread index, each with its register budget.
void lowerRoles(RewriterBase &rewriter, ImplicitLocOpBuilder &b, WarpSpecializeOp op) {
  b.setLoc(op.getLoc());
  b.setInsertionPoint(op);
  auto idx = [&](int64_t v) { return arith::ConstantIndexOp::create(b, v); };
  Value tid = gpu::ThreadIdOp::create(b, gpu::Dimension::x);
  int64_t producers = op.getProducerThreads(), group = op.getConsumerThreads();
  Value isProducer = arith::CmpIOp::create(b, arith::CmpIPredicate::ult, tid, idx(producers));
  auto branch = scf::IfOp::create(b, isProducer, /*withElseRegion=*/true);
  b.setInsertionPointToStart(&branch.getThenRegion().front());
  NVVM::SetMaxRegisterOp::create(b, op.getProducerRegisters(),
                                 NVVM::SetMaxRegisterAction::decrease);
  rewriter.inlineBlockBefore(&op.getProducer().front(),
                             branch.getThenRegion().front().getTerminator(), {tid});
  b.setInsertionPointToStart(&branch.getElseRegion().front());
  NVVM::SetMaxRegisterOp::create(b, op.getConsumerRegisters(),
                                 NVVM::SetMaxRegisterAction::increase);
  // The group index read from lane 0 (CUTLASS's canonical_warp_group_idx):
  // ptxas then knows it is warp-uniform, and the addresses and wgmma
  // descriptors built on it live in uniform registers (no R2UR per wgmma).
  Value warpGroup = arith::IndexCastOp::create(
      b, b.getI32Type(), arith::DivUIOp::create(b, tid, idx(group)));
  warpGroup = gpu::ShuffleOp::create(b, warpGroup, 0, 32, gpu::ShuffleMode::IDX)
                  .getShuffleResult();
  Value groupIdx = arith::SubIOp::create(
      b, arith::IndexCastOp::create(b, b.getIndexType(), warpGroup), idx(producers / group));
  Value thread = arith::RemUIOp::create(b, tid, idx(group));
  rewriter.inlineBlockBefore(&op.getConsumers().front(),
                             branch.getElseRegion().front().getTerminator(),
                             {groupIdx, thread});
  rewriter.eraseOp(op);
}

} // namespace

LogicalResult mlir::flexattn::lowerToHopper(RewriterBase &rewriter,
                                            gpu::LaunchOp launch,
                                            int64_t maxSharedMemory) {
  Block &body = launch.getBody().front();
  SmallVector<RingAllocOp> allocs(body.getOps<RingAllocOp>());
  if (allocs.empty())
    return success();
  ImplicitLocOpBuilder b(launch.getLoc(), rewriter);
  Lowering l(b);

  // Shared memory: every ring's slots, then every ring's barriers.
  int64_t off = l.layoutSlots(allocs);
  for (RingAllocOp alloc : allocs) {
    RingLayout &r = l.rings[alloc];
    r.fullOff = off;
    r.emptyOff = off + 8 * r.type.getStages();
    off += 16 * r.type.getStages();
  }
  if (failed(l.allocate(launch, allocs.back(), off, kAlign, maxSharedMemory)))
    return failure();

  // Thread 0 initialises the barriers, all wait.
  b.setInsertionPointAfter(l.smem.getDefiningOp());
  Value leader = arith::CmpIOp::create(b, arith::CmpIPredicate::eq,
                                       gpu::ThreadIdOp::create(b, gpu::Dimension::x),
                                       arith::ConstantIndexOp::create(b, 0));
  auto init = scf::IfOp::create(b, leader, /*withElseRegion=*/false);
  {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(&init.getThenRegion().front());
    for (RingAllocOp alloc : allocs) {
      const RingLayout &r = l.rings[alloc];
      for (int64_t s = 0; s < r.type.getStages(); ++s) {
        NVVM::MBarrierInitOp::create(b, l.shared(l.at(l.smem, r.fullOff + 8 * s)),
                                     l.i32(1), Value());
        NVVM::MBarrierInitOp::create(b, l.shared(l.at(l.smem, r.emptyOff + 8 * s)),
                                     l.i32(r.consumers), Value());
      }
    }
    NVVM::FenceMbarrierInitOp::create(b);
  }
  gpu::BarrierOp::create(b);

  SmallVector<Operation *> ops;
  SmallVector<WarpSpecializeOp> roles;
  Operation *foreign = nullptr;
  launch.getBody().walk<WalkOrder::PreOrder>([&](Operation *op) {
    if (isa<RingCopyOp, FragLoadOp>(op) && !foreign)
      foreign = op;
    if (isa<RingAcquireOp, RingLoadOp, RingWaitOp, RingReleaseOp, MmaOp, MmaWaitOp>(op) ||
        SharedTiles::isTileValue(op))
      ops.push_back(op);
    if (auto ws = dyn_cast<WarpSpecializeOp>(op))
      roles.push_back(ws);
  });
  if (foreign)
    return foreign->emitOpError("is lowered by flexattn-lower-to-ampere (sm_80 "
                                "cooperative rings), not flexattn-lower-to-hopper");
  for (Operation *op : ops)
    if (failed(l.lower(op)))
      return failure();
  eraseReversed(rewriter, ops);
  for (RingAllocOp alloc : allocs)
    rewriter.eraseOp(alloc);
  for (WarpSpecializeOp ws : roles)
    lowerRoles(rewriter, b, ws);
  return success();
}

namespace {
struct FlexAttnLowerToHopperPass
    : public flexattn::impl::FlexAttnLowerToHopperBase<FlexAttnLowerToHopperPass> {
  using FlexAttnLowerToHopperBase::FlexAttnLowerToHopperBase;

  void runOnOperation() override {
    IRRewriter rewriter(&getContext());
    if (failed(forEachLaunch(getOperation(), [&](gpu::LaunchOp launch) {
          return lowerToHopper(rewriter, launch, maxSharedMemory);
        })))
      signalPassFailure();
  }
};
} // namespace
