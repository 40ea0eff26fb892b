"""A small but real CLIP byte-level BPE tokenizer, built offline from a word list.

The vocabulary has CLIP's layout: the 256 byte symbols, the same with the end-of-word marker
``</w>``, one entry per learned merge, then ``<|startoftext|>`` and ``<|endoftext|>``. Any text
tokenizes (unknown words fall back to byte symbols), so prompts from COCO work unchanged.
"""

from __future__ import annotations

import collections
import re

BOS, EOS = "<|startoftext|>", "<|endoftext|>"

# Words a text-to-image caption set uses a lot; the merges are learned on these.
_CORPUS = """
a an the of on in with and at to is are two three four five one some many several
man woman person people child boy girl dog cat horse bird cow sheep elephant bear zebra giraffe
car bus truck train plane boat bicycle motorcycle street road table chair bed couch room kitchen
bathroom toilet sink window door wall floor field grass tree trees water beach ocean sky snow
mountain city building house food pizza plate bowl cake sandwich banana apple orange
red green blue yellow white black brown pink purple orange gray grey small large big little
circle square triangle shape shapes left right top bottom center middle near next sitting
standing walking riding holding playing eating looking laying flying parked tennis baseball
frisbee kite skateboard surfboard umbrella phone laptop computer picture photo image view
""".split()


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2's reversible map from bytes to printable unicode characters."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def learn_merges(words: list[str], num_merges: int) -> list[tuple[str, str]]:
    """Learn BPE merges on ``words`` (deterministic: ties broken by the pair itself)."""
    byte_map = _bytes_to_unicode()
    counts = collections.Counter(words)
    seqs = {}
    for word in counts:
        symbols = [byte_map[b] for b in word.encode("utf-8")]
        symbols[-1] += "</w>"
        seqs[word] = symbols
    merges = []
    for _ in range(num_merges):
        pairs = collections.Counter()
        for word, symbols in seqs.items():
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] += counts[word]
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        joined = best[0] + best[1]
        for word, symbols in seqs.items():
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            seqs[word] = out
    return merges


def build_vocab(num_merges: int = 400) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Return ``(vocab, merges)`` in CLIP's layout."""
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols]
    words = [re.sub(r"[^a-z]", "", w) for w in _CORPUS]
    merges = learn_merges([w for w in words if w], num_merges)
    for a, b in merges:
        if a + b not in tokens:
            tokens.append(a + b)
    tokens += [BOS, EOS]
    return {tok: i for i, tok in enumerate(tokens)}, merges


def build_clip_tokenizer(pad_token: str = EOS, num_merges: int = 400):
    """A ``transformers.CLIPTokenizer`` over the small vocabulary, max length 77."""
    from transformers import CLIPTokenizer

    vocab, merges = build_vocab(num_merges)
    return CLIPTokenizer(vocab=vocab, merges=list(merges), pad_token=pad_token,
                         model_max_length=77)
