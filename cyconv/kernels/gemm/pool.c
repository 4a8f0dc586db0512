/* cy_parallel_for: see pool.h for the contract and the reason it exists.
 *
 * Pieces are dealt in nt contiguous blocks, thread t's block first to thread t: a thread
 * claims its own block's pieces in order, then whatever is left of the others' blocks (each
 * block has its own claim counter, so a piece runs once whoever takes it). The same thread
 * thus runs the same pieces call after call, and op after op over the same columns, which
 * leaves the data it writes in its own core's L2 for the next run and the next op; with one
 * shared counter, which thread took which piece changed from call to call, and half of what
 * a piece read or overwrote sat in the other core's L2. In-process A/B, 2 threads, blocks
 * vs one counter, paired medians: SqueezeNet 0.944, CIFAR CNN 0.938, PaddleOCR 0.925, PNet
 * 0.951, ResNet-50 0.937, ResNet-18 0.972, DenseNet-121 0.973, GoogLeNet 0.975, LeNet-5
 * 1.0 (2-piece ops). A late or busy thread still costs nothing: the others take its block.
 *
 * Synchronisation (all atomics sequentially consistent):
 *   caller: publish job and want -> bump generation -> signal the wanted sleepers under the
 *           mutex -> claim pieces -> wait until done == n -> job = NULL -> wait until
 *           active == 0 -> return
 *   worker: spin, then sleep, until the generation changes -> read want (not wanted: wait
 *           on) -> active++ -> read job -> claim pieces -> active-- -> spin
 * A spinning worker never touches the mutex: it only sleeps on (and so locks) it after its
 * spin budget, counted from the last job it ran. Each worker sleeps on a condition of its
 * own, and the caller wakes only the sleepers its job wants (those with tid < nt), so a
 * worker started for a larger thread count stays asleep through smaller jobs. (Before, every
 * job woke every worker, and a worker not wanted went back to spinning for a whole budget:
 * after one 3-thread call on 2 cores, such a spinner took the core from the worker the
 * 2-thread jobs wanted.) The sleeper sets its asleep flag and then checks the generation,
 * under the mutex; the caller bumps the generation and then reads the flag, signalling
 * under the mutex: (Dekker, sequentially consistent) either the sleeper sees the bump or the
 * caller sees the flag, so no wake-up is lost.
 * A worker reads the job only between its active++ and active--, and the caller clears the
 * job before waiting for active == 0, so (Dekker) a worker either sees NULL or is waited for:
 * the job, on the caller's stack, is never touched after the caller returns.
 */
#include "pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <time.h>

#define MAX_WORKERS 255

#define MAX_THREADS (MAX_WORKERS + 1)

/* Thread t's block of pieces [t*n/nt, (t+1)*n/nt): next is the next one to claim in it (by
 * its owner or by a thread that ran out of its own), on a cache line of its own. */
typedef struct {
    _Alignas(64) atomic_long next;
    long end;
} block_t;

typedef struct {
    cy_task_fn fn;
    void *ctx;
    long n;
    int nt;
    atomic_long done;        /* pieces finished */
    block_t block[MAX_THREADS];
} job_t;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;      /* sleepers' wait on gen;
                                                               workers */
typedef struct {
    pthread_cond_t wake;     /* this worker's sleep */
    atomic_int asleep;       /* set (under mu) while it sleeps or is about to */
} sleeper_t;
static sleeper_t sleeper[MAX_THREADS];     /* by tid; [0] (the caller) unused */
static pthread_mutex_t busy = PTHREAD_MUTEX_INITIALIZER;    /* one caller at a time */
static atomic_ulong gen;     /* bumped per job; read without the mutex while spinning */
static atomic_int want;      /* threads the current job may use (caller included) */
static int workers;          /* workers started */
static _Atomic(job_t *) current;
static atomic_int active;

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Thread tid runs its own block first, then claims what is left of the others' blocks.
 * It adds the pieces it ran to done once, when none is left to claim: done's cache line
 * then moves between the cores once per thread per job instead of once per piece (each
 * move ~60 ns with the vCPUs near, ~330 far). Cross-process A/B, 2 threads, near: CIFAR
 * CNN 0.977-0.986x, SqueezeNet 1.00x. The caller still returns only after done == n. */
static void run_pieces(job_t *j, int tid)
{
    long ran = 0;
    for (int k = 0; k < j->nt; k++) {
        block_t *b = &j->block[(tid + k) % j->nt];
        for (;;) {
            long i = atomic_fetch_add(&b->next, 1);
            if (i >= b->end) break;
            j->fn(j->ctx, i, tid);
            ran++;
        }
    }
    if (ran) atomic_fetch_add(&j->done, ran);
}

/* How long an idle worker spins for the next job before it sleeps (CYCONV_SPIN_US, default
 * 50000 us; 0: sleep at once). A model's ops start their parallel regions microseconds to a
 * few hundred microseconds apart, and waking a sleeping thread costs 50-150 us, more than a
 * small layer's whole work (MobileNetV2's 576 -> 96 1x1 conv at 14x14: 139 us with the worker
 * spinning, 330 us after it had slept). Between calls the cost is worse on a VM: a vCPU whose
 * thread sleeps is halted and the hypervisor hands its core to someone else, and after 20 ms
 * idle the worker took 3 ms on average to join again (20 jobs of 150 us: it joined the first
 * in 11 of 50 bursts, the 37th in 35), so a model called every few tens of milliseconds ran
 * on one thread for its first milliseconds. ONNX Runtime's workers spin ~55 ms after a call
 * (measured: CPU time burnt in an idle 300 ms after a run), OpenVINO's ~1 ms; 50 ms here.
 * Measured, interleaved with ONNX Runtime with 100 ms idle before each block, 2 threads:
 * CIFAR CNN 0.95-0.98 -> 0.69-0.74 ms, MobileNetV2 b1 9.2-13.9 -> 7.5-9.3 ms against 1 ms of
 * spin. The price is one core busy for 50 ms after the last op, as with ONNX Runtime. */
static long spin_ns = -1;

static long spin_budget_ns(void)
{
    if (spin_ns < 0) {
        const char *env = getenv("CYCONV_SPIN_US");
        long us = env && *env ? atol(env) : 50000;
        spin_ns = us < 0 ? 0 : us * 1000L;
    }
    return spin_ns;
}

static long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long)t.tv_sec * 1000000000L + t.tv_nsec;
}

/* Spin until the generation moves past seen or the budget counted from idle_since is
 * spent; 1 if it moved. */
static int spin_for_job(unsigned long seen, long idle_since)
{
    const long budget = spin_budget_ns();
    for (;;) {
        for (int i = 0; i < 64; i++) {
            if (atomic_load_explicit(&gen, memory_order_acquire) != seen) return 1;
            cpu_relax();
        }
        if (now_ns() - idle_since > budget) return 0;
    }
}

static void *worker_main(void *arg)
{
    const int tid = (int)(ptrdiff_t)arg;
    sleeper_t *me = &sleeper[tid];
    unsigned long seen = atomic_load(&gen);
    long idle_since = now_ns();
    for (;;) {
        /* wait for a job that wants this thread */
        for (;;) {
            const unsigned long g = atomic_load(&gen);
            if (g != seen) {
                seen = g;
                if (tid < atomic_load(&want)) break;
                continue;
            }
            if (!spin_for_job(seen, idle_since)) {
                pthread_mutex_lock(&mu);
                atomic_store(&me->asleep, 1);
                while (atomic_load(&gen) == seen) pthread_cond_wait(&me->wake, &mu);
                atomic_store(&me->asleep, 0);
                pthread_mutex_unlock(&mu);
            }
        }
        atomic_fetch_add(&active, 1);
        job_t *j = atomic_load(&current);
        /* a later job than the one that woke us may ask for fewer threads */
        if (j && tid < j->nt) run_pieces(j, tid);
        atomic_fetch_sub(&active, 1);
        idle_since = now_ns();
    }
    return NULL;
}

/* Start workers 1 .. nt-1 if needed; returns how many threads can take part. */
static int ensure_workers(int nt)
{
    if (nt - 1 > MAX_WORKERS) nt = MAX_WORKERS + 1;
    pthread_mutex_lock(&mu);
    while (workers < nt - 1) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_cond_init(&sleeper[workers + 1].wake, NULL);
        atomic_init(&sleeper[workers + 1].asleep, 0);
        int err = pthread_create(&t, &attr, worker_main, (void *)(ptrdiff_t)(workers + 1));
        pthread_attr_destroy(&attr);
        if (err) break;
        workers++;
    }
    const int have = workers + 1;
    pthread_mutex_unlock(&mu);
    return have < nt ? have : nt;
}

int cy_parallel_for(long n, int nt, cy_task_fn fn, void *ctx)
{
    if (n <= 0) return 1;
    if (nt > n) nt = (int)n;
    if (nt > 1 && pthread_mutex_trylock(&busy) != 0) nt = 1;   /* busy or nested: serial */
    if (nt > 1) {
        nt = ensure_workers(nt);
        if (nt <= 1) pthread_mutex_unlock(&busy);
    }
    if (nt <= 1) {
        for (long i = 0; i < n; i++) fn(ctx, i, 0);
        return 1;
    }
    job_t j;
    j.fn = fn;
    j.ctx = ctx;
    j.n = n;
    j.nt = nt;
    atomic_init(&j.done, 0);
    for (int t = 0; t < nt; t++) {
        atomic_init(&j.block[t].next, t * n / nt);
        j.block[t].end = (t + 1) * n / nt;
    }
    atomic_store(&current, &j);
    atomic_store(&want, nt);
    atomic_fetch_add(&gen, 1);      /* after want and job: a worker reads them next */
    for (int t = 1; t < nt; t++) {  /* wake the wanted sleepers (see the top) */
        if (atomic_load(&sleeper[t].asleep)) {
            pthread_mutex_lock(&mu);
            pthread_cond_signal(&sleeper[t].wake);
            pthread_mutex_unlock(&mu);
        }
    }

    run_pieces(&j, 0);
    /* pieces still running on workers: spin briefly, then yield the core (the worker we
     * wait for may be queued behind us on it) */
    for (long spins = 0; atomic_load(&j.done) < n; spins++) {
        if (spins < 4000) cpu_relax();
        else sched_yield();
    }
    atomic_store(&current, (job_t *)NULL);
    for (long spins = 0; atomic_load(&active) > 0; spins++) {
        if (spins < 4000) cpu_relax();
        else sched_yield();
    }
    pthread_mutex_unlock(&busy);
    return nt;
}
