//! A stand-in of the shop's backend the shipped flows call (`config.shop_api`): order
//! status and returns. Used by the end-to-end tests and by `examples/shop_backend.rs`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// Every request the stand-in received: `"METHOD /path"`, the JSON body and the
/// `Idempotency-Key` header.
pub(crate) type Calls = Arc<Mutex<Vec<(String, Value, Option<String>)>>>;

/// While it holds `true`, every answer waits until it is set back (a backend that hangs).
pub(crate) type Held = Arc<tokio::sync::watch::Sender<bool>>;

#[derive(Clone)]
struct ShopState {
    delay: Duration,
    calls: Calls,
    held: Held,
}

impl ShopState {
    /// Waits as the stand-in is told to: while held, then `delay`.
    async fn wait(&self) {
        // An error means the sender is gone: nothing holds the answers any more.
        let mut held = self.held.subscribe();
        if held.wait_for(|held| !*held).await.is_err() {
            tracing::debug!("the shop's hold switch is gone");
        }
        tokio::time::sleep(self.delay).await;
    }
}

/// A day counted from today (UTC), as the shop writes dates: `YYYY-MM-DD`.
pub(crate) fn day_from_today(days: i64) -> String {
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    today
        .checked_add(jiff::Span::new().days(days))
        .unwrap_or(today)
        .to_string()
}

/// The routes: `GET /orders/{number}` (10442 shipped, due in 3 days; 10443 delivered 2 days
/// ago; others 404) and
/// `POST /returns` (201 with id R-881). Every answer waits `delay` first, and while `held`
/// is set.
pub(crate) fn router(delay: Duration, calls: Calls, held: Held) -> axum::Router {
    axum::Router::new()
        .route("/orders/{number}", get(order))
        .route("/returns", post(create_return))
        .with_state(ShopState { delay, calls, held })
}

fn record(state: &ShopState, headers: &HeaderMap, call: String, body: Value) {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Ok(mut calls) = state.calls.lock() {
        calls.push((call, body, key));
    }
}

async fn order(
    State(state): State<ShopState>,
    Path(number): Path<String>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    record(
        &state,
        &headers,
        format!("GET /orders/{number}"),
        Value::Null,
    );
    state.wait().await;
    match number.as_str() {
        "10442" => (
            StatusCode::OK,
            Json(json!({"status": "shipped", "carrier": "CTT", "eta": day_from_today(3)})),
        ),
        "10443" => (
            StatusCode::OK,
            Json(json!({"status": "delivered", "delivered_on": day_from_today(-2)})),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no such order"})),
        ),
    }
}

async fn create_return(
    State(state): State<ShopState>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    record(&state, &headers, "POST /returns".into(), body);
    state.wait().await;
    (StatusCode::CREATED, Json(json!({"id": "R-881"})))
}
