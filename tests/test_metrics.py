import io, contextlib, json, numpy as np, torch, pytest
from ssd_tutorial.data import *
from ssd_tutorial.metrics import *

def random_case(n_img, n_cls, seed, p_difficult=0.):
    g = torch.Generator().manual_seed(seed)
    gts, dets = [], []
    for i in range(n_img):
        n = int(torch.randint(0, 7, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * 200; wh = torch.rand(n, 2, generator=g) * 80 + 3
        gb, gl = torch.cat([xy, xy + wh], 1), torch.randint(1, n_cls + 1, (n,), generator=g)
        k = int(torch.randint(0, 3, (1,), generator=g))
        fp_xy = torch.rand(4, 2, generator=g) * 200
        db = torch.cat([gb + torch.randn(n, 4, generator=g) * 6, gb[:k] + torch.randn(min(k, n), 4, generator=g) * 3, torch.cat([fp_xy, fp_xy + 30], 1)])
        db = torch.cat([torch.minimum(db[:, :2], db[:, 2:]), torch.maximum(db[:, :2], db[:, 2:])], 1)
        dl = torch.cat([torch.where(torch.rand(n, generator=g) < .8, gl, torch.randint(1, n_cls + 1, (n,), generator=g)), gl[:k],
                        torch.randint(1, n_cls + 1, (4,), generator=g)])
        gts.append(dict(boxes=gb, labels=gl, difficult=torch.rand(n, generator=g) < p_difficult))
        dets.append(dict(boxes=db, scores=torch.rand(len(db), generator=g), labels=dl))
    return gts, dets

def pycoco(gts, dets, n_cls):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(); gt.dataset = gts_to_coco(gts, n_cls); gt.createIndex()
        dt = gt.loadRes(dets_to_coco(dets, n_cls))
        E = COCOeval(gt, dt, 'bbox'); E.evaluate(); E.accumulate(); E.summarize()
    return E

SIZE_KEYS = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl')   # the first six of COCOeval's stats

@pytest.mark.parametrize('seed', range(8))
def test_coco_map_equals_pycocotools(seed):
    gts, dets = random_case(40, 5, seed)
    if seed == 1: dets[3] = dict(boxes=torch.zeros(0, 4), scores=torch.zeros(0), labels=torch.zeros(0, dtype=torch.long))  # an image with no detections
    if seed == 2: dets = [dict(d, scores=(d['scores'] * 4).round() / 4) for d in dets]  # many tied scores
    if seed >= 4:                                                  # large objects (area > 96^2) in every third image
        for i in range(0, 40, 3): gts[i]['boxes'] *= 3; dets[i]['boxes'] *= 3
    E, mine = pycoco(gts, dets, 5), coco_map(gts, dets, 5)
    ref = [None if v == -1 else v for v in E.stats[:6]]
    assert (ref[5] is None) == (seed < 4)                          # without the scaling there is no large object
    for k, r in zip(SIZE_KEYS, ref):
        assert (mine[k] is None and r is None) or abs(mine[k] - r) < 1e-4, (k, mine[k], r)
    for c, ap in mine['per_class'].items():
        p = E.eval['precision'][:, :, c - 1, 0, 2]
        assert abs(ap - p[p > -1].mean()) < 1e-4

def test_coco_map_class_without_objects_is_left_out():
    gts, dets = random_case(20, 3, 0)
    E, mine = pycoco(gts, dets, 4), coco_map(gts, dets, 4)   # class 4 has no objects: pycocotools leaves it out too
    assert 4 not in mine['per_class'] and abs(mine['AP'] - E.stats[0]) < 1e-4

def test_coco_map_by_size_ignores_other_sizes():
    "Hand-checked: one small and one large circle, a detection of each; a detection on the large one is no error for APs."
    gts = [dict(boxes=torch.tensor([[0., 0, 20, 20], [0, 100, 150, 250]]), labels=['circle', 'circle'])]
    both = [dict(boxes=gts[0]['boxes'].clone(), scores=torch.tensor([.5, .9]), labels=['circle', 'circle'])]
    r = coco_map(gts, both)
    assert r['APs'] == 1. and r['APl'] == 1. and r['APm'] is None and r['AP'] == 1.
    stray = [dict(boxes=torch.tensor([[0., 0, 20, 20], [300, 300, 450, 450]]), scores=torch.tensor([.5, .9]), labels=['circle', 'circle'])]
    r = coco_map(gts, stray)             # a large false alarm ranked first: it costs APl and AP, not APs
    assert r['APs'] == 1. and r['APl'] == 0. and abs(r['AP'] - .5 * 51 / 101) < 1e-12   # precision .5 up to recall .5: 51 of 101 points
    assert coco_map(gts, both, sizes=False).keys() == {'AP', 'AP50', 'AP75', 'per_class'}

def devkit_voc_eval(gts, dets, c, thresh=.5, use_07=True):
    "Reference: the Pascal VOC devkit's voc_eval/voc_ap, transcribed plainly (continuous coordinates, no +1)."
    R = {i: dict(bbox=g['boxes'][g['labels'] == c].numpy(), difficult=g['difficult'][g['labels'] == c].numpy().astype(bool),
                 det=[False] * int((g['labels'] == c).sum())) for i, g in enumerate(gts)}
    npos = sum(int((~r['difficult']).sum()) for r in R.values())
    ids, conf, BB = [], [], []
    for i, d in enumerate(dets):
        m = d['labels'] == c
        ids += [i] * int(m.sum()); conf += d['scores'][m].tolist(); BB += d['boxes'][m].tolist()
    order = np.argsort(-np.array(conf), kind='stable'); tp, fp = np.zeros(len(ids)), np.zeros(len(ids))
    for k, j in enumerate(order):
        r, bb = R[ids[j]], np.array(BB[j]); ovmax = -np.inf; BBGT = r['bbox']
        if BBGT.size > 0:
            iw = np.maximum(np.minimum(BBGT[:, 2], bb[2]) - np.maximum(BBGT[:, 0], bb[0]), 0.)
            ih = np.maximum(np.minimum(BBGT[:, 3], bb[3]) - np.maximum(BBGT[:, 1], bb[1]), 0.)
            inters = iw * ih
            uni = (bb[2] - bb[0]) * (bb[3] - bb[1]) + (BBGT[:, 2] - BBGT[:, 0]) * (BBGT[:, 3] - BBGT[:, 1]) - inters
            ov = inters / uni; ovmax = ov.max(); jmax = ov.argmax()
        if ovmax > thresh:
            if not r['difficult'][jmax]:
                if not r['det'][jmax]: tp[k] = 1.; r['det'][jmax] = True
                else: fp[k] = 1.
        else: fp[k] = 1.
    fp, tp = np.cumsum(fp), np.cumsum(tp)
    rec, prec = tp / float(npos), tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    if use_07:
        ap = 0.
        for t in np.arange(0., 1.1, 0.1):
            p = 0 if np.sum(rec >= t) == 0 else np.max(prec[rec >= t]); ap += p / 11.
        return ap
    mrec, mpre = np.concatenate(([0.], rec, [1.])), np.concatenate(([0.], prec, [0.]))
    for i in range(mpre.size - 1, 0, -1): mpre[i - 1] = max(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])

@pytest.mark.parametrize('seed', range(4))
@pytest.mark.parametrize('use_07', [True, False])
def test_voc_map_equals_devkit(seed, use_07):
    gts, dets = random_case(40, 4, seed, p_difficult=.2)
    res = voc_map(gts, dets, use_07=use_07, classes=4)
    for c in range(1, 5): assert abs(res['AP'][c] - devkit_voc_eval(gts, dets, c, use_07=use_07)) < 1e-9
    assert abs(res['mAP'] - np.mean(list(res['AP'].values()))) < 1e-12

def test_voc_all_point_close_to_coco_ap50():
    "Without difficult objects, VOC all-point AP@0.5 and COCO AP50 differ only by sampling (101 points) and >= vs >."
    gts, dets = random_case(60, 4, 11)
    assert abs(voc_map(gts, dets, use_07=False)['mAP'] - coco_map(gts, dets)['AP50']) < .02

def test_perfect_and_empty_detections():
    gts, _ = random_case(10, 3, 5)
    perfect = [dict(boxes=g['boxes'], scores=torch.linspace(1, .5, len(g['labels'])), labels=g['labels']) for g in gts]
    assert voc_map(gts, perfect)['mAP'] == 1. and abs(coco_map(gts, perfect)['AP'] - 1.) < 1e-9
    none = [dict(boxes=torch.zeros(0, 4), scores=torch.zeros(0), labels=torch.zeros(0, dtype=torch.long)) for _ in gts]
    assert voc_map(gts, none)['mAP'] == 0. and coco_map(gts, none)['AP'] == 0.

def test_length_mismatch_is_an_error():
    gts, dets = random_case(5, 3, 0)
    with pytest.raises(ValueError, match='5 ground-truth entries but 4 detection entries'): voc_map(gts, dets[:4])
    with pytest.raises(ValueError, match='5 ground-truth entries but 4 detection entries'): coco_map(gts, dets[:4])

def test_dets_to_coco_round_trip(tmp_path):
    gts, dets = random_case(6, 3, 2)
    res = dets_to_coco(dets, 3)
    assert len(res) == sum(len(d['scores']) for d in dets)
    r = res[0]; b = dets[0]['boxes'][0].tolist()
    assert r['image_id'] == 1 and r['bbox'] == pytest.approx([b[0], b[1], b[2] - b[0], b[3] - b[1]])
    json.dumps(res)  # serialisable

def test_records_and_class_names_give_the_same_numbers(tmp_path):
    "The issue's API: `Record`s as ground truth, class names as labels, results keyed by name."
    names = ['circle', 'star', 'cross']
    gts, dets = random_case(30, 3, 4, p_difficult=.2)
    recs = [Record(tmp_path / f'{i}.png', g['boxes'], [names[l - 1] for l in g['labels'].tolist()], g['difficult'],
                   torch.zeros(len(g['labels']), dtype=torch.bool), (300, 300)) for i, g in enumerate(gts)]
    ndets = [dict(d, labels=[names[l - 1] for l in d['labels'].tolist()]) for d in dets]
    for use_07 in (True, False):
        a, b = voc_map(gts, dets, use_07=use_07, classes=3), voc_map(recs, ndets, use_07=use_07)
        assert a['mAP'] == pytest.approx(b['mAP'], abs=1e-12) and {names[k - 1]: v for k, v in a['AP'].items()} == b['AP']
    a, b = coco_map(gts, dets, 3), coco_map(recs, ndets)
    assert a['AP'] == pytest.approx(b['AP'], abs=1e-12) and set(b['per_class']) == set(names)
    assert dets_to_coco(ndets, names) == dets_to_coco(dets, 3)

def test_unknown_detection_class_is_a_false_alarm_only_for_no_one():
    gts, dets = random_case(10, 2, 6)
    names = [dict(d, labels=['a' if l == 1 else 'b' for l in d['labels'].tolist()]) for d in dets]
    g2 = [dict(g, labels=['a' if l == 1 else 'b' for l in g['labels'].tolist()]) for g in gts]
    names[0]['labels'][0] = 'zebra'  # a class with no objects: left out of the mean, nothing else changes
    r = voc_map(g2, names)
    assert 'zebra' not in r['AP'] and set(r['AP']) == {'a', 'b'}

def separated_case(n_img, n_cls, seed):
    g = torch.Generator().manual_seed(seed)
    gts, dets = [], []
    for i in range(n_img):
        cells = torch.randperm(16, generator=g)[:int(torch.randint(0, 6, (1,), generator=g))]
        xy = torch.stack([cells % 4, cells // 4], 1).float() * 100 + 20
        gb, gl = torch.cat([xy, xy + 60], 1), torch.randint(1, n_cls + 1, (len(cells),), generator=g)
        db = torch.cat([gb + torch.randn(len(gb), 4, generator=g) * 8, gb[:2] + torch.randn(min(2, len(gb)), 4, generator=g) * 4])
        gts.append(dict(boxes=gb, labels=gl)); dets.append(dict(boxes=db, scores=torch.rand(len(db), generator=g), labels=torch.cat([gl, gl[:2]])))
    return gts, dets

@pytest.mark.parametrize('seed', range(3))
def test_voc07_equals_pycocotools_where_definitions_coincide(seed):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    gts, dets = separated_case(40, 3, seed)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(); gt.dataset = gts_to_coco(gts, 3); gt.createIndex()
        E = COCOeval(gt, gt.loadRes(dets_to_coco(dets, 3)), 'bbox')
        E.params.iouThrs, E.params.recThrs = np.array([.5]), np.linspace(0, 1, 11)
        E.evaluate(); E.accumulate()
    p = E.eval['precision'][0, :, :, 0, -1]
    assert abs(voc_map(gts, dets)['mAP'] - p[:, (p > -1).all(0)].mean()) < 1e-9

def test_preds_to_dets_scales_and_names():
    dec = [dict(boxes=torch.tensor([[.1, .2, .5, .6]]), scores=torch.tensor([.7]), labels=torch.tensor([2]))]
    d = preds_to_dets(dec, [(200, 100)], ['circle', 'star'])[0]
    assert d['labels'] == ['star'] and torch.allclose(d['boxes'], torch.tensor([[20., 20, 100, 60]]))

@pytest.mark.parametrize('seed', range(4))
def test_coco_map_with_crowd_regions_equals_pycocotools(seed):
    "Crowd regions (`iscrowd`) are ignored objects that any number of detections may fall in, IoU = part of the detection inside."
    gts, dets = random_case(40, 4, seed)
    g = torch.Generator().manual_seed(100 + seed)
    for i, (gt, d) in enumerate(zip(gts, dets)):
        gt['crowd'] = torch.rand(len(gt['labels']), generator=g) < .3
        if i % 5 == 0 and len(gt['labels']):       # several detections inside one crowd region, of several sizes
            b = gt['boxes'][0]
            inner = b.repeat(3, 1)                  # the region itself, its top-left quarter, its bottom-right quarter
            inner[1, 2:] = (inner[1, :2] + inner[1, 2:]) / 2; inner[2, :2] = (inner[2, :2] + inner[2, 2:]) / 2
            d['boxes'] = torch.cat([d['boxes'], inner]); d['scores'] = torch.cat([d['scores'], torch.rand(3, generator=g)])
            d['labels'] = torch.cat([d['labels'], gt['labels'][:1].repeat(3)])
    assert sum(int(gt['crowd'].sum()) for gt in gts) > 10
    E, mine = pycoco(gts, dets, 4), coco_map(gts, dets, 4)
    for k, r in zip(SIZE_KEYS, E.stats[:6]):
        r = None if r == -1 else r
        assert (mine[k] is None and r is None) or abs(mine[k] - r) < 1e-4, (k, mine[k], r)
    plain = coco_map([dict(gt, crowd=None) for gt in gts], dets, 4)
    assert abs(plain['AP'] - mine['AP']) > 1e-3          # the crowd flags do change the result

def test_voc_map_crowd_is_like_difficult():
    gts, dets = random_case(20, 3, 3)
    crowd = [dict(g, crowd=torch.rand(len(g['labels']), generator=torch.Generator().manual_seed(i)) < .3) for i, g in enumerate(gts)]
    diff = [dict(g, difficult=c['crowd']) for g, c in zip(gts, crowd)]
    assert voc_map(crowd, dets, classes=3) == voc_map(diff, dets, classes=3) != voc_map(gts, dets, classes=3)

def test_label_not_in_classes_is_an_error():
    gts = [dict(boxes=torch.tensor([[0., 0, 10, 10]]), labels=['circle'])]
    dets = [dict(boxes=torch.tensor([[0., 0, 10, 10]]), scores=torch.tensor([.9]), labels=['circel'])]
    for f in (voc_map, coco_map):
        with pytest.raises(ValueError, match=r"detections of image 0 has label\(s\) \['circel'\] that are not in classes \['circle'\]"):
            f(gts, dets, classes=['circle'])
    with pytest.raises(ValueError, match=r"ground truth of image 0 has label\(s\) \['circle'\]"):
        voc_map(gts, [dict(dets[0], labels=['square'])], classes=['square'])
