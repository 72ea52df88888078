"""The offline toy pair: a synthetic GSM8K-style corpus, a local tokenizer, and two small Llama models.

`corpus` generates the problems, `tokenizer` trains the byte-level BPE, `train` builds the
pair (`build_toy_pair`), `evaluate` scores it, and `cli` is `specbench toy-pair`.
"""
