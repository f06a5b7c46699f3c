//===- PackHeads.cpp - flexattn-tile's packed decode tiles ------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// What `flexattn-tile{pack-heads}` adds to a tile: the packed views of q,
// out and lse (the G query heads of a K/V head as the rows of one tile), and
// the tile's block-mask row, the union of the rows of the heads and query
// blocks it holds.
//
//===----------------------------------------------------------------------===//

#include "passes/PackHeads.h"

using namespace mlir;
using namespace mlir::flexattn;

Value mlir::flexattn::packHeadsView(OpBuilder &b, Location loc, Value buf,
                                    int64_t group) {
  auto type = cast<MemRefType>(buf.getType());
  SmallVector<int64_t> shape(type.getShape());
  int64_t hkv = shape[1] / group;
  // [B, Hq, M, ...] -> [B, Hkv, G, M, ...] -> [B, Hkv, G * M, ...]
  SmallVector<int64_t> expanded = {shape[0], hkv, group};
  expanded.append(shape.begin() + 2, shape.end());
  SmallVector<ReassociationIndices> split = {{0}, {1, 2}};
  SmallVector<ReassociationIndices> merge = {{0}, {1}, {2, 3}};
  for (int64_t d = 2; d < type.getRank(); ++d)
    split.push_back({d + 1});
  for (int64_t d = 3; d < type.getRank(); ++d)
    merge.push_back({d + 1});
  SmallVector<OpFoldResult> sizes = memref::getMixedSizes(b, loc, buf);
  SmallVector<OpFoldResult> outSizes = {sizes[0], b.getIndexAttr(hkv),
                                        b.getIndexAttr(group)};
  outSizes.append(sizes.begin() + 2, sizes.end());
  auto expandedType = MemRefType::get(expanded, type.getElementType());
  Value e = memref::ExpandShapeOp::create(b, loc, expandedType, buf, split,
                                          outSizes);
  return memref::CollapseShapeOp::create(b, loc, e, merge);
}

namespace {

Value i32Const(OpBuilder &b, Location loc, int32_t v) {
  return arith::ConstantOp::create(b, loc, b.getI32IntegerAttr(v));
}

Value allocaI32(OpBuilder &b, Location loc, ArrayRef<int64_t> shape,
                ValueRange dyn) {
  return memref::AllocaOp::create(
      b, loc, MemRefType::get(shape, b.getI32Type()), dyn);
}

} // namespace

PackedMask mlir::flexattn::unionBlockMask(OpBuilder &b, Location loc,
                                          AttentionOp op, const TileRows &rows,
                                          Value kvBlocks) {
  Value c0 = indexConst(b, loc, 0), c1 = indexConst(b, loc, 1);
  bool hasFull = op.getFullKvNumBlocks() != nullptr;
  // seen[j]: some row lists block j; full[j]: how many list it as full.
  Value seen = allocaI32(b, loc, {ShapedType::kDynamic}, kvBlocks);
  Value full = hasFull ? allocaI32(b, loc, {ShapedType::kDynamic}, kvBlocks)
                       : Value();
  forRange(b, loc, c0, kvBlocks, [&](OpBuilder &nb, Value j) {
    memref::StoreOp::create(nb, loc, i32Const(nb, loc, 0), seen, j);
    if (full)
      memref::StoreOp::create(nb, loc, i32Const(nb, loc, 0), full, j);
  });

  // Every (head, query block) row of the tile marks its blocks.
  auto mark = [&](OpBuilder &nb, Value num, Value indices, Value h, Value qb,
                  bool isFull) {
    forEachListedBlock(nb, loc, num, indices, rows.b, h, qb, /*blockSize=*/1,
                  [&](OpBuilder &lb, Value j) {
                    // A block past the sequence holds no key: skip it.
                    Value in = arith::CmpIOp::create(
                        lb, loc, arith::CmpIPredicate::ult, j, kvBlocks);
                    auto ifOp = scf::IfOp::create(lb, loc, in, false);
                    OpBuilder::InsertionGuard guard(lb);
                    lb.setInsertionPoint(ifOp.thenBlock()->getTerminator());
                    memref::StoreOp::create(lb, loc, i32Const(lb, loc, 1),
                                            seen, j);
                    if (!isFull)
                      return;
                    Value n = memref::LoadOp::create(lb, loc, full, j);
                    n = arith::AddIOp::create(lb, loc, n, i32Const(lb, loc, 1));
                    memref::StoreOp::create(lb, loc, n, full, j);
                  });
  };
  Value hEnd = arith::AddIOp::create(b, loc, rows.lastHead, c1);
  Value qbEnd = arith::AddIOp::create(b, loc, rows.lastBlock, c1);
  forRange(b, loc, rows.firstHead, hEnd, [&](OpBuilder &hb, Value h) {
    forRange(hb, loc, rows.firstBlock, qbEnd, [&](OpBuilder &qbb, Value qb) {
      mark(qbb, op.getKvNumBlocks(), op.getKvIndices(), h, qb, false);
      if (hasFull)
        mark(qbb, op.getFullKvNumBlocks(), op.getFullKvIndices(), h, qb, true);
    });
  });

  // A block full for every row stays full; any other block seen is partial.
  Value heads = arith::SubIOp::create(b, loc, hEnd, rows.firstHead);
  Value blocks = arith::SubIOp::create(b, loc, qbEnd, rows.firstBlock);
  Value nRows = arith::IndexCastOp::create(
      b, loc, b.getI32Type(), arith::MulIOp::create(b, loc, heads, blocks));
  PackedMask mask;
  mask.num = allocaI32(b, loc, {1, 1, 1}, {});
  mask.indices = allocaI32(b, loc, {1, 1, 1, ShapedType::kDynamic}, kvBlocks);
  if (hasFull) {
    mask.fullNum = allocaI32(b, loc, {1, 1, 1}, {});
    mask.fullIndices =
        allocaI32(b, loc, {1, 1, 1, ShapedType::kDynamic}, kvBlocks);
  }
  Type index = b.getIndexType();
  auto forOp = scf::ForOp::create(b, loc, c0, kvBlocks, c1, ValueRange{c0, c0});
  {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(forOp.getBody());
    Value j = forOp.getInductionVar();
    Value np = forOp.getRegionIterArgs()[0], nf = forOp.getRegionIterArgs()[1];
    Value isSeen = arith::CmpIOp::create(
        b, loc, arith::CmpIPredicate::ne,
        memref::LoadOp::create(b, loc, seen, j), i32Const(b, loc, 0));
    Value allFull = arith::ConstantOp::create(b, loc, b.getBoolAttr(false));
    if (hasFull)
      allFull = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq,
                                      memref::LoadOp::create(b, loc, full, j),
                                      nRows);
    Value blk = arith::IndexCastOp::create(b, loc, b.getI32Type(), j);
    // Appends blk to `list` at `n`; returns n + 1.
    auto append = [&](OpBuilder &ab, Value list, Value n) -> Value {
      memref::StoreOp::create(ab, loc, blk, list, ValueRange{c0, c0, c0, n});
      return arith::AddIOp::create(ab, loc, n, c1);
    };
    auto ifSeen = scf::IfOp::create(b, loc, TypeRange{index, index}, isSeen,
                                    /*withElseRegion=*/true);
    b.setInsertionPointToStart(ifSeen.thenBlock());
    if (hasFull) {
      auto ifFull = scf::IfOp::create(b, loc, TypeRange{index, index}, allFull,
                                      /*withElseRegion=*/true);
      b.setInsertionPointToStart(ifFull.thenBlock());
      scf::YieldOp::create(b, loc, ValueRange{np, append(b, mask.fullIndices, nf)});
      b.setInsertionPointToStart(ifFull.elseBlock());
      scf::YieldOp::create(b, loc, ValueRange{append(b, mask.indices, np), nf});
      b.setInsertionPointAfter(ifFull);
      scf::YieldOp::create(b, loc, ifFull.getResults());
    } else {
      scf::YieldOp::create(b, loc, ValueRange{append(b, mask.indices, np), nf});
    }
    b.setInsertionPointToStart(ifSeen.elseBlock());
    scf::YieldOp::create(b, loc, ValueRange{np, nf});
    b.setInsertionPointAfter(ifSeen);
    scf::YieldOp::create(b, loc, ifSeen.getResults());
  }
  auto store = [&](Value n, Value buf) {
    Value v = arith::IndexCastOp::create(b, loc, b.getI32Type(), n);
    memref::StoreOp::create(b, loc, v, buf, ValueRange{c0, c0, c0});
  };
  store(forOp.getResult(0), mask.num);
  if (hasFull)
    store(forOp.getResult(1), mask.fullNum);
  return mask;
}

TileRows mlir::flexattn::packedTileRows(OpBuilder &b, Location loc, Value batch,
                                        Value firstHead, Value q0, Value end,
                                        Value rowsPerHead, int64_t qBlock) {
  // Rows [q0, end) are heads firstHead + r / M, queries r mod M.
  Value c1 = indexConst(b, loc, 1);
  Value last = arith::SubIOp::create(b, loc, end, c1);
  auto headOf = [&](Value r) {
    return arith::AddIOp::create(
        b, loc, firstHead, arith::DivUIOp::create(b, loc, r, rowsPerHead));
  };
  auto blockOf = [&](Value r) {
    Value i = arith::RemUIOp::create(b, loc, r, rowsPerHead);
    return arith::DivUIOp::create(b, loc, i, indexConst(b, loc, qBlock));
  };
  TileRows rows{batch, headOf(q0), headOf(last), blockOf(q0), blockOf(last)};
  // Rows of several heads: every query block of each (a superset of the
  // tile's rows is still a correct union, only less sparse).
  Value oneHead = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq,
                                        rows.firstHead, rows.lastHead);
  Value lastBlock = arith::DivUIOp::create(
      b, loc, arith::SubIOp::create(b, loc, rowsPerHead, c1),
      indexConst(b, loc, qBlock));
  rows.firstBlock = arith::SelectOp::create(b, loc, oneHead, rows.firstBlock,
                                            indexConst(b, loc, 0));
  rows.lastBlock =
      arith::SelectOp::create(b, loc, oneHead, rows.lastBlock, lastBlock);
  return rows;
}
