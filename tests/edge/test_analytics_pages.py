"""The report pages in a real browser: the click map's badges and the funnel's chart, as people see them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.edge.test_analytics_api import campaign
from tests.rigs.api_helpers import running_api
from tests.rigs.cdp_pipe import Chromium, Tab, png_size_and_variety
from tests.rigs.edge_helpers import edge_env, wait_healthy
from tracker.domain.analytics.report_links import report_link

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_SERVE = ("from granian import Granian; from granian.constants import Interfaces; import sys; "
          "Granian('edge.app:create_app', factory=True, address='127.0.0.1', port=int(sys.argv[1]), "
          "interface=Interfaces.ASGI, workers=1, log_level='warning').serve()")  # fmt: skip


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
async def test_click_map_and_funnel_pages_in_headless_chromium(settings, pg, redis, free_port, tmp_path) -> None:
    async with running_api(settings) as api:
        message, _ = await campaign(api, pg, redis, settings)
    base = f"http://127.0.0.1:{free_port}"
    settings = settings.replace(public_url=base)
    env = edge_env(settings, TRACKER_PUBLIC_URL=base, PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"))
    os.makedirs(env["PROMETHEUS_MULTIPROC_DIR"])
    server = subprocess.Popen([sys.executable, "-c", _SERVE, str(free_port)], env=env, stdout=subprocess.DEVNULL,
                              start_new_session=True)  # fmt: skip
    browser = None
    try:
        await wait_healthy(base)
        browser = Chromium(CHROMIUM, str(tmp_path / "chromium"))
        tab = Tab(browser, 1000, 800, "en")
        tab.open(report_link(settings, message, "clickmap").url)
        badges = tab.value("[...document.querySelectorAll('.trk-badge')].map(b => [b.dataset.link, b.dataset.clicks,"
                           " b.textContent])")  # fmt: skip
        assert badges == [["0", "2", "2 · 66.7%"], ["1", "1", "1 · 33.3%"], ["2", "0", "0 · 0.0%"]]
        assert tab.value("document.querySelector('#trk-total').dataset.total") == "3"
        assert tab.value("document.querySelector('h1').textContent") == "Spring sale"
        (tmp_path / "clickmap.png").write_bytes(shot := tab.screenshot())
        width, height, variety = png_size_and_variety(shot)
        assert (width, height) == (1000, 800) and variety > 10, "the click map screenshot is blank"

        tab.open(report_link(settings, message).url)
        stages = tab.value("Object.fromEntries([...document.querySelectorAll('#funnel tr[data-stage]')]"
                           ".map(r => [r.dataset.stage, [r.dataset.total, r.dataset.uniques]]))")  # fmt: skip
        assert stages["opened"] == ["3", "2"] and stages["clicked"] == ["3", "2"] and stages["delivered"] == ["3", "3"]
        assert tab.value("document.querySelectorAll('#series svg polyline.series').length") == 2
        (tmp_path / "funnel.png").write_bytes(shot := tab.screenshot())
        assert png_size_and_variety(shot)[2] > 10, "the funnel screenshot is blank"

        tab.open(base + f"/reports/messages/{message}/clickmap?t=1.9999999999.forged")
        assert tab.value("document.querySelector('#refused').dataset.status") == "403"
        print(f"screenshots in {tmp_path}")
    finally:
        if browser is not None:
            browser.close()
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
