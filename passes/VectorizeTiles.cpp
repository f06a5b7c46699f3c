//===- VectorizeTiles.cpp - flexattn-vectorize-tiles ------------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// Vectorises the static-shape tile math of the CPU pipeline with upstream
// machinery: each linalg op is tiled (scf::tileUsingSCF) to a register
// block, vectorised (linalg::vectorize), its accumulators are hoisted out of
// the reduction loops (linalg::hoistRedundantVectorTransfers), and the vector
// ops are lowered to FMAs, loads, stores and shuffles by upstream patterns.
//
// Q.Kᵀ reduces over the contiguous dim of both operands; its K tile is first
// transposed into a [D, BN] scratch buffer so both products become
// row-major outer-product sequences (one broadcast lhs element times one
// contiguous rhs row, accumulated in registers).
//
//===----------------------------------------------------------------------===//

#include "passes/Bf16Dot.h"
#include "passes/IndexReports.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Affine/IR/AffineOps.h"
#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Dialect/MemRef/Utils/MemRefUtils.h"
#include "mlir/Dialect/Linalg/Transforms/Transforms.h"
#include "mlir/Dialect/MemRef/Transforms/Transforms.h"
#include "mlir/Dialect/SCF/Transforms/TileUsingInterface.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/Dialect/Vector/Transforms/LoweringPatterns.h"
#include "mlir/Dialect/Vector/Transforms/VectorRewritePatterns.h"
#include "mlir/Dialect/Vector/Transforms/VectorTransforms.h"
#include "mlir/Dialect/X86Vector/X86VectorDialect.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"
#include "mlir/Transforms/LoopInvariantCodeMotionUtils.h"

#include <numeric>

namespace mlir::flexattn {
#define GEN_PASS_DEF_FLEXATTNVECTORIZETILES
#include "passes/Passes.h.inc"
} // namespace mlir::flexattn

using namespace mlir;
using namespace mlir::flexattn;

namespace {

bool hasStaticShapes(linalg::LinalgOp op) {
  return llvm::all_of(op->getOperands(), [](Value v) {
    auto t = dyn_cast<MemRefType>(v.getType());
    return !t || t.hasStaticShape();
  });
}

AffineMap dims(MLIRContext *ctx, unsigned n, ArrayRef<unsigned> ds) {
  SmallVector<AffineExpr> exprs;
  for (unsigned d : ds)
    exprs.push_back(getAffineDimExpr(d, ctx));
  return AffineMap::get(n, 0, exprs, ctx);
}

/// A contraction (i, j, k) with maps (i, k), rhs, (i, j): `rhs` = (j, k)
/// reads the rhs along its contiguous dim (Q.Kᵀ), (k, j) is a row-major
/// matmul (P.V).
bool isContractionWithRhs(linalg::LinalgOp op, ArrayRef<unsigned> rhs) {
  if (!linalg::isaContractionOpInterface(op) || op.getNumLoops() != 3 ||
      op.getNumDpsInputs() != 2)
    return false;
  MLIRContext *ctx = op->getContext();
  auto maps = op.getIndexingMapsArray();
  return maps[0] == dims(ctx, 3, {0, 2}) && maps[1] == dims(ctx, 3, rhs) &&
         maps[2] == dims(ctx, 3, {0, 1});
}

/// Q.Kᵀ or P.V as a `linalg.matmul` on row-major operands, so it vectorises
/// to `vector.contract`; a transposed rhs (the K tile) is first copied,
/// transposed, into a stack buffer by `linalg.transpose`. Null when `op` is
/// neither form.
linalg::LinalgOp toRowMajorMatmul(RewriterBase &rewriter, linalg::GenericOp op) {
  bool transposed = isContractionWithRhs(op, {1, 2});
  if (!transposed && !isContractionWithRhs(op, {2, 1}))
    return nullptr;
  Location loc = op.getLoc();
  OpBuilder::InsertionGuard guard(rewriter);
  rewriter.setInsertionPoint(op);
  Value rhs = op.getDpsInputs()[1];
  if (transposed) {
    auto type = cast<MemRefType>(rhs.getType());
    auto tType = MemRefType::get({type.getDimSize(1), type.getDimSize(0)},
                                 type.getElementType());
    Value rhsT = memref::AllocaOp::create(rewriter, loc, tType);
    linalg::TransposeOp::create(rewriter, loc, rhs, rhsT,
                                ArrayRef<int64_t>{1, 0});
    rhs = rhsT;
  }
  auto matmul = linalg::MatmulOp::create(
      rewriter, loc, ValueRange{op.getDpsInputs()[0], rhs}, op.getDpsInits());
  rewriter.eraseOp(op);
  return matmul;
}

/// The register block of each loop of `op`; 0 leaves a loop untiled.
SmallVector<int64_t> registerBlock(linalg::LinalgOp op,
                                   const VectorizeTilesOptions &options) {
  SmallVector<int64_t> ranges = op.getStaticLoopRanges();
  // The largest block <= want that divides the extent.
  auto fits = [&](int64_t want, int64_t extent) {
    return extent <= want ? extent : std::gcd(want, extent);
  };
  if (isa<linalg::ContractOp>(op))
    // The same over VNNI-packed bf16 pairs: [mr, nr, 1 pair, 2].
    return {fits(options.rowBlock, ranges[0]),
            fits(options.colBlock, ranges[1]), 1, 2};
  if (isa<linalg::MatmulOp>(op))
    // [mr rows] x [nr columns], one reduction step at a time: mr x nr
    // accumulators stay in registers across the reduction loop.
    return {fits(options.rowBlock, ranges[0]),
            fits(options.colBlock, ranges[1]), 1};
  if (isa<linalg::TransposeOp>(op))
    return llvm::map_to_vector(ranges, [&](int64_t extent) {
      return fits(options.transposeBlock, extent);
    });
  // Elementwise and row reductions: one row at a time.
  SmallVector<int64_t> sizes(ranges.size(), 0);
  for (size_t i = 0; i + 1 < ranges.size(); ++i)
    sizes[i] = 1;
  return sizes;
}

/// The mods' reads of captured buffers (memref.load of a buffer defined
/// outside the op) become tensor.extract of a `bufferization.to_tensor` of
/// the buffer, which linalg::vectorize widens along the row: a broadcast
/// scalar when the index does not change along it, a contiguous load, or a
/// gather. Returns the to_tensor ops (empty if the body had no such load).
SmallVector<bufferization::ToTensorOp> loadsToExtracts(RewriterBase &rewriter,
                                                       linalg::GenericOp op) {
  SmallVector<bufferization::ToTensorOp> views;
  DenseMap<Value, bufferization::ToTensorOp> viewOf;
  SmallVector<memref::LoadOp> loads;
  op.getBody()->walk([&](memref::LoadOp load) {
    if (!op->isAncestor(load.getMemRef().getParentBlock()->getParentOp()))
      loads.push_back(load);
  });
  for (memref::LoadOp load : loads) {
    Value buffer = load.getMemRef();
    auto &view = viewOf[buffer];
    if (!view) {
      OpBuilder::InsertionGuard guard(rewriter);
      rewriter.setInsertionPoint(op);
      auto type = cast<MemRefType>(buffer.getType());
      view = bufferization::ToTensorOp::create(
          rewriter, load.getLoc(),
          RankedTensorType::get(type.getShape(), type.getElementType()), buffer,
          /*restrict=*/true, /*writable=*/false);
      views.push_back(view);
    }
    rewriter.setInsertionPoint(load);
    rewriter.replaceOpWithNewOp<tensor::ExtractOp>(load, view, load.getIndices());
  }
  return views;
}

/// Undoes loadsToExtracts after vectorisation: the widened reads (and any
/// scalar extract left) read the buffer itself again.
void extractsToLoads(RewriterBase &rewriter,
                     ArrayRef<bufferization::ToTensorOp> views) {
  for (bufferization::ToTensorOp view : views) {
    Value buffer = view.getBuffer();
    for (Operation *user : llvm::make_early_inc_range(view->getUsers())) {
      rewriter.setInsertionPoint(user);
      if (auto extract = dyn_cast<tensor::ExtractOp>(user))
        rewriter.replaceOpWithNewOp<memref::LoadOp>(extract, buffer,
                                                    extract.getIndices());
      else if (auto dim = dyn_cast<tensor::DimOp>(user))
        rewriter.replaceOpWithNewOp<memref::DimOp>(dim, buffer, dim.getIndex());
      else // vector.transfer_read / vector.gather: the base is operand 0
        rewriter.modifyOpInPlace(user, [&] { user->setOperand(0, buffer); });
    }
    rewriter.eraseOp(view);
  }
}

/// Tiles `op` to its register block and vectorises the tile.
LogicalResult tileAndVectorize(RewriterBase &rewriter, linalg::LinalgOp op,
                               const VectorizeTilesOptions &options) {
  SmallVector<int64_t> block = registerBlock(op, options);
  Operation *tile = op;
  if (llvm::any_of(block, [](int64_t s) { return s != 0; })) {
    scf::SCFTilingOptions tiling;
    tiling.setTileSizes(getAsIndexOpFoldResult(rewriter.getContext(), block));
    rewriter.setInsertionPoint(op);
    FailureOr<scf::SCFTilingResult> tiled =
        scf::tileUsingSCF(rewriter, cast<TilingInterface>(*op), tiling);
    if (failed(tiled))
      return failure();
    rewriter.eraseOp(op);
    tile = tiled->tiledOps.back();
  }
  rewriter.setInsertionPoint(tile);
  bool contraction =
      linalg::isaContractionOpInterface(cast<linalg::LinalgOp>(tile));
  FailureOr<linalg::VectorizationResult> vectorized = linalg::vectorize(
      rewriter, tile, /*inputVectorSizes=*/{}, /*inputScalableVecDims=*/{},
      /*vectorizeNDExtract=*/true, /*flatten1DDepthwiseConv=*/false,
      /*assumeDynamicDimsMatchVecSizes=*/false,
      /*createNamedContraction=*/contraction);
  if (failed(vectorized))
    return failure();
  rewriter.eraseOp(tile);
  return success();
}

/// The buffer `v` is a view of (through memref view ops).
Value rootBuffer(Value v) {
  if (auto memref = dyn_cast<TypedValue<MemRefType>>(v))
    return memref::skipViewLikeOps(memref);
  return v;
}

/// Keeps a contraction's accumulator in registers across its reduction loop:
/// a transfer_read / transfer_write pair of one stack buffer at
/// loop-invariant indices becomes an iter_arg (read before the loop, written
/// after). Unlike linalg::hoistRedundantVectorTransfers this accepts a
/// buffer that has views elsewhere (the tile state, windowed by the edge-tile
/// branch): only the accesses inside the loop matter, and the pair must be
/// the loop's only accesses to the buffer.
bool hoistAccumulator(RewriterBase &rewriter, scf::ForOp loop) {
  for (auto read : loop.getBody()->getOps<vector::TransferReadOp>()) {
    Value root = rootBuffer(read.getBase());
    if (!root.getDefiningOp<memref::AllocaOp>() ||
        !llvm::all_of(read->getOperands(),
                      [&](Value v) { return loop.isDefinedOutsideOfLoop(v); }))
      continue;
    vector::TransferWriteOp write;
    bool other = false;
    loop.getBody()->walk([&](Operation *op) {
      if (op == read || !llvm::any_of(op->getOperands(), [&](Value v) {
            return isa<MemRefType>(v.getType()) && rootBuffer(v) == root;
          }))
        return;
      auto w = dyn_cast<vector::TransferWriteOp>(op);
      if (!write && w && w->getBlock() == loop.getBody() &&
          w.getBase() == read.getBase() && w.getIndices() == read.getIndices() &&
          w.getVectorType() == read.getVectorType() &&
          w.getPermutationMap() == read.getPermutationMap())
        write = w;
      else
        other = true;
    });
    if (!write || other || !read->isBeforeInBlock(write))
      continue;
    rewriter.moveOpBefore(read, loop);
    rewriter.moveOpAfter(write, loop);
    NewYieldValuesFn yield = [&](OpBuilder &, Location,
                                 ArrayRef<BlockArgument>) {
      return SmallVector<Value>{write.getVector()};
    };
    FailureOr<LoopLikeOpInterface> newLoop =
        cast<LoopLikeOpInterface>(*loop).replaceWithAdditionalYields(
            rewriter, read.getVector(), /*replaceInitOperandUsesInLoop=*/true,
            yield);
    if (failed(newLoop))
      return false;
    write.getValueToStoreMutable().assign(newLoop->getOperation()->getResults().back());
    return true;
  }
  return false;
}

/// A row's sum or max as a tree of vector ops, not a chain of scalar ones:
/// the sum may reassociate (`reassoc`), and the max is a plain vmaxps tree
/// (maxnumf with `nnan`: no NaN bookkeeping). A NaN score still makes its
/// row NaN: exp2(NaN - max) is NaN, and so is the row's sum.
void relaxRowReduction(RewriterBase &rewriter, vector::ReductionOp op) {
  rewriter.modifyOpInPlace(op, [&] {
    if (op.getKind() == vector::CombiningKind::ADD) {
      op.setFastmath(arith::FastMathFlags::reassoc);
    } else if (op.getKind() == vector::CombiningKind::MAXIMUMF) {
      op.setKind(vector::CombiningKind::MAXNUMF);
      op.setFastmath(arith::FastMathFlags::nnan);
    }
  });
}

/// A transfer_read that broadcasts one element (every result of its map a
/// constant 0: a mod's read that does not change along the row) -> the
/// scalar load and a vector.broadcast, so the arithmetic on it sinks below
/// the broadcast and runs once per row instead of once per lane.
struct ScalarBroadcastRead : OpRewritePattern<vector::TransferReadOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(vector::TransferReadOp read,
                                PatternRewriter &rewriter) const override {
    AffineMap map = read.getPermutationMap();
    if (!isa<MemRefType>(read.getBase().getType()) || read.getMask() ||
        map.getNumResults() == 0 ||
        !llvm::all_of(map.getResults(), [](AffineExpr e) {
          auto c = dyn_cast<AffineConstantExpr>(e);
          return c && c.getValue() == 0;
        }))
      return failure();
    // In bounds: the element at the indices is read (a broadcast dim is
    // never out of bounds).
    Value scalar = memref::LoadOp::create(rewriter, read.getLoc(), read.getBase(),
                                          read.getIndices());
    rewriter.replaceOpWithNewOp<vector::BroadcastOp>(read, read.getVectorType(), scalar);
    return success();
  }
};

/// Drops unit dims, hoists each
/// contraction's accumulator out of its reduction loop, then lowers the
/// contractions to broadcast-FMAs (outer products) and math to polynomials.
/// Transfers, transposes and reductions are left to convert-vector-to-scf /
/// convert-vector-to-llvm.
LogicalResult lowerVectors(Operation *root) {
  MLIRContext *ctx = root->getContext();
  {
    RewritePatternSet patterns(ctx);
    vector::populateVectorTransferDropUnitDimsPatterns(patterns);
    vector::populateCastAwayVectorLeadingOneDimPatterns(patterns);
    vector::populateVectorToVectorCanonicalizationPatterns(patterns);
    patterns.add<ScalarBroadcastRead>(ctx);
    vector::populateSinkVectorOpsPatterns(patterns);
    if (failed(applyPatternsGreedily(root, std::move(patterns))))
      return root->emitError("flexattn-vectorize-tiles: the transfer clean-up did not converge");
  }
  IRRewriter rewriter(ctx);
  for (bool changed = true; changed;) {
    SmallVector<scf::ForOp> loops;
    root->walk([&](scf::ForOp loop) { loops.push_back(loop); });
    // The accumulator views the tiling made inside the reduction loops.
    for (scf::ForOp loop : loops)
      moveLoopInvariantCode(cast<LoopLikeOpInterface>(*loop));
    changed = llvm::any_of(
        loops, [&](scf::ForOp loop) { return hoistAccumulator(rewriter, loop); });
  }
  {
    RewritePatternSet patterns(ctx);
    populateBf16DotLoweringPatterns(patterns);
    if (failed(applyPatternsGreedily(root, std::move(patterns))))
      return root->emitError("flexattn-vectorize-tiles: the bf16 dot lowering did not converge");
  }
  RewritePatternSet patterns(ctx);
  vector::populateVectorContractLoweringPatterns(
      patterns, vector::VectorContractLowering::OuterProduct);
  vector::populateVectorOuterProductLoweringPatterns(patterns);
  vector::populateVectorMultiReductionLoweringPatterns(
      patterns, vector::VectorMultiReductionLowering::InnerReduction);
  vector::populateVectorToVectorCanonicalizationPatterns(patterns);
  populateVectorMathApproximationPatterns(patterns);
  if (failed(applyPatternsGreedily(root, std::move(patterns))))
    return root->emitError("flexattn-vectorize-tiles: the vector lowering did not converge");
  // Tile views folded into the transfers' indices (strided row reads become
  // permuted reads of the buffer, unrolled to scalar loads later). As
  // upstream's fold-memref-alias-ops pass, the greedy driver's iteration
  // limit is not an error: every rewrite only removes a view.
  RewritePatternSet folds(ctx);
  memref::populateFoldMemRefAliasOpPatterns(folds);
  (void)applyPatternsGreedily(root, std::move(folds));
  root->walk([&](vector::ReductionOp op) { relaxRowReduction(rewriter, op); });
  return success();
}

} // namespace

LogicalResult mlir::flexattn::vectorizeTiles(RewriterBase &rewriter,
                                             func::FuncOp func,
                                             const VectorizeTilesOptions &options) {
  SmallVector<linalg::LinalgOp> ops;
  func.walk([&](linalg::LinalgOp op) {
    if (hasStaticShapes(op))
      ops.push_back(op);
  });
  for (linalg::LinalgOp op : ops) {
    if (auto generic = dyn_cast<linalg::GenericOp>(*op);
        generic && options.bf16Dot) {
      bool transposed = isContractionWithRhs(generic, {1, 2});
      if ((transposed || isContractionWithRhs(generic, {2, 1})))
        if (linalg::LinalgOp contract =
                toBf16DotContraction(rewriter, generic, transposed))
          op = contract;
    }
    if (auto generic = dyn_cast<linalg::GenericOp>(*op)) {
      if (linalg::LinalgOp matmul = toRowMajorMatmul(rewriter, generic)) {
        if (auto transpose = dyn_cast_or_null<linalg::TransposeOp>(
                matmul->getPrevNode());
            transpose && failed(tileAndVectorize(rewriter, transpose, options)))
          return transpose.emitOpError("failed to vectorise");
        op = matmul;
      }
    }
    SmallVector<bufferization::ToTensorOp> views;
    if (auto generic = dyn_cast<linalg::GenericOp>(*op)) {
      // A report the rewrite does not take leaves the op scalar.
      if (FailureOr<linalg::GenericOp> reduced =
              reportsToRowReductions(rewriter, generic);
          succeeded(reduced))
        generic = *reduced, op = cast<linalg::LinalgOp>(generic.getOperation());
      views = loadsToExtracts(rewriter, generic);
    }
    // A body the vectoriser cannot widen stays a linalg op (lowered to
    // scalar loops by flexattn-lower-to-loops).
    if (succeeded(linalg::vectorizeOpPrecondition(op, {}, {},
                                                  /*vectorizeNDExtract=*/true)) &&
        failed(tileAndVectorize(rewriter, op, options)))
      return op->emitOpError("failed to vectorise");
    extractsToLoads(rewriter, views);
  }
  return lowerVectors(func);
}

namespace {
struct FlexAttnVectorizeTilesPass
    : public flexattn::impl::FlexAttnVectorizeTilesBase<
          FlexAttnVectorizeTilesPass> {
  using FlexAttnVectorizeTilesBase::FlexAttnVectorizeTilesBase;

  void runOnOperation() override {
    VectorizeTilesOptions options;
    options.rowBlock = rowBlock;
    options.colBlock = colBlock;
    options.bf16Dot = bf16Dot;
    IRRewriter rewriter(&getContext());
    WalkResult r = getOperation()->walk([&](func::FuncOp func) {
      return failed(vectorizeTiles(rewriter, func, options))
                 ? WalkResult::interrupt()
                 : WalkResult::advance();
    });
    if (r.wasInterrupted())
      signalPassFailure();
  }
};
} // namespace
