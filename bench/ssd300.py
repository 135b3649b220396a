"""SSD300 against torchvision's SSD in the same run: the MultiBox loss, and VGG16 inference with the same weights.

1. `MultiBoxLoss`, forward and backward, against torchvision's `SSD.compute_loss` with its matching as `SSD.forward`
   does it (pixel IoU, `SSDMatcher(0.5)`, one image at a time): bs 32, 8732 default boxes, 21 classes, 1-10 objects
   per image. Both are first checked to give the same loss and gradients.
2. SSD300-VGG16 inference (`torch.no_grad`, eval mode) of `ssd_model(20)` and of `ssd300_vgg16(num_classes=21)`'s
   backbone and head (its input transform left out), with the same weights (`load_torchvision_ssd`), at bs 1 and 16,
   after checking that they give the same outputs. The networks are the same; ours converts its input to
   channels-last on a CPU, so a third row times torchvision's fed a channels-last input, to show where the gain is.

The two sides of each comparison are timed in alternation, a few rounds each, and the best round of each side counts
(the machine may be shared). Prints the time per call and the speed-up (torchvision's time / ours); CPU, and CUDA when
present. About 3 minutes on an idle 2-core CPU.
Usage: python bench/ssd300.py [--rounds N] [--skip-model]"""
import argparse, torch, torch.nn as nn
from torchvision.models.detection import ssd300_vgg16
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.ops import box_iou as tv_box_iou
from ssd_tutorial.boxes import *
from ssd_tutorial.anchors import *
from ssd_tutorial.model import *
from ssd_tutorial.loss import *
from ssd_tutorial.decode import *
from _timing import timeit
from loss import make_batch  # fastai-style targets: tlbr in [-1,1], 1-10 objects per image, padded with zero rows

SCALES, STEPS, FMAPS = [.07, .15, .33, .51, .69, .87, 1.05], [8, 16, 32, 64, 100, 300], (38, 19, 10, 5, 3, 1)

class _Stub(nn.Module):
    "`compute_loss` reads only the head outputs: any backbone will do."
    out_channels = [8] * 6
    def forward(self, x): return x

def tv_loss(tvm, clas, bbox, bboxes, labels, a_px, iou_rel=None):
    "torchvision's loss with its matching; `iou_rel`: match on relative IoU instead (breaks exact ties as we do: the check)."
    targets, matched = [], []
    for bb, lb in zip(bboxes, labels):
        keep = lb > 0
        t = dict(boxes=(bb[keep] + 1) / 2 * 300, labels=lb[keep]); targets.append(t)
        iou = tv_box_iou(t['boxes'], a_px) if iou_rel is None else box_iou((bb[keep] + 1) / 2, iou_rel)
        matched.append(tvm.proposal_matcher(iou))
    l = tvm.compute_loss(targets, dict(cls_logits=clas, bbox_regression=bbox), [a_px] * len(bboxes), matched)
    return l['classification'] + l['bbox_regression']

def best_of(fs:dict, rounds:int, reps:int, sync)->dict:
    "Seconds per call of each callable in `fs`: timed in alternation for `rounds` rounds, the best round of each."
    res = {k: [] for k in fs}
    for _ in range(rounds):
        for k, f in fs.items(): res[k].append(timeit(f, reps, sync))
    return {k: min(v) for k, v in res.items()}

def bench_loss(dev, rounds, sync, bs=32):
    anchors = ssd_anchors(scales=SCALES, steps=STEPS).to(dev)
    gen = DefaultBoxGenerator([list(r) for r in SSD300_RATIOS], scales=SCALES, steps=STEPS)
    tvm = SSD(_Stub(), gen, (300, 300), num_classes=21).to(dev)
    a_px = cthw2tlbr(anchors) * 300
    bb, lb = (t.to(dev) for t in make_batch(bs))
    g = torch.Generator().manual_seed(1)
    clas = torch.randn(bs, len(anchors), 21, generator=g).to(dev).requires_grad_()
    bbox = torch.randn(bs, len(anchors), 4, generator=g).to(dev).requires_grad_()
    lf = MultiBoxLoss(anchors)
    ours = lf((clas, bbox), bb, lb); go = torch.autograd.grad(ours, (clas, bbox))
    ref = tv_loss(tvm, clas, bbox, bb, lb, a_px, iou_rel=cthw2tlbr(anchors)); gr = torch.autograd.grad(ref, (clas, bbox))
    tol = dict(rtol=1e-5, atol=1e-6) if dev == 'cpu' else dict(rtol=1e-4, atol=1e-5)   # a GPU sums in another order (measured: ~1e-5 relative)
    assert torch.allclose(ours, ref, rtol=tol['rtol']) and all(torch.allclose(a, b, atol=tol['atol']) for a, b in zip(go, gr)), 'losses differ'
    t = best_of({'tv': lambda: tv_loss(tvm, clas, bbox, bb, lb, a_px).backward(),
                 'ours': lambda: lf((clas, bbox), bb, lb).backward()}, rounds, 3, sync)
    print(f'{dev:6} {f"MultiBoxLoss fwd+bwd, bs {bs}, 8732 boxes, 21 classes":52} {t["tv"] * 1e3:9.1f} {t["ours"] * 1e3:9.1f} {t["tv"] / t["ours"]:8.2f}x')

def bench_model(dev, rounds, sync, sizes=(1, 16)):
    torch.manual_seed(0)
    tv = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=21).eval().to(dev)
    ours = load_torchvision_ssd(ssd_model(20).eval(), tv.cpu()).to(dev); tv.to(dev)
    tv_fwd = lambda x: tv.head(list(tv.backbone(x).values()))
    with torch.no_grad():
        x = torch.randn(1, 3, 300, 300, device=dev)
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False): c, b = ours(x); o = tv_fwd(x)   # the check in float32 (TF32 off); timed as it comes
        assert torch.allclose(c, o['cls_logits'], atol=1e-4) and torch.allclose(b, o['bbox_regression'], atol=1e-4), 'outputs differ'
        for bs in sizes:
            x = torch.randn(bs, 3, 300, 300, device=dev)
            xcl = x.contiguous(memory_format=torch.channels_last)
            fs = {'tv': lambda: tv_fwd(x), 'ours': lambda: ours(x)}
            if dev == 'cpu': fs['tv_cl'] = lambda: tv_fwd(xcl)
            t = best_of(fs, rounds, 3 if bs == 1 else 1, sync)
            print(f'{dev:6} {f"SSD300-VGG16 inference, bs {bs}":52} {t["tv"] * 1e3:9.1f} {t["ours"] * 1e3:9.1f} {t["tv"] / t["ours"]:8.2f}x')
            if 'tv_cl' in t: print(f'{dev:6} {"  (torchvision given a channels-last input)":52} {t["tv_cl"] * 1e3:9.1f} {t["ours"] * 1e3:9.1f} {t["tv_cl"] / t["ours"]:8.2f}x')

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--rounds', type=int, default=3); p.add_argument('--skip-model', action='store_true')
    p.add_argument('--quick', action='store_true', help='one small case, to check that the script still runs (the tests run it so)')
    args = p.parse_args()
    if args.quick: args.rounds = 1
    devs = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
    print(f'torch {torch.__version__}, {torch.get_num_threads()} CPU threads')
    print(f'{"device":6} {"":52} {"tv ms":>9} {"ours ms":>9} {"speed-up":>9}')
    for dev in devs:
        sync = torch.cuda.synchronize if dev == 'cuda' else (lambda: None)
        bench_loss(dev, args.rounds, sync, bs=4 if args.quick else 32)
        if not args.skip_model: bench_model(dev, 1 if args.quick else max(2, args.rounds - 1), sync, sizes=(1,) if args.quick else (1, 16))

if __name__ == '__main__': main()
