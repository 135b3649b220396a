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
Decoding alone: a last table times, on a synthetic batch already on the device (`--decode-bs`, 64 by default), the
model alone, the read-out alone (`Detector.postprocess`: decoding, NMS, boxes to pixels) and the two together, for
SSD300-VGG16 with random weights (which give the read-out the most candidates: every class of every box scores
above 0.01) and for the `--ckpt` model (trained weights) when one is given; the ratio (model + decode) / model alone
says how much of the model's speed the read-out leaves. `--device cuda` (the default where there is a GPU) runs every
row there. `--quick`: 4 images, the first rows only, a batch of 2, nothing written (the tests run it so).
Usage: python bench/predict.py [--n 32] [--ckpt PATH] [--device cpu|cuda] [--decode-bs 64] [--quick]"""
import argparse, tempfile, time, torch, numpy as np, torch.nn as nn
from pathlib import Path
from PIL import Image
from torchvision.models.detection import ssd300_vgg16
import torchvision.transforms.functional as TF
from ssd_tutorial.data import SHAPES, load_image
from ssd_tutorial.model import multi_model
from ssd_tutorial.model import ssd_model, load_torchvision_ssd
from ssd_tutorial.train import stage_priors, stage_detect, bf16_native
from ssd_tutorial.inference import Detector
from _timing import timeit

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
    sync = torch.cuda.synchronize if det.device.type == 'cuda' else (lambda: None)
    for ims, xb in det.batches(fns[:bs], ahead=False): det.postprocess(*det.forward(xb), [(640, 480)] * len(ims))
    t = dict(read=0., model=0., post=0.)
    it = det.batches(fns, ahead=ahead)
    while True:
        t0 = time.perf_counter(); b = next(it, None)   # as `Detector` reads: each file decoded and squished in one pass
        if b is None: break
        ims, xb = b
        t1 = time.perf_counter(); out = det.forward(xb); sync()
        t2 = time.perf_counter(); det.postprocess(*out, [im.info.get('full_size', im.size) for im in ims]); sync()
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
    fast, ims = ms(Detector(nn.Identity(), SHAPES, 128, torch.zeros(1, 4), 1., device='cpu', fast_decode=True).read, fns)
    squish, _ = ms(lambda im: np.asarray(im.resize((128, 128), Image.BILINEAR)), ims)
    say(f'one core, per image: decode {full:.2f} ms in full, {fast:.2f} ms at {ims[0].size[0]}x{ims[0].size[1]} (fast_decode); '
          f'squish that to 128 px {squish:.2f} ms\n')

def row(name:str, t:dict, n:int):
    tot = sum(t.values())
    say(f"| {name} | {n / tot:.1f} | {t['read'] / tot:.0%} | {t['model'] / tot:.0%} | {t['post'] / tot:.0%} | {(t['read'] + t['post']) / tot:.0%} |")

def decode_rows(name:str, det:Detector, bs:int, reps:int=3):
    "Images/s of the model alone, the read-out alone and both, on a synthetic `uint8` batch already on the device."
    sync = torch.cuda.synchronize if det.device.type == 'cuda' else (lambda: None)
    xb = torch.randint(0, 256, (bs, 3, det.size, det.size), dtype=torch.uint8, device=det.device)
    sizes = [(640, 480)] * bs
    out = det.forward(xb)
    fs = {'model': lambda: det.forward(xb), 'decode': lambda: det.postprocess(*out, sizes), 'both': lambda: det.postprocess(*det.forward(xb), sizes)}
    t = {k: min(timeit(f, 1, sync) for _ in range(reps)) for k, f in fs.items()}
    n = sum(len(d['scores']) for d in det.postprocess(*out, sizes)) / bs
    say(f"| {name}, bs {bs} | {n:.0f} | {bs / t['model']:.1f} | {bs / t['decode']:.1f} | {bs / t['both']:.1f} | {t['model'] / t['both']:.2f} |")

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--n', type=int, default=32, help='images (default 32)')
    p.add_argument('--ckpt', default=None, help='a shapes checkpoint to time instead of a random multigrid model')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', help='where the models run (default: CUDA where there is a GPU)')
    p.add_argument('--decode-bs', type=int, default=64, help='batch of the decoding table (default 64)')
    p.add_argument('--out', default=str(Path(__file__).parent / 'predict.md'), help='where the printed table is kept too (default bench/predict.md)')
    p.add_argument('--quick', action='store_true', help='a few small rows, nothing written, to check that the script still runs (the tests run it so)')
    a = p.parse_args()
    if a.quick: a.n, a.decode_bs, a.out = 4, 2, None
    KEPT.append(f'Written by `python bench/predict.py --n {a.n}' + (f' --ckpt {a.ckpt}' if a.ckpt else '') + f' --device {a.device} --decode-bs {a.decode_bs}` '
                '(one run: compare rows of the same run).\n')
    torch.manual_seed(0)
    dev = torch.device(a.device)
    bf16 = bf16_native(dev)
    with tempfile.TemporaryDirectory() as d:
        fns = make_jpegs(Path(d), a.n)
        where = f"the GPU ({torch.cuda.get_device_name(dev)}), reading on {torch.get_num_threads()} CPU threads" if dev.type == 'cuda' else f'the CPU ({torch.get_num_threads()} threads)'
        say(f'{a.n} JPEGs of 640x480 on {where}, bfloat16 native: {bf16}\n')
        one_core(fns)
        say('| path | images/s | decode+resize | model | post-processing | pre+post |\n|---|---|---|---|---|---|')
        for prec in ([False, True] if bf16 and not a.quick else [False]):
            if a.ckpt: shapes = Detector.from_checkpoint(a.ckpt, device=dev, score_thresh=.05, bf16=prec)
            else:
                m = multi_model(len(SHAPES), backbone='resnet18', size=128, drop=.1)
                shapes = Detector(m, SHAPES, 128, *stage_priors('multigrid', m, 128), stage_detect('bce'), device=dev, score_thresh=.05, bf16=prec)
            name = f"shapes {shapes.config.get('stage', 'multigrid')} 128 px, {'bf16' if prec else 'fp32'}"
            for bs in ((1,) if a.quick else (1, 16)): row(f"{name}, bs {bs}", time_detector(shapes, fns, bs), a.n)
            if a.quick: break
            shapes.fast_decode = True   # JPEGs decoded at the smallest scale still 128 px each way (here 1/2: 320x240)
            for bs in (1, 16): row(f"{name}, bs {bs}, fast_decode", time_detector(shapes, fns, bs), a.n)
            row(f"{name}, bs 16, fast_decode, read-ahead", time_detector(shapes, fns, 16, ahead=True), a.n)
        tv = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=21).eval()
        ours = load_torchvision_ssd(ssd_model(20, backbone='vgg16'), tv)
        vgg = lambda b: Detector(ours, [f'c{i}' for i in range(20)], 300, *stage_priors('ssd', ours, 300), stage_detect('multibox'), device=dev,
                                 score_thresh=.01, iou_thresh=.45, max_det=200, bf16=b)
        if not a.quick:
            for bs in (1, 16):
                row(f'SSD300-VGG16 Detector, fp32, bs {bs}', time_detector(vgg(False), fns, bs), a.n)
                row(f'SSD300-VGG16 torchvision, fp32, bs {bs}', time_torchvision(tv.to(dev), fns, bs), a.n)
            if bf16:
                for bs in (1, 16): row(f'SSD300-VGG16 Detector, bf16, bs {bs}', time_detector(vgg(True), fns, bs), a.n)
        say('\nDecoding alone, on a synthetic batch already on the device:\n')
        say('| model | detections/img | model images/s | read-out images/s | model + read-out images/s | (model + read-out) / model |\n|---|---|---|---|---|---|')
        for prec in ([False, True] if bf16 and not a.quick else [False]):
            decode_rows(f"SSD300-VGG16, random weights, {'bf16' if prec else 'fp32'}", vgg(prec), a.decode_bs, 1 if a.quick else 3)
            if a.ckpt: decode_rows(f"{a.ckpt} (trained), {'bf16' if prec else 'fp32'}", Detector.from_checkpoint(a.ckpt, device=dev, score_thresh=.01, bf16=prec), a.decode_bs, 1 if a.quick else 3)
    if a.out: Path(a.out).write_text('\n'.join(KEPT) + '\n')

if __name__ == '__main__': main()
