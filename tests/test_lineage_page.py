"""The lineage page (issue 15, item 5): ``/lineage/UID`` on a real ``bas serve``, in a real
headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven by selenium).

One server and one browser session for the module. A chain raw → two analyses → a merge, a
failure record on a parent, and a parameter that is a script (escaped, not run).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import httpx
import numpy as np
import pytest
from helpers import free_port, make_provenance, raw_run
from served import READ_KEY, WRITE_KEY, Server, running_server

from bluesky_analysis_store import AnalysisStore

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: Screenshots are kept with the test results, at the repository's root (not under $TMPDIR).
RESULTS = Path(__file__).resolve().parents[1] / "test-results"
WRONG_KEY = "Wrong0123456789abcdefWrong"
SCRIPT = "<script>document.title='owned'</script>"
SVG = "{http://www.w3.org/2000/svg}"


@dataclass
class Chain:
    raw: str
    left: str
    right: str
    merge: str
    failure: str


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("lineage-page") / "store"
    with running_server(directory, free_port(), backend="sqlite") as served:
        yield served


@pytest.fixture(scope="module")
def chain(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Chain:
    """raw → left, right → merge (with a hostile parameter), and a failed analysis of left."""
    data = [{"primary": {"x": np.arange(4.0)}}]
    source = tmp_path_factory.mktemp("inputs") / "scan_1.dat"
    source.write_bytes(b"counts 1 2 3\n")
    with AnalysisStore.open(
        server.uri, api_key=WRITE_KEY, root=server.directory / "files", raw="raw"
    ) as store:
        raw = raw_run(store.raw)

        def save(name: str, parents: list[Any], **parameters: Any) -> str:
            provenance = make_provenance(
                name=name, parents=parents, parameters=parameters, inputs=[source]
            )
            return str(store.save(data, {}, provenance=provenance))

        # parents as runs: an analysis parent is recorded with its lineage hash
        left = save("subtract_background", [store.raw[raw]], side="left")
        right = save("normalize", [store.raw[raw]], side="right")
        merge = save("merge", [store[left], store[right]], label=SCRIPT)
        failure = store.record_failure(
            make_provenance(name="fit_peak", parents=[store[left]], parameters={"model": "gauss"}),
            "fit did not converge <b>after 100 steps</b>",
        )
    return Chain(raw, left, right, merge, failure)


def _page(server: Server, uid: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(f"{server.uri}/lineage/{uid}", timeout=30, **kwargs)


def _read(key: str) -> dict[str, str]:
    return {"Authorization": f"Apikey {key}"}


def test_the_page_needs_a_key_and_the_read_only_key_can_view(server, chain):
    assert _page(server, chain.merge).status_code == 401
    for sent in (
        {"headers": _read(WRONG_KEY)},
        {"params": {"api_key": WRONG_KEY}},
        {"cookies": {"tiled_api_key": WRONG_KEY}},
    ):
        answer = _page(server, chain.merge, **sent)
        assert answer.status_code == 401, sent
        assert "set-cookie" not in answer.headers
    for key in (READ_KEY, WRITE_KEY):
        answer = _page(server, chain.merge, headers=_read(key))
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/html")
        assert f"Lineage of analysis run <code>{chain.merge}</code>" in answer.text
    # a key in the URL: tiled's cookie, and the page again without the key in its address
    answer = _page(server, chain.merge, params={"api_key": READ_KEY, "x": "1"})
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/lineage/{chain.merge}?x=1"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"tiled_api_key={READ_KEY};")
    assert "HttpOnly" in cookie
    assert "samesite=lax" in cookie.lower()
    # tiled's own pages keep a valid key in the same cookie (tiled's move_api_key), not a wrong one
    ui = httpx.get(f"{server.uri}/ui/", params={"api_key": READ_KEY})
    assert ui.status_code == 200
    assert ui.cookies["tiled_api_key"] == READ_KEY
    ui = httpx.get(f"{server.uri}/ui/", params={"api_key": WRONG_KEY})
    assert ui.status_code == 200
    assert "tiled_api_key" not in ui.cookies
    # the read-only key, as a cookie, still cannot write
    denied = httpx.post(
        f"{server.uri}/api/v1/metadata/analysis", cookies={"tiled_api_key": READ_KEY}, json={}
    )
    assert denied.status_code == 403
    # the write key as a cookie writes only with tiled's double-submit CSRF token
    unchecked = httpx.post(
        f"{server.uri}/api/v1/metadata/analysis", cookies={"tiled_api_key": WRITE_KEY}, json={}
    )
    assert unchecked.status_code == 403
    assert "csrf" in unchecked.text.lower()


def test_the_page_shows_provenance_and_failures_escaped(server, chain):
    text = _page(server, chain.merge, headers=_read(READ_KEY)).text
    # what users wrote is shown as text, never run: the script parameter is escaped
    assert SCRIPT not in text
    assert "&lt;script&gt;document.title=&#39;owned&#39;&lt;/script&gt;" in text
    for shown in ("subtract_background", "normalize", "merge", "1.0", "scan_1.dat"):
        assert shown in text
    sha256 = re.search(r"[0-9a-f]{64}", text.split('id="inputs"')[1])
    assert sha256 is not None
    # the failure recorded for a parent (left), its reason escaped
    failures = text.split('id="failures"')[1]
    assert chain.failure in failures
    assert "fit did not converge &lt;b&gt;after 100 steps&lt;/b&gt;" in failures
    # the failure record's own page: its status and reason
    failed = _page(server, chain.failure, headers=_read(READ_KEY)).text
    assert "<td>fail</td>" in failed
    assert "fit did not converge &lt;b&gt;" in failed
    # the raw run's page: the graph below it, no provenance
    raw = _page(server, chain.raw, headers=_read(READ_KEY))
    assert raw.status_code == 200
    assert "Lineage of raw run" in raw.text
    assert f'href="/api/v1/metadata/raw/{chain.raw}"' in raw.text


@pytest.mark.parametrize(
    "uid",
    [
        "00000000-0000-4000-8000-000000000000",  # well formed, unknown
        "not-a-uid",
        "..%2F..%2Fapi%2Fv1%2Fmetadata",  # a path, encoded
        "%2E%2E",
    ],
)
def test_an_unknown_uid_or_a_path_is_a_404_page(server, chain, uid):
    answer = _page(server, uid, headers=_read(READ_KEY))
    assert answer.status_code == 404
    if answer.headers["content-type"].startswith("text/html"):
        assert "No run" in answer.text


def test_a_partial_uid_redirects_to_the_full_one(server, chain):
    answer = _page(server, chain.merge[:8], headers=_read(READ_KEY))
    assert answer.status_code == 307
    assert answer.headers["location"] == f"/lineage/{chain.merge}"
    # the key in the URL first: to the page without it, then to the full uid
    answer = _page(server, chain.merge[:8], params={"api_key": READ_KEY})
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/lineage/{chain.merge[:8]}"
    assert _page(server, "fffff-", headers=_read(READ_KEY)).status_code == 404


def test_the_svg_links_each_node_to_its_page_and_data(server, chain):
    text = _page(server, chain.merge, headers=_read(READ_KEY)).text
    svg = ElementTree.fromstring(text[text.index("<svg") : text.index("</svg>") + 6])
    titles = {t.text for t in svg.iter(f"{SVG}title")}
    assert titles == {chain.raw, chain.left, chain.right, chain.merge}
    pages = {a.get("href") for a in svg.iter(f"{SVG}a") if a.get("class") == "node"}
    assert pages == {f"/lineage/{uid}" for uid in titles}
    data = {a.get("href") for a in svg.iter(f"{SVG}a") if a.get("class") == "data"}
    assert f"/ui/browse/analysis/{chain.left}/" in data
    assert f"/ui/browse/raw/{chain.raw}/" in data


def test_bas_show_prints_the_page_url(server, chain, monkeypatch, capsys):
    from bluesky_analysis_store.cli import main

    monkeypatch.setenv("BAS_API_KEY", READ_KEY)
    store = ["--store", server.uri, "--root", str(server.directory / "files")]
    assert main(["show", chain.merge, *store]) == 0
    assert f"page:      {server.uri}/lineage/{chain.merge}\n" in capsys.readouterr().out


# --- in a real browser ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One headless Chromium session for the module, with its console log kept.

    Debian's chromium and chromedriver, named explicitly (no Selenium Manager download). Absent:
    skipped, unless ``BAS_REQUIRE_BROWSER=1`` (CI), which makes it a failure."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        reason = f"no {' and '.join(missing)}: apt-get install chromium chromium-driver"
        if os.environ.get("BAS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"BAS_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tmp_path_factory.mktemp("chromium")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1100",
        f"--user-data-dir={profile / 'user-data'}",
        "--no-first-run",
        "--disable-background-networking",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # chromium keeps crash reports and dconf settings under $HOME's XDG folders: here instead
    xdg = {f"XDG_{name}_HOME": str(profile / name.lower()) for name in ("CONFIG", "CACHE")}
    service = Service(
        executable_path=str(CHROMEDRIVER),
        log_output=str(profile / "chromedriver.log"),
        env={**os.environ, **xdg},
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SE_OFFLINE", "true")  # never let selenium fetch a browser or a driver
        driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _console_errors(driver: Any) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def _status(driver: Any, url: str) -> int:
    """The HTTP status of ``url`` fetched by the page (same origin: with the page's cookie)."""
    script = "const done = arguments[1]; fetch(arguments[0]).then(r => done(r.status));"
    return int(driver.execute_async_script(script, url))


def test_in_a_browser(server, chain, browser):
    from selenium.webdriver.common.by import By

    driver = browser
    driver.delete_all_cookies()
    # no key, a wrong key: 401 (the page's own fetch tells the status)
    driver.get(f"{server.uri}/healthz")
    assert _status(driver, f"/lineage/{chain.merge}") == 401
    assert _status(driver, f"/lineage/{chain.merge}?api_key={WRONG_KEY}") == 401
    # the console log works: those 401s are in it (read, so that they are not the page's)
    assert any("401" in entry["message"] for entry in _console_errors(driver))

    # the read-only key opens the merge's page once; tiled's cookie carries it on
    driver.get(f"{server.uri}/lineage/{chain.merge}?api_key={READ_KEY}")
    assert driver.current_url == f"{server.uri}/lineage/{chain.merge}"  # the key left the URL
    assert driver.title == f"lineage of {chain.merge}"
    assert driver.execute_script("return document.title") != "owned"  # the script did not run
    cookie = driver.get_cookie("tiled_api_key")
    assert cookie is not None
    assert cookie["value"] == READ_KEY
    assert cookie["httpOnly"]

    svg = driver.find_element(By.CSS_SELECTOR, "#graph svg")
    titles = {t.get_attribute("textContent") for t in svg.find_elements(By.TAG_NAME, "title")}
    assert titles == {chain.raw, chain.left, chain.right, chain.merge}  # every ancestor
    assert svg.size["width"] > 500

    RESULTS.mkdir(exist_ok=True)
    screenshot = RESULTS / "lineage-page.png"
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(int(height) + 140, 4000))  # the whole page
    assert driver.save_screenshot(str(screenshot))
    driver.set_window_size(1400, 1100)
    assert screenshot.stat().st_size > 10_000

    # a node's link: the parent's page, and back
    node = svg.find_element(By.CSS_SELECTOR, f'a.node[href="/lineage/{chain.left}"]')
    node.click()
    assert driver.current_url == f"{server.uri}/lineage/{chain.left}"
    assert f"Lineage of analysis run {chain.left}" in driver.find_element(By.TAG_NAME, "h1").text
    driver.back()
    assert driver.current_url == f"{server.uri}/lineage/{chain.merge}"
    assert driver.find_element(By.ID, "parameters").text.count(SCRIPT) == 1  # shown as text
    assert chain.failure in driver.find_element(By.ID, "failures").text  # left's failure

    # the data links answer for the same viewer: tiled's web UI (followed), tiled's API
    data = driver.find_element(By.CSS_SELECTOR, f'a.data[href*="{chain.left}"]')
    ui = data.get_dom_attribute("href")
    assert ui == f"/ui/browse/analysis/{chain.left}/"
    assert _status(driver, ui) == 200
    assert _console_errors(driver) == []  # of the lineage pages, before tiled's UI runs
    data.click()
    assert driver.current_url == f"{server.uri}{ui}"
    driver.back()
    driver.get_log("browser")  # tiled's own UI is not under test here
    api = driver.find_element(By.ID, "data-api").get_dom_attribute("href")
    assert _status(driver, api) == 200
    driver.get(f"{server.uri}{api}")
    assert chain.merge in driver.find_element(By.TAG_NAME, "body").text

    # no console errors on the pages visited
    assert _console_errors(driver) == []

    # without the cookie, the page is refused again
    driver.delete_all_cookies()
    driver.get(f"{server.uri}/healthz")
    assert _status(driver, f"/lineage/{chain.merge}") == 401


def test_the_svg_escapes_what_it_draws_and_links():
    """Labels come from user metadata; links from the page (quoted as attributes)."""
    from bluesky_analysis_store.store._lineage_graph import LineageGraph, LineageNode, NodeLinks

    graph = LineageGraph(focus="b")
    graph.nodes["a"] = LineageNode("a", "raw", SCRIPT)
    graph.nodes["b"] = LineageNode("b", "analysis", '"><svg onload=alert(1)>')
    graph.edges.add(("a", "b"))
    svg = ElementTree.fromstring(graph.as_svg(lambda uid: NodeLinks(f'/p/{uid}?"x"', None)))
    assert [e.tag for e in svg.iter()].count(f"{SVG}svg") == 1  # nothing injected
    assert not [e for e in svg.iter() if e.tag.endswith("script") or e.get("onload")]
    texts = [t.text for t in svg.iter(f"{SVG}text")]
    assert SCRIPT[:32] in texts
    assert {a.get("href") for a in svg.iter(f"{SVG}a")} == {'/p/a?"x"', '/p/b?"x"'}
    assert "<a" not in graph.as_svg()  # without links, nothing is a link
