"Shared by the benchmark scripts: time a callable, with a warm-up call and a device sync."
import time

def timeit(f, reps, sync):
    "Seconds per call of `f`, averaged over `reps` calls after one warm-up call; `sync` waits for the device."
    f(); sync()
    t = time.perf_counter()
    for _ in range(reps): f()
    sync()
    return (time.perf_counter() - t) / reps
