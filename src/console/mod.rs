//! The web console: pages served by the relay itself under `/console/` for the people who run it. What
//! the relay did (overview, deliveries, incidents) and what they can do about it (acknowledge, resolve,
//! silence, replay dead letters, reload, test a rule on an event and send its message as a test).
//!
//! Server-rendered HTML from templates embedded in the binary (minijinja, escaped by default), one
//! stylesheet and one small script that only enhances (the overview refreshes itself, the silence form
//! previews what it would mute): every action is a plain form that works without JavaScript. Logged in
//! with the admin token, or the read-only viewer token ([`auth`]); off when no admin token is set,
//! unless the relay listens on loopback only, where it makes a token of its own for the run and logs it.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use minijinja::Environment;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::AdminState;
use crate::secret::Secret;

pub mod auth;
mod pages;
mod replay;
mod tools;
mod view;

use auth::{Limiter, Role, Session, Tokens};

/// The console's state: the admin state it acts through, its templates and its login limiter.
pub struct Console {
    admin: AdminState,
    templates: Environment<'static>,
    limiter: Limiter,
    /// This run's own admin token, when none is configured and the relay listens on loopback only.
    own_token: Option<Secret>,
    /// One replay of a period at a time (see [`replay`]).
    replays: tokio::sync::Semaphore,
}

/// The console's shared state.
pub type Shared = Arc<Console>;

/// The templates, embedded: (name, source).
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("login.html", include_str!("templates/login.html")),
    ("overview.html", include_str!("templates/overview.html")),
    ("incidents.html", include_str!("templates/incidents.html")),
    ("incident.html", include_str!("templates/incident.html")),
    ("deliveries.html", include_str!("templates/deliveries.html")),
    ("delivery.html", include_str!("templates/delivery.html")),
    ("silences.html", include_str!("templates/silences.html")),
    ("preview.html", include_str!("templates/preview.html")),
    ("rules.html", include_str!("templates/rules.html")),
    ("tester.html", include_str!("templates/tester.html")),
    ("message.html", include_str!("templates/message.html")),
];

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

impl Console {
    /// The console over `admin`. `own_token`: the token to log in with when none is configured (see
    /// [`own_token`]).
    pub fn new(admin: AdminState, own_token: Option<Secret>) -> Console {
        let mut templates = Environment::new();
        for (name, source) in TEMPLATES {
            templates
                .add_template(name, source)
                .unwrap_or_else(|e| panic!("console template {name}: {e}"));
        }
        Console {
            admin,
            templates,
            limiter: Limiter::default(),
            own_token,
            replays: tokio::sync::Semaphore::new(1),
        }
    }

    /// The tokens that open sessions now (`None`: the console is off).
    fn tokens(&self) -> Option<Tokens> {
        let rt = self.admin.pipeline.shared.get();
        let admin = rt.config.admin_token.clone().or(self.own_token.clone())?;
        Some(Tokens {
            admin,
            viewer: rt.config.viewer_token.clone(),
        })
    }

    /// The origin browsers reach the relay at, from `public_url`.
    fn public_origin(&self) -> Option<String> {
        let rt = self.admin.pipeline.shared.get();
        rt.config.public_url.as_deref().and_then(auth::origin_of)
    }

    /// Whether a state change comes from another site (see [`auth::cross_site`]).
    fn cross_site(&self, headers: &HeaderMap) -> bool {
        auth::cross_site(headers, self.public_origin().as_deref())
    }

    /// Whether cookies get `Secure`: the relay is reached over https.
    fn secure(&self) -> bool {
        let rt = self.admin.pipeline.shared.get();
        rt.config
            .public_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"))
    }

    /// Renders page `name` for `session` with `ctx` (merged with what every page shows).
    fn page(&self, name: &str, session: Option<&Session>, ctx: Value) -> Response {
        let mut all = json!({
            "role": session.map(|s| if s.role == Role::Admin { "admin" } else { "viewer" }),
            "csrf": session.map(Session::csrf),
        });
        if let (Value::Object(a), Value::Object(b)) = (&mut all, ctx) {
            a.extend(b);
        }
        match self
            .templates
            .get_template(name)
            .and_then(|t| t.render(&all))
        {
            Ok(html) => html_response(StatusCode::OK, html),
            Err(e) => {
                tracing::error!(template = name, error = %e, "console page failed to render");
                self.message(
                    session,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "This page could not be shown; the relay's log says why.",
                )
            }
        }
    }

    /// A page with a title and one paragraph (errors, refusals).
    fn message(
        &self,
        session: Option<&Session>,
        status: StatusCode,
        title: &str,
        text: &str,
    ) -> Response {
        let html = self
            .templates
            .get_template("message.html")
            .and_then(|t| {
                t.render(json!({
                    "title": title, "text": text,
                    "role": session.map(|s| if s.role == Role::Admin { "admin" } else { "viewer" }),
                    "csrf": session.map(Session::csrf),
                }))
            })
            .unwrap_or_else(|_| "<!DOCTYPE html><title>Error</title><p>Error</p>".into());
        html_response(status, html)
    }
}

/// A console page with the headers every page gets: not cached, not framed, no inline script, no
/// referrer beyond this origin.
fn html_response(status: StatusCode, html: String) -> Response {
    let mut r = (status, html).into_response();
    let h = r.headers_mut();
    for (k, v) in [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    r
}

/// The file in the data folder that holds the console token of a relay without `admin.token`.
pub const TOKEN_FILE: &str = "console-token";

/// A token for the console of a relay without an admin token, when it listens on loopback only (a
/// first run on the built-in configuration): kept in `<data_dir>/console-token` (readable by its
/// owner only; the log names the file, never the token), made on first use and kept across restarts.
/// A relay reachable from elsewhere gets none: its console stays off until `admin.token` is set.
pub fn own_token(
    configured: bool,
    listen: std::net::SocketAddr,
    data_dir: &std::path::Path,
) -> std::io::Result<Option<(Secret, std::path::PathBuf)>> {
    if configured || !listen.ip().is_loopback() {
        return Ok(None);
    }
    let file = data_dir.join(TOKEN_FILE);
    if private_file(&file) {
        if let Ok(t) = std::fs::read_to_string(&file) {
            let t = t.trim();
            if t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(Some((Secret(t.to_string()), file)));
            }
        }
    }
    // A new token, written to a new file that only its owner may read, then moved into place: a file
    // someone else made, could read or links elsewhere is replaced, never trusted or written through.
    std::fs::create_dir_all(data_dir)?;
    let token = hex::encode(rand::random::<[u8; 16]>());
    let temp = data_dir.join(format!(
        ".{TOKEN_FILE}.{}",
        hex::encode(rand::random::<[u8; 8]>())
    ));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let written = opts
        .open(&temp)
        .and_then(|mut f| std::io::Write::write_all(&mut f, format!("{token}\n").as_bytes()))
        .and_then(|()| std::fs::rename(&temp, &file));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    Ok(Some((Secret(token), file)))
}

/// Whether `file` is a plain file (not a link) that only its owner may read or write.
#[cfg(unix)]
fn private_file(file: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(file).is_ok_and(|m| m.file_type().is_file() && m.mode() & 0o077 == 0)
}

/// Whether `file` is a plain file (no owner or mode to check here).
#[cfg(not(unix))]
fn private_file(file: &std::path::Path) -> bool {
    std::fs::symlink_metadata(file).is_ok_and(|m| m.file_type().is_file())
}

/// The console's routes.
pub fn router(console: Shared) -> Router {
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(pages::overview))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/assets/{file}", get(asset))
        .route("/console/incidents", get(pages::incidents))
        .route("/console/incidents/{id}", get(pages::incident))
        .route(
            "/console/incidents/{id}/{action}",
            post(pages::incident_action),
        )
        .route("/console/deliveries", get(pages::deliveries))
        .route("/console/deliveries/replay-dead", post(pages::replay_dead))
        .route("/console/deliveries/{id}", get(pages::delivery))
        .route("/console/deliveries/{id}/replay", post(pages::replay_one))
        .route(
            "/console/silences",
            get(tools::silences).post(tools::add_silence),
        )
        .route(
            "/console/silences/preview",
            get(tools::preview).post(tools::preview_form),
        )
        .route("/console/silences/{id}/expire", post(tools::expire_silence))
        .route("/console/rules", get(tools::rules))
        .route(
            "/console/tester",
            get(tools::tester).post(tools::run_tester),
        )
        .route("/console/tester/send", post(tools::send_test))
        .route("/console/tester/replay", post(replay::replay))
        .route("/console/reload", post(tools::reload))
        .with_state(console)
}

/// A request with a valid session (any role); without one, a redirect to the login page (or a 404
/// page while the console is off).
pub struct Viewer(pub Session);

impl FromRequestParts<Shared> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, c: &Shared) -> Result<Self, Response> {
        let Some(tokens) = c.tokens() else {
            return Err(off(c));
        };
        match Session::from_headers(&parts.headers, &tokens) {
            Some(s) => Ok(Viewer(s)),
            None => Err(Redirect::to("/console/login").into_response()),
        }
    }
}

fn off(c: &Console) -> Response {
    c.message(
        None,
        StatusCode::NOT_FOUND,
        "The console is off",
        "Set admin.token (TRACKRELAY_ADMIN_TOKEN) to turn it on.",
    )
}

/// A state change: the session, the CSRF token and the site the request comes from checked, the form
/// read. `admin_only`: a viewer's session is refused. The error is the page to answer with.
#[allow(clippy::result_large_err)]
fn form<T: DeserializeOwned>(
    c: &Console,
    headers: &HeaderMap,
    body: &[u8],
    admin_only: bool,
) -> Result<(Session, T), Response> {
    let tokens = c.tokens().ok_or_else(|| off(c))?;
    if c.cross_site(headers) {
        return Err(c.message(
            None,
            StatusCode::FORBIDDEN,
            "Refused",
            "This request came from another site.",
        ));
    }
    let session = Session::from_headers(headers, &tokens)
        .ok_or_else(|| Redirect::to("/console/login").into_response())?;
    #[derive(Deserialize)]
    struct Csrf {
        csrf: Option<String>,
    }
    let csrf: Csrf = serde_urlencoded::from_bytes(body).unwrap_or(Csrf { csrf: None });
    if !session.csrf_matches(csrf.csrf.as_deref()) {
        return Err(c.message(
            Some(&session),
            StatusCode::FORBIDDEN,
            "Refused",
            "The form's security token is missing or stale: reload the page and try again.",
        ));
    }
    if admin_only && session.role != Role::Admin {
        return Err(c.message(
            Some(&session),
            StatusCode::FORBIDDEN,
            "Not allowed",
            "You are logged in with the viewer token, which can look but not change anything.",
        ));
    }
    let value = serde_urlencoded::from_bytes(body).map_err(|e| {
        c.message(
            Some(&session),
            StatusCode::BAD_REQUEST,
            "Bad form",
            &format!("The form could not be read: {e}"),
        )
    })?;
    Ok((session, value))
}

/// The login page's query: where to go afterwards is always the overview.
#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login_page(State(c): State<Shared>, headers: HeaderMap) -> Response {
    let Some(tokens) = c.tokens() else {
        return off(&c);
    };
    if Session::from_headers(&headers, &tokens).is_some() {
        return Redirect::to("/console/").into_response();
    }
    c.page("login.html", None, json!({ "title": "Log in" }))
}

async fn login(
    State(c): State<Shared>,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    // The client's address, when the server records it (it does: `app` serves with it).
    let client = extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|ci| ci.0.ip());
    let Some(tokens) = c.tokens() else {
        return off(&c);
    };
    if c.cross_site(&headers) {
        return c.message(
            None,
            StatusCode::FORBIDDEN,
            "Refused",
            "This request came from another site.",
        );
    }
    let now = crate::clock::now_ms();
    if let Err(wait) = c.limiter.check(client, now) {
        let mut r = c.page(
            "login.html",
            None,
            json!({ "title": "Log in",
                "error": format!("Too many failed logins: try again in {wait} s.") }),
        );
        *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait));
        return r;
    }
    let token = serde_urlencoded::from_bytes::<LoginForm>(&body)
        .map(|f| f.token.trim().to_string())
        .unwrap_or_default();
    let Some(session) = tokens
        .role_of(&token)
        .and_then(|r| Session::open(&tokens, r))
    else {
        c.limiter.failed(client, now);
        tracing::warn!("console: a login with a wrong token was refused");
        let mut r = c.page(
            "login.html",
            None,
            json!({ "title": "Log in", "error": "That token is not right." }),
        );
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        return r;
    };
    tracing::info!(role = ?session.role, "console: logged in");
    let mut r = Redirect::to("/console/").into_response();
    if let Ok(v) = HeaderValue::from_str(&auth::set_cookie(Some(&session), c.secure())) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn logout(State(c): State<Shared>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Err(r) = form::<serde::de::IgnoredAny>(&c, &headers, &body, false) {
        return r;
    }
    let mut r = Redirect::to("/console/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&auth::set_cookie(None, c.secure())) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "console.css" => (CSS, "text/css; charset=utf-8"),
        "console.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "max-age=3600"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_only_on_loopback_without_a_configured_token() {
        let dir = tempfile::tempdir().unwrap();
        let public: std::net::SocketAddr = "0.0.0.0:8088".parse().unwrap();
        let local: std::net::SocketAddr = "127.0.0.1:8088".parse().unwrap();
        assert!(own_token(false, public, dir.path()).unwrap().is_none());
        assert!(own_token(true, local, dir.path()).unwrap().is_none());
        assert!(
            !dir.path().join(TOKEN_FILE).exists(),
            "no file made for them"
        );
        let (t, file) = own_token(false, local, dir.path()).unwrap().unwrap();
        // Kept across restarts.
        let (again, _) = own_token(false, local, dir.path()).unwrap().unwrap();
        assert_eq!(again.expose(), t.expose());
        // A file others may read is not trusted: a new token replaces it, private again.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
            let (fresh, _) = own_token(false, local, dir.path()).unwrap().unwrap();
            assert_ne!(fresh.expose(), t.expose());
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{mode:o}");
            // Nor is a link to elsewhere: it is replaced, and its target left alone.
            let target = dir.path().join("elsewhere");
            std::fs::write(&target, format!("{}\n", "a".repeat(32))).unwrap();
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
            std::fs::remove_file(&file).unwrap();
            std::os::unix::fs::symlink(&target, &file).unwrap();
            let (linked, _) = own_token(false, local, dir.path()).unwrap().unwrap();
            assert_ne!(linked.expose(), "a".repeat(32));
            assert!(!std::fs::symlink_metadata(&file)
                .unwrap()
                .file_type()
                .is_symlink());
            assert_eq!(
                std::fs::read_to_string(&target).unwrap().trim(),
                "a".repeat(32)
            );
        }
    }
}
