import os, pytest, torch

def pytest_configure(config):
    # datasets made by tests and notebooks go to a throw-away home, never the user's cache
    if 'SSD_TUTORIAL_HOME' not in os.environ:
        import tempfile
        os.environ['SSD_TUTORIAL_HOME'] = tempfile.mkdtemp(prefix='ssd_tutorial_test_')
    os.environ.setdefault('MPLBACKEND', 'Agg')

def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available(): return
    skip = pytest.mark.skip(reason='needs CUDA')
    for it in items:
        if 'cuda' in it.keywords: it.add_marker(skip)

@pytest.fixture(scope='session')
def shapes_dir(tmp_path_factory):
    "A small shapes dataset shared by the data tests."
    from ssd_tutorial.data import make_shapes
    return make_shapes(tmp_path_factory.mktemp('shapes'), n_train=40, n_valid=10, progress=False)
