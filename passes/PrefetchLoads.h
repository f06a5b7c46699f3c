//===- PrefetchLoads.h - a KV loop's uniform loads, iterations ahead -*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// A block-sparse KV loop reads, per step, values every thread of the CTA
// reads alike: the step's block index (`kv_indices[b, h, row, j / r]`,
// also inside the `scf.if` flexattn-multistage builds for the copies S - 1
// steps ahead) and, for a paged cache, the page-table entry of that block
// (`physical_to_logical[b, kv // page]`, one per tile after
// flexattn-fold-tile-divisions). Issued where the body computes them, each
// is a global-memory latency on the step's path: the copy that needs the
// block index waits for it, the softmax that needs the page waits for it.
//
// `prefetchUniformLoads` software-pipelines those loads: a `memref.load`
// (or an `scf.if` holding loads) at the top of the loop body whose value
// depends on the induction variable and otherwise only on values every
// thread has alike (block ids, kernel arguments, other such loads: never
// the thread id), from a memref the launch only reads, is issued `a`
// iterations ahead and carried in `a` iter_args (slot k: the value of
// iteration j + k). Only those after the step's first wait (the page
// entry the softmax reads) and the ones their addresses need (the block
// index) are carried: a load before the wait (the block index of the
// copies S - 1 steps ahead) already runs while the step waits, and
// carrying it measured slower on the H200 (docs/inference.md). A load of
// depth d (d - 1 such loads on its address path; D the largest) goes
// a = D - d + 1 iterations ahead, so a dependent load (the page entry of a
// block index) takes its address from a carried value instead of waiting
// on one issued in the same iteration:
//
//   scf.for %j = %lb to %ub step %c1 {
//     %blk  = memref.load %kv_indices[%j]
//     ring.wait ...
//     %page = memref.load %table[%blk]
//     ... use %blk, %page
//   }
// ->
//   %b0 = (lb < ub) ? load %kv_indices[lb] : 0      (and b1 at lb + 1)
//   %p0 = (lb < ub) ? load %table[%b0] : 0
//   scf.for %j = ... iter_args(%blk = %b0, %blk1 = %b1, %page = %p0) {
//     %blk2  = (j + 2 < ub) ? load %kv_indices[%j + 2] : 0
//     %page1 = (j + 1 < ub) ? load %table[%blk1] : 0
//     ring.wait ...
//     ... use %blk, %page
//     scf.yield %blk1, %blk2, %page1
//   }
//
// Every load past the loop's end is guarded (its value 0, never used), so
// nothing is read that the loop would not read; the values are the same
// (the memrefs are not written in the launch). flexattn-lower-to-ampere
// runs it on the KV loops (those holding a flexattn.ring.wait) of a
// gpu.launch marked `flexattn.prefetch_loads` (the driver marks the decode
// kernel's), before it lowers the rings.
//
// `hoistLoadsAbove` takes the loads a CTA makes before its KV loops off
// the chain to its first copy: the decode kernel copies its Q tile and
// waits for it (`wait`, the launch's first ring.wait), then reads the
// block mask's counts, computes its split's range, reads the first block
// indices (flexattn-multistage's prologue and the slots above) and only
// then issues its first K/V copies: three global-memory latencies in a
// row where the dense kernel has one. The loads of memrefs the launch only
// reads (and `scf.if` of such loads and pure ops) between `wait` and
// `end` (the last KV loop), with the pure ops their values need, move to
// just before `wait`, in their order, so they run while Q is copied:
//
//   ring.copy Q; ring.wait Q; frag.load Q
//   %n = memref.load %kv_num_blocks[%b]; (range of the split from %n)
//   %blk = scf.if (lb < ub) { memref.load %kv_indices[%b, lb] }
//   ring.copy K, V at %blk; scf.for ...
// ->
//   ring.copy Q
//   %n = memref.load %kv_num_blocks[%b]; (range); %blk = scf.if ...
//   ring.wait Q; frag.load Q
//   ring.copy K, V at %blk; scf.for ...
//
// A load whose address needs anything else below `wait` (a shared-memory
// read, a loop's result) stays; the memrefs are not written in the launch,
// so every value is the same.
//
//===----------------------------------------------------------------------===//

#ifndef FLEXATTN_PASSES_PREFETCHLOADS_H
#define FLEXATTN_PASSES_PREFETCHLOADS_H

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/PatternMatch.h"

namespace mlir::flexattn {

/// The unit attribute on a gpu.launch that asks flexattn-lower-to-ampere to
/// prefetch its KV loops' uniform loads (the pass drops it).
constexpr llvm::StringLiteral kPrefetchLoads = "flexattn.prefetch_loads";

/// Pipelines the uniform, induction-variable-dependent loads of `loop` (a
/// loop inside `launch`) that come after `wait` (an op of its body: the
/// step's first blocking wait), and those their addresses need, as
/// described above; returns how many loads (or scf.if of loads) are now
/// carried (0: the loop is unchanged).
int64_t prefetchUniformLoads(RewriterBase &rewriter, gpu::LaunchOp launch, scf::ForOp loop,
                             Operation *wait);

/// The unit attribute on a gpu.launch that asks flexattn-lower-to-ampere to
/// hoist the loads before its KV loops above its first wait (the pass drops
/// it).
constexpr llvm::StringLiteral kHoistLoads = "flexattn.hoist_loads";

/// Moves the loads of read-only memrefs (and scf.if of such loads) between
/// `wait` and `end` (ops of one block of `launch`, `wait` first), with the
/// pure ops their operands need, to just before `wait`, as described above;
/// returns how many ops moved.
int64_t hoistLoadsAbove(RewriterBase &rewriter, gpu::LaunchOp launch, Operation *wait,
                        Operation *end);

} // namespace mlir::flexattn

#endif // FLEXATTN_PASSES_PREFETCHLOADS_H
