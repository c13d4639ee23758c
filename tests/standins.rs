//! Tests of the loopback peers in `tests/support` themselves: if a peer is
//! wrong, every relay test built on it proves nothing.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::sink::{Mode, Sink};
use support::smtp::{self, SmtpServer};
use support::telegram::{self, TelegramStandIn};

const TOKEN: &str = "123456:TEST-token_abc";
const WAIT: Duration = Duration::from_secs(10);

async fn start_telegram() -> TelegramStandIn {
    TelegramStandIn::start(TOKEN, &["42", "-1001234567890", "@Alerts"]).await
}

/// POSTs JSON the way teloxide-core does and returns (status, body).
async fn call(tg: &TelegramStandIn, method: &str, params: Value) -> (u16, Value) {
    let url = format!("{}/bot{TOKEN}/{method}", tg.base_url());
    let response = reqwest::Client::new()
        .post(url)
        .json(&params)
        .send()
        .await
        .expect("request to the Telegram stand-in");
    let status = response.status().as_u16();
    let body = response
        .json()
        .await
        .expect("Telegram stand-in answers JSON");
    (status, body)
}

async fn assert_rejected(
    tg: &TelegramStandIn,
    method: &str,
    params: Value,
    status: u16,
    desc: &str,
) {
    let (got, body) = call(tg, method, params.clone()).await;
    assert_eq!(
        body,
        json!({"ok": false, "error_code": status, "description": desc}),
        "params: {params}"
    );
    assert_eq!(got, status, "HTTP status must equal error_code");
}

// --- Telegram: HTTP level -------------------------------------------------

#[tokio::test]
async fn telegram_accepts_a_plain_message() {
    let tg = start_telegram().await;
    let (status, body) = call(
        &tg,
        "SendMessage",
        json!({"chat_id": 42, "text": "Bike moved <fast> & far"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["ok"], true);
    let result = &body["result"];
    assert_eq!(result["message_id"], 1);
    assert_eq!(
        result["chat"],
        json!({"id": 42, "type": "private", "first_name": "Test"})
    );
    assert_eq!(result["text"], "Bike moved <fast> & far");
    assert!(result["date"].as_u64().unwrap() > 1_600_000_000);

    let msgs = tg.wait_for_messages(1, WAIT).await;
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(m.method, "sendMessage");
    assert_eq!(m.chat_id, "42");
    assert_eq!(m.text.as_deref(), Some("Bike moved <fast> & far"));
    assert_eq!(m.plain_text, m.text);
    assert_eq!(m.parse_mode, None);
    assert_eq!(
        (m.latitude, m.longitude, m.message_thread_id),
        (None, None, None)
    );
    assert_eq!(tg.requests(), 1);
    assert!(tg.rejections().is_empty());
}

#[tokio::test]
async fn telegram_html_device_name_escaped_is_accepted_and_decoded() {
    let tg = start_telegram().await;
    let text = "Lena&#x27;s &lt;Bike&gt; *1*_.";
    let (status, body) = call(
        &tg,
        "SendMessage",
        json!({"chat_id": "42", "text": text, "parse_mode": "HTML"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["text"], "Lena's <Bike> *1*_.");
    let m = &tg.messages()[0];
    assert_eq!(m.text.as_deref(), Some(text));
    assert_eq!(m.plain_text.as_deref(), Some("Lena's <Bike> *1*_."));
    assert_eq!(m.parse_mode.as_deref(), Some("HTML"));
}

#[tokio::test]
async fn telegram_html_with_raw_angle_brackets_is_rejected() {
    let tg = start_telegram().await;
    assert_rejected(
        &tg,
        "sendMessage",
        json!({"chat_id": 42, "text": "<b>Lena's <Bike></b>", "parse_mode": "HTML"}),
        400,
        "Bad Request: can't parse entities: Unsupported start tag \"bike\" at byte offset 10",
    )
    .await;
    assert!(tg.messages().is_empty());
    assert_eq!(tg.requests(), 1);
    assert_eq!(tg.rejections().len(), 1);
}

#[tokio::test]
async fn telegram_markdown_v2_requires_escapes() {
    let tg = start_telegram().await;
    assert_rejected(
        &tg,
        "sendMessage",
        json!({"chat_id": 42, "text": "Battery low.", "parse_mode": "MarkdownV2"}),
        400,
        "Bad Request: can't parse entities: Character '.' is reserved and must be escaped with the preceding '\\'",
    )
    .await;
    let escaped = r"Lena's \<Bike\> \*1\*\_\.";
    let (status, body) = call(
        &tg,
        "sendMessage",
        json!({"chat_id": 42, "text": escaped, "parse_mode": "MarkdownV2"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let m = &tg.wait_for_messages(1, WAIT).await[0];
    assert_eq!(m.text.as_deref(), Some(escaped));
    assert_eq!(m.plain_text.as_deref(), Some("Lena's <Bike> *1*_."));
}

#[tokio::test]
async fn telegram_wrong_token_and_unknown_method() {
    let tg = start_telegram().await;
    let client = reqwest::Client::new();
    let wrong = client
        .post(format!("{}/bot999:WRONG/sendMessage", tg.base_url()))
        .json(&json!({"chat_id": 42, "text": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    assert_eq!(
        wrong.json::<Value>().await.unwrap(),
        json!({"ok": false, "error_code": 401, "description": "Unauthorized"})
    );
    assert_rejected(&tg, "sendCarrierPigeon", json!({}), 404, "Not Found").await;
    let not_bot_path = client
        .get(format!("{}/hello", tg.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(not_bot_path.status().as_u16(), 404);
    assert_eq!(tg.requests(), 3);
    assert_eq!(
        tg.rejections(),
        vec![
            (401, "Unauthorized".to_owned()),
            (404, "Not Found".to_owned()),
            (404, "Not Found".to_owned()),
        ]
    );
}

#[tokio::test]
async fn telegram_chat_checks() {
    let tg = start_telegram().await;
    assert_rejected(
        &tg,
        "sendMessage",
        json!({"text": "x"}),
        400,
        "Bad Request: chat_id is empty",
    )
    .await;
    assert_rejected(
        &tg,
        "sendMessage",
        json!({"chat_id": 43, "text": "x"}),
        400,
        "Bad Request: chat not found",
    )
    .await;
    assert_rejected(
        &tg,
        "sendMessage",
        json!({"chat_id": "@nobody", "text": "x"}),
        400,
        "Bad Request: chat not found",
    )
    .await;
    // Known chats match as numbers, numeric strings and case-insensitive usernames.
    for chat in [
        json!(-1001234567890_i64),
        json!("-1001234567890"),
        json!("@alerts"),
    ] {
        let (status, body) = call(&tg, "sendMessage", json!({"chat_id": chat, "text": "x"})).await;
        assert_eq!(status, 200, "{chat}: {body}");
    }
    let msgs = tg.wait_for_messages(3, WAIT).await;
    assert_eq!(msgs[0].chat_id, "-1001234567890");
    assert_eq!(msgs[1].chat_id, "-1001234567890");
    assert_eq!(msgs[2].chat_id, "@alerts");
    tg.add_chat("43");
    let (status, _) = call(&tg, "sendMessage", json!({"chat_id": 43, "text": "x"})).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn telegram_empty_and_too_long_texts() {
    let tg = start_telegram().await;
    let empty = "Bad Request: message text is empty";
    assert_rejected(&tg, "sendMessage", json!({"chat_id": 42}), 400, empty).await;
    assert_rejected(
        &tg,
        "sendMessage",
        json!({"chat_id": 42, "text": ""}),
        400,
        empty,
    )
    .await;
    assert_rejected(
        &tg,
        "sendMessage",
        json!({"chat_id": 42, "text": " \n "}),
        400,
        empty,
    )
    .await;
    assert_rejected(
        &tg,
        "sendMessage",
        json!({"chat_id": 42, "text": "<b> </b>", "parse_mode": "html"}),
        400,
        empty,
    )
    .await;

    let too_long = "Bad Request: message is too long";
    let limit = "a".repeat(4096);
    let (status, _) = call(&tg, "sendMessage", json!({"chat_id": 42, "text": limit})).await;
    assert_eq!(status, 200);
    assert_rejected(
        &tg,
        "sendMessage",
        json!({"chat_id": 42, "text": "a".repeat(4097)}),
        400,
        too_long,
    )
    .await;
    // The limit counts UTF-16 code units: 2049 emoji are 4098 units.
    assert_rejected(
        &tg,
        "sendMessage",
        json!({"chat_id": 42, "text": "🚲".repeat(2049)}),
        400,
        too_long,
    )
    .await;
    // ...and applies after entity parsing: markup does not count.
    let (status, body) = call(
        &tg,
        "sendMessage",
        json!({"chat_id": 42, "text": format!("<b>{}</b>", "a".repeat(4096)), "parse_mode": "HTML"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_rejected(
        &tg,
        "sendMessage",
        json!({"chat_id": 42, "text": "x", "parse_mode": "Textile"}),
        400,
        "Bad Request: unsupported parse_mode",
    )
    .await;
    assert_eq!(tg.messages().len(), 2);
}

#[tokio::test]
async fn telegram_429_carries_retry_after_and_then_recovers() {
    let tg = start_telegram().await;
    tg.fail_next_with_429(2, 3);
    for _ in 0..2 {
        let (status, body) = call(&tg, "sendMessage", json!({"chat_id": 42, "text": "x"})).await;
        assert_eq!(status, 429);
        assert_eq!(
            body,
            json!({
                "ok": false,
                "error_code": 429,
                "description": "Too Many Requests: retry after 3",
                "parameters": {"retry_after": 3}
            })
        );
    }
    let (status, _) = call(
        &tg,
        "sendLocation",
        json!({"chat_id": 42, "latitude": 1, "longitude": 2}),
    )
    .await;
    assert_eq!(status, 200);
    let log = tg.rejection_log();
    assert_eq!(log.len(), 2);
    assert!(log
        .iter()
        .all(|r| r.status == 429 && r.retry_after == Some(3)));
    assert!(log[0].received_at <= log[1].received_at);
    assert!(log[1].received_at <= tg.messages()[0].received_at);

    tg.fail_next_with_status(1, 502, "Bad Gateway");
    assert_rejected(
        &tg,
        "sendMessage",
        json!({"chat_id": 42, "text": "x"}),
        502,
        "Bad Gateway",
    )
    .await;
}

#[tokio::test]
async fn telegram_location_checks() {
    let tg = start_telegram().await;
    let (status, body) = call(
        &tg,
        "SendLocation",
        json!({"chat_id": 42, "latitude": 52.52, "longitude": -13.405}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["result"]["location"],
        json!({"latitude": 52.52, "longitude": -13.405})
    );
    let m = &tg.messages()[0];
    assert_eq!(m.method, "sendLocation");
    assert_eq!((m.latitude, m.longitude), (Some(52.52), Some(-13.405)));
    assert_eq!(m.text, None);

    let cases = [
        (
            json!({"chat_id": 42, "latitude": 91, "longitude": 0}),
            "Bad Request: wrong latitude",
        ),
        (
            json!({"chat_id": 42, "latitude": -90.5, "longitude": 0}),
            "Bad Request: wrong latitude",
        ),
        (
            json!({"chat_id": 42, "latitude": 0, "longitude": 180.01}),
            "Bad Request: wrong longitude",
        ),
        (
            json!({"chat_id": 42, "latitude": "north", "longitude": 0}),
            "Bad Request: wrong latitude",
        ),
        (
            json!({"chat_id": 42, "longitude": 0}),
            "Bad Request: latitude is empty",
        ),
        (
            json!({"chat_id": 42, "latitude": 0}),
            "Bad Request: longitude is empty",
        ),
        (
            json!({"chat_id": 7, "latitude": 0, "longitude": 0}),
            "Bad Request: chat not found",
        ),
    ];
    for (params, desc) in cases {
        assert_rejected(&tg, "sendLocation", params, 400, desc).await;
    }
    // Boundaries are valid coordinates.
    let (status, _) = call(
        &tg,
        "sendLocation",
        json!({"chat_id": 42, "latitude": -90, "longitude": 180}),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn telegram_accepts_form_and_query_params_and_echoes_thread() {
    let tg = start_telegram().await;
    let client = reqwest::Client::new();
    let form = client
        .post(format!("{}/bot{TOKEN}/sendMessage", tg.base_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("chat_id=-1001234567890&text=Hallo+W%C3%B6rld+%26+more&message_thread_id=7")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status().as_u16(), 200);
    let body: Value = form.json().await.unwrap();
    assert_eq!(body["result"]["message_thread_id"], 7);
    assert_eq!(body["result"]["is_topic_message"], true);
    assert_eq!(body["result"]["chat"]["type"], "supergroup");

    let query = client
        .get(format!(
            "{}/bot{TOKEN}/sendLocation?chat_id=42&latitude=1.5&longitude=2.5",
            tg.base_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(query.status().as_u16(), 200);

    let msgs = tg.wait_for_messages(2, WAIT).await;
    assert_eq!(msgs[0].text.as_deref(), Some("Hallo Wörld & more"));
    assert_eq!(msgs[0].message_thread_id, Some(7));
    assert_eq!(msgs[1].latitude, Some(1.5));
    assert_eq!(
        msgs[1].params.get("longitude").map(String::as_str),
        Some("2.5")
    );

    assert_rejected(
        &tg,
        "sendMessage",
        json!({"chat_id": 42, "text": "x", "message_thread_id": "general"}),
        400,
        "Bad Request: message thread not found",
    )
    .await;
}

#[tokio::test]
#[should_panic(expected = "expected at least 2 accepted message(s)")]
async fn telegram_wait_for_messages_panics_with_what_arrived() {
    let tg = start_telegram().await;
    call(
        &tg,
        "sendMessage",
        json!({"chat_id": 42, "text": "only one"}),
    )
    .await;
    tg.wait_for_messages(2, Duration::from_millis(100)).await;
}

#[tokio::test]
async fn telegram_wait_helpers_count_rejections_and_prove_quiet() {
    let tg = start_telegram().await;
    call(&tg, "sendMessage", json!({"chat_id": 42, "text": "ok"})).await;
    call(&tg, "sendMessage", json!({"chat_id": 1, "text": "no chat"})).await;
    assert_eq!(tg.wait_for_requests(2, WAIT).await, 2);
    tg.assert_stays_at(1, Duration::from_millis(200)).await;
}

#[tokio::test]
#[should_panic(expected = "expected no more than 0 message(s)")]
async fn telegram_assert_stays_at_catches_extra_messages() {
    let tg = start_telegram().await;
    call(
        &tg,
        "sendMessage",
        json!({"chat_id": 42, "text": "one too many"}),
    )
    .await;
    tg.assert_stays_at(0, Duration::from_secs(5)).await;
}

/// The strongest realism check: the client library the relay uses parses our
/// answers into its own types and maps our errors to the right variants.
#[tokio::test]
async fn telegram_answers_parse_in_teloxide_core() {
    use teloxide_core::prelude::*;
    use teloxide_core::types::{ChatId, MessageId, ParseMode, Recipient, ThreadId};
    use teloxide_core::{ApiError, RequestError};

    let tg = start_telegram().await;
    let url = reqwest::Url::parse(&tg.base_url()).unwrap();
    let bot = Bot::new(TOKEN).set_api_url(url.clone());

    let me = bot.get_me().await.expect("getMe parses as Me");
    assert!(me.is_bot);
    assert_eq!(me.user.id.0, 123456);

    let msg = bot
        .send_message(ChatId(42), "<b>Lena&#x27;s</b> bike")
        .parse_mode(ParseMode::Html)
        .await
        .expect("sendMessage parses as Message");
    assert_eq!(msg.text(), Some("Lena's bike"));
    assert_eq!(msg.chat.id, ChatId(42));
    assert!(msg.chat.is_private());

    let topic = bot
        .send_message(ChatId(-1001234567890), "in a topic")
        .message_thread_id(ThreadId(MessageId(5)))
        .await
        .expect("topic message parses");
    assert_eq!(topic.thread_id, Some(ThreadId(MessageId(5))));
    assert!(topic.is_topic_message);
    assert!(topic.chat.is_supergroup());

    let channel = bot
        .send_message(Recipient::ChannelUsername("@Alerts".into()), "to a channel")
        .await
        .expect("channel post parses");
    assert!(channel.chat.is_channel());

    let loc = bot
        .send_location(ChatId(42), 52.52, 13.405)
        .await
        .expect("location parses");
    let l = loc.location().expect("location in message");
    assert_eq!((l.latitude, l.longitude), (52.52, 13.405));

    let m = tg.wait_for_messages(4, WAIT).await;
    assert_eq!(
        m.iter().map(|m| m.method.as_str()).collect::<Vec<_>>(),
        ["sendMessage", "sendMessage", "sendMessage", "sendLocation"]
    );
    assert_eq!(m[2].chat_id, "@Alerts");

    let err = bot.send_message(ChatId(7), "x").await.unwrap_err();
    assert!(
        matches!(err, RequestError::Api(ApiError::ChatNotFound)),
        "{err:?}"
    );
    let err = bot.send_message(ChatId(42), "").await.unwrap_err();
    assert!(
        matches!(err, RequestError::Api(ApiError::MessageTextIsEmpty)),
        "{err:?}"
    );
    let err = bot
        .send_message(ChatId(42), "a".repeat(4097))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RequestError::Api(ApiError::MessageIsTooLong)),
        "{err:?}"
    );
    let err = bot
        .send_message(ChatId(42), "1.5")
        .parse_mode(ParseMode::MarkdownV2)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RequestError::Api(ApiError::CantParseEntities(_))),
        "{err:?}"
    );
    tg.fail_next_with_429(1, 7);
    let err = bot.send_message(ChatId(42), "x").await.unwrap_err();
    match err {
        RequestError::RetryAfter(secs) => assert_eq!(secs.seconds(), 7),
        other => panic!("expected RetryAfter, got {other:?}"),
    }
    let err = Bot::new("1:wrong")
        .set_api_url(url)
        .send_message(ChatId(42), "x")
        .await
        .unwrap_err();
    assert!(
        matches!(err, RequestError::Api(ApiError::InvalidToken)),
        "{err:?}"
    );
}

// --- Telegram: entity parsers ---------------------------------------------

#[test]
fn html_parser_accepts_telegram_markup() {
    let ok = |input: &str, plain: &str| {
        assert_eq!(
            telegram::parse_html(input).as_deref(),
            Ok(plain),
            "input: {input}"
        );
    };
    ok("plain", "plain");
    ok(
        "<b>bold</b> <strong>s</strong> <i>i</i><em>e</em><u>u</u><ins>n</ins>",
        "bold s ieun",
    );
    ok(
        "<s>a</s><strike>b</strike><del>c</del><tg-spoiler>d</tg-spoiler>",
        "abcd",
    );
    ok("<span class=\"tg-spoiler\">hidden</span>", "hidden");
    ok(
        "<a href=\"https://example.com/?a=1&amp;b=2\">map</a>",
        "map",
    );
    ok("<a href='https://x.test'>x</a>", "x");
    ok(
        "<code>a &lt; b</code><pre><code class=\"language-rust\">fn</code></pre>",
        "a < bfn",
    );
    ok(
        "<blockquote expandable>q</blockquote><blockquote>r</blockquote>",
        "qr",
    );
    ok(
        "<tg-emoji emoji-id=\"5368324170671202286\">👍</tg-emoji>",
        "👍",
    );
    ok("<B>upper</b>", "upper");
    ok("<b>closed by </>", "closed by ");
    ok(
        "&lt;&gt;&amp;&quot;&#39;&#x27;&#X41;&#128690;",
        "<>&\"''A🚲",
    );
    ok("&lt without semicolon", "< without semicolon");
    ok("AT&T & co", "AT&T & co");
    ok("&#0; &#; &#xZZ;", "&#0; &#; &#xZZ;");
}

#[test]
fn html_parser_rejects_what_telegram_rejects() {
    let err = |input: &str, reason: &str| {
        assert_eq!(
            telegram::parse_html(input),
            Err(reason.to_owned()),
            "input: {input}"
        );
    };
    err(
        "Lena's <Bike>",
        "Unsupported start tag \"bike\" at byte offset 7",
    );
    err("a < b", "Unsupported start tag \"\" at byte offset 2");
    err("a <", "Unclosed start tag at byte offset 2");
    err(
        "<b>bold",
        "Can't find end tag corresponding to start tag \"b\"",
    );
    err(
        "<b><i>x</b></i>",
        "Unmatched end tag at byte offset 7, expected \"</i>\", found \"</b>\"",
    );
    err("x</b>", "Unexpected end tag at byte offset 1");
    err(
        "<span>x</span>",
        "Tag \"span\" must have class \"tg-spoiler\" at byte offset 0",
    );
    err("<br/>", "Unsupported start tag \"br/\" at byte offset 0");
    err(
        "<a href=https://x>x</a>",
        "Unexpected end of name token at byte offset 8",
    );
    err(
        "<b class>x</b>",
        "Expected equal sign in declaration of an attribute of the tag \"b\" at byte offset 0",
    );
    err(
        "<tg-emoji>x</tg-emoji>",
        "Invalid custom emoji identifier specified",
    );
    let apos = telegram::parse_html("Lena&apos;s").unwrap_err();
    assert!(
        apos.starts_with("Unsupported HTML entity \"&apos;\" at byte offset 4"),
        "{apos}"
    );
}

#[test]
fn markdown_v2_parser() {
    let ok = |input: &str, plain: &str| {
        assert_eq!(
            telegram::parse_markdown_v2(input).as_deref(),
            Ok(plain),
            "input: {input}"
        );
    };
    ok(
        "*bold* _italic_ __under__ ~strike~ ||spoiler||",
        "bold italic under strike spoiler",
    );
    ok("*bold _nested_ bold*", "bold nested bold");
    ok("[map](https://maps.test/?q=1\\)2)", "map");
    ok("[https://x\\.test]", "https://x.test");
    ok("`code with . and - inside`", "code with . and - inside");
    ok("```rust\nlet x = 1.0;\n```", "let x = 1.0;\n");
    ok("```\nplain pre!\n```", "plain pre!\n");
    ok(
        r"\_\*\[\]\(\)\~\`\>\#\+\-\=\|\{\}\.\!\\",
        r"_*[]()~`>#+-=|{}.!\",
    );
    ok(">quoted line\n>second", "quoted line\nsecond");
    ok("![👍](tg://emoji?id=5368324170671202286)", "👍");
    ok("Größe 🚲", "Größe 🚲");

    let err = |input: &str, reason: &str| {
        assert_eq!(
            telegram::parse_markdown_v2(input),
            Err(reason.to_owned()),
            "input: {input}"
        );
    };
    let reserved = |c: char| {
        format!("Character '{c}' is reserved and must be escaped with the preceding '\\'")
    };
    for c in ['.', '!', '-', '#', '+', '=', '{', '}', '(', ')', ']', '|'] {
        err(&format!("a{c}b"), &reserved(c));
    }
    err("a > b", &reserved('>'));
    err("*bold", "Can't find end of Bold entity at byte offset 0");
    err("x _it", "Can't find end of Italic entity at byte offset 2");
    err("`code", "Can't find end of Code entity at byte offset 0");
    err("```pre", "Can't find end of Pre entity at byte offset 0");
    err(
        "[link](http://x",
        "Can't find end of a URL at byte offset 7",
    );
    err("[link", "Can't find end of TextUrl entity at byte offset 0");
}

#[test]
fn legacy_markdown_parser() {
    assert_eq!(
        telegram::parse_markdown_legacy("*bold* _it_ `c` [l](http://x). Done!").as_deref(),
        Ok("bold it c l. Done!")
    );
    assert_eq!(
        telegram::parse_markdown_legacy(r"my\_bike").as_deref(),
        Ok("my_bike")
    );
    assert_eq!(
        telegram::parse_markdown_legacy("my_bike"),
        Err("Can't find end of the entity starting at byte offset 2".to_owned())
    );
}

// --- HTTP sink ----------------------------------------------------------

async fn post(client: &reqwest::Client, url: &str, key: &str) -> reqwest::Response {
    client
        .post(url)
        .header("Idempotency-Key", key)
        .header("Content-Type", "application/json")
        .body(format!("{{\"key\":\"{key}\"}}"))
        .send()
        .await
        .expect("request to the sink")
}

#[tokio::test]
async fn sink_records_requests() {
    let sink = Sink::start().await;
    let client = reqwest::Client::new();
    let response = post(&client, &sink.url("/hook?x=1"), "k1").await;
    assert_eq!(response.status().as_u16(), 200);
    client.put(sink.url("/other")).send().await.unwrap();

    let recs = sink.wait_for(2, WAIT).await;
    assert_eq!(recs[0].method, "POST");
    assert_eq!(recs[0].path, "/hook");
    assert_eq!(recs[0].query.as_deref(), Some("x=1"));
    assert_eq!(recs[0].header("idempotency-key"), Some("k1"));
    assert_eq!(recs[0].header("Content-Type"), Some("application/json"));
    assert!(recs[0]
        .headers
        .iter()
        .all(|(k, _)| *k == k.to_ascii_lowercase()));
    assert_eq!(recs[0].json(), json!({"key": "k1"}));
    assert_eq!(recs[0].status, 200);
    assert!(recs[0].received_at <= recs[1].received_at);
    assert_eq!(recs[1].method, "PUT");
    assert!(recs[1].body.is_empty());
    assert_eq!(
        sink.url("/a"),
        format!("http://127.0.0.1:{}/a", sink.port())
    );
}

#[tokio::test]
async fn sink_status_modes() {
    let sink = Sink::start().await;
    let client = reqwest::Client::new();
    let url = sink.url("/hook");

    sink.set_mode(Mode::Status(503));
    assert_eq!(post(&client, &url, "a").await.status().as_u16(), 503);

    sink.set_mode(Mode::StatusRetryAfter(429, 7));
    let r = post(&client, &url, "b").await;
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers()["retry-after"], "7");

    sink.set_mode(Mode::FailEvery(3));
    let mut statuses = Vec::new();
    for i in 0..6 {
        statuses.push(
            post(&client, &url, &format!("e{i}"))
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 200, 500, 200, 200, 500]);

    sink.set_mode(Mode::Ok);
    assert_eq!(post(&client, &url, "c").await.status().as_u16(), 200);
    let recorded: Vec<u16> = sink.requests().iter().map(|r| r.status).collect();
    assert_eq!(recorded, [503, 429, 200, 200, 500, 200, 200, 500, 200]);
    assert_eq!(sink.successful().len(), 5);
}

#[tokio::test]
async fn sink_random_failures_are_deterministic() {
    async fn run(percent: u8, seed: u64) -> Vec<u16> {
        let sink = Sink::start().await;
        sink.set_mode(Mode::FailRandom { percent, seed });
        let client = reqwest::Client::new();
        let mut out = Vec::new();
        for i in 0..100 {
            out.push(
                post(&client, &sink.url("/r"), &i.to_string())
                    .await
                    .status()
                    .as_u16(),
            );
        }
        out
    }
    let a = run(30, 7).await;
    assert_eq!(a, run(30, 7).await, "same seed, same sequence");
    assert_ne!(a, run(30, 8).await, "another seed, another sequence");
    let failures = a.iter().filter(|&&s| s == 500).count();
    assert!(
        (15..=45).contains(&failures),
        "about 30% should fail, got {failures}"
    );
    assert!(run(0, 1).await.iter().all(|&s| s == 200));
    assert!(run(100, 1).await.iter().all(|&s| s == 500));
}

#[tokio::test]
async fn sink_delay_mode_is_slow() {
    let sink = Sink::start().await;
    sink.set_mode(Mode::Delay(Duration::from_millis(300)));
    let client = reqwest::Client::new();
    let started = Instant::now();
    assert_eq!(
        post(&client, &sink.url("/slow"), "d")
            .await
            .status()
            .as_u16(),
        200
    );
    assert!(started.elapsed() >= Duration::from_millis(300));

    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let err = impatient.post(sink.url("/slow")).send().await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    sink.wait_for(2, WAIT).await;
}

#[tokio::test]
async fn sink_counts_distinct_keys_of_successful_requests() {
    let sink = Sink::start().await;
    let client = reqwest::Client::new();
    let url = sink.url("/hook");
    post(&client, &url, "a").await;
    post(&client, &url, "a").await; // a retry of the same event
    sink.set_mode(Mode::Status(500));
    post(&client, &url, "b").await; // failed: not delivered
    sink.set_mode(Mode::Ok);
    post(&client, &url, "c").await;
    client.post(&url).send().await.unwrap(); // no key at all
    assert_eq!(sink.requests().len(), 5);
    assert_eq!(sink.distinct_header_values("idempotency-key"), 2);
    assert_eq!(sink.distinct_header_values("Idempotency-Key"), 2);
    assert_eq!(sink.wait_for_successful(4, WAIT).await.len(), 4);
}

#[tokio::test]
async fn sink_outage_and_restart_on_same_port() {
    let sink = Sink::start().await;
    let port = sink.port();
    // One client throughout, so a kept-alive connection would be reused if
    // shutdown left it open.
    let client = reqwest::Client::new();
    let url = sink.url("/hook");
    assert_eq!(post(&client, &url, "before").await.status().as_u16(), 200);

    sink.shutdown().await;
    assert!(!sink.is_running());
    let err = reqwest::Client::new().post(&url).send().await.unwrap_err();
    assert!(
        err.is_connect(),
        "a stopped sink must refuse connections: {err:?}"
    );

    // A fresh sink on the same port.
    let fresh = Sink::start_on(port).await;
    assert_eq!(post(&client, &url, "fresh").await.status().as_u16(), 200);
    assert_eq!(fresh.requests().len(), 1);
    fresh.shutdown().await;

    // Or the same handle, records kept.
    sink.restart().await;
    assert!(sink.is_running());
    assert_eq!(post(&client, &url, "after").await.status().as_u16(), 200);
    let keys: Vec<_> = sink
        .requests()
        .iter()
        .map(|r| r.header("idempotency-key").unwrap().to_owned())
        .collect();
    assert_eq!(keys, ["before", "after"]);
}

#[tokio::test]
async fn sink_shutdown_cuts_delayed_requests_short() {
    let sink = Sink::start().await;
    sink.set_mode(Mode::Delay(Duration::from_secs(60)));
    let client = reqwest::Client::new();
    let url = sink.url("/slow");
    let pending = tokio::spawn(async move { client.post(url).send().await });
    sink.wait_for(1, WAIT).await;
    let started = Instant::now();
    sink.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let answered = pending
        .await
        .unwrap()
        .expect("delayed request gets an answer");
    assert_eq!(answered.status().as_u16(), 503);
    assert_eq!(sink.requests()[0].status, 503);
}

#[tokio::test]
#[should_panic(expected = "expected at least 1 request(s)")]
async fn sink_wait_for_panics_on_timeout() {
    let sink = Sink::start().await;
    sink.wait_for(1, Duration::from_millis(100)).await;
}

#[tokio::test]
async fn sink_assert_stays_at_passes_when_quiet() {
    let sink = Sink::start().await;
    post(&reqwest::Client::new(), &sink.url("/once"), "k").await;
    sink.assert_stays_at(1, Duration::from_millis(200)).await;
}

// --- SMTP ---------------------------------------------------------------

fn mailer(port: u16) -> lettre::AsyncSmtpTransport<lettre::Tokio1Executor> {
    lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .timeout(Some(Duration::from_secs(10)))
        .build()
}

fn alert_mail(subject: &str, text: &str, html: &str, message_id: &str) -> lettre::Message {
    lettre::Message::builder()
        .from("Trackrelay <relay@example.test>".parse().unwrap())
        .to("Lena Müller <lena@example.test>".parse().unwrap())
        .cc("ops@example.test".parse().unwrap())
        .subject(subject)
        .message_id(Some(message_id.to_owned()))
        .multipart(lettre::message::MultiPart::alternative_plain_html(
            text.to_owned(),
            html.to_owned(),
        ))
        .unwrap()
}

#[tokio::test]
async fn smtp_receives_multipart_mail_from_lettre() {
    use lettre::AsyncTransport;

    let server = SmtpServer::start();
    let subject = "Größenänderung: Lenas Fahrrad hat den Bereich „Zuhause“ verlassen – bitte prüfen, überall!";
    // Mostly ASCII with a few umlauts: lettre picks quoted-printable.
    let text = format!(
        "Lenas Fahrrad hat Zuhause verlassen.\n.a line starting with a dot\nLänge: {}\n",
        "x".repeat(100)
    );
    let html = "<p>Lenas <b>Fahrrad</b> hat Zuhause verlassen.</p>\n".to_owned();
    mailer(server.port())
        .send(alert_mail(subject, &text, &html, "<evt-1@trackrelay.test>"))
        .await
        .expect("lettre delivers to the stand-in");

    let mails = server.wait_for(1, WAIT).await;
    let m = &mails[0];
    assert_eq!(m.from, "relay@example.test");
    assert_eq!(m.to, ["lena@example.test", "ops@example.test"]);
    assert_eq!(m.subject.as_deref(), Some(subject));
    assert_eq!(m.message_id.as_deref(), Some("<evt-1@trackrelay.test>"));
    assert_eq!(m.text.as_deref(), Some(text.as_str()));
    assert_eq!(m.html.as_deref(), Some(html.as_str()));
    assert_eq!(m.header("from"), Some("Trackrelay <relay@example.test>"));
    assert!(m.header("To").unwrap().contains("Lena Müller"));
    assert!(m
        .header("content-type")
        .unwrap()
        .starts_with("multipart/alternative"));
    let raw = String::from_utf8_lossy(&m.raw);
    assert!(raw.contains("=?utf-8?"), "subject was sent encoded:\n{raw}");
    assert!(
        raw.contains("quoted-printable"),
        "expected a QP part:\n{raw}"
    );
}

#[tokio::test]
async fn smtp_decodes_base64_parts() {
    use lettre::AsyncTransport;

    let server = SmtpServer::start();
    // Mostly non-ASCII: lettre picks base64 for this.
    let text = "Größe äöü ÄÖÜ ß €€€ ✓✓✓ 🚲🚲🚲 ".repeat(20);
    let html = format!("<p>{text}</p>");
    mailer(server.port())
        .send(alert_mail(
            "🚲 Alarm",
            &text,
            &html,
            "<evt-2@trackrelay.test>",
        ))
        .await
        .unwrap();
    let m = &server.wait_for(1, WAIT).await[0];
    let raw = String::from_utf8_lossy(&m.raw);
    assert!(
        raw.contains("Content-Transfer-Encoding: base64"),
        "expected base64:\n{raw}"
    );
    assert_eq!(m.subject.as_deref(), Some("🚲 Alarm"));
    assert_eq!(m.text.as_deref(), Some(text.as_str()));
    assert_eq!(m.html.as_deref(), Some(html.as_str()));
}

#[tokio::test]
async fn smtp_scripted_failures_and_unavailability() {
    use lettre::AsyncTransport;

    let server = SmtpServer::start();
    let mail = || alert_mail("Alarm", "text", "<p>html</p>", "<evt-3@trackrelay.test>");
    let transport = mailer(server.port());

    server.fail_next(1, 451, "Try again later");
    let err = transport.send(mail()).await.unwrap_err();
    assert!(err.is_transient(), "451 is transient: {err:?}");
    assert_eq!(server.rejected(), 1);
    assert!(server.mails().is_empty());
    transport
        .send(mail())
        .await
        .expect("second attempt accepted");

    server.set_unavailable(true);
    assert!(mailer(server.port()).send(mail()).await.is_err());
    // A pooled session that already passed EHLO is refused at MAIL FROM.
    assert!(transport.send(mail()).await.is_err());
    server.set_unavailable(false);
    mailer(server.port())
        .send(mail())
        .await
        .expect("back in service");
    assert_eq!(server.wait_for(2, WAIT).await.len(), 2);
}

#[tokio::test]
async fn smtp_server_started_late_on_a_reserved_port() {
    use lettre::AsyncTransport;

    let port = smtp::free_port();
    let mail = alert_mail("Alarm", "text", "<p>html</p>", "<evt-4@trackrelay.test>");
    let err = mailer(port).send(mail.clone()).await.unwrap_err();
    assert!(!err.is_permanent(), "nothing listening yet: {err:?}");

    let server = SmtpServer::start_on(port);
    assert_eq!(server.port(), port);
    mailer(port)
        .send(mail)
        .await
        .expect("delivered once the server is up");
    assert_eq!(server.wait_for(1, WAIT).await.len(), 1);
}

#[test]
fn mime_helpers_decode_what_mailers_send() {
    assert_eq!(smtp::decode_rfc2047("=?utf-8?b?R3LDtsOfZQ==?="), "Größe");
    assert_eq!(
        smtp::decode_rfc2047("=?UTF-8?Q?Gr=C3=B6=C3=9Fe_da?="),
        "Größe da"
    );
    assert_eq!(
        smtp::decode_rfc2047("=?utf-8?b?R3LDtg==?= =?utf-8?b?w59l?= plain =?iso-8859-1?q?=E4?="),
        "Größe plain ä"
    );
    assert_eq!(
        smtp::decode_rfc2047("no =? encoding here"),
        "no =? encoding here"
    );
    assert_eq!(
        smtp::decode_quoted_printable(b"a=3Db=\r\nc =C3=A4"),
        "a=bc ä".as_bytes()
    );
    assert_eq!(smtp::decode_base64(b"aGVs\r\nbG8="), b"hello");
    let (headers, body) = smtp::split_entity(b"Subject: a\r\n b\r\nX-Y: z\r\n\r\nbody");
    assert_eq!(
        headers,
        [
            ("Subject".to_owned(), "a b".to_owned()),
            ("X-Y".to_owned(), "z".to_owned())
        ]
    );
    assert_eq!(body, b"body");
    let parts = smtp::split_multipart(b"pre\r\n--B\r\none\r\n--B\r\ntwo\r\n--B--\r\nepilogue", "B");
    assert_eq!(parts, [&b"one"[..], &b"two"[..]]);
}

// --- Telegram: two-way (issue 18) ------------------------------------------

fn lena() -> telegram::TgUser {
    telegram::TgUser::new(42, "Lena", Some("lena_k"))
}

fn keyboard(data: &[&str]) -> Value {
    let row: Vec<Value> = data
        .iter()
        .map(|d| json!({"text": d.to_uppercase(), "callback_data": d}))
        .collect();
    json!({ "inline_keyboard": [row] })
}

#[tokio::test]
async fn telegram_get_updates_offset_limit_and_long_poll() {
    let tg = start_telegram().await;
    let (_, body) = call(&tg, "getUpdates", json!({"timeout": 0})).await;
    assert_eq!(body, json!({"ok": true, "result": []}));
    let a = tg.user_sends(42, &lena(), "/status").unwrap();
    let b = tg.user_sends(42, &lena(), "hello").unwrap();
    assert_eq!(b, a + 1);
    let (_, body) = call(&tg, "getUpdates", json!({"limit": 1})).await;
    let got = body["result"].as_array().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["update_id"], a);
    let m = &got[0]["message"];
    assert_eq!(m["text"], "/status");
    assert_eq!(m["from"]["username"], "lena_k");
    assert_eq!(m["chat"]["type"], "private");
    assert_eq!(m["entities"][0]["type"], "bot_command");
    // Not confirmed yet: the same update again; offset confirms it.
    let (_, body) = call(&tg, "getUpdates", json!({})).await;
    assert_eq!(body["result"].as_array().unwrap().len(), 2);
    let (_, body) = call(&tg, "getUpdates", json!({"offset": a + 1})).await;
    assert_eq!(body["result"][0]["update_id"], b);
    assert_eq!(tg.pending_updates(), vec![b]);
    // Negative offset keeps the last -offset updates.
    let c = tg.user_sends(42, &lena(), "third").unwrap();
    let (_, body) = call(&tg, "getUpdates", json!({"offset": -1})).await;
    assert_eq!(body["result"][0]["update_id"], c);
    assert_eq!(tg.pending_updates(), vec![c]);
    // A long poll waits for the next update and answers when it arrives.
    let poll = tokio::spawn({
        let tg = tg.clone();
        async move {
            let started = Instant::now();
            let r = call(&tg, "getUpdates", json!({"offset": c + 1, "timeout": 5})).await;
            (r, started.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let d = tg.user_sends(42, &lena(), "/ack").unwrap();
    let ((status, body), took) = poll.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["result"][0]["update_id"], d);
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(4),
        "{took:?}"
    );
    // An empty long poll returns [] after its timeout.
    let started = Instant::now();
    let (_, body) = call(&tg, "getUpdates", json!({"offset": d + 1, "timeout": 1})).await;
    assert_eq!(body["result"], json!([]));
    assert!(started.elapsed() >= Duration::from_millis(900));
    tg.wait_for_updates_confirmed(WAIT).await;
}

#[tokio::test]
async fn telegram_second_poller_gets_the_older_one_a_409() {
    let tg = start_telegram().await;
    let first = tokio::spawn({
        let tg = tg.clone();
        async move { call(&tg, "getUpdates", json!({"timeout": 10})).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = tokio::spawn({
        let tg = tg.clone();
        async move { call(&tg, "getUpdates", json!({"timeout": 10})).await }
    });
    let (status, body) = tokio::time::timeout(Duration::from_secs(3), first)
        .await
        .expect("the older poll is cut short")
        .unwrap();
    assert_eq!(status, 409);
    assert_eq!(
        body,
        json!({"ok": false, "error_code": 409, "description":
            "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"})
    );
    // The newer poll goes on and gets the next update.
    let id = tg.user_sends(42, &lena(), "hi").unwrap();
    let (status, body) = second.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["result"][0]["update_id"], id);
}

#[tokio::test]
async fn telegram_allowed_updates_filter_at_enqueue() {
    let tg = start_telegram().await;
    let (_, body) = call(
        &tg,
        "getUpdates",
        json!({"allowed_updates": ["callback_query"]}),
    )
    .await;
    assert_eq!(body["result"], json!([]));
    assert_eq!(tg.user_sends(42, &lena(), "dropped"), None);
    assert!(tg.pending_updates().is_empty());
    // [] restores the default set (messages and callback queries).
    call(&tg, "getUpdates", json!({"allowed_updates": []})).await;
    assert!(tg.user_sends(42, &lena(), "kept").is_some());
    assert_eq!(tg.inject_update("chat_member", json!({})), None);
}

#[tokio::test]
async fn telegram_inline_keyboard_validation() {
    let tg = start_telegram().await;
    let long = "x".repeat(65);
    let cases = [
        (json!({"inline_keyboard": [[{"text": "A", "callback_data": long}]]}), "Bad Request: BUTTON_DATA_INVALID"),
        (json!({"inline_keyboard": [[{"text": "A", "callback_data": "é".repeat(33)}]]}), "Bad Request: BUTTON_DATA_INVALID"),
        (json!({"inline_keyboard": [[{"text": "A"}]]}), "Bad Request: can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard"),
        (json!({"inline_keyboard": [[{"text": "A", "callback_data": ""}]]}), "Bad Request: can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard"),
        (json!({"inline_keyboard": [[{"callback_data": "a"}]]}), "Bad Request: can't parse inline keyboard button: Can't find field \"text\""),
    ];
    for (markup, desc) in cases {
        let params = json!({"chat_id": 42, "text": "x", "reply_markup": markup});
        assert_rejected(&tg, "sendMessage", params, 400, desc).await;
    }
    // Exactly 64 bytes is fine; the keyboard is recorded and echoed.
    let markup = json!({"inline_keyboard": [[{"text": "Ack", "callback_data": "a".repeat(64)},
                                              {"text": "Map", "url": "https://example.org"}]]});
    let (status, body) = call(
        &tg,
        "sendMessage",
        json!({"chat_id": 42, "text": "x", "reply_markup": markup}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["reply_markup"], markup);
    assert_eq!(tg.messages()[0].reply_markup, Some(markup));
}

#[tokio::test]
async fn telegram_button_press_answer_and_edits() {
    let tg = start_telegram().await;
    let (_, body) = call(&tg, "sendMessage",
        json!({"chat_id": 42, "text": "Theft alarm", "reply_markup": keyboard(&["ack:1", "mute:1"])})).await;
    let mid = body["result"]["message_id"].as_i64().unwrap();
    let qid = tg.press_button(mid, &lena(), "ack:1");
    let (_, body) = call(&tg, "getUpdates", json!({})).await;
    let q = &body["result"][0]["callback_query"];
    assert_eq!(q["id"], qid.as_str());
    assert_eq!(q["data"], "ack:1");
    assert_eq!(q["from"]["id"], 42);
    assert_eq!(q["message"]["message_id"], mid);
    assert!(q["chat_instance"].is_string());

    let unknown =
        "Bad Request: query is too old and response timeout expired or query ID is invalid";
    assert_rejected(
        &tg,
        "answerCallbackQuery",
        json!({"callback_query_id": "999"}),
        400,
        unknown,
    )
    .await;
    let (status, body) = call(
        &tg,
        "answerCallbackQuery",
        json!({"callback_query_id": qid, "text": "Acknowledged"}),
    )
    .await;
    assert_eq!((status, &body["result"]), (200, &json!(true)));
    let answers = tg.wait_for_callback_answers(1, WAIT).await;
    assert_eq!(answers[0].text.as_deref(), Some("Acknowledged"));

    let not_modified = "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message";
    let same = json!({"chat_id": 42, "message_id": mid, "text": "Theft alarm", "reply_markup": keyboard(&["ack:1", "mute:1"])});
    assert_rejected(&tg, "editMessageText", same, 400, not_modified).await;
    let (status, body) = call(
        &tg,
        "editMessageText",
        json!({"chat_id": 42, "message_id": mid,
        "text": "Theft alarm\n✅ acknowledged by Lena", "reply_markup": keyboard(&["mute:1"])}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["result"]["edit_date"].is_u64());
    let state = tg.message_state(mid).unwrap();
    assert_eq!(
        state.text.as_deref(),
        Some("Theft alarm\n✅ acknowledged by Lena")
    );
    assert_eq!(state.reply_markup, Some(keyboard(&["mute:1"])));

    let bare = json!({"chat_id": 42, "message_id": mid});
    let (status, _) = call(&tg, "editMessageReplyMarkup", bare.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(tg.message_state(mid).unwrap().reply_markup, None);
    assert_rejected(&tg, "editMessageReplyMarkup", bare, 400, not_modified).await;
    let gone = "Bad Request: message to edit not found";
    assert_rejected(
        &tg,
        "editMessageText",
        json!({"chat_id": 42, "message_id": 777, "text": "x"}),
        400,
        gone,
    )
    .await;
    assert_rejected(
        &tg,
        "editMessageText",
        json!({"chat_id": "-1001234567890", "message_id": mid, "text": "x"}),
        400,
        gone,
    )
    .await;
    let user_msg = tg
        .user_sends(42, &lena(), "hi")
        .map(|_| tg.message_state(mid + 1).unwrap().message_id)
        .unwrap();
    assert_rejected(
        &tg,
        "editMessageText",
        json!({"chat_id": 42, "message_id": user_msg, "text": "x"}),
        400,
        "Bad Request: message can't be edited",
    )
    .await;
    let methods: Vec<String> = tg.edits().iter().map(|e| e.method.clone()).collect();
    assert_eq!(methods, ["editMessageText", "editMessageReplyMarkup"]);
}

#[tokio::test]
async fn telegram_live_location_moves_expires_and_stops() {
    let tg = start_telegram().await;
    for period in [59, 86_401, 2_147_483_646] {
        assert_rejected(
            &tg,
            "sendLocation",
            json!({"chat_id": 42, "latitude": 1, "longitude": 2, "live_period": period}),
            400,
            "Bad Request: wrong live location period specified",
        )
        .await;
    }
    let (_, body) = call(
        &tg,
        "sendLocation",
        json!({"chat_id": 42, "latitude": 52.5, "longitude": 13.4, "live_period": 3600}),
    )
    .await;
    assert_eq!(body["result"]["location"]["live_period"], 3600);
    let mid = body["result"]["message_id"].as_i64().unwrap();
    let edit =
        |lat: f64| json!({"chat_id": 42, "message_id": mid, "latitude": lat, "longitude": 13.4});
    for lat in [52.51, 52.52] {
        let (status, body) = call(&tg, "editMessageLiveLocation", edit(lat)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["result"]["location"]["latitude"], lat);
    }
    let not_modified = "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message";
    assert_rejected(
        &tg,
        "editMessageLiveLocation",
        edit(52.52),
        400,
        not_modified,
    )
    .await;
    assert_eq!(tg.live_moves(mid), vec![(52.51, 13.4), (52.52, 13.4)]);
    let (status, _) = call(
        &tg,
        "stopMessageLiveLocation",
        json!({"chat_id": 42, "message_id": mid}),
    )
    .await;
    assert_eq!(status, 200);
    let cant = "Bad Request: message can't be edited";
    assert_rejected(&tg, "editMessageLiveLocation", edit(52.53), 400, cant).await;
    assert_rejected(
        &tg,
        "stopMessageLiveLocation",
        json!({"chat_id": 42, "message_id": mid}),
        400,
        cant,
    )
    .await;

    // Expiry of the live period, indefinite periods, static pins and texts.
    let (_, body) = call(
        &tg,
        "sendLocation",
        json!({"chat_id": 42, "latitude": 1, "longitude": 2, "live_period": 60}),
    )
    .await;
    let short = body["result"]["message_id"].as_i64().unwrap();
    tg.expire_live_location(short);
    assert_rejected(
        &tg,
        "editMessageLiveLocation",
        json!({"chat_id": 42, "message_id": short, "latitude": 1.5, "longitude": 2}),
        400,
        cant,
    )
    .await;
    let (_, body) = call(&tg, "sendLocation", json!({"chat_id": 42, "latitude": 1, "longitude": 2, "live_period": telegram::LIVE_PERIOD_FOREVER})).await;
    let forever = body["result"]["message_id"].as_i64().unwrap();
    let (status, _) = call(
        &tg,
        "editMessageLiveLocation",
        json!({"chat_id": 42, "message_id": forever, "latitude": 1.5, "longitude": 2}),
    )
    .await;
    assert_eq!(status, 200);
    let (_, body) = call(
        &tg,
        "sendLocation",
        json!({"chat_id": 42, "latitude": 1, "longitude": 2}),
    )
    .await;
    let pin = body["result"]["message_id"].as_i64().unwrap();
    assert_rejected(
        &tg,
        "editMessageLiveLocation",
        json!({"chat_id": 42, "message_id": pin, "latitude": 1.5, "longitude": 2}),
        400,
        cant,
    )
    .await;
    let (_, body) = call(&tg, "sendMessage", json!({"chat_id": 42, "text": "t"})).await;
    let text = body["result"]["message_id"].as_i64().unwrap();
    assert_rejected(
        &tg,
        "editMessageLiveLocation",
        json!({"chat_id": 42, "message_id": text, "latitude": 1.5, "longitude": 2}),
        400,
        "Bad Request: there is no live location in the message to edit",
    )
    .await;
}

// --- Telegram: webhook delivery ---------------------------------------------

const UNALLOWED_SECRET: &str = "Bad Request: secret token contains unallowed characters";

/// getWebhookInfo's `result`.
async fn webhook_info(tg: &TelegramStandIn) -> Value {
    let (status, body) = call(tg, "getWebhookInfo", json!({})).await;
    assert_eq!(status, 200, "{body}");
    body["result"].clone()
}

#[tokio::test]
async fn telegram_webhook_posts_each_update_once_with_the_secret() {
    let tg = start_telegram().await;
    let hook = Sink::start().await;
    let url = hook.url("/tg/hook");
    let (status, body) = call(
        &tg,
        "setWebhook",
        json!({"url": url, "secret_token": "s3cr3t_-X9"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"ok": true, "result": true, "description": "Webhook was set"})
    );
    assert_eq!(tg.webhook(), Some((url.clone(), Some("s3cr3t_-X9".into()))));
    let a = tg.user_sends(42, &lena(), "/status").unwrap();
    let b = tg.user_sends(42, &lena(), "hello").unwrap();
    let got = hook.wait_for(2, WAIT).await;
    for (request, (id, text)) in got.iter().zip([(a, "/status"), (b, "hello")]) {
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("POST", "/tg/hook")
        );
        assert_eq!(request.header(telegram::SECRET_HEADER), Some("s3cr3t_-X9"));
        assert_eq!(request.header("content-type"), Some("application/json"));
        let update = request.json();
        assert_eq!(update["update_id"], id);
        assert_eq!(update["message"]["text"], text);
        assert_eq!(update["message"]["from"]["id"], 42);
    }
    assert_eq!(
        tg.wait_for_webhook_posts(2, WAIT).await,
        vec![(a, 200), (b, 200)]
    );
    // Confirmed by the 2xx answers: delivered exactly once.
    hook.assert_stays_at(2, Duration::from_millis(500)).await;
    assert_eq!(tg.webhook_posts().len(), 2);
    assert!(tg.pending_updates().is_empty());
    assert_eq!(
        webhook_info(&tg).await,
        json!({"url": url, "has_custom_certificate": false, "pending_update_count": 0,
               "max_connections": 40, "ip_address": "127.0.0.1"})
    );
    // A button press travels the same way.
    let (_, sent) = call(
        &tg,
        "sendMessage",
        json!({"chat_id": 42, "text": "Alarm", "reply_markup": keyboard(&["ack"])}),
    )
    .await;
    let mid = sent["result"]["message_id"].as_i64().unwrap();
    let query = tg.press_button(mid, &lena(), "ack");
    let got = hook.wait_for(3, WAIT).await;
    assert_eq!(got[2].json()["callback_query"]["id"], query);
    assert_eq!(got[2].json()["callback_query"]["data"], "ack");
}

#[tokio::test]
async fn telegram_webhook_retries_a_failed_update_until_it_is_confirmed() {
    let tg = start_telegram().await;
    tg.set_webhook_retry_delay(Duration::from_millis(100));
    let hook = Sink::start().await;
    hook.set_mode(Mode::Status(500));
    let (status, _) = call(&tg, "setWebhook", json!({"url": hook.url("/h")})).await;
    assert_eq!(status, 200);
    let a = tg.user_sends(42, &lena(), "first").unwrap();
    assert_eq!(
        tg.wait_for_webhook_posts(2, WAIT).await[..2],
        [(a, 500), (a, 500)]
    );
    let log = tg.webhook_post_log();
    let gap = log[1].sent_at - log[0].sent_at;
    assert!(gap >= Duration::from_millis(90), "retried after {gap:?}");
    let info = webhook_info(&tg).await;
    assert_eq!(info["pending_update_count"], 1);
    assert_eq!(
        info["last_error_message"],
        "Wrong response from the webhook: 500 Internal Server Error"
    );
    assert!(info["last_error_date"].as_u64().is_some_and(|d| d > 0));
    // A later update waits behind the failing one.
    let b = tg.user_sends(42, &lena(), "second").unwrap();
    hook.set_mode(Mode::Ok);
    tg.wait_for_updates_confirmed(WAIT).await;
    let posts = tg.webhook_posts();
    let n = posts.len();
    assert_eq!(posts[n - 2..], [(a, 200), (b, 200)], "{posts:?}");
    assert!(posts[..n - 2].iter().all(|p| *p == (a, 500)), "{posts:?}");
    assert!(hook
        .requests()
        .iter()
        .all(|r| r.header(telegram::SECRET_HEADER).is_none()));
    // The last error stays on record after a success (until set anew).
    let info = webhook_info(&tg).await;
    assert_eq!(info["pending_update_count"], 0);
    assert_eq!(
        info["last_error_message"],
        "Wrong response from the webhook: 500 Internal Server Error"
    );

    // The webhook goes away (connection refused) and comes back.
    hook.shutdown().await;
    let c = tg.user_sends(42, &lena(), "third").unwrap();
    assert_eq!(tg.wait_for_webhook_posts(n + 1, WAIT).await[n], (c, 0));
    assert_eq!(
        webhook_info(&tg).await["last_error_message"],
        "Connection refused"
    );
    hook.restart().await;
    tg.wait_for_updates_confirmed(WAIT).await;
    assert_eq!(tg.webhook_posts().last(), Some(&(c, 200)));
}

#[tokio::test]
async fn telegram_get_updates_conflicts_with_a_webhook_until_it_is_deleted() {
    let tg = start_telegram().await;
    let hook = Sink::start().await;
    hook.shutdown().await; // nothing listens: updates stay queued
    let poll = tokio::spawn({
        let tg = tg.clone();
        async move { call(&tg, "getUpdates", json!({"timeout": 10})).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = call(&tg, "setWebhook", json!({"url": hook.url("/h")})).await;
    assert_eq!(status, 200);
    let (status, body) = tokio::time::timeout(Duration::from_secs(3), poll)
        .await
        .expect("setWebhook ends the waiting long poll")
        .unwrap();
    assert_eq!(status, 409);
    assert_eq!(
        body["description"],
        "Conflict: terminated by setWebhook request"
    );
    let cant = "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first";
    assert_rejected(&tg, "getUpdates", json!({}), 409, cant).await;
    let a = tg.user_sends(42, &lena(), "hi").unwrap();
    assert_eq!(tg.wait_for_webhook_posts(1, WAIT).await[0], (a, 0));

    let (status, body) = call(&tg, "deleteWebhook", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"ok": true, "result": true, "description": "Webhook was deleted"})
    );
    assert_eq!(tg.webhook(), None);
    let (_, body) = call(&tg, "deleteWebhook", json!({})).await;
    assert_eq!(body["description"], "Webhook is already deleted");
    assert_eq!(
        webhook_info(&tg).await,
        json!({"url": "", "has_custom_certificate": false, "pending_update_count": 1})
    );
    // No more POSTs once deleted; polling gets the undelivered update.
    let posts = tg.webhook_posts().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(tg.webhook_posts().len(), posts);
    let (status, body) = call(&tg, "getUpdates", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(body["result"][0]["update_id"], a);
    // drop_pending_updates clears the queue even without a webhook.
    call(&tg, "deleteWebhook", json!({"drop_pending_updates": true})).await;
    assert!(tg.pending_updates().is_empty());
}

#[tokio::test]
async fn telegram_set_webhook_checks_url_secret_and_rate() {
    let tg = start_telegram().await;
    let hook = Sink::start().await;
    let url = hook.url("/h");
    let cases = [
        (json!({"url": url, "secret_token": "a b"}), UNALLOWED_SECRET),
        (
            json!({"url": url, "secret_token": "x".repeat(257)}),
            "Bad Request: secret token is too long",
        ),
        (
            json!({"url": "not a url"}),
            "Bad Request: invalid webhook URL specified",
        ),
        (
            json!({"url": "https://example.com/hook"}),
            "Bad Request: bad webhook: (stand-in) only loopback webhook URLs are served",
        ),
    ];
    for (params, desc) in cases {
        assert_rejected(&tg, "setWebhook", params, 400, desc).await;
        assert_eq!(tg.webhook(), None);
        // setWebhook with a URL is allowed once a second, refused or not.
        tokio::time::sleep(Duration::from_millis(1050)).await;
    }
    let secret = "x".repeat(256);
    let params = json!({"url": url, "secret_token": secret, "max_connections": 1000});
    let (status, _) = call(&tg, "setWebhook", params.clone()).await;
    assert_eq!(status, 200);
    let (status, body) = call(&tg, "setWebhook", params.clone()).await;
    assert_eq!(status, 429);
    assert_eq!(
        body,
        json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 1",
               "parameters": {"retry_after": 1}})
    );
    tokio::time::sleep(Duration::from_millis(1050)).await;
    let mut same = params.clone();
    same["allowed_updates"] = json!(["callback_query"]);
    let (_, body) = call(&tg, "setWebhook", same).await;
    assert_eq!(body["description"], "Webhook is already set");
    let info = webhook_info(&tg).await;
    assert_eq!(info["max_connections"], 100);
    assert_eq!(info["allowed_updates"], json!(["callback_query"]));
    assert_eq!(tg.user_sends(42, &lena(), "filtered"), None);
    // The server closes the old webhook before it checks the new one.
    tokio::time::sleep(Duration::from_millis(1050)).await;
    let bad = json!({"url": url, "secret_token": "no!"});
    assert_rejected(&tg, "setWebhook", bad, 400, UNALLOWED_SECRET).await;
    assert_eq!(tg.webhook(), None);
    assert!(hook.requests().is_empty());
}

// --- Traccar: reports ----------------------------------------------------------

/// The Traccar stand-in's `/api/reports/events`: several devices, groups and types, and the period
/// limit refused as Traccar refuses it (`report.periodLimit`).
mod traccar_reports {
    use std::time::Duration;

    use serde_json::{json, Value};

    use super::support::traccar::{Traccar, PERIOD_LIMIT_BODY};

    fn event(id: i64, device: i64, kind: &str, time: &str) -> Value {
        json!({"id": id, "deviceId": device, "type": kind, "eventTime": time, "attributes": {}})
    }

    /// `GET /api/reports/events?QUERY` with a fresh session: (status, body).
    async fn report(server: &Traccar, query: &str) -> (u16, String) {
        let http = reqwest::Client::new();
        let login = http
            .get(format!("{}/api/session?token=tok", server.url()))
            .send()
            .await
            .unwrap();
        let cookie = login.headers()["set-cookie"].to_str().unwrap().to_string();
        let cookie = cookie.split(';').next().unwrap().to_string();
        let resp = http
            .get(format!("{}/api/reports/events?{query}", server.url()))
            .header("cookie", cookie)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    fn ids(body: &str) -> Vec<i64> {
        let v: Vec<Value> = serde_json::from_str(body).unwrap();
        v.iter().map(|e| e["id"].as_i64().unwrap()).collect()
    }

    const DAY: &str = "from=2026-05-01T00:00:00Z&to=2026-05-02T00:00:00Z";
    const TWO_DAYS: &str = "from=2026-05-01T00:00:00Z&to=2026-05-03T00:00:00Z";

    async fn server() -> Traccar {
        let server = Traccar::start(Some("tok"), None, Duration::from_secs(30)).await;
        server.record_event(event(3, 12, "alarm", "2026-05-01T10:00:00Z"));
        server.record_event(event(1, 12, "deviceOnline", "2026-05-01T09:00:00Z"));
        server.record_event(event(2, 27, "alarm", "2026-05-01T09:30:00Z"));
        server.record_event(event(4, 27, "deviceOffline", "2026-05-02T12:00:00Z"));
        server
    }

    #[tokio::test]
    async fn several_devices_groups_and_types_are_honoured() {
        let server = server().await;
        // Device by device, each in event time order.
        let (st, body) = report(&server, &format!("deviceId=12&deviceId=27&{TWO_DAYS}")).await;
        assert_eq!((st, ids(&body)), (200, vec![1, 3, 2, 4]));
        let (_, body) = report(&server, &format!("deviceId=27&deviceId=12&{DAY}")).await;
        assert_eq!(ids(&body), [2, 1, 3]);
        let q = format!("deviceId=12&deviceId=27&type=alarm&{TWO_DAYS}");
        assert_eq!(ids(&report(&server, &q).await.1), [3, 2]);
        let q = format!("deviceId=12&type=alarm&type=deviceOnline&{TWO_DAYS}");
        assert_eq!(ids(&report(&server, &q).await.1), [1, 3]);
        let q = format!("deviceId=27&type=allEvents&{TWO_DAYS}");
        assert_eq!(ids(&report(&server, &q).await.1), [2, 4]);
        // Device 27 is in group 5; no device named: none.
        let q = format!("groupId=5&{TWO_DAYS}");
        assert_eq!(ids(&report(&server, &q).await.1), [2, 4]);
        assert!(ids(&report(&server, TWO_DAYS).await.1).is_empty());
        assert_eq!(server.report_queries().len(), 7);
    }

    #[tokio::test]
    async fn a_period_over_the_limit_is_refused_as_traccar_does() {
        let server = server().await;
        server.set_report_period_limit(Some(Duration::from_secs(86_400)));
        let (st, body) = report(&server, &format!("deviceId=12&{TWO_DAYS}")).await;
        assert_eq!((st, body.as_str()), (400, PERIOD_LIMIT_BODY));
        assert!(body.starts_with("Time period exceeds the limit - IllegalArgumentException"));
        // Exactly the limit is allowed.
        let (st, body) = report(&server, &format!("deviceId=12&{DAY}")).await;
        assert_eq!((st, ids(&body)), (200, vec![1, 3]));
        server.set_report_period_limit(None);
        let (st, _) = report(&server, &format!("deviceId=12&{TWO_DAYS}")).await;
        assert_eq!(st, 200);
    }
}

// --- Browser harness (issue 20) ---------------------------------------------

/// The browser harness of the web console's tests (`support::browser`) against a small form served
/// on loopback: headless Chromium types, clicks, reads and takes screenshots.
mod browser_harness {
    use std::collections::HashMap;
    use std::time::Duration;

    use axum::extract::Form;
    use axum::http::header;
    use axum::response::{Html, IntoResponse};
    use axum::routing::{get, post};
    use axum::Router;
    use tokio::net::TcpListener;

    use super::support::browser::{screenshot_dir, Browser};

    const WAIT: Duration = Duration::from_secs(5);

    const FORM: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Form</title></head>
<body><form method="post" action="/answer">
<label>Name <input id="name" name="name" type="text"></label>
<button id="send" type="submit">Send</button>
</form></body></html>"#;

    /// A page without `<meta name="viewport">`.
    const PLAIN: &str = "<!doctype html><html lang=\"en\"><title>Plain</title><p>Plain</p></html>";

    fn escape(text: &str) -> String {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    }

    /// The answer page shows the posted name and sets an HttpOnly cookie.
    async fn answer(Form(form): Form<HashMap<String, String>>) -> impl IntoResponse {
        let name = escape(form.get("name").map_or("", String::as_str));
        let page = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Answer</title></head>\
             <body><p id=\"answer\">Hello, {name}!</p></body></html>"
        );
        let cookie = "answered=yes; Path=/; HttpOnly; SameSite=Strict";
        ([(header::SET_COOKIE, cookie)], Html(page))
    }

    /// Serves the form on a free loopback port; returns its base URL.
    async fn serve_form() -> String {
        let app = Router::new()
            .route("/", get(|| async { Html(FORM) }))
            .route("/answer", post(answer))
            .route("/plain", get(|| async { Html(PLAIN) }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}")
    }

    /// Width and height from a PNG's IHDR chunk, after checking the signature.
    fn png_size(png: &[u8]) -> (u32, u32) {
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "not a PNG: {:?}",
            &png[..png.len().min(8)]
        );
        assert_eq!(&png[12..16], b"IHDR", "the first chunk is IHDR");
        let be = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
        (be(16), be(20))
    }

    /// Types a name, submits, and returns the answer's text.
    async fn submit(browser: &Browser, base: &str, name: &str) -> String {
        browser.goto(&format!("{base}/")).await;
        browser.fill("#name", name).await;
        browser.click("#send").await;
        browser.wait_for_text("#answer", "Hello", WAIT).await
    }

    #[tokio::test]
    async fn browser_fills_a_form_reads_the_answer_and_takes_a_screenshot() {
        let base = serve_form().await;
        let browser = Browser::new(360, 740).await;
        let viewport = browser
            .eval("return [window.innerWidth, window.innerHeight]")
            .await;
        assert_eq!(viewport, serde_json::json!([360, 740]));
        let answer = submit(&browser, &base, "Lena <& Co>").await;
        let viewport = browser
            .eval("return [window.innerWidth, window.innerHeight]")
            .await;
        assert_eq!(
            viewport,
            serde_json::json!([360, 740]),
            "after a navigation"
        );
        assert_eq!(answer, "Hello, Lena <& Co>!");
        assert_eq!(browser.text("#answer").await, answer);
        assert_eq!(browser.current_url().await.path(), "/answer");
        assert!(!browser.exists("#name").await, "the form page is gone");
        let cookies = browser.cookies().await;
        let cookie = cookies.iter().find(|c| c.name() == "answered");
        let cookie = cookie.unwrap_or_else(|| panic!("the answer's cookie: {cookies:?}"));
        assert_eq!(cookie.value(), "yes");
        assert_eq!(cookie.http_only(), Some(true));

        let path = browser.screenshot("harness-answer").await;
        assert_eq!(path, screenshot_dir().join("harness-answer.png"));
        let png = std::fs::read(&path).expect("the screenshot was written");
        assert_eq!(png_size(&png), (360, 740));

        // A resized window is as wide as asked, and so is the next screenshot.
        browser.set_size(800, 600).await;
        let path = browser.screenshot("harness-answer-wide").await;
        assert_eq!(png_size(&std::fs::read(path).unwrap()), (800, 600));
        browser.close().await;
    }

    #[tokio::test]
    async fn browser_phone_honours_the_viewport_meta_tag() {
        let base = serve_form().await;
        let inner_width = "return window.innerWidth";
        let phone = Browser::phone(360, 740).await;
        phone.goto(&format!("{base}/")).await;
        assert_eq!(phone.eval(inner_width).await, 360);
        // (navigator.maxTouchPoints is not read: Chromium sets it late under load.)
        let touch = "return matchMedia('(pointer: coarse)').matches";
        assert_eq!(phone.eval(touch).await, serde_json::json!(true));
        phone.goto(&format!("{base}/plain")).await;
        assert_eq!(
            phone.eval(inner_width).await,
            980,
            "no viewport tag: laid out as a desktop page"
        );
        let png = std::fs::read(phone.screenshot("harness-phone-plain").await).unwrap();
        assert_eq!(png_size(&png), (360, 740));
        drop(phone);
        let desktop = Browser::new(360, 740).await;
        desktop.goto(&format!("{base}/plain")).await;
        assert_eq!(desktop.eval(inner_width).await, 360);
    }

    #[tokio::test]
    async fn browser_pair_runs_two_sessions_at_once_with_separate_profiles() {
        let base = serve_form().await;
        let (a, b) = Browser::pair(360, 740).await;
        b.goto(&format!("{base}/")).await;
        let (from_a, from_b) = tokio::join!(submit(&a, &base, "Anna"), submit(&b, &base, "Ben"));
        assert_eq!(from_a, "Hello, Anna!");
        assert_eq!(from_b, "Hello, Ben!");
        // Each has its own cookie jar: a fresh profile per session.
        let c = Browser::new(360, 740);
        drop(a);
        let c = c.await;
        c.goto(&format!("{base}/")).await;
        assert!(
            c.cookies().await.is_empty(),
            "a new session starts without cookies"
        );
        assert_eq!(b.cookies().await.len(), 1);
    }

    #[tokio::test]
    #[should_panic(expected = "no `#answer` with a text containing \"Hello, Anne!\"")]
    async fn browser_wait_for_text_fails_on_another_text() {
        let base = serve_form().await;
        let browser = Browser::new(360, 740).await;
        submit(&browser, &base, "Anna").await;
        browser
            .wait_for_text("#answer", "Hello, Anne!", Duration::from_millis(300))
            .await;
    }

    #[tokio::test]
    #[should_panic(expected = "no element matches `#missing` on http://127.0.0.1:")]
    async fn browser_click_fails_on_a_missing_element() {
        let base = serve_form().await;
        let browser = Browser::new(360, 740).await;
        browser.goto(&format!("{base}/")).await;
        browser.click("#missing").await;
    }
}
