/* CPU and wall time of one short nanosleep on this machine (the cost of each coalescing
 * wait, BENCHMARKS.md). Build and run pinned like the proxy:
 *   cc -O2 -o /tmp/sleep_cost perf/sleep_cost.c && taskset -c 0 /tmp/sleep_cost 50 5000
 * Arguments: sleep length in µs, number of sleeps. Timer slack 1 µs, as ringway sets it
 * while it coalesces. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <time.h>

static double ns(struct timespec a, struct timespec b) {
    return (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
}

int main(int argc, char **argv) {
    long us = argc > 1 ? atol(argv[1]) : 50;
    int n = argc > 2 ? atoi(argv[2]) : 5000;
    prctl(PR_SET_TIMERSLACK, 1000, 0, 0, 0);
    struct timespec req = {0, us * 1000}, w0, w1, c0, c1;
    clock_gettime(CLOCK_MONOTONIC, &w0);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
    for (int i = 0; i < n; i++)
        nanosleep(&req, NULL);
    clock_gettime(CLOCK_MONOTONIC, &w1);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
    printf("sleep %ld us: wall %.1f us, cpu %.2f us per sleep\n", us, ns(w0, w1) / n / 1e3, ns(c0, c1) / n / 1e3);
    return 0;
}
