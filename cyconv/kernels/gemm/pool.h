/* A fork-join "parallel for" whose caller never waits for a thread that has not started.
 *
 *   cy_parallel_for(n, nt, fn, ctx)  runs fn(ctx, i, tid) for i in [0, n) on up to nt threads
 *                                    (the caller is tid 0, pool workers 1 .. nt-1)
 *
 * Why not an OpenMP region: a region ends only when every one of its threads has reached the
 * closing barrier, so on a machine whose cores are shared (other processes, or another
 * runtime's spinning pool in the same process) one worker the OS has not scheduled yet
 * stalls the whole op for a scheduler time slice (milliseconds) even though the caller could
 * have done all the work. Here pieces are claimed and the caller waits only for pieces that
 * were claimed: a worker that wakes late finds its block taken and goes back to sleep (the
 * design of ONNX Runtime's thread pool). Workers sleep on a condition variable when idle,
 * so they never spin against the threads doing work.
 *
 * Thread t first runs the t-th of nt contiguous blocks of pieces (for cache affinity, see
 * pool.c), then helps with the others; which piece runs on which thread is not guaranteed,
 * so callers must give each piece a result that does not depend on it (thread-private
 * scratch is indexed by tid, tid < nt).
 * A call made while the pool is busy (another Python thread's op, or a nested call from a
 * piece) runs its pieces on the calling thread, in order.
 */
#ifndef CYCONV_POOL_H
#define CYCONV_POOL_H

typedef void (*cy_task_fn)(void *ctx, long piece, int tid);

/* Returns the number of threads that may have run pieces (>= 1). */
int cy_parallel_for(long n, int nt, cy_task_fn fn, void *ctx);

#endif
