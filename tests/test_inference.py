"Inference on users' images: `Detector`, the real-world image cases, folder runs, drawing, export, `ssd-tutorial predict`/`export`."
import json, numpy as np, pytest, torch
from pathlib import Path
from PIL import Image, ImageOps
from torch import nn
from ssd_tutorial.data import SHAPES, ImageError, read_voc
from ssd_tutorial.model import grid_model
from ssd_tutorial.anchors import grid_anchors
from ssd_tutorial.checkpoint import save_checkpoint
from ssd_tutorial.train import load_checkpoint
from ssd_tutorial.decode import decode_preds
from ssd_tutorial.data import to_batch, normalize_batch
from ssd_tutorial.metrics import predict_records
from ssd_tutorial.train import stage_priors
from ssd_tutorial.inference import *
from ssd_tutorial.cli import main

@pytest.fixture(scope='module')
def ckpt(tmp_path_factory):
    "An untrained 4x4-grid checkpoint (random weights: its scores still depend on the image)."
    torch.manual_seed(0)
    return save_checkpoint(grid_model(len(SHAPES), backbone='resnet18', size=128), tmp_path_factory.mktemp('ck') / 'grid4x4.pth',
                           stage='grid4x4', classes=SHAPES, size=128, backbone='resnet18', loss='bce', model_kw={})

class Fixed(nn.Module):
    "The same outputs for every image (so boxes are known), and a record of every input batch."
    def __init__(self, A=16, C=len(SHAPES)):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer('clas', torch.randn(1, A, C + 1, generator=g) * 3)
        self.register_buffer('bbox', torch.randn(1, A, 4, generator=g))
        self.seen = []
    def forward(self, x):
        self.seen.append(x.clone())
        return self.clas.expand(len(x), -1, -1), self.bbox.expand(len(x), -1, -1)

def fixed_detector(**kw):
    return Detector(Fixed(), SHAPES, 128, grid_anchors(4), .25, decode_preds, device='cpu', bf16=False, **kw)

def want_input(im:Image.Image)->torch.Tensor:
    "The model input of an 8-bit RGB image, computed here the way training does: squish (bilinear), /255, ImageNet stats."
    a = torch.from_numpy(np.array(im.resize((128, 128), Image.BILINEAR))).permute(2, 0, 1)[None].float() / 255
    return (a - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

def rgb(h=60, w=90, seed=0): return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)

def test_same_detections_as_predict_records(ckpt, shapes_dir):
    valid = read_voc(shapes_dir, 'val', SHAPES)
    model, cfg = load_checkpoint(ckpt)
    ref = predict_records(model, valid, SHAPES, *stage_priors('grid4x4', model, 128), 128, score_thresh=.04, progress=False)
    det = Detector.from_checkpoint(ckpt, device='cpu', score_thresh=.04, bf16=False, bs=4)
    got = det([r.fname for r in valid])
    assert sum(len(d['labels']) for d in ref) > 0
    for a, b, r in zip(ref, got, valid):
        torch.testing.assert_close(b['boxes'], a['boxes'], rtol=0, atol=1e-3)   # pixels: bs 4 against 32 sums in another order
        torch.testing.assert_close(b['scores'], a['scores'], rtol=0, atol=1e-5)
        assert b['labels'] == a['labels'] and b['size'] == Image.open(r.fname).size

def test_bf16_close_to_float32(ckpt, shapes_dir):
    fns = [r.fname for r in read_voc(shapes_dir, 'val', SHAPES)][:4]
    d32, d16 = (Detector.from_checkpoint(ckpt, device='cpu', bf16=b, score_thresh=0.) for b in (False, True))
    xb = to_batch([as_rgb(f) for f in fns], 128)
    for a, b in zip(d32.forward(xb), d16.forward(xb)):
        assert b.dtype == torch.float32 and (a - b).abs().max() < .1 * a.abs().max()

@pytest.mark.parametrize('turn', [1, 6])
def test_fast_decode_reads_jpegs_small_and_keeps_boxes_in_full_pixels(tmp_path, turn):
    from skimage import data as skd
    exif = Image.Exif(); exif[0x0112] = turn                            # 6: stored 640x480, shown 480x640
    fn = tmp_path / 'photo.jpg'
    Image.fromarray(skd.astronaut()).resize((640, 480)).save(fn, exif=exif.tobytes(), quality=90)
    full, fast = fixed_detector(), fixed_detector(fast_decode=True)
    im = fast.read(fn)
    shown = (640, 480) if turn == 1 else (480, 640)
    assert im.info['full_size'] == shown and min(im.size) >= 128 and im.size[0] * 2 == shown[0]   # decoded at 1/2 scale
    assert full.read(fn).size == shown
    a, b = full(fn), fast(fn)
    assert a['size'] == b['size'] == shown and a['labels'] == b['labels']
    torch.testing.assert_close(b['boxes'], a['boxes'], rtol=0, atol=1e-3)   # the Fixed model: boxes depend on the size only
    diff = (full.model.seen[-1] - fast.model.seen[-1]).abs()            # the model inputs differ slightly (std units)
    assert 0 < diff.mean() < .05
    assert fixed_detector(fast_decode=True)(Image.open(fn))['size'] == shown   # not a file path: read in full, as before

def test_one_or_many_and_batches():
    det = fixed_detector(bs=2)
    ims = [rgb(seed=i) for i in range(5)]
    one = det(ims[0])
    assert isinstance(one, dict) and set(one) >= {'boxes', 'scores', 'labels', 'size'}
    many = det(ims)
    assert isinstance(many, list) and len(many) == 5
    assert [len(x) for x in det.model.seen[1:]] == [2, 2, 1]          # bs images per batch, one forward each
    assert all(l in SHAPES for l in one['labels']) and len(one['labels']) == len(one['scores']) == len(one['boxes'])

@pytest.mark.parametrize('w,h', [(4000, 3000), (5, 5), (300, 100), (128, 128)])
def test_boxes_in_original_pixels(tmp_path, w, h):
    det = fixed_detector(score_thresh=.1)
    Image.fromarray(rgb(h, w)).save(tmp_path / 'im.jpg')
    d, ref = det(tmp_path / 'im.jpg'), det(rgb(64, 64, 1))             # the fixed model: same relative boxes for any image
    assert d['size'] == (w, h) and len(d['boxes']) > 0
    torch.testing.assert_close(d['boxes'] / torch.tensor([w, h, w, h]), ref['boxes'] / 64, rtol=0, atol=1e-5)
    assert (d['boxes'][:, 2:] <= torch.tensor([w, h]) + 1e-3).all() and (d['boxes'] >= 0).all()

def test_exif_rotated_jpeg(tmp_path):
    det = fixed_detector(score_thresh=.1)
    exif = Image.Exif(); exif[0x0112] = 6                               # stored 200 wide, shown 100 wide and 200 high
    Image.fromarray(rgb(100, 200)).save(tmp_path / 'turned.jpg', exif=exif.tobytes(), quality=95)
    d, ref = det(tmp_path / 'turned.jpg'), det(rgb(64, 64, 1))
    assert d['size'] == (100, 200)
    torch.testing.assert_close(d['boxes'] / torch.tensor([100, 200, 100, 200]), ref['boxes'] / 64, rtol=0, atol=1e-5)
    shown = ImageOps.exif_transpose(Image.open(tmp_path / 'turned.jpg')).convert('RGB')
    torch.testing.assert_close(det.model.seen[0], want_input(shown))
    det(Image.open(tmp_path / 'turned.jpg'))                             # an open PIL image: turned the same way
    torch.testing.assert_close(det.model.seen[-1], want_input(shown))
    from ssd_tutorial.data import load_image                             # upright, but keeps the file's EXIF tag: not turned again
    assert det(load_image(tmp_path / 'turned.jpg'))['size'] == (100, 200)
    torch.testing.assert_close(det.model.seen[-1], want_input(shown))
    assert draw_detections(tmp_path / 'turned.jpg', d).size == draw_detections(load_image(tmp_path / 'turned.jpg'), d).size == (100, 200)

def _mode_case(tmp_path, mode):
    "A file of `mode` and the 8-bit RGB image a viewer shows for it, computed independently."
    a = rgb()
    if mode == 'L':
        im = Image.fromarray(a[..., 0]); want = np.repeat(a[..., :1], 3, 2)
    elif mode == 'RGBA':
        alpha = np.where(np.random.default_rng(1).random(a.shape[:2]) < .5, 0, 255).astype(np.uint8)
        im = Image.fromarray(np.dstack([a, alpha])); want = np.where(alpha[..., None] == 0, 255, a).astype(np.uint8)
    elif mode == 'P':
        im = Image.fromarray(a).quantize(16); pal = np.array(im.getpalette()[:48]).reshape(16, 3)
        want = pal[np.asarray(im)].astype(np.uint8)
    elif mode == 'CMYK':
        im = Image.fromarray(a).convert('CMYK')
    elif mode == 'I;16':
        im = Image.fromarray(a[..., 0].astype(np.uint16) * 257); want = np.repeat(a[..., :1], 3, 2)
        assert im.mode.startswith('I;16')
    fn = tmp_path / f"im.{'jpg' if mode == 'CMYK' else 'png'}"
    im.save(fn, quality=95) if mode == 'CMYK' else im.save(fn)
    if mode == 'CMYK':
        assert Image.open(fn).mode == 'CMYK'
        want = np.asarray(Image.open(fn).convert('RGB'))                 # PIL's CMYK -> RGB, the only reference at hand
    return fn, Image.fromarray(want)

@pytest.mark.parametrize('mode', ['L', 'RGBA', 'P', 'CMYK', 'I;16'])
def test_image_modes(tmp_path, mode):
    fn, want = _mode_case(tmp_path, mode)
    det = fixed_detector()
    d = det(fn)
    assert d['size'] == (90, 60)
    torch.testing.assert_close(det.model.seen[-1], want_input(want))     # the file path (load_image)
    det(Image.open(fn))
    torch.testing.assert_close(det.model.seen[-1], want_input(want))     # the same image opened with PIL

def test_arrays():
    det = fixed_detector()
    a = rgb()
    cases = [(a, a), (a[..., 0], np.repeat(a[..., :1], 3, 2)), ((a // 2).astype(np.uint16) * 257, a // 2), ((a // 2).astype(np.float32) / 255, a // 2),
             (np.dstack([a, np.full(a.shape[:2], 255, np.uint8)]), a), (torch.from_numpy(a), a)]
    for x, want in cases:
        det(x)
        torch.testing.assert_close(det.model.seen[-1], want_input(Image.fromarray(want)))
    with pytest.raises(ValueError, match='channels last'): det(np.zeros((3, 60, 90), np.uint8))
    with pytest.raises(TypeError, match='file path'): det(3.5)

def test_corrupt_file_is_named(tmp_path):
    Image.fromarray(rgb()).save(tmp_path / 'ok.jpg')
    (tmp_path / 'cut.jpg').write_bytes((tmp_path / 'ok.jpg').read_bytes()[:200])
    with pytest.raises(ImageError, match='cut.jpg'): fixed_detector()(tmp_path / 'cut.jpg')
    with pytest.raises(ImageError, match='nope.png: image file not found'): fixed_detector()(tmp_path / 'nope.png')

def _folder(tmp_path):
    f = tmp_path / 'photos'; f.mkdir()
    for i in range(3): Image.fromarray(rgb(40 + i, 50, i)).save(f / f'p{i}.jpg')
    (f / 'p1_cut.jpg').write_bytes((f / 'p1.jpg').read_bytes()[:150])
    (f / 'notes.txt').write_text('not an image')
    return f

def test_folder_run_survives_a_bad_file(tmp_path):
    files, skipped = image_files(_folder(tmp_path))
    assert [f.name for f in files] == ['p0.jpg', 'p1.jpg', 'p1_cut.jpg', 'p2.jpg'] and [f.name for f in skipped] == ['notes.txt']
    det = fixed_detector(bs=3, score_thresh=.1)
    res = list(det.iter_files(files))
    assert [fn.name for fn, _, _ in res] == [f.name for f in files]
    bad = [(fn, d) for fn, im, d in res if im is None]
    assert len(bad) == 1 and bad[0][0].name == 'p1_cut.jpg' and isinstance(bad[0][1], ImageError) and 'p1_cut.jpg' in str(bad[0][1])
    for fn, im, d in res:
        if im is not None: assert d['size'] == Image.open(fn).size and len(d['boxes']) > 0
    with pytest.raises(FileNotFoundError, match='nowhere'): image_files([tmp_path / 'nowhere'])

def test_read_ahead_gives_the_batches_read_one_at_a_time(tmp_path):
    files = image_files(_folder(tmp_path))[0] + [tmp_path / 'photos' / 'p1_cut.jpg'] * 2   # the last batch: bad files only
    det = fixed_detector(bs=2)
    seq, ahead = list(det.batches(files, ahead=False)), list(det.batches(files))
    assert len(seq) == len(ahead) == 3
    for (ia, xa), (ib, xb) in zip(seq, ahead):
        assert [type(o) for o in ia] == [type(o) for o in ib]
        if xa is None: assert xb is None and all(isinstance(o, ImageError) for o in ia)
        else: assert torch.equal(xa, xb) and xa.shape == (sum(isinstance(o, Image.Image) for o in ia), 3, 128, 128)
    ims = [as_rgb(f) for f in files[:2]]
    assert torch.equal(seq[0][1], to_batch(ims, 128))                                 # what `to_batch` makes of the images read
    g = det.batches(files); next(g); g.close()                                        # abandoned after a batch: the read-ahead ends
    assert [im is None for _, im, _ in det.iter_files(files)][-2:] == [True, True]    # an all-bad batch in a folder run

def test_draw_detections(tmp_path):
    im = Image.new('RGB', (300, 200), (128, 128, 128))
    dets = dict(boxes=torch.tensor([[50., 40., 250., 160.]]), scores=torch.tensor([.9]), labels=['star'])
    out = draw_detections(im, dets, SHAPES)
    assert out.size == im.size and np.asarray(im).min() == 128                   # a copy: the input is untouched
    from ssd_tutorial.boxes import class_colors
    col = tuple(round(255 * v) for v in class_colors(10)[SHAPES.index('star')][:3])
    assert tuple(np.asarray(out)[100, 50]) == col and tuple(np.asarray(out)[100, 150]) == (128, 128, 128)
    ax = show_detections(im, dets, SHAPES)
    assert len(ax.patches) == 1

@pytest.mark.parametrize('fmt', list(EXPORT_FORMATS))
def test_export_matches_pytorch(ckpt, tmp_path, fmt):
    if fmt == 'onnx': pytest.importorskip('onnx'); pytest.importorskip('onnxruntime')
    model = load_checkpoint(ckpt)[0]
    run = load_exported(export_model(model, 128, tmp_path / f'm{EXPORT_FORMATS[fmt]}', fmt))
    x = torch.randn(3, 3, 128, 128)
    with torch.no_grad(): want = model(x)
    for n in (1, 3):
        got = run(x[:n])
        assert [tuple(g.shape) for g in got] == [(n, 16, 6), (n, 16, 4)]
        for a, b in zip(want, got): torch.testing.assert_close(b, a[:n], rtol=1e-4, atol=1e-4)

def test_export_unknown_format(ckpt, tmp_path):
    with pytest.raises(ValueError, match='unknown export format'): export_model(load_checkpoint(ckpt)[0], 128, tmp_path / 'm', 'tflite')

def test_cli_predict(ckpt, tmp_path, capsys):
    folder = _folder(tmp_path)
    Image.fromarray(rgb(30, 30, 9)).save(tmp_path / 'p0.png')            # same stem as photos/p0.jpg
    assert main(['predict', '--ckpt', str(ckpt), str(folder), str(tmp_path / 'p0.png'), '--score-thresh', '0.04', '--bs', '2', '--out', str(tmp_path / 'out')]) == 1
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1 and 'p1_cut.jpg' in err and '1 of 5 images' in err and 'Traceback' not in err
    assert 'notes.txt' in out and 'p2.jpg (50x42)' in out
    assert sorted(p.name for p in (tmp_path / 'out').glob('*.png')) == ['p0.png', 'p0_2.png', 'p1.png', 'p2.png']
    assert Image.open(tmp_path / 'out' / 'p2.png').size == (50, 42)
    res = json.loads((tmp_path / 'out' / 'detections.json').read_text())
    d = Detector.from_checkpoint(ckpt, score_thresh=.04)(folder / 'p2.jpg')
    mine = [r for r in res if Path(r['file_name']).name == 'p2.jpg']
    assert len(mine) == len(d['labels']) > 0
    for r, b, s, l in zip(mine, d['boxes'].tolist(), d['scores'].tolist(), d['labels']):
        assert r['category_name'] == l and r['category_id'] == SHAPES.index(l) + 1 and abs(r['score'] - s) < 1e-3
        assert np.allclose(r['bbox'], [b[0], b[1], b[2] - b[0], b[3] - b[1]], atol=.01)

def test_cli_predict_errors(ckpt, tmp_path, capsys):
    assert main(['predict', '--ckpt', str(tmp_path / 'nope.pth'), str(tmp_path), '--out', str(tmp_path / 'o')]) == 1
    assert 'no image files' in capsys.readouterr().err                  # the folder is checked before the checkpoint
    Image.fromarray(rgb()).save(tmp_path / 'a.png')
    assert main(['predict', '--ckpt', str(tmp_path / 'nope.pth'), str(tmp_path / 'a.png'), '--out', str(tmp_path / 'o')]) == 1
    assert 'nope.pth: checkpoint not found' in capsys.readouterr().err
    with pytest.raises(SystemExit): main(['predict', '--ckpt', str(ckpt), str(tmp_path), '--score-thresh', '1.5'])

@pytest.mark.parametrize('fmt', list(EXPORT_FORMATS))
def test_cli_export(ckpt, tmp_path, fmt, capsys):
    if fmt == 'onnx': pytest.importorskip('onnx'); pytest.importorskip('onnxruntime')
    assert main(['export', '--ckpt', str(ckpt), '--format', fmt, '--out', str(tmp_path)]) == 0
    path = tmp_path / f'grid4x4{EXPORT_FORMATS[fmt]}'
    assert 'decoding and NMS' in capsys.readouterr().out
    meta = json.loads(path.with_name(path.name + '.json').read_text())
    assert meta['input']['shape'] == ['batch', 3, 128, 128] and meta['checkpoint']['stage'] == 'grid4x4'
    x, model = torch.randn(2, 3, 128, 128), load_checkpoint(ckpt)[0]
    with torch.no_grad(): want = model(x)
    for a, b in zip(want, load_exported(path)(x)): torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)

@pytest.mark.cuda
def test_cuda_same_as_cpu(ckpt, shapes_dir):
    fns = [r.fname for r in read_voc(shapes_dir, 'val', SHAPES)]
    """Float32 on both (TF32 off); the random weights score every box about 0.047, so near-ties may swap places or fall
    either side of the threshold and of the 100-detection cut: each detection must have its match on the other device
    (same class, score within 1e-3, IoU > 0.99), all but 2% of them."""
    from torchvision.ops import box_iou
    cpu, gpu = (Detector.from_checkpoint(ckpt, device=d, score_thresh=.04, bf16=False) for d in ('cpu', 'cuda'))
    assert next(gpu.model.parameters()).is_cuda
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False): got = gpu(fns)
    def matched(x, y)->int:
        if not len(x['labels']) or not len(y['labels']): return 0
        same = (box_iou(x['boxes'], y['boxes']) > .99) & ((x['scores'][:, None] - y['scores'][None]).abs() < 1e-3)
        same &= torch.tensor([[a == b for b in y['labels']] for a in x['labels']])
        return int(same.any(1).sum())
    for a, b in zip(cpu(fns), got):
        assert b['boxes'].device.type == 'cpu' and len(a['labels']) > 0
        assert matched(a, b) >= .98 * len(a['labels']) and matched(b, a) >= .98 * len(b['labels'])
    xb = to_batch([as_rgb(f) for f in fns[:4]], 128)
    gb = Detector.from_checkpoint(ckpt, device='cuda')                  # bfloat16 where the GPU has it
    assert all(o.dtype == torch.float32 and o.is_cuda for o in gb.forward(xb))
