// graphs.cuh: CUDA graphs of the engine's own ops (le_graph_begin, le_graph_end,
// le_graph_launch, le_graph_free).
//
// A batch-1 loop pass is about 170 small kernels and GEMMs, each too short to hide its own
// launch: launched one by one from the host, the pass costs what the launches cost. Captured
// once into a graph, it is replayed with one host call, and the GPU runs the kernels back to
// back.
//
// Between le_graph_begin and le_graph_end the ops are recorded, not run, with their arguments
// as they were at the call: the same buffers, shapes and scalars every replay. Host checks run
// at the recording, as for any call. What cannot be recorded fails at once, with a message:
// uploads, downloads, syncs, allocation and freeing (REQUIRE_NOT_CAPTURING), a scratch buffer
// that would have to grow, and an index array whose range the engine does not know already
// (upload it with le_upload, which records its range, or run the op once first). So the usual
// way is to run the ops once, then record them, then replay them.
//
// Recording runs nothing, so le_graph_end leaves the engine's knowledge of the buffers as it
// was at le_graph_begin: the index ranges it knows (common.cuh) and which bf16 weight copies
// are fresh (weights.cuh). What the recorded ops would change there is kept with the graph and
// applied after each replay: the index arrays it writes are forgotten (le_argmax's outputs are
// known in range again), and a weight copy that the recording left stale (a generic write into
// the weights after the copy's last refresh) is marked stale.
//
// A replay reads what the buffers hold when it runs. Each index array the recording read
// (ids, positions, targets) is checked again before a replay, against the bound it was
// recorded for: without a wait when the engine knows the array's range (an le_upload since,
// for one), with the device check otherwise. An array out of range refuses the replay, and
// nothing runs. The weights' bf16 copies (weights.cuh)
// are brought up to date before each replay, so a graph recorded before new weights were
// uploaded multiplies with the new ones. A graph records the matmuls of the precision it was
// recorded at: a replay at another precision is refused.
#pragma once

#include <algorithm>
#include <vector>

#include "common.cuh"
#include "marks.cuh"
#include "weights.cuh"

namespace le {

struct Graph {
  cudaGraphExec_t exec = nullptr;
  int precision = 0;
  uint64_t epoch = 0;  // g_memory_epoch at the recording (common.cuh)
  std::vector<IndexNeed> needs;      // the index arrays it reads (common.cuh)
  std::vector<CheckEffect> effects;  // applied to the index entries after each replay
  std::vector<const float*> stale;   // weight copies (by range start) a replay leaves stale
  std::vector<int> marks;            // timing marks (marks.cuh) a replay records
};
constexpr int kGraphSlots = 512;
Graph g_graphs[kGraphSlots];

// The knowledge of the buffers at le_graph_begin, put back at le_graph_end.
CheckedIndices g_checked_before[kCheckedSlots];
int g_checked_next_before = 0;
bool g_fresh_before[kWeightCopies];

inline void drop_graph(Graph& gr) {
  if (gr.exec) cudaGraphExecDestroy(gr.exec);
  gr = Graph{};
}

inline int check_slot(const char* fn, int slot) {
  if (slot < 0 || slot >= kGraphSlots) {
    return fail("%s: slot %d does not exist; graphs have slots 0..%d", fn, slot,
                kGraphSlots - 1);
  }
  return 0;
}

}  // namespace le

LE_API int le_graph_begin(void) {
  using namespace le;
  const char* fn = "le_graph_begin";
  REQUIRE_INIT(fn);
  REQUIRE_NOT_CAPTURING(fn);
  // A replay starts with fresh weight copies (le_graph_launch): start the recording so too,
  // so that it neither records a rounding of the whole copy nor counts an untouched copy as
  // one it leaves stale.
  for (WeightCopy& w : g_weights) {
    if (w.h) refresh(w);
  }
  CUDA_TRY(fn, cudaGetLastError());
  CUDA_TRY(fn, cudaStreamBeginCapture(g.stream, cudaStreamCaptureModeThreadLocal));
  g.capturing = true;
  g.capture_failures = g_failures;
  g_needs.clear();
  g_effects.clear();
  g_capture_marks.clear();
  std::copy(g_checked, g_checked + kCheckedSlots, g_checked_before);
  g_checked_next_before = g_checked_next;
  for (int i = 0; i < kWeightCopies; i++) g_fresh_before[i] = g_weights[i].fresh;
  return 0;
}

LE_API int le_graph_end(int slot) {
  using namespace le;
  const char* fn = "le_graph_end";
  REQUIRE_INIT(fn);
  if (!g.capturing) return fail("%s: no graph is being captured; call le_graph_begin first", fn);
  if (slot >= kGraphSlots) {  // the recording ends here all the same: discard it
    le_graph_end(-1);
    return check_slot(fn, slot);
  }
  g.capturing = false;
  // What the recording left stale, then the knowledge of before it (nothing ran).
  std::vector<const float*> stale;
  for (int i = 0; i < kWeightCopies; i++) {
    if (g_weights[i].p && !g_weights[i].fresh) stale.push_back(g_weights[i].p);
    g_weights[i].fresh = g_fresh_before[i];
  }
  std::copy(g_checked_before, g_checked_before + kCheckedSlots, g_checked);
  g_checked_next = g_checked_next_before;
  // An op that failed while recording left a hole in the sequence: the recording is void.
  const bool failed = g_failures != g.capture_failures;
  char last[512] = "";
  if (failed) snprintf(last, sizeof last, "%s", g_err);
  cudaGraph_t graph = nullptr;
  cudaError_t e = cudaStreamEndCapture(g.stream, &graph);
  if (failed && e == cudaSuccess) {
    cudaGraphDestroy(graph);
    return slot < 0 ? 0
                    : fail("%s: an op failed while the graph was being recorded, so nothing was "
                           "kept (the last failure: %s)",
                           fn, last);
  }
  // A capture or instantiation that fails although every op succeeded may be the driver's
  // refusal of programmatic edges after some node: the next recording runs without them
  // (drop_pdl).
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    if (graph) cudaGraphDestroy(graph);
    drop_pdl();
    return slot < 0 ? 0
                    : fail("%s: the capture failed: %s (%s); an op inside it must have failed "
                           "or waited for the GPU",
                           fn, cudaGetErrorString(e), cudaGetErrorName(e));
  }
  if (slot < 0) {  // discard
    cudaGraphDestroy(graph);
    return 0;
  }
  cudaGraphExec_t exec = nullptr;
  e = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  if (e != cudaSuccess) {
    drop_pdl();
    return cuda_fail(fn, "cudaGraphInstantiate", e);
  }
  Graph& gr = g_graphs[slot];
  drop_graph(gr);
  gr.exec = exec;
  gr.precision = g.precision;
  gr.epoch = g_memory_epoch;
  gr.needs = g_needs;
  gr.effects = g_effects;
  gr.stale = std::move(stale);
  gr.marks = g_capture_marks;
  return 0;
}

LE_API int le_graph_launch(int slot) {
  using namespace le;
  const char* fn = "le_graph_launch";
  REQUIRE_INIT(fn);
  REQUIRE_NOT_CAPTURING(fn);
  TRY(check_slot(fn, slot));
  Graph& gr = g_graphs[slot];
  if (!gr.exec) return fail("%s: slot %d holds no graph; record one with le_graph_end", fn, slot);
  if (gr.precision != g.precision) {
    return fail("%s: the graph in slot %d was recorded at precision mode %d, and the engine "
                "now computes at mode %d; record it again",
                fn, slot, gr.precision, g.precision);
  }
  if (gr.epoch != g_memory_epoch) {
    fail("%s: the graph in slot %d reads engine scratch or a bf16 weight copy that has been "
         "freed since it was recorded (a larger op grew the scratch, or le_keep_bf16 or le_free "
         "dropped a copy); nothing ran: record it again",
         fn, slot);
    return 2;
  }
  for (const IndexNeed& d : gr.needs) {
    int bad[2];
    TRY(find_bad_indices(fn, d.p, d.hi, d.neg, nullptr, 0, false, d.n, bad));
    if (bad[0] != kNoBad) {
      return fail("%s: the graph in slot %d reads %d indices at %p, recorded for values %s "
                  "%lld, and index %d is now %d; nothing ran (upload indices in range first)",
                  fn, slot, d.n, (const void*)d.p,
                  d.neg ? "(negatives skipped) below" : "in 0 up to below", (long long)d.hi,
                  bad[0], read_int(d.p + bad[0]));
    }
  }
  for (WeightCopy& w : g_weights) {
    if (w.h) refresh(w);
  }
  CUDA_TRY(fn, cudaGraphLaunch(gr.exec, g.stream));
  for (int i : gr.marks) g_mark_recorded[i] = true;
  for (const CheckEffect& x : gr.effects) {
    if (x.remember) {
      remember_checked(static_cast<const int32_t*>(x.p), (int64_t)(x.bytes / 4), x.hi, x.neg);
    } else {
      forget_checked(x.p, x.bytes);
    }
  }
  for (const float* p : gr.stale) {
    for (WeightCopy& w : g_weights) {
      if (w.p == p) w.fresh = false;
    }
  }
  return op_done(fn);
}

LE_API int le_graph_free(int slot) {
  using namespace le;
  if (slot < 0) {
    for (Graph& gr : g_graphs) drop_graph(gr);
    return 0;
  }
  TRY(check_slot("le_graph_free", slot));
  drop_graph(g_graphs[slot]);
  return 0;
}
