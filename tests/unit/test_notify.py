"""Chat notifications show text as text."""

from __future__ import annotations

from wansweep.results.notify import chat_escape


def test_chat_markup_is_escaped():
    assert chat_escape("<!channel> <https://evil|click> & co") == (
        "&lt;!channel&gt; &lt;https://evil|click&gt; &amp; co"
    )
