"""CLIP's byte-level BPE tokenizer (the one every OpenAI and open_clip CLIP was trained with).

Facts carried over from the CLIP release: the vocabulary is the 48,894 first merges of
``bpe_simple_vocab_16e6.txt.gz`` (shipped in ``samkit/text/data``, MIT, OpenAI) on top of the
256 byte symbols and their 256 end-of-word forms, then two special tokens: 49,408 ids, start of
text 49406, end of text 49407. Text is cleaned like open_clip's ``tokenize`` (``ftfy.fix_text``,
HTML entities unescaped twice, whitespace runs collapsed, lower case), split into words with the
Unicode pattern ``'s|'t|'re|'ve|'m|'ll|'d|letters+|one digit|other non-space+``, each word's
UTF-8 bytes mapped to printable symbols and merged pair by pair, lowest merge rank first.

Needs the ``vocab`` extra (``ftfy`` and ``regex``: the cleaning and the Unicode classes of the
pattern), imported when a tokenizer is made.
"""
from __future__ import annotations

import gzip
import html
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

from ..errors import InputError, require

BPE_FILE = Path(__file__).resolve().parent / "data" / "bpe_simple_vocab_16e6.txt.gz"
BPE_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
CONTEXT_LENGTH = 77
NUM_MERGES = 49152 - 256 - 2
SPECIAL_TOKENS = ("<start_of_text>", "<end_of_text>")
_CACHE_MAX = 200_000


@lru_cache(maxsize=1)
def byte_symbols() -> Dict[int, str]:
    """Byte -> one printable character: the printable Latin-1 bytes (``!``..``~``, ``¡``..``¬``,
    ``®``..``ÿ``) stand for themselves, the other 68 bytes for ``chr(256 + n)`` in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _merge_pair(symbols: List[str], first: str, second: str) -> List[str]:
    """Every non-overlapping ``first second`` of ``symbols``, left to right, joined into one."""
    out: List[str] = []
    i, n = 0, len(symbols)
    while i < n:
        if i + 1 < n and symbols[i] == first and symbols[i + 1] == second:
            out.append(first + second)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


class ClipTokenizer:
    """``tokenize(texts) -> B x 77`` token ids (start, text, end, zero padding) as CLIP reads them.

    ``bpe_path``: another merges file of the same format (default: the shipped one)."""

    def __init__(self, bpe_path: Optional[Union[str, Path]] = None) -> None:
        self._ftfy = require("ftfy", "vocab", "CLIP's tokenizer (text cleaning)")
        regex = require("regex", "vocab", "CLIP's tokenizer (Unicode word splitting)")
        path = Path(bpe_path) if bpe_path is not None else BPE_FILE
        lines = gzip.open(path).read().decode("utf-8").split("\n")
        merges = [tuple(line.split()) for line in lines[1:NUM_MERGES + 1]]
        symbols = list(byte_symbols().values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + list(SPECIAL_TOKENS)
        self.encoder: Dict[str, int] = {tok: i for i, tok in enumerate(vocab)}
        self.decoder: Dict[int, str] = {i: tok for tok, i in self.encoder.items()}
        self.ranks: Dict[Tuple[str, str], int] = {m: i for i, m in enumerate(merges)}
        self.vocab_size = len(vocab)
        self.sot_token_id = self.encoder[SPECIAL_TOKENS[0]]
        self.eot_token_id = self.encoder[SPECIAL_TOKENS[1]]
        specials = "|".join(SPECIAL_TOKENS)
        self._words = regex.compile(
            specials + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE)
        self._bytes = byte_symbols()
        self._byte_of = {c: b for b, c in self._bytes.items()}
        self._cache: Dict[str, List[str]] = {t: [t] for t in SPECIAL_TOKENS}

    # ------------------------------------------------------------------ pieces
    def clean(self, text: str) -> str:
        """ftfy, HTML entities (twice), whitespace runs -> one space, strip, lower case."""
        text = html.unescape(html.unescape(self._ftfy.fix_text(text))).strip()
        return " ".join(text.split()).lower()

    def bpe(self, word: str) -> List[str]:
        """One word (already mapped to byte symbols) -> its BPE pieces; the last ends in ``</w>``."""
        hit = self._cache.get(word)
        if hit is not None:
            return hit
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        while len(symbols) > 1:
            pairs = set(zip(symbols, symbols[1:]))
            best = min(pairs, key=lambda p: self.ranks.get(p, NUM_MERGES))
            if best not in self.ranks:
                break
            symbols = _merge_pair(symbols, *best)
        if len(self._cache) > _CACHE_MAX:
            self._cache = {t: [t] for t in SPECIAL_TOKENS}
        self._cache[word] = symbols
        return symbols

    def encode(self, text: str) -> List[int]:
        """Token ids of ``text`` without the start/end tokens."""
        ids: List[int] = []
        for word in self._words.findall(self.clean(text)):
            mapped = word if word in SPECIAL_TOKENS else "".join(self._bytes[b] for b in word.encode("utf-8"))
            ids.extend(self.encoder[piece] for piece in self.bpe(mapped))
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Ids (special tokens included as their names) -> text; word ends become spaces."""
        text = "".join(self.decoder[int(i)] for i in ids)  # every vocabulary entry is byte symbols
        return bytearray(self._byte_of[c] for c in text).decode("utf-8", errors="replace").replace("</w>", " ")

    # ------------------------------------------------------------------ the API
    def tokenize(self, texts: Union[str, Sequence[str]], context_length: int = CONTEXT_LENGTH,
                 reader: str = "CLIP") -> torch.Tensor:
        """``texts`` (one string or a list) -> ``B x context_length`` int64: start token, the text's
        tokens, end token, zeros. A text that does not fit raises ``InputError`` (CLIP never sees
        what lies past its context, so it is not silently cut); ``reader`` names the text encoder
        in that message (SAM 3 reads the same tokens with a context of 32)."""
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, Sequence) or not all(isinstance(t, str) for t in texts):
            raise InputError(f"texts must be a string or a list of strings, got {type(texts).__name__}. "
                             "Fix: pass e.g. ['a dog', 'a cat'].")
        if int(context_length) < 2:
            raise InputError(f"context_length={context_length} leaves no room for the start and end tokens. "
                             "Fix: use CLIP's 77.")
        out = torch.zeros(len(texts), int(context_length), dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.sot_token_id, *self.encode(text), self.eot_token_id]
            if len(ids) > context_length:
                shown = text if len(text) <= 80 else text[:77] + "..."
                raise InputError(
                    f"text {shown!r} is {len(ids) - 2} tokens long; {reader} reads at most {context_length - 2} "
                    f"(its context of {context_length} minus the start and end tokens). "
                    "Fix: shorten the text (a short noun phrase such as 'red car' works best).")
            out[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

    __call__ = tokenize


@lru_cache(maxsize=1)
def default_tokenizer() -> ClipTokenizer:
    """The shared tokenizer of the shipped vocabulary (built once per process: about half a second)."""
    return ClipTokenizer()
