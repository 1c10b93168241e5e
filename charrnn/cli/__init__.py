"""The `charrnn` command: a thin click layer over charrnn.api; it imports nothing else.

    commands.py     the group and train, sample, evaluate, info
    tools.py        viz, plot, novelty, serve, export
    declare.py      options declared in charrnn/config.py turned into click options; errors as one line
"""
