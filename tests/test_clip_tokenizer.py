"""CLIP's BPE tokenizer: the shipped vocabulary file, token ids equal to open_clip's ``tokenize``
(test-only oracle) on a table of awkward texts, and a clear error for a text past the context."""
from __future__ import annotations

import hashlib

import pytest
import torch

from samkit.errors import InputError
from samkit.text.clip_tokenizer import BPE_FILE, BPE_SHA256, ClipTokenizer

TEXTS = [
    "a photo of a dog.",
    "Hello, World!! ... ?!",  # punctuation runs
    "3.14159 and 1,000,000 and ½ ²",  # digits split one by one; other numerals
    "café naïve résumé Ærøskøbing Ωmega",  # accents, non-Latin letters
    "🐶🚗 emoji 👍🏽 ❤️",  # emoji, skin tone, variation selector
    "supercalifragilisticexpialidocious antidisestablishmentarianism",  # long words
    "  lots   of\t\nwhitespace\u00a0and\u2003spaces  ",
    "Tom &amp; Jerry &lt;3 &amp;lt;b&amp;gt; &#39;quoted&#39;",  # entities, double-escaped
    "don't you'll we've I'm she'd they're it's",  # contractions
    "日本語のテキスト 한국어 текст",
    "Ｆｕｌｌｗｉｄｔｈ ﬁne “curly” ‘quotes’",  # ftfy: width, ligature, quotes
    "Ã©tÃ© mojibake",  # ftfy fixes mis-decoded UTF-8
    "UPPER lower MiXeD",
    "<start_of_text> and <end_of_text> as words",
    "",
]


@pytest.fixture(scope="module")
def tok():
    return ClipTokenizer()


def test_the_shipped_vocabulary_is_openais_file():
    # the file of openai/CLIP clip/bpe_simple_vocab_16e6.txt.gz, as shipped in the open_clip_torch wheel
    assert hashlib.sha256(BPE_FILE.read_bytes()).hexdigest() == BPE_SHA256
    assert BPE_SHA256 == "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"


def test_vocabulary_facts(tok):
    assert tok.vocab_size == 49408 and tok.sot_token_id == 49406 and tok.eot_token_id == 49407
    ids = tok.tokenize(["a dog"])
    assert ids.shape == (1, 77) and ids.dtype == torch.long
    assert ids[0, :4].tolist() == [49406, *tok.encode("a dog"), 49407] and not ids[0, 4:].any()


@pytest.mark.oracle
def test_token_ids_equal_open_clip(tok):
    from oracle_shims import import_oracle

    oc = import_oracle("open_clip")
    got = tok.tokenize(TEXTS)
    assert torch.equal(got, oc.tokenize(TEXTS))
    for text in TEXTS:  # one by one too (the cache of words must not leak between texts)
        assert torch.equal(tok.tokenize(text), oc.tokenize([text])), text


def test_decode_inverts_encode_up_to_cleaning(tok):
    assert tok.decode(tok.encode("A Red  Car!")) == "a red car ! "


@pytest.mark.oracle
def test_longest_fitting_text_and_one_token_more():
    from oracle_shims import import_oracle

    oc = import_oracle("open_clip")
    tok = ClipTokenizer()
    fits = " ".join(["dog"] * 75)
    assert len(tok.encode(fits)) == 75
    assert torch.equal(tok.tokenize(fits), oc.tokenize([fits]))
    with pytest.raises(InputError, match=r"is 76 tokens long; CLIP reads at most 75 .*Fix: shorten the text"):
        tok.tokenize(["a cat", fits + " dog"])


@pytest.mark.parametrize("bad", [None, 3, ["a", 2], b"bytes"])
def test_non_text_is_refused(tok, bad):
    with pytest.raises(InputError, match="texts must be a string or a list of strings"):
        tok.tokenize(bad)


def test_without_the_vocab_extra_the_tokenizer_names_it():
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys\n"
            "for m in ('ftfy', 'regex'):\n"
            "    sys.modules[m] = None\n"
            "from samkit.models.clip import build_clip_vit_b16\n"  # the model core needs no extra
            "from samkit.text.clip_tokenizer import ClipTokenizer\n"
            "try:\n"
            "    ClipTokenizer()\n"
            "except Exception as exc:\n"
            "    print(type(exc).__name__, exc)\n")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("MissingExtraError") and "pip install 'samkit[vocab]'" in out.stdout
