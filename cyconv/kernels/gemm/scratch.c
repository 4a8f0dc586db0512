/* Per-thread scratch buffers: see scratch.h. */
#include "scratch.h"

#include <pthread.h>
#include <stdlib.h>

typedef struct { float *p; size_t cap; } buffer;
typedef struct { buffer slot[CY_SCRATCH_SLOTS]; } thread_buffers;

static pthread_key_t key;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int key_ok;

static void free_buffers(void *v)
{
    thread_buffers *b = (thread_buffers *)v;
    for (int i = 0; i < CY_SCRATCH_SLOTS; i++) free(b->slot[i].p);
    free(b);
}

static void make_key(void) { key_ok = pthread_key_create(&key, free_buffers) == 0; }

float *cy_thread_scratch(int slot, size_t n)
{
    if (slot < 0 || slot >= CY_SCRATCH_SLOTS) return NULL;
    pthread_once(&once, make_key);
    if (!key_ok) return NULL;
    thread_buffers *b = (thread_buffers *)pthread_getspecific(key);
    if (!b) {
        b = (thread_buffers *)calloc(1, sizeof *b);
        if (!b || pthread_setspecific(key, b) != 0) {
            free(b);
            return NULL;
        }
    }
    buffer *s = &b->slot[slot];
    if (n <= s->cap) return s->p;
    free(s->p);
    s->p = NULL;
    s->cap = 0;
    void *p = NULL;
    size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) return NULL;
    s->p = (float *)p;
    s->cap = n;
    return s->p;
}
