"""Run `ssd-tutorial demo` as a new user meets it and keep what it printed (bench/demo.md) and drew (nbs/images/demo_predictions.png).

A fresh, empty data folder (`SSD_TUTORIAL_HOME` in a temporary directory), so the wall time includes making the
dataset; then a second run of the same command on the dataset now on disk, so the two times show what the dataset
costs. The README quotes this file. About 10 minutes on a 2-core CPU with AVX512-BF16.
`--quick` runs a demo of 32 images for 1 epoch into a temporary folder and keeps nothing (the tests run it so).
Usage: python bench/demo.py [--once] [--quick]"""
import argparse, os, platform, re, shutil, subprocess, tempfile, time, torch
from pathlib import Path
from ssd_tutorial.train import bf16_native

ROOT = Path(__file__).resolve().parent.parent

def demo(home:str, out:str, *more)->tuple:
    "Wall seconds and printed lines (progress bars dropped) of one `ssd-tutorial demo`."
    t0 = time.time()
    p = subprocess.run(['ssd-tutorial', 'demo', '--out', out, *more], env={**os.environ, 'SSD_TUTORIAL_HOME': home}, capture_output=True, text=True)
    wall = time.time() - t0
    if p.returncode: raise SystemExit(f'ssd-tutorial demo failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}')
    parts = [s.rstrip().replace(out, '<out>') for l in p.stdout.splitlines() for s in l.split('\r')]
    bar = lambda s: re.search(r'\d+\.\d+% \[\d+/\d+', s) or s.startswith('Epoch ') or not set(s.strip()) - set('█-| ')
    return wall, [s for s in parts if s.strip() and not bar(s)]

def main():
    a = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    a.add_argument('--once', action='store_true', help='only the run from an empty data folder')
    a.add_argument('--quick', action='store_true', help='one small case, to check that the script still runs (the tests run it so)')
    args = a.parse_args()
    if args.quick:
        with tempfile.TemporaryDirectory() as d: wall, lines = demo(d, f'{d}/out', '--n-train', '32', '--epochs', '1')
        print(f'{wall:.0f} s', *lines, sep='\n'); return
    with tempfile.TemporaryDirectory() as d:
        fresh, lines = demo(d, f'{d}/out')
        again = None if args.once else demo(d, f'{d}/out2')[0]
        shutil.copy(f'{d}/out/predictions.png', ROOT / 'nbs' / 'images' / 'demo_predictions.png')
    machine = f"{os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), torch {torch.__version__}, bfloat16 native: {bf16_native('cpu')}"
    if torch.cuda.is_available(): machine += f', GPU {torch.cuda.get_device_name()}'
    text = (f"`ssd-tutorial demo` from an empty data folder (written by `python bench/demo.py`)\n\n"
            f"- machine: {machine}\n- wall time from an empty data folder (dataset made, trained, evaluated): {fresh:.0f} s\n"
            + (f"- wall time again, the dataset already on disk: {again:.0f} s\n" if again else '')
            + "\nWhat it printed (progress bars left out):\n\n```\n" + '\n'.join(lines) + "\n```\n")
    (ROOT / 'bench' / 'demo.md').write_text(text)
    print(text)

if __name__ == '__main__': main()
