"""core/training/guards.py's resume_command: the command a stopped run prints to go on with it."""

from core.training import guards


def test_resume_command_drops_the_old_start_and_the_checkpoint_choice(monkeypatch):
    monkeypatch.setattr(guards.sys, 'argv', ['train.py', 'config/x.py', '--init_from=resume', '--ckpt=ckpt_100.pt',
                                             '--max_iters=50'])
    # going on must read the newest checkpoint, not the step the stopped run started from
    assert guards.resume_command(False) == 'python train.py config/x.py --max_iters=50 --init_from=resume'
    monkeypatch.setattr(guards.sys, 'argv', ['train.py', '--init_from=gpt2', '--lr=1'])
    assert guards.resume_command(True) == 'torchrun ... train.py --lr=1 --init_from=resume'
