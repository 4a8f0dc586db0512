/* cy_parallel_for: see pool.h for the contract and the reason it exists.
 *
 * Synchronisation (all atomics sequentially consistent):
 *   caller: publish job and want -> bump generation -> broadcast under the mutex -> claim
 *           pieces -> wait until done == n -> job = NULL -> wait until active == 0 -> return
 *   worker: spin, then sleep, until the generation changes -> read want -> active++ -> read
 *           job -> claim pieces -> active-- -> spin
 * A spinning worker never touches the mutex: it only sleeps on (and so locks) it after its
 * spin budget. (Before, a worker that saw the new generation locked the mutex to read want
 * while the caller could still hold it for the broadcast, a contention that sends the
 * worker to sleep in the kernel; a fork microbenchmark, 2-8 pieces of 4-40 us, measured the
 * same either way on this VM, so this is robustness, not a measured gain.) A sleeper checks
 * the generation under the mutex and the caller broadcasts under it after the bump, so no
 * wake-up is lost.
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

typedef struct {
    cy_task_fn fn;
    void *ctx;
    long n;
    int nt;
    atomic_long next;        /* next piece to claim */
    atomic_long done;        /* pieces finished */
} job_t;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;      /* sleepers' wait on gen;
                                                               workers */
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
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

static void run_pieces(job_t *j, int tid)
{
    for (;;) {
        long i = atomic_fetch_add(&j->next, 1);
        if (i >= j->n) return;
        j->fn(j->ctx, i, tid);
        atomic_fetch_add(&j->done, 1);
    }
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

/* Spin until the generation moves past seen or the budget is spent; 1 if it moved. */
static int spin_for_job(unsigned long seen)
{
    const long budget = spin_budget_ns();
    if (budget <= 0) return 0;
    const long start = now_ns();
    for (;;) {
        for (int i = 0; i < 64; i++) {
            if (atomic_load_explicit(&gen, memory_order_acquire) != seen) return 1;
            cpu_relax();
        }
        if (now_ns() - start > budget) return 0;
    }
}

static void *worker_main(void *arg)
{
    const int tid = (int)(ptrdiff_t)arg;
    unsigned long seen = atomic_load(&gen);
    for (;;) {
        if (atomic_load(&gen) == seen && !spin_for_job(seen)) {
            pthread_mutex_lock(&mu);
            while (atomic_load(&gen) == seen) pthread_cond_wait(&wake, &mu);
            pthread_mutex_unlock(&mu);
        }
        seen = atomic_load(&gen);
        if (tid < atomic_load(&want)) {
            atomic_fetch_add(&active, 1);
            job_t *j = atomic_load(&current);
            /* a later job than the one that woke us may ask for fewer threads */
            if (j && tid < j->nt) run_pieces(j, tid);
            atomic_fetch_sub(&active, 1);
        }
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
    atomic_init(&j.next, 0);
    atomic_init(&j.done, 0);
    atomic_store(&current, &j);
    atomic_store(&want, nt);
    atomic_fetch_add(&gen, 1);      /* after want and job: a worker reads them next */
    pthread_mutex_lock(&mu);        /* sleepers check gen under mu: none misses the bump */
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&mu);

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
