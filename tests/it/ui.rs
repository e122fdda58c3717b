//! Part 13: the evidence UI as the server serves it (the browser suite, `scripts/ui-test.py`,
//! drives the pages themselves in Chromium).

use reqwest::StatusCode;

use crate::helpers::*;

#[tokio::test]
async fn the_page_and_every_deep_link_are_served_without_the_token_with_strict_headers() {
    let app = spawn_app().await; // FLUXTRAIL_API_TOKEN is set
    for path in [
        "/api/ui",
        "/api/ui/",
        "/api/ui/matrix?repository=github.com/acme/fleet&ref=main",
        "/api/ui/commits/1eabc9a41ca088515cab83f1cce49eb43e84b67f",
        "/api/ui/changes?cluster=prod-eu",
        "/api/ui/incidents?state=open",
        "/api/ui/dora",
    ] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let h = r.headers().clone();
        assert_eq!(h["content-type"], "text/html; charset=utf-8", "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-frame-options"], "DENY");
        let body = r.text().await.unwrap();
        assert!(body.contains("/api/ui/assets/app.js"), "{path}");
        assert!(!body.contains("<script>"), "no inline script in the page");
    }
    // The API itself still wants the token.
    let r = app
        .client
        .get(app.url("/api/objects"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn assets_have_their_types_and_unknown_ones_are_404() {
    let app = spawn_app().await;
    for (name, ty) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("app.css", "text/css; charset=utf-8"),
        ("uPlot.iife.min.js", "text/javascript; charset=utf-8"),
        ("uPlot.min.css", "text/css; charset=utf-8"),
    ] {
        let r = app
            .client
            .get(app.url(&format!("/api/ui/assets/{name}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{name}");
        assert_eq!(r.headers()["content-type"], ty, "{name}");
    }
    let r = app
        .client
        .get(app.url("/api/ui/assets/nope.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = app.client.post(app.url("/api/ui")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    let r = app
        .client
        .head(app.url("/api/ui/dora"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[test]
fn the_assets_stay_within_their_budget() {
    // 300 KB compressed is the target; uncompressed is a stricter bound.
    let total: usize = fluxtrail::http::ui::asset_sizes()
        .iter()
        .map(|(_, n)| n)
        .sum();
    assert!(total <= 300 * 1024, "{total} bytes");
}
