//! Traccar's REST side: login (token or email + password) to a `JSESSIONID` session, the WebSocket
//! request carrying that cookie, the reads used for enrichment and backfill, and the account writes of
//! `trackrelay setup` (notifications, permissions, the user's attributes). Errors never carry the token
//! or password: reqwest errors lose their URL (the token is in its query) before they are kept.

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::header::{ACCEPT, COOKIE, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use super::notifications::Notification;
use super::SourceError;
use crate::event::{Device, Event, Geofence, Group, Position};
use crate::traccar_config::{Auth, TraccarSource};

/// Position ids asked for in one `GET /api/positions` (keeps the URL well under common limits).
const POSITIONS_PER_REQUEST: usize = 100;
/// How much of a refusal's text is kept: Traccar answers `<message> - <Exception> (<frames>)`.
const REASON_CHARS: usize = 200;

/// A logged-in session: the cookie to present.
#[derive(Clone)]
pub struct Session(String);

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Session(***)")
    }
}

/// REST client of one server.
pub struct Client {
    http: reqwest::Client,
    cfg: TraccarSource,
}

fn http_error(e: reqwest::Error, what: &str) -> SourceError {
    let e = e.without_url();
    if e.is_timeout() {
        SourceError::Timeout(what.to_string())
    } else {
        SourceError::Http(format!("{what}: {e}"))
    }
}

impl Client {
    /// A client with the source's timeout on every request.
    pub fn new(cfg: &TraccarSource) -> Result<Client, SourceError> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .build()
            .map_err(|e| SourceError::Http(e.without_url().to_string()))?;
        Ok(Client {
            http,
            cfg: cfg.clone(),
        })
    }

    fn url(&self, path: &str) -> reqwest::Url {
        self.cfg.url.join(path).expect("a relative path joins")
    }

    /// Logs in and returns the session cookie.
    pub async fn login(&self) -> Result<Session, SourceError> {
        let url = self.url("api/session");
        let req = match &self.cfg.auth {
            Auth::Token(t) => self.http.get(url).query(&[("token", t.expose())]),
            Auth::Password { email, password } => self
                .http
                .post(url)
                .form(&[("email", email.as_str()), ("password", password.expose())]),
        };
        let resp = req.send().await.map_err(|e| http_error(e, "login"))?;
        let status = resp.status();
        if matches!(
            status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::BAD_REQUEST
        ) {
            return Err(SourceError::Auth(match &self.cfg.auth {
                Auth::Token(_) => format!("the server refused the token ({status})"),
                Auth::Password { email, .. } => {
                    format!("wrong email or password for `{email}` ({status})")
                }
            }));
        }
        if !status.is_success() {
            return Err(SourceError::Http(format!(
                "login: server answered {status}"
            )));
        }
        resp.headers()
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| {
                let pair = v.split(';').next()?.trim();
                pair.starts_with("JSESSIONID=")
                    .then(|| Session(pair.to_string()))
            })
            .ok_or_else(|| SourceError::Http("login: no JSESSIONID cookie in the answer".into()))
    }

    async fn get<T: DeserializeOwned>(
        &self,
        s: &Session,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, SourceError> {
        let resp = self
            .http
            .get(self.url(path))
            .query(query)
            .header(COOKIE, &s.0)
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| http_error(e, path))?;
        match resp.status() {
            StatusCode::UNAUTHORIZED => Err(SourceError::Expired),
            st if !st.is_success() => Err(SourceError::Status {
                what: path.to_string(),
                status: st.as_u16(),
            }),
            _ => resp.json().await.map_err(|e| http_error(e, path)),
        }
    }

    /// `GET /api/devices`.
    pub async fn devices(&self, s: &Session) -> Result<Vec<Device>, SourceError> {
        self.get(s, "api/devices", &[]).await
    }

    /// `GET /api/groups`.
    pub async fn groups(&self, s: &Session) -> Result<Vec<Group>, SourceError> {
        self.get(s, "api/groups", &[]).await
    }

    /// `GET /api/geofences`.
    pub async fn geofences(&self, s: &Session) -> Result<Vec<Geofence>, SourceError> {
        self.get(s, "api/geofences", &[]).await
    }

    /// `GET /api/notifications`: the user's notifications (what decides which events the socket carries).
    pub async fn notifications(&self, s: &Session) -> Result<Vec<Notification>, SourceError> {
        self.get(s, "api/notifications", &[]).await
    }

    /// `GET /api/notifications` as the server wrote them, every field kept: what a `PUT` must send back
    /// (Traccar's `PUT` replaces the whole object).
    pub async fn notifications_json(&self, s: &Session) -> Result<Vec<Value>, SourceError> {
        self.get(s, "api/notifications", &[]).await
    }

    /// `GET /api/session` with the session: the logged-in user.
    pub async fn session_user(&self, s: &Session) -> Result<Value, SourceError> {
        self.get(s, "api/session", &[]).await
    }

    /// `GET /api/users/{id}`: the whole user object.
    pub async fn user(&self, s: &Session, id: i64) -> Result<Value, SourceError> {
        self.get(s, &format!("api/users/{id}"), &[]).await
    }

    /// `PUT /api/users/{id}` with the whole object: fields left out are reset by the server.
    pub async fn update_user(&self, s: &Session, user: &Value) -> Result<Value, SourceError> {
        let id = user["id"].as_i64().unwrap_or(0);
        self.write(s, Method::PUT, &format!("api/users/{id}"), user)
            .await
    }

    /// `POST /api/notifications`: the new notification as stored (with its id). Traccar links it to the
    /// calling user itself.
    pub async fn create_notification(
        &self,
        s: &Session,
        notification: &Value,
    ) -> Result<Value, SourceError> {
        self.write(s, Method::POST, "api/notifications", notification)
            .await
    }

    /// `PUT /api/notifications/{id}` with the whole object.
    pub async fn update_notification(
        &self,
        s: &Session,
        notification: &Value,
    ) -> Result<Value, SourceError> {
        let id = notification["id"].as_i64().unwrap_or(0);
        self.write(
            s,
            Method::PUT,
            &format!("api/notifications/{id}"),
            notification,
        )
        .await
    }

    /// `POST /api/permissions {"userId", "notificationId"}`: links a notification to a user. Traccar
    /// stores a second equal link again rather than refusing it: ask only for a missing one.
    pub async fn link_notification(
        &self,
        s: &Session,
        user_id: i64,
        notification_id: i64,
    ) -> Result<(), SourceError> {
        let body = json!({"userId": user_id, "notificationId": notification_id});
        self.write(s, Method::POST, "api/permissions", &body)
            .await
            .map(drop)
    }

    /// A JSON write; the answer's JSON (`null` for 204). A refusal keeps the server's reason.
    async fn write(
        &self,
        s: &Session,
        method: Method,
        path: &str,
        body: &Value,
    ) -> Result<Value, SourceError> {
        let what = format!("{method} /{path}");
        let resp = self
            .http
            .request(method, self.url(path))
            .header(COOKIE, &s.0)
            .header(ACCEPT, "application/json")
            .json(body)
            .send()
            .await
            .map_err(|e| http_error(e, &what))?;
        match resp.status() {
            StatusCode::UNAUTHORIZED => Err(SourceError::Expired),
            StatusCode::NO_CONTENT => Ok(Value::Null),
            st if !st.is_success() => {
                let text = resp.text().await.unwrap_or_default();
                Err(SourceError::Refused {
                    what,
                    status: st.as_u16(),
                    reason: reason(&text),
                })
            }
            _ => resp.json().await.map_err(|e| http_error(e, &what)),
        }
    }

    /// `GET /api/positions?id=..&id=..`: the positions of these ids, in batches. Traccar answers a whole
    /// batch with an error when one id is unknown (it reads each and fails on the first missing one), so
    /// a batch the server refused is asked for again one id at a time; ids it has no position for are
    /// left out. A server that does not answer, or a session that expired, is an error.
    pub async fn positions(&self, s: &Session, ids: &[i64]) -> Result<Vec<Position>, SourceError> {
        let mut out = Vec::with_capacity(ids.len());
        for batch in ids.chunks(POSITIONS_PER_REQUEST) {
            match self.positions_once(s, batch).await {
                Ok(found) => out.extend(found),
                Err(SourceError::Status { .. }) if batch.len() > 1 => {
                    for id in batch {
                        out.extend(self.positions_once(s, std::slice::from_ref(id)).await?);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// One request; an id the server refused counts as not found.
    async fn positions_once(&self, s: &Session, ids: &[i64]) -> Result<Vec<Position>, SourceError> {
        let q: Vec<(&str, String)> = ids.iter().map(|id| ("id", id.to_string())).collect();
        match self.get(s, "api/positions", &q).await {
            Err(SourceError::Status { status, .. }) if ids.len() == 1 && status != 401 => {
                tracing::debug!(source = %self.cfg.name, position_id = ids[0], status, "position not found");
                Ok(Vec::new())
            }
            r => r,
        }
    }
    /// `GET /api/reports/events` of one device between `from` and `to`.
    pub async fn events(
        &self,
        s: &Session,
        device: i64,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Event>, SourceError> {
        let t = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
        let q = [
            ("deviceId", device.to_string()),
            ("from", t(from)),
            ("to", t(to)),
        ];
        self.get(s, "api/reports/events", &q).await
    }

    /// The WebSocket request: `ws(s)://.../api/socket` with the session cookie and no `Origin`.
    pub fn socket_request(&self, s: &Session) -> Result<Request, SourceError> {
        let mut url = self.url("api/socket");
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        url.set_scheme(scheme)
            .map_err(|_| SourceError::Socket("cannot build the socket URL".into()))?;
        let mut req = url
            .as_str()
            .into_client_request()
            .map_err(|e| SourceError::Socket(e.to_string()))?;
        let cookie = HeaderValue::from_str(&s.0)
            .map_err(|_| SourceError::Socket("the session cookie is not a valid header".into()))?;
        req.headers_mut().insert(COOKIE.as_str(), cookie);
        Ok(req)
    }
}

/// The gist of a refusal's text: its first line, up to Traccar's ` - <Exception>` suffix, shortened.
fn reason(text: &str) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    let gist = line.split(" - ").next().unwrap_or(line);
    gist.chars().take(REASON_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use crate::traccar_config::RawTraccarSource;

    fn source(url: &str) -> TraccarSource {
        let raw: RawTraccarSource =
            serde_yaml::from_str(&format!("{{ name: s, url: '{url}', token: tok }}")).unwrap();
        TraccarSource::compile(raw, "traccar").unwrap()
    }

    #[test]
    fn a_refusal_keeps_traccar_s_message_only() {
        assert_eq!(
            reason(
                "Administrator access required - SecurityException (PermissionsService:150 < ...)"
            ),
            "Administrator access required"
        );
        assert_eq!(reason(""), "");
        assert_eq!(reason(&"x".repeat(500)).len(), REASON_CHARS);
        assert_eq!(reason("first\nsecond"), "first");
    }

    #[test]
    fn the_socket_request_carries_the_cookie_and_no_origin() {
        let c = Client::new(&source("https://gps.example.org/traccar")).unwrap();
        let req = c
            .socket_request(&Session("JSESSIONID=node0abc".into()))
            .unwrap();
        assert_eq!(
            req.uri().to_string(),
            "wss://gps.example.org/traccar/api/socket"
        );
        assert_eq!(req.headers()["cookie"], "JSESSIONID=node0abc");
        assert!(req.headers().get("origin").is_none());
        let c = Client::new(&source("http://127.0.0.1:8082")).unwrap();
        let req = c.socket_request(&Session("JSESSIONID=x".into())).unwrap();
        assert_eq!(req.uri().to_string(), "ws://127.0.0.1:8082/api/socket");
        // Debug output never shows the session or the token.
        assert_eq!(
            format!("{:?}", Session("JSESSIONID=x".into())),
            "Session(***)"
        );
        let Auth::Token(t) = &source("http://x").auth else {
            panic!()
        };
        assert_eq!(t, &Secret("tok".into()));
        let debug = format!("{:?}", source("http://x"));
        assert!(
            debug.contains("Token(***)") && !debug.contains("\"tok\""),
            "{debug}"
        );
    }
}
