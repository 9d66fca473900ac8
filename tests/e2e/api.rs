//! The read-only agent API: bearer token, readable 4xx answers, listing by mode.

use crate::helpers::{API_TOKEN, Backend, Server, Spec, echo_body, messages_body};

#[tokio::test]
async fn the_api_needs_the_token_and_explains_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Spec::new(Backend::embedded(dir.path())));
    let unauthorized = server
        .client
        .get(server.url("/v1/conversations"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
    let wrong = server
        .client
        .get(server.url("/v1/conversations"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(wrong.headers()["www-authenticate"], "Bearer");

    for (path, status, says) in [
        (
            "/v1/conversations?mode=robot",
            400,
            "mode must be bot, handoff or human",
        ),
        (
            "/v1/conversations?limit=0",
            400,
            "limit must be a whole number",
        ),
        (
            "/v1/conversations?limit=abc",
            400,
            "limit must be a whole number",
        ),
        (
            "/v1/conversations?colour=red",
            400,
            "unknown query parameter",
        ),
        (
            "/v1/conversations?after=nocolon",
            400,
            "bad conversation id",
        ),
        ("/v1/conversations/nocolon", 400, "bad conversation id"),
        ("/v1/conversations/1:2", 404, "no conversation 1:2"),
        ("/v1/accounts/123", 404, "no events"),
    ] {
        let (got, body) = server.api(path).await;
        assert_eq!(got, status, "{path}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(says),
            "{path}: {body}"
        );
    }
    // The scheme is case-insensitive (RFC 7235).
    let lower = server
        .client
        .get(server.url("/v1/conversations"))
        .header("authorization", format!("bearer {API_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(lower.status(), 200);
}

#[tokio::test]
async fn conversations_are_listed_by_mode_and_paged() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Spec::new(Backend::embedded(dir.path())));
    for wa in ["15550000001", "15550000002", "15550000003"] {
        server
            .post_signed(&messages_body(&[(wa, &format!("wamid.{wa}"), "hi")]))
            .await;
    }
    server
        .post_signed(&echo_body("15550000002", "wamid.e", "taking over"))
        .await;
    let (_, human) = server.api("/v1/conversations?mode=human").await;
    let ids: Vec<&str> = human["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    let second = server.conversation("15550000002").await.unwrap();
    assert_eq!(ids, [second["id"].as_str().unwrap()]);
    let (_, page1) = server.api("/v1/conversations?limit=2").await;
    assert_eq!(page1["conversations"].as_array().unwrap().len(), 2);
    let first_page: Vec<String> = page1["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    let next = page1["next"].as_str().unwrap().to_owned();
    let (_, page2) = server
        .api(&format!("/v1/conversations?limit=2&after={next}"))
        .await;
    let rest: Vec<&str> = page2["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    // Ids are in ascending order across pages, each conversation on exactly one page.
    assert_eq!(rest.len(), 1);
    assert!(first_page[0] < first_page[1] && first_page[1].as_str() < rest[0]);
    let mut all: Vec<String> = Vec::new();
    for wa in ["15550000001", "15550000002", "15550000003"] {
        all.push(
            server.conversation(wa).await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    all.sort();
    assert_eq!(
        all,
        [first_page[0].as_str(), first_page[1].as_str(), rest[0]]
    );
    assert!(page2["next"].is_null());
    let ready = server
        .client
        .get(server.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test]
async fn every_error_has_the_json_shape_and_names_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("small.toml");
    std::fs::write(&config, "[server]\nmax_body_bytes = 2048\n").unwrap();
    let mut spec = Spec::new(Backend::embedded(dir.path()));
    spec.config = Some(config);
    let server = Server::start(spec);
    let call = |method: reqwest::Method, path: &str, body: Vec<u8>| {
        let request = server
            .client
            .request(method, server.url(path))
            .bearer_auth(API_TOKEN)
            .header("content-type", "application/json")
            .body(body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let kind = response
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned());
            (
                status,
                kind,
                response.json::<serde_json::Value>().await.ok(),
            )
        }
    };
    // No access token: the server runs (events are stored) and says it cannot send.
    let ready: serde_json::Value = server
        .client
        .get(server.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        ready["sending"]
            .as_str()
            .unwrap()
            .contains("TANDEM_ACCESS_TOKEN"),
        "{ready}"
    );
    let (_, numbers) = server.api("/v1/numbers").await;
    assert!(
        numbers["sending"]
            .as_str()
            .unwrap()
            .contains("TANDEM_ACCESS_TOKEN"),
        "{numbers}"
    );
    let post = reqwest::Method::POST;
    let long_agent = serde_json::json!({"agent": "a".repeat(1000)}).to_string();
    for (method, path, body, status, error_kind) in [
        // axum's own rejections: over the size limit, a path that is not UTF-8, no route.
        (post.clone(), "/webhook", vec![b'x'; 4096], 413, "too_large"),
        (
            reqwest::Method::GET,
            "/v1/conversations/%FF",
            vec![],
            400,
            "invalid",
        ),
        (
            reqwest::Method::GET,
            "/v1/nothing-here",
            vec![],
            404,
            "not_found",
        ),
        // Names are bounded; an unknown team is refused even when no team is configured.
        (
            post.clone(),
            "/v1/conversations/106540000000001:155/takeover",
            long_agent.into_bytes(),
            400,
            "invalid",
        ),
        (
            post.clone(),
            "/v1/conversations/106540000000001:155/assign",
            br#"{"team": "ghosts"}"#.to_vec(),
            400,
            "invalid",
        ),
        (
            post.clone(),
            "/v1/conversations/106540000000001:155/assign",
            br#"{"agent": "nobody"}"#.to_vec(),
            400,
            "invalid",
        ),
    ] {
        let (got, content_type, body) = call(method, path, body).await;
        assert_eq!(got, status, "{path}: {body:?}");
        assert_eq!(content_type.as_deref(), Some("application/json"), "{path}");
        let body = body.unwrap_or_else(|| panic!("{path}: not JSON"));
        assert_eq!(body["error"]["kind"], error_kind, "{path}: {body}");
        assert!(
            !body["error"]["message"].as_str().unwrap().is_empty(),
            "{path}: {body}"
        );
    }
}

#[tokio::test]
async fn a_token_past_its_rate_gets_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = Spec::new(Backend::embedded(dir.path()));
    spec.env.push(("TANDEM_API_RATE_LIMIT".into(), "2".into()));
    let server = Server::start(spec);
    // Two a second, a burst of two: forty requests in a row cannot all pass, however slow
    // the machine (that would take twenty seconds).
    let started = std::time::Instant::now();
    let mut limited = None;
    let mut passed = 0;
    for _ in 0..40 {
        let response = server
            .client
            .get(server.url("/v1/conversations"))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            200 => passed += 1,
            429 => {
                limited = Some(response);
                break;
            }
            other => panic!("status {other}"),
        }
    }
    let Some(limited) = limited else {
        panic!("no 429 after {passed} requests in {:?}", started.elapsed());
    };
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    let body: serde_json::Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["kind"], "rate_limited");
    // Within the wait (and a margin for a slow machine) the token is served again.
    let deadline = std::time::Duration::from_secs(retry + 10);
    crate::helpers::wait_for("the token served again", deadline, || async {
        (server.api("/v1/conversations").await.0 == 200).then_some(())
    })
    .await;
    // A wrong token is refused before it counts.
    let wrong = server
        .client
        .get(server.url("/v1/conversations"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
}
