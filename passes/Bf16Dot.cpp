//===- Bf16Dot.cpp - bf16 tile products as AVX512-BF16 dots -----*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// vdpbf16ps adds to each f32 lane the two products of a pair of bf16
// elements, so a product C[i, j] += sum_k A[i, k] B[k, j] wants B with the
// pairs (k = 2 k2, 2 k2 + 1) of one column j adjacent ("VNNI layout",
// [K/2, N, 2]) and A's pair broadcast to every lane. The packing is done
// once per tile step, in registers, into stack buffers:
//
//   K tile [BN, D] (Q.Kᵀ reduces over D): each 16 keys x 32 columns block,
//     read as 16 x 16 32-bit pairs, is transposed (vector.transpose, 16 x 16
//     shuffles) into [D/2, BN, 2];
//   V tile [BN, Dv] (P.V reduces over the keys): rows 2 j2 and 2 j2 + 1 are
//     interleaved (vector.interleave) into [BN/2, Dv, 2];
//   Q tile [BM, D] and P [BM, BN] (f32, rounded to bf16 as GPU kernels do
//     before P.V): their pairs are already adjacent, copied to [BM, D/2, 2]
//     and [BM, BN/2, 2].
//
// The products themselves stay upstream: a linalg.contract over the packed
// operands, tiled and vectorised like every other tile op, unrolled to
// 16-lane accumulators and lowered by the x86vector packed-dot patterns.
//
//===----------------------------------------------------------------------===//

#include "passes/Bf16Dot.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Vector/Transforms/VectorRewritePatterns.h"
#include "mlir/Dialect/X86Vector/Transforms.h"

using namespace mlir;
using namespace mlir::flexattn;

namespace {

constexpr int64_t kPairCols = 2 * kDotLanes; // bf16 columns of 16 pairs

Value stackBuffer(OpBuilder &b, Location loc, ArrayRef<int64_t> shape, Type elem) {
  return memref::AllocaOp::create(b, loc, MemRefType::get(shape, elem));
}

/// The padding of in-bounds transfers (never read).
Value zero(OpBuilder &b, Location loc, Type elem) {
  return arith::ConstantOp::create(b, loc, b.getZeroAttr(elem));
}

/// The VNNI buffers are allocated 3-D ([rows, cols, 2]) and written through
/// 3-D transfers: no memref.expand_shape view of them exists (upstream's
/// fold of expand_shape into transfer_read mis-folds reads that span both
/// expanded dims).
Value pairsBuffer(OpBuilder &b, Location loc, int64_t rows, int64_t cols) {
  return stackBuffer(b, loc, {rows, cols, 2}, b.getBF16Type());
}

/// for (r = 0; r < rows; r += rowStep) for (c = 0; c < cols; c += colStep)
///   body(r, c)
void blockLoops(OpBuilder &b, Location loc, int64_t rows, int64_t cols,
                int64_t rowStep, int64_t colStep,
                function_ref<void(OpBuilder &, Location, Value, Value)> body) {
  scf::buildLoopNest(b, loc, {indexConst(b, loc, 0), indexConst(b, loc, 0)},
                     {indexConst(b, loc, rows), indexConst(b, loc, cols)},
                     {indexConst(b, loc, rowStep), indexConst(b, loc, colStep)},
                     [&](OpBuilder &nb, Location l, ValueRange ivs) {
                       body(nb, l, ivs[0], ivs[1]);
                     });
}

/// Writes a vector of `n` bf16 (n/2 pairs) at [row, col, 0] of a pairs
/// buffer.
void writePairs(OpBuilder &b, Location loc, Value pairs, Value buf, Value row,
                Value col) {
  auto type = cast<VectorType>(pairs.getType());
  int64_t n = type.getNumElements();
  Value shaped = vector::ShapeCastOp::create(
      b, loc, VectorType::get({n / 2, 2}, type.getElementType()), pairs);
  vector::TransferWriteOp::create(b, loc, shaped, buf,
                                  ValueRange{row, col, indexConst(b, loc, 0)},
                                  ArrayRef<bool>{true, true});
}

/// A [rows, cols] buffer (bf16, or f32 rounded to nearest-even bf16) ->
/// [rows, cols/2, 2], 32 columns at a time: the lhs of a dot product
/// (Q as is, P rounded as GPU kernels do before P.V).
Value packRowPairs(OpBuilder &b, Location loc, Value src) {
  auto type = cast<MemRefType>(src.getType());
  int64_t rows = type.getDimSize(0), cols = type.getDimSize(1);
  Type bf16 = b.getBF16Type();
  Value packed = pairsBuffer(b, loc, rows, cols / 2);
  auto chunk = VectorType::get({kPairCols}, type.getElementType());
  Value pad = zero(b, loc, type.getElementType());
  blockLoops(b, loc, rows, cols, 1, kPairCols,
      [&](OpBuilder &nb, Location l, Value r, Value c0) {
        Value v = vector::TransferReadOp::create(nb, l, chunk, src, ValueRange{r, c0}, pad,
                                                 ArrayRef<bool>{true});
        if (!type.getElementType().isBF16())
          v = arith::TruncFOp::create(nb, l, VectorType::get({kPairCols}, bf16), v);
        Value col = arith::DivUIOp::create(nb, l, c0, indexConst(nb, l, 2));
        writePairs(nb, l, v, packed, r, col);
      });
  return packed;
}

/// K [BN, D] -> [D/2, BN, 2]: per 16 keys x 32 columns, the 16 x 16 block of
/// 32-bit column pairs transposed in registers.
Value packKeyPairs(OpBuilder &b, Location loc, Value k) {
  auto type = cast<MemRefType>(k.getType());
  int64_t bn = type.getDimSize(0), d = type.getDimSize(1);
  Type bf16 = b.getBF16Type();
  Value packed = pairsBuffer(b, loc, d / 2, bn);
  auto block = VectorType::get({kDotLanes, kPairCols}, bf16);
  auto pairs = VectorType::get({kDotLanes, kDotLanes}, b.getF32Type());
  Value pad = zero(b, loc, bf16);
  blockLoops(b, loc, bn, d, kDotLanes, kPairCols,
      [&](OpBuilder &nb, Location l, Value j0, Value d0) {
        Value blk = vector::TransferReadOp::create(nb, l, block, k, ValueRange{j0, d0}, pad,
                                                   ArrayRef<bool>{true, true});
        Value t = vector::TransposeOp::create(
            nb, l, vector::BitCastOp::create(nb, l, pairs, blk), ArrayRef<int64_t>{1, 0});
        // Row r of the transposed block: pair d0/2 + r of keys j0..j0+15,
        // written row by row (each row one contiguous run of 16 pairs).
        Value rows = vector::BitCastOp::create(nb, l, block, t);
        Value row0 = arith::DivUIOp::create(nb, l, d0, indexConst(nb, l, 2));
        for (int64_t r = 0; r < kDotLanes; ++r) {
          Value row = arith::AddIOp::create(nb, l, row0, indexConst(nb, l, r));
          writePairs(nb, l, vector::ExtractOp::create(nb, l, rows, r), packed, row, j0);
        }
      });
  return packed;
}

/// V [BN, Dv] -> [BN/2, Dv, 2]: rows 2 j2 and 2 j2 + 1 interleaved, 32
/// columns at a time.
Value packValuePairs(OpBuilder &b, Location loc, Value v) {
  auto type = cast<MemRefType>(v.getType());
  int64_t bn = type.getDimSize(0), dv = type.getDimSize(1);
  Type bf16 = b.getBF16Type();
  Value packed = pairsBuffer(b, loc, bn / 2, dv);
  auto row = VectorType::get({kPairCols}, bf16);
  Value pad = zero(b, loc, bf16);
  blockLoops(b, loc, bn / 2, dv, 1, kPairCols,
      [&](OpBuilder &nb, Location l, Value j2, Value c0) {
        Value even = arith::MulIOp::create(nb, l, j2, indexConst(nb, l, 2));
        Value odd = arith::AddIOp::create(nb, l, even, indexConst(nb, l, 1));
        auto read = [&](Value r) -> Value {
          return vector::TransferReadOp::create(nb, l, row, v, ValueRange{r, c0}, pad,
                                                ArrayRef<bool>{true});
        };
        writePairs(nb, l, vector::InterleaveOp::create(nb, l, read(even), read(odd)),
                   packed, j2, c0);
      });
  return packed;
}

/// extract_strided_slice(shape_cast(x : 1-D)) of a run that is contiguous in
/// x (the slice takes whole trailing dims) -> shape_cast(1-D slice of x):
/// the unrolled dots then read 16 pairs of a packed row as one subvector
/// (one load) instead of LLVM reassembling them pair by pair.
struct ContiguousSliceOfFlatVector
    : OpRewritePattern<vector::ExtractStridedSliceOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(vector::ExtractStridedSliceOp op,
                                PatternRewriter &rewriter) const override {
    auto flatSource = op.getSource().getDefiningOp<vector::ShapeCastOp>();
    if (!flatSource || flatSource.getSourceVectorType().getRank() != 1 ||
        op.hasNonUnitStrides())
      return failure();
    VectorType full = op.getSourceVectorType(), part = op.getType();
    int64_t rank = full.getRank();
    SmallVector<int64_t> offsets;
    for (Attribute a : op.getOffsets())
      offsets.push_back(llvm::cast<IntegerAttr>(a).getInt());
    offsets.resize(rank, 0);
    // Contiguous: after the first dim sliced to more than one element,
    // every dim is taken whole; before it, one element each.
    bool whole = true;
    for (int64_t d = rank - 1; d >= 0; --d) {
      if (!whole && part.getDimSize(d) != 1)
        return failure();
      if (part.getDimSize(d) != full.getDimSize(d))
        whole = false;
    }
    int64_t start = 0;
    for (int64_t d = 0; d < rank; ++d)
      start = start * full.getDimSize(d) + offsets[d];
    Value flat = vector::ExtractStridedSliceOp::create(
        rewriter, op.getLoc(), flatSource.getSource(), ArrayRef<int64_t>{start},
        ArrayRef<int64_t>{part.getNumElements()}, ArrayRef<int64_t>{1});
    rewriter.replaceOpWithNewOp<vector::ShapeCastOp>(op, part, flat);
    return success();
  }
};

bool hasType(Value v, Type elem) {
  auto type = dyn_cast<MemRefType>(v.getType());
  return type && type.hasStaticShape() && type.getElementType() == elem;
}

} // namespace

linalg::LinalgOp mlir::flexattn::toBf16DotContraction(RewriterBase &rewriter,
                                                      linalg::GenericOp op,
                                                      bool transposedRhs) {
  Type bf16 = rewriter.getBF16Type(), f32 = rewriter.getF32Type();
  Value lhs = op.getDpsInputs()[0], rhs = op.getDpsInputs()[1];
  Value acc = op.getDpsInits()[0];
  if (!hasType(rhs, bf16) || !hasType(acc, f32) ||
      !(hasType(lhs, bf16) || hasType(lhs, f32)))
    return nullptr;
  ArrayRef<int64_t> lhsShape = cast<MemRefType>(lhs.getType()).getShape();
  ArrayRef<int64_t> rhsShape = cast<MemRefType>(rhs.getType()).getShape();
  // Rows of the lhs in 32-column chunks; Q.Kᵀ: K [BN, D] in 16-key,
  // 32-column blocks; P.V: V [BN, Dv] in pairs of rows, 32 columns at a time.
  bool fits = lhsShape[1] % kPairCols == 0 &&
              (transposedRhs ? rhsShape[0] % kDotLanes == 0 && rhsShape[1] % kPairCols == 0
                             : rhsShape[0] % 2 == 0 && rhsShape[1] % kPairCols == 0);
  if (!fits || (transposedRhs && !hasType(lhs, bf16)))
    return nullptr;

  Location loc = op.getLoc();
  OpBuilder::InsertionGuard guard(rewriter);
  rewriter.setInsertionPoint(op);
  Value packedLhs = packRowPairs(rewriter, loc, lhs);
  Value packedRhs = transposedRhs ? packKeyPairs(rewriter, loc, rhs)
                                  : packValuePairs(rewriter, loc, rhs);

  // C[i, j] += sum_{k2, p} A[i, k2, p] * B[k2, j, p]
  MLIRContext *ctx = rewriter.getContext();
  auto map = [&](ArrayRef<unsigned> ds) {
    SmallVector<AffineExpr> exprs;
    for (unsigned d : ds)
      exprs.push_back(getAffineDimExpr(d, ctx));
    return AffineMapAttr::get(AffineMap::get(4, 0, exprs, ctx));
  };
  auto maps = rewriter.getArrayAttr({map({0, 2, 3}), map({2, 1, 3}), map({0, 1})});
  auto contract = linalg::ContractOp::create(rewriter, loc, ValueRange{packedLhs, packedRhs},
                                             ValueRange{acc}, maps);
  rewriter.eraseOp(op);
  return contract;
}

void mlir::flexattn::populateBf16DotLoweringPatterns(RewritePatternSet &patterns) {
  // A packed row [.., 16 k, 2] is one contiguous run: read it as one 1-D
  // vector (only transfers whose trailing dim is a pair, 32 bits, are
  // flattened: the limit is exclusive).
  vector::populateFlattenVectorTransferPatterns(patterns, /*targetVectorBitwidth=*/64);
  // One 16-lane accumulator row per contraction: [1, 16, 1, 2].
  vector::populateVectorUnrollPatterns(
      patterns,
      vector::UnrollVectorOptions()
          .setNativeShapeFn([](Operation *op) -> std::optional<SmallVector<int64_t>> {
            auto contract = dyn_cast<vector::ContractionOp>(op);
            if (!contract || !contract.getLhsType().getElementType().isBF16() ||
                contract.getIteratorTypes().size() != 4)
              return std::nullopt;
            return SmallVector<int64_t>{1, kDotLanes, 1, 2};
          })
          .setFilterConstraint([](Operation *op) {
            return success(isa<vector::ContractionOp>(op));
          }));
  patterns.add<ContiguousSliceOfFlatVector>(patterns.getContext());
  x86vector::populateVectorContractToPackedTypeDotProductPatterns(patterns);
}
