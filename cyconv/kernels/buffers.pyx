# cython: language_level=3
"""Activation buffers kept and handed out again instead of returned to the OS.

numpy allocates an array's data with malloc. glibc serves blocks above its mmap threshold
(adaptive, 128 KiB to 32 MiB) with a fresh mmap and unmaps them on free, and trims the top of
its heap when more than twice that is free: either way the next run's tensors fault their
pages in again and the kernel zeroes them. A batch-8 MobileNetV2 took about 7000 page faults
per run that way (its 2-38 MiB tensors), and a third of its largest 1x1 layer went to
``clear_page``. While a session runs it installs this module's numpy memory handler
(``PyDataMem_SetHandler``, scoped to the calling thread's context and restored afterwards):
blocks of at least ``MIN_CACHED_BYTES`` (1 MiB) freed during or after a run are kept in a
per-session cache, and the next request that fits one (a block of at least the size asked for
and at most twice it, the smallest such, the newest among equals) reuses it. Every run of one
input shape makes the same requests, so from the second run on no tensor faults; reusing a
larger block for a smaller tensor keeps the cache from holding one idle block per distinct
size (batch-8 MobileNetV2: peak RSS 213 MiB with exact sizes only, ORT 189). The cache keeps
at most ``limit`` bytes (oldest blocks go first); smaller arrays go straight to malloc/free.

Every block carries a 64-byte header with its capacity (numpy's free passes the size that was
asked for, its realloc none), so the payload stays 64-byte aligned, as AVX-512 loads like.

Arrays keep a reference to the handler that allocated them (numpy stores it on the array),
so a cache lives as long as any array it handed out; then its blocks are freed.
"""
from cpython.pycapsule cimport PyCapsule_New, PyCapsule_GetPointer
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memset, memcpy, strncpy
from libc.stdint cimport uint8_t
cimport numpy as cnp

cnp.import_array()

cdef extern from "numpy/arrayobject.h":
    ctypedef struct PyDataMemAllocator:
        void* ctx
        void* (*malloc)(void* ctx, size_t size) noexcept nogil
        void* (*calloc)(void* ctx, size_t nelem, size_t elsize) noexcept nogil
        void* (*realloc)(void* ctx, void* ptr, size_t new_size) noexcept nogil
        void (*free)(void* ctx, void* ptr, size_t size) noexcept nogil

    ctypedef struct PyDataMem_Handler:
        char name[127]
        uint8_t version
        PyDataMemAllocator allocator

    object PyDataMem_SetHandler(object handler)

cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    int pthread_mutex_init(pthread_mutex_t* m, void* attr)
    int pthread_mutex_lock(pthread_mutex_t* m)
    int pthread_mutex_unlock(pthread_mutex_t* m)
    int pthread_mutex_destroy(pthread_mutex_t* m)

cdef extern from "<stdlib.h>" nogil:
    void* aligned_alloc(size_t alignment, size_t size)

cdef enum:
    # Below 1 MiB glibc's heap serves and reuses blocks without faulting (they sit under its
    # mmap and trim thresholds); caching them would only hold memory.
    MIN_BYTES = 1 << 20
    SLOTS = 128
    HEADER = 64              # bytes before each payload: its capacity; keeps 64-byte alignment

MIN_CACHED_BYTES = MIN_BYTES

cdef struct Cache:
    pthread_mutex_t lock
    void* block[SLOTS]       # free blocks (payloads), oldest first
    size_t size[SLOTS]       # their capacities
    int count
    size_t held, limit       # bytes in the cache, its bound


cdef Cache* _cache_new(size_t limit) noexcept nogil:
    cdef Cache* c = <Cache*>calloc(1, sizeof(Cache))
    if c != NULL:
        pthread_mutex_init(&c.lock, NULL)
        c.limit = limit
    return c


cdef inline size_t _capacity(void* payload) noexcept nogil:
    return (<size_t*>(<char*>payload - HEADER))[0]


cdef inline void _release(void* payload) noexcept nogil:
    free(<char*>payload - HEADER)


cdef void* _new_block(size_t size) noexcept nogil:
    # a fresh block of capacity round_up(size, 64) (aligned_alloc wants a multiple)
    cdef size_t cap = (size + HEADER - 1) // HEADER * HEADER
    if cap < size or cap + HEADER < cap:
        return NULL
    cdef char* raw = <char*>aligned_alloc(HEADER, cap + HEADER)
    if raw == NULL:
        return NULL
    (<size_t*>raw)[0] = cap
    return raw + HEADER


cdef void _drop_oldest(Cache* c) noexcept nogil:
    # caller holds the lock; c.count > 0
    cdef int i
    _release(c.block[0])
    c.held -= c.size[0]
    for i in range(1, c.count):
        c.block[i - 1] = c.block[i]
        c.size[i - 1] = c.size[i]
    c.count -= 1


cdef void* _take(Cache* c, size_t size) noexcept nogil:
    # the smallest cached block of capacity in [size, 2 size] (the newest among equals:
    # warmest in cache), or NULL
    cdef int i, j, best = -1
    cdef void* p = NULL
    pthread_mutex_lock(&c.lock)
    i = c.count - 1
    while i >= 0:
        if c.size[i] >= size and c.size[i] // 2 <= size and (
                best < 0 or c.size[i] < c.size[best]):
            best = i
        i -= 1
    if best >= 0:
        p = c.block[best]
        c.held -= c.size[best]
        for j in range(best + 1, c.count):
            c.block[j - 1] = c.block[j]
            c.size[j - 1] = c.size[j]
        c.count -= 1
    pthread_mutex_unlock(&c.lock)
    return p


cdef void* _malloc(void* ctx, size_t size) noexcept nogil:
    cdef void* p = NULL
    if size >= MIN_BYTES:
        p = _take(<Cache*>ctx, size)
    return p if p != NULL else _new_block(size)


cdef void* _calloc(void* ctx, size_t nelem, size_t elsize) noexcept nogil:
    cdef size_t size = nelem * elsize
    if elsize != 0 and size / elsize != nelem:
        return NULL
    cdef void* p = _malloc(ctx, size)
    if p != NULL:
        memset(p, 0, size)
    return p


cdef void _free(void* ctx, void* ptr, size_t size) noexcept nogil:
    cdef Cache* c = <Cache*>ctx
    if ptr == NULL:
        return
    cdef size_t cap = _capacity(ptr)
    if cap < MIN_BYTES or cap > c.limit:
        _release(ptr)
        return
    pthread_mutex_lock(&c.lock)
    while c.count > 0 and (c.count == SLOTS or c.held + cap > c.limit):
        _drop_oldest(c)
    c.block[c.count] = ptr
    c.size[c.count] = cap
    c.count += 1
    c.held += cap
    pthread_mutex_unlock(&c.lock)


cdef void* _realloc(void* ctx, void* ptr, size_t new_size) noexcept nogil:
    if ptr == NULL:
        return _malloc(ctx, new_size)
    cdef size_t cap = _capacity(ptr)
    if new_size <= cap and new_size >= cap // 2:
        return ptr
    cdef void* p = _malloc(ctx, new_size)
    if p != NULL:
        memcpy(p, ptr, new_size if new_size < cap else cap)
        _free(ctx, ptr, cap)
    return p


cdef void _destroy(object capsule) noexcept:
    # the capsule goes when the session and every array it allocated are gone
    cdef PyDataMem_Handler* h = <PyDataMem_Handler*>PyCapsule_GetPointer(capsule, "mem_handler")
    cdef Cache* c = <Cache*>h.allocator.ctx
    while c.count > 0:
        _drop_oldest(c)
    pthread_mutex_destroy(&c.lock)
    free(c)
    free(h)


def new_handler(size_t limit):
    """A numpy memory handler (a "mem_handler" capsule) with its own cache of at most
    ``limit`` bytes, for ``PyDataMem_SetHandler``."""
    cdef PyDataMem_Handler* h = <PyDataMem_Handler*>calloc(1, sizeof(PyDataMem_Handler))
    if h == NULL:
        raise MemoryError()
    cdef Cache* c = _cache_new(limit)
    if c == NULL:
        free(h)
        raise MemoryError()
    strncpy(h.name, b"cyconv_buffers", 126)
    h.version = 1
    h.allocator.ctx = c
    h.allocator.malloc = _malloc
    h.allocator.calloc = _calloc
    h.allocator.realloc = _realloc
    h.allocator.free = _free
    return PyCapsule_New(h, "mem_handler", _destroy)


def set_handler(handler):
    """Install ``handler`` for the current context; returns the one it replaces."""
    return PyDataMem_SetHandler(handler)


def cached_bytes(handler):
    """Bytes the handler's cache holds now (tests, diagnostics)."""
    cdef PyDataMem_Handler* h = <PyDataMem_Handler*>PyCapsule_GetPointer(handler, "mem_handler")
    return (<Cache*>h.allocator.ctx).held
