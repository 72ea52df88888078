"""specbench's JAX engine: the same decoder and decode loop as the PyTorch engine, compiled with XLA.

`model` holds the decoder and its KV-cache pytree; `engine` the jitted prefill, decode
step and speculative iteration. Importing this package imports JAX but never PyTorch.
"""
