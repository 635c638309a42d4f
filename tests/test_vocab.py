"""samkit.vocab units: the DenseClip check, vocabularies, prompt ensembles and their disk cache,
heat maps with prompt denoising, heat-map peaks -> prompts, mask pooling and naming."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from samkit.errors import InputError
from samkit.vocab import (BUILTIN, Vocabulary, check_dense_clip, check_texts, load_clip, load_vocabulary,
                          vocabulary)
from samkit.vocab import embeddings as E
from samkit.vocab.classify import classify_masks, mask_weights, pool
from samkit.vocab.heatmap import BACKGROUND, probabilities, query_names, similarity, upsample
from samkit.vocab.text_prompts import connected_components, peaks_to_prompts, work_size
from _synthetic_clip import SyntheticClip, two_squares


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMKIT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


# ----------------------------------------------------------------------------- DenseClip check
class _NoDense:
    name = "x"

    def encode_text(self, texts):
        return torch.zeros(len(texts), 4)

    def encode_image(self, x):
        return x


class _NoName(SyntheticClip):
    name = ""

    def __init__(self):
        super().__init__()
        self.name = ""


@pytest.mark.parametrize("clip, words", [
    (None, ["clip= is None"]),
    ("clip_vit_b16", ["is a name", "load_clip('clip_vit_b16')"]),
    (_NoDense(), ["lacks dense_features", "plain CLIP model", "MaskClip"]),
    (object(), ["lacks encode_text, dense_features"]),
    (_NoName(), ["name (a non-empty str)"]),
])
def test_check_dense_clip_says_what_is_missing(clip, words):
    with pytest.raises(InputError) as e:
        check_dense_clip(clip)
    assert all(w in str(e.value) for w in words) and "Fix:" in str(e.value)


def test_check_dense_clip_accepts_the_double():
    clip = SyntheticClip()
    assert check_dense_clip(clip) is clip


def test_load_clip_refuses_a_segmenter_and_names_the_file_when_offline(monkeypatch, tmp_path):
    from samkit.errors import DownloadError

    monkeypatch.setenv("SAMKIT_HOME", str(tmp_path))
    with pytest.raises(InputError, match="not a CLIP model. Fix: pass one of"):
        load_clip("sam_vit_b")
    with pytest.raises(DownloadError, match="ViT-B-16.pt"):
        load_clip("clip_vit_b16", download=False)


def test_load_clip_passes_offline_and_checks_the_result(monkeypatch):
    import sys
    import types

    seen = {}

    def load_maskclip(name, checkpoint=None, device="cpu", **options):
        import os

        seen.update(name=name, checkpoint=checkpoint, offline=os.environ.get("SAMKIT_OFFLINE"), **options)
        return SyntheticClip()

    monkeypatch.delenv("SAMKIT_OFFLINE", raising=False)
    monkeypatch.setitem(sys.modules, "samkit.vocab.maskclip", types.SimpleNamespace(load_maskclip=load_maskclip))
    clip = load_clip("clip_rn50x16", checkpoint="f.pt", download=False, key_smoothing=True)
    assert isinstance(clip, SyntheticClip)
    assert seen == {"name": "clip_rn50x16", "checkpoint": "f.pt", "offline": "1", "key_smoothing": True}
    import os

    assert "SAMKIT_OFFLINE" not in os.environ  # restored


# ----------------------------------------------------------------------------- vocabularies
@pytest.mark.parametrize("name, count, first, last, last_id", [
    ("coco", 80, "person", "toothbrush", 90),
    ("lvis", 1203, "aerosol_can", "zucchini", 1203),
    ("ade20k", 150, "wall", "flag", 150),
])
def test_builtin_vocabularies(name, count, first, last, last_id):
    v = load_vocabulary(name.upper())
    assert (len(v), v.names[0], v.names[-1], v.ids[-1], v.source) == (count, first, last, last_id, name)
    assert len(set(v.ids)) == count and vocabulary(name) == list(v.names)


def test_builtin_files_name_their_source():
    from samkit.vocab.vocabularies import DATA_DIR

    for name in BUILTIN:
        head = (DATA_DIR / f"{name}.txt").read_text().split("\n", 5)[:5]
        assert any("Source:" in line for line in head), name


def test_coco_ids_are_the_official_ones():
    v = load_vocabulary("coco")
    assert v.id_of("stop sign") == 13 and v.id_of("dining table") == 67 and v.index("toothbrush") == 79
    assert v.categories()[0] == {"id": 1, "name": "person"}


@pytest.mark.parametrize("spec, words", [
    ([], ["empty"]),
    ("", ["empty string"]),
    ("cocoo", ["unknown vocabulary 'cocoo'", "coco, lvis, ade20k"]),
    (["dog", 3], ["item 1 is a int"]),
    (["dog", "  "], ["item 1 is an empty name"]),
    (["Dog", "dog "], ["names 'dog' twice"]),
    (42, ["must be a name, a file or a list"]),
])
def test_bad_vocabularies(spec, words):
    with pytest.raises(InputError) as e:
        load_vocabulary(spec)
    assert all(w in str(e.value) for w in words) and "Fix:" in str(e.value)


def test_vocabulary_files(tmp_path):
    plain = tmp_path / "v.txt"
    plain.write_text("# my classes\nred car\n\nblue_car\n")
    assert load_vocabulary(plain) == Vocabulary(("red car", "blue_car"), (1, 2), str(plain))
    ids = tmp_path / "ids.txt"
    ids.write_text("7\tcat\n3\tdog\n")
    assert load_vocabulary(str(ids)).ids == (7, 3)
    mixed = tmp_path / "mixed.txt"
    mixed.write_text("7\tcat\ndog\n")
    with pytest.raises(InputError, match="some lines have an ID"):
        load_vocabulary(mixed)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    with pytest.raises(InputError, match="is empty"):
        load_vocabulary(empty)
    assert load_vocabulary("red car, blue car").names == ("red car", "blue car")


@pytest.mark.parametrize("texts, words", [
    ("dog", ["must be a list"]),
    ([], ["is empty"]),
    (["dog", ""], ["empty"]),
    (["dog", "Dog"], ["twice"]),
    (["dog", None], ["text 1 is a NoneType"]),
])
def test_check_texts(texts, words):
    with pytest.raises(InputError) as e:
        check_texts(texts)
    assert all(w in str(e.value) for w in words)


# ----------------------------------------------------------------------------- templates, ensembles
def test_templates_are_clip_imagenet_plus_maskclip_scene():
    assert len(E.IMAGENET_TEMPLATES) == 80 and len(E.MASKCLIP_TEMPLATES) == 85
    assert E.MASKCLIP_TEMPLATES[:80] == E.IMAGENET_TEMPLATES and E.DEFAULT_TEMPLATES == E.MASKCLIP_TEMPLATES
    assert E.MASKCLIP_TEMPLATES[80] == "there is a {} in the scene."
    assert all(t.count("{}") == 1 for t in E.MASKCLIP_TEMPLATES) and len(set(E.MASKCLIP_TEMPLATES)) == 85


@pytest.mark.parametrize("templates", [(), ("a photo",), ("{} and {}",), ("a {x} {}",), (3,)])
def test_bad_templates(templates):
    with pytest.raises(InputError, match="exactly one"):
        E.check_templates(templates)


class _Random:
    """encode_text: a fixed random unit vector per text (records the texts it saw)."""

    name = "random-clip"

    def __init__(self, dim=8):
        self.dim, self.seen = dim, []

    def vec(self, t):
        g = torch.Generator().manual_seed(abs(hash(t)) % 2 ** 31)
        return torch.nn.functional.normalize(torch.randn(self.dim, generator=g), dim=0)

    def encode_text(self, texts):
        self.seen += list(texts)
        return torch.stack([self.vec(t) for t in texts])

    def dense_features(self, image):
        return torch.nn.functional.normalize(torch.ones(self.dim, 2, 2), dim=0)


def test_ensemble_is_the_mean_of_normalised_template_embeddings_renormalised():
    clip = _Random()
    temps = ("a photo of a {}.", "a {} in a video game.", "{}")
    got = E.ensemble(clip, ["traffic_light", "dog"], temps)
    for k, name in enumerate(["traffic light", "dog"]):
        ref = torch.stack([clip.vec(t.format(name)) for t in temps]).mean(0)
        torch.testing.assert_close(got[k], ref / ref.norm())
    assert "a photo of a traffic light." in clip.seen  # underscores read as spaces


def test_text_embeddings_cache_reads_back_without_encoding(cache_home):
    clip = _Random()
    first = E.text_embeddings(clip, ["red", "blue"])
    files = list((cache_home / "text-embeddings" / "random-clip").glob("*.npy"))
    assert len(files) == 1 and np.load(files[0], allow_pickle=False).shape == (2, 8)
    clip.seen.clear()
    again = E.text_embeddings(clip, ["red", "blue"])
    assert clip.seen == [E.PROBE_TEXT] and torch.equal(first, again)  # only the fingerprint probe


@pytest.mark.parametrize("change", ["names", "templates", "name", "weights"])
def test_cache_key_covers_clip_templates_names_and_weights(change):
    clip = _Random()
    base = E.cache_path(clip, ["red"], E.DEFAULT_TEMPLATES)
    other = _Random()
    if change == "name":
        other.name = "other-clip"
    if change == "weights":  # same name, other text tower
        other.vec = lambda t: torch.nn.functional.normalize(torch.arange(1.0, 9.0) + len(t), dim=0)
    names = ["blue"] if change == "names" else ["red"]
    temps = ("{}",) if change == "templates" else E.DEFAULT_TEMPLATES
    assert E.cache_path(other, names, temps) != base


@pytest.mark.parametrize("damage", [b"garbage", "shape", "pickle"])
def test_damaged_cache_file_is_recomputed(damage):
    clip = _Random()
    ref = E.text_embeddings(clip, ["red", "blue"], cache=False)
    path = E.cache_path(clip, ["red", "blue"], E.DEFAULT_TEMPLATES)
    path.parent.mkdir(parents=True)
    if damage == "shape":
        np.save(path, np.ones((3, 8), np.float32))
    elif damage == "pickle":
        np.save(path, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    else:
        path.write_bytes(damage)
    torch.testing.assert_close(E.text_embeddings(clip, ["red", "blue"]), ref)
    assert np.load(path, allow_pickle=False).shape == (2, 8)  # replaced by a good file


def test_unwritable_cache_warns_and_still_answers(cache_home):
    cache_home.mkdir(parents=True)
    (cache_home / "text-embeddings").write_text("a file where the folder should be")
    with pytest.warns(UserWarning, match="could not cache text embeddings"):
        emb = E.text_embeddings(_Random(), ["red"])
    assert emb.shape == (1, 8)


def test_tokenizer_error_names_the_class():
    class LongText(_Random):
        def encode_text(self, texts):
            if any(len(t) > 40 for t in texts):
                raise InputError("text is longer than the 77-token context. Fix: shorten it.")
            return super().encode_text(texts)

    with pytest.raises(InputError, match="class 'a rather long description of a thing' .* 77-token"):
        E.text_embeddings(LongText(), ["a rather long description of a thing"], cache=False)


# ----------------------------------------------------------------------------- heat maps
def test_similarity_and_upsampling_align_with_the_image():
    feats = torch.zeros(2, 2, 2)
    feats[0, :, 0] = 1.0  # left column of cells: class 0
    feats[1, :, 1] = 1.0
    sims = similarity(feats, torch.eye(2))
    assert torch.equal(sims, feats)
    up = upsample(sims, (4, 8))
    # cell centres sit at x = 2 and 6 of 8 columns: left quarter fully class 0, right quarter class 1
    assert torch.equal(up[0, :, :2], torch.ones(4, 2)) and torch.equal(up[1, :, 6:], torch.ones(4, 2))
    assert torch.allclose(up[0, 0, 3:5], torch.tensor([0.625, 0.375]))


def test_probabilities_softmax_with_temperature():
    sims = torch.tensor([[[0.3]], [[0.2]]])
    p = probabilities(sims, temperature=0.01)
    torch.testing.assert_close(p[:, 0, 0], torch.softmax(torch.tensor([30.0, 20.0]), 0))
    with pytest.raises(InputError, match="temperature"):
        probabilities(sims, temperature=0)


@pytest.mark.parametrize("denoise, kept", [(None, [1, 1, 1]), (0.5, [1, 1, 0]), (0.95, [1, 0, 0]), (1.0, [0, 0, 0])])
def test_prompt_denoising_zeroes_classes_weak_everywhere(denoise, kept):
    # class 0 wins cell 0 clearly (max p 0.995), class 1 wins cell 1 (max p 0.665), class 2 never above 0.25
    sims = torch.tensor([[[0.06, 0.00]], [[0.00, 0.02]], [[0.00, 0.01]]])
    p = probabilities(sims, temperature=0.01, denoise=denoise)
    present = (p.reshape(3, -1).amax(1) > 0).int().tolist()
    assert present == kept
    if sum(kept):
        torch.testing.assert_close(p.sum(0), torch.ones(1, 2))  # the kept classes share every pixel
    else:
        assert torch.equal(p, torch.zeros_like(p))


def test_single_class_without_background_is_rescaled_similarity():
    sims = torch.tensor([[[0.1, 0.3], [0.2, 0.5]]])
    p = probabilities(sims)
    torch.testing.assert_close(p, (sims - 0.1) / 0.4)


def test_query_names_add_background_once():
    assert query_names(["dog", "Sky"]) == (["dog", "Sky", "building", "ground", "grass", "tree"], 2)
    assert query_names(["dog"], background=()) == (["dog"], 1)
    assert BACKGROUND == ("building", "ground", "grass", "tree", "sky")


def test_similarity_maps_are_cosines_at_image_resolution():
    from samkit.vocab import similarity_maps

    img, red, blue = two_squares()
    sims = similarity_maps(SyntheticClip(), img, ["red", "blue"], size=(12, 16))  # = the 8 px grid
    assert sims.shape == (2, 12, 16) and float(sims.max()) == pytest.approx(1.0)
    assert float(sims[0, 3, 3]) == pytest.approx(1.0) and float(sims[1, 3, 3]) == pytest.approx(0.0)
    assert similarity_maps(SyntheticClip(), img, ["red"]).shape == (1, 96, 128)


def test_heat_maps_of_the_synthetic_clip():
    from samkit.vocab import heat_maps

    img, red, blue = two_squares()
    maps = heat_maps(SyntheticClip(), img, ["red", "blue"])
    assert maps.shape == (2, 96, 128)
    assert (maps[0][torch.from_numpy(red)] > 0.5).float().mean() > 0.95
    assert (maps[0][torch.from_numpy(~red)] < 0.5).float().mean() > 0.95
    assert (maps[1][torch.from_numpy(blue)] > 0.5).float().mean() > 0.95


# ----------------------------------------------------------------------------- peaks -> prompts
def _brute_components(mask):
    h, w = mask.shape
    lab = -np.ones((h, w), int)
    n = 0
    for r, c in itertools.product(range(h), range(w)):
        if mask[r, c] and lab[r, c] < 0:
            stack, lab[r, c] = [(r, c)], n
            while stack:
                y, x = stack.pop()
                for dy, dx in itertools.product((-1, 0, 1), repeat=2):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and lab[yy, xx] < 0:
                        lab[yy, xx] = n
                        stack.append((yy, xx))
            n += 1
    return lab, n


@pytest.mark.parametrize("seed", range(4))
def test_connected_components_match_a_flood_fill(seed):
    mask = np.random.default_rng(seed).random((17, 23)) > 0.55
    lab, n = connected_components(torch.from_numpy(mask))
    ref, m = _brute_components(mask)
    assert n == m
    pairs = {(int(a), int(b)) for a, b in zip(lab[torch.from_numpy(mask)].tolist(), ref[mask].tolist())}
    assert len(pairs) == n and len({a for a, _ in pairs}) == n  # a bijection between labellings
    assert bool((lab[torch.from_numpy(~mask)] == 0).all())


def test_peaks_rule():
    heat = torch.zeros(20, 40)
    heat[2:8, 4:12] = 0.8
    heat[5, 9] = 0.95  # peak of blob A
    heat[12:18, 25:35] = 0.7  # blob B
    heat[0, 39] = 0.99  # one-cell speck: below min_area
    found = peaks_to_prompts(heat, (40, 80), threshold=0.5, min_area=0.005)
    assert [round(p.score, 2) for p in found] == [0.95, 0.7]
    a = found[0]
    np.testing.assert_allclose(a.point, [(9 + 0.5) * 2, (5 + 0.5) * 2])
    np.testing.assert_allclose(a.box, [8, 4, 24, 16])  # exclusive ends, image pixels
    assert len(peaks_to_prompts(heat, (40, 80), max_instances=1)) == 1
    assert peaks_to_prompts(heat, (40, 80), threshold=0.99) == []  # strictly above: the speck's 0.99 is not
    assert [p.score for p in peaks_to_prompts(heat, (40, 80), 0.7, min_area=0.005)] == [pytest.approx(0.95)]


@pytest.mark.parametrize("kw, word", [({"threshold": 1.0}, "threshold"), ({"threshold": -0.1}, "threshold"),
                                      ({"max_instances": 0}, "max_instances"),
                                      ({"max_instances": 1.5}, "max_instances"), ({"min_area": 1.0}, "min_area")])
def test_peaks_options_are_checked(kw, word):
    with pytest.raises(InputError, match=word):
        peaks_to_prompts(torch.zeros(4, 4), (4, 4), **kw)


def test_work_size_never_upscales():
    assert work_size((96, 128)) == (96, 128)
    assert work_size((1000, 2000)) == (128, 256)


# ----------------------------------------------------------------------------- pooling, naming
def test_mask_weights_are_cell_fractions():
    m = np.zeros((1, 8, 8), bool)
    m[0, :4, :2] = True  # half of the top-left 4 x 4 cell
    w = mask_weights(m, (2, 2))
    torch.testing.assert_close(w[0], torch.tensor([[0.5, 0.0], [0.0, 0.0]]))


def test_pool_is_the_weighted_mean_normalised_and_empty_masks_are_zero():
    feats = torch.zeros(2, 1, 2)
    feats[0, 0, 0] = 1.0
    feats[1, 0, 1] = 1.0
    masks = np.zeros((2, 2, 4), bool)
    masks[0, :, :3] = True  # all of cell 0, half of cell 1
    pooled, nonempty = pool(feats, masks)
    torch.testing.assert_close(pooled[0], torch.nn.functional.normalize(torch.tensor([1.0, 0.5]), dim=0))
    assert nonempty.tolist() == [True, False] and torch.equal(pooled[1], torch.zeros(2))


def test_classify_masks_names_both_regions_and_empty_masks():
    img, red, blue = two_squares()
    masks = np.stack([red, blue, np.zeros_like(red)])
    labels, scores, probs = classify_masks(SyntheticClip(), img, masks, ["blue", "red"])
    assert labels == ["red", "blue", ""] and scores[2] == 0 and probs.shape == (3, 2)
    assert scores[:2].min() > 0.99 and scores.dtype == np.float32


def test_classify_masks_refuses_masks_of_another_image():
    img, red, _ = two_squares()
    with pytest.raises(InputError, match="do not fit"):
        classify_masks(SyntheticClip(), img, red[None, :10], ["red"])


def test_classify_checks_what_the_clip_returns():
    class Bad(SyntheticClip):
        def dense_features(self, image):
            return torch.zeros(5, 2, 2)

    img, red, _ = two_squares()
    with pytest.raises(InputError, match="dense_features returned"):
        classify_masks(Bad(), img, red[None], ["red", "blue"])
