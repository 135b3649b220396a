"Shared by the benchmark scripts: time a callable, with a warm-up call and a device sync; keep what a script printed."
import contextlib, datetime, io, os, platform, sys, time

def timeit(f, reps, sync):
    "Seconds per call of `f`, averaged over `reps` calls after one warm-up call; `sync` waits for the device."
    f(); sync()
    t = time.perf_counter()
    for _ in range(reps): f()
    sync()
    return (time.perf_counter() - t) / reps

@contextlib.contextmanager
def report(out):
    "Print as usual; with `out`, also keep what was printed in the markdown file `out`, under the command and the machine."
    buf = io.StringIO()
    class Tee(io.TextIOBase):
        def write(self, s): sys.__stdout__.write(s); buf.write(s); return len(s)
        def flush(self): sys.__stdout__.flush()
    with contextlib.redirect_stdout(Tee()): yield
    if not out: return
    import torch
    here = os.path.relpath(os.getcwd(), os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cmd = ('' if here == '.' else f'cd {here} && ') + ' '.join(['python', sys.argv[0]] + sys.argv[1:])
    head = (f'`{cmd}` ({datetime.date.today()}; {os.cpu_count()}-core CPU ({platform.machine()}), torch {torch.__version__}; '
            f'written by the script itself)\n\n')
    with open(out, 'w') as f: f.write(head + '```\n' + buf.getvalue() + '```\n')
