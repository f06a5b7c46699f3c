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

#include "passes/GpuKernel.h"

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
using namespace mlir::flexattn::gpukernel;

namespace mlir::flexattn::gpukernel {

/// Re-emits the Q tile's body (made by flexattn-tile and
/// flexattn-block-sparsity) for one role: the KV loops are rebuilt carrying
/// `state` through iter_args, each flexattn.tile_step becomes `step`,
/// flexattn.finalize becomes `finalize`, the stack state (alloca, fill) is
/// dropped (it lives in registers), and everything else is cloned.
FailureOr<SmallVector<Value>> emitRole(ImplicitLocOpBuilder &b, Block &body,
                                       IRMapping &map, SmallVector<Value> state,
                                       StepFn step, FinalizeFn finalize) {
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
  return state;
}

FailureOr<SmallVector<Value>> forEachTile(ImplicitLocOpBuilder &b,
                                          const KernelEnv &env, IRMapping &map,
                                          ValueRange tileIvs, ValueRange init,
                                          TileFn body) {
  const KernelPlan &plan = env.plan;
  auto idx = [&](int64_t v) { return arith::ConstantIndexOp::create(b, v); };
  // t = (b Hq + h) QT + (QT - 1 - qt): the Q tiles of one head are adjacent,
  // so the CTAs running at once share few heads' K/V (in L2); within a head
  // the heaviest (last) Q tile comes first.
  auto mapTile = [&](ImplicitLocOpBuilder &ib, Value t) {
    Value qts = idx(plan.qTiles());
    Value qtRev = arith::RemUIOp::create(ib, t, qts);
    Value head = arith::DivUIOp::create(ib, t, qts);
    map.map(tileIvs[0], arith::DivUIOp::create(ib, head, idx(plan.Hq)));
    map.map(tileIvs[1], arith::RemUIOp::create(ib, head, idx(plan.Hq)));
    map.map(tileIvs[2], arith::SubIOp::create(ib, idx(plan.qTiles() - 1), qtRev));
  };
  Value first = gpu::BlockIdOp::create(b, gpu::Dimension::x);
  if (plan.ctas == plan.tiles()) {
    // One tile per CTA: straight-line code (a loop, even of one trip, costs
    // registers in the consumers).
    mapTile(b, first);
    return body(b, arith::ConstantIntOp::create(b, 0, 32), init);
  }
  SmallVector<Value> state = {arith::ConstantIntOp::create(b, 0, 32)};
  state.append(init.begin(), init.end());
  LogicalResult result = success();
  auto loop = scf::ForOp::create(
      b, first, idx(plan.tiles()), idx(plan.ctas), state,
      [&](OpBuilder &nb, Location loc, Value t, ValueRange iterArgs) {
        ImplicitLocOpBuilder ib(loc, nb);
        mapTile(ib, t);
        Value j = iterArgs[0];
        FailureOr<SmallVector<Value>> next = body(ib, j, iterArgs.drop_front());
        SmallVector<Value> yielded = {arith::AddIOp::create(
            ib, j, arith::ConstantIntOp::create(ib, 1, 32))};
        if (failed(next)) {
          result = failure();
          yielded.append(iterArgs.begin() + 1, iterArgs.end());
        } else {
          yielded.append(next->begin(), next->end());
        }
        scf::YieldOp::create(ib, yielded);
      });
  if (failed(result))
    return failure();
  return SmallVector<Value>(loop.getResults().drop_front());
}


} // namespace mlir::flexattn::gpukernel

namespace {

FailureOr<KernelPlan> planKernel(TileStepOp step, int64_t stages,
                                 bool pipelined, bool pingpong,
                                 int64_t persistentCtas) {
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
  p.ctas = persistentCtas > 0 ? std::min(persistentCtas, p.tiles()) : p.tiles();
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

//===----------------------------------------------------------------------===//
// Producer: TMA loads of Q, then of K and V for every visited KV tile.
//===----------------------------------------------------------------------===//

LogicalResult emitProducer(ImplicitLocOpBuilder &b, const KernelEnv &env,
                           Block &body, IRMapping &map, ValueRange tileIvs) {
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

  auto step = [&](ImplicitLocOpBuilder &ib, TileStepOp ts, IRMapping &m,
                  ValueRange state) -> SmallVector<Value> {
    PtxBuilder pp{ib};
    auto [stage, phase] = stagePhase(pp, state[0], plan.stages);
    Value freeParity = arith::XOrIOp::create(ib, phase, pp.i32(1));
    Value kv0 = toI32(ib, m.lookupOrDefault(ts.getKv0()));
    Value hkv = toI32(ib, m.lookupOrDefault(ts.getHkv()));
    Value bI = toI32(ib, m.lookupOrDefault(ts.getB()));
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
  // Per tile: Q (once the consumers are done with the last tile's), then
  // K and V for every visited KV tile; the ring counter carries on.
  auto tile = [&](ImplicitLocOpBuilder &tb, Value j,
                  ValueRange state) -> FailureOr<SmallVector<Value>> {
    PtxBuilder tp{tb};
    Value parity = arith::AndIOp::create(tb, j, tp.i32(1));
    tp.mbarrierWait(env.bar(tp, env.qEmptySlot()),
                    arith::XOrIOp::create(tb, parity, tp.i32(1)));
    Value bI = toI32(tb, map.lookup(tileIvs[0])), hI = toI32(tb, map.lookup(tileIvs[1]));
    Value q0 = toI32(tb, arith::MulIOp::create(tb, map.lookup(tileIvs[2]),
                                               arith::ConstantIndexOp::create(tb, kRows)));
    Value qBar = env.bar(tp, env.qFullSlot());
    tp.mbarrierArriveExpectTx(qBar, plan.qBytes());
    Value qDst = arith::AddIOp::create(tb, env.smem, tp.i32(plan.qOff));
    for (int64_t panel = 0; panel < plan.D / kPanelCols; ++panel)
      tp.tmaLoad4d(arith::AddIOp::create(tb, qDst, tp.i32(panel * kRows * 128)), env.qMap,
                   {tp.i32(panel * kPanelCols), q0, hI, bI}, qBar);
    return emitRole(tb, body, map, SmallVector<Value>(state), step, finalize);
  };
  return forEachTile(b, env, map, tileIvs, {p.i32(0)}, tile);
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
                       int64_t stages, bool pipelined, bool pingpong,
                       int64_t persistentCtas) {
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
  FailureOr<KernelPlan> plan =
      planKernel(firstStep, stages, pipelined, pingpong, persistentCtas);
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
    p.mbarrierInit(env.bar(p, env.qFullSlot()), 1);
    p.mbarrierInit(env.bar(p, env.qEmptySlot()), 256);
    for (int64_t s = 0; s < plan->stages; ++s) {
      p.mbarrierInit(env.bar(p, env.kFullSlot() + s), 1);
      p.mbarrierInit(env.bar(p, env.vFullSlot() + s), 1);
      p.mbarrierInit(env.bar(p, env.kEmptySlot() + s), 256);
      p.mbarrierInit(env.bar(p, env.vEmptySlot() + s), 256);
    }
    p.fenceMbarrierInit();
  }
  gpu::BarrierOp::create(b);

  // Each role walks the CTA's tiles; per-tile values are re-derived inside.
  Value isProducer = arith::CmpIOp::create(
      b, arith::CmpIPredicate::ult, env.tid, arith::ConstantIndexOp::create(b, 128));
  auto roles = scf::IfOp::create(b, isProducer, /*withElseRegion=*/true);
  {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(&roles.getThenRegion().front());
    if (failed(emitProducer(b, env, body, map, par.getInductionVars())))
      return failure();
    b.setInsertionPointToStart(&roles.getElseRegion().front());
    if (failed(emitConsumer(b, env, body, map, par.getInductionVars())))
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
      gpu::KernelDim3{cst(plan->ctas), cst(1), cst(1)},
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
      if (failed(mapToGpu(rewriter, par, stages, pipeline, pingpong, persistent)))
        return signalPassFailure();
  }
};

} // namespace
