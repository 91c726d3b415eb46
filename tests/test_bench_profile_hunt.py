"""core/bench/profile.py on profiler events made up by the test: their self times (microseconds, as torch.profiler
gives them), the op that launched each and the category each must land in are written out by hand."""

import pytest
from torch.autograd import DeviceType

from core.bench import profile


class Event:
    def __init__(self, name, us=0, parent=None):
        self.name, self.self_cpu_time_total, self.cpu_parent = name, us, parent
        self.device_type = DeviceType.CPU


def test_an_op_anywhere_under_the_optimizer_step_counts_as_the_optimizer():
    step = Event('Optimizer.step#AdamW.step')
    inner = Event('aten::mul_', parent=Event('aten::_fused_adamw_', parent=step))  # two levels down
    assert profile.cpu_op_category(inner) == 'optimizer and clipping'
    assert profile.cpu_op_category(Event('aten::mul_', parent=Event('aten::gelu_backward'))) == \
        'elementwise, reductions, copies'


@pytest.mark.parametrize('name', ['aten::mm', 'aten::addmm', 'aten::bmm', 'aten::baddbmm'])
def test_every_matrix_multiply_counts_as_a_matmul(name):
    # addmm is what a Linear with a bias runs on the CPU
    assert profile.cpu_op_category(Event(name)) == 'matmuls'


def fake_profile(monkeypatch, events):
    class Prof:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def events(self):
            return events
    monkeypatch.setattr(profile, 'profile', lambda activities: Prof())
    monkeypatch.setattr(profile, 'timed_train_steps', lambda *a, **k: None)


def test_the_breakdown_is_in_seconds_and_shares_with_the_longest_ops_first(monkeypatch):
    events = [Event('aten::addmm', 300_000), Event('aten::gelu', 100_000), Event('aten::addmm', 300_000),
              Event('aten::native_layer_norm', 200_000), Event('aten::empty', 0)]
    fake_profile(monkeypatch, events)
    figures, lines = profile.breakdown(None, None, None, None, 'cpu', 1)
    # 0.3 + 0.1 + 0.3 + 0.2 = 0.9 s of CPU self time; the op of no time is left out
    assert figures['profiled_seconds'] == pytest.approx(0.9)
    assert [(o['op'], o['calls']) for o in figures['top_ops']] == \
        [('aten::addmm', 2), ('aten::native_layer_norm', 1), ('aten::gelu', 1)]
    assert [o['seconds'] for o in figures['top_ops']] == pytest.approx([0.6, 0.2, 0.1])
    assert figures['time_breakdown'] == pytest.approx({'matmuls': 0.6 / 0.9, 'norms': 0.2 / 0.9,
                                                       'elementwise, reductions, copies': 0.1 / 0.9})
    assert '  matmuls' in lines[1] and lines[1].endswith(' 66.7%')


def test_the_second_kernel_of_the_clipping_norm_counts_with_the_optimizer_not_the_norms():
    # torch's foreach norm runs multi_tensor_apply, then lpnorm_cleanup, whose name also holds 'norm_'
    name = 'void at::native::(anonymous namespace)::lpnorm_cleanup<float, (at::native::NormType)1, float, float>(...)'
    assert profile.kernel_category(name) == 'optimizer and clipping'
