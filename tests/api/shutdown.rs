//! Shutdown: webhook deliveries and `on-end` posts in flight at exit are drained for
//! `shutdown_drain_seconds`, and a receiver that never answers does not hold exit past that bound.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use poem::EndpointExt;
use serde_json::{Value, json};

use crate::helpers::*;

/// What the slow receiver saw: requests started, and bodies answered.
#[derive(Default)]
struct Slow {
    started: AtomicUsize,
    answered: Mutex<Vec<Value>>,
    /// How long each answer takes; `None` never answers.
    delay: Option<Duration>,
}

#[poem::handler]
fn allow() -> poem::http::StatusCode {
    poem::http::StatusCode::NO_CONTENT
}

#[poem::handler]
async fn slow_hook(
    slow: poem::web::Data<&Arc<Slow>>,
    body: poem::web::Json<Value>,
) -> poem::http::StatusCode {
    slow.started.fetch_add(1, Ordering::SeqCst);
    match slow.delay {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending::<()>().await,
    }
    slow.answered.lock().unwrap().push(body.0);
    poem::http::StatusCode::NO_CONTENT
}

async fn slow_receiver(delay: Option<Duration>) -> (String, Arc<Slow>) {
    let slow = Arc::new(Slow {
        delay,
        ..Default::default()
    });
    // Also an external enforcement service whose on-end is the slow one and whose checks allow.
    let app = poem::Route::new()
        .at("/hook", poem::post(slow_hook))
        .at("/api/on-end", poem::post(slow_hook))
        .at("/api/:check", poem::post(allow))
        .data(slow.clone());
    (format!("{}/hook", serve(app).await), slow)
}

/// Creates a lease (one `lease.create` notification) and waits until the receiver got it.
async fn one_delivery_in_flight(app: &TestApp, slow: &Slow) {
    app.post(
        "/v1/leases",
        &json!({"name": "s", "start_date": "2030-01-02 00:00", "end_date": "2030-01-03 00:00"}),
    )
    .await
    .expect(202);
    started(slow).await;
}

async fn started(slow: &Slow) {
    for _ in 0..200 {
        if slow.started.load(Ordering::SeqCst) > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("nothing reached the receiver");
}

#[tokio::test]
async fn a_delivery_in_flight_is_drained_at_exit() {
    crate::skip_if_no_database!();
    let (url, slow) = slow_receiver(Some(Duration::from_secs(1))).await;
    let bound = Duration::from_secs(4);
    let mut app = spawn_with(|s| {
        s.notifications.urls = vec![url];
        s.notifications.shutdown_drain_seconds = bound.as_secs();
    })
    .await;
    one_delivery_in_flight(&app, &slow).await;
    let took = app.stop().await;
    // Answered before `run` returned: the exit waited for it instead of dropping it.
    let answered = slow.answered.lock().unwrap().clone();
    assert_eq!(answered.len(), 1, "{answered:?}");
    assert_eq!(answered[0]["event_type"], "lease.create");
    assert!(took < bound, "shutdown took {took:?}, bound {bound:?}");
}

#[tokio::test]
async fn a_receiver_that_never_answers_does_not_hold_exit() {
    crate::skip_if_no_database!();
    let (url, slow) = slow_receiver(None).await;
    let bound = Duration::from_secs(1);
    let mut app = spawn_with(|s| {
        s.notifications.urls = vec![url];
        s.notifications.shutdown_drain_seconds = bound.as_secs();
    })
    .await;
    one_delivery_in_flight(&app, &slow).await;
    let took = app.stop().await;
    assert!(slow.answered.lock().unwrap().is_empty());
    // It waited for the bound (the delivery was drained, not dropped at once), and not much
    // longer: the request timeout (5 s) and the retries are cut short.
    assert!(took >= bound, "shutdown took {took:?}, bound {bound:?}");
    assert!(
        took < bound + Duration::from_secs(2),
        "shutdown took {took:?}, bound {bound:?}"
    );
}

#[tokio::test]
async fn an_on_end_post_in_flight_is_drained_at_exit() {
    crate::skip_if_no_database!();
    let (hook, slow) = slow_receiver(Some(Duration::from_secs(1))).await;
    let base = hook.replace("/hook", "/api/");
    let bound = Duration::from_secs(4);
    let mut app = spawn_with(|s| {
        s.enforcement.enabled_filters = vec!["ExternalServiceFilter".into()];
        s.enforcement.external_service_base_endpoint = Some(base);
        s.notifications.shutdown_drain_seconds = bound.as_secs();
    })
    .await;
    app.host("c1", json!({})).await;
    let l = app
        .lease("e", "2030-01-01 13:00", "2030-01-01 14:00", 1, 1, "")
        .await
        .expect(202);
    let id = l.body["lease"]["id"].as_str().unwrap().to_string();
    // Deleting a lease that has not ended posts on-end from a task of its own.
    app.delete(&format!("/v1/leases/{id}")).await.expect(204);
    started(&slow).await;
    let took = app.stop().await;
    let answered = slow.answered.lock().unwrap().clone();
    assert_eq!(answered.len(), 1, "{answered:?}");
    assert_eq!(answered[0]["lease"]["id"], id.as_str());
    assert!(took < bound, "shutdown took {took:?}, bound {bound:?}");
}
