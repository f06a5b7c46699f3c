// RUN: flexattn-opt %s --pass-pipeline='builtin.module(flexattn-tile{tile-q=128 tile-kv=128}, flexattn-block-sparsity, flexattn-map-to-grid, flexattn-warp-specialize, flexattn-schedule-consumers, flexattn-lower-fragments, flexattn-inline-mods, canonicalize, cse, flexattn-lower-to-hopper, gpu-launch-sink-index-computations, gpu-kernel-outlining, canonicalize, cse, flexattn-lower-to-nvvm{chip=sm_90a features=+ptx83}, gpu-module-to-binary{format=isa})' \
// RUN:   | FileCheck %s

// The whole GPU pipeline down to PTX, made without a GPU: the kernel holds
// the Hopper instructions it was built from ("It compiled" is not enough,
// GPU_NOTES gotcha 12). Causal, block-sparse, bf16, D = 64.

// CHECK: gpu.binary @causal_kernel
// CHECK-SAME: .target sm_90a
// CHECK-SAME: .extern .shared .align 16 .b8 __flexattn_smem[];
// CHECK-SAME: .visible .entry causal_kernel(
// CHECK-SAME: .maxntid 384, 1, 1
// CHECK-SAME: .minnctapersm 1
// CHECK-SAME: setmaxnreg.dec.sync.aligned.u32 {{(\\09)?}}40
// CHECK-SAME: fence.proxy.tensormap::generic.acquire.sys
// CHECK-SAME: cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes
// CHECK-SAME: setmaxnreg.inc.sync.aligned.u32 {{(\\09)?}}232
// CHECK-SAME: mbarrier.try_wait.parity.shared.b64
// CHECK-SAME: wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16
// CHECK-SAME: shfl.sync.bfly
// CHECK-SAME: ex2.approx.ftz.f32
// CHECK-SAME: cvt.rn.bf16x2.f32
// CHECK-SAME: wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16
// CHECK-SAME: mbarrier.arrive.shared.b64
func.func @causal(%q: memref<1x2x256x64xbf16>, %k: memref<1x2x256x64xbf16>, %v: memref<1x2x256x64xbf16>,
                  %o: memref<1x2x256x64xbf16>, %kvn: memref<1x1x2xi32>, %kvi: memref<1x1x2x2xi32>,
                  %fkvn: memref<1x1x2xi32>, %fkvi: memref<1x1x2x2xi32>) {
  flexattn.attention ins(%q, %k, %v : memref<1x2x256x64xbf16>, memref<1x2x256x64xbf16>, memref<1x2x256x64xbf16>)
      outs(%o : memref<1x2x256x64xbf16>)
      block_mask(%kvn, %kvi : memref<1x1x2xi32>, memref<1x1x2x2xi32>)
      full_blocks(%fkvn, %fkvi : memref<1x1x2xi32>, memref<1x1x2x2xi32>)
      attributes {scale = 0.125 : f32, block_size = array<i64: 128, 128>}
    mask_mod {
    ^bb0(%b: i32, %h: i32, %qi: i32, %kj: i32):
      %keep = arith.cmpi sge, %qi, %kj : i32
      flexattn.yield %keep : i1
    }
  return
}
