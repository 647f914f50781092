"""News-article HTML pages with menus, related links and footers around the body."""
from __future__ import annotations

import zlib


MENU = ["Home", "News", "World", "Business", "Culture", "Sport", "Travel", "Science", "Opinion", "Contact"]
_FOOTER = ["About us", "Careers", "Advertise", "Newsletter", "Help", "Archive", "Sitemap"]


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def article_html(site: str, title: str, byline: str, paragraphs: list[str], related: list[str],
                  lang: str = "en", head_extra: str = '<meta charset="utf-8">', menu_repeat: int = 1,
                  footer_repeat: int = 1) -> str:
    nav = "".join(f'<li><a href="/{m.lower()}/{i}">{m}</a></li>' for i in range(menu_repeat) for m in MENU)
    foot = "".join(f'<li><a href="/{f.lower().replace(" ", "-")}/{i}">{f}</a></li>'
                   for i in range(footer_repeat) for f in _FOOTER)
    rel = "".join(f'<li><a href="/story/{zlib.crc32(t.encode()) % 100000}">{_esc(t)}</a></li>' for t in related)
    body = "".join(f"<p>{_esc(p)}</p>\n" for p in paragraphs)
    return (
        f'<!DOCTYPE html>\n<html lang="{lang}">\n<head>{head_extra}<title>{_esc(title)} | {site}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"></head>\n<body>\n'
        f'<div class="cookie-banner">This site uses cookies to improve your experience. '
        f'<a href="/privacy">Learn more</a> <button>Accept</button></div>\n'
        f'<header><a class="logo" href="/">{site}</a><nav><ul>{nav}</ul></nav></header>\n'
        f'<main><article><h1>{_esc(title)}</h1><p class="byline">{_esc(byline)}</p>\n{body}</article>\n'
        f'<aside><h3>Related</h3><ul>{rel}</ul></aside></main>\n'
        f'<footer><ul>{foot}</ul><p>&copy; 2024 {site}. All rights reserved.</p></footer>\n</body>\n</html>\n'
    )
