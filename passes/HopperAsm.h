//===- HopperAsm.h - Hopper instructions MLIR 22 has no op for --*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// The only inline PTX of the GPU lowering. Everything else (TMA, mbarriers,
// wgmma with shared-memory operands, fences, setmaxnreg, named barriers)
// is an upstream NVVM op; these four have none in the MLIR 22 wheel:
//
//  - wgmma with A in registers: nvvm.wgmma.mma_async takes two descriptors,
//    and nvvm.inline_ptx cannot tie the accumulator operands in MLIR 22;
//  - an operand fence: an empty asm that takes and returns registers, so the
//    compiler keeps them intact (and reads results) only after a
//    wgmma.wait_group, which LLVM does not know writes them;
//  - a bulk reduction of contiguous bytes (cp.reduce.async.bulk without a
//    tensor map): NVVM has the tensor form only;
//  - a scheduling hold: an instruction ptxas may not issue before given
//    values are computed and does not move a wgmma.wait_group above (a
//    membar.cta under a predicate that is always false), so the wait after
//    it is issued no earlier (flexattn.mma.wait's `after`).
//
//===----------------------------------------------------------------------===//

#ifndef FLEXATTN_PASSES_HOPPERASM_H
#define FLEXATTN_PASSES_HOPPERASM_H

#include "mlir/IR/ImplicitLocOpBuilder.h"

namespace mlir::flexattn::hopper {

/// D[64 x n] += A[64 x 16] . B[16 x n] for a warpgroup: `acc` is the n / 2
/// f32 accumulator registers of the thread, `a` its four b32 registers of A
/// (16-bit pairs, the accumulator layout), `descB` the shared-memory
/// descriptor of an MN-major B (imm-trans-b = 1). Returns the new
/// accumulator registers (valid after a wgmma.wait_group).
SmallVector<Value> wgmmaRegisterA(ImplicitLocOpBuilder &b, ArrayRef<Value> acc,
                                  ArrayRef<Value> a, Value descB, int64_t n,
                                  Type elem);

/// Returns `regs` (all f32 or all i32) through an empty asm with tied
/// operands: CUTLASS's warpgroup_fence_operand. Emits no instruction.
SmallVector<Value> fenceRegisters(ImplicitLocOpBuilder &b, ArrayRef<Value> regs);

/// global[addr, addr + bytes) += shared[src, src + bytes) in f32, by the
/// executing thread: cp.reduce.async.bulk.global.shared::cta.bulk_group
/// .add.f32 (`addr` i64, `src` and `bytes` i32, a multiple of 16), then its
/// commit as a bulk group.
void bulkReduceAddF32(ImplicitLocOpBuilder &b, Value addr, Value src, Value bytes);

/// An instruction that ptxas orders before the next wgmma.wait_group and
/// cannot issue before every value of `after` (f32) is computed: a
/// `membar.cta` under a predicate that is false by construction (a PRMT
/// that selects only zero bytes, the values its other operand: ptxas does
/// not fold it). Never executes the fence; costs a few instructions.
void holdUntil(ImplicitLocOpBuilder &b, ArrayRef<Value> after);

} // namespace mlir::flexattn::hopper

#endif // FLEXATTN_PASSES_HOPPERASM_H
