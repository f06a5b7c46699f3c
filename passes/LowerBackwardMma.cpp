//===- LowerBackwardMma.cpp - flexattn-lower-backward-mma -------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// The tensor-core backward (FlashAttention-2 shaped, sm_80 code): lowers the
// backward's tile ops inside the gpu.launch of flexattn-map-backward-to-grid
// to cooperative rings, flexattn.mma and per-element math on the register
// fragments. Both nests keep their CTAs (no accumulator has two writers, no
// atomics but the capture gradients'): a CTA owns a tile of R = 64 or 128
// rows (keys for dk/dv, queries for dq), a group of 4 warps per 64-row band,
// and streams the other side in 64-row chunks (32 at D = 128 on a tile that
// crosses M or N, where 64 spills):
//
//   CTA start   copy the owned tiles (K, V | Q, dout) into their rings once
//   dk/dv step  per 64-query chunk: copy Q, dout; Sᵀ = K Qᵀ, dPᵀ = V doutᵀ
//               (warps own keys: the fragment's rows are keys, its columns
//               queries); Pᵀ, dXᵀ per element (unscaledScoreGradient: P's
//               exponent one fma, dX without the scale); dV += Pᵀ dout,
//               dK += dXᵀ Q (register A)
//               With dq_sum (flexattn-atomic-dq, no dq steps): dXᵀ stored
//               transposed to shared memory, dQ = dX K (wgmma from shared
//               memory) issued with dV and dK, staged in f32 and added into
//               dq_sum by one bulk reduction per chunk
//   dq step     per 64-key chunk: copy K, V; S = Q Kᵀ, dP = dout Vᵀ; dX per
//               element (capture gradients: f32 atomics); dQ += dX K
//   overlap     (wgmma) a 64-row chunk's math in four 16-column parts: part
//               0's P while dP's MMA runs, part i's products (B from row
//               16 i, flexattn.mma's b_row) while part i + 1's math runs,
//               the last part's at the end; two groups issue S, dP in turns
//   store_tile  the thread's accumulator elements (dK, dQ times the scale),
//               converted, inside dst
//
// Every GEMM is one of flexattn.mma's forms: A from a shared tile (the
// owned band) or from registers (P, dX: the accumulator pairs are the A
// layout), B K-major (transpose_b) or row-major. The f32 accumulators are
// per-thread vectors in stack slots at the kernel's entry, which LLVM keeps
// in registers (whole-vector accesses only). The chunks are a loop, and the
// streamed rings' position a run-time counter (a stack slot too), so no
// chunk's indices or slot addresses are hoisted out of the loops and kept
// live (unrolled, with constant slots, the kernel spilled). The next
// chunk's copy is issued right after the wait for this one (two-slot
// rings: one wait and one barrier per chunk), so it lands during this
// chunk's MMAs; after a step's last chunk that is the next step's first
// (a step alone in its loop: the coordinates of the loop's next
// iteration), so only a loop's first chunk is waited for cold.
//
//===----------------------------------------------------------------------===//

#include "passes/BackwardMath.h"
#include "passes/GroupTurns.h"
#include "passes/Passes.h"
#include "passes/QuadTranspose.h"
#include "passes/TileRoles.h"

#include "mlir/IR/Dominance.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/Matchers.h"

namespace mlir::flexattn {
#define GEN_PASS_DEF_FLEXATTNLOWERBACKWARDMMA
#include "passes/Passes.h.inc"
} // namespace mlir::flexattn

using namespace mlir;
using namespace mlir::flexattn;
using namespace mlir::flexattn::backward;

namespace {

constexpr int64_t kBand = 64;    // rows of a group's band of the owned tile
constexpr int64_t kGroup = 128;  // threads of a band's 4 warps
constexpr int64_t kParts = 4;    // overlap: parts of a chunk's element math
constexpr const char *kPass = "flexattn-lower-backward-mma";

/// What the kernel is specialised on, checked on every step.
struct Plan {
  int64_t R = 0, D = 0, M = 0, N = 0, B = 0, H = 0; // H: query heads
  Type elem;

  LogicalResult check(BackwardStepOp op) {
    auto q = cast<MemRefType>(op.getQ().getType());
    auto k = cast<MemRefType>(op.getK().getType());
    auto v = cast<MemRefType>(op.getV().getType());
    auto dout = cast<MemRefType>(op.getDout().getType());
    for (MemRefType t : {q, k, v, dout})
      if (!t.hasStaticShape() || !t.getLayout().isIdentity())
        return op.emitOpError() << kPass << " needs static identity-layout q/k/v/dout";
    Type e = q.getElementType();
    if ((!e.isBF16() && !e.isF16()) || k.getElementType() != e ||
        v.getElementType() != e || dout.getElementType() != e)
      return op.emitOpError() << kPass << " takes bf16 or f16 q/k/v/dout";
    int64_t d = q.getDimSize(3);
    if ((d != 64 && d != 128) || k.getDimSize(3) != d || v.getDimSize(3) != d)
      return op.emitOpError() << kPass << " supports head dims 64 and 128 with Dv = D";
    ArrayRef<int64_t> ts = op.getTileSize();
    if (ts[0] != ts[1] || (ts[0] != 64 && ts[0] != 128))
      return op.emitOpError() << kPass << " needs square tiles of 64 or 128, got ["
                              << ts[0] << ", " << ts[1] << "]";
    bool kvOwner = op.getDkAcc() || op.getDvAcc();
    if (kvOwner == static_cast<bool>(op.getDqAcc()))
      return op.emitOpError() << kPass << " needs a step with dq or with dk/dv, not both";
    if (kvOwner && !op.getCaptureGrads().empty())
      return op.emitOpError() << kPass << " accumulates capture gradients in the dq steps only";
    if (R && (R != ts[0] || D != d || elem != e || M != q.getDimSize(2) ||
              N != k.getDimSize(2)))
      return op.emitOpError() << kPass << ": every step of a launch must have the "
                                          "same tile, head dim, type and lengths";
    R = ts[0], D = d, elem = e, M = q.getDimSize(2), N = k.getDimSize(2);
    B = q.getDimSize(0), H = q.getDimSize(1);
    dqSum |= static_cast<bool>(op.getDqSum());
    return success();
  }
  int64_t threads() const { return R / kBand * kGroup; }
  /// Whether a tile can cross M or N (then scores past them get P = 0 by a
  /// select).
  bool ragged() const { return M % R || N % R; }
  /// Rows of a streamed chunk, the columns of the score fragments (chunk / 2
  /// f32 per thread). 64: the S and dP GEMMs (A the owned band in shared
  /// memory) read 2/3 of the shared memory per FLOP that 32 rows do, and a
  /// step waits half as often. 32 where 64 spills: at D = 128 beside the
  /// selects of a ragged tile (dK and dV alone take 128 registers), except
  /// with dq_sum, whose dQ GEMM takes a chunk as its M = 64 rows.
  int64_t chunk() const { return D == 128 && ragged() && !dqSum ? 32 : 64; }
  bool dqSum = false; // a step adds into dq_sum: 64-row chunks (its dQ GEMM's M)
  /// Whether a 64-row chunk's element math and register-A products run in
  /// kParts parts, each part's products during the next part's math
  /// (`overlap`: wgmma, whose MMAs are asynchronous).
  bool overlap = false;
  void setOverlap(bool on) { overlap = on && chunk() == 64 && !dqSum; }
  /// Whether the two groups issue a chunk's Sᵀ, dPᵀ in turns (GroupTurns.h):
  /// with overlap, where there are two.
  bool turns() const { return overlap && threads() == 2 * kGroup; }
};

struct Lowering {
  ImplicitLocOpBuilder &b;
  Plan plan;
  Value ownA, ownB, strA, strB; // rings: owned tiles, streamed chunks
  Value position;               // memref<i32>: the streamed rings' next position
  Value band, frow, fcol;       // index: the group's band, the thread's
                                // first fragment row and column
  DenseMap<Value, Value> accs;  // [R, D] tile -> memref<vector<D/2 x f32>>
  DenseMap<Value, float> scales; // dK, dQ tiles -> the scale their stores
                                 // apply (the steps' dX leave it out)
  Value tid;                    // index: the thread in the CTA
  Value dxRing;                 // dq_sum: each group's dX of a chunk (a slot
                                // per band), read by the dQ GEMMs
  Value dqStage;                // dq_sum: the chunk's scaled dQ, row-major f32
                                // (a slot per group where both sum one panel)
  /// Per differentiated load of the dq steps (vjp_loads order): the
  /// thread's running sum for one index of the capture (stack slots, kept in
  /// registers), added to the gradient when the index changes and at the
  /// tile's end: one atomic per run of equal indices instead of one per
  /// score (a learnable ALiBi slope is one index per tile). With partials
  /// (the deterministic mode), a plain add into the thread's own slot.
  struct CaptureCache {
    Value grad, sum;        // gradient buffer, memref<f32>
    Value valid;            // memref<i8>, for a rank-0 capture only; else
                            // idx[0] = -1 (no index) says it holds nothing
    SmallVector<Value> idx; // memref<i32> per dim of the capture (fewer
                            // registers than index's 64 bits)
  };
  SmallVector<CaptureCache> caches;
  bool partials = false;

  Value idx(int64_t v) { return arith::ConstantIndexOp::create(b, v); }
  Value pos0() { return arith::ConstantIntOp::create(b, 0, 32); }
  Value add(Value x, Value y) { return arith::AddIOp::create(b, x, y); }
  Value add(Value x, int64_t c) { return c ? add(x, idx(c)) : x; }
  VectorType frag(int64_t cols, Type e) { return VectorType::get({cols / 2}, e); }

  /// Copies rows [row, row + rows) of src[b, h] into `ring`'s slot of
  /// `pos` and rows of `src2` into `ring2`'s (where `valid`, if given).
  void issuePair(Value ring, Value src, Value ring2, Value src2, Value bb, Value h,
                 Value row, Value pos, Value valid = Value()) {
    RingAcquireOp::create(b, ring, pos);
    RingAcquireOp::create(b, ring2, pos);
    RingCopyOp::create(b, src, bb, h, row, ring, pos, valid);
    RingCopyOp::create(b, src2, bb, h, row, ring2, pos, valid);
  }
  /// Waits for the pair of `pos` (the last copies issued); returns the slots.
  std::pair<Value, Value> waitPair(Value ring, Value ring2, Value pos) {
    RingWaitOp::create(b, ring, pos).setInFlight(1);
    Value s1 = RingSlotOp::create(b, ring, pos);
    RingWaitOp::create(b, ring2, pos).setInFlight(0);
    return {s1, RingSlotOp::create(b, ring2, pos)};
  }

  /// Waits for every MMA in `results` at once (on sm_90a wgmma runs them
  /// back to back; mma.sync's wait is nothing).
  SmallVector<Value> waitAll(ValueRange results) { return waitSome(0, results); }
  /// Waits until at most `pending` of the latest MMA groups run; `values`
  /// (results and register operands of the groups waited for) readable.
  SmallVector<Value> waitSome(int64_t pending, ValueRange values) {
    ResultRange waited = MmaWaitOp::create(b, pending, values).getResults();
    return SmallVector<Value>(waited.begin(), waited.end());
  }
  /// Issues acc + a . bTile for each (accumulator tile, a, bTile) (their
  /// stack vectors), B from row bRow if given; the results, to wait for.
  SmallVector<Value> issue(ArrayRef<std::array<Value, 3>> products, Value bRow = Value()) {
    SmallVector<Value> results;
    for (auto [tile, a, bTile] : products) {
      Value acc = memref::LoadOp::create(b, accs.lookup(tile), ValueRange{});
      results.push_back(MmaOp::create(b, acc.getType(), a, Value(), bTile, bRow, acc, UnitAttr()));
    }
    return results;
  }
  /// The waited sums of `issue` back into their accumulators.
  void store(ArrayRef<std::array<Value, 3>> products, ArrayRef<Value> sums) {
    for (auto [product, sum] : llvm::zip(products, sums))
      memref::StoreOp::create(b, sum, accs.lookup(product[0]), ValueRange{});
  }
  /// acc += a . bTile for each product, the MMAs issued together.
  void accumulate(ArrayRef<std::array<Value, 3>> products) {
    store(products, waitAll(issue(products)));
  }

  /// Where a streamed chunk is copied from (rows [row, row + chunk) of
  /// the tensors at b, h), and whether it exists (null: always).
  struct Streamed {
    Value valid, b, h, row;
  };
  FailureOr<Streamed> streamedAt(BackwardStepOp op, scf::ForOp loop, Value iv,
                                 Value when = Value());
  /// The thread's band number (its group), i32.
  Value bandNo() {
    return arith::IndexCastOp::create(b, b.getI32Type(),
                                      arith::DivUIOp::create(b, tid, idx(kGroup)));
  }
  void addDq(BackwardStepOp op, Value row0, ArrayRef<std::array<Value, 3>> products);
  LogicalResult lowerStep(BackwardStepOp op);
  void lowerStore(StoreTileOp op);

  /// The thread's partial slot of the dq tile (b, h, q0): tiles in (b, h,
  /// Q tile) order, threads() slots each. In i32 (fewer than 2^30 slots:
  /// backward.capture_partials bounds the scratch), one register if kept.
  Value partialSlot(Value bb, Value h, Value q0) {
    auto i32 = [&](Value v) { return arith::IndexCastOp::create(b, b.getI32Type(), v); };
    auto c32 = [&](int64_t v) { return arith::ConstantIntOp::create(b, v, 32); };
    Value tileIdx = arith::AddIOp::create(
        b,
        arith::MulIOp::create(
            b, arith::AddIOp::create(b, arith::MulIOp::create(b, i32(bb), c32(plan.H)), i32(h)),
            c32(llvm::divideCeil(plan.M, plan.R))),
        arith::DivUIOp::create(b, i32(q0), c32(plan.R)));
    Value slot = arith::AddIOp::create(
        b, arith::MulIOp::create(b, tileIdx, c32(plan.threads())), i32(tid));
    return arith::IndexCastOp::create(b, b.getIndexType(), slot);
  }
  /// Whether cache c holds a sum: idx[0] is not -1 (an i8 flag for a
  /// rank-0 capture; i1 memrefs do not lower). No register beyond the index.
  Value holds(const CaptureCache &c) {
    if (c.idx.empty())
      return arith::CmpIOp::create(b, arith::CmpIPredicate::ne,
                                   memref::LoadOp::create(b, c.valid, ValueRange{}),
                                   arith::ConstantIntOp::create(b, 0, 8));
    return arith::CmpIOp::create(b, arith::CmpIPredicate::ne,
                                 memref::LoadOp::create(b, c.idx[0], ValueRange{}),
                                 arith::ConstantIntOp::create(b, -1, 32));
  }
  void setHolds(const CaptureCache &c, bool v) {
    if (c.idx.empty())
      memref::StoreOp::create(b, arith::ConstantIntOp::create(b, v, 8), c.valid, ValueRange{});
    else if (!v)
      memref::StoreOp::create(b, arith::ConstantIntOp::create(b, -1, 32), c.idx[0],
                              ValueRange{});
  }
  /// Adds cache c's sum to its gradient, if it holds one.
  void flush(const CaptureCache &c, Value slot) {
    auto branch = scf::IfOp::create(b, holds(c), /*withElseRegion=*/false);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(branch.thenBlock());
    Value sum = memref::LoadOp::create(b, c.sum, ValueRange{});
    SmallVector<Value> at;
    for (Value i : c.idx)
      at.push_back(arith::IndexCastOp::create(b, b.getIndexType(),
                                              memref::LoadOp::create(b, i, ValueRange{})));
    if (!partials) {
      memref::AtomicRMWOp::create(b, arith::AtomicRMWKind::addf, sum, c.grad, at);
      return;
    }
    at.push_back(slot);
    Value old = memref::LoadOp::create(b, c.grad, at);
    memref::StoreOp::create(b, arith::AddFOp::create(b, old, sum), c.grad, at);
  }
  /// The capture-gradient sink of a dq step's scores: where dS != 0, each
  /// load's dS dscore/dload joins its cache (flushed first when the index
  /// differs).
  void cacheCaptureGrads(BackwardStepOp op, ValueRange mods, Value dS) {
    Value zero = arith::ConstantOp::create(b, b.getF32FloatAttr(0.0f));
    auto some = scf::IfOp::create(
        b, arith::CmpFOp::create(b, arith::CmpFPredicate::ONE, dS, zero),
        /*withElseRegion=*/false);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(some.thenBlock());
    unsigned pos = 2;
    for (const CaptureCache &c : caches) {
      Value g = arith::MulFOp::create(b, dS, mods[pos]);
      ValueRange at = mods.slice(pos + 1, c.idx.size());
      pos += 1 + c.idx.size();
      // A held index equals the score's (-1 is none).
      Value same = c.idx.empty() ? holds(c) : arith::ConstantIntOp::create(b, 1, 1);
      SmallVector<Value> at32;
      for (Value i : at)
        at32.push_back(arith::IndexCastOp::create(b, b.getI32Type(), i));
      for (auto [slotOfIdx, i] : llvm::zip(c.idx, at32))
        same = arith::AndIOp::create(
            b, same,
            arith::CmpIOp::create(b, arith::CmpIPredicate::eq,
                                  memref::LoadOp::create(b, slotOfIdx, ValueRange{}), i));
      auto branch = scf::IfOp::create(b, same, /*withElseRegion=*/true);
      OpBuilder::InsertionGuard g2(b);
      b.setInsertionPointToStart(branch.thenBlock());
      Value sum = memref::LoadOp::create(b, c.sum, ValueRange{});
      memref::StoreOp::create(b, arith::AddFOp::create(b, sum, g), c.sum, ValueRange{});
      b.setInsertionPointToStart(branch.elseBlock());
      flush(c, partials ? partialSlot(op.getB(), op.getH(), op.getQ0()) : Value());
      for (auto [slotOfIdx, i] : llvm::zip(c.idx, at32))
        memref::StoreOp::create(b, i, slotOfIdx, ValueRange{});
      memref::StoreOp::create(b, g, c.sum, ValueRange{});
      setHolds(c, true);
    }
  }
};

/// The first streamed chunk of `op` at iteration `iv` of its loop (where
/// `when`, if given, holds too): the body's computation of its
/// coordinates cloned for `iv` (the block-sparse index load included)
/// where `iv` is below the loop's bound, else zeros and not valid.
/// Coordinates computed outside the body are used as they are.
FailureOr<Lowering::Streamed> Lowering::streamedAt(BackwardStepOp op, scf::ForOp loop,
                                                   Value iv, Value when) {
  bool kvOwner = op.getDkAcc() || op.getDvAcc();
  SmallVector<Value> coords = {op.getB(), kvOwner ? op.getH() : op.getHkv(),
                               kvOwner ? op.getQ0() : op.getKv0()};
  Block *body = loop.getBody();
  auto inBody = [&](Value v) {
    Operation *def = v.getDefiningOp();
    return def ? def->getBlock() == body : cast<BlockArgument>(v).getOwner() == body;
  };
  Value valid = arith::CmpIOp::create(b, arith::CmpIPredicate::slt, iv, loop.getUpperBound());
  if (when)
    valid = arith::AndIOp::create(b, when, valid);
  SmallVector<Value> varying = llvm::filter_to_vector(coords, inBody);
  FailureOr<SmallVector<Value>> later =
      valuesAtIteration(b, loop, IRMapping(), iv, valid, varying, kPass);
  if (failed(later))
    return failure();
  Streamed at{valid, coords[0], coords[1], coords[2]};
  for (auto [v, result] : llvm::zip(varying, *later))
    for (Value *c : {&at.b, &at.h, &at.row})
      if (*c == v)
        *c = result;
  return at;
}

/// The chunk's dV += Pᵀ dout, dK += dXᵀ Q (`products`) and dq_sum[b, h,
/// row0 + r, c] += scale x (dX K)[r, c] for its 64 queries from row0, after
/// every group stored its dX: dQ's columns in 64-column panels of K, split
/// between the groups (2 bands, 2 panels: a panel each, over both bands'
/// keys; 2 bands, 1 panel: each its own band's keys, into a staging slot of
/// its own, so the groups only wait for themselves (named barriers); 1
/// band: its panels), each an m64n64 product from shared memory issued with
/// dV and dK and waited for with them, then scaled and staged row-major in
/// f32; after a barrier one thread per staging slot adds the slot's rows
/// inside M into dq_sum with one bulk reduction (FlashAttention-3's dQ: L2
/// adds whole lines, where per-element atomics from every KV tile of a head
/// contend). That thread waits for its previous reduction to have read the
/// slot before the first barrier.
void Lowering::addDq(BackwardStepOp op, Value row0,
                     ArrayRef<std::array<Value, 3>> products) {
  int64_t bands = plan.R / kBand, panels = plan.D / 64;
  bool slotPerGroup = bands == 2 && panels == 1;
  Type f32 = b.getF32Type();
  Value group = arith::DivUIOp::create(b, tid, idx(kGroup));
  Value group32 = bandNo();
  Value reducer = arith::CmpIOp::create(
      b, arith::CmpIPredicate::eq, slotPerGroup ? arith::RemUIOp::create(b, tid, idx(kGroup)) : tid,
      idx(0));
  auto asReducer = [&](function_ref<void()> body) {
    auto branch = scf::IfOp::create(b, reducer, /*withElseRegion=*/false);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(branch.thenBlock());
    body();
  };
  auto barrier = [&] {
    if (!slotPerGroup) {
      gpu::BarrierOp::create(b);
      return;
    }
    // Barrier 1 + g, the group's 128 threads (0 is the CTA's).
    NVVM::BarrierOp::create(b, Type(),
                            arith::AddIOp::create(b, group32, arith::ConstantIntOp::create(b, 1, 32)),
                            arith::ConstantIntOp::create(b, kGroup, 32),
                            NVVM::BarrierReductionAttr(), Value());
  };
  asReducer([&] { BulkWaitReadOp::create(b); });
  barrier();
  auto tileType = SmemTileType::get(b.getContext(), 64, 64, plan.elem);
  Value kTile = RingSlotOp::create(b, ownA, pos0());
  Value stage = RingSlotOp::create(b, dqStage, slotPerGroup ? group32 : pos0());
  // (panel, bands summed over) of each product this group computes.
  SmallVector<std::pair<Value, SmallVector<Value>>> jobs;
  if (bands == 2 && panels == 2)
    jobs.push_back({group, {idx(0), idx(1)}});
  else if (bands == 2)
    jobs.push_back({idx(0), {group}});
  else
    for (int64_t p = 0; p < panels; ++p)
      jobs.push_back({idx(p), {idx(0)}});
  SmallVector<Value> results = issue(products);
  auto fragType = frag(64, f32);
  for (auto &[panel, over] : jobs) {
    Value acc;
    for (Value k : over) {
      Value dx = RingSlotOp::create(
          b, dxRing, arith::IndexCastOp::create(b, b.getI32Type(), k));
      Value kb = SmemTilePanelOp::create(b, tileType, kTile,
                                         arith::MulIOp::create(b, k, idx(kBand)), panel);
      acc = MmaOp::create(b, fragType, dx, idx(0), kb, Value(), acc, UnitAttr());
    }
    results.push_back(acc);
  }
  SmallVector<Value> done = waitAll(results);
  store(products, done);
  Value scale = arith::ConstantOp::create(
      b, DenseElementsAttr::get(fragType, b.getF32FloatAttr(op.getScale().convertToFloat())));
  for (auto [job, sum] : llvm::zip(jobs, ArrayRef(done).drop_front(products.size())))
    FragStageOp::create(b, arith::MulFOp::create(b, sum, scale), stage,
                        arith::MulIOp::create(b, job.first, idx(64)));
  barrier();
  asReducer([&] {
    Value rows = arith::MinSIOp::create(b, arith::SubIOp::create(b, idx(plan.M), row0), idx(64));
    BulkReduceAddOp::create(b, stage, op.getDqSum(), op.getB(), op.getH(), row0,
                            arith::IndexCastOp::create(b, b.getI32Type(), rows));
  });
}

LogicalResult Lowering::lowerStep(BackwardStepOp op) {
  bool kvOwner = op.getDkAcc() || op.getDvAcc();
  Value q0 = op.getQ0(), kv0 = op.getKv0();
  Type f32 = b.getF32Type();
  Value ownTileA = RingSlotOp::create(b, ownA, pos0());
  Value ownTileB = RingSlotOp::create(b, ownB, pos0());
  // The thread's first row of the owned tile and column of the streamed
  // one, absolute: an element's indices are these plus constants (and vary
  // along the loops, rather than being hoisted out of them and kept live).
  Value ownBase = add(kvOwner ? kv0 : q0, frow);
  Value streamBase = add(kvOwner ? q0 : kv0, fcol);
  // The streamed chunks: Q, dout (dk/dv) or K, V (dq), at the rings' next
  // positions (a run-time counter: the slots' addresses vary along the
  // loops instead of staying live across them). Chunk c + 1's copy is
  // issued right after the wait for chunk c (the wait's barrier: every
  // thread is done with the slot it overwrites), so it lands while chunk c
  // is computed.
  Value sb = op.getB(), sh = kvOwner ? op.getH() : op.getHkv(), s0 = kvOwner ? q0 : kv0;
  auto copyChunk = [&](const Streamed &at, Value pos) {
    if (kvOwner)
      issuePair(strA, op.getQ(), strB, op.getDout(), at.b, at.h, at.row, pos, at.valid);
    else
      issuePair(strA, op.getK(), strB, op.getV(), at.b, at.h, at.row, pos, at.valid);
  };
  // A step alone in its loop's body (a block-sparse list's loop) copies
  // the next step's first chunk during its last one, and the loop's first
  // step's before the loop; any other step copies its own first chunk, and
  // so do the 32-row chunks of a ragged D = 128 tile (there the next
  // step's coordinates spill).
  scf::ForOp loop = dyn_cast<scf::ForOp>(op->getParentOp());
  if (loop && (llvm::range_size(loop.getBody()->getOps<BackwardStepOp>()) != 1 ||
               plan.chunk() < 64))
    loop = scf::ForOp();
  if (loop) {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPoint(loop);
    FailureOr<Streamed> first = streamedAt(op, loop, loop.getLowerBound());
    if (failed(first))
      return failure();
    copyChunk(*first, memref::LoadOp::create(b, position, ValueRange{}));
  } else {
    copyChunk({Value(), sb, sh, s0}, memref::LoadOp::create(b, position, ValueRange{}));
  }
  // The query's base and delta, by query (dk/dv: the chunk's column; dq:
  // the fragment's row half). A dq step's (its owned rows': the same for
  // every chunk) once, before its chunk loop, so that their loads' latency
  // is off the chunks' path (per chunk, after its MMAs were issued, part 0's
  // P waited on them, and the dP wait moved ahead of it).
  DenseMap<int64_t, std::pair<Value, Value>> stats;
  Value log2e = arith::ConstantOp::create(b, b.getF32FloatAttr(static_cast<float>(kLog2e)));
  int64_t cols = plan.chunk();
  // Element e = 4 j + 2 h + q: row frow + 8 h of the owned tile, column
  // fcol + 8 j + q of the chunk. Its query's key in `stats`.
  auto statsKey = [&](int64_t e) { return kvOwner ? 8 * (e / 4) + e % 2 : (e / 2) % 2; };
  // The indices of element e (chunkBase: the chunk's first streamed row
  // plus the thread's column; only a dk/dv chunk's queries need it), and
  // whether they lie inside M x N. Indices past M or N (only where a tile
  // crosses them) are clamped for the mods and the loads; their P is 0.
  struct Indices {
    Value q, k, live;
  };
  auto indicesOf = [&](int64_t e, Value chunkBase) {
    int64_t j = e / 4, h = (e / 2) % 2, q = e % 2;
    Value own = add(ownBase, 8 * h);
    Value qi = kvOwner ? add(chunkBase, 8 * j + q) : own,
          kj = kvOwner ? own : (chunkBase ? add(chunkBase, 8 * j + q) : Value());
    Indices at{qi, kj, Value()};
    if (plan.ragged()) {
      if (kj)
        at.live = arith::AndIOp::create(
            b, arith::CmpIOp::create(b, arith::CmpIPredicate::ult, qi, idx(plan.M)),
            arith::CmpIOp::create(b, arith::CmpIPredicate::ult, kj, idx(plan.N)));
      at.q = arith::MinUIOp::create(b, qi, idx(plan.M - 1));
      if (kj)
        at.k = arith::MinUIOp::create(b, kj, idx(plan.N - 1));
    }
    return at;
  };
  // Loads the stats of element e's query unless they are loaded.
  auto loadStats = [&](int64_t e, Value chunkBase) {
    int64_t key = statsKey(e);
    if (stats.count(key))
      return;
    // A row without a visible key has lse = -inf: with a mask_mod
    // alone every score of it is masked (P = 0 on the exponent
    // whatever the base), so base(m) = m there; a score_mod can hide
    // keys too, so it keeps base's 0 for -inf. In a dk/dv step a
    // thread's queries come in adjacent pairs (columns 8 j + 2 t + q):
    // one 8-byte load each for lse and delta where no index is clamped
    // and rows of M floats keep it aligned.
    SmallVector<Value> where = {op.getB(), op.getH(), indicesOf(e, chunkBase).q};
    bool pair = kvOwner && e % 2 == 0 && !plan.ragged() && plan.M % 2 == 0;
    auto load = [&](Value src) -> SmallVector<Value> {
      if (!pair)
        return {memref::LoadOp::create(b, src, where)};
      Value two = vector::LoadOp::create(b, VectorType::get({2}, f32), src, where,
                                         /*nontemporal=*/false, llvm::MaybeAlign(8));
      return {vector::ExtractOp::create(b, two, ArrayRef<int64_t>{0}),
              vector::ExtractOp::create(b, two, ArrayRef<int64_t>{1})};
    };
    SmallVector<Value> bases;
    for (Value lse : load(op.getLse())) {
      Value m = arith::MulFOp::create(b, lse, log2e);
      bases.push_back(op.getScoreModVjp().empty() ? m : tile::finiteBase(b, b.getLoc(), m));
    }
    SmallVector<Value> deltas = load(op.getDelta());
    for (auto [n, base, delta] : llvm::enumerate(bases, deltas))
      stats[key + n] = {base, delta};
  };
  if (!kvOwner)
    for (int64_t e = 0; e < cols / 2; ++e)
      loadStats(e, Value());

  // A loop over the chunks (not unrolled: one chunk's fragments live at a
  // time).
  auto chunks = scf::ForOp::create(b, idx(0), idx(plan.R), idx(plan.chunk()));
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(chunks.getBody());
  Value c0 = chunks.getInductionVar();
  Value chunkBase = add(streamBase, c0);
  Value c1 = add(c0, plan.chunk());
  Value inStep = arith::CmpIOp::create(b, arith::CmpIPredicate::ult, c1, idx(plan.R));
  // Past the step's last chunk, the next step's first: its coordinates
  // (a block-sparse index load) ahead of the wait, which hides them.
  std::optional<Streamed> following;
  if (loop) {
    FailureOr<Streamed> after =
        streamedAt(op, loop, add(loop.getInductionVar(), loop.getStep()),
                   arith::XOrIOp::create(b, inStep, arith::ConstantIntOp::create(b, 1, 1)));
    if (failed(after))
      return failure();
    following = *after;
  }
  Value pos = memref::LoadOp::create(b, position, ValueRange{});
  Value next = arith::AddIOp::create(b, pos, arith::ConstantIntOp::create(b, 1, 32));
  memref::StoreOp::create(b, next, position, ValueRange{});
  auto [a, bt] = waitPair(strA, strB, pos);
  Streamed chunkAt{inStep, sb, sh, add(s0, c1)};
  if (following) {
    auto pick = [&](Value here, Value there) {
      return here == there ? here : arith::SelectOp::create(b, inStep, here, there).getResult();
    };
    chunkAt = {arith::OrIOp::create(b, inStep, following->valid), pick(sb, following->b),
               pick(sh, following->h), pick(chunkAt.row, following->row)};
  }
  copyChunk(chunkAt, next);
  // A dk/dv chunk's stats: loaded where first used (after its MMAs were
  // issued). Loading them here instead, ahead of the MMAs, measured slower
  // (the first 16 columns' -1 %; all of them spilled 8-24 bytes at D = 128).
  if (kvOwner)
    stats.clear();

  // Sᵀ = K Qᵀ, dPᵀ = V doutᵀ | S = Q Kᵀ, dP = dout Vᵀ; with overlap and
  // two groups, issued in turns (group 0 first), so that one group's
  // products are done while the other's are still to run.
  if (plan.turns())
    turns::take(b, bandNo(), plan.threads());
  Value sIssued =
      MmaOp::create(b, frag(cols, f32), ownTileA, band, a, Value(), Value(), b.getUnitAttr());
  Value dpIssued =
      MmaOp::create(b, frag(cols, f32), ownTileB, band, bt, Value(), Value(), b.getUnitAttr());
  if (plan.turns())
    turns::pass(b, bandNo(), plan.threads());
  auto elementsOf = [&](Value v) {
    SmallVector<Value> out;
    for (int64_t e = 0; e < cols / 2; ++e)
      out.push_back(vector::ExtractOp::create(b, v, ArrayRef<int64_t>{e}));
    return out;
  };
  // P of elements [e0, e1).
  auto probs = [&](int64_t e0, int64_t e1, ArrayRef<Value> xs) {
    SmallVector<UnscaledProb> out;
    for (int64_t e = e0; e < e1; ++e) {
      loadStats(e, chunkBase);
      Indices at = indicesOf(e, chunkBase);
      Value qc = at.q, kc = at.k;
      out.push_back(unscaledProb(b, b.getLoc(), op, xs[e], stats.find(statsKey(e))->second.first,
                                 arith::SubIOp::create(b, qc, q0),
                                 arith::SubIOp::create(b, kc, kv0), at.live));
    }
    return out;
  };
  // Pᵀ, dXᵀ (P, dX) of elements e0, e0 + 1, ..., 16-bit, appended to ps
  // and dxs.
  SmallVector<Value> ps, dxs;
  auto grads = [&](int64_t e0, ArrayRef<UnscaledProb> prob, ArrayRef<Value> dps) {
    auto sink = [&](ValueRange mods, Value dS) { cacheCaptureGrads(op, mods, dS); };
    for (auto [n, pr] : llvm::enumerate(prob)) {
      int64_t e = e0 + n;
      Value dx = unscaledDx(b, b.getLoc(), op, pr, dps[e], stats.find(statsKey(e))->second.second,
                            caches.empty() || op.getCaptureGrads().empty()
                                ? CaptureGradSink()
                                : CaptureGradSink(sink));
      ps.push_back(arith::TruncFOp::create(b, plan.elem, pr.p));
      dxs.push_back(arith::TruncFOp::create(b, plan.elem, dx));
    }
  };
  // The A fragments of elements [e0, e1) of ps and dxs (the chunk's columns
  // [2 e0, 2 e1): 8-column blocks j in [e0 / 4, e1 / 4)).
  auto fragsOf = [&](int64_t e0, int64_t e1) -> std::pair<Value, Value> {
    auto type = frag(2 * (e1 - e0), plan.elem);
    return {vector::FromElementsOp::create(b, type, ArrayRef(ps).slice(e0, e1 - e0)),
            vector::FromElementsOp::create(b, type, ArrayRef(dxs).slice(e0, e1 - e0))};
  };
  // dV += Pᵀ dout, dK += dXᵀ Q | dQ += dX K
  auto productsOf = [&](Value p, Value dx) {
    SmallVector<std::array<Value, 3>> products;
    if (kvOwner) {
      if (Value acc = op.getDvAcc())
        products.push_back({acc, p, bt});
      if (Value acc = op.getDkAcc())
        products.push_back({acc, dx, a});
    } else {
      products.push_back({op.getDqAcc(), dx, a});
    }
    return products;
  };
  if (!plan.overlap) {
    SmallVector<Value> waited = waitAll({sIssued, dpIssued});
    SmallVector<Value> xs = elementsOf(waited[0]), dps = elementsOf(waited[1]);
    // Per element P then dX.
    for (int64_t e = 0; e < cols / 2; ++e)
      grads(e, probs(e, e + 1, xs), dps);
    auto [p, dx] = fragsOf(0, cols / 2);
    SmallVector<std::array<Value, 3>> products = productsOf(p, dx);
    if (op.getDqSum()) {
      // The group's dX (transposed: rows queries, columns its keys) into
      // its slot, then dV, dK and dQ together.
      FragStoreOp::create(b, dx, RingSlotOp::create(b, dxRing, bandNo()), b.getUnitAttr());
      addDq(op, add(q0, c0), products);
    } else {
      accumulate(products);
    }
  } else {
    // The chunk's columns in kParts parts (8-column blocks j; 16 columns,
    // one k16 step of the products, each): part 0's P while dP's MMA runs,
    // then part i's products (B from row 16 i) during part i + 1's math,
    // the last part's at the end. A part's products wait for the previous
    // part's (they add into the same dV, dK or dQ), whose register
    // operands are kept intact until then.
    int64_t per = cols / 2 / kParts; // elements of a part
    SmallVector<Value> xs = elementsOf(waitSome(1, {sIssued})[0]);
    SmallVector<UnscaledProb> prob0 = probs(0, per, xs);
    SmallVector<Value> dps = elementsOf(waitAll({dpIssued})[0]);
    grads(0, prob0, dps);
    SmallVector<std::array<Value, 3>> products;
    SmallVector<Value> held; // the running part's sums, then its A operands
    auto finish = [&] {
      SmallVector<Value> done = waitAll(held);
      store(products, ArrayRef(done).take_front(products.size()));
    };
    for (int64_t i = 0; i < kParts; ++i) {
      if (i)
        grads(i * per, probs(i * per, (i + 1) * per, xs), dps);
      auto [p, dx] = fragsOf(i * per, (i + 1) * per);
      if (i)
        finish();
      products = productsOf(p, dx);
      held = issue(products, idx(i * 2 * per));
      held.append({p, dx});
    }
    finish();
  }
  RingReleaseOp::create(b, strA, pos);
  RingReleaseOp::create(b, strB, pos);
  return success();
}

/// dst[b, h, row0 + r, c] = acc[r, c] for the rows inside dst. A thread
/// holds pairs of adjacent columns (2 q + 8 j, q = lane % 4) of two rows,
/// the quad's four lanes each row's 8 columns of every j: with 16-bit
/// elements each 4 j's four pairs are transposed across the quad
/// (QuadTranspose.h), so that lane q stores 8 adjacent columns (of j = 4 g
/// + q) with one 16-byte store, a quarter of the pair stores' requests (the
/// runtime checks that the tensors are 16-byte aligned; D is 64 or 128);
/// f32 tiles store their pairs.
void Lowering::lowerStore(StoreTileOp op) {
  auto dst = cast<MemRefType>(op.getDst().getType());
  Type elem = dst.getElementType();
  Value acc = memref::LoadOp::create(b, accs.lookup(op.getAcc()), ValueRange{});
  if (auto scale = scales.find(op.getAcc()); scale != scales.end())
    acc = arith::MulFOp::create(
        b, acc,
        arith::ConstantOp::create(
            b, DenseElementsAttr::get(cast<VectorType>(acc.getType()),
                                      b.getF32FloatAttr(scale->second))));
  bool wide = !elem.isF32() && plan.D % 32 == 0;
  auto pair = VectorType::get({2}, elem);
  auto pairOf = [&](int64_t h, int64_t j) {
    SmallVector<Value> two;
    for (int64_t q = 0; q < 2; ++q) {
      Value v = vector::ExtractOp::create(b, acc, ArrayRef<int64_t>{4 * j + 2 * h + q});
      two.push_back(elem.isF32() ? v : arith::TruncFOp::create(b, elem, v).getResult());
    }
    return vector::FromElementsOp::create(b, pair, two).getResult();
  };
  for (int64_t h = 0; h < 2; ++h) {
    Value row = add(op.getRow0(), add(frow, 8 * h));
    // The quad's shuffles run in every lane (its rows may lie outside).
    SmallVector<Value> words;
    if (wide)
      for (int64_t g = 0; g < plan.D / 32; ++g) {
        SmallVector<Value> four;
        for (int64_t j = 4 * g; j < 4 * g + 4; ++j)
          four.push_back(vector::ExtractOp::create(
              b, vector::BitCastOp::create(b, VectorType::get({1}, b.getI32Type()), pairOf(h, j)),
              ArrayRef<int64_t>{0}));
        llvm::append_range(words, quadTranspose(b, fcol, four));
      }
    Value inside = arith::CmpIOp::create(b, arith::CmpIPredicate::ult, row,
                                         idx(dst.getDimSize(2)));
    auto branch = scf::IfOp::create(b, inside, /*withElseRegion=*/false);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(branch.thenBlock());
    if (wide) {
      // Lane q: columns 8 (4 g + q) .. + 7 = 4 fcol + 32 g.
      auto eight = VectorType::get({8}, elem);
      for (int64_t g = 0; g < plan.D / 32; ++g) {
        Value v = vector::FromElementsOp::create(
            b, VectorType::get({4}, b.getI32Type()), ArrayRef(words).slice(4 * g, 4));
        vector::StoreOp::create(b, vector::BitCastOp::create(b, eight, v), op.getDst(),
                                ValueRange{op.getB(), op.getH(), row,
                                           add(arith::MulIOp::create(b, fcol, idx(4)), 32 * g)},
                                /*nontemporal=*/false, llvm::MaybeAlign(16));
      }
      continue;
    }
    for (int64_t j = 0; j < plan.D / 8; ++j)
      vector::StoreOp::create(b, pairOf(h, j), op.getDst(),
                              ValueRange{op.getB(), op.getH(), row, add(fcol, 8 * j)},
                              /*nontemporal=*/false,
                              llvm::MaybeAlign(elem.getIntOrFloatBitWidth() / 4));
  }
}

/// The dq accumulator tile a store writes, if a dq step accumulates it.
Value dqTileOf(ArrayRef<BackwardStepOp> steps, StoreTileOp store) {
  for (BackwardStepOp step : steps)
    if (step.getDqAcc() == store.getAcc())
      return store.getAcc();
  return Value();
}

/// The capture caches of the dq steps (all steps with capture gradients
/// must agree on them), at the kernel's entry: not valid, sum 0. Partial
/// slots (a trailing dim of the gradients) must cover every thread of every
/// dq tile.
LogicalResult makeCaptureCaches(Lowering &l, ArrayRef<BackwardStepOp> steps) {
  BackwardStepOp first;
  for (BackwardStepOp step : steps)
    if (!step.getCaptureGrads().empty() && step.getVjpLoads() &&
        !step.getVjpLoads()->empty()) {
      if (!first) {
        first = step;
        continue;
      }
      if (!llvm::equal(step.getCaptureGrads(), first.getCaptureGrads()) ||
          step.getVjpLoads() != first.getVjpLoads())
        return step.emitOpError() << kPass << ": every dq step must differentiate the "
                                              "same loads into the same capture gradients";
    }
  if (!first)
    return success();
  ImplicitLocOpBuilder &b = l.b;
  l.partials = hasPartialCaptureGrads(first);
  int64_t need = l.plan.B * l.plan.H * static_cast<int64_t>(llvm::divideCeil(l.plan.M, l.plan.R)) * l.plan.threads();
  ArrayRef<int64_t> loads = *first.getVjpLoads(); // (not a temporary's member)
  for (int64_t c : loads) {
    Lowering::CaptureCache cache;
    cache.grad = captureGradOf(first, c);
    auto gradType = cast<MemRefType>(cache.grad.getType());
    int64_t rank = cast<MemRefType>(first.getCaptures()[c].getType()).getRank();
    if (l.partials && (gradType.getRank() != rank + 1 || gradType.getShape().back() < need))
      return first.emitOpError()
             << kPass << ": partial capture gradients need a trailing dim of at least "
             << need << " slots (B x Hq x ceil(M / " << l.plan.R << ") x "
             << l.plan.threads() << " threads) on every gradient, got " << gradType;
    auto scalar = [&](Type t) { return memref::AllocaOp::create(b, MemRefType::get({}, t)); };
    cache.sum = scalar(b.getF32Type());
    if (rank == 0)
      cache.valid = scalar(b.getI8Type());
    for (int64_t d = 0; d < rank; ++d)
      cache.idx.push_back(scalar(b.getI32Type()));
    l.caches.push_back(cache);
    l.setHolds(cache, false);
  }
  return success();
}

} // namespace

LogicalResult mlir::flexattn::lowerBackwardMma(RewriterBase &rewriter,
                                               gpu::LaunchOp launch, bool overlap) {
  if (failed(inlineStackScopes(rewriter, launch, kPass)))
    return failure();
  SmallVector<BackwardStepOp> steps;
  SmallVector<StoreTileOp> stores;
  launch.walk([&](Operation *op) {
    if (auto step = dyn_cast<BackwardStepOp>(op))
      steps.push_back(step);
    else if (auto store = dyn_cast<StoreTileOp>(op))
      stores.push_back(store);
  });
  if (steps.empty())
    return success();
  Plan plan;
  for (BackwardStepOp step : steps)
    if (failed(plan.check(step)))
      return failure();
  plan.setOverlap(overlap);
  Location loc = launch.getLoc();
  OpBuilder::InsertionGuard guard(rewriter);
  rewriter.setInsertionPoint(launch);
  launch.getBlockSizeXMutable().assign(
      arith::ConstantIndexOp::create(rewriter, loc, plan.threads()));

  ImplicitLocOpBuilder b(loc, rewriter);
  Block &body = launch.getBody().front();
  b.setInsertionPointToStart(&body);
  Lowering l{b, plan};
  auto ring = [&](int64_t stages, int64_t rows) -> Value {
    return RingAllocOp::create(
        b, RingType::get(b.getContext(), stages, rows, plan.D, plan.elem), plan.threads());
  };
  l.ownA = ring(1, plan.R), l.ownB = ring(1, plan.R);
  l.strA = ring(2, plan.chunk()), l.strB = ring(2, plan.chunk());
  if (llvm::any_of(steps, [](BackwardStepOp s) { return s.getDqSum() != nullptr; })) {
    l.dxRing = RingAllocOp::create(
        b, RingType::get(b.getContext(), plan.R / kBand, 64, 64, plan.elem), plan.threads());
    bool slotPerGroup = plan.R == 2 * kBand && plan.D == 64;
    l.dqStage = RingAllocOp::create(
        b, RingType::get(b.getContext(), slotPerGroup ? 2 : 1, 64, plan.D, b.getF32Type()),
        plan.threads());
  }
  l.position = memref::AllocaOp::create(b, MemRefType::get({}, b.getI32Type()));
  memref::StoreOp::create(b, l.pos0(), l.position, ValueRange{});
  // The m16n8 accumulator layout: warp w of group g holds rows 64 g + 16 w
  // + lane / 4 (and + 8), columns 2 (lane % 4) + 8 j (+ 1).
  Value tid = gpu::ThreadIdOp::create(b, gpu::Dimension::x);
  l.tid = tid;
  Value thread = arith::RemUIOp::create(b, tid, l.idx(kGroup));
  Value lane = arith::RemUIOp::create(b, tid, l.idx(32));
  l.band = arith::MulIOp::create(b, arith::DivUIOp::create(b, tid, l.idx(kGroup)),
                                 l.idx(kBand));
  l.frow = l.add(l.add(l.band, arith::MulIOp::create(
                                   b, arith::DivUIOp::create(b, thread, l.idx(32)),
                                   l.idx(16))),
                 arith::DivUIOp::create(b, lane, l.idx(4)));
  l.fcol = arith::MulIOp::create(b, arith::RemUIOp::create(b, lane, l.idx(4)), l.idx(2));

  // Accumulator tiles -> stack vectors at the kernel's entry; their zero
  // fills -> vector stores.
  SetVector<Value> tiles;
  for (BackwardStepOp step : steps)
    for (Value acc : {step.getDqAcc(), step.getDkAcc(), step.getDvAcc()})
      if (acc)
        tiles.insert(acc);
  for (StoreTileOp store : stores)
    tiles.insert(store.getAcc());
  auto accType = VectorType::get({plan.D / 2}, b.getF32Type());
  SmallVector<Operation *> dead;
  for (Value tile : tiles) {
    auto alloca = tile.getDefiningOp<memref::AllocaOp>();
    if (!alloca || cast<MemRefType>(tile.getType()) !=
                       MemRefType::get({plan.R, plan.D}, b.getF32Type()))
      return launch.emitOpError() << kPass << ": an accumulator that is not an f32 "
                                  << plan.R << "x" << plan.D << " stack tile: " << tile;
    l.accs[tile] = memref::AllocaOp::create(b, MemRefType::get({}, accType));
    for (Operation *user : tile.getUsers()) {
      if (isa<BackwardStepOp, StoreTileOp>(user))
        continue;
      auto fill = dyn_cast<linalg::FillOp>(user);
      if (!fill || !matchPattern(fill.getInputs()[0], m_AnyZeroFloat()))
        return user->emitOpError() << kPass << ": unexpected use of an accumulator tile";
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPoint(fill);
      memref::StoreOp::create(
          b, arith::ConstantOp::create(b, DenseElementsAttr::get(accType, b.getF32FloatAttr(0))),
          l.accs[tile], ValueRange{});
      dead.push_back(fill);
    }
    dead.push_back(alloca);
  }

  for (BackwardStepOp step : steps)
    for (Value acc : {step.getDkAcc(), step.getDqAcc()}) {
      if (!acc)
        continue;
      float scale = step.getScale().convertToFloat();
      if (l.scales.try_emplace(acc, scale).first->second != scale)
        return step.emitOpError() << kPass << ": the steps of an accumulator must "
                                              "share one scale";
    }
  if (failed(makeCaptureCaches(l, steps)))
    return failure();
  // Group 0 takes the first turn (lowerStep's). After the stack slots: a
  // branch before them would keep them out of LLVM's entry block, in memory.
  if (plan.turns())
    turns::giveFirst(b, l.bandNo(), plan.threads());

  // The owned tiles, once per CTA, before the first step of the CTA's
  // nest (the block of its stores): K, V (dk/dv) or Q, dout (dq).
  DominanceInfo dom(launch);
  DenseSet<Block *> loaded;
  for (StoreTileOp store : stores) {
    Block *block = store->getBlock();
    if (!loaded.insert(block).second)
      continue;
    BackwardStepOp first;
    for (BackwardStepOp step : steps)
      if (block->findAncestorOpInBlock(*step)) {
        first = step;
        break;
      }
    if (!first)
      continue;
    Operation *anchor = block->findAncestorOpInBlock(*first);
    for (Value v : {store.getB(), store.getH(), store.getRow0()})
      if (!dom.properlyDominates(v, anchor))
        return store.emitOpError() << kPass << " loads the owned tile before the "
                                              "steps: its coordinates must be computed first";
    bool kvOwner = first.getDkAcc() || first.getDvAcc();
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPoint(anchor);
    l.issuePair(l.ownA, kvOwner ? first.getK() : first.getQ(), l.ownB,
                kvOwner ? first.getV() : first.getDout(), store.getB(), store.getH(),
                store.getRow0(), l.pos0());
    l.waitPair(l.ownA, l.ownB, l.pos0());
  }
  for (BackwardStepOp step : steps) {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPoint(step);
    b.setLoc(step.getLoc());
    if (failed(l.lowerStep(step)))
      return failure();
    dead.push_back(step);
  }
  for (StoreTileOp store : stores) {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPoint(store);
    l.lowerStore(store);
    // The dq tile's end: its threads' cached capture gradients.
    if (store.getAcc() == dqTileOf(steps, store))
      for (const Lowering::CaptureCache &c : l.caches) {
        l.flush(c, l.partials ? l.partialSlot(store.getB(), store.getH(), store.getRow0())
                              : Value());
        l.setHolds(c, false);
      }
    dead.push_back(store);
  }
  // Uses first (steps, stores, fills), then the tiles.
  for (Operation *op : dead)
    if (!isa<memref::AllocaOp>(op))
      rewriter.eraseOp(op);
  for (Operation *op : dead)
    if (isa<memref::AllocaOp>(op))
      rewriter.eraseOp(op);
  return success();
}

namespace {
struct FlexAttnLowerBackwardMmaPass
    : public flexattn::impl::FlexAttnLowerBackwardMmaBase<FlexAttnLowerBackwardMmaPass> {
  using FlexAttnLowerBackwardMmaBase::FlexAttnLowerBackwardMmaBase;
  void runOnOperation() override {
    IRRewriter rewriter(&getContext());
    if (failed(forEachLaunch(getOperation(), [&](gpu::LaunchOp launch) {
          return lowerBackwardMma(rewriter, launch, overlap);
        })))
      signalPassFailure();
  }
};
} // namespace
