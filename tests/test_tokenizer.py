"""minibert.tokenizer must give exactly the ids and masks of transformers' fast BERT tokenizers.

References: `AutoTokenizer` on the all-MiniLM-L6-v2 folder (its tokenizer.json), and `DistilBertTokenizerFast`
built from vocab.txt alone (distilbert-base-uncased's tokenizer is uncased WordPiece on this same vocabulary).
Compared on 5,000 real IMDB reviews at max lengths 128 and 512, and on hard strings.
"""

import shutil

import pyarrow.parquet as pq
import pytest
import torch
import transformers  # imported once for the module (~7 s)

from minibert.errors import run_cli
from minibert.tokenizer import Tokenizer, load_tokenizer, main

MAX_LENGTHS = (128, 512)
BATCH = 250  # reviews per padded batch: T = the longest of these 250 (after truncation)
HARD = [
    "Café Déjà vu, naïve façade, Ångström, Müller",  # accents are stripped by BERT uncased
    "日本語のテキストと中文字符, 한국어",  # CJK ideographs become one word each
    "I loved it 😍🎬🍿 !!!",  # emoji are not in the vocab -> [UNK]
    "a" * 120,  # longer than WordPiece's 100-character limit -> one [UNK]
    "pneumonoultramicroscopicsilicovolcanoconiosis" * 3,  # 135 chars, long but made of real pieces
    "Great film.<br /><br />Would watch again.",  # IMDB's HTML line breaks
    "",  # empty
    "   \t\n  ",  # whitespace only
    "a literal [CLS] and [SEP] and [PAD] in the text",  # special tokens written in a review
    "control\x00chars\x85and\u200bzero width",  # control / format characters are cleaned
    "   leading and trailing spaces   ",
]


@pytest.fixture(scope="module")
def reviews(imdb_dir):
    """The first 5,000 IMDB train reviews."""
    return pq.read_table(imdb_dir / "train.parquet", columns=["review"]).column("review").to_pylist()[:5000]


@pytest.fixture(scope="module")
def ours(minilm_dir):
    return load_tokenizer(minilm_dir)


@pytest.fixture(scope="module")
def theirs(minilm_dir):
    return transformers.AutoTokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def vocab_only(minilm_dir, tmp_path_factory):
    """A folder holding only vocab.txt, and our tokenizer and DistilBERT's built from it."""
    folder = tmp_path_factory.mktemp("vocab_only")
    shutil.copy(minilm_dir / "vocab.txt", folder / "vocab.txt")
    assert [p.name for p in folder.iterdir()] == ["vocab.txt"]  # so ours must build the pipeline itself
    # transformers v5 takes the vocabulary as `vocab=`; `vocab_file=` is silently ignored there and leaves a
    # 5-token placeholder vocabulary, so we pin that the reference really read the file (hello = 7592).
    reference = transformers.DistilBertTokenizerFast(vocab=str(folder / "vocab.txt"))
    assert reference("hello", add_special_tokens=False)["input_ids"] == [7592]
    return load_tokenizer(folder), reference


def assert_same_batches(ours, theirs, texts, max_length, add_special_tokens=True):
    for start in range(0, len(texts), BATCH):
        batch = texts[start:start + BATCH]
        mine = ours(batch, max_length=max_length, add_special_tokens=add_special_tokens)
        ref = theirs(batch, max_length=max_length, truncation=True, padding=True,
                     add_special_tokens=add_special_tokens, return_tensors="pt")
        assert torch.equal(mine["input_ids"], ref["input_ids"]), f"input_ids differ in batch at {start}"
        assert torch.equal(mine["attention_mask"], ref["attention_mask"]), f"attention_mask differs in batch at {start}"


@pytest.mark.parametrize("max_length", MAX_LENGTHS)
def test_matches_autotokenizer_on_imdb(ours, theirs, reviews, max_length):
    """Padded ids and masks equal AutoTokenizer's (tokenizer.json) on 5,000 IMDB reviews."""
    assert_same_batches(ours, theirs, reviews, max_length)


@pytest.mark.parametrize("max_length", MAX_LENGTHS)
def test_matches_distilbert_from_vocab_txt_on_imdb(vocab_only, reviews, max_length):
    """Built from vocab.txt alone, padded ids and masks equal DistilBertTokenizerFast's on 5,000 IMDB reviews."""
    ours_from_vocab, reference = vocab_only
    assert_same_batches(ours_from_vocab, reference, reviews, max_length)


def test_encode_batch_truncates_like_transformers(ours, theirs, reviews):
    """Unpadded ids equal transformers' truncation=True output, with and without [CLS]/[SEP]."""
    for specials in (True, False):
        mine = ours.encode_batch(reviews[:1000], max_length=128, add_special_tokens=specials)
        ref = theirs(reviews[:1000], max_length=128, truncation=True, add_special_tokens=specials)["input_ids"]
        assert mine == ref
        assert max(map(len, mine)) == 128


@pytest.mark.parametrize("max_length", (8, 512))
def test_hard_strings(ours, theirs, vocab_only, max_length):
    """Accents, CJK, emoji, a >100-character word, HTML, empty and blank strings tokenize as in both references."""
    assert_same_batches(ours, theirs, HARD, max_length)
    assert_same_batches(*vocab_only, HARD, max_length)


def test_hard_strings_expected_tokens(ours):
    """Spot checks a reader can verify by eye: accents stripped, long word -> [UNK], empty -> [CLS] [SEP]."""
    tokens = [ours.convert_ids_to_tokens(ids) for ids in ours.encode_batch(["Café Déjà vu", "a" * 120, "", " \t"])]
    assert tokens[0] == ["[CLS]", "cafe", "de", "##ja", "vu", "[SEP]"]
    assert tokens[1] == ["[CLS]", "[UNK]", "[SEP]"]
    assert tokens[2] == tokens[3] == ["[CLS]", "[SEP]"]


def test_baked_in_truncation_and_padding_are_reset(ours):
    """MiniLM's tokenizer.json truncates and pads to 128; we pad to the batch's longest and truncate per call."""
    batch = ours(["word " * 300, "short"], max_length=512)
    assert batch["input_ids"].shape == (2, 302)
    assert batch["attention_mask"][1].tolist() == [1, 1, 1] + [0] * 299
    assert batch["input_ids"][1, 3:].eq(ours.pad_id).all()
    assert ours(["short"])["input_ids"].shape == (1, 3)


def test_special_ids_and_vocab(ours, vocab_only):
    """The special ids and vocabulary size are BERT uncased's, whichever file the tokenizer was built from."""
    for tok in (ours, vocab_only[0]):
        assert (tok.pad_id, tok.cls_id, tok.sep_id, tok.vocab_size) == (0, 101, 102, 30522)
        assert isinstance(tok, Tokenizer)


@pytest.mark.parametrize("texts, max_length, specials, error, message", [
    ("just a string", 512, True, TypeError, "list of strings, got one string"),
    (["ok", 3], 512, True, TypeError, r"texts\[1\] is int"),
    (None, 512, True, TypeError, "got NoneType"),
    (["ok"], 1, True, ValueError, "max_length must be an integer >= 2"),
    (["ok"], 0, False, ValueError, "max_length must be an integer >= 1"),
    (["ok"], "128", True, ValueError, "max_length must be an integer"),
    ([], 512, True, ValueError, "texts is empty"),
])
def test_bad_input_raises_clear_error(ours, texts, max_length, specials, error, message):
    """Each kind of bad input raises one exception whose message names the problem."""
    with pytest.raises(error, match=message):
        ours(texts, max_length=max_length, add_special_tokens=specials)


def test_missing_tokenizer_files(tmp_path):
    """A folder with neither tokenizer.json nor vocab.txt is refused with a message naming both."""
    with pytest.raises(FileNotFoundError, match="neither tokenizer.json nor vocab.txt"):
        load_tokenizer(tmp_path)


def test_cli_prints_token_table(capsys, minilm_dir):
    """The CLI prints a token table: a 'Token IDs' / 'Tokens' header, [CLS] 101, the word ids, [SEP] 102."""
    main(["hello my name is kevin", "--model", str(minilm_dir)])
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert lines[0] == ["Token", "IDs", "Tokens"]
    assert lines[2:] == [["101", "[CLS]"], ["7592", "hello"], ["2026", "my"], ["2171", "name"], ["2003", "is"],
                         ["4901", "kevin"], ["102", "[SEP]"]]


def test_cli_several_texts_and_max_length(capsys):
    """Several texts give one table each; --max-length truncates, keeping [SEP] last; a bad one exits cleanly."""
    main(["hello my name is kevin", "good movie", "--max-length", "4"])
    out = capsys.readouterr().out
    tables = [block.splitlines()[3:] for block in out.strip().split("\n\n")]  # skip title, header, rule
    assert [[row.split()[1] for row in table] for table in tables] == [
        ["[CLS]", "hello", "my", "[SEP]"], ["[CLS]", "good", "movie", "[SEP]"]]
    assert run_cli(main, ["hello", "--max-length", "1"]) == 2
    assert "--max-length must be at least 2" in capsys.readouterr().err


def test_fingerprint_does_not_depend_on_calls_made_before_it():
    """The token cache is keyed on it: a tokenizer that has already encoded something (which sets truncation and
    padding on the Rust backend) must give the same key, or every later run misses the cache."""
    fresh = load_tokenizer("all-MiniLM-L6-v2").fingerprint
    used = load_tokenizer("all-MiniLM-L6-v2")
    used(["a review long enough to be cut", "short"], max_length=4)
    assert used.fingerprint == fresh
