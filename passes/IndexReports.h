//===- IndexReports.h - index-check reports as row reductions ---*- C++ -*-===//
//
// Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
//
//===----------------------------------------------------------------------===//
//
// A helper of flexattn-vectorize-tiles (IndexReports.cpp): the run-time
// index checks of the mods (flexattn.check_index with a report buffer,
// lowered by flexattn-inline-mods) report from inside the tile's
// linalg.generic under an scf.if, which linalg::vectorize refuses; here they
// become reductions along the row, which it vectorises.
//
//===----------------------------------------------------------------------===//

#ifndef FLEXATTN_PASSES_INDEXREPORTS_H
#define FLEXATTN_PASSES_INDEXREPORTS_H

#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/IR/PatternMatch.h"

namespace mlir::flexattn {

/// Rewrites the reports in the body of `op`, an all-parallel generic with
/// static loop ranges,
///
///   scf.if %bad { memref.store %c1, %report[s, 0]; memref.store %index, %report[s, 1] }
///
/// (stores to buffers defined outside `op`; each stored value defined
/// outside, a constant or an integer computed per element) into new
/// outputs of one element per row, reduced along the last loop (made a
/// reduction): whether any element of the row is bad (`ori`, i8) and, per
/// stored per-element value, its largest value among the bad elements
/// (`maxsi` of `select(%bad, %index, min)`, on the source of a sign
/// extension). After the new generic one
/// scf.if over the rows' reductions does the stores, with those maxima: the
/// report names one out-of-bounds index, as before, and costs a few vector
/// ops per row instead of a branch per element. Returns the new generic,
/// `op` itself when its body reports nothing, or failure (nothing changed)
/// when a report does not have that form.
FailureOr<linalg::GenericOp> reportsToRowReductions(RewriterBase &rewriter,
                                                    linalg::GenericOp op);

} // namespace mlir::flexattn

#endif // FLEXATTN_PASSES_INDEXREPORTS_H
