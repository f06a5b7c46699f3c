//===- FlexAttnTypes.td - flexattn types -------------------*- tablegen -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// The types of the GPU kernel's mid-level IR: tiles staged in shared memory
// and the rings of them that producer and consumer threads hand over.
//
//===----------------------------------------------------------------------===//

#ifndef FLEXATTN_TYPES
#define FLEXATTN_TYPES

include "FlexAttnDialect.td"
include "mlir/IR/AttrTypeBase.td"

class FlexAttn_Type<string name, string typeMnemonic, list<Trait> traits = []>
    : TypeDef<FlexAttn_Dialect, name, traits> {
  let mnemonic = typeMnemonic;
}

def FlexAttn_SmemTileType : FlexAttn_Type<"SmemTile", "smem_tile"> {
  let summary = "A rows x cols tile of bf16, f16 or f32 in shared memory";
  let description = [{
    A tile staged in shared memory for the tensor cores, in the layout TMA
    writes with a 128-byte box row and 128-byte swizzling: panels of 128
    bytes per row (64 columns of a 16-bit type, 32 of f32), one after the
    other, each `rows x 128` bytes; the 16-byte chunk `c` of row `r` of a
    panel sits at chunk `c ^ (r % 8)`. The tile starts on a 1024-byte
    boundary (sm_80: 128). Tensor-core instructions read it through
    shared-memory matrix descriptors (128-byte swizzle mode) or ldmatrix; an
    f32 tile (tf32 mma.sync on sm_80) is read with plain shared loads.

    ```mlir
    !flexattn.smem_tile<128x64xbf16>
    ```
  }];
  let parameters = (ins "int64_t":$rows, "int64_t":$cols, "Type":$elementType);
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// Bytes of one element, of one 128-byte-wide panel, of the whole tile.
    int64_t getElementBytes() const {
      return getElementType().getIntOrFloatBitWidth() / 8;
    }
    int64_t getPanelBytes() const { return getRows() * 128; }
    int64_t getBytes() const { return getRows() * getCols() * getElementBytes(); }
  }];
}

def FlexAttn_RingType : FlexAttn_Type<"Ring", "ring"> {
  let summary = "A ring of shared-memory tile slots with full/empty synchronisation";
  let description = [{
    `stages` slots, each one `!flexattn.smem_tile` of the given shape, that a
    producer fills and consumers read in ring order. Slot positions are i32
    counters that run on (position `i` uses slot `i % stages` in its
    `i / stages`-th round); each slot has a *full* event (the data landed) and
    an *empty* event (every consumer thread released it). How the events are
    implemented is the lowering's business (Hopper: one mbarrier each, the
    full one counting the copied bytes; a ring filled by
    `flexattn.ring.copy` on sm_80: cp.async groups and CTA barriers).

    ```mlir
    !flexattn.ring<2 x 128x128xbf16>
    ```
  }];
  let parameters = (ins "int64_t":$stages, "int64_t":$rows, "int64_t":$cols,
                        "Type":$elementType);
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// The type of one slot.
    SmemTileType getTileType() const {
      return SmemTileType::get(getContext(), getRows(), getCols(),
                               getElementType());
    }
  }];
}

#endif // FLEXATTN_TYPES
