//===- FlexAttnGpuOps.cpp - flexattn GPU types and ops ----------*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// The shared-memory tile and ring types (syntax, verification) and the
// verifiers of the GPU kernel's mid-level ops. Messages name the operand by
// its role and say what was expected and what was found.
//
//===----------------------------------------------------------------------===//

#include "dialect/FlexAttnOps.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "mlir/IR/Matchers.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace mlir::flexattn;

#define GET_TYPEDEF_CLASSES
#include "dialect/FlexAttnTypes.cpp.inc"

void FlexAttnDialect::registerTypes() {
  addTypes<
#define GET_TYPEDEF_LIST
#include "dialect/FlexAttnTypes.cpp.inc"
      >();
}

//===----------------------------------------------------------------------===//
// Types
//===----------------------------------------------------------------------===//

namespace {

/// `RxCxT`: the rows, columns and element type of a tile.
ParseResult parseTileShape(AsmParser &parser, int64_t &rows, int64_t &cols,
                           Type &elem) {
  SmallVector<int64_t> dims;
  if (parser.parseDimensionList(dims, /*allowDynamic=*/false) ||
      parser.parseType(elem))
    return failure();
  if (dims.size() != 2)
    return parser.emitError(parser.getCurrentLocation(),
                            "expected a 2-D tile shape rows x cols, got ")
           << dims.size() << " dimensions";
  rows = dims[0];
  cols = dims[1];
  return success();
}

LogicalResult verifyTile(function_ref<InFlightDiagnostic()> emitError,
                         int64_t rows, int64_t cols, Type elem) {
  if (!elem.isBF16() && !elem.isF16() && !elem.isF32())
    return emitError() << "shared-memory tiles hold bf16, f16 or f32, got " << elem;
  if (rows <= 0 || rows % 8 != 0)
    return emitError() << "tile rows must be a positive multiple of 8 (the "
                          "128-byte swizzle period), got "
                       << rows;
  if (cols <= 0 || cols % 64 != 0)
    return emitError() << "tile columns must be a positive multiple of 64 "
                          "(128-byte panels), got "
                       << cols;
  return success();
}

} // namespace

Type SmemTileType::parse(AsmParser &parser) {
  int64_t rows, cols;
  Type elem;
  if (parser.parseLess() || parseTileShape(parser, rows, cols, elem) ||
      parser.parseGreater())
    return {};
  return getChecked([&] { return parser.emitError(parser.getNameLoc()); },
                    parser.getContext(), rows, cols, elem);
}

void SmemTileType::print(AsmPrinter &p) const {
  p << "<" << getRows() << "x" << getCols() << "x" << getElementType() << ">";
}

LogicalResult SmemTileType::verify(function_ref<InFlightDiagnostic()> emitError,
                                   int64_t rows, int64_t cols, Type elem) {
  return verifyTile(emitError, rows, cols, elem);
}

Type RingType::parse(AsmParser &parser) {
  int64_t stages, rows, cols;
  Type elem;
  if (parser.parseLess() || parser.parseInteger(stages) ||
      parser.parseKeyword("x") || parseTileShape(parser, rows, cols, elem) ||
      parser.parseGreater())
    return {};
  return getChecked([&] { return parser.emitError(parser.getNameLoc()); },
                    parser.getContext(), stages, rows, cols, elem);
}

void RingType::print(AsmPrinter &p) const {
  p << "<" << getStages() << " x " << getRows() << "x" << getCols() << "x"
    << getElementType() << ">";
}

LogicalResult RingType::verify(function_ref<InFlightDiagnostic()> emitError,
                               int64_t stages, int64_t rows, int64_t cols,
                               Type elem) {
  if (stages < 1)
    return emitError() << "a ring needs at least one stage, got " << stages;
  return verifyTile(emitError, rows, cols, elem);
}

//===----------------------------------------------------------------------===//
// Ops
//===----------------------------------------------------------------------===//

LogicalResult WarpSpecializeOp::verify() {
  for (auto [name, value] :
       {std::pair<StringRef, int64_t>{"producer_threads", getProducerThreads()},
        {"consumer_groups", getConsumerGroups()},
        {"consumer_threads", getConsumerThreads()}})
    if (value <= 0)
      return emitOpError() << name << " must be positive, got " << value;
  if (getProducerThreads() % 128 || getConsumerThreads() % 128)
    return emitOpError() << "roles are whole warpgroups: producer_threads and "
                            "consumer_threads must be multiples of 128, got "
                         << getProducerThreads() << " and "
                         << getConsumerThreads();
  auto checkArgs = [&](Region &region, StringRef name,
                       unsigned count) -> LogicalResult {
    Block &block = region.front();
    if (block.getNumArguments() != count ||
        !llvm::all_of(block.getArgumentTypes(),
                      [](Type t) { return t.isIndex(); }))
      return emitOpError() << "the " << name << " region takes " << count
                           << " index argument(s) "
                           << (count == 1 ? "(thread)" : "(group, thread)")
                           << ", got " << block.getArgumentTypes();
    return success();
  };
  if (failed(checkArgs(getProducer(), "producer", 1)) ||
      failed(checkArgs(getConsumers(), "consumers", 2)))
    return failure();
  // The CTA must have exactly the roles' threads.
  if (auto launch = (*this)->getParentOfType<gpu::LaunchOp>()) {
    APInt x, y, z;
    if (matchPattern(launch.getBlockSizeX(), m_ConstantInt(&x)) &&
        matchPattern(launch.getBlockSizeY(), m_ConstantInt(&y)) &&
        matchPattern(launch.getBlockSizeZ(), m_ConstantInt(&z)) &&
        (x.getSExtValue() != getNumThreads() || y != 1 || z != 1))
      return emitOpError() << "the roles take " << getNumThreads()
                           << " threads, but the enclosing gpu.launch has "
                           << x.getSExtValue() << " x " << y.getSExtValue()
                           << " x " << z.getSExtValue();
  }
  return success();
}

LogicalResult RingAllocOp::verify() {
  if (getConsumers() <= 0)
    return emitOpError() << "consumers must be positive, got " << getConsumers();
  return success();
}

LogicalResult RingCopyOp::verify() {
  auto source = cast<MemRefType>(getSource().getType());
  RingType ring = getRing().getType();
  // B and N may be run-time sizes (a dynamic-shape kernel); H and C fix the
  // copies' addresses.
  if (source.getRank() != 4 || source.isDynamicDim(1) || source.isDynamicDim(3) ||
      !source.getLayout().isIdentity())
    return emitOpError() << "the source must be a 4-D memref [B, H, N, C] with "
                            "static H and C and the identity layout, got "
                         << source;
  if (source.getElementType() != ring.getElementType())
    return emitOpError() << "the source holds " << source.getElementType()
                         << " but the ring " << ring.getElementType();
  int64_t cols = source.getDimSize(3);
  if (cols % 8 || cols > ring.getCols() || ring.getCols() - cols >= 64)
    return emitOpError() << "the source rows have " << cols
                         << " columns: a multiple of 8 that the ring's tiles of "
                         << ring.getCols()
                         << " columns hold, padded by less than a 64-column panel";
  return success();
}

LogicalResult RingWaitOp::verify() {
  if (std::optional<int64_t> n = getInFlight(); n && *n < 0)
    return emitOpError() << "in_flight must be >= 0, got " << *n;
  return success();
}

namespace {
/// The m16 tiles per warp (1 or 2) of a fragment of `elements` per thread
/// over `cols` columns (cols / 2 per m16 tile), or 0 if it is neither.
int64_t mTilesOf(int64_t elements, int64_t cols) {
  for (int64_t t : {1, 2})
    if (elements == t * cols / 2)
      return t;
  return 0;
}

/// A view of a shared tile (panel, reinterpretation) keeps its element type.
LogicalResult verifySameElementType(Operation *op, SmemTileType from, SmemTileType to) {
  if (from.getElementType() != to.getElementType())
    return op->emitOpError() << "element types must match, got " << from.getElementType()
                             << " and " << to.getElementType();
  return success();
}
} // namespace

LogicalResult FragLoadOp::verify() {
  SmemTileType tile = getTile().getType();
  VectorType frag = getResult().getType();
  if (frag.getElementType() != tile.getElementType())
    return emitOpError() << "the fragment holds " << frag.getElementType()
                         << " but the tile " << tile.getElementType();
  int64_t t = mTilesOf(frag.getNumElements(), tile.getCols());
  if (!t)
    return emitOpError() << "a band of " << tile.getCols() << " columns is "
                         << tile.getCols() / 2 << " (16 rows per warp) or "
                         << tile.getCols()
                         << " (32 rows) elements per thread, got " << frag;
  if (tile.getRows() < 64 * t)
    return emitOpError() << "the tile has " << tile.getRows()
                         << " rows, fewer than a " << 64 * t << "-row band";
  return success();
}

LogicalResult SmemTilePanelOp::verify() {
  SmemTileType from = getSource().getType(), to = getResult().getType();
  if (failed(verifySameElementType(*this, from, to)))
    return failure();
  int64_t panelCols = 128 / to.getElementBytes();
  if (to.getCols() != panelCols || from.getCols() % panelCols)
    return emitOpError() << "the result is one 128-byte panel (" << panelCols
                         << " columns) of a source of whole panels, got "
                         << from.getCols() << " to " << to.getCols() << " columns";
  if (to.getRows() > from.getRows() || to.getRows() % 8)
    return emitOpError() << "the result's rows (" << to.getRows()
                         << ") must be a multiple of 8 and at most the source's ("
                         << from.getRows() << ")";
  return success();
}

LogicalResult FragStoreOp::verify() {
  SmemTileType tile = getTile().getType();
  VectorType frag = getValue().getType();
  if (frag.getElementType() != tile.getElementType() ||
      tile.getElementType().isF32())
    return emitOpError() << "a 16-bit fragment into a tile of its type, got "
                         << frag << " and " << tile;
  int64_t rows = getTranspose() ? tile.getCols() : tile.getRows();
  int64_t cols = getTranspose() ? tile.getRows() : tile.getCols();
  if (rows != 64 || frag.getNumElements() != cols / 2)
    return emitOpError() << "a 64-row band of " << cols << " columns is " << cols / 2
                         << " elements per thread and a tile of "
                         << (getTranspose() ? "64 columns" : "64 rows") << ", got "
                         << frag << " and " << tile;
  return success();
}

LogicalResult FragStageOp::verify() {
  SmemTileType tile = getTile().getType();
  VectorType frag = getValue().getType();
  if (!tile.getElementType().isF32() || !frag.getElementType().isF32() ||
      tile.getRows() != 64 || frag.getNumElements() * 2 > tile.getCols())
    return emitOpError() << "an f32 fragment of a 64-row band (N / 2 per thread) into a "
                            "64-row f32 tile of at least N columns, got "
                         << frag << " and " << tile;
  return success();
}

LogicalResult BulkReduceAddOp::verify() {
  SmemTileType tile = getTile().getType();
  auto dst = cast<MemRefType>(getDst().getType());
  if (!tile.getElementType().isF32() || !dst.getElementType().isF32() ||
      dst.getRank() != 4 || dst.getDimSize(3) != tile.getCols() ||
      dst.isDynamicDim(1) || !dst.getLayout().isIdentity())
    return emitOpError() << "adds an f32 tile into a [B, H, rows, cols] f32 memref (identity "
                            "layout, static H) of the tile's columns, got "
                         << tile << " and " << dst;
  return success();
}

LogicalResult SmemTileReinterpretOp::verify() {
  auto from = getSource().getType(), to = getResult().getType();
  if (failed(verifySameElementType(*this, from, to)))
    return failure();
  if (to.getBytes() > from.getBytes())
    return emitOpError() << "the result (" << to.getBytes()
                         << " bytes) may not be larger than the source ("
                         << from.getBytes() << " bytes)";
  return success();
}

OpFoldResult SmemTileReinterpretOp::fold(FoldAdaptor) {
  if (getSource().getType() == getResult().getType())
    return getSource();
  return {};
}

LogicalResult MmaOp::verify() {
  SmemTileType b = getB().getType();
  int64_t k = getTransposeB() ? b.getCols() : b.getRows();
  int64_t n = getTransposeB() ? b.getRows() : b.getCols();
  if (getBRow()) {
    auto frag = dyn_cast<VectorType>(getA().getType());
    if (!frag || getTransposeB())
      return emitOpError() << "b_row takes a register A and a row-major B (no transpose_b)";
    // K is A's: T K / 2 elements for T m16 tiles, T read off the result.
    int64_t t = mTilesOf(getResult().getType().getNumElements(), n);
    int64_t aK = t ? 2 * frag.getNumElements() / t : 0;
    APInt row;
    if (!t || aK % 16 || aK > k ||
        (matchPattern(getBRow(), m_ConstantInt(&row)) &&
         (row.getSExtValue() % 16 || row.getSExtValue() + aK > k)))
      return emitOpError() << "b_row reads B's rows [b_row, b_row + K) with K from A ("
                           << aK << "), a multiple of 16 inside B's " << k << " rows";
    k = aK;
  }
  if (auto a = dyn_cast<SmemTileType>(getA().getType())) {
    if (!getARow())
      return emitOpError() << "a shared-memory A needs the row of its 64-row "
                              "band: a[%row]";
    if (a.getElementType() != b.getElementType())
      return emitOpError() << "A and B element types must match, got "
                           << a.getElementType() << " and "
                           << b.getElementType();
    if (a.getCols() != k)
      return emitOpError() << "A has " << a.getCols()
                           << " columns but the contraction has K = " << k;
  } else {
    auto frag = cast<VectorType>(getA().getType());
    if (getARow())
      return emitOpError() << "a register A (a fragment) takes no row";
    if (frag.getElementType() != b.getElementType())
      return emitOpError() << "A and B element types must match, got "
                           << frag.getElementType() << " and "
                           << b.getElementType();
  }
  int64_t t = mTilesOf(getResult().getType().getNumElements(), n);
  if (!t)
    return emitOpError() << "the result fragment of N = " << n
                         << " columns is " << n / 2 << " or " << n
                         << " f32 per thread (16 or 32 rows per warp), got "
                         << getResult().getType();
  if (auto frag = dyn_cast<VectorType>(getA().getType());
      frag && frag.getNumElements() != t * k / 2)
    return emitOpError() << "a register A of K = " << k << " columns and "
                         << 16 * t << " rows per warp is " << t * k / 2
                         << " elements per thread, got "
                         << frag.getNumElements();
  if (getAcc() && getAcc().getType() != getResult().getType())
    return emitOpError() << "acc type " << getAcc().getType()
                         << " must match the result type "
                         << getResult().getType();
  return success();
}

LogicalResult MmaWaitOp::inferReturnTypes(
    MLIRContext *, std::optional<Location>, ValueRange operands,
    DictionaryAttr attributes, OpaqueProperties properties, RegionRange regions,
    SmallVectorImpl<Type> &inferred) {
  Adaptor adaptor(operands, attributes, properties, regions);
  llvm::append_range(inferred, adaptor.getValues().getTypes());
  return success();
}

namespace {
/// Checks that `frag` holds whole m16 tiles of 8-column groups for the
/// 2 T row values `rows`: 4 T elements per 8 columns.
LogicalResult verifyRowsOf(Operation *op, VectorType frag, VectorType rows,
                           StringRef what) {
  int64_t t = rows.getNumElements() / 2;
  if (frag.getNumElements() % (4 * t))
    return op->emitOpError()
           << "a " << what << " fragment of " << 16 * t << " rows per warp ("
           << rows << " row values) holds " << 4 * t
           << " elements per 8 columns, got " << frag.getNumElements();
  return success();
}
} // namespace

LogicalResult FragRescaleOp::verify() {
  return verifyRowsOf(*this, getAcc().getType(), getAlpha().getType(),
                      "rescaled");
}

LogicalResult FragSoftmaxOp::verify() {
  int64_t n = getScores().getType().getNumElements();
  if (failed(verifyRowsOf(*this, getScores().getType(), getMax().getType(),
                          "score")))
    return failure();
  int64_t t = getMax().getType().getNumElements() / 2;
  if (getProbs().getType().getNumElements() != n)
    return emitOpError() << "probs must have the scores' " << n
                         << " elements, got " << getProbs().getType();
  std::optional<ArrayRef<int64_t>> lens = getSeqLens();
  if (lens.has_value() == !getLens().empty())
    return emitOpError() << "needs either seq_lens (static lengths) or lens(%M, %N) "
                            "(run-time lengths), not "
                         << (lens ? "both" : "neither");
  if (!getLens().empty() && getLens().size() != 2)
    return emitOpError() << "lens must be two run-time lengths (M, N), got "
                         << getLens().size() << " value(s)";
  if (lens && (lens->size() != 2 || (*lens)[0] <= 0 || (*lens)[1] <= 0))
    return emitOpError() << "seq_lens must be two positive lengths [M, N], got "
                         << lens->size() << " value(s)";
  ArrayRef<int64_t> tile = getTileSize();
  if (tile.size() != 2 || tile[0] <= 0 || tile[1] != 2 * n / t)
    return emitOpError() << "tile_size must be [BM, BN] with BN = " << 2 * n / t
                         << " (the fragment's columns)";
  return success();
}

LogicalResult FragFinalizeOp::verify() {
  auto out = cast<MemRefType>(getOut().getType());
  // B and M may be run-time sizes (a dynamic-shape kernel); Hq and Dv fix
  // the stores' layout.
  if (out.getRank() != 4 || out.isDynamicDim(1) || out.isDynamicDim(3))
    return emitOpError() << "out must be a 4-D memref [B, Hq, M, Dv] with static "
                            "Hq and Dv, got "
                         << out;
  // The accumulator may hold Dv padded to a whole 64-column panel (the
  // padding columns are not stored).
  int64_t dv = out.getDimSize(3);
  int64_t t = getMax().getType().getNumElements() / 2;
  int64_t dvp = (dv + 63) / 64 * 64;
  int64_t n = getAcc().getType().getNumElements();
  if (n != t * dv / 2 && n != t * dvp / 2)
    return emitOpError() << "an accumulator fragment of Dv = " << dv
                         << " columns and " << 16 * t << " rows per warp is "
                         << t * dv / 2 << " f32 per thread (or " << t * dvp / 2
                         << ", padded to " << dvp << " columns), got "
                         << getAcc().getType();
  return verifyFinalizeBuffers(*this, getLse(), getMaxScores(), getSinks(),
                               out.getDimSize(1));
}
