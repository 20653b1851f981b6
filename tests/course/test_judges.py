"""The digit judge the generative projects are graded with (torchclass_course.judges): it tells
real digits from noise and from copies, it is the same every time, and it takes no answer from
the samples themselves."""

import pytest
import torch
from torchclass_course.judges import DigitJudge, digit_split, digits

pytestmark = pytest.mark.usefixtures("no_network")


@pytest.fixture(scope="module")
def judge():
    return DigitJudge()


def test_real_unseen_digits_pass_and_noise_fails(judge):
    images, _ = digits()
    _, test_idx = digit_split()
    real = judge.judge(images[test_idx])
    assert judge.held_out_accuracy > 0.95, judge.held_out_accuracy
    assert real.recognised > 0.7 and len(real.classes) == 10, real
    assert real.frechet < 5 and real.copies < 0.1, real
    noise = judge.judge(torch.rand(300, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    assert noise.recognised < 0.05 and noise.frechet > 100, noise


def test_copies_and_one_repeated_digit_are_caught(judge):
    images, _ = digits()
    train_idx, _ = digit_split()
    copies = judge.judge(images[train_idx[:300]])
    assert copies.copies == 1.0, copies
    one = judge.judge(images[train_idx[:1]].repeat(300, 1) + 0.3 * torch.randn(300, 64))
    assert len(one.classes) <= 2 and one.frechet > 45, one


def test_the_judge_is_the_same_every_time_and_leaves_the_random_state(judge):
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    again = DigitJudge()
    assert torch.equal(torch.random.get_rng_state(), before)
    for a, b in zip(judge.classifier.parameters(), again.classifier.parameters(), strict=True):
        assert torch.equal(a, b)


def test_samples_that_answer_for_themselves_are_refused(judge):
    class Agreeable(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            return super().__torch_function__(func, types, args, kwargs or {})

    with pytest.raises(TypeError, match="plain torch.Tensor"):
        judge.judge(torch.zeros(100, 64).as_subclass(Agreeable))
    with pytest.raises(ValueError, match="64 pixels"):
        judge.judge(torch.zeros(100, 10))
    with pytest.raises(ValueError, match="NaN"):
        judge.judge(torch.full((100, 64), float("nan")))
