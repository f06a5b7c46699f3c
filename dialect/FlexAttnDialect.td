//===- FlexAttnDialect.td - flexattn dialect definition ----*- tablegen -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// The flexattn dialect models FlexAttention: attention whose scores are
// rewritten by a user `score_mod` and filtered by a user `mask_mod`, both held
// as regions of scalar IR, with an optional block-sparse mask.
//
//===----------------------------------------------------------------------===//

#ifndef FLEXATTN_DIALECT
#define FLEXATTN_DIALECT

include "mlir/IR/OpBase.td"

def FlexAttn_Dialect : Dialect {
  let name = "flexattn";
  let summary = "FlexAttention: attention with user score and mask modifications";
  let description = [{
    Ops that carry an attention computation from the whole problem
    (`flexattn.attention`) down to one score element (`flexattn.apply_mods`).
    Every level keeps the user's `score_mod` and `mask_mod` as regions until
    `flexattn-inline-mods` clones them into the surrounding code. GPU kernels
    add roles (`flexattn.warp_specialize`), rings of shared-memory tiles
    (`!flexattn.ring`, `!flexattn.smem_tile`) and ops on register fragments
    (`flexattn.mma`, `flexattn.frag.*`).
  }];
  let cppNamespace = "::mlir::flexattn";
  let dependentDialects = ["arith::ArithDialect", "memref::MemRefDialect"];
  let useDefaultTypePrinterParser = 1;
  let extraClassDeclaration = [{
    /// Adds the types (FlexAttnGpuOps.cpp, beside their parsers).
    void registerTypes();
  }];
}

class FlexAttn_Op<string mnemonic, list<Trait> traits = []>
    : Op<FlexAttn_Dialect, mnemonic, traits>;

#endif // FLEXATTN_DIALECT
