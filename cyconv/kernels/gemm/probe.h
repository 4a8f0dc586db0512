/* Cross-core round trip, for benchmarks: how long a cache line takes to go from one core to
 * another and back, which on a cloud VM depends on where the host has put its vCPUs (on the
 * 2-vCPU machines these benchmarks run on: ~60 ns when both share a core complex's L3,
 * ~330 ns when they sit on different dies, switching every few seconds to minutes).
 *
 *   cy_round_trip_ns(rounds)  median over `rounds` (>= 1) ping-pongs between the caller and
 *                             a thread started for the call and joined before it returns
 *                             (nothing is left spinning to disturb what runs next); -1 if
 *                             the thread cannot be started.
 */
#ifndef CYCONV_PROBE_H
#define CYCONV_PROBE_H

double cy_round_trip_ns(int rounds);

#endif
