"""One training run of a stage at 128 px on the `easy` shapes, for the recipe search behind the running table.

Prints one line: the validation mAP@0.5 (VOC07) and COCO AP on the 160 validation images, the objects found on the
first six (a box of their class at IoU > 0.5 after the read-out, score at least 0.3: `count_found`, the count the
notebooks print above their pictures) and the training time. ResNet18 from random weights, batches of 32, one-cycle,
bfloat16 where native, seed 0; the loss is built by `make_loss` so that the matching threshold and the class-loss
scaling can be varied too. `bench/recipes.md` keeps the runs behind the recipes of 02d, 03, 04 and 07c.
Usage: python bench/recipes.py STAGE LOSS LR N_TRAIN EPOCHS [--drop D] [--thresh T] [--per-positive]
                               [--alpha A] [--gamma G] [--quick]
       (about 2-4 minutes a run on a 2-core CPU at 6144 images and 2-3 epochs)"""
import argparse, time
from fastai.vision.all import Learner, set_seed
from ssd_tutorial.all import *
from ssd_tutorial.train import make_loss, stage_priors, stage_detect, BF16Training, bf16_native

def main():
    a = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    a.add_argument('stage', nargs='?', choices=list(STAGES)); a.add_argument('loss', nargs='?', choices=list(LOSSES))
    a.add_argument('lr', nargs='?', type=float); a.add_argument('n_train', nargs='?', type=int)
    a.add_argument('epochs', nargs='?', type=int)
    a.add_argument('--quick', action='store_true', help='one tiny run (64 images, 1 epoch), to check the script runs')
    a.add_argument('--drop', type=float, default=None, help="the multi-grid head's dropout (its lesson: 0.1)")
    a.add_argument('--thresh', type=float, default=None, help="SigmoidL1Loss's matching threshold (default 0.4)")
    a.add_argument('--per-positive', action='store_true', help='the sigmoid class loss divided by the positives')
    a.add_argument('--alpha', type=float, default=None, help="FocalLoss's alpha (default 0.25; < 0: no weighting)")
    a.add_argument('--gamma', type=float, default=None, help="FocalLoss's gamma (default 2)")
    args = a.parse_args()
    if args.quick: args.stage, args.loss, args.lr, args.n_train, args.epochs = 'multigrid', 'bce', 1e-3, 32, 1
    elif None in (args.stage, args.loss, args.lr, args.n_train, args.epochs): a.error('give STAGE LOSS LR N_TRAIN EPOCHS')
    path = get_shapes(args.n_train, 16 if args.quick else 160, size=128, difficulty='easy')
    train, valid = read_voc(path, 'train', SHAPES), read_voc(path, 'val', SHAPES)
    dls = get_dls(train, valid, SHAPES, size=128, bs=32)
    set_seed(0)
    kw = {'drop': args.drop} if args.drop is not None else {}
    model = STAGES[args.stage].model(len(SHAPES), backbone='resnet18', size=128, **kw)
    anchors, cs = stage_priors(args.stage, model, 128)
    loss_kw = {k: v for k, v in (('alpha', args.alpha), ('gamma', args.gamma)) if v is not None}
    loss = make_loss(args.loss, len(SHAPES), anchors, cs, per_positive=args.per_positive, loss_kw=loss_kw or None)
    if args.thresh is not None: loss.thresh = args.thresh
    learn = Learner(dls, model, loss_func=loss, cbs=[BF16Training()] if bf16_native() else [])
    t0 = time.time(); learn.fit_one_cycle(args.epochs, args.lr); secs = time.time() - t0
    detect = stage_detect(args.loss)
    res = evaluate(model, valid, SHAPES, anchors, cs, 128, progress=False, detect=detect)
    dets = predict_records(model, valid[:6], SHAPES, anchors, cs, 128, progress=False, score_thresh=.3, detect=detect)
    found, total = count_found([(r.boxes, r.labels) for r in valid[:6]], dets)
    print(f"{args.stage} {args.loss} lr {args.lr:g}, {args.n_train} x {args.epochs}, {kw or ''} "
          f"thresh {args.thresh or 0.4}{', per positive' if args.per_positive else ''}"
          f"{'' if args.loss != 'focal' else f', {loss.conf_loss!r}'}: mAP@0.5 {res['voc07']['mAP']:.3f}, "
          f"COCO AP {res['coco']['AP']:.3f}, found {found}/{total}, training {secs:.0f} s")

if __name__ == '__main__': main()
