"""Seeing inside a trained model and its runs.

    report.py       the HTML report of `charrnn viz` (report_page.py is its page)
    probe.py        per-character surprisal and the gradient over distance
    units.py        hidden units that follow a feature of the text
    plots.py        loss.png and `charrnn plot` (matplotlib)
    novelty.py      how much of a sample is copied from the training text (suffix array)
"""
