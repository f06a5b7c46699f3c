//===- LowerFragments.cpp - flexattn-lower-fragments ------------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// Lowers the register-fragment ops to scalar code: each fragment element is
// a vector.extract, rows are reduced over the thread's elements and then
// across the 4 threads that share a row (gpu.shuffle xor 1, 2), and the
// online softmax is the shared decomposition of OnlineSoftmax.h with
// `FragmentRows` as its row backend. Target-neutral: any GPU whose MMA
// accumulators use the m16n8 layout (Hopper's wgmma, Ampere's mma.sync)
// takes the same code.
//
// Part of P's exponentials on the FMA pipe (OnlineSoftmax.h,
// `exp2OnFma`): where an enclosing op (the kernel's gpu.launch, set by the
// backend) carries `flexattn.exp2_poly = k`, the math.exp2 of k of every 16
// elements of 16-bit P is marked `flexattn.fma_exp2` (spread evenly over
// the fragment); flexattn-lower-to-nvvm expands the marked ones. alpha's
// exp2 and float32 P are left to ex2.approx.
//
// Fragment layout (T m16 tiles per warp, E = elements of one m16 tile):
// element e = E i + 4 j + 2 h + q holds (row + 16 i + 8 h, col + 8 j + q);
// row value 2 i + h is row + 16 i + 8 h. T is read off the row values
// (vector<2Txf32>).
//
//===----------------------------------------------------------------------===//

#include "passes/OnlineSoftmax.h"
#include "passes/Passes.h"
#include "passes/QuadTranspose.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"
#include <limits>

namespace mlir::flexattn {
#define GEN_PASS_DEF_FLEXATTNLOWERFRAGMENTS
#include "passes/Passes.h.inc"
} // namespace mlir::flexattn

using namespace mlir;
using namespace mlir::flexattn;

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

/// Where a fragment's elements sit: `rows` row values (2 per m16 tile) over
/// `size` elements.
struct Layout {
  int64_t rows, perTile;
  Layout(int64_t size, int64_t rows) : rows(rows), perTile(size / (rows / 2)) {}
  Layout(Value frag, Value rowValues)
      : Layout(cast<VectorType>(frag.getType()).getNumElements(),
               cast<VectorType>(rowValues.getType()).getNumElements()) {}
  /// The row value of element e.
  int64_t rowOf(int64_t e) const { return 2 * (e / perTile) + (e / 2) % 2; }
  /// Its column offset from the thread's first column.
  int64_t colOf(int64_t e) const { return 8 * ((e % perTile) / 4) + e % 2; }
  /// The row offset of row value r from the thread's first row.
  static int64_t rowOffset(int64_t r) { return 16 * (r / 2) + 8 * (r % 2); }
};

struct Fragments {
  ImplicitLocOpBuilder &b;

  Value f32(float v) { return arith::ConstantOp::create(b, b.getF32FloatAttr(v)); }
  Value i32(int64_t v) { return arith::ConstantIntOp::create(b, v, 32); }
  Value index(int64_t v) { return arith::ConstantIndexOp::create(b, v); }
  Value toI32(Value v) {
    return arith::IndexCastOp::create(b, b.getI32Type(), v);
  }
  Value toIndex(Value v) {
    return arith::IndexCastOp::create(b, b.getIndexType(), v);
  }

  SmallVector<Value> elements(Value vector) {
    SmallVector<Value> out;
    int64_t n = cast<VectorType>(vector.getType()).getNumElements();
    for (int64_t i = 0; i < n; ++i)
      out.push_back(vector::ExtractOp::create(b, vector, ArrayRef<int64_t>{i}));
    return out;
  }
  Value vectorOf(ValueRange elems) {
    return vector::FromElementsOp::create(
        b, VectorType::get({int64_t(elems.size())}, elems.front().getType()), elems);
  }

  /// The sum (or max) of a value over the 4 threads that share a row.
  Value acrossQuad(Value v, bool max) {
    for (int64_t off : {1, 2}) {
      Value other = gpu::ShuffleOp::create(b, v, off, 32, gpu::ShuffleMode::XOR)
                        .getShuffleResult();
      v = max ? arith::MaxNumFOp::create(b, v, other).getResult()
              : arith::AddFOp::create(b, v, other).getResult();
    }
    return v;
  }

  /// The max (or sum) of a thread's values of one row, as `chains`
  /// independent chains combined pairwise at the end (one chain: each step
  /// waits for the one before, 32 dependent instructions per row of a
  /// 128-column tile; kReduceChainsAttr).
  int64_t chains = 1, maxChains = 0; // maxChains: the max's own (0: chains)
  Value reduceChains(ArrayRef<Value> values, bool max) {
    const size_t kChains = std::max<int64_t>(max && maxChains ? maxChains : chains, 1);
    auto combine = [&](Value x, Value y) -> Value {
      return max ? arith::MaxNumFOp::create(b, x, y).getResult()
                 : arith::AddFOp::create(b, x, y).getResult();
    };
    if (kChains == 1) { // from -inf (max) or 0 (sum), as the kernels measured
      Value acc = f32(max ? kNegInf : 0.0f);
      for (Value v : values)
        acc = combine(acc, v);
      return acc;
    }
    SmallVector<Value> partial(values.take_front(kChains));
    for (size_t i = partial.size(); i < values.size(); ++i)
      partial[i % kChains] = combine(partial[i % kChains], values[i]);
    while (partial.size() > 1) {
      SmallVector<Value> next;
      for (size_t i = 0; i + 1 < partial.size(); i += 2)
        next.push_back(combine(partial[i], partial[i + 1]));
      if (partial.size() % 2)
        next.push_back(partial.back());
      partial = std::move(next);
    }
    return partial.front();
  }

  /// f32 values rounded in pairs (lo, hi) to 16-bit `elem`: the packed
  /// halves the MMA's register A operand and the output stores take (an
  /// f32 `elem` keeps them as they are).
  Value pair(Value lo, Value hi, Type elem) {
    Value v = vectorOf({lo, hi});
    if (elem.isF32())
      return v;
    return arith::TruncFOp::create(b, VectorType::get({2}, elem), v);
  }
  Value roundPairs(ArrayRef<Value> elems, Type elem) {
    auto type = VectorType::get({int64_t(elems.size())}, elem);
    Value out = arith::ConstantOp::create(
        b, DenseElementsAttr::get(type, b.getZeroAttr(elem)));
    for (int64_t i = 0; i + 1 < int64_t(elems.size()); i += 2)
      out = vector::InsertStridedSliceOp::create(
          b, pair(elems[i], elems[i + 1], elem), out, ArrayRef<int64_t>{i},
          ArrayRef<int64_t>{1});
    return out;
  }
};

/// The online softmax's rows on register fragments: a tile is a fragment
/// (vector<N x f32>), a row value a vector<2xf32> (rows `row`, `row + 8`).
struct FragmentRows : softmax::SoftmaxRows, Fragments {
  explicit FragmentRows(ImplicitLocOpBuilder &b) : Fragments{b} {}

  SmallVector<SmallVector<Value>> all(ValueRange values) {
    SmallVector<SmallVector<Value>> out;
    for (Value v : values)
      out.push_back(elements(v));
    return out;
  }

  Value rowMax(Value tile, Value init, float c) override {
    SmallVector<Value> u = elements(tile), m = elements(init), out;
    Layout at(tile, init);
    for (int64_t h = 0; h < at.rows; ++h) {
      SmallVector<Value> row;
      for (int64_t e = 0; e < int64_t(u.size()); ++e)
        if (at.rowOf(e) == h)
          row.push_back(u[e]);
      Value mx = row.empty() ? f32(kNegInf) : reduceChains(row, /*max=*/true);
      mx = acrossQuad(mx, /*max=*/true);
      if (c != 1.0f)
        mx = arith::MulFOp::create(b, mx, f32(c));
      out.push_back(arith::MaxNumFOp::create(b, m[h], mx));
    }
    return vectorOf(out);
  }
  Value mapRows(ValueRange rows, softmax::ScalarFn f) override {
    auto in = all(rows);
    SmallVector<Value> out;
    for (int64_t h = 0; h < int64_t(in.front().size()); ++h) {
      SmallVector<Value> args;
      for (auto &r : in)
        args.push_back(r[h]);
      out.push_back(f(b, b.getLoc(), args));
    }
    return vectorOf(out);
  }
  Value updateRows(Value target, ValueRange inputs, softmax::ScalarFn f) override {
    SmallVector<Value> rows(inputs);
    rows.push_back(target);
    return mapRows(rows, f);
  }
  Value updateTile(Value tile, ValueRange rows, softmax::ScalarFn f) override {
    auto in = all(rows);
    SmallVector<Value> t = elements(tile), out;
    Layout at(t.size(), in.front().size());
    for (int64_t e = 0; e < int64_t(t.size()); ++e) {
      SmallVector<Value> args;
      for (auto &r : in)
        args.push_back(r[at.rowOf(e)]);
      args.push_back(t[e]);
      out.push_back(f(b, b.getLoc(), args));
    }
    return vectorOf(out);
  }
  Value addRowSums(Value target, Value tile) override {
    SmallVector<Value> t = elements(tile), l = elements(target);
    Layout at(tile, target);
    if (chains <= 1) { // one chain per row, the rows' adds interleaved
      SmallVector<Value> sum(at.rows, f32(0.0f));
      for (int64_t e = 0; e < int64_t(t.size()); ++e)
        sum[at.rowOf(e)] = arith::AddFOp::create(b, sum[at.rowOf(e)], t[e]);
      for (int64_t h = 0; h < at.rows; ++h)
        sum[h] = arith::AddFOp::create(b, l[h], sum[h]);
      return vectorOf(sum);
    }
    SmallVector<SmallVector<Value>> rows(at.rows);
    for (int64_t e = 0; e < int64_t(t.size()); ++e)
      rows[at.rowOf(e)].push_back(t[e]);
    SmallVector<Value> sum;
    for (int64_t h = 0; h < at.rows; ++h)
      sum.push_back(rows[h].empty()
                        ? l[h]
                        : arith::AddFOp::create(b, l[h], reduceChains(rows[h], /*max=*/false))
                              .getResult());
    return vectorOf(sum);
  }
};

/// Marks the float arithmetic in `region` `fastmath<contract>` (LLVM may
/// fuse a multiply and an add into one fma, as Triton does by default).
void contractFloatMath(Region &region) {
  region.walk([](arith::ArithFastMathInterface fm) {
    arith::FastMathFlagsAttr flags = fm.getFastMathFlagsAttr();
    fm->setAttr(fm.getFastMathAttrName(),
                arith::FastMathFlagsAttr::get(
                    fm->getContext(), (flags ? flags.getValue() : arith::FastMathFlags::none) |
                                          arith::FastMathFlags::contract));
  });
}

/// The nearest op enclosing `op` that has attribute `mark` (the driver
/// marks the kernel's launch), or null.
Operation *markedBy(Operation *op, StringRef mark) {
  for (Operation *p = op->getParentOp(); p; p = p->getParentOp())
    if (p->hasAttr(mark))
      return p;
  return nullptr;
}

bool marked(Operation *op, StringRef mark) { return markedBy(op, mark); }

/// u = log2(e) mods(scale S) per fragment element, -inf past N; the mods see
/// indices clamped inside [0, M) x [0, N). `natural`: u = mods(scale S)
/// (log2(e) then joins P's exponent fma; the score_mod's arithmetic may
/// contract into fma, as torch flex's Triton backend's does). `rawMax` (no
/// score_mod): u is the raw S, a mask_mod's -inf applied to it
/// (P = exp2(scale log2(e) u - m)).
Value scoresOf(Fragments &f, FragSoftmaxOp op, bool rawMax, bool natural) {
  ImplicitLocOpBuilder &b = f.b;
  int64_t BM = op.getTileSize()[0], BN = op.getTileSize()[1];
  // M and N: the seq_lens attribute, or the run-time lens (a dynamic-shape
  // kernel: every row and key is then checked, as for a partial last tile).
  std::optional<ArrayRef<int64_t>> lens = op.getSeqLens();
  SmallVector<Value> dyn;
  for (Value len : op.getLens())
    dyn.push_back(f.toI32(len));
  bool qTail = !lens || (*lens)[0] % BM != 0, kvTail = !lens || (*lens)[1] % BN != 0;
  auto length = [&](int i) -> Value { return lens ? f.i32((*lens)[i]) : dyn[i]; };
  auto last = [&](int i) -> Value { // length - 1
    return lens ? f.i32((*lens)[i] - 1)
                : arith::SubIOp::create(b, dyn[i], f.i32(1)).getResult();
  };
  bool applyMask = op.getMasked() && op.hasMaskMod();
  bool scoreMod = op.hasScoreMod();
  float scale = op.getScale().convertToFloat();
  Layout at(op.getScores(), op.getMax());
  // On a launch marked kExactIndexFloatsAttr a score_mod that turns an
  // integer into a float gets its indices clamped to the static lengths
  // even without a tail: no-ops that tell range analysis q_idx < M and
  // kv_idx < N (flexattn-exact-int-to-float). Other mods keep their index
  // arithmetic as it is (a clamp would hide a tile's structure from
  // flexattn-fold-tile-divisions).
  bool boundIndices =
      lens && scoreMod && marked(op, softmax::kExactIndexFloatsAttr) &&
      op.getScoreMod()
          .walk([](Operation *x) {
            return isa<arith::SIToFPOp, arith::UIToFPOp>(x) ? WalkResult::interrupt()
                                                             : WalkResult::advance();
          })
          .wasInterrupted();
  Value qRow0 = f.toI32(op.getRow());
  // Each row value's head and query index (a packed row r: head h + r / m,
  // query r mod m).
  SmallVector<Value> qIdx, heads;
  for (int64_t r = 0; r < at.rows; ++r) {
    Value row = r ? arith::AddIOp::create(b, qRow0, f.i32(Layout::rowOffset(r))).getResult()
                  : qRow0;
    if (qTail || (boundIndices && !op.getRowsPerHead()))
      row = arith::MinUIOp::create(b, row, last(0));
    Value head = op.getH();
    if (Value m = op.getRowsPerHead()) {
      Value perHead = f.toI32(m);
      head = arith::AddIOp::create(
          b, head, f.toIndex(arith::DivUIOp::create(b, row, perHead)));
      row = arith::RemUIOp::create(b, row, perHead);
    }
    qIdx.push_back(f.toIndex(row));
    heads.push_back(head);
  }
  // The thread's first column (the tile's start plus the lane's column) and
  // its elements' offsets from it: without a tail every column is below N,
  // so the first is at most N - 1 - the largest offset (clamped there once
  // per tile for a bounded kv_idx).
  Value kvCol0 = f.toI32(op.getCol());
  Value kvStart = kvCol0;
  if (boundIndices && !kvTail) {
    int64_t lastOffset = 0;
    for (int64_t e = 0; e < at.perTile; ++e)
      lastOffset = std::max(lastOffset, at.colOf(e));
    kvStart = arith::MinUIOp::create(b, kvCol0, f.i32((*lens)[1] - 1 - lastOffset));
  }
  SmallVector<Value> s = f.elements(op.getScores()), u;
  for (int64_t e = 0; e < int64_t(s.size()); ++e) {
    Value kvIdx = arith::AddIOp::create(b, kvCol0, f.i32(at.colOf(e)));
    Value v = s[e];
    Value kvMod = kvStart == kvCol0 ? kvIdx
                                    : arith::AddIOp::create(b, kvStart, f.i32(at.colOf(e)));
    if (kvTail && (scoreMod || applyMask))
      kvMod = arith::MinUIOp::create(b, kvIdx, last(1));
    auto applyMods = [&](Value x) -> Value {
      auto apply = ApplyModsOp::create(
          b, b.getF32Type(), x, op.getB(), heads[at.rowOf(e)], qIdx[at.rowOf(e)],
          f.toIndex(kvMod), op.getCaptures(),
          applyMask ? b.getUnitAttr() : UnitAttr());
      cloneModRegions(op, apply, applyMask);
      if (natural) // the score_mod's float arithmetic may contract into fma
        contractFloatMath(apply.getScoreMod());
      return apply.getResult();
    };
    if (natural) {
      // The score_mod's own arithmetic may contract with the scale (scale S
      // + bias is one fma).
      v = arith::MulFOp::create(b, s[e], f.f32(scale), arith::FastMathFlags::contract);
      if (scoreMod || applyMask)
        v = applyMods(v);
    } else if (!rawMax) {
      v = softmax::log2Score(b, b.getLoc(), s[e], scale,
                             scoreMod || applyMask ? function_ref<Value(Value)>(applyMods)
                                                   : nullptr);
    } else if (applyMask) {
      // A mask_mod alone keeps a score or makes it -inf, whatever its scale:
      // on the raw score, exp2(S c - m) stays one FMA per element, as for an
      // unmasked tile.
      v = applyMods(v);
    }
    if (kvTail) {
      Value inside = arith::CmpIOp::create(b, arith::CmpIPredicate::ult, kvIdx, length(1));
      v = arith::SelectOp::create(b, inside, v, f.f32(kNegInf));
    }
    u.push_back(v);
  }
  return f.vectorOf(u);
}

/// k of every kFmaExp2Period elements of P on the FMA pipe: the
/// kExp2PolyAttr of the nearest enclosing op that has one (the backend sets
/// it on the kernel's launch), 0 without one; an error for a bad value.
FailureOr<int64_t> fmaExp2Share(FragSoftmaxOp op) {
  Operation *p = markedBy(op, softmax::kExp2PolyAttr);
  if (!p)
    return 0;
  Attribute attr = p->getAttr(softmax::kExp2PolyAttr);
  auto k = dyn_cast<IntegerAttr>(attr);
  if (!k || !k.getType().isSignlessInteger() || k.getInt() < 0 ||
      k.getInt() > softmax::kFmaExp2Period) {
    p->emitOpError() << softmax::kExp2PolyAttr << " must be an integer in [0, "
                     << softmax::kFmaExp2Period << "] (the elements of P of every "
                     << softmax::kFmaExp2Period << " whose exp2 runs on the FMA pipe), got "
                     << attr;
    return failure();
  }
  return k.getInt();
}

/// Marks the exp2 of k of every kFmaExp2Period elements of P (`probs`, the
/// step's vector of exponentials) with kFmaExp2Mark.
void markFmaExp2(Value probs, int64_t k) {
  auto elems = probs.getDefiningOp<vector::FromElementsOp>();
  if (!elems)
    return;
  for (auto [e, p] : llvm::enumerate(elems.getElements()))
    if (auto exp2 = p.getDefiningOp<math::Exp2Op>(); exp2 && softmax::takesFmaExp2(e, k))
      exp2->setAttr(softmax::kFmaExp2Mark, UnitAttr::get(exp2.getContext()));
}

LogicalResult lowerSoftmax(ImplicitLocOpBuilder &b, FragSoftmaxOp op) {
  FailureOr<int64_t> fmaShare = fmaExp2Share(op);
  if (failed(fmaShare))
    return failure();
  FragmentRows rows(b);
  for (auto [attr, field] : {std::pair{softmax::kReduceChainsAttr, &rows.chains},
                               std::pair{softmax::kMaxChainsAttr, &rows.maxChains}}) {
    auto chains = op->getAttrOfType<IntegerAttr>(attr);
    if (!chains)
      continue;
    if (chains.getInt() < 1 || chains.getInt() > 16)
      return op.emitOpError() << attr << " must be in [1, 16], got " << chains.getInt();
    *field = chains.getInt();
  }
  float scale = op.getScale().convertToFloat();
  // Without mods (or, on a launch marked kMaskedRawMaxAttr, without a
  // score_mod: the mask_mod's -inf applied to the raw scores) the max is
  // taken over the raw scores and scale log2(e) is applied once per row,
  // then fused into P's exponent: exp2(S c - m). Otherwise, on a launch
  // marked kNaturalScoresAttr, u = mods(scale S) and c = log2(e): one fma
  // per element too; else u = log2(e) mods(scale S), c = 1.
  bool applyMask = op.getMasked() && op.hasMaskMod();
  bool rawMax = !op.hasScoreMod() &&
                (!applyMask || marked(op, softmax::kMaskedRawMaxAttr)) && scale > 0;
  bool natural = !rawMax && marked(op, softmax::kNaturalScoresAttr);
  float c = static_cast<float>(rawMax ? scale * kLog2e : natural ? kLog2e : 1.0);
  Value u = scoresOf(rows, op, rawMax, natural);
  softmax::StepResult r =
      softmax::onlineSoftmaxStep(rows, {op.getMax(), op.getSum(), Value()}, u, c);
  // Part of P's exp2s on the FMA pipe: P rounded to 16 bits only (here, or
  // after the deferred P.V's wait: flexattn-schedule-consumers); float32 P
  // keeps ex2.approx's accuracy; alpha's stay on the special-function unit.
  Type probType = op.getProbs().getType().getElementType();
  bool rounded = !probType.isF32() || op->hasAttr(softmax::kProbsRoundedAttr);
  if (*fmaShare && rounded)
    markFmaExp2(r.probs, *fmaShare);
  Value probs = rows.roundPairs(rows.elements(r.probs), probType);
  op.replaceAllUsesWith(ValueRange{probs, r.newMax, r.newSum, r.alpha});
  return success();
}

LogicalResult lowerFinalize(ImplicitLocOpBuilder &b, FragFinalizeOp op) {
  Fragments f{b};
  auto outType = cast<MemRefType>(op.getOut().getType());
  int64_t Hq = outType.getDimSize(1), Dv = outType.getDimSize(3);
  // M: static, or a run-time size (a dynamic-shape kernel's out).
  Value dynM = outType.isDynamicDim(2) ? memref::DimOp::create(b, op.getOut(), 2).getResult()
                                       : Value();
  auto rowsTimes = [&](int64_t c) -> Value { // M * c
    if (!dynM)
      return f.index(outType.getDimSize(2) * c);
    return c == 1 ? dynM : arith::MulIOp::create(b, dynM, f.index(c)).getResult();
  };
  Type elem = outType.getElementType();
  // 16-bit outputs, or f32 (fp32 inputs, and the decode kernel's partial
  // rows); row-major [B, H, M, Dv], at an offset where out is a view (a
  // split's part).
  int64_t bytes = elem.getIntOrFloatBitWidth() / 8;
  // Byte address of out[b, h, 0, 0].
  Value outBase = memref::ExtractAlignedPointerAsIndexOp::create(b, op.getOut());
  if (!outType.getLayout().isIdentity()) {
    Value offset = memref::ExtractStridedMetadataOp::create(b, op.getOut()).getOffset();
    outBase = arith::AddIOp::create(
        b, outBase, arith::MulIOp::create(b, offset, f.index(bytes)));
  }
  Value head = arith::AddIOp::create(
      b, arith::MulIOp::create(b, op.getB(), f.index(Hq)), op.getH());
  Value headBase = arith::AddIOp::create(
      b, outBase,
      arith::MulIOp::create(b, head, rowsTimes(Dv * bytes)));
  // The rows' complete sums (over the threads sharing a row), then the sink.
  FragmentRows rows(b);
  Layout at(op.getAcc(), op.getMax());
  SmallVector<Value> complete;
  for (Value partial : f.elements(op.getSum()))
    complete.push_back(f.acrossQuad(partial, /*max=*/false));
  softmax::State state = {op.getMax(), f.vectorOf(complete), op.getAcc()};
  if (Value sinks = op.getSinks()) {
    Value sink = memref::LoadOp::create(b, sinks, op.getH());
    state = softmax::foldSink(rows, state, softmax::sinkLog2(b, b.getLoc(), sink));
  }
  SmallVector<Value> acc = f.elements(state.acc);
  SmallVector<Value> m = f.elements(state.max), l = f.elements(state.sum);
  SmallVector<Value> scoreMax = f.elements(op.getMax());
  // 16-bit rows of whole 32-column groups in a contiguous out: each 4 j's
  // pairs transposed across the quad (QuadTranspose.h), 16-byte stores.
  // Not with two m16 tiles per warp (sm_80's 32-row tiling): twice the
  // accumulator is live at the epilogue there, at 255 registers, and the
  // transposed words spilled 4-8 bytes more (test_gpu_codegen_sm80).
  bool wide = !elem.isF32() && Dv % 32 == 0 && outType.getLayout().isIdentity() &&
              at.rows == 2;
  auto ptrAt = [&](Value addr) {
    return LLVM::IntToPtrOp::create(
        b, LLVM::LLVMPointerType::get(b.getContext(), 1),
        arith::IndexCastUIOp::create(b, b.getI64Type(), addr).getResult());
  };
  for (int64_t h = 0; h < at.rows; ++h) {
    Value sum = l[h];
    // out = acc / l, 0 where l = 0: one reciprocal per row
    Value inv = softmax::safeDivide(b, b.getLoc(), f.f32(1.0f), sum);
    Value row = arith::AddIOp::create(b, op.getRow(), f.index(Layout::rowOffset(h)));
    int64_t first = at.perTile * (h / 2) + 2 * (h % 2); // the row's first element
    auto pairOf = [&](int64_t j) {
      Value lo = arith::MulFOp::create(b, acc[first + 4 * j], inv);
      Value hi = arith::MulFOp::create(b, acc[first + 4 * j + 1], inv);
      return f.pair(lo, hi, elem);
    };
    auto word = [&](Value pair) -> Value { // a 16-bit pair as one i32
      Value packed = vector::BitCastOp::create(b, VectorType::get({1}, b.getI32Type()), pair);
      return vector::ExtractOp::create(b, packed, ArrayRef<int64_t>{0});
    };
    // The quad's shuffles run in every lane (its rows may lie outside).
    SmallVector<Value> words;
    if (wide)
      for (int64_t g = 0; g < Dv / 32; ++g) {
        SmallVector<Value> four;
        for (int64_t j = 4 * g; j < 4 * g + 4; ++j)
          four.push_back(word(pairOf(j)));
        llvm::append_range(words, quadTranspose(b, op.getCol(), four));
      }
    Value inside = arith::CmpIOp::create(b, arith::CmpIPredicate::ult, row, rowsTimes(1));
    auto ifOp = scf::IfOp::create(b, inside, /*withElseRegion=*/false);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(&ifOp.getThenRegion().front());
    Value rowAddr = arith::AddIOp::create(
        b, headBase, arith::MulIOp::create(b, row, f.index(Dv * bytes)));
    for (int64_t g = 0; wide && g < Dv / 32; ++g) {
      // Lane q (col = 2 q): columns 8 (4 g + q) .. + 7 = 32 g + 4 col.
      Value col = arith::AddIOp::create(
          b, arith::MulIOp::create(b, op.getCol(), f.index(4)), f.index(32 * g));
      Value v = vector::FromElementsOp::create(b, VectorType::get({4}, b.getI32Type()),
                                               ArrayRef(words).slice(4 * g, 4));
      LLVM::StoreOp::create(
          b, v, ptrAt(arith::AddIOp::create(b, rowAddr, arith::MulIOp::create(b, col, f.index(bytes)))),
          /*alignment=*/16);
    }
    for (int64_t j = 0; !wide && j < Dv / 8; ++j) {
      Value col = arith::AddIOp::create(b, op.getCol(), f.index(8 * j));
      Value ptr = ptrAt(arith::AddIOp::create(b, rowAddr,
                                              arith::MulIOp::create(b, col, f.index(bytes))));
      Value pair = pairOf(j);
      if (elem.isF32()) { // one 8-byte store of the two floats
        LLVM::StoreOp::create(b, pair, ptr, /*alignment=*/8);
        continue;
      }
      LLVM::StoreOp::create(b, word(pair), ptr, /*alignment=*/4);
    }
    if (!op.getLse() && !op.getMaxScores())
      continue;
    // By the row's first thread: lse = ln(2) (m + log2 l), -inf where l = 0;
    // max_scores = ln(2) m (the scores' max, without the sink)
    Value firstThread = arith::CmpIOp::create(b, arith::CmpIPredicate::eq, op.getCol(),
                                              f.index(0));
    auto statIf = scf::IfOp::create(b, firstThread, /*withElseRegion=*/false);
    OpBuilder::InsertionGuard g2(b);
    b.setInsertionPointToStart(&statIf.getThenRegion().front());
    SmallVector<Value> where = {op.getB(), op.getH(), row};
    if (Value lse = op.getLse())
      memref::StoreOp::create(b, softmax::logSumExp(b, b.getLoc(), m[h], sum), lse, where);
    if (Value maxScores = op.getMaxScores())
      memref::StoreOp::create(b, softmax::maxScore(b, b.getLoc(), scoreMax[h]),
                              maxScores, where);
  }
  return success();
}

} // namespace

LogicalResult mlir::flexattn::lowerFragmentOp(RewriterBase &rewriter,
                                              Operation *op) {
  ImplicitLocOpBuilder b(op->getLoc(), rewriter);
  b.setInsertionPoint(op);
  LogicalResult result = success();
  if (auto softmaxOp = dyn_cast<FragSoftmaxOp>(op)) {
    result = lowerSoftmax(b, softmaxOp);
  } else if (auto rescale = dyn_cast<FragRescaleOp>(op)) {
    FragmentRows rows(b);
    rescale.replaceAllUsesWith(
        softmax::rescaleAccumulator(rows, rescale.getAcc(), rescale.getAlpha()));
  } else if (auto fin = dyn_cast<FragFinalizeOp>(op)) {
    result = lowerFinalize(b, fin);
  } else {
    return op->emitOpError("is not a register-fragment op");
  }
  if (succeeded(result))
    rewriter.eraseOp(op);
  return result;
}

namespace {
struct FlexAttnLowerFragmentsPass
    : public flexattn::impl::FlexAttnLowerFragmentsBase<FlexAttnLowerFragmentsPass> {
  void runOnOperation() override {
    SmallVector<Operation *> ops;
    getOperation()->walk([&](Operation *op) {
      if (isa<FragSoftmaxOp, FragRescaleOp, FragFinalizeOp>(op))
        ops.push_back(op);
    });
    IRRewriter rewriter(&getContext());
    for (Operation *op : ops)
      if (failed(lowerFragmentOp(rewriter, op)))
        return signalPassFailure();
  }
};
} // namespace
