// One core's share of fused attention: for a block of SQ queries, the keys and values arrive in
// blocks of TK; scores, the running row max and sum and the SQ x HEAD_DIM accumulator stay in this
// core's memory (online softmax). Keys past VALID are masked. Ours; scalar float arithmetic (not
// vectorised). Built per artifact with -DSQ -DTK -DHEAD_DIM -DVALID, and -DSCORE_SCALE where the
// scores' factor is not 1/sqrt(HEAD_DIM) (an encoder layer scales q and k before). Never compiled for
// the AIE on the machines this project was developed on.
#include <math.h>

#include "bf16_math.h"

static float scores[SQ * TK];
static float acc[SQ * HEAD_DIM];
static float row_max[SQ];
static float row_sum[SQ];
static int block;  // key block index within the current query block

extern "C" void attention_begin() {
  for (int i = 0; i < SQ * HEAD_DIM; ++i) acc[i] = 0.0f;
  for (int i = 0; i < SQ; ++i) { row_max[i] = -INFINITY; row_sum[i] = 0.0f; }
  block = 0;
}

extern "C" void attention_step(const uint16_t *q, const uint16_t *k, const uint16_t *v) {
#ifdef SCORE_SCALE
  const float scale = SCORE_SCALE;
#else
  const float scale = 1.0f / sqrtf((float)HEAD_DIM);
#endif
  int valid = VALID - block * TK;
  if (valid > TK) valid = TK;
  for (int i = 0; i < SQ; ++i) {
    float top = row_max[i];
    for (int j = 0; j < valid; ++j) {
      float s = 0.0f;
      for (int d = 0; d < HEAD_DIM; ++d) s += bf16_to_float(q[i * HEAD_DIM + d]) * bf16_to_float(k[j * HEAD_DIM + d]);
      s *= scale;
      scores[i * TK + j] = s;
      top = s > top ? s : top;
    }
    float rescale = exp_nonpositive(row_max[i] - top);  // exp(-inf) = 0 on the first block
    row_sum[i] *= rescale;
    for (int d = 0; d < HEAD_DIM; ++d) acc[i * HEAD_DIM + d] *= rescale;
    for (int j = 0; j < valid; ++j) {
      float p = exp_nonpositive(scores[i * TK + j] - top);
      row_sum[i] += p;
      for (int d = 0; d < HEAD_DIM; ++d) acc[i * HEAD_DIM + d] += p * bf16_to_float(v[j * HEAD_DIM + d]);
    }
    row_max[i] = top;
  }
  ++block;
}

extern "C" void attention_end(float *o) {
  for (int i = 0; i < SQ; ++i) {
    float inverse = 1.0f / row_sum[i];
    for (int d = 0; d < HEAD_DIM; ++d) o[i * HEAD_DIM + d] = acc[i * HEAD_DIM + d] * inverse;
  }
}
