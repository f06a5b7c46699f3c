//===- FlexAttnCAPI.cpp - C ABI to register flexattn in Python --*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// A small C ABI, loaded with ctypes by flexattn_mlir/_native.py, that adds the
// flexattn dialect to an `mlir.ir.Context` of the upstream Python bindings and
// registers the flexattn passes so `PassManager.parse` knows their flags.
// Linked against the bindings' own MLIR copy (libMLIRPythonCAPI.so).
//
//===----------------------------------------------------------------------===//

#include "dialect/FlexAttnDialect.h"
#include "passes/Passes.h"

#include "mlir-c/IR.h"
#include "mlir-c/Support.h"
#include "mlir/CAPI/IR.h"
#include "mlir/IR/DialectRegistry.h"

#include "python/SourceHash.h"

extern "C" {

/// Registers the flexattn dialect in `ctx` and loads it.
MLIR_CAPI_EXPORTED void flexattnRegisterDialect(MlirContext ctx) {
  mlir::DialectRegistry registry;
  registry.insert<mlir::flexattn::FlexAttnDialect>();
  unwrap(ctx)->appendDialectRegistry(registry);
  unwrap(ctx)->getOrLoadDialect<mlir::flexattn::FlexAttnDialect>();
}

/// Registers the flexattn passes in the global pass registry (once).
MLIR_CAPI_EXPORTED void flexattnRegisterPasses() {
  static bool once = (mlir::flexattn::registerFlexAttnPasses(), true);
  (void)once;
}

/// A SHA-256 over the sources this library was built from (the compile
/// cache keys on it, so AOT artifacts built elsewhere from the same sources
/// are found).
MLIR_CAPI_EXPORTED const char *flexattnSourceHash() {
  return FLEXATTN_SOURCE_HASH;
}

} // extern "C"
