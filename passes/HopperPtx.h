//===- HopperPtx.h - Hopper (sm_90a) primitives as inline PTX ---*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// Emits the Hopper instructions the attention kernel needs (mbarriers, TMA
// bulk tensor loads, wgmma in its shared/shared and register/shared forms,
// setmaxnreg, ex2) as `llvm.inline_asm`. The xtc MLIR 22 build has no op for
// register-A wgmma and its nvvm.inline_ptx cannot tie operands
// (GPU_NOTES.md R1), so one consistent route is used for all of them.
//
//===----------------------------------------------------------------------===//

#ifndef FLEXATTN_PASSES_HOPPERPTX_H
#define FLEXATTN_PASSES_HOPPERPTX_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"

namespace mlir::flexattn::hopper {

/// Builds inline-PTX ops at an insertion point. Shared-memory addresses are
/// 32-bit values (i32) in the CTA's shared window.
struct PtxBuilder {
  ImplicitLocOpBuilder &b;

  Value i32(int64_t v);
  Value i64(int64_t v);
  Value f32(float v);

  /// `asm` with `constraints`, returning `resultType` (null for none).
  Value inlineAsm(StringRef asmText, StringRef constraints, ValueRange operands,
                  Type resultType = nullptr, bool sideEffects = true);

  // -- warpgroup register reallocation ---------------------------------------
  void setMaxNReg(bool increase, int regs);

  // -- mbarriers -------------------------------------------------------------
  void mbarrierInit(Value bar, int64_t count);
  void fenceMbarrierInit();
  void mbarrierArrive(Value bar);
  void mbarrierArriveExpectTx(Value bar, int64_t bytes);
  /// Spins until the phase of parity `parity` (i32 0/1) has completed.
  void mbarrierWait(Value bar, Value parity);

  // -- TMA -------------------------------------------------------------------
  /// Orders the host's copy of a CUtensorMap in global memory before its
  /// first use by TMA (PTX ISA 8.3).
  void fenceTensorMap(Value tensorMap);
  /// A 4-D tiled bulk tensor load of the box at {c0, c1, c2, c3} (innermost
  /// first) described by the CUtensorMap at global address `tensorMap` into
  /// shared memory `dst`, completing on `bar`.
  void tmaLoad4d(Value dst, Value tensorMap, ValueRange coords, Value bar);

  // -- wgmma -----------------------------------------------------------------
  /// The 64-bit shared-memory matrix descriptor of a 128-byte-swizzled tile
  /// at `addr` (i32), with leading/stride byte offsets `lbo`, `sbo`.
  Value wgmmaDescriptor(Value addr, int64_t lbo, int64_t sbo);
  void wgmmaFence();
  void wgmmaCommit();
  void wgmmaWait(int pending);
  /// D[64 x n] (+)= A[64 x 16] . B[16 x n]ᵀ, A and B K-major in shared memory.
  /// `acc` holds n/2 f32 per thread; `accumulate` false ignores it.
  SmallVector<Value> wgmmaSS(ArrayRef<Value> acc, Value descA, Value descB,
                             int64_t n, Type elem, bool accumulate);
  /// D[64 x n] += A[64 x 16] . B[16 x n], A in four b32 registers per thread,
  /// B MN-major in shared memory (imm-trans-b = 1).
  SmallVector<Value> wgmmaRS(ArrayRef<Value> acc, ArrayRef<Value> a,
                             Value descB, int64_t n, Type elem);
  /// Marks accumulator registers as written by asynchronous wgmma: nothing
  /// may read them before this point (CUTLASS's warpgroup_fence_operand).
  SmallVector<Value> fenceOperands(ArrayRef<Value> regs, bool ints = false);

  // -- math ------------------------------------------------------------------
  Value ex2(Value x);
  /// Two f32 rounded to a packed bf16x2/f16x2 b32: `lo` in the low half.
  Value packHalf2(Value lo, Value hi, Type elem);
};

} // namespace mlir::flexattn::hopper

#endif // FLEXATTN_PASSES_HOPPERPTX_H
