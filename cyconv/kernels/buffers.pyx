# cython: language_level=3
"""Large activation buffers kept and handed out again instead of returned to the OS.

numpy allocates an array's data with malloc; glibc serves blocks above its mmap threshold
(at most 32 MiB) with a fresh mmap and unmaps them on free. A batch-8 MobileNetV2 writes a
38.5 MiB tensor every run: every run then faulted its pages in again and the kernel zeroed
them (a third of that layer's time in ``clear_page``). While a session runs it installs
this module's numpy memory handler (``PyDataMem_SetHandler``, scoped to the calling thread's
context and restored afterwards): blocks of at least ``MIN_CACHED_BYTES`` (32 MiB) freed during or after a
run are kept in a per-session cache keyed by their exact size, and the next run's arrays of
that size reuse them. Every run of one input shape allocates the same sizes, so from the
second run on its big tensors never fault. The cache keeps at most ``limit`` bytes (oldest
blocks go first); smaller arrays go straight to malloc/free.

Arrays keep a reference to the handler that allocated them (numpy stores it on the array),
so a cache lives as long as any array it handed out; then its blocks are freed.
"""
from cpython.pycapsule cimport PyCapsule_New, PyCapsule_GetPointer
from libc.stdlib cimport malloc, calloc, realloc, free
from libc.string cimport memset, strncpy
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

cdef enum:
    # Arrays below 32 MiB, glibc's largest mmap threshold, are served from its heap once a
    # block of their size has been freed (the threshold adapts): no faults to save there,
    # and caching them would only hold memory that the heap could reuse for other sizes.
    MIN_BYTES = 32 << 20
    SLOTS = 64

MIN_CACHED_BYTES = MIN_BYTES

cdef struct Cache:
    pthread_mutex_t lock
    void* block[SLOTS]       # free blocks, oldest first
    size_t size[SLOTS]
    int count
    size_t held, limit       # bytes in the cache, its bound


cdef Cache* _cache_new(size_t limit) noexcept nogil:
    cdef Cache* c = <Cache*>calloc(1, sizeof(Cache))
    if c != NULL:
        pthread_mutex_init(&c.lock, NULL)
        c.limit = limit
    return c


cdef void _drop_oldest(Cache* c) noexcept nogil:
    # caller holds the lock; c.count > 0
    cdef int i
    free(c.block[0])
    c.held -= c.size[0]
    for i in range(1, c.count):
        c.block[i - 1] = c.block[i]
        c.size[i - 1] = c.size[i]
    c.count -= 1


cdef void* _take(Cache* c, size_t size) noexcept nogil:
    # a cached block of exactly this size (the newest: warmest in cache), or NULL
    cdef int i, j
    cdef void* p = NULL
    pthread_mutex_lock(&c.lock)
    i = c.count - 1
    while i >= 0:
        if c.size[i] == size:
            p = c.block[i]
            c.held -= size
            for j in range(i + 1, c.count):
                c.block[j - 1] = c.block[j]
                c.size[j - 1] = c.size[j]
            c.count -= 1
            break
        i -= 1
    pthread_mutex_unlock(&c.lock)
    return p


cdef void* _malloc(void* ctx, size_t size) noexcept nogil:
    cdef void* p = NULL
    if size >= MIN_BYTES:
        p = _take(<Cache*>ctx, size)
    return p if p != NULL else malloc(size if size > 0 else 1)


cdef void* _calloc(void* ctx, size_t nelem, size_t elsize) noexcept nogil:
    cdef size_t size = nelem * elsize
    cdef void* p = NULL
    if elsize != 0 and size / elsize != nelem:
        return NULL
    if size >= MIN_BYTES:
        p = _take(<Cache*>ctx, size)
        if p != NULL:
            memset(p, 0, size)
            return p
    return calloc(nelem if nelem > 0 else 1, elsize if elsize > 0 else 1)


cdef void* _realloc(void* ctx, void* ptr, size_t new_size) noexcept nogil:
    return realloc(ptr, new_size if new_size > 0 else 1)


cdef void _free(void* ctx, void* ptr, size_t size) noexcept nogil:
    cdef Cache* c = <Cache*>ctx
    if ptr == NULL:
        return
    if size < MIN_BYTES or size > c.limit:
        free(ptr)
        return
    pthread_mutex_lock(&c.lock)
    while c.count > 0 and (c.count == SLOTS or c.held + size > c.limit):
        _drop_oldest(c)
    c.block[c.count] = ptr
    c.size[c.count] = size
    c.count += 1
    c.held += size
    pthread_mutex_unlock(&c.lock)


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
