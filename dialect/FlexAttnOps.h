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
/// An optional lse operand: a 3-D f32 memref [B, Hq, M].
LogicalResult verifyLseBuffer(Operation *op, Value lse);
} // namespace mlir::flexattn

#include "dialect/FlexAttnInterfaces.h.inc"

#define GET_OP_CLASSES
#include "dialect/FlexAttnOps.h.inc"

#endif // FLEXATTN_DIALECT_FLEXATTNOPS_H
