//! Shutdown and cancelled requests: what intake committed is sent (or left pending for the next start),
//! never lost and never left in flight for a whole lease. A real relay on loopback, a real SQLite file
//! and a real webhook sink.

mod common;
mod support;

use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::{hook_config, payload, Relay};
use support::sink::{Mode, Sink};
use trackrelay::clock::now_ms;
use trackrelay::event::Envelope;
use trackrelay::plan::Arrival;
use trackrelay::store::{Filter, Status};

/// Far below the lease of a claim (`storage.lease`, 5 minutes by default), far above a send on loopback.
const PROMPTLY: Duration = Duration::from_secs(10);

/// A delivery claimed in the intake transaction is handed to the worker after the commit. When the call
/// is cancelled in between (a client that hangs up, a source stopped mid-event), the delivery must still
/// be sent at once, not wait in flight until its lease runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_claimed_at_intake_is_sent_when_the_call_is_cancelled_after_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let relay = Relay::start(hook_config(dir.path(), &sink.url("/hook"), "{}", "")).await;
    let running = relay.running.as_ref().unwrap();
    let (pipeline, store) = (running.pipeline.clone(), running.store.clone());
    let raw = payload("alarm_sos.json");
    let env = Envelope::from_json(raw.as_bytes()).unwrap();
    let arrival = Arrival {
        source: "traccar".into(),
        received_at_ms: now_ms(),
        ..Default::default()
    };
    let mut ingest = Box::pin(pipeline.ingest(&raw, &env, arrival));
    // Polled once: the event is on its way to the store.
    let first = std::future::poll_fn(|cx| Poll::Ready(ingest.as_mut().poll(cx))).await;
    assert!(first.is_pending(), "{first:?}");
    // Committed: the event and its delivery, claimed for the worker, are stored.
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    loop {
        let rows = store
            .list(Filter {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        if let Some(row) = rows.first() {
            // Claimed in the intake transaction (in flight), or already sent.
            assert_ne!(row.status, Status::Pending, "{row:?}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never committed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The call goes away before it is polled again, between the commit and the hand-over.
    drop(ingest);
    let got = sink.wait_for(1, PROMPTLY).await;
    assert_eq!(got[0].header("x-trackrelay-event-id"), Some("1934577"));
    relay.stop().await;
    assert_eq!(store.counts().await.unwrap(), vec![(Status::Done, 1)]);
}

/// On shutdown intake stops first (new connections are refused) while a request in progress is
/// finished; the event it commits then is delivered before the relay stops, and nothing is left in
/// flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_intake_first_and_delivers_what_it_committed() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let mut relay = Relay::start(hook_config(dir.path(), &sink.url("/hook"), "{}", "")).await;
    let addr = relay.addr;
    let running = relay.running.take().unwrap();
    let store = running.store.clone();
    let body = payload("alarm_sos.json");
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /events HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    // The relay asks for the body once the handler reads it: the request is in progress.
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("\r\n\r\n") {
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before asking for the body");
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(
        String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&seen)
    );

    let stopping = tokio::spawn(running.stop());
    // Intake stops first: new connections are refused while the request in progress is still open.
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    while TcpStream::connect(addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still accepting connections"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    conn.write_all(body.as_bytes()).await.unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"deliveries\":1"), "{answer}");

    tokio::time::timeout(PROMPTLY, stopping)
        .await
        .expect("the relay stops")
        .unwrap()
        .unwrap();
    // Delivered before the relay stopped, and recorded as such.
    assert_eq!(sink.requests().len(), 1);
    assert_eq!(store.counts().await.unwrap(), vec![(Status::Done, 1)]);
}

/// A delivery claimed at intake waits in the worker's fast lane while every worker is busy. When the
/// relay stops then, it is sent before the relay stops (within the grace period), not dropped in flight
/// to wait out its lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_what_waits_in_the_fast_lane() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    sink.set_mode(Mode::Delay(Duration::from_millis(300)));
    let relay = Relay::start(hook_config(
        dir.path(),
        &sink.url("/hook"),
        "{}",
        "delivery: { workers: 1 }\n",
    ))
    .await;
    let store = relay.running.as_ref().unwrap().store.clone();
    let mut body: serde_json::Value = serde_json::from_str(&payload("alarm_sos.json")).unwrap();
    body["event"]["id"] = 1.into();
    assert_eq!(relay.post(body.to_string(), &[]).await.0, 200);
    // The only worker is busy with the first event's send...
    sink.wait_for(1, PROMPTLY).await;
    // ...when the second event's delivery is claimed at intake and handed to the fast lane.
    body["event"]["id"] = 2.into();
    assert_eq!(relay.post(body.to_string(), &[]).await.0, 200);
    let rows = store.list(Filter::default()).await.unwrap();
    let second = rows.iter().find(|r| r.event_id == 2).unwrap();
    assert_eq!(second.status, Status::Inflight, "{rows:?}");
    assert_eq!(sink.requests().len(), 1);

    relay.stop().await;
    let sent: Vec<_> = sink
        .requests()
        .iter()
        .filter_map(|r| r.header("x-trackrelay-event-id").map(str::to_string))
        .collect();
    assert_eq!(sent, ["1", "2"]);
    assert_eq!(store.counts().await.unwrap(), vec![(Status::Done, 2)]);
}
