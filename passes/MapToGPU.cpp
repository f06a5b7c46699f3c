//===- MapToGPU.cpp - flexattn-map-to-gpu -----------------------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// Maps the tiled, block-sparse attention (an scf.parallel over (batch, head,
// Q tile) whose body holds the KV loops of flexattn.tile_step made by
// flexattn-tile and flexattn-block-sparsity) onto a warp-specialised Hopper
// kernel, FlashAttention-3 style:
//
//   CTA = one 128-row Q tile of one (batch, head); 3 warpgroups.
//   warpgroup 0 (producer, 40 registers): one thread issues TMA loads of Q
//     once and of K and V tiles into a ring of `stages` shared-memory slots,
//     walking the same KV loops as the consumers (so block sparsity is the
//     loop nest flexattn-block-sparsity made, cloned).
//   warpgroups 1, 2 (consumers, 232 registers): 64 Q rows each.
//     S = Q.Kᵀ with wgmma (both operands in shared memory), score_mod and
//     mask_mod on the register fragments (flexattn.apply_mods, inlined later
//     by flexattn-inline-mods), online softmax in registers, P rounded to
//     bf16/f16 in registers and O += P.V with register-A wgmma.
//   full/empty mbarrier pairs order the ring; the host launch becomes
//   gpu.launch_func with TMA descriptors as new function arguments.
//
// Fragment layout of a wgmma m64nN f32 accumulator (thread T = 32w + 4g + t
// of the warpgroup): d[4j + 2h + q] = C[16w + g + 8h][8j + 2t + q].
//
//===----------------------------------------------------------------------===//

#include "passes/HopperPtx.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "llvm/ADT/SetVector.h"
#include <functional>
#include <limits>

namespace mlir::flexattn {
#define GEN_PASS_DEF_FLEXATTNMAPTOGPU
#include "passes/Passes.h.inc"
} // namespace mlir::flexattn

using namespace mlir;
using namespace mlir::flexattn;
using hopper::PtxBuilder;

namespace {

constexpr int64_t kThreads = 384;
constexpr int64_t kRows = 128;       // Q tile rows: two consumer warpgroups.
constexpr int64_t kPanelCols = 64;   // 128-byte swizzle panels of 16-bit data.
constexpr double kLog2e = 1.4426950408889634;
constexpr double kLn2 = 0.6931471805599453;

/// Everything the kernel is specialised on, and its shared-memory plan.
struct KernelPlan {
  int64_t B, Hq, Hkv, M, N, D, Dv, BN, stages;
  bool pipelined, pingpong; // FlashAttention-3 schedules (see consumerStep*)
  Type elem;
  // Byte offsets from the 1024-aligned dynamic shared memory base.
  int64_t qOff, kOff, vOff, barOff, smemBytes;

  int64_t qBytes() const { return kRows * D * 2; }
  int64_t kBytes() const { return BN * D * 2; }
  int64_t vBytes() const { return BN * Dv * 2; }
  int64_t qTiles() const { return (M + kRows - 1) / kRows; }
  // Barrier slots: qFull, kFull[s], kEmpty[s], vFull[s], vEmpty[s].
  int64_t numBarriers() const { return 1 + 4 * stages; }
};

FailureOr<KernelPlan> planKernel(TileStepOp step, int64_t stages,
                                 bool pipelined, bool pingpong) {
  auto qt = cast<MemRefType>(step.getQ().getType());
  auto kt = cast<MemRefType>(step.getK().getType());
  auto vt = cast<MemRefType>(step.getV().getType());
  if (!qt.hasStaticShape() || !kt.hasStaticShape() || !vt.hasStaticShape())
    return step.emitOpError("flexattn-map-to-gpu needs static q/k/v shapes");
  KernelPlan p;
  p.B = qt.getDimSize(0), p.Hq = qt.getDimSize(1), p.M = qt.getDimSize(2);
  p.D = qt.getDimSize(3), p.Hkv = kt.getDimSize(1), p.N = kt.getDimSize(2);
  p.Dv = vt.getDimSize(3), p.BN = step.getTileSize()[1], p.stages = stages;
  p.elem = qt.getElementType();
  // The first pipelined step multiplies P = 0 by the Q tile in place of a V
  // tile: that needs the same tile shape. Ping-pong needs the pipeline.
  p.pipelined = pipelined && p.D == p.Dv;
  p.pingpong = pingpong && p.pipelined;
  if (!p.elem.isBF16() && !p.elem.isF16())
    return step.emitOpError("the GPU kernel takes bf16 or f16 q/k/v, got ")
           << p.elem;
  if ((p.D != 64 && p.D != 128) || (p.Dv != 64 && p.Dv != 128))
    return step.emitOpError("the GPU kernel supports head dims 64 and 128, "
                            "got D = ")
           << p.D << ", Dv = " << p.Dv;
  if (step.getTileSize()[0] != kRows || (p.BN != 64 && p.BN != 128))
    return step.emitOpError("the GPU kernel needs tile_size [128, 64|128] "
                            "(run flexattn-tile{tile-q=128 tile-kv=128}), got [")
           << step.getTileSize()[0] << ", " << p.BN << "]";
  p.qOff = 0;
  p.kOff = p.qOff + p.qBytes();
  p.vOff = p.kOff + stages * p.kBytes();
  p.barOff = p.vOff + stages * p.vBytes();
  // +1024: the base is rounded up to 1024 bytes at run time.
  p.smemBytes = p.barOff + 8 * p.numBarriers() + 1024;
  if (p.smemBytes > 227 * 1024)
    return step.emitOpError("the GPU kernel needs ")
           << p.smemBytes << " bytes of shared memory for " << stages
           << " stages, more than the 232448 an H100 block has";
  return p;
}

/// Per-kernel values shared by the roles.
struct KernelEnv {
  KernelPlan plan;
  Value smem;                  // i32, 1024-aligned base
  Value qMap, kMap, vMap;      // !llvm.ptr to CUtensorMaps
  Value tid;                   // index
  Value bar(PtxBuilder &p, int64_t slot) const {
    return arith::AddIOp::create(p.b, smem, p.i32(plan.barOff + 8 * slot));
  }
  /// Slot `base + stage` (stage an i32 value).
  Value bar(PtxBuilder &p, int64_t base, Value stage) const {
    Value off = arith::MulIOp::create(p.b, stage, p.i32(8));
    return arith::AddIOp::create(p.b, bar(p, base), off);
  }
  int64_t kFullSlot() const { return 1; }
  int64_t kEmptySlot() const { return 1 + plan.stages; }
  int64_t vFullSlot() const { return 1 + 2 * plan.stages; }
  int64_t vEmptySlot() const { return 1 + 3 * plan.stages; }
};

Value toI32(ImplicitLocOpBuilder &b, Value index) {
  return arith::IndexCastOp::create(b, b.getI32Type(), index);
}

/// stage = i % S, phase parity = (i / S) & 1.
std::pair<Value, Value> stagePhase(PtxBuilder &p, Value i, int64_t stages) {
  Value stage = arith::RemUIOp::create(p.b, i, p.i32(stages));
  Value round = arith::DivUIOp::create(p.b, i, p.i32(stages));
  Value phase = arith::AndIOp::create(p.b, round, p.i32(1));
  return {stage, phase};
}

using StepFn = function_ref<SmallVector<Value>(ImplicitLocOpBuilder &,
                                               TileStepOp, IRMapping &,
                                               ValueRange)>;
using FinalizeFn = function_ref<void(ImplicitLocOpBuilder &, FinalizeOp,
                                     IRMapping &, ValueRange)>;

/// Re-emits the Q tile's body (made by flexattn-tile and
/// flexattn-block-sparsity) for one role: the KV loops are rebuilt carrying
/// `state` through iter_args, each flexattn.tile_step becomes `step`,
/// flexattn.finalize becomes `finalize`, the stack state (alloca, fill) is
/// dropped (it lives in registers), and everything else is cloned.
LogicalResult emitRole(ImplicitLocOpBuilder &b, Block &body, IRMapping &map,
                       SmallVector<Value> state, StepFn step,
                       FinalizeFn finalize) {
  for (Operation &op : body.without_terminator()) {
    if (isa<memref::AllocaOp, linalg::FillOp>(op))
      continue;
    if (auto fin = dyn_cast<FinalizeOp>(op)) {
      finalize(b, fin, map, state);
      continue;
    }
    auto loop = dyn_cast<scf::ForOp>(op);
    TileStepOp tileStep;
    if (loop)
      for (Operation &inner : *loop.getBody())
        if (auto ts = dyn_cast<TileStepOp>(inner))
          tileStep = ts;
    if (!tileStep) {
      if (op.walk([](TileStepOp) { return WalkResult::interrupt(); })
              .wasInterrupted())
        return op.emitOpError("flexattn-map-to-gpu expects each "
                              "flexattn.tile_step directly in an scf.for");
      b.clone(op, map);
      continue;
    }
    auto newLoop = scf::ForOp::create(
        b, map.lookupOrDefault(loop.getLowerBound()),
        map.lookupOrDefault(loop.getUpperBound()),
        map.lookupOrDefault(loop.getStep()), state,
        [&](OpBuilder &nb, Location loc, Value iv, ValueRange iterArgs) {
          ImplicitLocOpBuilder ib(loc, nb);
          map.map(loop.getInductionVar(), iv);
          SmallVector<Value> next(iterArgs);
          for (Operation &inner : loop.getBody()->without_terminator()) {
            if (&inner == tileStep.getOperation())
              next = step(ib, tileStep, map, iterArgs);
            else
              ib.clone(inner, map);
          }
          scf::YieldOp::create(ib, next);
        });
    state.assign(newLoop.getResults().begin(), newLoop.getResults().end());
  }
  return success();
}

//===----------------------------------------------------------------------===//
// Producer: TMA loads of Q, then of K and V for every visited KV tile.
//===----------------------------------------------------------------------===//

LogicalResult emitProducer(ImplicitLocOpBuilder &b, const KernelEnv &env,
                           Block &body, IRMapping &map, Value bIdx, Value hIdx,
                           Value q0) {
  PtxBuilder p{b};
  const KernelPlan &plan = env.plan;
  p.setMaxNReg(/*increase=*/false, 40);
  Value leader = arith::CmpIOp::create(
      b, arith::CmpIPredicate::eq, env.tid, arith::ConstantIndexOp::create(b, 0));
  auto ifOp = scf::IfOp::create(b, leader, /*withElseRegion=*/false);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(&ifOp.getThenRegion().front());

  for (Value tensorMap : {env.qMap, env.kMap, env.vMap})
    p.fenceTensorMap(tensorMap);
  Value bI = toI32(b, bIdx), hI = toI32(b, hIdx), q0I = toI32(b, q0);
  // A tile of R rows is D/64 panels of R x 128 bytes, one TMA box each.
  auto loadTile = [&](Value dst, Value map4, int64_t rows, int64_t cols,
                      Value row0, Value head, Value bar) {
    for (int64_t panel = 0; panel < cols / kPanelCols; ++panel) {
      Value at = arith::AddIOp::create(b, dst, p.i32(panel * rows * 128));
      p.tmaLoad4d(at, map4, {p.i32(panel * kPanelCols), row0, head, bI}, bar);
    }
  };
  Value qBar = env.bar(p, 0);
  p.mbarrierArriveExpectTx(qBar, plan.qBytes());
  loadTile(arith::AddIOp::create(b, env.smem, p.i32(plan.qOff)), env.qMap,
           kRows, plan.D, q0I, hI, qBar);

  auto step = [&](ImplicitLocOpBuilder &ib, TileStepOp ts, IRMapping &m,
                  ValueRange state) -> SmallVector<Value> {
    PtxBuilder pp{ib};
    auto [stage, phase] = stagePhase(pp, state[0], plan.stages);
    Value freeParity = arith::XOrIOp::create(ib, phase, pp.i32(1));
    Value kv0 = toI32(ib, m.lookupOrDefault(ts.getKv0()));
    Value hkv = toI32(ib, m.lookupOrDefault(ts.getHkv()));
    struct {
      int64_t full, empty, off, bytes, cols;
      Value map;
    } tiles[] = {{env.kFullSlot(), env.kEmptySlot(), plan.kOff, plan.kBytes(),
                  plan.D, env.kMap},
                 {env.vFullSlot(), env.vEmptySlot(), plan.vOff, plan.vBytes(),
                  plan.Dv, env.vMap}};
    for (auto &t : tiles) {
      pp.mbarrierWait(env.bar(pp, t.empty, stage), freeParity);
      Value full = env.bar(pp, t.full, stage);
      pp.mbarrierArriveExpectTx(full, t.bytes);
      Value slot = arith::MulIOp::create(ib, stage, pp.i32(t.bytes));
      Value dst = arith::AddIOp::create(
          ib, arith::AddIOp::create(ib, env.smem, pp.i32(t.off)), slot);
      for (int64_t panel = 0; panel < t.cols / kPanelCols; ++panel) {
        Value at = arith::AddIOp::create(ib, dst, pp.i32(panel * plan.BN * 128));
        pp.tmaLoad4d(at, t.map, {pp.i32(panel * kPanelCols), kv0, hkv, bI}, full);
      }
    }
    return {arith::AddIOp::create(ib, state[0], pp.i32(1))};
  };
  auto finalize = [](ImplicitLocOpBuilder &, FinalizeOp, IRMapping &,
                     ValueRange) {};
  return emitRole(b, body, map, {p.i32(0)}, step, finalize);
}

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
/// [i, m0, m1, l0, l1, O..., P...] with m/l for fragment rows h = 0, 1 (log2
/// units; l is this thread's partial row sum). P, the previous tile's
/// probabilities packed to 16 bits, is carried only by the pipelined
/// schedule, whose P.V is issued one step late.
enum StateIndex { kIter = 0, kMax0 = 1, kSum0 = 3, kAcc = 5 };

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
  Value hasPrev = arith::CmpIOp::create(b, arith::CmpIPredicate::ugt, i, p.i32(0));
  Value prevI = arith::SelectOp::create(
      b, hasPrev, arith::SubIOp::create(b, i, p.i32(1)), p.i32(0));
  auto [prevStage, prevPhase] = stagePhase(p, prevI, plan.stages);
  SmallVector<Value> acc(state.begin() + kAcc, state.begin() + kAcc + nAcc);
  SmallVector<Value> pPrev(state.begin() + kAcc + nAcc, state.end());

  p.mbarrierWait(c.env.bar(p, c.env.kFullSlot(), stage), phase);
  {
    auto ifPrev = scf::IfOp::create(b, hasPrev, false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(&ifPrev.getThenRegion().front());
    p.mbarrierWait(c.env.bar(p, c.env.vFullSlot(), prevStage), prevPhase);
  }
  Value vPrev = arith::SelectOp::create(
      b, hasPrev, smemAt(p, c.env, plan.vOff, prevStage, plan.vBytes()), c.qTile);
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
    Value hasPrev = arith::CmpIOp::create(b, arith::CmpIPredicate::ugt, i, p.i32(0));
    Value prevI = arith::SelectOp::create(
        b, hasPrev, arith::SubIOp::create(b, i, p.i32(1)), p.i32(0));
    auto [prevStage, prevPhase] = stagePhase(p, prevI, plan.stages);
    {
      auto ifPrev = scf::IfOp::create(b, hasPrev, false);
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(&ifPrev.getThenRegion().front());
      p.mbarrierWait(c.env.bar(p, c.env.vFullSlot(), prevStage), prevPhase);
    }
    Value vPrev = arith::SelectOp::create(
        b, hasPrev, smemAt(p, c.env, plan.vOff, prevStage, plan.vBytes()), c.qTile);
    SmallVector<Value> pPrev(state.begin() + kAcc + nAcc, state.end());
    p.wgmmaFence();
    acc = issuePV(p, plan, acc, pPrev, vPrev);
    p.wgmmaCommit();
    p.wgmmaWait(0);
    acc = p.fenceOperands(acc);
  }
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

LogicalResult emitConsumer(ImplicitLocOpBuilder &b, const KernelEnv &env,
                           Block &body, IRMapping &map) {
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
  p.mbarrierWait(env.bar(p, 0), p.i32(0));
  if (plan.pingpong) {
    // Consumer warpgroup 0 issues first: warpgroup 1 opens its barrier.
    Value second = arith::CmpIOp::create(b, arith::CmpIPredicate::eq, c.cw, p.i32(1));
    auto ifOp = scf::IfOp::create(b, second, false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(&ifOp.getThenRegion().front());
    p.inlineAsm("bar.arrive 1, 256;", "", {});
  }
  Value ninf = p.f32(-std::numeric_limits<float>::infinity());
  SmallVector<Value> state = {p.i32(0), ninf, ninf, p.f32(0.0f), p.f32(0.0f)};
  for (int64_t r = 0; r < plan.Dv / 2; ++r)
    state.push_back(p.f32(0.0f));
  if (plan.pipelined)
    for (int64_t r = 0; r < numP(plan); ++r)
      state.push_back(p.i32(0));
  auto step = [&](ImplicitLocOpBuilder &ib, TileStepOp ts, IRMapping &m,
                  ValueRange st) {
    return plan.pipelined ? consumerStepPipelined(ib, c, ts, m, st)
                          : consumerStep(ib, c, ts, m, st);
  };
  auto finalize = [&](ImplicitLocOpBuilder &ib, FinalizeOp fin, IRMapping &m,
                      ValueRange st) { consumerFinalize(ib, c, fin, m, st); };
  return emitRole(b, body, map, state, step, finalize);
}

//===----------------------------------------------------------------------===//
// Outlining the Q-tile loop into a kernel and its launch.
//===----------------------------------------------------------------------===//

gpu::GPUModuleOp getOrCreateGpuModule(ModuleOp module) {
  for (auto gm : module.getOps<gpu::GPUModuleOp>())
    if (gm.getName() == "flexattn_kernels")
      return gm;
  OpBuilder b(module.getBodyRegion());
  b.setInsertionPointToEnd(module.getBody());
  module->setAttr(gpu::GPUDialect::getContainerModuleAttrName(), b.getUnitAttr());
  auto gm = gpu::GPUModuleOp::create(b, module.getLoc(), "flexattn_kernels");
  b.setInsertionPointToStart(gm.getBody());
  LLVM::GlobalOp::create(b, module.getLoc(),
                         LLVM::LLVMArrayType::get(b.getI8Type(), 0),
                         /*isConstant=*/false, LLVM::Linkage::External,
                         "__flexattn_smem", Attribute(), /*alignment=*/16,
                         /*addrSpace=*/3);
  return gm;
}

LogicalResult mapToGpu(RewriterBase &rewriter, scf::ParallelOp par,
                       int64_t stages, bool pipelined, bool pingpong) {
  Location loc = par.getLoc();
  auto scope = dyn_cast<memref::AllocaScopeOp>(&par.getBody()->front());
  if (!scope)
    return par.emitOpError("flexattn-map-to-gpu expects the Q-tile loop "
                           "made by flexattn-tile");
  Block &body = scope.getBodyRegion().front();
  TileStepOp firstStep;
  body.walk([&](TileStepOp ts) {
    if (!firstStep)
      firstStep = ts;
  });
  if (!firstStep)
    return par.emitOpError("flexattn-map-to-gpu found no flexattn.tile_step; "
                           "run flexattn-block-sparsity first");
  FailureOr<KernelPlan> plan = planKernel(firstStep, stages, pipelined, pingpong);
  if (failed(plan))
    return failure();
  auto func = par->getParentOfType<func::FuncOp>();
  if (!func)
    return par.emitOpError("flexattn-map-to-gpu expects a func.func parent");

  // Values from outside the loop: constants are re-created in the kernel,
  // memref function arguments become kernel parameters (q/k/v are read only
  // through TMA).
  Value qArg = firstStep.getQ(), kArg = firstStep.getK(), vArg = firstStep.getV();
  SetVector<Value> external;
  par->walk([&](Operation *op) {
    for (Value v : op->getOperands())
      if (!par->isAncestor(v.getParentBlock()->getParentOp()) && v != qArg &&
          v != kArg && v != vArg)
        external.insert(v);
  });
  // Pure ops over constants (the tile sizes, head group, ...) are cloned.
  std::function<bool(Value)> cloneable = [&](Value v) {
    Operation *def = v.getDefiningOp();
    return def && def->getNumRegions() == 0 && isPure(def) &&
           llvm::all_of(def->getOperands(), cloneable);
  };
  SmallVector<Value> params, recomputed;
  for (Value v : external) {
    if (cloneable(v))
      recomputed.push_back(v);
    else if (isa<BlockArgument>(v) && isa<MemRefType>(v.getType()))
      params.push_back(v);
    else
      return par.emitOpError("flexattn-map-to-gpu cannot pass this value to "
                             "the kernel: ")
             << v;
  }

  // Host: three new function arguments, the CUtensorMaps of q, k and v.
  auto ptrType = LLVM::LLVMPointerType::get(rewriter.getContext());
  Block &entry = func.getBody().front();
  SmallVector<Value> maps;
  for (auto [name, operand] :
       {std::pair<StringRef, Value>{"q", qArg}, {"k", kArg}, {"v", vArg}}) {
    unsigned argNo = func.getNumArguments();
    if (failed(func.insertArgument(argNo, ptrType,
                                   rewriter.getDictionaryAttr({}), loc)))
      return failure();
    func.setArgAttr(argNo, "flexattn.tensor_map", rewriter.getStringAttr(name));
    func.setArgAttr(argNo, "flexattn.box",
                    rewriter.getDenseI64ArrayAttr({kPanelCols, kRows, 1, 1}));
    auto tensorArg = dyn_cast<BlockArgument>(operand);
    if (!tensorArg)
      return par.emitOpError("q/k/v must be function arguments for TMA");
    func.setArgAttr(argNo, "flexattn.tensor_arg",
                    rewriter.getI64IntegerAttr(tensorArg.getArgNumber()));
    maps.push_back(entry.getArgument(argNo));
  }

  // Kernel.
  auto module = par->getParentOfType<ModuleOp>();
  gpu::GPUModuleOp gpuModule = getOrCreateGpuModule(module);
  SmallVector<Type> argTypes(3, ptrType);
  for (Value v : params)
    argTypes.push_back(v.getType());
  OpBuilder::InsertionGuard guard(rewriter);
  rewriter.setInsertionPointToEnd(gpuModule.getBody());
  auto kernel = gpu::GPUFuncOp::create(
      rewriter, loc, (func.getName() + "_kernel").str(),
      rewriter.getFunctionType(argTypes, {}));
  kernel->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), rewriter.getUnitAttr());
  kernel->setAttr("nvvm.maxntid", rewriter.getDenseI32ArrayAttr({kThreads, 1, 1}));
  kernel->setAttr("nvvm.minctasm", rewriter.getI32IntegerAttr(1));
  Block &kEntry = kernel.getBody().front();
  ImplicitLocOpBuilder b(loc, rewriter);
  b.setInsertionPointToStart(&kEntry);
  IRMapping map;
  std::function<void(Value)> recompute = [&](Value v) {
    if (map.contains(v))
      return;
    Operation *def = v.getDefiningOp();
    for (Value operand : def->getOperands())
      recompute(operand);
    b.clone(*def, map);
  };
  for (Value v : recomputed)
    recompute(v);
  for (auto [i, v] : llvm::enumerate(params))
    map.map(v, kEntry.getArgument(3 + i));
  Value bIdx = gpu::BlockIdOp::create(b, gpu::Dimension::z);
  Value hIdx = gpu::BlockIdOp::create(b, gpu::Dimension::y);
  // Q tiles launch last-first: under a causal-like mask the late tiles have
  // the most KV blocks, and starting them first evens out the tail.
  Value qtIdx = arith::SubIOp::create(
      b, arith::ConstantIndexOp::create(b, plan->qTiles() - 1),
      gpu::BlockIdOp::create(b, gpu::Dimension::x));
  map.map(par.getInductionVars()[0], bIdx);
  map.map(par.getInductionVars()[1], hIdx);
  map.map(par.getInductionVars()[2], qtIdx);

  PtxBuilder p{b};
  KernelEnv env{*plan, Value(), kEntry.getArgument(0), kEntry.getArgument(1),
                kEntry.getArgument(2), gpu::ThreadIdOp::create(b, gpu::Dimension::x)};
  Value raw = LLVM::PtrToIntOp::create(
      b, b.getI32Type(),
      LLVM::AddressOfOp::create(
          b, LLVM::LLVMPointerType::get(b.getContext(), 3), "__flexattn_smem"));
  env.smem = arith::AndIOp::create(b, arith::AddIOp::create(b, raw, p.i32(1023)),
                                   p.i32(~int64_t(1023)));

  // One thread initialises the barriers; everyone waits for it.
  {
    Value leader = arith::CmpIOp::create(b, arith::CmpIPredicate::eq, env.tid,
                                         arith::ConstantIndexOp::create(b, 0));
    auto init = scf::IfOp::create(b, leader, false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(&init.getThenRegion().front());
    p.mbarrierInit(env.bar(p, 0), 1);
    for (int64_t s = 0; s < plan->stages; ++s) {
      p.mbarrierInit(env.bar(p, env.kFullSlot() + s), 1);
      p.mbarrierInit(env.bar(p, env.vFullSlot() + s), 1);
      p.mbarrierInit(env.bar(p, env.kEmptySlot() + s), 256);
      p.mbarrierInit(env.bar(p, env.vEmptySlot() + s), 256);
    }
    p.fenceMbarrierInit();
  }
  gpu::BarrierOp::create(b);

  // q0 and the other per-tile values are re-derived inside each role.
  Value isProducer = arith::CmpIOp::create(
      b, arith::CmpIPredicate::ult, env.tid, arith::ConstantIndexOp::create(b, 128));
  auto roles = scf::IfOp::create(b, isProducer, /*withElseRegion=*/true);
  {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(&roles.getThenRegion().front());
    Value q0 = arith::MulIOp::create(b, qtIdx, arith::ConstantIndexOp::create(b, kRows));
    if (failed(emitProducer(b, env, body, map, bIdx, hIdx, q0)))
      return failure();
    b.setInsertionPointToStart(&roles.getElseRegion().front());
    if (failed(emitConsumer(b, env, body, map)))
      return failure();
  }
  gpu::ReturnOp::create(b);

  // Host launch replaces the loop.
  rewriter.setInsertionPoint(par);
  auto cst = [&](int64_t v) { return arith::ConstantIndexOp::create(rewriter, loc, v); };
  SmallVector<Value> operands(maps);
  operands.append(params.begin(), params.end());
  gpu::LaunchFuncOp::create(
      rewriter, loc, kernel,
      gpu::KernelDim3{cst(plan->qTiles()), cst(plan->Hq), cst(plan->B)},
      gpu::KernelDim3{cst(kThreads), cst(1), cst(1)},
      arith::ConstantIntOp::create(rewriter, loc, plan->smemBytes, 32), operands);
  rewriter.eraseOp(par);
  return success();
}

struct FlexAttnMapToGPUPass
    : public flexattn::impl::FlexAttnMapToGPUBase<FlexAttnMapToGPUPass> {
  using FlexAttnMapToGPUBase::FlexAttnMapToGPUBase;

  void runOnOperation() override {
    SmallVector<scf::ParallelOp> loops;
    getOperation()->walk([&](scf::ParallelOp par) {
      if (par->walk([](FinalizeOp) { return WalkResult::interrupt(); })
              .wasInterrupted())
        loops.push_back(par);
    });
    IRRewriter rewriter(&getContext());
    for (scf::ParallelOp par : loops)
      if (failed(mapToGpu(rewriter, par, stages, pipeline, pingpong)))
        return signalPassFailure();
  }
};

} // namespace
