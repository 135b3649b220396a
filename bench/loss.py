"""Batched `SigmoidL1Loss` against the per-image loop of the 02b_grid_loss notebook, in the same run.

bs 64, 1-10 objects per image, 16, 189 and 8732 anchors; CPU, and CUDA when present. Prints the time per call of
each and the speed-up (loop time / batched time), forward and backward together; and the batched loss with its class
loss in one call instead of cache-sized groups of images (`_conf_sum`, "Making it fast" in 02d_grid_train), with that
speed-up. `--out FILE` also keeps the table in FILE (bench/loss.md).
Usage: python bench/loss.py [--reps N] [--out bench/loss.md]"""
import argparse, torch, torch.nn.functional as F
from ssd_tutorial.boxes import *
from ssd_tutorial.anchors import *
from ssd_tutorial.model import *
from ssd_tutorial.loss import *
from ssd_tutorial.checkpoint import *
from ssd_tutorial.decode import *
import ssd_tutorial.loss as loss_mod
from _timing import timeit, report

def ssd_1_loss(b_c, b_bb, bbox, clas, anchors, cell_size, thresh=.4):
    "The per-image loss exactly as taught in nbs/02b_grid_loss.ipynb."
    keep = (bbox[:, 2] - bbox[:, 0]) > 0
    bbox, clas = (bbox[keep] + 1) / 2, clas[keep]
    n_cls = b_c.shape[1] - 1
    a_ic = actn_to_bb(b_bb, anchors, cell_size)
    if len(bbox) == 0: gt_clas, loc = torch.zeros(len(anchors), dtype=torch.long, device=b_c.device), b_bb.sum() * 0
    else:
        _, gt_idx, pos = map_to_ground_truth(box_iou(bbox, cthw2tlbr(anchors)), thresh)
        gt_clas = torch.where(pos, clas[gt_idx], 0)
        loc = (a_ic[pos] - bbox[gt_idx][pos]).abs().mean()
    target = F.one_hot(gt_clas, n_cls + 1)[:, 1:].float()
    return loc, F.binary_cross_entropy_with_logits(b_c[:, 1:], target, reduction='sum') / n_cls

def loop_loss(pred, bboxes, labels, anchors, cell_size):
    return sum(sum(ssd_1_loss(c, b, bb, l, anchors, cell_size)) for c, b, bb, l in zip(*pred, bboxes, labels))

def make_anchors(n):
    "`n` anchors: the 4x4 grid for 16, else square anchors of random centres and sizes (only the count matters here)."
    if n == 16: return grid_anchors(4), .25
    g = torch.Generator().manual_seed(0)
    a = torch.cat([torch.rand(n, 2, generator=g), torch.rand(n, 2, generator=g) * .5 + .05], 1)
    return a, a[:, 2:3].clone()

def make_batch(bs, n_cls=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = torch.randint(1, 11, (bs,), generator=g)
    xy = torch.rand(bs, 10, 2, generator=g) * .7; wh = torch.rand(bs, 10, 2, generator=g) * .3 + .02
    bb = torch.cat([xy, xy + wh], -1) * 2 - 1
    lb = torch.randint(1, n_cls + 1, (bs, 10), generator=g)
    pad = torch.arange(10)[None] >= n[:, None]
    bb[pad], lb[pad] = 0., 0
    return bb, lb

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0]); p.add_argument('--reps', type=int, default=5)
    p.add_argument('--out', help='also keep the table in this markdown file')
    p.add_argument('--quick', action='store_true', help='one small case, to check that the script still runs (the tests run it so)')
    args = p.parse_args()
    with report(args.out): run(args)

def run(args):
    devs = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
    bs, sizes = (4, (16,)) if args.quick else (64, (16, 189, 8732))
    print(f'torch {torch.__version__}, {torch.get_num_threads()} CPU threads; bs {bs}, 20 classes, 1-10 objects per image')
    print(f'{"device":6} {"anchors":>7} {"loop ms":>9} {"batched ms":>11} {"speed-up":>9} {"one-call ms":>12} {"groups speed-up":>16}')
    for dev in devs:
        sync = torch.cuda.synchronize if dev == 'cuda' else (lambda: None)
        bb, lb = (t.to(dev) for t in make_batch(bs))
        for n in sizes:
            anc, gs = make_anchors(n)
            anc = anc.to(dev); gs = gs.to(dev) if isinstance(gs, torch.Tensor) else gs
            clas = torch.randn(bs, n, 21, device=dev, requires_grad=True); bbox = torch.randn(bs, n, 4, device=dev, requires_grad=True)
            lf = SigmoidL1Loss(anc, gs)
            a, b = loop_loss((clas, bbox), bb, lb, anc, gs), lf((clas, bbox), bb, lb)
            assert torch.allclose(a, b, rtol=1e-4), (a, b)
            t_loop = timeit(lambda: loop_loss((clas, bbox), bb, lb, anc, gs).backward(), args.reps, sync)
            t_bat = timeit(lambda: lf((clas, bbox), bb, lb).backward(), args.reps, sync)
            fast, loss_mod._conf_sum = loss_mod._conf_sum, lambda f, c, g: f(c, g)     # the class loss in one call
            try:
                assert torch.allclose(lf((clas, bbox), bb, lb), b, rtol=1e-4)
                t_one = timeit(lambda: lf((clas, bbox), bb, lb).backward(), args.reps, sync)
            finally: loss_mod._conf_sum = fast
            print(f'{dev:6} {n:7d} {t_loop * 1e3:9.2f} {t_bat * 1e3:11.2f} {t_loop / t_bat:8.1f}x {t_one * 1e3:12.2f} {t_one / t_bat:15.1f}x')

if __name__ == '__main__': main()
