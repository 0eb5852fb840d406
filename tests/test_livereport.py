"""fmlab sweep --report-every: the report rewritten while a tiny sweep runs, checked in headless Chromium."""

from __future__ import annotations

import re
import time

import pytest
from conftest import start_sweep


def _reloaded(b, timeout_s: float) -> bool:
    """True once the page has reloaded itself (the mark set on it is gone) within timeout_s."""
    b.js("window.__fmlab_mark = 1")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.3)
        try:
            if b.js("document.readyState === 'complete' && window.__fmlab_mark === undefined"):
                return True
        except RuntimeError:  # evaluated while the page was navigating
            pass
    return False


def test_live_report_reloads_while_running_and_the_final_page_does_not(tmp_path):
    pytest.importorskip("websocket", reason="pip install websocket-client (the dev extra) for the browser check")
    from browser import CHROMIUM, Browser

    if CHROMIUM is None:
        pytest.skip("chromium not installed: apt-get install -y chromium")
    sweep = start_sweep(tmp_path, "--report-every", "1", hold_s=1.5)
    page = tmp_path / "reports" / "tiny-t" / "index.html"
    try:
        deadline = time.monotonic() + 120
        while not page.exists() and time.monotonic() < deadline and sweep.poll() is None:
            time.sleep(0.2)
        assert page.exists(), "no live report written"
        with Browser() as b:
            b.open(page)
            assert b.js("document.querySelector('meta[http-equiv=refresh]').content") == "2"
            assert "Live: rewritten every 1 s while the sweep runs" in b.js("document.getElementById('live').innerText")
            assert "confusion.png" not in b.js("document.documentElement.outerHTML")  # no test-set pass yet
            assert _reloaded(b, 20), "the live page did not reload itself"
            assert b.problems() == []
            out, errs = sweep.communicate(timeout=300)
            assert sweep.returncode == 0, errs
            b.open(page)
            assert b.js("document.querySelector('meta[http-equiv=refresh]')") is None
            assert b.js("document.getElementById('live')") is None
            imgs = b.js("[...document.images].map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
            assert "confusion.png" in [s for s, _, _ in imgs] and all(ok and w > 0 for _, ok, w in imgs), imgs
            assert "4 of 4 planned trials complete" in b.js("document.body.innerText")
            assert not _reloaded(b, 4), "the finished study's page reloaded"
            assert b.problems() == []
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.communicate()
    m = re.search(r"live report: (\d+) rewrite\(s\), ([\d.]+)s wall, ([\d.]+)s CPU", errs)
    assert m and int(m.group(1)) >= 2, errs
    assert not [p.name for p in (tmp_path / "reports").iterdir() if p.name.startswith(".")]  # no temp folder left
