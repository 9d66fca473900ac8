//! Onboarding a number in one step against a Graph API stand-in that answers as Meta does:
//! an expired Embedded Signup code and a token without permission are refused with Meta's
//! words and change nothing; a good code is exchanged, the app subscribed, the contacts and
//! history syncs requested once each (never `/register`), and never again; the history
//! webhooks' progress shows on the number; a sync Meta refuses is shown with a warning.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{API_TOKEN, Backend, PNID, Server, Spec, wait_for};
use crate::standin::Graph;

const WABA: &str = "104810000000001";
const DEADLINE: Duration = Duration::from_secs(15);

async fn onboard(server: &Server, body: Value) -> (u16, Value) {
    let response = server
        .client
        .post(server.url("/v1/numbers"))
        .bearer_auth(API_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn history_chunk(phase: u8, chunk: u32, progress: u8) -> Vec<u8> {
    let value = json!({"messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": PNID},
        "history": [{"metadata": {"phase": phase, "chunk_order": chunk, "progress": progress},
            "threads": [{"id": "15550009999", "messages": [
                {"from": "15550009999", "id": format!("wamid.hist{chunk}"), "timestamp": "1760000000", "type": "text", "text": {"body": "old question"}}]}]}]});
    serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": [{"id": WABA, "changes": [{"field": "history", "value": value}]}]})).unwrap()
}

async fn onboarding_a_coexistence_number(backend: Backend) {
    let graph = Graph::start().await;
    let mut spec = Spec::new(backend);
    spec.env
        .push(("TANDEM_GRAPH_URL".into(), graph.url.clone()));
    spec.env
        .push(("TANDEM_ACCESS_TOKEN".into(), "test-access-token".into()));
    spec.env.push(("TANDEM_APP_ID".into(), "1234567890".into()));
    let server = Server::start(spec);
    let syncs = || {
        graph
            .onboarding_calls()
            .into_iter()
            .filter(|(_, path, _, _)| path.ends_with("/smb_app_data"))
            .count()
    };

    // An expired Embedded Signup code: Meta's refusal, nothing stored, nothing asked.
    let (status, body) = onboard(
        &server,
        json!({"phone_number_id": PNID, "waba_id": WABA, "code": "expired"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("authorization code has expired"),
        "{body}"
    );
    // A token without permission on the number: refused at the check, no sync asked.
    let (status, body) = onboard(
        &server,
        json!({"phone_number_id": PNID, "waba_id": WABA, "access_token": "token-without-permission"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("(#200) Permissions error"),
        "{body}"
    );
    assert_eq!(syncs(), 0);
    let (status, _) = server.api(&format!("/v1/numbers/{PNID}")).await;
    assert_eq!(status, 404, "nothing was stored");
    // Bad requests say what is wrong.
    let (status, body) = onboard(
        &server,
        json!({"phone_number_id": PNID, "waba_id": "not-a-waba"}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("waba_id"),
        "{body}"
    );

    // A good code: exchanged, checked, subscribed, both syncs requested with the business's token.
    let (status, body) = onboard(
        &server,
        json!({"phone_number_id": PNID, "waba_id": WABA, "code": "good"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["access_token"], "business-token-from-good",
        "shown once"
    );
    let onboarding = &body["onboarding"];
    assert_eq!(
        onboarding["coexistence"], true,
        "as Meta reports the number"
    );
    assert_eq!(onboarding["verified_name"], "Tandem Plant Shop");
    assert_eq!(onboarding["contacts_sync"]["state"], "requested");
    assert_eq!(onboarding["history_sync"]["state"], "requested");
    assert_eq!(onboarding["warnings"], json!([]));
    let calls = graph.onboarding_calls();
    let paths: Vec<&str> = calls.iter().map(|(_, p, _, _)| p.as_str()).collect();
    assert_eq!(
        &paths[paths.len() - 5..],
        [
            "oauth/access_token",
            PNID,
            &format!("{WABA}/subscribed_apps"),
            &format!("{PNID}/smb_app_data"),
            &format!("{PNID}/smb_app_data"),
        ]
    );
    assert!(
        calls.iter().all(|(_, p, _, _)| !p.contains("register")),
        "never /register"
    );
    let exchange = &calls[calls.len() - 5].3;
    assert_eq!(exchange["client_id"], "1234567890");
    assert_eq!(exchange["client_secret"], crate::helpers::SECRET);
    for (_, _, auth, _) in &calls[calls.len() - 4..] {
        assert_eq!(auth.as_deref(), Some("Bearer business-token-from-good"));
    }
    let kinds: Vec<&Value> = calls[calls.len() - 2..]
        .iter()
        .map(|c| &c.3["sync_type"])
        .collect();
    assert_eq!(kinds, [&json!("smb_app_state_sync"), &json!("history")]);

    // Again: nothing asked twice.
    let (status, body) = onboard(&server, json!({"phone_number_id": PNID, "waba_id": WABA})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(syncs(), 2);
    assert!(body.get("access_token").is_none());

    // The history webhooks' progress shows on the number.
    for (phase, chunk, progress) in [(0, 1, 40), (1, 2, 100)] {
        assert_eq!(
            server
                .post_signed(&history_chunk(phase, chunk, progress))
                .await
                .status(),
            200
        );
    }
    let view = wait_for("the history progress", DEADLINE, || async {
        let (_, view) = server.api(&format!("/v1/numbers/{PNID}")).await;
        (view["onboarding"]["history"]["chunks_seen"] == 2).then_some(view)
    })
    .await;
    let history = &view["onboarding"]["history"];
    assert_eq!(history["progress"], 100);
    assert_eq!(history["phase"], 1);
    assert_eq!(history["complete"], true);

    // A second number whose history sync Meta refuses: shown, with a warning; contacts asked.
    graph.refuse_sync("history");
    let (status, body) = onboard(
        &server,
        json!({"phone_number_id": "106540000000002", "waba_id": WABA, "coexistence": true}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let onboarding = &body["onboarding"];
    assert_eq!(onboarding["contacts_sync"]["state"], "requested");
    assert_eq!(onboarding["history_sync"]["state"], "failed");
    assert_eq!(onboarding["history_sync"]["code"], 100);
    let warnings = onboarding["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .contains("Meta refused the history sync"),
        "{warnings:?}"
    );
    // The configured token was used, and the refused sync is not asked again.
    let before = syncs();
    let (status, _) = onboard(
        &server,
        json!({"phone_number_id": "106540000000002", "waba_id": WABA}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(syncs(), before);

    // The audit log has each onboarding, with its status.
    let response = server
        .client
        .get(server.url("/v1/audit"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    let log = response.text().await.unwrap();
    let onboardings: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["action"] == "number.onboard")
        .collect();
    let statuses: Vec<&Value> = onboardings.iter().map(|e| &e["status"]).collect();
    assert_eq!(
        statuses,
        [
            &json!(400),
            &json!(400),
            &json!(400),
            &json!(201),
            &json!(200),
            &json!(201),
            &json!(200)
        ]
    );
    assert!(
        !log.contains("business-token-from-good"),
        "no token in the audit log"
    );
}

#[tokio::test]
async fn onboarding_a_coexistence_number_embedded() {
    let dir = tempfile::tempdir().unwrap();
    onboarding_a_coexistence_number(Backend::embedded(dir.path())).await;
}

#[tokio::test]
async fn onboarding_a_coexistence_number_redis() {
    onboarding_a_coexistence_number(Backend::redis()).await;
}

/// Runs the `tandem` binary with `args` and `env` off the test's runtime (the stand-ins run
/// on it).
async fn tandem(args: Vec<String>, env: Vec<(&'static str, &'static str)>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args(args)
            .envs(env)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// `tandem numbers add` drives the same onboarding through a running server.
#[tokio::test]
async fn the_cli_onboards_a_number() {
    let graph = Graph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut spec = Spec::new(Backend::embedded(dir.path()));
    spec.env
        .push(("TANDEM_GRAPH_URL".into(), graph.url.clone()));
    spec.env
        .push(("TANDEM_ACCESS_TOKEN".into(), "test-access-token".into()));
    let server = Server::start(spec);
    let args = |waba: &str| -> Vec<String> {
        [
            "numbers",
            "add",
            "--url",
            &server.base,
            "--phone-number-id",
            PNID,
            "--waba-id",
            waba,
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let output = tandem(
        args(WABA),
        vec![
            ("TANDEM_API_TOKEN", API_TOKEN),
            ("TANDEM_BUSINESS_TOKEN", "cli-business-token"),
        ],
    )
    .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let view: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(view["onboarding"]["history_sync"]["state"], "requested");
    let calls = graph.onboarding_calls();
    assert!(
        calls
            .iter()
            .all(|(_, _, auth, _)| auth.as_deref() == Some("Bearer cli-business-token"))
    );
    // A refusal exits non-zero with the server's reason.
    let refused = tandem(args("x"), vec![("TANDEM_API_TOKEN", API_TOKEN)]).await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("waba_id"));
}
