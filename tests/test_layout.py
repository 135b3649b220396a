"""The package's layering, read from the exported code (no module is run): each module imports only modules below it
(so there is no import circle), no private name crosses a module, and importing a module changes nothing outside it."""
import ast
from pathlib import Path
import pytest

PKG = Path(__file__).parent.parent / 'ssd_tutorial'
# bottom to top: a module may import the ones before it, never one after it
LAYERS = ['boxes', 'files', 'augment', 'data', 'anchors', 'model', 'loss', 'checkpoint', 'decode', 'metrics',
          'errors', 'distributed', 'train', 'inference', 'cli', 'all']

def _tree(name): return ast.parse((PKG / f'{name}.py').read_text())

def _imports(tree):
    "`(module, names)` of every import of a package module, at any depth (a function's own imports count)."
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ''
            if node.level == 1 and mod: yield mod.split('.')[0], [a.name for a in node.names]
            elif node.level == 1: yield from ((a.name, ['*']) for a in node.names)      # `from . import x`
            elif mod.startswith('ssd_tutorial.'): yield mod.split('.')[1], [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith('ssd_tutorial.'): yield a.name.split('.')[1], ['*']

def test_every_module_has_a_layer():
    mods = {p.stem for p in PKG.glob('*.py')} - {'__init__', '_modidx'}
    assert mods == set(LAYERS), f'modules without a layer: {mods - set(LAYERS)}; layers without a module: {set(LAYERS) - mods}'

@pytest.mark.parametrize('name', LAYERS)
def test_imports_go_down_only(name):
    below = LAYERS[:LAYERS.index(name)]
    up = sorted({m for m, _ in _imports(_tree(name)) if m not in below})
    assert not up, f'{name} imports {up}, which are not below it in {LAYERS}'

@pytest.mark.parametrize('name', LAYERS)
def test_no_private_name_crosses_a_module(name):
    private = sorted({f'{m}.{n}' for m, ns in _imports(_tree(name)) for n in ns if n.startswith('_') and m != name})
    assert not private, f'{name} imports private names {private}'

def _is_warnings_scope(node):
    "`with warnings.catch_warnings(): ...` around imports and filters only: a filter that ends with the block."
    return (isinstance(node, ast.With) and 'catch_warnings' in ast.unparse(node.items[0].context_expr)
            and all(isinstance(s, (ast.Import, ast.ImportFrom)) or 'filterwarnings' in ast.unparse(s) for s in node.body))

@pytest.mark.parametrize('name', LAYERS)
def test_importing_changes_nothing_outside(name):
    "At module level only imports, definitions and assignments to the module's own names; no call, no patch of a class of another module."
    tree, bad = _tree(name), []
    own = {n.name for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
    own_vars = {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.ClassDef)) or _is_warnings_scope(node): continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant): continue          # a docstring
        if isinstance(node, ast.FunctionDef):
            for d in node.decorator_list:
                if ast.unparse(d) == 'patch':                                                     # fastcore's @patch
                    cls = ast.unparse(node.args.args[0].annotation) if node.args.args and node.args.args[0].annotation else '?'
                    if cls not in own: bad.append(f'line {node.lineno}: @patch of {cls}, a class of another module')
            continue
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name): continue
                bad.append(f'line {node.lineno}: {ast.unparse(t)} = ...')
            continue
        if (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Attribute)
            and isinstance(node.value.func.value, ast.Name) and node.value.func.value.id in own_vars): continue   # its own list grows
        bad.append(f'line {node.lineno}: {ast.unparse(node)[:80]}')
    assert not bad, f'{name} does this when imported: {bad}'

def test_the_checks_can_fail(tmp_path):
    "The checks above find what they look for in a made-up module."
    t = ast.parse("from .cli import main\nfrom .files import _load\nimport warnings\nwarnings.filterwarnings('ignore')\n"
                  "from fastcore.basics import patch\n@patch\ndef f(self:Learner): pass\nX['a'] = 1\n")
    assert [m for m, _ in _imports(t)] == ['cli', 'files']
    assert [n for _, ns in _imports(t) for n in ns if n.startswith('_')] == ['_load']
    calls = [n for n in t.body if isinstance(n, ast.Expr) and not isinstance(n.value, ast.Constant)]
    assert len(calls) == 1 and not _is_warnings_scope(t.body[3])
    assert _is_warnings_scope(ast.parse("with warnings.catch_warnings():\n    warnings.filterwarnings('ignore')\n    import x\n").body[0])
