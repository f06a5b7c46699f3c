//===- FlexAttnVerifiers.h - checks shared by op verifiers ------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// The operand and region checks the forward ops' verifiers (FlexAttnOps.cpp)
// and the backward ops' (FlexAttnBackwardOps.cpp) share. Each emits an op
// error naming the operand or region by its role, what was expected and what
// was found.
//
//===----------------------------------------------------------------------===//

#ifndef FLEXATTN_DIALECT_FLEXATTNVERIFIERS_H
#define FLEXATTN_DIALECT_FLEXATTNVERIFIERS_H

#include "dialect/FlexAttnOps.h"

#include <optional>
#include <string>

namespace mlir::flexattn::detail {

/// `[2, ?, 4]`.
std::string shapeStr(ArrayRef<int64_t> shape);

/// f32, f16 or bf16.
bool isAttentionElementType(Type t);

/// Equal unless one side is dynamic.
bool dimsAgree(int64_t a, int64_t b);

/// A memref operand of a given role: rank and element type checks.
LogicalResult checkMemRef(Operation *op, Value v, StringRef role, int64_t rank,
                          StringRef layout, function_ref<bool(Type)> elemOk,
                          StringRef elemDesc);

/// q [B,Hq,M,D], k [B,Hkv,N,D], v [B,Hkv,N,Dv]: ranks, dtypes and shared
/// dimensions; with `kvBatchBroadcast`, k and v may have batch 1.
LogicalResult verifyQKV(Operation *op, Value q, Value k, Value v,
                        bool kvBatchBroadcast = false);

/// out [B,Hq,M,Dv] (named `outRole`) and the optional lse [B,Hq,M] f32.
LogicalResult verifyOutputs(Operation *op, Value q, Value v, Value out,
                            Value lse, StringRef outRole = "out");

/// An optional per-row statistic named `role` (lse, max_scores): [B, Hq, M]
/// f32, against q.
LogicalResult verifyRowStat(Operation *op, Value q, Value stat, StringRef role);

/// One pair of block lists in torch's BlockMask layout (`qSide`: the
/// transposed lists of a KV-outer backward loop; `oneRow`: a packed decode
/// tile's own row, one query block whatever q's length).
LogicalResult verifyBlockMaskPair(Operation *op, Value num, Value idx,
                                  StringRef numRole, StringRef idxRole,
                                  ArrayRef<int64_t> blockSize, Value q,
                                  Value k, bool qSide = false,
                                  bool oneRow = false);

/// The kv-side block mask (and full blocks) with its block_size.
LogicalResult verifyBlockMask(Operation *op, Value q, Value k, Value num,
                              Value idx, Value fullNum, Value fullIdx,
                              std::optional<ArrayRef<int64_t>> blockSize,
                              bool oneRow = false);

/// A packed decode tile (`packed(%m)`): q viewed as [B, Hkv, G * M, D].
LogicalResult verifyPackedRows(Operation *op, Value q, Value k);

/// tile_size = [BM, BN], both positive.
LogicalResult verifyTileSize(Operation *op, ArrayRef<int64_t> tile);

/// One mod region: its arguments ((score,) b, h, q_idx, kv_idx, captures...,
/// with `cotangent` a trailing f32 dy), scalar code only, and a
/// flexattn.yield that `checkYield` accepts.
LogicalResult verifyRegion(Operation *op, Region &region, StringRef name,
                           bool hasScore, TypeRange captures,
                           function_ref<LogicalResult(YieldOp)> checkYield,
                           bool cotangent = false);

/// The mask_mod region: yields one i1.
LogicalResult verifyMaskRegion(Operation *op, Region &region,
                               TypeRange captures);

} // namespace mlir::flexattn::detail

#endif // FLEXATTN_DIALECT_FLEXATTNVERIFIERS_H
