//! Who may use the console: a login with the admin token (or the read-only viewer token) gives a
//! session cookie; every state change carries a CSRF token tied to that session; failed logins are
//! rate-limited.
//!
//! Sessions are stateless: the cookie is `role.expiry.nonce.mac`, the MAC an HMAC-SHA256 under a key
//! derived from the token the session was opened with. Every instance that shares the configuration
//! accepts it (several instances behind one address), a restart keeps it, and changing the token ends
//! every session opened with it. Logging out clears the cookie in the browser; a copy of the cookie
//! taken before stays valid until it expires ([`SESSION_TTL`]): rotate the token to end it at once.
//!
//! The cookie is `HttpOnly` and `SameSite=Strict` (a cross-site page's request carries no session),
//! and `Secure` when `public_url` is https. Each form carries `csrf`, an HMAC of the session's nonce,
//! compared in constant time; a request whose `Origin` or `Sec-Fetch-Site` says it comes from another
//! site is refused before that.

use std::time::Duration;

use axum::http::{header, HeaderMap};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::clock::now_ms;
use crate::secret::{token_matches, Secret};

type HmacSha256 = Hmac<Sha256>;

/// The session cookie's name.
pub const COOKIE: &str = "trackrelay_session";

/// How long a session lasts after login.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// What a session may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything: acknowledge, silence, replay, reload, send tests.
    Admin,
    /// Look only (and run the rule tester, which changes nothing).
    Viewer,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }
}

/// The tokens that open sessions, as the configuration in force has them.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// The admin token (the configured one, or this run's own on a loopback relay without one).
    pub admin: Secret,
    /// The read-only viewer token, if configured.
    pub viewer: Option<Secret>,
}

impl Tokens {
    fn of(&self, role: Role) -> Option<&Secret> {
        match role {
            Role::Admin => Some(&self.admin),
            Role::Viewer => self.viewer.as_ref(),
        }
    }

    /// The role a presented token opens, checked in constant time against both tokens (both are
    /// always compared).
    pub fn role_of(&self, presented: &str) -> Option<Role> {
        let admin = token_matches(Some(presented.as_bytes()), &self.admin);
        let viewer = self
            .viewer
            .as_ref()
            .is_some_and(|v| token_matches(Some(presented.as_bytes()), v));
        if admin {
            Some(Role::Admin)
        } else if viewer {
            Some(Role::Viewer)
        } else {
            None
        }
    }
}

/// A valid session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// What it may do.
    pub role: Role,
    /// Its random nonce (hex), which its CSRF token is made from.
    nonce: String,
    /// When it ends, unix ms.
    pub expires_ms: i64,
    key: [u8; 32],
}

/// The signing key of sessions opened with `token`.
fn key(token: &Secret, role: Role) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(token.expose().as_bytes()).expect("any key length");
    m.update(b"trackrelay console session v1 ");
    m.update(role.as_str().as_bytes());
    m.finalize().into_bytes().into()
}

fn mac(key: &[u8; 32], parts: &[&str]) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(key).expect("any key length");
    for p in parts {
        m.update(p.as_bytes());
        m.update(b"\x1f");
    }
    m
}

impl Session {
    /// A new session for `role`, if its token is configured.
    pub fn open(tokens: &Tokens, role: Role) -> Option<Session> {
        let token = tokens.of(role)?;
        Some(Session {
            role,
            nonce: hex::encode(rand::random::<[u8; 16]>()),
            expires_ms: now_ms() + SESSION_TTL.as_millis() as i64,
            key: key(token, role),
        })
    }

    /// The cookie's value.
    pub fn cookie_value(&self) -> String {
        let exp = self.expires_ms.to_string();
        let m = mac(&self.key, &[self.role.as_str(), &exp, &self.nonce]);
        format!(
            "{}.{exp}.{}.{}",
            self.role.as_str(),
            self.nonce,
            hex::encode(m.finalize().into_bytes())
        )
    }

    /// The session a request's cookie names, if it is valid now under `tokens`.
    pub fn from_headers(headers: &HeaderMap, tokens: &Tokens) -> Option<Session> {
        let value = cookie(headers, COOKIE)?;
        let mut parts = value.split('.');
        let (role, exp, nonce, tag) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || nonce.len() != 32 {
            return None;
        }
        let role = Role::parse(role)?;
        let key = key(tokens.of(role)?, role);
        let tag = hex::decode(tag).ok()?;
        mac(&key, &[role.as_str(), exp, nonce])
            .verify_slice(&tag)
            .ok()?;
        let expires_ms: i64 = exp.parse().ok()?;
        (expires_ms > now_ms()).then(|| Session {
            role,
            nonce: nonce.to_string(),
            expires_ms,
            key,
        })
    }

    /// The CSRF token of this session's forms.
    pub fn csrf(&self) -> String {
        hex::encode(
            &mac(&self.key, &["csrf", &self.nonce])
                .finalize()
                .into_bytes()[..16],
        )
    }

    /// Whether `presented` is this session's CSRF token (constant time).
    pub fn csrf_matches(&self, presented: Option<&str>) -> bool {
        let Some(p) = presented.and_then(|p| hex::decode(p).ok()) else {
            return false;
        };
        let full = mac(&self.key, &["csrf", &self.nonce]);
        p.len() == 16 && full.verify_truncated_left(&p).is_ok()
    }
}

/// The value of cookie `name` in a request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| cookie::Cookie::parse(kv.trim()).ok())
        .find(|c| c.name() == name)
        .map(|c| c.value().to_string())
}

/// The `Set-Cookie` value that stores `session` (or, with `None`, removes the cookie).
pub fn set_cookie(session: Option<&Session>, secure: bool) -> String {
    let mut c = cookie::Cookie::new(
        COOKIE,
        session.map(Session::cookie_value).unwrap_or_default(),
    );
    c.set_http_only(true);
    c.set_same_site(cookie::SameSite::Strict);
    c.set_path("/console");
    c.set_secure(secure);
    match session {
        Some(s) => c.set_max_age(cookie::time::Duration::milliseconds(
            (s.expires_ms - now_ms()).max(0),
        )),
        None => c.set_max_age(cookie::time::Duration::ZERO),
    }
    c.to_string()
}

/// Whether a state-changing request comes from another site: its `Sec-Fetch-Site` says `cross-site`
/// or `same-site`, or its `Origin` is neither `public_origin` (`https://relay.example`, from
/// `public_url`: what the browser sees behind a reverse proxy that rewrites `Host`) nor the request's
/// `Host`. Requests without either header (curl, old browsers) pass on to the CSRF token check.
pub fn cross_site(headers: &HeaderMap, public_origin: Option<&str>) -> bool {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if matches!(h("sec-fetch-site"), Some("cross-site" | "same-site")) {
        return true;
    }
    let Some(origin) = h("origin") else {
        return false;
    };
    if origin == "null" {
        return true;
    }
    let public = public_origin.is_some_and(|p| p.eq_ignore_ascii_case(origin));
    let host = h("host").is_some_and(|host| {
        origin
            .split_once("://")
            .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
    });
    !(public || host)
}

/// The origin (`scheme://host[:port]`) of a `public_url`, as browsers send it in `Origin`.
pub fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    (!authority.is_empty()).then(|| format!("{scheme}://{authority}"))
}

/// Failed logins, counted per client address and window: after [`Limiter::MAX_FAILURES`] failures
/// in one window every login from that address is refused until the window ends, the right token
/// included (otherwise the limit would tell a guesser when a guess was right). Behind a reverse proxy
/// every client has the proxy's address and shares one count. At most [`Limiter::CLIENTS`] addresses
/// are remembered; beyond that, new ones share one count.
#[derive(Debug, Default)]
pub struct Limiter {
    state: std::sync::Mutex<std::collections::HashMap<Option<std::net::IpAddr>, (i64, u32)>>,
}

impl Limiter {
    /// Failures allowed per window.
    pub const MAX_FAILURES: u32 = 10;
    /// The window.
    pub const WINDOW: Duration = Duration::from_secs(60);
    /// Addresses remembered at once.
    pub const CLIENTS: usize = 4096;

    fn window() -> i64 {
        Self::WINDOW.as_millis() as i64
    }

    /// `Err(seconds to wait)` while logins from `client` are refused.
    pub fn check(&self, client: Option<std::net::IpAddr>, now_ms: i64) -> Result<(), u64> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let key = if state.contains_key(&client) {
            client
        } else if state.len() < Self::CLIENTS {
            return Ok(());
        } else {
            None
        };
        match state.get(&key) {
            Some(&(start, n)) if now_ms - start < Self::window() && n >= Self::MAX_FAILURES => {
                Err(((start + Self::window() - now_ms) / 1000).max(1) as u64)
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed login from `client`.
    pub fn failed(&self, client: Option<std::net::IpAddr>, now_ms: i64) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !state.contains_key(&client) && state.len() >= Self::CLIENTS {
            state.retain(|_, (start, _)| now_ms - *start < Self::window());
        }
        let key = if state.contains_key(&client) || state.len() < Self::CLIENTS {
            client
        } else {
            None
        };
        let e = state.entry(key).or_insert((now_ms, 0));
        if now_ms - e.0 >= Self::window() {
            *e = (now_ms, 0);
        }
        e.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn tokens() -> Tokens {
        Tokens {
            admin: Secret("admin-token-1".into()),
            viewer: Some(Secret("viewer-token-1".into())),
        }
    }

    fn with_cookie(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {COOKIE}={v}")).unwrap(),
        );
        h
    }

    #[test]
    fn a_session_reads_back_and_nothing_else_does() {
        let t = tokens();
        let s = Session::open(&t, Role::Viewer).unwrap();
        let back = Session::from_headers(&with_cookie(&s.cookie_value()), &t).unwrap();
        assert_eq!(back, s);
        // A viewer cannot promote itself: the MAC covers the role.
        let forged = s.cookie_value().replacen("viewer", "admin", 1);
        assert!(Session::from_headers(&with_cookie(&forged), &t).is_none());
        // Nor extend its life.
        let v = s.cookie_value();
        let later = v.replacen(
            &s.expires_ms.to_string(),
            &(s.expires_ms + 1).to_string(),
            1,
        );
        assert!(Session::from_headers(&with_cookie(&later), &t).is_none());
        // A new token ends the session.
        let rotated = Tokens {
            viewer: Some(Secret("viewer-token-2".into())),
            ..t.clone()
        };
        assert!(Session::from_headers(&with_cookie(&v), &rotated).is_none());
        assert!(Session::from_headers(&HeaderMap::new(), &t).is_none());
    }

    #[test]
    fn csrf_tokens_belong_to_their_session() {
        let t = tokens();
        let (a, b) = (
            Session::open(&t, Role::Admin).unwrap(),
            Session::open(&t, Role::Admin).unwrap(),
        );
        assert!(a.csrf_matches(Some(&a.csrf())));
        assert!(!a.csrf_matches(Some(&b.csrf())));
        assert!(!a.csrf_matches(None));
        assert!(!a.csrf_matches(Some("")));
        assert!(!a.csrf_matches(Some("zz")));
    }

    #[test]
    fn the_cookie_is_secure_over_https_and_removed_on_logout() {
        let s = Session::open(&tokens(), Role::Admin).unwrap();
        let https = set_cookie(Some(&s), true);
        assert!(https.contains("; Secure"), "{https}");
        assert!(
            https.contains("HttpOnly") && https.contains("SameSite=Strict"),
            "{https}"
        );
        assert!(!set_cookie(Some(&s), false).contains("Secure"));
        let gone = set_cookie(None, false);
        assert!(
            gone.starts_with(&format!("{COOKIE}=;")) && gone.contains("Max-Age=0"),
            "{gone}"
        );
    }

    #[test]
    fn roles_come_from_the_token() {
        let t = tokens();
        assert_eq!(t.role_of("admin-token-1"), Some(Role::Admin));
        assert_eq!(t.role_of("viewer-token-1"), Some(Role::Viewer));
        assert_eq!(t.role_of("admin-token-"), None);
        let no_viewer = Tokens {
            viewer: None,
            ..t.clone()
        };
        assert!(Session::open(&no_viewer, Role::Viewer).is_none());
    }

    #[test]
    fn cross_site_requests_are_recognised() {
        let h = |pairs: &[(&'static str, &'static str)], public: Option<&str>| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, HeaderValue::from_static(v));
            }
            cross_site(&m, public)
        };
        assert!(!h(&[("host", "127.0.0.1:8088")], None));
        assert!(!h(
            &[
                ("host", "127.0.0.1:8088"),
                ("origin", "http://127.0.0.1:8088")
            ],
            None
        ));
        assert!(h(
            &[
                ("host", "127.0.0.1:8088"),
                ("origin", "http://127.0.0.1:9999")
            ],
            None
        ));
        assert!(h(&[("host", "a.example"), ("origin", "null")], None));
        assert!(h(
            &[("host", "a.example"), ("sec-fetch-site", "cross-site")],
            None
        ));
        assert!(!h(
            &[("host", "a.example"), ("sec-fetch-site", "same-origin")],
            None
        ));
        // Behind a proxy that sends its own Host, the public origin is this site.
        let proxied = [
            ("host", "127.0.0.1:8088"),
            ("origin", "https://relay.example"),
        ];
        assert!(h(&proxied, None));
        assert!(!h(&proxied, Some("https://relay.example")));
        assert!(h(&proxied, Some("https://other.example")));
        assert!(!h(
            &[("origin", "https://relay.example")],
            Some("https://relay.example")
        ));
        assert_eq!(
            origin_of("https://relay.example:8443/base/").as_deref(),
            Some("https://relay.example:8443")
        );
        assert_eq!(origin_of("relay.example"), None);
    }

    #[test]
    fn the_limiter_refuses_a_client_after_too_many_failures_then_forgives() {
        let l = Limiter::default();
        let (a, b) = (
            Some("10.0.0.1".parse().unwrap()),
            Some("10.0.0.2".parse().unwrap()),
        );
        let t0 = 1_000_000;
        for _ in 0..Limiter::MAX_FAILURES {
            assert!(l.check(a, t0).is_ok());
            l.failed(a, t0);
        }
        assert_eq!(l.check(a, t0 + 1_000), Err(59));
        // Another client is not locked out by the first one's guesses.
        assert!(l.check(b, t0 + 1_000).is_ok());
        assert!(l.check(a, t0 + Limiter::WINDOW.as_millis() as i64).is_ok());
    }

    #[test]
    fn the_limiter_remembers_a_bounded_number_of_clients() {
        let l = Limiter::default();
        for i in 0..Limiter::CLIENTS as u32 + 50 {
            l.failed(Some(std::net::IpAddr::from(i.to_be_bytes())), 0);
        }
        assert!(l.state.lock().unwrap().len() <= Limiter::CLIENTS + 1);
        // The overflow shares one count: 50 failures, over the limit.
        assert!(l.check(Some("192.0.2.1".parse().unwrap()), 1).is_err());
    }
}
