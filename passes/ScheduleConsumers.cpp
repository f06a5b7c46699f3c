//===- ScheduleConsumers.cpp - flexattn-schedule-consumers ------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// The consumers' schedule, as a transform of the in-order KV step that
// flexattn-warp-specialize emits:
//
//   wait K_j; S = Q.K_jᵀ; wait(0); release K_j
//   P, m, l, alpha = softmax(S); O = alpha O
//   wait V_j; O = O + P.V_j; wait(0); release V_j
//
// `pipeline` (FlashAttention-3's intra-warpgroup overlap) defers each P.V by
// one step, so a KV step issues S_j = Q.K_jᵀ together with the previous
// step's O += P_{j-1}.V_{j-1}, and the softmax of S_j runs while that P.V is
// on the tensor cores:
//
//   wait K_j; S = Q.K_jᵀ; wait V_{j-1}; O = O + P_{j-1}.V_{j-1}
//   wait(1) (S); release K_j
//   P_j, m, l, alpha = softmax(S)
//   wait(0) (O, P_{j-1}); release V_{j-1}; O = alpha O
//
// ptxas hoists that wait(0) above the softmax's exponentials (it has no
// operands); `pv-wait=next-step` moves it to the start of step j+1, past
// the loop's back edge, with P_j carried in float32 and rounded after it:
//
//   wait(0) (O, P_{j-1}); release V_{j-1}; P_j to 16 bits; O = alpha_j O
//   wait K_{j+1}; ...; S = Q.K_{j+1}ᵀ; O = O + P_j.V_j; wait(1) (S); ...
//
// (`auto`: where the score_mod is plain arithmetic, docs/gpu-pipeline.md §3).
// Else `pv-wait=alpha` (`auto` with two consumer groups at D = 128) keeps
// the wait in the step but holds it until the first row's alpha
// (flexattn.mma.wait's `after`): ptxas then issues it after the row maxima
// and the first exponentials, and the O rescale interleaves with the rest.
// P is carried between steps (and between the KV loops of a Q tile); the
// first step multiplies P = 0 by the Q tile, reinterpreted as a V tile, so
// no branch surrounds the MMA, and the last step's P.V is issued after the
// loops. `pingpong` (needs `pipeline`) makes the consumer groups (two, or
// three for 192-row Q tiles) take turns issuing their MMAs (named barriers,
// passes/GroupTurns.h), so one group's softmax overlaps the others' GEMMs.
//
//===----------------------------------------------------------------------===//

#include "passes/GroupTurns.h"
#include "passes/OnlineSoftmax.h"
#include "passes/Passes.h"

#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"

namespace mlir::flexattn {
#define GEN_PASS_DEF_FLEXATTNSCHEDULECONSUMERS
#include "passes/Passes.h.inc"
} // namespace mlir::flexattn

using namespace mlir;
using namespace mlir::flexattn;

namespace {

/// The ops of one in-order KV step, in the loop body.
struct Step {
  RingWaitOp waitK;
  MmaOp qk;
  MmaWaitOp qkWait;
  FragSoftmaxOp softmax;
  FragRescaleOp rescale;
  RingWaitOp waitV;
  RingSlotOp slotV;
  MmaOp pv;
  MmaWaitOp pvWait;
  RingReleaseOp releaseV;
  unsigned accArg; // the acc iter_arg's position

  /// The ops the pipelined step re-emits elsewhere (or not at all).
  bool isMoved(Operation *op) const {
    return op == rescale || op == waitV || op == slotV || op == pv ||
           op == pvWait || op == releaseV;
  }
};

template <typename OpT>
OpT findInBody(Block &body, function_ref<bool(OpT)> match) {
  for (auto op : body.getOps<OpT>())
    if (match(op))
      return op;
  return {};
}

/// Matches the in-order step flexattn-warp-specialize emits in `loop`.
FailureOr<Step> matchStep(scf::ForOp loop) {
  Block &body = *loop.getBody();
  Step s;
  s.pv = findInBody<MmaOp>(body, [](MmaOp op) { return !op.getARow(); });
  auto fail = [&]() {
    return loop.emitOpError("flexattn-schedule-consumers expects the in-order "
                            "KV step of flexattn-warp-specialize in this loop");
  };
  if (!s.pv || !s.pv.getAcc())
    return fail();
  s.softmax = s.pv.getA().getDefiningOp<FragSoftmaxOp>();
  s.rescale = s.pv.getAcc().getDefiningOp<FragRescaleOp>();
  s.slotV = s.pv.getB().getDefiningOp<RingSlotOp>();
  if (!s.softmax || !s.rescale || !s.slotV || !s.pv->hasOneUse())
    return fail();
  s.pvWait = dyn_cast<MmaWaitOp>(*s.pv->getUsers().begin());
  s.qkWait = s.softmax.getScores().getDefiningOp<MmaWaitOp>();
  s.qk = s.qkWait ? s.qkWait.getValues()[0].getDefiningOp<MmaOp>() : MmaOp();
  auto acc = dyn_cast<BlockArgument>(s.rescale.getAcc());
  auto samePosition = [&](auto op) {
    return op.getRing() == s.slotV.getRing() &&
           op.getPosition() == s.slotV.getPosition();
  };
  s.waitV = findInBody<RingWaitOp>(body, samePosition);
  s.releaseV = findInBody<RingReleaseOp>(body, samePosition);
  if (!s.pvWait || !s.qk || !s.qk.getARow() || !acc ||
      acc.getOwner() != &body || !s.waitV || !s.releaseV)
    return fail();
  s.accArg = acc.getArgNumber() - 1;
  auto k = s.qk.getB().getDefiningOp<RingSlotOp>();
  if (!k || k.getPosition() != s.slotV.getPosition())
    return fail();
  s.waitK = findInBody<RingWaitOp>(body, [&](RingWaitOp op) {
    return op.getRing() == k.getRing() && op.getPosition() == k.getPosition();
  });
  if (!s.waitK)
    return fail();
  // The P.V results feed only the yield (as the next acc) and P's release.
  for (Value r : s.pvWait.getResults())
    for (Operation *user : r.getUsers())
      if (!isa<scf::YieldOp>(user))
        return fail();
  return s;
}

/// Whether `region` holds a math-dialect op (tanh, log, exp, abs, ...:
/// most issue on the special-function unit).
bool callsSpecialFunctions(Region &region) {
  return region
      .walk([](Operation *op) {
        return isa<math::MathDialect>(op->getDialect()) ? WalkResult::interrupt()
                                                         : WalkResult::advance();
      })
      .wasInterrupted();
}

struct Scheduler {
  ImplicitLocOpBuilder &b;
  WarpSpecializeOp roles;
  bool pingpong;
  PvWait pvWait;

  Value i32(int64_t v) { return arith::ConstantIntOp::create(b, v, 32); }
  Value group() {
    return arith::IndexCastOp::create(b, b.getI32Type(),
                                      roles.getConsumers().getArgument(0));
  }
  // A turn's barrier counts the waiting group and the one passing to it.
  int64_t turnThreads() { return 2 * roles.getConsumerThreads(); }
  int64_t groups() { return roles.getConsumerGroups(); }

  /// The previous KV step's ring position (`first` is the Q tile's first),
  /// and whether there is one; waits for its V slot, and returns the tile
  /// the deferred P.V reads: that V slot, or the Q tile read as a V tile.
  std::tuple<Value, Value, Value> previousV(Value ring, Value pos, Value first,
                                            Value qTile) {
    Value hasPrev = arith::CmpIOp::create(b, arith::CmpIPredicate::ugt, pos, first);
    Value prev = arith::SelectOp::create(
        b, hasPrev, arith::SubIOp::create(b, pos, i32(1)), i32(0));
    auto ifPrev = scf::IfOp::create(b, hasPrev, /*withElseRegion=*/false);
    {
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(&ifPrev.getThenRegion().front());
      RingWaitOp::create(b, ring, prev);
    }
    Value vPrev = RingSlotOp::create(b, ring, prev);
    Value standIn =
        SmemTileReinterpretOp::create(b, vPrev.getType(), qTile);
    return {hasPrev, prev, arith::SelectOp::create(b, hasPrev, vPrev, standIn)};
  }

  void releasePrevious(Value ring, Value hasPrev, Value prev) {
    auto ifPrev = scf::IfOp::create(b, hasPrev, /*withElseRegion=*/false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(&ifPrev.getThenRegion().front());
    RingReleaseOp::create(b, ring, prev);
  }

  /// What a pipelined step hands the next: the 16-bit P that the P.V in
  /// flight reads; with that P.V's wait at the next step (`atNextStep`),
  /// also the softmax's float32 P and alpha, and the V slot the P.V holds.
  struct Deferred {
    Value pHalf, probs, alpha, hasV, posV;
    SmallVector<Value> values(bool atNextStep) const {
      if (!atNextStep)
        return {pHalf};
      return {pHalf, probs, alpha, hasV, posV};
    }
    static Deferred of(ValueRange v) {
      if (v.size() == 1)
        return {v[0], {}, {}, {}, {}};
      return {v[0], v[1], v[2], v[3], v[4]};
    }
  };

  /// Waits for the P.V in flight on `acc` (listing the 16-bit P it reads;
  /// with `afterAlpha`, not before the first row's alpha is computed),
  /// gives its V slot back and rescales the accumulator by alpha; returns
  /// it with `d.probs` in 16 bits (rounded here where it was float32).
  std::pair<Value, Value> completePrevious(Value acc, const Deferred &d, Value vRing,
                                           bool afterAlpha = false) {
    // Held until the first row's alpha (holding it until both measured
    // slower: ptxas then waits for both rows' maxima before its first
    // exponential, docs/gpu-pipeline.md §3).
    Value alpha0 = afterAlpha ? vector::ExtractStridedSliceOp::create(
                                    b, d.alpha, ArrayRef<int64_t>{0},
                                    ArrayRef<int64_t>{1}, ArrayRef<int64_t>{1})
                                    .getResult()
                              : Value();
    acc = MmaWaitOp::create(b, 0, ValueRange{acc, d.pHalf},
                            afterAlpha ? ValueRange{alpha0} : ValueRange{})
              .getResult(0);
    releasePrevious(vRing, d.hasV, d.posV);
    Value p = d.probs;
    if (p.getType() != d.pHalf.getType())
      p = arith::TruncFOp::create(b, d.pHalf.getType(), p);
    return {FragRescaleOp::create(b, acc, d.alpha), p};
  }

  /// Rebuilds `loop` pipelined; returns the new loop (its last results are
  /// the Deferred values).
  scf::ForOp pipelineLoop(scf::ForOp loop, Step s, Value first, const Deferred &init,
                          bool atNextStep, bool afterAlpha, bool maxChains) {
    SmallVector<Value> inits(loop.getInitArgs());
    llvm::append_range(inits, init.values(atNextStep));
    b.setInsertionPoint(loop);
    auto newLoop = scf::ForOp::create(b, loop.getLowerBound(), loop.getUpperBound(),
                                      loop.getStep(), inits);
    Block *body = newLoop.getBody();
    unsigned n = loop.getNumRegionIterArgs();
    IRMapping map;
    map.map(loop.getInductionVar(), newLoop.getInductionVar());
    for (auto [from, to] : llvm::zip(loop.getRegionIterArgs(),
                                     newLoop.getRegionIterArgs().take_front(n)))
      map.map(from, to);
    Deferred in = Deferred::of(newLoop.getRegionIterArgs().drop_front(n));
    Value vRing = s.slotV.getRing();
    Value pos = map.lookup(s.waitK.getPosition());
    b.setInsertionPointToStart(body); // (empty: a loop with iter_args)
    Value acc = map.lookup(loop.getRegionIterArgs()[s.accArg]), pHalf = in.pHalf;
    if (atNextStep)
      std::tie(acc, pHalf) = completePrevious(acc, in, vRing);
    Value hasPrev, prev, pvAsync;
    FragSoftmaxOp softmax;
    for (Operation &op : loop.getBody()->without_terminator()) {
      if (s.isMoved(&op))
        continue;
      if (&op == s.qk.getOperation()) {
        // With the wait in the step, S's MMA is issued before the wait for
        // the V slot of the P.V behind it (FlashAttention-4's order): a slot
        // that has landed costs the turn nothing, and the wait's phase
        // arithmetic and branch leave the instructions between the loop's
        // back edge and the first wgmma (full D = 128: 36 -> 23 SASS
        // instructions). With the next-step wait the V wait stays ahead of
        // the turn: behind S's MMA it cost ALiBi 5.6 % and the relative bias
        // 8.6 % (H200; docs/gpu-pipeline.md §3).
        Value vPrev;
        auto waitV = [&] {
          std::tie(hasPrev, prev, vPrev) =
              previousV(vRing, pos, first, map.lookupOrDefault(s.qk.getA()));
        };
        if (atNextStep)
          waitV();
        if (pingpong)
          turns::take(b, group(), turnThreads());
        b.clone(op, map);
        if (!atNextStep)
          waitV();
        pvAsync = MmaOp::create(b, s.pv.getType(), pHalf, Value(), vPrev, Value(), acc,
                                UnitAttr());
        if (pingpong)
          turns::pass(b, group(), turnThreads(), groups());
        map.map(s.pvWait.getResult(0), pvAsync);
        continue;
      }
      Operation *clone = b.clone(op, map);
      if (&op == s.qkWait.getOperation())
        cast<MmaWaitOp>(clone).setPending(1);
      if (&op != s.softmax.getOperation())
        continue;
      softmax = cast<FragSoftmaxOp>(clone);
      if (atNextStep) {
        // P stays float32 until the next step, after the wait for the P.V
        // that reads its 16-bit registers; the row reductions run as
        // independent chains (the exponentials start sooner).
        auto probs = cast<VectorType>(softmax.getProbs().getType());
        softmax.getProbs().setType(probs.clone(b.getF32Type()));
        softmax->setAttr(softmax::kReduceChainsAttr, b.getI64IntegerAttr(4));
        softmax->setAttr(softmax::kProbsRoundedAttr, b.getUnitAttr());
        continue;
      }
      if (maxChains) // fewer dependent steps before the first exponential
        softmax->setAttr(softmax::kMaxChainsAttr, b.getI64IntegerAttr(4));
      Deferred now{pHalf, softmax.getProbs(), softmax.getAlpha(), hasPrev, prev};
      map.map(s.pvWait.getResult(0),
              completePrevious(pvAsync, now, vRing, afterAlpha).first);
    }
    auto yield = cast<scf::YieldOp>(loop.getBody()->getTerminator());
    SmallVector<Value> yielded;
    for (Value v : yield.getOperands())
      yielded.push_back(map.lookupOrDefault(v));
    Deferred out = atNextStep ? Deferred{pHalf, softmax.getProbs(), softmax.getAlpha(),
                                         hasPrev, prev}
                              : Deferred{softmax.getProbs(), {}, {}, {}, {}};
    llvm::append_range(yielded, out.values(atNextStep));
    scf::YieldOp::create(b, yielded);
    return newLoop;
  }

  LogicalResult pipelineTile(Block &tile) {
    SmallVector<std::pair<scf::ForOp, Step>> loops;
    for (auto loop : tile.getOps<scf::ForOp>()) {
      if (loop->walk([](MmaOp) { return WalkResult::interrupt(); }).wasInterrupted()) {
        FailureOr<Step> s = matchStep(loop);
        if (failed(s))
          return failure();
        loops.push_back({loop, *s});
      }
    }
    if (loops.empty())
      return success();
    // The wait for each P.V at the next step: `pvWait`, or (auto) where
    // the softmax has a score_mod of plain arithmetic (measured faster
    // there; slower without a score_mod, and where the score_mod calls the
    // special-function unit, which the exponentials already keep busy).
    FragSoftmaxOp softmax0 = loops.front().second.softmax;
    bool atNextStep = pvWait == PvWait::NextStep ||
                      (pvWait == PvWait::Auto && softmax0.hasScoreMod() &&
                       !callsSpecialFunctions(softmax0.getScoreMod()));
    // Between the loops a P.V is then in flight: only the next loop may
    // take the accumulator.
    for (unsigned i = 0; atNextStep && i + 1 < loops.size(); ++i) {
      auto &[loop, s] = loops[i];
      for (Operation *user : loop.getResult(s.accArg).getUsers())
        if (user != loops[i + 1].first.getOperation())
          return loop.emitOpError("flexattn-schedule-consumers: the accumulator of a "
                                  "KV loop that another follows feeds only that loop");
    }
    Step firstStep = loops.front().second;
    // The stand-in for V is the Q tile: it must fit a V tile.
    auto qType = cast<SmemTileType>(firstStep.qk.getA().getType());
    auto vType = firstStep.slotV.getType();
    if (qType.getCols() != vType.getCols() || qType.getBytes() < vType.getBytes())
      return success(); // D != Dv: stays in order
    // Else the step's wait, held until alpha (`alpha`; auto: with two
    // consumer groups at D = 128, measured faster on every D = 128 kernel of
    // the table, slower at D = 64, with the two groups of 128-row tiles and
    // the three of 192-row ones, docs/gpu-pipeline.md §3).
    bool afterAlpha = !atNextStep && (pvWait == PvWait::Alpha ||
                                      (pvWait == PvWait::Auto && groups() == 2 &&
                                       qType.getCols() == 128));
    // Each row max as four chains: where the wait is held (the max runs ahead
    // of it), and with three consumer groups (measured faster there, 1.2 %
    // on full D = 64's 192-row tiles; slower with the two groups of 128-row
    // ones, docs/gpu-pipeline.md §3) unless the mods read captured buffers:
    // 512 threads have 128 registers each, and the chains' six more spill
    // the document mask's kernel (24 bytes).
    bool maxChains = !atNextStep && (afterAlpha || (groups() == 3 &&
                                                    softmax0.getCaptures().empty()));
    auto posArg = cast<BlockArgument>(firstStep.waitK.getPosition());
    Value first = loops.front().first.getInitArgs()[posArg.getArgNumber() - 1];
    Value qTile = firstStep.qk.getA();
    b.setInsertionPoint(loops.front().first);
    auto zeros = [&](Type type) {
      auto shaped = cast<ShapedType>(type);
      return arith::ConstantOp::create(
          b, DenseElementsAttr::get(shaped, b.getZeroAttr(shaped.getElementType())));
    };
    auto probsType = cast<VectorType>(firstStep.softmax.getProbs().getType());
    auto alphaType = cast<VectorType>(firstStep.softmax.getAlpha().getType());
    // Nothing in flight before the first step: P = 0 (alpha = 1, no V slot).
    Deferred d{zeros(probsType), {}, {}, {}, {}};
    if (atNextStep)
      d = {d.pHalf, zeros(probsType.clone(b.getF32Type())),
           arith::ConstantOp::create(b, DenseElementsAttr::get(alphaType, 1.0f)),
           arith::ConstantIntOp::create(b, 0, 1), i32(0)};
    Value vRing = firstStep.slotV.getRing();
    scf::ForOp last;
    unsigned posIdx = 0, accIdx = 0;
    for (auto &[loop, s] : loops) {
      unsigned n = loop.getNumRegionIterArgs();
      scf::ForOp newLoop =
          pipelineLoop(loop, s, first, d, atNextStep, afterAlpha, maxChains);
      posIdx = cast<BlockArgument>(s.waitK.getPosition()).getArgNumber() - 1;
      accIdx = s.accArg;
      loop->replaceAllUsesWith(newLoop.getResults().take_front(n));
      loop->erase();
      d = Deferred::of(newLoop.getResults().drop_front(n));
      last = newLoop;
    }
    // The last KV step's P.V, after the loops.
    b.setInsertionPointAfter(last);
    Value pos = last.getResult(posIdx);
    Value accEnd = last.getResult(accIdx);
    Value acc = accEnd, p = d.pHalf;
    if (atNextStep)
      std::tie(acc, p) = completePrevious(accEnd, d, vRing);
    auto [hasPrev, prev, vPrev] = previousV(vRing, pos, first, qTile);
    acc = MmaOp::create(b, accEnd.getType(), p, Value(), vPrev, Value(), acc, UnitAttr());
    auto wait = MmaWaitOp::create(b, 0, ValueRange{acc, p});
    releasePrevious(vRing, hasPrev, prev);
    accEnd.replaceUsesWithIf(wait.getResult(0), [&](OpOperand &use) {
      Operation *user = tile.findAncestorOpInBlock(*use.getOwner());
      return user && wait->isBeforeInBlock(user);
    });
    return success();
  }
};

} // namespace

FailureOr<PvWait> mlir::flexattn::parsePvWait(StringRef name) {
  if (name == "auto")
    return PvWait::Auto;
  if (name == "step")
    return PvWait::Step;
  if (name == "next-step")
    return PvWait::NextStep;
  if (name == "alpha")
    return PvWait::Alpha;
  return failure();
}

LogicalResult mlir::flexattn::scheduleConsumers(RewriterBase &rewriter,
                                                WarpSpecializeOp roles,
                                                bool pipeline, bool pingpong,
                                                PvWait pvWait) {
  if (!pipeline)
    return success();
  if (pingpong && roles.getConsumerGroups() != 2 && roles.getConsumerGroups() != 3)
    return roles.emitOpError("ping-pong takes turns among two or three consumer groups, got ")
           << roles.getConsumerGroups();
  ImplicitLocOpBuilder b(roles.getLoc(), rewriter);
  Scheduler scheduler{b, roles, pingpong, pvWait};
  SmallVector<Block *> tiles;
  roles.getConsumers().walk([&](FragFinalizeOp fin) { tiles.push_back(fin->getBlock()); });
  for (Block *tile : tiles)
    if (failed(scheduler.pipelineTile(*tile)))
      return failure();
  if (pingpong) {
    // Group 0 issues first.
    Block &body = roles.getConsumers().front();
    b.setInsertionPointToStart(&body);
    turns::giveFirst(b, scheduler.group(), scheduler.turnThreads(),
                      scheduler.groups());
  }
  return success();
}

namespace {
struct FlexAttnScheduleConsumersPass
    : public flexattn::impl::FlexAttnScheduleConsumersBase<
          FlexAttnScheduleConsumersPass> {
  using FlexAttnScheduleConsumersBase::FlexAttnScheduleConsumersBase;

  void runOnOperation() override {
    SmallVector<WarpSpecializeOp> roles;
    getOperation()->walk([&](WarpSpecializeOp op) { roles.push_back(op); });
    FailureOr<PvWait> wait = parsePvWait(pvWait);
    if (failed(wait)) {
      getOperation()->emitError("flexattn-schedule-consumers: pv-wait must be auto, step, "
                                "alpha or next-step, got '")
          << pvWait << "'";
      return signalPassFailure();
    }
    IRRewriter rewriter(&getContext());
    for (WarpSpecializeOp op : roles)
      if (failed(scheduleConsumers(rewriter, op, pipeline, pingpong, *wait)))
        return signalPassFailure();
  }
};
} // namespace
