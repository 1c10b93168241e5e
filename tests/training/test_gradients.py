"""The gradient norm before clipping: measured every step (also with --grad-clip 0), its mean and
maximum since the evaluation before in each metrics.jsonl record, training unchanged by the
measuring, and no device sync per step on CUDA."""
import json

import pytest
import torch

from charrnn.api import train_run
from charrnn.training import trainer
from charrnn.training.gradients import GradNorms, clip_and_measure
from charrnn.training.resume import LoopState
from conftest import tiny_config


def records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def with_gradients(seed=0):
    torch.manual_seed(seed)
    layer = torch.nn.Linear(4, 3)
    layer(torch.randn(5, 4)).pow(2).sum().backward()
    return list(layer.parameters())


def test_clip_and_measure_returns_the_norm_before_clipping():
    parameters = with_gradients()
    before = [p.grad.clone() for p in parameters]
    norm = torch.linalg.vector_norm(torch.cat([g.flatten() for g in before]))
    assert float(clip_and_measure(parameters, 0.0)) == pytest.approx(float(norm), rel=1e-6)
    assert all(torch.equal(p.grad, g) for p, g in zip(parameters, before))   # 0: no clipping
    measured = clip_and_measure(parameters, 0.5)
    assert float(measured) == pytest.approx(float(norm), rel=1e-6) and float(norm) > 0.5
    after = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in parameters]))
    assert float(after) == pytest.approx(0.5, rel=1e-4)              # clipped to --grad-clip
    # The same arithmetic, bit for bit, as torch's clip_grad_norm_ (training is unchanged).
    mine, torchs = with_gradients(1), with_gradients(1)
    assert torch.equal(clip_and_measure(mine, 0.5),
                       torch.nn.utils.clip_grad_norm_(torchs, 0.5))
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(mine, torchs))


@pytest.mark.parametrize("grad_clip", [0.0, 0.05], ids=["clip-off", "clip-0.05"])
def test_each_record_holds_the_mean_and_max_norm_since_the_evaluation_before(
        grad_clip, corpus, tmp_path, monkeypatch):
    seen = []             # every step's norm, as the loop measured it

    def spy(parameters, max_norm):
        norm = clip_and_measure(parameters, max_norm)
        seen.append(float(norm))
        return norm

    monkeypatch.setattr(trainer, "clip_and_measure", spy)
    train_run(str(corpus), tiny_config(tmp_path / "run", steps=30, eval_interval=10,
                                       grad_clip=grad_clip))
    got = records(tmp_path / "run")
    assert len(seen) == 30 and [r["step"] for r in got] == [10, 20, 30]
    for index, record in enumerate(got):
        stretch = seen[10 * index:10 * (index + 1)]
        assert record["grad_norm_mean"] == pytest.approx(sum(stretch) / 10, rel=1e-5)
        assert record["grad_norm_max"] == pytest.approx(max(stretch), rel=1e-5)
    if grad_clip:         # before clipping: above the clip, which the update never exceeds
        assert min(seen) > grad_clip


def test_measuring_leaves_training_as_it_was(corpus, tmp_path, monkeypatch):
    train_run(str(corpus), tiny_config(tmp_path / "now", steps=12, grad_clip=0.5))
    # The loop as it was before the norm was recorded: torch's clip_grad_norm_.
    monkeypatch.setattr(trainer, "clip_and_measure",
                        lambda parameters, most: torch.nn.utils.clip_grad_norm_(parameters, most))
    train_run(str(corpus), tiny_config(tmp_path / "before", steps=12, grad_clip=0.5))
    from safetensors.torch import load_file
    a, b = (load_file(tmp_path / run / "last" / "model.safetensors") for run in ("now", "before"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_stretch_saved_between_evaluations_resumes_to_the_same_figures():
    # What `last` saves mid-stretch (read) and what a resumed meter starts from give the
    # figures of an unbroken stretch, bit for bit.
    norms = [torch.tensor(v) for v in (0.3, 1.7, 0.25, 2.5, 0.4)]
    whole = GradNorms(LoopState(), torch.device("cpu"))
    for norm in norms:
        whole.add(norm)
    state = LoopState()
    first = GradNorms(state, torch.device("cpu"))
    for norm in norms[:2]:
        first.add(norm)
    first.read()
    resumed = GradNorms(LoopState.from_dict(state.to_dict()), torch.device("cpu"))
    for norm in norms[2:]:
        resumed.add(norm)
    assert resumed.take() == whole.take() == {
        "grad_norm_mean": float(f"{sum(float(n) for n in norms) / 5:.6g}"),
        "grad_norm_max": float(f"{float(norms[3]):.6g}")}
    assert whole.take() == {"grad_norm_mean": None, "grad_norm_max": None}   # no step since


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_a_step_adds_its_norm_without_waiting_for_the_device():
    parameters = [p.cuda() for p in with_gradients()]
    for p, q in zip(parameters, with_gradients()):
        p.grad = q.grad.cuda()
    meter = GradNorms(LoopState(), torch.device("cuda"))
    meter.add(torch.zeros((), device="cuda"))     # the accumulators made (a copy from the host)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")       # any sync below raises
    try:
        for max_norm in (0.0, 0.5, 0.0):
            meter.add(clip_and_measure(parameters, max_norm))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    figures = meter.take()
    assert figures["grad_norm_max"] > 0.5 and meter.state.grad_norm_count == 0
