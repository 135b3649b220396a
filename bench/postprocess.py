"""Batched `decode_preds` against a per-image, per-class Python loop around the hand-written `nms`, same run.

bs 32, 20 classes, 189 anchors (stage 2) and 8732 anchors (SSD300), score threshold 0.05, NMS IoU 0.45, 100 detections
per image. The fake model outputs have mostly background logits (about -5) and about 1% confident ones, like a
trained detector's. Checks that both give the same detections, then prints the time per batch of each and the
speed-up (loop time / batched time); CPU, and CUDA when present. Also `decode_preds` with torchvision's
`batched_nms` in place of `group_nms` (one shifted float64 `nms` call; "Making it fast" in 05_nms), and that speed-up.
`--out FILE` also keeps the table in FILE (bench/postprocess.md).
Usage: python bench/postprocess.py [--reps N] [--out bench/postprocess.md]"""
import argparse, torch
from ssd_tutorial.anchors import *
from ssd_tutorial.model import *
from ssd_tutorial.loss import *
from ssd_tutorial.checkpoint import *
from ssd_tutorial.decode import *
from _timing import timeit, report
import ssd_tutorial.decode as nms_mod
from torchvision.ops import batched_nms

def make_anchors(n):
    if n == 189: return multi_anchors(), multi_cell_sizes()
    g = torch.Generator().manual_seed(0)
    a = torch.cat([torch.rand(n, 2, generator=g), torch.rand(n, 2, generator=g) * .5 + .02], 1)
    return a, a[:, 2:3].clone()

def fake_preds(bs, A, C, seed=0, p_hot=.01):
    g = torch.Generator().manual_seed(seed)
    clas = torch.randn(bs, A, C + 1, generator=g) * .7 - 5
    hot = torch.rand(bs, A, C + 1, generator=g) < p_hot
    return torch.where(hot, torch.randn(bs, A, C + 1, generator=g) + 1, clas), torch.randn(bs, A, 4, generator=g)

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0]); p.add_argument('--reps', type=int, default=3)
    p.add_argument('--out', help='also keep the table in this markdown file')
    p.add_argument('--quick', action='store_true', help='one small case, to check that the script still runs (the tests run it so)')
    args = p.parse_args()
    with report(args.out): run(args)

def run(args):
    devs = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
    bs, sizes = (4, (189,)) if args.quick else (32, (189, 8732))
    print(f'torch {torch.__version__}, {torch.get_num_threads()} CPU threads; bs {bs}, 20 classes')
    print(f'{"device":6} {"anchors":>7} {"dets/img":>8} {"loop ms":>9} {"batched ms":>11} {"speed-up":>9} {"batched_nms ms":>15} {"group_nms speed-up":>20}')
    for dev in devs:
        sync = torch.cuda.synchronize if dev == 'cuda' else (lambda: None)
        for n in sizes:
            anc, gs = (t.to(dev) for t in make_anchors(n))
            clas, bbox = (t.to(dev) for t in fake_preds(bs, n, 20))
            a, b = decode_loop(clas, bbox, anc, gs), decode_preds(clas, bbox, anc, gs)
            for x, y in zip(a, b):
                assert torch.equal(x['labels'], y['labels'].cpu()) and torch.allclose(x['boxes'], y['boxes'], atol=1e-6), 'detections differ'
            t_loop = timeit(lambda: decode_loop(clas, bbox, anc, gs), args.reps, sync)
            t_bat = timeit(lambda: decode_preds(clas, bbox, anc, gs), args.reps, sync)
            n_det = sum(len(d['scores']) for d in b) / len(b)
            fast, nms_mod.group_nms = nms_mod.group_nms, batched_nms              # torchvision's strategy choice
            try:
                for x, y in zip(b, decode_preds(clas, bbox, anc, gs)): assert torch.equal(x['labels'], y['labels']), 'detections differ'
                t_tv = timeit(lambda: decode_preds(clas, bbox, anc, gs), args.reps, sync)
            finally: nms_mod.group_nms = fast
            print(f'{dev:6} {n:7d} {n_det:8.1f} {t_loop * 1e3:9.1f} {t_bat * 1e3:11.2f} {t_loop / t_bat:8.1f}x {t_tv * 1e3:15.2f} {t_tv / t_bat:19.1f}x')

if __name__ == '__main__': main()
