//===- flexattn-opt.cpp - flexattn optimizer driver -------------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// mlir-opt with the flexattn dialect and passes, for lit tests. Linked
// against libMLIR.so (the one MLIR copy that has MlirOptMain).
//
//===----------------------------------------------------------------------===//

#include "dialect/FlexAttnDialect.h"
#include "passes/Passes.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/InitAllPasses.h"
#include "mlir/Target/LLVMIR/Dialect/All.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"

int main(int argc, char **argv) {
  mlir::registerAllPasses();
  mlir::flexattn::registerFlexAttnPasses();
  mlir::DialectRegistry registry;
  mlir::registerAllDialects(registry);
  mlir::registerAllExtensions(registry);
  mlir::registerAllToLLVMIRTranslations(registry);
  registry.insert<mlir::flexattn::FlexAttnDialect>();
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "flexattn optimizer driver\n", registry));
}
