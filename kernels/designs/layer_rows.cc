// The encoder layer's rows phases (layer_rows.py): one core's share of a phase, on blocks of R rows.
// Built once per phase with -DPHASE_<NAME>, -DR (rows per block), -DINT8 (0 or 1), -DPARAM_ROWS
// (rows of the phase's parameter group, 0 for none), -DKEPT (of them the first rows the phase
// uses) and the streams' widths -DW_IN0, -DW_IN1,
// -DW_OUT0, -DW_OUT1. Parameters arrive first, PARAM_ROWS / R blocks through the first input;
// `<phase>_params` keeps the rows the phase uses. int8: a GEMM's result rows end in a trailer whose
// first value is the row scale of the GEMM's input (a float's bits in an int32 row); rows are
// quantized symmetrically per row (scale = max |v| / 127, nearest-even rounding, clipped to ±127),
// the scale written beside them. Ours; scalar float arithmetic (not vectorised). Never compiled for
// the AIE on the machines this project was developed on (the tests build it for the host).
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "bf16_math.h"

#if INT8
typedef int8_t op_t;     // the GEMMs' operand type
typedef int32_t acc_t;   // their result type
#else
typedef uint16_t op_t;   // bf16
typedef float acc_t;
#endif

static inline float round_even(float v) {
  float r = floorf(v + 0.5f);
  if (r - v == 0.5f && fmodf(r, 2.0f) != 0.0f) r -= 1.0f;  // a tie goes to the even neighbour
  return r;
}

static inline float bits_to_float(int32_t bits) {
  float value;
  memcpy(&value, &bits, sizeof value);
  return value;
}

static inline float acc_value(const acc_t *row, int i) { return (float)row[i]; }

// The row scale of a GEMM result row (its trailer, after `width` values); 1 in bf16.
static inline float row_scale(const acc_t *row, int width) {
#if INT8
  int32_t bits = row[width];
  return bits_to_float(bits);
#else
  (void)row;
  (void)width;
  return 1.0f;
#endif
}

// One row of `n` floats into the operand type; int8 returns its scale.
static float store_row(const float *v, int n, op_t *out) {
#if INT8
  float top = 0.0f;
  for (int i = 0; i < n; ++i) top = fabsf(v[i]) > top ? fabsf(v[i]) : top;
  float scale = top > 0.0f ? top / 127.0f : 1.0f;
  for (int i = 0; i < n; ++i) {
    float q = round_even(v[i] / scale);
    out[i] = (op_t)(q > 127.0f ? 127.0f : q < -127.0f ? -127.0f : q);
  }
  return scale;
#else
  for (int i = 0; i < n; ++i) out[i] = float_to_bf16(v[i]);
  return 1.0f;
#endif
}

// LayerNorm of one row in place: (v - mean) / sqrt(var + eps) * gamma + beta, in f32.
static void layer_norm(float *v, int n, const float *gamma, const float *beta, float eps) {
  float sum = 0.0f;
  for (int i = 0; i < n; ++i) sum += v[i];
  float mean = sum / (float)n, square = 0.0f;
  for (int i = 0; i < n; ++i) square += (v[i] - mean) * (v[i] - mean);
  float inverse = 1.0f / sqrtf(square / (float)n + eps);
  for (int i = 0; i < n; ++i) v[i] = (v[i] - mean) * inverse * gamma[i] + beta[i];
}

// LayerNorm of one row into the operand type, without a working row (the row itself is kept);
// int8 returns its scale.
static float norm_store(const float *v, int n, const float *gamma, const float *beta, float eps, op_t *out) {
  float sum = 0.0f;
  for (int i = 0; i < n; ++i) sum += v[i];
  float mean = sum / (float)n, square = 0.0f;
  for (int i = 0; i < n; ++i) square += (v[i] - mean) * (v[i] - mean);
  float inverse = 1.0f / sqrtf(square / (float)n + eps);
#if INT8
  float top = 0.0f;
  for (int i = 0; i < n; ++i) {
    float h = fabsf((v[i] - mean) * inverse * gamma[i] + beta[i]);
    top = h > top ? h : top;
  }
  float scale = top > 0.0f ? top / 127.0f : 1.0f;
  for (int i = 0; i < n; ++i) {
    float q = round_even(((v[i] - mean) * inverse * gamma[i] + beta[i]) / scale);
    out[i] = (op_t)(q > 127.0f ? 127.0f : q < -127.0f ? -127.0f : q);
  }
  return scale;
#else
  for (int i = 0; i < n; ++i) out[i] = float_to_bf16((v[i] - mean) * inverse * gamma[i] + beta[i]);
  return 1.0f;
#endif
}

// erf(x) for the exact GELU: Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7, far below bf16's 2^-8).
static inline float erf_approx(float x) {
  float a = fabsf(x), t = 1.0f / (1.0f + 0.3275911f * a);
  float poly = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
  float y = 1.0f - poly * exp_nonpositive(-a * a);
  return x < 0.0f ? -y : y;
}

#if PARAM_ROWS
static float params[KEPT * W_IN0];
static int received;  // parameter rows taken in this run; the group comes whole every run

static void keep(const void *block) {
  const float *rows = (const float *)block;  // parameters are floats whatever the stream's type
  for (int row = 0; row < R; ++row)
    if (received + row < KEPT) memcpy(params + (received + row) * W_IN0, rows + row * W_IN0, sizeof(float) * W_IN0);
  received = (received + R) % PARAM_ROWS;
}
#define ROW(i) (params + (i) * W_IN0)
#endif

#ifdef PHASE_NORM1  // x -> h1 = LN1(x); int8: + its row scale, three copies (one per q/k/v result's trailer)
extern "C" void norm1_params(const float *block) { keep(block); }
extern "C" void norm1_rows(const float *x, op_t *h
#if INT8
                           , float *scales
#endif
) {
  static float v[W_IN0];
  for (int row = 0; row < R; ++row) {
    memcpy(v, x + row * W_IN0, sizeof v);
    layer_norm(v, W_IN0, ROW(0), ROW(1), ROW(2)[0]);
    float scale = store_row(v, W_IN0, h + row * W_OUT0);
#if INT8
    for (int copy = 0; copy < W_OUT1; ++copy) scales[row * W_OUT1 + copy] = scale;
#else
    (void)scale;
#endif
  }
}
#endif

#ifdef PHASE_BIAS  // a q, k or v GEMM result -> (c * row scale * column scale + bias) * post, bf16
extern "C" void bias_params(const acc_t *block) { keep(block); }
extern "C" void bias_rows(const acc_t *c, uint16_t *out) {
  for (int row = 0; row < R; ++row) {
    const acc_t *in = c + row * W_IN0;
    float rs = row_scale(in, W_OUT0);
    (void)rs;
    for (int i = 0; i < W_OUT0; ++i) {
#if INT8
      float value = acc_value(in, i) * rs * ROW(1)[i] + ROW(0)[i];
#else
      float value = acc_value(in, i) + ROW(0)[i];
#endif
      out[row * W_OUT0 + i] = float_to_bf16(value * ROW(2)[i]);
    }
  }
}
#endif

#ifdef PHASE_ATTENTION_ROWS  // the attention's f32 rows -> the out projection's operand; int8: + row scale
extern "C" void attention_rows_rows(const float *o, op_t *a
#if INT8
                                    , float *scales
#endif
) {
  for (int row = 0; row < R; ++row) {
    float scale = store_row(o + row * W_IN0, W_IN0, a + row * W_OUT0);
#if INT8
    scales[row] = scale;
#else
    (void)scale;
#endif
  }
}
#endif

#ifdef PHASE_RESIDUAL1  // x1 = x + c * scales + bias; h2 = LN2(x1); int8: h2's row scale in x1's trailer
extern "C" void residual1_params(const float *block) { keep(block); }
extern "C" void residual1_rows(const float *x, const acc_t *c, float *x1, op_t *h) {
  for (int row = 0; row < R; ++row) {
    const acc_t *in = c + row * W_IN1;
    float rs = row_scale(in, W_IN0);
    (void)rs;
    for (int i = 0; i < W_IN0; ++i) {
#if INT8
      float projected = acc_value(in, i) * rs * ROW(1)[i] + ROW(0)[i];
#else
      float projected = acc_value(in, i) + ROW(0)[i];
#endif
      x1[row * W_OUT0 + i] = x[row * W_IN0 + i] + projected;
    }
    float scale = norm_store(x1 + row * W_OUT0, W_IN0, ROW(2), ROW(3), ROW(4)[0], h + row * W_OUT1);
    for (int i = W_IN0; i < W_OUT0; ++i) x1[row * W_OUT0 + i] = i == W_IN0 ? scale : 0.0f;
  }
}
#endif

#ifdef PHASE_GELU  // f = GELU(c * scales + bias) over one column part; int8: f stays f32 for its quantization
#if INT8
typedef float f_t;
#else
typedef uint16_t f_t;
#endif
extern "C" void gelu_params(const acc_t *block) { keep(block); }
extern "C" void gelu_rows(const acc_t *c,
#if INT8
                          const float *scales,
#endif
                          f_t *f) {
  for (int row = 0; row < R; ++row) {
#if INT8
    float rs = scales[row];
#endif
    for (int i = 0; i < W_IN0; ++i) {
#if INT8
      float z = acc_value(c + row * W_IN0, i) * rs * ROW(1)[i] + ROW(0)[i];
#else
      float z = acc_value(c + row * W_IN0, i) + ROW(0)[i];
#endif
      float g = 0.5f * z * (1.0f + erf_approx(z * 0.70710678f));
#if INT8
      f[row * W_OUT0 + i] = g;
#else
      f[row * W_OUT0 + i] = float_to_bf16(g);
#endif
    }
  }
}
#endif

#ifdef PHASE_QUANTIZE  // int8: GELU's f32 rows -> int8 + their scale
extern "C" void quantize_rows(const float *f, int8_t *q, float *scales) {
  for (int row = 0; row < R; ++row) scales[row] = store_row(f + row * W_IN0, W_IN0, q + row * W_OUT0);
}
#endif

#ifdef PHASE_RESIDUAL2  // y = x1 + c * scales + bias
extern "C" void residual2_params(const float *block) { keep(block); }
extern "C" void residual2_rows(const float *x1, const acc_t *c, float *y) {
  for (int row = 0; row < R; ++row) {
    const acc_t *in = c + row * W_IN1;
    float rs = row_scale(in, W_OUT0);
    (void)rs;
    for (int i = 0; i < W_OUT0; ++i) {
#if INT8
      float projected = acc_value(in, i) * rs * ROW(1)[i] + ROW(0)[i];
#else
      float projected = acc_value(in, i) + ROW(0)[i];
#endif
      y[row * W_OUT0 + i] = x1[row * W_IN0 + i] + projected;
    }
  }
}
#endif
