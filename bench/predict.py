"""Speed of the whole prediction path on a folder of JPEGs, split into decode+resize / model / post-processing.

Rows: the best shapes model (multigrid, 128 px) and SSD300-VGG16 (300 px), each at bs 1 and 16, through
`Detector` (float32, and bfloat16 where the CPU has it natively), and torchvision's `ssd300_vgg16` with the same
weights (`load_torchvision_ssd`) running its own transform and post-processing (`GeneralizedRCNNTransform`,
`postprocess_detections`) on the same decoded images. The SSD300 read-outs are set alike: score above 0.01, top 400
per class, NMS at 0.45, 200 detections per image (torchvision's defaults). The weights are random unless
`--ckpt` names a shapes checkpoint for the first model (random weights give a different number of NMS candidates
than trained ones; the 0.01 threshold keeps the post-processing busy either way).

The images are `--n` JPEGs of 640x480 (crops of scikit-image's sample photos when it is installed, else noise),
written to a temporary folder. Every row reads them from disk. One pass per row, after a warm-up batch; the machine
may be shared, so compare rows of the same run (on a busy machine, `OMP_NUM_THREADS=1` gives steadier numbers than
two threads fighting over the cores). CPU only. About 100 s with --n 16 on one thread of a busy 2-core CPU.
The shapes rows are repeated with `fast_decode=True` (`--fast-decode` of `ssd-tutorial predict`): each JPEG decoded
at the smallest of 1/2, 1/4, 1/8 scale that is still the model's input size each way; and at bs 16 with the read-ahead
of `Detector.batches` (what `Detector` and `ssd-tutorial predict` do): the next batch read on a background thread while
the network runs on this one. Its decode+resize column is then the time the loop waits for a batch, not the time the
reading takes; on a CPU whose cores the network already uses, the reading still takes them from the network, so compare
the images/s too. The other rows read each batch before running it (`ahead=False`), to show the split.
Usage: python bench/predict.py [--n 32] [--ckpt PATH]"""
import argparse, tempfile, time, torch, numpy as np
from pathlib import Path
from PIL import Image
from torchvision.models.detection import ssd300_vgg16
import torchvision.transforms.functional as TF
from ssd_tutorial.data import SHAPES, load_image, _load
from ssd_tutorial.multigrid import multi_model
from ssd_tutorial.ssd300 import ssd_model, load_torchvision_ssd
from ssd_tutorial.train import stage_priors, stage_detect, bf16_native
from ssd_tutorial.inference import Detector

def make_jpegs(folder:Path, n:int)->list:
    "`n` 640x480 JPEGs (quality 90): random crops of scikit-image's sample photos, or smooth noise without it."
    rng = np.random.default_rng(0)
    try:
        from skimage import data as skd
        photos = [skd.astronaut(), skd.coffee(), skd.chelsea(), skd.rocket()]
    except ImportError: photos = [np.asarray(Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((800, 600), Image.BICUBIC))]
    fns = []
    for i in range(n):
        a = photos[i % len(photos)]
        h, w = a.shape[:2]; s = rng.uniform(.6, 1)
        ch, cw = int(h * s), int(w * s); y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        fns.append(folder / f'{i:03d}.jpg')
        Image.fromarray(a[y:y + ch, x:x + cw]).resize((640, 480), Image.BICUBIC).save(fns[-1], quality=90)
    return fns

def time_detector(det:Detector, fns:list, bs:int, ahead:bool=False)->dict:
    """Seconds spent waiting for decode+resize, in the network and in the read-out, over all of `fns`, `bs` at a time (after a warm-up batch).
    With `ahead`, the next batch is read on a background thread while the network runs (`Detector.batches`' read-ahead): `read` is then
    only the time the loop waits for it."""
    det.bs = bs
    for ims, xb in det.batches(fns[:bs], ahead=False): det.postprocess(*det.forward(xb), [(640, 480)] * len(ims))
    t = dict(read=0., model=0., post=0.)
    it = det.batches(fns, ahead=ahead)
    while True:
        t0 = time.perf_counter(); b = next(it, None)   # as `Detector` reads: each file decoded and squished in one pass
        if b is None: break
        ims, xb = b
        t1 = time.perf_counter(); out = det.forward(xb)
        t2 = time.perf_counter(); det.postprocess(*out, [im.info.get('full_size', im.size) for im in ims])
        t3 = time.perf_counter()
        t['read'] += t1 - t0; t['model'] += t2 - t1; t['post'] += t3 - t2
    return t

def time_torchvision(tv, fns:list, bs:int)->dict:
    "The same split for torchvision's SSD: decode (PIL, `to_tensor`), its transform + network + post-processing."
    def run(ims):
        with torch.inference_mode():
            t0 = time.perf_counter()
            orig = [im.shape[-2:] for im in ims]
            images, _ = tv.transform(ims)
            t1 = time.perf_counter()
            feats = list(tv.backbone(images.tensors).values())
            head = tv.head(feats)
            t2 = time.perf_counter()
            anchors = tv.anchor_generator(images, feats)
            dets = tv.transform.postprocess(tv.postprocess_detections(head, anchors, images.image_sizes), images.image_sizes, orig)
            t3 = time.perf_counter()
        return t1 - t0, t2 - t1, t3 - t2
    run([TF.to_tensor(load_image(f)) for f in fns[:bs]])
    t = dict(read=0., model=0., post=0.)
    for i in range(0, len(fns), bs):
        t0 = time.perf_counter(); ims = [TF.to_tensor(load_image(f)) for f in fns[i:i + bs]]; t['read'] += time.perf_counter() - t0
        a, b, c = run(ims); t['read'] += a; t['model'] += b; t['post'] += c
    return t

KEPT = []   # what `say` printed, written to --out at the end

def say(*args):
    "Print, and keep the line for bench/predict.md."
    print(*args, flush=True); KEPT.append(' '.join(map(str, args)))

def one_core(fns:list):
    "Milliseconds per image on one thread: decoding in full and at the fast-decode scale, and squishing the latter to 128 px."
    def ms(f, xs):
        t0 = time.perf_counter(); out = [f(x) for x in xs]; return (time.perf_counter() - t0) / len(xs) * 1e3, out
    full, _ = ms(load_image, fns)
    fast, ims = ms(lambda f: _load(f, draft=128), fns)
    squish, _ = ms(lambda im: np.asarray(im.resize((128, 128), Image.BILINEAR)), ims)
    say(f'one core, per image: decode {full:.2f} ms in full, {fast:.2f} ms at {ims[0].size[0]}x{ims[0].size[1]} (fast_decode); '
          f'squish that to 128 px {squish:.2f} ms\n')

def row(name:str, t:dict, n:int):
    tot = sum(t.values())
    say(f"| {name} | {n / tot:.1f} | {t['read'] / tot:.0%} | {t['model'] / tot:.0%} | {t['post'] / tot:.0%} | {(t['read'] + t['post']) / tot:.0%} |")

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--n', type=int, default=32, help='images (default 32)')
    p.add_argument('--ckpt', default=None, help='a shapes checkpoint to time instead of a random multigrid model')
    p.add_argument('--out', default=str(Path(__file__).parent / 'predict.md'), help='where the printed table is kept too (default bench/predict.md)')
    a = p.parse_args()
    KEPT.append(f'Written by `python bench/predict.py --n {a.n}' + (f' --ckpt {a.ckpt}' if a.ckpt else '') + '` (one run: compare rows of the same run).\n')
    torch.manual_seed(0)
    bf16 = bf16_native('cpu')
    with tempfile.TemporaryDirectory() as d:
        fns = make_jpegs(Path(d), a.n)
        say(f'{a.n} JPEGs of 640x480 on the CPU ({torch.get_num_threads()} threads), bfloat16 native: {bf16}\n')
        one_core(fns)
        say('| path | images/s | decode+resize | model | post-processing | pre+post |\n|---|---|---|---|---|---|')
        for prec in ([False, True] if bf16 else [False]):
            if a.ckpt: shapes = Detector.from_checkpoint(a.ckpt, device='cpu', score_thresh=.05, bf16=prec)
            else:
                m = multi_model(len(SHAPES), backbone='resnet18', size=128, drop=.1)
                shapes = Detector(m, SHAPES, 128, *stage_priors('multigrid', m, 128), stage_detect('bce'), device='cpu', score_thresh=.05, bf16=prec)
            for bs in (1, 16): row(f"shapes {shapes.config.get('stage', 'multigrid')} 128 px, {'bf16' if prec else 'fp32'}, bs {bs}", time_detector(shapes, fns, bs), a.n)
            shapes.fast_decode = True   # JPEGs decoded at the smallest scale still 128 px each way (here 1/2: 320x240)
            for bs in (1, 16): row(f"shapes {shapes.config.get('stage', 'multigrid')} 128 px, {'bf16' if prec else 'fp32'}, bs {bs}, fast_decode", time_detector(shapes, fns, bs), a.n)
            row(f"shapes {shapes.config.get('stage', 'multigrid')} 128 px, {'bf16' if prec else 'fp32'}, bs 16, fast_decode, read-ahead", time_detector(shapes, fns, 16, ahead=True), a.n)
        tv = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=21).eval()
        ours = load_torchvision_ssd(ssd_model(20, backbone='vgg16'), tv)
        det = Detector(ours, [f'c{i}' for i in range(20)], 300, *stage_priors('ssd', ours, 300), stage_detect('multibox'), device='cpu',
                       score_thresh=.01, iou_thresh=.45, max_det=200, bf16=False)
        for bs in (1, 16):
            row(f'SSD300-VGG16 Detector, fp32, bs {bs}', time_detector(det, fns, bs), a.n)
            row(f'SSD300-VGG16 torchvision, fp32, bs {bs}', time_torchvision(tv, fns, bs), a.n)
        if bf16:
            det = Detector(ours, det.classes, 300, det.anchors, det.grid_size, det.detect, device='cpu', score_thresh=.01, max_det=200, bf16=True)
            for bs in (1, 16): row(f'SSD300-VGG16 Detector, bf16, bs {bs}', time_detector(det, fns, bs), a.n)
    Path(a.out).write_text('\n'.join(KEPT) + '\n')

if __name__ == '__main__': main()
