"""Model shapes for random-weight stand-ins: speed and memory at paper scale where no weights can
be downloaded. Read by the bench scripts beside it only (`from shapes import ...`: a script run as
`python bench/X.py` has bench/ first on its path)."""

# Qwen3-8B's config.json sizes.
QWEN3_8B_SHAPES = dict(
    vocab_size=151936,
    hidden_size=4096,
    intermediate_size=12288,
    num_hidden_layers=36,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    max_position_embeddings=40960,
    rope_theta=1_000_000.0,
    tie_word_embeddings=False,
)
