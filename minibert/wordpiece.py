"""WordPiece, BERT's uncased tokenizer, in plain Python: text -> token ids, one readable step at a time.

    text --special tokens--> pieces of raw text, and [CLS] / [SEP] / ... written in it
         --normalize-------> cleaned, CJK ideographs spaced out, accents stripped, lowercased
         --split_words-----> words: cut at whitespace and around every punctuation character
         --wordpiece-------> each word as the longest vocabulary pieces, left to right ("##" continues a word)
         --encode----------> [CLS] pieces [SEP], each piece looked up in vocab.txt (id = line number)

The greedy longest-match-first algorithm is Wu et al. 2016 ("Google's Neural Machine Translation System",
section 4.1) as BERT uses it (Devlin et al. 2019, section 3): at each position take the longest piece the
vocabulary holds; a word that cannot be spelled this way, or has more than 100 characters, becomes one [UNK].

What is unusual:
- This file is the reading copy. The model never uses it: minibert/tokenizer.py runs the same pipeline in the
  Rust `tokenizers` library, which is much faster. Apart from `minilm_tokenizer` (which asks minibert.paths where
  the vocabulary is), it needs nothing but Python's standard library: a copy of it works anywhere with a vocab.txt.
- The order of normalization follows `tokenizers`' BertNormalizer, not Google's original Python: accents are
  stripped before lowercasing, and lowercasing goes character by character (a final capital sigma becomes σ, not
  ς). Special tokens are matched in the raw text, before any normalization, case-sensitively, as `tokenizers`
  does, so "[SEP]" in a review is the separator and "[sep]" is four pieces.

Tested against `tokenizers` (all-MiniLM-L6-v2's tokenizer.json): the same ids on hundreds of IMDB reviews and on
hard strings, the same words as its BertPreTokenizer, the same pieces as its WordPiece model;
tests/assignments/test_08_wordpiece.py.
"""

import functools
import re
import string
import unicodedata
from pathlib import Path

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
CONTINUATION = "##"  # marks a piece that continues the word of the piece before it
MAX_CHARS_PER_WORD = 100  # BERT's limit: it bounds the greedy search, which is quadratic in the word's length

# The CJK Unified Ideographs blocks, as `tokenizers` lists them (Hangul, kana and Japanese punctuation are not
# here: they are spelled by WordPiece like any other script). Each ideograph becomes a word of its own.
CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
              (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def load_vocab(vocab_file: str | Path) -> dict[str, int]:
    """{token: id} from a vocab.txt: one token a line, the id is the line number (from 0)."""
    lines = Path(vocab_file).read_text(encoding="utf-8").split("\n")  # not splitlines(): it also cuts at \x1c
    return {token: i for i, token in enumerate(lines) if token}


# ---- normalization: the text the words are cut from --------------------------------------------------------

def is_control(ch: str) -> bool:
    """Unicode's "other" categories (Cc control, Cf format such as zero-width space, Cs, Co, Cn unassigned);
    tab, newline and carriage return count as whitespace instead."""
    return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def is_cjk(ch: str) -> bool:
    return any(lo <= ord(ch) <= hi for lo, hi in CJK_RANGES)


def is_punctuation(ch: str) -> bool:
    """Every ASCII symbol ("$", "+", "<", "^", "`" are not Unicode punctuation, but BERT splits at them), and every
    character of a Unicode punctuation category (P*: "¿", "«", "—", "…")."""
    return ch in string.punctuation or unicodedata.category(ch).startswith("P")


def normalize(text: str) -> str:
    """BertNormalizer: drop NUL, U+FFFD and control characters, make every whitespace a plain space, put spaces
    around CJK ideographs, strip accents (decompose, then drop the combining marks: "é" -> "e" + U+0301 -> "e"),
    lowercase."""
    text = "".join(" " if ch.isspace() else ch for ch in text if ch != "\ufffd" and not is_control(ch))
    text = "".join(f" {ch} " if is_cjk(ch) else ch for ch in text)
    text = "".join(ch for ch in unicodedata.normalize("NFD", text) if unicodedata.category(ch) != "Mn")
    return "".join(ch.lower() for ch in text)  # per character: str.lower() would turn a final Σ into ς


# ---- the two steps that make the tokens --------------------------------------------------------------------

def split_words(text: str) -> list[str]:
    """Normalized text -> words: whitespace separates words and is dropped; each punctuation character is a word
    of its own ("great!" -> "great", "!"; "<br />" -> "<", "br", "/", ">"; "don't" -> "don", "'", "t")."""
    # BEGIN ASSIGNMENT wordpiece: one pass over the characters, a word grows until whitespace (dropped) or punctuation (a word of its own, see is_punctuation) ends it
    words, word = [], ""
    for ch in text:
        if ch.isspace() or is_punctuation(ch):
            if word:
                words.append(word)
            word = ""
            if not ch.isspace():
                words.append(ch)
        else:
            word += ch
    if word:
        words.append(word)
    return words
    # END ASSIGNMENT


def wordpiece(word: str, vocab: dict[str, int], max_chars: int = MAX_CHARS_PER_WORD) -> list[str]:
    """One word -> its pieces, greedy longest match first ("unaffable" -> "un", "##aff", "##able").

    From the word's first character, take the longest prefix that is in `vocab`, then the longest piece of what is
    left, spelled with the "##" prefix, and so on. Greedy: a piece once taken is never reconsidered, so a word that
    another split could spell still becomes [UNK] when the greedy one gets stuck. A word of more than `max_chars`
    characters is [UNK] without a search.
    """
    # BEGIN ASSIGNMENT wordpiece: too long -> [UNK]; from each start, shrink the end until the piece (after the first, with the "##" prefix) is in vocab; no piece fits -> the whole word is [UNK]
    if len(word) > max_chars:
        return [UNK]
    pieces, start = [], 0
    while start < len(word):
        for end in range(len(word), start, -1):  # the longest candidate first
            candidate = word[start:end] if start == 0 else CONTINUATION + word[start:end]
            if candidate in vocab:
                break
        else:  # not even one character fits here
            return [UNK]
        pieces.append(candidate)
        start = end
    return pieces
    # END ASSIGNMENT


# ---- the tokenizer: the steps in order ---------------------------------------------------------------------

class WordPieceTokenizer:
    """An uncased BERT tokenizer on a vocabulary: `tokenize(text)` -> pieces, `encode(text)` -> ids."""

    def __init__(self, vocab: dict[str, int], max_chars_per_word: int = MAX_CHARS_PER_WORD):
        if missing := [token for token in SPECIAL_TOKENS if token not in vocab]:
            raise ValueError(f"not a BERT vocabulary: special tokens {missing} are missing")
        self.vocab = vocab
        self.max_chars_per_word = max_chars_per_word
        # Longest first, so that no special token can shadow a longer one that starts like it.
        self._special = re.compile("(" + "|".join(map(re.escape, sorted(SPECIAL_TOKENS, key=len)[::-1])) + ")")

    @classmethod
    def from_file(cls, vocab_file: str | Path) -> "WordPieceTokenizer":
        return cls(load_vocab(vocab_file))

    def tokenize(self, text: str) -> list[str]:
        """The pieces of `text`, without [CLS] and [SEP]."""
        pieces = []
        # re.split with a group keeps the separators: odd indices are the special tokens written in the text.
        for i, part in enumerate(self._special.split(text)):
            if i % 2:
                pieces.append(part)
            else:
                for word in split_words(normalize(part)):
                    pieces += wordpiece(word, self.vocab, self.max_chars_per_word)
        return pieces

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """The ids of `text`: [CLS] pieces [SEP] (no truncation: a review may be longer than the model's 512)."""
        pieces = self.tokenize(text)
        if add_special_tokens:
            pieces = [CLS, *pieces, SEP]
        return [self.vocab[piece] for piece in pieces]


@functools.cache
def minilm_tokenizer() -> WordPieceTokenizer:
    """The tokenizer of all-MiniLM-L6-v2's vocab.txt (the offline pretrained model), read once."""
    from minibert.paths import minilm_dir  # here, not at the top: the rest of this file needs only the standard library

    return WordPieceTokenizer.from_file(minilm_dir() / "vocab.txt")


def encode(text: str, add_special_tokens: bool = True) -> list[int]:
    """all-MiniLM-L6-v2's ids of `text`: `encode("hello world")` -> [101, 7592, 2088, 102]."""
    return minilm_tokenizer().encode(text, add_special_tokens)
