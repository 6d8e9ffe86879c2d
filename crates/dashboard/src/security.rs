//! Response headers of every dashboard page, and the refusal of cross-site
//! form posts.

use axum::{
    extract::Request,
    http::{header, HeaderMap, HeaderValue, Method},
    middleware::Next,
    response::Response,
};

use crate::layout;

/// Only our own scripts, styles, images and forms; no frames, no plugins,
/// no `<base>`. Nothing inline, so an injected tag cannot run.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// Adds the security headers to every response; pages that set no
/// `Cache-Control` of their own (every page but the static files) get
/// `no-store`, since most show names, keys or values.
pub(crate) async fn headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    let set = |h: &mut HeaderMap, name: &'static str, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(h, "content-security-policy", CONTENT_SECURITY_POLICY);
    set(h, "x-frame-options", "DENY");
    // Not `no-referrer`: under it browsers send `Origin: null` on our own
    // form posts, which the cross-site check below could not tell from a
    // sandboxed attacker. `same-origin` still sends nothing to other sites.
    set(h, "referrer-policy", "same-origin");
    set(h, "x-content-type-options", "nosniff");
    set(h, "cross-origin-opener-policy", "same-origin");
    set(h, "cross-origin-resource-policy", "same-origin");
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Refuses a state-changing request that a browser says came from another
/// site (`Sec-Fetch-Site`), or whose `Origin` is not this host. This is on
/// top of the per-session CSRF token, and it also covers the sign-in form,
/// which has no session yet.
pub(crate) async fn reject_cross_site(request: Request, next: Next) -> Response {
    if !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| request.uri().authority().map(|a| a.as_str()));
        if let Some(reason) = cross_site(request.headers(), host) {
            tracing::warn!(path = %request.uri().path(), reason, "dashboard: cross-site request refused");
            return layout::forbidden(
                "This form was sent from another site, so it was refused. \
                 Use the dashboard's own pages to make changes.",
            );
        }
    }
    next.run(request).await
}

/// Why the request looks cross-site, if it does.
fn cross_site(headers: &HeaderMap, host: Option<&str>) -> Option<&'static str> {
    if let Some(site) = headers.get("sec-fetch-site") {
        if !matches!(site.as_bytes(), b"same-origin" | b"none") {
            return Some("Sec-Fetch-Site is not same-origin");
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        match (authority, host) {
            (Some(a), Some(h)) if a.eq_ignore_ascii_case(h) => {}
            _ => return Some("Origin is not this host"),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn same_origin_and_headerless_requests_pass() {
        let host = Some("127.0.0.1:7420");
        assert_eq!(cross_site(&headers(&[]), host), None);
        assert_eq!(
            cross_site(
                &headers(&[
                    ("origin", "http://127.0.0.1:7420"),
                    ("sec-fetch-site", "same-origin")
                ]),
                host
            ),
            None
        );
    }

    #[test]
    fn other_origins_and_sites_are_refused() {
        let host = Some("127.0.0.1:7420");
        for h in [
            headers(&[("origin", "http://evil.example")]),
            headers(&[("origin", "null")]),
            headers(&[("origin", "http://127.0.0.1:7421")]),
            headers(&[("sec-fetch-site", "cross-site")]),
            headers(&[("sec-fetch-site", "same-site")]),
        ] {
            assert!(cross_site(&h, host).is_some(), "{h:?}");
        }
    }
}
