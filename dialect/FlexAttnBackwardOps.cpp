//===- FlexAttnBackwardOps.cpp - backward op verifiers ----------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// Verifiers of the backward ops (FlexAttnBackwardOps.td), on the helpers the
// forward ops' verifiers share (FlexAttnVerifiers.h).
//
//===----------------------------------------------------------------------===//

#include "dialect/FlexAttnOps.h"
#include "dialect/FlexAttnVerifiers.h"

#include "mlir/IR/Builders.h"
#include "llvm/ADT/STLExtras.h"
#include <numeric>

using namespace mlir;
using namespace mlir::flexattn;
using namespace mlir::flexattn::detail;

//===----------------------------------------------------------------------===//
// Backward op verifiers
//===----------------------------------------------------------------------===//

namespace {

/// `v` must have exactly the type of `ref` (named `refRole`).
LogicalResult checkSameType(Operation *op, Value v, StringRef role, Value ref,
                            StringRef refRole) {
  if (v.getType() != ref.getType())
    return op->emitOpError() << role << " must have the type of " << refRole
                             << " (" << ref.getType() << "), got "
                             << v.getType();
  return success();
}

/// A gradient buffer: the type of the tensor it differentiates, or the same
/// shape in f32 (accumulated there in f32, converted by the caller).
LogicalResult checkGradient(Operation *op, Value v, StringRef role, Value ref,
                            StringRef refRole) {
  auto t = cast<MemRefType>(v.getType()), r = cast<MemRefType>(ref.getType());
  if (t.getElementType().isF32() && t.getShape() == r.getShape() &&
      t.getLayout() == r.getLayout())
    return success();
  if (v.getType() != ref.getType())
    return op->emitOpError() << role << " must have the type of " << refRole
                             << " (" << ref.getType() << ") or its shape in f32, got "
                             << v.getType();
  return success();
}

/// A [B, Hq, M] f32 per-row statistic (lse, delta) of q's rows.
LogicalResult checkRowStat(Operation *op, Value v, StringRef role, Value q) {
  if (failed(checkMemRef(op, v, role, 3, "[B, Hq, M]",
                         [](Type t) { return t.isF32(); }, "f32")))
    return failure();
  auto qs = cast<MemRefType>(q.getType()).getShape();
  auto vs = cast<MemRefType>(v.getType()).getShape();
  for (int d = 0; d < 3; ++d)
    if (!dimsAgree(vs[d], qs[d]))
      return op->emitOpError() << role << " shape must be [B, Hq, M] = "
                               << shapeStr(qs.take_front(3)) << ", got "
                               << shapeStr(vs);
  return success();
}

/// An f32 [rows, cols] tile accumulator.
LogicalResult checkAccumulator(Operation *op, Value acc, StringRef role,
                               int64_t rows, int64_t cols) {
  if (!acc)
    return success();
  if (failed(checkMemRef(op, acc, role, 2, "[rows, D]",
                         [](Type t) { return t.isF32(); }, "f32")))
    return failure();
  auto s = cast<MemRefType>(acc.getType()).getShape();
  if (!dimsAgree(s[0], rows) || !dimsAgree(s[1], cols))
    return op->emitOpError() << role << " accumulator must be "
                             << shapeStr({rows, cols}) << ", got "
                             << shapeStr(s);
  return success();
}

/// grad_captures: increasing indices of floating-point captured buffers,
/// each with one f32 gradient buffer of its shape in `grads`. With
/// `mayOmitGrads` (a loop or step that leaves the capture gradients to
/// another loop), `grads` may be empty.
LogicalResult verifyGradCaptures(Operation *op, ValueRange captures,
                                 ValueRange grads,
                                 ArrayRef<int64_t> gradCaptures,
                                 bool mayOmitGrads = false) {
  if (grads.size() != gradCaptures.size() && !(mayOmitGrads && grads.empty()))
    return op->emitOpError()
           << "grad_captures lists " << gradCaptures.size()
           << " captured buffers but " << grads.size()
           << " capture_grads are given";
  int64_t prev = -1;
  for (auto [i, c] : llvm::enumerate(gradCaptures)) {
    if (c <= prev || c >= static_cast<int64_t>(captures.size()))
      return op->emitOpError()
             << "grad_captures must list increasing indices of captured "
             << "buffers (fewer than " << captures.size() << "), got "
             << shapeStr(gradCaptures);
    prev = c;
    auto capType = cast<MemRefType>(captures[c].getType());
    if (!isa<FloatType>(capType.getElementType()))
      return op->emitOpError()
             << "captured buffer #" << c << " (" << capType
             << ") cannot have a gradient: its element type is not floating "
             << "point";
    if (grads.empty())
      continue;
    // The capture's shape, or with one more trailing dim of per-thread
    // partial sums (a deterministic GPU kernel's; the caller sums them).
    auto gradType = cast<MemRefType>(grads[i].getType());
    ArrayRef<int64_t> g = gradType.getShape();
    if (!gradType.getElementType().isF32() ||
        (g != capType.getShape() &&
         (g.size() != capType.getRank() + 1 || g.drop_back() != capType.getShape())))
      return op->emitOpError()
             << "capture_grads #" << i << " must be an f32 memref of captured "
             << "buffer #" << c << "'s shape " << shapeStr(capType.getShape())
             << " (or that shape and a trailing dim of partial sums), got "
             << gradType;
  }
  return success();
}

/// score_mod_vjp: (score, b, h, q_idx, kv_idx, captures..., dy) yielding
/// (score', dscore) then, per vjp_loads entry c, an f32 and rank(c) indices.
LogicalResult verifyVjpRegion(Operation *op, Region &region,
                              ValueRange captures,
                              std::optional<ArrayRef<int64_t>> vjpLoads,
                              ArrayRef<int64_t> gradCaptures) {
  ArrayRef<int64_t> loads = vjpLoads ? *vjpLoads : ArrayRef<int64_t>();
  if (region.empty()) {
    if (!loads.empty())
      return op->emitOpError()
             << "vjp_loads is given without a score_mod_vjp region";
    return success();
  }
  Builder b(op->getContext());
  SmallVector<Type> want = {b.getF32Type(), b.getF32Type()};
  for (int64_t c : loads) {
    if (!llvm::is_contained(gradCaptures, c))
      return op->emitOpError() << "vjp_loads entry " << c
                               << " is not in grad_captures "
                               << shapeStr(gradCaptures);
    want.push_back(b.getF32Type());
    want.append(cast<MemRefType>(captures[c].getType()).getRank(),
                b.getIndexType());
  }
  return verifyRegion(
      op, region, "score_mod_vjp", true, captures.getTypes(),
      [&](YieldOp y) -> LogicalResult {
        if (TypeRange(y.getValues().getTypes()) == TypeRange(want))
          return success();
        return op->emitOpError()
               << "score_mod_vjp must yield (score, dscore), then per "
               << "vjp_loads entry the derivative and the load's indices: ("
               << TypeRange(want) << "), got (" << y.getValues().getTypes()
               << ")";
      },
      /*cotangent=*/true);
}

/// What backward_q_loop, backward_kv_loop and backward_step share: the
/// inputs, the statistics, the tile accumulators, the capture gradients and
/// the regions.
template <typename OpT>
LogicalResult verifyBackwardTiles(OpT op) {
  Operation *o = op.getOperation();
  if (failed(verifyQKV(o, op.getQ(), op.getK(), op.getV())) ||
      failed(verifyTileSize(o, op.getTileSize())))
    return failure();
  auto qs = cast<MemRefType>(op.getQ().getType()).getShape();
  auto vs = cast<MemRefType>(op.getV().getType()).getShape();
  if (failed(verifyOutputs(o, op.getQ(), op.getV(), op.getDout(), Value(), "dout")) ||
      failed(checkRowStat(o, op.getLse(), "lse", op.getQ())) ||
      failed(checkRowStat(o, op.getDelta(), "delta", op.getQ())))
    return failure();
  int64_t bm = op.getTileSize()[0], bn = op.getTileSize()[1];
  if (failed(checkAccumulator(o, op.getDqAcc(), "dq", bm, qs[3])) ||
      failed(checkAccumulator(o, op.getDkAcc(), "dk", bn, qs[3])) ||
      failed(checkAccumulator(o, op.getDvAcc(), "dv", bn, vs[3])))
    return failure();
  if (failed(verifyGradCaptures(o, op.getCaptures(), op.getCaptureGrads(),
                                op.getGradCaptures(), /*mayOmitGrads=*/true)) ||
      failed(verifyMaskRegion(o, op.getMaskMod(), op.getCaptures().getTypes())))
    return failure();
  return verifyVjpRegion(o, op.getScoreModVjp(), op.getCaptures(),
                         op.getVjpLoads(), op.getGradCaptures());
}

/// A backward loop's block lists: the q-side ones (transposed) for a
/// KV-outer loop, the kv-side ones for a Q-outer loop.
template <typename OpT>
LogicalResult verifyBackwardLoop(OpT op, bool qSide) {
  if (failed(verifyBackwardTiles(op)))
    return failure();
  Operation *o = op.getOperation();
  auto bs = op.getBlockSize();
  if (!op.getNumBlocks()) {
    if (op.getFullNumBlocks())
      return op.emitOpError() << "full blocks require the partial block lists";
    if (bs)
      return op.emitOpError() << "block_size is given without a block mask";
    return success();
  }
  if (!bs || bs->size() != 2 || (*bs)[0] <= 0 || (*bs)[1] <= 0)
    return op.emitOpError() << "a block mask requires block_size = [Q_BLOCK, "
                            << "KV_BLOCK] (two positive integers)";
  StringRef num = qSide ? "q_num_blocks" : "kv_num_blocks";
  StringRef idx = qSide ? "q_indices" : "kv_indices";
  StringRef fullNum = qSide ? "full_q_num_blocks" : "full_kv_num_blocks";
  StringRef fullIdx = qSide ? "full_q_indices" : "full_kv_indices";
  if (failed(verifyBlockMaskPair(o, op.getNumBlocks(), op.getIndices(), num,
                                 idx, *bs, op.getQ(), op.getK(), qSide)) ||
      (op.getFullNumBlocks() &&
       failed(verifyBlockMaskPair(o, op.getFullNumBlocks(),
                                  op.getFullIndices(), fullNum, fullIdx, *bs,
                                  op.getQ(), op.getK(), qSide))))
    return failure();
  // The fixed tile must lie in one block; the visited tile is a whole block.
  int64_t fixed = op.getTileSize()[qSide ? 1 : 0];
  int64_t block = (*bs)[qSide ? 1 : 0];
  int64_t visited = op.getTileSize()[qSide ? 0 : 1];
  if (block % fixed != 0 || visited != (*bs)[qSide ? 0 : 1])
    return op.emitOpError()
           << "with a block mask, tile_size[" << (qSide ? 1 : 0)
           << "] must divide block_size[" << (qSide ? 1 : 0) << "] and "
           << "tile_size[" << (qSide ? 0 : 1) << "] must equal block_size["
           << (qSide ? 0 : 1) << "], got tile_size "
           << shapeStr(op.getTileSize()) << " and block_size " << shapeStr(*bs);
  return success();
}

} // namespace

LogicalResult AttentionBackwardOp::verify() {
  Operation *o = getOperation();
  if (failed(verifyQKV(o, getQ(), getK(), getV())) ||
      failed(verifyOutputs(o, getQ(), getV(), getOut(), getLse())) ||
      failed(checkSameType(o, getDout(), "dout", getOut(), "out")) ||
      (getDlse() && failed(checkSameType(o, getDlse(), "dlse", getLse(), "lse"))) ||
      (getDelta() && failed(checkSameType(o, getDelta(), "delta", getLse(), "lse"))) ||
      failed(checkGradient(o, getDq(), "dq", getQ(), "q")) ||
      failed(checkSameType(o, getDk(), "dk", getK(), "k")) ||
      failed(checkSameType(o, getDv(), "dv", getV(), "v")))
    return failure();
  if (!getSinks() != !getDsinks())
    return emitOpError() << "sinks and dsinks go together (dsinks receives "
                         << "the sinks' gradient)";
  if (getSinks() &&
      (failed(verifySinks(o, getSinks(),
                          cast<MemRefType>(getQ().getType()).getDimSize(1))) ||
       failed(checkSameType(o, getDsinks(), "dsinks", getSinks(), "sinks"))))
    return failure();
  if (!getKvNumBlocks() && getBlockSize())
    return emitOpError() << "block_size is given without a block_mask";
  if (!getKvNumBlocks() != !getQNumBlocks() ||
      !getFullKvNumBlocks() != !getFullQNumBlocks())
    return emitOpError() << "a block mask needs both its kv-side and its q-side "
                         << "lists (block_mask with q_block_mask, full_blocks "
                         << "with full_q_blocks)";
  if (failed(verifyBlockMask(o, getQ(), getK(), getKvNumBlocks(),
                             getKvIndices(), getFullKvNumBlocks(),
                             getFullKvIndices(), getBlockSize())))
    return failure();
  if (getQNumBlocks() &&
      (failed(verifyBlockMaskPair(o, getQNumBlocks(), getQIndices(),
                                  "q_num_blocks", "q_indices", *getBlockSize(),
                                  getQ(), getK(), /*qSide=*/true)) ||
       (getFullQNumBlocks() &&
        failed(verifyBlockMaskPair(o, getFullQNumBlocks(), getFullQIndices(),
                                   "full_q_num_blocks", "full_q_indices",
                                   *getBlockSize(), getQ(), getK(),
                                   /*qSide=*/true)))))
    return failure();
  if (failed(verifyGradCaptures(o, getCaptures(), getCaptureGrads(),
                                getGradCaptures())))
    return failure();
  return verifyVjpRegion(o, getScoreModVjp(), getCaptures(), getVjpLoads(),
                         getGradCaptures());
}

LogicalResult BackwardQLoopOp::verify() {
  return verifyBackwardLoop(*this, /*qSide=*/true);
}

LogicalResult BackwardKvLoopOp::verify() {
  return verifyBackwardLoop(*this, /*qSide=*/false);
}

LogicalResult BackwardStepOp::verify() {
  if (failed(verifyBackwardTiles(*this)))
    return failure();
  if (Value sum = getDqSum()) {
    if (getDqAcc() || (!getDkAcc() && !getDvAcc()))
      return emitOpError() << "dq_sum goes with the dk/dv accumulators of a KV "
                           << "tile, not with a dq accumulator";
    if (failed(checkMemRef(*this, sum, "dq_sum", 4, "[B, Hq, M, D]",
                           [](Type t) { return t.isF32(); }, "f32")))
      return failure();
    auto qs = cast<MemRefType>(getQ().getType()).getShape();
    auto ss = cast<MemRefType>(sum.getType()).getShape();
    for (int64_t d = 0; d < 4; ++d)
      if (!dimsAgree(qs[d], ss[d]))
        return emitOpError() << "dq_sum must have q's shape " << shapeStr(qs)
                             << ", got " << shapeStr(ss);
  }
  return success();
}

LogicalResult StoreTileOp::verify() {
  Operation *o = getOperation();
  if (failed(checkMemRef(o, getAcc(), "acc", 2, "[T, D]",
                         [](Type t) { return t.isF32(); }, "f32")) ||
      failed(checkMemRef(o, getDst(), "dst", 4, "[B, H, R, D]",
                         [](Type t) { return isAttentionElementType(t); },
                         "f32, f16 or bf16")))
    return failure();
  int64_t d = cast<MemRefType>(getAcc().getType()).getDimSize(1);
  int64_t dd = cast<MemRefType>(getDst().getType()).getDimSize(3);
  if (!dimsAgree(d, dd))
    return emitOpError() << "acc has " << d << " columns but dst rows have "
                         << dd;
  return success();
}

LogicalResult ApplyModsVjpOp::verify() {
  Operation *o = getOperation();
  Builder b(getContext());
  // The regions' own checks need the captures' gradient set: every load
  // the vjp yields is, by construction, of a capture with a gradient.
  SmallVector<int64_t> all(getCaptures().size());
  std::iota(all.begin(), all.end(), 0);
  if (failed(verifyMaskRegion(o, getMaskMod(), getCaptures().getTypes())) ||
      failed(verifyVjpRegion(o, getScoreModVjp(), getCaptures(),
                             getVjpLoads(), all)))
    return failure();
  SmallVector<Type> want = {b.getF32Type(), b.getF32Type()};
  for (int64_t c : getVjpLoads() ? *getVjpLoads() : ArrayRef<int64_t>()) {
    want.push_back(b.getF32Type());
    want.append(cast<MemRefType>(getCaptures()[c].getType()).getRank(),
                b.getIndexType());
  }
  if (getResultTypes() != TypeRange(want))
    return emitOpError() << "results must be (score, dscore), then per "
                         << "vjp_loads entry the derivative and the load's "
                         << "indices: (" << TypeRange(want) << "), got ("
                         << getResultTypes() << ")";
  return success();
}
