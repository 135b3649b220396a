"""SSD300 on VGG16 from random weights, with and without batch norm, at one budget: does it learn? (bench/vgg_scratch.md)

The paper's VGG16 starts from ImageNet weights; from random weights, without batch norm, the first GPU run found it
does not learn (mAP@0.5 0.024 where ResNet34 reached 0.879 at the same recipe). `vgg16_bn` puts batch norm after
every convolution. Each backbone is trained here with the same recipe: SSD300 at 300 px on easy shapes drawn at
300 px, `--n-train` images for `--epochs` epochs, batch `--bs`, one-cycle lr `--lr`, MultiBox loss, seed 0,
bfloat16 where native; then the training and validation loss of each epoch, mAP@0.5 (VOC07) and COCO AP on the 160
validation images. A row is written to `--out` as soon as its run ends. On a 2-core CPU, VGG16 at 300 px trains
about 2 images/s: the default budget (1024 images, 2 epochs) takes about 20 minutes per VGG16 run.
Usage: python bench/vgg_scratch.py [--backbones vgg16 vgg16_bn resnet34] [--n-train 1024] [--epochs 2] [--bs 16] [--lr 1e-3] [--quick]"""
import argparse, contextlib, io, time, torch
from pathlib import Path
from ssd_tutorial.data import get_shapes, read_voc, SHAPES
from ssd_tutorial.metrics import evaluate
from ssd_tutorial.train import train_detector, bf16_native

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--backbones', nargs='+', default=['vgg16', 'vgg16_bn', 'resnet34'])
    p.add_argument('--n-train', type=int, default=1024); p.add_argument('--n-valid', type=int, default=160)
    p.add_argument('--epochs', type=int, default=2); p.add_argument('--bs', type=int, default=16)
    p.add_argument('--lr', type=float, default=1e-3)
    p.add_argument('--out', default=str(Path(__file__).parent / 'vgg_scratch.md'))
    p.add_argument('--quick', action='store_true', help='one tiny run, nothing written, to check that the script still runs (the tests run it so)')
    a = p.parse_args()
    if a.quick: a.backbones, a.n_train, a.n_valid, a.epochs, a.bs, a.out = ['vgg16_bn'], 4, 4, 1, 2, None
    dev = 'cuda' if torch.cuda.is_available() else 'cpu'
    bf16 = bf16_native(dev)
    path = get_shapes(a.n_train, a.n_valid, size=300, difficulty='easy', progress=False)
    train, valid = read_voc(path, 'train', SHAPES), read_voc(path, 'val', SHAPES)
    machine = torch.cuda.get_device_name() if dev == 'cuda' else f'{torch.get_num_threads()}-thread CPU'
    lines = [f'SSD300 from random weights, MultiBox loss: easy shapes drawn at 300 px, {a.n_train} training / {a.n_valid} validation images, '
             f'{a.epochs} epochs, batch {a.bs}, one-cycle lr {a.lr:g}, seed 0, {"bfloat16" if bf16 else "float32"}; {machine}, torch {torch.__version__}. '
             f'Written by `python bench/vgg_scratch.py --n-train {a.n_train} --epochs {a.epochs} --bs {a.bs} --lr {a.lr:g} --backbones {" ".join(a.backbones)}`.', '',
             '| backbone | train loss by epoch | valid loss by epoch | VOC07 mAP@0.5 | COCO AP@[.5:.95] | training time |', '|---|---|---|---|---|---|']
    for bb in a.backbones:
        t0 = time.time()
        with contextlib.redirect_stdout(io.StringIO()):
            learn = train_detector(train, valid, SHAPES, 'ssd', 300, bs=a.bs, epochs=a.epochs, lr=a.lr, backbone=bb, loss='multibox', bf16=bf16, seed=0)
        secs = time.time() - t0
        res = evaluate(learn.model, valid, SHAPES, learn.anchors, learn.cell_size, 300, progress=False, detect=learn.detect)
        vals = learn.recorder.values
        lines.append(f"| {bb} | {' / '.join(f'{v[0]:.2f}' for v in vals)} | {' / '.join(f'{v[1]:.2f}' for v in vals)} | "
                     f"{res['voc07']['mAP']:.3f} | {res['coco']['AP']:.3f} | {secs:.0f} s |")
        print(lines[-1], flush=True)
        if a.out: Path(a.out).write_text('\n'.join(lines) + '\n')

if __name__ == '__main__': main()
