//! Webhook mode of a two-way bot (`two_way: { updates: webhook }`): Telegram posts each update to
//! `<public_url>/telegram/<bot id>` with the header `X-Telegram-Bot-Api-Secret-Token`, which is checked
//! in constant time. The secret is derived from the bot token (every instance derives the same one,
//! and it is not the token). Any instance behind the address takes any update: acting on one is
//! idempotent where it matters (an acknowledgement; a Mute press makes one silence), as with polling.
//! The lease holder (see [`super`]) registers the address with `setWebhook`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use sha2::{Digest, Sha256};
use teloxide_core::types::Update;
use tokio::sync::Mutex;

use super::handle::Handler;
use super::{two_way_bots, BotConf, Bots};
use crate::channel::telegram::Updates;
use crate::http_error::HttpError;
use crate::secret::{token_matches, Secret};

/// The path Telegram posts a bot's updates to (below `public_url`).
pub const PATH: &str = "/telegram/{bot}";
/// An update is a few kilobytes; a body beyond this is not one.
const MAX_UPDATE_BYTES: usize = 256 * 1024;
/// The secret header Telegram sends.
const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";

/// The secret Telegram presents for this bot: derived from its token, 64 hex digits (Telegram allows
/// 1–256 of `A-Za-z0-9_-`).
pub fn secret(conf: &BotConf) -> Secret {
    let mut h = Sha256::new();
    h.update(b"trackrelay telegram webhook\0");
    h.update(conf.token.expose().as_bytes());
    Secret(hex::encode(h.finalize()))
}

/// Where Telegram posts a bot's updates.
pub fn url(public_url: &str, conf: &BotConf) -> String {
    format!("{public_url}/telegram/{}", conf.id)
}

/// The state of the route: the bots, and a handler per bot once one was needed.
#[derive(Clone)]
struct Hook {
    bots: Bots,
    handlers: Arc<Mutex<HashMap<String, Arc<Handler>>>>,
    /// The update ids handled lately, per bot: Telegram posts an update again when it got no 2xx
    /// (a timeout, this instance stopping after acting): it is answered, not acted on twice.
    seen: Arc<std::sync::Mutex<HashMap<String, std::collections::VecDeque<u32>>>>,
}

/// Update ids remembered per bot.
const SEEN: usize = 1024;

/// The route Telegram posts to.
pub fn router(bots: Bots) -> Router {
    Router::new()
        .route(PATH, post(update))
        .layer(DefaultBodyLimit::max(MAX_UPDATE_BYTES))
        .with_state(Hook {
            bots,
            handlers: Arc::default(),
            seen: Arc::default(),
        })
}

async fn update(
    State(hook): State<Hook>,
    Path(bot): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let conf = two_way_bots(&hook.bots.shared.get().config)
        .remove(&bot)
        .filter(|c| c.two_way.updates == Updates::Webhook);
    let Some(conf) = conf else {
        return HttpError::new(StatusCode::NOT_FOUND, "not_found", "no such bot").into_response();
    };
    let presented = headers.get(SECRET_HEADER).map(|v| v.as_bytes());
    if !token_matches(presented, &secret(&conf)) {
        hook.bots.metrics.bot_refusal("webhook_secret");
        return HttpError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong X-Telegram-Bot-Api-Secret-Token",
        )
        .into_response();
    }
    let u: Update = match serde_json::from_slice(&body) {
        Ok(u) => u,
        Err(e) => {
            return HttpError::new(
                StatusCode::BAD_REQUEST,
                "invalid_update",
                format!("not a Telegram update: {e}"),
            )
            .into_response()
        }
    };
    let handler = match hook.handler(&conf).await {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(bot = %conf.id, error = %e, "cannot reach the Telegram bot");
            // Telegram delivers the update again later.
            return HttpError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the bot cannot answer now",
            )
            .into_response();
        }
    };
    // Checked and remembered at once: a post repeated while the first is still being handled (it
    // outlasted Telegram's patience) is not acted on twice.
    if !hook.first_time(&conf.id, u.id.0) {
        return StatusCode::OK.into_response();
    }
    handler.handle(u).await;
    StatusCode::OK.into_response()
}

impl Hook {
    /// Remembers update `id` of `bot`: `false` if it was seen already.
    fn first_time(&self, bot: &str, id: u32) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let ids = seen.entry(bot.to_string()).or_default();
        if ids.contains(&id) {
            return false;
        }
        ids.push_back(id);
        if ids.len() > SEEN {
            ids.pop_front();
        }
        true
    }

    /// The bot's handler, made on first use.
    async fn handler(&self, conf: &BotConf) -> Result<Arc<Handler>, String> {
        // A reload that changed the bot (token, API URL, settings, channels) gets a new handler.
        let mut map = self.handlers.lock().await;
        if let Some(h) = map.get(&conf.id).filter(|h| h.conf().same(conf)) {
            return Ok(h.clone());
        }
        let h = Arc::new(Handler::new(self.bots.clone(), conf).await?);
        map.insert(conf.id.clone(), h.clone());
        Ok(h)
    }
}
