"""A sentencepiece BPE `tokenizer.model` -> a transformers fast tokenizer with the same ids.

The slow tokenizers of these families (LlamaTokenizer, InternLM2Tokenizer) split a text on their
special tokens and run sentencepiece on each piece in between, which adds its dummy prefix `▁` to
each piece. The fast tokenizer built here does the same: special tokens are added tokens, matched
before normalization; each piece is normalized with `▁` prepended and spaces replaced by `▁`; then
BPE with byte fallback. Models whose normalization the fast pipeline cannot reproduce are refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from reward_server.errors import ImportRefused

# sentencepiece piece types: 3 = control (<s>, </s>), 4 = user defined (<|im_start|> ...)
CONTROL, USER_DEFINED = 3, 4
BPE_MODEL = 2


def _model_proto(path: Path) -> Any:
    from transformers.convert_slow_tokenizer import import_protobuf

    proto = import_protobuf().ModelProto()
    try:
        proto.ParseFromString(path.read_bytes())
    except Exception as e:  # protobuf's DecodeError
        raise ImportRefused(f"{path}: not a sentencepiece model ({e})") from e
    return proto


def _check_reproducible(path: Path, proto: Any) -> None:
    spec = proto.normalizer_spec
    if proto.trainer_spec.model_type != BPE_MODEL:
        raise ImportRefused(
            f"{path}: only BPE sentencepiece models are supported (this one is type "
            f"{proto.trainer_spec.model_type})"
        )
    if spec.precompiled_charsmap:
        raise ImportRefused(
            f"{path}: the sentencepiece normalizer {spec.name!r} is not 'identity'; "
            "the fast tokenizer could not give the same ids"
        )
    if spec.remove_extra_whitespaces:
        raise ImportRefused(f"{path}: the sentencepiece model removes extra whitespace; not supported")


def fast_tokenizer_from_sentencepiece(
    path: Path,
    *,
    add_bos: bool,
    add_eos: bool,
    bos_token: str = "<s>",
    eos_token: str = "</s>",
    unk_token: str = "<unk>",
    pad_token: str | None = None,
    extra_tokens: Iterable[tuple[int, str]] = (),
    chat_template: str | None = None,
) -> Any:
    """Build the fast tokenizer. `extra_tokens` are (id, text) added tokens of the original tokenizer
    (tokenizer_config.json / added_tokens.json); an id beyond the sentencepiece vocabulary must be the
    next one."""
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, processors
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import SentencePieceExtractor

    proto = _model_proto(path)
    _check_reproducible(path, proto)
    vocab_scores = [(piece.piece, piece.score) for piece in proto.pieces]
    _, merges = SentencePieceExtractor(str(path)).extract(vocab_scores)
    vocab = {piece: index for index, (piece, _) in enumerate(vocab_scores)}
    tokenizer = Tokenizer(
        BPE(vocab, merges, unk_token=proto.trainer_spec.unk_piece, fuse_unk=True, byte_fallback=True)
    )

    specials = {
        index: piece.piece
        for index, piece in enumerate(proto.pieces)
        if piece.type in (CONTROL, USER_DEFINED)
    }
    for index, text in sorted(extra_tokens):
        if index < len(proto.pieces) and proto.pieces[index].piece != text:
            raise ImportRefused(
                f"{path}: added token {text!r} claims id {index}, which is "
                f"{proto.pieces[index].piece!r} in the sentencepiece model"
            )
        specials[index] = text
    # Matched before normalization, so each text piece between them gets its own dummy prefix.
    tokenizer.add_special_tokens(
        [AddedToken(specials[i], normalized=False, special=True) for i in sorted(specials)]
    )
    for index, text in specials.items():  # ids past the sentencepiece vocabulary must come in order
        if tokenizer.token_to_id(text) != index:
            raise ImportRefused(
                f"{path}: added token {text!r} would get id {tokenizer.token_to_id(text)}, "
                f"but the original tokenizer gives it {index}"
            )

    steps = [normalizers.Replace(" ", "▁")]
    if proto.normalizer_spec.add_dummy_prefix:
        steps.insert(0, normalizers.Prepend("▁"))
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.decoder = decoders.Sequence(
        [
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(content=" ", left=1),
        ]
    )
    frame = ([f"{bos_token}:0"] if add_bos else []) + ["$A:0"] + ([f"{eos_token}:0"] if add_eos else [])
    frame_tokens = [
        (t, tokenizer.token_to_id(t)) for t, on in ((bos_token, add_bos), (eos_token, add_eos)) if on
    ]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=" ".join(frame), special_tokens=frame_tokens
    )

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=bos_token,
        eos_token=eos_token,
        unk_token=unk_token,
        pad_token=pad_token,
        clean_up_tokenization_spaces=False,
    )
    if chat_template:
        fast.chat_template = chat_template
    return fast


def sentencepiece_reference_ids(path: Path, text: str, special_tokens: dict[str, int]) -> list[int]:
    """What the slow tokenizer does: split on special tokens, sentencepiece on each piece."""
    import re

    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
    ids: list[int] = []
    if not special_tokens:
        return list(sp.encode(text))
    pattern = "(" + "|".join(re.escape(t) for t in sorted(special_tokens, key=len, reverse=True)) + ")"
    for piece in re.split(pattern, text):
        if piece in special_tokens:
            ids.append(special_tokens[piece])
        elif piece:
            ids.extend(sp.encode(piece))
    return ids


PROBE_TEXTS = (
    "Hello! What's your name?",
    "你好，请问你叫什么名字？",
    "def f(x):\n    return  x ** 2  # code\t",
    "emoji 😀🚀 and accents café",
    "  leading and trailing spaces  ",
)


def verify_against_sentencepiece(path: Path, fast: Any, texts: Iterable[str] = PROBE_TEXTS) -> None:
    """Refuse the conversion if the fast ids differ from sentencepiece's on probe texts."""
    special = {t: i for i, t in ((fast.convert_tokens_to_ids(t), t) for t in fast.all_special_tokens)}
    special.update({tok.content: i for i, tok in fast.added_tokens_decoder.items()})
    tokens = sorted(special)
    probes = list(texts) + [f"{tokens[0]}{t}{tokens[-1]}x" for t in texts] if tokens else list(texts)
    for text in probes:
        want = sentencepiece_reference_ids(path, text, special)
        got = fast(text, add_special_tokens=False)["input_ids"]
        if got != want:
            raise ImportRefused(
                f"{path}: the converted tokenizer gives other ids than sentencepiece on {text!r}"
            )
