"""Reading files: Markdown, HTML, text and PDF into titled, sectioned blocks,
and clear refusals for what cannot be read."""

from __future__ import annotations

import pytest

from inference.rag.extract import DocumentError, extract
from tests.inference.rag.pdfs import encrypted_pdf, scanned_pdf, text_pdf

GUIDE = b"""# Arena guide

Welcome to the arena.

## Install

Run the installer.

```sh
# this is a shell comment, not a heading
make install
```

### Offline

No network needed.

## Voting

Pick the better answer.
"""


def test_markdown_headings_become_the_section_path() -> None:
    doc = extract("guide.md", GUIDE)
    assert doc.title == "Arena guide"
    assert doc.kind == "markdown"
    assert [b.headings for b in doc.blocks] == [
        (),
        ("Install",),
        ("Install", "Offline"),
        ("Voting",),
    ]


def test_a_hash_inside_a_code_fence_is_not_a_heading() -> None:
    install = extract("guide.md", GUIDE).blocks[1]
    assert "# this is a shell comment, not a heading" in install.text
    assert "make install" in install.text


def test_html_keeps_headings_and_drops_scripts_styles_and_navigation() -> None:
    page = b"""<html><head><title>Pricing FAQ</title><style>p{color:red}</style></head>
    <body><nav>Home | About</nav><h1>Pricing FAQ</h1><p>Plans are monthly.</p>
    <h2>Refunds</h2><p>Refunds take five days.</p><script>alert("x")</script></body></html>"""
    doc = extract("faq.html", page)
    assert doc.title == "Pricing FAQ"
    text = " ".join(b.text for b in doc.blocks)
    assert "Refunds take five days." in text
    assert "alert" not in text
    assert "color" not in text
    assert "Home | About" not in text
    assert [b.headings for b in doc.blocks] == [(), ("Refunds",)]


def test_html_without_a_title_tag_is_titled_by_its_first_h1() -> None:
    doc = extract("page.htm", b"<h1>Shipping</h1><p>We ship worldwide.</p>")
    assert doc.title == "Shipping"


def test_utf8_text_with_a_byte_order_mark_reads_cleanly() -> None:
    doc = extract("notes.txt", "\ufeffCaf\u00e9 notes\n\nThe caf\u00e9 opens at nine.".encode())
    assert doc.title == "Caf\u00e9 notes"
    assert not doc.blocks[0].text.startswith("\ufeff")


def test_text_that_is_not_utf8_is_refused_by_name() -> None:
    with pytest.raises(DocumentError, match=r"latin\.txt: not UTF-8 text"):
        extract("latin.txt", "Caf\u00e9 cr\u00e8me br\u00fbl\u00e9e".encode("latin-1"))


@pytest.mark.parametrize("data", [b"", b"   \n\t \n"])
def test_an_empty_or_blank_file_is_an_empty_document(data: bytes) -> None:
    with pytest.raises(DocumentError, match="empty document"):
        extract("blank.md", data)


def test_a_pdf_text_layer_is_read_page_by_page() -> None:
    doc = extract("manual.pdf", text_pdf("Hello from page one.", title="Manual"))
    assert doc.title == "Manual"
    assert doc.kind == "pdf"
    assert doc.blocks[0].headings == ("Page 1",)
    assert "Hello from page one." in doc.blocks[0].text


def test_a_pdf_without_a_text_layer_is_refused() -> None:
    with pytest.raises(DocumentError, match=r"scan\.pdf: the PDF has no text layer \(scanned\?\)"):
        extract("scan.pdf", scanned_pdf())


def test_an_encrypted_pdf_is_refused() -> None:
    with pytest.raises(DocumentError, match="encrypted"):
        extract("locked.pdf", encrypted_pdf())


def test_a_corrupt_pdf_is_refused() -> None:
    with pytest.raises(DocumentError, match="not a readable PDF"):
        extract("broken.pdf", b"%PDF-1.4\nthis is not really a pdf")


def test_an_unknown_extension_is_refused_with_the_supported_ones() -> None:
    with pytest.raises(DocumentError, match=r"report\.docx: unsupported.*\.md.*\.pdf.*\.txt"):
        extract("report.docx", b"PK...")


def test_a_file_over_the_size_limit_is_refused_before_parsing() -> None:
    with pytest.raises(DocumentError, match="too large"):
        extract("big.txt", b"x" * 2000, max_bytes=1000)
