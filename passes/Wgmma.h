//===- Wgmma.h - flexattn.mma as Hopper wgmma -------------------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// flexattn.mma and flexattn.mma.wait as sm_90a warpgroup MMAs, for the
// target lowerings whose shared tiles hold the 128-byte-swizzled layout of
// 1024-byte aligned 64-column panels (what TMA writes, and what
// flexattn-lower-to-ampere's ring.copy writes): flexattn-lower-to-hopper
// (the forward's TMA rings) and flexattn-lower-to-ampere{wgmma} (the
// backward's cooperative rings). A warpgroup (4 warps) computes 64 rows,
// each warp 16 of them, in the m16n8 accumulator layout mma.sync also
// has; a register A is the accumulator's 16-bit pairs.
//
//   mma (A in shared, K-major B)   wgmma.fence (unless it follows an mma),
//                                  nvvm.wgmma.mma_async m64nNk16 per 16 of
//                                  K, descriptors moved 32 bytes per step
//                                  within a panel; commit
//   mma (A in registers, row-major B, acc)
//                                  the register-A wgmma (HopperAsm.h) per
//                                  16 of K, B MN-major; commit
//   mma.wait                       wgmma.wait_group N, operand fences
//
//===----------------------------------------------------------------------===//

#ifndef FLEXATTN_PASSES_WGMMA_H
#define FLEXATTN_PASSES_WGMMA_H

#include "passes/SharedTiles.h"

namespace mlir::flexattn::wgmma {

/// Lowers `op` (at the builder's insertion point) for a warpgroup; fails
/// with a diagnostic on what wgmma does not take here: an element type
/// other than bf16/f16, more than 16 rows per warp, a shared A with a
/// row-major B, a register A with a K-major B or without an accumulator.
/// `hoisted`: each tile's address >> 4 taken once and every descriptor a
/// constant added to it (the forward's consumers: fewer uniform-datapath
/// instructions); otherwise each descriptor is built from its address (the
/// backward's kernel, at 255 registers, spills 8-92 bytes with the hoisted
/// form).
LogicalResult lowerMma(SharedTiles &t, MmaOp op, bool hoisted = false);

/// wgmma.wait_group pending, then the waited registers through operand
/// fences (read only after the wait).
void lowerWait(SharedTiles &t, MmaWaitOp op);

} // namespace mlir::flexattn::wgmma

#endif // FLEXATTN_PASSES_WGMMA_H
