//===- IndexReports.cpp - index-check reports as row reductions -*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// A read of a captured tensor that the index analysis cannot bound (a T5
// bucket computed through a log, an index loaded from another tensor) is
// checked per element; flexattn-inline-mods writes the report under a
// branch in the mod's body. linalg::vectorize takes no branch, so such a mod
// would stay a scalar loop. A report only needs to know whether some
// element was bad and one bad index: a reduction along the row, which the
// vectoriser widens like the softmax's row max.
//
//===----------------------------------------------------------------------===//

#include "passes/IndexReports.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/Matchers.h"

using namespace mlir;

namespace {

/// One report of a generic's body: the branch and the per-element values
/// its stores write (the others are constants or defined outside).
struct Report {
  scf::IfOp branch;
  SmallVector<Value> witnesses;
};

bool definedOutside(Value v, linalg::GenericOp op) {
  return !op.getRegion().isAncestor(v.getParentRegion());
}

/// `branch` as a report of `op`, or nothing when it is not one.
std::optional<Report> matchReport(scf::IfOp branch, linalg::GenericOp op) {
  if (branch->getNumResults() || !branch.getElseRegion().empty())
    return std::nullopt;
  Report report{branch, {}};
  for (Operation &inner : branch.thenBlock()->without_terminator()) {
    auto store = dyn_cast<memref::StoreOp>(inner);
    if (!store || !definedOutside(store.getMemRef(), op) ||
        !llvm::all_of(store.getIndices(),
                      [&](Value v) { return definedOutside(v, op); }))
      return std::nullopt;
    Value value = store.getValueToStore();
    if (definedOutside(value, op) || matchPattern(value, m_Constant()))
      continue;
    if (!isa<IntegerType>(value.getType()) ||
        value.getParentRegion() != &op.getRegion())
      return std::nullopt;
    if (!llvm::is_contained(report.witnesses, value))
      report.witnesses.push_back(value);
  }
  return report;
}

/// A stack buffer of `shape` filled with `init`.
Value filledBuffer(RewriterBase &rewriter, Location loc, ArrayRef<int64_t> shape,
                   TypedAttr init) {
  Value buffer = memref::AllocaOp::create(
      rewriter, loc, MemRefType::get(shape, init.getType()));
  Value splat = arith::ConstantOp::create(
      rewriter, loc,
      DenseElementsAttr::get(VectorType::get(shape, init.getType()), init));
  SmallVector<Value> zeros(shape.size(),
                           arith::ConstantIndexOp::create(rewriter, loc, 0));
  vector::TransferWriteOp::create(rewriter, loc, splat, buffer, zeros,
                                  SmallVector<bool>(shape.size(), true));
  return buffer;
}

/// All of `buffer` combined by `kind` into one scalar.
Value reduceBuffer(RewriterBase &rewriter, Location loc, Value buffer,
                   vector::CombiningKind kind) {
  auto type = cast<MemRefType>(buffer.getType());
  Type elem = type.getElementType();
  SmallVector<Value> zeros(type.getRank(),
                           arith::ConstantIndexOp::create(rewriter, loc, 0));
  Value pad = arith::ConstantOp::create(rewriter, loc, rewriter.getZeroAttr(elem));
  Value rows = vector::TransferReadOp::create(
      rewriter, loc, VectorType::get(type.getShape(), elem), buffer, zeros, pad,
      SmallVector<bool>(type.getRank(), true));
  if (type.getRank() != 1)
    rows = vector::ShapeCastOp::create(
        rewriter, loc, VectorType::get({type.getNumElements()}, elem), rows);
  return vector::ReductionOp::create(rewriter, loc, kind, rows);
}

/// What the reductions of `witness` run on: a sign extension's narrower
/// source (the max commutes with it; an i32 index takes half the registers).
Value reduced(Value witness) {
  if (auto ext = witness.getDefiningOp<arith::ExtSIOp>())
    return ext.getIn();
  return witness;
}

IntegerAttr signedMin(RewriterBase &rewriter, Type type) {
  return rewriter.getIntegerAttr(
      type, APInt::getSignedMinValue(type.getIntOrFloatBitWidth()));
}

} // namespace

FailureOr<linalg::GenericOp>
mlir::flexattn::reportsToRowReductions(RewriterBase &rewriter,
                                       linalg::GenericOp op) {
  SmallVector<Report> reports;
  for (auto branch : op.getBody()->getOps<scf::IfOp>()) {
    std::optional<Report> report = matchReport(branch, op);
    if (!report)
      return failure();
    reports.push_back(std::move(*report));
  }
  if (reports.empty())
    return op;
  unsigned loops = op.getNumLoops();
  SmallVector<int64_t> ranges = op.getStaticLoopRanges();
  if (loops < 2 || !op.hasPureBufferSemantics() || op.getNumReductionLoops() ||
      llvm::any_of(ranges, ShapedType::isDynamic))
    return failure();

  MLIRContext *ctx = op.getContext();
  Location loc = op.getLoc();
  OpBuilder::InsertionGuard guard(rewriter);
  rewriter.setInsertionPoint(op);
  ArrayRef<int64_t> rowShape = ArrayRef(ranges).drop_back();
  AffineMap rowMap =
      AffineMap::getMultiDimIdentityMap(loops, ctx).dropResult(loops - 1);
  Type i8 = rewriter.getI8Type();

  // Per report: whether a row had a bad element, then per witness its
  // largest value among them.
  SmallVector<Value> outputs(op.getDpsInits());
  SmallVector<AffineMap> maps = op.getIndexingMapsArray();
  SmallVector<SmallVector<Value>> buffers;
  for (const Report &report : reports) {
    SmallVector<Value> &own = buffers.emplace_back();
    own.push_back(filledBuffer(rewriter, loc, rowShape, rewriter.getIntegerAttr(i8, 0)));
    for (Value witness : report.witnesses)
      own.push_back(filledBuffer(rewriter, loc, rowShape,
                                 signedMin(rewriter, reduced(witness).getType())));
    outputs.append(own);
    maps.append(own.size(), rowMap);
  }
  SmallVector<utils::IteratorType> iterators = op.getIteratorTypesArray();
  iterators.back() = utils::IteratorType::reduction;
  auto generic = linalg::GenericOp::create(rewriter, loc, TypeRange{},
                                           op.getDpsInputs(), outputs, maps,
                                           iterators);

  // After it: one branch per report, storing what its rows found.
  rewriter.setInsertionPointAfter(generic);
  for (auto [report, own] : llvm::zip_equal(reports, buffers)) {
    Value any = reduceBuffer(rewriter, loc, own[0], vector::CombiningKind::OR);
    Value bad = arith::CmpIOp::create(
        rewriter, loc, arith::CmpIPredicate::ne, any,
        arith::ConstantOp::create(rewriter, loc, rewriter.getIntegerAttr(i8, 0)));
    auto branch = scf::IfOp::create(rewriter, loc, bad, /*withElseRegion=*/false);
    OpBuilder::InsertionGuard inner(rewriter);
    rewriter.setInsertionPointToStart(branch.thenBlock());
    IRMapping mapping;
    for (auto [witness, buffer] :
         llvm::zip_equal(report.witnesses, ArrayRef(own).drop_front())) {
      Value max = reduceBuffer(rewriter, loc, buffer, vector::CombiningKind::MAXSI);
      if (max.getType() != witness.getType())
        max = arith::ExtSIOp::create(rewriter, loc, witness.getType(), max);
      mapping.map(witness, max);
    }
    for (Operation &store : report.branch.thenBlock()->without_terminator()) {
      for (Value v : store.getOperands())
        if (!definedOutside(v, op) && !mapping.contains(v))
          mapping.map(v, rewriter.clone(*v.getDefiningOp())->getResult(0));
      rewriter.clone(store, mapping);
    }
    rewriter.setInsertionPointAfter(branch);
  }

  // The body: each report's branch becomes its reductions' combiners.
  rewriter.inlineRegionBefore(op.getRegion(), generic.getRegion(),
                              generic.getRegion().end());
  Block *body = generic.getBody();
  SmallVector<Value> yielded;
  for (auto [report, own] : llvm::zip_equal(reports, buffers)) {
    rewriter.setInsertionPoint(report.branch);
    // linalg::vectorize keeps a value computed from the last loop's index
    // alone one-dimensional, and would reduce it as if it had every dim; a
    // condition that also reads the row index (always true, folded once
    // vectorised) has the iteration space's rank.
    Value row = linalg::IndexOp::create(rewriter, loc, 0);
    Value cond = arith::AndIOp::create(
        rewriter, loc, report.branch.getCondition(),
        arith::CmpIOp::create(rewriter, loc, arith::CmpIPredicate::eq, row, row));
    Value flag = body->addArgument(i8, loc);
    yielded.push_back(arith::OrIOp::create(
        rewriter, loc, flag, arith::ExtUIOp::create(rewriter, loc, i8, cond)));
    for (Value witness : report.witnesses) {
      witness = reduced(witness);
      Value acc = body->addArgument(witness.getType(), loc);
      Value min = arith::ConstantOp::create(
          rewriter, loc, signedMin(rewriter, witness.getType()));
      Value candidate = arith::SelectOp::create(rewriter, loc, cond, witness, min);
      yielded.push_back(arith::MaxSIOp::create(rewriter, loc, acc, candidate));
    }
    rewriter.eraseOp(report.branch);
  }
  auto yield = cast<linalg::YieldOp>(body->getTerminator());
  SmallVector<Value> values(yield.getValues());
  values.append(yielded);
  rewriter.setInsertionPoint(yield);
  rewriter.replaceOpWithNewOp<linalg::YieldOp>(yield, values);
  rewriter.eraseOp(op);
  return generic;
}
