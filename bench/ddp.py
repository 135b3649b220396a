"""Training throughput of DDP (`ddp_ctx`, 07b_distributed): images/s with 1 process against N, launched by torchrun.

Each run trains the 4x4-grid detector (ResNet18, 128 px, float32) on easy shapes for `--steps` timed steps after
`--warmup` untimed ones, `--bs` images per process (so the global batch grows with the processes, as under
`ssd-tutorial train`). On the CPU the cores are shared: 1 process gets all `--threads` threads, N processes
`threads // N` each (2 cores: 1 x 2 threads against 2 x 1). On CUDA one process per GPU, 1 to all the GPUs.
Prints a row per run and the scaling efficiency: (images/s with N) / (N x images/s with 1).
Usage: python bench/ddp.py [--nprocs 1 2] [--steps 8] [--warmup 2] [--bs 16] [--threads 2] [--quick]"""
import argparse, json, os, sys, time, torch
from pathlib import Path

def worker(a):
    "Run inside each process: time `a.steps` training steps; process 0 prints one JSON line."
    from fastai.vision.all import Learner, Callback, CancelFitException
    from fastai.torch_core import rank_distrib
    from ssd_tutorial.all import init_distrib, first_on_rank0, get_shapes, read_voc, SHAPES, get_dls, grid_model, stage_priors, make_loss, ddp_ctx
    world = init_distrib(timeout=300)
    n = a.bs * world * (a.steps + a.warmup)   # enough images that no epoch ends while timing
    path = first_on_rank0(get_shapes, n, 8, 128, 0, 'easy', progress=False)
    dls = get_dls(read_voc(path, 'train', SHAPES), read_voc(path, 'val', SHAPES), SHAPES, size=128, bs=a.bs)
    model = grid_model(len(SHAPES), backbone='resnet18', size=128)
    anchors, gs = stage_priors('grid4x4', model, 128)
    class Clock(Callback):
        def before_batch(self):
            if self.learn.train_iter == a.warmup:
                if torch.cuda.is_available(): torch.cuda.synchronize()
                self.t0 = time.perf_counter()
        def after_batch(self):
            if self.learn.train_iter == a.warmup + a.steps:
                if torch.cuda.is_available(): torch.cuda.synchronize()
                self.secs = time.perf_counter() - self.t0; raise CancelFitException()
    learn = Learner(dls, model, loss_func=make_loss('bce', len(SHAPES), anchors, gs), cbs=[clock := Clock()])
    with learn.no_logging(), learn.no_bar(), ddp_ctx(learn): learn.fit(1, 1e-3)
    if rank_distrib() == 0:
        print('BENCH', json.dumps(dict(processes=world, threads=torch.get_num_threads(), global_batch=a.bs * world, secs=clock.secs,
                                       img_s=a.bs * world * a.steps / clock.secs)), flush=True)

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    cuda = torch.cuda.is_available()
    p.add_argument('--nprocs', type=int, nargs='+', default=list(range(1, torch.cuda.device_count() + 1)) if cuda else [1, 2])
    p.add_argument('--steps', type=int, default=8); p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--bs', type=int, default=16); p.add_argument('--threads', type=int, default=os.cpu_count())
    p.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    p.add_argument('--quick', action='store_true', help='one small case, to check that the script still runs (the tests run it so)')
    a = p.parse_args()
    if a.quick: a.nprocs, a.steps, a.warmup, a.bs = [1], 1, 0, 2
    if a.worker: return worker(a)
    from ssd_tutorial.distributed import torchrun
    print(f"{'cuda: ' + torch.cuda.get_device_name() if cuda else f'cpu: {os.cpu_count()} cores'}; grid4x4 ResNet18 128 px, float32, batch {a.bs} per process, {a.steps} timed steps")
    rows = []
    for n in a.nprocs:
        args = [__file__, '--worker', '--steps', a.steps, '--warmup', a.warmup, '--bs', a.bs]
        res = torchrun(args, nproc=n, threads=1 if cuda else max(1, a.threads // n), timeout=600)
        lines = [l for l in res.stdout.splitlines() if l.startswith('BENCH ')]
        if res.returncode or not lines: sys.exit(f'{n} processes failed:\n{res.stdout[-3000:]}')
        r = json.loads(lines[0].split(' ', 1)[1]); rows.append(r)
        eff = r['img_s'] / (n * rows[0]['img_s']) if rows[0]['processes'] == 1 else float('nan')
        print(f"{n} process{'es' * (n > 1)} x {r['threads']} thread{'s' * (r['threads'] > 1)}: global batch {r['global_batch']}, "
              f"{r['img_s']:.1f} images/s, scaling efficiency {eff:.2f}")

if __name__ == '__main__': main()
