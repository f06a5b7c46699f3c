//===- CpuRuntime.cpp - CPU kernels as objects, run on threads --*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// The C ABI flexattn_mlir/cpu.py drives CPU kernels through:
//
//   flexattnCpuCompile  LLVM-dialect module -> a relocatable object for this
//                       host (its CPU and features, as -mcpu=native would
//                       pick), optimised at the requested level;
//   flexattnCpuLoad     object -> a callable entry, linked in a fresh ORC
//                       LLJIT (no code generation: a cached object loads in
//                       milliseconds);
//   flexattnCpuRun      the entry run on N threads at once (the kernel's
//                       work counter shares the tiles out among them);
//   flexattnCpuHostTarget  the CPU name and features objects are built for,
//                       for the compile cache's key.
//
// The entry is `void <name>_packed(void **args)`, args[i] pointing to the
// i-th argument of `_mlir_ciface_<name>` (MLIR's packed calling convention).
//
//===----------------------------------------------------------------------===//

#include "mlir-c/IR.h"
#include "mlir-c/RegisterEverything.h"
#include "mlir-c/Support.h"
#include "mlir/CAPI/IR.h"
#include "mlir/ExecutionEngine/ExecutionEngine.h"
#include "mlir/ExecutionEngine/OptUtils.h"
#include "mlir/Target/LLVMIR/Export.h"

#include "llvm/ADT/StringMap.h"
#include "llvm/ExecutionEngine/Orc/ExecutionUtils.h"
#include "llvm/ExecutionEngine/Orc/JITTargetMachineBuilder.h"
#include "llvm/ExecutionEngine/Orc/LLJIT.h"
#include "llvm/IR/IRBuilder.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Target/TargetMachine.h"
#include "llvm/TargetParser/Host.h"

#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

char *copyString(llvm::StringRef s) {
  char *out = static_cast<char *>(std::malloc(s.size() + 1));
  std::memcpy(out, s.data(), s.size());
  out[s.size()] = '\0';
  return out;
}

void initNativeTarget() {
  static bool once = [] {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
    return true;
  }();
  (void)once;
}

/// The host's triple, CPU and features (llvm::sys::getHostCPUName and
/// getHostCPUFeatures, what clang's -march=native uses).
llvm::Expected<llvm::orc::JITTargetMachineBuilder> hostBuilder() {
  initNativeTarget();
  return llvm::orc::JITTargetMachineBuilder::detectHost();
}

/// Defines `void <entry>_packed(ptr %args)` calling `_mlir_ciface_<entry>`
/// with `*args[i]` as its i-th argument.
llvm::LogicalResult addPackedEntry(llvm::Module &module, llvm::StringRef entry) {
  llvm::Function *callee = module.getFunction(("_mlir_ciface_" + entry).str());
  if (!callee)
    return llvm::failure();
  llvm::LLVMContext &ctx = module.getContext();
  llvm::IRBuilder<> b(ctx);
  auto *type = llvm::FunctionType::get(b.getVoidTy(), {b.getPtrTy()}, false);
  auto *packed = llvm::Function::Create(type, llvm::Function::ExternalLinkage,
                                        (entry + "_packed").str(), module);
  b.SetInsertPoint(llvm::BasicBlock::Create(ctx, "entry", packed));
  std::vector<llvm::Value *> args;
  for (llvm::Argument &arg : callee->args()) {
    llvm::Value *slot = b.CreateConstGEP1_64(b.getPtrTy(), packed->getArg(0), arg.getArgNo());
    llvm::Value *ptr = b.CreateLoad(b.getPtrTy(), slot);
    args.push_back(b.CreateLoad(arg.getType(), ptr));
  }
  b.CreateCall(callee, args);
  b.CreateRetVoid();
  return llvm::success();
}

} // namespace

extern "C" {

/// "<cpu> <+feature,...>" of this host (the features sorted), the machine
/// flexattnCpuCompile builds objects for. Owned by the library.
MLIR_CAPI_EXPORTED const char *flexattnCpuHostTarget() {
  static std::string target = [] {
    std::string cpu = llvm::sys::getHostCPUName().str();
    std::vector<std::string> features;
    for (const auto &f : llvm::sys::getHostCPUFeatures())
      if (f.getValue())
        features.push_back("+" + f.getKey().str());
    llvm::sort(features);
    return cpu + " " + llvm::join(features, ",");
  }();
  return target.c_str();
}

/// Compiles `module` (LLVM dialect, with `entry` emitted under
/// llvm.emit_c_interface) to a relocatable object for this host at LLVM
/// optimisation level `optLevel`. On success returns 0 and a malloc'ed
/// object in *object / *size; else 1 and a malloc'ed message in *error.
MLIR_CAPI_EXPORTED int flexattnCpuCompile(MlirModule module, const char *entry,
                                          int optLevel, char **object,
                                          size_t *size, char **error) {
  auto fail = [&](const llvm::Twine &msg) {
    *error = copyString(msg.str());
    return 1;
  };
  mlir::ModuleOp op = unwrap(module);
  mlirRegisterAllLLVMTranslations(wrap(op.getContext()));
  auto builder = hostBuilder();
  if (!builder)
    return fail("no target for this host: " + llvm::toString(builder.takeError()));
  builder->setCodeGenOptLevel(optLevel >= 3   ? llvm::CodeGenOptLevel::Aggressive
                              : optLevel == 0 ? llvm::CodeGenOptLevel::None
                                              : llvm::CodeGenOptLevel::Default);
  builder->setRelocationModel(llvm::Reloc::PIC_);
  auto machine = builder->createTargetMachine();
  if (!machine)
    return fail("cannot create the host target machine: " +
                llvm::toString(machine.takeError()));

  llvm::LLVMContext context;
  std::unique_ptr<llvm::Module> llvmModule =
      mlir::translateModuleToLLVMIR(op, context, "flexattn");
  if (!llvmModule)
    return fail("the module does not translate to LLVM IR");
  mlir::ExecutionEngine::setupTargetTripleAndDataLayout(llvmModule.get(),
                                                        machine->get());
  if (failed(addPackedEntry(*llvmModule, entry)))
    return fail(llvm::Twine("no function _mlir_ciface_") + entry + " in the module");
  auto optimize = mlir::makeOptimizingTransformer(optLevel, 0, machine->get());
  if (llvm::Error err = optimize(llvmModule.get()))
    return fail("LLVM optimisation failed: " + llvm::toString(std::move(err)));

  llvm::SmallVector<char, 0> buffer;
  llvm::raw_svector_ostream os(buffer);
  llvm::legacy::PassManager codegen;
  if ((*machine)->addPassesToEmitFile(codegen, os, nullptr,
                                      llvm::CodeGenFileType::ObjectFile))
    return fail("the host target cannot emit object files");
  codegen.run(*llvmModule);
  *object = static_cast<char *>(std::malloc(buffer.size()));
  std::memcpy(*object, buffer.data(), buffer.size());
  *size = buffer.size();
  return 0;
}

/// Links `object` into a fresh JIT (symbols it imports, e.g. malloc, come
/// from this process) and returns the JIT, the packed entry in *fn; null and
/// a malloc'ed message in *error on failure.
MLIR_CAPI_EXPORTED void *flexattnCpuLoad(const char *object, size_t size,
                                         const char *entry, void **fn,
                                         char **error) {
  auto fail = [&](const llvm::Twine &msg) -> void * {
    *error = copyString(msg.str());
    return nullptr;
  };
  auto builder = hostBuilder();
  if (!builder)
    return fail("no target for this host: " + llvm::toString(builder.takeError()));
  auto jit = llvm::orc::LLJITBuilder()
                 .setJITTargetMachineBuilder(std::move(*builder))
                 .create();
  if (!jit)
    return fail("cannot create a JIT: " + llvm::toString(jit.takeError()));
  auto process = llvm::orc::DynamicLibrarySearchGenerator::GetForCurrentProcess(
      (*jit)->getDataLayout().getGlobalPrefix());
  if (!process)
    return fail(llvm::toString(process.takeError()));
  (*jit)->getMainJITDylib().addGenerator(std::move(*process));
  auto buffer = llvm::MemoryBuffer::getMemBufferCopy(llvm::StringRef(object, size),
                                                     "flexattn-kernel.o");
  if (llvm::Error err = (*jit)->addObjectFile(std::move(buffer)))
    return fail("cannot link the kernel object: " + llvm::toString(std::move(err)));
  auto symbol = (*jit)->lookup((llvm::Twine(entry) + "_packed").str());
  if (!symbol)
    return fail("the kernel object has no entry: " +
                llvm::toString(symbol.takeError()));
  *fn = symbol->toPtr<void *>();
  return jit->release();
}

/// Releases a JIT from flexattnCpuLoad (its code becomes invalid).
MLIR_CAPI_EXPORTED void flexattnCpuUnload(void *jit) {
  delete static_cast<llvm::orc::LLJIT *>(jit);
}

/// Runs `fn(args)` on `threads` threads, the calling one included, and
/// returns when all have returned.
MLIR_CAPI_EXPORTED void flexattnCpuRun(void *fn, void **args, int threads) {
  auto entry = reinterpret_cast<void (*)(void **)>(fn);
  std::vector<std::thread> others;
  for (int i = 1; i < threads; ++i)
    others.emplace_back(entry, args);
  entry(args);
  for (std::thread &t : others)
    t.join();
}

/// Frees memory the functions above returned.
MLIR_CAPI_EXPORTED void flexattnFree(void *p) { std::free(p); }

} // extern "C"
