// selftest.cpp: deliberately faulty kernels, each beside its correct version, to show that
// the host emulation (emu.h, include/cuda_runtime.h) catches what a GPU would get wrong.
// Built with the same flags as the emulated engine (check/cuda_emu.ts buildEmuSelftest) and
// run by tests/cuda_emu_selftest_test.ts. Prints one line per case:
//   <case> <faults> <detail>
// where <faults> is 1 when the emulation reported a fault (or refused the launch) and 0
// otherwise, and <detail> is what the case measured.
//
// `selftest cublas-candidates ROOT` instead prints, one per line, the cuBLAS files that the
// engine would try (engine/cuda/cublas_api.cuh candidates), with ROOT before every absolute
// directory: the lookup's order, tested without a GPU.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <cuda_bf16.h>

#include "../../engine/cuda/cublas_api.cuh"

namespace {

float* dev_floats(int n, float v) {
  float* p = nullptr;
  cudaMalloc(&p, n * sizeof(float));
  for (int i = 0; i < n; i++) p[i] = v;  // host memory in the emulation
  return p;
}

// Runs what is queued and reports: 1 when a fault or a refused launch came of it.
int settle() {
  const cudaError_t launch = cudaGetLastError();
  const cudaError_t run = cudaDeviceSynchronize();
  const int bad = launch != cudaSuccess || run != cudaSuccess;
  emu_reset();
  return bad;
}

void line(const char* name, int faults, const std::string& detail) {
  std::printf("%s %d %s\n", name, faults, detail.c_str());
}

// ---- (a) a missing __syncthreads ----------------------------------------------------------
// Each thread reads what the previous thread wrote to shared memory. In index order the
// previous thread has always run first, so only another interleaving exposes the bug.
__global__ void neighbour_nosync(float* out) {
  __shared__ float s[64];
  const int t = threadIdx.x;
  s[t] = float(t);
  out[t] = t > 0 ? s[t - 1] : 0.f;
}
__global__ void neighbour_sync(float* out) {
  __shared__ float s[64];
  const int t = threadIdx.x;
  s[t] = float(t);
  __syncthreads();
  out[t] = t > 0 ? s[t - 1] : 0.f;
}

// ---- (b) races between blocks -------------------------------------------------------------
// Every block adds into the same word without an atomic: a GPU loses updates.
__global__ void sum_race(float* out, const float* x) {
  if (threadIdx.x == 0) out[0] += x[blockIdx.x];
}
// Each block owns its word.
__global__ void sum_owned(float* out, const float* x) {
  if (threadIdx.x == 0) out[blockIdx.x] += x[blockIdx.x];
}
// Block b reads what block b-1 writes in the same launch.
__global__ void chain_race(float* buf) {
  if (threadIdx.x == 0) buf[blockIdx.x + 1] = buf[blockIdx.x] + 1.f;
}
// Atomics are allowed to meet.
__global__ void min_atomic(int* flag, const int* v) {
  atomicMin(flag, v[blockIdx.x * blockDim.x + threadIdx.x]);
}

// ---- (c) full-mask shuffles with missing lanes --------------------------------------------
__global__ void shuffle_after_exit(float* out) {
  if (threadIdx.x >= 16) return;
  float v = float(threadIdx.x);
  v += __shfl_down_sync(0xffffffffu, v, 1);
  out[threadIdx.x] = v;
}
__global__ void shuffle_all_lanes(float* out) {
  float v = float(threadIdx.x);
  v += __shfl_down_sync(0xffffffffu, v, 1);
  out[threadIdx.x] = v;
}
__global__ void shuffle_half_mask(float* out) {
  if (threadIdx.x >= 16) return;
  float v = float(threadIdx.x);
  v += __shfl_down_sync(0x0000ffffu, v, 1);
  out[threadIdx.x] = v;
}

// ---- (d) launch limits --------------------------------------------------------------------
__global__ void touch(float* out) {
  float* s = dyn_shared<float>();
  s[threadIdx.x] = 1.f;
  if (threadIdx.x == 0 && blockIdx.x == 0) out[0] = s[0];
}

// ---- (e) shared memory from an earlier block ----------------------------------------------
// Only block 0 writes the shared value; block 1 reads it without writing.
__global__ void stale_shared(float* out) {
  __shared__ float s;
  if (blockIdx.x == 0 && threadIdx.x == 0) s = 5.f;
  __syncthreads();
  if (threadIdx.x == 0) out[blockIdx.x] = s;
}

// ---- (g) the tensor-core product (emu.h's mma_bf16_16816) ---------------------------------
// One warp computes D = A B (A 16x16, B 16x8, small integers: exact in bf16 and fp32) from
// registers filled as the PTX ISA lays out mma.m16n8k16's fragments, and writes D row-major.
// `exit_half` makes lanes 16..31 return first: mma.sync needs all 32, so that must fault.
uint32_t pair(const float* m, int i0, int i1) {
  return uint32_t(__bfloat16_as_ushort(__float2bfloat16_rn(m[i0]))) |
         uint32_t(__bfloat16_as_ushort(__float2bfloat16_rn(m[i1]))) << 16;
}
__global__ void mma_tile(float* out, const float* a, const float* b, int exit_half) {
  const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
  if (exit_half && lane >= 16) return;
  auto A = [&](int m, int k) { return m * 16 + k; };  // a: row-major 16 x 16
  auto B = [&](int k, int n) { return k * 8 + n; };   // b: row-major 16 x 8
  const uint32_t ra[4] = {pair(a, A(g, 2 * t), A(g, 2 * t + 1)),
                          pair(a, A(g + 8, 2 * t), A(g + 8, 2 * t + 1)),
                          pair(a, A(g, 2 * t + 8), A(g, 2 * t + 9)),
                          pair(a, A(g + 8, 2 * t + 8), A(g + 8, 2 * t + 9))};
  const uint32_t rb[2] = {pair(b, B(2 * t, g), B(2 * t + 1, g)),
                          pair(b, B(2 * t + 8, g), B(2 * t + 9, g))};
  float d[4] = {0.f, 0.f, 0.f, 0.f};
  ::emu::mma_bf16_16816(d, ra, rb);
  out[g * 8 + 2 * t] = d[0], out[g * 8 + 2 * t + 1] = d[1];
  out[(g + 8) * 8 + 2 * t] = d[2], out[(g + 8) * 8 + 2 * t + 1] = d[3];
}

// The number of elements of out (16 x 8) that differ from a b.
int mma_wrong(const float* out, const float* a, const float* b) {
  int wrong = 0;
  for (int m = 0; m < 16; m++) {
    for (int n = 0; n < 8; n++) {
      float want = 0.f;
      for (int k = 0; k < 16; k++) want += a[m * 16 + k] * b[k * 8 + n];
      wrong += !(out[m * 8 + n] == want);
    }
  }
  return wrong;
}

// ---- (h) cp.async: the bytes land at the wait; a thread waits before it returns ----------
// Thread t copies 16 bytes (4 floats) into shared memory by cp.async, then reads the next
// thread's. mode 0: commit, wait, barrier, read (correct); 1: read before waiting; 2: wait
// without a barrier (another thread's copy may not have landed); 3: never wait.
__global__ void async_rows(float* out, const float* in, int mode) {
  float* s = dyn_shared<float>();
  const int t = threadIdx.x, next = (t + 1) % (int)blockDim.x;
  ::emu::cp_async16(s + 4 * t, in + 4 * t);
  ::emu::cp_async_commit();
  if (mode == 1) {
    __syncthreads();
    out[t] = s[4 * next];
    ::emu::cp_async_wait(0);
    return;
  }
  if (mode != 3) ::emu::cp_async_wait(0);
  if (mode != 2) __syncthreads();
  out[t] = s[4 * next];
}

// A buffer overwritten by cp.async while other threads may still read it: each thread reads
// the next thread's chunk, then copies a new chunk over its own, waited for only at the end.
// Without the barrier between, the next thread's read and this thread's copy race.
__global__ void async_overwrite(float* out, const float* in, int with_barrier) {
  float* s = dyn_shared<float>();
  const int t = threadIdx.x, next = (t + 1) % (int)blockDim.x;
  ::emu::cp_async16(s + 4 * t, in + 4 * t);
  ::emu::cp_async_commit();
  ::emu::cp_async_wait(0);
  __syncthreads();
  const float v = s[4 * next];
  if (with_barrier) __syncthreads();
  ::emu::cp_async16(s + 4 * t, in + 128 + 4 * t);
  ::emu::cp_async_commit();
  __syncthreads();
  out[t] = v;
  ::emu::cp_async_wait(0);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "cublas-candidates") {
    for (const auto& c : cublas::candidates(&cublas::real_getenv, argv[2])) {
      std::printf("%s %s\n", c.lib.c_str(), c.lt.c_str());
    }
    return 0;
  }
  // (a)
  {
    float* out = dev_floats(64, 0.f);
    setenv("LOTUS_EMU_CHECK", "order", 1);
    LAUNCH(neighbour_nosync, 1, 64, 0)(out);
    int f = settle();
    line("missing-sync", f, "neighbour read without __syncthreads, order check");
    LAUNCH(neighbour_sync, 1, 64, 0)(out);
    f = settle();
    line("with-sync", f, "out[63]=" + std::to_string(out[63]));
    // Without the order check, index order hides the bug (what the emulation used to do).
    unsetenv("LOTUS_EMU_CHECK");
    LAUNCH(neighbour_nosync, 1, 64, 0)(out);
    f = settle();
    line("missing-sync-unchecked", f, "out[63]=" + std::to_string(out[63]));
    // Reverse order alone shows it as poisoned (NaN) values.
    setenv("LOTUS_EMU_ORDER", "reverse", 1);
    LAUNCH(neighbour_nosync, 1, 64, 0)(out);
    f = settle();
    unsetenv("LOTUS_EMU_ORDER");
    line("missing-sync-reverse", std::isnan(out[63]) ? 1 : 0, "out[63]=" + std::to_string(out[63]));
    cudaFree(out);
  }
  // (b)
  {
    float* out = dev_floats(8, 0.f);
    float* x = dev_floats(8, 1.f);
    setenv("LOTUS_EMU_CHECK", "writes", 1);
    LAUNCH(sum_race, 8, 32, 0)(out, x);
    int f = settle();
    line("block-race", f, "8 blocks += one word");
    LAUNCH(sum_owned, 8, 32, 0)(out, x);
    f = settle();
    line("block-owned", f, "8 blocks += their own word");
    setenv("LOTUS_EMU_CHECK", "order", 1);
    float* buf = dev_floats(9, 0.f);
    LAUNCH(chain_race, 8, 32, 0)(buf);
    f = settle();
    line("block-chain", f, "block b reads block b-1's write");
    setenv("LOTUS_EMU_CHECK", "all", 1);
    int* flag = nullptr;
    int* v = nullptr;
    cudaMalloc(&flag, sizeof(int));
    cudaMalloc(&v, 256 * sizeof(int));
    *flag = 1 << 30;
    for (int i = 0; i < 256; i++) v[i] = 1000 - i;
    LAUNCH(min_atomic, 8, 32, 0)(flag, v);
    f = settle();
    line("atomic-min", f, "min=" + std::to_string(*flag));
    unsetenv("LOTUS_EMU_CHECK");
    cudaFree(out);
    cudaFree(x);
    cudaFree(buf);
    cudaFree(flag);
    cudaFree(v);
  }
  // (c)
  {
    float* out = dev_floats(32, 0.f);
    LAUNCH(shuffle_after_exit, 1, 32, 0)(out);
    line("shuffle-exited", settle(), "full mask after lanes 16..31 returned");
    LAUNCH(shuffle_all_lanes, 1, 16, 0)(out);
    line("shuffle-small-block", settle(), "full mask in a block of 16 threads");
    LAUNCH(shuffle_all_lanes, 1, 32, 0)(out);
    line("shuffle-full", settle(), "out[0]=" + std::to_string(out[0]));
    LAUNCH(shuffle_half_mask, 1, 32, 0)(out);
    line("shuffle-half-mask", settle(), "out[0]=" + std::to_string(out[0]));
    cudaFree(out);
  }
  // (d)
  {
    float* out = dev_floats(4, 0.f);
    LAUNCH(touch, 1, 1025, 4 * 1025)(out);
    line("threads-1025", settle(), "1025 threads per block");
    LAUNCH(touch, 1, 1024, 4 * 1024)(out);
    line("threads-1024", settle(), "1024 threads per block");
    LAUNCH(touch, 1, 64, 49 * 1024)(out);
    line("smem-49k", settle(), "49 KiB dynamic shared memory without opting in");
    cudaFuncSetAttribute(touch, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024);
    LAUNCH(touch, 1, 64, 49 * 1024)(out);
    line("smem-49k-optin", settle(), "after cudaFuncSetAttribute(64 KiB)");
    LAUNCH(touch, dim3(1, 65536), 32, 0)(out);
    line("grid-y-65536", settle(), "grid.y over 65535");
    cudaFree(out);
  }
  // (e)
  {
    float* out = dev_floats(2, 0.f);
    LAUNCH(stale_shared, 2, 32, 0)(out);
    settle();
    line("stale-shared", std::isnan(out[1]) ? 1 : 0,
         "block 1 read " + std::to_string(out[1]) + " (block 0 wrote 5)");
    cudaFree(out);
  }
  // (f)
  {
    float* d = dev_floats(4, 7.f);
    float h[4] = {0, 0, 0, 0};
    cudaStream_t s;
    cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    cudaMemcpyAsync(h, d, sizeof h, cudaMemcpyDeviceToHost, s);
    const float before = h[0];
    cudaStreamSynchronize(s);
    line("async-copy", before == 0.f && h[0] == 7.f ? 1 : 0,
         "before sync " + std::to_string(before) + ", after " + std::to_string(h[0]));
    cudaStreamDestroy(s);
    cudaFree(d);
  }
  // (g)
  {
    float* out = dev_floats(128, 0.f);
    float* a = dev_floats(256, 0.f);
    float* b = dev_floats(128, 0.f);
    for (int i = 0; i < 256; i++) a[i] = float(i % 7 - 3);
    for (int i = 0; i < 128; i++) b[i] = float(i % 5 - 2);
    LAUNCH(mma_tile, 1, 32, 0)(out, a, b, 0);
    const int f = settle();
    const int wrong = mma_wrong(out, a, b);
    line("mma-product", f || wrong, std::to_string(wrong) + " of 128 elements wrong");
    LAUNCH(mma_tile, 1, 32, 0)(out, a, b, 1);
    line("mma-exited", settle(), "lanes 16..31 returned before the product");
    cudaFree(out);
    cudaFree(a);
    cudaFree(b);
  }
  // (h)
  {
    float* out = dev_floats(32, 0.f);
    float* in = dev_floats(128, 0.f);
    for (int i = 0; i < 128; i++) in[i] = float(i);
    setenv("LOTUS_EMU_CHECK", "order", 1);
    LAUNCH(async_rows, 1, 32, 512)(out, in, 0);
    int f = settle();
    line("cp-async", f || out[0] != 4.f, "out[0]=" + std::to_string(out[0]));
    LAUNCH(async_rows, 1, 32, 512)(out, in, 1);
    f = settle();
    line("cp-async-before-wait", f || std::isnan(out[0]) ? 1 : 0,
         "read before the wait: " + std::to_string(out[0]));
    LAUNCH(async_rows, 1, 32, 512)(out, in, 2);
    line("cp-async-no-barrier", settle(), "another thread's copy read after this one's wait");
    float* in2 = dev_floats(256, 0.f);
    for (int i = 0; i < 256; i++) in2[i] = float(i);
    LAUNCH(async_overwrite, 1, 32, 512)(out, in2, 0);
    line("cp-async-overwrite", settle(), "a copy over a chunk another thread may still read");
    LAUNCH(async_overwrite, 1, 32, 512)(out, in2, 1);
    f = settle();
    line("cp-async-overwrite-barrier", f || out[0] != 4.f, "out[0]=" + std::to_string(out[0]));
    cudaFree(in2);
    unsetenv("LOTUS_EMU_CHECK");
    LAUNCH(async_rows, 1, 32, 512)(out, in, 3);
    line("cp-async-never-waited", settle(), "threads returned with copies in flight");
    cudaFree(out);
    cudaFree(in);
  }
  return 0;
}
