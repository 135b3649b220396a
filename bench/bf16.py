"""Training step time in bfloat16 mixed precision (`BF16Training`: autocast + channels-last) against float32, same run.

One fastai training step (forward, the loss, backward, Adam) of each stage's model, ResNet18 at the stage's input size
(128 px; 300 for ssd), batch 32, on a fixed batch of easy shapes images; the two precisions alternate so machine noise hits both alike. Prints the
seconds per step of each and the speed-up (float32 time / bfloat16 time), on CUDA when present, else on the CPU.
`--out FILE` also keeps the table in FILE (bench/bf16.md).
Usage: python bench/bf16.py [--reps N] [--stages grid4x4 multigrid ssd] [--loss bce|focal|multibox] [--out bench/bf16.md]"""
import argparse, copy, torch
from fastai.vision.all import Learner
from ssd_tutorial.all import *
from ssd_tutorial.train import STAGES, BF16Training, bf16_native, stage_priors, make_loss
from _timing import timeit, report

def stepper(learn):
    "A callable doing one training step of `learn` on a fixed batch, through fastai's batch loop and callbacks."
    learn.remove_cbs([cb for cb in learn.cbs if type(cb).__name__ in ('Recorder', 'ProgressCallback')])  # no logging
    learn.create_opt(); learn.n_epoch = learn.n_iter = 1
    learn('before_fit'); learn('before_train')  # BF16Training sets up autocast and channels-last in before_fit
    batch = learn.dls.train.one_batch()
    return lambda: learn.one_batch(0, batch)

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--reps', type=int, default=5)
    p.add_argument('--stages', nargs='+', default=['grid4x4', 'multigrid'])
    p.add_argument('--loss', default='bce')
    p.add_argument('--out', help='also keep the table in this markdown file')
    p.add_argument('--quick', action='store_true', help='one small case, to check that the script still runs (the tests run it so)')
    a = p.parse_args()
    if a.quick: a.reps, a.stages, a.rounds, a.bs = 1, ['grid4x4'], 1, 4
    with report(a.out): run(a)

def run(a):
    dev = 'cuda' if torch.cuda.is_available() else 'cpu'
    path = get_shapes(64, 16, size=128, difficulty='easy', progress=False)
    sync = torch.cuda.synchronize if dev == 'cuda' else (lambda: None)
    print(f'{dev}: {torch.cuda.get_device_name() if dev == "cuda" else f"{torch.get_num_threads()} threads"}, '
          f'bfloat16 native: {bf16_native(dev)}, torch {torch.__version__}')
    for stage in a.stages:
        st = STAGES[stage]
        dls = get_dls(read_voc(path, 'train', SHAPES), read_voc(path, 'val', SHAPES), SHAPES, size=st['size'], bs=getattr(a, 'bs', 32), device=dev)
        torch.manual_seed(0); model = st['model'](len(SHAPES), backbone='resnet18', size=st['size'])
        loss = make_loss(a.loss, len(SHAPES), *stage_priors(stage, model, st['size']))
        steps = {name: stepper(Learner(dls, copy.deepcopy(model).to(dev), cbs=cbs, loss_func=loss))
                 for name, cbs in (('float32', []), ('bfloat16', [BF16Training()]))}
        times = {name: [] for name in steps}
        for _ in range(getattr(a, 'rounds', 3)):   # alternate the precisions
            for name, step in steps.items(): times[name].append(timeit(step, a.reps, sync))
        t32, t16 = min(times['float32']), min(times['bfloat16'])
        print(f'{stage:10s} {a.loss:8s} float32 {t32 * 1000:7.1f} ms/step   bfloat16 {t16 * 1000:7.1f} ms/step   speed-up {t32 / t16:.2f}x')

if __name__ == '__main__': main()
