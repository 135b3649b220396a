"SSD's augmentation (ssd_tutorial.augment): box invariants, seeds, agreement with torchvision.transforms.v2, awkward inputs, get_dls(aug='ssd')."
import numpy as np, pytest, torch
from PIL import Image
from torch import Tensor
import torchvision.transforms.v2 as T, torchvision.transforms.v2.functional as TF
from torchvision import tv_tensors
from ssd_tutorial.augment import *
from ssd_tutorial.augment import _BoxTfm
from ssd_tutorial.boxes import box_iou
from ssd_tutorial.data import get_dls, read_voc, SHAPES

RANDOM = (random_photo_distort, random_zoom_out, random_iou_crop, random_hflip, ssd_augment)

def rand_case(seed, min_side=2.):
    "A random RGB image of 40-200 px a side with 0-5 random boxes at least `min_side` px wide and high, labels 0..n-1."
    rng = np.random.default_rng(seed)
    w, h, n = int(rng.integers(40, 200)), int(rng.integers(40, 200)), int(rng.integers(0, 6))
    xy = rng.uniform(0, [w - min_side - 1, h - min_side - 1], (n, 2))
    b = torch.tensor(np.c_[xy, np.minimum(xy + rng.uniform(min_side, [w, h], (n, 2)), [w, h])], dtype=torch.float32).reshape(-1, 4)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8), b, torch.arange(n)

def check_boxes(img, b, l):
    "Every box inside the image and with area, one label per box."
    a = np.asarray(img); h, w = a.shape[:2]
    assert b.shape == (len(l), 4) and b.dtype == torch.float32
    assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
    assert (b >= 0).all() and (b[:, 0::2] <= w).all() and (b[:, 1::2] <= h).all()

def tv_in(a, b):
    return tv_tensors.Image(torch.from_numpy(a).permute(2, 0, 1)), tv_tensors.BoundingBoxes(b, format='XYXY', canvas_size=a.shape[:2])

def tv_sanitized(tfm, a, b, l):
    ti, tb = tv_in(a, b)
    ti, t = T.Compose([tfm, T.SanitizeBoundingBoxes()])(ti, dict(boxes=tb, labels=l))
    return ti.permute(1, 2, 0).numpy(), t['boxes'].as_subclass(Tensor), t['labels']

# ---- photometric

def test_colour_ops_equal_torchvision():
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        t = torch.rand(3, 31, 47, generator=g); t[:, :5] = t[:1, :5]    # some grey pixels
        a = t.permute(1, 2, 0).numpy() * 255
        back = lambda x: torch.from_numpy(np.ascontiguousarray(x / 255)).permute(2, 0, 1).float()
        f = float(torch.empty(1).uniform_(.3, 2, generator=g))
        torch.testing.assert_close(back(adjust_contrast(a, f)), TF.adjust_contrast(t, f), atol=1e-5, rtol=0)
        torch.testing.assert_close(back(adjust_saturation(a, f)), TF.adjust_saturation(t, f), atol=1e-5, rtol=0)
        deg = float(torch.empty(1).uniform_(-180, 180, generator=g))
        torch.testing.assert_close(back(adjust_hue(a, deg)), TF.adjust_hue(t, deg / 360), atol=1e-4, rtol=0)
        np.testing.assert_allclose(hsv2rgb(rgb2hsv(a / 255)), a / 255, atol=1e-5)
        np.testing.assert_allclose(adjust_brightness(a, 40.), np.minimum(a + 40, 255), atol=1e-4)

def test_photo_distort_is_torchvisions_chain():
    a, _, _ = rand_case(1)
    for prm in (dict(contrast=1.4, saturation=.7, hue=10., contrast_first=True, perm=[1, 2, 0]),
                dict(contrast=.6, saturation=1.3, hue=-15., contrast_first=False, perm=None)):
        t = torch.tensor(a).permute(2, 0, 1).float() / 255
        if prm['contrast_first']: t = TF.adjust_contrast(t, prm['contrast'])
        t = TF.adjust_hue(TF.adjust_saturation(t, prm['saturation']), prm['hue'] / 360)
        if not prm['contrast_first']: t = TF.adjust_contrast(t, prm['contrast'])
        if prm['perm']: t = t[prm['perm']]
        ref = TF.to_dtype(t, torch.uint8, scale=True).permute(1, 2, 0).numpy().astype(int)
        assert np.abs(photo_distort(a, **prm).astype(int) - ref).max() <= 1

def test_photo_distort_moves_no_box():
    a, b, l = rand_case(2)
    assert photo_distort(a) is a                                  # nothing drawn: the same image
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        o, ob, ol = random_photo_distort(a, b, l, g=g)
        assert o.shape == a.shape and o.dtype == np.uint8
        assert torch.equal(ob, b) and torch.equal(ol, l)
    prm = photo_params(torch.Generator().manual_seed(3), p=1.)
    assert all(prm[k] is not None for k in ('brightness', 'contrast', 'saturation', 'hue', 'perm'))
    assert -32 <= prm['brightness'] <= 32 and .5 <= prm['contrast'] <= 1.5 and -18 <= prm['hue'] <= 18
    assert not np.array_equal(photo_distort(a, **prm), a)
    assert all(v is None for k, v in photo_params(p=0.).items() if k != 'contrast_first')

# ---- zoom out

class ForcedZoomOut(T.RandomZoomOut):
    def __init__(self, ratio, left, top, **kw): super().__init__(p=1., **kw); self.prm = ratio, left, top
    def make_params(self, flat_inputs):
        (h, w), (r, l, t) = T._utils.query_size(flat_inputs), self.prm
        return dict(padding=[l, t, int(w * r) - w - l, int(h * r) - h - t])

def test_zoom_out_equals_torchvision():
    g = torch.Generator().manual_seed(0)
    for s in range(20):
        a, b, l = rand_case(s)
        prm = zoom_out_params(a.shape[1], a.shape[0], g=g)
        o, ob, ol = zoom_out(a, b, l, **prm)
        ti, tb = ForcedZoomOut(**prm, fill=MEAN_RGB)(*tv_in(a, b))
        assert np.array_equal(o, ti.permute(1, 2, 0).numpy())
        assert torch.equal(ob, tb.as_subclass(Tensor)) and torch.equal(ol, l)

def test_zoom_out_keeps_every_object_and_shrinks_it_by_the_ratio():
    g = torch.Generator().manual_seed(1)
    for s in range(30):
        a, b, l = rand_case(s)
        h, w = a.shape[:2]
        prm = zoom_out_params(w, h, g=g)
        o, ob, ol = zoom_out(a, b, l, **prm)
        check_boxes(o, ob, ol)
        assert torch.equal(ol, l)
        torch.testing.assert_close(ob - torch.tensor([prm['left'], prm['top']] * 2), b, atol=1e-4, rtol=0)  # moved, not resized
        assert 1 <= prm['ratio'] <= 4 and o.shape[:2] == (int(h * prm['ratio']), int(w * prm['ratio']))
        assert np.array_equal(o[prm['top']:prm['top'] + h, prm['left']:prm['left'] + w], a)
        assert (o[:prm['top']] == MEAN_RGB).all() and (o[:, :prm['left']] == MEAN_RGB).all()
        # relative to the image side, every box is smaller by the drawn factor (up to the whole-pixel canvas)
        rel_in, rel_out = (b[:, 2:] - b[:, :2]) / torch.tensor([w, h]), (ob[:, 2:] - ob[:, :2]) / torch.tensor(o.shape[1::-1])
        torch.testing.assert_close(rel_out * prm['ratio'], rel_in, rtol=2 * prm['ratio'] / min(w, h), atol=0)

def test_zoom_out_refuses_a_canvas_the_image_does_not_fit():
    a, b, l = rand_case(0)
    with pytest.raises(ValueError, match='does not fit'): zoom_out(a, b, l, 2., a.shape[1] + 1, 0)
    with pytest.raises(ValueError, match='does not fit'): zoom_out(a, b, l, .5, 0, 0)

# ---- IoU crop

class ForcedIoUCrop(T.RandomIoUCrop):
    def __init__(self, left, top, width, height): super().__init__(); self.prm = left, top, width, height
    def make_params(self, flat_inputs):
        l, t, w, h = self.prm
        bb = T._utils.get_bounding_boxes(flat_inputs).as_subclass(Tensor)
        return dict(left=l, top=t, width=w, height=h, is_within_crop_area=centres_inside(bb, l, t, w, h))

def test_crop_keeps_centres_inside_and_meets_the_drawn_iou():
    g, n_crops = torch.Generator().manual_seed(0), 0
    for s in range(150):
        a, b, l = rand_case(s, min_side=1.)
        h, w = a.shape[:2]
        prm = iou_crop_params(w, h, b, g=g)
        if prm is None: continue
        n_crops += 1
        p = {k: prm[k] for k in ('left', 'top', 'width', 'height')}
        o, ob, ol = crop_objects(a, b, l, **p)
        check_boxes(o, ob, ol)
        assert o.shape[:2] == (p['height'], p['width']) and np.array_equal(o, a[p['top']:p['top'] + p['height'], p['left']:p['left'] + p['width']])
        inside = centres_inside(b, **p)
        assert torch.equal(ol, l[inside])                                     # exactly the objects whose centre is inside
        patch = torch.tensor([[p['left'], p['top'], p['left'] + p['width'], p['top'] + p['height']]], dtype=torch.float32)
        assert len(ol) > 0 and box_iou(b[ol], patch).max() >= prm['min_iou']  # some kept object meets the drawn IoU
        shift = torch.tensor([p['left'], p['top']] * 2)
        ref = torch.minimum((b[ol] - shift).clamp(min=0), torch.tensor([p['width'], p['height']] * 2))
        assert torch.equal(ob, ref)                                           # each label with its own box
        assert .3 * w - 1 <= p['width'] <= w and .3 * h - 1 <= p['height'] <= h and .5 <= p['width'] / p['height'] <= 2
    assert n_crops > 50

def test_crop_equals_torchvision_on_a_given_patch():
    rng = np.random.default_rng(0)
    for s in range(40):
        a, b, l = rand_case(s)
        h, w = a.shape[:2]
        cw, ch = int(rng.integers(1, w + 1)), int(rng.integers(1, h + 1))
        p = (int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1)), cw, ch)
        ours, ref = crop_objects(a, b, l, *p), tv_sanitized(ForcedIoUCrop(*p), a, b, l)
        assert np.array_equal(ours[0], ref[0]) and torch.equal(ours[1], ref[1]) and torch.equal(ours[2], ref[2])

def test_crop_equals_torchvision_for_the_same_seed():
    n_cropped = 0
    for s in range(150):
        a, b, l = rand_case(s)
        if len(b) == 0: continue                                  # torchvision draws forever on an image without boxes
        torch.manual_seed(s); ref = tv_sanitized(T.RandomIoUCrop(trials=50), a, b, l)
        torch.manual_seed(s); ours = random_iou_crop(a, b, l)
        assert ours[0].shape == ref[0].shape and np.array_equal(ours[0], ref[0])
        assert torch.equal(ours[1], ref[1]) and torch.equal(ours[2], ref[2])
        n_cropped += ours[0].shape != a.shape
    assert n_cropped > 50

def test_crop_centre_on_the_patch_edge_is_outside():
    a = np.zeros((60, 60, 3), np.uint8)
    b, l = torch.tensor([[10., 10, 30, 30], [40, 40, 50, 50]]), torch.tensor([1, 2])   # centres (20, 20) and (45, 45)
    for p, kept in [((20, 0, 40, 60), [2]), ((0, 0, 20, 60), []), ((0, 20, 60, 40), [2]), ((0, 0, 60, 45), [1]), ((19, 19, 30, 30), [1, 2])]:
        ours, ref = crop_objects(a, b, l, *p), tv_sanitized(ForcedIoUCrop(*p), a, b, l)
        assert ours[2].tolist() == kept and torch.equal(ours[1], ref[1]) and torch.equal(ours[2], ref[2])

def test_crop_refuses_a_patch_outside_the_image():
    a, b, l = rand_case(0)
    with pytest.raises(ValueError, match='not inside'): crop_objects(a, b, l, 1, 0, a.shape[1], 10)
    with pytest.raises(ValueError, match='not inside'): crop_objects(a, b, l, 0, 0, 0, 10)

def test_crop_options():
    a, b, l = rand_case(3)
    assert len(b) and iou_crop_params(a.shape[1], a.shape[0], b, options=(1.,)) is None      # the whole image
    assert iou_crop_params(a.shape[1], a.shape[0], b, options=(1.1,), max_draws=3) is None   # impossible: gives up
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        prm = iou_crop_params(a.shape[1], a.shape[0], b, options=(.5,), g=g)
        assert prm is None or prm['min_iou'] == .5

# ---- flip

def test_flip_equals_torchvision_and_twice_is_identity():
    for s in range(10):
        a, b, l = rand_case(s)
        o, ob, ol = hflip(a, b, l)
        ti, tb = T.RandomHorizontalFlip(p=1.)(*tv_in(a, b))
        assert np.array_equal(o, ti.permute(1, 2, 0).numpy()) and torch.equal(ob, tb.as_subclass(Tensor))
        check_boxes(o, ob, ol)
        oo, oob, ool = hflip(o, ob, ol)
        assert np.array_equal(oo, a) and torch.equal(ool, l)
        torch.testing.assert_close(oob, b, atol=1e-4, rtol=0)                # w - (w - x): float rounding only

def test_random_flip_probability():
    a, b, l = rand_case(4)
    assert random_hflip(a, b, l, p=0.)[0] is a
    assert np.array_equal(random_hflip(a, b, l, p=1.)[0], a[:, ::-1])

# ---- the chain, seeds, kinds of input

def test_chain_invariants_and_kinds():
    g = torch.Generator().manual_seed(0)
    for s in range(40):
        a, b, l = rand_case(s, min_side=1.)
        o, ob, ol = ssd_augment(a, b, l, g=g)
        assert isinstance(o, np.ndarray) and o.dtype == np.uint8
        check_boxes(o, ob, ol)
        assert set(ol.tolist()) <= set(l.tolist()) and len(set(ol.tolist())) == len(ol)
    im = Image.fromarray(a)
    o, ob, ol = ssd_augment(im, b, [f'c{i}' for i in range(len(b))], g=g)  # PIL in, PIL out; names as labels
    assert isinstance(o, Image.Image) and isinstance(ol, list) and len(ol) == len(ob)

def test_same_seed_same_output():
    a, b, l = rand_case(5)
    outs = [ssd_augment(a, b, l, g=torch.Generator().manual_seed(s)) for s in (7, 7, 8)]
    assert np.array_equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1]) and torch.equal(outs[0][2], outs[1][2])
    draws = [ssd_augment(a, b, l, g=torch.Generator().manual_seed(s))[0] for s in range(8, 12)]
    assert any(o.shape != outs[0][0].shape or not np.array_equal(o, outs[0][0]) for o in draws)
    torch.manual_seed(3); x = random_zoom_out(a, b, l, p=1.)         # the global generator when none is given
    torch.manual_seed(3); y = random_zoom_out(a, b, l, p=1.)
    assert np.array_equal(x[0], y[0]) and torch.equal(x[1], y[1])

@pytest.mark.parametrize('name,boxes', [('no objects', []), ('fills the image', [[0, 0, 64, 48]]),
                                        ('touches the border', [[0, 10, 5, 48], [60, 0, 64, 48]]),
                                        ('1-pixel object', [[30, 20, 31, 21]]), ('no area', [[10, 10, 10, 30], [5, 5, 20, 5]]),
                                        ('partly outside', [[-10, -5, 20, 20], [50, 40, 80, 60]])])
def test_awkward_inputs_give_defined_results(name, boxes):
    a = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    b = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4); l = torch.arange(len(b))
    valid = ((b[:, 2].clamp(0, 64) > b[:, 0].clamp(0, 64)) & (b[:, 3].clamp(0, 48) > b[:, 1].clamp(0, 48))).sum()
    g = torch.Generator().manual_seed(0)
    for f in RANDOM:
        for _ in range(15):
            o, ob, ol = f(a, b, l, g=g)
            check_boxes(o, ob, ol)
            if f in (random_photo_distort, random_zoom_out, random_hflip): assert len(ol) == valid   # nothing is cut
    if len(b) == 0: assert random_iou_crop(a, b, l)[0] is a                                      # nothing to crop around
    if name == '1-pixel object':
        o, ob, ol = crop_objects(a, b, l, 30, 0, 34, 48)                                         # centre 30.5: kept, half a pixel
        assert torch.equal(ob, torch.tensor([[0., 20, 1, 21]])) and crop_objects(a, b, l, 31, 0, 33, 48)[2].numel() == 0

def test_bad_arguments_are_errors():
    a, b, l = rand_case(0)
    for f in RANDOM:
        with pytest.raises(ValueError, match='boxes but'): f(a, torch.zeros(2, 4), torch.arange(3))
        with pytest.raises(ValueError, match='expected an RGB image'): f(a[..., 0], b, l)

# ---- fastai

@pytest.fixture(scope='module')
def recs(shapes_dir):
    return read_voc(shapes_dir, 'train', SHAPES), read_voc(shapes_dir, 'val', SHAPES)

def test_item_transforms_apply_the_functions_on_training_items_only():
    from fastai.vision.all import PILImage, TensorBBox, TensorMultiCategory
    a, b, l = rand_case(6)
    x = (PILImage.create(a), TensorBBox.create(b), TensorMultiCategory(l))
    for tfm, f in ((ZoomOut(p=1.), lambda *x: random_zoom_out(*x, p=1.)), (IoUCrop(), random_iou_crop), (HFlip(p=1.), lambda *x: random_hflip(*x, p=1.)),
                   (PhotoDistort(), random_photo_distort)):
        torch.manual_seed(0); o = tfm(x, split_idx=0)
        torch.manual_seed(0); r = f(a, b, l)
        assert isinstance(o[0], PILImage) and isinstance(o[1], TensorBBox) and isinstance(o[2], TensorMultiCategory)
        assert np.array_equal(np.asarray(o[0]), r[0]) and torch.equal(o[1].as_subclass(Tensor), r[1]) and torch.equal(o[2].as_subclass(Tensor), r[2])
        assert all(p is q for p, q in zip(tfm(x, split_idx=1), x))                              # validation: untouched
    assert [type(t) for t in ssd_tfms()] == [PhotoDistort, ZoomOut, IoUCrop, HFlip]

def test_get_dls_ssd_augments_training_only(recs):
    trn, val = recs
    plain, ssd = get_dls(trn, val, SHAPES, size=96, bs=8), get_dls(trn, val, SHAPES, size=96, bs=8, aug='ssd')
    names = [type(t).__name__ for t in ssd.train.after_item.fs]
    assert names.index('HFlip') < names.index('PointScaler') and names.index('HFlip') < names.index('Resize')
    assert not any(isinstance(t, _BoxTfm) for t in plain.train.after_item.fs)
    for x, y in zip(plain.valid.one_batch(), ssd.valid.one_batch()): assert torch.equal(x, y)
    xb, bb, lb = [t.as_subclass(Tensor) for t in ssd.train.one_batch()]
    assert xb.shape == (8, 3, 96, 96) and not torch.equal(xb, plain.train.one_batch()[0])
    real = lb > 0
    assert (bb[real].abs() <= 1).all() and (bb[real][:, 2:] > bb[real][:, :2]).all() and (bb[~real] == 0).all()
    first = [get_dls(trn, val, SHAPES, size=96, bs=8, aug='ssd', seed=s).train.one_batch() for s in (1, 1, 2)]
    for x, y in zip(first[0], first[1]): assert torch.equal(x, y)                                # same seed, same batch
    assert not torch.equal(first[0][0], first[2][0])
    with pytest.raises(ValueError, match="aug must be"): get_dls(trn, val, SHAPES, aug='fancy')

def test_get_dls_ssd_no_zoom_has_every_transform_but_zoom_out(recs):
    from fastai.vision.all import PILImage, TensorBBox, TensorMultiCategory
    trn, val = recs
    fs = get_dls(trn, val, SHAPES, size=96, bs=8, aug='ssd-no-zoom').train.after_item.fs
    tf = {type(t): t for t in fs if isinstance(t, _BoxTfm)}
    assert list(tf) == [PhotoDistort, ZoomOut, IoUCrop, HFlip] and tf[ZoomOut].kwargs['p'] == 0
    assert get_dls(trn, val, SHAPES, size=96, bs=8, aug='ssd').train.after_item.fs.filter(lambda t: isinstance(t, ZoomOut))[0].kwargs['p'] == .5
    a = np.full((60, 80, 3), 200, np.uint8)
    x = (PILImage.create(a), TensorBBox(torch.tensor([[10., 10., 30., 40.]])), TensorMultiCategory(torch.tensor([1])))
    for s in range(20):                                                     # p = 0: the image and its box never move
        torch.manual_seed(s); o = tf[ZoomOut](x, split_idx=0)
        assert np.array_equal(np.asarray(o[0]), a) and torch.equal(o[1].as_subclass(Tensor), x[1].as_subclass(Tensor))
