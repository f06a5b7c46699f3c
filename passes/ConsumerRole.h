//===- ConsumerRole.h - the attention step on register fragments -*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// The compute side of every GPU attention kernel, as the mid-level ops of
// FlexAttnGpuOps.td, in order: per KV step
//
//   wait K_j; S = Q.K_jᵀ; wait(0); release K_j
//   P, m, l, alpha = softmax(S); O = alpha O
//   wait V_j; O = O + P.V_j; wait(0); release V_j
//
// and at the end of a Q tile frag.finalize. Each group of 128 threads (4
// warps x 16 T rows: T m16 tiles per warp) computes a 64 T-row band of the
// 128-row Q tile (Hopper: T = 1; sm_80: 1 or 2). The role
// passes specialise it: flexattn-warp-specialize (Hopper: consumer
// warpgroups reading the Q tile a TMA producer loaded) and
// flexattn-multistage (sm_80: every warp copies too, Q is read into
// registers once per tile, copies run ahead of the waits).
//
//===----------------------------------------------------------------------===//

#ifndef FLEXATTN_PASSES_CONSUMERROLE_H
#define FLEXATTN_PASSES_CONSUMERROLE_H

#include "passes/OnlineSoftmax.h"
#include "passes/TileRoles.h"

#include <optional>

namespace mlir::flexattn {

/// Rows of the Q tile (Hopper: also 3 bands, kWideTileRows, at D = 64), of
/// one group's band per m16 tile of its warps, threads of a group.
constexpr int64_t kTileRows = 128;
constexpr int64_t kWideTileRows = 192;
constexpr int64_t kBandRows = 64;
constexpr int64_t kGroupThreads = 128;

/// Head dims a GPU kernel takes: multiples of 8 (a 16-byte row chunk) up to
/// 256. Shared-memory tiles are 64-column panels, so a head dim is padded
/// up to a multiple of kPanelCols there (zeros: flexattn.ring.copy fills
/// the columns past the tensor's).
constexpr int64_t kHeadDimStep = 8;
constexpr int64_t kMaxHeadDim = 256;

/// What a kernel is specialised on, checked once.
struct KernelPlan {
  MemRefType q, k, v;
  /// BM: the Q tile's rows (128; 64 for the decode kernel's packed tiles).
  int64_t M, N, D, Dv, BM, BN;
  Type elem;
  /// D and Dv padded to whole 64-column panels: the columns of the Q/K and
  /// V tiles in shared memory and of the fragments computed from them.
  int64_t Dp, Dvp;

  /// Checks the CTA's first tile_step: static shapes (with `dynamic`, static
  /// heads and head dims; M and N may then be ShapedType::kDynamic), bf16/f16
  /// (and f32 where `f32` says the kernel has tf32 MMAs), head dims multiples
  /// of 8 in [16, 256], tiles of 64|128 x 64|128. Diagnostics name `pass`.
  static FailureOr<KernelPlan> of(TileStepOp step, StringRef pass, bool f32 = false,
                                  bool dynamic = false);
};

/// The rings the consumers read: Q (one tile per Q tile), K and V (one
/// tile per KV step, at the same positions).
struct ConsumerRings {
  Value q, k, v;
};

/// The in-order consumer step of a group. Its loop-carried values are the
/// ring positions and, inside a Q tile, the softmax state.
class ConsumerRole : public RoleEmitter {
public:
  /// `warpTiles`: m16 tiles per warp (its rows / 16).
  ConsumerRole(ImplicitLocOpBuilder &b, const ConsumerRings &rings,
               const KernelPlan &plan, Value group, Value thread,
               int64_t warpTiles = 1);

  SmallVector<Value> carried() const override;
  void setCarried(ValueRange v) override;
  LogicalResult step(ImplicitLocOpBuilder &b, TileStepOp op,
                     IRMapping &map) override;
  LogicalResult finalize(ImplicitLocOpBuilder &b, FinalizeOp op,
                         IRMapping &map) override;

protected:
  /// Called right after the wait for the current step's `ring` slot (K or V).
  virtual LogicalResult afterWait(ImplicitLocOpBuilder &b, Value ring,
                                  TileStepOp op, IRMapping &map) {
    return success();
  }
  /// The `in_flight` of the step's waits for K and V (none: not a copy ring).
  virtual std::optional<int64_t> waitInFlight() const { return std::nullopt; }
  /// Called before the tile's outputs are stored.
  virtual void endTile(ImplicitLocOpBuilder &b) {}
  /// The state of a new Q tile: max -inf, sum 0, accumulator 0.
  void startState(ImplicitLocOpBuilder &b);

  const ConsumerRings &rings;
  const KernelPlan &plan;
  int64_t warpTiles;    // m16 tiles per warp
  Value band;           // index: first Q row of this group's band
  Value row, col;       // index: this thread's first fragment row / column
  Value qPos, kvPos;    // ring positions
  Value qA, qRow;       // S's A operand: a shared tile and its band row, or
                        // a fragment (qRow null)
  softmax::State state; // fragments while inside a Q tile
};

} // namespace mlir::flexattn

#endif // FLEXATTN_PASSES_CONSUMERROLE_H
