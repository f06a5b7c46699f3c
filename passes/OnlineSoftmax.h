//===- OnlineSoftmax.h - the online-softmax decomposition -------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// The one definition of the online softmax, shared by the CPU
// (flexattn-fuse-online-softmax: linalg ops on tile buffers) and the GPU
// (flexattn-lower-fragments: register fragments, rows reduced with quad
// shuffles). Scores are in log2 units: log2(e) is folded into the scale, so
// every exponential is an exp2.
//
// Two layers:
//  - scalar formulas (finiteBase, rescaleFactor, probability, safeDivide,
//    logSumExp, log2Score): one builder each, called inside whatever loop or
//    linalg body a backend makes;
//  - the step, `onlineSoftmaxStep`: the order of the updates, written once
//    against `SoftmaxRows`, the interface through which a backend maps and
//    reduces the rows of its tiles.
//
//===----------------------------------------------------------------------===//

#ifndef FLEXATTN_PASSES_ONLINESOFTMAX_H
#define FLEXATTN_PASSES_ONLINESOFTMAX_H

#include "mlir/IR/Builders.h"

namespace mlir::flexattn::softmax {

//===----------------------------------------------------------------------===//
// Scalar formulas (f32)
//===----------------------------------------------------------------------===//

/// The running max as a subtraction base: m, or 0 for a row with no finite
/// score yet (so exp2(-inf - base) = 0 instead of NaN).
Value finiteBase(OpBuilder &b, Location loc, Value m);

/// alpha = exp2(m - base(m_new)): how much the old running values shrink.
Value rescaleFactor(OpBuilder &b, Location loc, Value m, Value mNew);

/// P = exp2(c u - base(m_new)); c = 1 is a subtraction, otherwise one fma
/// (a backend that takes the max over raw scores applies the scale here).
Value probability(OpBuilder &b, Location loc, Value u, Value mNew, float c);

/// x / l, or 0 where l = 0 (a row with no visible key).
Value safeDivide(OpBuilder &b, Location loc, Value x, Value l);

/// lse = ln(2) (m + log2 l), or -inf where l = 0.
Value logSumExp(OpBuilder &b, Location loc, Value m, Value l);

/// The row's largest score in natural units: ln(2) m (-inf stays -inf).
Value maxScore(OpBuilder &b, Location loc, Value m);

/// A sink logit (natural units) in the state's log2 units: log2(e) s.
Value sinkLog2(OpBuilder &b, Location loc, Value s);

/// u = log2(e) mods(scale s) when `mods` is given (it applies score_mod and
/// mask_mod to the scaled score), else s (scale log2(e)): one multiply.
Value log2Score(OpBuilder &b, Location loc, Value s, float scale,
                function_ref<Value(Value)> mods);

//===----------------------------------------------------------------------===//
// P's exponentials on the FMA pipe (FlashAttention-4's exp2 emulation)
//===----------------------------------------------------------------------===//
//
// Where the special-function unit bounds the softmax (one ex2 per score,
// 16 per clock per SM on Hopper, against 128 FMA lanes), part of P's exp2s
// can be computed with FMA-pipe arithmetic instead. A backend sets
// kExp2PolyAttr = k on a kernel's launch: k of every kFmaExp2Period
// elements of P take `exp2OnFma`. flexattn-lower-fragments marks their
// math.exp2 ops with kFmaExp2Mark (readable IR); flexattn-lower-to-nvvm
// expands the marked ones and maps the others to ex2.approx.

/// The launch attribute: an integer in [0, kFmaExp2Period].
inline constexpr llvm::StringLiteral kExp2PolyAttr = "flexattn.exp2_poly";
/// The unit attribute on a math.exp2 that takes `exp2OnFma`.
inline constexpr llvm::StringLiteral kFmaExp2Mark = "flexattn.fma_exp2";
// kMaskedRawMaxAttr (unit) on a kernel's launch: flexattn-lower-fragments
// applies a mask_mod without a score_mod to the raw scores of a partial
// tile, so its max is raw and P's exponent one fma, as a full tile's
// (fewer instructions; the driver marks the decode kernel's launch, where
// it measured faster; the prefill kernels keep log2(e) scale S masked).
inline constexpr llvm::StringLiteral kMaskedRawMaxAttr = "flexattn.masked_raw_max";
// kNaturalScoresAttr (unit) on a kernel's launch: flexattn-lower-fragments
// keeps a tile's modded scores in natural units, mods(scale S), and applies
// log2(e) inside P's exponent fma (and once per row to the max) instead of
// multiplying every score by it (the driver marks the sm_90a kernels and
// the decode kernel; sm_80's prefill kernels spill with it).
inline constexpr llvm::StringLiteral kNaturalScoresAttr = "flexattn.natural_scores";
// kExactIndexFloatsAttr (unit) on a kernel's launch: flexattn-lower-fragments
// clamps the indices of a score_mod that converts one to a float to the
// static lengths (no-ops), so that flexattn-exact-int-to-float, which the
// driver runs on such kernels, can prove its conversions exact.
inline constexpr llvm::StringLiteral kExactIndexFloatsAttr = "flexattn.exact_index_floats";
// kReduceChainsAttr (integer) on a flexattn.frag.softmax:
// flexattn-lower-fragments reduces each row's max and sum over a thread's
// elements as that many independent chains (default one chain);
// flexattn-schedule-consumers sets 4 where the P.V's wait moves to the next
// step, so the exponentials start sooner after S.
inline constexpr llvm::StringLiteral kReduceChainsAttr = "flexattn.reduce_chains";
// kMaxChainsAttr (integer) on a flexattn.frag.softmax: the row max alone as
// that many chains (over kReduceChainsAttr); flexattn-schedule-consumers
// sets 4 where the P.V's wait is held until alpha (pv-wait=alpha), so the
// max, now ahead of that wait, takes fewer dependent steps.
inline constexpr llvm::StringLiteral kMaxChainsAttr = "flexattn.max_chains";
// kProbsRoundedAttr (unit) on a flexattn.frag.softmax with float32 P:
// flexattn-schedule-consumers rounds that P to 16 bits later (after the
// next step's wait), so flexattn-lower-fragments treats it as 16-bit P
// (its exp2s may take `exp2OnFma`, kExp2PolyAttr).
inline constexpr llvm::StringLiteral kProbsRoundedAttr = "flexattn.probs_rounded";
inline constexpr int64_t kFmaExp2Period = 16;

/// Whether P's element `e` (of a thread's fragment) is one of the k of every
/// kFmaExp2Period that take `exp2OnFma`: spread evenly over the period
/// (element i of a period when floor((i + 1) k / period) > floor(i k /
/// period)), so FMA-pipe and ex2 elements interleave.
bool takesFmaExp2(int64_t e, int64_t k);

/// exp2(x) for an f32 x <= 127 in FMA-pipe arithmetic (adds, fmas, integer
/// shift/add/max; no special-function unit):
///   x' = max(x, -127); n = round(x') by adding 1.5 2^23 (n lands in the
///   low mantissa bits); f = x' - n in [-1/2, 1/2];
///   2^x = 2^n p(f), p the degree-3 minimax polynomial of 2^f (relative
///   error 7.5e-5, below the rounding of 16-bit P), 2^n added into p's
///   exponent bits (n << 23). Below 2^-126 the exponent underflows: +0
///   where the bits go negative (x = -127: masked scores, -inf, give 0),
///   a subnormal under 2^-126 otherwise.
Value exp2OnFma(OpBuilder &b, Location loc, Value x);

//===----------------------------------------------------------------------===//
// The step
//===----------------------------------------------------------------------===//

/// The state carried from one KV tile to the next, by name: the running max
/// and running sum per row, and the accumulator. Buffers on the CPU (updated
/// in place), register fragments on the GPU (new values per step).
struct State {
  Value max, sum, acc;
};

/// Per row or per element; the arguments are given in the order the hook
/// documents.
using ScalarFn = function_ref<Value(OpBuilder &, Location, ValueRange)>;

/// How a backend holds rows (a row value: one per tile row) and tiles, and
/// how it maps and reduces them. Each hook returns the updated or new value
/// (a backend that updates in place returns the buffer it wrote).
class SoftmaxRows {
public:
  virtual ~SoftmaxRows() = default;
  /// max(init, c rowmax(tile)), a new row value.
  virtual Value rowMax(Value tile, Value init, float c) = 0;
  /// A new row value f(rows[0][r], rows[1][r], ...).
  virtual Value mapRows(ValueRange rows, ScalarFn f) = 0;
  /// target[r] = f(inputs[0][r], ..., target[r]).
  virtual Value updateRows(Value target, ValueRange inputs, ScalarFn f) = 0;
  /// tile[r, c] = f(rows[0][r], ..., tile[r, c]).
  virtual Value updateTile(Value tile, ValueRange rows, ScalarFn f) = 0;
  /// target[r] += rowsum(tile[r, :]).
  virtual Value addRowSums(Value target, Value tile) = 0;
};

/// What one step produces: the new max and sum, alpha (the accumulator's
/// rescale factor) and P (in place of the scores on the CPU).
struct StepResult {
  Value newMax, alpha, probs, newSum;
};

/// One online-softmax step on the log2-unit scores `u` (times `c`, see
/// `probability`):
///   m_new = max(m, c rowmax(u))
///   alpha = exp2(m - base(m_new))
///   P     = exp2(c u - base(m_new))
///   l     = alpha l + rowsum(P)
/// The accumulator is left alone: `rescaleAccumulator` and the P.V product
/// follow, where the backend's schedule puts them.
StepResult onlineSoftmaxStep(SoftmaxRows &rows, const State &state, Value u,
                             float c = 1.0f);

/// acc = alpha acc.
Value rescaleAccumulator(SoftmaxRows &rows, Value acc, Value alpha);

/// An attention sink: the logit `sinkLog2` (log2 units, one scalar for every
/// row) joins the completed state as one more score without a value:
///   m'    = max(m, sink)
///   alpha = exp2(m - base(m'))
///   l'    = alpha l + exp2(sink - base(m'))
///   acc'  = alpha acc
/// A row without a visible key gets l' = 1 (acc' = 0: a zero output, lse =
/// the sink); a sink of -inf changes nothing. `state.sum` must be the row's
/// complete sum (a backend holding partial sums reduces them first).
State foldSink(SoftmaxRows &rows, const State &state, Value sinkLog2);

} // namespace mlir::flexattn::softmax

#endif // FLEXATTN_PASSES_ONLINESOFTMAX_H
