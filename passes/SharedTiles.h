//===- SharedTiles.h - rings in shared memory, fragments in words -*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// What the target lowerings (flexattn-lower-to-hopper, flexattn-lower-to-
// ampere) share: the rings' slots laid out in the dynamic shared memory of
// a launch, tile values (ring.slot, smem_tile.reinterpret, smem_tile.panel,
// a select of tiles) as 32-bit shared-memory addresses, and register fragments as
// elements or 32-bit words (16-bit pairs, low half first). Each target adds
// its own events (mbarriers, cp.async groups) and tensor-core instructions.
//
//===----------------------------------------------------------------------===//

#ifndef FLEXATTN_PASSES_SHAREDTILES_H
#define FLEXATTN_PASSES_SHAREDTILES_H

#include "passes/Passes.h"

#include "mlir/IR/ImplicitLocOpBuilder.h"

namespace mlir::flexattn {

/// The unit attribute flexattn-multistage puts on a launch whose kernel
/// reads Q from shared memory at each S = Q.Kᵀ: flexattn-lower-to-ampere
/// then takes the unrounded shared base and fenced ldmatrix lanes.
constexpr llvm::StringLiteral kQFromShared = "flexattn.q_from_shared";

/// Where a ring lives in shared memory (offsets from the aligned base).
struct RingLayout {
  RingType type;
  int64_t tileOff = 0;                 // slot 0; slots follow each other
  int64_t fullOff = 0, emptyOff = 0;   // per-stage events (targets that have them)
  int64_t consumers = 0;
  int64_t tileBytes() const { return type.getTileType().getBytes(); }
};

class SharedTiles {
public:
  explicit SharedTiles(ImplicitLocOpBuilder &b) : b(b) {}

  /// Lays out the slots of every ring of `allocs`, from offset 0, and
  /// returns the offset after them.
  int64_t layoutSlots(ArrayRef<RingAllocOp> allocs);
  /// Asks `launch` for `bytes` of dynamic shared memory plus `align` bytes
  /// of slack, and sets `smem` (after `after`) to its base: rounded up to
  /// `align` at run time with `roundUp`, else the block's own address (an
  /// address the kernel never rounds lets ptxas fold each slot's offset
  /// into its instructions' immediates). Fails if more than `maxBytes`
  /// (> 0) are needed.
  LogicalResult allocate(gpu::LaunchOp launch, Operation *after, int64_t bytes,
                         int64_t align, int64_t maxBytes, bool roundUp = true);

  Value i32(int64_t v) { return arith::ConstantIntOp::create(b, v, 32); }
  Value i64(int64_t v) { return arith::ConstantIntOp::create(b, v, 64); }
  Value toI32(Value index) {
    return arith::IndexCastOp::create(b, b.getI32Type(), index);
  }
  Value at(Value base, int64_t off) { return arith::AddIOp::create(b, base, i32(off)); }
  /// An i32 shared-memory address as an LLVM pointer.
  Value shared(Value addr);

  /// stage = i % S, phase = (i / S) & 1.
  std::pair<Value, Value> stagePhase(const RingLayout &r, Value pos);
  /// The address of a ring's slot.
  Value slot(const RingLayout &r, Value stage);

  /// Lowers `op` if it makes a tile value: ring.slot, smem_tile.reinterpret,
  /// smem_tile.panel, arith.select of tiles (recorded in `tiles`). Returns whether it did.
  bool lowerTileValue(Operation *op);
  /// Whether `op` is one `lowerTileValue` handles.
  static bool isTileValue(Operation *op);

  SmallVector<Value> elements(Value vector);
  Value vectorOf(Type type, ValueRange elems);
  /// A 16-bit fragment as b32 registers: element pairs, low half first.
  SmallVector<Value> pairs(Value halves);
  /// The inverse of `pairs`: b32 registers as a 16-bit fragment of `type`.
  Value fromPairs(VectorType type, ValueRange words);

  ImplicitLocOpBuilder &b;
  Value smem; // i32: the base
  DenseMap<Value, RingLayout> rings;
  DenseMap<Value, Value> tiles; // !flexattn.smem_tile -> i32 address
};

} // namespace mlir::flexattn

#endif // FLEXATTN_PASSES_SHAREDTILES_H
