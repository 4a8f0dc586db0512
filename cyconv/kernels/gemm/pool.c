/* cy_parallel_for: see pool.h for the contract and the reason it exists.
 *
 * Synchronisation (all atomics sequentially consistent):
 *   caller: publish job -> bump generation under the mutex, broadcast -> claim pieces ->
 *           wait until done == n -> job = NULL -> wait until active == 0 -> return
 *   worker: sleep until the generation changes -> active++ -> read job -> claim pieces
 *           -> active-- -> sleep
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

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;      /* guards gen's writes, want,
                                                               workers */
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static pthread_mutex_t busy = PTHREAD_MUTEX_INITIALIZER;    /* one caller at a time */
static atomic_ulong gen;     /* bumped per job; read without the mutex while spinning */
static int want;             /* threads the current job may use (caller included) */
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
 * 1000 us; 0: sleep at once). A model's ops start their parallel regions microseconds to a
 * few hundred microseconds apart (single-threaded small ops in between), and on these
 * machines waking a sleeping thread costs 50-150 us, more than a small layer's whole work:
 * a 1x1 conv of MobileNetV2 (576 -> 96 at 14x14) took 139 us with the worker spinning and
 * 330 us when it had gone to sleep. MobileNetV2: 9.8 ms with 100 us of spin, 8.5-9.0 with
 * 1 ms. Bounded, so idle threads stop burning a core soon after the last op (ONNX Runtime's
 * workers spin the same way). */
static long spin_ns = -1;

static long spin_budget_ns(void)
{
    if (spin_ns < 0) {
        const char *env = getenv("CYCONV_SPIN_US");
        long us = env && *env ? atol(env) : 1000;
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
    unsigned long seen = 0;
    pthread_mutex_lock(&mu);
    seen = atomic_load(&gen);
    for (;;) {
        if (atomic_load(&gen) == seen) {
            pthread_mutex_unlock(&mu);
            spin_for_job(seen);
            pthread_mutex_lock(&mu);
        }
        while (atomic_load(&gen) == seen) pthread_cond_wait(&wake, &mu);
        seen = atomic_load(&gen);
        const int mine = tid < want;
        pthread_mutex_unlock(&mu);
        if (mine) {
            atomic_fetch_add(&active, 1);
            job_t *j = atomic_load(&current);
            /* a later job than the one that woke us may ask for fewer threads */
            if (j && tid < j->nt) run_pieces(j, tid);
            atomic_fetch_sub(&active, 1);
        }
        pthread_mutex_lock(&mu);
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
    pthread_mutex_lock(&mu);
    want = nt;
    atomic_fetch_add(&gen, 1);      /* after want: a spinning worker reads want next */
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
