//! The evidence UI (part 13, contract §11): one page and its assets, embedded at compile time
//! (`ui/`), served at `/api/ui` and every path under it (deep links: the page routes by its
//! own URL). Served without the API token — the page asks for it and sends it as a bearer
//! token on its API calls. Strict headers: no inline script or style, no framing, no sniffing.

use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

use super::error::{full, ApiError, Body};

const INDEX: &str = include_str!("../../ui/index.html");

/// `/api/ui/assets/{name}`: the page's script, styles and the vendored chart library.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../ui/app.css"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/vendor/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../ui/vendor/uPlot.min.css"),
    ),
];

/// No inline script or style, nothing from elsewhere, never in a frame.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The page (any path under `/api/ui`) or one of its assets.
pub(super) fn serve<B>(req: &Request<B>, rest: &[&str]) -> Result<Response<Body>, ApiError> {
    super::allow(req, &[Method::GET, Method::HEAD], "GET, HEAD")?;
    let (content_type, body, cache): (&str, &'static [u8], &str) = match rest {
        ["assets", name] => {
            let Some((_, ct, bytes)) = ASSETS.iter().find(|(n, _, _)| n == name) else {
                return Err(ApiError::NotFound(format!("no UI asset {name:?}")));
            };
            (ct, bytes, "public, max-age=300")
        }
        ["assets", ..] => return Err(ApiError::NotFound("no such UI asset".into())),
        _ => ("text/html; charset=utf-8", INDEX.as_bytes(), "no-cache"),
    };
    let mut resp = Response::new(if req.method() == Method::HEAD {
        full(Vec::new())
    } else {
        full(body)
    });
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    Ok(resp)
}

/// Every embedded asset with its size, for the budget test.
pub fn asset_sizes() -> Vec<(&'static str, usize)> {
    std::iter::once(("index.html", INDEX.len()))
        .chain(ASSETS.iter().map(|(n, _, b)| (*n, b.len())))
        .collect()
}
