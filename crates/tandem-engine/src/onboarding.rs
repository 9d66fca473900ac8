//! Onboarding a business number in one step: check the business's token against the number,
//! subscribe the app to the account's webhooks and — for a Coexistence number — request the
//! contacts and history syncs at once. Each sync is requested at most once, ever: the request
//! is written as `requesting` before it is made, so a crash between the two never leads to a
//! second request (Meta allows one per onboarding, within about 24 hours). `/register` is
//! never called: a Coexistence number is registered in the Business App.
//!
//! Sync progress comes from the `history` webhooks (each chunk is a number fact,
//! `HISTORY_CHUNK`, in the number's account events); [`onboarding_view`] puts it together with
//! what was requested and warns while the 24-hour window runs without a request.

use std::time::Duration;

use secrecy::SecretString;
use serde_json::{Value, json};
use tandem_domain::{PhoneNumberId, Timestamp};
use tandem_store::{AccountState, NumberState, Onboarding, Store, StoreError, SyncRequest};
use tandem_whatsapp::{GraphClient, SendError, SyncKind};

/// How long after onboarding Meta accepts the sync requests (as implementers report it).
pub const SYNC_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// What to onboard.
#[derive(Debug, Clone)]
pub struct OnboardRequest {
    /// The business number.
    pub number: PhoneNumberId,
    /// Its WhatsApp Business Account.
    pub waba: String,
    /// Whether the number is shared with the Business App; `None`: as Meta reports it.
    pub coexistence: Option<bool>,
    /// The business's token.
    pub token: SecretString,
    /// The tenant the number joins, when the deployment serves several.
    pub tenant: Option<String>,
}

/// Why onboarding stopped.
#[derive(Debug, thiserror::Error)]
pub enum OnboardError {
    /// A Graph API call failed; `step` names it (`check_token`, `subscribe_app`).
    #[error("{step}: {error}")]
    Graph {
        /// The step that failed.
        step: &'static str,
        /// What Meta (or the network) said.
        error: SendError,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reads the number's state (a new one if unknown), applies `change`, and writes it,
/// again from a fresh read when another writer got there first.
async fn update(
    store: &dyn Store,
    number: &PhoneNumberId,
    now: Timestamp,
    change: impl Fn(&mut NumberState),
) -> Result<NumberState, StoreError> {
    for _ in 0..16 {
        let mut state = store
            .number(number)
            .await?
            .unwrap_or_else(|| NumberState::new(number.clone(), now));
        change(&mut state);
        if store.update_number(state.clone(), Vec::new()).await? {
            state.rev += 1;
            return Ok(state);
        }
    }
    Err(StoreError::Contention(16))
}

fn sync_of(onboarding: &mut Onboarding, kind: SyncKind) -> &mut SyncRequest {
    match kind {
        SyncKind::Contacts => &mut onboarding.contacts,
        SyncKind::History => &mut onboarding.history,
    }
}

/// Onboards `request.number` (see the module docs); safe to call again: what was done is not
/// done twice. Answers the number's state.
///
/// # Errors
/// A Graph API error at the token check or the subscription (nothing about the syncs was
/// asked then), or the store's error. A refused sync request is not an error: it is recorded
/// in the state.
pub async fn onboard(
    store: &dyn Store,
    graph: &GraphClient,
    request: &OnboardRequest,
    now: impl Fn() -> Timestamp,
) -> Result<NumberState, OnboardError> {
    let info = graph
        .number_info(&request.number, &request.token)
        .await
        .map_err(|error| OnboardError::Graph {
            step: "check_token",
            error,
        })?;
    graph
        .subscribe_app(&request.waba, &request.token)
        .await
        .map_err(|error| OnboardError::Graph {
            step: "subscribe_app",
            error,
        })?;
    let coexistence = request
        .coexistence
        .or(info.on_business_app)
        .unwrap_or(false);
    let at = now();
    let mut state = update(store, &request.number, at, |state| {
        state.waba_id = Some(request.waba.clone());
        let onboarding = state.onboarding.get_or_insert(Onboarding {
            started_at: at,
            tenant: None,
            coexistence,
            display_phone_number: None,
            verified_name: None,
            subscribed_at: None,
            contacts: SyncRequest::NotRequested,
            history: SyncRequest::NotRequested,
        });
        onboarding.coexistence = coexistence;
        onboarding.tenant.clone_from(&request.tenant);
        onboarding.display_phone_number = info.display_phone_number.clone();
        onboarding.verified_name = info.verified_name.clone();
        onboarding.subscribed_at = Some(at);
    })
    .await?;
    if !coexistence {
        return Ok(state);
    }
    for kind in [SyncKind::Contacts, SyncKind::History] {
        let attempted = state
            .onboarding
            .as_mut()
            .is_some_and(|o| sync_of(o, kind).attempted());
        if attempted {
            continue;
        }
        // Written before the request, so it is never made twice.
        let started = now();
        let mut claimed = false;
        state = update(store, &request.number, started, |state| {
            if let Some(o) = state.onboarding.as_mut()
                && !sync_of(o, kind).attempted()
            {
                *sync_of(o, kind) = SyncRequest::Requesting { at: started };
            }
        })
        .await?;
        if let Some(o) = state.onboarding.as_mut() {
            claimed = *sync_of(o, kind) == SyncRequest::Requesting { at: started };
        }
        if !claimed {
            continue;
        }
        let outcome = match graph
            .request_sync(&request.number, kind, &request.token)
            .await
        {
            Ok(request_id) => SyncRequest::Requested {
                at: now(),
                request_id,
            },
            Err(error) => {
                tracing::warn!(number = %request.number, sync = kind.sync_type(), %error, "sync request refused");
                SyncRequest::Failed {
                    at: now(),
                    code: match &error {
                        SendError::Graph { error, .. } => Some(error.code),
                        _ => None,
                    },
                    error: error.to_string(),
                }
            }
        };
        state = update(store, &request.number, started, |state| {
            if let Some(o) = state.onboarding.as_mut() {
                *sync_of(o, kind) = outcome.clone();
            }
        })
        .await?;
    }
    Ok(state)
}

/// The history sync as the webhooks report it: the furthest phase and progress seen, the
/// chunks, and whether the business declined to share history.
fn history_progress(account: Option<&AccountState>) -> Value {
    let mut chunks = 0_u64;
    let mut progress: Option<u64> = None;
    let mut phase: Option<u64> = None;
    let mut declined = false;
    let mut last_at = None;
    for event in account.map(|a| a.events.as_slice()).unwrap_or_default() {
        match event.event.as_str() {
            "HISTORY_CHUNK" => {
                chunks += 1;
                let read = |key: &str| event.raw.get(key).and_then(Value::as_u64);
                progress = progress.max(read("progress"));
                phase = phase.max(read("phase"));
                last_at = Some(event.at);
            }
            "HISTORY_DECLINED" => {
                declined = true;
                last_at = Some(event.at);
            }
            _ => {}
        }
    }
    json!({
        "chunks_seen": chunks,
        "phase": phase,
        "progress": progress,
        "complete": progress == Some(100),
        "declined": declined,
        "last_chunk_at": last_at.map(tandem_handoff::hooks::rfc3339),
    })
}

fn sync_view(sync: &SyncRequest) -> Value {
    let at = |t: &Timestamp| tandem_handoff::hooks::rfc3339(*t);
    match sync {
        SyncRequest::NotRequested => json!({"state": "not_requested"}),
        SyncRequest::Requesting { at: t } => json!({"state": "requesting", "since": at(t)}),
        SyncRequest::Requested { at: t, request_id } => {
            json!({"state": "requested", "at": at(t), "request_id": request_id})
        }
        SyncRequest::Failed { at: t, code, error } => {
            json!({"state": "failed", "at": at(t), "code": code, "error": error})
        }
    }
}

/// The onboarding part of a number's view: what was done, the history sync's progress, and
/// warnings (a sync not requested while the 24-hour window runs, or after it closed).
/// `account` is the number's account events.
pub fn onboarding_view(
    state: &NumberState,
    account: Option<&AccountState>,
    now: Timestamp,
) -> Option<Value> {
    let o = state.onboarding.as_ref()?;
    let deadline = o.started_at.plus(SYNC_WINDOW);
    let mut warnings = Vec::new();
    if o.coexistence {
        for (name, sync) in [("contacts", &o.contacts), ("history", &o.history)] {
            match sync {
                SyncRequest::NotRequested if now < deadline => warnings.push(format!(
                    "the {name} sync is not requested; Meta accepts it until {} ({} h left): call POST /v1/numbers again",
                    tandem_handoff::hooks::rfc3339(deadline),
                    deadline.since(now).as_secs() / 3600
                )),
                SyncRequest::NotRequested => warnings.push(format!(
                    "the {name} sync was never requested and the 24-hour window closed at {}",
                    tandem_handoff::hooks::rfc3339(deadline)
                )),
                SyncRequest::Requesting { .. } => warnings.push(format!(
                    "the {name} sync request was started but its answer was not recorded; it is not repeated (Meta allows one): watch for its webhooks"
                )),
                SyncRequest::Failed { error, .. } => {
                    warnings.push(format!("Meta refused the {name} sync: {error}"));
                }
                SyncRequest::Requested { .. } => {}
            }
        }
    }
    Some(json!({
        "started_at": tandem_handoff::hooks::rfc3339(o.started_at),
        "coexistence": o.coexistence,
        "display_phone_number": o.display_phone_number,
        "verified_name": o.verified_name,
        "subscribed_at": o.subscribed_at.map(tandem_handoff::hooks::rfc3339),
        "sync_deadline": o.coexistence.then(|| tandem_handoff::hooks::rfc3339(deadline)),
        "contacts_sync": sync_view(&o.contacts),
        "history_sync": sync_view(&o.history),
        "history": history_progress(account),
        "warnings": warnings,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_domain::AccountUpdate;

    const T0: Timestamp = Timestamp(1_795_428_000_000);

    fn onboarded(contacts: SyncRequest, history: SyncRequest) -> NumberState {
        let mut state = NumberState::new(
            PhoneNumberId::parse("106").unwrap_or_else(|_| unreachable!()),
            T0,
        );
        state.onboarding = Some(Onboarding {
            started_at: T0,
            tenant: None,
            coexistence: true,
            display_phone_number: None,
            verified_name: None,
            subscribed_at: Some(T0),
            contacts,
            history,
        });
        state
    }

    #[test]
    fn the_view_warns_while_the_window_runs_and_after_it_closes() {
        let state = onboarded(SyncRequest::NotRequested, SyncRequest::NotRequested);
        let hour = Duration::from_secs(3600);
        let view = onboarding_view(&state, None, T0.plus(hour * 4)).unwrap_or_default();
        let warnings = view["warnings"].as_array().cloned().unwrap_or_default();
        assert_eq!(warnings.len(), 2);
        assert!(
            warnings[0]
                .as_str()
                .unwrap_or_default()
                .contains("20 h left")
        );
        let late = onboarding_view(&state, None, T0.plus(hour * 25)).unwrap_or_default();
        assert!(
            late["warnings"][1]
                .as_str()
                .unwrap_or_default()
                .contains("window closed")
        );
        let done = onboarded(
            SyncRequest::Requested {
                at: T0,
                request_id: "r1".into(),
            },
            SyncRequest::Requested {
                at: T0,
                request_id: "r2".into(),
            },
        );
        let view = onboarding_view(&done, None, T0.plus(hour)).unwrap_or_default();
        assert_eq!(view["warnings"], json!([]));
        assert_eq!(view["history_sync"]["request_id"], "r2");
    }

    #[test]
    fn history_progress_is_the_furthest_chunk_seen() {
        let fact = |event: &str, raw: Value, s: u64| AccountUpdate {
            account: "106".into(),
            event: event.into(),
            at: T0.plus(Duration::from_secs(s)),
            raw,
        };
        let account = AccountState {
            account: "106".into(),
            events: vec![
                fact(
                    "HISTORY_CHUNK",
                    json!({"phase": 0, "chunk_order": 1, "progress": 40}),
                    1,
                ),
                fact(
                    "HISTORY_CHUNK",
                    json!({"phase": 1, "chunk_order": 3, "progress": 100}),
                    3,
                ),
                fact(
                    "HISTORY_CHUNK",
                    json!({"phase": 1, "chunk_order": 2, "progress": 70}),
                    2,
                ),
                fact("PARTNER_ADDED", json!({}), 4),
            ],
        };
        let progress = history_progress(Some(&account));
        assert_eq!(progress["chunks_seen"], 3);
        assert_eq!(progress["progress"], 100);
        assert_eq!(progress["phase"], 1);
        assert_eq!(progress["complete"], true);
        assert_eq!(progress["declined"], false);
    }
}
