#!/usr/bin/env python3
"""The evidence UI in a real browser (part 13): Debian's chromium driven by PyPI's playwright.

  scripts/ui-test.py BINARY [SCREENSHOT_DIR]

Starts BINARY (fluxtrail) on a fresh store with an API token, seeds it through the real
webhooks (GitHub pushes, a merged and approved pull request, Flux events from three clusters:
applied, failed, still pending; one commit message carries `<script>` and `<img onerror>`),
then checks every page in headless Chromium: the token prompt, the seeded states, filters,
paging, deep links, the CSV download, no console errors, keyboard reach of every control,
attacker-controlled text rendered as text. Screenshots of each page go to SCREENSHOT_DIR
(default docs/screenshots). Exit status 0 when every check held.
"""
import hashlib, hmac, json, os, pathlib, shutil, socket, subprocess, sys, tempfile, time, urllib.request

from playwright.sync_api import sync_playwright

ROOT = pathlib.Path(__file__).resolve().parent.parent
BINARY = sys.argv[1]
SHOTS = pathlib.Path(sys.argv[2] if len(sys.argv) > 2 else ROOT / "docs" / "screenshots")
GITHUB_SECRET, FLUX_KEY, API_TOKEN = "ui-github-secret", "ui-flux-key", "ui-api-token"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"

C1 = hashlib.sha1(b"ui-c1").hexdigest()
C2 = hashlib.sha1(b"ui-c2").hexdigest()
C3 = "1eabc9a41ca088515cab83f1cce49eb43e84b67f"  # the merge commit of the pull request fixture
C9 = hashlib.sha1(b"ui-big").hexdigest()  # reported by 225 objects, pushed by no one
XSS = 'deploy: <script>window.__xss = 1</script> and <img src=x onerror="window.__xss = 2">'

failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def until(predicate, what, timeout=10):
    """Polls `predicate` from Python (the page's CSP forbids playwright's eval-based waits)."""
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.05)


def fixture(path):
    return json.loads((ROOT / "tests" / "fixtures" / path).read_text())


def post(port, path, body, headers):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, headers=headers, method="POST")
    with urllib.request.urlopen(req) as r:
        assert r.status in (200, 202), (path, r.status)


def github(port, event, delivery, payload):
    body = json.dumps(payload).encode()
    sig = "sha256=" + hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
    post(port, "/api/hooks/git/github", body, {"Content-Type": "application/json", "X-GitHub-Event": event,
                                               "X-GitHub-Delivery": delivery, "X-Hub-Signature-256": sig})


def flux(port, cluster, name, sha, at, failed=False):
    f = fixture("flux/kustomization-health-failed.json" if failed else "flux/kustomization-succeeded.json")
    f["involvedObject"]["name"] = name
    f["metadata"]["revision"] = f"main@sha1:{sha}"
    f["timestamp"] = at
    body = json.dumps(f).encode()
    sig = "sha256=" + hmac.new(FLUX_KEY.encode(), body, hashlib.sha256).hexdigest()
    post(port, f"/api/hooks/flux/{cluster}", body, {"Content-Type": "application/json", "X-Signature": sig})


def push(port, before, commits, delivery):
    p = fixture("git/github/push-forced.json")
    listed = [{"id": sha, "message": msg, "timestamp": "2026-12-01T09:00:00Z",
               "author": {"name": "Dana Ops", "email": "dana@acme.example", "username": "dana-ops"}} for sha, msg in commits]
    p.update({"ref": "refs/heads/main", "before": before or "0" * 40, "after": commits[-1][0], "created": before is None,
              "forced": False, "commits": listed, "head_commit": listed[-1]})
    github(port, "push", delivery, p)


def seed(port):
    push(port, None, [(C1, XSS)], "ui-push-1")
    push(port, C1, [(C2, "apps: bump podinfo to 6.5.4"), (C3, "Merge pull request #42 from acme/podinfo")], "ui-push-2")
    github(port, "pull_request", "ui-pr-merged", fixture("git/github/pull-request-merged.json"))
    github(port, "pull_request_review", "ui-pr-review", fixture("git/github/pull-request-review-approved.json"))
    t = lambda m: f"2026-12-01T10:{m:02d}:00Z"
    for cluster in ("prod-eu", "prod-us", "staging"):
        flux(port, cluster, "apps", C1, t(0))
    flux(port, "staging", "apps", C2, t(5))
    flux(port, "staging", "apps", C3, t(10), failed=True)
    flux(port, "prod-eu", "apps", C3, t(12))
    flux(port, "prod-eu", "infra", C3, t(13))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    SHOTS.mkdir(parents=True, exist_ok=True)
    work = tempfile.mkdtemp()
    port = free_port()
    env = dict(os.environ, FLUXTRAIL_LISTEN=f"127.0.0.1:{port}", FLUXTRAIL_DATA_DIR=work, FLUXTRAIL_GITHUB_SECRET=GITHUB_SECRET,
               FLUXTRAIL_FLUX_HMAC_KEY=FLUX_KEY, FLUXTRAIL_API_TOKEN=API_TOKEN, RUST_LOG="warn")
    server = subprocess.Popen([BINARY, "serve"], env=env, stdout=open(f"{work}/server.log", "w"), stderr=subprocess.STDOUT)
    try:
        for _ in range(500):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/")
                break
            except OSError:
                time.sleep(0.02)
        seed(port)
        time.sleep(0.5)  # the outbox settles the incident's group
        run(f"http://127.0.0.1:{port}")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)
    if failures:
        print(f"\n{len(failures)} UI checks failed")
        sys.exit(1)
    print(f"\nevery UI check held; screenshots in {SHOTS}")


def run(base):
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900}, accept_downloads=True)
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("dialog", lambda d: (errors.append("dialog: " + d.message), d.dismiss()))

        # The token prompt: the API answers 401 until the token is given.
        page.goto(base + "/api/ui")
        page.wait_for_selector("#token")
        check(page.locator("input#token").get_attribute("type") == "password", "the token prompt is a password field")
        page.screenshot(path=str(SHOTS / "token-prompt.png"))
        page.fill("#token", API_TOKEN)
        page.click("text=Use token")
        page.wait_for_selector("#matrix")
        # The 401s of the prompt are the browser's resource errors, expected there.
        errors[:] = [e for e in errors if "401" not in e]
        check(API_TOKEN not in page.url, "the token is not in the URL")

        # Rollout matrix.
        text = page.inner_text("#matrix")
        check("github.com/acme/fleet-infra" in page.inner_text("main"), "the matrix picks the followed repository")
        check(all(c in text for c in ("prod-eu", "prod-us", "staging")), "a column per cluster")
        check("failed" in text and "applied" in text and "pending" in text, "cells show failed, applied and pending in text")
        check(page.locator("#matrix tbody tr").count() == 3, "a row per pushed commit")
        check("#42" in text, "the approval badge of the merged pull request")
        page.screenshot(path=str(SHOTS / "matrix.png"), full_page=True)
        page.click("button[aria-label='Show the objects of prod-eu']")
        until(lambda: "Kustomization/flux-system/infra" in page.inner_text("#matrix thead"), "prod-eu's objects")
        check("applied" in page.inner_text("#matrix tbody"), "a cluster expands to its objects, each with its state")
        page.screenshot(path=str(SHOTS / "matrix-expanded.png"), full_page=True)
        # Paging back through history.
        page.goto(base + "/api/ui/matrix?repository=github.com/acme/fleet-infra&ref=main&limit=2")
        page.wait_for_selector("#matrix")
        check(page.locator("#matrix tbody tr").count() == 2, "a page of two commits")
        page.click("text=Older commits")
        until(lambda: page.locator("#matrix tbody tr").count() == 1, "the older page")
        check(C1[:10] in page.inner_text("#matrix"), "the older page holds the first commit")

        # Commit page, by deep link: the message with markup is text.
        page.goto(base + f"/api/ui/commits/{C1}")
        page.wait_for_selector("#targets")
        body = page.inner_text("main")
        check("<script>window.__xss = 1</script>" in body, "a <script> in a commit message renders as text")
        check('<img src=x onerror="window.__xss = 2">' in body, "an <img onerror> renders as text")
        check(page.evaluate("window.__xss === undefined"), "no injected script ran")
        check(page.locator("main img").count() == 0, "no image element was made from the message")
        page.screenshot(path=str(SHOTS / "commit-xss.png"), full_page=True)
        page.goto(base + f"/api/ui/commits/{C3}")
        page.wait_for_selector("#targets")
        approval = page.inner_text("#approval")
        check("#42" in approval and "sam-sre" in approval, "the approval record: pull request and approver")
        check("stalled" in page.inner_text("main") or "pending" in page.inner_text("#waiting"), "where it is still expected")
        check("Health check failed" in page.inner_text("#targets") or "HealthCheckFailed" in page.inner_text("#targets"), "the failed reconciliation and its reason")
        check("github.com/acme/fleet-infra @ refs/heads/main" in page.inner_text("#targets"), "each object's source")
        page.screenshot(path=str(SHOTS / "commit.png"), full_page=True)

        # Changes: filters, coverage, CSV.
        page.goto(base + "/api/ui/changes?from=2026-11-01")
        page.wait_for_selector("#changes")
        check(page.locator("#changes tbody tr").count() >= 5, "the audit feed lists the seeded changes")
        check("%" in page.inner_text("#coverage"), "approval coverage is shown")
        page.fill("#f-cluster", "staging")
        page.click("text=Filter")
        until(lambda: set(page.locator("#changes tbody tr td:nth-child(2)").all_inner_texts()) == {"staging"}, "the filtered feed")
        check("cluster=staging" in page.url, "filters are in the shareable URL")
        with page.expect_download() as dl:
            page.click("#csv")
        csv = pathlib.Path(dl.value.path()).read_text()
        check(csv.splitlines()[0].startswith("time,cluster"), "the CSV download has its header")
        check(all(",staging," in line for line in csv.splitlines()[1:]), "the CSV is the filtered window")
        page.screenshot(path=str(SHOTS / "changes.png"), full_page=True)
        keyboard_reaches_everything(page, "changes")

        # Incidents and groups.
        page.goto(base + "/api/ui/incidents")
        page.wait_for_selector("#groups")
        check("staging" in page.inner_text("#incidents"), "the open incident")
        check(C3[:10] in page.inner_text("#groups"), "its group, by cause")
        page.screenshot(path=str(SHOTS / "incidents.png"), full_page=True)
        page.click("text=Resolved")
        until(lambda: "state=resolved" in page.url, "the resolved tab")
        page.wait_for_selector("#groups")

        # Delivery metrics with charts.
        page.goto(base + "/api/ui/dora")
        page.wait_for_selector("#dora")
        page.wait_for_selector("#chart-3 canvas")
        check("fleet" in page.inner_text("#dora"), "the fleet's figures")
        check(page.locator(".chart canvas").count() == 4, "four charts over time")
        page.screenshot(path=str(SHOTS / "dora.png"), full_page=True)
        keyboard_reaches_everything(page, "dora")

        # A commit that reached many objects (225 on 5 clusters, one failed): one section per
        # cluster with its states, drawn when opened.
        port = int(base.rsplit(":", 1)[1].split("/")[0])
        for i in range(225):
            cluster, name = f"big-{i % 5}", f"app-{i // 5:02d}"
            flux(port, cluster, name, C9, "2026-12-01T11:00:00Z", failed=(cluster == "big-2" and name == "app-07"))
        page.goto(base + f"/api/ui/commits/{C9}")
        page.wait_for_selector("#targets details")
        sections = page.locator("#targets details.cluster-targets")
        check(sections.count() == 5, "a big commit: one section per cluster")
        check(page.locator("#targets table").count() == 0, "no cluster's objects drawn before it is opened")
        big2 = sections.filter(has_text="big-2")
        check("1 failed" in big2.inner_text() and "44 applied" in big2.inner_text(), "a section's summary counts its states")
        big2.locator("summary").click()
        until(lambda: big2.locator("tbody tr").count() == 45, "an opened cluster lists its objects")
        check("app-07" in big2.locator("tbody").inner_text(), "the failed object among them")
        page.screenshot(path=str(SHOTS / "commit-big.png"), full_page=True)
        keyboard_reaches_everything(page, "a big commit")

        # The token is kept for the session only: a new context asks again.
        other = browser.new_context().new_page()
        other.goto(base + "/api/ui/changes")
        other.wait_for_selector("#token")
        check(True, "a new browser session asks for the token again")

        check(not errors, "no console errors: " + "; ".join(errors))
        browser.close()


def keyboard_reaches_everything(page, name):
    """Tab through the page: every link, button, field and disclosure is reached."""
    wanted = page.evaluate("""() => [...document.querySelectorAll('a[href], button:not([hidden]), input, select, summary')]
        .filter(e => e.offsetParent !== null).length""")
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.mouse.click(1, 1)
    seen = set()
    for _ in range(wanted + 20):
        page.keyboard.press("Tab")
        key = page.evaluate("""() => { const e = document.activeElement; if (!e || e === document.body) return null;
            if (!e.dataset.k) e.dataset.k = Math.random().toString(36).slice(2); return e.dataset.k; }""")
        if key:
            seen.add(key)
    reached = page.evaluate("""() => [...document.querySelectorAll('a[href], button:not([hidden]), input, select, summary')]
        .filter(e => e.offsetParent !== null && e.dataset.k).length""")
    check(reached == wanted, f"keyboard reaches every control on {name} ({reached}/{wanted})")


if __name__ == "__main__":
    main()
