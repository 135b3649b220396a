"""TIDE's error breakdown (`tide_errors`) against the AP computation of `evaluate` (VOC07 11-point, VOC all-point and
COCO `coco_map`), on the same detections, same run.

The detections are those of the SSD of 07c_ssd_small on its 160 validation images (`nbs/models/ssd128_multibox.pth`,
128 px, `easy` shapes) when that checkpoint is there; otherwise (and with `--quick`) noisy copies of the objects with
duplicates and false alarms, 100 per image. Prints the seconds of each (best of `--reps` calls) and the ratio
TIDE time / AP time.
Usage: python bench/errors.py [--reps N] [--out bench/errors.md] [--quick]"""
import argparse, time, timeit, torch
from pathlib import Path
from ssd_tutorial.data import *
from ssd_tutorial.metrics import voc_map, coco_map, evaluate
from ssd_tutorial.errors import tide_errors
from _timing import report

CKPT = Path(__file__).resolve().parent.parent / 'nbs' / 'models' / 'ssd128_multibox.pth'

def fake_dets(records, n=100, seed=0):
    "Per record: its objects' boxes with noise (some of another class), then random boxes, `n` in all."
    g, out = torch.Generator().manual_seed(seed), []
    for r in records:
        k = len(r.boxes)
        noisy = r.boxes + torch.randn(k, 4, generator=g) * 4
        xy = torch.rand(n - k, 2, generator=g) * 100
        boxes = torch.cat([noisy, torch.cat([xy, xy + torch.rand(n - k, 2, generator=g) * 40 + 4], 1)])
        labels = list(r.labels) + [SHAPES[i] for i in torch.randint(0, 5, (n - k,), generator=g).tolist()]
        out.append(dict(boxes=boxes, scores=torch.rand(n, generator=g), labels=labels))
    return out

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0]); p.add_argument('--reps', type=int, default=3)
    p.add_argument('--out', help='also keep the table in this markdown file')
    p.add_argument('--quick', action='store_true', help='16 images of fake detections, to check that the script runs')
    args = p.parse_args()
    with report(args.out): run(args)

def run(args):
    n_val = 16 if args.quick else 160
    valid = read_voc(get_shapes(64 if args.quick else 6144, n_val, size=128, difficulty='easy', progress=False), 'val', SHAPES)
    if CKPT.exists() and not args.quick:
        from ssd_tutorial.inference import Detector
        m = Detector.from_checkpoint(CKPT, bf16=False, device='cpu')
        dets, what = evaluate(m.model, valid, SHAPES, m.anchors, m.cell_size, 128, progress=False, detect=m.detect)['dets'], f'the SSD of {CKPT.name}'
    else: dets, what = fake_dets(valid), 'fake detections'
    n_det = sum(len(d['scores']) for d in dets)
    ap = lambda: (voc_map(valid, dets, classes=SHAPES), voc_map(valid, dets, use_07=False, classes=SHAPES),
                  coco_map(valid, dets, classes=SHAPES))
    tide = lambda: tide_errors(valid, dets, SHAPES)
    t_ap, t_tide = (min(timeit.repeat(f, number=1, repeat=args.reps)) for f in (ap, tide))
    print(f'torch {torch.__version__}, {torch.get_num_threads()} CPU threads; {len(valid)} images, {n_det} detections ({what})')
    print(f'{"AP (VOC07 + VOC + COCO) s":>26} {"tide_errors s":>14} {"TIDE / AP":>10}')
    print(f'{t_ap:26.3f} {t_tide:14.3f} {t_tide / t_ap:10.3f}')

if __name__ == '__main__': main()
