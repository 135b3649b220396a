"""Train the stages side by side on the easy shapes data and write the README's results table (bench/results.md).

Each run uses 10240 training / 160 validation images of the easy shapes (drawn at the stage's input size, as
`ssd-tutorial train` draws them: no 128 -> 300 upscale), ResNet18 from random
weights, batch 32, 2 epochs, one-cycle lr 1e-3, multigrid head dropout 0.1 and bfloat16 mixed precision (where the
hardware has it; --fp32 turns it off), with one stage and loss at the stage's input size (128 px for grid4x4 and
multigrid, 300 px for ssd, whose loss can also be multibox); several seeds show the noise.
Metrics on the 160 validation images: VOC07 mAP@0.5 (11-point) and COCO AP@[.5:.95].
Usage: python bench/results.py [--seeds 0 1 2] [--epochs 2] [--n-train 10240] [--lr 1e-3] [--fp32] [--configs grid4x4:bce multigrid:bce multigrid:focal ssd:bce ssd:focal ssd:multibox ssd@128:multibox]
A stage may name its input size (`ssd@128`: the SSD laid out for 128 px, 07c_ssd_small). A config with a third part, an augmentation (`ssd:multibox:none`, `ssd:multibox:ssd`, `ssd:multibox:ssd-no-zoom`:
`get_dls(aug=)`, 08_augment), is an ablation row: those go into bench/augment.md, whose table also gives the COCO AP of
small and medium objects (the questions of the paper's Tables 2 and 6: what augmentation, and zoom out in particular, do for small objects).
On a 2-core CPU with AVX512-BF16 a 128 px run takes about 5.5 minutes, an ssd run (300 px) about 45: run the ssd
configs on a GPU. The rows go into bench/results.md: a row replaces the one of the same stage, input and loss, the
others stay, as long as the file was written with the same settings (else it starts again)."""
import argparse, time, numpy as np, torch
from pathlib import Path
from ssd_tutorial.all import *
from ssd_tutorial.train import train_detector, bf16_native, STAGES, AUG_FLAGS

def run(stage, loss, seed, epochs, lr, train, valid, drop, bf16, aug='none', size=None):
    t0 = time.time()
    size = size or STAGES[stage]['size']
    learn = train_detector(train, valid, SHAPES, stage, size=size, bs=32, epochs=epochs, lr=lr, backbone='resnet18', seed=seed, loss=loss,
                           model_kw=dict(drop=drop) if stage == 'multigrid' else None, bf16=bf16, aug=AUG_FLAGS[aug])
    t = time.time() - t0
    res = evaluate(learn.model, valid, SHAPES, learn.anchors, learn.cell_size, size, progress=False, detect=learn.detect)
    c = res['coco']
    return dict(map50=res['voc07']['mAP'], ap=c['AP'], ap50=c['AP50'], aps=c['APs'], apm=c['APm'], secs=t)

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--epochs', type=int, default=2)
    p.add_argument('--n-train', type=int, default=10240)
    p.add_argument('--lr', type=float, default=1e-3)
    p.add_argument('--drop', type=float, default=.1, help='multigrid head dropout (default 0.1, as in the notebooks)')
    p.add_argument('--fp32', action='store_true', help='train in float32 even where bfloat16 is native')
    p.add_argument('--configs', nargs='+', default=['grid4x4:bce', 'multigrid:bce', 'multigrid:focal'])
    p.add_argument('--out', default=str(Path(__file__).parent / 'results.md'))
    p.add_argument('--aug-out', default=str(Path(__file__).parent / 'augment.md'), help='where the rows of configs with an augmentation go')
    p.add_argument('--quick', action='store_true', help='one small case into a temporary file, to check that the script still runs (the tests run it so)')
    a = p.parse_args()
    if a.quick:
        import tempfile
        d = tempfile.mkdtemp()
        a.seeds, a.n_train, a.epochs, a.configs, a.out, a.aug_out = [0], 32, 1, ['grid4x4:bce'], f'{d}/results.md', f'{d}/augment.md'
    bf16 = not a.fp32 and bf16_native('cuda' if torch.cuda.is_available() else 'cpu')
    machine = torch.cuda.get_device_name() if torch.cuda.is_available() else f'{torch.get_num_threads()}-thread CPU'
    machine += f', torch {torch.__version__.split("+")[0]}'
    settings = (f'Easy shapes, {a.n_train} training / 160 validation images drawn at the stage\'s input size, ResNet18 from '
                f'random weights, {a.epochs} epochs at lr {a.lr:g}, {"bfloat16 mixed precision" if bf16 else "float32"}, seeds {", ".join(map(str, a.seeds))}.')
    rows, aug_rows = [], []
    for cfg in a.configs:
        stage, loss, *aug = cfg.split(':')
        stage, _, size = stage.partition('@')                      # `ssd@128`: the stage at another input size
        size = int(size) if size else None
        if aug and aug[0] not in AUG_FLAGS: p.error(f'unknown augmentation {aug[0]!r} in {cfg}; known: {list(AUG_FLAGS)}')
        path = get_shapes(a.n_train, 160, size=size or STAGES[stage]['size'], difficulty='easy')   # drawn at the size the stage reads
        train, valid = read_voc(path, 'train', SHAPES), read_voc(path, 'val', SHAPES)
        rs = [run(stage, loss, s, a.epochs, a.lr, train, valid, a.drop, bf16, *(aug or ['none']), size=size) for s in a.seeds]
        for s, r in zip(a.seeds, rs): print(f'{cfg} seed {s}: mAP@0.5 {r["map50"]:.3f}, COCO AP {r["ap"]:.3f}, {r["secs"]:.0f}s', flush=True)
        m = lambda k: '-' if None in [r[k] for r in rs] else f'{np.mean([r[k] for r in rs]):.3f} ± {np.std([r[k] for r in rs]):.3f}'
        cmd = (f"`ssd-tutorial train --stage {stage}" + (f' --size {size}' if size else '') + f" --loss {loss} --n-train {a.n_train} --epochs {a.epochs} --lr {a.lr:g}" + (f' --drop {a.drop}' if stage == 'multigrid' else '')
               + (f' --aug {aug[0]}' if aug and aug[0] != 'none' else '') + (' --bf16' if bf16 else '') + '`')
        common = f"| {stage} | {size or STAGES[stage]['size']} px | {loss} |"
        if aug: aug_rows.append(f"{common} {aug[0]} | {m('map50')} | {m('ap')} | {m('aps')} | {m('apm')} | {np.mean([r['secs'] for r in rs]):.0f} s | {machine} | {cmd} |")
        else: rows.append(f"{common} {m('map50')} | {m('ap50')} | {m('ap')} | {np.mean([r['secs'] for r in rs]):.0f} s | {machine} | {cmd} |")
    for out, rs, head in ((a.out, rows, HEAD), (a.aug_out, aug_rows, HEAD_AUG)):
        if not rs: continue
        text = merge(Path(out), settings, rs, head)
        Path(out).write_text(text); print(text)

HEAD = ['| stage | input | class loss | VOC07 mAP@0.5 | COCO AP50 | COCO AP@[.5:.95] | training time | machine | command |',
        '|---|---|---|---|---|---|---|---|---|']

HEAD_AUG = ['| stage | input | class loss | augmentation | VOC07 mAP@0.5 | COCO AP@[.5:.95] | COCO AP small | COCO AP medium | training time | machine | command |',
            '|---|---|---|---|---|---|---|---|---|---|---|']

def merge(out:Path, settings:str, rows:list, head:list=HEAD)->str:
    "The table of `out` with `rows` in it: a row replaces the one of the same configuration if `out` was written with the same settings."
    n_key = 4 if head is HEAD_AUG else 3   # stage, input, loss (and augmentation)
    keep = {}
    old = out.read_text().replace('drawn at 128 px and read at the stage\'s input size', 'drawn at the stage\'s input size') if out.exists() else ''
    if old.startswith(settings):   # (the rows written before the data was drawn at each stage's size were all 128 px: the same)
        for l in old.splitlines():
            if l.startswith('| ') and not l.startswith(head[0]): keep[tuple(c.strip() for c in l.split('|')[1:1 + n_key])] = l
    for r in rows: keep[tuple(c.strip() for c in r.split('|')[1:1 + n_key])] = r
    return '\n'.join([settings + ' Mean ± std over the seeds; each row\'s machine and command are given (written by `python bench/results.py`).', '',
                      *head, *keep.values(), ''])

if __name__ == '__main__': main()
