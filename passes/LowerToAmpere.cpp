//===- LowerToAmpere.cpp - flexattn-lower-to-ampere -------------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// Lowers the cooperative rings and the MMAs of a kernel to sm_80 NVVM ops
// (Ampere and Ada; the code also runs on later GPUs):
//
//   shared memory  the rings' slots in a dynamic shared-memory block (the
//                  base aligned to 128 bytes at run time, +128 asked for;
//                  with Q read from shared memory, the block's own address)
//   ring.copy      each thread's 16-byte chunks of the tile with cp.async
//                  (cp.async.cg, zero fill past the tensor's rows and, for a
//                  head dim padded to 64-column panels, columns) into the
//                  swizzled layout (one source and one slot address per
//                  thread where its chunks share a column), then
//                  cp.async.commit_group (also when `if` is false: an
//                  empty group keeps the count)
//   ring.wait      cp.async.wait_group in_flight, then a CTA barrier (none
//                  right before a wait with no more copies in flight)
//   ring.acquire   a CTA barrier (after all threads' earlier releases),
//                  left out right after (other waits and acquires
//                  between) a wait of the same ring up to S - 1 positions
//                  back or an acquire that made one
//   ring.release   nothing (the next acquire's barrier orders it)
//   frag.load      ldmatrix.x4 per 16 columns and m16 tile of the warp
//   mma            per warp, m16n8k16 mma.sync per 8 columns of N, 16 of K
//                  and m16 tile (1 or 2, read off the result's size), but
//                  none for the zero columns of a padded head dim; A
//                  from registers (the fragment's pairs) or ldmatrix, B with
//                  ldmatrix (K-major B) or ldmatrix.trans (row-major B),
//                  each B fragment loaded once for all m16 tiles
//   mma.wait       nothing: mma.sync is synchronous
//
// f32 tiles (fp32 q/k/v) take tf32 m16n8k8 mma.sync; nothing 16-bit applies
// (ldmatrix moves 16-bit elements), so operands come from plain shared
// loads. The k index of an m16n8k8 is permuted: the mma's k = t (t+4) of
// an 8-column step is the step's column 2t (2t + 1), the same for A and B,
// which leaves the dot products unchanged. Then the A operand of a row is
// the accumulator layout's pair (c0, c1) as (a0, a2): P goes from the S
// accumulator to the P.V mma without shuffles, and K (and Q) pairs are one
// 8-byte load. Each operand is split x = big + small (big = tf32(x),
// small = tf32(x - big), cvt.rna) and a product is three mma
// (small.big + big.small + big.big: 3xTF32, about fp32's accuracy), or one
// (big.big) with fp32-precision=tf32.
//
// In a gpu.launch marked `flexattn.wgmma` (a unit attribute: sm_90a, the
// backward's GEMMs; the pass drops it), mma and mma.wait become
// warpgroup MMAs instead (passes/Wgmma.h: 16 rows per warp, bf16/f16): the
// swizzled layout below is the 128-byte swizzle wgmma's descriptors read,
// so the rings stay cp.async, the base is aligned to 1024 bytes, and a
// ring.wait adds fence.proxy.async between its cp.async.wait_group and its
// barrier (the copies are generic-proxy writes the async proxy then reads).
//
// In a gpu.launch marked `flexattn.prefetch_loads` (a unit attribute: the
// decode kernel; the pass drops it), the KV loops' loads that every thread
// makes alike and that a step needs after its first wait (page-table
// entries, and the block indices their addresses take) are first issued
// iterations ahead and carried (passes/PrefetchLoads.h), so the softmax
// does not wait on a global load issued in its own step. In one marked
// `flexattn.hoist_loads` (the decode kernel), the loads before its KV
// loops (the block mask's counts, the first block indices) move above its
// first wait (the Q tile's), off the chain to the first K/V copy.
//
// Addresses in a tile: the 16-byte chunk c of row r of a 128-row... tile
// sits at panel (c / 8), row r, chunk (c % 8) ^ (r % 8): the 8 row addresses
// of an 8x8 matrix hit 8 different 16-byte bank groups.
//
//===----------------------------------------------------------------------===//

#include "passes/HopperAsm.h"
#include "passes/PrefetchLoads.h"
#include "passes/Wgmma.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

namespace mlir::flexattn {
#define GEN_PASS_DEF_FLEXATTNLOWERTOAMPERE
#include "passes/Passes.h.inc"
} // namespace mlir::flexattn

using namespace mlir;
using namespace mlir::flexattn;

namespace {

// The slots' base: the dynamic shared memory's address rounded up to 128
// bytes at run time (a swizzle period of 8 rows x 16 bytes: ldmatrix is
// conflict-free), or (kernels that read Q from shared memory at each
// S = Q.Kᵀ) the address as it is, so every slot address is that symbol
// plus constants and a lane's offset, which ptxas folds into the
// instructions' immediates (a rounded base is a register every address
// derives from). The swizzle is correct at any 16-byte aligned base
// (copies and reads use the same layout); the block starts at the CTA's
// shared window (these kernels have no static shared memory), aligned in
// practice. The launch asks for kAlign bytes past the rings either way
// (Target.ring_bytes counts them).
constexpr int64_t kAlign = 128;
constexpr int64_t kChunk = 16;  // bytes of one cp.async / ldmatrix row
constexpr int64_t kWgmmaAlign = 1024; // 128-byte swizzle atoms (8 rows)
constexpr StringLiteral kWgmmaAttr = "flexattn.wgmma"; // on a gpu.launch

struct Lowering : SharedTiles {
  int64_t threads;
  // Per thread, i32: its index, warp in its group, and its ldmatrix row
  // (lane % 8) and matrix (lane / 8).
  Value tid, warp, rr, mi;
  DenseSet<Operation *> barrierAcquires;
  // Per ring, the columns its copies read (the rest of a tile's columns are
  // the zeros of a padded head dim, which the MMAs skip).
  DenseMap<Value, int64_t> filledCols;
  // f32 tiles: lane / 4 and lane % 4 (the fragment's row and column pair),
  // and whether products are 3xTF32 (else one tf32 mma).
  Value g, t;
  bool split3 = true;
  bool wgmma = false; // sm_90a: mma, mma.wait as wgmma
  // ldmatrix: the lane's offsets per (rows by matrix bit 1, chunk % 8), and
  // their opaque copies per block (matrixRow).
  DenseMap<std::pair<int64_t, int64_t>, Value> laneOffsets;
  DenseMap<std::tuple<Block *, Value, Value>, Value> fences;
  bool fenceLanes = false;

  Lowering(ImplicitLocOpBuilder &b, int64_t threads) : SharedTiles(b), threads(threads) {}

  /// The leading columns of `tile` (of `cols`) that hold data: the source
  /// columns of its ring's copies, all of them where that is not known.
  int64_t filled(Value tile, int64_t cols) const {
    auto slotOp = tile.getDefiningOp<RingSlotOp>();
    auto it = slotOp ? filledCols.find(slotOp.getRing()) : filledCols.end();
    return it == filledCols.end() ? cols : std::min(cols, it->second);
  }

  Value mul(Value a, int64_t c) { return arith::MulIOp::create(b, a, i32(c)); }
  Value add(Value a, Value c) { return arith::AddIOp::create(b, a, c); }

  /// ldmatrix addresses. A lane reads row `laneRow` (0..15 of a 16 x 16
  /// block) at 16-byte chunk `c ^ key` of it: with rows by matrix bit 0
  /// (A, and a row-major B read transposed) or by bit 1 (a K-major B). The
  /// lane's part of an address, `laneRow` x 128 + ((key ^ c) x 16), takes
  /// one of 4 values per layout (c = chunk % 8, even); everything else is a
  /// tile's address plus constants (rows, panels), which a pointer offset
  /// puts in the instruction's immediate.
  /// The lane's row in the 16 x 16 block and its chunk key.
  std::pair<Value, Value> laneRowKey(bool byPair) {
    Value half = arith::AndIOp::create(b, mi, i32(1));
    Value pair = arith::ShRUIOp::create(b, mi, i32(1));
    return {add(mul(byPair ? pair : half, 8), rr),
            arith::XOrIOp::create(b, byPair ? half : pair, rr)};
  }
  Value laneOffset(bool byPair, int64_t c) {
    Value &v = laneOffsets[{byPair ? 1 : 0, c}];
    if (!v) {
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointAfterValue(mi);
      auto [laneRow, key] = laneRowKey(byPair);
      v = add(mul(laneRow, kSwizzleBytes), mul(arith::XOrIOp::create(b, key, i32(c)), kChunk));
    }
    return v;
  }
  /// The lane's offset `laneOffset` + 128 x (`rowIndex` (a band's first
  /// row, or null) + warp x `warpRows`) through an opaque move, once per
  /// block: what is derived from it is computed where it is used (LLVM
  /// cannot hoist each ldmatrix address out of the KV loop into a register
  /// of its own), and the constants added to it fold into the ldmatrix
  /// immediates.
  Value fencedLane(bool byPair, int64_t c, Value rowIndex, int64_t warpRows) {
    Value &f = fences[{b.getInsertionBlock(), laneOffset(byPair, c), rowIndex}];
    if (!f) {
      Value v = laneOffset(byPair, c);
      if (rowIndex)
        v = add(v, mul(add(toI32(rowIndex), mul(warp, warpRows)), kSwizzleBytes));
      MLIRContext *ctx = b.getContext();
      f = LLVM::InlineAsmOp::create(
              b, TypeRange{b.getI32Type()}, ValueRange{v}, b.getStringAttr("mov.b32 $0, $1;"),
              b.getStringAttr("=r,r"), b.getUnitAttr(), UnitAttr(),
              LLVM::TailCallKindAttr::get(ctx, LLVM::tailcallkind::TailCallKind::None),
              LLVM::AsmDialectAttr::get(ctx, LLVM::AsmDialect::AD_ATT), ArrayAttr())
              .getResult(0);
    }
    return f;
  }
  /// The shared address of lane's row of an 8x8 matrix of a tile of `rows`
  /// at `tile`: rows `rowIndex` + warp x `warpRows` (the warp's band, where
  /// `rowIndex` is given) + `rowConst` (a multiple of 8) + the lane's,
  /// 16-byte chunk `chunk` (even) with the lane's bit. The fenced lane
  /// offsets only in kernels that read Q from shared memory (`fenceLanes`:
  /// at each S = Q.Kᵀ, 16 more addresses per KV step); elsewhere the
  /// hoisted addresses cost less (measured with ptxas:
  /// the 16-row kernel of t5_bias at D = 128 spilled 16 words with them).
  Value matrixRow(Value tile, int64_t rows, Value rowIndex, int64_t warpRows,
                  int64_t rowConst, int64_t chunk, bool byPair) {
    if (!fenceLanes) {
      // One address per ldmatrix, which LLVM hoists where it is invariant.
      auto [laneRow, key] = laneRowKey(byPair);
      Value row = i32(rowConst);
      if (rowIndex)
        row = add(toI32(rowIndex), add(mul(warp, warpRows), row));
      Value a = at(tile, (chunk / 8) * rows * kSwizzleBytes);
      a = add(a, mul(row, kSwizzleBytes));
      a = add(a, mul(laneRow, kSwizzleBytes));
      return shared(add(a, mul(arith::XOrIOp::create(b, key, i32(chunk % 8)), kChunk)));
    }
    Value p = shared(add(fencedLane(byPair, chunk % 8, rowIndex, warpRows), tile));
    int64_t off = (chunk / 8) * rows * kSwizzleBytes + rowConst * kSwizzleBytes;
    if (!off)
      return p;
    return LLVM::GEPOp::create(b, p.getType(), b.getI8Type(), p,
                               ArrayRef<LLVM::GEPArg>{off}, LLVM::GEPNoWrapFlags::inbounds);
  }
  SmallVector<Value> ldmatrix(Value ptr, bool trans) {
    auto i32t = b.getI32Type();
    auto type = LLVM::LLVMStructType::getLiteral(b.getContext(), {i32t, i32t, i32t, i32t});
    Value m = NVVM::LdMatrixOp::create(
        b, type, ptr, 4, trans ? NVVM::MMALayout::col : NVVM::MMALayout::row,
        NVVM::LdStMatrixShapeAttr::get(b.getContext(), 8, 8),
        NVVM::LdStMatrixEltType::B16);
    SmallVector<Value> out;
    for (int64_t i = 0; i < 4; ++i)
      out.push_back(LLVM::ExtractValueOp::create(b, m, ArrayRef<int64_t>{i}));
    return out;
  }
  /// The 4 A-operand words of columns 16 kk .. 16 kk + 15 of m16 tile `i`
  /// of the warp (of `tiles`; the band's rows from index `rowBase`) of a tile.
  SmallVector<Value> loadA(Value tile, SmemTileType type, Value rowBase, int64_t tiles,
                           int64_t i, int64_t kk) {
    return ldmatrix(matrixRow(tile, type.getRows(), rowBase, 16 * tiles, 16 * i, 2 * kk,
                              /*byPair=*/false),
                    /*trans=*/false);
  }
  /// All the A words of the warp's `tiles` m16 tiles: tile-major, 4 per 16
  /// columns (the register A layout of a fragment).
  SmallVector<Value> loadA(Value tile, SmemTileType type, Value rowBase, int64_t tiles) {
    SmallVector<Value> words;
    for (int64_t i = 0; i < tiles; ++i)
      for (int64_t kk = 0; kk < type.getCols() / 16; ++kk)
        llvm::append_range(words, loadA(tile, type, rowBase, tiles, i, kk));
    return words;
  }

  /// The address of element (row, col) of an f32 tile of `rows` rows (32
  /// columns per 128-byte panel, 4 per swizzled chunk).
  Value f32Addr(Value tile, int64_t rows, Value row, Value col) {
    Value chunk = arith::DivUIOp::create(b, col, i32(4));
    Value swz = arith::XOrIOp::create(b, arith::RemUIOp::create(b, chunk, i32(8)),
                                      arith::RemUIOp::create(b, row, i32(8)));
    Value a = add(tile, mul(arith::DivUIOp::create(b, chunk, i32(8)), rows * kSwizzleBytes));
    a = add(a, add(mul(row, kSwizzleBytes), mul(swz, kChunk)));
    return add(a, mul(arith::RemUIOp::create(b, col, i32(4)), 4));
  }
  /// `n` (1 or 2) f32 from (row, col) on of an f32 tile.
  SmallVector<Value> loadF32(Value tile, int64_t rows, Value row, Value col, int64_t n) {
    auto f32 = b.getF32Type();
    Value p = shared(f32Addr(tile, rows, row, col));
    if (n == 1)
      return {LLVM::LoadOp::create(b, f32, p, /*alignment=*/4)};
    Value v = LLVM::LoadOp::create(b, VectorType::get({2}, f32), p, /*alignment=*/8);
    return {vector::ExtractOp::create(b, v, ArrayRef<int64_t>{0}),
            vector::ExtractOp::create(b, v, ArrayRef<int64_t>{1})};
  }
  /// The 4 fragment elements (rows g, g + 8; columns 2t, 2t + 1 of the 8
  /// from 8 kk) of m16 tile `i` of the warp from an f32 tile.
  SmallVector<Value> loadF32A(Value tile, SmemTileType type, Value rowBase, int64_t tiles,
                              int64_t i, int64_t kk) {
    Value row = add(add(rowBase, add(mul(warp, 16 * tiles), i32(16 * i))), g);
    Value col = add(i32(8 * kk), mul(t, 2));
    SmallVector<Value> x = loadF32(tile, type.getRows(), row, col, 2);
    llvm::append_range(x, loadF32(tile, type.getRows(), add(row, i32(8)), col, 2));
    return x;
  }
  /// tf32(x), and with 3xTF32 tf32(x - tf32(x)), as mma operand words.
  std::pair<Value, Value> splitTf32(Value x) {
    auto i32t = b.getI32Type();
    Value big = NVVM::ConvertFloatToTF32Op::create(b, i32t, x, NVVM::FPRoundingMode::RNA);
    if (!split3)
      return {big, Value()};
    Value rest = arith::SubFOp::create(b, x, LLVM::BitcastOp::create(b, b.getF32Type(), big));
    return {big, NVVM::ConvertFloatToTF32Op::create(b, i32t, rest, NVVM::FPRoundingMode::RNA)};
  }

  /// The accumulator an mma starts from: its `acc`, or zeros.
  SmallVector<Value> accumulator(MmaOp op) {
    if (op.getAcc())
      return elements(op.getAcc());
    return SmallVector<Value>(op.getType().getNumElements(),
                              arith::ConstantOp::create(b, b.getF32FloatAttr(0)));
  }

  LogicalResult lower(Operation *op);
  LogicalResult lowerMmaF32(MmaOp op);
  LogicalResult lowerCopy(RingCopyOp op);
  void lowerAcquire(RingAcquireOp op);
  LogicalResult lowerMma(MmaOp op);
  /// fence.proxy.async.shared::cta: this thread's shared-memory writes
  /// become visible to the async proxy (wgmma, bulk copies) after a barrier.
  void fenceAsyncShared() {
    NVVM::FenceProxyOp::create(
        b, NVVM::ProxyKindAttr::get(b.getContext(), NVVM::ProxyKind::async_shared),
        NVVM::SharedSpaceAttr::get(b.getContext(), NVVM::SharedSpace::shared_cta));
  }
  void lowerFragStore(FragStoreOp op);
  void lowerFragStage(FragStageOp op);
  void lowerBulkReduceAdd(BulkReduceAddOp op);
};

/// An mma's contraction: B K-major ([N, K], `transpose_b`) or row-major
/// ([K, N]), and the m16 tiles per warp (read off the result's size).
struct MmaDims {
  bool kMajor;
  int64_t k, n, warpTiles;
  explicit MmaDims(MmaOp op) : kMajor(op.getTransposeB()) {
    SmemTileType bType = op.getB().getType();
    k = kMajor ? bType.getCols() : bType.getRows();
    n = kMajor ? bType.getRows() : bType.getCols();
    warpTiles = op.getType().getNumElements() / (n / 2);
    if (op.getBRow()) // K is A's (a register A, verified)
      k = 2 * cast<VectorType>(op.getA().getType()).getNumElements() / warpTiles;
  }
};

/// The op before `op` in its block, skipping pure ops without regions.
Operation *previousEffect(Operation *op) {
  for (Operation *prev = op->getPrevNode(); prev; prev = prev->getPrevNode())
    if (prev->getNumRegions() || !isMemoryEffectFree(prev))
      return prev;
  return nullptr;
}

/// Whether `pos` is `base` + c with 0 <= c < `limit` (constants).
bool isAhead(Value pos, Value base, int64_t limit) {
  if (pos == base)
    return true;
  auto add = pos.getDefiningOp<arith::AddIOp>();
  APInt c;
  return add && add.getLhs() == base &&
         matchPattern(add.getRhs(), m_ConstantInt(&c)) && c.getSExtValue() >= 0 &&
         c.getSExtValue() < limit;
}

LogicalResult Lowering::lowerCopy(RingCopyOp op) {
  const RingLayout &r = rings.at(op.getRing());
  SmemTileType tile = r.type.getTileType();
  auto source = cast<MemRefType>(op.getSource().getType());
  int64_t rows = tile.getRows(), cols = tile.getCols();
  int64_t eb = tile.getElementBytes(), perChunk = kChunk / eb;
  int64_t perRow = cols * eb / kChunk, chunks = rows * perRow;
  if (chunks % threads)
    return op.emitOpError("a tile of ")
           << chunks << " 16-byte chunks does not split evenly over " << threads
           << " threads";
  if (source.isDynamicDim(1) || source.isDynamicDim(3))
    return op.emitOpError("copies from a source of static heads and columns, got ")
           << source;
  int64_t H = source.getDimSize(1), C = source.getDimSize(3);
  int64_t have = C * eb / kChunk; // the source's chunks per row (the rest: zeros)
  // The source's rows N: static, or a run-time size (a dynamic-shape kernel:
  // every copy is then checked against N, as a partial last tile is).
  bool dynamicRows = source.isDynamicDim(2);
  bool tail = dynamicRows || source.getDimSize(2) % rows != 0;
  Value dynN = dynamicRows ? toI32(memref::DimOp::create(b, op.getSource(), 2)) : Value();
  auto rowCount = [&]() -> Value { return dynN ? dynN : i32(source.getDimSize(2)); };
  auto lastRow = [&]() -> Value {
    return dynN ? arith::SubIOp::create(b, dynN, i32(1)).getResult()
                : i32(source.getDimSize(2) - 1);
  };
  Value dst = slot(r, stagePhase(r, op.getPosition()).first);
  // Thread t copies chunks t + i T (T threads). Where T chunks span a
  // multiple of 8 rows, a thread's chunks share their column (c = t % P, P
  // chunks per row) and swizzle (row % 8), so chunk i is chunk 0 moved by
  // i T / P rows: one source and one destination address per thread and
  // constant steps (no per-chunk address registers live across the loop).
  bool strided = threads % perRow == 0 && (threads / perRow) % 8 == 0;
  auto copies = [&] {
    Value base = arith::IndexCastUIOp::create(
        b, b.getI64Type(), memref::ExtractAlignedPointerAsIndexOp::create(b, op.getSource()));
    Value head = arith::AddIOp::create(
        b, arith::MulIOp::create(b, toI32(op.getB()), i32(H)), toI32(op.getH()));
    Value row0 = toI32(op.getRow());
    auto ext = [&](Value v) { return arith::ExtUIOp::create(b, b.getI64Type(), v); };
    auto chunkAt = [&](Value c) {
      return std::pair(arith::DivUIOp::create(b, c, i32(perRow)).getResult(),
                       arith::RemUIOp::create(b, c, i32(perRow)).getResult());
    };
    // A chunk past the tensor's columns (a head dim padded to 64-column
    // panels) copies 0 bytes (zero fill) from a clamped chunk of its row.
    auto sourceChunk = [&](Value cc) -> Value {
      return have < perRow ? arith::MinUIOp::create(b, cc, i32(have - 1)).getResult() : cc;
    };
    // Byte address of chunk cc of row `row` (clamped inside the tensor) in
    // global memory, and its swizzled address in the slot.
    auto source = [&](Value row, Value cc) -> Value {
      Value elem = arith::AddIOp::create(
          b, arith::MulIOp::create(b, ext(add(arith::MulIOp::create(b, head, rowCount()), row)),
                                   i64(C)),
          ext(mul(sourceChunk(cc), perChunk)));
      return arith::AddIOp::create(b, base, arith::MulIOp::create(b, elem, i64(eb)));
    };
    auto destination = [&](Value rIn, Value cc) -> Value {
      Value panel = arith::DivUIOp::create(b, cc, i32(8));
      Value swz = arith::XOrIOp::create(b, arith::RemUIOp::create(b, cc, i32(8)),
                                        arith::RemUIOp::create(b, rIn, i32(8)));
      return add(add(dst, mul(panel, tile.getPanelBytes())),
                 add(mul(rIn, kSwizzleBytes), mul(swz, kChunk)));
    };
    // A chunk past the tensor's rows or columns copies 0 bytes.
    auto copy = [&](Value to, Value from, Value row, Value cc) {
      Value inside;
      if (tail)
        inside = arith::CmpIOp::create(b, arith::CmpIPredicate::ult, row, rowCount());
      if (have < perRow) {
        Value real = arith::CmpIOp::create(b, arith::CmpIPredicate::ult, cc, i32(have));
        inside = inside ? arith::AndIOp::create(b, inside, real).getResult() : real;
      }
      Value size;
      if (inside)
        size = arith::SelectOp::create(b, inside, i32(kChunk), i32(0));
      Value src = LLVM::IntToPtrOp::create(b, LLVM::LLVMPointerType::get(b.getContext(), 1), from);
      NVVM::CpAsyncOp::create(b, shared(to), src, kChunk, NVVM::LoadCacheModifierKind::CG, size);
    };
    auto clamped = [&](Value row) -> Value {
      return tail ? arith::MinUIOp::create(b, row, lastRow()).getResult() : row;
    };
    if (strided) {
      auto [rIn, cc] = chunkAt(tid);
      int64_t step = threads / perRow; // rows between a thread's chunks
      Value row = add(row0, rIn);
      Value to = destination(rIn, cc);
      Value from = tail ? Value() : source(row, cc);
      for (int64_t i = 0; i < chunks / threads; ++i) {
        Value rowI = at(row, i * step);
        Value fromI = tail ? source(clamped(rowI), cc)
                           : arith::AddIOp::create(b, from, i64(i * step * C * eb)).getResult();
        copy(at(to, i * step * kSwizzleBytes), fromI, rowI, cc);
      }
      return;
    }
    for (int64_t i = 0; i < chunks / threads; ++i) {
      auto [rIn, cc] = chunkAt(at(tid, i * threads));
      Value row = add(row0, rIn);
      copy(destination(rIn, cc), source(clamped(row), cc), row, cc);
    }
  };
  if (Value valid = op.getValid()) {
    auto ifOp = scf::IfOp::create(b, valid, /*withElseRegion=*/false);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(&ifOp.getThenRegion().front());
    copies();
  } else {
    copies();
  }
  NVVM::CpAsyncCommitGroupOp::create(b);
  return success();
}

/// The op after `op` in its block, skipping pure ops without regions.
Operation *nextEffect(Operation *op) {
  for (Operation *next = op->getNextNode(); next; next = next->getNextNode())
    if (next->getNumRegions() || !isMemoryEffectFree(next))
      return next;
  return nullptr;
}

void Lowering::lowerAcquire(RingAcquireOp op) {
  // Back over the waits and acquires right before it (and the waits'
  // lowering): no thread reads a slot between them and op.
  for (Operation *prev = previousEffect(op); prev; prev = previousEffect(prev)) {
    if (auto wait = dyn_cast<RingWaitOp>(prev)) {
      if (wait.getRing() == op.getRing() &&
          isAhead(op.getPosition(), wait.getPosition(), op.getRing().getType().getStages()))
        return; // every thread released the slot before it waited
    } else if (auto acquire = dyn_cast<RingAcquireOp>(prev)) {
      if (barrierAcquires.contains(acquire))
        return; // no release since that acquire's barrier
    } else if (!isa<NVVM::CpAsyncWaitGroupOp, NVVM::FenceProxyOp, NVVM::Barrier0Op>(prev)) {
      break;
    }
  }
  NVVM::Barrier0Op::create(b);
  barrierAcquires.insert(op);
}

LogicalResult Lowering::lower(Operation *op) {
  b.setLoc(op->getLoc());
  b.setInsertionPoint(op);
  if (auto copy = dyn_cast<RingCopyOp>(op))
    return lowerCopy(copy);
  if (auto wait = dyn_cast<RingWaitOp>(op)) {
    if (!wait.getInFlight())
      return wait.emitOpError("on a ring filled by flexattn.ring.copy needs "
                              "in_flight (how many later copies may run)");
    // A wait right before one with no more copies in flight is implied by
    // it (its cp.async.wait_group and barrier cover both).
    if (auto next = dyn_cast_or_null<RingWaitOp>(nextEffect(wait));
        next && next.getInFlight() && *next.getInFlight() <= *wait.getInFlight())
      return success();
    NVVM::CpAsyncWaitGroupOp::create(b, *wait.getInFlight());
    if (wgmma)
      fenceAsyncShared();
    NVVM::Barrier0Op::create(b);
  } else if (auto acquire = dyn_cast<RingAcquireOp>(op)) {
    lowerAcquire(acquire);
  } else if (isa<RingReleaseOp>(op) || lowerTileValue(op)) {
  } else if (auto load = dyn_cast<FragLoadOp>(op)) {
    SmemTileType type = load.getTile().getType();
    int64_t warpTiles = load.getType().getNumElements() / (type.getCols() / 2);
    Value tile = tiles.at(load.getTile()), row = load.getRow();
    if (type.getElementType().isF32()) {
      SmallVector<Value> x;
      for (int64_t i = 0; i < warpTiles; ++i)
        for (int64_t kk = 0; kk < type.getCols() / 8; ++kk)
          llvm::append_range(x, loadF32A(tile, type, toI32(row), warpTiles, i, kk));
      load.replaceAllUsesWith(vectorOf(load.getType(), x));
    } else {
      load.replaceAllUsesWith(fromPairs(load.getType(), loadA(tile, type, row, warpTiles)));
    }
  } else if (auto store = dyn_cast<FragStoreOp>(op)) {
    lowerFragStore(store);
  } else if (auto stage = dyn_cast<FragStageOp>(op)) {
    lowerFragStage(stage);
  } else if (auto reduce = dyn_cast<BulkReduceAddOp>(op)) {
    lowerBulkReduceAdd(reduce);
  } else if (isa<BulkWaitReadOp>(op)) {
    NVVM::CpAsyncBulkWaitGroupOp::create(b, 0, b.getUnitAttr());
  } else if (auto mma = dyn_cast<MmaOp>(op)) {
    return wgmma ? wgmma::lowerMma(*this, mma) : lowerMma(mma);
  } else if (auto wait = dyn_cast<MmaWaitOp>(op)) {
    if (wgmma)
      wgmma::lowerWait(*this, wait);
    else
      wait.replaceAllUsesWith(wait.getValues());
  } else if (isa<RingLoadOp>(op)) {
    return op->emitOpError("is a TMA load (Hopper: flexattn-lower-to-hopper); "
                           "sm_80 rings are filled by flexattn.ring.copy");
  }
  return success();
}

LogicalResult Lowering::lowerMmaF32(MmaOp op) {
  if (op.getBRow())
    return op.emitOpError("b_row is for 16-bit tiles (f32 tiles take the whole B)");
  SmemTileType bType = op.getB().getType();
  const MmaDims m(op);
  // A: a shared tile read at each k8 step, or the fragment's elements.
  auto aTile = dyn_cast<SmemTileType>(op.getA().getType());
  SmallVector<Value> aRegs = aTile ? SmallVector<Value>() : elements(op.getA());
  SmallVector<Value> d = accumulator(op);
  Value bAddr = tiles.at(op.getB());
  auto f32 = b.getF32Type();
  auto resultType = LLVM::LLVMStructType::getLiteral(b.getContext(), {f32, f32, f32, f32});
  auto mma = [&](ArrayRef<Value> a, ArrayRef<Value> bw, ArrayRef<Value> c) {
    Value r = NVVM::MmaOp::create(
        b, resultType, a, bw, c, ArrayRef<int64_t>{16, 8, 8}, std::nullopt, std::nullopt,
        std::array<NVVM::MMATypes, 2>{NVVM::MMATypes::tf32, NVVM::MMATypes::tf32},
        std::array<NVVM::MMALayout, 2>{NVVM::MMALayout::row, NVVM::MMALayout::col});
    SmallVector<Value> out;
    for (int64_t e = 0; e < 4; ++e)
      out.push_back(LLVM::ExtractValueOp::create(b, r, ArrayRef<int64_t>{e}));
    return out;
  };
  // As for 16 bits, the k8 steps of S = Q.Kᵀ past K's filled columns and the
  // 8-column blocks of O += P.V past V's are left out.
  int64_t kSteps = m.kMajor ? (filled(op.getB(), m.k) + 7) / 8 : m.k / 8;
  int64_t nCols = m.kMajor ? m.n : filled(op.getB(), m.n);
  for (int64_t kk = 0; kk < kSteps; ++kk) {
    // A of m16 tile i: fragment elements (g, 2t), (g, 2t+1), (g+8, 2t),
    // (g+8, 2t+1) of the step are the mma's a0, a2, a1, a3 (k permuted).
    SmallVector<SmallVector<Value>> aBig(m.warpTiles), aSmall(m.warpTiles);
    for (int64_t i = 0; i < m.warpTiles; ++i) {
      SmallVector<Value> x =
          aTile ? loadF32A(tiles.at(op.getA()), aTile, toI32(op.getARow()), m.warpTiles, i, kk)
                : SmallVector<Value>(aRegs.begin() + i * (m.k / 2) + 4 * kk,
                                     aRegs.begin() + i * (m.k / 2) + 4 * kk + 4);
      for (int64_t e : {0, 2, 1, 3}) {
        auto [big, small] = splitTf32(x[e]);
        aBig[i].push_back(big);
        aSmall[i].push_back(small);
      }
    }
    for (int64_t jn = 0; 8 * jn < nCols; ++jn) {
      // B's (k = 2t, 2t + 1 of the step; n = g of the block): one 8-byte
      // load from a K-major B ([N, K]), two loads from a row-major one.
      Value kRow = add(i32(8 * kk), mul(t, 2)), nCol = add(i32(8 * jn), g);
      SmallVector<Value> x =
          m.kMajor ? loadF32(bAddr, bType.getRows(), nCol, kRow, 2)
                   : SmallVector<Value>{loadF32(bAddr, bType.getRows(), kRow, nCol, 1)[0],
                                        loadF32(bAddr, bType.getRows(), add(kRow, i32(1)), nCol,
                                                1)[0]};
      auto [b0, s0] = splitTf32(x[0]);
      auto [b1, s1] = splitTf32(x[1]);
      for (int64_t i = 0; i < m.warpTiles; ++i) {
        int64_t at = i * (m.n / 2) + 4 * jn; // d of tile i, columns 8 jn..
        SmallVector<Value> c(d.begin() + at, d.begin() + at + 4);
        if (split3) {
          c = mma(aSmall[i], {b0, b1}, c);
          c = mma(aBig[i], {s0, s1}, c);
        }
        c = mma(aBig[i], {b0, b1}, c);
        std::copy(c.begin(), c.end(), d.begin() + at);
      }
    }
  }
  op.replaceAllUsesWith(vectorOf(op.getType(), d));
  return success();
}

/// The thread's fragment elements (e = 4 j + 2 h + q: row 16 warp + g +
/// 8 h, column 8 j + 2 t + q) at their places of the tile: a 32-bit store
/// per column pair, or with `transpose` stmatrix .trans (row and column
/// swapped). On sm_90a the async-proxy fence follows, so a wgmma reads the
/// stores after a barrier.
void Lowering::lowerFragStore(FragStoreOp op) {
  SmemTileType type = op.getTile().getType();
  Value tile = tiles.at(op.getTile());
  if (op.getTranspose()) {
    // stmatrix .x4 .trans: the 8 x 8 matrices (j, h), (j, h + 1), (j + 1,
    // h), (j + 1, h + 1) of the warp's 16 rows (their pairs are the
    // thread's words 2 j, 2 j + 1, 2 j + 2, 2 j + 3), each stored
    // transposed: its row k (fragment column 8 j + k) is tile row 8 j + k,
    // 16 bytes at column 16 warp + 8 h (swizzled chunk (2 warp + h) ^ k).
    // Lane l gives row l % 8 of matrix l / 8: one address per lane, 1024 j
    // bytes on per call.
    Value lane = arith::RemUIOp::create(b, tid, i32(32));
    Value k = arith::RemUIOp::create(b, lane, i32(8));
    Value m = arith::DivUIOp::create(b, lane, i32(8));
    Value h = arith::AndIOp::create(b, m, i32(1));
    Value row = add(mul(arith::ShRUIOp::create(b, m, i32(1)), 8), k);
    Value chunk = arith::XOrIOp::create(b, add(mul(warp, 2), h), k);
    Value base = shared(add(tile, add(mul(row, kSwizzleBytes), mul(chunk, kChunk))));
    SmallVector<Value> words = pairs(op.getValue());
    for (int64_t j = 0; 2 * j < static_cast<int64_t>(words.size()); j += 2) {
      Value p = LLVM::GEPOp::create(b, base.getType(), b.getI8Type(), base,
                                    ArrayRef<LLVM::GEPArg>{8 * j * kSwizzleBytes},
                                    LLVM::GEPNoWrapFlags::inbounds);
      NVVM::StMatrixOp::create(b, p, ArrayRef(words).slice(2 * j, 4), NVVM::MMALayout::col,
                               NVVM::LdStMatrixShapeAttr::get(b.getContext(), 8, 8),
                               NVVM::LdStMatrixEltType::B16);
    }
  } else {
    SmallVector<Value> x = elements(op.getValue());
    auto addrOf = [&](Value row, Value col) { // 16-bit element (row, col)
      Value chunk = arith::DivUIOp::create(b, col, i32(8));
      Value swz = arith::XOrIOp::create(b, arith::RemUIOp::create(b, chunk, i32(8)),
                                        arith::RemUIOp::create(b, row, i32(8)));
      Value a = add(tile, mul(arith::DivUIOp::create(b, chunk, i32(8)),
                              type.getRows() * kSwizzleBytes));
      a = add(a, add(mul(row, kSwizzleBytes), mul(swz, kChunk)));
      return shared(add(a, mul(arith::RemUIOp::create(b, col, i32(8)), 2)));
    };
    for (int64_t e = 0; e < static_cast<int64_t>(x.size()); e += 2) {
      int64_t j = e / 4, h = (e / 2) % 2;
      Value r = add(add(mul(warp, 16), g), i32(8 * h));
      Value c = add(i32(8 * j), mul(t, 2));
      Value pair = vectorOf(VectorType::get({2}, x[e].getType()), {x[e], x[e + 1]});
      LLVM::StoreOp::create(b, pair, addrOf(r, c), /*alignment=*/4);
    }
  }
  if (wgmma)
    fenceAsyncShared();
}

/// The thread's f32 pairs (row 16 warp + g + 8 h, columns col + 8 j + 2 t)
/// as 8-byte stores into the row-major tile: one address per h, then 32 j
/// bytes on; the async-proxy fence after them (a bulk copy reads them).
void Lowering::lowerFragStage(FragStageOp op) {
  SmemTileType type = op.getTile().getType();
  int64_t rowBytes = type.getCols() * 4;
  SmallVector<Value> x = elements(op.getValue());
  Value col = add(toI32(op.getCol()), mul(t, 2));
  for (int64_t h = 0; h < 2; ++h) {
    Value r = add(add(mul(warp, 16), g), i32(8 * h));
    Value base = shared(add(tiles.at(op.getTile()), add(mul(r, rowBytes), mul(col, 4))));
    for (int64_t j = 0; 4 * j < static_cast<int64_t>(x.size()); ++j) {
      Value p = LLVM::GEPOp::create(b, base.getType(), b.getI8Type(), base,
                                    ArrayRef<LLVM::GEPArg>{32 * j}, LLVM::GEPNoWrapFlags::inbounds);
      Value pair = vectorOf(VectorType::get({2}, b.getF32Type()),
                            {x[4 * j + 2 * h], x[4 * j + 2 * h + 1]});
      LLVM::StoreOp::create(b, pair, p, /*alignment=*/8);
    }
  }
  fenceAsyncShared();
}

/// The bulk reduction of `rows` rows (none where rows <= 0) into dst's rows
/// from (b, h, row), and its commit (passes/HopperAsm.h).
void Lowering::lowerBulkReduceAdd(BulkReduceAddOp op) {
  auto dst = cast<MemRefType>(op.getDst().getType());
  int64_t rowBytes = op.getTile().getType().getCols() * 4;
  Value rows = op.getRows();
  auto some = scf::IfOp::create(b, arith::CmpIOp::create(b, arith::CmpIPredicate::sgt, rows, i32(0)),
                                /*withElseRegion=*/false);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(some.thenBlock());
  auto i64 = [&](Value v) { return arith::IndexCastUIOp::create(b, b.getI64Type(), v); };
  Value heads = arith::ConstantIndexOp::create(b, dst.getDimSize(1));
  Value len = dst.isDynamicDim(2) ? memref::DimOp::create(b, op.getDst(), 2).getResult()
                                  : arith::ConstantIndexOp::create(b, dst.getDimSize(2)).getResult();
  Value row = arith::AddIOp::create(
      b, arith::MulIOp::create(
             b, arith::AddIOp::create(b, arith::MulIOp::create(b, op.getB(), heads), op.getH()),
             len),
      op.getRow());
  Value addr = arith::AddIOp::create(
      b, i64(memref::ExtractAlignedPointerAsIndexOp::create(b, op.getDst())),
      arith::MulIOp::create(b, i64(row), arith::ConstantIntOp::create(b, rowBytes, 64)));
  hopper::bulkReduceAddF32(b, addr, tiles.at(op.getTile()), mul(rows, rowBytes));
}

LogicalResult Lowering::lowerMma(MmaOp op) {
  MLIRContext *ctx = b.getContext();
  SmemTileType bType = op.getB().getType();
  Type elem = bType.getElementType();
  if (elem.isF32())
    return lowerMmaF32(op);
  const MmaDims dims(op);
  bool kMajor = dims.kMajor;
  int64_t k = dims.k, n = dims.n, warpTiles = dims.warpTiles;
  // A's 4 words of m16 tile i, columns 16 kk..: read from shared memory
  // where they are used, or the fragment's pairs (tile-major).
  auto aType = dyn_cast<SmemTileType>(op.getA().getType());
  SmallVector<Value> aRegs = aType ? SmallVector<Value>() : pairs(op.getA());
  Value aRow = aType ? op.getARow() : Value();
  auto aWords = [&](int64_t i, int64_t kk) {
    if (aType)
      return loadA(tiles.at(op.getA()), aType, aRow, warpTiles, i, kk);
    auto at = aRegs.begin() + i * (k / 4) + 4 * kk;
    return SmallVector<Value>(at, at + 4);
  };
  SmallVector<Value> d = accumulator(op);
  Value bAddr = tiles.at(op.getB());
  auto f32 = b.getF32Type();
  auto resultType = LLVM::LLVMStructType::getLiteral(ctx, {f32, f32, f32, f32});
  auto operand = [&](Value word) -> Value {
    return elem.isBF16() ? word
                         : LLVM::BitcastOp::create(b, VectorType::get({2}, b.getF16Type()), word)
                               .getResult();
  };
  std::optional<std::array<NVVM::MMATypes, 2>> types;
  if (elem.isBF16())
    types = {NVVM::MMATypes::bf16, NVVM::MMATypes::bf16};
  // A padded head dim: the k16 steps (S = Q.Kᵀ) or 8-column blocks of N
  // (O += P.V) past B's filled columns multiply zeros and are left out (the
  // accumulator's padding columns stay 0).
  int64_t kSteps = kMajor ? (filled(op.getB(), k) + 15) / 16 : k / 16;
  int64_t nCols = kMajor ? n : filled(op.getB(), n);
  for (int64_t kk = 0; kk < kSteps; ++kk) {
    SmallVector<SmallVector<Value>> aOps(warpTiles);
    for (int64_t i = 0; i < warpTiles; ++i)
      for (Value word : aWords(i, kk))
        aOps[i].push_back(operand(word));
    for (int64_t jp = 0; 16 * jp < nCols; ++jp) {
      // K-major B ([N, K]): rows 16 jp.., chunk 2 kk; row-major B ([K, N]):
      // rows 16 kk.., chunk 2 jp, transposed on load.
      Value addr = kMajor ? matrixRow(bAddr, bType.getRows(), Value(), 0, 16 * jp, 2 * kk, true)
                          : matrixRow(bAddr, bType.getRows(), op.getBRow(), 0, 16 * kk, 2 * jp,
                                      false);
      SmallVector<Value> bWords = ldmatrix(addr, /*trans=*/!kMajor);
      for (int64_t jj = 0; jj < 2 && 16 * jp + 8 * jj < nCols; ++jj) {
        SmallVector<Value> bOps = {operand(bWords[2 * jj]), operand(bWords[2 * jj + 1])};
        for (int64_t i = 0; i < warpTiles; ++i) {
          int64_t at = i * (n / 2) + 4 * (2 * jp + jj); // d of tile i, columns 8 j..
          SmallVector<Value> c(d.begin() + at, d.begin() + at + 4);
          Value r = NVVM::MmaOp::create(
              b, resultType, aOps[i], bOps, c, ArrayRef<int64_t>{16, 8, 16}, std::nullopt,
              std::nullopt, types,
              std::array<NVVM::MMALayout, 2>{NVVM::MMALayout::row, NVVM::MMALayout::col});
          for (int64_t e = 0; e < 4; ++e)
            d[at + e] = LLVM::ExtractValueOp::create(b, r, ArrayRef<int64_t>{e});
        }
      }
    }
  }
  op.replaceAllUsesWith(vectorOf(op.getType(), d));
  return success();
}

} // namespace

LogicalResult mlir::flexattn::lowerToAmpere(RewriterBase &rewriter,
                                            gpu::LaunchOp launch,
                                            int64_t maxSharedMemory,
                                            StringRef fp32Precision, bool wgmma) {
  Block &body = launch.getBody().front();
  SmallVector<RingAllocOp> allocs(body.getOps<RingAllocOp>());
  if (allocs.empty())
    return success();
  APInt x, y, z;
  if (!matchPattern(launch.getBlockSizeX(), m_ConstantInt(&x)) ||
      !matchPattern(launch.getBlockSizeY(), m_ConstantInt(&y)) ||
      !matchPattern(launch.getBlockSizeZ(), m_ConstantInt(&z)) || y != 1 || z != 1)
    return launch.emitOpError("flexattn-lower-to-ampere needs a constant 1-D "
                              "block (every thread copies its share)");
  ImplicitLocOpBuilder b(launch.getLoc(), rewriter);
  Lowering l(b, x.getSExtValue());
  l.wgmma = wgmma;
  // A kernel that reads Q from shared memory at each S = Q.Kᵀ (marked by
  // flexattn-multistage) takes the unrounded base and the fenced ldmatrix
  // lanes; the others keep the rounded base and one address per ldmatrix
  // (ptxas fits them without spills as they are: with the lanes, the
  // 16-row t5_bias kernel at D = 128 and the tensor-core backward at
  // D = 128, and with the unrounded base the 32-row D = 64 kernel of
  // sliding_window, spilled). wgmma's operands need the 1024-byte rounded
  // base.
  l.fenceLanes = launch->hasAttr(kQFromShared) && !wgmma;
  if (failed(l.allocate(launch, allocs.back(), l.layoutSlots(allocs),
                        wgmma ? kWgmmaAlign : kAlign, maxSharedMemory,
                        /*roundUp=*/!l.fenceLanes)))
    return failure();
  b.setInsertionPointAfter(l.smem.getDefiningOp());
  l.tid = l.toI32(gpu::ThreadIdOp::create(b, gpu::Dimension::x));
  Value lane = arith::RemUIOp::create(b, l.tid, l.i32(32));
  l.warp = arith::DivUIOp::create(b, arith::RemUIOp::create(b, l.tid, l.i32(128)), l.i32(32));
  l.rr = arith::RemUIOp::create(b, lane, l.i32(8));
  l.mi = arith::DivUIOp::create(b, lane, l.i32(8));
  l.g = arith::DivUIOp::create(b, lane, l.i32(4));
  l.t = arith::RemUIOp::create(b, lane, l.i32(4));
  l.split3 = fp32Precision != "tf32";

  SmallVector<Operation *> ops;
  Operation *foreign = nullptr;
  launch.getBody().walk<WalkOrder::PreOrder>([&](Operation *op) {
    if (isa<WarpSpecializeOp>(op) && !foreign)
      foreign = op;
    if (auto copy = dyn_cast<RingCopyOp>(op)) {
      int64_t &cols = l.filledCols[copy.getRing()];
      cols = std::max(cols, cast<MemRefType>(copy.getSource().getType()).getDimSize(3));
    }
    if (isa<RingCopyOp, RingAcquireOp, RingLoadOp, RingWaitOp, RingReleaseOp,
            FragLoadOp, FragStoreOp, FragStageOp, BulkReduceAddOp, BulkWaitReadOp, MmaOp,
            MmaWaitOp>(op) ||
        SharedTiles::isTileValue(op))
      ops.push_back(op);
  });
  if (foreign)
    return foreign->emitOpError("has a producer role: Hopper's "
                                "(flexattn-lower-to-hopper); sm_80 kernels "
                                "have none (flexattn-multistage)");
  for (Operation *op : ops)
    if (failed(l.lower(op)))
      return failure();
  eraseReversed(rewriter, ops);
  for (RingAllocOp alloc : allocs)
    rewriter.eraseOp(alloc);
  return success();
}

namespace {
struct FlexAttnLowerToAmperePass
    : public flexattn::impl::FlexAttnLowerToAmpereBase<FlexAttnLowerToAmperePass> {
  using FlexAttnLowerToAmpereBase::FlexAttnLowerToAmpereBase;

  void runOnOperation() override {
    if (fp32Precision != "ieee" && fp32Precision != "tf32") {
      getOperation().emitError("fp32-precision is 'ieee' (3xTF32) or 'tf32', got '")
          << fp32Precision << "'";
      return signalPassFailure();
    }
    IRRewriter rewriter(&getContext());
    if (failed(forEachLaunch(getOperation(), [&](gpu::LaunchOp launch) {
          // sm_90a's warpgroup MMAs where the launch asks for them.
          bool wgmma = launch->hasAttr(kWgmmaAttr);
          launch->removeAttr(kWgmmaAttr);
          // The KV loops' uniform loads a step ahead where the launch asks.
          if (launch->removeAttr(kPrefetchLoads)) {
            SmallVector<std::pair<scf::ForOp, Operation *>> loops;
            launch.walk([&](scf::ForOp loop) {
              auto waits = loop.getBody()->getOps<RingWaitOp>();
              if (!waits.empty())
                loops.push_back({loop, *waits.begin()});
            });
            for (auto [loop, wait] : loops)
              prefetchUniformLoads(rewriter, launch, loop, wait);
          }
          // The loads before the KV loops above the first wait where asked.
          if (launch->removeAttr(kHoistLoads)) {
            Block &top = launch.getBody().front();
            Operation *wait = nullptr, *end = nullptr;
            for (Operation &op : top) {
              if (!wait && isa<RingWaitOp>(op))
                wait = &op;
              auto loop = dyn_cast<scf::ForOp>(op);
              if (wait && loop && !loop.getBody()->getOps<RingWaitOp>().empty())
                end = loop;
            }
            if (end)
              hoistLoadsAbove(rewriter, launch, wait, end);
          }
          return lowerToAmpere(rewriter, launch, maxSharedMemory, fp32Precision, wgmma);
        })))
      signalPassFailure();
  }
};
} // namespace
