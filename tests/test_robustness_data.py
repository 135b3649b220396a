"Issue 10, the data half: messy VOC / COCO folders and images are read as a viewer shows them, repaired with a warning, or refused with one clear error."
import json, math, time, warnings
import numpy as np, pytest, torch
from PIL import Image, ImageDraw, ImageOps
from ssd_tutorial.data import *

SZ = '<size><width>64</width><height>48</height></size>'

def obj(name, *b, extra=''):
    return (f'<object><name>{name}</name>{extra}<bndbox>' + ''.join(f'<{k}>{v}</{k}>' for k, v in zip(('xmin', 'ymin', 'xmax', 'ymax'), b))
            + '</bndbox></object>')

def voc(root, xml='', img=None, name='x.jpg', iid='x'):
    "Add image `name` (PIL image `img`, default grey 64x48) annotated by XML body `xml` to the VOC folder `root`, split 'train'."
    for d in ('JPEGImages', 'Annotations', 'ImageSets/Main'): (root / d).mkdir(parents=True, exist_ok=True)
    (img or Image.new('RGB', (64, 48), 'grey')).save(root / 'JPEGImages' / name, **({'format': 'JPEG'} if name.lower().endswith(('.jpg', '.jpeg')) else {}))
    (root / 'Annotations' / f'{iid}.xml').write_text(f'<annotation><filename>{name}</filename>{xml}</annotation>', encoding='utf-8')
    with open(root / 'ImageSets/Main/train.txt', 'a', encoding='utf-8') as f: f.write(f'{iid}\n')
    return root

def msgs(ws): return [str(w.message) for w in ws]

def exif(o):
    e = Image.Exif(); e[0x0112] = o; return e.tobytes()

def noise(w, h, seed=0): return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))

# ---------------------------------------------------------------- names and files

def test_names_with_spaces_unicode_and_upper_case_jpg(tmp_path):
    root = voc(tmp_path, SZ + obj(' traffic light ', 1, 1, 9, 9) + obj('chat noir é', 2, 2, 8, 8) + obj('猫', 3, 3, 7, 7), name='Été 01.JPG', iid='Été 01')
    r, = read_voc(root, classes=['traffic light', 'chat noir é', '猫'])
    assert r.fname == root / 'JPEGImages/Été 01.JPG' and r.labels == ['traffic light', 'chat noir é', '猫']
    check_images([r])  # decodes (the .JPG suffix does not matter)
    d = to_coco([r], fn=tmp_path / 'c.json')
    assert read_coco(tmp_path / 'c.json', root / 'JPEGImages')[0].labels == r.labels

def test_split_file_lines(tmp_path):
    root = voc(tmp_path, SZ, iid='my photo')  # an id with a space is the whole line
    voc(root, SZ, name='y.jpg', iid='y')
    (root / 'ImageSets/Main/cat_train.txt').write_text('my photo  1\ny -1\n')  # VOC's per-class split: `id  flag`
    assert [r.fname.name for r in read_voc(root)] == ['x.jpg', 'y.jpg']
    assert [r.fname.name for r in read_voc(root, 'cat_train')] == ['x.jpg', 'y.jpg']
    (root / 'ImageSets/Main/bad.txt').write_bytes('café\n'.encode('latin-1'))
    with pytest.raises(DataError, match=r'bad\.txt: cannot be read as UTF-8'): read_voc(root, 'bad')

# ---------------------------------------------------------------- images

def test_modes_become_rgb_as_a_viewer_shows_them(tmp_path):
    g = np.arange(48 * 64, dtype=np.uint8).reshape(48, 64)
    Image.fromarray(g).save(tmp_path / 'gray.png')
    assert (np.asarray(load_image(tmp_path / 'gray.png')) == g[..., None]).all()
    rgba = np.zeros((2, 2, 4), np.uint8); rgba[0, 0] = (255, 0, 0, 0); rgba[0, 1] = (0, 0, 0, 255); rgba[1, 0] = (0, 0, 0, 128); rgba[1, 1] = (0, 0, 255, 255)
    Image.fromarray(rgba).save(tmp_path / 'rgba.png')
    assert Image.open(tmp_path / 'rgba.png').convert('RGB').getpixel((0, 0)) == (255, 0, 0)  # what a plain convert shows
    a = np.asarray(load_image(tmp_path / 'rgba.png')).astype(int)
    assert a[0, 0].tolist() == [255, 255, 255] and a[0, 1].tolist() == [0, 0, 0] and a[1, 1].tolist() == [0, 0, 255]
    assert np.abs(a[1, 0] - 127).max() <= 1  # half transparent black over white
    Image.fromarray(np.array([[0, 200]], np.uint8), 'L').convert('LA').save(tmp_path / 'la.png')
    assert np.asarray(load_image(tmp_path / 'la.png')).tolist() == [[[0, 0, 0], [200, 200, 200]]]

def test_palette_with_transparency(tmp_path):
    p = Image.new('P', (3, 1)); p.putpalette([10, 20, 30, 200, 0, 0] + [0] * 762); p.putdata([0, 1, 0])
    p.save(tmp_path / 'p.png', transparency=0)
    assert list(load_image(tmp_path / 'p.png').getdata()) == [(255, 255, 255), (200, 0, 0), (255, 255, 255)]
    p.save(tmp_path / 'p.gif', transparency=0)
    assert list(load_image(tmp_path / 'p.gif').getdata()) == [(255, 255, 255), (200, 0, 0), (255, 255, 255)]
    p.save(tmp_path / 'opaque.png')  # no transparency: the palette's colours
    assert list(load_image(tmp_path / 'opaque.png').getdata()) == [(10, 20, 30), (200, 0, 0), (10, 20, 30)]

def test_cmyk_jpeg_and_one_bit(tmp_path):
    noise(16, 8).convert('CMYK').save(tmp_path / 'c.jpg')
    with Image.open(tmp_path / 'c.jpg') as im: assert im.mode == 'CMYK'; ref = np.asarray(im.convert('RGB'))
    im = load_image(tmp_path / 'c.jpg')
    assert im.mode == 'RGB' and (np.asarray(im) == ref).all()
    noise(16, 8).convert('1').save(tmp_path / 'b.png')
    assert set(np.unique(np.asarray(load_image(tmp_path / 'b.png')))) == {0, 255}

def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    a = np.linspace(0, 65535, 48 * 64).reshape(48, 64).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / 'd.png')
    with Image.open(tmp_path / 'd.png') as im: assert im.mode.startswith('I')
    assert (np.asarray(Image.open(tmp_path / 'd.png').convert('RGB')) == 255).mean() > .9  # a plain convert: white
    x = np.asarray(load_image(tmp_path / 'd.png')).astype(int)
    assert (x == np.round(a / 257).astype(int)[..., None]).all()
    assert (x == 255).mean() < .01
    # the same through the DataLoader's image type
    assert (np.asarray(CheckedPILImage.create(tmp_path / 'd.png')) == x).all()

def test_32_bit_and_float_images(tmp_path):
    Image.fromarray(np.array([[0, 1000, 65535]], np.int32), 'I').save(tmp_path / 'i.tif')  # 16-bit values in 32 bits
    with Image.open(tmp_path / 'i.tif') as im: assert im.mode == 'I'
    assert np.asarray(load_image(tmp_path / 'i.tif'))[0, :, 0].tolist() == [0, 4, 255]
    Image.fromarray(np.array([[-70000, 0, 70000]], np.int32), 'I').save(tmp_path / 'j.tif')  # any other range: stretched
    assert np.asarray(load_image(tmp_path / 'j.tif'))[0, :, 0].tolist() == [0, 128, 255]
    Image.fromarray(np.array([[0, .5, 1]], np.float32), 'F').save(tmp_path / 'f.tif')
    assert np.asarray(load_image(tmp_path / 'f.tif'))[0, :, 0].tolist() == [0, 128, 255]
    Image.fromarray(np.array([[-3, 0, 5]], np.float32), 'F').save(tmp_path / 'g.tif')  # any other range: stretched
    assert np.asarray(load_image(tmp_path / 'g.tif'))[0, :, 0].tolist() == [0, 96, 255]

@pytest.mark.parametrize('o', [2, 3, 4, 5, 6, 7, 8])
def test_exif_orientation(tmp_path, o):
    raw = noise(64, 48)
    raw.save(tmp_path / 'e.jpg', exif=exif(o), quality=95)
    raw.save(tmp_path / 'e.png', exif=exif(o))
    for f in ('e.jpg', 'e.png'):
        with Image.open(tmp_path / f) as im:
            assert im.size == (64, 48)
            ref = np.asarray(ImageOps.exif_transpose(im).convert('RGB'))
        im = load_image(tmp_path / f)
        assert im.size == image_size(tmp_path / f) == ((48, 64) if o >= 5 else (64, 48))
        assert (np.asarray(im) == ref).all()
        assert (np.asarray(CheckedPILImage.create(tmp_path / f)) == ref).all()

@pytest.mark.parametrize('o', [5, 6, 7, 8])
def test_boxes_drawn_on_the_stored_pixels_are_turned(tmp_path, o):
    m = Image.new('RGB', (64, 48)); ImageDraw.Draw(m).rectangle([3, 5, 12, 24], fill='white')  # stored pixels 3..12 x 5..24
    m.save(tmp_path / 't.png', exif=exif(o))
    root = voc(tmp_path / 'v', SZ + obj('a', 4, 6, 13, 25), name='t.png')
    (root / 'JPEGImages/t.png').write_bytes((tmp_path / 't.png').read_bytes())  # with its EXIF
    with pytest.warns(UserWarning, match=r'x\.xml: boxes drawn on the stored 64x48 pixels of t\.png, which its EXIF orientation turns to 48x64; boxes turned'):
        r, = read_voc(root)
    ys, xs = np.nonzero(np.asarray(load_image(root / 'JPEGImages/t.png'))[..., 0])
    assert r.size == (48, 64) and r.boxes.tolist() == [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]]
    # annotated on the image as shown (its size, 48x64): the boxes are taken as they are
    (root / 'Annotations/x.xml').write_text('<annotation><filename>t.png</filename><size><width>48</width><height>64</height></size>' + obj('a', 4, 6, 13, 25) + '</annotation>')
    with warnings.catch_warnings(): warnings.simplefilter('error'); r, = read_voc(root)
    assert r.boxes.tolist() == [[3, 5, 13, 25]]

def test_tiny_images(tmp_path):
    root = voc(tmp_path, '<size><width>1</width><height>1</height></size>' + obj('dot', 1, 1, 1, 1), Image.new('RGB', (1, 1), 'red'), 'one.png')
    voc(root, '<size><width>2</width><height>3</height></size>' + obj('bar', 2, 1, 2, 3), Image.new('RGB', (2, 3), 'blue'), 'two.png', 'y')
    r1, r2 = read_voc(root, check_images=True)
    assert (r1.size, r1.boxes.tolist(), r2.size, r2.boxes.tolist()) == ((1, 1), [[0, 0, 1, 1]], (2, 3), [[1, 0, 2, 3]])
    assert np.asarray(load_image(r1.fname)).tolist() == [[[255, 0, 0]]] and load_image(r2.fname).size == (2, 3)

def test_huge_image(tmp_path):
    Image.new('RGB', (6000, 4000), 'grey').save(tmp_path / 'huge.jpg', quality=50)
    t = time.perf_counter(); assert image_size(tmp_path / 'huge.jpg') == (6000, 4000); dt = time.perf_counter() - t
    assert dt < .5  # the header only (a full decode of 24 Mpixels takes far longer)
    check_image(tmp_path / 'huge.jpg')
    root = voc(tmp_path / 'v', '<size><width>6000</width><height>4000</height></size>' + obj('a', 1, 1, 6000, 4000))
    (root / 'JPEGImages/x.jpg').write_bytes((tmp_path / 'huge.jpg').read_bytes())
    r, = read_voc(root, check_images=True)
    assert r.size == (6000, 4000) and r.boxes.tolist() == [[0, 0, 6000, 4000]]

# ---------------------------------------------------------------- unreadable images

def test_every_unreadable_image_in_one_error(tmp_path):
    root = tmp_path / 'v'
    for i in range(9): voc(root, SZ + obj('a', 1, 1, 9, 9), noise(64, 48, i), f'{i}.jpg', f'i{i}')
    data = (root / 'JPEGImages/0.jpg').read_bytes()
    for i in (1, 3, 5, 6, 7, 8): (root / f'JPEGImages/{i}.jpg').write_bytes((root / f'JPEGImages/{i}.jpg').read_bytes()[:-1 - 50 * i])  # cut short
    read_voc(root)  # the headers are fine: nothing decoded
    with pytest.raises(DataError) as e: read_voc(root, check_images=True)
    m = str(e.value)
    assert m.startswith(str(root / 'ImageSets/Main/train.txt') + ': 6 images cannot be read; the first 5: ') and '\n' not in m
    assert [f'{i}.jpg: corrupt' in m for i in range(9)] == [False, True, False, True, False, True, True, True, False]  # the first five of six
    assert m.count('image file is truncated') == 5
    with pytest.raises(DataError, match='6 images cannot be read'): check_images(read_voc(root))
    to_coco(read_voc(root), fn=tmp_path / 'c.json')
    with pytest.raises(DataError, match=r'c\.json: 6 images cannot be read'): read_coco(tmp_path / 'c.json', root / 'JPEGImages', check_images=True)
    # a header that cannot be read, a missing file: found while reading, all of them together
    (root / 'JPEGImages/0.jpg').write_bytes(b'not an image'); (root / 'JPEGImages/2.jpg').unlink(); (root / 'JPEGImages/4.jpg').write_bytes(data[:100])
    with pytest.raises(DataError) as e: read_voc(root)
    m = str(e.value)
    assert '3 images cannot be read: ' in m and '0.jpg: corrupt' in m and '2.jpg not found' in m and '4.jpg: corrupt' in m

def test_truncation_is_caught_at_any_length(tmp_path):
    noise(128, 128).save(tmp_path / 'n.jpg', quality=90)
    data = (tmp_path / 'n.jpg').read_bytes()
    check_image(tmp_path / 'n.jpg')
    for cut in (400, len(data) // 2, len(data) - 20, len(data) - 3):  # the last 2 bytes are the end marker, the one before is data
        (tmp_path / 'c.jpg').write_bytes(data[:cut])
        with pytest.raises(DataError, match=r'c\.jpg: corrupt or unreadable image'): check_image(tmp_path / 'c.jpg')
        with pytest.raises(DataError, match=r'c\.jpg: corrupt or unreadable image'): load_image(tmp_path / 'c.jpg')
    (tmp_path / 'c.jpg').write_bytes(data[:-2])  # only the end marker missing: every pixel is there, and the file is fine
    check_image(tmp_path / 'c.jpg')
    assert (np.asarray(load_image(tmp_path / 'c.jpg')) == np.asarray(load_image(tmp_path / 'n.jpg'))).all()
    with pytest.raises(DataError, match=r'nope\.jpg: image file not found'): load_image(tmp_path / 'nope.jpg')

# ---------------------------------------------------------------- VOC annotations

def test_object_less_xml(tmp_path):
    with warnings.catch_warnings(): warnings.simplefilter('error'); r, = read_voc(voc(tmp_path, SZ))
    assert len(r) == 0 and r.boxes.shape == (0, 4) and r.size == (64, 48)

def test_swapped_corners_are_put_in_order(tmp_path):
    with pytest.warns(UserWarning, match=r"x\.xml: <bndbox> of 'a' has its corners swapped \(30, 20, 10, 5\); put in order"):
        r, = read_voc(voc(tmp_path, SZ + obj('a', 30, 20, 10, 5) + obj('b', 5, 5, 5, 5)))
    assert r.labels == ['a', 'b'] and r.boxes.tolist() == [[9, 4, 30, 20], [4, 4, 5, 5]]  # b: one pixel, kept

def test_negative_and_outside_boxes(tmp_path):
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter('always')
        r, = read_voc(voc(tmp_path, SZ + obj('neg', -9, -3, 20, 20) + obj('out', 50, 40, 90, 70) + obj('gone', 70, 50, 80, 60)))
    m = msgs(ws)
    assert sum('lies outside the 64x48 image; clipped' in s for s in m) == 3 and sum('zero area; dropped' in s for s in m) == 1
    assert all('x.xml' in s for s in m)
    assert r.labels == ['neg', 'out'] and r.boxes.tolist() == [[0, 0, 20, 20], [49, 39, 64, 48]]

def test_non_finite_coordinates(tmp_path):
    for i, v in enumerate(('nan', 'inf', '-inf', '1e999', 'x', '')):
        root = voc(tmp_path / str(i), SZ + obj('a', 1, 1, v, 9))
        with pytest.raises(DataError, match=r'x\.xml: (non-numeric or infinite <xmax> in <bndbox>|missing <xmax> in <bndbox>)'): read_voc(root)

def test_size_mismatch_rescales_with_a_warning(tmp_path):
    root = voc(tmp_path, '<size><width>128</width><height>96</height></size>' + obj('a', 11, 11, 70, 50))
    with pytest.warns(UserWarning, match=r'x\.xml: annotated image size 128x96 differs from the size of x\.jpg, 64x48; boxes rescaled'):
        r, = read_voc(root)
    assert r.size == (64, 48) and r.boxes.tolist() == [[5, 5, 35, 25]]
    d = to_coco([r]); d['images'][0].update(width=32, height=24); (tmp_path / 'c.json').write_text(json.dumps(d))
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter('always'); r2, = read_coco(tmp_path / 'c.json', root / 'JPEGImages')
    assert msgs(ws) == [f"{tmp_path / 'c.json'} (image x.jpg): annotated image size 32x24 differs from the size of x.jpg, 64x48; boxes rescaled to it",
                        f"{tmp_path / 'c.json'} (image x.jpg): box [10, 10, 70, 50] of 'a' lies outside the 64x48 image; clipped to [10, 10, 64, 48]"]
    assert r2.boxes.tolist() == [[10, 10, 64, 48]]  # [5, 5, 35, 25] rescaled x2, then clipped to the image

def test_size_zero_or_missing(tmp_path):
    for i, size in enumerate(['<size><width>0</width><height>0</height></size>', '', '<size><depth>3</depth></size>', '<size><width></width><height>48</height></size>']):
        root = voc(tmp_path / str(i), size + obj('a', 1, 1, 10, 10))
        with pytest.warns(UserWarning, match=r'x\.xml: no image size given; using the size of x\.jpg, 64x48'): r, = read_voc(root)
        assert r.size == (64, 48) and r.boxes.tolist() == [[0, 0, 10, 10]]
    d = to_coco([r]); d['images'][0].update(width=0, height=0); (tmp_path / 'c.json').write_text(json.dumps(d))
    with pytest.warns(UserWarning, match='no image size given'): assert read_coco(tmp_path / 'c.json', root / 'JPEGImages')[0].size == (64, 48)

def test_xml_that_is_not_utf8_or_not_xml(tmp_path):
    root = voc(tmp_path, SZ)
    f = root / 'Annotations/x.xml'
    f.write_bytes(f'<annotation><filename>x.jpg</filename>{SZ}{obj("café", 1, 1, 9, 9)}</annotation>'.encode('latin-1'))
    with pytest.raises(DataError, match=r'x\.xml: malformed XML \(.*\); not UTF-8 text either'): read_voc(root)
    f.write_bytes(f'<?xml version="1.0" encoding="ISO-8859-1"?><annotation><filename>x.jpg</filename>{SZ}{obj("café", 1, 1, 9, 9)}</annotation>'.encode('latin-1'))
    assert read_voc(root)[0].labels == ['café']  # an encoding it declares is fine
    for garbage in (bytes(range(256)) * 4, b'\x89PNG\r\n\x1a\n' + bytes(100), b'', b'<?xml version="1.0" encoding="klingon"?><a/>'):
        f.write_bytes(garbage)
        with pytest.raises(DataError, match=r'x\.xml: malformed XML'): read_voc(root)
    f.unlink()
    with pytest.raises(DataError, match=r'x\.xml: annotation file not found'): read_voc(root)
    f.mkdir()
    with pytest.raises(DataError, match=r'x\.xml: cannot be read'): read_voc(root)

def test_json_that_is_not_utf8_or_not_json(tmp_path):
    f = tmp_path / 'c.json'
    for data, msg in [('{"images": [{"file_name": "été.jpg"}]}'.encode('latin-1'), 'not UTF-8 text'), (b'\x89PNG\r\n\x1a\n' + bytes(100), 'not UTF-8 text'),
                      (bytes(range(256)) * 4, '(not UTF-8 text|malformed JSON)'), (b'', 'malformed JSON'), (b'[' * 100000, 'malformed JSON')]:
        f.write_bytes(data)
        with pytest.raises(DataError, match=rf'c\.json: {msg}'): read_coco(f)
    with pytest.raises(DataError, match=r'nope\.json: file not found'): read_coco(tmp_path / 'nope.json')
    f.write_text(json.dumps(dict(images=[], annotations=[], categories=[])), encoding='utf-8-sig')  # a BOM is fine
    assert read_coco(f) == []

# ---------------------------------------------------------------- COCO fields

@pytest.fixture
def coco(tmp_path):
    "A valid COCO dict with one image x.jpg (64x48) in `tmp_path`, and a function writing a dict to c.json."
    Image.new('RGB', (64, 48), 'grey').save(tmp_path / 'x.jpg')
    d = dict(images=[dict(id=1, file_name='x.jpg', width=64, height=48)],
             annotations=[dict(id=17, image_id=1, category_id=3, bbox=[1, 2, 10, 20])], categories=[dict(id=3, name='cat')])
    def write(d): (tmp_path / 'c.json').write_text(json.dumps(d)); return tmp_path / 'c.json'
    return d, write

BAD = [  # (change to the valid dict, message after 'c.json: ')
    (lambda d: d.update(images=None), "'images' must be a list, got None"),
    (lambda d: d.update(annotations={'id': 1}), "'annotations' must be a list, got {'id': 1}"),
    (lambda d: d.pop('categories'), "missing key 'categories'"),
    (lambda d: d['images'].__setitem__(0, 'x.jpg'), "image #0 must be an object {...}, got 'x.jpg'"),
    (lambda d: d['images'][0].pop('id'), "image #0: missing 'id'"),
    (lambda d: d['images'][0].update(id=1.5), "image #0: 'id' must be a number or a string, got 1.5"),
    (lambda d: d['images'][0].update(id=True), "image #0: 'id' must be a number or a string, got True"),
    (lambda d: d['images'][0].pop('file_name'), "image #0 (id 1): missing 'file_name'"),
    (lambda d: d['images'][0].update(file_name=7), "image #0 (id 1): 'file_name' must be a file name, got 7"),
    (lambda d: d['images'][0].pop('width'), "image #0 (id 1): missing 'width'"),
    (lambda d: d['images'][0].update(width='64'), "image #0 (id 1): 'width' must be a number, got '64'"),
    (lambda d: d['images'][0].pop('height'), "image #0 (id 1): missing 'height'"),
    (lambda d: d['images'][0].update(height=[48]), "image #0 (id 1): 'height' must be a number, got [48]"),
    (lambda d: d['annotations'][0].pop('id'), "annotation #0: missing 'id'"),
    (lambda d: d['annotations'][0].update(id=None), "annotation #0: 'id' must be a number or a string, got None"),
    (lambda d: d['annotations'][0].pop('image_id'), "annotation #0 (id 17): missing 'image_id'"),
    (lambda d: d['annotations'][0].update(image_id=[1]), "annotation #0 (id 17): 'image_id' must be a number or a string, got [1]"),
    (lambda d: d['annotations'][0].pop('category_id'), "annotation #0 (id 17): missing 'category_id'"),
    (lambda d: d['annotations'][0].update(category_id=9), "annotation #0 (id 17): unknown category_id 9"),
    (lambda d: d['annotations'][0].update(category_id='3'), "annotation #0 (id 17): unknown category_id '3'"),
    (lambda d: d['annotations'][0].pop('bbox'), "annotation #0 (id 17): missing 'bbox'"),
    (lambda d: d['annotations'][0].update(bbox=[1, 2, 10]), "annotation #0 (id 17): 'bbox' must be 4 numbers [x, y, w, h], got [1, 2, 10]"),
    (lambda d: d['annotations'][0].update(bbox=[1, 2, '10', 20]), "annotation #0 (id 17): 'bbox' must be 4 numbers [x, y, w, h], got [1, 2, '10', 20]"),
    (lambda d: d['annotations'][0].update(bbox=[1, 2, float('nan'), 20]), "annotation #0 (id 17): 'bbox' must be 4 numbers [x, y, w, h], got [1, 2, nan, 20]"),
    (lambda d: d['annotations'][0].update(bbox='1 2 10 20'), "annotation #0 (id 17): 'bbox' must be 4 numbers [x, y, w, h], got '1 2 10 20'"),
    (lambda d: d['annotations'][0].update(iscrowd='no'), "annotation #0 (id 17): 'iscrowd' must be 0 or 1, got 'no'"),
    (lambda d: d['annotations'].append(7), "annotation #1 must be an object {...}, got 7"),
    (lambda d: d['categories'][0].pop('id'), "category #0: missing 'id'"),
    (lambda d: d['categories'][0].pop('name'), "category #0 (id 3): missing 'name'"),
    (lambda d: d['categories'][0].update(name=3), "category #0 (id 3): 'name' must be a string, got 3"),
    (lambda d: d['categories'].append(dict(id=3, name='dog')), "category #1: id 3 is used twice"),
    (lambda d: d['images'].append(dict(d['images'][0], file_name='y.jpg')), "image #1: id 1 is also the id of an earlier image"),
]

@pytest.mark.parametrize('change,msg', BAD, ids=[m[:40] for _, m in BAD])
def test_coco_field_missing_or_wrong(coco, tmp_path, change, msg):
    d, write = coco
    read_coco(write(d))  # valid as it is
    change(d)
    with pytest.raises(DataError) as e: read_coco(write(d))
    assert str(e.value) == f'{tmp_path / "c.json"}: {msg}'

def test_coco_top_level_not_an_object(coco):
    d, write = coco
    with pytest.raises(DataError, match=r"c\.json: must hold an object with 'images', 'annotations' and 'categories', got \["): read_coco(write([d]))

def test_coco_string_ids_and_extra_keys(coco, tmp_path):
    d, write = coco
    d.update(info={'year': 2024}, licenses=[])
    d['images'][0].update(id='img_001', license=3, coco_url='http://x')
    d['annotations'][0].update(id='a1', image_id='img_001', category_id='cat', segmentation=[[1, 2, 3]], area=200, score=None)
    d['categories'][0].update(id='cat', supercategory='animal')
    r, = read_coco(write(d))
    assert r.labels == ['cat'] and r.boxes.tolist() == [[1, 2, 11, 22]] and r.crowd.tolist() == [False]
    d['images'].append(dict(id=2, file_name='x.jpg', width=64, height=48))  # int and string ids side by side
    d['annotations'].append(dict(id=5, image_id=2, category_id='cat', bbox=[0, 0, 4, 4]))
    r1, r2 = read_coco(write(d))
    assert len(r1) == 1 and r2.boxes.tolist() == [[0, 0, 4, 4]]
    assert load_dataset(write(d))[2] == ['cat']

def test_coco_orphan_annotations_warn(coco):
    d, write = coco
    d['annotations'] += [dict(id=i, image_id=iid, category_id=3, bbox=[0, 0, 5, 5]) for i, iid in enumerate([9, '1', 9, 10, 11, 12, 13], 100)]
    with pytest.warns(UserWarning, match=r"c\.json: left out 7 annotation\(s\) whose image_id matches no image: 9, '1', 10, 11, 12, \.\.\.$"):
        r, = read_coco(write(d))
    assert len(r) == 1

def test_coco_negative_width_is_put_in_order(coco):
    d, write = coco
    d['annotations'][0]['bbox'] = [30, 2, -10, 20]
    with pytest.warns(UserWarning, match=r"corners swapped; put in order: \[20, 2, 30, 22\]"): r, = read_coco(write(d))
    assert r.boxes.tolist() == [[20, 2, 30, 22]]

def test_crowd_regions_are_kept_but_not_trained_on(coco, tmp_path):
    d, write = coco
    d['annotations'] += [dict(id=18, image_id=1, category_id=3, bbox=[30, 20, 30, 25], iscrowd=1),
                         dict(id=19, image_id=1, category_id=3, bbox=[40, 5, 10, 10], iscrowd=0)]
    r, = read_coco(write(d))
    assert r.crowd.tolist() == [False, True, False] and r.labels == ['cat'] * 3
    assert 'crowd' in summarize([r])
    back = to_coco([r], ['cat'])
    assert [a['iscrowd'] for a in back['annotations']] == [0, 1, 0]
    dls = get_dls([r, r], [r], ['cat'], size=64, bs=2, shuffle=False)
    bb, lb = (t.as_subclass(torch.Tensor).cpu() for t in dls.train.one_batch()[1:])   # the batch may be on a GPU
    assert lb.tolist() == [[1, 1], [1, 1]]  # two objects per image, not three
    assert torch.allclose((bb[0] + 1) / 2 * torch.tensor([64, 48, 64, 48]), r.boxes[~r.crowd], atol=1e-3)

# ---------------------------------------------------------------- the record

def test_record_positional_order_and_lengths():
    r = Record('a.jpg', [[1, 2, 3, 4]], ['x'], [True], [False], (8, 8), [True])
    assert r.size == (8, 8) and r.crowd.tolist() == [True] and r.truncated.tolist() == [False]
    assert Record('a.jpg', [[1, 2, 3, 4]], ['x'], [False]).crowd.tolist() == [False]
    with pytest.raises(ValueError, match='differ in length'): Record('a.jpg', [[1, 2, 3, 4]], ['x', 'y'], [False, False])

# ---------------------------------------------------------------- where make_shapes writes

def _snapshot(p): return {f.relative_to(p).as_posix(): f.read_bytes() for f in p.rglob('*') if f.is_file()}

def test_get_shapes_refuses_a_voc_folder(tmp_path):
    root = voc(tmp_path / 'mine', SZ + obj('a', 1, 1, 9, 9), iid='train_00000', name='train_00000.jpg')  # looks a lot like ours
    before = _snapshot(root)
    with pytest.raises(DataError, match=r'mine: refusing to write the shapes dataset into a folder that is not empty and is not a shapes dataset \(no shapes\.json\)$'):
        get_shapes(3, 1, path=root, progress=False)
    with pytest.raises(DataError, match='no shapes.json'): make_shapes(root, 3, 1, progress=False)
    assert _snapshot(root) == before
    (tmp_path / 'f').write_text('x')
    with pytest.raises(DataError, match='exists and is not a folder'): get_shapes(3, 1, path=tmp_path / 'f', progress=False)

def test_get_shapes_refuses_a_folder_with_a_stray_file(tmp_path):
    p = get_shapes(3, 1, path=tmp_path / 's', progress=False)
    for stray, shown in [('notes.txt',) * 2, ('JPEGImages/train_00000.png',) * 2, ('Annotations/extra/train_00000.xml', 'Annotations/extra'), ('ImageSets/Main/test.txt',) * 2]:
        (p / stray).parent.mkdir(parents=True, exist_ok=True); (p / stray).write_text('mine')
        before = _snapshot(p)
        with pytest.raises(DataError, match=f"'{shown}' was not written by make_shapes"): get_shapes(4, 1, path=p, progress=False)
        assert _snapshot(p) == before
        (p / stray).unlink()
        if stray.startswith('Annotations/extra'): (p / 'Annotations/extra').rmdir()

def test_get_shapes_regenerates_its_own_folder(tmp_path):
    p = get_shapes(4, 2, path=tmp_path / 's', progress=False)
    q = get_shapes(2, 1, size=64, path=p, progress=False)  # other settings: the old files go
    assert q == p and sorted(f.name for f in (p / 'JPEGImages').iterdir()) == ['train_00000.jpg', 'train_00001.jpg', 'val_00000.jpg']
    assert len(read_voc(p)) == 2 and read_voc(p)[0].size == (64, 64) and json.loads((p / 'shapes.json').read_text())['size'] == 64
    (tmp_path / 'empty').mkdir()
    assert len(read_voc(get_shapes(2, 1, path=tmp_path / 'empty', progress=False))) == 2
    (p / 'shapes.json').write_text('{"incomplete": true}')  # as an interrupted make_shapes leaves it
    get_shapes(2, 1, size=64, path=p, progress=False)
    assert json.loads((p / 'shapes.json').read_text())['n_train'] == 2

def test_check_images_many(tmp_path):
    "A thousand images or more are checked behind a progress bar, and a broken one among them is still named."
    fns = []
    for i in range(1000):
        fns.append(tmp_path / f'{i}.png'); Image.new('RGB', (4, 4)).save(fns[-1])
    check_images(fns)
    (tmp_path / '7.png').write_bytes(b'not an image')
    with pytest.raises(DataError, match=r'7\.png'): check_images(fns)
