/* Panel packing for the GEMM driver (see pack.c for the layouts). */
#ifndef CYCONV_GEMM_PACK_H
#define CYCONV_GEMM_PACK_H
#include <stddef.h>

void cy_pack_a_block(int mc, int kc, const float *A, ptrdiff_t rsa, ptrdiff_t csa, int MR,
                     float *dst);
void cy_pack_b_block(int kc, int nc, const float *B, ptrdiff_t rsb, ptrdiff_t csb, int NR,
                     float *dst);
#endif
