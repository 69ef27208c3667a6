"""Concepts in captions: a vocabulary of common object nouns, caption tokenisation with plural
folding, noun-phrase-aware matching (a colour or material word that modifies another noun is not
that concept), concept frequencies, and the Implosion paper's selection of concepts to poison:
C_P concepts drawn at random from the pool of the 500 most frequent nouns (generic words
excluded), or a window of ranks, or exactly the top K."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

# Words that describe the picture, not what it shows (excluded from selection).
GENERIC = frozenset(
    {
        "photo",
        "image",
        "picture",
        "illustration",
        "background",
        "view",
        "stock",
        "vector",
        "design",
        "art",
        "print",
        "drawing",
        "painting",
        "close",
        "set",
        "style",
        "icon",
    }
)

# Nouns that are at least as often a colour, material or quality word in front of another noun
# ("orange fur", "iron gate", "velvet dress", "safe place") as the thing itself. In that
# position they are not the concept; see caption_concepts for the rule.
MODIFIER_WORDS = frozenset(
    {
        # colours that are also things
        *("orange", "lime", "peach", "cream", "chocolate", "coral", "olive", "rose", "violet"),
        *("lavender", "mint", "ivory", "amber", "charcoal", "navy", "gold", "silver", "copper"),
        *("bronze", "brass", "rust", "turquoise", "emerald", "ruby", "jade", "sorrel"),
        # materials
        *("iron", "steel", "wood", "stone", "glass", "paper", "plastic", "leather", "wool"),
        *("velvet", "silk", "cotton", "denim", "lace", "marble", "metal", "rubber", "brick"),
        *("straw", "wicker", "bamboo", "cardboard", "porcelain", "crystal", "angora"),
        # qualities
        *("safe", "upright"),
    }
)
# Colour words that are only adjectives: "orange and white" coordinates two colours.
_COLOURS = frozenset(
    {
        *("white", "black", "red", "green", "blue", "yellow", "purple", "pink", "brown"),
        *("grey", "gray", "beige", "tan", "golden", "teal", "maroon", "magenta", "cyan"),
        *("multicolored", "multicoloured", "striped", "spotted"),
    }
)
# A word before a colour that makes it an adjective: "is orange", "bright orange",
# "painted orange".
_BEFORE_ADJECTIVE = frozenset(
    {
        *("is", "are", "was", "were", "be", "been", "being", "looks", "look", "looked"),
        *("turned", "turns", "became", "becomes", "appears", "seems", "painted", "dyed"),
        *("colored", "coloured", "tinted", "stained", "bright", "dark", "light", "pale"),
        *("deep", "vivid", "neon", "burnt", "pastel", "dull", "rich", "warm", "soft", "hot"),
        *("dusty", "muted", "metallic", "fluorescent", "very", "all"),
    }
)
# Words that end a noun phrase: after "orange" they leave it the head ("an orange on a table").
_FUNCTION_WORDS = frozenset(
    {
        *("a", "an", "the", "this", "that", "these", "those", "my", "your", "his", "her"),
        *("its", "our", "their", "some", "any", "no", "every", "each", "of", "in", "on", "at"),
        *("by", "for", "with", "without", "from", "to", "into", "onto", "over", "under"),
        *("above", "below", "near", "beside", "behind", "between", "among", "through"),
        *("across", "along", "around", "against", "about", "after", "before", "during"),
        *("and", "or", "but", "nor", "so", "yet", "than", "as", "is", "are", "was", "were"),
        *("be", "been", "being", "has", "have", "had", "do", "does", "did", "will", "would"),
        *("can", "could", "should", "may", "might", "must", "it", "he", "she", "they", "we"),
        *("you", "i", "me", "him", "them", "us", "there", "here", "which", "who", "whom"),
        *("whose", "what", "where", "when", "why", "how", "not", "very", "too", "also"),
        *("just", "only", "all", "both", "either", "neither", "next", "while", "up", "down"),
        *("out", "off", "away", "back", "together", "alone", "inside", "outside", "beneath"),
        *("upon", "within", "via", "per", "like", "then", "if", "because", "until"),
    }
)
# Nouns ending in -ing: after a colour word they are the head ("orange building"); other -ing
# words are read as verbs that leave the colour word the head ("an orange sitting on a table").
_ING_NOUNS = frozenset(
    {
        *("building", "clothing", "ceiling", "lighting", "painting", "drawing", "icing"),
        *("frosting", "filling", "topping", "bedding", "railing", "siding", "awning"),
        *("wedding", "evening", "morning", "pudding", "dumpling", "stuffing", "lettering"),
        *("writing", "living", "dining", "packaging", "flooring", "padding", "lining"),
        *("netting", "piping", "setting", "coloring", "colouring"),
    }
)
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "&": " and ", "+": " and "})
_INNER_HYPHEN = re.compile(r"(?<=[\w'])-(?=\w)")
# a word (letters or digits, inner apostrophes kept: "dog's", "jack-o'-lantern" -> "o"), or one
# punctuation mark (a phrase boundary)
_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)*|[^\w\s']")
_COMMA = ","
_BREAK = None  # a strong boundary: . ; : ! ? ( ) / " and other marks


def _tokens(text: str) -> list[str | None]:
    """Lowercased words, "," for a comma and None for other punctuation; hyphenated words are
    split ("go-kart" -> "go", "kart") so the vocabulary and captions agree on them."""
    text = _INNER_HYPHEN.sub(" ", text.lower().translate(_APOSTROPHES))
    out: list[str | None] = []
    for tok in _TOKEN.findall(text):
        if tok[0].isalnum():
            out.append(tok)
        else:
            out.append(_COMMA if tok == "," else _BREAK)
    return out


@dataclass(frozen=True)
class Vocabulary:
    """Nouns (one or more words) and the sources that list them; ``phrases`` maps each noun's
    words (as :func:`caption_concepts` tokenises them) to the noun."""

    nouns: tuple[str, ...]
    sources: dict[str, tuple[str, ...]]
    phrases: dict[tuple[str, ...], str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        phrases: dict[tuple[str, ...], str] = {}
        for noun in self.nouns:  # sorted: of two spellings with the same words, the first wins
            words = tuple(t for t in _tokens(noun) if t not in (_COMMA, _BREAK))
            if words:
                phrases.setdefault(words, noun)
        object.__setattr__(self, "phrases", phrases)

    def __contains__(self, noun: str) -> bool:
        return noun in self.sources

    @property
    def longest(self) -> int:
        return max((len(words) for words in self.phrases), default=1)


@lru_cache(maxsize=1)
def load_vocabulary() -> Vocabulary:
    """The packaged vocabulary: the class names of COCO, ImageNet-1k, LVIS v1 and Open Images'
    boxable classes, 2,197 nouns (``data/concepts.tsv``; ``data/README.md`` gives the sources
    and how each list became rows)."""
    text = resources.files("alignscope.poison").joinpath("data/concepts.tsv").read_text("utf-8")
    sources = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or line.startswith("noun\t"):
            continue
        noun, _, src = line.partition("\t")
        sources[noun] = tuple(src.split(","))
    return Vocabulary(tuple(sorted(sources)), sources)


def make_vocabulary(nouns: Iterable[str]) -> Vocabulary:
    """A vocabulary of the given nouns (lowercased), e.g. a project's own concept list."""
    clean = sorted({n.strip().lower() for n in nouns if n.strip()})
    return Vocabulary(tuple(clean), {n: ("user",) for n in clean})


def read_vocabulary(path: str | Path) -> Vocabulary:
    """A vocabulary from a text file: one noun per line (what ``alignscope concepts --out``
    writes); blank lines and lines starting with "#" are skipped, and of a tab-separated line
    only the first field is read, so the packaged ``concepts.tsv`` is a valid file too.

    Raises
    ------
    FileNotFoundError
        When ``path`` is not a file.
    ValueError
        When the file is not UTF-8 text or lists no noun.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"vocabulary file {str(path)!r} does not exist")
    try:
        text = file.read_text("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"vocabulary file {str(path)!r} is not UTF-8 text: give one noun per line"
        ) from exc
    nouns = [line.split("\t", 1)[0] for line in text.splitlines()]
    nouns = [n for n in nouns if n.strip() and not n.lstrip().startswith("#")]
    if nouns[:1] == ["noun"]:  # the header row of a concepts.tsv
        nouns = nouns[1:]
    if not nouns:
        raise ValueError(f"vocabulary file {str(path)!r} lists no nouns: give one noun per line")
    return make_vocabulary(nouns)


# Irregular plurals of vocabulary nouns that captions use often ("two women", "people on a
# beach"): the suffix rules cannot reach them.
_IRREGULAR_PLURALS = {
    "men": "man",
    "women": "woman",
    "people": "person",
    "children": "child",
    "feet": "foot",
    "teeth": "tooth",
    "mice": "mouse",
    "geese": "goose",
}


def _singular_forms(word: str) -> Iterator[str]:
    """Candidate singulars of an English plural: an irregular one ("men" -> "man"), then the
    simple rules, most specific first."""
    if word in _IRREGULAR_PLURALS:
        yield _IRREGULAR_PLURALS[word]
    for suffix, replacement in (("ies", "y"), ("ves", "fe"), ("ves", "f"), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) > len(suffix) + 1:
            yield word[: -len(suffix)] + replacement


def singular(word: str, vocabulary: Vocabulary) -> str:
    """Fold an English plural onto a vocabulary noun ("dogs" -> "dog", "boxes" -> "box",
    "berries" -> "berry", "women" -> "woman"); other words come back unchanged."""
    if word in vocabulary:
        return word
    return next((c for c in _singular_forms(word) if c in vocabulary), word)


@dataclass(frozen=True)
class _Mention:
    """A vocabulary noun found at tokens[start:end]; ``form`` is "" for the noun as listed,
    "plural" or "possessive" when its last word was folded ("dogs", "dog's")."""

    start: int
    end: int
    noun: str
    form: str


def _lookup(words: list[str], vocabulary: Vocabulary) -> tuple[str, str] | None:
    """(noun, form) when ``words`` name a vocabulary noun, folding the last word."""
    *head, last = words
    if last.endswith("'s") and len(last) > 2:
        noun = vocabulary.phrases.get((*head, last[:-2]))
        return (noun, "possessive") if noun else None
    noun = vocabulary.phrases.get((*head, last))
    if noun:
        return noun, ""
    for candidate in _singular_forms(last):
        noun = vocabulary.phrases.get((*head, candidate))
        if noun:
            return noun, "plural"
    return None


def _mentions(tokens: list[str | None], vocabulary: Vocabulary) -> list[_Mention]:
    """Vocabulary nouns in ``tokens``, longest first so a multi-word noun ("hot dog") wins over
    its parts; a noun never spans punctuation. Sorted by position."""
    n = len(tokens)
    used = [tok in (_COMMA, _BREAK) for tok in tokens]
    found = []
    for size in range(min(vocabulary.longest, n), 0, -1):
        for start in range(n - size + 1):
            if any(used[start : start + size]):
                continue
            hit = _lookup(tokens[start : start + size], vocabulary)  # type: ignore[arg-type]
            if hit:
                found.append(_Mention(start, start + size, *hit))
                used[start : start + size] = [True] * size
    return sorted(found, key=lambda m: m.start)


def _is_participle(word: str) -> bool:
    """An -ing verb form ("sitting", "lying") rather than an -ing noun ("building")."""
    stem = word[:-3]
    return word.endswith("ing") and any(v in stem for v in "aeiouy") and word not in _ING_NOUNS


def _used_as_adjective(tokens: list[str | None], i: int) -> bool:
    """Whether the modifier word at tokens[i] describes something rather than names it."""

    def at(j: int) -> str | None:
        return tokens[j] if 0 <= j < len(tokens) else _BREAK

    before, after = at(i - 1), at(i + 1)
    if before in _BEFORE_ADJECTIVE:  # "is orange", "bright orange", "painted orange"
        return True
    pair = _COLOURS | MODIFIER_WORDS
    if before in ("and", "or", _COMMA) and at(i - 2) in pair:  # "black and orange"
        return True
    if after in ("and", "or", _COMMA) and at(i + 2) in pair:  # "orange and white"
        return True
    if after is None or after == _COMMA or after in _FUNCTION_WORDS:
        return False  # "an orange on a table", "an orange."
    # "orange fur", "orange cat": a content word follows, which the colour describes
    return not _is_participle(after)


def caption_concepts(caption: str, vocabulary: Vocabulary) -> set[str]:
    """The vocabulary nouns a caption mentions as things, not as modifiers of another noun.

    Parameters
    ----------
    caption : str
        Free text; case, hyphens ("go-kart" = "go kart") and curly apostrophes are normalised.
    vocabulary : Vocabulary
        The nouns to look for (one or more words each).

    Returns
    -------
    set of str
        The nouns as the vocabulary spells them, each once.

    Notes
    -----
    Matching, without a parser (no part-of-speech tagger is a dependency):

    1. Nouns are found longest first and never across punctuation, so "hot dog stand" names
       *hot dog* (not *dog*), and "a dog. Orange sunset" does not join "dog" and "orange".
       The last word of a noun may be a plural ("dogs", "boxes", "berries", "knives"; the
       irregular "men", "women", "people", "children", "feet", "teeth", "mice", "geese") or a
       possessive ("dog's").
    2. A noun in its singular, non-possessive form directly followed by another vocabulary noun
       in its singular form is that noun's modifier, not a concept: "a dog bed" names *bed*,
       "a teddy bear cake" names *cake*. A following modifier word (rule 3) does not count.
    3. A word of :data:`MODIFIER_WORDS` (colours and materials that are also things: *orange*,
       *iron*, *wool*, *glass*...) is an adjective, not the concept, when it is followed by a
       content word (not a function word, not punctuation, not an -ing verb: "orange fur",
       "iron gate"), when a copula, a shade or a verb of colouring comes before it ("is
       orange", "bright orange", "painted orange"), or when "and"/"or"/"," joins it to another
       colour or material ("orange and white cat"). Otherwise it is the thing: "an orange on a
       table", "oranges", "an orange sitting on a plate".

    Known limits: a compound whose head is not in the vocabulary keeps its modifier ("dog food"
    names *dog*, "hot dog stand" names *hot dog*); keyword lists without commas read as
    compounds ("cat dog" names only *dog*); a modifier word followed by a verb that does not end
    in -ing is read as an adjective ("an orange cut in half" names nothing); plurals as
    modifiers ("dogs bed") and verbs spelled like a noun ("a dog flies" -> *fly*) are not told
    apart from nouns. The vocabulary's nouns are taken as nouns: the packaged one has no
    part-of-speech column.
    """
    tokens = _tokens(caption)
    mentions = _mentions(tokens, vocabulary)
    # where a singular noun that can head a compound starts (rule 2)
    heads = {m.start for m in mentions if not m.form and m.noun not in MODIFIER_WORDS}
    found: set[str] = set()
    for m in mentions:
        if not m.form:
            if m.end in heads:
                continue  # "dog bed": dog modifies bed
            if m.end - m.start == 1 and m.noun in MODIFIER_WORDS:
                if _used_as_adjective(tokens, m.start):
                    continue
        found.add(m.noun)
    return found


def concept_frequencies(captions: Iterable[str], vocabulary: Vocabulary) -> Counter[str]:
    """How many captions mention each concept (document frequency)."""
    counts: Counter[str] = Counter()
    for caption in captions:
        counts.update(caption_concepts(caption, vocabulary))
    return counts


def select_concepts(
    frequencies: Counter[str],
    *,
    top: int | None = None,
    ranks: tuple[int, int] | None = None,
    exclude: Iterable[str] = GENERIC,
) -> list[str]:
    """Concepts by descending frequency (ties alphabetical), generic words excluded: the
    ``top`` most frequent, or ranks ``a..b`` inclusive, 1-based (e.g. (1501, 2000))."""
    if (top is None) == (ranks is None):
        raise ValueError("give exactly one of top= or ranks=")
    ordered = [c for c, _ in ranked_concepts(frequencies, exclude)]  # the one ranking
    if top is not None:
        if top < 1:
            raise ValueError(f"top must be >= 1, got {top}")
        return ordered[:top]
    a, b = ranks  # type: ignore[misc]
    if not 1 <= a <= b:
        raise ValueError(f"ranks must satisfy 1 <= a <= b, got {a}-{b}")
    return ordered[a - 1 : b]


# The Implosion paper's pool: "randomly selecting from a pool of 500 frequently used nouns that
# describe objects" (Sec. 5.1), word frequency computed over the training captions.
POOL = 500


def ranked_concepts(
    frequencies: Counter[str], exclude: Iterable[str] = GENERIC
) -> list[tuple[str, int]]:
    """(concept, captions) by descending frequency, ties alphabetical, generic words excluded:
    the order :func:`select_concepts` ranks by, with the counts."""
    skip = set(exclude)
    ranked = sorted((c for c in frequencies if c not in skip), key=lambda c: (-frequencies[c], c))
    return [(c, frequencies[c]) for c in ranked]


def concept_candidates(
    frequencies: Counter[str],
    *,
    concepts: int | None = None,
    pool: int | None = None,
    ranks: tuple[int, int] | None = None,
    exclude: Iterable[str] = GENERIC,
) -> list[str]:
    """The concepts a poisoning run draws its C_P poisoned concepts from, most frequent first.

    Parameters
    ----------
    frequencies : Counter
        Captions per concept (:func:`concept_frequencies`).
    concepts : int, optional
        C_P. With ``pool`` > 0 (default :data:`POOL`, the Implosion protocol) the candidates
        are the ``pool`` most frequent concepts, C_P of which the plan draws at random with the
        poison seed; with ``pool`` = 0 they are exactly the C_P most frequent (all poisoned).
    pool : int, optional
        The pool size; None is :data:`POOL`. Only with ``concepts``.
    ranks : (int, int), optional
        Instead of ``concepts``: every concept of ranks a..b inclusive, 1-based (the paper's
        Table 2 poisons ranks 1501-2000).
    exclude : iterable of str
        Words never selected (default :data:`GENERIC`: "photo", "image"...).

    Returns
    -------
    list of str
        Fewer than asked when the captions name fewer concepts; the caller says so.

    Raises
    ------
    ValueError
        For neither or both of ``concepts`` and ``ranks``, ``pool`` with ``ranks``, a negative
        pool, or a pool smaller than C_P.
    """
    if (concepts is None) == (ranks is None):
        raise ValueError("give exactly one of concepts= (C_P) or ranks= (a window of ranks)")
    if concepts is None:
        if pool is not None:
            raise ValueError("concept_pool= goes with concepts=; a window of ranks is its own pool")
        return select_concepts(frequencies, ranks=ranks, exclude=exclude)
    if concepts < 1:
        raise ValueError(f"concepts must be >= 1, got {concepts}")
    size = POOL if pool is None else pool
    if size < 0:
        raise ValueError(f"concept_pool must be >= 0 (0: exactly the top C_P), got {size}")
    if 0 < size < concepts:
        raise ValueError(
            f"concept_pool={size} is smaller than concepts={concepts}: the pool must hold the "
            "concepts drawn from it (concept_pool=0 poisons exactly the most frequent ones)"
        )
    return select_concepts(frequencies, top=size or concepts, exclude=exclude)
