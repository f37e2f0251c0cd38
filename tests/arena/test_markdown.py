from arena.markdown import render_markdown


def test_it_renders_markdown_with_code_blocks() -> None:
    html = render_markdown("# Title\n\n**bold** and `x`\n\n```python\nprint(1 < 2)\n```\n")
    assert "<h1>Title</h1>" in html
    assert "<strong>bold</strong>" in html
    assert '<code class="language-python">print(1 &lt; 2)' in html


def test_raw_html_from_a_model_is_escaped() -> None:
    html = render_markdown('<script>alert(1)</script> <img src=x onerror="alert(2)">')
    assert "<script" not in html
    assert "<img" not in html
    assert "&lt;script&gt;" in html


def test_dangerous_links_lose_their_href() -> None:
    html = render_markdown("[a](javascript:alert(1)) [b](https://example.org) ![c](data:x)")
    # Left as plain text, never as a link or an image.
    assert 'href="javascript' not in html
    assert "<img" not in html
    assert 'href="https://example.org"' in html
    assert 'rel="nofollow noopener noreferrer"' in html
