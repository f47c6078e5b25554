r"""HTML copies of executed notebooks that read completely offline: maths as MathML, no script from the network.

nbconvert's "lab" template leaves TeX in the page for MathJax, which it loads from a CDN (as it does require.js;
plotly's figures add their own MathJax loader), so an HTML copy opened without a network shows `$P(i, j \mid
\tilde x)$` raw. Here every `$...$`, `$$...$$` and `\begin{env}...\end{env}` that nbconvert's markdown parser
finds is converted to MathML when the copy is written (`latex2mathml`, pure Python), and every `<script src>`
pointing off the machine is dropped. Why MathML at export time rather than a bundled KaTeX or MathJax:

- no network, and no JavaScript at all: Chromium (since 109), Firefox and Safari render MathML Core natively, so
  the maths shows even with scripts off, stays selectable text, and screen readers read it;
- size: MathML is a few hundred bytes a formula and nothing else, where inlining a renderer (KaTeX's script,
  CSS and fonts, or MathJax) would add over half a megabyte to every copy;
- fidelity: latex2mathml covers what the notebooks write (fractions, sums with limits, accents, `\big`
  delimiters, `\text`, `\operatorname`, `\mathrm`, `\mathcal`); where its output and MathML Core's rendering
  part from TeX's (script letters, accents, limits, operator names and spacing) a small patch below brings it
  back, and a command it does not know is an error rather than raw text. The CSS asks for a font with an
  OpenType MATH table, without which big operators and delimiters stay at text size. tests/test_offline_html.py
  renders the notebooks' real equations in headless Chromium with the network off.

nbconvert's mistune parser already separates maths from code spans, fenced code and escaped `\$`, so only what
it hands to the math renderer is converted; code cells and outputs are never touched.
"""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import urlsplit
from xml.etree.ElementTree import Element, tostring

from bs4 import BeautifulSoup
from jinja2 import DictLoader, pass_context
from nbconvert import HTMLExporter
from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath
from nbformat import NotebookNode

from ..core.errors import LabkitError

__all__ = ["tex_to_mathml", "MathMLRenderer", "OfflineHTMLExporter", "drop_remote_scripts", "is_remote",
           "notebook_to_html"]

# The lab template without its three loaders from a CDN (require.js, MathJax, mermaid), served to nbconvert's Jinja
# environment from memory. Its CSS names the math fonts of common systems first (Windows, macOS, TeX, Debian):
# Chromium's generic `math` family can land on a font without an OpenType MATH table, which leaves display sums
# and \big delimiters at text size.
# Figures without a fixed width fill their container when drawn; this redraws them at the page's width again when
# the window changes and before printing (an A4 page is 794 px wide), so a printed copy clips none of them.
FIT_FIGURES_JS = """(function () {
  function fit() {
    if (!window.Plotly) { return; }
    document.querySelectorAll('.js-plotly-plot').forEach(function (gd) { window.Plotly.Plots.resize(gd); });
  }
  window.addEventListener('resize', fit);
  window.addEventListener('beforeprint', fit);
  if (window.matchMedia) { window.matchMedia('print').addEventListener('change', fit); }
})();"""
_TEMPLATE_NAME = "labkit_offline.html.j2"
_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{% block extra_css %}<style type="text/css">
math { font-family: "Cambria Math", "STIX Two Math", "Latin Modern Math", "DejaVu Math TeX Gyre", math; }
math[display="block"] { margin: 0.8em 0; }
</style>
<script type="text/javascript">""" + FIT_FIGURES_JS + """</script>{% endblock %}
"""
_COMMAND = re.compile(r"\\[A-Za-z]+")  # what latex2mathml leaves as text when it does not know a command
_LIMIT_TAGS = {"msubsup": "munderover", "msub": "munder", "msup": "mover"}
_LARGE_OPS = set("∑∏∐⋃⋂⨁⨂⨀⋁⋀")  # not ∫: TeX sets an integral's limits beside it
# MathML Core ignores mathvariant="script" (latex2mathml's \mathcal); Unicode has the letters themselves.
_SCRIPT_HOLES = {"B": "ℬ", "E": "ℰ", "F": "ℱ", "H": "ℋ", "I": "ℐ", "L": "ℒ", "M": "ℳ", "R": "ℛ", "e": "ℯ", "g": "ℊ",
                 "o": "ℴ"}


def tex_to_mathml(tex: str, display: bool = False) -> str:
    """One TeX formula (without its `$` delimiters) as a `<math>` element; a LabkitError names TeX it cannot read."""
    from latex2mathml.converter import convert_to_element

    try:
        math = convert_to_element(tex.strip(), display="block" if display else "inline")
    except Exception as e:  # latex2mathml raises a zoo of its own types (and IndexError/StopIteration) on bad TeX
        raise LabkitError(f"cannot convert the TeX {tex.strip()[:80]!r} to MathML: {type(e).__name__}: {e}") from None
    del math.attrib["xmlns"]  # HTML puts <math> in MathML's namespace; an xmlns makes nbconvert's headings "ns0:math"
    for element in math.iter():  # latex2mathml writes symbols as "&#x02211;" text; tostring escapes what needs it
        element.text = html.unescape(element.text) if element.text else element.text
        if element.tag in ("mi", "mo") and _COMMAND.fullmatch(element.text or ""):  # it passes unknown ones through
            raise LabkitError(f"cannot convert the TeX {tex.strip()[:80]!r} to MathML: unknown command {element.text}")
    for element in list(math.iter()):
        for patch in _PATCHES:
            patch(element)
    return tostring(math, encoding="unicode")


# ------------------------------------------------- where latex2mathml's output and MathML Core disagree with TeX
def _script_letters(element: Element) -> None:
    r"""\mathcal L: MathML Core ignores mathvariant="script", so write Unicode's script letter itself."""
    if element.tag == "mi" and element.get("mathvariant") == "script" and element.text and len(element.text) == 1:
        element.text = _script_letter(element.text)
        del element.attrib["mathvariant"]


def _script_letter(letter: str) -> str:
    """`L` -> `ℒ`: Unicode's Mathematical Script block, with the holes it leaves for older Letterlike Symbols."""
    if letter in _SCRIPT_HOLES:
        return _SCRIPT_HOLES[letter]
    if "A" <= letter <= "Z":
        return chr(0x1D49C + ord(letter) - ord("A"))
    if "a" <= letter <= "z":
        return chr(0x1D4B6 + ord(letter) - ord("a"))
    return letter


def _accents(element: Element) -> None:
    r"""\tilde x, \bar x: an operator over a base is an accent hugging the letter, not a limit floating above it."""
    if element.tag == "mover" and len(element) == 2 and element[1].tag == "mo" and "accent" not in element.attrib:
        element.set("accent", "true")


def _limits(element: Element) -> None:
    r"""\sum_{k=1}^{N}: scripts of a large operator are limits, set under and over it in display maths (MathML
    Core's movablelimits puts them back beside it inline, as TeX does)."""
    if element.tag in _LIMIT_TAGS and len(element) and element[0].tag == "mo" and element[0].text in _LARGE_OPS:
        element.tag = _LIMIT_TAGS[element.tag]


def _operator_names(element: Element) -> None:
    r"""\operatorname{softmax}: a named function is an upright identifier like exp, not an operator with wide
    spacing on both sides."""
    if (element.tag == "mo" and element.text and len(element.text) > 1 and element.text.isalpha()
            and "movablelimits" not in element.attrib):
        element.tag = "mi"
        element.attrib.pop("stretchy", None)


def _ordinary_operators(element: Element) -> None:
    """j{=}1 and s/T: TeX sets a braced operator, and a slash, as an ordinary symbol without space around it."""
    braced = element.tag == "mrow" and len(element) == 1 and element[0].tag == "mo" and not element.text
    target = element[0] if braced else element if element.tag == "mo" and element.text == "/" else None
    if target is not None:
        target.set("lspace", "0")
        target.set("rspace", "0")


_PATCHES = (_script_letters, _accents, _limits, _operator_names, _ordinary_operators)


class MathMLRenderer(IPythonRenderer):
    """nbconvert's markdown renderer, writing MathML where it would leave TeX for MathJax."""

    def block_math(self, body: str) -> str:
        return tex_to_mathml(body, display=True)

    def inline_math(self, body: str) -> str:
        return tex_to_mathml(body)

    def latex_environment(self, name: str, body: str) -> str:
        return tex_to_mathml(f"\\begin{{{name}}}{body}\\end{{{name}}}", display=True)


class OfflineHTMLExporter(HTMLExporter):
    """The "lab" HTML exporter with MathML maths and without any script fetched from the network."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(template_name="lab", template_file=_TEMPLATE_NAME,
                         extra_loaders=[DictLoader({_TEMPLATE_NAME: _TEMPLATE})], **kw)

    @pass_context
    def markdown2html(self, context: Any, source: str) -> str:
        """HTMLExporter.markdown2html with MathMLRenderer in place of IPythonRenderer (nbconvert offers no hook)."""
        cell = context.get("cell", {})
        renderer = MathMLRenderer(escape=False, attachments=cell.get("attachments", {}),
                                  embed_images=self.embed_images,
                                  path=context.get("resources", {}).get("metadata", {}).get("path", ""),
                                  anchor_link_text=self.anchor_link_text,
                                  exclude_anchor_links=self.exclude_anchor_links, **self.lexer_options)
        return MarkdownWithMath(renderer=renderer).render(source)


def drop_remote_scripts(page: str) -> str:
    """`page` without `<script src>` tags that load from another machine (plotly adds a MathJax one per figure)."""
    soup = BeautifulSoup(page, features="html.parser")
    remote = [s for s in soup.find_all("script", src=True) if is_remote(s["src"])]
    if not remote:
        return page
    for script in remote:
        script.decompose()
    return str(soup)


def is_remote(url: str) -> bool:
    """Does `url` name another machine ("https://cdn/x.js", "//cdn/x.js"), not a file, data: or relative path?"""
    parts = urlsplit(url.strip())
    return bool(parts.netloc) and parts.scheme.lower() != "file"


def notebook_to_html(nb: NotebookNode) -> str:
    """A whole HTML page for `nb` that needs no network: MathML maths, plotly.js embedded by the figures."""
    body, _ = OfflineHTMLExporter().from_notebook_node(nb)
    return drop_remote_scripts(body)
