//===- FoldTileDivisions.cpp - flexattn-fold-tile-divisions -----*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// An index inside a tile is the tile's start plus an offset smaller than the
// tile: `kv = kv0 + j`, kv0 a multiple of the tile width T, 0 <= j < T.
// Divided by P, a multiple of T (a page of a paged KV cache, a block of a
// block-diagonal mask), it is the tile start's quotient: `kv floordiv P ==
// kv0 floordiv P`. This pass proves that form on the inlined mods' integer
// arithmetic and rewrites the division to take the start, so everything
// computed from the quotient (the page table's load of a paged mask_mod) is
// the same for the whole tile: CSE keeps one per tile, the CPU vectoriser
// broadcasts one scalar instead of gathering a row.
//
// The proof works modulo 2^w (w the integer width), which is what makes it
// hold for wrapping arithmetic and across truncations: v is split as
// `v == base + off (mod 2^w)` with base a multiple of G (a power of two
// dividing P) and off a known range inside [0, G). The largest multiple of
// G that fits is 2^(w-1) - G, so base + off never wraps: the congruence is
// an equality, through extensions too, and
// floormod(base, P) <= P - G gives floordiv(base + off, P) ==
// floordiv(base, P) (and the same for divui).
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include <optional>

namespace mlir::flexattn {
#define GEN_PASS_DEF_FLEXATTNFOLDTILEDIVISIONS
#include "passes/Passes.h.inc"
} // namespace mlir::flexattn

using namespace mlir;
using namespace mlir::flexattn;

namespace {

/// A closed range of signed integers.
struct Range {
  int64_t lo = 0, hi = 0;
};

constexpr int64_t kBig = int64_t(1) << 40; // beyond any offset we accept

unsigned widthOf(Type type) {
  return type.isIndex() ? 64 : type.getIntOrFloatBitWidth();
}

std::optional<int64_t> constantOf(Value v) {
  APInt value;
  if (matchPattern(v, m_ConstantInt(&value)) && value.getSignificantBits() <= 64)
    return value.getSExtValue();
  return std::nullopt;
}

/// Integers of at most 64 bits (and index): what the split reasons about.
bool isNarrowInt(Type type) {
  return type.isIntOrIndex() && widthOf(type) <= 64;
}

bool isCast(Operation *op) {
  return isa<arith::IndexCastOp, arith::IndexCastUIOp, arith::ExtSIOp,
             arith::ExtUIOp, arith::TruncIOp>(op);
}

/// The largest power of two known to divide `v` (modulo its width), 1 when
/// nothing is known.
uint64_t powerOfTwoDividing(Value v, int depth = 0) {
  if (!isNarrowInt(v.getType()))
    return 1;
  uint64_t cap = uint64_t(1) << (widthOf(v.getType()) - 1);
  if (depth > 12)
    return 1;
  if (std::optional<int64_t> c = constantOf(v))
    return *c == 0 ? cap : std::min<uint64_t>(uint64_t(*c) & -uint64_t(*c), cap);
  if (auto arg = dyn_cast<BlockArgument>(v)) {
    // An scf.for induction variable: a multiple of the gcd of start and step.
    auto loop = dyn_cast<scf::ForOp>(arg.getOwner()->getParentOp());
    if (loop && arg == loop.getInductionVar())
      return std::min(powerOfTwoDividing(loop.getLowerBound(), depth + 1),
                      powerOfTwoDividing(loop.getStep(), depth + 1));
    return 1;
  }
  Operation *op = v.getDefiningOp();
  if (isa<arith::MulIOp>(op))
    return std::min(powerOfTwoDividing(op->getOperand(0), depth + 1) *
                        powerOfTwoDividing(op->getOperand(1), depth + 1),
                    cap);
  if (isa<arith::AddIOp, arith::SubIOp>(op))
    return std::min(powerOfTwoDividing(op->getOperand(0), depth + 1),
                    powerOfTwoDividing(op->getOperand(1), depth + 1));
  if (isa<arith::ShLIOp>(op))
    if (std::optional<int64_t> s = constantOf(op->getOperand(1)); s && *s >= 0 && *s < 62)
      return std::min(powerOfTwoDividing(op->getOperand(0), depth + 1) << *s, cap);
  if (isCast(op))
    return std::min(powerOfTwoDividing(op->getOperand(0), depth + 1), cap);
  return 1;
}

/// A range known to hold `v`: constants, remainders and masks, and the ids
/// that walk a tile (a thread of a constant-sized gpu.launch, an iteration of
/// a static linalg loop, an scf.for over constant bounds).
std::optional<Range> rangeOf(Value v, int depth = 0);

/// rangeOf's cases; rangeOf drops a range that does not fit v's type (the
/// arithmetic would have wrapped).
std::optional<Range> rangeOfOp(Value v, int depth) {
  if (depth > 12)
    return std::nullopt;
  if (std::optional<int64_t> c = constantOf(v))
    return Range{*c, *c};
  if (auto arg = dyn_cast<BlockArgument>(v)) {
    auto loop = dyn_cast<scf::ForOp>(arg.getOwner()->getParentOp());
    if (!loop || arg != loop.getInductionVar())
      return std::nullopt;
    std::optional<int64_t> lb = constantOf(loop.getLowerBound());
    std::optional<int64_t> ub = constantOf(loop.getUpperBound());
    if (!lb || !ub || *ub <= *lb)
      return std::nullopt;
    return Range{*lb, *ub - 1};
  }
  Operation *op = v.getDefiningOp();
  auto positive = [&](Value c) -> std::optional<int64_t> {
    std::optional<int64_t> k = constantOf(c);
    return k && *k > 0 && *k < kBig ? k : std::nullopt;
  };
  if (isa<arith::RemUIOp>(op))
    if (std::optional<int64_t> k = positive(op->getOperand(1)))
      return Range{0, *k - 1};
  if (isa<arith::AndIOp>(op))
    for (Value c : op->getOperands())
      if (std::optional<int64_t> k = constantOf(c); k && *k >= 0 && *k < kBig)
        return Range{0, *k};
  if (isa<arith::RemSIOp, arith::DivUIOp>(op))
    if (std::optional<int64_t> k = positive(op->getOperand(1)))
      if (std::optional<Range> x = rangeOf(op->getOperand(0), depth + 1);
          x && x->lo >= 0)
        return isa<arith::RemSIOp>(op) ? Range{0, std::min(x->hi, *k - 1)}
                                       : Range{x->lo / *k, x->hi / *k};
  if (isa<arith::AddIOp>(op)) {
    std::optional<Range> a = rangeOf(op->getOperand(0), depth + 1);
    std::optional<Range> b = rangeOf(op->getOperand(1), depth + 1);
    if (a && b)
      return Range{a->lo + b->lo, a->hi + b->hi};
    return std::nullopt;
  }
  if (isa<arith::MulIOp>(op)) {
    std::optional<Range> a = rangeOf(op->getOperand(0), depth + 1);
    std::optional<Range> b = rangeOf(op->getOperand(1), depth + 1);
    if (!a || !b || a->lo < 0 || b->lo < 0 || a->hi >= kBig || b->hi >= kBig ||
        (b->hi && a->hi > kBig / b->hi))
      return std::nullopt;
    return Range{a->lo * b->lo, a->hi * b->hi};
  }
  if (isa<arith::IndexCastOp, arith::IndexCastUIOp, arith::ExtSIOp,
          arith::ExtUIOp>(op))
    return rangeOf(op->getOperand(0), depth + 1);
  if (auto tid = dyn_cast<gpu::ThreadIdOp>(op)) {
    if (auto launch = op->getParentOfType<gpu::LaunchOp>()) {
      gpu::KernelDim3 sizes = launch.getBlockSizeOperandValues();
      Value size = tid.getDimension() == gpu::Dimension::x   ? sizes.x
                   : tid.getDimension() == gpu::Dimension::y ? sizes.y
                                                             : sizes.z;
      if (std::optional<int64_t> n = positive(size))
        return Range{0, *n - 1};
    }
    return Range{0, 1023};
  }
  if (isa<gpu::LaneIdOp>(op))
    return Range{0, 31};
  if (auto index = dyn_cast<linalg::IndexOp>(op))
    if (auto linalgOp = op->getParentOfType<linalg::LinalgOp>()) {
      SmallVector<int64_t> extents = linalgOp.getStaticLoopRanges();
      int64_t extent = extents[index.getDim()];
      if (!ShapedType::isDynamic(extent) && extent > 0)
        return Range{0, extent - 1};
    }
  return std::nullopt;
}

std::optional<Range> rangeOf(Value v, int depth) {
  std::optional<Range> r = rangeOfOp(v, depth);
  int64_t half = int64_t(1) << (std::min(widthOf(v.getType()), 41u) - 1);
  if (!r || r->lo < -half || r->hi >= half)
    return std::nullopt;
  // An unsigned extension of a negative value is a large one.
  Operation *op = v.getDefiningOp();
  if (op && isa<arith::ExtUIOp, arith::IndexCastUIOp>(op) && r->lo < 0)
    return std::nullopt;
  return r;
}

uint64_t lowBit(int64_t c) { return uint64_t(c) & -uint64_t(c); }

/// a * b for powers of two, kept below 2^62.
uint64_t timesCapped(uint64_t a, uint64_t b) {
  return a >= (uint64_t(1) << 62) / b ? uint64_t(1) << 62 : a * b;
}

/// What a split of `v` for a power of two `g` leaves: `v == base + off
/// (mod 2^w)`, base a multiple of `baseDiv` (no base: zero), off in `off`.
struct Split {
  Range off;
  uint64_t baseDiv = 0; // 0: no base term
};

/// Sums (addi), multiples (muli by a constant) and casts are split term by
/// term; a leaf term goes to the base when nothing bounds it (a tile start
/// loaded from the block indices) or when its multiple is divisible by `g`
/// (a sub-tile's start), to the offset otherwise (constants, thread and lane
/// ids, static loop indices). A truncation carries the congruence over; an
/// extension needs its operand's split to be exact already (off in [0, g)).
/// `scale` is the power of two dividing the constant factors above `v`.
bool isBaseLeaf(Value v, uint64_t g, uint64_t scale) {
  if (constantOf(v))
    return false;
  return !rangeOf(v) || timesCapped(powerOfTwoDividing(v), scale) >= g;
}

bool isSplitNode(Value v) {
  Operation *op = v.getDefiningOp();
  if (!op || constantOf(v))
    return false;
  if (!llvm::all_of(op->getOperandTypes(), isNarrowInt) || !isNarrowInt(v.getType()))
    return false;
  if (isa<arith::AddIOp>(op) || isCast(op))
    return true;
  if (isa<arith::MulIOp>(op))
    for (Value k : op->getOperands())
      if (std::optional<int64_t> c = constantOf(k); c && *c > 0 && *c < kBig)
        return true;
  return false;
}

/// The constant factor of a split muli and the operand it scales.
std::pair<Value, int64_t> scaledOperand(Operation *mul) {
  for (int i = 0; i < 2; ++i)
    if (std::optional<int64_t> c = constantOf(mul->getOperand(1 - i));
        c && *c > 0 && *c < kBig)
      return {mul->getOperand(i), *c};
  llvm_unreachable("not a multiple");
}

/// At most this many nodes per split: shared sub-expressions (a DAG) would
/// otherwise be walked once per path.
constexpr unsigned kMaxVisits = 512;

std::optional<Split> analyze(Value v, uint64_t g, uint64_t scale, unsigned &visits,
                             int depth = 0) {
  if (depth > 24 || ++visits > kMaxVisits)
    return std::nullopt;
  if (!isSplitNode(v)) {
    if (isBaseLeaf(v, g, scale))
      return Split{{0, 0}, std::max<uint64_t>(powerOfTwoDividing(v), 1)};
    std::optional<Range> r = rangeOf(v);
    if (!r) // a constant too large to be an offset
      return std::nullopt;
    return Split{*r, 0};
  }
  Operation *op = v.getDefiningOp();
  if (isa<arith::AddIOp>(op)) {
    std::optional<Split> x = analyze(op->getOperand(0), g, scale, visits, depth + 1);
    std::optional<Split> y = x ? analyze(op->getOperand(1), g, scale, visits, depth + 1) : x;
    if (!y)
      return std::nullopt;
    uint64_t div = !x->baseDiv   ? y->baseDiv
                   : !y->baseDiv ? x->baseDiv
                                 : std::min(x->baseDiv, y->baseDiv);
    return Split{{x->off.lo + y->off.lo, x->off.hi + y->off.hi}, div};
  }
  if (isa<arith::MulIOp>(op)) {
    auto [x, k] = scaledOperand(op);
    std::optional<Split> s = analyze(x, g, timesCapped(scale, lowBit(k)), visits, depth + 1);
    if (!s || std::max(std::abs(s->off.lo), std::abs(s->off.hi)) >= kBig / k)
      return std::nullopt;
    return Split{{s->off.lo * k, s->off.hi * k},
                 s->baseDiv ? timesCapped(s->baseDiv, lowBit(k)) : 0};
  }
  // A cast.
  Value from = op->getOperand(0);
  unsigned narrow = std::min(widthOf(v.getType()), widthOf(from.getType()));
  if (g > (uint64_t(1) << (narrow - 1)))
    return std::nullopt;
  std::optional<Split> s = analyze(from, g, scale, visits, depth + 1);
  if (!s)
    return std::nullopt;
  uint64_t cap = uint64_t(1) << (narrow - 1);
  // An extension: its operand must be base + off exactly, which holds when
  // off stays below base's multiple (no wrap, as for the whole split) or
  // alone fits; an unsigned one also needs a lone off to be non-negative.
  bool extends = widthOf(v.getType()) > widthOf(from.getType());
  int64_t half = int64_t(std::min<uint64_t>(cap, uint64_t(1) << 40));
  bool exact = s->baseDiv
                   ? s->off.lo >= 0 && uint64_t(s->off.hi) < std::min(s->baseDiv, cap)
                   : s->off.lo >= -half && s->off.hi < half &&
                         (s->off.lo >= 0 || isa<arith::ExtSIOp, arith::IndexCastOp>(op));
  if (extends && !exact && !(s->off.lo == 0 && s->off.hi == 0))
    return std::nullopt;
  return Split{s->off, s->baseDiv ? std::min(s->baseDiv, cap) : 0};
}

/// The base of `analyze`'s split, built before the builder's point (null:
/// no base term).
Value buildBase(OpBuilder &b, Value v, uint64_t g, uint64_t scale) {
  if (!isSplitNode(v))
    return isBaseLeaf(v, g, scale) ? v : Value();
  // All base (no offset under it): the value itself, not a copy.
  unsigned visits = 0;
  if (std::optional<Split> s = analyze(v, g, scale, visits);
      s && s->baseDiv && s->off.lo == 0 && s->off.hi == 0)
    return v;
  Operation *op = v.getDefiningOp();
  Location loc = v.getLoc();
  if (isa<arith::AddIOp>(op)) {
    Value x = buildBase(b, op->getOperand(0), g, scale);
    Value y = buildBase(b, op->getOperand(1), g, scale);
    return !x ? y : !y ? x : arith::AddIOp::create(b, loc, x, y).getResult();
  }
  if (isa<arith::MulIOp>(op)) {
    auto [x, k] = scaledOperand(op);
    Value base = buildBase(b, x, g, timesCapped(scale, lowBit(k)));
    if (!base)
      return base;
    Value factor = arith::ConstantOp::create(b, loc, v.getType(),
                                             b.getIntegerAttr(v.getType(), k));
    return arith::MulIOp::create(b, loc, base, factor).getResult();
  }
  Value base = buildBase(b, op->getOperand(0), g, scale);
  if (!base)
    return base;
  // The cast without its overflow flags: they spoke of the original value.
  return b.create(loc, op->getName().getIdentifier(), base, v.getType())
      ->getResult(0);
}

} // namespace

/// The tile start `v` splits into for a division by `divisor`, built before
/// `at`; null where the split does not fold (or `v` is the start already).
static Value tileStart(RewriterBase &rewriter, Value v, int64_t divisor,
                       Operation *at) {
  if (divisor <= 0 || !isNarrowInt(v.getType()))
    return Value();
  uint64_t cap = uint64_t(1) << (widthOf(v.getType()) - 1);
  // The largest modulus first: the fewest terms in the base.
  for (uint64_t g = std::min(lowBit(divisor), cap); g >= 2; g /= 2) {
    unsigned visits = 0;
    std::optional<Split> s = analyze(v, g, 1, visits);
    if (!s || !s->baseDiv || s->baseDiv < g || s->off.lo < 0 ||
        uint64_t(s->off.hi) >= g)
      continue;
    if (s->off.lo == 0 && s->off.hi == 0)
      return Value(); // already the base
    OpBuilder::InsertionGuard guard(rewriter);
    rewriter.setInsertionPoint(at);
    return buildBase(rewriter, v, g, 1);
  }
  return Value();
}

LogicalResult mlir::flexattn::foldTileDivision(RewriterBase &rewriter,
                                               Operation *op) {
  if (!isa<arith::FloorDivSIOp, arith::DivUIOp>(op))
    return failure();
  std::optional<int64_t> divisor = constantOf(op->getOperand(1));
  Value base = divisor ? tileStart(rewriter, op->getOperand(0), *divisor, op) : Value();
  if (!base)
    return failure();
  rewriter.modifyOpInPlace(op, [&] { op->setOperand(0, base); });
  return success();
}

/// `select(r != 0 and r < 0, r + P, r)` with `r = remsi(v, P)`: torch's
/// floor modulo (Python's `%`) as torch-mlir lowers it. Returns r.
static arith::RemSIOp matchFloorMod(arith::SelectOp select) {
  auto r = select.getFalseValue().getDefiningOp<arith::RemSIOp>();
  auto plus = select.getTrueValue().getDefiningOp<arith::AddIOp>();
  auto both = select.getCondition().getDefiningOp<arith::AndIOp>();
  if (!r || !plus || !both)
    return {};
  Value p = r.getRhs();
  bool addsP = (plus.getLhs() == r && plus.getRhs() == p) ||
               (plus.getRhs() == r && plus.getLhs() == p);
  auto isCompare = [&](Value c, arith::CmpIPredicate pred) {
    auto cmp = c.getDefiningOp<arith::CmpIOp>();
    return cmp && cmp.getPredicate() == pred && cmp.getLhs() == r &&
           matchPattern(cmp.getRhs(), m_Zero());
  };
  Value x = both.getLhs(), y = both.getRhs();
  bool negative =
      (isCompare(x, arith::CmpIPredicate::ne) && isCompare(y, arith::CmpIPredicate::slt)) ||
      (isCompare(y, arith::CmpIPredicate::ne) && isCompare(x, arith::CmpIPredicate::slt)) ||
      ((isCompare(x, arith::CmpIPredicate::slt) || isCompare(y, arith::CmpIPredicate::slt)) &&
       x == y);
  return addsP && negative ? r : arith::RemSIOp();
}

/// torch's floor modulo of a tile's index by a multiple of the tile ->
/// `index - P (start floordiv P)`: one subtraction per score.
static LogicalResult foldTileFloorMod(RewriterBase &rewriter,
                                      arith::SelectOp select) {
  arith::RemSIOp r = matchFloorMod(select);
  std::optional<int64_t> divisor = r ? constantOf(r.getRhs()) : std::nullopt;
  Value base = divisor ? tileStart(rewriter, r.getLhs(), *divisor, select) : Value();
  if (!base)
    return failure();
  // v mod P == v - P (v floordiv P), and v floordiv P is the start's.
  OpBuilder::InsertionGuard guard(rewriter);
  rewriter.setInsertionPoint(select);
  Location loc = select.getLoc();
  Value quotient = arith::FloorDivSIOp::create(rewriter, loc, base, r.getRhs());
  Value start = arith::MulIOp::create(rewriter, loc, quotient, r.getRhs());
  rewriter.replaceOpWithNewOp<arith::SubIOp>(select, r.getLhs(), start);
  return success();
}

namespace {
struct FlexAttnFoldTileDivisionsPass
    : public flexattn::impl::FlexAttnFoldTileDivisionsBase<
          FlexAttnFoldTileDivisionsPass> {
  void runOnOperation() override {
    SmallVector<Operation *> divisions;
    SmallVector<arith::SelectOp> selects;
    getOperation()->walk([&](Operation *op) {
      if (isa<arith::FloorDivSIOp, arith::DivUIOp>(op))
        divisions.push_back(op);
      else if (auto select = dyn_cast<arith::SelectOp>(op))
        selects.push_back(select);
    });
    IRRewriter rewriter(&getContext());
    for (Operation *op : divisions)
      (void)foldTileDivision(rewriter, op);
    // The remainder's ops left dead go with the canonicalize / DCE that
    // follows in every pipeline.
    for (arith::SelectOp select : selects)
      (void)foldTileFloorMod(rewriter, select);
  }
};
} // namespace
