"""Write README.md from nbs/index.ipynb (Quarto, which nbdev_readme needs, cannot be installed here).
Markdown cells are copied (a line `<!-- include: PATH -->` becomes the text of that file), code cells become ```python blocks followed by their text outputs; cells flagged
`#| hide` are left out. `--check` exits 1 if README.md is not what this script would write."""
import json, sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent

def _include(md: str) -> str:
    "Replace a line `<!-- include: PATH -->` (PATH from the repository root) with that file's text."
    out = []
    for l in md.splitlines():
        if l.strip().startswith('<!-- include:') and l.strip().endswith('-->'):
            out.append((root / l.strip()[len('<!-- include:'):-3].strip()).read_text().rstrip())
        else: out.append(l)
    return '\n'.join(out)

def render(nb_path: Path) -> str:
    parts = []
    for c in json.loads(nb_path.read_text())['cells']:
        src = ''.join(c['source']).strip()
        if c['cell_type'] == 'markdown': parts.append(_include(src)); continue
        if c['cell_type'] != 'code' or src.startswith('#| hide') or '\n#| hide' in src: continue
        code = '\n'.join(l for l in src.splitlines() if not l.startswith('#|')).strip()
        parts.append(f'```python\n{code}\n```')
        outs = [''.join(o.get('text', '')) or ''.join(o.get('data', {}).get('text/plain', ''))
                for o in c.get('outputs', []) if o.get('output_type') in ('stream', 'execute_result') and o.get('name') != 'stderr']
        outs = [o.rstrip() for o in outs if o.strip()]
        if outs: parts.append('```\n' + '\n'.join(outs) + '\n```')
    return '<!-- generated from nbs/index.ipynb by .ci/make_readme.py: edit the notebook, not this file -->\n\n' + '\n\n'.join(parts) + '\n'

if __name__ == '__main__':
    text, readme = render(root / 'nbs' / 'index.ipynb'), root / 'README.md'
    if '--check' in sys.argv:
        if not readme.exists() or readme.read_text() != text:
            print('README.md is stale: run `python .ci/make_readme.py` and commit it'); sys.exit(1)
        print('README.md is up to date')
    else: readme.write_text(text); print(f'wrote {readme}')
