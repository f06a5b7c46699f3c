//===- GroupTurns.h - consumer groups issuing MMAs in turns -----*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// FlashAttention-3's pingpong: n groups of consumer threads (2, or 3 for
// 192-row Q tiles) take turns issuing their MMAs, so that one group's
// element math overlaps the others' GEMMs on the tensor cores. Group g (an
// i32 in [0, n)) waits for its turn on named barrier 1 + g and passes the
// turn to group (g + 1) mod n on that group's barrier; a barrier counts
// `threads`, the waiting group's and the passing group's threads. Group
// n - 1 passes group 0 the first turn. Used by flexattn-schedule-consumers
// (the forward's QKᵀ) and flexattn-lower-backward-mma (the backward's Sᵀ,
// dPᵀ; two groups).
//
//===----------------------------------------------------------------------===//

#ifndef FLEXATTN_PASSES_GROUPTURNS_H
#define FLEXATTN_PASSES_GROUPTURNS_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"

namespace mlir::flexattn::turns {

inline Value i32(ImplicitLocOpBuilder &b, int64_t v) {
  return arith::ConstantIntOp::create(b, v, 32);
}

/// Waits for group `group`'s turn.
inline void take(ImplicitLocOpBuilder &b, Value group, int64_t threads) {
  NVVM::BarrierOp::create(b, Type(), arith::AddIOp::create(b, group, i32(b, 1)),
                          i32(b, threads), NVVM::BarrierReductionAttr(), Value());
}

/// Passes the turn to the next of `groups` groups.
inline void pass(ImplicitLocOpBuilder &b, Value group, int64_t threads,
                 int64_t groups = 2) {
  Value barrier;
  if (groups == 2) {
    barrier = arith::SubIOp::create(b, i32(b, 2), group);
  } else {
    Value last = arith::CmpIOp::create(b, arith::CmpIPredicate::eq, group,
                                       i32(b, groups - 1));
    barrier = arith::SelectOp::create(b, last, i32(b, 1),
                                      arith::AddIOp::create(b, group, i32(b, 2)));
  }
  NVVM::BarrierArriveOp::create(b, barrier, i32(b, threads));
}

/// Group 0 goes first: the last of `groups` groups passes it the first turn
/// (once, before the groups' first take).
inline void giveFirst(ImplicitLocOpBuilder &b, Value group, int64_t threads,
                      int64_t groups = 2) {
  auto last = scf::IfOp::create(
      b,
      arith::CmpIOp::create(b, arith::CmpIPredicate::eq, group, i32(b, groups - 1)),
      /*withElseRegion=*/false);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(last.thenBlock());
  NVVM::BarrierArriveOp::create(b, i32(b, 1), i32(b, threads));
}

} // namespace mlir::flexattn::turns

#endif // FLEXATTN_PASSES_GROUPTURNS_H
