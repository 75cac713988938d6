"""A tiny random-weight Llama model built locally, with no hub access.

The demo, the engine tests and the benchmark all need a model that vLLM can
load on a CPU in seconds. This module trains a byte-level BPE tokenizer with
``tokenizers`` on a fixed text and saves a random-weight ``LlamaForCausalLM``
whose vocabulary equals the tokenizer's. The result is cached in a directory
outside the repository and rebuilt only when it is missing or incomplete.

``transformers`` and ``tokenizers`` are imported lazily: they are heavy and the
processor itself never needs them.
"""

from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["TinyModelSpec", "build_tiny_model", "default_cache_dir"]

logger = logging.getLogger(__name__)

# The CPU attention backend accepts only these head sizes.
_CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)

_SPECIAL_TOKENS = ("<s>", "</s>", "<pad>", "<unk>")

# A fixed English text plus pseudo-words built from syllables: enough distinct
# words for the BPE trainer to reach a vocabulary of tens of thousands by merges.
_TEXT = (
    "The nature of consciousness is a question that has occupied philosophers "
    "and scientists for centuries. Quantum random number generators measure "
    "physical processes such as photon arrival times or vacuum fluctuations. "
    "Once upon a time there was a small model that could only babble. "
)
_ONSETS = (
    *("b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s"),
    *("t", "v", "w", "z", "st", "tr", "ch", "sh", "th", "pl", "gr", "br", "qu", ""),
)
_NUCLEI = ("a", "e", "i", "o", "u", "ai", "ea", "ou", "io", "y")
_CODAS = ("", "n", "r", "s", "t", "l", "m", "nd", "st", "ck", "ng", "x")


def _corpus(vocab_size: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    words = [
        "".join(
            rng.choice(_ONSETS) + rng.choice(_NUCLEI) + rng.choice(_CODAS)
            for _ in range(rng.randint(1, 3))
        )
        for _ in range(max(20_000, 4 * vocab_size))
    ]
    lines = [" ".join(words[i : i + 12]).capitalize() + "." for i in range(0, len(words), 12)]
    return [_TEXT] * 8 + lines


# Chat template for /v1/chat/completions: plain role-prefixed turns.
_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] }}: {{ message['content'] }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


@dataclass(frozen=True)
class TinyModelSpec:
    """Shape of the tiny model.

    Attributes:
        vocab_size: Tokenizer and model vocabulary size (they are always equal).
        hidden_size: Model width.
        num_layers: Number of decoder layers.
        num_heads: Attention heads; ``hidden_size // num_heads`` need not equal
            ``head_dim`` because Llama takes ``head_dim`` explicitly.
        head_dim: Per-head size; must be one the CPU attention backend accepts.
        max_position_embeddings: Longest sequence the model accepts.
        seed: Seed of the random weights, so every build is identical.
        embedding_std: Standard deviation of the (tied) embedding weights; it
            sets how peaked the next-token distributions are.
    """

    vocab_size: int = 1024
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 2
    head_dim: int = 32
    max_position_embeddings: int = 512
    seed: int = 0
    embedding_std: float = 0.05

    def __post_init__(self) -> None:
        if self.head_dim not in _CPU_HEAD_SIZES:
            raise ValueError(
                f"head_dim={self.head_dim} is not supported by vLLM's CPU attention "
                f"backend; allowed: {', '.join(map(str, _CPU_HEAD_SIZES))}"
            )
        if self.vocab_size < 300:
            raise ValueError(
                f"vocab_size={self.vocab_size} is too small; it must be >= 300 "
                "(256 byte symbols plus special tokens and merges)"
            )

    @property
    def dirname(self) -> str:
        """Directory name that identifies this shape in the cache."""
        return (
            f"tiny-llama-v{self.vocab_size}-h{self.hidden_size}-l{self.num_layers}"
            f"-hd{self.head_dim}-s{self.seed}-e{self.embedding_std}"
        )


def default_cache_dir() -> Path:
    """Return the cache directory for built models (outside any git checkout).

    ``QR_TINY_MODEL_CACHE`` overrides it; otherwise ``$XDG_CACHE_HOME`` or
    ``~/.cache`` with ``qr-sampler`` below it.
    """
    override = os.environ.get("QR_TINY_MODEL_CACHE")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qr-sampler"


def build_tiny_model(spec: TinyModelSpec | None = None, cache_dir: Path | None = None) -> Path:
    """Build (or reuse) the tiny model and return its directory.

    Args:
        spec: Model shape; the defaults give a 1,024-token vocabulary.
        cache_dir: Parent directory of the cached model; defaults to
            :func:`default_cache_dir`.

    Returns:
        A directory that ``vllm.LLM(model=...)`` and ``vllm serve`` accept.
    """
    spec = spec or TinyModelSpec()
    target = (cache_dir or default_cache_dir()) / spec.dirname
    marker = target / "qr_tiny_model.json"
    if marker.is_file() and json.loads(marker.read_text()) == asdict(spec):
        return target
    logger.info("Building tiny model %s in %s", spec.dirname, target)
    target.mkdir(parents=True, exist_ok=True)
    _build_tokenizer(spec, target)
    _build_weights(spec, target)
    # Written last: an interrupted build is rebuilt next time.
    marker.write_text(json.dumps(asdict(spec)))
    return target


def _build_tokenizer(spec: TinyModelSpec, target: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=list(_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(spec.vocab_size, spec.seed), trainer=trainer)
    # Should the trainer stop short of the size, numbered tokens make it exact.
    missing = spec.vocab_size - tokenizer.get_vocab_size()
    if missing > 0:
        tokenizer.add_tokens([f"<extra_{i}>" for i in range(missing)])
    if tokenizer.get_vocab_size() != spec.vocab_size:
        raise RuntimeError(
            f"tokenizer vocabulary has {tokenizer.get_vocab_size()} tokens, "
            f"expected {spec.vocab_size}"
        )
    fast_cls: Any = PreTrainedTokenizerFast
    fast = fast_cls(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    fast.chat_template = _CHAT_TEMPLATE
    fast.save_pretrained(str(target))


def _build_weights(spec: TinyModelSpec, target: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.hidden_size * 2,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
        head_dim=spec.head_dim,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
        dtype="float32",
    )
    torch.manual_seed(spec.seed)
    model_cls: Any = LlamaForCausalLM
    model = model_cls(config)
    # With the default std 0.02 every next-token distribution is nearly flat;
    # std 0.05 gives varied text (about 40 top-k/top-p candidates per token),
    # while 0.1 and above lock into repeating the last token.
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0.0, spec.embedding_std)
    model.save_pretrained(str(target))
