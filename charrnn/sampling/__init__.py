"""Sampling: each chosen character is fed back in as the next input.

    sampler.py     generate() and stream(): the Python API's sampling
    engine.py      the Engine (continuous batching) and its Request: every kind of sampling runs it
    choice.py      choosing the next character from logits: temperature, top-k, top-p, seeds
    fast_step.py   one recurrent step without autograd, for batch 1 to max_batch
"""
