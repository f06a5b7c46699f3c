//===- GroupTurns.h - two consumer groups issuing MMAs in turns -*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// FlashAttention-3's pingpong: two groups of consumer threads take turns
// issuing their MMAs, so that one group's element math overlaps the other's
// GEMMs on the tensor cores. Group g (an i32 0 or 1) waits for its turn on
// named barrier 1 + g and passes the turn on barrier 2 - g; both barriers
// count `threads`, the two groups' threads. Group 1 passes group 0 the
// first turn. Used by flexattn-schedule-consumers (the forward's QKᵀ) and
// flexattn-lower-backward-mma (the backward's Sᵀ, dPᵀ).
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

/// Passes the turn to the other group.
inline void pass(ImplicitLocOpBuilder &b, Value group, int64_t threads) {
  NVVM::BarrierArriveOp::create(b, arith::SubIOp::create(b, i32(b, 2), group),
                                i32(b, threads));
}

/// Group 0 goes first: group 1 passes it the first turn (once, before the
/// groups' first take).
inline void giveFirst(ImplicitLocOpBuilder &b, Value group, int64_t threads) {
  auto second = scf::IfOp::create(
      b, arith::CmpIOp::create(b, arith::CmpIPredicate::eq, group, i32(b, 1)),
      /*withElseRegion=*/false);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(second.thenBlock());
  NVVM::BarrierArriveOp::create(b, i32(b, 1), i32(b, threads));
}

} // namespace mlir::flexattn::turns

#endif // FLEXATTN_PASSES_GROUPTURNS_H
