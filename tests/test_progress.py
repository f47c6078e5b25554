"""What the runner shows from a notebook kernel: the [labkit] lines, at most one line per epoch in a log, and a
status line with the cell and the epoch on a terminal."""

from __future__ import annotations

from labkit.core.log import EPOCH_PREFIX, PREFIX
from labkit.lab.watch import NotebookWatch


def _feed(watch: NotebookWatch) -> None:
    kwargs = watch.papermill_kwargs(n_cells=5)
    kwargs["on_cell_start"](cell={"cell_type": "code", "source": "\ncomparison = report.compare(configs)"},
                            cell_index=3)
    out = kwargs["stdout_file"]
    out.write("some notebook print\n" + PREFIX + "training sla on digits/rotation, seed 0 (2 epochs) into x\n")
    out.write(EPOCH_PREFIX + "sla seed 0: epoch 1/2 loss 1.0\n" + EPOCH_PREFIX + "sla seed 0: epo")
    out.write("ch 2/2 loss 0.5\n")
    kwargs["stderr_file"].write("\r 50%|#####     | tqdm noise\n")
    watch.close()


def test_in_a_log_only_labkit_lines_reach_it_one_per_epoch():
    lines: list[str] = []
    _feed(NotebookWatch("[1/1] 02", log=lines.append, live=False))
    assert lines == ["    training sla on digits/rotation, seed 0 (2 epochs) into x",
                     "    sla seed 0: epoch 1/2 loss 1.0", "    sla seed 0: epoch 2/2 loss 0.5"]


def test_on_a_terminal_the_status_line_shows_the_cell_and_the_epoch(capsys):
    lines: list[str] = []
    _feed(NotebookWatch("[1/1] 02", log=lines.append, live=True))
    status = capsys.readouterr().out
    assert "cell 4/5" in status and "comparison = report.compare(configs)" in status
    assert "epoch 2/2 loss 0.5" in status and status.endswith("\r")  # cleared at the end
    assert lines == ["    training sla on digits/rotation, seed 0 (2 epochs) into x"]  # epochs stay in the status


def test_epoch_lines_go_to_the_watchs_file_not_to_stdout(monkeypatch, capsys):
    """Under the runner the kernel appends its epoch lines to the file the watch names; the watch shows them and
    stdout (what papermill saves in the copy) holds none."""
    from labkit.core.log import epoch_line

    lines: list[str] = []
    watch = NotebookWatch("[1/1] 02", log=lines.append, live=False)
    for name, value in watch.env.items():
        monkeypatch.setenv(name, value)
    epoch_line("sla seed 0: epoch 1/2 loss 1.0")
    epoch_line("sla seed 0: epoch 2/2 loss 0.5")
    watch.close()
    assert capsys.readouterr().out == ""
    assert lines == ["    sla seed 0: epoch 1/2 loss 1.0", "    sla seed 0: epoch 2/2 loss 0.5"]
    assert not watch.epoch_file.exists()
