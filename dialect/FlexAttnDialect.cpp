//===- FlexAttnDialect.cpp - flexattn dialect -------------------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//

#include "dialect/FlexAttnDialect.h"
#include "dialect/FlexAttnOps.h"

using namespace mlir;
using namespace mlir::flexattn;

#include "dialect/FlexAttnDialect.cpp.inc"

void FlexAttnDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "dialect/FlexAttnOps.cpp.inc"
      >();
  registerTypes();
}
