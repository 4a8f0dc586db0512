/* CY_CLONES: compile a function for AVX-512 (x86-64-v4) and AVX2+FMA (x86-64-v3) as well as
 * the baseline ISA, the loader picking the best once (GCC target_clones, an ifunc). For plain
 * C loops the compiler vectorises (transforms, strided copies), which the baseline build
 * (SSE2: 4 lanes, no FMA) would leave 4x short; the package is never built with
 * -march=native. Other compilers and platforms get the baseline version only. */
#ifndef CYCONV_CLONES_H
#define CYCONV_CLONES_H

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__x86_64__) && \
    defined(__ELF__)
#define CY_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CY_CLONES
#endif

#endif
