"""The fast pipeline changes speed, not results.

Each method's loss from labkit's batched path (one-gather expansion, batched losses) equals the loss written
straight from the paper's formulas (per-sample loops, torch.rot90 per view); labkit's batched crop+flip draws the
same per-sample distribution as torchvision's per-image RandomCrop/RandomHorizontalFlip, and each crop is exactly
a window of the zero-padded image. Also: the benchmark scripts run and print every ratio.
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from labkit.core.device import set_threads
from labkit.core.errors import LabkitError
from labkit.data.splits import random_crop_flip
from labkit.sla import transforms
from labkit.sla.methods import METHODS
from labkit.sla.methods import get as get_method
from labkit.sla.models import build_model
from labkit.training.config import TrainConfig
from labkit.training.engine import train_step
from labkit.training.experiment import train_run
from labkit.training.resolve import ResolvedRun

REPO = Path(__file__).resolve().parent.parent
CHI2_8DOF_P001 = 26.12  # chi-square critical value, 8 degrees of freedom, p = 0.001


# ------------------------------------------------------------------------------------ the loss, from formulas
def _ce(logits: torch.Tensor, label: int) -> torch.Tensor:
    """-log softmax(logits)[label] for one sample."""
    return torch.logsumexp(logits, 0) - logits[label]


def _views_by_loop(x: torch.Tensor, M: int) -> torch.Tensor:
    """Sample-major views the plain way: for each sample b, for each j, rot90 by j quarter turns."""
    return torch.stack([torch.rot90(x[b], j, dims=(1, 2)) for b in range(len(x)) for j in range(M)])


def _reference_loss(method: str, out: dict, y: torch.Tensor, M: int, T: float, beta: float) -> torch.Tensor:
    """The table of labkit.objectives, one sample and one view at a time."""
    B = len(y)
    if method == "baseline":
        return sum(_ce(out["class"][b], y[b]) for b in range(B)) / B
    per_view = {  # loss of view j of sample b (row b*M + j)
        "da": lambda b, j: _ce(out["class"][b * M + j], y[b]),
        "mt": lambda b, j: _ce(out["class"][b * M + j], y[b]) + _ce(out["transform"][b * M + j], j),
        "sla": lambda b, j: _ce(out["joint"][b * M + j], y[b] * M + j),
        "sla+sd": lambda b, j: _ce(out["joint"][b * M + j], y[b] * M + j),
    }[method]
    loss = sum(per_view(b, j) for b in range(B) for j in range(M)) / (B * M)
    if method != "sla+sd":
        return loss
    N = out["class"].shape[1]
    for b in range(B):
        teacher = torch.stack([sum(out["joint"][b * M + j][i * M + j] for j in range(M)) / M for i in range(N)])
        p_t = torch.softmax(teacher.detach() / T, 0)
        log_p_s = torch.log_softmax(out["class"][b * M] / T, 0)  # the identity view's row is f(x)
        kl = sum(p_t[i] * (torch.log(p_t[i]) - log_p_s[i]) for i in range(N))
        loss = loss + T * T * kl / B + beta * _ce(out["class"][b * M], y[b]) / B
    return loss


@pytest.mark.parametrize("method", list(METHODS))
def test_batched_loss_equals_formula(method: str) -> None:
    torch.manual_seed(0)
    tset, m = transforms.get("rotation"), get_method(method)
    M, N, B = tset.M, 10, 6
    model = build_model("smallcnn", 1, N, M, m.heads)  # train mode: batch-norm uses the batch's statistics
    x, y = torch.randn(B, 1, 8, 8), torch.randint(0, N, (B,))
    fast_in = tset.expand(x) if m.expands else x
    if m.expands:
        torch.testing.assert_close(fast_in, _views_by_loop(x, M), rtol=0, atol=0)
    T, beta = 2.0, 0.5
    fast = m.bind(TrainConfig(T=T, beta=beta).to_dict())(model(fast_in), y, M)
    slow_in = _views_by_loop(x, M) if m.expands else torch.stack([x[b] for b in range(B)])
    slow = _reference_loss(method, model(slow_in), y, M, T, beta)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["baseline", "sla", "sla+sd"])
def test_train_step_loss_equals_formula(method: str) -> None:
    """The step the Learner and the benchmarks run (channels_last model, one gather) reports the formula's loss
    for the weights before its update, and it does update them."""
    torch.manual_seed(1)
    tset, m = transforms.get("rotation"), get_method(method)
    model = build_model("smallcnn", 1, 10, tset.M, m.heads).to(memory_format=torch.channels_last)
    before = copy.deepcopy(model)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    config = TrainConfig(method=method)
    run = ResolvedRun(config, m, tset, torch.device("cpu"), None, model, m.bind(config.to_dict()))
    loss = train_step(model, opt, run, x, y)
    slow_in = _views_by_loop(x, tset.M) if m.expands else x
    expected = _reference_loss(method, before(slow_in), y, tset.M, 1.0, 1.0)
    torch.testing.assert_close(loss, expected.detach(), rtol=1e-4, atol=1e-5)
    assert not torch.equal(before.backbone.features[0][0].weight, model.backbone.features[0][0].weight)


# ------------------------------------------------------------------------------ the augmentation distribution
def _position_images(n: int, H: int = 32, W: int = 32) -> torch.Tensor:
    """(n, 3, H, W): channel 0 holds row+1, channel 1 col+1, channel 2 noise; zero padding reads as 0."""
    rows = torch.arange(1, H + 1, dtype=torch.float32).view(H, 1).expand(H, W)
    cols = torch.arange(1, W + 1, dtype=torch.float32).view(1, W).expand(H, W)
    return torch.stack([rows.expand(n, H, W), cols.expand(n, H, W), torch.rand(n, H, W)], 1)


def _decode(out: torch.Tensor, pad: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(n, 3, H, W) crops of position images -> (top, left, flipped) per sample, offsets in the padded image."""
    W = out.shape[-1]
    row_val = out[:, 0].amax(dim=2)  # (n, H): source row + 1, or 0 where the crop is in the padding
    col_val = out[:, 1].amax(dim=1)  # (n, W)
    r0 = (row_val > 0).float().argmax(dim=1)  # first output row inside the image
    c0 = (col_val > 0).float().argmax(dim=1)
    n = torch.arange(len(out))
    top = row_val[n, r0] - 1 - r0 + pad
    flipped = col_val[n, c0 + 1] < col_val[n, c0]  # columns run backwards after a flip
    left_plain = col_val[n, c0] - 1 - c0 + pad
    left_flip = col_val[n, c0] - W + c0 + pad
    return top.long(), torch.where(flipped, left_flip, left_plain).long(), flipped


def _chi2_uniform(values: torch.Tensor, k: int) -> float:
    counts = torch.bincount(values, minlength=k).double()
    expected = len(values) / k
    return float(((counts - expected) ** 2 / expected).sum())


def _chi2_same(a: torch.Tensor, b: torch.Tensor, k: int) -> float:
    """Chi-square test of homogeneity of two samples over k categories (k - 1 degrees of freedom)."""
    ca, cb = torch.bincount(a, minlength=k).double(), torch.bincount(b, minlength=k).double()
    total = ca + cb
    ea, eb = total * len(a) / (len(a) + len(b)), total * len(b) / (len(a) + len(b))
    keep = total > 0
    return float((((ca - ea) ** 2 / ea)[keep] + ((cb - eb) ** 2 / eb)[keep]).sum())


def test_crop_is_a_window_of_the_padded_image() -> None:
    x = _position_images(256)
    gen = torch.Generator().manual_seed(3)
    out = random_crop_flip(x, gen)
    top, left, flipped = _decode(out)
    padded = F.pad(x, (4, 4, 4, 4))
    for b in range(len(x)):
        window = padded[b, :, top[b]:top[b] + 32, left[b]:left[b] + 32]
        torch.testing.assert_close(out[b], window.flip(-1) if flipped[b] else window, rtol=0, atol=0)


def test_crop_flip_distribution_matches_per_image_reference() -> None:
    import torchvision.transforms as T

    n = 4000
    x = _position_images(n)
    fast = _decode(random_crop_flip(x, torch.Generator().manual_seed(0)))
    torch.manual_seed(0)
    per_image = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()])
    slow = _decode(torch.stack([per_image(x[i]) for i in range(n)]))
    for top, left, flipped in (fast, slow):
        assert top.min() >= 0 and top.max() <= 8 and left.min() >= 0 and left.max() <= 8
        assert _chi2_uniform(top, 9) < CHI2_8DOF_P001 and _chi2_uniform(left, 9) < CHI2_8DOF_P001
        assert abs(flipped.float().mean().item() - 0.5) < 4 * math.sqrt(0.25 / n)
        assert _chi2_uniform(top * 9 + left, 81) < 124.8  # joint offsets uniform too (80 dof, p = 0.001)
    for a, b in zip(fast, slow, strict=True):
        assert _chi2_same(a.long(), b.long(), 9) < CHI2_8DOF_P001


def test_decoder_sees_a_wrong_distribution() -> None:
    """The checks above can fail: crops that never shift (or always flip) are caught."""
    x = _position_images(500)
    top, left, flipped = _decode(x)  # uncropped images read as offset (4, 4), not flipped
    assert (top == 4).all() and (left == 4).all() and not flipped.any()
    assert _chi2_uniform(top, 9) > CHI2_8DOF_P001
    top_f, left_f, flipped_f = _decode(x.flip(-1))
    assert flipped_f.all() and (left_f == 4).all()


# ------------------------------------------------------------------------------------- threads and timings
def test_set_threads_is_explicit(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    try:
        assert set_threads(torch.device("cpu"), 1) == 1
        monkeypatch.setenv("LABKIT_THREADS", "2")
        assert set_threads(torch.device("cpu")) == 2
        monkeypatch.setenv("LABKIT_THREADS", "two")
        with pytest.raises(LabkitError, match="LABKIT_THREADS"):
            set_threads(torch.device("cpu"))
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_first_step_is_timed_apart(tmp_path: Path) -> None:
    config = TrainConfig(epochs=1, max_steps=4, train_fraction=0.3, device="cpu", batch_size=32)
    metrics = train_run(config, tmp_path / "run", progress=False).metrics()
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert 0 < metrics["first_step_seconds"] <= history[0]["seconds"]  # the epoch's seconds include it
    assert "first_step_seconds" not in history[0]  # history stays free of per-fit timings (resume-exact)
    assert metrics["steady_step_seconds"] > 0 and metrics["compiled"] is False
    expected = (history[0]["seconds"] - metrics["first_step_seconds"]) / 3
    assert metrics["steady_step_seconds"] == pytest.approx(expected)


# -------------------------------------------------------------------------------------------------- scripts
def _run_script(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "LABKIT_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=env)


@pytest.mark.slow
def test_benchmark_quick_prints_every_ratio() -> None:
    proc = _run_script("benchmarks/run.py", "--quick", "--threads", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert {"cpu", "cores", "torch", "device"} <= set(report["machine"])
    keys = {"R1", "R2", "R3", "R4_aggregated_over_distilled", "R4_distilled_over_baseline", "R5_speedup"}
    assert set(report["models"]) == {"digits", "resnet32"}
    for model in report["models"].values():
        assert set(model["ratios"]) == keys
        for key, r in model["ratios"].items():
            assert math.isfinite(r["value"]) and r["value"] > 0
            assert r["pass"] is None if key == "R5_speedup" else isinstance(r["pass"], bool)
        assert model["peak_memory"]["cpu_peak_rss_mib"] > 0
    judged = [r["pass"] for m in report["models"].values() for k, r in m["ratios"].items() if k != "R5_speedup"]
    assert report["all_pass"] == all(judged)


@pytest.mark.slow
def test_gpu_script_smoke_runs_on_any_device() -> None:
    proc = _run_script("benchmarks/gpu.py", "--smoke")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["smoke"] is True
    for name in ("sla_M4_bf16_eager", "sla_M6_bf16_eager", "sla_M4_fp32_eager", "baseline_B_bf16_eager",
                 "baseline_4B_bf16_eager", "reference_sla_M4_bf16"):
        assert report["results"][name].get("images_per_s", 0) > 0, report["results"][name]


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_gpu_script_without_gpu_says_so() -> None:
    proc = _run_script("benchmarks/gpu.py", timeout=120)
    assert proc.returncode == 0 and "no CUDA GPU" in proc.stderr and proc.stdout == ""


def test_gpu_sync_check_counts_only_steady_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """gpu.py's host-sync counter, run on CPU with the CUDA debug switch recorded instead of set: it switches
    on after the first step, off after the last, and counts a warning raised inside a steady step."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import gpu
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    modes: list[str] = []
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)
    images, labels = gpu.cifar_like(48)
    data = gpu.bundle_of(images, labels, True, torch.device("cpu"))
    result = gpu.sync_check(data, torch.device("cpu"), B=8, steps=3)
    assert result["steady_steps"] == 3 and result["host_syncs"] == 0
    assert modes[:2] == ["warn", "default"]

    real_step = gpu.Learner._train_step

    def syncing_step(self, x, y):  # a step that reads the loss on the host, as reference code does
        real_step(self, x, y)
        import warnings

        warnings.warn("called a synchronizing CUDA operation", UserWarning, stacklevel=1)

    monkeypatch.setattr(gpu.Learner, "_train_step", syncing_step)
    assert gpu.sync_check(data, torch.device("cpu"), B=8, steps=3)["host_syncs"] == 3
