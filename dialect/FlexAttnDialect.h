//===- FlexAttnDialect.h - flexattn dialect ----------------------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//

#ifndef FLEXATTN_DIALECT_FLEXATTNDIALECT_H
#define FLEXATTN_DIALECT_FLEXATTNDIALECT_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/IR/Dialect.h"

#include "dialect/FlexAttnDialect.h.inc"

#endif // FLEXATTN_DIALECT_FLEXATTNDIALECT_H
