"""TIDE's error breakdown (`tide_errors`) against the reference, `tidecv` (a dev dependency), on the CPU: random cases with
ties and ignore regions, an untrained model's detections, and one hand-built change per error kind that must move that
kind and no other."""
import numpy as np, torch, pytest, matplotlib
from ssd_tutorial.data import *
from ssd_tutorial.errors import *

tidecv = pytest.importorskip('tidecv')
KINDS = ('Cls', 'Loc', 'Both', 'Dupe', 'Bkg', 'Miss')

def get(x, k, default=None):
    v = x.get(k) if isinstance(x, dict) else getattr(x, k, None)
    return default if v is None else v

def reference(gts, dets, classes):
    "tidecv's AP, dAPs (divided by 100) and error counts; a `difficult` or `crowd` object is an ignore region."
    from tidecv import TIDE, Data
    gt, pr, xywh = Data('gt'), Data('dets'), lambda b: [b[0], b[1], b[2] - b[0], b[3] - b[1]]
    for i, (g, d) in enumerate(zip(gts, dets)):
        gt.add_image(i, str(i))
        n = len(get(g, 'labels', []))
        ign = (torch.as_tensor(get(g, 'difficult', [False] * n), dtype=torch.bool).reshape(-1)
               | torch.as_tensor(get(g, 'crowd', [False] * n), dtype=torch.bool).reshape(-1))
        for b, l, ig in zip(torch.as_tensor(get(g, 'boxes', [])).double().reshape(-1, 4).tolist(), get(g, 'labels', []), ign.tolist()):
            (gt.add_ignore_region if ig else gt.add_ground_truth)(i, classes.index(l) + 1, xywh(b))
        for b, s, l in zip(torch.as_tensor(d['boxes']).double().reshape(-1, 4).tolist(), torch.as_tensor(d['scores']).double().tolist(), d['labels']):
            pr.add_detection(i, classes.index(l) + 1, s, xywh(b))
    with matplotlib.rc_context():     # TIDE() sets seaborn's style globally
        tide = TIDE(); run = tide.evaluate(gt, pr, mode=TIDE.BOX)
        main, spec = tide.get_main_errors()['dets'], tide.get_special_errors()['dets']
    dap = {k: v / 100 for k, v in main.items()} | {'FP': spec['FalsePos'] / 100, 'FN': spec['FalseNeg'] / 100}
    return run.ap / 100, dap, {e.short_name: len(v) for e, v in run.error_dict.items()}

def check(gts, dets, classes, eps=1e-9):
    r = tide_errors(gts, dets, classes)
    ap, dap, counts = reference(gts, dets, classes)
    assert abs(r['AP'] - ap) < eps, (r['AP'], ap)
    for k in dap: assert abs(r['dAP'][k] - dap[k]) < eps, (k, r['dAP'][k], dap[k])
    assert r['counts'] == counts
    return r

def random_case(n_img, seed, ties=False, ignore=False):
    "Noisy copies of the objects (70% right class), duplicates, false alarms; scores in quarters with `ties`."
    g, gts, dets = torch.Generator().manual_seed(seed), [], []
    for i in range(n_img):
        n = int(torch.randint(0, 6, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * 80; wh = torch.rand(n, 2, generator=g) * 40 + 2
        gb, gl = torch.cat([xy, xy + wh], 1), torch.randint(0, 5, (n,), generator=g)
        k, fa = int(torch.randint(0, 3, (1,), generator=g)), torch.rand(3, 2, generator=g) * 80
        db = torch.cat([gb + torch.randn(n, 4, generator=g) * 6, gb[:k] + torch.randn(min(k, n), 4, generator=g) * 2,
                        torch.cat([fa, fa + 10], 1)])
        db = torch.cat([torch.minimum(db[:, :2], db[:, 2:]), torch.maximum(db[:, :2], db[:, 2:])], 1)
        dl = torch.cat([torch.where(torch.rand(n, generator=g) < .7, gl, torch.randint(0, 5, (n,), generator=g)), gl[:k],
                        torch.randint(0, 5, (3,), generator=g)])
        s = torch.rand(len(db), generator=g)
        gts.append(dict(boxes=gb, labels=[SHAPES[l] for l in gl.tolist()],
                        difficult=torch.rand(n, generator=g) < (.15 if ignore else 0),
                        crowd=torch.rand(n, generator=g) < (.1 if ignore else 0)))
        dets.append(dict(boxes=db, scores=(s * 4).round() / 4 if ties else s, labels=[SHAPES[l] for l in dl.tolist()]))
    return gts, dets

@pytest.mark.parametrize('seed', range(6))
@pytest.mark.parametrize('ties,ignore', [(False, False), (True, False), (False, True), (True, True)])
def test_random_cases_equal_tidecv(seed, ties, ignore):
    check(*random_case(40, seed, ties, ignore), SHAPES)

def test_every_kind_seen():
    "The random cases exercise every kind: a parity test on cases where a kind is always 0 would prove little."
    seen = set()
    for seed in range(6):
        r = tide_errors(*random_case(40, seed, True, True), SHAPES)
        seen |= {k for k in KINDS if r['counts'][k]} | {k for k in KINDS if r['dAP'][k] > 0}
    assert seen == set(KINDS)

def test_untrained_model_equal_tidecv(tmp_path):
    "Real read-out of a model (random weights: many background and 'both' errors) on 16 shapes images."
    from ssd_tutorial.model import multi_model
    from ssd_tutorial.anchors import multi_anchors, multi_cell_sizes
    from ssd_tutorial.metrics import predict_records
    valid = read_voc(make_shapes(tmp_path / 's', n_train=2, n_valid=16, size=128, progress=False), 'val', SHAPES)
    torch.manual_seed(0)
    m = multi_model(len(SHAPES), backbone='resnet18', size=128).eval()
    dets = predict_records(m, valid, SHAPES, multi_anchors(), multi_cell_sizes(), 128, progress=False, score_thresh=.005)
    assert sum(len(d['scores']) for d in dets) > 100
    check(valid, dets, SHAPES)

def case(change=None):
    "Two images, four objects found by four detections (AP 1); then one `change`."
    gts = [Record('a.png', [[10, 10, 50, 50], [60, 60, 100, 100]], ['circle', 'star'], None),
           Record('b.png', [[0, 0, 40, 40], [50, 10, 90, 50]], ['circle', 'triangle'], None)]
    a, b = [([10., 10, 50, 50], .9, 'circle'), ([60., 60, 100, 100], .8, 'star')], [([0., 0, 40, 40], .6, 'circle')]
    tri, loose = [50., 10, 90, 50], [70., 10, 110, 50]                           # IoU 1/3 with the triangle
    b += {'Cls': [(tri, .7, 'star')], 'Loc': [(loose, .7, 'triangle')], 'Both': [(loose, .7, 'circle')],
          'Miss': []}.get(change, [(tri, .7, 'triangle')])
    a += {'Dupe': [([12., 10, 50, 50], .85, 'circle')], 'Bkg': [([100., 100, 120, 120], .85, 'circle')]}.get(change, [])
    to = lambda ds: dict(boxes=torch.tensor([d[0] for d in ds]), scores=torch.tensor([d[1] for d in ds]),
                         labels=[d[2] for d in ds])
    return gts, [to(a), to(b)]

def test_perfect_case():
    r = check(*case(), SHAPES)
    assert r['AP'] == 1 and all(v == 0 for v in r['dAP'].values())

@pytest.mark.parametrize('change', KINDS)
def test_one_change_moves_its_kind(change):
    r = check(*case(change), SHAPES, eps=1e-12)
    moved = {k for k in KINDS if r['dAP'][k] > 0}
    assert moved == ({'Both', 'Miss'} if change == 'Both' else {change}), r['dAP']

def test_loc_threshold():
    "Moving the triangle's box across IoU 0.5 turns a true positive into a localisation error, and 0.1 into background."
    gts, dets = case()
    for x, kind in ((55., 'TP'), (70., 'Loc'), (85., 'Bkg')):     # IoU 0.78, 0.33, 0.06 with the triangle
        dets[1]['boxes'][1] = torch.tensor([x, 10, x + 40, 50])
        r = check(gts, dets, SHAPES, eps=1e-12)
        k = r['dets']['kind'][(r['dets']['image'] == 1) & (r['dets']['label'] == SHAPES.index('triangle'))]
        assert list(k) == [kind]

def test_thresholds_inclusive():
    "tidecv's bounds are inclusive: IoU exactly 0.1 is still localisation; a second box at exactly 0.5 with a found object too."
    gts, dets = case()
    dets[1]['boxes'][1] = torch.tensor([80., 10, 150, 50])                      # 400 / 4000: IoU 0.1 with the triangle
    r = check(gts, dets, SHAPES, eps=1e-12)
    assert r['counts']['Loc'] == 1 and r['counts']['Bkg'] == 0
    gts, dets = case()
    dets[1] = dict(boxes=torch.cat([dets[1]['boxes'], torch.tensor([[50., 10, 70, 50]])]),    # IoU 800 / 1600
                   scores=torch.tensor([.6, .7, .65]), labels=dets[1]['labels'] + ['triangle'])
    r = check(gts, dets, SHAPES, eps=1e-12)
    assert r['counts']['Loc'] == 1 and r['counts']['Dupe'] == 0

def test_tide_assign_plain():
    "Objects 0 (class 0) and 1 (class 1); detections by score: a match, a duplicate, a class error, a loose box."
    iou = np.array([[.9, 0], [.8, 0], [0, .7], [.3, 0], [0, .05]])
    same = np.array([[1, 0], [1, 0], [1, 0], [1, 0], [1, 0]], bool)
    kind, ref, found = tide_assign(iou, same)
    assert list(kind) == ['TP', 'Dupe', 'Cls', 'Loc', 'Bkg'] and list(ref) == [0, -1, 1, 0, -1] and list(found) == [True, False]

def test_confusion_and_table():
    cm = confusion_matrix(*case('Cls'), SHAPES)
    assert cm[SHAPES.index('triangle'), SHAPES.index('star')] == 1 and np.trace(cm) == 3 and cm.sum() == 4
    r = tide_errors(*case('Loc'), SHAPES)
    t = errors_table({'loose': r})
    assert 'loose' in t and '0.333' in t
    plot_errors(r)

def test_bad_label():
    gts, dets = case()
    dets[0]['labels'][0] = 'circel'
    with pytest.raises(ValueError, match="circel"): tide_errors(gts, dets, SHAPES)
