"""Markdown with `{{ inputs.x }}` and `{{ outputs.step.y }}` placeholders, rendered inert."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.token import Token

PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
ROOTS = ("inputs", "outputs")
# A value stands in a sentence: past this it is cut (the context table shows it whole).
VALUE_MAX = 500
# Bounds on what a page renders: instructions are short prose, not documents.
TEXT_MAX = 20_000

VALUE_LINK = re.compile(r"^(https?://|mailto:)", re.IGNORECASE)

MISSING = object()


def _parser() -> MarkdownIt:
    # CommonMark with raw HTML off: `<script>` and `<img onerror>` come out as text.
    # Images are off too (a remote image tells its host who opened the task), and
    # `validateLink` refuses javascript:, vbscript:, file: and data: links.
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.disable("image")
    md.enable("table")
    md.enable("strikethrough")
    return md


MD = _parser()


def lookup(values: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path (`outputs.build.files.0`), or MISSING."""
    parts = path.split(".")
    if parts[0] not in ROOTS or len(parts) < 2:
        return MISSING
    current: Any = values.get(parts[0], {})
    for part in parts[1:]:
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return MISSING
    return current


def as_text(value: Any) -> str:
    """A value as it reads in a sentence: text as it is, anything else as compact JSON."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= VALUE_MAX else text[: VALUE_MAX - 1] + "…"


def render(text: str, values: Mapping[str, Any]) -> str:
    """HTML of `text` as Markdown, each placeholder replaced by its value as plain text.

    Values never take part in the Markdown: each placeholder becomes a random word before
    parsing, and the word is swapped for the value in the parsed tokens, where the renderer
    escapes it. A value that makes a link's address must pass the same scheme check as a
    written link, or the link is dropped and its text kept.
    """
    nonce = secrets.token_hex(6)
    found: dict[str, str] = {}

    def stand_in(match: re.Match[str]) -> str:
        path = match.group(1)
        value = lookup(values, path)
        key = f"ffv{nonce}n{len(found)}x"
        found[key] = f"[missing: {path}]" if value is MISSING else as_text(value)
        return key

    source = PLACEHOLDER.sub(stand_in, text[:TEXT_MAX])
    words = re.compile(f"ffv{nonce}n[0-9]+x")
    tokens = MD.parse(source)
    for token in tokens:
        _fill(token, words, found)
    return str(MD.renderer.render(tokens, MD.options, {}))


def _fill(token: Token, words: re.Pattern[str], found: dict[str, str]) -> None:
    """Put the values in place of their words; drop links whose address is refused."""

    def swap(value: str) -> str:
        return words.sub(lambda m: found.get(m.group(0), m.group(0)), value) if found else value

    if token.content:
        token.content = swap(token.content)
    if token.type == "link_open":
        written = str(token.attrs.get("href", ""))
        href = swap(written)
        refused = not MD.validateLink(written)
        if href != written:
            # The address was parsed as the word: encode the value as the parser would have
            # (control characters too, which browsers strip inside a scheme), and take only
            # web and mail addresses from a run's values.
            href = MD.normalizeLink(href)
            refused = refused or not VALUE_LINK.match(href)
        token.attrs = {"href": href, "rel": "nofollow noopener noreferrer"}
        if refused:
            token.attrs["data-refused"] = "1"
    if token.children:
        kept: list[Token] = []
        dropped = 0
        for child in token.children:
            _fill(child, words, found)
            if child.type == "link_open" and "data-refused" in child.attrs:
                dropped += 1
                continue
            if child.type == "link_close" and dropped:
                dropped -= 1
                continue
            kept.append(child)
        token.children = kept
