"""Memory probe and memory-bounded batch sizes (survey.engine.memory), against a network whose memory per
image is known: it materialises a (B, K, n, n) float32 tensor, K * n^2 * 4 bytes per image."""

import pytest
import torch
from torch import nn

from survey.engine import memory
from survey.physics import make_physics

N = 32
MB = 1024 ** 2


class Blowup(nn.Module):
    """out = sum_k w_k H(y): the (B, K, n, n) product is the only large tensor (forward and its gradient)."""

    def __init__(self, channels: int):
        super().__init__()
        self.w = nn.Parameter(torch.linspace(0.5, 1.5, channels).view(1, channels, 1, 1))

    def forward(self, y, physics):
        h = physics.H(y).real
        return (h.expand(-1, self.w.shape[1], -1, -1) * self.w).sum(dim=1, keepdim=True)


def _physics():
    return make_physics("mri", size=N, ratio=0.25, mask="gaussian-lines", seed=0)


def _block_bytes(channels: int) -> int:
    return channels * N * N * 4


BIG = 64 * MB // (N * N * 4)   # channels for 64 MB per image


def test_probe_sees_the_known_per_image_memory():
    probe = memory.probe_memory(Blowup(BIG), _physics(), network="blowup")
    block = _block_bytes(BIG)
    # forward keeps one block alive; the backward makes its gradient (one or two blocks at once)
    assert block * 0.9 <= probe.per_image <= block * 3.5, (probe, block)
    assert probe.size == N and probe.backward and probe.seconds_per_image > 0


def test_probe_control_small_network_reads_small():
    probe = memory.probe_memory(Blowup(4), _physics(), network="small")
    assert probe.peak(1) < 32 * MB, probe   # a 64 MB-per-image network would read at least 57 MB


def test_forward_only_probe_needs_less_than_forward_backward():
    net, physics = Blowup(BIG), _physics()
    fwd = memory.probe_memory(net, physics, backward=False)
    both = memory.probe_memory(net, physics, backward=True)
    assert fwd.per_image <= both.per_image * 1.1
    assert all(p.requires_grad for p in net.parameters())   # the probe restores requires_grad


def test_batch_from_the_budget_honours_it_when_run():
    net, physics = Blowup(BIG), _physics()
    probe = memory.probe_memory(net, physics, network="blowup")
    budget = 6 * _block_bytes(BIG)
    batch = memory.batch_size(probe, budget, task="attack")
    assert batch >= 1
    assert probe.peak(batch) * 1.0 <= budget
    assert memory.batch_size(probe, budget, task="attack", cap=1) == 1   # a fixed batch stays a cap
    # run that batch and measure: its real peak stays inside the budget
    meter = memory.PeakMeter(torch.device("cpu"))
    x = torch.rand(batch, 1, N, N)
    for p in net.parameters():
        p.requires_grad_(False)
    meter.start()
    memory._one_call(net, physics, x, backward=True)
    assert meter.peak() <= budget, (meter.peak(), budget, batch)


def test_batch_grows_with_the_budget_linearly():
    probe = memory.MemoryProbe("net", 64, True, fixed=10 * MB, per_image=100 * MB, seconds_per_image=0.1,
                               method="vmhwm")
    # floor((budget - fixed) / (per_image * HEADROOM)) for a task whose working set is the probed call
    assert memory.batch_size(probe, 10 * MB + 125 * MB, task="severity") == 1
    assert memory.batch_size(probe, 10 * MB + 1250 * MB, task="severity") == 10
    assert memory.batch_size(probe, 10 * MB + 1249 * MB, task="severity") == 9


def test_searches_and_detectors_are_planned_at_their_measured_working_set():
    """At 320 px the attack held 1.33-1.42x the probed call and detect 1.90x (benchmarks/README.md): their
    images are planned at 1.2 x and 1.6 x the probe before the 1.25 headroom, the ball's centre search as an
    attack's, its forward-only draws at the probe."""
    probe = memory.MemoryProbe("net", 64, True, fixed=10 * MB, per_image=100 * MB, seconds_per_image=0.1,
                               method="vmhwm")
    budget = 10 * MB + 1500 * MB   # 12 images at 125 MB, 10 at 150 MB, 7 at 200 MB
    assert memory.batch_size(probe, budget, task="severity") == 12
    assert memory.batch_size(probe, budget, task="attack") == 10
    assert memory.batch_size(probe, budget, task="detect") == 7
    assert memory.batch_size(probe, budget, task="ball") == 12
    assert memory.batch_size(probe, budget, task="ball", search=True) == 10
    with pytest.raises(memory.MemoryBudgetError, match="needs 0.21 GB"):   # 10 MB + 200 MB
        memory.batch_size(probe, 150 * MB, task="detect")


def test_the_spectrum_is_planned_per_lanczos_block():
    """The spectrum's block Lanczos held 1.60-2.55x the probed call per block (benchmarks/README.md): an image is
    planned at 2.1 x block x the probe before the headroom; without its parameters it cannot be planned."""
    probe = memory.MemoryProbe("net", 64, True, fixed=10 * MB, per_image=100 * MB, seconds_per_image=0.1,
                               method="vmhwm")
    budget = 10 * MB + 8 * 262.5 * MB   # 262.5 MB = 100 MB x 2.1 x 1.25: 8 images at block 1
    assert [memory.batch_size(probe, budget, task="spectrum", params={"block": b}) for b in (1, 2, 4)] == [8, 4, 2]
    assert memory.batch_size(probe, budget, task="spectrum", params={"block": 1}, search=True) == 14   # as a search
    with pytest.raises(ValueError, match="'spectrum' is planned per 'block'"):
        memory.working_set("spectrum")


def test_budget_too_small_for_one_image_names_network_task_and_need():
    probe = memory.MemoryProbe("e2e-varnet", 320, True, fixed=0, per_image=2 * memory.GB, seconds_per_image=1.0,
                               method="vmhwm")
    with pytest.raises(memory.MemoryBudgetError) as err:
        memory.batch_size(probe, 1 * memory.GB, task="ball")
    message = str(err.value)
    assert "'e2e-varnet'" in message and "'ball'" in message and "2.50 GB" in message and "1.00 GB" in message
    assert "\n" not in message


def test_default_budget_is_a_share_of_the_free_memory():
    free = memory.available_bytes("cpu")
    assert 0 < memory.default_budget_bytes("cpu", actors=2) <= free * memory.DEFAULT_FRACTION / 2 + 1
    assert memory.budget_bytes(8, "cpu") == 8 * memory.GB
    assert memory.budget_bytes(None, "cpu", actors=1) == pytest.approx(memory.default_budget_bytes("cpu"), rel=0.2)


def test_forward_only_tasks_are_probed_without_backward():
    assert not memory.needs_backward("sweep") and memory.needs_backward("attack")
    assert memory.needs_backward("spectrum")
    assert not memory.needs_backward("ball") and memory.search_first("ball")   # draws forward, centre searched


@pytest.mark.parametrize("value", [0, -1, "lots", float("nan")])
def test_spec_rejects_a_bad_memory_budget_in_one_line(value):
    from survey.spec import StudyError, parse_study

    data = {"name": "s", "networks": [{"name": "dagan"}], "datasets": [{"name": "brain", "count": 1}],
            "tasks": [{"name": "sweep"}], "engine": {"memory_gb": value}}
    with pytest.raises(StudyError) as err:
        parse_study(data, "study.toml")
    assert "engine.memory_gb" in str(err.value) and "\n" not in str(err.value)


def test_spec_accepts_a_memory_budget():
    from survey.spec import parse_study

    data = {"name": "s", "networks": [{"name": "dagan"}], "datasets": [{"name": "brain", "count": 1}],
            "tasks": [{"name": "sweep"}], "engine": {"memory_gb": 8}}
    assert parse_study(data, "study.toml").engine.memory_gb == 8


def test_probe_of_a_parameter_free_network():
    class Zero(nn.Module):
        def forward(self, y, physics):
            return physics.H(y).real

    probe = memory.probe_memory(Zero(), _physics(), network="H")
    assert probe.per_image >= 2 * N * N * (4 + 8)   # at least the image and its complex data, twice


class _Held(torch.autograd.Function):
    """sum_k w_k h keeping its (B, K, n, n) block for backward, where one more block is made while it lives."""

    @staticmethod
    def forward(ctx, h, w):
        block = h.expand(-1, w.shape[1], -1, -1) * w
        ctx.save_for_backward(block, w)
        return block.sum(dim=1, keepdim=True)

    @staticmethod
    def backward(ctx, grad):
        block, w = ctx.saved_tensors
        return (grad.expand_as(block) * w).sum(dim=1, keepdim=True), None


class Held(Blowup):
    """Exactly 2 blocks per image at the peak of a forward + backward, and no large buffer freed before another
    is allocated within a call: what the resident set shows does not depend on malloc's reuse of freed pages."""

    def forward(self, y, physics):
        return _Held.apply(physics.H(y).real, self.w)


def test_probe_reads_an_exact_per_image_memory_on_every_call():
    # blocks of 32 MB: the resident set moves by a megabyte or two for reasons of its own (the allocator, other
    # threads), so the exact answer is asserted to within 4 MB, a small fraction of the 64 MB per image
    channels = 32 * MB // (N * N * 4)
    block = _block_bytes(channels)
    net, physics = Held(channels), _physics()
    probes = [memory.probe_memory(net, physics, network="held") for _ in range(3)]
    for probe in probes:   # each one: its unread first call keeps one-time allocations out of the readings
        assert 2 * block - 4 * MB <= probe.per_image <= 2 * block + 4 * MB, (probe, block)   # 64 MB +- 4
        assert probe.fixed <= 4 * MB, probe
    # 200 MB holds floor((200 - fixed) / (64 x HEADROOM)) = 2 such images, whichever probe reading in range
    assert memory.HEADROOM == 1.25
    assert {memory.batch_size(p, 200 * MB, task="severity") for p in probes} == {2}
