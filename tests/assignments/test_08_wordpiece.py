"""Assignment 08, WordPiece: BERT's word splitting and greedy longest-match-first pieces, in plain Python.

Graded code: minibert/wordpiece.py `split_words` and `wordpiece` (region `wordpiece`, two places). Everything else
in that file (normalization, special tokens, ids) is given. The reference is the Rust `tokenizers` library:
its BertPreTokenizer for the words, its WordPiece model for the pieces, and the whole all-MiniLM-L6-v2
tokenizer.json (through minibert.load_tokenizer) for the ids. Docs: docs/assignments/08-wordpiece.md.
"""

import pyarrow.parquet as pq
import pytest
from tokenizers import models, pre_tokenizers

from minibert.tokenizer import load_tokenizer
from minibert.wordpiece import UNK, WordPieceTokenizer, encode, normalize, split_words, wordpiece

HARD = [
    "Café Déjà vu, naïve façade, Ångström, Müller",  # accents stripped
    "ΟΔΟΣ ΣΑΣ",  # Greek capitals: a final sigma lowercases to σ, character by character
    "日本語のテキストと中文字符, 한국어",  # CJK ideographs one word each; kana and Hangul spelled by pieces
    "I loved it 😍🎬🍿 !!!",  # emoji are not in the vocabulary
    "a" * 100 + " " + "a" * 101,  # at the 100-character limit, and one past it
    "pneumonoultramicroscopicsilicovolcanoconiosis" * 2,  # 90 characters of real pieces
    "Great film.<br /><br />Would watch again.",  # IMDB's HTML line breaks
    "It's a 10/10, $3.50 well spent -- 1,000,000% better (really?!)",  # punctuation and numbers
    "don't won't l'amour «quoted» ¿qué? — … “smart” ‘quotes’",  # Unicode punctuation
    "a literal [CLS] and [SEP], hello[SEP]world, [cls] in lowercase, [UN[UNK]K]",  # special tokens in the text
    "control\x00chars\x85and\u200bzero width\ufffd, tab\tnew\nline\r, nbsp\u00a0ideographic\u3000space",
    "İstanbul ﬁne ＦＵＬＬ width \u0301 a lone accent",
    "unaffable unwatchable overrated",
    "",
    "   \t\n  ",
]
TOY_VOCAB = {token: i for i, token in enumerate(
    ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "unaff", "##aff", "##able", "##a", "##ble", "ab", "a",
     "##bc", "x", "##x"])}


@pytest.fixture(scope="module")
def reviews(imdb_dir):
    """300 IMDB reviews: the first 200 of train, and the first 100 of test that hold a non-ASCII character."""
    train = pq.read_table(imdb_dir / "train.parquet", columns=["review"]).column("review").to_pylist()[:200]
    test = pq.read_table(imdb_dir / "test.parquet", columns=["review"]).column("review").to_pylist()
    chosen = train + [r for r in test if not r.isascii()][:100]
    assert len(chosen) == 300 and any("<br />" in r for r in chosen) and any(c.isdigit() for c in chosen[0] + chosen[1])
    return chosen


@pytest.fixture(scope="module")
def rust(minilm_dir):
    """The reference pipeline: minibert's tokenizer on all-MiniLM-L6-v2's tokenizer.json (the Rust library)."""
    return load_tokenizer(minilm_dir)


@pytest.fixture(scope="module")
def vocab(minilm_dir):
    return WordPieceTokenizer.from_file(minilm_dir / "vocab.txt").vocab


def their_words(text: str) -> list[str]:
    return [word for word, _ in pre_tokenizers.BertPreTokenizer().pre_tokenize_str(text)]


def their_pieces(word: str, vocab: dict, max_chars: int = 100) -> list[str]:
    model = models.WordPiece(vocab, unk_token=UNK, continuing_subword_prefix="##", max_input_chars_per_word=max_chars)
    return [token.value for token in model.tokenize(word)]


def test_split_words_examples():
    """Whitespace separates and is dropped; each punctuation character is a word of its own."""
    assert split_words("great!") == ["great", "!"]
    assert split_words("<br />") == ["<", "br", "/", ">"]
    assert split_words("don't  stop") == ["don", "'", "t", "stop"]
    assert split_words("$3.50, (10/10)") == ["$", "3", ".", "50", ",", "(", "10", "/", "10", ")"]
    assert split_words("«ok»…") == ["«", "ok", "»", "…"]
    assert split_words("  ") == [] and split_words("") == []


def test_split_words_matches_bert_pre_tokenizer(reviews):
    """On the normalized reviews and hard strings, split_words gives BertPreTokenizer's words."""
    for text in reviews + HARD:
        text = normalize(text)
        assert split_words(text) == their_words(text), text[:80]


def test_greedy_longest_match_on_a_toy_vocabulary():
    """The longest piece first; "##" after the first piece; no backtracking; [UNK] for a word that cannot be spelled."""
    assert wordpiece("unaffable", TOY_VOCAB) == ["unaff", "##able"]  # not "un", "##aff", "##able": longest first
    assert wordpiece("unable", TOY_VOCAB) == ["un", "##able"]
    assert wordpiece("abc", TOY_VOCAB) == [UNK]  # "a" "##bc" would spell it, but greedy took "ab" and is stuck
    assert wordpiece("unz", TOY_VOCAB) == [UNK]  # a word is [UNK] whole, never partly
    assert wordpiece("a", TOY_VOCAB) == ["a"]
    assert wordpiece("xxx", TOY_VOCAB) == ["x", "##x", "##x"]
    for word in ["unaffable", "unable", "abc", "unz", "a", "xxx", "ablex", "bc", "unaffablea"]:
        assert wordpiece(word, TOY_VOCAB) == their_pieces(word, TOY_VOCAB), word


def test_the_character_limit():
    """A word of max_chars characters is searched; one more character makes it [UNK]; characters, not bytes."""
    assert wordpiece("x" * 100, TOY_VOCAB) == ["x"] + ["##x"] * 99
    assert wordpiece("x" * 101, TOY_VOCAB) == [UNK]
    assert wordpiece("xxx", TOY_VOCAB, max_chars=2) == [UNK] == their_pieces("xxx", TOY_VOCAB, max_chars=2)
    vocab = {**TOY_VOCAB, "ß": 16, "##ß": 17}  # two bytes in UTF-8, one character
    assert wordpiece("ß" * 100, vocab) == ["ß"] + ["##ß"] * 99 == their_pieces("ß" * 100, vocab)


def test_pieces_match_rust_wordpiece_on_every_word_of_the_reviews(reviews, vocab):
    """Each distinct word of the reviews and hard strings gets the pieces of the Rust WordPiece model."""
    words = sorted({w for text in reviews + HARD for w in their_words(normalize(text))})
    assert len(words) > 5000
    model = models.WordPiece(vocab, unk_token=UNK, continuing_subword_prefix="##", max_input_chars_per_word=100)
    differ = [w for w in words if wordpiece(w, vocab) != [t.value for t in model.tokenize(w)]]
    assert not differ, f"{len(differ)} words differ, e.g. {differ[:5]}"


def test_ids_match_tokenizers_on_imdb_reviews(reviews, rust):
    """encode gives the ids of all-MiniLM-L6-v2's tokenizer.json on 300 real reviews (HTML, accents, numbers)."""
    theirs = rust.encode_batch(reviews, max_length=100_000)  # no truncation: whole reviews
    for i, (review, ids) in enumerate(zip(reviews, theirs)):
        assert encode(review) == ids, f"review {i}: {review[:80]!r}"


@pytest.mark.parametrize("text", HARD)
def test_ids_match_tokenizers_on_hard_strings(text, rust):
    """encode gives tokenizer.json's ids on accents, CJK, emoji, long words, HTML, special tokens, odd whitespace."""
    assert encode(text) == rust.encode_batch([text], max_length=100_000)[0]


def test_special_tokens_wrap_the_pieces(rust):
    """[CLS] first and [SEP] last, or neither with add_special_tokens=False; an empty text is [CLS] [SEP]."""
    ids = encode("unwatchable!")
    assert ids[0] == 101 and ids[-1] == 102 and encode("unwatchable!", add_special_tokens=False) == ids[1:-1]
    assert encode("") == [101, 102]
    assert ids == rust.encode_batch(["unwatchable!"])[0]
