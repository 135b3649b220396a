"""Is the device fed? DataLoader images/s, training-step images/s on a synthetic batch, and a real epoch's images/s, one run.

For one stage, input size, backbone and batch size on the device at hand (CUDA when present, else the CPU):
1. DataLoader: batches of the training DataLoader (`get_dls`, shapes drawn at the stage's input size, as
   `ssd-tutorial train` makes them) iterated and put on the device, no model: images/s, for each worker count asked.
2. Step: one fastai training step (forward, loss, backward, optimiser) on one fixed batch already on the device,
   repeated: the most the model can train, images/s.
3. Epoch: `train_detector` for one epoch on `--n-train` images with its default workers (`default_workers()`), the training phase timed
   alone (validation left out): images/s, and epoch/step, the share of the step's speed a real epoch reaches.
   An epoch below the step means the GPU waits for data (or Python); on a CPU the step bounds everything.
bfloat16 where the device has it natively (`--fp32` turns it off). `--quick`: a tiny case that checks the script runs.
Usage: python bench/train_speed.py [--stage ssd] [--size 300] [--backbone resnet34] [--bs 32] [--n-train 512]
                                   [--workers 0 8] [--loss multibox] [--fp32] [--out bench/train_speed.md] [--quick]"""
import argparse, contextlib, io, time, torch
from fastai.vision.all import Learner, Callback
from ssd_tutorial.data import get_shapes, read_voc, get_dls, SHAPES
from ssd_tutorial.train import STAGES, BF16Training, bf16_native, stage_priors, make_loss, train_detector, default_workers
from _timing import timeit, report

def loader_speed(dls, n_batches:int, sync)->float:
    "Images/s of iterating the training DataLoader (its batches on the device), after one warm-up batch."
    it = iter(dls.train); next(it); sync()
    t, n = time.perf_counter(), 0
    for _ in range(n_batches):
        b = next(it, None)
        if b is None: break
        n += len(b[0])
    sync()
    return n / (time.perf_counter() - t)

def step_speed(dls, model, loss, bf16:bool, reps:int, sync)->float:
    "Images/s of one fastai training step on a fixed batch (data loading left out)."
    learn = Learner(dls, model, loss_func=loss, cbs=[BF16Training()] if bf16 else [])
    learn.remove_cbs([cb for cb in learn.cbs if type(cb).__name__ in ('Recorder', 'ProgressCallback')])
    learn.create_opt(); learn.n_epoch = learn.n_iter = 1
    learn('before_fit'); learn('before_train')
    batch = dls.train.one_batch()
    return len(batch[0]) / timeit(lambda: learn.one_batch(0, batch), reps, sync)

class _TrainClock(Callback):
    "Seconds of the training phase of the first epoch (validation left out)."
    order = 100
    def before_train(self):
        if self.epoch == 0: self.sync(); self.t0 = time.perf_counter()
    def after_train(self):
        if self.epoch == 0: self.sync(); self.secs, self.n = time.perf_counter() - self.t0, self.n_iter * self.dls.train.bs

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--stage', default='ssd', choices=list(STAGES)); p.add_argument('--size', type=int, default=None)
    p.add_argument('--backbone', default='resnet34'); p.add_argument('--loss', default='multibox')
    p.add_argument('--bs', type=int, default=32); p.add_argument('--n-train', type=int, default=512)
    p.add_argument('--workers', type=int, nargs='+', default=None, help='worker counts of the DataLoader row (default: 0 and default_workers())')
    p.add_argument('--reps', type=int, default=5); p.add_argument('--fp32', action='store_true')
    p.add_argument('--out', help='also keep the table in this markdown file')
    p.add_argument('--quick', action='store_true', help='one small case, to check that the script still runs (the tests run it so)')
    a = p.parse_args()
    if a.quick: a.stage, a.size, a.backbone, a.loss, a.bs, a.n_train, a.reps, a.workers = 'grid4x4', 128, 'resnet18', 'bce', 4, 8, 1, [0]
    with report(a.out): run(a)

def run(a):
    dev = 'cuda' if torch.cuda.is_available() else 'cpu'
    sync = torch.cuda.synchronize if dev == 'cuda' else (lambda: None)
    size = a.size or STAGES[a.stage]['size']
    bf16 = not a.fp32 and bf16_native(dev)
    workers = a.workers if a.workers is not None else sorted({0, default_workers(dev)})
    print(f"{dev}: {torch.cuda.get_device_name() if dev == 'cuda' else f'{torch.get_num_threads()} threads'}; {a.stage} {a.backbone} {size} px, "
          f"{a.loss} loss, bs {a.bs}, {'bfloat16' if bf16 else 'float32'}; shapes drawn at {size} px; default workers here: {default_workers(dev)}")
    path = get_shapes(a.n_train, 16, size=size, difficulty='easy', progress=False)
    train, valid = read_voc(path, 'train', SHAPES), read_voc(path, 'val', SHAPES)
    n_batches = max(1, min(len(train) // a.bs - 1, 20))
    for w in workers:
        dls = get_dls(train, valid, SHAPES, size=size, bs=a.bs, num_workers=w)
        print(f'DataLoader, {w} worker{"s" * (w != 1)}: {loader_speed(dls, n_batches, sync):8.1f} images/s')
    dls = get_dls(train, valid, SHAPES, size=size, bs=a.bs)
    torch.manual_seed(0)
    model = STAGES[a.stage]['model'](len(SHAPES), backbone=a.backbone, size=size).to(dev)
    step = step_speed(dls, model, make_loss(a.loss, len(SHAPES), *stage_priors(a.stage, model, size), STAGES[a.stage]['per_positive']), bf16, a.reps, sync)
    print(f'training step, synthetic batch: {step:8.1f} images/s')
    w = default_workers(dev)   # what `train_detector` and `ssd-tutorial train` use here
    clock = _TrainClock(); clock.sync = sync
    from fastai.learner import Learner as L_
    orig = L_.fit_one_cycle
    def fit(self, *args, **kw): self.add_cb(clock); return orig(self, *args, **kw)
    L_.fit_one_cycle = fit
    try:
        with contextlib.redirect_stdout(io.StringIO()):   # fastai's progress bar and table stay out of the report
            train_detector(train, valid, SHAPES, a.stage, size=size, bs=a.bs, epochs=1, lr=1e-3, backbone=a.backbone, loss=a.loss, bf16=bf16, workers=w)
    finally: L_.fit_one_cycle = orig
    epoch = clock.n / clock.secs
    print(f'real epoch, {w} worker{"s" * (w != 1)}: {epoch:8.1f} images/s ({clock.n} images in {clock.secs:.1f} s)')
    print(f'epoch / step: {epoch / step:.2f}')

if __name__ == '__main__': main()
