import torch, torchvision, pytest
from ssd_tutorial.boxes import *

def rand_boxes(n, g, zero_frac=0.):
    xy = torch.rand(n, 2, generator=g); wh = torch.rand(n, 2, generator=g) * .6
    wh[torch.rand(n, generator=g) < zero_frac, 0] = 0
    return torch.cat([xy, xy + wh], 1)

def test_conversions_match_torchvision():
    b = torch.rand(100, 4)
    assert torch.allclose(cthw2tlbr(b), torchvision.ops.box_convert(b, 'cxcywh', 'xyxy'))
    assert torch.allclose(tlbr2cthw(b), torchvision.ops.box_convert(b, 'xyxy', 'cxcywh'))
    assert torch.allclose(tlbr2cthw(cthw2tlbr(b)), b, atol=1e-6)
    assert cthw2tlbr(torch.rand(2, 3, 4)).shape == (2, 3, 4)  # any leading shape

def test_box_area():
    b = torch.tensor([[0., 0., 2., 3.], [1., 1., 1., 5.], [3., 3., 1., 1.]])
    assert box_area(b).tolist() == [6., 0., 0.]
    r = rand_boxes(50, torch.Generator().manual_seed(1))
    assert torch.allclose(box_area(r), torchvision.ops.box_area(r))

@pytest.mark.parametrize('seed', range(5))
def test_box_iou_matches_torchvision(seed):
    g = torch.Generator().manual_seed(seed)
    a, b = rand_boxes(37, g), rand_boxes(53, g)
    assert torch.allclose(box_iou(a, b), torchvision.ops.box_iou(a, b), atol=1e-6)

def test_box_iou_special_cases():
    s = torch.tensor([[0., 0., 1., 1.], [0., 0., 1., 1.], [.25, .25, .5, .5], [2., 2., 3., 3.], [1., 0., 2., 1.], [.5, .5, .5, .9]])
    ours, ref = box_iou(s, s), torchvision.ops.box_iou(s, s)
    ok = ~ref.isnan()
    assert torch.allclose(ours[ok], ref[ok])
    assert (ours[~ok] == 0).all() and not ours.isnan().any()
    assert ours[0, 1] == 1 and ours[0, 2] == .0625 and ours[0, 3] == 0 and ours[0, 4] == 0  # identical, nested, disjoint, touching
    assert (ours[5] == 0).all()  # zero area overlaps nothing, even itself

def test_box_iou_zero_area_random():
    g = torch.Generator().manual_seed(7)
    a, b = rand_boxes(40, g, zero_frac=.3), rand_boxes(40, g, zero_frac=.3)
    ours, ref = box_iou(a, b), torchvision.ops.box_iou(a, b)
    ok = ~ref.isnan()
    assert torch.allclose(ours[ok], ref[ok], atol=1e-6)

def test_show_boxes_draws_each_box():
    import matplotlib; matplotlib.use('Agg')
    import numpy as np
    ax = show_boxes(np.zeros((50, 50, 3)), torch.tensor([[1., 2., 20., 30.], [5, 5, 40, 40]]), [1, 'b'], scores=[.5, .25], classes=['#na#', 'a', 'b'])
    assert len(ax.patches) == 2
    assert [t.get_text() for t in ax.texts] == ['a 0.50', 'b 0.25']
    assert ax.patches[0].get_edgecolor() != ax.patches[1].get_edgecolor()  # one colour per class

@pytest.mark.parametrize('seed', [0, 1, 2])
def test_count_found_matches_a_torchvision_count(seed):
    "CPU: `count_found` against a count made object by object with `torchvision.ops.box_iou`."
    g = torch.Generator().manual_seed(seed)
    truth, dets, want = [], [], 0
    for _ in range(5):
        tb, db = rand_boxes(4, g) * 100, rand_boxes(6, g) * 100
        tl, dl = torch.randint(1, 4, (4,), generator=g).tolist(), torch.randint(1, 4, (6,), generator=g)
        db[:2] = tb[:2] + torch.rand(2, 4, generator=g) * 8         # near some objects, their class or not
        truth.append((tb, tl)); dets.append(dict(boxes=db, labels=dl))
        iou = torchvision.ops.box_iou(tb, db)
        want += sum(any(iou[i, j] > .5 and dl[j] == tl[i] for j in range(6)) for i in range(4))
    assert count_found(truth, dets) == (want, 20)
    assert 0 < want

def test_count_found_edge_cases():
    "CPU: no detections, no objects, labels as names."
    b = torch.tensor([[0., 0, 10, 10]])
    assert count_found([(b, ['star'])], [dict(boxes=torch.zeros(0, 4), labels=[])]) == (0, 1)
    assert count_found([(torch.zeros(0, 4), [])], [dict(boxes=b, labels=['star'])]) == (0, 0)
    assert count_found([(b, ['star'])], [dict(boxes=b, labels=['cross'])]) == (0, 1)
    assert count_found([(b, ['star'])], [dict(boxes=b, labels=['star'])]) == (1, 1)
