import json, shutil, warnings
import pytest, torch
from ssd_tutorial.data import *

def test_make_shapes_is_deterministic(tmp_path):
    a = make_shapes(tmp_path / 'a', 12, 4, seed=3, progress=False)
    b = make_shapes(tmp_path / 'b', 12, 4, seed=3, progress=False)
    c = make_shapes(tmp_path / 'c', 12, 4, seed=4, progress=False)
    files = sorted(p.relative_to(a) for p in a.rglob('*') if p.is_file())
    assert len(files) == 2 * 16 + 3
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert any((a / f).read_bytes() != (c / f).read_bytes() for f in files if f.suffix == '.jpg')

def test_more_train_images_keep_the_first_ones(tmp_path):
    a = make_shapes(tmp_path / 'a', 5, 3, progress=False)
    b = make_shapes(tmp_path / 'b', 8, 3, progress=False)
    for f in ['JPEGImages/train_00004.jpg', 'JPEGImages/val_00002.jpg', 'Annotations/train_00000.xml']:
        assert (a / f).read_bytes() == (b / f).read_bytes()

def test_shapes_content(shapes_dir):
    recs = read_voc(shapes_dir, 'train', SHAPES) + read_voc(shapes_dir, 'val', SHAPES)
    assert len(recs) == 50
    for r in recs:
        assert r.size == (224, 224) and len(r) <= 4
        assert ((r.boxes[:, 2:] > r.boxes[:, :2]).all() and (r.boxes >= 0).all() and (r.boxes <= 224).all())
    assert len({l for r in recs for l in r.labels}) == 5

def test_hard_setting_ranges(tmp_path):
    p = make_shapes(tmp_path / 'h', 60, 1, difficulty='hard', progress=False)
    recs = read_voc(p, 'train')
    n = [len(r) for r in recs]
    assert max(n) <= 6 and max(n) >= 4
    assert any(r.difficult.any() for r in recs) and any(r.truncated.any() for r in recs)

def test_settings_errors():
    with pytest.raises(ValueError, match='difficulty must be one of'): shapes_settings('insane')
    with pytest.raises(ValueError, match='unknown shapes setting'): shapes_settings(n_obj=3)
    assert shapes_settings('easy', clutter=7)['clutter'] == 7

def test_get_shapes_reuses(tmp_path):
    p = get_shapes(6, 2, path=tmp_path / 's', progress=False)
    t = (p / 'JPEGImages/train_00000.jpg').stat().st_mtime_ns
    assert get_shapes(6, 2, path=tmp_path / 's', progress=False) == p
    assert (p / 'JPEGImages/train_00000.jpg').stat().st_mtime_ns == t

def test_voc_xml_round_trip(tmp_path):
    (tmp_path / 'JPEGImages').mkdir(); (tmp_path / 'Annotations').mkdir()
    from PIL import Image
    Image.new('RGB', (64, 48)).save(tmp_path / 'JPEGImages' / 'x.jpg')
    boxes = torch.tensor([[0., 0., 10., 20.], [3., 4., 64., 48.]])
    write_voc_xml(tmp_path / 'Annotations' / 'x.xml', 'x.jpg', (64, 48), boxes, ['a', 'b'], [True, False], [False, True])
    assert '<xmin>1</xmin>' in (tmp_path / 'Annotations' / 'x.xml').read_text()  # VOC is 1-based
    r = parse_voc_xml(tmp_path / 'Annotations' / 'x.xml')
    assert torch.equal(r.boxes, boxes) and r.labels == ['a', 'b'] and r.size == (64, 48)
    assert r.difficult.tolist() == [True, False] and r.truncated.tolist() == [False, True]

def test_coco_round_trip(shapes_dir, tmp_path):
    val = read_voc(shapes_dir, 'val')
    d = to_coco(val, SHAPES, tmp_path / 'v.json')
    assert [c['name'] for c in d['categories']] == SHAPES and len(d['images']) == 10
    back = read_coco(tmp_path / 'v.json', shapes_dir / 'JPEGImages')
    for a, b in zip(val, back):
        assert a.fname == b.fname and a.labels == b.labels and torch.allclose(a.boxes, b.boxes) and torch.equal(a.difficult, b.difficult)

@pytest.fixture
def bad(shapes_dir, tmp_path):
    shutil.copytree(shapes_dir, tmp_path / 'bad'); return tmp_path / 'bad'

def test_malformed_xml(bad):
    (bad / 'Annotations/train_00003.xml').write_text('<annotation><filename>')
    with pytest.raises(DataError, match=r'train_00003\.xml: malformed XML'): read_voc(bad)

def test_missing_field_and_bad_number(bad):
    f = bad / 'Annotations/train_00000.xml'
    f.write_text('<annotation><filename>train_00000.jpg</filename><size><width>224</width><height>224</height></size>'
                 '<object><name>star</name><bndbox><xmin>1</xmin><ymin>x</ymin><xmax>5</xmax><ymax>9</ymax></bndbox></object></annotation>')
    with pytest.raises(DataError, match=r'train_00000\.xml: non-numeric'): read_voc(bad)
    f.write_text('<annotation><filename>train_00000.jpg</filename><size><width>2x</width></size></annotation>')
    with pytest.raises(DataError, match=r'train_00000\.xml: non-numeric or infinite <width>'): read_voc(bad)
    f.write_text('<annotation><size><width>224</width><height>224</height></size></annotation>')
    with pytest.raises(DataError, match=r'train_00000\.xml: missing <filename>'): read_voc(bad)
    f.write_text('<annotation><filename>train_00000.jpg</filename></annotation>')  # no <size>: the image's, with a warning
    with pytest.warns(UserWarning, match=r'train_00000\.xml: no image size given; using the size of train_00000\.jpg, 224x224'):
        assert read_voc(bad)[0].size == (224, 224)

def test_missing_and_corrupt_image(bad):
    img = bad / 'JPEGImages/train_00005.jpg'
    data = img.read_bytes()
    img.write_bytes(data[:-100])
    read_voc(bad)  # the header is fine: not decoded unless asked
    with pytest.raises(DataError, match=r'train_00005\.jpg: corrupt'): read_voc(bad, check_images=True)
    img.write_bytes(data[:200])  # the header itself is cut: found while reading
    with pytest.raises(DataError, match=r'train_00005\.jpg: corrupt'): read_voc(bad)
    with pytest.raises(DataError, match=r'train_00005\.jpg: corrupt'): read_voc(bad, check_images=True)
    with pytest.raises(DataError, match=r'train_00005\.jpg: corrupt'): CheckedPILImage.create(img)
    img.unlink()
    with pytest.raises(DataError, match=r'train_00005\.jpg not found'): read_voc(bad)

def test_box_outside_and_zero_area(bad):
    f = bad / 'Annotations/train_00001.xml'
    f.write_text('<annotation><filename>train_00001.jpg</filename><size><width>224</width><height>224</height></size>'
                 '<object><name>star</name><bndbox><xmin>-9</xmin><ymin>1</ymin><xmax>300</xmax><ymax>50</ymax></bndbox></object>'
                 '<object><name>cross</name><bndbox><xmin>11</xmin><ymin>1</ymin><xmax>10</xmax><ymax>50</ymax></bndbox></object>'
                 '<object><name>circle</name><bndbox><xmin>230</xmin><ymin>1</ymin><xmax>240</xmax><ymax>50</ymax></bndbox></object></annotation>')
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter('always')
        r = read_voc(bad)[1]
    msgs = [str(w.message) for w in ws]
    assert any('train_00001.xml' in m and 'clipped' in m for m in msgs)
    assert sum('zero area; dropped' in m for m in msgs) == 1  # the one wholly outside
    assert sum('corners swapped' in m for m in msgs) == 1  # xmin 11 > xmax 10: put in order, pixels 10..11
    assert r.labels == ['star', 'cross'] and r.boxes.tolist() == [[0., 0., 224., 50.], [9., 0., 11., 50.]]

def test_unknown_class_and_empty_split(bad):
    f = bad / 'Annotations/train_00002.xml'
    f.write_text(f.read_text().replace('<name>', '<name>hexagon', 1))
    if '<object>' in f.read_text():
        with pytest.raises(DataError, match="train_00002.xml: unknown class name 'hexagon"): read_voc(bad, classes=SHAPES)
    (bad / 'ImageSets/Main/none.txt').write_text('\n')
    with pytest.raises(DataError, match="none.txt: split 'none' lists no images"): read_voc(bad, 'none')
    with pytest.raises(DataError, match='split file not found'): read_voc(bad, 'test')

def test_coco_errors(shapes_dir, tmp_path):
    (tmp_path / 'bad.json').write_text('{"images": [}')
    with pytest.raises(DataError, match=r'bad\.json: malformed JSON'): read_coco(tmp_path / 'bad.json')
    d = to_coco(read_voc(shapes_dir, 'val'), SHAPES)
    d['annotations'][0]['category_id'] = 99
    (tmp_path / 'c.json').write_text(json.dumps(d))
    with pytest.raises(DataError, match=r'c\.json: annotation #0 \(id 1\): unknown category_id 99'): read_coco(tmp_path / 'c.json', shapes_dir / 'JPEGImages')
    del d['categories']; (tmp_path / 'c.json').write_text(json.dumps(d))
    with pytest.raises(DataError, match="missing key 'categories'"): read_coco(tmp_path / 'c.json')

def test_image_without_objects_is_kept(tmp_path):
    p = make_shapes(tmp_path / 'e', 3, 1, progress=False, n_objs=(1, 1), p_empty=1.)
    recs = read_voc(p)
    assert [len(r) for r in recs] == [0, 0, 0] and recs[0].boxes.shape == (0, 4)

def test_dls_follow_conventions(shapes_dir, tmp_path):
    train, valid = read_voc(shapes_dir, 'train'), read_voc(shapes_dir, 'val')
    empty = read_voc(make_shapes(tmp_path / 'e', 2, 1, progress=False, p_empty=1.), 'train')
    dls = get_dls(empty + train[:6], valid, SHAPES, size=128, bs=8, shuffle=False)
    assert dls.vocab == ['#na#'] + SHAPES
    xb, bb, lb = (t.cpu() for t in dls.train.one_batch())   # on the DataLoaders' device (a GPU where there is one); compared on the CPU
    bb, lb = bb.as_subclass(torch.Tensor), lb.as_subclass(torch.Tensor)
    assert xb.shape == (8, 3, 128, 128) and bb.shape[:2] == lb.shape and bb.shape[-1] == 4
    assert lb.dtype == torch.int64
    assert (lb[:2] == 0).all() and (bb[:2] == 0).all()  # the two empty images: all padding
    assert (bb[lb == 0] == 0).all() and bb.min() >= -1 and bb.max() <= 1
    r = train[0]  # boxes in [-1,1] map back to the pixel boxes
    assert torch.allclose((bb[2][lb[2] > 0] + 1) / 2 * 224, r.boxes, atol=.05)
    assert [dls.vocab[i] for i in lb[2][lb[2] > 0]] == r.labels

def test_dls_errors(shapes_dir):
    with pytest.raises(DataError, match='training set is empty'): get_dls([], read_voc(shapes_dir, 'val'))

def test_load_dataset(shapes_dir, tmp_path):
    t, v, c = load_dataset(shapes_dir)
    assert (len(t), len(v), c) == (40, 10, SHAPES)
    to_coco(t + v, SHAPES, tmp_path / 'all.json')
    t, v, c = load_dataset(tmp_path / 'all.json', img_dir=shapes_dir / 'JPEGImages')
    assert (len(t), len(v), c) == (40, 10, SHAPES)
    with pytest.raises(DataError, match='no such file'): load_dataset(tmp_path / 'nope')
    with pytest.raises(DataError, match='not a VOC folder'): load_dataset(tmp_path)

def test_summarize(shapes_dir):
    s = summarize(read_voc(shapes_dir, 'train'), SHAPES)
    assert s.startswith('40 images') and 'objects per class: circle' in s
