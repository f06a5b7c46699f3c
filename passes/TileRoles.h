//===- TileRoles.h - re-emitting a CTA's tile body for one role -*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// The CTA body that flexattn-map-to-grid (and flexattn-persistent-tiles)
// leave has one shape on every target: tile-decoding index math, maybe a
// loop over the CTA's tiles, and the Q tile's scope: its state buffers
// (memref.alloca + linalg.fill), KV loops of flexattn.tile_step, and a
// flexattn.finalize. A role pass (flexattn-warp-specialize for the Hopper
// producer and consumers; a multistage pass for other GPUs) re-emits that
// body once per role with `emitRole`, which clones the index math and the
// loops and hands each tile op to the role, threading the role's
// loop-carried values (ring positions, the softmax state in registers)
// through every loop that holds tile ops.
//
//===----------------------------------------------------------------------===//

#ifndef FLEXATTN_PASSES_TILEROLES_H
#define FLEXATTN_PASSES_TILEROLES_H

#include "passes/Passes.h"

#include "mlir/IR/IRMapping.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"

namespace mlir::flexattn {

/// The tile ops of a CTA body, found and checked once.
struct TileBody {
  FinalizeOp finalize;            // the Q tile's finalize (one per CTA)
  SmallVector<TileStepOp> steps;  // its KV steps (every loop's)
  /// The tile's state buffers (the finalize's acc, max, sum).
  Value acc, max, sum;

  /// Finds the tile ops under `ops`; fails with a diagnostic on `anchor`
  /// unless there is exactly one finalize and at least one tile_step, all
  /// on the same state and q/k/v.
  static FailureOr<TileBody> find(Operation *anchor, ArrayRef<Operation *> ops);
  bool isState(Value v) const { return v == acc || v == max || v == sum; }
};

/// How one role handles the tile ops. Its loop-carried values are named
/// members; `carried()` lists the live ones in a fixed order and
/// `setCarried` takes them back in that order.
class RoleEmitter {
public:
  virtual ~RoleEmitter() = default;
  virtual SmallVector<Value> carried() const = 0;
  virtual void setCarried(ValueRange values) = 0;
  /// Where the Q tile's state is created (its first state buffer).
  virtual LogicalResult beginTile(ImplicitLocOpBuilder &b, IRMapping &map) = 0;
  virtual LogicalResult step(ImplicitLocOpBuilder &b, TileStepOp op,
                             IRMapping &map) = 0;
  virtual LogicalResult finalize(ImplicitLocOpBuilder &b, FinalizeOp op,
                                 IRMapping &map) = 0;
  /// Before the loop that re-emits `loop` (an scf.for holding tile ops; its
  /// bounds are mapped already) is created.
  virtual LogicalResult beforeLoop(ImplicitLocOpBuilder &b, scf::ForOp loop,
                                   IRMapping &map) {
    return success();
  }
};

/// Where a Q tile is: batch, head and first row.
struct TileCoordinates {
  Value b, h, q0;
};

/// The Q tile's coordinates (those of `fin`) where its state is created
/// (`beginTile`): values cloned already (in `map`) or defined outside the
/// CTA body of `launch`. Fails with a diagnostic if they are computed later.
FailureOr<TileCoordinates> tileCoordinates(FinalizeOp fin, gpu::LaunchOp launch,
                                           const IRMapping &map);

/// The values `values` take at iteration `iv` of `loop`, for a copy issued
/// ahead of that iteration: the body's ops computing them (loads and pure
/// ops without regions; anything else is an error of `pass`) cloned under
/// `scf.if valid` with `iv` for the induction variable and `map` for values
/// from outside the body; zeros where `valid` is false.
FailureOr<SmallVector<Value>> valuesAtIteration(ImplicitLocOpBuilder &b, scf::ForOp loop,
                                                const IRMapping &map, Value iv, Value valid,
                                                ValueRange values, StringRef pass);

/// Re-emits `ops` (a CTA body without its terminator) at `b` for `role`:
/// memref.alloca_scope ops holding tile ops are inlined, the state buffers
/// and their fills dropped (`beginTile` at the first), tile_step and
/// finalize handed to the role, scf.for loops holding tile ops rebuilt
/// with the role's carried values as iter_args, everything else cloned.
LogicalResult emitRole(ImplicitLocOpBuilder &b, ArrayRef<Operation *> ops,
                       const TileBody &tile, IRMapping &map, RoleEmitter &role);

} // namespace mlir::flexattn

#endif // FLEXATTN_PASSES_TILEROLES_H
