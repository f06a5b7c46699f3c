//===- FlexAttnOps.h - flexattn ops ------------------------------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//

#ifndef FLEXATTN_DIALECT_FLEXATTNOPS_H
#define FLEXATTN_DIALECT_FLEXATTNOPS_H

#include "dialect/FlexAttnDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/Interfaces/ControlFlowInterfaces.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#define GET_TYPEDEF_CLASSES
#include "dialect/FlexAttnTypes.h.inc"

namespace mlir::flexattn {
/// Checks the score_mod / mask_mod regions of an op implementing
/// ModRegionsOpInterface: argument count and types, the captured buffers, and
/// the yielded value. Every failure names the region and what it expected.
LogicalResult verifyModRegions(Operation *op);
/// The optional operands of a finalize: lse and max_scores 3-D f32 memrefs
/// [B, Hq, M], sinks (see verifySinks) for `heads` query heads.
LogicalResult verifyFinalizeBuffers(Operation *op, Value lse, Value maxScores,
                                    Value sinks, int64_t heads);
/// An optional sinks operand: a 1-D f32 memref of `heads` logits.
LogicalResult verifySinks(Operation *op, Value sinks, int64_t heads);
} // namespace mlir::flexattn

#include "dialect/FlexAttnInterfaces.h.inc"

#define GET_OP_CLASSES
#include "dialect/FlexAttnOps.h.inc"

#endif // FLEXATTN_DIALECT_FLEXATTNOPS_H
