"""Instructions as Markdown with the run's values: placeholders, and every attack inert."""

from __future__ import annotations

import pytest

from pipelines import keyvalues, markdown

VALUES = {
    "inputs": {
        "version": "1.4.2",
        "evil": "<script>alert(1)</script> **bold** [x](javascript:alert(1))"
        ' <img src=x onerror="a()">',
        "link": "javascript:alert(1)",
        "split": "java\nscript:alert(1)",
        "site": "https://ci.example/builds/7?a=1&b=2",
        "nested": {"region": "eu", "hosts": ["a", "b"]},
        "count": 3,
    },
    "outputs": {"build": {"url": "https://ci.example/b/9", "files": ["app.tar", "app.sig"]}},
}


def render(text: str) -> str:
    return markdown.render(text, VALUES)


def test_placeholders_take_the_runs_values():
    html = render("## Release {{ inputs.version }}\n\nBuilt at {{outputs.build.url}}.")

    assert "<h2>Release 1.4.2</h2>" in html
    assert "Built at https://ci.example/b/9." in html


def test_paths_reach_into_objects_and_lists_and_other_values_read_as_json():
    html = render("{{ inputs.nested.region }} {{ outputs.build.files.1 }} {{ inputs.count }}")

    assert "<p>eu app.sig 3</p>" in html
    assert "&quot;hosts&quot;: [&quot;a&quot;, &quot;b&quot;]}" in render("{{ inputs.nested }}")


@pytest.mark.parametrize(
    "path", ["inputs.nope", "outputs.build.nope", "outputs.ghost.url", "inputs", "secrets.key"]
)
def test_a_missing_placeholder_is_shown_as_missing(path):
    html = render(f"Value: {{{{ {path} }}}}")

    assert f"<p>Value: [missing: {path}]</p>" in html


def test_raw_html_in_the_instructions_is_text():
    html = render('<script>alert(1)</script>\n\n<img src=x onerror="alert(1)">\n\nok')

    assert "<script" not in html
    assert "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html


@pytest.mark.parametrize(
    "link", ["javascript:alert(1)", "JaVaScRiPt:alert(1)", "data:text/html,<b>x</b>", "vbscript:x"]
)
def test_unsafe_link_schemes_are_refused(link):
    html = render(f"[click me]({link})")

    assert "<a" not in html
    assert "href" not in html


def test_safe_links_render_and_do_not_leak_the_page():
    html = render("[docs](https://docs.example/a) <https://auto.example>")

    assert '<a href="https://docs.example/a" rel="nofollow noopener noreferrer">docs</a>' in html
    assert 'href="https://auto.example"' in html


def test_images_are_not_loaded():
    assert "<img" not in render("![tracker](https://evil.example/pixel.png)")


def test_a_value_full_of_markdown_and_html_stays_text():
    html = render("Notes: {{ inputs.evil }}")

    assert "<script" not in html
    assert "<strong>" not in html
    assert "<a" not in html
    assert "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; **bold** [x](javascript:alert(1))" in html


def test_a_value_inside_code_stays_text():
    html = render("`{{ inputs.evil }}`")

    assert html.startswith("<p><code>&lt;script&gt;")


def test_a_value_as_a_link_address_must_be_a_web_address():
    assert '<a href="https://ci.example/b/9"' in render("[build]({{ outputs.build.url }})")
    assert "https://ci.example/builds/7?a=1&amp;b=2" in render("[ci]({{ inputs.site }})")
    for name in ("link", "split", "version"):
        html = render(f"[click]({{{{ inputs.{name} }}}})")
        assert "<a" not in html, name
        assert "<p>click</p>" in html


def test_a_value_cannot_make_a_placeholder_of_its_own():
    values = {"inputs": {"a": "{{ inputs.b }}", "b": "secret"}}

    assert "secret" not in markdown.render("{{ inputs.a }}", values)


def test_long_values_are_cut():
    values = {"inputs": {"long": "x" * 5000}}

    html = markdown.render("{{ inputs.long }}", values)

    assert len(html) < markdown.VALUE_MAX + 20
    assert html.endswith("…</p>\n")


# --- values as key/value rows -----------------------------------------------------------


def test_nested_objects_become_dotted_keys_and_lists_one_cell():
    rows = keyvalues.rows({"b": {"c": 1, "d": {"e": True}}, "a": ["x", "y"], "n": None})

    assert [(r.key, r.text, r.kind) for r in rows] == [
        ("a", "x, y", "list"),
        ("b.c", "1", "number"),
        ("b.d.e", "true", "bool"),
        ("n", "null", "null"),
    ]


def test_a_long_value_is_cut_with_the_whole_of_it_beside():
    rows = keyvalues.rows({"notes": "word " * 100, "items": [{"id": i} for i in range(40)]})

    notes, items = sorted(rows, key=lambda r: r.key, reverse=True)
    assert len(notes.text) == keyvalues.CELL_MAX
    assert notes.text.endswith("…")
    assert notes.full == "word " * 100
    assert items.full.startswith("[\n  {\n")


def test_a_value_that_is_no_object_is_one_row_without_a_key():
    assert [(r.key, r.text) for r in keyvalues.rows("done")] == [("", "done")]
