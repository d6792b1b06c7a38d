"""The uncased BERT WordPiece tokenizer: text -> token ids, on the Rust `tokenizers` library.

What is here:
- `Tokenizer`, a thin wrapper around `tokenizers.Tokenizer` that truncates per call and pads each batch to its
  longest sequence, returning LongTensors `input_ids` and `attention_mask` of shape (B, T);
- `load_tokenizer(name_or_path)`, which reads a model folder's `tokenizer.json`, or rebuilds the same pipeline from
  `vocab.txt` alone when there is no `tokenizer.json` (older checkpoints ship only the vocabulary);
- a CLI, `python -m minibert.tokenizer "hello my name is kevin"`, that prints the token / id table.

What is unusual:
- all-MiniLM-L6-v2's `tokenizer.json` has truncation AND padding to 128 baked in. Left alone, every review would
  silently be cut to 128 tokens and padded to 128. We reset both on load and set them per call instead.
- The whole batch is encoded by Rust (in parallel threads); Python never loops over characters or words.

Tested against transformers' fast tokenizers in tests/test_tokenizer.py: `AutoTokenizer` on the MiniLM folder and
`DistilBertTokenizerFast` on `vocab.txt` alone give identical padded ids and masks on 5,000 IMDB reviews at max
lengths 128 and 512, and on hard strings (accents, CJK, emoji, a 100+ character word, HTML, empty text).
"""

import argparse
import hashlib
import json
from pathlib import Path

import torch
from tokenizers import Tokenizer as RustTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

from minibert.errors import ArgumentParser, UserError
from minibert.paths import OFFLINE_MINILM, resolve_model_dir

# BERT's special tokens. [CLS] opens every sequence (its final hidden state is what a classifier reads),
# [SEP] closes it, [PAD] fills batches, [UNK] replaces any word WordPiece cannot spell, [MASK] is for pretraining.
PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = [PAD, UNK, CLS, SEP, MASK]
TRUNCATIONS = ("head", "tail", "head+tail")  # the part of a long text that is kept (keep_tokens)
TRUNCATION_KEY = "minibert_truncation"  # where tokenizer_config.json records it: transformers passes it by


def build_wordpiece_from_vocab(vocab_file: str | Path, lowercase: bool = True) -> RustTokenizer:
    """Assemble BERT's tokenization pipeline, stage by stage, around the vocabulary in `vocab_file`.

    This is the pipeline that `tokenizer.json` describes for BERT uncased; building it here explains each stage
    and serves checkpoints that ship only `vocab.txt`.
    """
    vocab = models.WordPiece.read_file(str(vocab_file))  # {token: id}, one token a line, id = line number
    missing = [token for token in SPECIAL_TOKENS if token not in vocab]
    if missing:
        raise ValueError(f"{vocab_file} is not a BERT vocabulary: special tokens {missing} are missing")

    # The numbers give the order in which the stages run on a text; the model comes first in the code because
    # the tokenizer is built around it.
    # 4. The model: WordPiece splits each word greedily into the longest pieces found in the vocabulary,
    #    continuation pieces carry a '##' prefix ("unwatchable" -> "un", "##watch", "##able"). A word that cannot
    #    be spelled, or is longer than 100 characters (BERT's limit, to bound the greedy search), becomes one [UNK].
    backend = RustTokenizer(models.WordPiece(vocab, unk_token=UNK, continuing_subword_prefix="##",
                                             max_input_chars_per_word=100))
    # 2. The normalizer cleans the raw text: drops control characters and turns any whitespace into a space
    #    (clean_text), puts spaces around CJK ideographs so each becomes its own word (handle_chinese_chars),
    #    lowercases, and strips accents ("Café" -> "cafe"). strip_accents=None means "follow lowercase", as in
    #    the original BERT uncased.
    backend.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                    strip_accents=None, lowercase=lowercase)
    # 3. The pre-tokenizer cuts the text into words: at whitespace, and around every punctuation character,
    #    so "great!" -> "great", "!" and "<br />" -> "<", "br", "/", ">".
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    # 1. The special tokens are matched in the raw text before everything else, so a literal "[SEP]" in a review
    #    is the separator token, not "[", "sep", "]" (transformers does the same). They are in the vocab already,
    #    so this adds no new ids.
    backend.add_special_tokens(SPECIAL_TOKENS)
    # 5. The post-processor wraps each sequence in the template [CLS] $A [SEP] (a pair: [CLS] $A [SEP] $B [SEP],
    #    with segment id 1 for the second part). It runs only when add_special_tokens=True.
    backend.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}",
        pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",
        special_tokens=[(CLS, vocab[CLS]), (SEP, vocab[SEP])],
    )
    # The decoder (ids -> text) glues '##' pieces back onto the previous piece.
    backend.decoder = decoders.WordPiece(prefix="##")
    return backend


class Tokenizer:
    """Batch tokenizer: a list of texts -> padded `input_ids` and `attention_mask`, both (B, T) LongTensors."""

    def __init__(self, backend: RustTokenizer, model_max_length: int | None = None, truncation: str = "head"):
        if truncation not in TRUNCATIONS:
            raise ValueError(f"truncation must be one of {TRUNCATIONS}, got {truncation!r}")
        # Trap: a tokenizer.json may carry its own truncation/padding (all-MiniLM-L6-v2: both at 128).
        # Reset them: we truncate per call and pad to the longest sequence of each batch.
        backend.no_truncation()
        backend.no_padding()
        self.backend = backend
        ids = {token: backend.token_to_id(token) for token in (PAD, CLS, SEP)}
        missing = [token for token, i in ids.items() if i is None]
        if missing:
            raise ValueError(f"this tokenizer has no {missing} token; expected a BERT WordPiece tokenizer")
        self._pad_id, self._cls_id, self._sep_id = ids[PAD], ids[CLS], ids[SEP]
        self._model_max_length = model_max_length
        self.truncation = truncation  # which part of a long text to keep; see keep_tokens
        # Now, while truncation and padding are off: each call sets them, and to_str() would then say so
        self._fingerprint = hashlib.sha256(backend.to_str().encode()).hexdigest()[:16]

    @classmethod
    def from_folder(cls, folder: str | Path) -> "Tokenizer":
        """Read `tokenizer.json` from a model folder, or build the pipeline from `vocab.txt` if that is all there is."""
        folder = Path(folder)
        settings = read_tokenizer_config(folder)
        limit = settings.get("model_max_length")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError(f"{folder / 'tokenizer_config.json'}: model_max_length must be a positive integer, "
                             f"got {limit!r}")
        truncation = settings.get(TRUNCATION_KEY, "head")
        if truncation not in TRUNCATIONS:
            raise ValueError(f"{folder / 'tokenizer_config.json'}: {TRUNCATION_KEY} must be one of {TRUNCATIONS}, "
                             f"got {truncation!r}")
        if (folder / "tokenizer.json").is_file():
            return cls(RustTokenizer.from_file(str(folder / "tokenizer.json")), limit, truncation)
        if (folder / "vocab.txt").is_file():
            lowercase = bool(settings.get("do_lower_case", True))  # BERT uncased, unless the folder says otherwise
            return cls(build_wordpiece_from_vocab(folder / "vocab.txt", lowercase=lowercase), limit, truncation)
        raise FileNotFoundError(f"{folder} has neither tokenizer.json nor vocab.txt; cannot build a tokenizer")

    def save_pretrained(self, folder: str | Path, model_max_length: int) -> None:
        """tokenizer.json, which `from_folder` and transformers read, and tokenizer_config.json with the longest
        input the model takes: without it transformers' AutoTokenizer takes the limit as unbounded, and
        truncation=True would cut nothing."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.backend.no_truncation()  # the last call's settings are not the tokenizer's
        self.backend.no_padding()
        self.backend.save(str(folder / "tokenizer.json"))
        # transformers reads model_max_length and passes our own key by; predict reads both
        settings = {"model_max_length": model_max_length, TRUNCATION_KEY: self.truncation}
        (folder / "tokenizer_config.json").write_text(json.dumps(settings, indent=2) + "\n")

    @property
    def model_max_length(self) -> int | None:
        """The longest input, [CLS] and [SEP] included, that the folder's tokenizer_config.json records (None when
        it records none). transformers writes 1e30 there for "unbounded": cap it at the model's positions."""
        return self._model_max_length

    @property
    def pad_id(self) -> int:
        return self._pad_id

    @property
    def cls_id(self) -> int:
        return self._cls_id

    @property
    def sep_id(self) -> int:
        return self._sep_id

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def fingerprint(self) -> str:
        """A hash of the whole pipeline (vocabulary, normalizer, ...): two tokenizers with the same fingerprint
        give the same ids, so cached token ids can be keyed on it (see minibert/training/data.py). The same before and
        after any call."""
        return self._fingerprint

    def _check(self, texts, max_length, add_special_tokens) -> None:
        """One clear error for each kind of bad input, before Rust sees it."""
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, got one string; wrap it: tokenizer([text])")
        if not isinstance(texts, (list, tuple)):
            raise TypeError(f"texts must be a list of strings, got {type(texts).__name__}")
        bad = next((i for i, text in enumerate(texts) if not isinstance(text, str)), None)
        if bad is not None:
            raise TypeError(f"texts must be a list of strings; texts[{bad}] is {type(texts[bad]).__name__}")
        smallest = 2 if add_special_tokens else 1  # room for [CLS] and [SEP]
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < smallest:
            raise ValueError(f"max_length must be an integer >= {smallest} "
                             f"(add_special_tokens={add_special_tokens}), got {max_length!r}")

    def _encode(self, texts, max_length, add_special_tokens, pad: bool):
        self._check(texts, max_length, add_special_tokens)
        # max_length counts the [CLS]/[SEP] that the post-processor adds, as transformers' truncation=True does.
        self.backend.enable_truncation(max_length)
        if pad:  # pad to the longest sequence of this batch (no fixed length): less wasted compute
            self.backend.enable_padding(pad_id=self.pad_id, pad_token=PAD)
        else:
            self.backend.no_padding()
        return self.backend.encode_batch_fast(list(texts), add_special_tokens=add_special_tokens)

    def encode_batch(self, texts: list[str], max_length: int = 512, add_special_tokens: bool = True) -> list[list[int]]:
        """Token ids of each text, unpadded, each at most `max_length` long (including [CLS] and [SEP]); a longer
        text keeps the part `self.truncation` names."""
        if self.truncation == "head":  # Rust cuts the tail off, exactly as transformers' truncation=True does
            return [encoding.ids for encoding in self._encode(texts, max_length, add_special_tokens, pad=False)]
        self._check(texts, max_length, add_special_tokens)
        self.backend.no_truncation()
        self.backend.no_padding()
        budget = max_length - 2 if add_special_tokens else max_length
        pieces = [keep_tokens(e.ids, budget, self.truncation)
                  for e in self.backend.encode_batch_fast(list(texts), add_special_tokens=False)]
        return [[self.cls_id, *ids, self.sep_id] for ids in pieces] if add_special_tokens else pieces

    def __call__(self, texts: list[str], max_length: int = 512, add_special_tokens: bool = True) -> dict:
        """Encode and pad a batch: {"input_ids": (B, T), "attention_mask": (B, T)}, T = the longest in the batch.

        attention_mask is 1 on real tokens and 0 on [PAD], so attention ignores the padding.
        """
        if self.truncation == "head":
            encodings = self._encode(texts, max_length, add_special_tokens, pad=True)
            rows, masks = [e.ids for e in encodings], [e.attention_mask for e in encodings]
        else:  # pad by hand what encode_batch cut: the same right padding Rust would add
            rows = self.encode_batch(texts, max_length, add_special_tokens)
            width = max(map(len, rows), default=0)
            masks = [[1] * len(r) + [0] * (width - len(r)) for r in rows]
            rows = [r + [self.pad_id] * (width - len(r)) for r in rows]
        if not rows:
            raise ValueError("texts is empty: nothing to tokenize")
        input_ids = torch.tensor(rows, dtype=torch.long)  # (B, T)
        attention_mask = torch.tensor(masks, dtype=torch.long)  # (B, T)
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def convert_ids_to_tokens(self, ids) -> list[str]:
        """The vocabulary entry of each id ("##" marks a piece that continues the previous one)."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        tokens = [self.backend.id_to_token(int(i)) for i in ids]
        unknown = [i for i, token in zip(ids, tokens) if token is None]
        if unknown:
            raise ValueError(f"ids {unknown[:5]} are outside the vocabulary (size {self.vocab_size})")
        return tokens


def keep_tokens(ids: list[int], budget: int, truncation: str) -> list[int]:
    """At most `budget` of a text's token ids (no [CLS]/[SEP] yet): its first ones ("head"), its last ones
    ("tail"), or a quarter from the start and the rest from the end ("head+tail"). A review tends to open with the
    plot and close with the verdict; Sun et al. 2019 ("How to Fine-Tune BERT for Text Classification?", table 3)
    kept 128 + 382 of 510 tokens and beat head-only on IMDB."""
    if len(ids) <= budget:
        return ids
    if truncation == "head":
        return ids[:budget]
    if truncation == "tail":
        return ids[len(ids) - budget:]
    head = budget // 4
    return ids[:head] + ids[len(ids) - (budget - head):]


def read_tokenizer_config(folder: Path) -> dict:
    """tokenizer_config.json, where save_pretrained (ours or transformers') records the length limit and the
    casing; {} when the folder has none."""
    path = folder / "tokenizer_config.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None


def load_tokenizer(name_or_path: str | Path) -> Tokenizer:
    """The tokenizer of a model folder, or of a model name that minibert.paths.resolve_model_dir knows."""
    return Tokenizer.from_folder(resolve_model_dir(name_or_path))


def format_table(ids: list[int], tokens: list[str]) -> str:
    """A plain-text two-column table, ids right-aligned beside their tokens."""
    header = ("Token IDs", "Tokens")
    width = max(len(header[0]), *(len(str(i)) for i in ids))
    lines = [f"{header[0]:>{width}}  {header[1]}", f"{'-' * width}  {'-' * max(len(header[1]), *map(len, tokens))}"]
    lines += [f"{i:>{width}}  {token}" for i, token in zip(ids, tokens)]
    return "\n".join(lines)


def check_max_length_flag(max_length: int) -> None:
    """A command's --max-length, refused by its flag's name before any model is read: [CLS] and [SEP] take two."""
    if max_length < 2:
        raise UserError(f"--max-length must be at least 2 ([CLS] and [SEP]), got {max_length}")


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(
        prog="python -m minibert.tokenizer",
        description="Show how BERT's WordPiece tokenizer splits text into tokens and ids.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("texts", nargs="+", help="one or more texts to tokenize (quote each)")
    parser.add_argument("--model", default=OFFLINE_MINILM, help="model name or folder holding its tokenizer")
    parser.add_argument("--max-length", type=int, default=512,
                        help="truncate to this many tokens, [CLS]/[SEP] included")
    args = parser.parse_args(argv)
    check_max_length_flag(args.max_length)
    tokenizer = load_tokenizer(args.model)
    try:
        all_ids = tokenizer.encode_batch(args.texts, max_length=args.max_length)
    except (TypeError, ValueError) as err:
        raise UserError(str(err)) from None  # run_cli: one line and exit code 2, no traceback
    for n, (text, ids) in enumerate(zip(args.texts, all_ids)):
        if n:
            print()
        if len(args.texts) > 1:
            print(f"{text!r}")
        print(format_table(ids, tokenizer.convert_ids_to_tokens(ids)))


if __name__ == "__main__":
    from minibert.errors import run_cli

    raise SystemExit(run_cli(main))
