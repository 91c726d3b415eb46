"""core/errors.py: a message is one line whatever line endings the value it quotes has."""

from core.errors import one_line


def test_windows_and_old_mac_line_breaks_become_one_space():
    # a value read from a file saved on Windows ends its lines in \r\n; a lone \r would send the terminal's cursor
    # back over the start of the line
    assert one_line('bad value "a\r\nb"\rin config.py\n') == 'bad value "a b" in config.py'
    assert '\r' not in one_line('x\ry')


def test_ctrl_c_ends_a_script_with_the_shells_code_for_sigint(monkeypatch, capsys):
    # 130 = 128 + SIGINT (2), what a shell reports for a command Ctrl-C stopped; scripts and CI read it
    import sys

    import pytest

    from core.errors import install_excepthook
    monkeypatch.setattr(sys, 'excepthook', sys.excepthook)
    install_excepthook()
    with pytest.raises(SystemExit) as e:
        sys.excepthook(KeyboardInterrupt, KeyboardInterrupt(), None)
    assert e.value.code == 130
    assert capsys.readouterr().err == 'interrupted\n'
