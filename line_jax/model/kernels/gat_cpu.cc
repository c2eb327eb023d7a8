// G's neighbour attention on the CPU, fused: one pass over each receiver's neighbour rows
// per direction (see line_jax/kernels/__init__.py for why, and for the contract).
//
// The edge slots come in the blocked layout of line_jax.graph.build_graph: sorted by
// receiver, so each receiver's edges are one contiguous run of slots; masked slots are
// padding. Per receiver r and relation type k the softmax runs over {self loop} + the edges
// of type k entering r:
//   pre_e     = dst_logit[r, k] + x_e . u_src[k]          (x_e = table[row_e])
//   logit_e   = LeakyReLU(pre_e)
//   alpha     = softmax over the segment, the self loop's logit being self_logit[r, k]
//   pooled[r] = sum_e alpha_e x_e                          (edges only; the self term is
//                                                           added in JAX)
// The forward pass reads each neighbour row from memory once (the second use, the weighted
// sum, finds it in cache); the backward pass reads it once more. XLA:CPU instead writes the
// gathered [E, d] rows out and reads them back four times, which bounds it by memory
// bandwidth on a small machine.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace ffi = xla::ffi;

namespace {

// Table rows are float32 or float16 (Half): float16 rows are widened exactly on load, so
// both give the same values, and float16 halves the bytes read.
struct Half {
  uint16_t bits;
};

inline float HalfToFloat(uint16_t h) {
#if defined(__F16C__)
  return _cvtsh_ss(h);
#else
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000 | (man << 13);                       // inf / nan
  } else if (exp == 0) {
    if (man == 0) {
      bits = sign;                                                 // zero
    } else {                                                       // subnormal
      exp = 127 - 15 + 1;
      while (!(man & 0x400)) { man <<= 1; --exp; }
      bits = sign | (exp << 23) | ((man & 0x3ff) << 13);
    }
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
#endif
}

inline float Dot(const float* a, const float* b, int64_t d) {
  float s = 0.f;
  for (int64_t c = 0; c < d; ++c) s += a[c] * b[c];
  return s;
}

inline void Axpy(float w, const float* x, float* y, int64_t d) {
  for (int64_t c = 0; c < d; ++c) y[c] += w * x[c];
}

inline float Dot(const Half* a, const float* b, int64_t d) {
  const uint16_t* h = &a->bits;
  int64_t c = 0;
  float s = 0.f;
#if defined(__F16C__) && defined(__AVX2__) && defined(__FMA__)
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  for (; c + 16 <= d; c += 16) {
    const __m256 x0 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + c)));
    const __m256 x1 =
        _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + c + 8)));
    acc0 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(b + c), acc0);
    acc1 = _mm256_fmadd_ps(x1, _mm256_loadu_ps(b + c + 8), acc1);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, _mm256_add_ps(acc0, acc1));
  for (float v : lanes) s += v;
#endif
  for (; c < d; ++c) s += HalfToFloat(h[c]) * b[c];
  return s;
}

inline void Axpy(float w, const Half* x, float* y, int64_t d) {
  const uint16_t* h = &x->bits;
  int64_t c = 0;
#if defined(__F16C__) && defined(__AVX2__) && defined(__FMA__)
  const __m256 wv = _mm256_set1_ps(w);
  for (; c + 8 <= d; c += 8) {
    const __m256 xv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + c)));
    _mm256_storeu_ps(y + c, _mm256_fmadd_ps(wv, xv, _mm256_loadu_ps(y + c)));
  }
#endif
  for (; c < d; ++c) y[c] += w * HalfToFloat(h[c]);
}

inline void Prefetch(const char* row, int64_t bytes) {
  for (int64_t c = 0; c < bytes; c += 64) __builtin_prefetch(row + c, 0, 1);
}

// The concept table's rows as T (float or Half).
template <typename T>
struct Rows {
  const T* data;
  int64_t d;
  const T* operator[](int32_t r) const { return data + int64_t(r) * d; }
  void Prefetch(int32_t r) const {
    ::Prefetch(reinterpret_cast<const char*>((*this)[r]), d * int64_t(sizeof(T)));
  }
};

// The table, float32 or float16: Visit(f) calls f(Rows<float>) or f(Rows<Half>), so the
// element type is resolved once per call and the inner loops are compiled for each (a
// branch per row measured 10-60% slower).
struct TableRows {
  const void* data;
  int64_t d;
  bool half;

  template <typename F>
  void Visit(F&& f) const {
    if (half) {
      f(Rows<Half>{static_cast<const Half*>(data), d});
    } else {
      f(Rows<float>{static_cast<const float*>(data), d});
    }
  }
};

// Receiver runs [start, end) of the slots, split into `parts` contiguous groups of about
// equal size, cut only between runs.
std::vector<int64_t> SplitRuns(const int32_t* receivers, int64_t num_slots, int parts) {
  std::vector<int64_t> cuts{0};
  for (int p = 1; p < parts; ++p) {
    int64_t at = std::max(cuts.back(), num_slots * p / parts);
    while (at > 0 && at < num_slots && receivers[at] == receivers[at - 1]) ++at;
    cuts.push_back(std::min(at, num_slots));
  }
  cuts.push_back(num_slots);
  return cuts;
}

template <typename F>
void RunParts(const std::vector<int64_t>& cuts, F&& work) {
  const int parts = static_cast<int>(cuts.size()) - 1;
  std::vector<std::thread> threads;
  for (int p = 1; p < parts; ++p) threads.emplace_back(work, p, cuts[p], cuts[p + 1]);
  work(0, cuts[0], cuts[1]);
  for (auto& t : threads) t.join();
}

int NumParts(int64_t threads, int64_t num_slots) {
  int64_t n = threads > 0 ? threads : std::thread::hardware_concurrency();
  n = std::max<int64_t>(1, std::min<int64_t>(n, num_slots / 256 + 1));
  return static_cast<int>(n);
}

// The backward pass sums u_src's gradient over every edge. So that the sum does not depend
// on the thread count (float addition is not associative), the slots are cut into blocks
// that depend on the slots alone (about 256 slots each, at most kMaxBlocks); each block sums
// its own edges in slot order, whichever thread runs it, and the blocks' partial sums are
// added in block order. A thread runs a contiguous range of blocks.
constexpr int64_t kMaxBlocks = 64;

int NumBlocks(int64_t num_slots) {
  return static_cast<int>(std::min<int64_t>(kMaxBlocks, num_slots / 256 + 1));
}

// The table and the edge slots, both handlers' first arguments, checked: a bad row index
// would read outside the table.
struct Edges {
  TableRows tab;
  const int32_t* row;
  const int32_t* typ;
  const bool* msk;
  const int32_t* rcv;
  int64_t num_slots;
};

ffi::Error ReadEdges(const ffi::AnyBuffer& table, const ffi::Buffer<ffi::S32>& rows,
                     const ffi::Buffer<ffi::S32>& etype, const ffi::Buffer<ffi::PRED>& emask,
                     const ffi::Buffer<ffi::S32>& receivers, int64_t num_receivers,
                     int64_t num_types, Edges* out) {
  if (table.element_type() != ffi::F32 && table.element_type() != ffi::F16)
    return ffi::Error::InvalidArgument("the concept table must be float32 or float16");
  if (table.dimensions().size() != 2)
    return ffi::Error::InvalidArgument("the concept table must be [C, d]");
  const size_t num_slots = rows.element_count();
  if (etype.element_count() != num_slots || emask.element_count() != num_slots ||
      receivers.element_count() != num_slots)
    return ffi::Error::InvalidArgument("rows, etype, emask and receivers differ in length");
  const int64_t num_rows = table.dimensions()[0], d = table.dimensions()[1];
  *out = Edges{TableRows{table.untyped_data(), d, table.element_type() == ffi::F16},
               rows.typed_data(), etype.typed_data(), emask.typed_data(),
               receivers.typed_data(), static_cast<int64_t>(num_slots)};
  if (num_receivers == 0) {       // nothing to attend to (padding slots name receiver -1)
    out->num_slots = 0;
    return ffi::Error::Success();
  }
  for (int64_t e = 0; e < out->num_slots; ++e) {
    const int32_t r = out->rcv[e];
    if (r < 0 || r >= num_receivers || (e > 0 && r < out->rcv[e - 1]))
      return ffi::Error::InvalidArgument("edge receivers must be sorted and in [0, R)");
    if (out->msk[e] && (out->row[e] < 0 || out->row[e] >= num_rows || out->typ[e] < 0 ||
                        out->typ[e] >= num_types))
      return ffi::Error::InvalidArgument("edge row or type out of range");
  }
  return ffi::Error::Success();
}

ffi::Error GatForward(ffi::AnyBuffer table, ffi::Buffer<ffi::S32> rows,
                      ffi::Buffer<ffi::S32> etype, ffi::Buffer<ffi::PRED> emask,
                      ffi::Buffer<ffi::S32> receivers, ffi::Buffer<ffi::F32> dst_logit,
                      ffi::Buffer<ffi::F32> self_logit, ffi::Buffer<ffi::F32> u_src,
                      float slope, int64_t threads,
                      ffi::ResultBuffer<ffi::F32> pooled,
                      ffi::ResultBuffer<ffi::F32> alpha_self,
                      ffi::ResultBuffer<ffi::F32> alpha_edge,
                      ffi::ResultBuffer<ffi::F32> pre_edge) {
  const int64_t d = table.dimensions()[1];
  const int64_t num_receivers = dst_logit.dimensions()[0], k_types = dst_logit.dimensions()[1];
  if (!(self_logit.dimensions() == dst_logit.dimensions()) ||
      u_src.element_count() != size_t(k_types * d))
    return ffi::Error::InvalidArgument("logits must be [R, K] and u_src [K, d]");
  Edges edges;
  if (auto err = ReadEdges(table, rows, etype, emask, receivers, num_receivers, k_types, &edges);
      err.failure())
    return err;
  // (Named copies, not a structured binding: lambdas capture these by reference.)
  const TableRows tab = edges.tab;
  const int32_t *row = edges.row, *typ = edges.typ, *rcv = edges.rcv;
  const bool* msk = edges.msk;
  const int64_t num_slots = edges.num_slots;
  const float* dst = dst_logit.typed_data();
  const float* self = self_logit.typed_data();
  const float* u = u_src.typed_data();
  float* out = pooled->typed_data();
  float* a_self = alpha_self->typed_data();
  float* a_edge = alpha_edge->typed_data();
  float* pre = pre_edge->typed_data();
  std::fill(out, out + num_receivers * d, 0.f);
  std::fill(a_self, a_self + num_receivers * k_types, 1.f);   // receivers without edges
  std::fill(a_edge, a_edge + rows.element_count(), 0.f);
  std::fill(pre, pre + rows.element_count(), 0.f);

  tab.Visit([&](auto x) {
    auto work = [&](int, int64_t begin, int64_t end) {
      std::vector<float> logit(static_cast<size_t>(end - begin));
      std::vector<float> m(k_types), z(k_types);
      for (int64_t a = begin; a < end;) {
        const int32_t r = rcv[a];
        int64_t b = a;
        while (b < end && rcv[b] == r) ++b;
        bool any = false;
        for (int64_t k = 0; k < k_types; ++k) m[k] = self[r * k_types + k];
        for (int64_t e = a; e < b; ++e) {
          if (e + 2 < b && msk[e + 2]) x.Prefetch(row[e + 2]);
          if (!msk[e]) continue;
          any = true;
          const int32_t k = typ[e];
          const float p = dst[r * k_types + k] + Dot(x[row[e]], u + k * d, d);
          const float l = p >= 0.f ? p : slope * p;
          pre[e] = p;
          logit[e - begin] = l;
          m[k] = std::max(m[k], l);
        }
        if (any) {
          for (int64_t k = 0; k < k_types; ++k) z[k] = std::exp(self[r * k_types + k] - m[k]);
          for (int64_t e = a; e < b; ++e)
            if (msk[e]) {
              const float w = std::exp(logit[e - begin] - m[typ[e]]);
              a_edge[e] = w;
              z[typ[e]] += w;
            }
          for (int64_t k = 0; k < k_types; ++k)
            a_self[r * k_types + k] = std::exp(self[r * k_types + k] - m[k]) / z[k];
          float* o = out + int64_t(r) * d;
          for (int64_t e = a; e < b; ++e)
            if (msk[e]) {
              a_edge[e] /= z[typ[e]];
              Axpy(a_edge[e], x[row[e]], o, d);
            }
        }
        a = b;
      }
    };
    RunParts(SplitRuns(rcv, num_slots, NumParts(threads, num_slots)), work);
  });
  return ffi::Error::Success();
}

ffi::Error GatBackward(ffi::AnyBuffer table, ffi::Buffer<ffi::S32> rows,
                       ffi::Buffer<ffi::S32> etype, ffi::Buffer<ffi::PRED> emask,
                       ffi::Buffer<ffi::S32> receivers, ffi::Buffer<ffi::F32> alpha_self,
                       ffi::Buffer<ffi::F32> alpha_edge, ffi::Buffer<ffi::F32> pre_edge,
                       ffi::Buffer<ffi::F32> g_pooled, ffi::Buffer<ffi::F32> g_alpha_self,
                       float slope, int64_t threads,
                       ffi::ResultBuffer<ffi::F32> g_dst_logit,
                       ffi::ResultBuffer<ffi::F32> g_self_logit,
                       ffi::ResultBuffer<ffi::F32> g_u_src) {
  const int64_t d = table.dimensions()[1];
  const int64_t num_receivers = alpha_self.dimensions()[0], k_types = alpha_self.dimensions()[1];
  if (!(g_alpha_self.dimensions() == alpha_self.dimensions()) ||
      g_pooled.element_count() != size_t(num_receivers * d) ||
      alpha_edge.element_count() != rows.element_count() ||
      pre_edge.element_count() != rows.element_count())
    return ffi::Error::InvalidArgument("backward operands do not match the edges' shapes");
  Edges edges;
  if (auto err = ReadEdges(table, rows, etype, emask, receivers, num_receivers, k_types, &edges);
      err.failure())
    return err;
  // (Named copies, not a structured binding: lambdas capture these by reference.)
  const TableRows tab = edges.tab;
  const int32_t *row = edges.row, *typ = edges.typ, *rcv = edges.rcv;
  const bool* msk = edges.msk;
  const int64_t num_slots = edges.num_slots;
  const float* a_self = alpha_self.typed_data();
  const float* a_edge = alpha_edge.typed_data();
  const float* pre = pre_edge.typed_data();
  const float* g = g_pooled.typed_data();
  const float* g_as = g_alpha_self.typed_data();
  float* g_dst = g_dst_logit->typed_data();
  float* g_self = g_self_logit->typed_data();
  float* g_u = g_u_src->typed_data();
  std::fill(g_dst, g_dst + num_receivers * k_types, 0.f);
  std::fill(g_self, g_self + num_receivers * k_types, 0.f);   // alpha_self = 1: no gradient

  const auto cuts = SplitRuns(rcv, num_slots, NumBlocks(num_slots));
  const int blocks = static_cast<int>(cuts.size()) - 1;
  std::vector<std::vector<float>> partial(blocks, std::vector<float>(k_types * d, 0.f));
  tab.Visit([&](auto x) {
    auto block_work = [&](int block, int64_t begin, int64_t end) {
      float* du = partial[block].data();
      std::vector<float> dalpha(static_cast<size_t>(end - begin));
      std::vector<float> c(k_types);
      for (int64_t a = begin; a < end;) {
        const int32_t r = rcv[a];
        int64_t b = a;
        while (b < end && rcv[b] == r) ++b;
        const float* gr = g + int64_t(r) * d;
        bool any = false;
        for (int64_t k = 0; k < k_types; ++k)
          c[k] = a_self[r * k_types + k] * g_as[r * k_types + k];
        for (int64_t e = a; e < b; ++e) {
          if (e + 2 < b && msk[e + 2]) x.Prefetch(row[e + 2]);
          if (!msk[e]) continue;
          any = true;
          const float da = Dot(x[row[e]], gr, d);
          dalpha[e - begin] = da;
          c[typ[e]] += a_edge[e] * da;
        }
        if (any) {
          for (int64_t k = 0; k < k_types; ++k)
            g_self[r * k_types + k] =
                a_self[r * k_types + k] * (g_as[r * k_types + k] - c[k]);
          for (int64_t e = a; e < b; ++e) {
            if (!msk[e]) continue;
            const int32_t k = typ[e];
            const float dl = a_edge[e] * (dalpha[e - begin] - c[k]);
            const float dp = pre[e] >= 0.f ? dl : slope * dl;   // as jax.nn.leaky_relu at 0
            g_dst[r * k_types + k] += dp;
            Axpy(dp, x[row[e]], du + k * d, d);
          }
        }
        a = b;
      }
    };
    const int parts = std::min(NumParts(threads, num_slots), blocks);
    std::vector<int64_t> first_block;   // thread p runs blocks [first[p], first[p + 1])
    for (int p = 0; p <= parts; ++p) first_block.push_back(int64_t(blocks) * p / parts);
    RunParts(first_block, [&](int, int64_t first, int64_t last) {
      for (int64_t blk = first; blk < last; ++blk)
        block_work(static_cast<int>(blk), cuts[blk], cuts[blk + 1]);
    });
  });
  std::fill(g_u, g_u + k_types * d, 0.f);
  for (const auto& p : partial)     // in block order: the same sum for any thread count
    for (int64_t i = 0; i < k_types * d; ++i) g_u[i] += p[i];
  return ffi::Error::Success();
}

// The arguments both handlers start with: the table and the edge slots.
auto EdgeArgs() {
  return ffi::Ffi::Bind()
      .Arg<ffi::AnyBuffer>()           // table [C, d] f32 / f16
      .Arg<ffi::Buffer<ffi::S32>>()    // rows [E]
      .Arg<ffi::Buffer<ffi::S32>>()    // etype [E]
      .Arg<ffi::Buffer<ffi::PRED>>()   // emask [E]
      .Arg<ffi::Buffer<ffi::S32>>();   // receivers [E]
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(LineGatForward, GatForward,
                              EdgeArgs()
                                  .Arg<ffi::Buffer<ffi::F32>>()    // dst_logit [R, K]
                                  .Arg<ffi::Buffer<ffi::F32>>()    // self_logit [R, K]
                                  .Arg<ffi::Buffer<ffi::F32>>()    // u_src [K, d]
                                  .Attr<float>("negative_slope")
                                  .Attr<int64_t>("threads")
                                  .Ret<ffi::Buffer<ffi::F32>>()    // pooled [R, d]
                                  .Ret<ffi::Buffer<ffi::F32>>()    // alpha_self [R, K]
                                  .Ret<ffi::Buffer<ffi::F32>>()    // alpha_edge [E]
                                  .Ret<ffi::Buffer<ffi::F32>>());  // pre_edge [E]

XLA_FFI_DEFINE_HANDLER_SYMBOL(LineGatBackward, GatBackward,
                              EdgeArgs()
                                  .Arg<ffi::Buffer<ffi::F32>>()    // alpha_self [R, K]
                                  .Arg<ffi::Buffer<ffi::F32>>()    // alpha_edge [E]
                                  .Arg<ffi::Buffer<ffi::F32>>()    // pre_edge [E]
                                  .Arg<ffi::Buffer<ffi::F32>>()    // g_pooled [R, d]
                                  .Arg<ffi::Buffer<ffi::F32>>()    // g_alpha_self [R, K]
                                  .Attr<float>("negative_slope")
                                  .Attr<int64_t>("threads")
                                  .Ret<ffi::Buffer<ffi::F32>>()    // g_dst_logit [R, K]
                                  .Ret<ffi::Buffer<ffi::F32>>()    // g_self_logit [R, K]
                                  .Ret<ffi::Buffer<ffi::F32>>());  // g_u_src [K, d]
