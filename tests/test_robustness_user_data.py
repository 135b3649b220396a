"A user's own photos, folders and checkpoints (issue 22): nothing overwritten, pictures right at any decode size, the whole test set scored, valid input accepted."
import json, shutil, numpy as np, pytest, torch
from pathlib import Path
from PIL import Image
from ssd_tutorial import files as files_mod, inference
from ssd_tutorial.data import SHAPES, DataError, ImageError, get_shapes, read_voc, to_coco, write_voc_xml, image_size, check_image, load_image
from ssd_tutorial.model import grid_model
from ssd_tutorial.checkpoint import save_checkpoint
from ssd_tutorial.train import load_checkpoint
from ssd_tutorial.metrics import evaluate
from ssd_tutorial.train import stage_priors, stage_detect, train_detector
from ssd_tutorial.cli import main

@pytest.fixture(scope='module')
def shapes():
    return get_shapes(32, 8, size=128, difficulty='easy', progress=False)

def ckpt_of(path, classes=SHAPES, seed=0):
    "An untrained 4x4-grid checkpoint of `classes` (random weights: its few low scores still depend on the image)."
    torch.manual_seed(seed)
    return save_checkpoint(grid_model(len(classes), backbone='resnet18', size=128), path, stage='grid4x4', classes=list(classes),
                           size=128, backbone='resnet18', loss='bce', model_kw={})

@pytest.fixture(scope='module')
def ckpt(tmp_path_factory): return ckpt_of(tmp_path_factory.mktemp('ck') / 'grid4x4.pth')

def err_of(capsys): return capsys.readouterr().err.strip()

# --- 1. nothing overwritten that predict did not write ------------------------------------------------------------

def photos(d:Path, n=2)->Path:
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n): Image.fromarray(np.random.default_rng(i).integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(d / f'photo{i}.png')
    return d

def test_predict_refuses_an_out_folder_that_holds_the_inputs(ckpt, tmp_path, capsys):
    d = photos(tmp_path / 'photos')
    before = {f.name: f.read_bytes() for f in d.iterdir()}
    assert main(['predict', '--ckpt', str(ckpt), str(d), '--out', str(d)]) == 1
    assert 'holds input images (photo0.png, photo1.png)' in err_of(capsys)
    assert {f.name: f.read_bytes() for f in d.iterdir()} == before               # every byte, and no file added
    assert main(['predict', '--ckpt', str(ckpt), str(d / 'photo0.png'), '--out', str(d)]) == 1   # a single file too
    assert {f.name: f.read_bytes() for f in d.iterdir()} == before

def test_predict_never_writes_over_a_users_file(ckpt, tmp_path, capsys):
    d, out = photos(tmp_path / 'photos'), tmp_path / 'out'
    out.mkdir(); Image.new('RGB', (7, 7), 'red').save(out / 'photo1.png')         # the user's own picture, an output's name
    mine = (out / 'photo1.png').read_bytes()
    assert main(['predict', '--ckpt', str(ckpt), str(d), '--out', str(out)]) == 1
    assert 'already holds photo1.png, not written by predict' in err_of(capsys)
    assert (out / 'photo1.png').read_bytes() == mine and sorted(p.name for p in out.iterdir()) == ['photo1.png']
    (out / 'photo1.png').unlink()
    for _ in range(2):                                                           # its own files: a second run writes over them
        assert main(['predict', '--ckpt', str(ckpt), str(d), '--out', str(out)]) == 0
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith('.')) == ['detections.json', 'photo0.png', 'photo1.png']
    (tmp_path / 'o2').mkdir(); (tmp_path / 'o2' / 'detections.json').write_text('[1, 2]')   # a detections.json of evaluate's, say
    assert main(['predict', '--ckpt', str(ckpt), str(d), '--out', str(tmp_path / 'o2')]) == 1
    assert 'already holds detections.json' in err_of(capsys) and (tmp_path / 'o2' / 'detections.json').read_text() == '[1, 2]'

# --- 2. pictures right at any decode size -------------------------------------------------------------------------

@pytest.mark.parametrize('fast', [False, True])
def test_drawn_boxes_are_the_detections_scaled_to_the_saved_picture(ckpt, tmp_path, fast):
    d = tmp_path / 'in'; d.mkdir()
    Image.new('RGB', (2400, 1800), (128, 128, 128)).save(d / 'big.jpg', quality=95)
    out = tmp_path / 'out'
    assert main(['predict', '--ckpt', str(ckpt), str(d), '--out', str(out), '--score-thresh', '0.04', *(['--fast-decode'] if fast else [])]) == 0
    pic = np.asarray(Image.open(out / 'big.png')).astype(int)
    dets = json.loads((out / 'detections.json').read_text())
    W, H = pic.shape[1], pic.shape[0]
    assert (W, H) == ((300, 225) if fast else (2400, 1800)) and len(dets) > 0   # a fast decode reads this JPEG at 1/8
    drawn = np.abs(pic - 128).sum(-1) > 30                                       # pixels of boxes and captions
    s = W / 2400
    for r in dets:
        x, y, w, h = (v * s for v in r['bbox'])
        for px, py in ((x, y + h / 2), (x + w / 2, y), (x + w - 1, y + h / 2), (x + w / 2, y + h - 1)):   # the middle of each side
            assert drawn[min(int(py), H - 1), min(int(px), W - 1)], (r, px, py)
    ys, xs = np.nonzero(drawn)                                                   # and nothing drawn outside the boxes
    x1, y1 = min(r['bbox'][0] for r in dets) * s, min(r['bbox'][1] for r in dets) * s
    x2, y2 = max(r['bbox'][0] + r['bbox'][2] for r in dets) * s, max(r['bbox'][1] + r['bbox'][3] for r in dets) * s
    assert xs.min() >= x1 - 2 and ys.min() >= y1 - 2 and xs.max() <= x2 + 2 and ys.max() <= y2 + 2

# --- 3. evaluation scores what the user names ---------------------------------------------------------------------

@pytest.fixture(scope='module')
def coco(shapes, tmp_path_factory):
    "The 40 shapes images in one COCO file, and the same file with its category ids in reverse order."
    d = tmp_path_factory.mktemp('coco')
    recs = read_voc(shapes, 'train', SHAPES)[:12] + read_voc(shapes, 'val', SHAPES)
    to_coco(recs, SHAPES, d / 'my.json')
    j = json.loads((d / 'my.json').read_text())
    back = {c['id']: 10 + len(SHAPES) - c['id'] for c in j['categories']}          # ids 14..10, listed in reverse
    j['categories'] = [dict(id=back[c['id']], name=c['name']) for c in reversed(j['categories'])]
    for a in j['annotations']: a['category_id'] = back[a['category_id']]
    for o in j['images'] + j['annotations']: o['id' if 'file_name' in o else 'image_id'] += 100   # image ids 101..120
    (d / 'reordered.json').write_text(json.dumps(j))
    return d, recs

def test_evaluate_scores_every_image_of_a_coco_file(ckpt, coco, tmp_path, capsys):
    d, recs = coco
    assert main(['evaluate', '--ckpt', str(ckpt), '--data', str(d / 'my.json'), '--img-dir', str(recs[0].fname.parent), '--out', str(tmp_path / 'e')]) == 0
    assert f'on 20 images: every image of {d / "my.json"}' in capsys.readouterr().out
    got = json.loads((tmp_path / 'e' / 'metrics.json').read_text())
    model, _ = load_checkpoint(ckpt)
    want = evaluate(model, recs, SHAPES, *stage_priors('grid4x4', model, 128), 128, progress=False, detect=stage_detect('bce'))
    assert got['coco']['AP'] == pytest.approx(want['coco']['AP'], abs=1e-9) and got['voc07']['mAP'] == pytest.approx(want['voc07']['mAP'], abs=1e-9)
    assert {r['image_id'] for r in json.loads((tmp_path / 'e' / 'detections.json').read_text())} <= set(range(1, 21))
    assert main(['evaluate', '--ckpt', str(ckpt), '--data', str(d / 'my.json'), '--img-dir', str(recs[0].fname.parent), '--split', 'holdout', '--out', str(tmp_path / 'h')]) == 0
    assert 'on 4 images: the 20% of' in capsys.readouterr().out

def test_evaluate_matches_coco_categories_by_name_whatever_their_ids(ckpt, coco, tmp_path, capsys):
    d, recs = coco
    for f in ('my', 'reordered'):
        assert main(['evaluate', '--ckpt', str(ckpt), '--data', str(d / f'{f}.json'), '--img-dir', str(recs[0].fname.parent), '--out', str(tmp_path / f)]) == 0, capsys.readouterr().err
    a, b = (json.loads((tmp_path / f / 'metrics.json').read_text()) for f in ('my', 'reordered'))
    assert a == b and set(a['voc07']['AP']) == set(SHAPES)
    dets = json.loads((tmp_path / 'reordered' / 'detections.json').read_text())  # in the file's own ids: pycocotools scores them against it
    assert {r['image_id'] for r in dets} <= set(range(101, 121)) and {r['category_id'] for r in dets} <= set(range(10, 15))
    assert all(r['file_name'].endswith('.jpg') and r['category_name'] in SHAPES for r in dets)
    import contextlib, io
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(d / 'reordered.json')); e = COCOeval(gt, gt.loadRes(dets), 'bbox'); e.evaluate(); e.accumulate(); e.summarize()
    assert e.stats[0] == pytest.approx(b['coco']['AP'], abs=1e-9)

def voc_folder(root:Path, shapes:Path, splits:dict, rename=None)->Path:
    "A VOC folder at `root` with the shapes images of `splits` ({split: ids}), labels renamed by `rename`."
    for s in ('JPEGImages', 'Annotations', 'ImageSets/Main'): (root / s).mkdir(parents=True, exist_ok=True)
    for split, ids in splits.items():
        for i in ids:
            r, = [x for x in read_voc(shapes, 'val', SHAPES) if x.fname.stem == i]
            shutil.copy(r.fname, root / 'JPEGImages' / r.fname.name)
            labels = [rename(l) for l in r.labels] if rename else r.labels
            write_voc_xml(root / 'Annotations' / f'{i}.xml', r.fname.name, r.size, r.boxes, labels)
        (root / 'ImageSets/Main' / f'{split}.txt').write_text(''.join(f'{i}\n' for i in ids))
    return root

@pytest.mark.parametrize('split', ['val', 'test'])
def test_evaluate_a_test_only_voc_folder(ckpt, shapes, tmp_path, capsys, split):
    root = voc_folder(tmp_path / 'voc', shapes, {split: [f'val_{i:05d}' for i in range(6)]})
    assert main(['evaluate', '--ckpt', str(ckpt), '--data', str(root), '--out', str(tmp_path / 'e')]) == 0, capsys.readouterr().err
    assert f'on 6 images: the {split} split of {root}' in capsys.readouterr().out
    voc_folder(root, shapes, {'val': ['val_00000']})                             # with test.txt and val.txt, test is scored
    assert main(['evaluate', '--ckpt', str(ckpt), '--data', str(root), '--out', str(tmp_path / 'e')]) == 0
    assert f'on {6 if split == "test" else 1} images' in capsys.readouterr().out
    (root / 'ImageSets/Main/test.txt').unlink(missing_ok=True); (root / 'ImageSets/Main/val.txt').unlink()
    (root / 'ImageSets/Main/trainval.txt').write_text('val_00000\n')
    assert main(['evaluate', '--ckpt', str(ckpt), '--data', str(root), '--out', str(tmp_path / 'e')]) == 1
    assert "no ImageSets/Main/test.txt or val.txt to evaluate on (splits here: ['trainval'])" in err_of(capsys)
    assert main(['evaluate', '--ckpt', str(ckpt), '--data', str(root), '--split', 'trainval', '--out', str(tmp_path / 'e')]) == 0

def test_evaluate_takes_the_classes_of_the_checkpoint(shapes, tmp_path, capsys):
    "A cat/dog checkpoint on a set whose train split has only dogs: the classes come from the checkpoint, not the data."
    ck = ckpt_of(tmp_path / 'pets.pth', ['cat', 'dog'])
    pet = lambda l: 'cat' if l in ('circle', 'star') else 'dog'
    root = voc_folder(tmp_path / 'voc', shapes, {'val': [f'val_{i:05d}' for i in range(8)]}, rename=pet)
    voc_folder(root, shapes, {'train': ['val_00001']}, rename=lambda l: 'dog')
    labels = {l for r in read_voc(root, 'val') for l in r.labels}
    assert labels == {'cat', 'dog'}
    assert main(['evaluate', '--ckpt', str(ck), '--data', str(root), '--out', str(tmp_path / 'e')]) == 0, capsys.readouterr().err
    assert set(json.loads((tmp_path / 'e' / 'metrics.json').read_text())['voc07']['AP']) == {'cat', 'dog'}

def test_a_class_the_checkpoint_does_not_know_is_named(shapes, tmp_path, capsys):
    ck = ckpt_of(tmp_path / 'pets.pth', ['cat', 'dog'])
    root = voc_folder(tmp_path / 'voc', shapes, {'val': ['val_00000', 'val_00001']}, rename=lambda l: 'bird' if l == 'star' else 'dog')
    assert any('bird' in r.labels for r in read_voc(root, 'val'))
    assert main(['evaluate', '--ckpt', str(ck), '--data', str(root), '--out', str(tmp_path / 'e')]) == 1
    err = err_of(capsys)
    assert "class 'bird' (e.g. in val_0000" in err and "is not among the model's classes ['cat', 'dog']" in err and len(err.splitlines()) == 1

# --- 4. big photos, checkpoint paths, broken checkpoint configs, nothing to learn ----------------------------------

def test_a_180_megapixel_photo_is_read(tmp_path):
    fn = tmp_path / 'big.jpg'
    Image.new('L', (15000, 12000), 90).save(fn, quality=50)                     # 180 Mpx: Pillow alone refuses it
    with pytest.raises(Image.DecompressionBombError): Image.open(fn)
    assert image_size(fn) == (15000, 12000)
    check_image(fn)
    im = files_mod._load(fn, draft=300)                                           # as predict --fast-decode reads it
    assert im.info['full_size'] == (15000, 12000) and im.mode == 'RGB' and min(im.size) >= 300
    assert Image.MAX_IMAGE_PIXELS == 89478485                                    # Pillow's own limit is left as it was

def test_a_photo_over_the_cap_says_so(tmp_path, monkeypatch):
    Image.new('RGB', (200, 100), 'red').save(tmp_path / 'a.png')
    monkeypatch.setattr(files_mod, 'MAX_PIXELS', 10_000)
    for f in (image_size, check_image, load_image):
        with pytest.raises(ImageError, match=r'a\.png: 200x100 pixels \(0 Mpx\) is more than the 0 Mpx this package reads \(ssd_tutorial\.files\.MAX_PIXELS\)'): f(tmp_path / 'a.png')

def test_ckpt_is_the_path_given_whatever_its_suffix(ckpt, shapes, tmp_path, capsys):
    pt = tmp_path / 'model.pt'
    shutil.copy(ckpt, pt); shutil.copy(ckpt.with_suffix('.json'), tmp_path / 'model.json')
    m1, c1 = load_checkpoint(ckpt); m2, c2 = load_checkpoint(pt)
    assert c1 == c2 and all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    assert main(['evaluate', '--ckpt', str(pt), '--data', str(shapes), '--n-train', '32', '--n-valid', '8', '--out', str(tmp_path / 'e')]) == 0
    photos(tmp_path / 'p', 1)
    assert main(['predict', '--ckpt', str(pt), str(tmp_path / 'p'), '--out', str(tmp_path / 'o')]) == 0
    (tmp_path / 'model.json').unlink()
    assert main(['predict', '--ckpt', str(pt), str(tmp_path / 'p'), '--out', str(tmp_path / 'o')]) == 1
    err = err_of(capsys)
    assert 'model.json: checkpoint config not found' in err and 'model.pth' not in err
    shutil.copy(ckpt, tmp_path / 'noext'); shutil.copy(ckpt.with_suffix('.json'), tmp_path / 'noext.json')
    assert load_checkpoint(tmp_path / 'noext')[1] == c1
    shutil.copy(ckpt, tmp_path / 'plain.pth'); shutil.copy(ckpt.with_suffix('.json'), tmp_path / 'plain.json')
    assert load_checkpoint(tmp_path / 'plain')[1] == c1                          # a name without its .pth still finds it

@pytest.mark.parametrize('field,value,msg', [
    ('size', 'big', "'size' must be a positive whole number of pixels, got \"big\""),
    ('size', 0, "'size' must be a positive whole number of pixels, got 0"),
    ('classes', [], "'classes' must be a non-empty list of distinct class names, got []"),
    ('classes', 'cat', "'classes' must be a non-empty list of distinct class names, got \"cat\""),
    ('model_kw', [1], "'model_kw' must be an object {...}, got [1]"),
    ('size', 7, 'no grid4x4 model can be built from it (image size 7')])
def test_a_hand_edited_checkpoint_config_names_the_file_and_field(ckpt, tmp_path, capsys, field, value, msg):
    shutil.copy(ckpt, tmp_path / 'c.pth')
    cfg = json.loads(ckpt.with_suffix('.json').read_text()); cfg[field] = value
    (tmp_path / 'c.json').write_text(json.dumps(cfg))
    photos(tmp_path / 'p', 1)
    assert main(['predict', '--ckpt', str(tmp_path / 'c.pth'), str(tmp_path / 'p'), '--out', str(tmp_path / 'o')]) == 1
    err = err_of(capsys)
    assert f'{tmp_path / "c.json"}: {msg}' in err and 'TypeError' not in err and len(err.splitlines()) == 1, err

def test_a_dataset_with_no_object_is_an_error_before_training(shapes, tmp_path, capsys):
    root = tmp_path / 'empty'
    for s in ('JPEGImages', 'Annotations', 'ImageSets/Main'): (root / s).mkdir(parents=True)
    recs = read_voc(shapes, 'val', SHAPES)
    for split, rs in (('train', recs[:5]), ('val', recs[5:])):
        for r in rs:
            shutil.copy(r.fname, root / 'JPEGImages')
            write_voc_xml(root / 'Annotations' / f'{r.fname.stem}.xml', r.fname.name, r.size, torch.zeros(0, 4), [])
        (root / 'ImageSets/Main' / f'{split}.txt').write_text(''.join(f'{r.fname.stem}\n' for r in rs))
    assert main(['train', '--data', str(root), '--epochs', '1', '--bs', '2', '--out', str(tmp_path / 'o')]) == 1
    err = err_of(capsys)
    assert f'{root}: no objects in its 5 training images: nothing to learn' in err and 'nan' not in err and 'lr' not in err
    assert not list((tmp_path / 'o').glob('*.pth'))                              # no checkpoint of no classes
    with pytest.raises(DataError, match='no objects in its 5 training images'):
        train_detector(read_voc(root, 'train'), read_voc(root, 'val'), SHAPES, epochs=1, bs=2)

def test_a_big_tiff_is_read_too(tmp_path, monkeypatch):
    "Pillow checks a TIFF's size a second time, as it decodes it: that check is set aside as well (Pillow's limit lowered here to show it)."
    Image.new('RGB', (300, 200), 'blue').save(tmp_path / 'a.tif')
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 10_000)                      # 60,000 pixels: over twice Pillow's limit
    with pytest.raises(Image.DecompressionBombError): Image.open(tmp_path / 'a.tif').load()
    assert load_image(tmp_path / 'a.tif').size == (300, 200) and image_size(tmp_path / 'a.tif') == (300, 200)
    assert Image.MAX_IMAGE_PIXELS == 10_000
