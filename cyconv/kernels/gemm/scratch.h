/* Per-thread scratch buffers that outlive a call.
 *
 *   float *p = cy_thread_scratch(slot, n);   at least n floats, 64-byte aligned, or NULL
 *
 * Each thread owns one buffer per slot, grown to the largest request and kept: the pool's
 * worker threads (pool.c) live as long as the process, so steady-state calls never touch the
 * allocator or fault fresh pages. Slots keep callers that nest from sharing a buffer (the
 * Winograd driver holds its transform buffers while the GEMM it calls packs into its own).
 * A thread-specific key with a destructor (not a bare _Thread_local pointer) frees the
 * buffers when a thread exits, so short-lived Python threads calling in do not leak.
 */
#ifndef CYCONV_SCRATCH_H
#define CYCONV_SCRATCH_H

#include <stddef.h>

enum { CY_SCRATCH_GEMM = 0, CY_SCRATCH_WINOGRAD = 1, CY_SCRATCH_SHARED_B = 2,
       CY_SCRATCH_ROW_OFF = 3, CY_SCRATCH_SLOTS = 4 };

float *cy_thread_scratch(int slot, size_t n);

#endif
