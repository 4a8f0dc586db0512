/* cy_round_trip_ns: see probe.h. The two threads take turns on one cache line: the caller
 * stores 2k+1 and waits for 2k+2, the partner waits for 2k+1 and stores 2k+2. Rounds are timed
 * in batches of 16 (a clock read costs about as much as a near round trip) and the median batch
 * is reported, so a preemption of either thread counts once, not in the result. */
#include "probe.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#define BATCH 16

typedef struct {
    _Alignas(64) atomic_long turn;
    long rounds;
} line_t;

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void *partner(void *arg)
{
    line_t *l = (line_t *)arg;
    for (long k = 0; k < l->rounds; k++) {
        while (atomic_load_explicit(&l->turn, memory_order_acquire) != 2 * k + 1) cpu_relax();
        atomic_store_explicit(&l->turn, 2 * k + 2, memory_order_release);
    }
    return NULL;
}

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static int by_value(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double cy_round_trip_ns(int rounds)
{
    const int batches = rounds < BATCH ? 1 : rounds / BATCH;
    double *per = (double *)malloc(sizeof(double) * (size_t)batches);
    line_t *l = (line_t *)aligned_alloc(64, sizeof(line_t));
    if (!per || !l) {
        free(per);
        free(l);
        return -1.0;
    }
    atomic_init(&l->turn, 0);
    l->rounds = (long)batches * BATCH + BATCH;      /* the first batch warms up */
    pthread_t t;
    if (pthread_create(&t, NULL, partner, l) != 0) {
        free(per);
        free(l);
        return -1.0;
    }
    long k = 0;
    for (int b = -1; b < batches; b++) {
        const double start = now_ns();
        for (int i = 0; i < BATCH; i++, k++) {
            atomic_store_explicit(&l->turn, 2 * k + 1, memory_order_release);
            while (atomic_load_explicit(&l->turn, memory_order_acquire) != 2 * k + 2)
                cpu_relax();
        }
        if (b >= 0) per[b] = (now_ns() - start) / BATCH;
    }
    pthread_join(t, NULL);
    qsort(per, (size_t)batches, sizeof(double), by_value);
    const double median = per[batches / 2];
    free(per);
    free(l);
    return median;
}
