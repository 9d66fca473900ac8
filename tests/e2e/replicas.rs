//! Several processes on one Redis: one conversation's events still take effect in arrival
//! order and exactly once, whichever replica received them and whichever runs the lane.

use std::time::Duration;

use crate::helpers::{Backend, Server, Spec, messages_body, texts, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_the_lanes_in_order_and_once() {
    let backend = Backend::redis();
    let a = Server::start(Spec::new(backend.clone()));
    let b = Server::start(Spec::new(backend));
    let mut sent = Vec::new();
    for i in 0..40 {
        let text = format!("via replicas {i:02}");
        let body = messages_body(&[("15550002000", &format!("wamid.rep{i}"), &text)]);
        let replica = if i % 2 == 0 { &a } else { &b };
        assert_eq!(replica.post_signed(&body).await.status(), 200);
        // Meta's retry lands on the other replica: still once.
        let other = if i % 2 == 0 { &b } else { &a };
        assert_eq!(other.post_signed(&body).await.status(), 200);
        sent.push(text);
    }
    let c = wait_for("all 40 to apply", Duration::from_secs(20), || async {
        a.conversation("15550002000")
            .await
            .filter(|c| c["events_applied"] == 40)
    })
    .await;
    assert_eq!(texts(&c, "customer"), sent);
    let seen_by_b = b.conversation("15550002000").await.unwrap();
    assert_eq!(seen_by_b["events_applied"], 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_one_killed_every_acknowledged_event_applies_once() {
    let backend = Backend::redis();
    let mut a = Server::start(Spec::new(backend.clone()));
    let b = Server::start(Spec::new(backend));
    let mut a_bodies = Vec::new();
    let mut b_bodies = Vec::new();
    let mut sent: std::collections::HashMap<String, Vec<String>> = std::collections::HashMap::new();
    for i in 0..30 {
        for c in 0..4 {
            let wa = format!("155501{c}{c}{c}{c}");
            let text = format!("kill {i:02} to {c}");
            let body = messages_body(&[(&wa, &format!("wamid.kill.{c}.{i}"), &text)]);
            if (i + c) % 2 == 0 {
                a_bodies.push(body)
            } else {
                b_bodies.push(body)
            }
            sent.entry(wa).or_default().push(text);
        }
    }
    let (from_a, from_b) = tokio::join!(
        a.post_signed_concurrently(a_bodies),
        b.post_signed_concurrently(b_bodies)
    );
    assert!(from_a.iter().chain(&from_b).all(|s| *s == 200));
    // A dies, possibly holding lanes; B takes any it held over when their leases end.
    a.kill9();
    for (wa, texts_sent) in &sent {
        let c = wait_for(
            &format!("{wa} to apply 30 events"),
            Duration::from_secs(30),
            || async {
                b.conversation(wa)
                    .await
                    .filter(|c| c["events_applied"] == 30)
            },
        )
        .await;
        let mut got = texts(&c, "customer");
        got.sort();
        let mut want = texts_sent.clone();
        want.sort();
        assert_eq!(got, want, "{wa}: each acknowledged message exactly once");
    }
}
