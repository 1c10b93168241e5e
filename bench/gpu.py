"""The GPU figures (bench/gpu.sh runs this): `python -m bench.gpu OUT CORPUS [SECONDS]`.

Trains the gpu-3m preset on CUDA for SECONDS (default 180) on tinyshakespeare, then measures,
outside the budget: the val loss on the whole held-out last 10% (as `make bench` does:
bench/baseline.py held_out, 64 streams from zero state, chunks of 256, hidden state carried),
against nanoGPT's 1.4697 after ~3 minutes on an A100 (its README's character-level
Shakespeare run); training chars/s; sampling chars/s at batch 1 and 64 (fp32 and bf16).
Where charrnn cannot be imported (a machine with only torch: see OUT/env.json), the plain loop
of bench/baseline.py (an LSTM of the gpu-3m shape) takes its place, saying so.
Writes OUT/gpu.json and OUT/gpu.md.
"""
from __future__ import annotations

import importlib
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

NANOGPT = 1.4697
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
    return "\n".join(lines) + "\n"


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
    figures["nanogpt_a100_3min"] = NANOGPT
    Path(out, "gpu.json").write_text(json.dumps({"env": env, "figures": figures}, indent=1))
    Path(out, "gpu.md").write_text(markdown(env, figures, float(seconds)))
    print(Path(out, "gpu.md").read_text())


if __name__ == "__main__":
    main(*sys.argv[1:])
