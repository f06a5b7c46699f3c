//===- FlexAttnOps.cpp - flexattn op verifiers ------------------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// The forward ops' verifiers and the checks every verifier shares
// (FlexAttnVerifiers.h; the backward ops' are in FlexAttnBackwardOps.cpp).
// Every message names the operand or region by its role and says what was
// expected and what was found, so a frontend bug reads as a sentence.
//
//===----------------------------------------------------------------------===//

#include "dialect/FlexAttnOps.h"
#include "dialect/FlexAttnVerifiers.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/OpImplementation.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/raw_ostream.h"

using namespace mlir;
using namespace mlir::flexattn;
using namespace mlir::flexattn::detail;

#include "dialect/FlexAttnInterfaces.cpp.inc"

//===----------------------------------------------------------------------===//
// custom<ModRegions>: `score_mod {...}`? `mask_mod {...}`?
//===----------------------------------------------------------------------===//

using KeywordRegion = std::pair<StringRef, Region *>;

/// Parses `keyword {...}` for each (keyword, region) that is present, in
/// order; absent ones stay empty.
static ParseResult parseKeywordRegions(OpAsmParser &parser,
                                       ArrayRef<KeywordRegion> regions) {
  for (auto [keyword, region] : regions) {
    if (succeeded(parser.parseOptionalKeyword(keyword)) &&
        parser.parseRegion(*region, /*arguments=*/{},
                           /*enableNameShadowing=*/true))
      return failure();
  }
  return success();
}

static void printKeywordRegions(OpAsmPrinter &p,
                                ArrayRef<KeywordRegion> regions) {
  bool first = true;
  for (auto [keyword, region] : regions) {
    if (region->empty())
      continue;
    p << (first ? "" : " ") << keyword << " ";
    first = false;
    p.printRegion(*region, /*printEntryBlockArgs=*/true,
                  /*printBlockTerminators=*/true);
  }
}

static ParseResult parseModRegions(OpAsmParser &parser, Region &scoreMod,
                                   Region &maskMod) {
  return parseKeywordRegions(parser, {{"score_mod", &scoreMod},
                                      {"mask_mod", &maskMod}});
}

static void printModRegions(OpAsmPrinter &p, Operation *, Region &scoreMod,
                            Region &maskMod) {
  printKeywordRegions(p, {{"score_mod", &scoreMod}, {"mask_mod", &maskMod}});
}

// custom<VjpRegion>: `score_mod_vjp {...}`?
static ParseResult parseVjpRegion(OpAsmParser &parser, Region &vjp) {
  return parseKeywordRegions(parser, {{"score_mod_vjp", &vjp}});
}

static void printVjpRegion(OpAsmPrinter &p, Operation *, Region &vjp) {
  printKeywordRegions(p, {{"score_mod_vjp", &vjp}});
}

// custom<BackwardRegions>: `score_mod_vjp {...}`? `mask_mod {...}`?
static ParseResult parseBackwardRegions(OpAsmParser &parser, Region &vjp,
                                        Region &maskMod) {
  return parseKeywordRegions(parser, {{"score_mod_vjp", &vjp},
                                      {"mask_mod", &maskMod}});
}

static void printBackwardRegions(OpAsmPrinter &p, Operation *, Region &vjp,
                                 Region &maskMod) {
  printKeywordRegions(p, {{"score_mod_vjp", &vjp}, {"mask_mod", &maskMod}});
}

#define GET_OP_CLASSES
#include "dialect/FlexAttnOps.cpp.inc"

//===----------------------------------------------------------------------===//
// Helpers
//===----------------------------------------------------------------------===//

namespace mlir::flexattn::detail {

std::string shapeStr(ArrayRef<int64_t> shape) {
  std::string s;
  llvm::raw_string_ostream os(s);
  os << "[";
  llvm::interleaveComma(shape, os, [&](int64_t d) {
    if (ShapedType::isDynamic(d))
      os << "?";
    else
      os << d;
  });
  os << "]";
  return s;
}

bool isAttentionElementType(Type t) { return t.isF32() || t.isF16() || t.isBF16(); }

/// A memref operand of a given role: rank and element type checks.
LogicalResult checkMemRef(Operation *op, Value v, StringRef role, int64_t rank,
                          StringRef layout, function_ref<bool(Type)> elemOk,
                          StringRef elemDesc) {
  auto type = cast<MemRefType>(v.getType());
  if (type.getRank() != rank)
    return op->emitOpError() << role << " must be a " << rank << "-D memref "
                             << layout << ", got rank " << type.getRank();
  if (!elemOk(type.getElementType()))
    return op->emitOpError() << role << " element type must be " << elemDesc
                             << ", got " << type.getElementType();
  return success();
}

/// Equal unless one side is dynamic.
bool dimsAgree(int64_t a, int64_t b) {
  return ShapedType::isDynamic(a) || ShapedType::isDynamic(b) || a == b;
}

static LogicalResult checkDim(Operation *op, int64_t got, int64_t want,
                       const Twine &what) {
  if (!dimsAgree(got, want))
    return op->emitOpError() << what << " (" << got << ") must match " << want;
  return success();
}

static int64_t ceilDivOrDynamic(int64_t a, int64_t b) {
  return ShapedType::isDynamic(a) ? ShapedType::kDynamic : (a + b - 1) / b;
}

/// q [B,Hq,M,D], k [B,Hkv,N,D], v [B,Hkv,N,Dv]: ranks, dtypes, and the
/// dimensions they share. Used by every op that reads q/k/v; with
/// `kvBatchBroadcast` (flexattn.attention), k and v may also have batch 1,
/// shared by every query batch.
LogicalResult verifyQKV(Operation *op, Value q, Value k, Value v,
                        bool kvBatchBroadcast) {
  auto elemOk = [](Type t) { return isAttentionElementType(t); };
  if (failed(checkMemRef(op, q, "q", 4, "[B, Hq, M, D]", elemOk, "f32, f16 or bf16")) ||
      failed(checkMemRef(op, k, "k", 4, "[B, Hkv, N, D]", elemOk, "f32, f16 or bf16")) ||
      failed(checkMemRef(op, v, "v", 4, "[B, Hkv, N, Dv]", elemOk, "f32, f16 or bf16")))
    return failure();
  auto qt = cast<MemRefType>(q.getType()), kt = cast<MemRefType>(k.getType()),
       vt = cast<MemRefType>(v.getType());
  if (kt.getElementType() != qt.getElementType())
    return op->emitOpError() << "k element type (" << kt.getElementType()
                             << ") must match q element type ("
                             << qt.getElementType() << ")";
  if (vt.getElementType() != qt.getElementType())
    return op->emitOpError() << "v element type (" << vt.getElementType()
                             << ") must match q element type ("
                             << qt.getElementType() << ")";
  auto qs = qt.getShape(), ks = kt.getShape(), vs = vt.getShape();
  for (auto [role, size] : {std::pair<StringRef, int64_t>{"k", ks[0]}, {"v", vs[0]}}) {
    if (kvBatchBroadcast && size == 1)
      continue;
    if (!dimsAgree(size, qs[0]))
      return op->emitOpError()
             << role << " batch size (" << size << ") must match " << qs[0]
             << (kvBatchBroadcast ? " or be 1 (broadcast)" : "");
  }
  if (failed(checkDim(op, ks[3], qs[3], "k head dim D")) ||
      failed(checkDim(op, vs[1], ks[1], "v head count")) ||
      failed(checkDim(op, vs[2], ks[2], "v sequence length N")))
    return failure();
  if (!ShapedType::isDynamic(qs[1]) && !ShapedType::isDynamic(ks[1]) &&
      (ks[1] == 0 || qs[1] % ks[1] != 0))
    return op->emitOpError()
           << "q head count (" << qs[1] << ") must be a multiple of the k/v "
           << "head count (" << ks[1] << ") for grouped-query attention";
  return success();
}

/// out [B,Hq,M,Dv] and lse [B,Hq,M] f32, against q and v.
LogicalResult verifyOutputs(Operation *op, Value q, Value v, Value out,
                            Value lse, StringRef outRole) {
  auto qt = cast<MemRefType>(q.getType());
  auto elemOk = [&](Type t) { return t == qt.getElementType(); };
  std::string want;
  llvm::raw_string_ostream(want) << "q's (" << qt.getElementType() << ")";
  if (failed(checkMemRef(op, out, outRole, 4, "[B, Hq, M, Dv]", elemOk, want)))
    return failure();
  auto qs = qt.getShape();
  auto vs = cast<MemRefType>(v.getType()).getShape();
  SmallVector<int64_t> expected = {qs[0], qs[1], qs[2], vs[3]};
  auto os = cast<MemRefType>(out.getType()).getShape();
  if (!llvm::all_of(llvm::zip(os, expected),
                    [](auto p) { return dimsAgree(std::get<0>(p), std::get<1>(p)); }))
    return op->emitOpError() << outRole << " shape must be [B, Hq, M, Dv] = "
                             << shapeStr(expected) << ", got " << shapeStr(os);
  return verifyRowStat(op, q, lse, "lse");
}

/// An optional per-row statistic (lse, max_scores): [B, Hq, M] f32.
LogicalResult verifyRowStat(Operation *op, Value q, Value stat, StringRef role) {
  if (!stat)
    return success();
  if (failed(checkMemRef(op, stat, role, 3, "[B, Hq, M]",
                         [](Type t) { return t.isF32(); }, "f32")))
    return failure();
  auto qs = cast<MemRefType>(q.getType()).getShape();
  auto ss = cast<MemRefType>(stat.getType()).getShape();
  if (!dimsAgree(ss[0], qs[0]) || !dimsAgree(ss[1], qs[1]) ||
      !dimsAgree(ss[2], qs[2]))
    return op->emitOpError() << role << " shape must be [B, Hq, M] = "
                             << shapeStr(qs.take_front(3)) << ", got "
                             << shapeStr(ss);
  return success();
}

/// torch's BlockMask layout: num [Bm, Hm, QB] i32, indices [Bm, Hm, QB, KB]
/// i32, with Bm in {1, B}, Hm in {1, Hq}, QB = ceil(M / Q_BLOCK),
/// KB = ceil(N / KV_BLOCK). With `qSide`, the transposed lists a KV-outer
/// backward loop reads: num [Bm, Hm, KB], indices [Bm, Hm, KB, QB].
LogicalResult verifyBlockMaskPair(Operation *op, Value num, Value idx,
                                  StringRef numRole, StringRef idxRole,
                                  ArrayRef<int64_t> blockSize, Value q,
                                  Value k, bool qSide, bool oneRow) {
  auto isI32 = [](Type t) { return t.isSignlessInteger(32); };
  StringRef numLayout = qSide ? "[B, H, KV_BLOCKS]" : "[B, H, Q_BLOCKS]";
  StringRef idxLayout =
      qSide ? "[B, H, KV_BLOCKS, Q_BLOCKS]" : "[B, H, Q_BLOCKS, KV_BLOCKS]";
  if (failed(checkMemRef(op, num, numRole, 3, numLayout, isI32, "i32")) ||
      failed(checkMemRef(op, idx, idxRole, 4, idxLayout, isI32, "i32")))
    return failure();
  auto qs = cast<MemRefType>(q.getType()).getShape();
  auto ks = cast<MemRefType>(k.getType()).getShape();
  auto ns = cast<MemRefType>(num.getType()).getShape();
  auto is = cast<MemRefType>(idx.getType()).getShape();
  // A packed decode tile's mask is its own (union) row: one query block.
  int64_t qBlocks = oneRow ? 1 : ceilDivOrDynamic(qs[2], blockSize[0]);
  int64_t kvBlocks = ceilDivOrDynamic(ks[2], blockSize[1]);
  if (qSide) {
    if (!dimsAgree(ns[2], kvBlocks) || !dimsAgree(is[2], kvBlocks))
      return op->emitOpError()
             << numRole << " and " << idxRole << " must have ceil(N / "
             << blockSize[1] << ") = " << kvBlocks << " KV blocks, got "
             << shapeStr(ns) << " and " << shapeStr(is);
    if (!dimsAgree(is[3], qBlocks))
      return op->emitOpError()
             << idxRole << " must have ceil(M / " << blockSize[0]
             << ") = " << qBlocks << " Q block slots, got " << is[3];
  }
  for (auto [dim, name, full] :
       {std::tuple<int64_t, StringRef, int64_t>{0, "batch", qs[0]},
        {1, "head", qs[1]}}) {
    for (auto [shape, role] : {std::pair(ns, numRole), std::pair(is, idxRole)})
      if (!ShapedType::isDynamic(shape[dim]) && shape[dim] != 1 &&
          !dimsAgree(shape[dim], full))
        return op->emitOpError()
               << role << " " << name << " dim (" << shape[dim]
               << ") must be 1 (broadcast) or " << full;
  }
  if (!qSide && (!dimsAgree(ns[2], qBlocks) || !dimsAgree(is[2], qBlocks)))
    return op->emitOpError()
           << numRole << " and " << idxRole << " must have ceil(M / "
           << blockSize[0] << ") = " << qBlocks << " query blocks, got "
           << shapeStr(ns) << " and " << shapeStr(is);
  if (!qSide && !dimsAgree(is[3], kvBlocks))
    return op->emitOpError()
           << idxRole << " must have ceil(N / " << blockSize[1]
           << ") = " << kvBlocks << " KV block slots, got " << is[3];
  for (int d = 0; d < 2; ++d)
    if (!dimsAgree(ns[d], is[d]))
      return op->emitOpError() << numRole << " " << shapeStr(ns) << " and "
                               << idxRole << " " << shapeStr(is)
                               << " must agree on their batch and head dims";
  return success();
}

LogicalResult verifyBlockMask(Operation *op, Value q, Value k, Value num,
                              Value idx, Value fullNum, Value fullIdx,
                              std::optional<ArrayRef<int64_t>> blockSize,
                              bool oneRow) {
  if (!num) {
    if (fullNum)
      return op->emitOpError() << "full_blocks requires block_mask";
    return success();
  }
  if (!blockSize)
    return op->emitOpError() << "a block_mask requires the block_size attribute";
  if (blockSize->size() != 2 || (*blockSize)[0] <= 0 || (*blockSize)[1] <= 0)
    return op->emitOpError() << "block_size must be two positive integers "
                             << "[Q_BLOCK, KV_BLOCK], got "
                             << shapeStr(*blockSize);
  if (failed(verifyBlockMaskPair(op, num, idx, "kv_num_blocks", "kv_indices",
                                 *blockSize, q, k, /*qSide=*/false, oneRow)))
    return failure();
  if (fullNum && failed(verifyBlockMaskPair(op, fullNum, fullIdx,
                                            "full_kv_num_blocks",
                                            "full_kv_indices", *blockSize, q, k,
                                            /*qSide=*/false, oneRow)))
    return failure();
  return success();
}

LogicalResult verifyTileSize(Operation *op, ArrayRef<int64_t> tile) {
  if (tile.size() != 2 || tile[0] <= 0 || tile[1] <= 0)
    return op->emitOpError() << "tile_size must be two positive integers "
                             << "[BM, BN], got " << shapeStr(tile);
  return success();
}

/// acc [BM, Dv], max [BM], sum [BM], all f32.
static LogicalResult verifyState(Operation *op, Value acc, Value max, Value sum,
                          std::optional<int64_t> bm, int64_t dv) {
  auto isF32 = [](Type t) { return t.isF32(); };
  if (failed(checkMemRef(op, acc, "acc", 2, "[BM, Dv]", isF32, "f32")) ||
      failed(checkMemRef(op, max, "max", 1, "[BM]", isF32, "f32")) ||
      failed(checkMemRef(op, sum, "sum", 1, "[BM]", isF32, "f32")))
    return failure();
  auto as = cast<MemRefType>(acc.getType()).getShape();
  auto ms = cast<MemRefType>(max.getType()).getShape();
  auto ss = cast<MemRefType>(sum.getType()).getShape();
  if (!dimsAgree(as[1], dv))
    return op->emitOpError() << "acc must have Dv = " << dv
                             << " columns, got " << as[1];
  if (!dimsAgree(ms[0], as[0]) || !dimsAgree(ss[0], as[0]))
    return op->emitOpError() << "acc " << shapeStr(as) << ", max "
                             << shapeStr(ms) << " and sum " << shapeStr(ss)
                             << " must have the same number of rows";
  if (bm && !dimsAgree(as[0], *bm))
    return op->emitOpError() << "state must have tile_size[0] = " << *bm
                             << " rows, got " << as[0];
  return success();
}

/// Checks one mod region: the leading (score,) b, h, q_idx, kv_idx, one
/// argument per captured buffer, with `cotangent` a trailing f32 `dy` (the
/// score_mod_vjp region), pure scalar code, and a flexattn.yield that
/// `checkYield` accepts.
LogicalResult verifyRegion(Operation *op, Region &region, StringRef name,
                           bool hasScore, TypeRange captures,
                           function_ref<LogicalResult(YieldOp)> checkYield,
                           bool cotangent) {
  if (region.empty())
    return success();
  Block &block = region.front();
  unsigned fixed = hasScore ? 5 : 4;
  StringRef sig = hasScore ? "(score, b, h, q_idx, kv_idx" : "(b, h, q_idx, kv_idx";
  unsigned want = fixed + captures.size() + (cotangent ? 1 : 0);
  if (block.getNumArguments() != want)
    return op->emitOpError()
           << name << " must take " << want << " arguments " << sig
           << ", then one per captured buffer (" << captures.size() << ")"
           << (cotangent ? ", then dy" : "") << "), got "
           << block.getNumArguments();
  if (cotangent && !block.getArguments().back().getType().isF32())
    return op->emitOpError() << name << " dy argument must be f32, got "
                             << block.getArguments().back().getType();
  unsigned firstIndex = 0;
  if (hasScore) {
    if (!block.getArgument(0).getType().isF32())
      return op->emitOpError() << name << " score argument must be f32, got "
                               << block.getArgument(0).getType();
    firstIndex = 1;
  }
  Type indexType = block.getArgument(firstIndex).getType();
  if (!indexType.isSignlessInteger() && !indexType.isIndex())
    return op->emitOpError() << name << " index arguments (b, h, q_idx, kv_idx) "
                             << "must be signless integers or index, got "
                             << indexType;
  for (unsigned i = firstIndex; i < firstIndex + 4; ++i)
    if (block.getArgument(i).getType() != indexType)
      return op->emitOpError()
             << name << " index arguments (b, h, q_idx, kv_idx) must share one "
             << "type, got " << indexType << " and "
             << block.getArgument(i).getType();
  for (auto [i, capType] : llvm::enumerate(captures))
    if (block.getArgument(fixed + i).getType() != capType)
      return op->emitOpError()
             << name << " argument #" << fixed + i << " must have the type of "
             << "captured buffer #" << i << " (" << capType << "), got "
             << block.getArgument(fixed + i).getType();
  // The region may not have a terminator yet (this verifier runs before
  // MLIR's own terminator check, the op being isolated from above).
  // Pure scalar code only: every target (the CPU loops, the GPU register
  // fragments) must be able to inline it.
  WalkResult foreign = region.walk([&](Operation *inner) {
    StringRef ns = inner->getDialect() ? inner->getDialect()->getNamespace() : "";
    // (The region's own terminator is checked below.)
    bool ok = ns == "arith" || ns == "math" || ns == "scf" ||
              isa<YieldOp, memref::LoadOp, CheckIndexOp>(inner) ||
              inner == &block.back();
    if (ok)
      return WalkResult::advance();
    op->emitOpError() << name << " may only contain arith, math, scf, "
                      << "memref.load and flexattn.check_index ops (scalar "
                      << "code), found '" << inner->getName() << "'";
    return WalkResult::interrupt();
  });
  if (foreign.wasInterrupted())
    return failure();
  auto yield = block.empty() ? YieldOp() : dyn_cast<YieldOp>(&block.back());
  if (!yield)
    return op->emitOpError() << name << " must end with flexattn.yield";
  return checkYield(yield);
}

/// The yield check of a region that returns one value `ok` accepts.
static LogicalResult yieldsOne(Operation *op, YieldOp yield, StringRef name,
                        function_ref<bool(Type)> ok, StringRef desc) {
  if (yield.getValues().size() != 1 || !ok(yield.getValues().front().getType()))
    return op->emitOpError() << name << " must yield one " << desc
                             << " value, got " << yield.getValues().size()
                             << " value(s) of type(s) "
                             << yield.getValues().getTypes();
  return success();
}

LogicalResult verifyMaskRegion(Operation *op, Region &region,
                               TypeRange captures) {
  return verifyRegion(op, region, "mask_mod", false, captures, [&](YieldOp y) {
    return yieldsOne(op, y, "mask_mod",
                     [](Type t) { return t.isSignlessInteger(1); }, "i1");
  });
}

/// A packed tile's q is [B, Hkv, G * m, D]: as many heads as k/v.
LogicalResult verifyPackedRows(Operation *op, Value q, Value k) {
  int64_t hq = cast<MemRefType>(q.getType()).getDimSize(1);
  int64_t hkv = cast<MemRefType>(k.getType()).getDimSize(1);
  if (!dimsAgree(hq, hkv))
    return op->emitOpError()
           << "packed rows need q viewed as [B, Hkv, G * M, D]: its head "
           << "count (" << hq << ") must match k's (" << hkv << ")";
  return success();
}

} // namespace mlir::flexattn::detail

//===----------------------------------------------------------------------===//
// flexattn.mod
//===----------------------------------------------------------------------===//

void ModOp::print(OpAsmPrinter &p) {
  p << ' ' << getKind();
  p.printOptionalAttrDictWithKeyword((*this)->getAttrs(), {"kind"});
  p << ' ';
  p.printRegion(getBody(), /*printEntryBlockArgs=*/true,
                /*printBlockTerminators=*/true);
}

ParseResult ModOp::parse(OpAsmParser &parser, OperationState &result) {
  StringRef kind;
  if (parser.parseKeyword(&kind))
    return failure();
  result.getOrAddProperties<ModOp::Properties>().kind =
      parser.getBuilder().getStringAttr(kind);
  if (parser.parseOptionalAttrDictWithKeyword(result.attributes))
    return failure();
  return parser.parseRegion(*result.addRegion(), /*arguments=*/{});
}

LogicalResult ModOp::verify() {
  StringRef kind = getKind();
  if (kind != "score_mod" && kind != "mask_mod")
    return emitOpError() << "kind must be score_mod or mask_mod, got " << kind;
  Block &block = getBody().front();
  unsigned fixed = getNumFixedArguments();
  if (block.getNumArguments() < fixed)
    return emitOpError() << kind << " must take " << fixed << " leading arguments "
                         << (fixed == 5 ? "(score, b, h, q_idx, kv_idx)"
                                        : "(b, h, q_idx, kv_idx)")
                         << ", got " << block.getNumArguments();
  // The captured buffers are the block's trailing arguments.
  TypeRange captures = TypeRange(block.getArgumentTypes()).drop_front(fixed);
  if (fixed == 4)
    return verifyMaskRegion(*this, getBody(), captures);
  return verifyRegion(*this, getBody(), "score_mod", true, captures, [&](YieldOp y) {
    return yieldsOne(*this, y, "score_mod", [](Type t) { return t.isF32(); }, "f32");
  });
}

LogicalResult mlir::flexattn::verifyModRegions(Operation *op) {
  auto mods = cast<ModRegionsOpInterface>(op);
  TypeRange captures = mods.getCaptures().getTypes();
  if (failed(verifyRegion(
          op, mods.getScoreMod(), "score_mod", true, captures, [&](YieldOp y) {
            return yieldsOne(op, y, "score_mod",
                             [](Type t) { return t.isF32(); }, "f32");
          })))
    return failure();
  return verifyMaskRegion(op, mods.getMaskMod(), captures);
}

//===----------------------------------------------------------------------===//
// Op verifiers
//===----------------------------------------------------------------------===//

LogicalResult AttentionOp::verify() {
  if (failed(verifyQKV(*this, getQ(), getK(), getV(), /*kvBatchBroadcast=*/true)) ||
      failed(verifyOutputs(*this, getQ(), getV(), getOut(), getLse())) ||
      failed(verifyRowStat(*this, getQ(), getMaxScores(), "max_scores")) ||
      failed(verifySinks(*this, getSinks(),
                         cast<MemRefType>(getQ().getType()).getDimSize(1))))
    return failure();
  if (!getKvNumBlocks() && getBlockSize())
    return emitOpError() << "block_size is given without a block_mask";
  return verifyBlockMask(*this, getQ(), getK(), getKvNumBlocks(),
                         getKvIndices(), getFullKvNumBlocks(),
                         getFullKvIndices(), getBlockSize());
}

LogicalResult KvLoopOp::verify() {
  if (failed(verifyQKV(*this, getQ(), getK(), getV())) ||
      failed(verifyTileSize(*this, getTileSize())))
    return failure();
  int64_t dv = cast<MemRefType>(getV().getType()).getShape()[3];
  if (failed(verifyState(*this, getAcc(), getMax(), getSum(),
                         getTileSize()[0], dv)))
    return failure();
  bool packed = getRowsPerHead() != nullptr;
  if (packed && failed(verifyPackedRows(*this, getQ(), getK())))
    return failure();
  if (!getSplit() != !getSplits())
    return emitOpError() << "split needs both the range and the number of "
                         << "ranges, got only one";
  if (failed(verifyBlockMask(*this, getQ(), getK(), getKvNumBlocks(),
                             getKvIndices(), getFullKvNumBlocks(),
                             getFullKvIndices(), getBlockSize(), packed)))
    return failure();
  if (!getKvNumBlocks() && getBlockSize())
    return emitOpError() << "block_size is given without a block_mask";
  if (auto bs = getBlockSize(); bs && getKvNumBlocks() && !packed) {
    if ((*bs)[1] % getTileSize()[1] != 0 || (*bs)[0] % getTileSize()[0] != 0)
      return emitOpError()
             << "with a block mask, tile_size[1] must divide block_size[1] and "
             << "tile_size[0] must divide block_size[0], got tile_size "
             << shapeStr(getTileSize()) << " and block_size " << shapeStr(*bs);
  }
  return success();
}

LogicalResult TileStepOp::verify() {
  if (failed(verifyQKV(*this, getQ(), getK(), getV())) ||
      failed(verifyTileSize(*this, getTileSize())))
    return failure();
  if (getRowsPerHead() && failed(verifyPackedRows(*this, getQ(), getK())))
    return failure();
  int64_t dv = cast<MemRefType>(getV().getType()).getShape()[3];
  return verifyState(*this, getAcc(), getMax(), getSum(), getTileSize()[0], dv);
}

LogicalResult FinalizeOp::verify() {
  auto outType = cast<MemRefType>(getOut().getType());
  if (outType.getRank() != 4)
    return emitOpError() << "out must be a 4-D memref [B, Hq, M, Dv], got rank "
                         << outType.getRank();
  if (failed(verifyState(*this, getAcc(), getMax(), getSum(), std::nullopt,
                         outType.getShape()[3])))
    return failure();
  return verifyFinalizeBuffers(*this, getLse(), getMaxScores(), getSinks(),
                               outType.getDimSize(1));
}

LogicalResult mlir::flexattn::verifyFinalizeBuffers(Operation *op, Value lse,
                                                    Value maxScores,
                                                    Value sinks,
                                                    int64_t heads) {
  for (auto [stat, role] : {std::pair<Value, StringRef>{lse, "lse"},
                            {maxScores, "max_scores"}}) {
    if (!stat)
      continue;
    auto st = cast<MemRefType>(stat.getType());
    if (st.getRank() != 3 || !st.getElementType().isF32())
      return op->emitOpError() << role
                               << " must be a 3-D f32 memref [B, Hq, M], got "
                               << st;
  }
  return verifySinks(op, sinks, heads);
}

LogicalResult mlir::flexattn::verifySinks(Operation *op, Value sinks,
                                          int64_t heads) {
  if (!sinks)
    return success();
  auto st = cast<MemRefType>(sinks.getType());
  if (st.getRank() != 1 || !st.getElementType().isF32())
    return op->emitOpError() << "sinks must be a 1-D f32 memref [Hq], got "
                             << st;
  if (!dimsAgree(st.getDimSize(0), heads))
    return op->emitOpError() << "sinks must hold one logit per query head ("
                             << heads << "), got " << st.getDimSize(0);
  return success();
}

LogicalResult CheckIndexOp::verify() {
  // (I64Attr getters return unsigned values: read the attributes signed.)
  int64_t size = getSizeAttr().getInt();
  if (size <= 0)
    return emitOpError() << "size must be positive, got " << size;
  if (getIndex().getType().getIntOrFloatBitWidth() > 64)
    return emitOpError() << "index must have at most 64 bits, got "
                         << getIndex().getType();
  if (auto bounds = getBounds()) {
    if (bounds->size() != 2 || (*bounds)[0] > (*bounds)[1])
      return emitOpError() << "bounds must be [lo, hi] with lo <= hi, got "
                           << shapeStr(*bounds);
  }
  if (auto dim = getDimAttr(); dim && dim.getInt() < 0)
    return emitOpError() << "dim must be non-negative, got " << dim.getInt();
  if (!getReport()) {
    if (getSiteAttr())
      return emitOpError() << "site is given without a report buffer";
    return success();
  }
  auto type = cast<MemRefType>(getReport().getType());
  if (type.getRank() != 2 || !dimsAgree(type.getShape()[1], 2))
    return emitOpError() << "report must be a [S, 2] memref of i64, got " << type;
  if (!getSiteAttr())
    return emitOpError() << "a report buffer requires the site attribute";
  int64_t site = getSiteAttr().getInt(), sites = type.getShape()[0];
  if (site < 0 || (!ShapedType::isDynamic(sites) && site >= sites))
    return emitOpError() << "site " << site << " is outside the report buffer's "
                         << sites << " rows";
  return success();
}
