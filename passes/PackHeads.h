//===- PackHeads.h - flexattn-tile's packed decode tiles --------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//

#ifndef FLEXATTN_PASSES_PACKHEADS_H
#define FLEXATTN_PASSES_PACKHEADS_H

#include "passes/Passes.h"

namespace mlir::flexattn {

/// `buf` [B, Hq, M, ...] (contiguous) viewed as [B, Hq / group, group * M,
/// ...]: row g * M + i of K/V head hkv is query head hkv * group + g, row i.
Value packHeadsView(OpBuilder &builder, Location loc, Value buf, int64_t group);

/// The block-mask rows a packed tile holds: batch, heads [firstHead,
/// lastHead], query blocks [firstBlock, lastBlock].
struct TileRows {
  Value b, firstHead, lastHead, firstBlock, lastBlock;
};

/// The rows of packed tile rows [q0, end) (end > q0) of the group starting
/// at `firstHead`, for query blocks of `qBlock` rows.
TileRows packedTileRows(OpBuilder &builder, Location loc, Value batch,
                        Value firstHead, Value q0, Value end,
                        Value rowsPerHead, int64_t qBlock);

/// A packed tile's own block-mask row ([1, 1, 1] counts, [1, 1, 1,
/// kvBlocks] lists, on the stack); fullNum/fullIndices null without full
/// lists.
struct PackedMask {
  Value num, indices, fullNum, fullIndices;
};

/// The union of `op`'s block-mask rows `rows`: a block listed by any row
/// (as partial or full) is partial, unless every row lists it as full.
/// Blocks at or past `kvBlocks` are dropped (they hold no key).
PackedMask unionBlockMask(OpBuilder &builder, Location loc, AttentionOp op,
                          const TileRows &rows, Value kvBlocks);

} // namespace mlir::flexattn

#endif // FLEXATTN_PASSES_PACKHEADS_H
