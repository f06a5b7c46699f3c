//===- GpuKernel.h - shared pieces of the GPU kernel builder ----*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// What flexattn-map-to-gpu (MapToGPU.cpp: plan, outlining, producer) and the
// consumer warpgroups' code (KernelConsumer.cpp: wgmma, mods, online
// softmax, epilogue) share. Internal to the passes.
//
//===----------------------------------------------------------------------===//

#ifndef FLEXATTN_PASSES_GPUKERNEL_H
#define FLEXATTN_PASSES_GPUKERNEL_H

#include "passes/HopperPtx.h"
#include "passes/Passes.h"

#include "mlir/IR/IRMapping.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"

namespace mlir::flexattn::gpukernel {

using hopper::PtxBuilder;

constexpr int64_t kThreads = 384;
constexpr int64_t kRows = 128;       // Q tile rows: two consumer warpgroups.

/// Everything the kernel is specialised on, and its shared-memory plan.
struct KernelPlan {
  int64_t B, Hq, Hkv, M, N, D, Dv, BN, stages;
  bool pipelined, pingpong; // FlashAttention-3 schedules (see consumerStep*)
  int64_t ctas;             // grid size: one CTA per tile, or fewer, persistent
  Type elem;
  // Byte offsets from the 1024-aligned dynamic shared memory base.
  int64_t qOff, kOff, vOff, barOff, smemBytes;

  int64_t qBytes() const { return kRows * D * 2; }
  int64_t kBytes() const { return BN * D * 2; }
  int64_t vBytes() const { return BN * Dv * 2; }
  int64_t qTiles() const { return (M + kRows - 1) / kRows; }
  int64_t tiles() const { return qTiles() * Hq * B; }
  // Barrier slots: qFull, qEmpty, kFull[s], kEmpty[s], vFull[s], vEmpty[s].
  int64_t numBarriers() const { return 2 + 4 * stages; }
};

/// Per-kernel values shared by the roles.
struct KernelEnv {
  KernelPlan plan;
  Value smem;                  // i32, 1024-aligned base
  Value qMap, kMap, vMap;      // !llvm.ptr to CUtensorMaps
  Value tid;                   // index
  Value bar(PtxBuilder &p, int64_t slot) const {
    return arith::AddIOp::create(p.b, smem, p.i32(plan.barOff + 8 * slot));
  }
  /// Slot `base + stage` (stage an i32 value).
  Value bar(PtxBuilder &p, int64_t base, Value stage) const {
    Value off = arith::MulIOp::create(p.b, stage, p.i32(8));
    return arith::AddIOp::create(p.b, bar(p, base), off);
  }
  int64_t qFullSlot() const { return 0; }
  int64_t qEmptySlot() const { return 1; }
  int64_t kFullSlot() const { return 2; }
  int64_t kEmptySlot() const { return 2 + plan.stages; }
  int64_t vFullSlot() const { return 2 + 2 * plan.stages; }
  int64_t vEmptySlot() const { return 2 + 3 * plan.stages; }
};

inline Value toI32(ImplicitLocOpBuilder &b, Value index) {
  return arith::IndexCastOp::create(b, b.getI32Type(), index);
}

/// stage = i % S, phase parity = (i / S) & 1.
inline std::pair<Value, Value> stagePhase(PtxBuilder &p, Value i, int64_t stages) {
  Value stage = arith::RemUIOp::create(p.b, i, p.i32(stages));
  Value round = arith::DivUIOp::create(p.b, i, p.i32(stages));
  Value phase = arith::AndIOp::create(p.b, round, p.i32(1));
  return {stage, phase};
}

/// Whether a KV tile of the same Q tile preceded ring position i (the Q
/// tile's first KV tile took position `first`), and the ring slot and phase
/// that tile used.
inline std::tuple<Value, Value, Value> previousTile(PtxBuilder &p, Value i, Value first,
                                                    int64_t stages) {
  Value hasPrev = arith::CmpIOp::create(p.b, arith::CmpIPredicate::ugt, i, first);
  Value prevI = arith::SelectOp::create(
      p.b, hasPrev, arith::SubIOp::create(p.b, i, p.i32(1)), p.i32(0));
  auto [stage, phase] = stagePhase(p, prevI, stages);
  return {hasPrev, stage, phase};
}

using StepFn = function_ref<SmallVector<Value>(ImplicitLocOpBuilder &,
                                               TileStepOp, IRMapping &,
                                               ValueRange)>;
using FinalizeFn = function_ref<void(ImplicitLocOpBuilder &, FinalizeOp,
                                     IRMapping &, ValueRange)>;

/// Re-emits the Q tile's body (made by flexattn-tile and
/// flexattn-block-sparsity) for one role: the KV loops are rebuilt carrying
/// `state` through iter_args, each flexattn.tile_step becomes `step`,
/// flexattn.finalize becomes `finalize`, the stack state (alloca, fill) is
/// dropped (it lives in registers), and everything else is cloned.
FailureOr<SmallVector<Value>> emitRole(ImplicitLocOpBuilder &b, Block &body,
                                       IRMapping &map, SmallVector<Value> state,
                                       StepFn step, FinalizeFn finalize);

/// The CTA's tiles: t = blockIdx.x, blockIdx.x + ctas, ... < tiles(), the Q
/// tiles of a (batch, head) adjacent (so concurrent CTAs share K/V in L2),
/// heaviest (last) Q tile first within it. For each, maps the Q-tile
/// loop's induction variables (b, h, qt) in `map` and calls `body` with the
/// tile's ordinal j in this CTA (i32) and the carried state; returns the
/// final state.
using TileFn = function_ref<FailureOr<SmallVector<Value>>(
    ImplicitLocOpBuilder &, Value j, ValueRange state)>;
FailureOr<SmallVector<Value>> forEachTile(ImplicitLocOpBuilder &b,
                                          const KernelEnv &env, IRMapping &map,
                                          ValueRange tileIvs, ValueRange init,
                                          TileFn body);

/// The consumer warpgroups (1 and 2) of the kernel (KernelConsumer.cpp).
LogicalResult emitConsumer(ImplicitLocOpBuilder &b, const KernelEnv &env,
                           Block &body, IRMapping &map, ValueRange tileIvs);

} // namespace mlir::flexattn::gpukernel

#endif // FLEXATTN_PASSES_GPUKERNEL_H
