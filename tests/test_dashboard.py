"""The dashboard in a real browser: Debian's headless Chromium, driven by Selenium, against a
real ``wfsched serve``. Sign-in, every page, the actions (checked in the store through the CLI),
no console errors, no request to any host but the daemon, keyboard navigation, contrast.

Screenshots of each page are written to docs/screenshots/ (the README shows them).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import backend_missing
from tests.daemon_proc import Daemon, wait_for

TOKEN = "dashboard-test-token-0123456789"
ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "docs" / "screenshots"
CSS = ROOT / "wfsched" / "web" / "ui" / "static" / "ui.css"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"

SPEC = """id = "{id}"
name = "{name}"
[[triggers]]
type = "cron"
id = "schedule"
cron = "{cron}"
[[triggers]]
type = "manual"
id = "go"
"""
FLEET = [
    ("nightly-report", "Nightly report", "0 9 * * *"),
    ("billing-sync", "Billing sync", "*/15 * * * *"),
    ("spread-out", "Hashed: fires at its own minute", "H 9 * * *"),
    ("escaping", "<b>not bold</b> & co", "30 6 * * 1-5"),
    *[(f"team-{i}-digest", f"Team {i} digest", "0 9 * * *") for i in range(6)],
]

pytestmark = pytest.mark.slow


def _deploy(d: Daemon, tmp: Path) -> None:
    paths = []
    for workflow_id, name, cron in FLEET:
        path = tmp / f"{workflow_id}.toml"
        path.write_text(SPEC.format(id=workflow_id, name=name.replace('"', '\\"'), cron=cron))
        paths.append(str(path))
    d.cli("deploy", *paths)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("dashboard")
    with Daemon(tmp / "w", env={"WFSCHED_API_TOKEN": TOKEN}) as d:
        _deploy(d, tmp)
        # Fire density shows what the daemon's timer holds: wait until every cron is armed.
        wait_for(
            lambda: (
                d.get(
                    "/api/v1/triggers/health", headers={"Authorization": f"Bearer {TOKEN}"}
                ).json()["timers"]
                == len(FLEET)
            ),
            message="every cron trigger armed",
        )
        yield d


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        backend_missing("chromium and chromium-driver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        backend_missing("selenium")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000"):
        options.add_argument(arg)
    # No background traffic of the browser's own (update checks, field trials) in the log.
    options.add_argument("--disable-background-networking")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def visit(browser: Any, daemon: Daemon, path: str) -> None:
    browser.get(daemon.url + path)
    wait_for(
        lambda: browser.execute_script("return document.readyState") == "complete",
        message=f"{path} loaded",
    )


def shoot(browser: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    # The window includes the (headless) browser frame: leave room so the page fits whole.
    browser.set_window_size(1280, max(700, min(int(height) + 200, 2600)))
    browser.save_screenshot(str(SHOTS / f"{name}.png"))
    browser.set_window_size(1280, 1000)


def click(browser: Any, text: str) -> None:
    from selenium.webdriver.common.by import By

    [button] = [
        e
        for e in browser.find_elements(By.CSS_SELECTOR, "button, a")
        if e.text.strip() == text and e.is_displayed()
    ]
    button.click()


def sign_in(browser: Any, daemon: Daemon) -> None:
    from selenium.webdriver.common.by import By

    visit(browser, daemon, "/ui/signin")
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    click(browser, "Sign in")
    wait_for(lambda: browser.title.startswith("Fleet"), message="the fleet page")


def text_of(browser: Any) -> str:
    from selenium.webdriver.common.by import By

    return str(browser.find_element(By.TAG_NAME, "body").text)


# -- sign-in ---------------------------------------------------------------------------------
def test_sign_in_sets_an_httponly_strict_cookie_without_the_token(
    browser: Any, daemon: Daemon
) -> None:
    from selenium.webdriver.common.by import By

    browser.delete_all_cookies()
    visit(browser, daemon, "/ui/")
    assert browser.current_url == daemon.url + "/ui/signin"  # redirected: not signed in
    shoot(browser, "signin")
    browser.find_element(By.ID, "token").send_keys("wrong")
    click(browser, "Sign in")
    wait_for(lambda: "not server.api_token" in text_of(browser), message="the refusal")
    assert browser.get_cookies() == []
    sign_in(browser, daemon)
    [cookie] = browser.get_cookies()
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert TOKEN not in cookie["value"]
    # Signing out ends the session in this browser.
    click(browser, "Sign out")
    wait_for(lambda: browser.current_url.endswith("/ui/signin"), message="the sign-in form")
    visit(browser, daemon, "/ui/density")
    assert browser.current_url.endswith("/ui/signin")


# -- the pages -------------------------------------------------------------------------------
def test_the_fleet_is_searchable_and_escapes_names(browser: Any, daemon: Daemon) -> None:
    from selenium.webdriver.common.by import By

    sign_in(browser, daemon)
    page = text_of(browser)
    assert f"{len(FLEET)} workflows" in page
    assert "<b>not bold</b> & co" in page  # shown as text, never as markup
    assert browser.find_elements(By.CSS_SELECTOR, "main b") == []
    assert re.search(r"nightly-report\s+Nightly report\s+active\s+healthy\s+\d{4}-\d\d-\d\d", page)
    shoot(browser, "fleet")
    search = browser.find_element(By.ID, "q")
    search.send_keys("TEAM")
    click(browser, "Search")
    wait_for(lambda: "6 workflows matching" in text_of(browser), message="search results")
    rows = browser.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert len(rows) == 6


def test_the_density_page_shows_peaks_and_h_rewrites(browser: Any, daemon: Daemon) -> None:
    from selenium.webdriver.common.by import By

    sign_in(browser, daemon)
    click(browser, "Fire density")
    wait_for(lambda: browser.title.startswith("Fire density"), message="the density page")
    page = text_of(browser)
    bars = browser.find_elements(By.CSS_SELECTOR, "svg.chart rect.bar")
    assert len(bars) >= 96  # the quarter hours, the 09:00 spike, the hashed minute
    assert browser.find_elements(By.CSS_SELECTOR, "svg.chart rect.bar.peak")
    first = browser.find_elements(By.CSS_SELECTOR, "tbody tr")[0].text
    # 09:00 UTC: seven "0 9 * * *" triggers and the quarter-hour one.
    assert re.match(r"\d{4}-\d\d-\d\d 09:00 (8|9) 0 9 \* \* \* 7 H 9 \* \* \*", first), first
    assert "H/15 * * * *" in page
    shoot(browser, "density")
    cli = daemon.cli_json("density")
    assert cli["peaks"][0]["fires"] == int(first.split()[2])


def test_pause_resume_and_a_confirmed_manual_fire(browser: Any, daemon: Daemon) -> None:
    sign_in(browser, daemon)
    click(browser, "nightly-report")
    wait_for(lambda: browser.title.startswith("nightly-report"), message="the workflow page")
    page = text_of(browser)
    assert "Next 10 fires" in page and "0 9 * * *" in page
    assert len(re.findall(r"\d{4}-\d\d-\d\d 09:00", page)) >= 10
    assert "Why it did or didn't fire" in page and "Daemon: running" in page

    click(browser, "Pause")
    wait_for(lambda: "Done: paused" in text_of(browser), message="paused")
    assert daemon.cli_json("status", "nightly-report")["state"] == "paused"
    click(browser, "Resume")
    wait_for(lambda: "Done: resumed" in text_of(browser), message="resumed")
    assert daemon.cli_json("status", "nightly-report")["state"] == "active"

    click(browser, "Trigger…")
    wait_for(lambda: browser.title.startswith("Trigger"), message="the confirmation step")
    assert daemon.cli_json("history", "nightly-report") == []  # nothing fires before it
    shoot(browser, "confirm")
    click(browser, "Yes, trigger it")
    wait_for(lambda: "Done: fired" in text_of(browser), message="fired")
    [event] = daemon.cli_json("history", "nightly-report")
    assert event["trigger_id"] == "go"
    assert event["payload"]["user"].startswith("ui-token@")  # who, as the session proves it
    assert event["execution_id"] in text_of(browser)
    # The explain timeline tells the same story as `wfsched explain`: the manual fire, fired.
    explained = daemon.cli_json("explain", "nightly-report")
    [fired] = [
        o for o in explained["occurrences"] if o.get("execution_id") == event["execution_id"]
    ]
    assert fired["outcome"] == "fired"
    from selenium.webdriver.common.by import By

    rows = browser.find_elements(By.CSS_SELECTOR, "#explain tbody tr")
    assert any(event["execution_id"] in r.text and "fired" in r.text for r in rows)
    shoot(browser, "workflow")


# -- what the browser saw ----------------------------------------------------------------------
def test_no_console_errors_and_no_request_beyond_the_daemon(browser: Any, daemon: Daemon) -> None:
    sign_in(browser, daemon)
    browser.get_log("browser")
    browser.get_log("performance")
    for path in ("/ui/", "/ui/density", "/ui/workflows/nightly-report", "/ui/?q=zzz"):
        visit(browser, daemon, path)
        assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == [], path
    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    assert urls
    assert [u for u in urls if not u.startswith(daemon.url + "/")] == []
    # And the policy the browser enforces says the same.
    csp = daemon.get("/ui/signin").headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'none'" in csp


def test_tab_reaches_every_control_with_a_visible_focus(browser: Any, daemon: Daemon) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    sign_in(browser, daemon)
    for path in ("/ui/", "/ui/workflows/nightly-report", "/ui/density"):
        visit(browser, daemon, path)
        count = browser.execute_script(
            "const c = [...document.querySelectorAll("
            "'a[href], button, input:not([type=hidden]), select, textarea')];"
            "c.forEach((e, i) => e.dataset.tab = i); return c.length;"
        )
        reached: set[int] = set()
        for _ in range(count + 1):
            ActionChains(browser).send_keys(Keys.TAB).perform()
            index, outline = browser.execute_script(
                "const e = document.activeElement, s = getComputedStyle(e);"
                "return [e.dataset.tab, s.outlineStyle + ' ' + s.outlineWidth];"
            )
            if index is not None:
                reached.add(int(index))
                style, width = outline.split()
                assert style != "none" and float(width.removesuffix("px")) >= 2, (path, index)
        assert reached == set(range(count)), path


def _luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_text_colours_meet_wcag_aa_contrast() -> None:
    colours = dict(re.findall(r"--([\w-]+):\s*(#[0-9a-fA-F]{6})", CSS.read_text()))
    for fg, bg in [
        ("fg", "bg"),
        ("muted", "bg"),
        ("link", "bg"),
        ("head-fg", "head-bg"),
        ("ok", "bg"),
        ("warn", "bg"),
        ("bad", "bg"),
        ("bg", "link"),  # the primary button
    ]:
        assert contrast(colours[fg], colours[bg]) >= 4.5, (fg, bg)
    assert contrast(colours["focus"], colours["bg"]) >= 3  # a non-text indicator: 3:1


# -- access without a browser ------------------------------------------------------------------
@pytest.fixture
def client(daemon: Daemon) -> Iterator[httpx.Client]:
    """A signed-in HTTP client."""
    with httpx.Client(base_url=daemon.url, timeout=10) as client:
        answer = client.post("/ui/signin", data={"token": TOKEN})
        assert answer.status_code == 303
        yield client


def test_posts_without_the_sessions_csrf_token_change_nothing(
    daemon: Daemon, client: httpx.Client
) -> None:
    page = client.get("/ui/workflows/billing-sync").text
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert csrf is not None
    refused = client.post("/ui/workflows/billing-sync/pause", data={"csrf": "0" * 32})
    assert refused.status_code == 403 and "CSRF" in refused.text
    form = {"content-type": "application/x-www-form-urlencoded"}
    no_field = client.post("/ui/workflows/billing-sync/pause", content=b"", headers=form)
    assert no_field.status_code == 403
    assert client.post("/ui/workflows/billing-sync/pause").status_code == 415  # not a form
    assert daemon.cli_json("status", "billing-sync")["state"] == "active"
    # A GET never changes state; the confirmation step is a page, not a fire.
    assert client.get("/ui/workflows/billing-sync/trigger").status_code == 200
    unconfirmed = client.post("/ui/workflows/billing-sync/trigger", data={"csrf": csrf[1]})
    assert unconfirmed.status_code == 400
    assert daemon.cli_json("history", "billing-sync") == []
    # A forged cookie is no session.
    forged = httpx.get(
        daemon.url + "/ui/", cookies={"wfsched_ui": "1.abc.def"}, follow_redirects=False
    )
    assert forged.status_code == 303 and forged.headers["location"] == "/ui/signin"


def test_without_a_token_loopback_only_and_closed_on_a_public_bind(tmp_path: Path) -> None:
    with Daemon(tmp_path / "open") as d:
        page = d.get("/ui/")
        assert page.status_code == 200 and "Sign out" not in page.text
        assert d.get("/ui/", headers={"Host": "evil.example"}).status_code == 401
        assert d.get("/ui/signin", follow_redirects=False).status_code == 303
    if shutil.which("ip") is None and not Path("/proc/net/route").exists():
        pytest.skip("no non-loopback interface")
    with Daemon(tmp_path / "closed", env={"HOST": "0.0.0.0"}) as d:
        closed = d.get("/ui/")
        assert closed.status_code == 403 and "server.api_token" in closed.text
