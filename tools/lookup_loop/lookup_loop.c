/* A C model of lutc's AVX2 fast-mode lookup loop at M > 1 (rows inside groups), to see what the
 * loop itself costs without TVM around it. 4096 x 4096 weights, 4 bits, groups of 32 (4 K bytes),
 * M = 16 rows, the packed layout of lutc.quant.layout (per K byte: 4 planes x 32 output rows), the
 * int8 tables of each row strided K/4 x 16 bytes apart. Five variants, best of 15 runs each:
 *
 *   lookups   vpshufb low/high nibble + vpunpck{l,h}bw + vpmaddubsw by 2**plane, int16 sums
 *             (the one-row micro-kernel of schedules/x86/avx2_intrin.py), no epilogue;
 *   epilogue  the same plus the per-group float epilogue (widen, convert, scale, offset, y += ...);
 *   paired    a variant without vpunpck: one 16-entry register holds two symmetrized tables
 *             (T_lo[0..7], T_hi[0..7]), biased by 128 to unsigned so vpmaddubsw multiplies them by
 *             the signed plane weights (+-2**plane) of interleaved (row, low) / (row, high) indices.
 *             (Its integer sums need a per-group correction of 128 * sum of the weights, left out.)
 *   lean      lookups plus a shorter epilogue: y = fma(acc, s * (0.5 * ls), y); y = fma(o, xsum, y).
 *   lanes     the rows-inside micro-kernel of schedules/x86/avx2_intrin.py (lanes_impl), with the
 *             epilogue: one register holds the low nibble's table in its low lane and the high
 *             nibble's in its high lane; index registers (computed once per group, shared by the
 *             M rows) hold two planes' low nibbles of 8 rows in the low lane and their high
 *             nibbles in the high lane, so one vpshufb + one vpmaddubsw by (2**p, 2**(p+1)) serve
 *             two planes with no vpunpck; the lanes are added once per group.
 *
 * Build and run (one core):  clang -O3 -march=znver3 lookup_loop.c -o lookup_loop && taskset -c 0 ./lookup_loop
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define K 4096
#define N_TILES 128
#define GROUPS (K / 32)
#define M 16
#define UNITS ((double)N_TILES * (K / 8) * 4 * M) /* (32 rows, K byte, plane, row of M) */

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void epilogue(__m256i a0, __m256i a1, const float *sc, float *y, int g, int m) {
    __m256i q[4] = {_mm256_cvtepi16_epi32(_mm256_castsi256_si128(a0)), _mm256_cvtepi16_epi32(_mm256_extracti128_si256(a0, 1)),
                    _mm256_cvtepi16_epi32(_mm256_castsi256_si128(a1)), _mm256_cvtepi16_epi32(_mm256_extracti128_si256(a1, 1))};
    __m256 ls = _mm256_set1_ps(sc[m * GROUPS + g]), xsum = _mm256_set1_ps(sc[M * GROUPS + m * GROUPS + g]);
    for (int j = 0; j < 4; j++) {
        const float *w = sc + 2 * M * GROUPS + g * 32 + j * 8;
        __m256 v = _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(q[j]), _mm256_set1_ps(0.5f)), ls);
        __m256 t = _mm256_fmadd_ps(_mm256_loadu_ps(w), v, _mm256_mul_ps(_mm256_loadu_ps(w + GROUPS * 32), xsum));
        _mm256_storeu_ps(y + m * 32 + j * 8, _mm256_add_ps(_mm256_loadu_ps(y + m * 32 + j * 8), t));
    }
}

static void lean(__m256i a0, __m256i a1, const float *sc, float *y, int g, int m) {
    __m256i q[4] = {_mm256_cvtepi16_epi32(_mm256_castsi256_si128(a0)), _mm256_cvtepi16_epi32(_mm256_extracti128_si256(a0, 1)),
                    _mm256_cvtepi16_epi32(_mm256_castsi256_si128(a1)), _mm256_cvtepi16_epi32(_mm256_extracti128_si256(a1, 1))};
    __m256 c = _mm256_set1_ps(sc[m * GROUPS + g] * 0.5f), xsum = _mm256_set1_ps(sc[M * GROUPS + m * GROUPS + g]);
    for (int j = 0; j < 4; j++) {
        const float *w = sc + 2 * M * GROUPS + g * 32 + j * 8;
        __m256 acc = _mm256_loadu_ps(y + m * 32 + j * 8);
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q[j]), _mm256_mul_ps(_mm256_loadu_ps(w), c), acc);
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(w + GROUPS * 32), xsum, acc);
        _mm256_storeu_ps(y + m * 32 + j * 8, acc);
    }
}

__attribute__((noinline)) static void tile(const uint8_t *w, const int8_t *tab, const float *sc, float *y, int variant) {
    for (int g = 0; g < GROUPS; g++) {
        __m256i lo[16], hi[16], sgn0[16], sgn1[16];
        for (int i = 0; i < 16; i++) { /* split once per group, shared by the M rows */
            __m256i b = _mm256_loadu_si256((const __m256i *)(w + (g * 16 + i) * 32));
            lo[i] = _mm256_and_si256(b, _mm256_set1_epi8(15));
            hi[i] = _mm256_and_si256(_mm256_srli_epi16(b, 4), _mm256_set1_epi8(15));
            sgn0[i] = _mm256_sign_epi8(_mm256_set1_epi8(1 << (i % 4)), _mm256_sub_epi8(lo[i], _mm256_set1_epi8(8)));
            sgn1[i] = _mm256_sign_epi8(_mm256_set1_epi8(1 << (i % 4)), _mm256_sub_epi8(hi[i], _mm256_set1_epi8(8)));
        }

        __m256i ix[32];
        if (variant == 4) {
            for (int kb = 0; kb < 4; kb++)
                for (int pp = 0; pp < 2; pp++) {
                    __m256i b0 = _mm256_loadu_si256((const __m256i *)(w + (g * 16 + kb * 4 + 2 * pp) * 32));
                    __m256i b1 = _mm256_loadu_si256((const __m256i *)(w + (g * 16 + kb * 4 + 2 * pp + 1) * 32));
                    __m256i u0 = _mm256_unpacklo_epi8(b0, b1), u1 = _mm256_unpackhi_epi8(b0, b1);
                    __m256i m = _mm256_set1_epi8(15);
                    __m256i l0 = _mm256_and_si256(u0, m), h0 = _mm256_and_si256(_mm256_srli_epi16(u0, 4), m);
                    __m256i l1 = _mm256_and_si256(u1, m), h1 = _mm256_and_si256(_mm256_srli_epi16(u1, 4), m);
                    __m256i *o = ix + (kb * 2 + pp) * 4;
                    o[0] = _mm256_permute2x128_si256(l0, h0, 0x20); o[1] = _mm256_permute2x128_si256(l1, h1, 0x20);
                    o[2] = _mm256_permute2x128_si256(l0, h0, 0x31); o[3] = _mm256_permute2x128_si256(l1, h1, 0x31);
                }
        }
        for (int m = 0; m < M; m++) {
            const int8_t *t = tab + (size_t)m * (K / 4) * 16 + g * 8 * 16;
            __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();

            if (variant == 4) {
                __m256i c[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
                __m256i w01 = _mm256_set1_epi16(0x0201), w23 = _mm256_set1_epi16(0x0804);
                for (int kb = 0; kb < 4; kb++) {
                    __m256i tt = _mm256_loadu_si256((const __m256i *)(t + kb * 32));
                    for (int pp = 0; pp < 2; pp++) {
                        __m256i *o = ix + (kb * 2 + pp) * 4, wt = pp ? w23 : w01;
                        for (int q = 0; q < 4; q++) c[q] = _mm256_add_epi16(c[q], _mm256_maddubs_epi16(wt, _mm256_shuffle_epi8(tt, o[q])));
                    }
                }
                a0 = _mm256_add_epi16(_mm256_permute2x128_si256(c[0], c[1], 0x20), _mm256_permute2x128_si256(c[0], c[1], 0x31));
                a1 = _mm256_add_epi16(_mm256_permute2x128_si256(c[2], c[3], 0x20), _mm256_permute2x128_si256(c[2], c[3], 0x31));
                epilogue(a0, a1, sc, y, g, m);
                continue;
            }
            for (int kb = 0; kb < 4; kb++) {
                __m256i t0 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(t + kb * 32)));
                __m256i t1 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(t + kb * 32 + 16)));
                for (int p = 0; p < 4; p++) {
                    int i = kb * 4 + p;
                    if (variant == 2) {
                        __m256i both = _mm256_xor_si256(t0, _mm256_set1_epi8((char)0x80));
                        a0 = _mm256_add_epi16(a0, _mm256_maddubs_epi16(_mm256_shuffle_epi8(both, lo[i]), sgn0[i]));
                        a1 = _mm256_add_epi16(a1, _mm256_maddubs_epi16(_mm256_shuffle_epi8(both, hi[i]), sgn1[i]));
                    } else {
                        __m256i l = _mm256_shuffle_epi8(t0, lo[i]), h = _mm256_shuffle_epi8(t1, hi[i]);
                        __m256i weight = _mm256_set1_epi8(1 << p);
                        a0 = _mm256_add_epi16(a0, _mm256_maddubs_epi16(weight, _mm256_unpacklo_epi8(l, h)));
                        a1 = _mm256_add_epi16(a1, _mm256_maddubs_epi16(weight, _mm256_unpackhi_epi8(l, h)));
                    }
                }
            }
            if (variant == 3) {
                lean(a0, a1, sc, y, g, m);
            } else if (variant == 1) {
                epilogue(a0, a1, sc, y, g, m);
            } else {
                _mm256_storeu_si256((__m256i *)(y + m * 32), a0);
                _mm256_storeu_si256((__m256i *)(y + m * 32 + 8), a1);
            }
        }
    }
}

int main(void) {
    size_t wbytes = (size_t)K / 8 * 4 * 32 * N_TILES, tbytes = (size_t)M * K / 4 * 16;
    size_t nscales = 2 * M * GROUPS + 2 * GROUPS * 32;
    uint8_t *w = aligned_alloc(64, wbytes);
    int8_t *tab = aligned_alloc(64, tbytes);
    float *sc = aligned_alloc(64, sizeof(float) * nscales), *y = aligned_alloc(64, sizeof(float) * M * 32 * 2);
    for (size_t i = 0; i < wbytes; i++) w[i] = (uint8_t)rand();
    for (size_t i = 0; i < tbytes; i++) tab[i] = (int8_t)(rand() % 255 - 127);
    for (size_t i = 0; i < nscales; i++) sc[i] = 1.0f / (1 + i % 7);
    const char *names[5] = {"lookups", "epilogue", "paired", "lean", "lanes"};
    double best[5] = {1e9, 1e9, 1e9, 1e9, 1e9};
    for (int round = 0; round < 15; round++)
        for (int v = 0; v < 5; v++) {
            double t0 = now();
            for (int t = 0; t < N_TILES; t++) tile(w + (size_t)t * K / 8 * 4 * 32, tab, sc, y, v);
            double dt = now() - t0;
            if (dt < best[v]) best[v] = dt;
        }
    for (int v = 0; v < 5; v++)
        printf("%-9s %6.0f us  %.3f ns per (32 rows, K byte, plane, row)\n", names[v], best[v] * 1e6, best[v] / UNITS * 1e9);
    return 0;
}
