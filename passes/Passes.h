//===- Passes.h - flexattn passes and transforms -----------------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// Each pass is a thin shell around a public transform declared here, so the
// driver, other passes and tests can reuse the transform on one op.
//
//===----------------------------------------------------------------------===//

#ifndef FLEXATTN_PASSES_PASSES_H
#define FLEXATTN_PASSES_PASSES_H

#include "dialect/FlexAttnOps.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/Pass/Pass.h"
#include "llvm/ADT/SetVector.h"

namespace mlir::flexattn {

/// log2(e) and ln(2): the online softmax works in log2 units (exp2).
constexpr double kLog2e = 1.4426950408889634;
constexpr double kLn2 = 0.6931471805599453;

/// The shared-memory tile layout (!flexattn.smem_tile): 64-column panels of
/// 16-bit elements, 128 bytes a row, swizzled over 128 bytes; what the
/// tensor maps of the host arguments describe.
constexpr int64_t kPanelCols = 64;
constexpr int64_t kSwizzleBytes = 128;
constexpr const char *kSwizzleName = "128B";
/// The host function argument attribute describing a TMA tensor map.
constexpr const char *kTensorMapAttrName = "flexattn.tensor_map";

#define GEN_PASS_DECL
#include "passes/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "passes/Passes.h.inc"

/// flexattn-tile: attention -> scf.parallel of (state init, kv_loop, finalize);
/// with `packHeads`, over (batch, K/V head, tile of the group's packed rows);
/// with `blockTiles`, a block mask's KV blocks are walked in tiles of
/// `tileKV` where it divides them.
LogicalResult tileAttention(RewriterBase &rewriter, AttentionOp op,
                            int64_t tileQ, int64_t tileKV,
                            bool packHeads = false, bool blockTiles = false);

/// flexattn-block-sparsity: kv_loop -> scf.for loops of tile_step.
LogicalResult lowerKvLoop(RewriterBase &rewriter, KvLoopOp op);

/// flexattn-split-kv: the tile loop of `func` -> one over (split, batch,
/// head, Q tile), partial results in new scratch arguments merged by the
/// last split of each tile.
/// `splits` > 0: S is static (the scratch's leading size; the GPU's grid);
/// `merge` false: no arrival counters and no merge (the caller merges).
LogicalResult splitKv(RewriterBase &rewriter, func::FuncOp func,
                      int64_t splits = 0, bool merge = true);

/// flexattn-split-full-tiles: tile_step -> scf.if (full) { on views cut at
/// the tile's end } else { as before }.
LogicalResult splitFullTileStep(RewriterBase &rewriter, TileStepOp op);
/// flexattn-split-full-tiles: the same for finalize.
LogicalResult splitFullFinalize(RewriterBase &rewriter, FinalizeOp op);

/// flexattn-fuse-online-softmax: tile_step -> linalg ops on a BM x BN tile.
LogicalResult decomposeTileStep(RewriterBase &rewriter, TileStepOp op);
/// flexattn-fuse-online-softmax: finalize -> normalisation and logsumexp.
LogicalResult decomposeFinalize(RewriterBase &rewriter, FinalizeOp op);

/// flexattn-vectorize-tiles: register blocks and vector widths.
struct VectorizeTilesOptions {
  int64_t rowBlock = 4;        // rows of a matmul register block
  int64_t colBlock = 64;       // columns of a matmul register block
  int64_t transposeBlock = 16; // square blocks of the K-tile transpose
  bool bf16Dot = false;        // bf16 products as AVX512-BF16 dot products
};
/// flexattn-vectorize-tiles: tiles, vectorises and lowers the static-shape
/// linalg ops of `func` to vector FMAs, loads, stores and shuffles.
LogicalResult vectorizeTiles(RewriterBase &rewriter, func::FuncOp func,
                             const VectorizeTilesOptions &options);

/// f32 math ops -> polynomial arithmetic (exp2 with exact zeros below -126;
/// upstream's approximations for the others), for vectors LLVM would
/// otherwise scalarise into libm calls (VectorMath.cpp).
void populateVectorMathApproximationPatterns(RewritePatternSet &patterns);

/// flexattn-distribute-tiles: the function's top-level scf.parallel -> a
/// loop claiming tiles (heaviest first) from a new counter argument.
LogicalResult distributeTiles(RewriterBase &rewriter, func::FuncOp func);

/// flexattn-inline-mods: apply_mods -> the cloned region bodies.
LogicalResult inlineMods(RewriterBase &rewriter, ApplyModsOp op);
/// flexattn-inline-mods: check_index -> the wrap, the bounds check and the
/// report store (as its bounds and report ask).
LogicalResult lowerCheckIndex(RewriterBase &rewriter, CheckIndexOp op);

/// flexattn-fold-tile-divisions: a floordivsi / divui of `tile start +
/// offset in the tile` by a multiple of the tile -> of the tile start.
LogicalResult foldTileDivision(RewriterBase &rewriter, Operation *division);

/// flexattn-map-to-grid: the scf.parallel over tiles -> a gpu.launch (of
/// the first `limit` tiles only where `limit` > 0).
LogicalResult mapToGrid(RewriterBase &rewriter, scf::ParallelOp par,
                        int64_t limit = 0);

/// The value of an index computation over constants (loop bounds
/// flexattn-tile made), folded on the spot; nullopt when not constant.
std::optional<int64_t> foldIndex(Value v);
/// A pure computation over constants (recomputed inside a kernel rather
/// than passed to it).
bool isRecomputable(Value v);
/// The values `body` (inside `root`) reads from outside `root`, for a kernel
/// made of it: recomputable ones are added to `recomputed`; anything but a
/// memref argument (which the launch passes) is an error naming `pass`.
LogicalResult collectKernelInputs(Operation *root, Block *body,
                                  llvm::SetVector<Value> &recomputed,
                                  StringRef pass);
/// Clones `values` (recomputable) and what they use at the insertion point.
void recomputeInside(RewriterBase &rewriter,
                     const llvm::SetVector<Value> &values, IRMapping &map);

/// flexattn-persistent-tiles: at most `ctas` CTAs looping over the tiles.
LogicalResult makeTilesPersistent(RewriterBase &rewriter, gpu::LaunchOp launch,
                                  int64_t ctas);

/// flexattn-warp-specialize: the CTA -> TMA producer + consumer groups
/// (`maxSharedMemory`: the CTA's shared memory, bytes; 0: unknown).
LogicalResult warpSpecialize(RewriterBase &rewriter, gpu::LaunchOp launch,
                             int64_t stages, int64_t maxSharedMemory = 0);

/// How flexattn-multistage shapes the CTA.
struct MultistageOptions {
  int64_t stages = 2;       // slots of the K and V rings
  int64_t warpRows = 16;    // Q rows per warp: 16 or 32 (one or two m16 tiles)
  bool qInRegisters = true; // Q read into registers once per tile, or read
                            // from its shared slot by every S = Q.Kᵀ
};

/// flexattn-multistage: the CTA -> groups that copy (cooperative rings,
/// `stages` deep) and compute (sm_80).
LogicalResult multistage(RewriterBase &rewriter, gpu::LaunchOp launch,
                         const MultistageOptions &options);

/// flexattn-schedule-consumers: where a pipelined step waits for the P.V
/// it issued: in the step, after the softmax (`Step`), there but held until
/// the first row's alpha is computed (`Alpha`), at the start of the next
/// step (`NextStep`), or `Auto`: the next step where the softmax has a
/// score_mod without math-dialect ops, else `Alpha` with two consumer
/// groups at D = 128, else `Step`.
enum class PvWait { Auto, Step, Alpha, NextStep };
FailureOr<PvWait> parsePvWait(StringRef name);

/// flexattn-schedule-consumers: pipelined / ping-pong consumer steps.
LogicalResult scheduleConsumers(RewriterBase &rewriter, WarpSpecializeOp roles,
                                bool pipeline, bool pingpong,
                                PvWait pvWait = PvWait::Auto);

/// flexattn-lower-fragments: one frag.softmax / rescale / finalize op ->
/// scalar code.
LogicalResult lowerFragmentOp(RewriterBase &rewriter, Operation *op);

/// flexattn-lower-to-hopper: rings, roles and MMAs -> NVVM (sm_90a).
LogicalResult lowerToHopper(RewriterBase &rewriter, gpu::LaunchOp launch,
                            int64_t maxSharedMemory);

/// flexattn-lower-to-ampere: cooperative rings and MMAs -> NVVM (sm_80);
/// f32 products are 3xTF32 ("ieee") or one tf32 mma ("tf32"); `wgmma`
/// (sm_90a) lowers the MMAs to warpgroup MMAs instead.
LogicalResult lowerToAmpere(RewriterBase &rewriter, gpu::LaunchOp launch,
                            int64_t maxSharedMemory, StringRef fp32Precision = "ieee",
                            bool wgmma = false);

//===----------------------------------------------------------------------===//
// The backward pass
//===----------------------------------------------------------------------===//

/// flexattn-differentiate-mods: fills op's score_mod_vjp from its score_mod.
LogicalResult differentiateMods(RewriterBase &rewriter, AttentionBackwardOp op);

/// Builds, in the empty region `vjp`, the reverse-mode derivative of
/// `scoreMod` (see flexattn.attention_backward for its signature),
/// differentiating the loads of the captures listed in `gradCaptures`.
/// Returns the capture of each differentiated load (vjp_loads), or failure,
/// diagnosed on `diagOp`, if an op on the gradient path has no derivative.
FailureOr<SmallVector<int64_t>> buildScoreModVjp(OpBuilder &builder,
                                                 Operation *diagOp,
                                                 Region &scoreMod, Region &vjp,
                                                 ArrayRef<int64_t> gradCaptures);

/// flexattn-tile: attention_backward -> delta, then a KV-outer loop nest of
/// backward_q_loop (dk, dv) and a Q-outer one of backward_kv_loop (dq,
/// capture grads).
LogicalResult tileAttentionBackward(RewriterBase &rewriter,
                                    AttentionBackwardOp op, int64_t tileQ,
                                    int64_t tileKV);

/// flexattn-block-sparsity: the backward loops -> scf.for loops of
/// backward_step.
LogicalResult lowerBackwardQLoop(RewriterBase &rewriter, BackwardQLoopOp op);
LogicalResult lowerBackwardKvLoop(RewriterBase &rewriter, BackwardKvLoopOp op);

/// flexattn-decompose-backward: backward_step -> linalg ops on BM x BN tiles.
LogicalResult decomposeBackwardStep(RewriterBase &rewriter, BackwardStepOp op);
/// flexattn-decompose-backward: store_tile -> one generic.
LogicalResult decomposeStoreTile(RewriterBase &rewriter, StoreTileOp op);

/// flexattn-inline-mods: apply_mods_vjp -> the cloned region bodies.
LogicalResult inlineModsVjp(RewriterBase &rewriter, ApplyModsVjpOp op);

/// The host function attribute listing (argument numbers) the buffers the
/// GPU backward accumulates into, which its launcher zeroes.
constexpr const char *kZeroInitAttrName = "flexattn.zero_init";

/// flexattn-map-backward-to-grid: the backward's tile loop nests in `func`
/// -> one gpu.launch (a CTA per tile, a thread per tile row).
LogicalResult mapBackwardToGrid(RewriterBase &rewriter, func::FuncOp func);

/// flexattn-lower-backward-rows: backward_step / store_tile in `launch` ->
/// per-thread row code.
LogicalResult lowerBackwardRows(RewriterBase &rewriter, gpu::LaunchOp launch);

/// flexattn-lower-backward-mma: backward_step / store_tile in `launch` ->
/// cooperative rings, flexattn.mma and per-element math on fragments.
LogicalResult lowerBackwardMma(RewriterBase &rewriter, gpu::LaunchOp launch,
                               bool overlap = false);

//===----------------------------------------------------------------------===//
// Helpers shared by the passes (ModRegions.cpp)
//===----------------------------------------------------------------------===//

/// Copies `from`'s score_mod region (and its mask_mod region when `withMask`)
/// into the empty regions of `to`.
void cloneModRegions(ModRegionsOpInterface from, ModRegionsOpInterface to,
                     bool withMask = true);

/// Clones the single block of a mod `region` at the builder's insertion
/// point, binding its arguments to `args` (the leading score, then b, h,
/// q_idx, kv_idx as `index` values cast to the region's index type, then the
/// captures), and returns the yielded value.
Value inlineModRegion(OpBuilder &builder, Location loc, Region &region,
                      std::optional<Value> score, ValueRange indices,
                      ValueRange captures);

/// The ops of type OpT under `root` that hold a flexattn.finalize: the tile
/// loops and CTAs the GPU passes rewrite.
template <typename OpT>
SmallVector<OpT> opsHoldingTiles(Operation *root) {
  SmallVector<OpT> ops;
  root->walk([&](OpT op) {
    if (op->walk([](FinalizeOp) { return WalkResult::interrupt(); })
            .wasInterrupted())
      ops.push_back(op);
  });
  return ops;
}

/// Copies one region into the empty region `to`.
void cloneRegion(Region &from, Region &to);

/// scf.for %i = lo to hi step 1 { body(%i) }.
void forRange(OpBuilder &builder, Location loc, Value lo, Value hi,
              function_ref<void(OpBuilder &, Value)> body);

/// The loop a tiled loop op lowers to: `body(start)` for every tile of
/// `tile` rows in [0, extent), start = t * tile.
void forEachTile(OpBuilder &builder, Location loc, Value extent, int64_t tile,
                 function_ref<void(OpBuilder &, Value start)> body);

/// The loop over a block list: `body(start)` for j in [0, min(num[b', h',
/// row], width)), start = indices[b', h', row, j] * blockSize, where b' and
/// h' are `batch` and `head` or 0 on the lists' broadcast dims.
void forEachListedBlock(OpBuilder &builder, Location loc, Value num,
                        Value indices, Value batch, Value head, Value row,
                        int64_t blockSize,
                        function_ref<void(OpBuilder &, Value start)> body);

/// One block list of a query-block row: `indices[batch', head', row, j]`
/// for j < count (count clamped to the list's width), with batch' and
/// head' 0 on the lists' broadcast dims.
struct BlockList {
  Value indices, batch, head, row, count;
};
BlockList blockList(OpBuilder &builder, Location loc, Value num, Value indices,
                    Value batch, Value head, Value row);
/// `body(start)` for j in [lo, hi) of `list` (lo null: 0), start =
/// indices[.., j] * blockSize.
void forEachListed(OpBuilder &builder, Location loc, const BlockList &list,
                   Value lo, Value hi, int64_t blockSize,
                   function_ref<void(OpBuilder &, Value start)> body);

/// inlineModRegion for a region that yields several values (score_mod_vjp,
/// whose trailing dy is passed as the last of `captures`).
SmallVector<Value> inlineModRegionValues(OpBuilder &builder, Location loc,
                                         Region &region,
                                         std::optional<Value> score,
                                         ValueRange indices,
                                         ValueRange captures);

/// An index constant.
Value indexConst(OpBuilder &builder, Location loc, int64_t v);

/// Applies `fn` to each gpu.launch under `root` (all collected first, so
/// `fn` may rewrite them); stops at the first failure.
LogicalResult forEachLaunch(Operation *root,
                            function_ref<LogicalResult(gpu::LaunchOp)> fn);

/// Erases `ops` (a sequence in which uses follow definitions), last first,
/// dropping uses that remain.
void eraseReversed(RewriterBase &rewriter, ArrayRef<Operation *> ops);

/// Dimension `d` of a memref as an index value (constant when static).
Value memrefDim(OpBuilder &builder, Location loc, Value memref, int64_t d);

} // namespace mlir::flexattn

#endif // FLEXATTN_PASSES_PASSES_H
