"""The GPU figures (bench/gpu.sh runs this): `python -m bench.gpu OUT CORPUS [SECONDS]`.

Trains the gpu-3m preset on CUDA for SECONDS (default 180) on tinyshakespeare, then measures,
outside the budget: the val loss on the whole held-out last 10% (as `make bench` does:
bench/baseline.py held_out, 64 streams from zero state, chunks of 256, hidden state carried),
against nanoGPT's 1.4697 after ~3 minutes on an A100 (its README's character-level
Shakespeare run); training chars/s; sampling chars/s at batch 1 and 64 (fp32 and bf16).
Where charrnn cannot be imported (a machine with only torch: see OUT/env.json), the plain loop
of bench/baseline.py (an LSTM of the gpu-3m shape) takes its place, saying so.
Then, with charrnn (issue 26), the min cells: ``train_min`` trains GPU_MIN (gpu-3m's training
settings, a mingru shape) for MIN_SECONDS (env GPU_MIN_SECONDS, default 60) and evaluates it the
same way, and ``scan_vs_cudnn`` times one recurrent layer, forward and backward, of cuDNN's
LSTM against a min cell's block (log-space scan) at chunk lengths 64-1024.
Writes OUT/gpu.json and OUT/gpu.md.
"""
from __future__ import annotations

import importlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

NANOGPT = 1.4697
# The first min-cell point on a GPU: gpu-3m's training settings, this shape (about 10 M weights;
# not tuned: bench/TRIED.md).
GPU_MIN = dict(cell="mingru", layers=3, hidden_size=1024, expansion=2, mlp_ratio=4,
               embed_size=128, dropout=0.1)
CHUNKS = (64, 128, 256, 512, 1024)
MODULES = ("numpy", "tokenizers", "safetensors", "tqdm", "click", "matplotlib", "datasets")


def environment() -> dict:
    """Which of charrnn's dependencies import here, the GPU and torch."""
    found = {}
    for name in MODULES:
        try:
            module = importlib.import_module(name)
            found[name] = getattr(module, "__version__", "yes")
        except Exception as err:          # any import failure: say which and why
            found[name] = f"missing ({type(err).__name__})"
    try:
        import charrnn
        found["charrnn"] = charrnn.__version__
    except Exception as err:
        found["charrnn"] = f"not importable ({type(err).__name__}: {err})"
    cuda = torch.cuda.is_available()
    return {"python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0) if cuda else None,
            "modules": found, "date": time.strftime("%Y-%m-%d %H:%M")}


def train_charrnn(corpus: str, seconds: float, folder: str, device: str = "cuda") -> dict:
    from bench.baseline import held_out, read
    from charrnn.api import load, train_config
    from charrnn.training.trainer import train   # not train_run: it draws loss.png (matplotlib)

    config = train_config(corpus, f"{folder}/run", "gpu-3m", time_limit=seconds,
                          device=device, progress=False, cache_dir=f"{folder}/cache")
    result = train(corpus, config)
    weights = "best" if Path(f"{folder}/run/best").exists() else "last"
    model = load(f"{folder}/run/{weights}", device=device)
    text = read(corpus)
    val = model.evaluate(held_out(text), seq_len=256)[0]
    shape = config.model
    figures = {"what": "charrnn, preset gpu-3m", "val_loss": val, "own_val_loss":
               result.val_loss, "steps": result.step, "seconds": result.elapsed,
               "weights": weights, "chars_per_sec": result.step * config.batch_size *
               config.seq_len / max(result.elapsed, 1e-9),
               "settings": f"{shape.cell} {shape.layers}x{shape.hidden_size}, batch "
                           f"{config.batch_size} x {config.seq_len}, lr {config.lr:g}, "
                           f"precision {config.precision}"}
    figures["sampling"] = sampling(lambda batch, length, precision: model.generate(
        "\n", length=length, num_samples=batch, seed=0, precision=precision))
    return figures


def sampling(generate) -> dict:
    """chars/s of ``generate(batch, length, precision)`` at batch 1 and 64, fp32 and bf16."""
    figures = {}
    for batch, length in ((1, 2000), (64, 2000)):
        for precision in ("fp32", "bf16"):
            generate(batch, 50, precision)            # warm up
            _synchronize()
            start = time.perf_counter()
            generate(batch, length, precision)
            _synchronize()
            figures[f"b{batch}_{precision}"] = batch * length / (time.perf_counter() - start)
    return figures


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def train_min(corpus: str, seconds: float, folder: str, device: str = "cuda") -> dict:
    """GPU_MIN for ``seconds`` with gpu-3m's training settings, evaluated as train_charrnn."""
    from bench.baseline import held_out, read
    from bench.mincell import flops_per_char
    from charrnn.api import load, train_config
    from charrnn.training.trainer import train

    config = train_config(corpus, f"{folder}/min", "gpu-3m", time_limit=seconds, device=device,
                          progress=False, cache_dir=f"{folder}/cache", **GPU_MIN)
    result = train(corpus, config)
    weights = "best" if Path(f"{folder}/min/best").exists() else "last"
    model = load(f"{folder}/min/{weights}", device=device)
    val = model.evaluate(held_out(read(corpus)), seq_len=256)[0]
    return {"what": f"charrnn {GPU_MIN}", "val_loss": val, "steps": result.step,
            "seconds": result.elapsed, "flops_per_char": flops_per_char(config.model),
            "chars_per_sec": result.step * config.batch_size * config.seq_len
            / max(result.elapsed, 1e-9), "sampling": sampling(
                lambda batch, length, precision: model.generate(
                    "\n", length=length, num_samples=batch, seed=0, precision=precision))}


def scan_vs_cudnn(units: int = 1024, batch: int = 64, device: str = "cuda") -> dict:
    """Microseconds per character, forward + backward, fp32, of one recurrent layer of
    ``units``: cuDNN's nn.LSTM (input ``units``) against a mingru block without its MLP
    (expansion 1: the input projection, the log-space scan, the output projection), at each
    chunk length of CHUNKS (best of 3 after a warm-up)."""
    from charrnn.config import ModelConfig
    from charrnn.model.mincell import MinBlock

    lstm = torch.nn.LSTM(units, units, batch_first=True).to(device)
    block = MinBlock(ModelConfig(cell="mingru", hidden_size=units, expansion=1,
                                 mlp_ratio=0)).to(device)
    layers = {"cudnn_lstm": lambda x: lstm(x)[0], "mingru_scan": lambda x: block(
        x, None, lambda t: t)[0]}
    figures = {name: [] for name in layers}
    for length in CHUNKS:
        x = torch.randn(batch, length, units, device=device, requires_grad=True)
        for name, layer in layers.items():
            best = float("inf")
            for _ in range(4):
                _synchronize()
                start = time.perf_counter()
                layer(x).sum().backward()
                _synchronize()
                best = min(best, time.perf_counter() - start)
            figures[name].append(1e6 * best / (batch * length))
    return {"chunks": list(CHUNKS), "units": units, "batch": batch, "us_per_char": figures}


def train_plain(corpus: str, seconds: float) -> dict:
    """The fallback: bench/baseline.py's loop on CUDA, an LSTM 3x1024 (gpu-3m's shape)."""
    from bench import baseline
    text = baseline.read(corpus)
    val, steps, rate = baseline.train(text, seconds, hidden=1024, layers=3, embed=128,
                                      batch=128, seq=256, lr=2e-3, cell="lstm", device="cuda")
    return {"what": "plain loop (charrnn not importable here), LSTM 3x1024, batch 128 x 256",
            "val_loss": val, "steps": steps, "chars_per_sec": rate}


def markdown(env: dict, figures: dict, seconds: float) -> str:
    lines = [f"## GPU: {env['gpu']} ({env['date']})", "",
             f"torch {env['torch']} (CUDA {env['cuda']}), Python {env['python']}; modules: "
             + ", ".join(f"{k} {v}" for k, v in env["modules"].items()) + ".", "",
             f"{figures['what']}, {seconds:g} s on tinyshakespeare"
             + (f" ({figures['settings']})" if "settings" in figures else "") + ":", "",
             "| figure | value | reference |", "|---|---|---|",
             f"| val loss after {seconds:g} s (nats/char, whole held-out 10%) | "
             f"{figures['val_loss']:.4f} | nanoGPT 1.4697 after ~3 min on an A100 |",
             f"| training chars/s | {figures['chars_per_sec']:,.0f} | - |",
             f"| steps | {figures['steps']} | - |"]
    for name, rate in figures.get("sampling", {}).items():
        lines.append(f"| sampling chars/s, {name.replace('_', ', ')} | {rate:,.0f} | - |")
    return "\n".join(lines + min_markdown(figures.get("mincell", {}))) + "\n"


def min_markdown(mincell: dict) -> list:
    """The min cells' rows (issue 26), if they were measured."""
    if not mincell:
        return []
    if "error" in mincell:
        return ["", f"Min cells: not measured ({mincell['error']})."]
    run, scan = mincell["run"], mincell["scan"]
    lines = ["", f"{run['what']}, {run['seconds']:.0f} s: val loss {run['val_loss']:.4f}, "
             f"training chars/s {run['chars_per_sec']:,.0f}, {run['steps']} steps.", "",
             "| chunk length | " + " | ".join(str(c) for c in scan["chunks"]) + " |",
             "|---|" + "---|" * len(scan["chunks"])]
    for name, values in scan["us_per_char"].items():
        lines.append(f"| {name}, us/char fwd+bwd | " + " | ".join(f"{v:.3f}" for v in values)
                     + " |")
    return lines


def main(out: str, corpus: str, seconds: str = "180") -> None:
    env = environment()
    Path(out).mkdir(parents=True, exist_ok=True)
    Path(out, "env.json").write_text(json.dumps(env, indent=1))
    print(json.dumps(env), flush=True)
    if not torch.cuda.is_available():
        sys.exit("error: no CUDA device visible to torch: nothing to measure")
    with tempfile.TemporaryDirectory() as folder:
        if env["modules"]["charrnn"].startswith("not importable"):
            figures = train_plain(corpus, float(seconds))
        else:
            figures = train_charrnn(corpus, float(seconds), folder)
            figures["mincell"] = measure_min(corpus, folder)
    figures["nanogpt_a100_3min"] = NANOGPT
    Path(out, "gpu.json").write_text(json.dumps({"env": env, "figures": figures}, indent=1))
    Path(out, "gpu.md").write_text(markdown(env, figures, float(seconds)))
    print(Path(out, "gpu.md").read_text())


def measure_min(corpus: str, folder: str) -> dict:
    """``train_min`` and ``scan_vs_cudnn``; an error becomes {"error": ...}, so that the
    figures above are kept whatever happens here."""
    try:
        return {"run": train_min(corpus, float(os.environ.get("GPU_MIN_SECONDS", "60")), folder),
                "scan": scan_vs_cudnn()}
    except Exception as err:           # the GPU's first figures must survive a failure here
        return {"error": f"{type(err).__name__}: {err}"}


if __name__ == "__main__":
    main(*sys.argv[1:])
