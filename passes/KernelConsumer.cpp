//===- KernelConsumer.cpp - consumer warpgroups of the GPU kernel -*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// The two consumer warpgroups of the kernel flexattn-map-to-gpu builds, 64
// Q rows each: S = Q.Kᵀ on tensor cores, score_mod / mask_mod on the register
// fragments (as flexattn.apply_mods), the online softmax in registers, P
// rounded to 16 bits in registers and O += P.V with register-A wgmma, in
// order or software-pipelined (FlashAttention-3), and the epilogue.
//
// Fragment layout of a wgmma m64nN f32 accumulator (thread T = 32w + 4g + t
// of the warpgroup): d[4j + 2h + q] = C[16w + g + 8h][8j + 2t + q].
//
//===----------------------------------------------------------------------===//

#include "passes/GpuKernel.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include <limits>

using namespace mlir;
using namespace mlir::flexattn;
using namespace mlir::flexattn::gpukernel;

namespace {

//===----------------------------------------------------------------------===//
// Consumers: wgmma, mods, online softmax, epilogue.
//===----------------------------------------------------------------------===//

struct ConsumerEnv {
  const KernelEnv &env;
  Value cw;       // consumer warpgroup (0, 1) as i32
  Value rowBase;  // index: row of this thread's first fragment row in the Q tile
  Value colBase;  // index: 2t, the first fragment column
  Value quad;     // i32: t = lane % 4
  Value qTile;    // i32: shared-memory address of the whole Q tile
};

/// The online-softmax state a consumer thread carries between KV tiles:
/// [i, first, m0, m1, l0, l1, O..., P...]: i the K/V ring position (it runs
/// on across a persistent CTA's Q tiles), first the position of this Q
/// tile's first KV tile, m/l for fragment rows h = 0, 1 (log2 units; l is
/// this thread's partial row sum). P, the previous tile's probabilities
/// packed to 16 bits, is carried only by the pipelined schedule, whose P.V is
/// issued one step late.
enum StateIndex { kIter = 0, kFirst = 1, kMax0 = 2, kSum0 = 4, kAcc = 6 };

int64_t numP(const KernelPlan &plan) { return plan.BN / 16 * 4; }

Value smemAt(PtxBuilder &p, const KernelEnv &env, int64_t off, Value stage,
             int64_t stageBytes) {
  return arith::AddIOp::create(
      p.b, env.smem,
      arith::AddIOp::create(p.b, p.i32(off),
                            arith::MulIOp::create(p.b, stage, p.i32(stageBytes))));
}

/// S = Q . K_tileᵀ: one m64nBNk16 wgmma per 16 columns of D, both operands
/// K-major in shared memory. Issued, not waited for.
SmallVector<Value> issueQK(PtxBuilder &p, const ConsumerEnv &c, Value stage) {
  const KernelPlan &plan = c.env.plan;
  Value qBase = arith::AddIOp::create(
      p.b, c.qTile, arith::MulIOp::create(p.b, c.cw, p.i32(64 * 128)));
  Value kBase = smemAt(p, c.env, plan.kOff, stage, plan.kBytes());
  SmallVector<Value> s;
  for (int64_t kk = 0; kk < plan.D / 16; ++kk) {
    int64_t inPanel = (kk % 4) * 32;
    Value qa = arith::AddIOp::create(p.b, qBase, p.i32((kk / 4) * kRows * 128 + inPanel));
    Value ka = arith::AddIOp::create(p.b, kBase, p.i32((kk / 4) * plan.BN * 128 + inPanel));
    s = p.wgmmaSS(s, p.wgmmaDescriptor(qa, 16384, 1024),
                  p.wgmmaDescriptor(ka, 16384, 1024), plan.BN, plan.elem,
                  /*accumulate=*/kk > 0);
  }
  return s;
}

/// O += P . V_tile with P (16-bit pairs) in registers, V_tile row-major at
/// `vBase` (MN-major B: imm-trans-b = 1). Issued, not waited for.
SmallVector<Value> issuePV(PtxBuilder &p, const KernelPlan &plan,
                           ArrayRef<Value> acc, ArrayRef<Value> pPacked,
                           Value vBase) {
  SmallVector<Value> o(acc);
  for (int64_t kk = 0; kk < plan.BN / 16; ++kk) {
    Value va = arith::AddIOp::create(p.b, vBase, p.i32(kk * 16 * 128));
    o = p.wgmmaRS(o, pPacked.slice(4 * kk, 4),
                  p.wgmmaDescriptor(va, plan.BN * 128, 1024), plan.Dv, plan.elem);
  }
  return o;
}

struct Softmax {
  Value mNew[2], alpha[2], rowSum[2];
  SmallVector<Value> pPacked; // BN/16 groups of 4 b32 registers
};

/// The scores of one tile, from the S fragments: score_mod, mask_mod where
/// the tile is `masked`, -inf past N; then the running max over the 4
/// threads sharing a row, alpha = exp2(m - m_new) and P = exp2(x - m_new),
/// rounded to 16 bits and packed as the A operand of the P.V wgmma.
Softmax softmax(PtxBuilder &p, const ConsumerEnv &c, TileStepOp ts, IRMapping &m,
                ArrayRef<Value> s, Value mOld[2]) {
  ImplicitLocOpBuilder &b = p.b;
  const KernelPlan &plan = c.env.plan;
  Value ninf = p.f32(-std::numeric_limits<float>::infinity());
  Value bIdx = m.lookupOrDefault(ts.getB()), hIdx = m.lookupOrDefault(ts.getH());
  Value q0 = m.lookupOrDefault(ts.getQ0()), kv0 = m.lookupOrDefault(ts.getKv0());
  SmallVector<Value> captures;
  for (Value cap : ts.getCaptures())
    captures.push_back(m.lookupOrDefault(cap));
  bool applyMask = ts.getMasked() && ts.hasMaskMod();
  bool mods = ts.hasScoreMod() || applyMask;
  bool kvTail = plan.N % plan.BN != 0, qTail = plan.M % kRows != 0;
  float scale = ts.getScale().convertToFloat();
  // Without mods the max is taken over the raw scores and log2(e) * scale
  // is applied once per row, then fused into P's exponent: exp2(s c - m).
  bool rawMax = !mods && scale > 0;
  float c2 = rawMax ? static_cast<float>(scale * kLog2e) : 1.0f;
  Value scaleV = p.f32(scale), log2e = p.f32(static_cast<float>(kLog2e));
  Value folded = p.f32(static_cast<float>(scale * kLog2e));

  // Index math in i32 (what the mods take); the index casts apply_mods needs
  // fold away once flexattn-inline-mods has cloned the regions. Indices given
  // to the mods are clamped inside [0, M) x [0, N), so a mod never reads a
  // captured buffer out of bounds.
  auto toIndex = [&](Value v) {
    return arith::IndexCastOp::create(b, b.getIndexType(), v).getResult();
  };
  Value qRow0 = arith::AddIOp::create(b, toI32(b, q0), toI32(b, c.rowBase));
  Value kvCol0 = arith::AddIOp::create(b, toI32(b, kv0), toI32(b, c.colBase));
  Value qRows[2] = {qRow0, arith::AddIOp::create(b, qRow0, p.i32(8))};
  if (qTail)
    for (Value &r : qRows)
      r = arith::MinUIOp::create(b, r, p.i32(plan.M - 1));
  Value qIdx[2] = {toIndex(qRows[0]), toIndex(qRows[1])};
  // u = log2(e) * mods(scale * S) (or the raw S), -inf where masked or past N
  SmallVector<Value> u(s.size());
  for (int64_t e = 0; e < int64_t(s.size()); ++e) {
    int64_t j = e / 4, h = (e / 2) % 2, q = e % 2;
    Value kvIdx = arith::AddIOp::create(b, kvCol0, p.i32(8 * j + q));
    Value v = s[e];
    if (mods) {
      Value kvMod = kvTail ? arith::MinUIOp::create(b, kvIdx, p.i32(plan.N - 1)).getResult()
                           : kvIdx;
      Value scaled = arith::MulFOp::create(b, s[e], scaleV);
      auto apply = ApplyModsOp::create(
          b, b.getF32Type(), scaled, bIdx, hIdx, qIdx[h], toIndex(kvMod), captures,
          applyMask ? b.getUnitAttr() : UnitAttr());
      cloneModRegions(ts, apply, applyMask);
      v = arith::MulFOp::create(b, apply.getResult(), log2e);
    } else if (!rawMax) {
      v = arith::MulFOp::create(b, s[e], folded);
    }
    if (kvTail) {
      Value inside = arith::CmpIOp::create(b, arith::CmpIPredicate::ult, kvIdx,
                                           p.i32(plan.N));
      v = arith::SelectOp::create(b, inside, v, ninf);
    }
    u[e] = v;
  }

  Softmax out;
  Value base[2];
  for (int64_t h = 0; h < 2; ++h) {
    // m_new = max(m, rowmax(u) c) over the 4 threads sharing a row
    // (llvm.intr.maxnum, not arith.maxnumf: the NVVM lowering would call
    // libdevice for the latter)
    Value mx = ninf;
    for (int64_t e = 0; e < int64_t(u.size()); ++e)
      if ((e / 2) % 2 == h)
        mx = LLVM::MaxNumOp::create(b, mx, u[e]);
    for (int64_t off : {1, 2}) {
      Value other = gpu::ShuffleOp::create(b, mx, off, 32, gpu::ShuffleMode::XOR)
                        .getShuffleResult();
      mx = LLVM::MaxNumOp::create(b, mx, other);
    }
    if (rawMax)
      mx = arith::MulFOp::create(b, mx, p.f32(c2));
    out.mNew[h] = LLVM::MaxNumOp::create(b, mOld[h], mx);
    // base = m_new, or 0 while the row has seen no finite score
    Value empty = arith::CmpFOp::create(b, arith::CmpFPredicate::OEQ, out.mNew[h], ninf);
    base[h] = arith::SelectOp::create(b, empty, p.f32(0.0f), out.mNew[h]);
    // alpha = exp2(m - base)
    out.alpha[h] = p.ex2(arith::SubFOp::create(b, mOld[h], base[h]));
  }
  // P = exp2(u c - base);  rowsum(P)
  SmallVector<Value> pr(u.size());
  Value negBase[2] = {arith::NegFOp::create(b, base[0]), arith::NegFOp::create(b, base[1])};
  out.rowSum[0] = out.rowSum[1] = p.f32(0.0f);
  for (int64_t e = 0; e < int64_t(u.size()); ++e) {
    int64_t h = (e / 2) % 2;
    pr[e] = p.ex2(math::FmaOp::create(b, u[e], p.f32(c2), negBase[h]));
    out.rowSum[h] = arith::AddFOp::create(b, out.rowSum[h], pr[e]);
  }
  for (int64_t kk = 0; kk < plan.BN / 16; ++kk)
    for (int64_t r = 0; r < 4; ++r)
      out.pPacked.push_back(
          p.packHalf2(pr[8 * kk + 2 * r], pr[8 * kk + 2 * r + 1], plan.elem));
  return out;
}

/// Named barriers 1 and 2 alternate the consumer warpgroups' GEMM issue
/// (FlashAttention-3's ping-pong): one warpgroup's softmax runs while the
/// other's wgmmas occupy the tensor cores.
void pingpongSync(PtxBuilder &p, const ConsumerEnv &c) {
  Value id = arith::AddIOp::create(p.b, c.cw, p.i32(1));
  p.inlineAsm("bar.sync $0, 256;", "r", {id});
}
void pingpongArrive(PtxBuilder &p, const ConsumerEnv &c) {
  Value id = arith::SubIOp::create(p.b, p.i32(2), c.cw);
  p.inlineAsm("bar.arrive $0, 256;", "r", {id});
}

/// next[...] = the state after a tile, given the softmax result and O.
SmallVector<Value> nextState(PtxBuilder &p, ValueRange state, const Softmax &sm,
                             ArrayRef<Value> acc, ArrayRef<Value> pCarry) {
  SmallVector<Value> next;
  next.push_back(arith::AddIOp::create(p.b, state[kIter], p.i32(1)));
  next.push_back(state[kFirst]);
  next.push_back(sm.mNew[0]);
  next.push_back(sm.mNew[1]);
  // l = alpha * l + rowsum(P)
  for (int64_t h = 0; h < 2; ++h)
    next.push_back(arith::AddFOp::create(
        p.b, arith::MulFOp::create(p.b, state[kSum0 + h], sm.alpha[h]), sm.rowSum[h]));
  // acc = alpha * acc
  for (int64_t r = 0; r < int64_t(acc.size()); ++r)
    next.push_back(arith::MulFOp::create(p.b, acc[r], sm.alpha[(r / 2) % 2]));
  next.append(pCarry.begin(), pCarry.end());
  return next;
}

/// One KV tile, in order: S = QK, softmax, O = alpha O + P V.
SmallVector<Value> consumerStep(ImplicitLocOpBuilder &b, const ConsumerEnv &c,
                                TileStepOp ts, IRMapping &m, ValueRange state) {
  PtxBuilder p{b};
  const KernelPlan &plan = c.env.plan;
  auto [stage, phase] = stagePhase(p, state[kIter], plan.stages);
  p.mbarrierWait(c.env.bar(p, c.env.kFullSlot(), stage), phase);
  p.wgmmaFence();
  SmallVector<Value> s = issueQK(p, c, stage);
  p.wgmmaCommit();
  p.wgmmaWait(0);
  s = p.fenceOperands(s);
  p.mbarrierArrive(c.env.bar(p, c.env.kEmptySlot(), stage));

  Value mOld[2] = {state[kMax0], state[kMax0 + 1]};
  Softmax sm = softmax(p, c, ts, m, s, mOld);
  int64_t nAcc = plan.Dv / 2;
  SmallVector<Value> acc;
  for (int64_t r = 0; r < nAcc; ++r)
    acc.push_back(arith::MulFOp::create(b, state[kAcc + r], sm.alpha[(r / 2) % 2]));

  p.mbarrierWait(c.env.bar(p, c.env.vFullSlot(), stage), phase);
  p.wgmmaFence();
  acc = issuePV(p, plan, acc, sm.pPacked, smemAt(p, c.env, plan.vOff, stage, plan.vBytes()));
  p.wgmmaCommit();
  p.wgmmaWait(0);
  acc = p.fenceOperands(acc);
  p.mbarrierArrive(c.env.bar(p, c.env.vEmptySlot(), stage));

  // alpha was applied to acc before P.V: pass alpha = 1 to nextState.
  Softmax done = sm;
  done.alpha[0] = done.alpha[1] = p.f32(1.0f);
  SmallVector<Value> next = nextState(p, state, done, acc, {});
  for (int64_t h = 0; h < 2; ++h) // but l does need alpha
    next[kSum0 + h] = arith::AddFOp::create(
        b, arith::MulFOp::create(b, state[kSum0 + h], sm.alpha[h]), sm.rowSum[h]);
  return next;
}

/// The V tile the deferred P.V reads: the previous KV tile's, once loaded;
/// the Q tile (finite data, times P = 0) when this Q tile has no previous KV
/// tile, so no branch surrounds the wgmma.
Value previousV(PtxBuilder &p, const ConsumerEnv &c, Value hasPrev, Value prevStage,
                Value prevPhase) {
  const KernelPlan &plan = c.env.plan;
  {
    auto ifPrev = scf::IfOp::create(p.b, hasPrev, false);
    OpBuilder::InsertionGuard g(p.b);
    p.b.setInsertionPointToStart(&ifPrev.getThenRegion().front());
    p.mbarrierWait(c.env.bar(p, c.env.vFullSlot(), prevStage), prevPhase);
  }
  return arith::SelectOp::create(
      p.b, hasPrev, smemAt(p, c.env, plan.vOff, prevStage, plan.vBytes()), c.qTile);
}

/// One KV tile, software-pipelined (FlashAttention-3's intra-warpgroup
/// overlap): issue S_j = Q K_jᵀ and the previous tile's O += P_{j-1} V_{j-1}
/// together; the softmax of S_j runs while P.V is on the tensor cores. The
/// first tile's deferred P.V multiplies P = 0 by the (finite) Q tile, so no
/// branch surrounds a wgmma.
SmallVector<Value> consumerStepPipelined(ImplicitLocOpBuilder &b,
                                         const ConsumerEnv &c, TileStepOp ts,
                                         IRMapping &m, ValueRange state) {
  PtxBuilder p{b};
  const KernelPlan &plan = c.env.plan;
  int64_t nAcc = plan.Dv / 2;
  Value i = state[kIter];
  auto [stage, phase] = stagePhase(p, i, plan.stages);
  auto [hasPrev, prevStage, prevPhase] = previousTile(p, i, state[kFirst], plan.stages);
  SmallVector<Value> acc(state.begin() + kAcc, state.begin() + kAcc + nAcc);
  SmallVector<Value> pPrev(state.begin() + kAcc + nAcc, state.end());

  p.mbarrierWait(c.env.bar(p, c.env.kFullSlot(), stage), phase);
  Value vPrev = previousV(p, c, hasPrev, prevStage, prevPhase);
  if (plan.pingpong)
    pingpongSync(p, c);
  p.wgmmaFence();
  SmallVector<Value> s = issueQK(p, c, stage);
  p.wgmmaCommit();
  acc = issuePV(p, plan, acc, pPrev, vPrev);
  p.wgmmaCommit();
  if (plan.pingpong)
    pingpongArrive(p, c);
  p.wgmmaWait(1);
  s = p.fenceOperands(s);
  p.mbarrierArrive(c.env.bar(p, c.env.kEmptySlot(), stage));

  Value mOld[2] = {state[kMax0], state[kMax0 + 1]};
  Softmax sm = softmax(p, c, ts, m, s, mOld);

  p.wgmmaWait(0);
  acc = p.fenceOperands(acc);
  (void)p.fenceOperands(pPrev, /*ints=*/true); // P_{j-1} was read until here
  {
    auto ifPrev = scf::IfOp::create(b, hasPrev, false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(&ifPrev.getThenRegion().front());
    p.mbarrierArrive(c.env.bar(p, c.env.vEmptySlot(), prevStage));
  }
  return nextState(p, state, sm, acc, sm.pPacked);
}

/// out = acc / l (0 where l = 0), lse = ln(2) (m + log2 l) (-inf where l = 0)
void consumerFinalize(ImplicitLocOpBuilder &b, const ConsumerEnv &c,
                      FinalizeOp fin, IRMapping &m, ValueRange state) {
  PtxBuilder p{b};
  const KernelPlan &plan = c.env.plan;
  int64_t nAcc = plan.Dv / 2;
  SmallVector<Value> acc(state.begin() + kAcc, state.begin() + kAcc + nAcc);
  if (plan.pipelined) {
    // The last tile's deferred P.V.
    Value i = state[kIter];
    auto [hasPrev, prevStage, prevPhase] = previousTile(p, i, state[kFirst], plan.stages);
    Value vPrev = previousV(p, c, hasPrev, prevStage, prevPhase);
    SmallVector<Value> pPrev(state.begin() + kAcc + nAcc, state.end());
    p.wgmmaFence();
    acc = issuePV(p, plan, acc, pPrev, vPrev);
    p.wgmmaCommit();
    p.wgmmaWait(0);
    acc = p.fenceOperands(acc);
    (void)p.fenceOperands(pPrev, /*ints=*/true);
    // The last V slot goes back too: a persistent CTA's next tile reuses it.
    auto ifPrev = scf::IfOp::create(b, hasPrev, false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(&ifPrev.getThenRegion().front());
    p.mbarrierArrive(c.env.bar(p, c.env.vEmptySlot(), prevStage));
  }
  // Q (read by the Q.Kᵀ wgmmas, and as the first tile's stand-in V) is no
  // longer needed: the producer may load the next tile's while this tile's
  // outputs are stored.
  p.mbarrierArrive(c.env.bar(p, c.env.qEmptySlot()));
  Value out = m.lookupOrDefault(fin.getOut());
  Value bIdx = m.lookupOrDefault(fin.getB()), hIdx = m.lookupOrDefault(fin.getH());
  Value q0 = m.lookupOrDefault(fin.getQ0());
  auto idx = [&](int64_t v) { return arith::ConstantIndexOp::create(b, v); };
  // Byte address of out[b, h, 0, 0].
  Value outBase = memref::ExtractAlignedPointerAsIndexOp::create(b, out);
  Value headOff = arith::MulIOp::create(
      b, arith::AddIOp::create(b, arith::MulIOp::create(b, bIdx, idx(plan.Hq)), hIdx),
      idx(plan.M * plan.Dv * 2));
  Value headBase = arith::AddIOp::create(b, outBase, headOff);
  Value ninf = p.f32(-std::numeric_limits<float>::infinity());
  Value zero = p.f32(0.0f);
  for (int64_t h = 0; h < 2; ++h) {
    Value l = state[kSum0 + h];
    for (int64_t off : {1, 2})
      l = arith::AddFOp::create(
          b, l,
          gpu::ShuffleOp::create(b, l, off, 32, gpu::ShuffleMode::XOR).getShuffleResult());
    Value empty = arith::CmpFOp::create(b, arith::CmpFPredicate::OEQ, l, zero);
    Value inv = arith::SelectOp::create(b, empty, zero,
                                        arith::DivFOp::create(b, p.f32(1.0f), l));
    Value row = arith::AddIOp::create(
        b, arith::AddIOp::create(b, q0, c.rowBase), idx(8 * h));
    Value inside = arith::CmpIOp::create(b, arith::CmpIPredicate::ult, row, idx(plan.M));
    auto ifOp = scf::IfOp::create(b, inside, false);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(&ifOp.getThenRegion().front());
    Value rowAddr = arith::AddIOp::create(
        b, headBase, arith::MulIOp::create(b, row, idx(plan.Dv * 2)));
    for (int64_t j = 0; j < plan.Dv / 8; ++j) {
      Value lo = arith::MulFOp::create(b, acc[4 * j + 2 * h], inv);
      Value hi = arith::MulFOp::create(b, acc[4 * j + 2 * h + 1], inv);
      Value col = arith::AddIOp::create(b, c.colBase, idx(8 * j));
      Value addr = arith::AddIOp::create(
          b, rowAddr, arith::MulIOp::create(b, col, idx(2)));
      Value ptr = LLVM::IntToPtrOp::create(
          b, LLVM::LLVMPointerType::get(b.getContext(), 1),
          arith::IndexCastUIOp::create(b, b.getI64Type(), addr).getResult());
      LLVM::StoreOp::create(b, p.packHalf2(lo, hi, plan.elem), ptr, /*alignment=*/4);
    }
    if (Value lseBuf = fin.getLse()) {
      Value lse = m.lookupOrDefault(lseBuf);
      Value first = arith::CmpIOp::create(b, arith::CmpIPredicate::eq, c.quad, p.i32(0));
      auto lseIf = scf::IfOp::create(b, first, false);
      OpBuilder::InsertionGuard g2(b);
      b.setInsertionPointToStart(&lseIf.getThenRegion().front());
      Value lg = p.inlineAsm("lg2.approx.ftz.f32 $0, $1;", "=f,f", {l},
                             b.getF32Type(), false);
      Value v = arith::MulFOp::create(
          b, arith::AddFOp::create(b, state[kMax0 + h], lg),
          p.f32(static_cast<float>(kLn2)));
      v = arith::SelectOp::create(b, empty, ninf, v);
      memref::StoreOp::create(b, v, lse, ValueRange{bIdx, hIdx, row});
    }
  }
}

} // namespace

LogicalResult mlir::flexattn::gpukernel::emitConsumer(ImplicitLocOpBuilder &b,
                                                     const KernelEnv &env,
                                                     Block &body, IRMapping &map,
                                                     ValueRange tileIvs) {
  PtxBuilder p{b};
  const KernelPlan &plan = env.plan;
  p.setMaxNReg(/*increase=*/true, 232);
  auto idx = [&](int64_t v) { return arith::ConstantIndexOp::create(b, v); };
  Value wg = arith::DivUIOp::create(b, env.tid, idx(128));
  Value inWg = arith::RemUIOp::create(b, env.tid, idx(128));
  Value warp = arith::DivUIOp::create(b, inWg, idx(32));
  Value lane = arith::RemUIOp::create(b, inWg, idx(32));
  Value g = arith::DivUIOp::create(b, lane, idx(4));
  Value t = arith::RemUIOp::create(b, lane, idx(4));
  Value cwIdx = arith::SubIOp::create(b, wg, idx(1));
  ConsumerEnv c{env, toI32(b, cwIdx),
                // 64 cw + 16 w + g
                arith::AddIOp::create(
                    b,
                    arith::AddIOp::create(b, arith::MulIOp::create(b, cwIdx, idx(64)),
                                          arith::MulIOp::create(b, warp, idx(16))),
                    g),
                arith::MulIOp::create(b, t, idx(2)), toI32(b, t),
                arith::AddIOp::create(b, env.smem, p.i32(plan.qOff))};
  if (plan.pingpong) {
    // Consumer warpgroup 0 issues first: warpgroup 1 opens its barrier.
    Value second = arith::CmpIOp::create(b, arith::CmpIPredicate::eq, c.cw, p.i32(1));
    auto ifOp = scf::IfOp::create(b, second, false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(&ifOp.getThenRegion().front());
    p.inlineAsm("bar.arrive 1, 256;", "", {});
  }
  auto step = [&](ImplicitLocOpBuilder &ib, TileStepOp ts, IRMapping &m,
                  ValueRange st) {
    return plan.pipelined ? consumerStepPipelined(ib, c, ts, m, st)
                          : consumerStep(ib, c, ts, m, st);
  };
  auto finalize = [&](ImplicitLocOpBuilder &ib, FinalizeOp fin, IRMapping &m,
                      ValueRange st) { consumerFinalize(ib, c, fin, m, st); };
  // Per tile: wait for its Q, fresh softmax state; the ring counter carries on.
  auto tile = [&](ImplicitLocOpBuilder &tb, Value j,
                  ValueRange carried) -> FailureOr<SmallVector<Value>> {
    PtxBuilder tp{tb};
    tp.mbarrierWait(env.bar(tp, env.qFullSlot()), arith::AndIOp::create(tb, j, tp.i32(1)));
    Value ninf = tp.f32(-std::numeric_limits<float>::infinity());
    SmallVector<Value> state = {carried[0], carried[0], ninf, ninf, tp.f32(0.0f),
                                tp.f32(0.0f)};
    for (int64_t r = 0; r < plan.Dv / 2; ++r)
      state.push_back(tp.f32(0.0f));
    if (plan.pipelined)
      for (int64_t r = 0; r < numP(plan); ++r)
        state.push_back(tp.i32(0));
    FailureOr<SmallVector<Value>> last = emitRole(tb, body, map, state, step, finalize);
    if (failed(last))
      return failure();
    return SmallVector<Value>{(*last)[kIter]};
  };
  return forEachTile(b, env, map, tileIvs, {p.i32(0)}, tile);
}
